"""Retrieval evaluation: Recall@n / NDCG@n with three retrieval modes.

- ``hamr``: Hamming ranking of packed codes (``hashsearch.Index``);
- ``hies``: Hamming top-``candidates`` re-ranked by inner product of the continuous
  embeddings (``hashsearch.HierarchicalIndex``);
- ``continuous``: exact inner-product top-k (torch matmul in user blocks).

Items in ``exclude`` (training, and validation when testing) are removed from each
user's ranking before the metrics of :mod:`train.metrics` are computed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from .config import EVAL_KS as KS
from .config import EVAL_MODES as MODES
from .metrics import hit_matrix, paper_ndcg, recall_ndcg

PAPER_PROTOCOL_NOTE = (
    "the official HashGNN code's protocol, for comparison with the paper only: training items are "
    "NOT excluded, HieS re-ranks 500 Hamming candidates, and NDCG's ideal DCG is built from the "
    "hits found"
)


@dataclass
class Embeddings:
    """What a trained model hands to retrieval.

    Attributes:
        user_codes, item_codes: uint64 packed codes (n, ceil(nbits/64)), as ``hashsearch.pack``.
        user_emb, item_emb: float32 (n, d) continuous embeddings (HieS re-ranking, continuous mode).
        nbits: code length K.
    """

    user_codes: np.ndarray
    item_codes: np.ndarray
    user_emb: np.ndarray
    item_emb: np.ndarray
    nbits: int


# Continuous search scores a block of users against every item at once: at most this many
# scores (float32) in one block, so millions of items do not take a (2048, n_items) matrix.
MAX_BLOCK_SCORES = 1 << 26


def _blocks(n: int, size: int, progress: bool = False, desc: str = "") -> Iterable[Tuple[int, int]]:
    """(start, end) of consecutive blocks of ``size`` over ``range(n)``, with a progress bar if asked."""
    starts = range(0, n, size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="block", leave=False, dynamic_ncols=True)
    for s in starts:
        yield s, min(n, s + size)


def _csr_rows(m: Optional[sp.csr_matrix], rows: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    if m is None:
        return None
    sub = m[rows]
    return sub.indptr.astype(np.int64), sub.indices.astype(np.int64)


def continuous_topk(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, k: int,
                    exclude: Optional[sp.csr_matrix] = None, block: int = 2048,
                    device: Optional[torch.device] = None, progress: bool = False) -> np.ndarray:
    """Exact inner-product top-k. Returns int64 (len(users), k) item ids, -1 where fewer than k qualify."""
    device = device or torch.device("cpu")
    items = torch.from_numpy(np.ascontiguousarray(item_emb, np.float32)).to(device)
    k_eff = min(k, items.shape[0])
    out = np.full((users.shape[0], k), -1, np.int64)
    block = max(1, min(block, MAX_BLOCK_SCORES // max(1, items.shape[0])))
    for s, e in _blocks(users.shape[0], block, progress, "continuous"):
        ub = users[s:e]
        scores = torch.from_numpy(np.ascontiguousarray(user_emb[ub], np.float32)).to(device) @ items.T
        ex = _csr_rows(exclude, ub)
        if ex is not None and ex[1].size:
            rows = np.repeat(np.arange(e - s), np.diff(ex[0]))
            scores[torch.from_numpy(rows).to(device), torch.from_numpy(ex[1]).to(device)] = -torch.inf
        val, idx = torch.topk(scores, k_eff, dim=1)
        idx = idx.cpu().numpy()
        idx[~np.isfinite(val.cpu().numpy())] = -1
        out[s:e, :k_eff] = idx
    return out


def engine_topk(index, mode: str, emb: Embeddings, users: np.ndarray, k: int,
                 exclude: Optional[sp.csr_matrix], block: int, candidates: int,
                 progress: bool = False) -> np.ndarray:
    """Ranked item ids (len(users), k) int64 (padding -1) from a built engine ``index`` (``Index``
    for "hamr", ``HierarchicalIndex`` for "hies"), ``block`` users a call, each user's ``exclude``
    row dropped inside the engine."""
    n_items = emb.item_codes.shape[0]
    k_eff = min(k, n_items)  # the engine refuses k or candidates above n; pad instead
    cand = min(max(candidates, k_eff), n_items)
    out = np.full((users.shape[0], k), -1, np.int64)
    for s, e in _blocks(users.shape[0], block, progress, mode):
        ub = users[s:e]
        ex = _csr_rows(exclude, ub)
        if mode == "hamr":
            _, ids = index.topk(emb.user_codes[ub], k_eff, exclude=ex)
        else:
            _, ids = index.topk(emb.user_codes[ub], np.ascontiguousarray(emb.user_emb[ub], np.float32), k_eff,
                                candidates=cand, exclude=ex)
        out[s:e, :k_eff] = ids
    return out


def topk_lists(mode: str, emb: Embeddings, users: np.ndarray, k: int, exclude: Optional[sp.csr_matrix],
               *, candidates: int = 500, block: int = 2048, num_threads: int = 0,
               device: Optional[torch.device] = None, progress: bool = False) -> np.ndarray:
    """Ranked item ids (len(users), k) int64 for one retrieval mode (padding -1)."""
    if mode == "continuous":
        return continuous_topk(emb.user_emb, emb.item_emb, users, k, exclude, block, device, progress)
    import hashsearch  # the engine; numpy arrays in and out, never torch

    if mode == "hamr":
        index = hashsearch.Index(emb.item_codes, emb.nbits, num_threads=num_threads)
    elif mode == "hies":
        index = hashsearch.HierarchicalIndex(emb.item_codes, np.ascontiguousarray(emb.item_emb, np.float32),
                                             emb.nbits, num_threads=num_threads)
    else:
        raise ValueError(f"unknown retrieval mode {mode!r} (one of {MODES})")
    return engine_topk(index, mode, emb, users, k, exclude, block, candidates, progress)


def evaluate(emb: Embeddings, truth: sp.csr_matrix, exclude: Optional[sp.csr_matrix], *,
             modes: Sequence[str] = MODES, ks: Sequence[int] = KS, candidates: int = 500,
             block: int = 2048, paper_protocol: bool = False, num_threads: int = 0,
             device: Optional[torch.device] = None, users: Optional[np.ndarray] = None,
             progress: bool = False) -> Dict[str, Dict[str, float]]:
    """Recall@n and NDCG@n for each mode, averaged over users with at least one item in ``truth``.

    Args:
        emb: the model's codes and embeddings.
        truth: (n_users, n_items) CSR of held-out items.
        exclude: (n_users, n_items) CSR of items removed from rankings (None: nothing removed).
        paper_protocol: also return ``"paper_protocol"`` (see :data:`PAPER_PROTOCOL_NOTE`).
        users: int64 user ids to evaluate (e.g. a seeded sample; None: all); those without held-out
            items are skipped.
        progress: progress bars over the blocks of users.
    Returns:
        ``{mode: {"recall@20": …, "ndcg@20": …, …, "seconds": …}}``.
    """
    truth = truth.tocsr()
    truth.sort_indices()
    n_true = np.diff(truth.indptr)
    have = n_true > 0
    if users is not None:
        have &= np.isin(np.arange(n_true.shape[0]), users)
    users = np.flatnonzero(have).astype(np.int64)
    kmax = max(ks)
    result: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        top = topk_lists(mode, emb, users, kmax, exclude, candidates=candidates, block=block,
                         num_threads=num_threads, device=device, progress=progress)
        per_user = recall_ndcg(hit_matrix(top, users, truth), n_true[users], ks)
        result[mode] = {name: float(v.mean()) if v.size else 0.0 for name, v in per_user.items()}
        result[mode]["seconds"] = time.perf_counter() - t0
    if paper_protocol:
        result["paper_protocol"] = _paper_protocol(emb, truth, users, n_true, ks, block, num_threads, progress)
    return result


def _paper_protocol(emb: Embeddings, truth: sp.csr_matrix, users: np.ndarray, n_true: np.ndarray,
                    ks: Sequence[int], block: int, num_threads: int, progress: bool = False) -> Dict:
    out: Dict = {"note": PAPER_PROTOCOL_NOTE}
    kmax = max(ks)
    for mode in ("hies", "hamr", "continuous"):  # continuous: the paper's continuous rows (GraphSage)
        top = topk_lists(mode, emb, users, kmax, None, candidates=500, block=block, num_threads=num_threads,
                         progress=progress)
        hits = hit_matrix(top, users, truth)
        m: Dict[str, float] = {}
        for n in ks:
            m[f"recall@{n}"] = float((hits[:, :n].sum(1) / n_true[users]).mean()) if users.size else 0.0
            m[f"ndcg@{n}"] = float(paper_ndcg(hits, n).mean()) if users.size else 0.0
        out[mode] = m
    return out
