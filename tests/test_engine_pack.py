"""pack / unpack: bit order, accepted encodings, and rejected input."""
import numpy as np
import pytest

import hashsearch


def test_bit_order_is_lsb_first_within_words():
    bits = np.zeros((1, 130), dtype=bool)
    bits[0, [0, 63, 64, 129]] = True
    words = hashsearch.pack(bits)
    assert words.dtype == np.uint64 and words.shape == (1, 3)
    assert words[0, 0] == np.uint64(1) | (np.uint64(1) << np.uint64(63))
    assert words[0, 1] == np.uint64(1)
    assert words[0, 2] == np.uint64(2)


@pytest.mark.parametrize("nbits", [1, 7, 32, 63, 64, 65, 100, 128, 255, 256, 1000, 1024])
def test_round_trip_any_width(nbits):
    rng = np.random.default_rng(nbits)
    bits = rng.integers(0, 2, size=(17, nbits), dtype=np.uint8)
    words = hashsearch.pack(bits)
    assert words.shape == (17, (nbits + 63) // 64)
    np.testing.assert_array_equal(hashsearch.unpack(words, nbits), bits)


def test_encodings_agree():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(9, 70)).astype(bool)
    signs = np.where(bits, 1, -1)
    expected = hashsearch.pack(bits)
    np.testing.assert_array_equal(hashsearch.pack(bits.astype(np.int64)), expected)
    np.testing.assert_array_equal(hashsearch.pack(signs.astype(np.int8)), expected)
    floats = signs * rng.uniform(0.1, 2.0, size=signs.shape)
    np.testing.assert_array_equal(hashsearch.pack(floats.astype(np.float32)), expected)


def test_zero_float_counts_as_plus_one():
    assert hashsearch.unpack(hashsearch.pack(np.array([0.0, -0.5, 2.0])), 3).tolist() == [1, 0, 1]


def test_one_dimensional_code():
    words = hashsearch.pack(np.array([1, 0, 1], dtype=np.uint8))
    assert words.shape == (1,) and words[0] == 5


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.array([[0.0, np.nan]]), ValueError, "NaN"),
        (np.array([[0, 2]]), ValueError, "0/1 or -1/\\+1"),
        (np.zeros((2, 1025), dtype=bool), ValueError, "nbits must be in"),
        (np.zeros((2, 2, 2), dtype=bool), ValueError, "1-D .* or 2-D"),
        (np.array([["a", "b"]]), TypeError, "dtype"),
    ],
)
def test_pack_rejects(bad, exc, match):
    with pytest.raises(exc, match=match):
        hashsearch.pack(bad)


def test_unpack_rejects_wrong_shape_and_dtype():
    with pytest.raises(ValueError, match="shape"):
        hashsearch.unpack(np.zeros((3, 2), dtype=np.uint64), 64)
    with pytest.raises(TypeError, match="uint64"):
        hashsearch.unpack(np.zeros((3, 1), dtype=np.int64), 64)
