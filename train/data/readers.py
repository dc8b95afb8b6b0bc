"""Readers for interaction files. Every reader returns int64 numpy arrays.

A malformed line raises :class:`DataFormatError` naming the file and the
1-based line number, so a corrupt download is found without a debugger.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class DataFormatError(ValueError):
    """A line of an interaction file could not be parsed."""

    def __init__(self, path: PathLike, lineno: int, message: str) -> None:
        super().__init__(f"{path}:{lineno}: {message}")
        self.path = str(path)
        self.lineno = lineno


def _ids(tokens: List[str], path: PathLike, lineno: int) -> List[int]:
    try:
        vals = [int(t) for t in tokens]
    except ValueError:
        raise DataFormatError(path, lineno, f"expected integer ids, got {' '.join(tokens)[:80]!r}") from None
    if any(v < 0 for v in vals):
        raise DataFormatError(path, lineno, "ids must be non-negative")
    return vals


def read_lightgcn(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read the LightGCN/NGCF format: one line per user, ``user item item ...``.

    A line holding only a user id (no items) and blank lines are allowed.

    Returns:
        (users, items): int64 arrays of shape (nnz,), one entry per interaction,
        in file order.
    """
    users: List[np.ndarray] = []
    items: List[np.ndarray] = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            vals = _ids(tokens, path, lineno)
            row = np.asarray(vals[1:], dtype=np.int64)
            items.append(row)
            users.append(np.full(row.shape[0], vals[0], dtype=np.int64))
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def read_edgelist(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``user item [weight]`` lines (any whitespace; ``#`` comments and blank lines skipped).

    Returns:
        (users, items, weights): int64, int64, float32 arrays of shape (nnz,);
        weight defaults to 1.0.
    """
    users: List[int] = []
    items: List[int] = []
    weights: List[float] = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            if len(tokens) not in (2, 3):
                raise DataFormatError(path, lineno, f"expected 'user item [weight]', got {len(tokens)} fields")
            u, i = _ids(tokens[:2], path, lineno)
            w = 1.0
            if len(tokens) == 3:
                try:
                    w = float(tokens[2])
                except ValueError:
                    raise DataFormatError(path, lineno, f"bad weight {tokens[2]!r}") from None
            users.append(u)
            items.append(i)
            weights.append(w)
    return (np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(weights, np.float32))


def read_movielens_ratings(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``).

    Returns:
        (users, items, ratings, timestamps): int64 arrays of shape (nnz,), raw ids.
    """
    rows: List[List[int]] = []
    with open(path, "r", encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != 4:
                raise DataFormatError(path, lineno, f"expected 'user::item::rating::timestamp', got {line[:80]!r}")
            rows.append(_ids(parts, path, lineno))
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy()


def read_netflix(paths: Iterable[PathLike]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read Netflix Prize ``combined_data_*.txt`` files.

    Format: a ``movie_id:`` header line, then ``customer_id,rating,YYYY-MM-DD`` lines.

    Returns:
        (users, items, ratings): int64 arrays of shape (nnz,), raw ids (item = movie id).
    """
    users: List[int] = []
    items: List[int] = []
    ratings: List[int] = []
    for path in paths:
        movie = -1
        with open(path, "r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                if line.endswith(":"):
                    movie = _ids([line[:-1]], path, lineno)[0]
                    continue
                if movie < 0:
                    raise DataFormatError(path, lineno, "rating line before any 'movie_id:' header")
                parts = line.split(",")
                if len(parts) != 3:
                    raise DataFormatError(path, lineno, f"expected 'customer,rating,date', got {line[:80]!r}")
                u, r = _ids(parts[:2], path, lineno)
                users.append(u)
                items.append(movie)
                ratings.append(r)
    return (np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(ratings, np.int64))


def write_lightgcn(path: PathLike, users: np.ndarray, items: np.ndarray) -> None:
    """Write interactions in the LightGCN format (users sorted; used for tests and exports)."""
    order = np.lexsort((items, users))
    u, i = users[order], items[order]
    bounds = np.flatnonzero(np.diff(u)) + 1
    with open(Path(path), "w", encoding="utf-8") as f:
        for us, its in zip(np.split(u, bounds), np.split(i, bounds)):
            if us.size:
                f.write(f"{us[0]} " + " ".join(map(str, its.tolist())) + "\n")
