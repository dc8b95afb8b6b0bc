"""Fuzz targets (hypothesis, derandomized, a bounded number of cases) for the file loader and
the argument validation: whatever the bytes or arrays, the engine answers correctly or raises
ValueError / TypeError naming the problem; never another exception, a crash or a wrong load.

The classes they cover: header and payload byte changes (a single byte or a burst of up to 4,
which CRC32 always detects), truncations and extensions, header fields rewritten with a valid
header checksum, arrays of any dtype, byte order, shape and strides, exclude in any form
(dicts, sets, ragged rows, CSR arrays with offsets out of order), num_threads and k of any
value, and the native core called directly with arbitrary exclude arrays.
(tests/test_engine_fuzz_atheris.py runs the loader target under atheris, outside CI.)"""
import functools
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hashsearch
from hashsearch import _core
from hashsearch.reference import topk_hamming
from helpers import with_header

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELD_OFFSETS = [0, 8, 12, 16, 20, 24, 32, 36, 40, 48, 52]  # magic, version, kind, nbits, ... header crc
FIELD_NAMES = ("kind", "nbits", "nwords", "n", "m", "dim", "nbytes", "crc")
FIELD_BITS = {"n": 64, "nbytes": 64}


@functools.lru_cache(maxsize=None)
def _files():
    """Serialized indexes of every kind (small, built once), with their codes."""
    rng = np.random.default_rng(7)
    codes = hashsearch.pack(rng.integers(0, 2, (40, 70), dtype=np.uint8))
    emb = rng.standard_normal((40, 3)).astype(np.float32)
    indexes = [
        hashsearch.Index(codes, 70),
        hashsearch.MIHIndex(codes, 70, m=3),
        hashsearch.ClusterIndex(codes, 70, nclusters=4),
        hashsearch.HierarchicalIndex(codes, emb, 70),
        hashsearch.HierarchicalIndex(codes, emb, 70, candidate_search="mih", m=2),
        hashsearch.HierarchicalIndex(codes, emb, 70, candidate_search="cluster", nclusters=3),
    ]
    return codes, [hashsearch.serialize_index(index) for index in indexes]


def _load_or_value_error(raw: bytes):
    """The loaded index, or None after a ValueError; any other exception fails the test."""
    try:
        return hashsearch.deserialize_index(raw, num_threads=1)
    except ValueError as e:
        assert str(e), "an empty error message"
        return None


@settings(FUZZ, max_examples=400)
@given(st.integers(0, 5), st.data())
def test_any_burst_of_up_to_4_changed_bytes_is_rejected(which, data):
    _, files = _files()
    raw = files[which]
    # Half the bursts in the header, from the start of one of its fields, where a change could
    # pass as another kind or nbits; their values often near the originals, which look plausible.
    if data.draw(st.booleans(), label="in_header"):
        start = data.draw(st.sampled_from(FIELD_OFFSETS), label="field") + data.draw(st.integers(0, 3), label="at")
    else:
        start = data.draw(st.integers(0, len(raw) - 1), label="start")
    length = data.draw(st.integers(1, min(4, len(raw) - start)), label="length")
    byte = st.one_of(st.integers(0, 255), st.integers(0, 4), st.integers(-8, 8).map(lambda d: raw[start] + d & 255))
    new = bytes(data.draw(st.lists(byte, min_size=length, max_size=length), label="bytes"))
    damaged = raw[:start] + new + raw[start + length:]
    if damaged != raw:
        assert _load_or_value_error(damaged) is None, f"loaded despite bytes {start}..{start + length} changed"


@FUZZ
@given(st.integers(0, 5), st.data())
def test_truncated_or_extended_files_are_rejected(which, data):
    _, files = _files()
    raw = files[which]
    if data.draw(st.booleans(), label="truncate"):
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        damaged = raw + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    assert _load_or_value_error(damaged) is None


@FUZZ
@given(st.integers(0, 5), st.data())
def test_header_fields_rewritten_with_a_valid_header_checksum_load_exactly_or_raise(which, data):
    """What a writer with a bug (or a forger) could produce: the loader must refuse it with a
    ValueError or load an index that answers exactly over the codes the payload holds."""
    codes, files = _files()
    names = data.draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=3, unique=True), label="fields")
    changes = {name: data.draw(st.one_of(st.integers(0, 8), st.integers(0, 2 ** FIELD_BITS.get(name, 32) - 1)),
                               label=name) for name in names}
    index = _load_or_value_error(with_header(files[which], **changes))
    if index is not None:
        n = min(5, index.ntotal)
        D, I = index.hamming_topk(index.codes()[:2], n) if isinstance(index, hashsearch.HierarchicalIndex) \
            else index.topk(index.codes()[:2], n)
        Dr, Ir = topk_hamming(index.codes()[:2], index.codes(), n)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([b"", b"HASHSRCH", b"HASHSRCH\x01\x00\x00\x00",
                                                 b"HASHSRCH\x02\x00\x00\x00"]))
def test_random_bytes_are_rejected(tail, prefix):
    assert _load_or_value_error(prefix + tail) is None


@FUZZ
@given(st.integers(0, 5), st.data())
def test_files_load_the_same_bytes_from_disk(tmp_path_factory, which, data):
    _, files = _files()
    raw = bytearray(files[which])
    if data.draw(st.booleans(), label="damage"):
        raw[data.draw(st.integers(0, len(raw) - 1), label="pos")] ^= data.draw(st.integers(1, 255), label="xor")
    path = tmp_path_factory.mktemp("fuzz") / "i.hsi"
    path.write_bytes(bytes(raw))
    try:
        loaded = hashsearch.load(path)
    except ValueError:
        loaded = None
    assert (loaded is None) == (bytes(raw) != files[which])


# ---------------------------------------------------------------- arrays and arguments

DTYPES = ["<u8", ">u8", "u4", "i8", ">i8", "i1", "f4", ">f8", "bool", "c8", "O", "U3", "M8[s]"]


@st.composite
def arrays(draw, width=64):
    """An array of any dtype and byte order, 0-3 dimensions of small sizes around the code
    width, and strides from slicing or transposing, or a list."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.sampled_from([0, 1, 2, 3, width // 64, width, width + 1, 2 * (width // 64)]))
                  for _ in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["bits", "pm1", "words", "any"]))
    size = int(np.prod(shape)) if shape else 1
    if kind == "bits":
        values = rng.integers(0, 2, size)
    elif kind == "pm1":
        values = rng.choice([-1, 1], size)
    elif kind == "words":
        values = rng.integers(0, 2**63, size, dtype=np.uint64)
    else:
        values = rng.integers(-3, 5, size)
    try:
        arr = np.asarray(values).astype(dtype).reshape(shape)
    except (TypeError, ValueError):
        arr = np.zeros(shape, dtype)
    layout = draw(st.sampled_from(["c", "sliced", "transposed", "list"]))
    if layout == "sliced" and arr.ndim:
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    elif layout == "transposed" and arr.ndim == 2:
        arr = np.ascontiguousarray(arr.T).T
    elif layout == "list":
        return arr.tolist()
    return arr


REFUSED = object()


def _call_ok(fn, *args, **kwargs):
    """fn's result, or REFUSED after a TypeError / ValueError with a message; anything else fails."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as e:
        assert str(e), "an empty error message"
        return REFUSED


@st.composite
def excludes(draw, nq, n):
    """(exclude, rows): exclude in documented and undocumented forms, valid and not, and the
    per-query id lists it means if it is documented (None: it must be refused)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = [rng.integers(-1, n + 1, rng.integers(0, 4)).tolist() for _ in range(nq)]
    form = draw(st.sampled_from(["none", "rows", "arrays", "dict", "set", "csr", "csr_bad", "ragged", "floats",
                                 "string", "uint64", "2d", "tuple_rows", "short"]))
    if form == "none":
        return None, [[] for _ in range(nq)]
    if form in ("rows", "short"):
        return rows[: nq - (form == "short")], rows
    if form == "arrays":
        dtype = draw(st.sampled_from(["i8", ">i8", "u4", "i2"]))
        return [np.array(r, dtype=dtype) if min(r, default=0) >= 0 else np.array(r) for r in rows], rows
    if form == "tuple_rows":
        return tuple(rows), rows if nq != 2 else None  # a 2-tuple is read as CSR
    if form == "csr":
        return (np.concatenate([[0], np.cumsum([len(r) for r in rows])]), np.array(sum(rows, []), np.int64)), rows
    if form == "2d":
        ids = rng.integers(0, n, (nq, 2))
        return ids, ids.tolist()
    return {
        "dict": dict(enumerate(rows)),
        "set": {1, 2},
        "csr_bad": (rng.integers(-2, 6, nq + 1), rng.integers(0, n, rng.integers(0, 5))),
        "ragged": [[[1, 2], [3]]] * nq,
        "floats": [[0.5]] * nq,
        "string": "0,1",
        "uint64": [np.array([2**64 - 1], dtype=np.uint64)] * nq,
    }[form], None


THREADS = st.one_of(st.none(), st.integers(0, 4), st.integers(-3, 8),
                    st.sampled_from([10**6, 2**31, 2**63, 1.5, True, "2", np.int32(2)]))
K = st.one_of(st.integers(1, 30), st.integers(-1, 31), st.sampled_from([2**31, 2.0, None, np.int64(3)]))


@st.composite
def queries(draw, codes):
    """Queries the index can take, in the forms it documents (packed of either byte order,
    1-D or 2-D, strided; unpacked bits, ±1, floats), or anything at all."""
    if draw(st.booleans()):
        return draw(arrays())
    rows = codes[: draw(st.integers(1, 4))]
    form = draw(st.sampled_from(["packed", ">u8", "one", "strided", "bits", "pm1", "floats", "list"]))
    bits = hashsearch.unpack(rows, 64)
    return {"packed": rows, ">u8": rows.astype(">u8"), "one": rows[0],
            "strided": np.repeat(rows, 2, axis=0)[::2], "bits": bits, "pm1": bits.astype(np.int8) * 2 - 1,
            "floats": bits.astype(np.float32) - 0.5, "list": bits.tolist()}[form]


@functools.lru_cache(maxsize=None)
def _indexes():
    codes = hashsearch.pack(np.random.default_rng(3).integers(0, 2, (30, 64), dtype=np.uint8))
    emb = np.ones((30, 2), np.float32)
    return codes, emb, [hashsearch.Index(codes), hashsearch.MIHIndex(codes, m=2),
                        hashsearch.ClusterIndex(codes, nclusters=3), hashsearch.HierarchicalIndex(codes, emb)]


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_searches_take_any_query_array_exactly_or_raise(data):
    codes, emb, indexes = _indexes()
    q = data.draw(queries(codes), label="q")
    index = data.draw(st.sampled_from(indexes), label="index")
    k = data.draw(K, label="k")
    threads = data.draw(THREADS, label="num_threads")
    nq = np.shape(q)[0] if np.ndim(q) == 2 else 1
    exclude, rows = data.draw(excludes(nq, 30), label="exclude")
    search = index.hamming_topk if isinstance(index, hashsearch.HierarchicalIndex) else index.topk
    out = _call_ok(search, q, k, exclude=exclude, num_threads=threads)
    if out is REFUSED:
        return
    assert rows is not None, f"an undocumented exclude form was accepted: {exclude!r}"
    D, I = out
    assert D.shape == I.shape == (nq, k) and D.dtype == np.int32 and I.dtype == np.int64
    packed = np.asarray(q)
    packed = packed.astype(np.uint64) if packed.dtype.kind == "u" and packed.dtype.itemsize == 8 \
        else hashsearch.pack(packed)
    Dr, Ir = topk_hamming(packed.reshape(nq, -1), codes, k, exclude=rows)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def _outcome(fn, *args):
    """What fn did: ("ok", codes it holds) or (error type, message)."""
    try:
        result = fn(*args)
    except (TypeError, ValueError) as e:
        assert str(e), "an empty error message"
        return type(e).__name__, str(e)
    return "ok", result.codes() if hasattr(result, "codes") else result


@FUZZ
@given(arrays(), st.one_of(st.none(), st.integers(-1, 1100)))
def test_building_and_packing_take_any_array_or_raise_whatever_the_byte_order(codes, nbits):
    """Also: an array and its native-byte-order copy hold the same numbers, so they must give
    the same index, or the same kind of error (big-endian words must not be refused as "not 0/1")."""
    arr = np.asarray(codes)
    native = arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in "=|" else None
    for fn, args in ((hashsearch.Index, (nbits,)), (hashsearch.pack, ()),
                     (hashsearch.unpack, (64 if nbits is None else nbits,))):
        got = _outcome(fn, codes, *args)
        if native is not None:
            want = _outcome(fn, native, *args)
            assert got[0] == want[0] and (got[0] != "ok" or np.array_equal(got[1], want[1])), (got, want)
    index = _call_ok(hashsearch.Index, codes, nbits)
    if index is not REFUSED and index.ntotal:
        D, I = index.topk(index.codes()[:2], 1)
        assert (D[:, 0] == 0).all()
        _call_ok(hashsearch.MIHIndex, codes, nbits)
        _call_ok(hashsearch.ClusterIndex, codes, nbits, nclusters=1)


@FUZZ
@given(arrays(), arrays(width=2), st.data())
def test_adds_take_any_arrays_all_or_nothing(codes, emb, data):
    base, base_emb, _ = _indexes()
    flat = hashsearch.Index(base)
    hier = hashsearch.HierarchicalIndex(base, base_emb)
    if _call_ok(flat.add, codes) is REFUSED:
        assert flat.ntotal == 30
    if _call_ok(hier.add, codes, emb) is REFUSED:
        assert hier.ntotal == 30 and len(hier.embeddings()) == 30
    assert len(hier.embeddings()) == hier.ntotal
    np.testing.assert_array_equal(flat.codes()[:30], base)


@functools.lru_cache(maxsize=None)
def _guarded_page(slot: int):
    """A page followed by an unreadable one (Linux; None elsewhere): an array placed at its
    end makes a read past the array crash at once, without a sanitizer."""
    import ctypes
    import mmap

    if not sys.platform.startswith("linux"):
        return None
    buf = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(addr + mmap.PAGESIZE, mmap.PAGESIZE, 0) != 0:
        return None
    return buf


def _at_page_end(values, slot: int) -> np.ndarray:
    """int64 ``values`` in an array that ends where guarded page ``slot`` does."""
    values = np.asarray(values, np.int64)
    buf = _guarded_page(slot)
    if buf is None:
        return values
    import mmap

    out = np.frombuffer(buf, np.int64, count=values.size, offset=mmap.PAGESIZE - 8 * values.size)
    out[:] = values
    return out


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_the_native_core_checks_exclude_arrays_on_its_own(data):
    """The bindings called directly (as the native checks and fuzzers do): offsets of any
    order and ids of any value must be refused before a read outside the arrays (which end
    at an unreadable page)."""
    codes = np.zeros((10, 1), np.uint64)
    index = _core.FlatIndex(codes, 64)
    nq = data.draw(st.integers(1, 4), label="nq")
    indices = data.draw(st.lists(st.integers(-2, 12), max_size=8), label="indices")
    if data.draw(st.booleans(), label="framed"):  # first 0 and last len(indices), as the checks want
        inner = data.draw(st.lists(st.integers(-3, 12), min_size=nq - 1, max_size=nq - 1), label="inner")
        indptr = [0] + inner + [len(indices)]
    else:
        indptr = data.draw(st.lists(st.integers(-3, 12), min_size=0, max_size=6), label="indptr")
    indptr, indices = _at_page_end(indptr, 0), np.array(indices, np.int64)
    if data.draw(st.booleans(), label="guard_indices"):
        indices = _at_page_end(indices, 1)
    out = _call_ok(index.topk, np.zeros((nq, 1), np.uint64), 3, indptr, indices, 1)
    if out is not REFUSED:
        assert len(indptr) == nq + 1 and indptr[0] == 0 and indptr[-1] == len(indices)
        assert (np.diff(indptr) >= 0).all() and ((indices >= 0) & (indices < 10)).all()
    _call_ok(index.range_search, np.zeros((nq, 1), np.uint64), 2, indptr, indices, 1)


@pytest.mark.parametrize("threads", [-1, 2**31, 1.5, "2", True])
def test_bad_num_threads_values_name_the_problem(threads):
    codes, emb, indexes = _indexes()
    with pytest.raises((TypeError, ValueError), match="num_threads"):
        indexes[0].topk(codes[:1], 1, num_threads=threads)
