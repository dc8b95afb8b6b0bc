"""Where data lives: the shared real data sets and the download cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` relative to the repository root (``HASHSEARCH_SHARED_DATA`` overrides)."""
    env = os.environ.get("HASHSEARCH_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Download cache: ``HASHSEARCH_DATA`` or ``~/.cache/hashsearch`` (not created here)."""
    env = os.environ.get("HASHSEARCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "hashsearch"
