"""Data sets: readers, splits, synthetic graphs, and :func:`load_dataset` for ``--data``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..paths import shared_data_dir
from .dataset import (
    Dataset, Pairs, _empty, dedupe, drop_repeats, encode_ids, make_dataset, paper_split, remap, temporal_split,
)
from .formats import FORMATS, read_files, single_files, split_files
from .readers import (
    DataError,
    DataFormatError,
    Interactions,
    read_edgelist,
    read_edges,
    read_lightgcn,
    read_movielens_ratings,
    read_netflix,
    write_lightgcn,
)
from .synthetic import SyntheticSpec, generate
from .tabular import parse_columns

__all__ = [
    "Dataset", "Pairs", "DataError", "DataFormatError", "FORMATS", "Interactions", "SPLIT_MODES",
    "SyntheticSpec", "dedupe", "generate", "load_dataset", "make_dataset", "paper_split", "parse_columns",
    "read_edgelist", "read_edges", "read_lightgcn", "read_movielens_ratings", "read_netflix", "remap",
    "temporal_split", "write_lightgcn", "DEFAULT_SYNTHETIC",
]

log = logging.getLogger(__name__)

# The embedded default of ``python -m train fit`` (the README's main command): small enough
# to train in about a minute on 2 cores, big enough for the methods to differ.
DEFAULT_SYNTHETIC = "synthetic:users=2000,items=3000,edges=60000"


SPLIT_MODES = ("auto", "given", "paper", "temporal")
SPLITS = ("train", "valid", "test")


def load_dataset(
    spec: Optional[str] = None,
    *,
    seed: int = 0,
    split: str = "auto",
    min_rating: float = 0.0,
    format: Optional[str] = None,
    columns: Optional[str] = None,
) -> Dataset:
    """Resolve a ``--data`` value to a :class:`Dataset` (ids dense, raw ids kept).

    Args:
        spec: one of
            - ``None`` or ``""``: :data:`DEFAULT_SYNTHETIC`;
            - ``synthetic:users=…,items=…,edges=…[,topics=…]``: :func:`generate`, paper split;
            - a name (``ml-1m``, ``gowalla``) found under the shared data directory (LightGCN
              format); ``ml-1m`` falls back to the cached GroupLens download (``ml-1m:download``
              forces it);
            - a split directory: ``train`` and ``test`` files, ``valid`` optional (``train.txt``,
              ``train.csv``, RecBole's ``NAME.train.inter``, …), in any one format;
            - a directory holding ``combined_data_*.txt`` (Netflix), ``ratings.dat`` /
              ``ratings.csv`` (MovieLens), or one ``.inter`` or ``.parquet`` file;
            - a file in any of :data:`FORMATS`.
        seed: seed of the paper-protocol split (and of synthetic graphs).
        split: ``given`` (the files' split), ``paper`` (merge, then per user a random 30% to test
            and 10% of the rest to validation), ``temporal`` (the same counts, each user's latest
            interactions to test, the next latest to validation; needs a time column), or
            ``auto`` (given for a split directory, paper otherwise).
        min_rating: keep interactions with rating (or edge weight) >= this; 0 keeps all.
        format: one of :data:`FORMATS`; None detects it from the content, and raises when the
            content reads more than one way (rules in :mod:`train.data.formats`).
        columns: for csv, tsv, inter and parquet: ``user=NAME,item=NAME[,rating=NAME][,time=NAME]``
            (names or 0-based positions); roles not given are found by their usual header names.

    Raises:
        FileNotFoundError: ``spec`` names nothing.
        DataFormatError: a file is malformed, or its format is ambiguous.
        DataError: too little data for the split (an empty training or test split), or a split
            or ``min_rating`` that the data cannot serve.
        ValueError: a bad argument.
    """
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be {', '.join(SPLIT_MODES[:-1])} or {SPLIT_MODES[-1]}, got {split!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    cols = parse_columns(columns)
    spec = spec or DEFAULT_SYNTHETIC
    if spec.startswith("synthetic"):
        if split in ("given", "temporal") or format or cols or min_rating:
            raise ValueError("synthetic data take no format, columns or min_rating, and are split the paper's way")
        syn = SyntheticSpec.parse(spec, seed=seed)
        pairs = generate(syn)
        return make_dataset(spec, *paper_split(pairs.users, pairs.items, seed), dense_remap=False,
                            n_users=syn.users, n_items=syn.items)
    name, parts = _read_spec(spec, format, cols, want_time=(split == "temporal"))
    ds = build_dataset(name, parts, split=split, seed=seed, min_rating=min_rating)
    check_splits(ds, given=set(parts) != {"all"} and split in ("auto", "given"))
    return ds


def _read_spec(spec: str, fmt: Optional[str], cols: dict, want_time: bool) -> Tuple[str, Dict[str, Interactions]]:
    """(name, {split: interactions}) of a ``--data`` value; the one key ``all`` when not split."""
    from .download import ml1m_ratings_path

    if spec == "ml-1m:download":
        return "ml-1m", _read_all([ml1m_ratings_path()], fmt or "movielens", cols, want_time)
    path = Path(spec).expanduser()
    if not path.exists():
        shared = shared_data_dir() / spec
        if shared.is_dir():  # the shared data sets are LightGCN-format split directories
            path, fmt = shared, fmt or "lightgcn"
        elif spec == "ml-1m":
            return "ml-1m", _read_all([ml1m_ratings_path()], fmt or "movielens", cols, want_time)
        else:
            named = "" if Path(spec).is_absolute() or "/" in spec else f", nor a data set {shared}"
            raise FileNotFoundError(f"--data {spec!r}: no such file or directory{named}")
    if path.is_dir():
        files = split_files(path)
        if files is not None:
            _, read = read_files(list(files.values()), fmt, cols, want_time)
            return path.name, dict(zip(files, read))
        data, _ = single_files(path, fmt)
        return path.name, _read_all(data, fmt, cols, want_time)
    name = path.parent.name if path.stem == "ratings" and path.parent.name else path.stem
    return name, _read_all([path], fmt, cols, want_time)


def _read_all(paths: List[Path], fmt: Optional[str], cols: dict, want_time: bool) -> Dict[str, Interactions]:
    _, read = read_files(paths, fmt, cols, want_time)
    if len(read) == 1:
        return {"all": read[0]}
    cat = lambda xs: None if any(x is None for x in xs) else np.concatenate(xs)  # noqa: E731
    return {"all": Interactions(*(cat([getattr(r, f) for r in read]) for f in Interactions._fields))}


def _joint_ids(arrays: List[np.ndarray]) -> np.ndarray:
    """Concatenate raw id arrays; integer ids become strings when another part has string ids."""
    if any(a.dtype.kind not in "iu" for a in arrays) and any(a.dtype.kind in "iu" for a in arrays):
        arrays = [a.astype(str).astype(object) for a in arrays]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


def build_dataset(name: str, parts: Dict[str, Interactions], *, split: str = "auto", seed: int = 0,
                  min_rating: float = 0.0) -> Dataset:
    """A :class:`Dataset` from raw interactions: filtered by rating, ids made dense jointly over
    all parts (raw ids kept), then split.

    Args:
        parts: ``{"all": …}`` for unsplit data, else ``train``/``test`` (and ``valid``) parts.
        split, seed, min_rating: as for :func:`load_dataset`.
    """
    is_split = set(parts) != {"all"}
    if split == "given" and not is_split:
        raise DataError(f"{name}: split 'given' needs a split directory (train and test files); these data "
                        "are one set of interactions: use split auto, paper or temporal")
    mode = ("given" if is_split else "paper") if split == "auto" else split
    if min_rating > 0:
        if any(p.rating is None for p in parts.values()):
            raise DataError(f"{name}: min_rating {min_rating} needs a rating (or weight) column; the data have none")
        parts = {k: p.take(p.rating >= min_rating) for k, p in parts.items()}
    if mode == "temporal" and any(p.time is None for p in parts.values()):
        raise DataError(f"{name}: split 'temporal' needs a time column (a timestamp in CSV/TSV/RecBole/Parquet "
                        "files, the fourth field of an edge list or MovieLens line, Netflix dates); the data have none")
    keys = list(parts)
    users, raw_u = encode_ids(_joint_ids([parts[k].users for k in keys]))
    items, raw_i = encode_ids(_joint_ids([parts[k].items for k in keys]))
    bounds = np.cumsum([0] + [len(parts[k]) for k in keys])
    dense = {k: Pairs(users[a:b], items[a:b]) for k, a, b in zip(keys, bounds[:-1], bounds[1:])}
    if mode == "given":
        train, valid, test = (drop_repeats(dense[s]) if s in dense else _empty() for s in SPLITS)
    elif mode == "paper":
        train, valid, test = paper_split(users, items, seed)
    else:
        train, valid, test = temporal_split(users, items, np.concatenate([parts[k].time for k in keys]))
    n_users = int(users.max()) + 1 if users.size else 0
    n_items = int(items.max()) + 1 if items.size else 0
    return Dataset(name, n_users, n_items, train, valid, test, raw_u, raw_i)


def check_splits(ds: Dataset, given: bool) -> None:
    """Raise :class:`DataError` when the training or the test split is empty (a run on it would
    fail, or report 0.0 without a word)."""
    if len(ds.train) and len(ds.test):
        return
    which = "training" if len(ds.train) == 0 else "test"
    counts = (f"train {len(ds.train):,}, valid {len(ds.valid):,}, test {len(ds.test):,} interactions "
              f"of {ds.n_users:,} users and {ds.n_items:,} items")
    if given:
        why = f"its {which} file holds no interactions (after any min_rating filter)"
    else:
        why = ("each user keeps at least one training interaction and gives about 30% to test, so a test "
               "split needs users with 2 or more interactions" if which == "test" else "there are no interactions")
    raise DataError(f"{ds.name}: the {which} split is empty ({counts}): {why}")
