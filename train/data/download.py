"""Cached, checksummed download of MovieLens-1M from GroupLens (never used by tests)."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from ..paths import cache_dir

log = logging.getLogger(__name__)

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
# GroupLens publishes the MD5 (c4d9eecfca2ab87c1945afe126590906); this SHA-256 of the
# same archive is the one TensorFlow Models and Keras-RS pin.
ML1M_SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, sha256: str, timeout: float = 120.0) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right checksum is there.

    The bytes go to a temporary file in the same directory, are checked, and only
    then renamed into place, so an interrupted or corrupted download never
    leaves a file that looks complete.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256_file(dest) == sha256:
            return dest
        log.warning("%s has a wrong checksum; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        log.info("downloading %s -> %s", url, dest)
        from tqdm.auto import tqdm

        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            size = int(resp.headers.get("Content-Length") or 0) or None
            # progress like training's; disable=None: no bar when stderr is not a terminal
            with tqdm(total=size, unit="B", unit_scale=True, desc=dest.name, disable=None, leave=False) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        if h.hexdigest() != sha256:
            raise OSError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {sha256}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def ml1m_ratings_path(root: Optional[Path] = None) -> Path:
    """Path of ``ml-1m/ratings.dat`` in the cache, downloading and extracting it if needed."""
    root = Path(root) if root is not None else cache_dir()
    ratings = root / "ml-1m" / "ratings.dat"
    if ratings.exists():
        return ratings
    archive = fetch(ML1M_URL, root / "ml-1m.zip", ML1M_SHA256)
    with zipfile.ZipFile(archive) as zf:
        data = zf.read("ml-1m/ratings.dat")
    ratings.parent.mkdir(parents=True, exist_ok=True)
    tmp = ratings.with_suffix(".dat.part")
    tmp.write_bytes(data)
    os.replace(tmp, ratings)
    return ratings
