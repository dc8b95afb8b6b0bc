"""Settings and helpers shared by the benchmark modules (``pytest benchmarks/ --benchmark-only``).

* ``HASHSEARCH_BENCH_FULL=1`` turns on the long workloads (the 4,167,708-item
  Alibaba scale, every bit width at 1M items, all Gowalla users); without it
  they are skipped with that reason and the default run stays at a few minutes.
* Every search runs with ``THREADS`` (2) threads, ours and faiss alike.
* Ratios to a peer (faiss, our own linear scan, CeS) are measured inside the
  same test with :func:`peer_time`, so each ``extra_info`` is self-contained;
  the headline comparisons also record :func:`paired_ratio` (the two timed back
  to back, round by round), which a change of load during the test cannot skew.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

THREADS = 2

# Thread pools' settings, before numpy (its OpenBLAS) and faiss (libgomp) are loaded: each
# reads them once. This module is imported first, from conftest.py.
# Keep BLAS/OpenMP pools at the benchmark's thread count.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))
# Passive OpenMP waiting: with libgomp's default spin-waiting, faiss on a 2-core
# machine that has any other load (a trainer) loses whole time slices at every
# barrier: IndexBinaryFlat over ml-1m takes 1.4-4.5 s instead of 0.18 s. Passive
# waiting makes the peer's timings stable and is the fairer comparison.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call, taking a core from
# whatever runs next: the learned workloads' codes come from a float matmul, and an Index
# timed right after it ran on one core (ml-1m 64-bit: 28-37 ms instead of 14-19 ms; a
# numpy matmul then a 2-thread topk: 23-34 ms for 0.1 s, then 17-18 ms). 2^4 cycles: they
# sleep at once.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hashsearch  # noqa: E402
from hashsearch.reference import hamming_distances  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

K = 100
FULL = os.environ.get("HASHSEARCH_BENCH_FULL", "") not in ("", "0")
FULL_REASON = "long workload: set HASHSEARCH_BENCH_FULL=1 to run it"
DATA_DIR = ROOT.parent / "shared" / "data"



def full_only(reason: str = FULL_REASON):
    """Mark for a parametrisation that only runs with HASHSEARCH_BENCH_FULL=1."""
    return pytest.mark.skipif(not FULL, reason=reason)


def peer_time(fn: Callable[[], object], repeat: int = 3, budget_s: float = 30.0) -> Tuple[float, int, object]:
    """Median wall time of ``fn()`` over up to ``repeat`` runs.

    Stops early (after at least two runs) once ``budget_s`` seconds are spent,
    so a slow peer costs at most about ``budget_s``. Returns (median seconds,
    runs, the last result).
    """
    times = []
    out = None
    for i in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if i >= 1 and sum(times) > budget_s:
            break
    return statistics.median(times), len(times), out


def paired_ratio(peer_fn: Callable[[], object], ours_fn: Callable[[], object], rounds: int = 5,
                 budget_s: float = 30.0) -> Tuple[float, List[List[float]]]:
    """Median over rounds of (peer time / our time), the two timed back to back in each round.

    The benchmark's headline ratio divides two medians taken a while apart, so a
    change in the machine's load between them (other tenants; 20-40% here) moves it.
    Within a round both calls see about the same load, and the order alternates
    between rounds so that neither always runs second. Stops early (after at least
    two rounds) once ``budget_s`` seconds are spent. Returns (median ratio, per round
    [ratio, peer ms, our ms]).
    """
    ratios: List[float] = []
    rows: List[List[float]] = []
    spent = 0.0
    for r in range(rounds):
        order = (peer_fn, ours_fn) if r % 2 == 0 else (ours_fn, peer_fn)
        times = {}
        for fn in order:
            t0 = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t0
        spent += times[peer_fn] + times[ours_fn]
        ratios.append(times[peer_fn] / times[ours_fn])
        rows.append([round(ratios[-1], 3), round(times[peer_fn] * 1e3, 2), round(times[ours_fn] * 1e3, 2)])
        if r >= 1 and spent > budget_s:
            break
    return statistics.median(ratios), rows


def loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def base_info(**kw) -> Dict[str, object]:
    """The fields every benchmark records: sizes, k, threads, SIMD level, load."""
    import hashsearch

    info: Dict[str, object] = {
        "k": K,
        "threads": THREADS,
        "simd": hashsearch.simd_level(),
        "loadavg_1m": loadavg(),
        "cpu": platform.processor() or platform.machine(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
    }
    info.update(kw)
    return info


def bench_rounds(est_s: float) -> Dict[str, int]:
    """pedantic() settings: 3 rounds (+1 warm-up) for cheap calls, fewer for slow ones."""
    if est_s < 2.0:
        return dict(rounds=3, iterations=1, warmup_rounds=1)
    if est_s < 10.0:
        return dict(rounds=3, iterations=1, warmup_rounds=0)
    return dict(rounds=2, iterations=1, warmup_rounds=0)


def data_shape(name: str) -> Optional[Tuple[int, int]]:
    """(users, items) of a real data set under ../shared/data/<name>, or None if absent.

    Files hold one line per user: ``user item item ...``.
    """
    d = DATA_DIR / name
    if not (d / "train.txt").exists():
        return None
    users, max_item = 0, -1
    for split in ("train.txt", "valid.txt", "test.txt"):
        f = d / split
        if not f.exists():
            continue
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                users = max(users, int(parts[0]) + 1)
                if len(parts) > 1:
                    max_item = max(max_item, max(int(x) for x in parts[1:]))
    return users, max_item + 1





def faiss_codes(words: np.ndarray, nbits: int) -> np.ndarray:
    """Packed uint64 words -> faiss' uint8 (n, nbits/8) codes (same bit order, little-endian)."""
    if nbits % 8:
        raise ValueError("faiss binary indexes need nbits % 8 == 0")
    return np.ascontiguousarray(np.ascontiguousarray(words).view(np.uint8)[:, : nbits // 8])


def numpy_topk(q: np.ndarray, items: np.ndarray, k: int = K, max_cells: int = 1 << 24) -> Tuple[np.ndarray, np.ndarray]:
    """numpy baseline: XOR + popcount distance matrix in query batches, argpartition, sort.

    Returns (D int32, I int64) sorted by distance (ties in no particular order).
    """
    nq, n = q.shape[0], items.shape[0]
    bs = max(1, max_cells // max(n, 1))
    D = np.empty((nq, k), dtype=np.int32)
    I = np.empty((nq, k), dtype=np.int64)
    for lo in range(0, nq, bs):
        dist = hamming_distances(q[lo: lo + bs], items)
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        dpart = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(dpart, axis=1, kind="stable")
        D[lo: lo + bs] = np.take_along_axis(dpart, order, axis=1)
        I[lo: lo + bs] = np.take_along_axis(part, order, axis=1)
    return D, I


def run_bench(benchmark, fn: Callable[[], object], est_s: float):
    """Benchmark ``fn`` with pedantic(); returns (result, median seconds of the timed rounds)."""
    out = benchmark.pedantic(fn, **bench_rounds(est_s))
    stats = getattr(benchmark, "stats", None)
    med = None
    if stats is not None:
        try:
            med = float(stats.stats.median)
        except AttributeError:
            med = None
    if med is None:  # --benchmark-disable: time it ourselves so ratios still mean something
        med, _, out = peer_time(fn, repeat=1)
    return out, med


def est_scan_s(n: int, nq: int, nbits: int, per_sec: float = 2e9) -> float:
    """A rough guess of a faiss-like brute-force cost, to pick the number of rounds."""
    return n * nq * max(1, nbits // 64) / per_sec


def dist_recall(D_approx: np.ndarray, D_exact: np.ndarray) -> float:
    """Share of returned items lying within the exact k-th distance (1.0 = exact top-k)."""
    kth = D_exact[:, -1:]
    ok = (D_approx >= 0) & (D_approx <= kth)
    return float(ok.mean())


def ratio(peer_s: float, ours_s: float) -> float:
    return round(peer_s / ours_s, 3) if ours_s > 0 else float("inf")


