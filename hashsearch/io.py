"""Index files: a versioned little-endian header, the payload, CRC32s of both.

Layout (format version 2)::

    magic    8s   b"HASHSRCH"
    version  u32  2
    kind     u32  1 = Index, 2 = MIHIndex, 3 = HierarchicalIndex, 4 = ClusterIndex
    nbits    u32
    nwords   u32
    n        u64  number of codes
    m        u32  MIH substrings of kind 2, or of kind 3's candidate search (0: scan);
                  clusters of kind 4, or of kind 3 when its payload holds clusters
    dim      u32  embedding columns (0 otherwise)
    nbytes   u64  payload length
    crc32    u32  zlib.crc32 of the payload
    hcrc32   u32  zlib.crc32 of the 52 header bytes above (magic to crc32)
    payload       codes uint64 (n, nwords) then, for kind 3, embeddings float32 (n, dim);
                  for kind 4 and kind 3 with cluster candidates, centroids uint64
                  (m, nwords) and each code's cluster uint32 (n,) (the payload length
                  tells whether they are there: they always take bytes, n >= 1)

Files are written to a temporary file in the target directory, fsynced and
renamed over the target (then the directory fsynced, so the rename lasts), so a
crash never leaves a half-written index.
MIH tables are rebuilt on load (deterministically) rather than stored; a
ClusterIndex keeps its clusters, whose k-medians build costs seconds per million
codes (a kind-4 file holding the codes alone is rebuilt).
"""
from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional, Union

import numpy as np

MAGIC = b"HASHSRCH"
FORMAT_VERSION = 2
KIND_FLAT, KIND_MIH, KIND_HIER, KIND_CLUSTER = 1, 2, 3, 4
KIND_NAMES = {KIND_FLAT: "Index", KIND_MIH: "MIHIndex", KIND_HIER: "HierarchicalIndex", KIND_CLUSTER: "ClusterIndex"}
_FIELDS = struct.Struct("<8sIIIIQIIQI")  # magic .. crc32: all of version 1's header
_HEADER = struct.Struct("<8sIIIIQIIQII")  # version 2: the fields, then their CRC32
_HEADERS = {1: _FIELDS, 2: _HEADER}
_PREFIX = struct.Struct("<8sI")  # magic, version: enough to pick the header

PathLike = Union[str, os.PathLike]


@dataclass
class IndexFile:
    kind: int
    nbits: int
    codes: np.ndarray  # uint64 (n, nwords)
    m: int = 0
    embeddings: Optional[np.ndarray] = None  # float32 (n, dim)
    centroids: Optional[np.ndarray] = None   # kind 4: uint64 (m, nwords)
    labels: Optional[np.ndarray] = None      # kind 4: uint32 (n,), each code's cluster


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable: without this, a crash right after
    ``os.replace`` can leave the old directory entry (POSIX). Where a directory cannot
    be opened or synced (Windows, some file systems), it does nothing."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _save_target(path: Path) -> Path:
    """The file that saving to ``path`` replaces: a symlink's target (so the link stays a
    link); ValueError if something other than a regular file is there."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        shown = f"{path} (-> {target})" if target != Path(path) else str(path)
        raise ValueError(f"cannot save to {shown}: it is {_file_type(mode)}; expected a regular file or a new path")
    return target


def _new_file_mode(target: Path) -> int:
    """The mode the file at ``target`` should get: an existing file's, else 0o666 less the
    umask, as ``open`` would give a new file (mkstemp's own is 0o600)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read from /proc where it can be: setting and restoring it (the
    only portable way to read it) would briefly change it for every thread."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace ``path`` only when the ``with`` block ends
    without an error, so that a crash leaves either the old file or the new one: a temporary
    file in the target's directory, fsynced, renamed over the target, then the directory
    fsynced. The temporary file is removed on any error. Writers stream into it (nothing is
    held in memory). Symlinks, modes and paths that are not regular files: see the module's
    docstring."""
    target = _save_target(Path(path))
    mode = _new_file_mode(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: PathLike, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as f:
        for chunk in chunks:
            f.write(chunk)


def _encode(data: IndexFile) -> tuple:
    """(header, payload) bytes of ``data`` in the layout above."""
    codes = np.ascontiguousarray(data.codes, dtype="<u8")
    parts = [codes.tobytes()]
    dim = 0
    if data.embeddings is not None:
        emb = np.ascontiguousarray(data.embeddings, dtype="<f4")
        dim = emb.shape[1]
        parts.append(emb.tobytes())
    if data.centroids is not None:
        centroids = np.ascontiguousarray(data.centroids, dtype="<u8")
        labels = np.ascontiguousarray(data.labels, dtype="<u4")
        if centroids.shape != (data.m, codes.shape[1]) or labels.shape != (codes.shape[0],):
            raise ValueError(f"centroids must be ({data.m}, {codes.shape[1]}) and labels ({codes.shape[0]},), "
                             f"got {centroids.shape} and {labels.shape}")
        parts += [centroids.tobytes(), labels.tobytes()]
    payload = b"".join(parts)
    fields = _FIELDS.pack(
        MAGIC, FORMAT_VERSION, data.kind, data.nbits, codes.shape[1], codes.shape[0],
        data.m, dim, len(payload), zlib.crc32(payload),
    )
    return fields + struct.pack("<I", zlib.crc32(fields)), payload


@dataclass
class _Header:
    kind: int
    nbits: int
    nwords: int
    n: int
    m: int
    dim: int
    nbytes: int
    crc: int
    has_clusters: bool
    size: int  # header bytes (by version)


def _header_size(raw: bytes, source: str) -> int:
    """The length of the header that starts ``raw`` (at least its first 12 bytes), by its version."""
    if len(raw) < _PREFIX.size or raw[:8] != MAGIC:
        raise ValueError(f"{source} is not a hashsearch index file (bad magic or too short)")
    version = _PREFIX.unpack(raw[: _PREFIX.size])[1]
    if version not in _HEADERS:
        raise ValueError(f"{source} has format version {version}; this hashsearch reads versions 1 and {FORMAT_VERSION}")
    return _HEADERS[version].size


def _parse_header(raw: bytes, source: str) -> _Header:
    """Check the header that starts ``raw``; ValueError naming ``source`` if it is foreign,
    damaged or inconsistent. The payload is sized from it, so a corrupt one is caught before
    anything is allocated."""
    size = _header_size(raw, source)
    if len(raw) < size:
        raise ValueError(f"{source} is not a hashsearch index file (bad magic or too short)")
    fields = _FIELDS.unpack(raw[: _FIELDS.size])
    if size == _HEADER.size and zlib.crc32(raw[: _FIELDS.size]) != _HEADER.unpack(raw[:size])[-1]:
        raise ValueError(f"{source} is corrupt: header checksum mismatch")
    _, _, kind, nbits, nwords, n, m, dim, nbytes, crc = fields
    if kind not in KIND_NAMES:
        raise ValueError(f"{source} has unknown index kind {kind}")
    expected = n * nwords * 8 + n * dim * 4
    clusters_bytes = m * nwords * 8 + n * 4 if kind in (KIND_CLUSTER, KIND_HIER) else 0
    has_clusters = clusters_bytes > 0 and nbytes == expected + clusters_bytes
    if has_clusters:
        expected += clusters_bytes
    if nbytes != expected or nwords != (nbits + 63) // 64 or not 1 <= nbits <= 1024:
        raise ValueError(f"{source} has an inconsistent header (corrupt file)")
    return _Header(kind, nbits, nwords, n, m, dim, nbytes, crc, has_clusters, size)


def _check_payload_size(h: _Header, found: int, source: str) -> None:
    if found < h.nbytes:
        raise ValueError(f"{source} is truncated: expected {h.nbytes} payload bytes, found {found}")
    if found > h.nbytes:
        raise ValueError(f"{source} is corrupt: {found - h.nbytes} bytes after the {h.nbytes}-byte payload")


def _decode(h: _Header, payload: bytes, source: str) -> IndexFile:
    """The index stored in ``payload`` (exactly h.nbytes bytes), checksum verified."""
    if zlib.crc32(payload) != h.crc:
        raise ValueError(f"{source} is corrupt: checksum mismatch")
    n, nwords, dim, m = h.n, h.nwords, h.dim, h.m
    codes = np.frombuffer(payload, dtype="<u8", count=n * nwords).reshape(n, nwords)
    emb = None
    if dim:
        emb = np.frombuffer(payload, dtype="<f4", offset=n * nwords * 8, count=n * dim).reshape(n, dim)
    centroids = labels = None
    if h.has_clusters:
        offset = n * nwords * 8 + n * dim * 4
        centroids = np.frombuffer(payload, dtype="<u8", offset=offset, count=m * nwords).reshape(m, nwords)
        labels = np.frombuffer(payload, dtype="<u4", offset=offset + m * nwords * 8, count=n)
        centroids, labels = centroids.astype(np.uint64), labels.astype(np.uint32)
    return IndexFile(kind=h.kind, nbits=h.nbits, codes=codes.astype(np.uint64), m=m,
                     embeddings=None if emb is None else emb.astype(np.float32),
                     centroids=centroids, labels=labels)


def write_index(path: PathLike, data: IndexFile) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, _encode(data))


def read_index(path: PathLike) -> IndexFile:
    """Read and verify an index file; ValueError if it is foreign, truncated or corrupt."""
    path = Path(path)
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        raw = prefix + f.read(_header_size(prefix, str(path)) - len(prefix))
        h = _parse_header(raw, str(path))
        # Sized against the file before reading: a header claiming terabytes
        # must say "truncated", not allocate them.
        _check_payload_size(h, os.fstat(f.fileno()).st_size - h.size, str(path))
        payload = f.read(h.nbytes)
    if len(payload) != h.nbytes:  # the file shrank while being read
        raise ValueError(f"{path} is truncated: expected {h.nbytes} payload bytes, found {len(payload)}")
    return _decode(h, payload, str(path))


def index_to_bytes(data: IndexFile) -> bytes:
    """``data`` as the bytes :func:`write_index` would write."""
    header, payload = _encode(data)
    return header + payload


def index_from_bytes(raw, source: str = "the serialized index") -> IndexFile:
    """Inverse of :func:`index_to_bytes` (``raw``: bytes-like); ValueError if the bytes are
    foreign, truncated or corrupt, as for files."""
    try:
        raw = memoryview(raw).cast("B")
    except TypeError:
        raise TypeError(f"expected bytes or another C-contiguous bytes-like object, got {type(raw).__name__}") from None
    h = _parse_header(bytes(raw[: _HEADER.size]), source)
    _check_payload_size(h, len(raw) - h.size, source)
    return _decode(h, raw[h.size:], source)
