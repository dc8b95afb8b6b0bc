"""Argument checks shared by the index classes: each failure names what was
expected and what was given."""
from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ._codes import as_packed, native_uint64, words_for

ExcludeArg = Union[None, Sequence[Sequence[int]], Tuple[np.ndarray, np.ndarray]]


# The native core takes these counts as C ints; a larger value would fail pybind11's
# conversion with a TypeError listing signatures instead of saying what was wrong.
INT_MAX = 2**31 - 1


def check_int(value, name: str, minimum: int, maximum: Optional[int] = INT_MAX) -> int:
    if type(value) is int and minimum <= value and (maximum is None or value <= maximum):
        return value  # the common case, without the isinstance checks (~0.5 us a call)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_k(k, n: int, name: str = "k") -> int:
    k = check_int(k, name, 1, maximum=None)
    if n == 0:
        raise ValueError("the index is empty: it holds 0 codes")
    if k > n:
        raise ValueError(f"{name}={k} exceeds the number of indexed codes n={n}")
    if k > INT_MAX:  # an index of more codes than a C int counts
        raise ValueError(f"{name} must be <= {INT_MAX}, got {k}")
    return k


def check_threads(num_threads) -> int:
    """num_threads: an int >= 0 (0: all cores). The native core caps it at 4x the core count."""
    return check_int(num_threads, "num_threads", 0)


def packed_queries(q, nbits: int, what: str = "queries") -> np.ndarray:
    """One code or a batch, packed uint64 or unpacked -> uint64 (nq, W)."""
    # The serving call's case, packed C-contiguous codes of the right width and nbits a
    # multiple of 64 (no padding bits to check), skips the general checks: 2.1 -> 0.8 us
    # of a one-query call of ~5.5 us on a small index.
    if type(q) is np.ndarray and q.dtype == np.uint64 and nbits % 64 == 0 and q.flags.c_contiguous:
        if q.ndim == 2 and q.shape[1] == nbits // 64:
            return q
        if q.ndim == 1 and q.shape[0] == nbits // 64:
            return q.reshape(1, -1)
    arr = native_uint64(np.asarray(q))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be one code (1-D) or a batch (2-D), got shape {np.shape(q)}")
    if arr.dtype == np.uint64:
        if arr.shape[1] != words_for(nbits):
            raise ValueError(
                f"packed {what} must have {words_for(nbits)} uint64 words for nbits={nbits}, "
                f"got {arr.shape[1]}"
            )
        packed, _ = as_packed(arr, nbits, what)
        return packed
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be bool, integer (0/1 or ±1) or floating (sign), got dtype {arr.dtype}")
    if arr.shape[1] != nbits:
        hint = ""
        if arr.dtype.kind in "iu" and arr.shape[1] == words_for(nbits):  # packed words of another dtype
            hint = f" (packed codes must be uint64, got {arr.dtype})"
        raise ValueError(f"{what} have {arr.shape[1]} bits, the index has nbits={nbits}{hint}")
    packed, _ = as_packed(arr, nbits, what)
    return packed


def _check_unsigned_ids(ids: np.ndarray, n: int) -> None:
    """Unsigned ids beyond int64 would wrap to negatives when cast: report them as given."""
    if ids.dtype.kind == "u" and ids.size and int(ids.max()) >= n:
        raise ValueError(f"exclude id {int(ids.max())} is out of range [0, {n})")


def float_matrix(
    x, name: str, rows: Optional[int] = None, cols: Optional[int] = None, check_finite: bool = True
) -> np.ndarray:
    """float32 C-contiguous (rows, cols) copy or view of ``x``; ``check_finite=False`` leaves the
    NaN/inf check to the caller (the native search does it for query embeddings, cheaper)."""
    arr = np.asarray(x)
    if arr.ndim == 1 and cols is not None and arr.shape[0] == cols and rows in (None, 1):
        arr = arr[None, :]
    if arr.dtype.kind not in "fiu":  # (np.issubdtype costs ~1.5 us a call)
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows, got {arr.shape[0]}")
    if cols is not None and arr.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns, got {arr.shape[1]}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite and not np.isfinite(out).all():
        raise ValueError(f"{name} contain NaN or infinite values (as float32)")
    return out


def exclude_csr(exclude: ExcludeArg, nq: int, n: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Normalise ``exclude`` to CSR (indptr int64 (nq+1,), indices int64) sorted per row."""
    if exclude is None:
        return None, None
    # Forms whose iteration is not a row per query in order: a dict would give its keys as
    # the rows, a set no order, a string characters.
    if isinstance(exclude, (Mapping, Set, str, bytes, bytearray, memoryview)):
        raise TypeError(
            "exclude must be None, a sequence of id arrays (one per query, in query order) or a CSR "
            f"tuple (indptr, indices), got {type(exclude).__name__}"
        )
    # A 2-tuple is CSR (indptr, indices); per-query rows come as a list.
    if isinstance(exclude, tuple) and len(exclude) == 2:
        indptr = np.asarray(exclude[0])
        indices = np.asarray(exclude[1])
        if not np.issubdtype(indptr.dtype, np.integer) or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(
                f"exclude CSR arrays must be integers, got {indptr.dtype} and {indices.dtype}"
            )
        _check_unsigned_ids(indices, n)
        indptr = indptr.astype(np.int64).ravel()
        indices = indices.astype(np.int64).ravel()
        if len(indptr) != nq + 1:
            raise ValueError(f"exclude indptr must have nq+1={nq + 1} entries, got {len(indptr)}")
        if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
            raise ValueError(
                f"exclude indptr must be non-decreasing from 0 to len(indices)={len(indices)}"
            )
    else:
        if isinstance(exclude, np.ndarray) and exclude.ndim == 2:
            rows = list(exclude)
        else:
            try:
                rows = list(exclude)
            except TypeError:
                raise TypeError(
                    "exclude must be None, a list of id arrays (one per query) or a CSR tuple "
                    f"(indptr, indices), got {type(exclude).__name__}"
                ) from None
        if len(rows) != nq:
            raise ValueError(f"exclude has {len(rows)} rows but there are {nq} queries")
        try:
            arrays = [np.asarray(r).ravel() for r in rows]
        except ValueError as e:  # a ragged row
            raise ValueError(f"each exclude row must be a flat list or array of ids: {e}") from None
        for a in arrays:
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"exclude ids must be integers, got dtype {a.dtype}")
            _check_unsigned_ids(a, n)
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = (
            np.concatenate([a.astype(np.int64) for a in arrays]) if nq else np.zeros(0, np.int64)
        )
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise ValueError(f"exclude id {bad} is out of range [0, {n})")
        rows_of = np.repeat(np.arange(nq, dtype=np.int64), np.diff(indptr))
        order = np.lexsort((indices, rows_of))
        indices = np.ascontiguousarray(indices[order])
    return np.ascontiguousarray(indptr), indices
