"""The persistent worker pool: exact results under concurrent callers, more threads than the pool
has, single queries, and a forked child (whose pool threads do not exist)."""
import multiprocessing
import threading

import numpy as np
import pytest

import hashsearch
from hashsearch.reference import range_search_hamming, topk_hamming


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n, nbits = 70_000, 64  # above the two-pass limit: Index splits single queries across items
    codes = hashsearch.pack(rng.integers(0, 2, size=(n, nbits), dtype=np.uint8))
    queries = codes[rng.choice(n, 64, replace=False)] ^ np.uint64(0x0F0F)
    D, I = topk_hamming(queries, codes, 20)
    return codes, queries, nbits, D, I


def test_concurrent_python_threads_get_exact_results(problem):
    """Searches release the GIL: Python threads run loops at the same time, one of them on the
    pool and the others on threads of their own; every result must still be exact."""
    codes, queries, nbits, D_ref, I_ref = problem
    index = hashsearch.Index(codes, nbits, num_threads=2)
    mih = hashsearch.MIHIndex(codes, nbits, num_threads=2)
    lims_ref, Dr_ref, Ir_ref = range_search_hamming(queries, codes, 22)
    failures = []

    def worker(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(15):
                sel = np.sort(r.choice(len(queries), r.integers(1, len(queries) + 1), replace=False))
                threads = int(r.integers(1, 4))
                D, I = index.topk(queries[sel], 20, num_threads=threads)
                np.testing.assert_array_equal(D, D_ref[sel])
                np.testing.assert_array_equal(I, I_ref[sel])
                D, I = mih.topk(queries[sel], 20, num_threads=threads)
                np.testing.assert_array_equal(I, I_ref[sel])
                lims, Dr, Ir = index.range_search(queries, 22, num_threads=threads)
                np.testing.assert_array_equal(lims, lims_ref)
                np.testing.assert_array_equal(Ir, Ir_ref)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a search hung"
    assert failures == []


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_single_queries_and_many_threads(problem, threads):
    """One query at a time (the pool's latency case) and more workers than cores: the pool grows
    to the largest count asked for, and smaller loops leave its extra workers idle."""
    codes, queries, nbits, D_ref, I_ref = problem
    index = hashsearch.Index(codes, nbits, num_threads=threads)
    for q in range(len(queries)):
        D, I = index.topk(queries[q], 20)
        np.testing.assert_array_equal(D[0], D_ref[q])
        np.testing.assert_array_equal(I[0], I_ref[q])


def _child_search(codes, queries, nbits, out):
    D, I = hashsearch.Index(codes, nbits, num_threads=2).topk(queries, 20)
    out.put((D, I))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()")
def test_forked_child_searches_with_a_fresh_pool(problem):
    codes, queries, nbits, D_ref, I_ref = problem
    # 64 queries are 8 blocks of 8: both the parent's search and the child's run on the pool
    hashsearch.Index(codes, nbits, num_threads=2).topk(queries, 20)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_search, args=(codes, queries, nbits, out))
    child.start()
    try:
        D, I = out.get(timeout=120)
    except Exception:
        child.kill()  # stuck waiting on its parent's workers, which do not exist in it
        raise
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(D, D_ref)
    np.testing.assert_array_equal(I, I_ref)
