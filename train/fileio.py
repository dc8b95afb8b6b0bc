"""Atomic file writes (no torch import, so the reproduction tools can use them too)."""
from __future__ import annotations

from pathlib import Path

from hashsearch.io import atomic_write


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`hashsearch.io.atomic_write`),
    creating the directory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (data,))
