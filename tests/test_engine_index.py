"""Index / MIHIndex / HierarchicalIndex against the numpy brute-force twin,
at every SIMD level and at 1 and 2 threads."""
import numpy as np
import pytest

import hashsearch
from helpers import clustered_codes, random_codes, random_exclude
from hashsearch.index import mih_table_bytes
from hashsearch.reference import range_search_hamming, topk_hamming, topk_hierarchical


# n spans the two-pass path (n <= 65536) and the streaming path; nq spans
# the query-parallel and item-parallel splits.
@pytest.mark.parametrize("nbits", [13, 32, 64, 100, 128, 150, 256, 300])
@pytest.mark.parametrize("threads", [1, 2])
def test_index_matches_reference_small(simd, nbits, threads, rng):
    codes = random_codes(rng, 2000, nbits)
    queries = random_codes(rng, 23, nbits)
    for k in (1, 10, 2000):
        D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, k)
        Dr, Ir = topk_hamming(queries, codes, k)
        assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == (23, k)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("nbits", [20, 32, 64, 128, 160, 256, 200])
@pytest.mark.parametrize("nq", [1, 3, 40])
@pytest.mark.parametrize("split", ["default", "split"])
def test_index_matches_reference_large(simd, nbits, nq, split, rng, request):
    """Beyond the two-pass limit; few queries on 2 threads split their scan over the items
    from 2^17 code words (128 bits and up here), or from 4,096 words when ``split``."""
    if split == "split":
        request.getfixturevalue("split_small_scans")
    n = 70_001  # beyond the two-pass limit, and not a multiple of any unroll
    codes = clustered_codes(rng, n, nbits)
    queries = clustered_codes(rng, nq, nbits)
    exclude = random_exclude(rng, nq, n, 500)
    for threads in (1, 2):
        for ex in (None, exclude):
            D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, 100, exclude=ex)
            Dr, Ir = topk_hamming(queries, codes, 100, exclude=ex)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("nbits", [96, 128, 192, 200, 256])
def test_index_two_pass_on_codes_beyond_l2(simd, nbits, rng):
    """2^15..2^16 items of 2-4 words: more code words than the two-pass limit, which levels
    whose byte fill is vector code (AVX-512: 2 and 4 words) take the two-pass path for anyway."""
    n = 40_003
    codes = clustered_codes(rng, n, nbits)
    queries = clustered_codes(rng, 37, nbits)
    exclude = random_exclude(rng, 37, n, 300)
    for threads in (1, 2):
        for k, ex in ((1, None), (100, exclude), (1000, None)):
            D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, k, exclude=ex)
            Dr, Ir = topk_hamming(queries, codes, k, exclude=ex)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("nbits", [257, 384, 448, 449, 576, 1000])
@pytest.mark.parametrize("nq", [3, 11])
def test_codes_of_5_to_16_words(simd, nbits, nq, rng, split_small_scans):
    """Codes of 5-16 words, whose AVX-512 kernel reads each code's last partial vector
    with a full load into the next row: the scan (70,001 items, or split over the items
    at 2 threads when nq=3, so ranges end mid-array) and the byte two-pass (4,099 items,
    k past and within the items), with ties, exclusions and rows short of a step of 8."""
    for n, ks in ((70_001, (1, 100)), (4_099, (7, 4_099))):
        codes = clustered_codes(rng, n, nbits, clusters=3)
        codes[5::97] = codes[1]  # ties across the whole range
        queries = np.concatenate([codes[[1, n - 1]], clustered_codes(rng, nq - 2, nbits, clusters=3)])
        exclude = random_exclude(rng, nq, n, 40)
        exclude[1] = np.append(exclude[1], n - 1)  # the last row, the query's own item
        indexes = [hashsearch.Index(codes, nbits, num_threads=threads) for threads in (1, 2)]
        for k in ks:
            for ex in (None, exclude):
                Dr, Ir = topk_hamming(queries, codes, k, exclude=ex)
                for index in indexes:
                    D, I = index.topk(queries, k, exclude=ex)
                    np.testing.assert_array_equal(D, Dr)
                    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("nbits", [255, 256, 300, 320, 448, 512])
def test_far_queries_on_codes_of_255_bits_and_more(simd, nbits, rng):
    """Queries near the complement of the items: top-k distances of 250 and more, across
    the 254 cap of AVX-512's byte distances (a query reaching it is redone exactly)."""
    n = 3001
    centre = rng.integers(0, 2, size=nbits, dtype=np.uint8)
    bits = np.repeat(centre[None], n, axis=0) ^ (rng.random((n, nbits)) < 0.01).astype(np.uint8)
    codes = hashsearch.pack(bits)
    near = rng.integers(0, 2, size=(5, nbits), dtype=np.uint8)  # ordinary queries beside the far ones
    far = (1 - centre)[None] ^ (rng.random((6, nbits)) < 0.004).astype(np.uint8)
    queries = hashsearch.pack(np.vstack([far, near]))
    exclude = random_exclude(rng, len(queries), n, 50)
    for threads in (1, 2):
        for k, ex in ((10, None), (100, exclude), (n, None), (n, exclude)):
            D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, k, exclude=ex)
            Dr, Ir = topk_hamming(queries, codes, k, exclude=ex)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)
    assert Dr[:6, :10].min() >= 240 and Dr[:6].max() >= 254  # the far queries do cross the cap


@pytest.mark.parametrize("nbits", [20, 64])
def test_single_queries_with_and_without_the_item_split(simd, nbits, rng, split_small_scans):
    """One query on 2 threads: below the split threshold a small index answers it by the
    two-pass select on one thread, from it by splitting the items; both exact."""
    codes = clustered_codes(rng, 5000, nbits)
    queries = clustered_codes(rng, 3, nbits)
    exclude = random_exclude(rng, 3, 5000, 300)
    for words in (hashsearch._core._split_min_words(), 1 << 20):
        hashsearch._core._set_split_min_words(words)
        index = hashsearch.Index(codes, nbits, num_threads=2)
        for q, ex in zip(queries, exclude):
            for k in (1, 100, 5000):
                D, I = index.topk(q, k, exclude=[ex])
                Dr, Ir = topk_hamming(q[None], codes, k, exclude=[ex])
                np.testing.assert_array_equal(D, Dr)
                np.testing.assert_array_equal(I, Ir)


def test_ties_go_to_smaller_id_and_threads_agree(simd):
    codes = np.zeros((5000, 1), dtype=np.uint64)  # every item at distance 0
    for threads in (1, 2):
        D, I = hashsearch.Index(codes, 64, num_threads=threads).topk(codes[:3], 7)
        assert (D == 0).all()
        assert (I == np.arange(7)).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_exclude_forms_and_padding(simd, threads, rng):
    n, nbits = 300, 64
    codes = random_codes(rng, n, nbits)
    queries = random_codes(rng, 4, nbits)
    rows = [np.arange(0, n - 5), np.array([], dtype=np.int64), np.array([3, 3, 1]), np.arange(n)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    csr = (indptr, np.concatenate(rows))
    index = hashsearch.Index(codes, nbits, num_threads=threads)
    D1, I1 = index.topk(queries, 10, exclude=rows)
    D2, I2 = index.topk(queries, 10, exclude=csr)
    Dr, Ir = topk_hamming(queries, codes, 10, exclude=rows)
    for D, I in ((D1, I1), (D2, I2)):
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    assert (I1[0, 5:] == -1).all() and (D1[0, 5:] == -1).all()  # only 5 items left
    assert (I1[3] == -1).all()  # everything excluded
    assert not np.isin(I1[2], [1, 3]).any()


def test_unpacked_queries_and_one_code(rng):
    bits = rng.integers(0, 2, size=(50, 40), dtype=np.uint8)
    index = hashsearch.Index(bits)
    assert index.nbits == 40 and index.ntotal == 50 and len(index) == 50
    D1, I1 = index.topk(bits[7], 3)
    D2, I2 = index.topk(hashsearch.pack(bits[7]), 3)
    assert D1.shape == (1, 3) and I1[0, 0] == 7 and D1[0, 0] == 0
    np.testing.assert_array_equal(I1, I2)


def test_non_contiguous_and_read_only_input(rng):
    codes = random_codes(rng, 400, 128)
    view = np.asfortranarray(codes)
    view.setflags(write=False)
    q = codes[::7]
    q.setflags(write=False)
    D, I = hashsearch.Index(view, 128).topk(q, 5)
    Dr, Ir = topk_hamming(np.ascontiguousarray(q), codes, 5)
    np.testing.assert_array_equal(I, Ir)


def test_memory_is_exactly_packed_size(rng):
    codes = random_codes(rng, 1234, 100)
    assert hashsearch.Index(codes, 100).memory_bytes() == 1234 * 2 * 8
    # codes of at most 32 bits are held as uint32, and handed back as uint64 words
    short = random_codes(rng, 1234, 32)
    index = hashsearch.Index(short, 32)
    assert index.memory_bytes() == 1234 * 4
    np.testing.assert_array_equal(index.codes(), short)


@pytest.mark.parametrize("mode", ["vector", "popcnt", "auto"])
@pytest.mark.parametrize("nbits", [100, 128, 200, 256, 512, 1024])
def test_wide_codes_either_popcount(simd, mode, nbits, rng):
    """AVX2 counts the bits of 128-bit and 4k-word codes with vpshufb or popcnt,
    whichever a timing on first use picks: both must equal the reference."""
    from hashsearch import _core

    codes = random_codes(rng, 70_000, nbits)  # past the two-pass size: the streaming scan
    codes[::7] = codes[3]  # many ties
    queries = np.concatenate([codes[:3], random_codes(rng, 6, nbits)])
    Dr, Ir = topk_hamming(queries, codes, 50)
    _core._set_wide_popcount(mode)
    try:
        for threads in (1, 2):
            D, I = hashsearch.Index(codes, nbits, num_threads=threads).topk(queries, 50)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)
    finally:
        _core._set_wide_popcount("auto")
    with pytest.raises(ValueError, match="wide popcount mode 'fast'"):
        _core._set_wide_popcount("fast")


@pytest.mark.parametrize("nbits", [20, 32, 64, 128, 200])
def test_range_search_matches_reference(simd, nbits, rng):
    """lims/D/I equal the numpy twin's (sorted by distance, then id) at every radius,
    with and without exclude, at 1 and 2 threads; chunks span several 4,096-item blocks."""
    codes = clustered_codes(rng, 9000, nbits, clusters=4, flip=0.1)
    queries = np.concatenate([codes[:5], clustered_codes(rng, 7, nbits, clusters=4, flip=0.1)])
    exclude = random_exclude(rng, len(queries), len(codes), 300)
    index = hashsearch.Index(codes, nbits)
    for radius in (0, 2, nbits // 8, nbits // 4, nbits):
        for ex in (None, exclude):
            ref = range_search_hamming(queries, codes, radius, ex)
            for threads in (1, 2):
                lims, D, I = index.range_search(queries, radius, exclude=ex, num_threads=threads)
                assert lims.dtype == np.int64 and D.dtype == np.int32 and I.dtype == np.int64
                for got, want in zip((lims, D, I), ref):
                    np.testing.assert_array_equal(got, want)
    assert index.range_search(queries, nbits)[0][-1] == len(queries) * len(codes)


@pytest.mark.parametrize("nbits,m", [(20, 2), (32, 2), (64, 3), (64, 1), (100, 4), (256, 2)])
def test_mih_range_search_matches_reference(nbits, m, rng):
    """MIHIndex.range_search equals the numpy twin through its tables (scan fallback off) and with
    the cost model on, at 1 and 2 threads, with exclude; many equal codes exercise the id lookup
    of the tables after the first."""
    distinct = clustered_codes(rng, 600, nbits, clusters=4, flip=0.08)
    codes = np.concatenate([distinct[rng.integers(0, 600, size=5000)], random_codes(rng, 3000, nbits)])
    queries = np.concatenate([codes[:6], clustered_codes(rng, 6, nbits, clusters=4, flip=0.08)])
    exclude = random_exclude(rng, len(queries), len(codes), 300)
    mih = hashsearch.MIHIndex(codes, nbits, m=m)
    for fallback in (False, True):
        mih._native._set_scan_fallback(fallback)
        for radius in (0, 1, 3, nbits // 8, nbits // 4, nbits):
            for ex in (None, exclude):
                ref = range_search_hamming(queries, codes, radius, ex)
                for threads in (1, 2):
                    got = mih.range_search(queries, radius, exclude=ex, num_threads=threads)
                    for g, want in zip(got, ref):
                        np.testing.assert_array_equal(g, want)
    mih._native._set_scan_fallback(True)
    before = mih.stats()["fallbacks"]
    mih.range_search(queries, nbits)  # every bucket of every table: the cost model scans
    assert mih.stats()["fallbacks"] - before == len(queries)


def test_range_search_rejects_bad_input(rng):
    index = hashsearch.Index(random_codes(rng, 100, 64), 64)
    with pytest.raises(ValueError, match="radius must be >= 0, got -1"):
        index.range_search(random_codes(rng, 2, 64), -1)
    with pytest.raises(TypeError, match="radius must be an int, got float"):
        index.range_search(random_codes(rng, 2, 64), 2.5)
    with pytest.raises(ValueError, match="words per code|nbits"):
        index.range_search(random_codes(rng, 2, 128), 3)


# ---------------------------------------------------------------- MIH


@pytest.mark.parametrize("nbits", [32, 64, 100, 128, 192, 320])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_mih_equals_linear_scan(simd, nbits, kind, rng):
    n = 20_000
    make = random_codes if kind == "random" else clustered_codes
    codes = make(rng, n, nbits)
    queries = make(rng, 30, nbits)
    exclude = random_exclude(rng, 30, n, 200)
    flat = hashsearch.Index(codes, nbits)
    for m, fallback in ((None, True), (None, False), (-(-nbits // 24), False), (-(-nbits // 8), False)):
        mih = hashsearch.MIHIndex(codes, nbits, m=m)
        mih._native._set_scan_fallback(fallback)  # off: every query searches the tables
        for threads in (1, 2):
            for k in (1, 100):
                for ex in (None, exclude):
                    D, I = mih.topk(queries, k, exclude=ex, num_threads=threads)
                    Df, If = flat.topk(queries, k, exclude=ex)
                    np.testing.assert_array_equal(D, Df)
                    np.testing.assert_array_equal(I, If)
        if not fallback:
            assert mih.stats()["fallbacks"] == 0


@pytest.mark.parametrize("nbits", [32, 64, 128])
def test_mih_duplicate_codes_break_ties_by_id(simd, nbits, rng):
    """Many items per code, shuffled: tables after the first store codes, not ids, and
    must recover each duplicate's own id; ties at the k-th distance go to smaller ids."""
    distinct = clustered_codes(rng, 60, nbits)
    codes = distinct[rng.integers(0, 60, size=6000)]
    queries = np.concatenate([distinct[:5], clustered_codes(rng, 10, nbits)])
    exclude = random_exclude(rng, len(queries), len(codes), 300)
    flat = hashsearch.Index(codes, nbits)
    for m, fallback in ((2, True), (2, False), (3, False), (4, False)):
        mih = hashsearch.MIHIndex(codes, nbits, m=m)
        mih._native._set_scan_fallback(fallback)
        for k in (1, 37, 250):
            for ex in (None, exclude):
                D, I = mih.topk(queries, k, exclude=ex)
                Df, If = flat.topk(queries, k, exclude=ex)
                np.testing.assert_array_equal(D, Df)
                np.testing.assert_array_equal(I, If)
    np.testing.assert_array_equal(mih.codes(), codes)


def test_mih_exhausts_and_pads(rng):
    codes = random_codes(rng, 50, 16)
    mih = hashsearch.MIHIndex(codes, 16, m=2)
    excl = [np.arange(45)]
    D, I = mih.topk(codes[:1], 10, exclude=excl)
    Df, If = hashsearch.Index(codes, 16).topk(codes[:1], 10, exclude=excl)
    np.testing.assert_array_equal(I, If)
    assert (I[0, 5:] == -1).all()


def test_mih_default_m_and_memory(rng):
    n = 1 << 14
    codes = random_codes(rng, n, 64)
    mih = hashsearch.MIHIndex(codes, 64)
    # nbits / log2(n) = 5 substrings would need 4 code copies; twice the codes allow one
    assert mih.m == hashsearch.default_mih_m(64, n) == 2
    assert mih.substring_bits == [32, 32]
    # key bits: log2(n) - 4 = 10, and 54 bits left over fill whole bytes at 56: 10 stays
    assert mih._native.key_bits == [10, 10]
    # by hand: 2-byte ids (+8 pad) and 2-byte positions of ids (a small index), two 2^10 + 1
    # offset arrays, one copy of 54-bit rests in 7 bytes
    by_hand = (2 * n + 8) + 2 * n + 2 * 4 * (2**10 + 1) + (7 * n + 8)
    assert mih.table_bytes() == by_hand == mih_table_bytes(64, n, 2)
    assert mih.table_bytes() <= 2 * codes.nbytes


@pytest.mark.parametrize("nbits,n,m", [(64, 5000, 3), (32, 5000, 2), (20, 3000, 4), (128, 2000, 2), (100, 700, 5)])
def test_mih_table_bytes_formula(rng, nbits, n, m):
    mih = hashsearch.MIHIndex(random_codes(rng, n, nbits), nbits, m=m)
    assert mih.table_bytes() == mih_table_bytes(nbits, n, m) + mih.sub_dir_bytes()


@pytest.mark.parametrize("nbits,m", [(64, None), (64, 3), (32, None), (128, None), (100, 5)])
def test_mih_sub_directories_are_exact_and_within_memory(simd, nbits, m, rng):
    """Crowded buckets get sub-directories (sub-buckets read at key + sub distance): results equal
    the scan's through the tables alone, at 1 and 2 threads, with exclude, duplicates and ties;
    range_search (which finds table-0 positions through them) too. Memory: the default m stays
    within twice the codes; an m already over that adds at most an eighth of the codes."""
    n = 30_000
    distinct = clustered_codes(rng, 8_000, nbits, clusters=3, flip=0.04)
    codes = np.concatenate([distinct, distinct[rng.integers(0, 8_000, n - 8_000)]])
    rng.shuffle(codes)
    queries = np.concatenate([codes[:10], clustered_codes(rng, 30, nbits, clusters=3, flip=0.06)])
    exclude = random_exclude(rng, len(queries), n, 200)
    mih = hashsearch.MIHIndex(codes, nbits, m=m)
    assert mih.sub_dir_bytes() > 0 and any(mih.sub_min_items)
    for t, (sb, smin) in enumerate(zip(mih.sub_bits, mih.sub_min_items)):
        assert sb == min(mih.substring_bits[t] - mih.key_bits[t], 5)
        assert smin == 0 or smin >= 1 << sb
    fixed = mih_table_bytes(nbits, n, mih.m)
    assert mih.table_bytes() == fixed + mih.sub_dir_bytes()
    if fixed <= 2 * codes.nbytes:
        assert mih.table_bytes() <= 2 * codes.nbytes
    else:
        assert mih.sub_dir_bytes() <= codes.nbytes // 8
    flat = hashsearch.Index(codes, nbits)
    mih._native._set_scan_fallback(False)
    for k in (1, 50, 400):
        for ex in (None, exclude):
            Df, If = flat.topk(queries, k, exclude=ex)
            for threads in (1, 2):
                D, I = mih.topk(queries, k, exclude=ex, num_threads=threads)
                np.testing.assert_array_equal(D, Df)
                np.testing.assert_array_equal(I, If)
    assert mih.stats()["fallbacks"] == 0
    for radius in (0, 3, nbits // 6):
        ref = range_search_hamming(queries, codes, radius, exclude)
        for got, want in zip(mih.range_search(queries, radius, exclude=exclude), ref):
            np.testing.assert_array_equal(got, want)


def test_mih_stats_count_work(rng):
    codes = random_codes(rng, 5000, 32)
    mih = hashsearch.MIHIndex(codes, 32, m=2)
    mih.topk(codes[:10], 1)  # each query is an indexed code: found in its first bucket
    st = mih.stats()
    # only the radius-0 bucket of each table is looked up
    assert st == {"fallbacks": 0, "scanned": 0, "joined": 0, "probes": 10 * mih.m, "candidates": st["candidates"]}
    assert st["candidates"] >= 10
    # far from every code, probing would cost more than scanning 5,000 items: the scan answers
    D, I = mih.topk(random_codes(rng, 10, 32), 50)
    assert mih.stats()["fallbacks"] == 10


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_mih_large_batch_timing_path_is_exact(simd, kind, rng):
    """Batches of >= 128 queries time the tables against the scan on their first
    queries and answer the rest the faster way: every part must stay exact."""
    n, nbits = 30_000, 64
    make = random_codes if kind == "random" else clustered_codes
    codes = make(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, 150)], make(rng, 150, nbits)])
    rng.shuffle(queries)
    exclude = random_exclude(rng, len(queries), n, 50)
    flat = hashsearch.Index(codes, nbits)
    expected = {ex is None: flat.topk(queries, 100, exclude=ex) for ex in (None, exclude)}
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    assert mih._native.batch_verdict == -1
    # timed: the same `probe` queries both ways (the next ones too if the scan won), then
    # the faster; 64-bit codes are searched joined, timed on its least batch (64 queries)
    probe = 64
    D, I = mih.topk(queries, 100, exclude=exclude)
    np.testing.assert_array_equal(D, expected[False][0])
    np.testing.assert_array_equal(I, expected[False][1])
    assert mih._native.batch_verdict in (0, 1)
    st = mih.stats()
    assert st["scanned"] in ((probe, 2 * probe) if mih._native.batch_verdict == 1 else (300,))
    assert st["fallbacks"] <= (300 if mih._native.batch_verdict == 1 else 2 * probe)
    for verdict in (0, 1):  # each verdict reused by later batches, exactly
        for threads in (1, 2):
            for ex in (None, exclude):
                mih._native._set_batch_verdict(verdict)
                before = mih.stats()["scanned"]
                D, I = mih.topk(queries, 100, exclude=ex, num_threads=threads)
                np.testing.assert_array_equal(D, expected[ex is None][0])
                np.testing.assert_array_equal(I, expected[ex is None][1])
                assert (mih.stats()["scanned"] - before == 300) == (verdict == 0)
    small = hashsearch.MIHIndex(codes, nbits, m=3)
    small.topk(queries[:255], 10)  # below 4 x 64 queries: no timing, the cost model alone
    assert small.stats()["scanned"] == 0


@pytest.mark.parametrize("n", [5_000, 70_000])
def test_mih_small_calls_skip_the_tables_while_queries_fall_back(simd, n, rng):
    """Small calls (below the timed batch size) whose queries keep falling back go
    straight to the scan, and go back to the tables once a tried query is answered
    there; every answer stays exact (the scan paths below and above 65,536 items)."""
    nbits = 64
    codes = random_codes(rng, n, nbits)
    flat = hashsearch.Index(codes, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)

    def check(queries, threads, k=50, max_excluded=20):
        exclude = random_exclude(rng, len(queries), n, max_excluded)
        D, I = mih.topk(queries, k, exclude=exclude, num_threads=threads)
        Df, If = flat.topk(queries, k, exclude=exclude)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)

    for call in range(48):  # uniform codes, far queries: the tables give up on each
        check(random_codes(rng, 1 + call % 3, nbits), 1 + call % 2)
    st = mih.stats()
    assert st["fallbacks"] >= 32  # until the score reached its threshold
    assert st["scanned"] >= 30  # then scanned without trying the tables
    assert st["fallbacks"] + st["scanned"] == sum(1 + c % 3 for c in range(48))
    # an indexed code's nearest item (k=1, nothing excluded: itself at distance 0) is in
    # its first bucket: once such a query is tried (one call in 32), the tables take over
    for call in range(70):
        check(codes[rng.integers(0, n, 4)], 1 + call % 2, k=1, max_excluded=0)
    before = mih.stats()
    check(codes[rng.integers(0, n, 4)], 1, k=1, max_excluded=0)
    after = mih.stats()
    assert after["scanned"] == before["scanned"] and after["fallbacks"] == before["fallbacks"]
    assert after["probes"] > before["probes"]


@pytest.mark.parametrize("nbits", [32, 64, 128])
def test_mih_key_ordered_batch_is_exact(simd, nbits, rng):
    """Batches of >= 1024 queries are answered in the order of their table-0 keys:
    each row must still be its own query's answer, duplicates and exclusions included."""
    n, nq = 20_000, 1_500
    codes = clustered_codes(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, 500)], clustered_codes(rng, 900, nbits)])
    queries = np.concatenate([queries, queries[rng.integers(0, 1_400, nq - 1_400)]])  # repeated queries
    rng.shuffle(queries)
    exclude = random_exclude(rng, nq, n, 30)
    flat = hashsearch.Index(codes, nbits)
    mih = hashsearch.MIHIndex(codes, nbits, m=3)
    mih._native._set_scan_fallback(False)  # every query through the (ordered) tables
    for ex in (None, exclude):
        Df, If = flat.topk(queries, 20, exclude=ex)
        for threads in (1, 2):
            D, I = mih.topk(queries, 20, exclude=ex, num_threads=threads)
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)
    assert mih.stats()["fallbacks"] == 0


@pytest.mark.parametrize("nbits", [32, 64, 128])
def test_mih_scan_paths_break_ties_by_id(simd, nbits, rng):
    """MIH's scan paths: a large batch through a temporary id-ordered copy of the codes;
    a few queries in table-0 (sorted) order, above 65,536 items with collectors that keep
    ties, below by a byte buffer put into id order. All must give ties to smaller ids."""
    for n in (70_000, 5_000):
        distinct = clustered_codes(rng, 500, nbits)
        codes = distinct[rng.integers(0, 500, size=n)]
        # (256 queries: the least batch a verdict applies to, 4 x the 64 timed for a joined search)
        queries = np.concatenate([distinct[:128], clustered_codes(rng, 128, nbits)])
        exclude = random_exclude(rng, len(queries), n, 100)
        flat = hashsearch.Index(codes, nbits)
        mih = hashsearch.MIHIndex(codes, nbits, m=2)
        for ex in (None, exclude):
            mih._native._set_batch_verdict(0)  # every query of the batch by the scan
            D, I = mih.topk(queries, 150, exclude=ex, num_threads=2)
            Df, If = flat.topk(queries, 150, exclude=ex)
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)
        assert mih.stats()["scanned"] == 2 * len(queries)
        # a few queries far from every code: the cost model sends each to the scan on its own
        far = random_codes(rng, 6, nbits)
        before = mih.stats()["fallbacks"]
        for ex in (None, exclude[:6]):
            D, I = mih.topk(far, 150, exclude=ex, num_threads=2)
            Df, If = flat.topk(far, 150, exclude=ex)
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)
        assert mih.stats()["fallbacks"] - before >= 6


@pytest.mark.parametrize("m", [1, 64])
def test_mih_extreme_m_is_still_exact(rng, m):
    """One table (a radius search on its key alone) and one table per bit."""
    codes = clustered_codes(rng, 3000, 64)
    mih = hashsearch.MIHIndex(codes, 64, m=m)
    mih._native._set_scan_fallback(False)
    D, I = mih.topk(codes[:40], 25)
    Df, If = hashsearch.Index(codes, 64).topk(codes[:40], 25)
    np.testing.assert_array_equal(D, Df)
    np.testing.assert_array_equal(I, If)


def test_mih_rejects_bad_m(rng):
    codes = random_codes(rng, 100, 64)
    with pytest.raises(ValueError, match="m must be <= nbits"):
        hashsearch.MIHIndex(codes, 64, m=65)
    with pytest.raises(ValueError, match="m must be >= 1"):
        hashsearch.MIHIndex(codes, 64, m=0)


# ---------------------------------------------------------------- HieS


def assert_hamr_equals_reference(index, queries, codes, exclude, threads=None) -> None:
    """HierarchicalIndex.hamming_topk (HamR by its candidate search) equals the numpy brute force."""
    D, I = index.hamming_topk(queries, 30, exclude=exclude, num_threads=threads)
    Dr, Ir = topk_hamming(queries, codes, 30, exclude=exclude)
    assert D.dtype == np.int32 and I.dtype == np.int64
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("threads", [1, 2])
def test_hierarchical_matches_reference(simd, threads, rng):
    n, nbits, dim = 3000, 64, 16
    codes = clustered_codes(rng, n, nbits)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    queries = clustered_codes(rng, 25, nbits)
    q_emb = rng.standard_normal((25, dim)).astype(np.float32)
    exclude = random_exclude(rng, 25, n, 100)
    index = hashsearch.HierarchicalIndex(codes, emb, nbits, num_threads=threads)
    for ex in (None, exclude):
        S, I = index.topk(queries, q_emb, 20, candidates=200, exclude=ex)
        Sr, Ir = topk_hierarchical(queries, q_emb, codes, emb, 20, 200, exclude=ex)
        assert S.dtype == np.float32 and I.dtype == np.int64
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(S, Sr, rtol=1e-6)
        assert_hamr_equals_reference(index, queries, codes, ex)


@pytest.mark.parametrize("threads", [1, 2])
def test_hierarchical_ties_in_score_go_to_smaller_id(simd, threads, rng):
    """Small-integer embeddings: exact products with many equal scores, across the k-th one."""
    n, nbits, dim = 3000, 64, 6
    codes = clustered_codes(rng, n, nbits)
    emb = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    queries = clustered_codes(rng, 30, nbits)
    q_emb = rng.integers(-2, 3, size=(30, dim)).astype(np.float32)
    exclude = random_exclude(rng, 30, n, 100)
    index = hashsearch.HierarchicalIndex(codes, emb, nbits, num_threads=threads)
    for k, cand, ex in ((1, 50, None), (20, 200, exclude), (200, 200, None), (77, 300, exclude)):
        S, I = index.topk(queries, q_emb, k, candidates=cand, exclude=ex)
        Sr, Ir = topk_hierarchical(queries, q_emb, codes, emb, k, cand, exclude=ex)
        np.testing.assert_array_equal(S, Sr)
        np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("threads", [1, 2])
def test_hierarchical_scores_over_any_range_and_sign(simd, threads, rng):
    """The re-rank's radix select on score bits: items scaled by 10^-30..10^30 with both
    signs (scores spread over the exponent bits), a zero query embedding (every score +0.0
    or -0.0, all tied: smaller ids first), single queries and batches."""
    n, nbits, dim, nq = 3000, 64, 16, 40
    codes = clustered_codes(rng, n, nbits)
    scale = 10.0 ** rng.uniform(-30, 30, size=(n, 1))
    emb = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    queries = clustered_codes(rng, nq, nbits)
    q_emb = rng.standard_normal((nq, dim)).astype(np.float32)
    q_emb[::3] = 0.0
    exclude = random_exclude(rng, nq, n, 50)
    index = hashsearch.HierarchicalIndex(codes, emb, nbits, num_threads=threads)
    for k, cand, ex in ((10, 300, None), (100, 500, exclude), (300, 300, None)):
        Sr, Ir = topk_hierarchical(queries, q_emb, codes, emb, k, cand, exclude=ex)
        S, I = index.topk(queries, q_emb, k, candidates=cand, exclude=ex)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(S, Sr)
        S1, I1 = index.topk(queries[:1], q_emb[:1], k, candidates=cand, exclude=None if ex is None else ex[:1])
        np.testing.assert_array_equal(I1, Ir[:1])


@pytest.mark.parametrize("nbits,m", [(32, 2), (64, 3), (128, 2)])
def test_hierarchical_mih_candidates_match_reference(nbits, m, rng, tmp_path):
    """candidate_search='mih' finds the same candidates as the scan (MIH is exact, ties by id), so
    HieS output equals the numpy twin; the tables path and the scan path of MIH both, and a
    save/load round trip keeps the choice."""
    n, dim = 6000, 16
    codes = clustered_codes(rng, n, nbits)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    queries = np.concatenate([codes[:150], clustered_codes(rng, 50, nbits)])
    q_emb = rng.standard_normal((len(queries), dim)).astype(np.float32)
    exclude = random_exclude(rng, len(queries), n, 100)
    index = hashsearch.HierarchicalIndex(codes, emb, nbits, candidate_search="mih", m=m, num_threads=2)
    assert index.candidate_search == "mih" and index.m == m
    assert hashsearch.HierarchicalIndex(codes, emb, nbits).m == 0
    for ex in (None, exclude):
        Sr, Ir = topk_hierarchical(queries, q_emb, codes, emb, 20, 300, exclude=ex)
        for threads in (1, 2):
            S, I = index.topk(queries, q_emb, 20, candidates=300, exclude=ex, num_threads=threads)
            np.testing.assert_array_equal(I, Ir)
            np.testing.assert_allclose(S, Sr, rtol=1e-6)
            assert_hamr_equals_reference(index, queries, codes, ex, threads)
    index.save(tmp_path / "hies.hsi")
    back = hashsearch.load(tmp_path / "hies.hsi")
    assert back.candidate_search == "mih" and back.m == m
    np.testing.assert_array_equal(back.topk(queries, q_emb, 20, candidates=300, exclude=exclude)[1], Ir)


@pytest.mark.parametrize("nbits", [32, 64, 128])
def test_hierarchical_cluster_candidates_match_reference(simd, nbits, rng, tmp_path):
    """candidate_search='cluster' finds the same candidates as the scan (ClusterIndex is exact,
    ties by id), so HieS output equals the numpy twin; a save/load round trip keeps the clusters
    themselves (not rebuilt: the file's centroids and labels come back)."""
    n, dim = 6000, 16
    codes = clustered_codes(rng, n, nbits)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    queries = np.concatenate([codes[:150], clustered_codes(rng, 50, nbits)])
    q_emb = rng.standard_normal((len(queries), dim)).astype(np.float32)
    exclude = random_exclude(rng, len(queries), n, 100)
    index = hashsearch.HierarchicalIndex(codes, emb, nbits, candidate_search="cluster", nclusters=40)
    assert index.candidate_search == "cluster" and index.nclusters == 40 and index.m == 0
    assert hashsearch.HierarchicalIndex(codes, emb, nbits).nclusters == 0
    assert index.memory_bytes() > hashsearch.HierarchicalIndex(codes, emb, nbits).memory_bytes() + codes.nbytes
    for ex in (None, exclude):
        Sr, Ir = topk_hierarchical(queries, q_emb, codes, emb, 20, 300, exclude=ex)
        for threads in (1, 2):
            S, I = index.topk(queries, q_emb, 20, candidates=300, exclude=ex, num_threads=threads)
            np.testing.assert_array_equal(I, Ir)
            np.testing.assert_allclose(S, Sr, rtol=1e-6)
            assert_hamr_equals_reference(index, queries, codes, ex, threads)
    index.save(tmp_path / "hies.hsi")
    back = hashsearch.load(tmp_path / "hies.hsi")
    assert back.candidate_search == "cluster" and back.nclusters == 40
    np.testing.assert_array_equal(back._native.centroids(), index._native.centroids())
    np.testing.assert_array_equal(back._native.labels(), index._native.labels())
    np.testing.assert_array_equal(back.embeddings(), emb)
    np.testing.assert_array_equal(back.topk(queries, q_emb, 20, candidates=300, exclude=exclude)[1], Ir)


def test_hierarchical_candidate_search_rejects_bad_input(rng):
    codes, emb = random_codes(rng, 100, 64), rng.standard_normal((100, 4))
    with pytest.raises(ValueError, match="candidate_search must be 'scan', 'mih' or 'cluster', got 'hnsw'"):
        hashsearch.HierarchicalIndex(codes, emb, 64, candidate_search="hnsw")
    with pytest.raises(ValueError, match="m applies to candidate_search='mih' only"):
        hashsearch.HierarchicalIndex(codes, emb, 64, m=2)
    with pytest.raises(ValueError, match="m applies to candidate_search='mih' only"):
        hashsearch.HierarchicalIndex(codes, emb, 64, candidate_search="cluster", m=2)
    with pytest.raises(ValueError, match="nclusters applies to candidate_search='cluster' only"):
        hashsearch.HierarchicalIndex(codes, emb, 64, candidate_search="mih", nclusters=4)
    with pytest.raises(ValueError, match=r"nclusters must be <= the number of codes \(100\), got 101"):
        hashsearch.HierarchicalIndex(codes, emb, 64, candidate_search="cluster", nclusters=101)
    with pytest.raises(ValueError, match="candidate_search='cluster' needs at least one code, got 0"):
        hashsearch.HierarchicalIndex(codes[:0], emb[:0], 64, candidate_search="cluster")
    with pytest.raises(ValueError, match="m must be <= nbits=64, got 65"):
        hashsearch.HierarchicalIndex(codes, emb, 64, candidate_search="mih", m=65)


def test_hierarchical_pads_with_minus_inf(rng):
    codes = random_codes(rng, 10, 32)
    emb = rng.standard_normal((10, 4))
    index = hashsearch.HierarchicalIndex(codes, emb, 32)
    S, I = index.topk(codes[:1], emb[:1], 5, candidates=8, exclude=[np.arange(7)])
    assert (I[0, 3:] == -1).all() and np.isneginf(S[0, 3:]).all()


def test_hierarchical_all_candidates_equals_exact_inner_product(rng):
    n, dim = 500, 8
    codes = random_codes(rng, n, 32)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    q = rng.standard_normal((3, dim)).astype(np.float32)
    S, I = hashsearch.HierarchicalIndex(codes, emb, 32).topk(codes[:3], q, 10, candidates=n)
    exact = np.argsort(-(q.astype(np.float64) @ emb.T.astype(np.float64)), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(I, exact)
