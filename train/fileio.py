"""Atomic file writes (no torch import, so the reproduction tools can use them too)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO, Iterator

from hashsearch.io import atomic_open, atomic_write


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`hashsearch.io.atomic_write`),
    creating the directory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (data,))


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file object whose contents replace ``path`` when the block ends without an error
    (see :func:`hashsearch.io.atomic_open`), creating the directory first. Large outputs
    (a checkpoint of millions of embedding rows) stream to disk instead of being built in
    memory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        yield f
