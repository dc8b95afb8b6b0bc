"""Shared plumbing of the reproduction commands: run metadata, atomic outputs,
timing, and cached training runs."""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..config import FitConfig
from ..fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def git_revision() -> str:
    """Commit of the working tree, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> Dict[str, Any]:
    """Machine, library versions and SIMD level, recorded with every result."""
    import hashsearch

    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads_used": threads,
        "simd_level": hashsearch.simd_level(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hashsearch": hashsearch.__version__,
        "git_revision": git_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for name in ("torch", "faiss", "hnswlib"):
        try:
            mod = __import__(name)
            info[name] = getattr(mod, "__version__", "installed")
        except ImportError:
            info[name] = None
    return info


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_outputs(out: Path, name: str, markdown: str, payload: Dict[str, Any]) -> None:
    """``out/<name>.md`` and ``out/<name>.json`` (numbers, machine, versions, seed, revision)."""
    atomic_write_text(out / f"{name}.md", markdown)
    atomic_write_text(out / f"{name}.json", json.dumps(payload, indent=2, default=_jsonable) + "\n")
    log.info("wrote %s/%s.{md,json}", out, name)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def median_seconds(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def queries_per_second(fn: Callable[[], Any], nq: int, repeats: int = 3):
    """(queries/s of ``fn``'s best of ``repeats`` timed calls over ``nq`` queries, the result of its
    untimed warm-up call)."""
    result = fn()  # warm-up, and the result that is scored
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return nq / best, result


class Points:
    """The measured points of a speed-vs-quality comparison: per method and setting, its queries/s
    and ``score(ids)`` of the ranked lists (int64, one row per query) it returned, e.g. the recall
    of an exact top-k (the trade-off) or test Recall@k and NDCG@k (quality at fixed throughput)."""

    def __init__(self, score: Callable[[np.ndarray], Dict[str, float]], nq: int, key: str) -> None:
        self.score, self.nq, self.key = score, nq, key  # key: the score logged with each point
        self.rows: List[Dict[str, Any]] = []

    def add(self, method: str, setting: Any, qps: float, found: np.ndarray) -> None:
        self.rows.append({"method": method, "setting": setting, "qps": qps, **self.score(found)})
        log.info("%s %s: %.0f queries/s, %s %.4f", method, setting, qps, self.key, self.rows[-1][self.key])

    def time(self, method: str, setting: Any, fn: Callable[[], np.ndarray], repeats: int) -> None:
        """Time ``fn`` (:func:`queries_per_second`) and add the lists of its warm-up call."""
        qps, found = queries_per_second(fn, self.nq, repeats)
        self.add(method, setting, qps, found)


def faiss_threads(threads: int) -> Any:
    """faiss with ``threads`` OpenMP threads, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)
    return faiss


def faiss_flat_ip(items: np.ndarray, threads: int) -> Any:
    """faiss ``IndexFlatIP`` holding ``items`` (float32 (n, d)), searching on ``threads`` OpenMP
    threads; None when faiss is not installed (the caller falls back to a matmul)."""
    faiss = faiss_threads(threads)
    if faiss is None:
        return None
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, np.float32))
    return index


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def data_label(spec: str) -> str:
    """A directory-safe name for a --data value."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(spec).name or spec)


# how a run goes and where it was first written, not what it trains: a run trained on one thread
# serves a timing command that searches on two, a run copied into the cache is reused, and so is
# one that was resumed from its checkpoint
_NOT_IN_CACHE_KEY = ("threads", "progress", "out", "resume")


def _cache_key(config: Dict[str, Any]) -> Dict[str, Any]:
    """The settings a cached run must match: all but the thread count, the progress bar and the
    knobs that the run's method does not use (``FitConfig.unused_fields``). A setting newer than the
    cached run counts at its default (which is what the run trained with)."""
    from ..config import FitConfig

    cfg = FitConfig.from_dict(config)
    skip = set(_NOT_IN_CACHE_KEY) | set(cfg.unused_fields())
    key = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    key["data_seed"] = cfg.split_seed  # None means the run's own seed
    return key


def run_key(method: str, encoder: Optional[str]) -> str:
    """A run's name in tables and caches: the method, ``-<encoder>`` for another encoder than its own."""
    return method if encoder is None else f"{method}-{encoder}"


@dataclass
class ReproduceConfig(FitConfig):
    """The settings of every run of a reproduction: FitConfig's shared ones, and in ``per_method``
    the settings one run overrides (``--method-set``), {run key: {field: value}}, such as a
    baseline's own learning rate and epoch budget."""
    per_method: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def for_run(self, method: str, encoder: Optional[str] = None) -> FitConfig:
        """The FitConfig of one run: the shared settings, the method, then its own overrides."""
        shared = {k: v for k, v in self.to_dict().items() if k != "per_method"}
        return FitConfig(**{**shared, "method": method, "encoder": encoder,
                            **self.per_method.get(run_key(method, encoder), {})})


def ensure_run(base_cfg: FitConfig, method: str, run_dir: Path, dataset=None, encoder: Optional[str] = None,
               rerun: bool = False, train: bool = True) -> Optional[Dict[str, Any]]:
    """Train ``method`` into ``run_dir`` unless a finished run (metrics.json) is there already.

    Returns the run's metrics; None when ``train`` is False and no matching run is cached. Cached
    runs are reused only if their config matches, the run's own overrides
    (:class:`ReproduceConfig`) included.
    """
    from ..trainer import fit

    if isinstance(base_cfg, ReproduceConfig):
        base_cfg = base_cfg.for_run(method, encoder)
    cfg = replace(base_cfg, method=method, encoder=encoder, out=str(run_dir))
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and not rerun:
        metrics = json.loads(metrics_path.read_text())
        if _cache_key(metrics.get("config") or {}) == _cache_key(cfg.to_dict()):
            log.info("reusing %s", run_dir)
            return metrics
        if train:
            log.info("config changed; retraining %s", run_dir)
    if not train:
        log.info("no cached run of %s in %s; left out", method, run_dir)
        return None
    return fit(cfg, dataset)


def load_codes(run_dir: Path):
    """The Embeddings of a finished run (``codes.npz``)."""
    from ..evaluate import Embeddings

    with np.load(run_dir / "codes.npz") as z:
        return Embeddings(z["user_codes"], z["item_codes"], z["user_emb"], z["item_emb"], int(z["nbits"]))


def plot_lines(path: Path, curves: Mapping[str, Mapping[float, float]], title: str, *, xlabel: str,
               ylabel: str, xscale: str = "linear", highlight: Callable[[str], bool] = lambda label: False,
               hlines: Optional[Mapping[str, float]] = None) -> None:
    """One line per curve ({label: {x: y}}, drawn in x order) into the PNG ``path``.

    ``xscale``: "linear", "log" (base 10) or "log2"; ``highlight``: the labels drawn thick (ours);
    ``hlines``: {label: y} drawn as dashed horizontal lines (a reference that has no x, such as a
    continuous model beside a sweep of code widths).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if xscale not in ("linear", "log", "log2"):
        raise ValueError(f"xscale must be linear, log or log2, got {xscale!r}")
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for i, (label, curve) in enumerate(curves.items()):
        xs = sorted(curve)
        ls = ("-", "--", ":", "-.")[(i // 10) % 4]  # the colour cycle has 10: repeats get another dash
        ax.plot(xs, [curve[x] for x in xs], marker="o", ms=3, ls=ls, label=label,
                lw=2.2 if highlight(label) else 1.2)
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1.2, color="black", label=label)
    if xscale == "log2":
        ax.set_xscale("log", base=2)
        ticks = sorted({x for curve in curves.values() for x in curve})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    elif xscale == "log":
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    save_figure(fig, ax, path, title)


def save_figure(fig: Any, ax: Any, path: Path, title: str) -> None:
    """Title, grid and legend of a one-axes figure, written to ``path`` (PNG, 120 dpi) and closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
