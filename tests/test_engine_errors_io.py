"""Bad input raises clear exceptions; index files round-trip and reject damage."""
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

import hashsearch
from helpers import with_header


@pytest.fixture
def index(rng):
    return hashsearch.Index(hashsearch.pack(rng.integers(0, 2, (100, 64))), 64)


@pytest.mark.parametrize(
    "k, exc, match",
    [(0, ValueError, "k must be >= 1"), (-3, ValueError, "k must be >= 1"),
     (101, ValueError, "exceeds the number of indexed codes n=100"),
     (2.0, TypeError, "k must be an int"), (True, TypeError, "k must be an int")],
)
def test_bad_k(index, k, exc, match):
    with pytest.raises(exc, match=match):
        index.topk(index.codes()[:2], k)


def test_query_width_mismatch(index):
    with pytest.raises(ValueError, match="2 words.*needs 1|must have 1 uint64 words"):
        index.topk(np.zeros((3, 2), dtype=np.uint64), 5)
    with pytest.raises(ValueError, match="queries have 32 bits, the index has nbits=64"):
        index.topk(np.zeros((3, 32), dtype=bool), 5)
    with pytest.raises(ValueError, match="1-D.*or a batch"):
        index.topk(np.zeros((2, 2, 1), dtype=np.uint64), 5)


def test_bad_exclude(index):
    q = index.codes()[:2]
    with pytest.raises(ValueError, match="exclude id 100 is out of range"):
        index.topk(q, 5, exclude=[[1], [100]])
    with pytest.raises(ValueError, match="exclude id -1 is out of range"):
        index.topk(q, 5, exclude=[[-1], []])
    with pytest.raises(ValueError, match="exclude has 1 rows but there are 2 queries"):
        index.topk(q, 5, exclude=[[1]])
    with pytest.raises(ValueError, match="indptr must have nq\\+1=3 entries"):
        index.topk(q, 5, exclude=(np.array([0, 1]), np.array([3])))
    with pytest.raises(TypeError, match="exclude ids must be integers"):
        index.topk(q, 5, exclude=[[1.5], []])
    with pytest.raises(TypeError, match="exclude must be None"):
        index.topk(q, 5, exclude=3)


def test_bad_exclude_csr_and_array_forms(index, rng):
    q = index.codes()[:2]
    with pytest.raises(TypeError, match="exclude CSR arrays must be integers, got float64 and int64"):
        index.topk(q, 5, exclude=(np.array([0.0, 1, 1]), np.array([3])))
    for indptr in ([0, 2, 1], [1, 1, 1], [0, 1, 5]):  # decreasing, not from 0, not to len(indices)
        with pytest.raises(ValueError, match="indptr must be non-decreasing from 0 to len\\(indices\\)=1"):
            index.topk(q, 5, exclude=(np.array(indptr), np.array([3])))
    # A 2-D id array is one row per query, the same as the list and CSR forms, and as the reference.
    rows = np.array([[0, 1], [1, 2]])
    as_array = index.topk(q, 3, exclude=rows)
    as_csr = index.topk(q, 3, exclude=(np.array([0, 2, 4]), rows.ravel()))
    expected = hashsearch.reference.topk_hamming(q, index.codes(), 3, exclude=(np.array([0, 2, 4]), rows.ravel()))
    for got in (as_array, as_csr, index.topk(q, 3, exclude=[[0, 1], [1, 2]])):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert 0 not in as_array[1][0] and 1 not in as_array[1][0]


BIG = 2**40  # beyond a C int: pybind11 refused it with a TypeError listing signatures


@pytest.mark.parametrize("kind", ["flat", "mih", "cluster", "hier"])
def test_values_beyond_a_c_int_and_odd_dtypes_say_what_was_wrong(kind, rng):
    codes = hashsearch.pack(rng.integers(0, 2, (100, 64)))
    emb = rng.standard_normal((100, 8)).astype(np.float32)
    index = {"flat": lambda: hashsearch.Index(codes, 64), "mih": lambda: hashsearch.MIHIndex(codes, 64),
             "cluster": lambda: hashsearch.ClusterIndex(codes, 64),
             "hier": lambda: hashsearch.HierarchicalIndex(codes, emb, 64)}[kind]()
    hamming = index.hamming_topk if kind == "hier" else index.topk
    q = codes[:2]
    with pytest.raises(ValueError, match=f"k={BIG} exceeds the number of indexed codes n=100"):
        hamming(q, BIG)
    with pytest.raises(ValueError, match=f"num_threads must be <= 2147483647, got {BIG}"):
        hamming(q, 5, num_threads=BIG)
    with pytest.raises(TypeError, match="queries must be bool, integer .* got dtype complex64"):
        hamming(q.astype(np.complex64), 5)
    with pytest.raises(ValueError, match="queries have 1 bits, .* \\(packed codes must be uint64, got int64\\)"):
        hamming(q.astype(np.int64), 5)
    huge_id = np.array([2**63], np.uint64)  # wrapped to a negative id when cast to int64
    with pytest.raises(ValueError, match="exclude id 9223372036854775808 is out of range \\[0, 100\\)"):
        hamming(q, 5, exclude=[huge_id, []])
    with pytest.raises(ValueError, match="exclude id 9223372036854775808 is out of range"):
        hamming(q, 5, exclude=(np.array([0, 1, 1]), huge_id))
    with pytest.raises(ValueError, match="each exclude row must be a flat list or array of ids"):
        hamming(q, 5, exclude=[[1, [2]], []])
    if kind != "hier":
        lims, D, I = index.range_search(q, BIG)  # a radius beyond nbits holds every item
        assert np.diff(lims).tolist() == [100, 100]


def test_constructor_counts_beyond_a_c_int(rng):
    codes = hashsearch.pack(rng.integers(0, 2, (100, 64)))
    with pytest.raises(ValueError, match=f"m must be <= 2147483647, got {BIG}"):
        hashsearch.MIHIndex(codes, 64, m=BIG)
    with pytest.raises(ValueError, match=f"nclusters must be <= 2147483647, got {BIG}"):
        hashsearch.ClusterIndex(codes, 64, nclusters=BIG)
    with pytest.raises(ValueError, match=f"num_threads must be <= 2147483647, got {BIG}"):
        hashsearch.Index(codes, 64, num_threads=BIG)


def test_bad_code_shapes_and_empty_indexes():
    with pytest.raises(ValueError, match="packed codes must be 2-D \\(n, words\\), got shape \\(5,\\)"):
        hashsearch.Index(np.zeros(5, np.uint64))
    with pytest.raises(ValueError, match="packed codes have 0 words per code"):
        hashsearch.Index(np.zeros((5, 0), np.uint64))
    with pytest.raises(ValueError, match="unpacked codes must be 2-D \\(n, nbits\\), got shape \\(5,\\)"):
        hashsearch.Index(np.zeros(5, bool))
    with pytest.raises(ValueError, match="nbits=16 but unpacked codes have 8 columns"):
        hashsearch.Index(np.zeros((5, 8), bool), 16)
    with pytest.raises(ValueError, match="MIHIndex needs at least one code, got 0"):
        hashsearch.MIHIndex(np.zeros((0, 1), np.uint64))
    with pytest.raises(ValueError, match="the index is empty: it holds 0 codes"):
        hashsearch.Index(np.zeros((0, 1), np.uint64)).range_search(np.zeros(1, np.uint64), 3)


def test_bad_codes():
    with pytest.raises(ValueError, match="empty"):
        hashsearch.Index(np.zeros((0, 1), dtype=np.uint64)).topk(np.zeros(1, np.uint64), 1)
    with pytest.raises(ValueError, match="bits set above nbits=10"):
        hashsearch.Index(np.full((2, 1), 2**20, dtype=np.uint64), 10)
    with pytest.raises(ValueError, match="NaN"):
        hashsearch.Index(np.array([[0.5, np.nan]]))
    with pytest.raises(TypeError, match="dtype"):
        hashsearch.Index(np.array([["x"]]))
    with pytest.raises(ValueError, match="nbits=128 needs 2"):
        hashsearch.Index(np.zeros((2, 1), dtype=np.uint64), 128)
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        hashsearch.Index(np.zeros((2, 1), dtype=np.uint64), num_threads=-1)


def test_bad_hierarchical_input(rng):
    codes = hashsearch.pack(rng.integers(0, 2, (20, 32)))
    emb = rng.standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="embeddings have 19 rows but there are 20 codes"):
        hashsearch.HierarchicalIndex(codes, emb[:19], 32)
    bad = emb.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hashsearch.HierarchicalIndex(codes, bad, 32)
    index = hashsearch.HierarchicalIndex(codes, emb, 32)
    with pytest.raises(ValueError, match="must have 4 columns, got 3"):
        index.topk(codes[:2], emb[:2, :3], 5)
    with pytest.raises(ValueError, match="must have 2 rows, got 3"):
        index.topk(codes[:2], emb[:3], 5)
    with pytest.raises(ValueError, match="candidates=3 must be >= k=5"):
        index.topk(codes[:2], emb[:2], 5, candidates=3)
    with pytest.raises(ValueError, match="NaN"):
        index.topk(codes[:1], np.full((1, 4), np.nan), 5)
    for bad_value in (np.nan, np.inf, -np.inf):  # checked natively: every element, float32 given as is
        q_emb = emb[:3].copy()
        q_emb[2, 3] = bad_value
        with pytest.raises(ValueError, match="query embeddings contain NaN or infinite values"):
            index.topk(codes[:3], q_emb, 5)
    beyond = emb[:3].astype(np.float64)
    beyond[1, 0] = 1e39  # finite, but inf as float32: an error, without numpy's overflow warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="query embeddings contain NaN or infinite values \\(as float32\\)"):
            index.topk(codes[:3], beyond, 5)
        with pytest.raises(ValueError, match="^embeddings contain NaN or infinite values \\(as float32\\)"):
            hashsearch.HierarchicalIndex(codes, np.full(emb.shape, 1e39), 32)


def test_the_native_layer_rejects_non_finite_embeddings_on_its_own(rng):
    """hashsearch._core checks again what the Python layer checks, so a direct caller cannot
    pass NaN item embeddings; the query check lives there alone."""
    from hashsearch import _core

    codes = rng.integers(0, 2**63, (50, 1), dtype=np.uint64)
    emb = rng.standard_normal((50, 4)).astype(np.float32)
    bad = emb.copy()
    bad[-1, -1] = np.nan
    with pytest.raises(ValueError, match="embeddings contain NaN or infinite values"):
        _core.HierarchicalIndex(codes, 64, bad, 0)
    index = _core.HierarchicalIndex(codes, 64, emb, 0)
    with pytest.raises(ValueError, match="embeddings contain NaN or infinite values"):
        index.add(codes[:2], np.full((2, 4), np.inf, np.float32))
    assert index.ntotal == 50
    with pytest.raises(ValueError, match="query embeddings contain NaN or infinite values"):
        index.topk(codes[:2], bad[-2:], 5, 10)


def test_simd_level_controls():
    levels = hashsearch.available_simd_levels()
    assert levels[0] == "scalar" and hashsearch.simd_level() in levels
    with pytest.raises(ValueError, match="level must be one of"):
        hashsearch.set_simd_level("sse9")
    if "avx512" not in levels:
        with pytest.raises(ValueError, match="not supported by this CPU"):
            hashsearch.set_simd_level("avx512")


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_env_var_forces_level_and_rejects_nonsense():
    out = _run("import hashsearch; print(hashsearch.simd_level())", HASHSEARCH_SIMD="scalar")
    assert out.returncode == 0 and out.stdout.strip() == "scalar", out.stderr
    out = _run("import hashsearch", HASHSEARCH_SIMD="fastest")
    assert out.returncode != 0 and "unknown SIMD level 'fastest'" in out.stderr


def test_engine_never_imports_torch():
    out = _run("import sys, hashsearch, hashsearch.reference, hashsearch.io; "
               "print('torch' in sys.modules)")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("kind", ["flat", "mih", "hier"])
def test_save_load_round_trip(tmp_path, rng, kind):
    codes = hashsearch.pack(rng.integers(0, 2, (500, 70)))
    emb = rng.standard_normal((500, 6)).astype(np.float32)
    q = codes[:9]
    if kind == "flat":
        index = hashsearch.Index(codes, 70)
    elif kind == "mih":
        index = hashsearch.MIHIndex(codes, 70, m=7)
    else:
        index = hashsearch.HierarchicalIndex(codes, emb, 70)
    path = tmp_path / "x.hsi"
    index.save(path)
    loaded = hashsearch.load(path)
    assert type(loaded) is type(index) and loaded.nbits == 70
    np.testing.assert_array_equal(loaded.codes(), codes)
    if kind == "hier":
        np.testing.assert_array_equal(loaded.embeddings(), emb)
        a, b = index.topk(q, emb[:9], 5), loaded.topk(q, emb[:9], 5)
    else:
        a, b = index.topk(q, 5), loaded.topk(q, 5)
        if kind == "mih":
            assert loaded.m == 7
    np.testing.assert_array_equal(a[1], b[1])
    assert [p.name for p in tmp_path.iterdir()] == ["x.hsi"]  # no temp file left


def test_damaged_files_are_rejected(tmp_path, rng):
    codes = hashsearch.pack(rng.integers(0, 2, (50, 64)))
    path = tmp_path / "i.hsi"
    hashsearch.Index(codes).save(path)
    raw = path.read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        hashsearch.load(tmp_path / "short")
    flipped = bytearray(raw)
    flipped[-1] ^= 0xFF
    (tmp_path / "flip").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        hashsearch.load(tmp_path / "flip")
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(ValueError, match="not a hashsearch index"):
        hashsearch.load(tmp_path / "foreign")
    newer = bytearray(raw)
    newer[8] = 99
    (tmp_path / "newer").write_bytes(bytes(newer))
    with pytest.raises(ValueError, match="format version 99"):
        hashsearch.load(tmp_path / "newer")
    (tmp_path / "kind").write_bytes(with_header(raw, kind=77))
    with pytest.raises(ValueError, match="unknown index kind 77"):
        hashsearch.load(tmp_path / "kind")
    with pytest.raises(ValueError, match="holds an index of type Index, not MIHIndex"):
        hashsearch.MIHIndex.load(path)


def test_a_header_claiming_more_than_the_file_holds_is_truncated_not_allocated(tmp_path, rng):
    """A corrupt header whose sizes agree with each other (n codes, nbytes) but
    not with the file must be a ValueError before anything is read: reading
    the claimed 64 GiB first raised MemoryError."""

    codes = hashsearch.pack(rng.integers(0, 2, (50, 64)))
    path = tmp_path / "i.hsi"
    hashsearch.Index(codes).save(path)
    raw = path.read_bytes()
    (tmp_path / "huge").write_bytes(with_header(raw, n=2**33, nbytes=2**33 * 8))
    with pytest.raises(ValueError, match=r"truncated: expected 68719476736 payload bytes, found 400"):
        hashsearch.load(tmp_path / "huge")
    (tmp_path / "long").write_bytes(raw + b"\0" * 3)
    with pytest.raises(ValueError, match="3 bytes after the 400-byte payload"):
        hashsearch.load(tmp_path / "long")


def test_save_syncs_the_file_then_the_directory_after_the_rename(tmp_path, rng, monkeypatch):
    """The rename must be durable too: the directory is fsynced after os.replace."""
    import hashsearch.io as hio

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace",))
        return real_replace(a, b)

    monkeypatch.setattr(hio.os, "fsync", fsync)
    monkeypatch.setattr(hio.os, "replace", replace)
    hashsearch.Index(hashsearch.pack(rng.integers(0, 2, (5, 64)))).save(tmp_path / "i.hsi")
    assert events == [("fsync", "file"), ("replace",), ("fsync", "dir")]


def test_failed_save_keeps_old_file(tmp_path, rng, monkeypatch):
    codes = hashsearch.pack(rng.integers(0, 2, (50, 64)))
    path = tmp_path / "i.hsi"
    hashsearch.Index(codes).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        hashsearch.Index(codes[:10]).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["i.hsi"]


def test_atomic_open_replaces_the_file_only_when_its_block_succeeds(tmp_path):
    from hashsearch.io import atomic_open

    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_open(path) as f:
        f.write(b"new ")
        f.write(b"contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def _indexes_of_every_kind(codes, nbits, emb):
    return {
        "flat": hashsearch.Index(codes, nbits, num_threads=1),
        "mih": hashsearch.MIHIndex(codes, nbits, num_threads=2),
        "mih-m3": hashsearch.MIHIndex(codes, nbits, m=3),
        "cluster": hashsearch.ClusterIndex(codes, nbits, nclusters=9, num_threads=1),
        "hier": hashsearch.HierarchicalIndex(codes, emb, nbits),
        "hier-mih": hashsearch.HierarchicalIndex(codes, emb, nbits, candidate_search="mih", m=2),
        "hier-cluster": hashsearch.HierarchicalIndex(codes, emb, nbits, candidate_search="cluster", nclusters=5),
    }


def _same_index(a, b, q, q_emb):
    assert type(a) is type(b) and a.nbits == b.nbits and a.num_threads == b.num_threads
    np.testing.assert_array_equal(a.codes(), b.codes())
    if isinstance(a, hashsearch.HierarchicalIndex):
        assert (a.candidate_search, a.m, a.nclusters) == (b.candidate_search, b.m, b.nclusters)
        np.testing.assert_array_equal(a.embeddings(), b.embeddings())
        ra, rb = a.topk(q, q_emb, 7, exclude=[[0, 3]] * len(q)), b.topk(q, q_emb, 7, exclude=[[0, 3]] * len(q))
    else:
        ra, rb = a.topk(q, 7, exclude=[[0, 3]] * len(q)), b.topk(q, 7, exclude=[[0, 3]] * len(q))
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(x, y)
    if isinstance(a, hashsearch.MIHIndex):
        assert (a.m, a._m_arg) == (b.m, b._m_arg)
    if isinstance(a, hashsearch.ClusterIndex) or (isinstance(a, hashsearch.HierarchicalIndex) and a.nclusters):
        np.testing.assert_array_equal(a._native.centroids(), b._native.centroids())
        np.testing.assert_array_equal(a._native.labels(), b._native.labels())


def test_every_index_pickles_and_deep_copies(rng):
    import copy
    import pickle

    nbits = 70
    codes = hashsearch.pack(rng.integers(0, 2, (300, nbits)))
    emb = rng.standard_normal((300, 6)).astype(np.float32)
    q, q_emb = codes[:5] ^ np.uint64(5), emb[:5]
    for name, index in _indexes_of_every_kind(codes, nbits, emb).items():
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            _same_index(index, pickle.loads(pickle.dumps(index, protocol=protocol)), q, q_emb)
        twin = copy.deepcopy(index)
        _same_index(index, twin, q, q_emb)
        # The copy is independent: growing it leaves the original as it was.
        if isinstance(index, hashsearch.HierarchicalIndex):
            twin.add(codes[:4], emb[:4])
        else:
            twin.add(codes[:4])
        assert (twin.ntotal, index.ntotal) == (304, 300), name


def test_pickled_mih_with_default_m_still_rechooses_m_on_add(rng):
    import pickle

    codes = hashsearch.pack(rng.integers(0, 2, (40, 64)))
    index = pickle.loads(pickle.dumps(hashsearch.MIHIndex(codes, 64)))
    assert index._m_arg is None
    more = hashsearch.pack(rng.integers(0, 2, (100_000, 64)))
    index.add(more)
    assert index.m == hashsearch.default_mih_m(64, 100_040)


def _search_in_child(index, q):
    return index.topk(q, 5)


def test_an_index_crosses_process_boundaries(rng):
    import multiprocessing

    codes = hashsearch.pack(rng.integers(0, 2, (200, 64)))
    index = hashsearch.ClusterIndex(codes, 64, nclusters=4)
    ctx = multiprocessing.get_context("spawn")  # the start method that must pickle
    with ctx.Pool(1) as pool:
        D, I = pool.apply(_search_in_child, (index, codes[:3]))
    Dr, Ir = index.topk(codes[:3], 5)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_serialized_bytes_are_the_file_and_reject_damage(tmp_path, rng):
    codes = hashsearch.pack(rng.integers(0, 2, (50, 64)))
    index = hashsearch.MIHIndex(codes, 64, m=2)
    raw = hashsearch.serialize_index(index)
    index.save(tmp_path / "i.hsi")
    assert raw == (tmp_path / "i.hsi").read_bytes()
    for form in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        back = hashsearch.deserialize_index(form, num_threads=1)
        assert type(back) is hashsearch.MIHIndex and back.m == 2 and back.num_threads == 1
        np.testing.assert_array_equal(back.topk(codes[:4], 6)[1], index.topk(codes[:4], 6)[1])
    with pytest.raises(ValueError, match="serialized index is truncated"):
        hashsearch.deserialize_index(raw[:-1])
    with pytest.raises(ValueError, match="not a hashsearch index"):
        hashsearch.deserialize_index(raw[:10])
    with pytest.raises(ValueError, match="3 bytes after"):
        hashsearch.deserialize_index(raw + b"abc")
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        hashsearch.deserialize_index(flipped)
    huge = with_header(raw, n=1 << 40)  # a header claiming 2^40 codes
    with pytest.raises(ValueError, match="inconsistent header|truncated"):
        hashsearch.deserialize_index(huge)
    with pytest.raises(TypeError, match="bytes-like"):
        hashsearch.deserialize_index(np.frombuffer(raw, dtype=np.uint8)[::2])
    with pytest.raises(TypeError, match="expected a hashsearch index, got ndarray"):
        hashsearch.serialize_index(codes)
