"""Property-based checks over nbits, n, k, exclude and thread count."""
import numpy as np
from hypothesis import given, settings, strategies as st

import hashsearch
from hashsearch.reference import topk_hamming


@st.composite
def problems(draw):
    nbits = draw(st.integers(1, 300))
    n = draw(st.integers(1, 400))
    nq = draw(st.integers(1, 6))
    k = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Few distinct codes -> many ties, the hard case for ordering.
    pool = rng.integers(0, 2, size=(draw(st.integers(1, 8)), nbits), dtype=np.uint8)
    codes = hashsearch.pack(pool[rng.integers(0, len(pool), n)])
    queries = hashsearch.pack(rng.integers(0, 2, size=(nq, nbits), dtype=np.uint8))
    exclude = None
    if draw(st.booleans()):
        exclude = [rng.integers(0, n, size=rng.integers(0, n + 1)) for _ in range(nq)]
    return nbits, codes, queries, k, exclude


@settings(max_examples=150, deadline=None)
@given(problems(), st.sampled_from([1, 2]))
def test_index_mih_and_cluster_equal_brute_force(problem, threads):
    nbits, codes, queries, k, exclude = problem
    Dr, Ir = topk_hamming(queries, codes, k, exclude=exclude)
    for level in hashsearch.available_simd_levels():
        hashsearch.set_simd_level(level)
        try:
            D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, k, exclude=exclude)
        finally:
            hashsearch.set_simd_level(hashsearch.available_simd_levels()[-1])
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    n = codes.shape[0]
    for nclusters in {None, 1, n, min(n, 7)}:
        cluster = hashsearch.ClusterIndex(codes, nbits, nclusters=nclusters, num_threads=threads)
        D, I = cluster.topk(queries, k, exclude=exclude)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    for m in (None, min(nbits, 3)):
        for fallback in (True, False):  # off: the tables answer every query
            mih = hashsearch.MIHIndex(codes, nbits, m=m)
            mih._native._set_scan_fallback(fallback)
            D, I = mih.topk(queries, k, exclude=exclude, num_threads=threads)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)
