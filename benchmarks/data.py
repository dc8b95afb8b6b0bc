"""Seeded synthetic workloads for the benchmarks.

Two code distributions:

* ``uniform``: every bit an independent fair coin (the worst case for
  multi-index hashing and the usual micro-benchmark).
* ``learned``: what a learned hash looks like: items and users are 64-dim
  embeddings drawn from a Gaussian mixture (a few hundred clusters with
  Zipf-like sizes, like a catalogue's genres/tastes), then projected with one
  Gaussian matrix to ``nbits`` and binarised by sign (0 counts as +1, as in
  :func:`hashsearch.pack`). Users (queries) come from the same mixture, so a
  user's nearest items share most of its bits, as they do for trained codes.

Everything is a pure function of its arguments (seeds are derived from them),
and results are cached for the session, so every test of a session sees the
same arrays and the generation cost is paid once.
"""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

import hashsearch

EMB_DIM = 64
N_CLUSTERS = 512
CLUSTER_SPREAD = 0.6  # within-cluster std relative to the unit-variance centres
_CHUNK = 1 << 18      # rows per generation chunk (bounds the float temporaries)

DISTRIBUTIONS = ("uniform", "learned")


@dataclass(frozen=True)
class Workload:
    """A named benchmark size: ``n`` items, ``nq`` queries."""

    name: str
    n: int
    nq: int
    full_only: bool = False  # needs HASHSEARCH_BENCH_FULL=1

    def __str__(self) -> str:
        return self.name


# The headline sizes: MovieLens-1M (all 6,039 users), Gowalla, 1M, the paper's Alibaba.
ML1M = Workload("ml1m", 3_706, 6_039)
GOWALLA = Workload("gowalla", 40_981, 5_000)
M1 = Workload("1m", 1_000_000, 2_000)
ALIBABA = Workload("alibaba", 4_167_708, 1_000, full_only=True)
WORKLOADS: Dict[str, Workload] = {w.name: w for w in (ML1M, GOWALLA, M1, ALIBABA)}


def _seed(*parts) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


@functools.lru_cache(maxsize=None)
def _mixture(n_clusters: int = N_CLUSTERS, dim: int = EMB_DIM) -> Tuple[np.ndarray, np.ndarray]:
    """Cluster centres (n_clusters, dim) and Zipf-like cluster weights."""
    rng = np.random.default_rng(_seed("mixture", n_clusters, dim))
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    return centres, weights / weights.sum()


@functools.lru_cache(maxsize=None)
def _projection(nbits: int, dim: int = EMB_DIM) -> np.ndarray:
    rng = np.random.default_rng(_seed("projection", nbits, dim))
    return rng.standard_normal((dim, nbits)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def embeddings(n: int, role: str) -> np.ndarray:
    """float32 (n, EMB_DIM) mixture embeddings; ``role`` ('items'/'users') picks the seed."""
    centres, weights = _mixture()
    rng = np.random.default_rng(_seed("emb", role, n))
    out = np.empty((n, EMB_DIM), dtype=np.float32)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        labels = rng.choice(len(weights), size=hi - lo, p=weights)
        noise = rng.standard_normal((hi - lo, EMB_DIM), dtype=np.float32)
        out[lo:hi] = centres[labels] + CLUSTER_SPREAD * noise
    out.flags.writeable = False
    return out


def _sign_pack(emb: np.ndarray, nbits: int) -> np.ndarray:
    proj = _projection(nbits)
    words = np.empty((emb.shape[0], (nbits + 63) // 64), dtype=np.uint64)
    for lo in range(0, emb.shape[0], _CHUNK):
        hi = min(emb.shape[0], lo + _CHUNK)
        words[lo:hi] = hashsearch.pack(emb[lo:hi] @ proj >= 0)
    return words


def _uniform_words(n: int, nbits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    nwords = (nbits + 63) // 64
    words = rng.integers(0, 2**64 - 1, size=(n, nwords), dtype=np.uint64, endpoint=True)
    rem = nbits % 64
    if rem:  # keep the padding bits of the last word zero, as pack() does
        words[:, -1] &= np.uint64((1 << rem) - 1)
    return words


@functools.lru_cache(maxsize=24)
def codes(n: int, nbits: int, dist: str, role: str = "items") -> np.ndarray:
    """Packed uint64 (n, ceil(nbits/64)) codes of the given distribution (read-only, cached)."""
    if dist == "uniform":
        words = _uniform_words(n, nbits, _seed("uniform", role, n, nbits))
    elif dist == "learned":
        words = _sign_pack(embeddings(n, role), nbits)
    else:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    words.flags.writeable = False
    return words


def workload_arrays(w: Workload, nbits: int, dist: str) -> Tuple[np.ndarray, np.ndarray]:
    """(item codes, query codes) for a workload."""
    return codes(w.n, nbits, dist, "items"), codes(w.nq, nbits, dist, "users")


def clear_cache() -> None:
    for fn in (embeddings, codes, _mixture, _projection):
        fn.cache_clear()
