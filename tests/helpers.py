"""Seeded inputs shared by the engine tests: packed codes and per-query exclusion lists."""
import numpy as np

import hashsearch


def random_codes(rng: np.random.Generator, n: int, nbits: int) -> np.ndarray:
    """Uniform codes, packed: uint64 (n, ceil(nbits / 64))."""
    return hashsearch.pack(rng.integers(0, 2, size=(n, nbits), dtype=np.uint8))


def clustered_codes(rng: np.random.Generator, n: int, nbits: int, clusters: int = 8,
                    flip: float = 0.05) -> np.ndarray:
    """Learned-like codes, packed: noisy copies (each bit flipped with probability `flip`) of
    a few centres, so small distances, many ties and crowded buckets."""
    centres = rng.integers(0, 2, size=(clusters, nbits), dtype=np.uint8)
    bits = centres[rng.integers(0, clusters, n)] ^ (rng.random((n, nbits)) < flip).astype(np.uint8)
    return hashsearch.pack(bits)


def random_exclude(rng: np.random.Generator, nq: int, n: int, max_len: int) -> list:
    """Per query 0..max_len distinct ids in [0, n), unsorted (int64 arrays)."""
    return [rng.choice(n, size=rng.integers(0, max_len + 1), replace=False) for _ in range(nq)]


_HEADER_FIELDS = ("magic", "version", "kind", "nbits", "nwords", "n", "m", "dim", "nbytes", "crc")


def with_header(raw: bytes, **changes) -> bytes:
    """``raw`` (an index file's bytes, format version 2) with header fields changed (names as in
    hashsearch.io's layout) and the header's own checksum made valid again, so that the checks
    behind it are reached."""
    import zlib

    from hashsearch.io import _FIELDS, _HEADER

    values = dict(zip(_HEADER_FIELDS, _FIELDS.unpack(raw[: _FIELDS.size])))
    values.update(changes)
    fields = _FIELDS.pack(*(values[name] for name in _HEADER_FIELDS))
    return fields + zlib.crc32(fields).to_bytes(4, "little") + raw[_HEADER.size:]
