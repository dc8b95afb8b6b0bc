"""hashsearch: exact search over learned binary codes for recommendation.

    >>> import hashsearch
    >>> D, I = hashsearch.Index(codes).topk(q, 100)

No torch import anywhere in this package.
"""
from __future__ import annotations

from typing import List

from . import _core
from ._codes import pack, unpack
from .index import (
    ClusterIndex,
    HierarchicalIndex,
    Index,
    MIHIndex,
    default_mih_m,
    default_nclusters,
    deserialize_index,
    load,
    serialize_index,
)
from .reference import hamming_distances

__version__ = "0.1.0"

# Surface a bad HASHSEARCH_SIMD, HASHSEARCH_SPIN_US or HASHSEARCH_WIDE_POPCOUNT at import
# rather than at the first search (where the last two could not be reported).
_core.simd_level()
_core._check_environment()

_LEVELS = ("scalar", "avx2", "avx512")


def simd_level() -> str:
    """SIMD level used by searches now: 'scalar', 'avx2' or 'avx512'.

    The best level the CPU supports, unless ``HASHSEARCH_SIMD`` (read at
    import) or :func:`set_simd_level` forced a lower one.
    """
    return _core.simd_level()


def available_simd_levels() -> List[str]:
    """Levels this CPU can run, lowest first."""
    best = _LEVELS.index(_core.detect_simd_level())
    return list(_LEVELS[: best + 1])


def set_simd_level(level: str) -> None:
    """Force a SIMD level for subsequent searches (mainly for testing).

    Raises ValueError for an unknown level or one this CPU lacks.
    """
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
    _core.set_simd_level(level)


__all__ = [
    "ClusterIndex",
    "HierarchicalIndex",
    "Index",
    "MIHIndex",
    "available_simd_levels",
    "default_mih_m",
    "default_nclusters",
    "deserialize_index",
    "hamming_distances",
    "load",
    "pack",
    "serialize_index",
    "set_simd_level",
    "simd_level",
    "unpack",
]
