"""Packing binary codes into uint64 words, and coercing user input to packed form.

Bit order (documented contract, shared by every part of the package):
bit ``j`` of a code lives in word ``j // 64`` at bit position ``j % 64``
(least significant bit first). Unused high bits of the last word are zero.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

MAX_BITS = 1024


def words_for(nbits: int) -> int:
    """Number of uint64 words that hold ``nbits`` bits."""
    return (nbits + 63) // 64


def native_uint64(arr: np.ndarray) -> np.ndarray:
    """``arr`` as native-endian uint64 if it holds uint64 words of the other byte order (``>u8``
    here): packed codes of either order are the same numbers. Anything else as given."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.dtype != np.uint64:
        return arr.astype(np.uint64)
    return arr


def _check_nbits(nbits: int) -> int:
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, (int, np.integer)):
        raise TypeError(f"nbits must be an int, got {type(nbits).__name__}")
    nbits = int(nbits)
    if not 1 <= nbits <= MAX_BITS:
        raise ValueError(f"nbits must be in [1, {MAX_BITS}], got {nbits}")
    return nbits


def _to_bits(codes: np.ndarray) -> np.ndarray:
    """Map an unpacked code array to a bool array (True = bit set = +1)."""
    if codes.dtype == np.bool_:
        return codes
    if np.issubdtype(codes.dtype, np.floating):
        if np.isnan(codes).any():
            raise ValueError("codes contain NaN; expected finite floats (bit = sign, 0 counts as +1)")
        return codes >= 0
    if np.issubdtype(codes.dtype, np.integer):
        if codes.size == 0:
            return codes.astype(np.bool_)
        lo, hi = int(codes.min()), int(codes.max())
        if lo >= 0 and hi <= 1:
            return codes == 1
        values = np.unique(codes)
        if np.isin(values, (-1, 1)).all():
            return codes == 1
        raise ValueError(
            "integer codes must be 0/1 or -1/+1, got values in "
            f"[{lo}, {hi}] (e.g. {values[:5].tolist()})"
        )
    raise TypeError(
        f"codes must be bool, integer (0/1 or ±1) or floating (sign), got dtype {codes.dtype}"
    )


def pack(codes: np.ndarray) -> np.ndarray:
    """Pack binary codes into uint64 words.

    Args:
        codes: (n, nbits) or (nbits,) array; bool, integers 0/1 or -1/+1, or
            floats (bit = sign, so 0.0 counts as +1 as in the paper's sign).
            1 <= nbits <= 1024, any value (not only multiples of 64).

    Returns:
        uint64 array of shape (n, ceil(nbits/64)) (or (ceil(nbits/64),) for a
        1-D input). Bit ``j`` is bit ``j % 64`` of word ``j // 64``.
    """
    arr = np.asarray(codes)
    if arr.ndim not in (1, 2):
        raise ValueError(f"codes must be 1-D (nbits,) or 2-D (n, nbits), got shape {arr.shape}")
    one = arr.ndim == 1
    arr2 = arr[None, :] if one else arr
    nbits = _check_nbits(arr2.shape[1])
    bits = _to_bits(arr2)
    nwords = words_for(nbits)
    padded = np.zeros((arr2.shape[0], nwords * 64), dtype=np.bool_)
    padded[:, :nbits] = bits
    as_bytes = np.packbits(padded, axis=1, bitorder="little")
    # Bytes are in little-endian word order; view as little-endian uint64.
    words = np.ascontiguousarray(as_bytes).view("<u8").astype(np.uint64, copy=False)
    return words[0] if one else words


def unpack(words: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack`.

    Args:
        words: uint64 (n, ceil(nbits/64)) or (ceil(nbits/64),), either byte order.
        nbits: number of bits per code.

    Returns:
        uint8 0/1 array of shape (n, nbits) (or (nbits,) for 1-D input).
    """
    nbits = _check_nbits(nbits)
    arr = native_uint64(np.asarray(words))
    if arr.dtype != np.uint64:
        raise TypeError(f"words must be uint64, got dtype {arr.dtype}")
    one = arr.ndim == 1
    arr2 = arr[None, :] if one else arr
    if arr2.ndim != 2 or arr2.shape[1] != words_for(nbits):
        raise ValueError(
            f"words must have shape (n, {words_for(nbits)}) for nbits={nbits}, got {arr.shape}"
        )
    as_bytes = np.ascontiguousarray(arr2).astype("<u8", copy=False).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :nbits]
    return bits[0] if one else bits


def as_packed(
    codes: np.ndarray, nbits: Optional[int], what: str = "codes"
) -> Tuple[np.ndarray, int]:
    """Coerce ``codes`` to a C-contiguous uint64 (n, W) array and its nbits.

    uint64 input (either byte order) is taken as already packed (``nbits`` defaults
    to 64*W and the bits above ``nbits`` must be zero); any other dtype is taken as
    unpacked (n, nbits) and packed here.
    """
    arr = native_uint64(np.asarray(codes))
    if arr.dtype == np.uint64:
        if arr.ndim != 2:
            raise ValueError(f"packed {what} must be 2-D (n, words), got shape {arr.shape}")
        if arr.shape[1] == 0:
            raise ValueError(f"packed {what} have 0 words per code")
        width = arr.shape[1]
        if nbits is None:
            nbits = 64 * width
        nbits = _check_nbits(nbits)
        if words_for(nbits) != width:
            raise ValueError(
                f"packed {what} have {width} words per code but nbits={nbits} needs {words_for(nbits)}"
            )
        arr = np.ascontiguousarray(arr)
        tail = nbits % 64
        if tail and arr.shape[0] and (arr[:, -1] >> np.uint64(tail)).any():
            raise ValueError(f"packed {what} have bits set above nbits={nbits}")
        return arr, nbits
    if arr.ndim != 2:
        raise ValueError(f"unpacked {what} must be 2-D (n, nbits), got shape {arr.shape}")
    if nbits is not None and int(nbits) != arr.shape[1]:
        raise ValueError(f"nbits={nbits} but unpacked {what} have {arr.shape[1]} columns")
    return pack(arr), _check_nbits(arr.shape[1])
