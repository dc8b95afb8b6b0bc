"""``reproduce throughput``: recommendation quality against users served per second.

Every method ranks the top-``k`` items of each user with held-out test items, the user's training
and validation items excluded, and is scored by test Recall@k and NDCG@k (:mod:`train.metrics`, as
:func:`train.evaluate.evaluate`), not by recall of an exact top-k: the continuous model by exact
inner-product search and through faiss HNSW and NSG graphs, the hashing methods' codes (HashGNN's,
and those distilled from the continuous model) by HamR and by HieS.

Exclusion. The hashing engine drops excluded items inside its search (``exclude=``). The faiss
indexes cannot, so the continuous searches over-fetch and filter: a user with ``e`` excluded items
is searched for ``k + 2^ceil(log2 e)`` items (the users are grouped by that count, one search
per group), the excluded ones are removed and the first ``k`` kept. With exact search this is
exactly the top-``k`` with exclusion; the graphs search at least that many (faiss raises their
beam, efSearch or search_L, to the count asked when it is larger). The searches and the filter
are timed; each group's rows of the exclusion matrix are sliced once beforehand (the engine's
rows are sliced inside its timed call, as :mod:`train.evaluate` does).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from .common import Points, faiss_flat_ip, faiss_threads, machine_info, markdown_table, plot_lines, write_outputs
from .tradeoff import mips_to_l2, recall_at_throughput

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..evaluate import Embeddings

log = logging.getLogger(__name__)

THROUGHPUTS_DEFAULT = (1e4, 1e5, 1e6)
EF_DEFAULT = (16, 32, 64, 128, 256, 512)
NSG_L_DEFAULT = (16, 32, 64, 128, 256, 512)
CANDIDATES_DEFAULT = (100, 200, 500, 1000, 2000, 5000)
HNSW_M, HNSW_EF_CONSTRUCTION, NSG_R = 32, 200, 32


@dataclass
class Workload:
    """What every method of the comparison answers and is scored on.

    Attributes:
        users: int64 ids of the users with test items (the queries), ascending.
        truth: (n_users, n_items) CSR of test items, sorted indices.
        exclude: (n_users, n_items) CSR of training and validation items, sorted indices.
        hashing: {method label: {bits: its :class:`train.evaluate.Embeddings` at that code width}},
            e.g. {"HashGNN": {32: …, 64: …}, "Distilled": {64: …}}.
        continuous: the continuous model's :class:`train.evaluate.Embeddings` (embeddings used).
        k: the cut-off n of Recall@n and NDCG@n.
    """

    users: np.ndarray
    truth: sp.csr_matrix
    exclude: sp.csr_matrix
    hashing: Dict[str, Dict[int, "Embeddings"]]
    continuous: "Embeddings"
    k: int = 20


def make_workload(dataset: "Dataset", hashing_runs: Dict[str, Dict[int, Path]], continuous_run: Path,
                  k: int = 20) -> Workload:
    """The workload of finished runs (codes.npz) on ``dataset``'s test split: each hashing method's at
    each of its widths (``hashing_runs``: {method label: {bits: run directory}}) and the continuous
    model's."""
    from .common import load_codes

    truth, exclude = dataset.csr("test").tocsr(), dataset.csr("train", "valid").tocsr()
    truth.sort_indices()
    exclude.sort_indices()
    users = np.flatnonzero(np.diff(truth.indptr) > 0).astype(np.int64)
    hashing = {label: {bits: load_codes(run) for bits, run in sorted(runs.items())}
               for label, runs in hashing_runs.items()}
    return Workload(users, truth, exclude, hashing, load_codes(continuous_run), k)


def score_lists(top: np.ndarray, w: Workload) -> Dict[str, float]:
    """Mean test Recall@k and NDCG@k of ranked lists ``top`` (one row per ``w.users``)."""
    from ..metrics import hit_matrix, recall_ndcg

    n_true = np.diff(w.truth.indptr)[w.users]
    per_user = recall_ndcg(hit_matrix(top, w.users, w.truth), n_true, (w.k,))
    return {name: float(v.mean()) if v.size else 0.0 for name, v in per_user.items()}


def overfetch_groups(n_excluded: np.ndarray, k: int, n_items: int) -> List[Tuple[np.ndarray, int]]:
    """[(query positions, items to fetch)]: each query with ``e`` excluded items fetches
    ``k + 2^ceil(log2 e)`` (``k`` when ``e`` = 0), at most ``n_items``; one group per count."""
    e = np.asarray(n_excluded, np.int64)
    pad = np.where(e > 0, 1 << np.ceil(np.log2(np.maximum(e, 1))).astype(np.int64), 0)
    fetch = np.minimum(k + pad, n_items)
    return [(np.flatnonzero(fetch == f), int(f)) for f in np.unique(fetch)]


def drop_excluded(ids: np.ndarray, users: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """The first ``k`` ids of each row that are not excluded for its user (CSR with sorted indices,
    :func:`train.metrics.hit_matrix` finds them), in order; -1 where fewer remain."""
    from ..metrics import hit_matrix

    ids = np.asarray(ids, np.int64)
    keep = (ids >= 0) & ~hit_matrix(ids, users, exclude)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    out = np.full((ids.shape[0], k), -1, np.int64)
    taken = np.take_along_axis(ids, order, 1)
    out[:, :taken.shape[1]] = np.where(np.take_along_axis(keep, order, 1), taken, -1)
    return out


def overfetch_plan(w: Workload, n_items: int) -> List[Tuple[np.ndarray, int, sp.csr_matrix]]:
    """[(query positions, items to fetch, their users' excluded items as CSR rows 0..)] of
    :func:`overfetch_groups`, sliced once, outside the timed searches."""
    plan = []
    for pos, fetch in overfetch_groups(np.diff(w.exclude.indptr)[w.users], w.k, n_items):
        sub = w.exclude[w.users[pos]].tocsr()
        sub.sort_indices()
        plan.append((pos, fetch, sub))
    return plan


def overfetch_topk(search: Callable[[np.ndarray, int], np.ndarray], queries: np.ndarray, k: int,
                   plan: List[Tuple[np.ndarray, int, sp.csr_matrix]]) -> np.ndarray:
    """Top-``k`` with exclusion from a search that cannot exclude: ``search(queries, n)`` returns
    ids (nq, n); each group of :func:`overfetch_plan` is searched for its count, then filtered."""
    out = np.full((queries.shape[0], k), -1, np.int64)
    for pos, fetch, sub in plan:
        ids = search(np.ascontiguousarray(queries[pos]), fetch)
        out[pos] = drop_excluded(ids, np.arange(pos.shape[0], dtype=np.int64), sub, k)
    return out


def points_for(w: Workload) -> Points:
    """An empty set of points scored by test Recall@k and NDCG@k on ``w`` (:func:`score_lists`)."""
    return Points(lambda top: score_lists(top, w), w.users.shape[0], f"recall@{w.k}")


def exact_points(points: Points, w: Workload, name: str, threads: int, repeats: int) -> None:
    """Exact inner-product search of the continuous model: faiss IndexFlatIP with the over-fetch, or
    (no faiss) :func:`train.evaluate.continuous_topk`, which masks the excluded items itself."""
    ue = np.ascontiguousarray(w.continuous.user_emb[w.users], np.float32)
    ie = np.ascontiguousarray(w.continuous.item_emb, np.float32)
    flat = faiss_flat_ip(ie, threads)
    if flat is None:
        import torch

        from ..evaluate import continuous_topk

        log.warning("faiss not installed: exact search by torch matmul (train.evaluate)")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            points.time(f"{name} exact (torch matmul)", "exact", lambda: continuous_topk(
                w.continuous.user_emb, ie, w.users, w.k, w.exclude), repeats)
        finally:
            torch.set_num_threads(before)
        return
    plan = overfetch_plan(w, ie.shape[0])
    points.time(f"{name} exact (faiss IndexFlatIP)", "exact", lambda: overfetch_topk(
        lambda q, n: flat.search(q, n)[1], ue, w.k, plan), repeats)


def graph_points(points: Points, w: Workload, name: str, threads: int, repeats: int, ef_values: Sequence[int],
                 nsg_values: Sequence[int]) -> None:
    """faiss HNSW (IndexHNSWFlat, M = 32, efConstruction 200) over ``ef_values`` and NSG
    (IndexNSGFlat, R = 32) over ``nsg_values`` (search_L, at most the number of items), both on the
    MIPS → L2 reduction (:func:`train.reproduce.tradeoff.mips_to_l2`) and with faiss's own fixed
    seeds; none (logged) without faiss."""
    faiss = faiss_threads(threads)
    if faiss is None:
        log.warning("faiss not installed: no HNSW or NSG points")
        return
    items, queries = mips_to_l2(w.continuous.item_emb, w.continuous.user_emb[w.users])
    plan = overfetch_plan(w, items.shape[0])
    search = lambda index: lambda: overfetch_topk(lambda q, n: index.search(q, n)[1], queries, w.k, plan)  # noqa: E731
    hnsw = faiss.IndexHNSWFlat(items.shape[1], HNSW_M)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(items)
    for ef in ef_values:
        hnsw.hnsw.efSearch = int(ef)
        points.time(f"{name} HNSW (faiss, MIPS→L2, M={HNSW_M})", f"efSearch={ef}", search(hnsw), repeats)
    try:
        nsg = faiss.IndexNSGFlat(items.shape[1], NSG_R)
        nsg.add(items)
    except RuntimeError as err:  # faiss refuses graphs it cannot build (e.g. fewer items than its kNN graph)
        log.warning("NSG skipped: %s", " ".join(str(err).split()))
        return
    # faiss NSG seeds its pool of max(search_L, count asked) ids with distinct random items and never
    # stops when the pool is larger than the index: search_L is capped at the number of items
    for search_l in sorted({min(int(v), items.shape[0]) for v in nsg_values}):
        nsg.nsg.search_L = search_l
        points.time(f"{name} NSG (faiss, MIPS→L2, R={NSG_R})", f"search_L={search_l}", search(nsg), repeats)


def hash_points(points: Points, w: Workload, threads: int, repeats: int, candidate_values: Sequence[int]) -> None:
    """Each hashing method at each of its code widths (``w.hashing``): by HamR (``hashsearch.Index``;
    one curve, a point per width) and by HieS (``hashsearch.HierarchicalIndex``; a curve per width
    over ``candidate_values``), through :mod:`train.evaluate`'s engine path (exclusion in the engine)."""
    import hashsearch

    from ..evaluate import engine_topk

    block = max(1, w.users.shape[0])
    for label, widths in w.hashing.items():
        for bits, emb in widths.items():
            flat = hashsearch.Index(emb.item_codes, emb.nbits, num_threads=threads)
            points.time(f"{label} HamR (hashsearch.Index)", f"{bits} bits", lambda: engine_topk(
                flat, "hamr", emb, w.users, w.k, w.exclude, block, w.k), repeats)
        for bits, emb in widths.items():
            n = emb.item_codes.shape[0]
            hies = hashsearch.HierarchicalIndex(emb.item_codes, np.ascontiguousarray(emb.item_emb, np.float32),
                                                emb.nbits, num_threads=threads)
            for c in sorted({min(max(int(c), w.k), n) for c in candidate_values}):
                points.time(f"{label} HieS {bits}-bit (hashsearch.HierarchicalIndex)", f"candidates={c}",
                            lambda: engine_topk(hies, "hies", emb, w.users, w.k, w.exclude, block, c), repeats)


def recall_at_throughputs(rows: List[Dict[str, Any]], throughputs: Sequence[float],
                          key: str = "recall@20") -> Dict[str, Dict[float, Optional[float]]]:
    """{method: {throughput: its best ``key`` among its points at or above that many users/s, None
    when none is}}."""
    by_target = {t: recall_at_throughput(rows, t, key=key) for t in throughputs}
    return {m: {t: by_target[t][m] for t in throughputs} for m in dict.fromkeys(r["method"] for r in rows)}


def _threads(n: int) -> str:
    """'1 thread', '2 threads': the count and the noun."""
    return f"{n} thread" + ("s" if n != 1 else "")


def _markdown(rows: List[Dict[str, Any]], fixed: Dict[str, Dict[float, Optional[float]]], *, label: str,
              widths: Dict[str, List[int]], k: int, threads: int, n_users: int) -> str:
    """The page: every measured point, then each method's best Recall@k at each fixed throughput."""
    points = markdown_table(["method", "setting", "users/s", f"Recall@{k}", f"NDCG@{k}"],
                            [[r["method"], r["setting"], f"{r['qps']:,.0f}", r[f"recall@{k}"], r[f"ndcg@{k}"]]
                             for r in rows])
    targets = list(next(iter(fixed.values()), {}))
    read_off = markdown_table(["method"] + [f"Recall@{k} at ≥ {t:,.0f} users/s" for t in targets],
                              [[m] + ["not reached" if v is None else v for v in by_t.values()]
                               for m, by_t in fixed.items()])
    codes = "; ".join(f"{m} codes of {', '.join(map(str, b))} bits" for m, b in widths.items())
    return (f"# Test Recall@{k} and NDCG@{k} vs users/s: {label}, {codes}, "
            f"{_threads(threads)}, "
            f"{n_users:,} users\n\n{points}\n## Best Recall@{k} at a fixed throughput\n\n{read_off}\n"
            "Every list excludes the user's training and validation items and is scored against the "
            "held-out test items; the continuous searches over-fetch and filter (see "
            "train/reproduce/throughput.py).\n")


def throughput(w: Workload, out: Path, *, label: str, continuous_name: str, threads: int = 1, repeats: int = 3,
               ef_values: Sequence[int] = EF_DEFAULT, nsg_values: Sequence[int] = NSG_L_DEFAULT,
               candidate_values: Sequence[int] = CANDIDATES_DEFAULT,
               throughputs: Sequence[float] = THROUGHPUTS_DEFAULT, seed: int = 0,
               name: str = "throughput") -> Dict[str, Any]:
    """Writes ``<name>.{md,json,png}``: per method and setting its users/s and test Recall@k and
    NDCG@k, the plot of Recall@k against users/s (log x), and each method's best Recall@k at each of
    ``throughputs`` users/s ("not reached" when no point is that fast)."""
    points = points_for(w)
    exact_points(points, w, continuous_name, threads, repeats)
    graph_points(points, w, continuous_name, threads, repeats, ef_values, nsg_values)
    hash_points(points, w, threads, repeats, candidate_values)
    key = f"recall@{w.k}"
    fixed = recall_at_throughputs(points.rows, throughputs, key=key)
    curves: Dict[str, Dict[float, float]] = {}
    for r in points.rows:
        curves.setdefault(r["method"], {})[r["qps"]] = r[key]
    plot_lines(out / f"{name}.png", curves, f"{label}: test Recall@{w.k} vs users/s ({_threads(threads)})",
               xlabel="users / s (log)", ylabel=f"Recall@{w.k}", xscale="log",
               highlight=lambda m: m.split(" ")[0] in w.hashing)
    widths = {m: list(b) for m, b in w.hashing.items()}
    md = _markdown(points.rows, fixed, label=label, widths=widths, k=w.k, threads=threads,
                   n_users=w.users.shape[0])
    payload = {"label": label, "bits": widths, "k": w.k, "threads": threads, "repeats": repeats,
               "n_users": int(w.users.shape[0]), "n_items": int(w.continuous.item_emb.shape[0]),
               "points": points.rows, "throughputs": list(throughputs),
               "best_at_throughput": {m: [{"users_per_s": t, key: v} for t, v in by_t.items()]
                                      for m, by_t in fixed.items()},
               "hnsw": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}, "nsg": {"R": NSG_R},
               "seed": seed, "machine": machine_info(threads), "markdown": md, "name": name}
    write_outputs(out, name, md, payload)
    return payload
