"""The three searchable indexes over packed binary codes.

All results follow faiss' conventions: ``D`` int32 (nq, k) distances (or
float32 scores for the hierarchical index), ``I`` int64 (nq, k) ids, rows
sorted best first with ties broken by the smaller id, padded with -1 when
fewer than k items qualify (only possible with ``exclude``).
"""
from __future__ import annotations

import functools
import math
import os
import threading
import weakref
from typing import Optional, Tuple

import numpy as np

from . import _core
from ._codes import as_packed
from ._validate import (
    INT_MAX,
    ExcludeArg,
    check_int,
    check_k,
    check_threads,
    exclude_csr,
    float_matrix,
    packed_queries,
)
from .io import (
    KIND_CLUSTER,
    KIND_FLAT,
    KIND_HIER,
    KIND_MIH,
    KIND_NAMES,
    IndexFile,
    PathLike,
    index_from_bytes,
    index_to_bytes,
    read_index,
    write_index,
)


# A threading.Lock that another thread held when the process forked stays held in the child.
# The add locks guard only the swap of an immutable native index, which a fork never sees half
# done, so the child gets fresh ones. (Index and HierarchicalIndex lock natively, _core.)
_WITH_ADD_LOCK: "weakref.WeakSet" = weakref.WeakSet()


def _give_add_lock(index) -> None:
    index._add_lock = threading.Lock()
    _WITH_ADD_LOCK.add(index)


def _new_add_locks_in_child() -> None:
    for index in list(_WITH_ADD_LOCK):
        index._add_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_add_locks_in_child)


class _HammingBase:
    _kind = 0
    _native = None
    _num_threads = 0

    @property
    def num_threads(self) -> int:
        """Threads per call unless a call says otherwise: an int >= 0, 0 = all cores; the core
        uses at most 4x the core count (more only adds switching). Assigning it validates."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value) -> None:
        self._num_threads = check_threads(value)

    @property
    def ntotal(self) -> int:
        """Number of indexed codes."""
        return int(self._native.ntotal)

    @functools.cached_property
    def nbits(self) -> int:
        """Bits per code (fixed for the index's life, so read from the native index once: the
        read cost ~0.6 us, and every search asks)."""
        return int(self._native.nbits)

    def __len__(self) -> int:
        return self.ntotal

    def codes(self) -> np.ndarray:
        """A copy of the packed codes, uint64 (n, ceil(nbits/64))."""
        return self._native.codes()

    def memory_bytes(self) -> int:
        """Bytes held by the native index."""
        return int(self._native.memory_bytes())

    def _threads(self, num_threads: Optional[int]) -> int:
        return self._num_threads if num_threads is None else check_threads(num_threads)

    def topk(
        self, q, k: int, *, exclude: ExcludeArg = None, num_threads: Optional[int] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Exact Hamming top-k.

        Args:
            q: one code or a batch: packed uint64 (W,) / (nq, W), or unpacked
                (nbits,) / (nq, nbits) in any form :func:`hashsearch.pack` takes.
            k: results per query, 1 <= k <= ntotal.
            exclude: ids each query must not return: a sequence of nq int arrays (in
                query order), or a CSR tuple ``(indptr int (nq+1,), indices int)``; a
                dict, set or string is refused (TypeError).
            num_threads: overrides the index's setting for this call (0 = all cores).

        Returns:
            ``(D, I)``: D int32 (nq, k) Hamming distances ascending, I int64
            (nq, k) ids; ties go to the smaller id; -1/-1 padding.
        """
        return self._hamming_search(self._native.topk, q, k, exclude, num_threads)

    def _hamming_search(self, native_topk, q, k, exclude: ExcludeArg, num_threads: Optional[int]):
        queries = packed_queries(q, self.nbits)
        # k <= ntotal is checked natively, under the index's lock (reading ntotal from Python
        # costs ~0.4 us); only a k beyond a C int is checked here, and check_k rejects it.
        k = check_int(k, "k", 1, maximum=None)
        if k > INT_MAX:
            check_k(k, self.ntotal)
        indptr, indices = (None, None) if exclude is None else exclude_csr(exclude, queries.shape[0], self.ntotal)
        return native_topk(queries, k, indptr, indices, self._threads(num_threads))

    def save(self, path: PathLike) -> None:
        """Write the index atomically to ``path`` (see :mod:`hashsearch.io`)."""
        write_index(path, self._file())

    def _file(self) -> IndexFile:
        return IndexFile(kind=self._kind, nbits=self.nbits, codes=self.codes())

    @classmethod
    def load(cls, path: PathLike, *, num_threads: int = 0):
        """Read an index written by :meth:`save`; ValueError if the file is not one of this class."""
        data = read_index(path)
        if data.kind != cls._kind:
            raise ValueError(f"{path} holds an index of type {KIND_NAMES[data.kind]}, not {cls.__name__}")
        return cls._from_file(data, num_threads)

    def __reduce__(self):
        # pickle, copy.deepcopy and multiprocessing go through the file format (a copy of
        # the codes, checksummed); MIH tables are rebuilt, clusters kept. The index's
        # num_threads travels with it; counters (stats) start afresh.
        return (_unpickle_index, (serialize_index(self), self.num_threads, self._pickle_extra()))

    def _pickle_extra(self) -> dict:
        """Python-side settings that the file format does not hold."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ntotal={self.ntotal}, nbits={self.nbits})"


class _RangeSearch:
    """``range_search`` for the indexes whose native core has it (Index, MIHIndex, ClusterIndex)."""

    def range_search(
        self, q, radius: int, *, exclude: ExcludeArg = None, num_threads: Optional[int] = None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every indexed code within Hamming distance ``radius`` of each query (faiss'
        ``range_search``; e.g. the hashing literature's "hash lookup within radius 2").

        Args:
            q: one code or a batch, as for :meth:`topk`.
            radius: largest distance returned, >= 0 (distances <= radius qualify).
            exclude: ids each query must not return, as for :meth:`topk`.
            num_threads: overrides the index's setting for this call (0 = all cores).

        Returns:
            ``(lims, D, I)``: lims int64 (nq+1,); query i's results are
            ``D[lims[i]:lims[i+1]]`` (int32 distances) and ``I[lims[i]:lims[i+1]]``
            (int64 ids), sorted by distance, ties by the smaller id.
        """
        queries = packed_queries(q, self.nbits)
        radius = min(check_int(radius, "radius", 0, maximum=None), self.nbits)  # beyond nbits: every item
        n = self.ntotal
        if n == 0:
            raise ValueError("the index is empty: it holds 0 codes")
        indptr, indices = exclude_csr(exclude, queries.shape[0], n)
        return self._native.range_search(queries, radius, indptr, indices, self._threads(num_threads))


class Index(_RangeSearch, _HammingBase):
    """Exact Hamming search by a SIMD linear scan with a counting top-k.

    Args:
        codes: packed uint64 (n, ceil(nbits/64)), or unpacked (n, nbits) bool /
            0-1 / ±1 ints / floats (sign). The codes are copied.
        nbits: bits per code; needed only for packed codes whose nbits is not
            a multiple of 64.
        num_threads: threads per search, 0 = all cores (see :attr:`num_threads`).

    Example:
        >>> D, I = hashsearch.Index(codes).topk(q, 100)
    """

    _kind = KIND_FLAT

    def __init__(self, codes, nbits: Optional[int] = None, *, num_threads: int = 0) -> None:
        packed, nbits = as_packed(codes, nbits)
        self.num_threads = num_threads
        self._native = _core.FlatIndex(packed, nbits)

    def add(self, codes) -> None:
        """Append codes; they get the ids ``ntotal, ntotal + 1, ...`` in order (faiss' ``add``).

        Args:
            codes: one code or a batch, packed uint64 (W,) / (n, W) or unpacked
                (nbits,) / (n, nbits) in any form :func:`hashsearch.pack` takes.
                Copied; a bad code leaves the index unchanged.

        Searches running in other threads finish before the codes are appended.
        """
        self._native.add(packed_queries(codes, self.nbits, "codes"))

    @classmethod
    def _from_file(cls, data: IndexFile, num_threads: int) -> "Index":
        return cls(data.codes, data.nbits, num_threads=num_threads)


def mih_table_bytes(nbits: int, n: int, m: int) -> int:
    """Bytes :class:`MIHIndex` holds beside its one copy of the codes, for ``n``
    codes of ``nbits`` bits split into ``m`` substrings, before its sub-directories:
    an id per item (3 bytes below 2^24 items; up to 2^16 items also a 2-byte
    position per id), a uint32 bucket offset per directory entry of each table,
    and in every table after the first a copy of the codes (codes of <= 64 bits
    without that table's key bits, in whole bytes).

    The sub-directories (:meth:`MIHIndex.sub_dir_bytes`, which depend on how
    crowded the buckets are) then take what is left of twice the packed codes,
    or an eighth of the codes when this already exceeds twice them."""
    words = (nbits + 63) // 64
    id_bytes = max(1, ((max(n - 1, 1)).bit_length() + 7) // 8)
    total = n * id_bytes + 8  # + the load padding
    if n <= 1 << 16 and nbits < 255:
        total += 2 * n  # each id's position (uint16), for the small-index scan
    for j in range(m):
        sub_bits = (j + 1) * nbits // m - j * nbits // m
        key_bits = _core.mih_key_bits(sub_bits, n, nbits)
        total += 4 * ((1 << key_bits) + 1)
        if j > 0:
            total += n * ((nbits - key_bits + 7) // 8) + 8 if words == 1 else n * 8 * words
    return total


def default_mih_m(nbits: int, n: int) -> int:
    """Number of MIH substrings: about nbits / log2(n) (Norouzi et al.), but no
    more than keep :func:`mih_table_bytes` within twice the packed codes."""
    sub_bits = max(1, min(24, int(math.floor(math.log2(max(n, 2))))))
    m = max(1, min(nbits, math.ceil(nbits / sub_bits)))
    code_bytes = n * 8 * ((nbits + 63) // 64)
    while m > 1 and mih_table_bytes(nbits, n, m) > 2 * code_bytes:
        m -= 1
    return m


def _mih_m(m: Optional[int], nbits: int, n: int) -> int:
    """The number of MIH substrings: ``m`` checked against nbits, or the default for n codes."""
    m = default_mih_m(nbits, n) if m is None else check_int(m, "m", 1)
    if m > nbits:
        raise ValueError(f"m must be <= nbits={nbits}, got {m}")
    return m


class MIHIndex(_RangeSearch, _HammingBase):
    """Exact Hamming search by multi-index hashing (Norouzi, Punjani & Fleet).

    The code is split into ``m`` substrings with one table each, keyed on a
    substring's first :attr:`key_bits` bits. A query reads rings of buckets at
    growing key radius, always widening the table whose next ring is cheapest,
    until the k-th distance is proven (by pigeonhole, once table j has been read
    to radius r_j, every item within sum_j (r_j + 1) - 1 has been seen), so
    results equal :class:`Index` exactly (ties, padding and ``exclude``
    included). Queries whose search would cost more than a linear scan fall
    back to the scan, which is also exact.

    Every table keeps its codes in bucket order, so a bucket is read
    sequentially: the codes are held once, sorted for table 0, and each other
    table holds a copy without its key bits (48 bytes of 64 for 64-bit codes);
    see :func:`mih_table_bytes`. The default ``m`` keeps that within twice
    the codes; a larger ``m`` is faster on clustered codes and costs a copy
    per table (4.2M learned-like 64-bit codes, 2 threads: m=3 ~4x the linear
    scan with tables 2.00x the codes, m=4 ~7x with 2.66x).

    Inside a bucket the items are ordered by the next :attr:`sub_bits` bits
    of the substring, and the most crowded buckets (learned codes crowd a
    few) keep where each of their 2^sub_bits sub-buckets ends, within the
    memory left under twice the codes. A ring then reads only a crowded
    bucket's sub-buckets at key distance + sub distance = its radius: on
    4.2M learned-like 64-bit codes 3.6x fewer codes read per query, ~1.2x faster
    (a query's time is mostly its cache misses, one per run read).

    Args:
        codes, nbits, num_threads: as for :class:`Index`.
        m: number of substrings; default :func:`default_mih_m`.
    """

    _kind = KIND_MIH

    def __init__(
        self, codes, nbits: Optional[int] = None, *, m: Optional[int] = None, num_threads: int = 0
    ) -> None:
        packed, nbits = as_packed(codes, nbits)
        if packed.shape[0] == 0:
            raise ValueError("MIHIndex needs at least one code, got 0")
        self._m_arg = m  # None: re-chosen for the new size on add
        m = _mih_m(m, nbits, packed.shape[0])
        self.num_threads = num_threads
        _give_add_lock(self)
        self._native = _core.MIHIndex(packed, nbits, m)

    def add(self, codes) -> None:
        """Append codes; they get the ids ``ntotal, ntotal + 1, ...`` in order (faiss' ``add``).

        The tables are rebuilt from all codes, O(ntotal) per call, so add in
        large batches. ``m`` stays as given; a default ``m`` is chosen afresh
        for the new size. While the new tables are built, searches in other
        threads go on over the old ones (and never see a partial index); the
        new index replaces them in one step. Counters (:meth:`stats`) restart.

        Args:
            codes: one code or a batch, packed uint64 (W,) / (n, W) or unpacked
                (nbits,) / (n, nbits) in any form :func:`hashsearch.pack` takes.
                Copied; a bad code leaves the index unchanged.
        """
        packed = packed_queries(codes, self.nbits, "codes")
        with self._add_lock:  # two adds at once must not both start from the same codes
            old = self._native
            merged = np.concatenate([old.codes(), packed])
            m = _mih_m(self._m_arg, self.nbits, merged.shape[0])
            self._native = _core.MIHIndex(merged, self.nbits, m)  # validates before the swap

    @property
    def m(self) -> int:
        """Number of substrings (hash tables)."""
        return int(self._native.m)

    @property
    def substring_bits(self) -> list:
        """Length in bits of each substring."""
        return list(self._native.substring_bits)

    @property
    def key_bits(self) -> list:
        """Bits of each substring that key its table's buckets."""
        return list(self._native.key_bits)

    @property
    def sub_bits(self) -> list:
        """Bits of each substring, after its key, that order the items inside a bucket."""
        return list(self._native.sub_bits)

    @property
    def sub_min_items(self) -> list:
        """Per table, the least bucket size given a sub-directory (0: none)."""
        return list(self._native.sub_min_items)

    def sub_dir_bytes(self) -> int:
        """Bytes of the sub-directories (included in :meth:`table_bytes`)."""
        return int(self._native.sub_dir_bytes())

    @property
    def fallback_count(self) -> int:
        """Queries answered by the linear-scan fallback so far."""
        return int(self._native.fallback_count)

    def stats(self) -> dict:
        """Counters since construction (a guide for choosing ``m``).

        ``fallbacks``: queries the cost model sent from the tables to the scan;
        ``joined``: queries of batches of >= 64 (codes of 33..64 bits) answered by a joined
        search (the batch's queries through the tables together, ring by ring, each
        ring's buckets read once for all the queries that probe them);
        ``scanned``: queries of large batches (>= 128; >= 256 for codes of 33..64 bits)
        answered by the scan because
        timing a batch's first queries showed the scan faster (or to time it; the
        verdict is reused by later large batches and re-timed every 8th, or every
        64th when one way took at most half the other's time), and
        queries of smaller calls answered by the scan straight away because most
        recent queries fell back (uniform codes; one query in every 8th such call
        still tries the tables, and the tables take over again once they answer);
        ``probes``: buckets probed; ``candidates``: codes compared in the tables.
        """
        return {"fallbacks": int(self._native.fallback_count), "scanned": int(self._native.scanned_count),
                "joined": int(self._native.joined_count), "probes": int(self._native.probe_count),
                "candidates": int(self._native.candidate_count)}

    def table_bytes(self) -> int:
        """Bytes held by the hash tables alone."""
        return int(self._native.table_bytes())

    def _file(self) -> IndexFile:
        return IndexFile(kind=self._kind, nbits=self.nbits, codes=self.codes(), m=self.m)

    def _pickle_extra(self) -> dict:
        return {"_m_arg": self._m_arg}  # None: add() still re-chooses m for the new size

    @classmethod
    def _from_file(cls, data: IndexFile, num_threads: int) -> "MIHIndex":
        return cls(data.codes, data.nbits, m=data.m, num_threads=num_threads)


# More clusters read fewer codes but more clusters, each a few cache misses: measured on
# 64-bit learned-like codes, 2 threads, 2,048 clusters beat 4,096 by 15-20% at
# 4.2M items (82k codes / 429 clusters read a query against 62k / 574) and matched it at 1M.
MAX_DEFAULT_NCLUSTERS = 2048


def default_nclusters(n: int) -> int:
    """Clusters of :class:`ClusterIndex` for n codes: the power of two nearest 2 * sqrt(n),
    at most :data:`MAX_DEFAULT_NCLUSTERS` (2,048 from 1M items) and at most n."""
    if n <= 1:
        return 1
    return int(min(n, MAX_DEFAULT_NCLUSTERS, 2 ** round(math.log2(2 * math.sqrt(n)))))


class ClusterIndex(_RangeSearch, _HammingBase):
    """Exact Hamming search by cluster pruning: sub-linear on clustered (learned) codes,
    within half the codes' memory beside them.

    The codes are grouped around ``nclusters`` centroids (Hamming k-medians: three
    rounds of nearest centroid and majority bit, from a fixed-seed pick, so builds
    repeat) and held once, sorted by cluster and by distance r to their centroid.
    By the triangle inequality ``d(q, x) >= |d(q, c) - r(x)|``: with tau the current
    k-th distance only a cluster's items with r in ``[d(q, c) - tau, d(q, c) + tau]``
    can enter, one contiguous run. Clusters are read nearest centroid first, and a
    cluster whose radii miss the window is skipped unread. Every item within the
    final k-th distance is read, so results equal :class:`Index` exactly (ties by
    id, ``exclude`` and padding included). A query whose windows, once k items are held,
    hold over a quarter of the codes (uniform codes) is answered by a scan instead.
    Batches spread their queries over ``num_threads`` (a batch of at least 256 queries in
    the order of the queries' nearest centroids, numbered along a nearest-neighbour chain,
    so that neighbouring queries find their clusters cached); a call of fewer queries than
    threads shares each query's clusters among them.

    Memory beside the codes: a uint32 id per item, the centroids, and an offset per
    (cluster, radius) (uint16, or uint32 once a cluster holds over 65,535 codes): 0.51x the
    codes at 64 bits and 4.2M items.

    Small indexes (up to 65,536 codes) answer every query by :class:`Index`'s scan over a
    second copy of their codes, in id order (at most 512 KiB a code word): there the
    clusters cost more than the few codes they skip (over learned-like 64-bit codes, a
    batch through the clusters takes 5.6x the scan's time at 3,706 codes and 1.8x at 40,981).

    Args:
        codes, nbits, num_threads: as for :class:`Index` (``num_threads`` also builds).
        nclusters: number of clusters, 1..n; default :func:`default_nclusters`.
    """

    _kind = KIND_CLUSTER

    def __init__(
        self, codes, nbits: Optional[int] = None, *, nclusters: Optional[int] = None, num_threads: int = 0
    ) -> None:
        packed, nbits = as_packed(codes, nbits)
        n = packed.shape[0]
        if n == 0:
            raise ValueError("ClusterIndex needs at least one code, got 0")
        nclusters = default_nclusters(n) if nclusters is None else check_int(nclusters, "nclusters", 1)
        if nclusters > n:
            raise ValueError(f"nclusters must be <= the number of codes ({n}), got {nclusters}")
        self.num_threads = num_threads
        _give_add_lock(self)
        self._native = _core.ClusterIndex(packed, nbits, nclusters, self.num_threads)

    @classmethod
    def _from_native(cls, native, num_threads: int) -> "ClusterIndex":
        index = cls.__new__(cls)
        index.num_threads = num_threads
        _give_add_lock(index)
        index._native = native
        return index

    def add(self, codes) -> None:
        """Append codes; they get the ids ``ntotal, ntotal + 1, ...`` in order (faiss' ``add``).

        New codes join their nearest centroid (ties: the smaller one); the centroids are
        not retrained, like faiss' IVF after ``train`` (pruning stays exact whatever the
        clusters; rebuild from :meth:`codes` if the data drift far from them). The sorted
        layout is rebuilt, O(ntotal) per call, so add in large batches. While it is built,
        searches in other threads go on over the old index (never a partial one), which
        the new one replaces in one step. Counters (:meth:`stats`) restart.

        Args:
            codes: one code or a batch, packed uint64 (W,) / (n, W) or unpacked
                (nbits,) / (n, nbits) in any form :func:`hashsearch.pack` takes.
                Copied; a bad code leaves the index unchanged.
        """
        packed = packed_queries(codes, self.nbits, "codes")
        with self._add_lock:  # two adds at once must not both start from the same codes
            self._native = self._native.grown(packed, self.num_threads)  # validates before the swap

    @property
    def nclusters(self) -> int:
        """Number of clusters."""
        return int(self._native.nclusters)

    def stats(self) -> dict:
        """Counters since construction: ``items_read`` (codes compared in windows),
        ``clusters_read``, ``scanned``: queries answered by a scan, because their windows
        once k items were held covered over a quarter of the codes (uniform codes), because
        the index is small (every query), or because they were ``skipped``: sent to the scan
        untried while recent queries kept falling back (then one query in 32 small calls, or
        1/32 of a large call's, still tries)."""
        return {"items_read": int(self._native.items_read), "clusters_read": int(self._native.clusters_read),
                "scanned": int(self._native.scanned), "skipped": int(self._native.skipped)}

    def extra_bytes(self) -> int:
        """Bytes held beside the sorted copy of the codes (ids, centroids, offsets; in a small
        index also the codes in id order)."""
        return int(self._native.extra_bytes())

    def _file(self) -> IndexFile:
        return IndexFile(kind=self._kind, nbits=self.nbits, codes=self.codes(), m=self.nclusters,
                         centroids=self._native.centroids(), labels=self._native.labels())

    @classmethod
    def _from_file(cls, data: IndexFile, num_threads: int) -> "ClusterIndex":
        if data.centroids is None:  # a file holding the codes alone: rebuild the clusters
            return cls(data.codes, data.nbits, nclusters=data.m, num_threads=num_threads)
        try:
            native = _core.ClusterIndex.from_clusters(data.codes, data.nbits, data.centroids, data.labels)
        except ValueError as e:  # the checksum held, yet the clusters do not fit the codes
            raise ValueError(f"index file holds inconsistent clusters (corrupt file): {e}") from None
        return cls._from_native(native, num_threads)


class HierarchicalIndex(_HammingBase):
    """Hierarchical search (HieS): Hamming candidates re-ranked by inner product.

    Args:
        codes, nbits, num_threads: as for :class:`Index`.
        embeddings: float (n, dim) continuous item embeddings (stored as float32).
        candidate_search: how the Hamming candidates are found: ``"scan"`` (the linear scan
            of :class:`Index`), ``"mih"`` (an internal :class:`MIHIndex`) or ``"cluster"``
            (an internal :class:`ClusterIndex`): the same candidates, faster on millions of
            learned codes, at the cost of a second copy of the codes and MIH's tables (2x
            the codes) or the clusters' ids and offsets (about 0.5x).
        m: MIH substrings for ``candidate_search="mih"``; default :func:`default_mih_m`.
        nclusters: clusters for ``candidate_search="cluster"``; default :func:`default_nclusters`.
    """

    _kind = KIND_HIER

    def __init__(
        self,
        codes,
        embeddings,
        nbits: Optional[int] = None,
        *,
        candidate_search: str = "scan",
        m: Optional[int] = None,
        nclusters: Optional[int] = None,
        num_threads: int = 0,
    ) -> None:
        packed, nbits = as_packed(codes, nbits)
        emb = float_matrix(embeddings, "embeddings")
        if emb.shape[0] != packed.shape[0]:
            raise ValueError(
                f"embeddings have {emb.shape[0]} rows but there are {packed.shape[0]} codes"
            )
        if candidate_search not in ("scan", "mih", "cluster"):
            raise ValueError(f"candidate_search must be 'scan', 'mih' or 'cluster', got {candidate_search!r}")
        if m is not None and candidate_search != "mih":
            raise ValueError("m applies to candidate_search='mih' only")
        if nclusters is not None and candidate_search != "cluster":
            raise ValueError("nclusters applies to candidate_search='cluster' only")
        n = packed.shape[0]
        if candidate_search != "scan" and n == 0:
            raise ValueError(f"candidate_search={candidate_search!r} needs at least one code, got 0")
        m = _mih_m(m, nbits, n) if candidate_search == "mih" else 0
        if candidate_search == "cluster":
            nclusters = default_nclusters(n) if nclusters is None else check_int(nclusters, "nclusters", 1)
            if nclusters > n:
                raise ValueError(f"nclusters must be <= the number of codes ({n}), got {nclusters}")
        self.num_threads = num_threads
        self._native = _core.HierarchicalIndex(packed, nbits, emb, m)
        if candidate_search == "cluster":
            self._native.use_clusters(nclusters, self.num_threads)

    @property
    def nclusters(self) -> int:
        """Clusters of the candidate search (0 unless ``candidate_search='cluster'``)."""
        return int(self._native.nclusters)

    @property
    def candidate_search(self) -> str:
        """``"scan"``, ``"mih"`` or ``"cluster"``: how the Hamming candidates are found."""
        if self._native.m > 0:
            return "mih"
        return "cluster" if self._native.nclusters > 0 else "scan"

    @property
    def m(self) -> int:
        """MIH substrings of the candidate search (0 for the linear scan)."""
        return int(self._native.m)

    @functools.cached_property
    def dim(self) -> int:
        """Embedding dimension (fixed for the index's life: read from the native index once)."""
        return int(self._native.dim)

    def embeddings(self) -> np.ndarray:
        """A copy of the item embeddings, float32 (n, dim)."""
        return self._native.embeddings()

    def add(self, codes, embeddings) -> None:
        """Append items: their codes and float (n, dim) embeddings (or one code and a (dim,)
        vector); they get the ids ``ntotal, ntotal + 1, ...``. With ``candidate_search='mih'``
        the MIH tables are rebuilt, O(ntotal); with ``'cluster'`` the new codes join their
        nearest centroid (see :meth:`ClusterIndex.add`) and the layout is rebuilt, O(ntotal).
        A bad code or embedding leaves the index unchanged; searches in other threads finish first."""
        packed = packed_queries(codes, self.nbits, "codes")
        emb = float_matrix(embeddings, "embeddings", rows=packed.shape[0], cols=self.dim)
        self._native.add(packed, emb)

    def hamming_topk(self, q, k: int, *, exclude: ExcludeArg = None, num_threads: Optional[int] = None):
        """Plain Hamming ranking (HamR) over this index's codes, by its candidate search (the
        scan, MIH or clusters): arguments and output as :meth:`Index.topk`."""
        return self._hamming_search(self._native.hamming_topk, q, k, exclude, num_threads)

    def topk(  # type: ignore[override]
        self,
        q_codes,
        q_emb,
        k: int,
        *,
        candidates: Optional[int] = None,
        exclude: ExcludeArg = None,
        num_threads: Optional[int] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Hamming top-``candidates``, then the top-k of those by inner product.

        Args:
            q_codes: query codes as for :meth:`Index.topk`, nq of them.
            q_emb: float (nq, dim) query embeddings (or (dim,) for one query).
            k: results per query, 1 <= k <= candidates.
            candidates: Hamming candidates per query, k <= candidates <= ntotal;
                default max(k, min(500, ntotal)).
            exclude: as for :meth:`Index.topk`; applied before the Hamming stage.

        Returns:
            ``(S, I)``: S float32 (nq, k) inner products descending, I int64
            (nq, k); ties go to the smaller id; padding is (-inf, -1).
        """
        queries = packed_queries(q_codes, self.nbits)
        nq = queries.shape[0]
        qe = float_matrix(q_emb, "query embeddings", rows=nq, cols=self.dim, check_finite=False)
        n = self.ntotal  # read once: each read costs ~0.4 us from Python
        k = check_k(k, n)
        if candidates is None:
            candidates = max(k, min(500, n))
        candidates = check_k(candidates, n, "candidates")
        if candidates < k:
            raise ValueError(f"candidates={candidates} must be >= k={k}")
        indptr, indices = exclude_csr(exclude, nq, n)
        return self._native.topk(queries, qe, k, candidates, indptr, indices, self._threads(num_threads))

    def _file(self) -> IndexFile:
        if self.nclusters > 0:  # m holds the clusters, and the file the clusters themselves
            return IndexFile(kind=self._kind, nbits=self.nbits, codes=self.codes(), m=self.nclusters,
                             embeddings=self.embeddings(), centroids=self._native.centroids(),
                             labels=self._native.labels())
        return IndexFile(kind=self._kind, nbits=self.nbits, codes=self.codes(), m=self.m,
                         embeddings=self.embeddings())

    @classmethod
    def _from_file(cls, data: IndexFile, num_threads: int) -> "HierarchicalIndex":
        if data.centroids is not None:
            index = cls(data.codes, data.embeddings, data.nbits, num_threads=num_threads)
            try:
                index._native.use_saved_clusters(data.centroids, data.labels)
            except ValueError as e:  # the checksum held, yet the clusters do not fit the codes
                raise ValueError(f"index file holds inconsistent clusters (corrupt file): {e}") from None
            return index
        if data.m > 0:
            return cls(data.codes, data.embeddings, data.nbits, candidate_search="mih", m=data.m,
                       num_threads=num_threads)
        return cls(data.codes, data.embeddings, data.nbits, num_threads=num_threads)


def _class_of(data: IndexFile):
    return {KIND_FLAT: Index, KIND_MIH: MIHIndex, KIND_HIER: HierarchicalIndex, KIND_CLUSTER: ClusterIndex}[data.kind]


def load(path: PathLike, *, num_threads: int = 0):
    """Load any index written by ``save``, returning the matching class."""
    data = read_index(path)
    return _class_of(data)._from_file(data, num_threads)


def serialize_index(index) -> bytes:
    """The bytes ``index.save`` would write (versioned header, payload, CRC32), for sending an
    index without a file (faiss' ``serialize_index``). Pickling an index uses them too."""
    if not isinstance(index, _HammingBase):
        raise TypeError(f"expected a hashsearch index, got {type(index).__name__}")
    return index_to_bytes(index._file())


def deserialize_index(data, *, num_threads: int = 0):
    """The index held by ``data`` (bytes-like, from :func:`serialize_index`), as its class;
    ValueError if the bytes are foreign, truncated or corrupt."""
    parsed = index_from_bytes(data)
    return _class_of(parsed)._from_file(parsed, num_threads)


def _unpickle_index(data: bytes, num_threads: int, extra: dict):
    index = deserialize_index(data, num_threads=num_threads)
    index.__dict__.update(extra)
    return index
