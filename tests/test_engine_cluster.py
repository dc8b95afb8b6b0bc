"""ClusterIndex (exact search by cluster pruning) against the flat index and the numpy twin,
at every SIMD level and at 1 and 2 threads."""
import numpy as np
import pytest

import hashsearch
import helpers
from helpers import random_codes, random_exclude
from hashsearch.reference import hamming_distances, range_search_hamming, topk_hamming


def clustered_codes(rng, n, nbits, clusters=20, flip=0.06):
    """Noisy copies of a few centres: small distances, many ties, what the pruning is for."""
    return helpers.clustered_codes(rng, n, nbits, clusters=clusters, flip=flip)


@pytest.mark.parametrize("nbits", [13, 32, 64, 100, 128, 192, 256, 384, 576])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_cluster_index_equals_the_scan(simd, nbits, kind, rng):
    make = random_codes if kind == "random" else clustered_codes
    n = 6000
    codes = make(rng, n, nbits)
    queries = np.concatenate([codes[rng.integers(0, n, 20)], make(rng, 20, nbits)])
    exclude = random_exclude(rng, len(queries), n, 40)
    flat = hashsearch.Index(codes, nbits)
    index = hashsearch.ClusterIndex(codes, nbits)
    for k in (1, 10, 300):
        for ex in (None, exclude):
            Df, If = flat.topk(queries, k, exclude=ex)
            for threads in (1, 2):
                D, I = index.topk(queries, k, exclude=ex, num_threads=threads)
                np.testing.assert_array_equal(D, Df)
                np.testing.assert_array_equal(I, If)
    st = index.stats()
    if kind == "clustered":  # pruning reads far fewer codes than a scan would, and answers itself
        index.topk(queries[:20], 10)
        assert index.stats()["items_read"] - st["items_read"] < 20 * n / 2
        assert index.stats()["scanned"] == st["scanned"]
    else:  # uniform codes: the windows cover most codes, so queries go to the scan
        assert st["scanned"] > 0


def test_cluster_index_ties_padding_and_extreme_cluster_counts(simd, rng):
    """Few distinct codes (ties everywhere go to the smaller id), k = n with exclusions (-1
    padding), one cluster and one cluster per code."""
    n, nbits = 2000, 64
    distinct = clustered_codes(rng, 40, nbits)
    codes = distinct[rng.integers(0, 40, n)]
    queries = np.concatenate([distinct[:10], random_codes(rng, 10, nbits)])
    exclude = random_exclude(rng, len(queries), n, 100)
    for nclusters in (1, 16, n):
        index = hashsearch.ClusterIndex(codes, nbits, nclusters=nclusters)
        assert index.nclusters == nclusters
        for k in (5, 250, n):
            Dr, Ir = topk_hamming(queries, codes, k, exclude=exclude)
            D, I = index.topk(queries, k, exclude=exclude, num_threads=2)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)


def test_cluster_index_codes_memory_and_round_trip(tmp_path, rng):
    codes = clustered_codes(rng, 5000, 64)
    index = hashsearch.ClusterIndex(codes, 64, nclusters=64)
    np.testing.assert_array_equal(index.codes(), codes)  # back in id order
    assert index.memory_bytes() == codes.nbytes + index.extra_bytes()
    # ids (4 bytes), centroids and (cluster, radius) offsets, and at this size (<= 65,536
    # codes) the codes once more, in id order, for the scan
    assert codes.nbytes < index.extra_bytes() < 1.6 * codes.nbytes + 64 * 65 * 4 + 64 * 12 + 8
    path = tmp_path / "cluster.hsi"
    index.save(path)
    for loaded in (hashsearch.ClusterIndex.load(path), hashsearch.load(path)):
        assert isinstance(loaded, hashsearch.ClusterIndex) and loaded.nclusters == 64
        q = codes[:7] ^ np.uint64(5)
        for got, want in zip(loaded.topk(q, 30), index.topk(q, 30)):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="holds an index of type ClusterIndex, not MIHIndex"):
        hashsearch.MIHIndex.load(path)


@pytest.mark.parametrize("kind", ["random", "clustered", "ties"])
def test_cluster_index_single_queries_split_over_threads(simd, kind, rng):
    """Fewer queries than threads: each query's clusters are shared among the threads (sharing
    their k-th distance) and the threads' top-k merged; equal to the numpy twin at 2..5 threads
    (strides that leave some threads no cluster with nclusters=3), with exclude, k up to n, ties,
    and uniform codes whose threads give up for the scan."""
    n, nbits = 4000, 64
    if kind == "random":
        codes = random_codes(rng, n, nbits)
    elif kind == "clustered":
        codes = clustered_codes(rng, n, nbits)
    else:
        codes = clustered_codes(rng, 30, nbits)[rng.integers(0, 30, n)]
    queries = np.concatenate([codes[rng.integers(0, n, 4)] ^ np.uint64(6), random_codes(rng, 2, nbits)])
    exclude = random_exclude(rng, len(queries), n, 150)
    for nclusters in (None, 3):
        index = hashsearch.ClusterIndex(codes, nbits, nclusters=nclusters)
        for k in (1, 25, 700, n):
            for threads in (2, 3, 5):
                for qi in range(len(queries)):
                    ex = [exclude[qi]]
                    Dr, Ir = topk_hamming(queries[qi:qi + 1], codes, k, exclude=ex)
                    D, I = index.topk(queries[qi], k, exclude=ex, num_threads=threads)
                    np.testing.assert_array_equal(D, Dr)
                    np.testing.assert_array_equal(I, Ir)
    index = hashsearch.ClusterIndex(codes, nbits)
    st = index.stats()
    index.topk(queries[0], 10, num_threads=2)
    if kind == "random":
        assert index.stats()["scanned"] - st["scanned"] == 1
    else:
        assert index.stats()["scanned"] == st["scanned"]


def test_cluster_index_skips_the_clusters_while_queries_fall_back(simd, rng):
    """Calls whose queries keep falling back go straight to the scan, a few tried queries
    excepted, and go back to the clusters once tried queries are answered; every answer stays
    exact, small calls and large, 1 and 2 threads. Codes: mostly uniform (random queries fall
    back), a sixth tightly clustered (its members' nearest code is found by the clusters)."""
    n, nbits = 6000, 64
    codes = np.concatenate([random_codes(rng, 5000, nbits), clustered_codes(rng, 1000, nbits)])
    flat = hashsearch.Index(codes, nbits)
    index = hashsearch.ClusterIndex(codes, nbits)

    def check(queries, threads, k):
        exclude = random_exclude(rng, len(queries), n, 0 if k == 1 else 20)
        D, I = index.topk(queries, k, exclude=exclude, num_threads=threads)
        Df, If = flat.topk(queries, k, exclude=exclude)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)

    far = random_codes(rng, 300, nbits)
    for call in range(48):
        check(far[call * 3:call * 3 + 1 + call % 3], 1 + call % 2, k=50)
    st = index.stats()
    assert st["scanned"] - st["skipped"] >= 32  # fell back, until the score reached its threshold
    assert st["skipped"] >= 10  # then scanned untried
    check(far[:128], 2, k=50)  # a large call tries 1/32 of its queries
    assert index.stats()["skipped"] - st["skipped"] == 128 - 4
    for call in range(80):  # cluster members, k=1: answered by the clusters once tried
        check(codes[5000 + rng.integers(0, 1000, 1 + call % 3)], 1 + call % 2, k=1)
    before = index.stats()
    check(codes[5000 + rng.integers(0, 1000, 3)], 1, k=1)
    after = index.stats()
    assert after["scanned"] == before["scanned"] and after["items_read"] > before["items_read"]


def test_cluster_index_clusters_beyond_uint16_offsets(rng):
    """A cluster of over 65,535 codes keeps its offsets in uint32 (smaller ones in uint16):
    both layouts answer exactly, topk and range_search."""
    n, nbits = 70_000, 64
    codes = clustered_codes(rng, n, nbits, clusters=3)
    queries = np.concatenate([codes[:5] ^ np.uint64(0x101), random_codes(rng, 3, nbits)])
    exclude = random_exclude(rng, len(queries), n, 50)
    Df, If = hashsearch.Index(codes, nbits).topk(queries, 60, exclude=exclude)
    ref = range_search_hamming(queries, codes, 3, exclude)
    small = hashsearch.ClusterIndex(codes, nbits, nclusters=8).extra_bytes()
    for nclusters in (1, 8):  # one cluster of all 70,000 codes; clusters of ~9,000
        index = hashsearch.ClusterIndex(codes, nbits, nclusters=nclusters)
        for threads in (1, 2):
            D, I = index.topk(queries, 60, exclude=exclude, num_threads=threads)
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)
        for got, want in zip(index.range_search(queries, 3, exclude=exclude), ref):
            np.testing.assert_array_equal(got, want)
    # ids + one (nbits + 2)-entry offset row a cluster: 4 bytes an entry for the big one, 2 for small
    assert hashsearch.ClusterIndex(codes, nbits, nclusters=1).extra_bytes() - 4 * n >= 4 * (nbits + 2)
    assert small - 4 * n < 8 * (nbits + 2) * 2 + 8 * 8 + 8 * 4 + 8 * 4 + 64


def test_cluster_index_file_keeps_its_clusters(tmp_path, rng):
    """A saved ClusterIndex stores its centroids and each code's cluster, so loading skips the
    k-medians build; pruning stays exact for any assignment (radii are recomputed), so clusters
    unlike any build's (labels i % 37) load unchanged and still answer exactly."""
    from hashsearch import _core

    n, nbits, C = 3000, 64, 37
    codes = clustered_codes(rng, n, nbits)
    centroids = codes[rng.choice(n, C, replace=False)]
    labels = (np.arange(n) % C).astype(np.uint32)
    index = hashsearch.ClusterIndex._from_native(_core.ClusterIndex.from_clusters(codes, nbits, centroids, labels), 0)
    queries = np.concatenate([codes[:10] ^ np.uint64(3), random_codes(rng, 10, nbits)])
    exclude = random_exclude(rng, len(queries), n, 30)
    Df, If = hashsearch.Index(codes, nbits).topk(queries, 50, exclude=exclude)
    path = tmp_path / "clusters.hsi"
    index.save(path)
    loaded = hashsearch.load(path)
    np.testing.assert_array_equal(loaded._native.centroids(), centroids)
    np.testing.assert_array_equal(loaded._native.labels(), labels)
    for ix in (index, loaded):
        D, I = ix.topk(queries, 50, exclude=exclude, num_threads=2)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)


def test_cluster_index_files_without_clusters_and_with_corrupt_ones(tmp_path, rng):
    from hashsearch.io import KIND_CLUSTER, IndexFile, write_index

    n, nbits = 2000, 64
    codes = clustered_codes(rng, n, nbits)
    q = codes[:5] ^ np.uint64(9)
    want = hashsearch.Index(codes, nbits).topk(q, 20)
    # a kind-4 file as first written (codes only) is rebuilt on load
    old = tmp_path / "old.hsi"
    write_index(old, IndexFile(kind=KIND_CLUSTER, nbits=nbits, codes=codes, m=32))
    loaded = hashsearch.load(old)
    assert loaded.nclusters == 32
    for got, exp in zip(loaded.topk(q, 20), want):
        np.testing.assert_array_equal(got, exp)
    # a label beyond the clusters (written with a valid checksum) is refused, not trusted
    labels = np.zeros(n, np.uint32)
    labels[7] = 32
    bad = tmp_path / "bad.hsi"
    write_index(bad, IndexFile(kind=KIND_CLUSTER, nbits=nbits, codes=codes, m=32, centroids=codes[:32],
                               labels=labels))
    with pytest.raises(ValueError, match=r"inconsistent clusters.*label 32 of item 7 is not below nclusters=32"):
        hashsearch.load(bad)
    with pytest.raises(ValueError, match=r"centroids must be \(32, 1\) and labels \(2000,\)"):
        write_index(bad, IndexFile(kind=KIND_CLUSTER, nbits=nbits, codes=codes, m=32, centroids=codes[:31],
                                   labels=labels))


def test_cluster_index_add_joins_the_nearest_centroids_and_keeps_pruning(rng):
    n, nbits = 9000, 64
    codes = clustered_codes(rng, n, nbits)
    index = hashsearch.ClusterIndex(codes[:3000], nbits, nclusters=32)
    centroids = index._native.centroids()
    index.add(codes[3000:6000])
    index.add(codes[6000:])
    assert index.ntotal == n and index.nclusters == 32
    np.testing.assert_array_equal(index._native.centroids(), centroids)  # not retrained
    _, nearest = topk_hamming(codes[3000:], centroids, 1)  # ties to the smaller centroid
    np.testing.assert_array_equal(index._native.labels()[3000:], nearest[:, 0])
    queries = codes[rng.integers(0, n, 30)] ^ np.uint64(0x11)
    exclude = random_exclude(rng, 30, n, 50)
    D, I = index.topk(queries, 40, exclude=exclude, num_threads=2)
    Dr, Ir = topk_hamming(queries, codes, 40, exclude=exclude)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    st = index.stats()  # counters restart with the rebuilt index; pruning still reads a fraction
    assert st["scanned"] == 0 and st["items_read"] < 30 * n / 2


@pytest.mark.parametrize("nbits", [20, 64, 128])
def test_cluster_range_search_matches_reference(simd, nbits, rng):
    """range_search through the clusters' windows (small radii) and through the scan (radii whose
    clusters hold most codes) equals the numpy twin: sorted by (distance, id), exclude, 1 and 2
    threads, one cluster per code and a single cluster."""
    n = 6000
    codes = np.concatenate([clustered_codes(rng, n - 500, nbits), random_codes(rng, 500, nbits)])
    queries = np.concatenate([codes[:6] ^ np.uint64(1), clustered_codes(rng, 6, nbits)])
    exclude = random_exclude(rng, len(queries), n, 200)
    for nclusters in (None, 1, n):
        index = hashsearch.ClusterIndex(codes, nbits, nclusters=nclusters)
        for radius in (0, 2, nbits // 8, nbits // 2, nbits):
            for ex in (None, exclude):
                ref = range_search_hamming(queries, codes, radius, ex)
                for threads in (1, 2):
                    got = index.range_search(queries, radius, exclude=ex, num_threads=threads)
                    for g, want in zip(got, ref):
                        np.testing.assert_array_equal(g, want)
    index = hashsearch.ClusterIndex(codes, nbits)
    st = index.stats()
    index.range_search(queries, 2)  # clustered: the windows answer, reading a fraction of the codes
    assert index.stats()["scanned"] == st["scanned"]
    assert index.stats()["items_read"] - st["items_read"] < len(queries) * n / 2
    index.range_search(queries, nbits)  # every code qualifies: scanned
    assert index.stats()["scanned"] - st["scanned"] == len(queries)
    with pytest.raises(ValueError, match="radius must be >= 0, got -1"):
        index.range_search(queries, -1)


def test_default_nclusters():
    assert hashsearch.default_nclusters(1) == 1
    assert hashsearch.default_nclusters(4_167_708) == 2048  # capped (measured, see index.py)
    assert hashsearch.default_nclusters(1_000_000) == 2048
    assert hashsearch.default_nclusters(40_981) == 512
    assert hashsearch.default_nclusters(3) == 3  # 2 * sqrt(3) ~ 3.5 -> 4, capped at n


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"nclusters": 0}, ValueError, "nclusters must be >= 1, got 0"),
        ({"nclusters": 11}, ValueError, r"nclusters must be <= the number of codes \(10\), got 11"),
        ({"nclusters": 2.5}, TypeError, "nclusters"),
    ],
)
def test_cluster_index_bad_arguments(kwargs, exc, match, rng):
    with pytest.raises(exc, match=match):
        hashsearch.ClusterIndex(random_codes(rng, 10, 64), 64, **kwargs)


def test_cluster_index_bad_input(rng):
    with pytest.raises(ValueError, match="at least one code"):
        hashsearch.ClusterIndex(np.zeros((0, 1), np.uint64), 64)
    index = hashsearch.ClusterIndex(random_codes(rng, 50, 64), 64)
    with pytest.raises(ValueError, match="k"):
        index.topk(random_codes(rng, 2, 64), 51)
    with pytest.raises(ValueError, match="k"):
        index.topk(random_codes(rng, 2, 64), 0)
    with pytest.raises(ValueError):
        index.topk(random_codes(rng, 2, 100), 5)  # 100-bit queries against 64-bit codes
    with pytest.raises(ValueError, match="exclude"):
        index.topk(random_codes(rng, 2, 64), 5, exclude=[np.array([50]), np.array([], np.int64)])


def test_cluster_index_reads_a_wide_cluster_through_its_narrow_window(simd):
    """The scan check counts the codes in the windows still to read, not whole clusters in
    reach: cluster B holds codes at every radius 0..64 from its centroid (20 copies of each
    prefix mask), the query lies at radius 32 from it; cluster A (read first) holds 100 copies
    of the query, so after A the k-th distance is 0 and B's window is its 20 codes at radius 32.
    Counting B whole (1,300 of 1,400 codes) sent such a query to the scan."""
    from hashsearch import _core

    nbits, copies = 64, 20
    prefix = np.array([(1 << r) - 1 if r < 64 else (1 << 64) - 1 for r in range(65)], dtype=np.uint64)
    query = prefix[32]
    codes = np.concatenate([np.repeat(prefix, copies), np.full(100, query, dtype=np.uint64)])[:, None]
    labels = np.concatenate([np.zeros(65 * copies), np.ones(100)]).astype(np.uint32)
    centroids = np.array([[0], [query]], dtype=np.uint64)
    index = hashsearch.ClusterIndex._from_native(_core.ClusterIndex.from_clusters(codes, nbits, centroids, labels), 0)
    Df, If = hashsearch.Index(codes, nbits).topk(query[None, None], 50)
    for threads in (1, 2):
        st = index.stats()
        D, I = index.topk(query[None, None], 50, num_threads=threads)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)
        if threads == 1:
            assert index.stats()["scanned"] == st["scanned"]
            assert index.stats()["items_read"] - st["items_read"] == 100 + copies


def test_cluster_index_scans_many_skipped_queries_in_id_order(simd, rng):
    """A large call while queries keep falling back (uniform codes, over 65,536 of them) scans its
    skipped queries through an id-ordered copy of the codes (Index's scan): same output as the
    flat index, exclude rows and ties included, at 1 and 2 threads."""
    n, nbits = 70_000, 64
    codes = random_codes(rng, n, nbits)
    codes[n // 2:n // 2 + 300] = codes[:300]  # duplicates: ties the id order must break
    flat = hashsearch.Index(codes, nbits)
    index = hashsearch.ClusterIndex(codes, nbits, nclusters=64)
    for q in random_codes(rng, 40, nbits):  # fall back until the score skips
        index.topk(q, 10)
    assert index.stats()["skipped"] > 0
    queries = np.concatenate([codes[:150], random_codes(rng, 150, nbits)])
    exclude = random_exclude(rng, len(queries), n, 30)
    for threads in (1, 2):
        st = index.stats()
        D, I = index.topk(queries, 20, exclude=exclude, num_threads=threads)
        Df, If = flat.topk(queries, 20, exclude=exclude)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)
        after = index.stats()
        assert after["skipped"] - st["skipped"] == len(queries) - len(queries) // 32
        assert after["scanned"] - st["scanned"] == len(queries)


def test_cluster_index_large_batch_in_centroid_order(simd, rng):
    """A batch of at least 256 queries (kOrderQueries) runs in the order of the queries' nearest
    centroids; every row stays the query's own: same output as the flat index, exclude rows and
    ties included, at 1, 2 and 3 threads. (A batch below 256 queries would never take that
    order: by_nearest_centroid would go unexecuted.)"""
    n, nbits = 5000, 64
    codes = clustered_codes(rng, n, nbits)
    index = hashsearch.ClusterIndex(codes, nbits, nclusters=10)
    queries = np.concatenate([codes[rng.integers(0, n, 290)] ^ np.uint64(5), random_codes(rng, 10, nbits)])
    exclude = random_exclude(rng, len(queries), n, 40)
    Df, If = hashsearch.Index(codes, nbits).topk(queries, 30, exclude=exclude)
    for threads in (1, 2, 3):
        D, I = index.topk(queries, 30, exclude=exclude, num_threads=threads)
        np.testing.assert_array_equal(D, Df)
        np.testing.assert_array_equal(I, If)


def test_cluster_index_numbers_its_centroids_along_a_chain(rng):
    """A built index numbers its centroids along a nearest-neighbour chain (each the nearest
    unused one to the one before, ties: the smaller), so batches in nearest-centroid order
    visit similar clusters one after another."""
    codes = clustered_codes(rng, 4000, 64, clusters=40, flip=0.1)
    cent = hashsearch.ClusterIndex(codes, 64, nclusters=50)._native.centroids()
    for i in range(len(cent) - 1):
        d = hamming_distances(cent[i : i + 1], cent[i + 1 :])[0]  # (numpy < 2 has no bitwise_count)
        assert d[0] == d.min(), f"centroid {i + 1} is not the nearest unused one to centroid {i}"


@pytest.mark.parametrize("nbits", [32, 64, 128, 255, 300])
def test_cluster_index_scans_small_indexes(simd, nbits, rng, cluster_small_scan):
    """As shipped, an index of up to 65,536 codes answers every query by Index's scan over a
    copy of its codes in id order (its clusters cost more there), batches and single
    queries: exact, ties to the smaller id, and the clusters never read."""
    distinct = clustered_codes(rng, 300, nbits)
    n = 3000
    codes = distinct[rng.integers(0, 300, n)]  # duplicates: ties at every distance
    queries = np.concatenate([distinct[:20], clustered_codes(rng, 20, nbits)])
    exclude = random_exclude(rng, len(queries), n, 200)
    index = hashsearch.ClusterIndex(codes, nbits, nclusters=30)
    st = index.stats()
    for k in (1, 100, n):
        for ex in (None, exclude):
            Dr, Ir = topk_hamming(queries, codes, k, exclude=ex)
            for threads in (1, 2):
                D, I = index.topk(queries, k, exclude=ex, num_threads=threads)  # a batch
                np.testing.assert_array_equal(D, Dr)
                np.testing.assert_array_equal(I, Ir)
                for q in range(0, len(queries), 7):  # one query at a time
                    D, I = index.topk(queries[q], k, exclude=None if ex is None else [ex[q]], num_threads=threads)
                    np.testing.assert_array_equal(D[0], Dr[q])
                    np.testing.assert_array_equal(I[0], Ir[q])
    after = index.stats()
    answered = 3 * 2 * 2 * (len(queries) + len(range(0, len(queries), 7)))  # queries of all calls
    assert after["scanned"] - st["scanned"] == answered
    assert after["items_read"] == st["items_read"] and after["clusters_read"] == st["clusters_read"]


def test_cluster_index_small_scan_after_add_and_load(tmp_path, rng, cluster_small_scan):
    """The id-ordered copy a small index scans is rebuilt by add (also when add takes the index
    past 65,536 codes, where the clusters take over) and by load: always exact."""
    nbits = 64
    codes = clustered_codes(rng, 66_000, nbits)
    queries = np.concatenate([codes[rng.integers(0, len(codes), 10)], clustered_codes(rng, 10, nbits)])
    index = hashsearch.ClusterIndex(codes[:3000], nbits, nclusters=32)
    for upto in (3000, 5000, 65_536, 66_000):  # the last add crosses the limit
        if upto > index.ntotal:
            index.add(codes[index.ntotal:upto])
        for candidate in (index, None):
            if candidate is None:
                index.save(tmp_path / "c.hsi")
                candidate = hashsearch.ClusterIndex.load(tmp_path / "c.hsi")
            st = candidate.stats()
            D, I = candidate.topk(queries, 50)
            Dr, Ir = topk_hamming(queries, codes[:upto], 50)
            np.testing.assert_array_equal(D, Dr)
            np.testing.assert_array_equal(I, Ir)
            read = candidate.stats()["items_read"] - st["items_read"]
            assert (read == 0) == (upto <= 65_536)  # the clusters are read only past the limit
