"""Top-k recommendations for the users of a run directory (``python -m train recommend``).

For each user, the k best items by one retrieval mode, the user's training items (train ∪ valid,
from ``train_items.npz``) excluded, reported by raw id:

- ``hamr``: Hamming distance of the packed codes, ascending (``score`` int32);
- ``hies``: Hamming top-``candidates`` re-ranked by inner product of the embeddings, descending
  (``score`` float32), by :class:`hashsearch.HierarchicalIndex`;
- ``continuous``: exact inner product of the embeddings, descending (``score`` float32).

Ties go to the smaller dense item id, as in the engine. A user with fewer than k items left after
the exclusions gets fewer rows (no padding rows are written). Output columns: ``user`` (raw id),
``rank`` (int32, 1..k), ``item`` (raw id), ``score``.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from hashsearch.io import _fsync_directory

from .rundir import PathLike, Run, RunDirError, UnknownIdError, load_run

MODES = ("hamr", "hies", "continuous")
INDEX_KINDS = ("scan", "mih", "cluster")
FORMATS = ("parquet", "csv")
DEFAULT_BATCH = 4096
DEFAULT_CANDIDATES = 500
# Continuous mode scores a block of users against every item at once, in float64: at most this
# many scores a block (256 MiB), whatever the catalog's size.
CONTINUOUS_BLOCK_SCORES = 1 << 25

Exclude = Tuple[np.ndarray, np.ndarray]  # CSR (indptr int64 (nq+1,), indices int64)


def _check_int(value: Any, name: str, low: int, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{note}, got {value!r}")


def check_options(k: int, mode: str, index: str, candidates: int, batch: int, num_threads: int) -> None:
    """ValueError naming the option, what it must be and what was given."""
    _check_int(k, "k", 1)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, got {index!r}")
    if mode == "continuous" and index != "scan":
        raise ValueError(f"index={index!r} applies to the hamr and hies modes; continuous mode is an exact "
                         "inner-product scan (leave index as 'scan')")
    _check_int(candidates, "candidates", 1)
    _check_int(batch, "batch", 1)
    _check_int(num_threads, "num_threads", 0, " (0: all cores)")


# ---------------------------------------------------------------- exclusions
def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> Exclude:
    """The CSR rows ``rows`` (int64 (m,)) of (indptr, indices), as a new CSR of m rows."""
    rows = np.asarray(rows, np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    out_ptr = np.zeros(rows.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=out_ptr[1:])
    # position j of the output reads indices[starts[row of j] + (j - out_ptr[row of j])]
    take = np.arange(out_ptr[-1], dtype=np.int64) + np.repeat(starts - out_ptr[:-1], lengths)
    return out_ptr, indices[take]


def csr_range(exclude: Exclude, lo: int, hi: int) -> Exclude:
    """The entries of ``exclude`` with ids in [lo, hi), shifted by -lo (ids local to an item shard)."""
    indptr, indices = exclude
    keep = (indices >= lo) & (indices < hi)
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[indptr], indices[keep] - lo


# ---------------------------------------------------------------- exact inner product
class ContinuousIndex:
    """Exact inner-product top-k over float32 item embeddings (n, d), ties to the smaller id.

    Scores are computed in float64 and rounded to float32, so that a score does not depend on
    how the items are blocked or sharded (float32 BLAS sums in shape-dependent orders)."""

    def __init__(self, item_emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(item_emb, np.float32)
        if emb.ndim != 2:
            raise ValueError(f"item embeddings must be 2-d (n, d), got shape {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError("item embeddings hold NaN or infinite values")
        self.emb = emb
        self._emb64 = emb.astype(np.float64)

    @property
    def ntotal(self) -> int:
        return int(self.emb.shape[0])

    def topk(self, q_emb: np.ndarray, k: int, exclude: Optional[Exclude] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(S float32 (nq, k) descending, I int64 (nq, k)); padding (-inf, -1); 1 <= k <= ntotal."""
        q = np.asarray(q_emb, np.float64)
        nq, n = q.shape[0], self.ntotal
        if not 1 <= k <= n:
            raise ValueError(f"k must be in [1, {n}] (the number of items), got {k}")
        if not np.isfinite(q).all():
            raise ValueError("query embeddings hold NaN or infinite values")
        S = np.full((nq, k), -np.inf, np.float32)
        I = np.full((nq, k), -1, np.int64)
        step = max(1, CONTINUOUS_BLOCK_SCORES // max(n, 1))
        for s in range(0, nq, step):
            e = min(nq, s + step)
            ex = None if exclude is None else csr_rows(exclude[0], exclude[1], np.arange(s, e))
            S[s:e], I[s:e] = self._block_topk(q[s:e], k, ex)
        return S, I

    def _block_topk(self, q: np.ndarray, k: int, exclude: Optional[Exclude]) -> Tuple[np.ndarray, np.ndarray]:
        b, n = q.shape[0], self.ntotal
        scores = (q @ self._emb64.T).astype(np.float32)
        if exclude is not None and exclude[1].size:
            scores[np.repeat(np.arange(b), np.diff(exclude[0])), exclude[1]] = -np.inf
        # Everything scoring at least the k-th best is a candidate (more than k only on ties);
        # sorting the candidates by (row, -score, id) then keeps the smaller ids among ties.
        kth = np.partition(scores, n - k, axis=1)[:, n - k]
        r, c = np.nonzero(scores >= kth[:, None])
        vals = scores[r, c]
        order = np.lexsort((c, -vals, r))
        r, c, vals = r[order], c[order], vals[order]
        pos = np.arange(r.shape[0]) - np.searchsorted(r, np.arange(b))[r]
        keep = (pos < k) & (vals > -np.inf)  # -inf: excluded, so padding
        S = np.full((b, k), -np.inf, np.float32)
        I = np.full((b, k), -1, np.int64)
        S[r[keep], pos[keep]] = vals[keep]
        I[r[keep], pos[keep]] = c[keep]
        return S, I


# ---------------------------------------------------------------- indexes and searches
SearchIndex = Any  # a hashsearch index, or ContinuousIndex


def build_index(mode: str, index: str, item_codes: np.ndarray, item_emb: np.ndarray, nbits: int,
                num_threads: int = 0) -> SearchIndex:
    """The index a mode searches: hamr an ``Index``/``MIHIndex``/``ClusterIndex`` over the codes,
    hies a ``HierarchicalIndex`` (``candidate_search=index``), continuous a :class:`ContinuousIndex`.

    Args:
        item_codes: packed uint64 (n, ceil(nbits/64)); item_emb: float32 (n, d).
    """
    import hashsearch

    if mode == "continuous":
        return ContinuousIndex(item_emb)
    if mode == "hies":
        return hashsearch.HierarchicalIndex(item_codes, np.ascontiguousarray(item_emb, np.float32), nbits,
                                            candidate_search=index, num_threads=num_threads)
    cls = {"scan": hashsearch.Index, "mih": hashsearch.MIHIndex, "cluster": hashsearch.ClusterIndex}[index]
    return cls(item_codes, nbits, num_threads=num_threads)


def index_payload(index: SearchIndex) -> Union[bytes, np.ndarray]:
    """What ships an index to another process: ``serialize_index`` bytes, or the embeddings
    (float32 (n, d)) of a :class:`ContinuousIndex`."""
    import hashsearch

    return index.emb if isinstance(index, ContinuousIndex) else hashsearch.serialize_index(index)


def index_from_payload(payload: Union[bytes, np.ndarray], num_threads: int = 0) -> SearchIndex:
    """Inverse of :func:`index_payload`."""
    import hashsearch

    if isinstance(payload, np.ndarray):
        return ContinuousIndex(payload)
    return hashsearch.deserialize_index(payload, num_threads=num_threads)


def search(index: SearchIndex, mode: str, q_codes: np.ndarray, q_emb: np.ndarray, k: int,
           candidates: int = DEFAULT_CANDIDATES, exclude: Optional[Exclude] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of a batch of users, best first.

    Args:
        q_codes: uint64 (nq, W) user codes; q_emb: float32 (nq, d) user embeddings.
        k: results per user; above the number of items the rest is padding.
        candidates: hies' Hamming candidates (raised to k, capped at the number of items).
        exclude: CSR over the index's item ids, one row per user.
    Returns:
        (D, I): D int32 (hamr; padding -1) or float32 (hies, continuous; padding -inf), (nq, k);
        I int64 (nq, k) item ids, -1 padding.
    """
    n, nq = index.ntotal, q_codes.shape[0]
    k_eff = min(k, n)
    if mode == "hamr":
        D, I = index.topk(q_codes, k_eff, exclude=exclude)
    elif mode == "hies":
        cand = min(max(candidates, k_eff), n)
        D, I = index.topk(q_codes, np.ascontiguousarray(q_emb, np.float32), k_eff, candidates=cand,
                          exclude=exclude)
    else:
        D, I = index.topk(q_emb, k_eff, exclude=exclude)
    if k_eff == k:
        return D, I
    Dp = np.full((nq, k), -1 if mode == "hamr" else -np.inf, D.dtype)
    Ip = np.full((nq, k), -1, np.int64)
    Dp[:, :k_eff], Ip[:, :k_eff] = D, I
    return Dp, Ip


# ---------------------------------------------------------------- users and batches
def resolve_users(run: Run, users: Optional[Union[str, Sequence[Any], np.ndarray]]) -> np.ndarray:
    """Dense ids (int64) of the users to serve: all (``None`` or ``"all"``) or the given raw ids, in order.

    Raises:
        UnknownIdError: raw ids the run does not hold (a few named).
    """
    if users is None or (isinstance(users, str) and users == "all"):
        return np.arange(run.n_users, dtype=np.int64)
    if isinstance(users, (str, bytes)):
        raise ValueError(f"users must be 'all', None or a sequence of raw user ids, got the string {users!r}")
    return run.user_index(users)


def read_users_file(path: PathLike) -> List[str]:
    """Raw user ids from a text file, one a line (surrounding blanks and blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--users {path}: no such file (expected 'all' or a file of raw user ids, one a line)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [x for x in ids if x]
    if not ids:
        raise ValueError(f"--users {path} holds no user ids (expected one raw user id a line)")
    return ids


def _progress(total: int, enabled: bool, desc: str = "recommend"):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="user", desc=desc, file=sys.stderr, dynamic_ncols=True)


def iter_recommendations(run: Run, users: np.ndarray, k: int, *, mode: str = "hamr", index: str = "scan",
                         candidates: int = DEFAULT_CANDIDATES, num_threads: int = 0, batch: int = DEFAULT_BATCH,
                         progress: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (users int64 (b,), D (b, k), I int64 (b, k)) batch by batch, in the order of ``users``
    (dense ids); D and I as :func:`search`. The index is built once, before the first batch."""
    check_options(k, mode, index, candidates, batch, num_threads)
    idx = build_index(mode, index, run.item_codes, run.item_emb, run.nbits, num_threads)
    with _progress(users.shape[0], progress) as bar:
        for s in range(0, users.shape[0], batch):
            ub = users[s:s + batch]
            ex = csr_rows(run.exclude_indptr, run.exclude_indices, ub)
            D, I = search(idx, mode, run.user_codes[ub], run.user_emb[ub], k, candidates, ex)
            yield ub, D, I
            bar.update(ub.shape[0])


def recommend_dense(run: Union[Run, PathLike], users: Optional[Union[str, Sequence[Any]]] = None, k: int = 100,
                    **options: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All users' top-k in dense ids: (users int64 (nq,), D (nq, k), I int64 (nq, k)), D and I as
    :func:`search` (padding -1 / -inf). ``options``: those of :func:`iter_recommendations`."""
    run = run if isinstance(run, Run) else load_run(run)
    dense = resolve_users(run, users)
    parts = list(iter_recommendations(run, dense, k, **options))
    if not parts:
        dtype = np.int32 if options.get("mode", "hamr") == "hamr" else np.float32
        return dense, np.zeros((0, k), dtype), np.zeros((0, k), np.int64)
    return dense, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def result_columns(run: Run, users: np.ndarray, D: np.ndarray, I: np.ndarray) -> dict:
    """Output columns of a batch, padding dropped: user and item raw ids, rank int32 (1..k), score."""
    valid = I >= 0  # padding only ever ends a row, so a kept entry's column is its rank - 1
    rows, cols = np.nonzero(valid)
    return {"user": run.user_ids[users[rows]], "rank": (cols + 1).astype(np.int32),
            "item": run.item_ids[I[valid]], "score": D[valid]}


def recommend(run_dir: Union[Run, PathLike], k: int = 100, users: Optional[Union[str, Sequence[Any]]] = None,
              mode: str = "hamr", index: str = "scan", *, candidates: int = DEFAULT_CANDIDATES,
              num_threads: int = 0, batch: int = DEFAULT_BATCH, progress: bool = False):
    """Top-k recommendations as a pandas DataFrame with columns user, rank, item, score.

    Args:
        run_dir: a run directory (or a loaded :class:`Run`).
        k: items per user; users with fewer than k items left after their exclusions get fewer rows.
        users: None / ``"all"``, or raw user ids (served in the given order).
        mode: ``hamr`` | ``hies`` | ``continuous``; index: ``scan`` | ``mih`` | ``cluster`` (hamr, hies).
    Returns:
        DataFrame sorted by (users' order, rank): user and item raw ids, rank int32, score (int32
        Hamming distance for hamr, float32 inner product otherwise).
    """
    import pandas as pd

    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    dense = resolve_users(run, users)
    cols = [result_columns(run, *part) for part in iter_recommendations(
        run, dense, k, mode=mode, index=index, candidates=candidates, num_threads=num_threads, batch=batch,
        progress=progress)]
    if not cols:
        cols = [result_columns(run, dense, np.zeros((0, k), np.int32 if mode == "hamr" else np.float32),
                               np.zeros((0, k), np.int64))]
    return pd.DataFrame({name: np.concatenate([c[name] for c in cols]) for name in ("user", "rank", "item", "score")})


# ---------------------------------------------------------------- output files
def output_format(out: PathLike, fmt: Optional[str]) -> str:
    """``fmt``, or from the name: ``.csv`` is csv, anything else parquet."""
    if fmt is None:
        return "csv" if str(out).lower().endswith(".csv") else "parquet"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImportError("Parquet output needs pyarrow: pip install -e \".[parquet]\" (or write --format csv)") from None
    return pyarrow


def arrow_schema(run: Run, mode: str) -> Any:
    """Output schema: user and item int64 or string (as the run's raw ids), rank int32, score int32
    (hamr) or float32."""
    pa = require_pyarrow()
    kind = {True: pa.string(), False: pa.int64()}
    return pa.schema([("user", kind[run.user_ids.dtype == object]), ("rank", pa.int32()),
                      ("item", kind[run.item_ids.dtype == object]),
                      ("score", pa.int32() if mode == "hamr" else pa.float32())])


class RecWriter:
    """Streams result batches into one Parquet or CSV file that appears atomically on :meth:`close`
    (a temporary file beside it, fsynced and renamed); :meth:`abort` removes the temporary file."""

    def __init__(self, out: PathLike, fmt: str, run: Run, mode: str, make_parent: bool = True) -> None:
        self.out, self.fmt = Path(out), fmt
        self.schema = arrow_schema(run, mode) if fmt == "parquet" else None
        if self.out.is_dir():
            raise IsADirectoryError(f"--out {self.out} is a directory; expected a file name")
        if make_parent:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        self.file = os.fdopen(fd, "wb")
        self._parquet = None
        self._header = True
        self.rows = 0

    def write(self, cols: dict) -> None:
        """Append a batch of :func:`result_columns`."""
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.file, self.schema)
            self._parquet.write_table(pa.table(cols, schema=self.schema))
        else:
            import pandas as pd

            text = io.StringIO()
            pd.DataFrame(cols).to_csv(text, index=False, header=self._header, lineterminator="\n")
            self.file.write(text.getvalue().encode("utf-8"))
            self._header = False
        self.rows += len(cols["rank"])

    def close(self) -> None:
        if self.fmt == "parquet" and self._parquet is None:  # no rows: still a valid, empty file
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.file, self.schema)
        if self._parquet is not None:
            self._parquet.close()
        elif self._header:
            self.file.write(b"user,rank,item,score\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.out)
        _fsync_directory(self.out.parent)

    def abort(self) -> None:
        self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def write_recommendations(run_dir: Union[Run, PathLike], out: PathLike, k: int = 100,
                          users: Optional[Union[str, Sequence[Any]]] = None, *, fmt: Optional[str] = None,
                          **options: Any) -> int:
    """:func:`recommend` streamed into ``out`` (Parquet or CSV, written atomically); returns the rows
    written. ``options``: those of :func:`iter_recommendations`."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    return write_dense(run, resolve_users(run, users), out, k, output_format(out, fmt), **options)


def write_dense(run: Run, dense: np.ndarray, out: PathLike, k: int, fmt: str, **options: Any) -> int:
    """:func:`write_recommendations` for dense user ids (int64 (nq,)) and a resolved format."""
    check_options(k, options.get("mode", "hamr"), options.get("index", "scan"),
                  options.get("candidates", DEFAULT_CANDIDATES), options.get("batch", DEFAULT_BATCH),
                  options.get("num_threads", 0))
    writer = RecWriter(out, fmt, run, options.get("mode", "hamr"))
    try:
        for part in iter_recommendations(run, dense, k, **options):
            writer.write(result_columns(run, *part))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


# ---------------------------------------------------------------- command line
def _fail(message: str) -> int:
    """A user error: one line on stderr, exit status 2 (as argparse's)."""
    print(f"python -m train recommend: error: {message}", file=sys.stderr)
    return 2


def run_cli(ns: argparse.Namespace) -> int:
    """``python -m train recommend`` (arguments from :func:`train.cli.add_recommend_parser`)."""
    try:
        check_options(ns.k, ns.mode, ns.index, ns.candidates, ns.batch, ns.num_threads)
        fmt = output_format(ns.out, ns.format)
        if ns.shards and ns.ray is None:
            raise ValueError(f"--shards {ns.shards} needs --ray (item shards live in Ray actors)")
        if ns.shards < 0:
            raise ValueError(f"--shards must be >= 0, got {ns.shards}")
        if fmt == "parquet":
            require_pyarrow()
        run = load_run(ns.run)
        users = None if ns.users == "all" else read_users_file(ns.users)
        dense = resolve_users(run, users)
        if ns.ray is not None:
            from .recommend_ray import run_cli_ray

            rows = run_cli_ray(ns, run, dense, fmt)
        else:
            rows = write_dense(run, dense, ns.out, ns.k, fmt, mode=ns.mode,
                                         index=ns.index, candidates=ns.candidates, num_threads=ns.num_threads,
                                         batch=ns.batch, progress=ns.progress)
    except (RunDirError, UnknownIdError, ValueError, ImportError, OSError) as bad:
        return _fail(str(bad))
    print(f"wrote {rows} rows for {dense.shape[0]} users to {ns.out}", file=sys.stderr)
    return 0
