"""Plain numpy brute-force twins of the native searches.

They are slow and memory-hungry (an (nq, n) distance matrix) and exist as the
ground truth that tests and benchmarks check the native engine against. They
follow the same contract: ties are broken by the smaller id, rows are padded
with -1 when fewer than k items qualify.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances.

    Args:
        queries: packed uint64 (nq, W).
        codes: packed uint64 (n, W).

    Returns:
        int32 (nq, n).
    """
    out = np.zeros((queries.shape[0], codes.shape[0]), dtype=np.int32)
    for w in range(codes.shape[1]):
        out += _popcount64(queries[:, w, None] ^ codes[None, :, w]).astype(np.int32)
    return out


def _exclusion_mask(nq: int, n: int, exclude) -> np.ndarray:
    mask = np.zeros((nq, n), dtype=bool)
    if exclude is None:
        return mask
    if isinstance(exclude, tuple):
        indptr, indices = (np.asarray(a, dtype=np.int64) for a in exclude)
        rows = np.repeat(np.arange(nq), np.diff(indptr))
        mask[rows, indices] = True
    else:
        for i, ids in enumerate(exclude):
            mask[i, np.asarray(ids, dtype=np.int64)] = True
    return mask


def topk_hamming(
    queries: np.ndarray, codes: np.ndarray, k: int, exclude=None
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k by brute force.

    Args:
        queries: packed uint64 (nq, W).
        codes: packed uint64 (n, W).
        k: results per query.
        exclude: optional list of id arrays per query, or CSR (indptr, indices).

    Returns:
        (D int32 (nq, k), I int64 (nq, k)) sorted by (distance, id); -1 padding.
    """
    nq, n = queries.shape[0], codes.shape[0]
    dist = hamming_distances(queries, codes)
    banned = _exclusion_mask(nq, n, exclude)
    D = np.full((nq, k), -1, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    ids = np.arange(n)
    for i in range(nq):
        keep = ids[~banned[i]]
        order = keep[np.lexsort((keep, dist[i, keep]))][:k]
        D[i, : len(order)] = dist[i, order]
        I[i, : len(order)] = order
    return D, I


def topk_hierarchical(
    query_codes: np.ndarray,
    query_emb: np.ndarray,
    codes: np.ndarray,
    emb: np.ndarray,
    k: int,
    candidates: int,
    exclude=None,
) -> Tuple[np.ndarray, np.ndarray]:
    """HieS by brute force: Hamming top-``candidates``, re-ranked by inner product.

    Args:
        query_codes: packed uint64 (nq, W); query_emb: float32 (nq, dim).
        codes: packed uint64 (n, W); emb: float32 (n, dim).

    Returns:
        (S float32 (nq, k) scores descending, I int64 (nq, k)); ties in score
        go to the smaller id; padding is (score -inf, id -1). Scores are
        computed in float64 and rounded to float32, as the engine does.
    """
    _, cand = topk_hamming(query_codes, codes, candidates, exclude)
    nq = query_codes.shape[0]
    S = np.full((nq, k), -np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        c = cand[i][cand[i] >= 0]
        scores = emb[c].astype(np.float64) @ query_emb[i].astype(np.float64)
        order = np.lexsort((c, -scores))[:k]
        S[i, : len(order)] = scores[order].astype(np.float32)
        I[i, : len(order)] = c[order]
    return S, I


def range_search_hamming(queries: np.ndarray, codes: np.ndarray, radius: int,
                         exclude=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every code within ``radius`` of each query: ``(lims int64 (nq+1,), D int32, I int64)``,
    each query's results sorted by (distance, id); ``exclude`` as for :func:`topk_hamming`."""
    dist = hamming_distances(queries, codes)
    dist[_exclusion_mask(queries.shape[0], codes.shape[0], exclude)] = np.iinfo(np.int32).max
    lims, ds, ids = [0], [], []
    for row in dist:
        hit = np.flatnonzero(row <= radius)
        order = np.lexsort((hit, row[hit]))
        ids.append(hit[order].astype(np.int64))
        ds.append(row[hit][order].astype(np.int32))
        lims.append(lims[-1] + len(hit))
    return (np.asarray(lims, dtype=np.int64), np.concatenate(ds) if ds else np.zeros(0, np.int32),
            np.concatenate(ids) if ids else np.zeros(0, np.int64))
