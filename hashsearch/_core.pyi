"""Type stubs for the compiled core (csrc/bindings.cpp)."""
from typing import List, Optional, Tuple

import numpy as np
import numpy.typing as npt

def simd_level() -> str: ...
def detect_simd_level() -> str: ...
def avx512_emulated() -> bool: ...
def set_simd_level(level: str) -> None: ...
def _set_wide_popcount(mode: str) -> None: ...
def _set_split_min_words(words: int) -> None: ...
def _split_min_words() -> int: ...

class FlatIndex:
    ntotal: int
    nbits: int
    nwords: int
    def __init__(self, codes: npt.NDArray[np.uint64], nbits: int) -> None: ...
    def add(self, codes: npt.NDArray[np.uint64]) -> None: ...
    def topk(
        self,
        queries: npt.NDArray[np.uint64],
        k: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def range_search(
        self,
        queries: npt.NDArray[np.uint64],
        radius: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def codes(self) -> npt.NDArray[np.uint64]: ...
    def memory_bytes(self) -> int: ...
    # test hooks: read locks that waited for a writer; hold the write lock as add() does
    _waited_reads: int
    _write_held: bool
    def _hold_write_lock(self, seconds: float) -> None: ...

class ClusterIndex:
    ntotal: int
    nbits: int
    nclusters: int
    items_read: int
    clusters_read: int
    scanned: int
    skipped: int
    def __init__(
        self, codes: npt.NDArray[np.uint64], nbits: int, nclusters: int, num_threads: int = 0
    ) -> None: ...
    @staticmethod
    def from_clusters(
        codes: npt.NDArray[np.uint64],
        nbits: int,
        centroids: npt.NDArray[np.uint64],
        labels: npt.NDArray[np.uint32],
    ) -> "ClusterIndex": ...
    def grown(self, codes: npt.NDArray[np.uint64], num_threads: int = 0) -> "ClusterIndex": ...
    def centroids(self) -> npt.NDArray[np.uint64]: ...
    def labels(self) -> npt.NDArray[np.uint32]: ...
    def range_search(
        self,
        queries: npt.NDArray[np.uint64],
        radius: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def topk(
        self,
        queries: npt.NDArray[np.uint64],
        k: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def codes(self) -> npt.NDArray[np.uint64]: ...
    def extra_bytes(self) -> int: ...
    @staticmethod
    def _set_small_scan(enabled: bool) -> None: ...
    @staticmethod
    def _small_scan() -> bool: ...
    def memory_bytes(self) -> int: ...

class MIHIndex:
    ntotal: int
    nbits: int
    m: int
    substring_bits: List[int]
    key_bits: List[int]
    sub_bits: List[int]
    sub_min_items: List[int]
    fallback_count: int
    scanned_count: int
    joined_count: int
    batch_verdict: int
    def _set_batch_verdict(self, verdict: int) -> None: ...
    probe_count: int
    candidate_count: int
    def __init__(self, codes: npt.NDArray[np.uint64], nbits: int, m: int) -> None: ...
    def topk(
        self,
        queries: npt.NDArray[np.uint64],
        k: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def range_search(
        self,
        queries: npt.NDArray[np.uint64],
        radius: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def codes(self) -> npt.NDArray[np.uint64]: ...
    def table_bytes(self) -> int: ...
    def sub_dir_bytes(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def _set_scan_fallback(self, enabled: bool) -> None: ...
    def _set_join(self, enabled: bool) -> None: ...
    def _set_join_step_pairs(self, pairs: int) -> None: ...

def mih_key_bits(sub_bits: int, n: int, nbits: int) -> int: ...

class HierarchicalIndex:
    ntotal: int
    nbits: int
    dim: int
    m: int
    nclusters: int
    def __init__(
        self, codes: npt.NDArray[np.uint64], nbits: int, embeddings: npt.NDArray[np.float32], m: int = 0
    ) -> None: ...
    def use_clusters(self, nclusters: int, num_threads: int = 0) -> None: ...
    def use_saved_clusters(self, centroids: npt.NDArray[np.uint64], labels: npt.NDArray[np.uint32]) -> None: ...
    def centroids(self) -> npt.NDArray[np.uint64]: ...
    def labels(self) -> npt.NDArray[np.uint32]: ...
    def add(self, codes: npt.NDArray[np.uint64], embeddings: npt.NDArray[np.float32]) -> None: ...
    def topk(
        self,
        queries: npt.NDArray[np.uint64],
        query_embeddings: npt.NDArray[np.float32],
        k: int,
        candidates: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def hamming_topk(
        self,
        queries: npt.NDArray[np.uint64],
        k: int,
        indptr: Optional[npt.NDArray[np.int64]] = None,
        indices: Optional[npt.NDArray[np.int64]] = None,
        num_threads: int = 0,
    ) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def codes(self) -> npt.NDArray[np.uint64]: ...
    def embeddings(self) -> npt.NDArray[np.float32]: ...
    def memory_bytes(self) -> int: ...
    # test hooks: read locks that waited for a writer; hold the write lock as add() does
    _waited_reads: int
    _write_held: bool
    def _hold_write_lock(self, seconds: float) -> None: ...
