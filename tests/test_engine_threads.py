"""The persistent worker pool: exact results under concurrent callers, more threads than the pool
has, single queries, and a forked child (whose pool threads do not exist)."""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import hashsearch
from hashsearch.reference import range_search_hamming, topk_hamming


@pytest.fixture(autouse=True)
def _splits(split_small_scans):
    """Few queries split their scans over the threads at this size too."""


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n, nbits = 70_000, 64  # above the two-pass limit: Index splits single queries across items (_splits)
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
# Forking a process with threads is what this test is about; Python >= 3.12 warns of it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
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


# ---------------------------------------------------------------- Index.add

def _grown(kind: str, first, nbits: int, **kw):
    """An Index, or an MIHIndex / ClusterIndex (which need codes to start with; ``m`` in kw)."""
    if kind == "flat":
        index = hashsearch.Index(first[:0], nbits, num_threads=2)  # empty, as faiss' IndexBinaryFlat(d)
        index.add(first)
        return index
    if kind == "cluster":
        return hashsearch.ClusterIndex(first, nbits, num_threads=2)
    return hashsearch.MIHIndex(first, nbits, num_threads=2, **kw)


@pytest.mark.parametrize("kind", ["flat", "mih", "cluster"])
@pytest.mark.parametrize("nbits", [20, 64, 100, 256])
def test_add_equals_building_at_once(simd, kind, nbits, tmp_path):
    rng = np.random.default_rng(nbits)
    bits = rng.integers(0, 2, size=(3000, nbits), dtype=np.uint8)
    codes = hashsearch.pack(bits)
    queries = codes[rng.choice(len(codes), 40, replace=False)] ^ np.uint64(5)
    index = _grown(kind, codes[:1000], nbits)
    index.add(bits[1000])                 # one unpacked code
    index.add(bits[1001:2000].astype(np.int8) * 2 - 1)  # ±1 ints
    for part in np.array_split(codes[2000:], 7):
        index.add(part)
    assert index.ntotal == len(codes) and index.memory_bytes() >= codes.size * (4 if nbits <= 32 else 8)
    np.testing.assert_array_equal(index.codes(), codes)
    D_ref, I_ref = topk_hamming(queries, codes, 30)
    D, I = index.topk(queries, 30)
    np.testing.assert_array_equal(D, D_ref)
    np.testing.assert_array_equal(I, I_ref)
    radius = int(np.median(D_ref[:, 5]))
    for got, want in zip(index.range_search(queries, radius), range_search_hamming(queries, codes, radius)):
        np.testing.assert_array_equal(got, want)
    if kind == "mih":  # a default m is re-chosen for the grown size
        assert index.m == hashsearch.default_mih_m(nbits, len(codes))
        index._native._set_scan_fallback(False)  # the tables themselves, not the scan
        for got, want in zip(index.topk(queries, 30), (D_ref, I_ref)):
            np.testing.assert_array_equal(got, want)
    index.save(tmp_path / "grown.hsi")
    loaded = hashsearch.load(tmp_path / "grown.hsi")
    assert type(loaded) is type(index)
    np.testing.assert_array_equal(loaded.topk(queries, 30)[1], I_ref)


def test_mih_add_keeps_a_given_m():
    rng = np.random.default_rng(1)
    codes = hashsearch.pack(rng.integers(0, 2, size=(5000, 64), dtype=np.uint8))
    index = hashsearch.MIHIndex(codes[:100], 64, m=5)
    index.add(codes[100:])
    assert index.m == 5 and index.ntotal == 5000
    index._native._set_scan_fallback(False)
    D_ref, I_ref = topk_hamming(codes[:20] ^ np.uint64(9), codes, 10)
    D, I = index.topk(codes[:20] ^ np.uint64(9), 10)
    np.testing.assert_array_equal(D, D_ref)
    np.testing.assert_array_equal(I, I_ref)


@pytest.mark.parametrize("kind", ["flat", "mih", "cluster"])
def test_add_rejects_bad_codes_and_keeps_the_index(kind):
    codes = hashsearch.pack(np.random.default_rng(0).integers(0, 2, size=(50, 40), dtype=np.uint8))
    index = _grown(kind, codes, 40)
    before = index.codes()
    with pytest.raises(ValueError, match="bits set above nbits=40"):
        index.add(np.array([[1], [1 << 41]], dtype=np.uint64))
    with pytest.raises(ValueError, match="1 uint64 words for nbits=40, got 2"):
        index.add(np.zeros((3, 2), dtype=np.uint64))
    with pytest.raises(ValueError, match="codes have 39 bits, the index has nbits=40"):
        index.add(np.zeros((3, 39)))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 40), np.nan))
    assert index.ntotal == 50
    np.testing.assert_array_equal(index.codes(), before)


@pytest.mark.parametrize("kind", ["flat", "mih", "cluster"])
def test_add_while_other_threads_search(kind):
    """Searches running beside add() see the index at one of the sizes it went through (Index:
    add waits for running searches and they for it; MIHIndex, ClusterIndex: they go on over the
    old index until the rebuilt one replaces it): every result is the exact top-k at such a size."""
    rng = np.random.default_rng(3)
    codes = hashsearch.pack(rng.integers(0, 2, size=(60_000, 64), dtype=np.uint8))
    queries = codes[:16] ^ np.uint64(0x3)
    bounds = list(range(10_000, 60_001, 10_000))
    refs = {b: topk_hamming(queries, codes[:b], 10)[1] for b in bounds}
    index = _grown(kind, codes[:bounds[0]], 64)
    failures, done = [], threading.Event()

    def searcher():
        try:
            while not done.is_set():
                _, I = index.topk(queries, 10)
                if not any(np.array_equal(I, refs[b]) for b in bounds):
                    failures.append("a result matches no size the index went through")
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    started = time.monotonic()
    for a, b in zip(bounds, bounds[1:]):
        index.add(codes[a:b])
    adds_s = time.monotonic() - started
    done.set()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    np.testing.assert_array_equal(index.topk(queries, 10)[1], refs[bounds[-1]])
    # liveness, not speed: a reader-preferring lock would keep these adds waiting 90-140 s (~0.2 s)
    assert adds_s < 60, f"add() waited {adds_s:.0f} s behind searching threads"


@pytest.mark.parametrize("kind", ["flat", "hier"])
def test_a_search_waits_for_a_writer_then_answers_exactly(kind):
    """The read lock's waiting path (taken when an add() holds or waits for the lock; it releases
    the GIL while it waits) is made to run: another thread holds the write lock as add() does, a
    search from this thread must wait for it and then answer exactly, and other Python threads run
    meanwhile. (The add-while-searching test above reached this path only by chance.)"""
    rng = np.random.default_rng(5)
    codes = hashsearch.pack(rng.integers(0, 2, size=(3000, 64), dtype=np.uint8))
    emb = rng.standard_normal((3000, 8)).astype(np.float32)
    index = hashsearch.Index(codes, 64) if kind == "flat" else hashsearch.HierarchicalIndex(codes, emb, 64)
    search = index.topk if kind == "flat" else index.hamming_topk
    native = index._native
    holder = threading.Thread(target=native._hold_write_lock, args=(0.5,))
    waited = native._waited_reads
    holder.start()
    deadline = time.monotonic() + 30
    while not native._write_held and time.monotonic() < deadline:
        time.sleep(0.001)
    assert native._write_held, "the holder thread never took the write lock"
    ticks = []
    ticker = threading.Thread(target=lambda: [ticks.append(time.sleep(0.01)) for _ in range(10)])
    ticker.start()  # runs only if the waiting search released the GIL
    started = time.monotonic()
    D, I = search(codes[:4], 10)
    waited_s = time.monotonic() - started
    ticks_while_waiting = len(ticks)
    holder.join()
    ticker.join()
    assert native._waited_reads == waited + 1
    assert waited_s > 0.1, f"the search returned after {waited_s:.3f} s, while the write lock was held"
    assert ticks_while_waiting >= 3, f"another thread ran only {ticks_while_waiting} ticks: the GIL was held"
    Dr, Ir = topk_hamming(codes[:4], codes, 10)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("candidate_search", ["scan", "mih", "cluster"])
def test_hierarchical_add_equals_building_at_once(candidate_search, tmp_path):
    from hashsearch.reference import topk_hierarchical

    rng = np.random.default_rng(11)
    n, nbits, dim = 4000, 64, 8
    codes = hashsearch.pack(rng.integers(0, 2, size=(n, nbits), dtype=np.uint8))
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    queries, q_emb = codes[:30] ^ np.uint64(3), rng.standard_normal((30, dim)).astype(np.float32)
    index = hashsearch.HierarchicalIndex(codes[:1500], emb[:1500], nbits, candidate_search=candidate_search)
    m = index.m
    index.add(codes[1500], emb[1500])  # one item
    index.add(codes[1501:], emb[1501:])
    assert index.ntotal == n and index.m == m and index.candidate_search == candidate_search
    np.testing.assert_array_equal(index.embeddings(), emb)
    S_ref, I_ref = topk_hierarchical(queries, q_emb, codes, emb, 10, 200)
    S, I = index.topk(queries, q_emb, 10, candidates=200)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(S, S_ref, rtol=1e-6)
    with pytest.raises(ValueError, match="embeddings must have 2 rows, got 3"):
        index.add(codes[:2], emb[:3])
    with pytest.raises(ValueError, match="embeddings must have 8 columns, got 7"):
        index.add(codes[:2], emb[:2, :7])
    with pytest.raises(ValueError, match="embeddings contain NaN"):
        index.add(codes[:1], np.full((1, dim), np.nan))
    with pytest.raises(ValueError, match="bits set above nbits=64|1 uint64 words"):
        index.add(np.zeros((1, 2), dtype=np.uint64), emb[:1])
    assert index.ntotal == n
    index.save(tmp_path / "h.hsi")
    np.testing.assert_array_equal(hashsearch.load(tmp_path / "h.hsi").topk(queries, q_emb, 10, candidates=200)[1], I_ref)


@pytest.mark.parametrize("spin", ["0", "5"])
def test_pool_without_or_with_short_polling_is_exact(spin, tmp_path):
    """HASHSEARCH_SPIN_US=0 (threads sleep at once) and a short poll: searches on 2 threads,
    many small calls in a row, stay exact. (A value that is not a number is refused at import:
    test_engine_hardening.)"""
    script = (
        "import numpy as np, hashsearch\n"
        "from hashsearch.reference import topk_hamming\n"
        "hashsearch._core._set_split_min_words(4096)\n"
        "rng = np.random.default_rng(3)\n"
        "codes = hashsearch.pack(rng.integers(0, 2, size=(9000, 64), dtype=np.uint8))\n"
        "index = hashsearch.Index(codes, 64, num_threads=2)\n"
        "for q in codes[:40]:\n"
        "    D, I = index.topk(q, 10)\n"
        "    Dr, Ir = topk_hamming(q[None], codes, 10)\n"
        "    assert (D == Dr).all() and (I == Ir).all()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, HASHSEARCH_SPIN_US=spin)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
