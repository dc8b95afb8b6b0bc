"""Data sets: readers, splits, synthetic graphs, and :func:`load_dataset` for ``--data``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..paths import shared_data_dir
from .dataset import Dataset, Pairs, dedupe, make_dataset, paper_split, remap
from .readers import (
    DataFormatError,
    read_edgelist,
    read_lightgcn,
    read_movielens_ratings,
    read_netflix,
    write_lightgcn,
)
from .synthetic import SyntheticSpec, generate

__all__ = [
    "Dataset", "Pairs", "DataFormatError", "SyntheticSpec", "dedupe", "generate", "load_dataset",
    "make_dataset", "paper_split", "read_edgelist", "read_lightgcn", "read_movielens_ratings",
    "read_netflix", "remap", "write_lightgcn", "DEFAULT_SYNTHETIC",
]

log = logging.getLogger(__name__)

# The embedded default of ``python -m train fit`` (the README's main command): small enough
# to train in about a minute on 2 cores, big enough for the methods to differ.
DEFAULT_SYNTHETIC = "synthetic:users=2000,items=3000,edges=60000"


def _load_lightgcn_dir(path: Path, split: str, seed: int) -> Dataset:
    """A directory with ``train.txt``, ``test.txt`` and optionally ``valid.txt``."""
    parts = []
    for name in ("train", "valid", "test"):
        f = path / f"{name}.txt"
        if f.exists():
            parts.append(Pairs(*read_lightgcn(f)))
        elif name == "valid":
            parts.append(Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64)))
        else:
            raise FileNotFoundError(f"{f} is missing (a LightGCN-format directory needs train.txt and test.txt)")
    if split == "paper":
        u = np.concatenate([p.users for p in parts])
        i = np.concatenate([p.items for p in parts])
        parts = list(paper_split(u, i, seed))
    # The shared files already use dense 0-based ids; remapping keeps the given id space
    # only when every id occurs, so keep ids as they are for the given split.
    return make_dataset(path.name, *parts, dense_remap=(split == "paper"))


def _split_raw(name: str, users: np.ndarray, items: np.ndarray, seed: int) -> Dataset:
    return make_dataset(name, *paper_split(users, items, seed))


def load_dataset(
    spec: Optional[str] = None,
    *,
    seed: int = 0,
    split: str = "auto",
    min_rating: float = 0.0,
) -> Dataset:
    """Resolve a ``--data`` value to a :class:`Dataset`.

    Args:
        spec: one of
            - ``None`` or ``""``: :data:`DEFAULT_SYNTHETIC`;
            - ``synthetic:users=…,items=…,edges=…[,topics=…]``: :func:`generate`, paper split;
            - a directory in LightGCN format (``train.txt``/``valid.txt``/``test.txt``);
            - a name (``ml-1m``, ``gowalla``) found under the shared data directory;
              ``ml-1m`` falls back to the cached GroupLens download (``ml-1m:download`` forces it);
            - a file: ``ratings.dat`` (MovieLens), ``combined_data_*.txt`` (Netflix; a directory
              holding them works too) or an edge list ``user item [weight]``.
        seed: seed of the paper-protocol split (and of synthetic graphs).
        split: ``given`` (use the files' split), ``paper`` (merge and re-split 70/30 with 10%
            validation), or ``auto`` (given when files are split, paper otherwise).
        min_rating: for rated data, keep interactions with rating >= this (0 keeps all).
    """
    if split not in ("auto", "given", "paper"):
        raise ValueError(f"split must be auto, given or paper, got {split!r}")
    spec = spec or DEFAULT_SYNTHETIC
    if spec.startswith("synthetic"):
        syn = SyntheticSpec.parse(spec, seed=seed)
        pairs = generate(syn)
        ds = make_dataset(spec, *paper_split(pairs.users, pairs.items, seed), dense_remap=False,
                          n_users=syn.users, n_items=syn.items)
        return ds
    if spec == "ml-1m:download":
        from .download import ml1m_ratings_path

        return _load_ratings(ml1m_ratings_path(), "ml-1m", seed, min_rating)
    path = Path(spec).expanduser()
    if not path.exists():
        shared = shared_data_dir() / spec
        if shared.is_dir():
            path = shared
        elif spec == "ml-1m":
            from .download import ml1m_ratings_path

            return _load_ratings(ml1m_ratings_path(), "ml-1m", seed, min_rating)
        else:
            raise FileNotFoundError(f"--data {spec!r}: no such file or directory, nor {shared}")
    if path.is_dir():
        if (path / "train.txt").exists():
            ds = _load_lightgcn_dir(path, "paper" if split == "paper" else "given", seed)
            return ds
        netflix = sorted(path.glob("combined_data_*.txt"))
        if netflix:
            u, i, r = read_netflix(netflix)
            keep = r >= min_rating
            return _split_raw(path.name, u[keep], i[keep], seed)
        if (path / "ratings.dat").exists():
            return _load_ratings(path / "ratings.dat", path.name, seed, min_rating)
        raise FileNotFoundError(f"{path}: no train.txt, ratings.dat or combined_data_*.txt")
    if path.name.endswith(".dat"):
        return _load_ratings(path, path.parent.name or path.stem, seed, min_rating)
    if path.name.startswith("combined_data_"):
        u, i, r = read_netflix([path])
        keep = r >= min_rating
        return _split_raw(path.stem, u[keep], i[keep], seed)
    u, i, w = read_edgelist(path)
    keep = w >= min_rating
    return _split_raw(path.stem, u[keep], i[keep], seed)


def _load_ratings(path: Path, name: str, seed: int, min_rating: float) -> Dataset:
    u, i, r, _ = read_movielens_ratings(path)
    keep = r >= min_rating
    return _split_raw(name, u[keep], i[keep], seed)
