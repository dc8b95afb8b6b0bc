"""The run directory that ``python -m train fit --out DIR`` leaves behind, read back as a :class:`Run`.

Files (described for users in ``docs/run_directory.md``):

- ``codes.npz``: packed codes and continuous embeddings (written by the trainer);
- ``ids.npz``: raw user and item ids, indexed by dense id;
- ``train_items.npz``: each user's training items (train ∪ valid) as CSR over dense ids,
  the items a recommendation must not return;
- ``manifest.json``: format version, sizes and the sha256 of each file above.

Everything is written atomically; the manifest is written last, so a directory whose
manifest is present and whose checksums hold is complete.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .fileio import atomic_write_bytes
from .data.download import sha256_file

RUN_FORMAT = "hashsearch-run"
RUN_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CODES = "codes.npz"
IDS = "ids.npz"
TRAIN_ITEMS = "train_items.npz"
CHECKED_FILES = (CODES, IDS, TRAIN_ITEMS)

PathLike = Union[str, Path]


class RunDirError(ValueError):
    """A run directory is missing a file, damaged, inconsistent or from a newer format."""


class UnknownIdError(KeyError):
    """Raw ids asked for that the run does not hold (the message names a few)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------- raw ids
def normalize_raw_ids(raw: Optional[np.ndarray], n: int, what: str) -> np.ndarray:
    """Raw ids as stored: int64 (n,) or an object array of str (n,); ``None`` means raw == dense.

    Raises:
        RunDirError: wrong length, a type other than integers or strings, or a repeated id.
    """
    if raw is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(raw)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise RunDirError(f"{what}: expected a 1-d array of {n} raw ids (one per dense id), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint64 and n and int(arr.max()) > np.iinfo(np.int64).max:
            raise RunDirError(f"{what}: integer raw ids must fit int64, got {int(arr.max())}")
        out = arr.astype(np.int64)
    elif arr.dtype.kind in "US" or arr.dtype == object:
        out = np.array([x.decode() if isinstance(x, bytes) else x for x in arr.tolist()], dtype=object)
        bad = [x for x in out[:1000] if not isinstance(x, str)] or [x for x in out if not isinstance(x, str)]
        if bad:
            raise RunDirError(f"{what}: raw ids must be all integers or all strings, found {bad[0]!r} "
                              f"({type(bad[0]).__name__})")
    else:
        raise RunDirError(f"{what}: raw ids must be integers or strings, got dtype {arr.dtype}")
    distinct = len(set(out.tolist())) if out.dtype == object else np.unique(out).shape[0]  # set: no str sort
    if distinct != n:
        raise RunDirError(f"{what}: raw ids must be distinct, got {n - distinct} repeats")
    return out


def _encode_ids(ids: np.ndarray, prefix: str) -> Dict[str, np.ndarray]:
    """npz entries for raw ids without pickle: ``<prefix>`` int64, or UTF-8 bytes + int64 offsets."""
    if ids.dtype != object:
        return {prefix: ids.astype(np.int64)}
    encoded = [s.encode("utf-8") for s in ids.tolist()]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return {f"{prefix}_utf8": np.frombuffer(b"".join(encoded), np.uint8), f"{prefix}_offsets": offsets}


def _decode_ids(z: Any, prefix: str, n: int, source: str) -> np.ndarray:
    if prefix in z.files:
        ids = z[prefix]
        if ids.dtype != np.int64 or ids.shape != (n,):
            raise RunDirError(f"{source}: {prefix} must be int64 ({n},), got {ids.dtype} {ids.shape}")
        return ids
    if f"{prefix}_utf8" not in z.files or f"{prefix}_offsets" not in z.files:
        raise RunDirError(f"{source}: holds neither {prefix} nor {prefix}_utf8/{prefix}_offsets")
    data = z[f"{prefix}_utf8"].tobytes()
    off = z[f"{prefix}_offsets"]
    if off.shape != (n + 1,) or off[0] != 0 or off[-1] != len(data) or (np.diff(off) < 0).any():
        raise RunDirError(f"{source}: {prefix}_offsets do not describe {n} strings in {len(data)} bytes")
    bounds = off.tolist()
    return np.array([data[bounds[j]:bounds[j + 1]].decode("utf-8") for j in range(n)], dtype=object)


# ---------------------------------------------------------------- writing
def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def exclusion_csr(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """CSR of distinct (user, item) pairs: indptr int64 (n_users+1,), indices int64 sorted per row."""
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise RunDirError(f"interactions: users and items must be 1-d arrays of one length, got {users.shape} "
                          f"and {items.shape}")
    if users.size and (users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items):
        raise RunDirError(f"interactions: ids must lie in [0, {n_users}) for users and [0, {n_items}) for items")
    keys = np.unique(users * np.int64(max(n_items, 1)) + items)  # sorted by (user, item), duplicates gone
    rows = keys // max(n_items, 1)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return indptr, keys % max(n_items, 1)


def write_run_data(out: PathLike, ds: Any) -> None:
    """Write ``ids.npz``, ``train_items.npz`` and ``manifest.json`` into ``out`` for dataset ``ds``.

    ``out/codes.npz`` must already exist (its sha256 goes into the manifest). ``ds`` is a
    :class:`train.data.Dataset`; its optional ``raw_user_ids`` / ``raw_item_ids`` (index = dense
    id; int or str arrays; None: raw == dense) become the id maps, and its train and valid
    splits the exclusions.
    """
    out = Path(out)
    codes_path = out / CODES
    if not codes_path.is_file():
        raise RunDirError(f"{codes_path} is missing: write the codes before the run data")
    n_users, n_items = int(ds.n_users), int(ds.n_items)
    user_ids = normalize_raw_ids(getattr(ds, "raw_user_ids", None), n_users, "raw_user_ids")
    item_ids = normalize_raw_ids(getattr(ds, "raw_item_ids", None), n_items, "raw_item_ids")
    splits = [ds.train] + ([ds.valid] if len(ds.valid) else [])
    indptr, indices = exclusion_csr(n_users, n_items, np.concatenate([s.users for s in splits]),
                                    np.concatenate([s.items for s in splits]))
    atomic_write_bytes(out / IDS, _npz_bytes(**_encode_ids(user_ids, "user_ids"), **_encode_ids(item_ids, "item_ids")))
    atomic_write_bytes(out / TRAIN_ITEMS, _npz_bytes(indptr=indptr, indices=indices))
    manifest = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "n_users": n_users,
        "n_items": n_items,
        "user_id_type": "str" if user_ids.dtype == object else "int64",
        "item_id_type": "str" if item_ids.dtype == object else "int64",
        "train_items_nnz": int(indices.shape[0]),
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)}
                  for name in CHECKED_FILES},
    }
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


# ---------------------------------------------------------------- reading
@dataclass
class Run:
    """A run directory read back by :func:`load_run`.

    Attributes:
        path: the directory.
        user_codes, item_codes: packed codes, uint64 (n_users, W) and (n_items, W), W = ceil(nbits/64).
        user_emb, item_emb: continuous embeddings, float32 (n_users, d) and (n_items, d).
        nbits: code length.
        user_ids, item_ids: raw ids by dense id, (n_users,) / (n_items,): int64, or object arrays of str.
        exclude_indptr, exclude_indices: each user's training items (train ∪ valid) as CSR over dense
            item ids: int64 (n_users+1,) and int64 (nnz,), sorted per row.
        manifest: the parsed ``manifest.json``.
    """

    path: Path
    user_codes: np.ndarray
    item_codes: np.ndarray
    user_emb: np.ndarray
    item_emb: np.ndarray
    nbits: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    exclude_indptr: np.ndarray
    exclude_indices: np.ndarray
    manifest: Dict[str, Any]

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])

    def user_index(self, raw: Sequence[Any]) -> np.ndarray:
        """Dense ids (int64, in the given order) of raw user ids; :class:`UnknownIdError` (a KeyError) naming unknown ones.

        Ids are matched by value and type as stored: for integer raw ids, strings of digits (read
        from a file) are accepted too."""
        return _lookup(self.user_ids, raw, "user")


def _lookup(ids: np.ndarray, raw: Sequence[Any], what: str) -> np.ndarray:
    wanted = list(raw)
    if ids.dtype != object:
        try:
            keys = np.array([int(x) for x in wanted], dtype=np.int64)
        except (TypeError, ValueError):
            bad = [x for x in wanted if not _is_int(x)]
            raise UnknownIdError(f"{len(bad)} {what} ids are not integers, but this run's raw {what} ids are: "
                           f"{', '.join(map(repr, bad[:5]))}") from None
    else:
        keys = np.array([str(x) for x in wanted], dtype=object)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, keys) if len(keys) else np.zeros(0, np.int64)
    pos = np.minimum(pos, max(len(ids) - 1, 0))
    found = (sorted_ids[pos] == keys) if len(ids) else np.zeros(len(keys), bool)
    if not found.all():
        missing = [wanted[j] for j in np.flatnonzero(~found)[:5]]
        raise UnknownIdError(f"{int((~found).sum())} of {len(wanted)} {what} ids are not in this run, e.g. "
                       f"{', '.join(map(repr, missing))}")
    return order[pos].astype(np.int64)


def _is_int(x: Any) -> bool:
    try:
        int(x)
        return True
    except (TypeError, ValueError):
        return False


def _read_manifest(path: Path) -> Dict[str, Any]:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory (expected a run directory written by `python -m train fit`)")
    if not mpath.is_file():
        raise RunDirError(f"{mpath} is missing: {path} is not a complete run directory (a `python -m train fit "
                          "--out DIR` run writes it last, beside codes.npz, ids.npz and train_items.npz)")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{mpath} is damaged (not JSON: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise RunDirError(f"{mpath} is not a run manifest (expected format {RUN_FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise RunDirError(f"{mpath}: format_version must be a positive integer, got {version!r}")
    if version > RUN_FORMAT_VERSION:
        raise RunDirError(f"{path} is run format version {version}, newer than this code reads "
                          f"(up to {RUN_FORMAT_VERSION}): update hashsearch/train")
    return manifest


def _check_files(path: Path, manifest: Dict[str, Any]) -> None:
    files = manifest.get("files", {})
    for name in CHECKED_FILES:
        f = path / name
        if not f.is_file():
            raise RunDirError(f"{f} is missing")
        want = files.get(name, {}).get("sha256")
        if want is None:
            raise RunDirError(f"{path / MANIFEST} lists no sha256 for {name}")
        got = sha256_file(f)
        if got != want:
            raise RunDirError(f"{f} is damaged or was replaced after the run: sha256 {got[:12]}…, the manifest "
                              f"says {want[:12]}…")


def load_run(path: PathLike) -> Run:
    """Read and verify a run directory (manifest, checksums, shapes).

    Raises:
        RunDirError: a file is missing or damaged, the parts disagree, or the format version is
            newer than this code reads.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    _check_files(path, manifest)
    n_users, n_items = int(manifest["n_users"]), int(manifest["n_items"])
    with np.load(path / CODES) as z:
        arrays = {k: z[k] for k in ("user_codes", "item_codes", "user_emb", "item_emb", "nbits")}
    with np.load(path / IDS) as z:
        user_ids = _decode_ids(z, "user_ids", n_users, str(path / IDS))
        item_ids = _decode_ids(z, "item_ids", n_items, str(path / IDS))
    with np.load(path / TRAIN_ITEMS) as z:
        indptr, indices = z["indptr"], z["indices"]
    run = Run(path, arrays["user_codes"], arrays["item_codes"], arrays["user_emb"].astype(np.float32, copy=False),
              arrays["item_emb"].astype(np.float32, copy=False), int(arrays["nbits"]), user_ids, item_ids,
              indptr.astype(np.int64, copy=False), indices.astype(np.int64, copy=False), manifest)
    _check_shapes(run, n_users, n_items)
    return run


def _check_shapes(run: Run, n_users: int, n_items: int) -> None:
    words = (run.nbits + 63) // 64
    src = run.path
    for name, arr, rows in (("user_codes", run.user_codes, n_users), ("item_codes", run.item_codes, n_items)):
        if arr.dtype != np.uint64 or arr.shape != (rows, words):
            raise RunDirError(f"{src / CODES}: {name} must be uint64 ({rows}, {words}) for {run.nbits} bits, "
                              f"got {arr.dtype} {arr.shape}")
    for name, arr, rows in (("user_emb", run.user_emb, n_users), ("item_emb", run.item_emb, n_items)):
        if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] != run.user_emb.shape[1]:
            raise RunDirError(f"{src / CODES}: {name} must be ({rows}, d), got {arr.shape}")
    ip, ix = run.exclude_indptr, run.exclude_indices
    if ip.shape != (n_users + 1,) or ip[0] != 0 or ip[-1] != ix.shape[0] or (np.diff(ip) < 0).any():
        raise RunDirError(f"{src / TRAIN_ITEMS}: indptr must rise from 0 to nnz over {n_users + 1} entries")
    if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= n_items):
        raise RunDirError(f"{src / TRAIN_ITEMS}: item ids must lie in [0, {n_items})")
