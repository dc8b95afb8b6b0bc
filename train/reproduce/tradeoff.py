"""Recall of the exact continuous top-k against queries per second (ann-benchmarks style)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .common import (Points, faiss_flat_ip, machine_info, markdown_table, queries_per_second, save_figure,
                     write_outputs)

log = logging.getLogger(__name__)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / k (ids < 0 never count)."""
    k = truth.shape[1]
    hits = [np.intersect1d(f[f >= 0], t).size for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def mips_to_l2(items: np.ndarray, queries: np.ndarray):
    """Maximum inner product search as nearest-neighbour search (Bachrach et al., RecSys 2014).

    items float32 (n, d), queries float32 (nq, d) -> items' (n, d+1), queries' (nq, d+1), float32:
    each item gets the extra coordinate sqrt(M² - |x|²) with M its largest norm, each query 0, so
    |q' - x'|² = |q|² + M² - 2<q, x> and the L2 order equals the inner-product order for every
    query. Graph indexes built for metric distances navigate far better this way than on raw
    inner products, which are not a metric.
    """
    items = np.asarray(items, dtype=np.float32)
    sq = np.einsum("ij,ij->i", items, items, dtype=np.float64)
    extra = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0)).astype(np.float32)
    items_l2 = np.ascontiguousarray(np.hstack([items, extra[:, None]]))
    queries = np.asarray(queries, dtype=np.float32)
    queries_l2 = np.ascontiguousarray(np.hstack([queries, np.zeros((queries.shape[0], 1), np.float32)]))
    return items_l2, queries_l2


def tradeoff(data: Dict[str, np.ndarray], out: Path, *, label: str, nbits: int, k: int = 100,
             threads: int = 2, ef_values: Sequence[int] = (100, 150, 200, 300, 500, 800),
             candidate_values: Sequence[int] = (100, 200, 500, 1000, 2000, 5000),
             target_factor: float = 10.0, seed: int = 0, name: str = "tradeoff") -> Dict[str, Any]:
    """Writes ``tradeoff.{md,json,png}``.

    Ground truth is the exact inner-product top-k (faiss IndexFlatIP, else numpy). Points:
    HNSW on the continuous embeddings over its ``ef`` sweep (hnswlib; on raw inner products and on
    the MIPS -> L2 reduction, :func:`mips_to_l2`), HieS over its candidate
    sweep, HamR (linear scan) and MIH. The fixed-throughput column reports, per method, the best
    recall among its points with at least ``target_factor`` × the exact search's queries/s.
    """
    ue, ie = np.ascontiguousarray(data["user_emb"]), np.ascontiguousarray(data["item_emb"])
    nq, n = ue.shape[0], ie.shape[0]
    k = min(k, n)
    exact_name, exact_qps, truth = _exact_search(ue, ie, k, threads)
    points = Points(lambda found: {"recall": recall_at_k(found, truth)}, nq, "recall")
    points.add(exact_name, "exact", exact_qps, truth)
    _hnsw_points(points, ue, ie, k, threads, ef_values, seed)
    _hash_points(points, data, nbits, k, threads, candidate_values)

    target = target_factor * exact_qps
    fixed = recall_at_throughput(points.rows, target)
    md = _markdown(points.rows, fixed, label=label, nbits=nbits, k=k, threads=threads,
                   target=target, target_factor=target_factor)
    _plot(out / f"{name}.png", points.rows, f"{label}: recall@{k} vs queries/s")
    payload = {"label": label, "nbits": nbits, "k": k, "threads": threads, "n_items": n, "n_queries": nq,
               "points": points.rows, "target_qps": target, "recall_at_target": fixed, "seed": seed,
               "machine": machine_info(threads)}
    payload["markdown"] = md
    write_outputs(out, name, md, payload)
    return payload


def _exact_search(ue: np.ndarray, ie: np.ndarray, k: int, threads: int):
    """(name, queries/s, ids (nq, k) int64) of the exact inner-product top-k: faiss, else numpy."""
    flat_ip = faiss_flat_ip(ie, threads)
    if flat_ip is None:
        qps, truth = queries_per_second(lambda: np.argsort(-(ue @ ie.T), axis=1, kind="stable")[:, :k], ue.shape[0])
        return "CeS (numpy)", qps, truth
    qps, (_, truth) = queries_per_second(lambda: flat_ip.search(ue, k), ue.shape[0])
    return "CeS (faiss IndexFlatIP)", qps, truth


def _hnsw_points(points: Points, ue: np.ndarray, ie: np.ndarray, k: int, threads: int,
                 ef_values: Sequence[int], seed: int) -> None:
    """HNSW over its ef sweep, on raw inner products and on the MIPS -> L2 reduction (how a
    graph index is best used for inner-product search)."""
    try:
        import hnswlib
    except ImportError:
        log.warning("hnswlib not installed: no HNSW points")
        return
    nq, n = ue.shape[0], ie.shape[0]
    ie_l2, ue_l2 = mips_to_l2(ie, ue)
    for method, space, items, queries in (("HNSW (hnswlib ip, M=16)", "ip", ie, ue),
                                          ("HNSW (hnswlib, MIPS→L2, M=16)", "l2", ie_l2, ue_l2)):
        hnsw = hnswlib.Index(space=space, dim=items.shape[1])
        hnsw.init_index(max_elements=n, ef_construction=200, M=16, random_seed=seed)
        hnsw.set_num_threads(threads)
        hnsw.add_items(items, np.arange(n))
        for ef in ef_values:
            hnsw.set_ef(max(ef, k))
            try:
                qps, (ids, _) = queries_per_second(lambda: hnsw.knn_query(queries, k=k), nq)
            except RuntimeError as err:  # hnswlib cannot always return k results on tiny graphs
                log.warning("%s ef=%d skipped: %s", method, ef, err)
                continue
            points.add(method, f"ef={max(ef, k)}", qps, ids.astype(np.int64))


def _hash_points(points: Points, data: Dict[str, np.ndarray], nbits: int, k: int, threads: int,
                 candidate_values: Sequence[int]) -> None:
    """HieS over its candidate sweep, then HamR by the scan, MIH and ClusterIndex."""
    import hashsearch

    uc, ic, ue, ie = data["user_codes"], data["item_codes"], data["user_emb"], data["item_emb"]
    nq, n = uc.shape[0], ic.shape[0]
    hies = hashsearch.HierarchicalIndex(ic, np.ascontiguousarray(ie), nbits, num_threads=threads)
    for c in sorted({min(max(c, k), n) for c in candidate_values}):
        qps, (_, ids) = queries_per_second(lambda: hies.topk(uc, np.ascontiguousarray(ue), k, candidates=c), nq)
        points.add("HieS (ours)", f"candidates={c}", qps, ids)
    flat = hashsearch.Index(ic, nbits, num_threads=threads)
    qps, (_, ids) = queries_per_second(lambda: flat.topk(uc, k), nq)
    points.add("HamR (ours, linear scan)", "-", qps, ids)
    mih = hashsearch.MIHIndex(ic, nbits, num_threads=threads)
    qps, (_, ids) = queries_per_second(lambda: mih.topk(uc, k), nq)
    points.add("HamR (ours, MIH)", f"m={mih.m}", qps, ids)
    clusters = hashsearch.ClusterIndex(ic, nbits, num_threads=threads)
    qps, (_, ids) = queries_per_second(lambda: clusters.topk(uc, k), nq)
    points.add("HamR (ours, ClusterIndex)", f"C={clusters.nclusters}", qps, ids)


def recall_at_throughput(points: List[Dict[str, Any]], target: float, key: str = "recall") -> Dict[str, Any]:
    """Per method, its best ``key`` (recall) among points with at least ``target`` queries/s
    (None: none)."""
    fixed = {}
    for method in dict.fromkeys(p["method"] for p in points):
        ok = [p for p in points if p["method"] == method and p["qps"] >= target]
        fixed[method] = max((p[key] for p in ok), default=None)
    return fixed


def _markdown(points: List[Dict[str, Any]], fixed: Dict[str, Any], *, label: str, nbits: int, k: int,
              threads: int, target: float, target_factor: float) -> str:
    return (f"# Recall@{k} of the exact continuous top-{k} vs queries/s: {label}, {nbits}-bit codes, "
            f"{threads} threads\n\n"
            + markdown_table(["method", "setting", "queries/s", f"recall@{k}"],
                             [[p["method"], p["setting"], f"{p['qps']:,.0f}", p["recall"]] for p in points])
            + f"\n## Recall at a fixed throughput of {target_factor:g}× exact search ({target:,.0f} queries/s)\n\n"
            + markdown_table(["method", f"best recall@{k} at >= {target:,.0f} q/s"],
                             [[m, "not reached" if r is None else r] for m, r in fixed.items()])
            + "\nRecall is measured against exact inner-product search over the same continuous "
              "embeddings, so HamR/MIH points show what the binary codes alone keep of it.\n")


def _plot(path: Path, points: List[Dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for method in dict.fromkeys(p["method"] for p in points):
        pts = sorted((p for p in points if p["method"] == method), key=lambda p: p["recall"])
        ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o", ms=4, label=method)
    ax.set_yscale("log")
    ax.set_xlabel("recall@k of exact continuous search")
    ax.set_ylabel("queries / s (log)")
    save_figure(fig, ax, path, title)
