"""MIHIndex's joined search (csrc/mih_joined.cpp): a batch of >= 64 queries of
33..64-bit codes goes through the tables together, ring by ring. Checked against the
linear scan (Index, itself checked against numpy) and numpy brute force, at every SIMD
level and at 1 and 2 threads, with the stats showing that the joined search answered."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import hashsearch
import helpers
from helpers import random_codes
from hashsearch.reference import topk_hamming


def clustered_codes(rng, n, nbits, clusters=12, flip=0.06):
    """Learned-like codes: noisy copies of a few centres (crowded buckets, sub-directories)."""
    return helpers.clustered_codes(rng, n, nbits, clusters=clusters, flip=flip)


def duplicated_codes(rng, n, nbits):
    """Few distinct codes, each many times: equal codes in every table (ties, ranks)."""
    distinct = clustered_codes(rng, 300, nbits)
    return distinct[rng.integers(0, len(distinct), n)]


MAKERS = {"random": random_codes, "clustered": clustered_codes, "duplicated": duplicated_codes}


def mixed_exclude(rng, nq, n, k):
    """Per query 0..1.5k excluded ids: queries with more than k go query by query."""
    return [rng.choice(n, size=rng.integers(0, 3 * k // 2 + 1), replace=False) for _ in range(nq)]


@pytest.mark.parametrize("nbits", [40, 64])
@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("fallback", [False, True])
def test_joined_batch_equals_the_scan(simd, nbits, kind, fallback, rng):
    n, nq = 20_000, 200
    codes = MAKERS[kind](rng, n, nbits)
    # half the queries are items (distance 0, crowded buckets), half new codes
    queries = np.concatenate([codes[rng.integers(0, n, nq // 2)], MAKERS[kind](rng, nq // 2, nbits)])
    flat = hashsearch.Index(codes, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    mih._native._set_scan_fallback(fallback)  # off: the tables answer every query
    if kind != "random":
        assert mih.sub_dir_bytes() > 0  # crowded buckets read by sub-bucket
    for k in (1, 17, 100):
        exclude = mixed_exclude(rng, nq, n, k)
        for ex in (None, exclude):
            Df, If = flat.topk(queries, k, exclude=ex)
            for threads in (1, 2):
                before = mih.stats()
                D, I = mih.topk(queries, k, exclude=ex, num_threads=threads)
                np.testing.assert_array_equal(D, Df)
                np.testing.assert_array_equal(I, If)
                after = mih.stats()
                few = nq if ex is None else sum(len(e) <= k for e in ex)
                joined = after["joined"] - before["joined"]
                fell = after["fallbacks"] - before["fallbacks"]
                if not fallback:
                    assert joined == few and fell == 0
                else:  # some go to the scan (or the whole call does, once most fell back)
                    assert joined <= few


def test_joined_steps_in_slices_are_exact(rng):
    """A step whose pairs would pass the limit (4M; here 50) is made and read in
    slices of the queries, one after the other: the same rows."""
    n, nbits = 20_000, 64
    codes = clustered_codes(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, 60)], clustered_codes(rng, 60, nbits)])
    exclude = mixed_exclude(rng, len(queries), n, 20)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    mih._native._set_scan_fallback(False)
    Df, If = hashsearch.Index(codes, nbits).topk(queries, 20, exclude=exclude)
    for pairs in (1, 50, 1 << 22):
        mih._native._set_join_step_pairs(pairs)
        for threads in (1, 2):
            D, I = mih.topk(queries, 20, exclude=exclude, num_threads=threads)
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)


def test_joined_matches_the_query_by_query_search(rng):
    """The same batch with the joined search turned off: identical rows, and the
    joined search reads each bucket once per ring for all the queries that probe it."""
    n, nbits = 30_000, 64
    codes = clustered_codes(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, 150)], clustered_codes(rng, 150, nbits)])
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    mih._native._set_scan_fallback(False)
    rows = {}
    for join in (False, True):
        mih._native._set_join(join)
        before = mih.stats()
        rows[join] = mih.topk(queries, 50, num_threads=2)
        assert (mih.stats()["joined"] - before["joined"] == len(queries)) == join
    np.testing.assert_array_equal(rows[True][0], rows[False][0])
    np.testing.assert_array_equal(rows[True][1], rows[False][1])


def test_joined_batch_in_chunks(rng):
    """More queries than one chunk holds (2,048): chunks one after the other (one
    thread), or one per thread."""
    n, nbits = 4_000, 48
    codes = clustered_codes(rng, n, nbits)
    queries = clustered_codes(rng, 2_100, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=2)
    mih._native._set_scan_fallback(False)
    mih._native._set_batch_verdict(1)  # a large batch: through the tables, without timing
    exclude = mixed_exclude(rng, len(queries), n, 10)
    for threads in (1, 2):
        D, I = mih.topk(queries, 10, exclude=exclude, num_threads=threads)
        Dr, Ir = hashsearch.Index(codes, nbits).topk(queries, 10, exclude=exclude)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    assert mih.stats()["joined"] == 2 * sum(len(e) <= 10 for e in exclude)


@pytest.mark.parametrize("nq", [450, 700, 1_201])
def test_joined_threads_search_chunks_of_their_own(simd, nq, rng):
    """From 200 joined queries a thread (400 at 2 threads, 600 at 3), each thread searches
    chunks of its own instead of sharing every step: the same rows at any thread count,
    uneven chunks included."""
    n, nbits, k = 20_000, 64, 30
    codes = clustered_codes(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, nq // 3)], clustered_codes(rng, nq - nq // 3, nbits)])
    exclude = mixed_exclude(rng, nq, n, k)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    mih._native._set_scan_fallback(False)
    mih._native._set_batch_verdict(1)
    Dr, Ir = hashsearch.Index(codes, nbits).topk(queries, k, exclude=exclude)
    few = sum(len(e) <= k for e in exclude)
    for threads in (1, 2, 3):
        before = mih.stats()["joined"]
        D, I = mih.topk(queries, k, exclude=exclude, num_threads=threads)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
        assert mih.stats()["joined"] - before == few


def test_joined_batch_reads_every_item_when_k_is_large(rng):
    """k near n: the k-th distance is proven only once a table has been read whole, and
    rows with exclusions are padded with -1 (fewer allowed items than k)."""
    n, nbits = 300, 64
    codes = duplicated_codes(rng, n, nbits)
    queries = np.concatenate([codes[:40], random_codes(rng, 40, nbits)])
    exclude = [rng.choice(n, size=rng.integers(0, 6), replace=False) for _ in range(len(queries))]
    mih = hashsearch.MIHIndex(codes, nbits, m=2)
    mih._native._set_scan_fallback(False)
    for ex in (None, exclude):
        D, I = mih.topk(queries, n, exclude=ex, num_threads=2)
        Dr, Ir = topk_hamming(queries, codes, n, exclude=ex)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    assert mih.stats()["joined"] == 2 * len(queries)


@st.composite
def joined_problems(draw):
    nbits = draw(st.integers(33, 64))
    n = draw(st.integers(1, 3_000))
    nq = draw(st.integers(64, 140))
    k = draw(st.integers(1, min(n, 150)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, size=(draw(st.integers(1, 40)), nbits), dtype=np.uint8)
    flips = (rng.random((n, nbits)) < draw(st.sampled_from([0.0, 0.03, 0.2]))).astype(np.uint8)
    codes = hashsearch.pack(pool[rng.integers(0, len(pool), n)] ^ flips)
    queries = np.concatenate([codes[rng.integers(0, n, nq // 2)],
                              hashsearch.pack(rng.integers(0, 2, size=(nq - nq // 2, nbits), dtype=np.uint8))])
    exclude = None
    if draw(st.booleans()):
        exclude = [rng.integers(0, n, size=rng.integers(0, 2 * k + 1)) for _ in range(nq)]
    return nbits, codes, queries, k, exclude


@settings(max_examples=40, deadline=None)
@given(joined_problems(), st.sampled_from([1, 2]), st.sampled_from([None, 2, 3, 4]))
def test_joined_search_equals_brute_force(problem, threads, m):
    nbits, codes, queries, k, exclude = problem
    Dr, Ir = topk_hamming(queries, codes, k, exclude=exclude)
    for fallback in (False, True):
        mih = hashsearch.MIHIndex(codes, nbits, m=m)
        mih._native._set_scan_fallback(fallback)
        D, I = mih.topk(queries, k, exclude=exclude, num_threads=threads)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)


def test_joined_batch_sends_hopeless_queries_to_the_scan(rng):
    """Uniform codes: proving a query's k-th distance would cost more than scanning, so
    the joined search gives up on each query (its cost floor) and the scan answers."""
    n, nbits = 30_000, 64
    codes = random_codes(rng, n, nbits)
    queries = random_codes(rng, 100, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    D, I = mih.topk(queries, 10, num_threads=2)
    Dr, Ir = hashsearch.Index(codes, nbits).topk(queries, 10)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    st = mih.stats()
    assert st["fallbacks"] >= 90 and st["joined"] + st["fallbacks"] == len(queries)
    # the attempt stopped early: a few rings' buckets, far from a scan's worth of items
    assert st["candidates"] < 0.2 * n * len(queries)


@pytest.mark.parametrize("n,nbits,m,width", [
    (3_000, 24, 2, 2), (3_000, 33, 2, 3), (3_000, 40, 3, 4), (3_000, 48, 3, 5),
    (3_000, 56, 4, 6), (3_000, 64, 2, 7), (100, 64, 2, 8),
])
def test_tables_read_rests_of_every_width(simd, n, nbits, m, width, rng):
    """Tables j >= 1 keep each one-word code without its key bits in 2..8 bytes, read
    with one 8-byte load: every width, batch (joined) and single queries, against the scan."""
    codes = clustered_codes(rng, n, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=m)
    widths = {-(-(nbits - mih.key_bits[j]) // 8) for j in range(1, m)}
    assert width in widths
    mih._native._set_scan_fallback(False)
    queries = np.concatenate([codes[rng.integers(0, n, 50)], clustered_codes(rng, 50, nbits)])
    k = min(25, n)
    Dr, Ir = hashsearch.Index(codes, nbits).topk(queries, k)
    D, I = mih.topk(queries, k)  # joined
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    D, I = mih.topk(queries[:10], k)  # one by one
    np.testing.assert_array_equal(D, Dr[:10])
    np.testing.assert_array_equal(I, Ir[:10])
