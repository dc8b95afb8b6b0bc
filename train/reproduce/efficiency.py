"""Table 4: time to retrieve the top-100 for all users, continuous search vs HieS vs HamR."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .common import machine_info, markdown_table, median_seconds, write_outputs

log = logging.getLogger(__name__)

# The paper's Alibaba data set: 601,946 users x 4,167,708 items.
ALIBABA_USERS, ALIBABA_ITEMS = 601_946, 4_167_708


def learned_like(n_users: int, n_items: int, nbits: int, dim: int = 64, clusters: int = 1000,
                 noise: float = 0.5, seed: int = 0) -> Dict[str, np.ndarray]:
    """Synthetic stand-in for trained codes: Gaussian-mixture embeddings and the signs of
    a random projection of them (users drawn from the same mixture).

    Returns float32 ``user_emb`` (n_users, dim), ``item_emb`` (n_items, dim) and packed
    uint64 ``user_codes``, ``item_codes``.
    """
    import hashsearch

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    proj = rng.standard_normal((dim, nbits)).astype(np.float32)
    out: Dict[str, np.ndarray] = {}
    for who, n in (("user", n_users), ("item", n_items)):
        emb = np.empty((n, dim), np.float32)
        codes = np.empty((n, (nbits + 63) // 64), np.uint64)
        for s in range(0, n, 1 << 18):  # chunks keep the temporaries small at millions of rows
            e = min(n, s + (1 << 18))
            emb[s:e] = centres[rng.integers(0, clusters, e - s)]
            emb[s:e] += noise * rng.standard_normal((e - s, dim), dtype=np.float32)
            codes[s:e] = hashsearch.pack(emb[s:e] @ proj)
        out[f"{who}_emb"], out[f"{who}_codes"] = emb, codes
    return out


def _numpy_ip_topk(user_emb: np.ndarray, item_emb: np.ndarray, k: int) -> np.ndarray:
    block = max(1, (1 << 27) // item_emb.shape[0])  # ~512 MB of scores at a time
    out = np.empty((user_emb.shape[0], k), np.int64)
    for s in range(0, user_emb.shape[0], block):
        scores = user_emb[s:s + block] @ item_emb.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        out[s:s + block] = np.take_along_axis(part, order, 1)
    return out


def recall_at(result: Any, truth, k: int) -> float:
    """Recall@k of one method's top-k lists (its ``(D, I)`` or ids (n_users, k)) against the
    held-out items ``truth`` (CSR (n_users, n_items)), over the users that have any."""
    from ..metrics import hit_matrix

    ids = result[1] if isinstance(result, tuple) else result
    ids = np.asarray(ids, np.int64)[:, :k]
    truth = truth.tocsr()
    truth.sort_indices()
    n_true = np.diff(truth.indptr)
    users = np.flatnonzero(n_true > 0)
    if users.size == 0:
        return 0.0
    hits = hit_matrix(ids[users], users.astype(np.int64), truth)
    return float((hits.sum(1) / n_true[users]).mean())


def time_methods(data: Dict[str, np.ndarray], nbits: int, k: int, threads: int, candidates: int,
                 repeats: int, include_numpy: bool = True, only: Optional[Sequence[str]] = None,
                 extra_mih_m: Sequence[int] = (), truth=None, once: bool = False) -> Dict[str, Dict[str, Any]]:
    """Median seconds of each retrieval method over the given users (no exclusion); ``once``:
    one call per method and no warm-up (all users of a large data set, where a call takes
    minutes and a warm-up would change nothing); ``only``:
    time just the methods whose names start with one of these prefixes; ``extra_mih_m``: also
    HamR by MIH with these numbers of tables (beyond what the default's memory bound allows;
    the row names the tables' size against the codes'); ``truth``: the users' held-out items
    (CSR), to report each method's Recall@k beside its time."""
    import hashsearch

    ue, ie = np.ascontiguousarray(data["user_emb"]), np.ascontiguousarray(data["item_emb"])
    uc, ic = data["user_codes"], data["item_codes"]
    methods: Dict[str, Callable[[], Any]] = {}
    notes: Dict[str, str] = {}
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        flat_ip = faiss.IndexFlatIP(ie.shape[1])
        flat_ip.add(ie)
        methods["CeS (faiss IndexFlatIP)"] = lambda: flat_ip.search(ue, k)
        if nbits % 8 == 0:
            nbytes = nbits // 8
            ib = np.ascontiguousarray(ic.view(np.uint8)[:, :nbytes])
            ub = np.ascontiguousarray(uc.view(np.uint8)[:, :nbytes])
            bin_flat = faiss.IndexBinaryFlat(nbits)
            bin_flat.add(ib)
            methods["HamR (faiss IndexBinaryFlat)"] = lambda: bin_flat.search(ub, k)
    except ImportError:
        notes["faiss"] = "faiss not installed: its rows are missing"
    if include_numpy:
        methods["CeS (numpy matmul)"] = lambda: _numpy_ip_topk(ue, ie, k)
    hies = hashsearch.HierarchicalIndex(ic, ie, nbits, num_threads=threads)
    cand = min(max(candidates, k), ic.shape[0])
    methods[f"HieS (ours, {cand} candidates)"] = lambda: hies.topk(uc, ue, k, candidates=cand)
    hies_mih = hashsearch.HierarchicalIndex(ic, ie, nbits, candidate_search="mih", num_threads=threads)
    methods[f"HieS (ours, {cand} candidates by MIH m={hies_mih.m})"] = \
        lambda: hies_mih.topk(uc, ue, k, candidates=cand)
    hies_cl = hashsearch.HierarchicalIndex(ic, ie, nbits, candidate_search="cluster", num_threads=threads)
    methods[f"HieS (ours, {cand} candidates by ClusterIndex C={hies_cl.nclusters})"] = \
        lambda: hies_cl.topk(uc, ue, k, candidates=cand)
    flat = hashsearch.Index(ic, nbits, num_threads=threads)
    methods["HamR (ours, linear scan)"] = lambda: flat.topk(uc, k)
    mih = hashsearch.MIHIndex(ic, nbits, num_threads=threads)
    methods[f"HamR (ours, MIH m={mih.m})"] = lambda: mih.topk(uc, k)
    clusters = hashsearch.ClusterIndex(ic, nbits, num_threads=threads)
    methods[f"HamR (ours, ClusterIndex C={clusters.nclusters})"] = lambda: clusters.topk(uc, k)
    for m in extra_mih_m:
        if m == mih.m:  # the default's row already
            continue
        extra = hashsearch.MIHIndex(ic, nbits, m=m, num_threads=threads)
        ratio = extra.table_bytes() / ic.nbytes
        methods[f"HamR (ours, MIH m={m}, tables {ratio:.2f}x the codes)"] = lambda extra=extra: extra.topk(uc, k)
    if only is not None:
        methods = {name: fn for name, fn in methods.items() if name.startswith(tuple(only))}
    results: Dict[str, Dict[str, Any]] = {}
    for name, fn in methods.items():
        slow = name.startswith("CeS")
        kept: Dict[str, Any] = {}

        def call(fn: Callable[[], Any] = fn) -> None:
            kept["out"] = fn()

        secs = median_seconds(call, repeats=1 if once else repeats, warmup=0 if slow or once else 1)
        results[name] = {"seconds": secs}
        if truth is not None:
            results[name][f"recall@{k}"] = recall_at(kept.pop("out"), truth, k)
        kept.clear()
        log.info("table4: %-32s %.3f s", name, secs)
    if notes:
        results["_notes"] = notes  # type: ignore[assignment]
    return results


def table4_rows(label: str, results: Dict[str, Dict[str, Any]], n_users: int, measured_users: int
                ) -> List[Dict[str, Any]]:
    """Rows with the all-users time (extrapolated when a slice was measured) and speed-ups."""
    scale = n_users / measured_users
    # Speed-ups are against the fastest exact continuous search measured (the strongest peer).
    ces = [r for name, r in results.items() if name.startswith("CeS")]
    base = min(ces, key=lambda r: r["seconds"]) if ces else None
    rows = []
    for name, r in results.items():
        if name.startswith("_"):
            continue
        rows.append({"data": label, "method": name, "measured_users": measured_users,
                     "measured_seconds": r["seconds"], "all_users_seconds": r["seconds"] * scale,
                     "extrapolated": measured_users != n_users,
                     "speedup_vs_ces": base["seconds"] / r["seconds"] if base else None,
                     "recall": next((v for key, v in r.items() if key.startswith("recall@")), None)})
    return rows


def table4(workloads: List[Dict[str, Any]], out: Path, *, nbits: int, k: int = 100, threads: int = 2,
           candidates: int = 500, repeats: int = 3, seed: int = 0, extra_mih_m: Sequence[int] = ()
           ) -> Dict[str, Any]:
    """Writes ``table4.{md,json}``.

    Args:
        workloads: dicts with ``label``, ``data`` (arrays as :func:`learned_like` returns,
            restricted to the measured users), ``n_users`` (all users, for extrapolation).
    """
    from tqdm import tqdm

    bad = [m for m in extra_mih_m if not 1 <= m <= nbits]
    if bad:
        raise ValueError(f"--mih-m: each number of MIH tables must be in 1..nbits={nbits}, got {bad}")
    rows: List[Dict[str, Any]] = []
    for w in tqdm(workloads, desc="table4", unit="data set"):
        measured = w["data"]["user_codes"].shape[0]
        res = time_methods(w["data"], nbits, k, threads, candidates, repeats,
                           include_numpy=w.get("numpy", True), only=w.get("only"), extra_mih_m=extra_mih_m,
                           truth=w.get("truth"), once=w.get("once", False))
        new = table4_rows(w["label"], res, w["n_users"], measured)
        if "ces_of" in w:  # no CeS timed here: against the (extrapolated) CeS of that workload's slice
            ces = [r["all_users_seconds"] for r in rows if r["data"] == w["ces_of"] and r["method"].startswith("CeS")]
            for r in new:
                r["speedup_vs_ces"] = min(ces) / r["all_users_seconds"] if ces else None
        rows.extend(new)
    md_rows = [[r["data"], r["method"], r["measured_users"], r["measured_seconds"],
                ("~" if r["extrapolated"] else "") + f"{r['all_users_seconds']:,.2f}",
                None if r["speedup_vs_ces"] is None else f"×{r['speedup_vs_ces']:.1f}",
                r.get("recall")] for r in rows]
    md = (f"# Table 4: top-{k} for all users, {nbits}-bit codes, {threads} threads\n\n"
          + markdown_table(["data", "method", "users timed", "seconds (timed)", "seconds (all users)",
                            "speed-up vs fastest CeS", f"Recall@{k}"], md_rows)
          + "\nMedians of repeated runs in one process (a data set's 'all users' rows: one call "
            "each); '~' marks times extrapolated linearly from "
            "a measured slice of users. No exclusion of training items here (faiss has none), so "
            "every method does the same work. Speed-ups are against the faster of the exact "
            "continuous searches (faiss IndexFlatIP, numpy matmul + argpartition). Recall@k is that "
            "of the timed lists themselves against the test split, over the users with test items "
            "(training items not excluded, as in the timing; '–' for synthetic codes, which have no "
            "test split); the run's metrics.json has the figures with them excluded. The paper "
            "reports HamR at ×3.6 CeS on Alibaba (4,164 s).\n")
    payload = {"nbits": nbits, "k": k, "threads": threads, "candidates": candidates, "repeats": repeats,
               "seed": seed, "extra_mih_m": list(extra_mih_m), "rows": rows, "machine": machine_info(threads)}
    write_outputs(out, "table4", md, payload)
    return payload


def dataset_workload(label: str, run_dir: Path, n_users: Optional[int] = None, truth=None,
                     users_timed: int = 0, seed: int = 0) -> List[Dict[str, Any]]:
    """Workloads from a finished training run (codes.npz); ``truth``: the held-out items (CSR
    (n_users, n_items)) that each method's Recall is measured against.

    ``users_timed`` > 0 and fewer than the run's users: every method on a seeded sample of that
    many users (times extrapolated to all), and the engine's Hamming methods (HamR by scan, MIH
    and ClusterIndex, and HieS) timed on all users in one call, where exact continuous search
    over millions of items would take hours."""
    from .common import load_codes

    emb = load_codes(run_dir)
    data = {"user_codes": emb.user_codes, "item_codes": emb.item_codes,
            "user_emb": np.ascontiguousarray(emb.user_emb, np.float32),
            "item_emb": np.ascontiguousarray(emb.item_emb, np.float32)}
    n_all = emb.user_codes.shape[0]
    whole = {"label": label, "data": data, "n_users": n_users or n_all, "nbits": emb.nbits, "truth": truth}
    if not 0 < users_timed < n_all:
        return [whole]
    rows = np.sort(np.random.default_rng(seed).choice(n_all, users_timed, replace=False))
    part = {key: (v[rows] if key.startswith("user") else v) for key, v in data.items()}
    sample = {"label": f"{label}, {users_timed:,} users", "data": part, "n_users": n_users or n_all,
              "nbits": emb.nbits, "truth": None if truth is None else truth.tocsr()[rows]}
    whole.update(label=f"{label}, all users", only=("HamR (ours", "HieS (ours"),
                 ces_of=sample["label"], once=True)
    return [sample, whole]


def alibaba_workloads(nbits: int, measured_users: int, seed: int, n_items: int = ALIBABA_ITEMS,
                      n_users: int = ALIBABA_USERS, all_users_mih: bool = False) -> List[Dict[str, Any]]:
    """Synthetic learned-like codes at the paper's Alibaba scale: every method on a slice of
    ``measured_users`` users (extrapolated to ``n_users``); with ``all_users_mih``, also HamR by
    MIH and by ClusterIndex timed on all ``n_users`` users in one call (the slice is their first
    rows, same items)."""
    data = learned_like(n_users if all_users_mih else measured_users, n_items, nbits, seed=seed)
    label = f"synthetic Alibaba-scale ({n_users:,} x {n_items:,})"
    part = {key: (v[:measured_users] if key.startswith("user") else v) for key, v in data.items()}
    out = [{"label": label, "data": part, "n_users": n_users}]
    if all_users_mih:
        out.append({"label": label + ", all users", "data": data, "n_users": n_users,
                    "only": ("HamR (ours, MIH", "HamR (ours, ClusterIndex"), "ces_of": label})
    return out
