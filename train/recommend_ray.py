"""``recommend`` on a Ray cluster: the rows of :func:`train.recommend.recommend`, spread over workers.

Two ways to split the job:

- **user-split** (default): users go in batches to Ray tasks; the index goes once into the object
  store (:func:`hashsearch.serialize_index` bytes, or the embeddings for continuous mode) and each
  worker process deserializes it once and keeps it for its later tasks. Each task writes one part
  file of the output directory.
- **item-sharded** (``shards=N``): the items are cut into N contiguous ranges, each held by one Ray
  actor with its own index. Every batch of users goes to all actors; each returns its shard's top-k
  (hies: its Hamming top-``candidates`` with their inner products) in global item ids, and the
  lists merge exactly (by distance or score, ties to the smaller global id), so the rows are those
  of one index over all items. The driver writes the part files.

Output: a directory of ``part-NNNNN.parquet`` (or ``.csv``) files, one per batch of users in the
users' order; read it whole with ``pandas.read_parquet(DIR)``. It appears atomically: parts are
written into a temporary directory beside it, renamed into place once all are done. Workers write
their parts themselves, so on a multi-machine cluster the output directory must be on storage every
node sees. The run directory is read by the driver only: it holds every item's codes once
and builds the shards' indexes one at a time; each actor then holds only its shard.

Ray is imported lazily: the rest of the project does not need it.
"""
from __future__ import annotations

import argparse
import sys
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .recommend import (
    DEFAULT_BATCH,
    DEFAULT_CANDIDATES,
    Exclude,
    RecWriter,
    _progress,
    build_index,
    check_options,
    csr_range,
    csr_rows,
    index_from_payload,
    index_payload,
    result_columns,
    search,
)
from .rundir import PathLike, Run, load_run

PART_PREFIX = "part-"
# In the sharded mode, batches in flight at once (each at every actor): enough to keep the actors
# busy while the driver merges and writes the previous ones.
SHARD_WINDOW = 3


def require_ray() -> Any:
    """The ``ray`` module, or ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError('--ray needs Ray: pip install -e ".[ray]"') from None
    return ray


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Connect to Ray unless already connected: a new local cluster of ``num_cpus`` CPUs when
    ``address`` is None or ``"local"``, else the cluster at ``address``. True if this call connected."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


# ---------------------------------------------------------------- exact merge of shard lists
def merge_hamming(D: np.ndarray, I: np.ndarray, k: int, n_items: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of concatenated per-shard Hamming lists by (distance, global id).

    Args:
        D: int32 (nq, m) distances, I: int64 (nq, m) global ids, padding (-1, -1).
    Returns:
        (D int32 (nq, k), I int64 (nq, k)), padding (-1, -1).
    """
    key = D.astype(np.int64) * (n_items + 1) + I
    key[I < 0] = np.iinfo(np.int64).max
    top = np.sort(key, axis=1)[:, :k]
    pad = top == np.iinfo(np.int64).max
    Dm = (top // (n_items + 1)).astype(np.int32)
    Im = top % (n_items + 1)
    Dm[pad], Im[pad] = -1, -1
    return _pad_to(Dm, Im, k, -1)


def merge_scores(S: np.ndarray, I: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of concatenated per-shard score lists by (score descending, global id).

    Args:
        S: float32 (nq, m) scores, I: int64 (nq, m) global ids, padding (-inf, -1).
    Returns:
        (S float32 (nq, k), I int64 (nq, k)), padding (-inf, -1).
    """
    order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), -S), axis=1)[:, :k]
    Sm = np.take_along_axis(S, order, 1)
    Im = np.take_along_axis(I, order, 1)
    Im[Im < 0] = -1
    Sm[Im < 0] = -np.inf
    return _pad_to(Sm, Im, k, -np.inf)


def merge_hies(D: np.ndarray, S: np.ndarray, I: np.ndarray, k: int, candidates: int,
               n_items: int) -> Tuple[np.ndarray, np.ndarray]:
    """HieS over concatenated per-shard candidate lists: the global Hamming top-``candidates`` by
    (distance, id), then their top-k by (inner product descending, id).

    Args:
        D: int32 (nq, m) distances, S: float32 (nq, m) inner products, I: int64 (nq, m) global ids;
            padding (-1, -inf, -1).
    """
    key = D.astype(np.int64) * (n_items + 1) + I
    key[I < 0] = np.iinfo(np.int64).max
    keep = np.argsort(key, axis=1, kind="stable")[:, :candidates]
    Sc = np.take_along_axis(S, keep, 1)
    Ic = np.take_along_axis(I, keep, 1)
    Sc[Ic < 0] = -np.inf
    return merge_scores(Sc, Ic, k)


def _pad_to(D: np.ndarray, I: np.ndarray, k: int, fill: Any) -> Tuple[np.ndarray, np.ndarray]:
    if D.shape[1] >= k:
        return D, I
    Dp = np.full((D.shape[0], k), fill, D.dtype)
    Ip = np.full((I.shape[0], k), -1, np.int64)
    Dp[:, :D.shape[1]], Ip[:, :I.shape[1]] = D, I
    return Dp, Ip


def hies_with_distances(index: Any, q_codes: np.ndarray, q_emb: np.ndarray, c: int,
                        exclude: Optional[Exclude]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shard's Hamming top-c with each candidate's inner product as the engine computes it:
    (D int32 (nq, c), S float32 (nq, c), I int64 (nq, c)), by (distance, id); padding (-1, -inf, -1).

    Two engine calls over the same candidates: ``hamming_topk`` for the distances and ``topk``
    with k = candidates = c for the scores (so they match the unsharded index bit for bit)."""
    D, I = index.hamming_topk(q_codes, c, exclude=exclude)
    S2, I2 = index.topk(q_codes, np.ascontiguousarray(q_emb, np.float32), c, candidates=c, exclude=exclude)
    o1, o2 = np.argsort(I, axis=1), np.argsort(I2, axis=1)
    if not np.array_equal(np.take_along_axis(I, o1, 1), np.take_along_axis(I2, o2, 1)):
        raise RuntimeError("the engine's HieS candidates differ from its Hamming top-k (cannot merge shards)")
    S = np.empty_like(S2)
    np.put_along_axis(S, o1, np.take_along_axis(S2, o2, 1), 1)
    S[I < 0] = -np.inf
    return D, S, I


# ---------------------------------------------------------------- worker side
# Per worker process: the last index (by object id) and id maps it was sent, so that a worker
# deserializes them once however many tasks it runs.
_WORKER_CACHE: Dict[str, Any] = {}


def _cached(ref: Any, build: Any) -> Any:
    ray = require_ray()
    key = ref.hex()
    if key not in _WORKER_CACHE:
        if len(_WORKER_CACHE) >= 4:  # a long-lived worker serving several jobs keeps the latest only
            _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = build(ray.get(ref))
    return _WORKER_CACHE[key]


class _Ids:
    """The slice of a :class:`Run` that :func:`result_columns` reads (raw id maps only)."""

    def __init__(self, user_ids: np.ndarray, item_ids: np.ndarray) -> None:
        self.user_ids, self.item_ids = user_ids, item_ids


def _user_task(refs: List[Any], part: int, users: np.ndarray, q_codes: np.ndarray, q_emb: np.ndarray,
               exclude: Exclude, k: int, mode: str, candidates: int, num_threads: int,
               out_dir: Optional[str], fmt: str, schema_run: Any) -> Union[int, dict]:
    """One batch of users (dense ids (b,)) against the whole index: writes ``part`` into ``out_dir``
    and returns its rows, or returns the columns when ``out_dir`` is None. ``refs`` = [index payload,
    (user_ids, item_ids)], in a list so that Ray hands over the references, not the values."""
    index = _cached(refs[0], lambda p: index_from_payload(p, num_threads))
    ids = _cached(refs[1], lambda pair: _Ids(*pair))
    D, I = search(index, mode, q_codes, q_emb, k, candidates, exclude)
    cols = result_columns(ids, users, D, I)
    if out_dir is None:
        return cols
    return _write_part(out_dir, part, fmt, schema_run, mode, cols)


def _write_part(out_dir: str, part: int, fmt: str, schema_run: Any, mode: str, cols: dict) -> int:
    # make_parent=False: a directory the driver removed (the job failed) is not made again
    writer = RecWriter(Path(out_dir) / f"{PART_PREFIX}{part:05d}.{fmt}", fmt, schema_run, mode, make_parent=False)
    try:
        writer.write(cols)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


def peak_memory() -> Dict[str, int]:
    """This process's resident memory now and at its peak, bytes (Linux /proc; else getrusage's peak)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out["rss" if line.startswith("VmRSS") else "peak_rss"] = int(line.split()[1]) * 1024
    except OSError:
        import resource

        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


class ShardSearcher:
    """One item shard [lo, hi) of a catalog of ``n_items``: its own index, results in global ids.
    Ray runs it as an actor; it is a plain class so that the merge can be tested without Ray."""

    def __init__(self, payload: Any, lo: int, hi: int, n_items: int, mode: str, num_threads: int) -> None:
        self.index = index_from_payload(payload, num_threads)
        self.lo, self.hi, self.n_items, self.mode = lo, hi, n_items, mode
        if self.index.ntotal != hi - lo:
            raise ValueError(f"shard [{lo}, {hi}) got an index of {self.index.ntotal} items")

    def search(self, batch: Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], k: int,
               candidates: int) -> Tuple[np.ndarray, ...]:
        """``batch`` = (q_codes, q_emb, exclude indptr, exclude indices in global ids). Returns
        hamr (D, I), continuous (S, I) of the shard's top-min(k, size), hies (D, S, I) of its
        Hamming top-min(C, size), C the unsharded index's candidates; I global."""
        q_codes, q_emb, indptr, indices = batch
        ex = csr_range((indptr, indices), self.lo, self.hi)
        n = self.hi - self.lo
        if self.mode == "hies":
            c = min(max(candidates, min(k, self.n_items)), self.n_items)
            out = list(hies_with_distances(self.index, q_codes, q_emb, min(c, n), ex))
        else:
            out = list(search(self.index, self.mode, q_codes, q_emb, min(k, n), candidates, ex))
        I = out[-1]
        I[I >= 0] += self.lo
        return tuple(out)

    def memory(self) -> Dict[str, int]:
        return peak_memory()


# ---------------------------------------------------------------- driver side
def _id_kinds(run: Run) -> _Ids:
    """Empty id arrays of the run's id dtypes: all a part writer needs for its schema."""
    return _Ids(run.user_ids[:0].copy(), run.item_ids[:0].copy())


def _batches(users: np.ndarray, batch: int) -> List[np.ndarray]:
    return [users[s:s + batch] for s in range(0, users.shape[0], batch)]


def _query(run: Run, ub: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    indptr, indices = csr_rows(run.exclude_indptr, run.exclude_indices, ub)
    return run.user_codes[ub], run.user_emb[ub], indptr, indices


def user_split(run: Run, users: np.ndarray, k: int, *, mode: str, index: str, candidates: int,
               num_threads: int, batch: int, out_dir: Optional[Path], fmt: str,
               progress: bool) -> List[Union[int, dict]]:
    """User-split job (see the module doc): one task per batch; returns each part's rows (or
    columns when ``out_dir`` is None), in the users' order."""
    ray = require_ray()
    idx = build_index(mode, index, run.item_codes, run.item_emb, run.nbits, num_threads)
    refs = [ray.put(index_payload(idx)), ray.put((run.user_ids, run.item_ids))]
    del idx  # the workers build their own from the payload
    task = ray.remote(num_cpus=1)(_user_task)
    kinds = _id_kinds(run)
    pending = {}
    for part, ub in enumerate(_batches(users, batch)):
        q_codes, q_emb, indptr, indices = _query(run, ub)
        ref = task.remote(refs, part, ub, q_codes, q_emb, (indptr, indices), k, mode, candidates, num_threads,
                          None if out_dir is None else str(out_dir), fmt, kinds)
        pending[ref] = (part, ub.shape[0])
    results: Dict[int, Any] = {}
    with _progress(users.shape[0], progress, "recommend (ray)") as bar:
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                part, size = pending.pop(done[0])
                results[part] = ray.get(done[0])
                bar.update(size)
        except BaseException:  # a failed task (or Ctrl-C): the rest would only write parts now dropped
            for ref in pending:
                ray.cancel(ref)
            # wait for the cancelled ones to stop, so that none writes once the caller removes the directory
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=60)
            raise
    return [results[p] for p in sorted(results)]


def item_sharded(run: Run, users: np.ndarray, k: int, *, shards: int, mode: str, index: str, candidates: int,
                 num_threads: int, batch: int, out_dir: Optional[Path], fmt: str,
                 progress: bool) -> Tuple[List[Union[int, dict]], List[Dict[str, int]]]:
    """Item-sharded job (see the module doc). Returns (each part's rows or columns in the users'
    order, each shard actor's memory from :func:`peak_memory`)."""
    ray = require_ray()
    n = run.n_items
    if not 1 <= shards <= n:
        raise ValueError(f"shards must be in [1, {n}] (the number of items), got {shards}")
    bounds = [n * s // shards for s in range(shards + 1)]
    # One CPU an actor, or an equal share when there are more shards than CPUs (the shards are
    # there for memory: all of them must be placed, or the job would wait forever).
    cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / shards)
    actor_cls = ray.remote(num_cpus=cpus, scheduling_strategy="SPREAD")(ShardSearcher)
    actors: List[Any] = []
    try:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            shard = build_index(mode, index, run.item_codes[lo:hi], run.item_emb[lo:hi], run.nbits, num_threads)
            actors.append(actor_cls.remote(ray.put(index_payload(shard)), lo, hi, n, mode, num_threads))
            del shard
        ray.get([a.memory.remote() for a in actors])  # built, or the error of the one that failed
        parts = _fan_out(run, users, k, actors, mode=mode, candidates=candidates, batch=batch, out_dir=out_dir,
                         fmt=fmt, progress=progress)
        return parts, ray.get([a.memory.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)


def _fan_out(run: Run, users: np.ndarray, k: int, actors: List[Any], *, mode: str, candidates: int, batch: int,
             out_dir: Optional[Path], fmt: str, progress: bool) -> List[Union[int, dict]]:
    """Every batch to every shard actor, up to :data:`SHARD_WINDOW` batches in flight; merged and
    written (or kept) in the users' order."""
    ray = require_ray()
    parts: List[Union[int, dict]] = []
    window: List[Tuple[np.ndarray, List[Any]]] = []
    kinds = _id_kinds(run)
    with _progress(users.shape[0], progress, f"recommend (ray, {len(actors)} shards)") as bar:
        for ub in _batches(users, batch) + [None]:
            if ub is not None:
                q = ray.put(_query(run, ub))
                window.append((ub, [a.search.remote(q, k, candidates) for a in actors]))
            while window and (ub is None or len(window) >= SHARD_WINDOW):
                done_ub, refs = window.pop(0)
                D, I = _merge(mode, ray.get(refs), k, candidates, run.n_items)
                cols = result_columns(run, done_ub, D, I)
                parts.append(cols if out_dir is None else _write_part(str(out_dir), len(parts), fmt, kinds, mode, cols))
                bar.update(done_ub.shape[0])
    return parts


def _merge(mode: str, outs: Sequence[Tuple[np.ndarray, ...]], k: int, candidates: int,
           n_items: int) -> Tuple[np.ndarray, np.ndarray]:
    cat = [np.concatenate([o[j] for o in outs], axis=1) for j in range(len(outs[0]))]
    if mode == "hamr":
        return merge_hamming(cat[0], cat[1], k, n_items)
    if mode == "continuous":
        return merge_scores(cat[0], cat[1], k)
    c = min(max(candidates, min(k, n_items)), n_items)
    return merge_hies(cat[0], cat[1], cat[2], k, c, n_items)


# ---------------------------------------------------------------- entry points
def _publish(tmp: Path, out: Path) -> None:
    """Move the finished part directory ``tmp`` to ``out``, replacing an earlier output there."""
    if out.exists():
        if not out.is_dir() or any(not p.name.startswith(PART_PREFIX) for p in out.iterdir()):
            raise FileExistsError(f"--out {out} exists and is not an earlier output directory of part files; "
                                  "remove it or choose another name")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def recommend_ray(run_dir: Union[Run, PathLike], k: int = 100, users: Optional[Union[str, Sequence[Any]]] = None,
                  mode: str = "hamr", index: str = "scan", *, shards: int = 0, out: Optional[PathLike] = None,
                  fmt: str = "parquet", address: Optional[str] = None, num_cpus: Optional[int] = None,
                  candidates: int = DEFAULT_CANDIDATES, num_threads: int = 1, batch: int = DEFAULT_BATCH,
                  progress: bool = False) -> Dict[str, Any]:
    """:func:`train.recommend.recommend` on Ray, user-split (``shards=0``) or item-sharded (``shards=N``).

    Connects with :func:`init_ray` (``address``, ``num_cpus``) unless Ray is already initialised,
    and shuts down only a cluster it started.

    Args:
        out: output directory of part files (``fmt`` parquet or csv); None returns the rows instead.
        num_threads: search threads per task or actor (each asks Ray for one CPU).
        Others: as :func:`train.recommend.recommend`.
    Returns:
        ``{"rows": int, "parts": int, "seconds": float, "frame": DataFrame (out None only),
        "shard_memory": [{"rss", "peak_rss"} bytes per shard actor] (sharded only)}``.
    """
    from .recommend import resolve_users

    check_options(k, mode, index, candidates, batch, num_threads)
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    dense = resolve_users(run, users)
    started = init_ray(address, num_cpus)
    try:
        return _run_job(run, dense, k, mode=mode, index=index, shards=shards, out=out, fmt=fmt,
                        candidates=candidates, num_threads=num_threads, batch=batch, progress=progress)
    finally:
        if started:
            require_ray().shutdown()


def _run_job(run: Run, dense: np.ndarray, k: int, *, shards: int, out: Optional[PathLike], fmt: str,
             **options: Any) -> Dict[str, Any]:
    out_path = None if out is None else Path(out)
    tmp = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    t0 = time.perf_counter()
    result: Dict[str, Any] = {}
    try:
        if shards:
            parts, result["shard_memory"] = item_sharded(run, dense, k, shards=shards, out_dir=tmp, fmt=fmt, **options)
        else:
            parts = user_split(run, dense, k, out_dir=tmp, fmt=fmt, **options)
        if tmp is not None:
            _publish(tmp, out_path)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    result["seconds"] = time.perf_counter() - t0
    result["parts"] = len(parts)
    if out_path is None:
        import pandas as pd

        cols = parts or [result_columns(run, dense[:0], np.zeros((0, k), np.int32), np.zeros((0, k), np.int64))]
        result["frame"] = pd.DataFrame({c: np.concatenate([p[c] for p in cols]) for c in ("user", "rank", "item", "score")})
        result["rows"] = len(result["frame"])
    else:
        result["rows"] = int(sum(parts))
    return result


def run_cli_ray(ns: argparse.Namespace, run: Run, dense: np.ndarray, fmt: str) -> int:
    """The ``--ray`` branch of ``python -m train recommend``; returns the rows written."""
    threads = ns.num_threads or 1  # 0 (all cores) per worker would oversubscribe: one thread per Ray CPU
    started = init_ray(ns.ray, ns.num_workers)
    try:
        res = _run_job(run, dense, ns.k, shards=ns.shards, out=ns.out, fmt=fmt, mode=ns.mode, index=ns.index,
                       candidates=ns.candidates, num_threads=threads, batch=ns.batch, progress=ns.progress)
    finally:
        if started:
            require_ray().shutdown()
    for s, mem in enumerate(res.get("shard_memory", [])):
        print(f"shard {s}: rss {mem.get('rss', 0) / 2**20:.0f} MiB, peak {mem.get('peak_rss', 0) / 2**20:.0f} MiB",
              file=sys.stderr)
    return res["rows"]
