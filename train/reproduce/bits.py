"""``reproduce bits``: test accuracy by code width, HashGNN, a baseline hashing method and codes
distilled from a continuous model (``--method distill``), beside that model.

Each hashing method is trained at every width of the sweep (:func:`accuracy.train_all` with
``bits``; the run at ``--bits`` is the one table2 and fig3 use, the others sit in
``runs/<data>/<method>_<bits>``); the continuous model is trained once, at ``--bits`` (its codes
are not used: it is searched exactly).
"""
from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .accuracy import PROTOCOL_NOTE, TABLE2_ROWS, run_key, train_all, width_key
from .common import ReproduceConfig, load_codes, machine_info, markdown_table, plot_lines, write_outputs

if TYPE_CHECKING:
    from ..config import FitConfig
    from ..data.dataset import Dataset

log = logging.getLogger(__name__)

Row = Tuple[str, str, Optional[str]]  # a Table 2 row: label, --method, --encoder

BITS_DEFAULT = (16, 32, 64, 128, 256)
BITS_MODES = ("hamr", "hies")
BITS_METRICS = ("recall@20", "recall@50", "ndcg@20")
MODE_NAMES = {"hamr": "HamR", "hies": "HieS", "continuous": "exact"}
DISTILL_ROW: Row = ("Distilled", "distill", None)
DISTILL_NOTE = ("Distilled: codes learned from the continuous model's ranking (`--method distill`, its "
                "embeddings frozen); its HieS re-ranks by the continuous model's embeddings.")


def table2_row(method: str, rows: Sequence[Row] = TABLE2_ROWS) -> Row:
    """The Table 2 row (label, --method, encoder) of run key ``method``; ValueError naming the keys."""
    for row in rows:
        if run_key(row[1], row[2]) == method:
            return row
    raise ValueError(f"unknown method {method!r}; expected one of {[run_key(m, e) for _, m, e in rows]}")


def with_teacher(cfg: "FitConfig", teacher: Path) -> ReproduceConfig:
    """``cfg`` whose distill runs learn from the run in ``teacher`` (a ``--method-set
    distill:teacher=…`` given already wins)."""
    rc = cfg if isinstance(cfg, ReproduceConfig) else ReproduceConfig(**cfg.to_dict())
    own = {"teacher": str(teacher), **rc.per_method.get("distill", {})}
    return replace(rc, per_method={**rc.per_method, "distill": own})


def run_modes(metrics: Dict[str, Any], run_dir: Path, dataset: "Dataset", modes: Sequence[str],
              threads: int) -> Dict[str, Dict[str, float]]:
    """The test metrics of each retrieval mode of a finished run: its own final test's
    (metrics.json) where that covered the mode (``--test-modes``), else evaluated now from its
    codes.npz by :func:`train.evaluate.evaluate` (test items; training and validation items
    excluded, as the run's own test)."""
    have = {m: metrics[m] for m in modes if m in metrics}
    missing = [m for m in modes if m not in have]
    if missing:
        from ..evaluate import evaluate

        log.info("bits: %s was not tested in %s; evaluating it from codes.npz", ",".join(missing), run_dir)
        have.update(evaluate(load_codes(run_dir), dataset.csr("test"), dataset.csr("train", "valid"),
                             modes=missing, num_threads=threads))
    return have


def _ratio(value: float, reference: float) -> Optional[float]:
    """``value / reference``; None when the reference is 0 (no ratio to report)."""
    return value / reference if reference > 0 else None


def _sweep_rows(base_cfg: "FitConfig", runs_dir: Path, dataset: "Dataset", hashing: Sequence[Row],
                bits_list: Sequence[int], cont_r20: float, train: bool = True
                ) -> Tuple[List[Dict[str, Any]], List[str]]:
    """One row per (hashing method, width): its HamR and HieS test metrics and their Recall@20 over
    the continuous model's; and, with ``train`` False, the "<label> <bits>" runs not cached (no row)."""
    rows: List[Dict[str, Any]] = []
    missing: List[str] = []
    for bits in bits_list:
        results = train_all(base_cfg, runs_dir, hashing, dataset, bits=bits, train=train)
        for label, method, encoder in hashing:
            key = run_key(method, encoder)
            if results[key][0] is None:
                missing.append(f"{label} {bits}")
                continue
            run_dir = runs_dir / width_key(key, bits, base_cfg.bits)
            modes = run_modes(results[key][0], run_dir, dataset, BITS_MODES, base_cfg.threads)
            row: Dict[str, Any] = {"label": label, "method": key, "bits": bits, "run": str(run_dir)}
            for mode in BITS_MODES:
                row[mode] = {k: float(modes[mode][k]) for k in BITS_METRICS}
                row[f"{mode}_over_continuous"] = _ratio(row[mode]["recall@20"], cont_r20)
            rows.append(row)
    return rows, missing


def _markdown(base_cfg: "FitConfig", rows: List[Dict[str, Any]], cont: Dict[str, Any],
              missing: Sequence[str] = ()) -> str:
    """The sweep's page: a row per (method, width), then the continuous reference."""
    headers = ["method", "bits"] + [f"{MODE_NAMES[m]} {k}" for m in BITS_MODES for k in BITS_METRICS] \
        + [f"{MODE_NAMES[m]} / continuous" for m in BITS_MODES]
    table = [[r["label"], r["bits"]] + [r[m][k] for m in BITS_MODES for k in BITS_METRICS]
             + [r[f"{m}_over_continuous"] for m in BITS_MODES] for r in rows]
    return (f"# Code-width sweep: {base_cfg.data}, test metrics, seed {base_cfg.seed}\n\n"
            + markdown_table(headers, table)
            + "\n\"/ continuous\": the row's Recall@20 over the continuous model's."
            + (f" {DISTILL_NOTE}" if any(r["method"] == "distill" for r in rows) else "") + "\n\n"
            + (f"Not trained (no row): {', '.join(missing)}.\n\n" if missing else "")
            + "Continuous reference (trained once, exact inner-product search):\n\n"
            + markdown_table(["method", "search"] + list(BITS_METRICS),
                             [[cont["label"], "exact"] + [cont["continuous"][k] for k in BITS_METRICS]])
            + f"\n{PROTOCOL_NOTE}\n")


def bits_sweep(base_cfg: "FitConfig", out: Path, runs_dir: Path, dataset: "Dataset", *,
               bits_list: Sequence[int] = BITS_DEFAULT,
               baseline: Optional[str] = "hashnet", continuous: str = "lightgcn", name: str = "bits",
               train: bool = True, distill: bool = True) -> Dict[str, Any]:
    """Writes ``<name>.{md,json,png}``: HamR and HieS test Recall@20, Recall@50 and NDCG@20 of
    HashGNN and of ``baseline`` at each width of ``bits_list``, beside the continuous model
    ``continuous`` (exact search), with each row's Recall@20 over the continuous one's; the plot is
    Recall@20 against the width (log2 axis), the continuous model a dashed line.

    ``baseline`` and ``continuous`` are Table 2 run keys (``accuracy.TABLE2_ROWS``); no baseline
    when ``baseline`` is None. ``train`` False: only the hashing runs already cached, the others
    named on the page. ``distill``: also codes distilled from the continuous model
    (:data:`DISTILL_ROW`, ``--method distill`` with the continuous run as its teacher).
    """
    if not bits_list or len(set(bits_list)) != len(bits_list):
        raise ValueError(f"bits_list must be one or more distinct widths, got {list(bits_list)}")
    if baseline == "hashgnn":
        raise ValueError("baseline must be a method other than hashgnn, which the sweep always trains")
    hashing = [table2_row("hashgnn")] + ([table2_row(baseline)] if baseline else []) + ([DISTILL_ROW] if distill else [])
    cont_row = table2_row(continuous)
    log.info("bits: %s at %s bits, %s once", " and ".join(h[0] for h in hashing), list(bits_list), cont_row[0])
    cont_metrics = train_all(base_cfg, runs_dir, [cont_row], dataset)[continuous][0]
    cont = {"label": cont_row[0], "method": continuous, "run": str(runs_dir / continuous),
            "continuous": {k: float(v) for k, v in run_modes(cont_metrics, runs_dir / continuous, dataset,
                                                            ("continuous",), base_cfg.threads)["continuous"].items()}}
    if distill:
        base_cfg = with_teacher(base_cfg, runs_dir / continuous)
    rows, missing = _sweep_rows(base_cfg, runs_dir, dataset, hashing, sorted(bits_list),
                                cont["continuous"]["recall@20"], train)
    curves = {f"{label} {MODE_NAMES[mode]}": {r["bits"]: r[mode]["recall@20"] for r in rows if r["label"] == label}
              for label, _, _ in hashing for mode in BITS_MODES if any(r["label"] == label for r in rows)}
    plot_lines(out / f"{name}.png", curves, f"Test Recall@20 by code width, {base_cfg.data}",
               xlabel="bits (log2)", ylabel="Recall@20", xscale="log2",
               highlight=lambda label: label.startswith("HashGNN "),
               hlines={f"{cont['label']} (continuous, exact)": cont["continuous"]["recall@20"]})
    md = _markdown(base_cfg, rows, cont, missing)
    payload = {"data": base_cfg.data, "seed": base_cfg.seed, "bits_list": sorted(bits_list), "baseline": baseline, "distill": distill,
               "rows": rows, "not_trained": missing, "continuous": cont, "metrics": list(BITS_METRICS),
               "protocol": PROTOCOL_NOTE,
               "config": base_cfg.to_dict(), "machine": machine_info(base_cfg.threads), "markdown": md, "name": name}
    write_outputs(out, name, md, payload)
    return payload
