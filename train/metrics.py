r"""Ranking metrics from top-k lists.

For a user u with test items T_u (|T_u| > 0) and a ranked list r_1, r_2, … (training
and validation items already excluded), with hit_j = [r_j ∈ T_u]:

    Recall@n = Σ_{j=1..n} hit_j / |T_u|                    (the HashGNN paper's "HR@n")
    DCG@n    = Σ_{j=1..n} hit_j / log2(j + 1)
    IDCG@n   = Σ_{j=1..min(|T_u|, n)} 1 / log2(j + 1)
    NDCG@n   = DCG@n / IDCG@n

Both are averaged over the users that have test items. :func:`paper_ndcg`
is the official HashGNN code's variant, whose ideal DCG is built from the hits
found (the sorted hit vector), which is never smaller than the one above.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import scipy.sparse as sp


def hit_matrix(topk: np.ndarray, users: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """bool (nq, k): ``topk[q, j]`` is a test item of user ``users[q]`` (padding ids < 0 never hit).

    Args:
        topk: int64 (nq, k) item ids, best first.
        users: int64 (nq,) user ids.
        truth: (n_users, n_items) CSR with sorted indices.
    """
    n_items = truth.shape[1]
    indptr, indices = truth.indptr, truth.indices.astype(np.int64)
    row_of = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(indptr))
    keys = row_of * n_items + indices  # sorted: CSR is row-major with sorted indices
    q = users.astype(np.int64)[:, None] * n_items + np.maximum(topk, 0)
    if keys.shape[0] == 0:
        return np.zeros(topk.shape, bool)
    pos = np.minimum(np.searchsorted(keys, q), keys.shape[0] - 1)
    return (keys[pos] == q) & (topk >= 0)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def recall_ndcg(hits: np.ndarray, n_true: np.ndarray, ks: Sequence[int]) -> Dict[str, np.ndarray]:
    """Per-user Recall@n and NDCG@n (see the module docstring).

    Args:
        hits: bool (nq, k) hit matrix, k >= max(ks).
        n_true: int (nq,) number of test items per user (> 0).
    Returns:
        ``{"recall@n": float64 (nq,), "ndcg@n": float64 (nq,)}`` for n in ks.
    """
    out: Dict[str, np.ndarray] = {}
    kmax = max(ks)
    if hits.shape[1] < kmax:
        raise ValueError(f"need at least {kmax} ranked items, got {hits.shape[1]}")
    disc = _discounts(kmax)
    cum_ideal = np.cumsum(disc)
    h = hits.astype(np.float64)
    for n in ks:
        out[f"recall@{n}"] = h[:, :n].sum(1) / n_true
        dcg = (h[:, :n] * disc[:n]).sum(1)
        idcg = cum_ideal[np.minimum(n_true, n) - 1]
        out[f"ndcg@{n}"] = dcg / idcg
    return out


def paper_ndcg(hits: np.ndarray, n: int) -> np.ndarray:
    """The official HashGNN code's NDCG@n: DCG of the list over DCG of its own hits sorted
    to the top (0 when there is no hit). float64 (nq,)."""
    h = hits[:, :n].astype(np.float64)
    disc = _discounts(n)
    dcg = (h * disc).sum(1)
    ideal = (np.sort(h, axis=1)[:, ::-1] * disc).sum(1)
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
