"""Readers for the plain-text interaction formats (LightGCN, edge lists, MovieLens, Netflix).

Every reader is vectorised (numpy, or pandas' C parser); a malformed line raises
:class:`DataFormatError` naming the file and the 1-based line number, so a corrupt download is
found without a debugger. The fast path only detects that something is wrong; a line-by-line
pass over the file then finds the first bad line for the message.

Raw ids are returned as read: int64 arrays for integer ids, object arrays of ``str`` for
string ids (edge lists only). Dense remapping happens in :func:`train.data.load_dataset`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .tokens import NotIntegers, read_int_tokens

PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    """Interaction data that cannot be used as given (a bad file, or too little data for a split)."""


class DataFormatError(DataError):
    """A file, or one line of it, could not be parsed.

    Attributes:
        path: the file.
        lineno: 1-based line number, or None when the problem is not one line's.
    """

    def __init__(self, path: PathLike, lineno: Optional[int], message: str) -> None:
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.lineno = lineno


class Interactions(NamedTuple):
    """Interactions read from one file, ids raw.

    Attributes:
        users, items: shape (n,); int64 for integer ids, object (``str``) for string ids.
        rating: float64 (n,) or None when the file has no rating/weight column.
        time: int64 or float64 (n,) or None when the file has no time column.
    """

    users: np.ndarray
    items: np.ndarray
    rating: Optional[np.ndarray] = None
    time: Optional[np.ndarray] = None

    def __len__(self) -> int:  # number of interactions
        return int(self.users.shape[0])

    def take(self, keep: np.ndarray) -> "Interactions":
        """The rows selected by ``keep`` (a boolean mask or an index array)."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return Interactions(self.users[keep], self.items[keep], pick(self.rating), pick(self.time))


def _lines(path: PathLike, encoding: str = "utf-8") -> Iterator[Tuple[int, str]]:
    with open(path, "r", encoding=encoding, errors="replace") as f:
        yield from enumerate(f, 1)


def _check_ids(tokens: Sequence[str], path: PathLike, lineno: int) -> None:
    try:
        vals = [int(t) for t in tokens]
    except ValueError:
        raise DataFormatError(path, lineno, f"expected integer ids, got {' '.join(tokens)[:80]!r}") from None
    if any(v < 0 for v in vals):
        raise DataFormatError(path, lineno, "ids must be non-negative")


def _locate(path: PathLike, check: Callable[[int, str], None],
            fallback: Union[str, DataFormatError]) -> DataFormatError:
    """Run ``check`` over each line (it raises at a bad one); else ``fallback``, a file-level error."""
    try:
        for lineno, line in _lines(path):
            check(lineno, line)
    except DataFormatError as bad:
        return bad
    return fallback if isinstance(fallback, DataFormatError) else DataFormatError(path, None, fallback)


def read_csv_strict(source, **kwargs):
    """``pandas.read_csv`` that refuses rows with more fields than the columns: pandas would take
    the extra leading fields of a first row as an index (shifting every column), so
    ``index_col=False`` is forced and its length-mismatch warning made an error. (Rows after the
    first with extra fields are already an error; ``usecols`` turns that check off, so it is
    not used here.)"""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(source, index_col=False, engine="c", **kwargs)
        except pd.errors.ParserWarning as w:
            raise ValueError(f"a row has more fields than the columns ({w})") from None


def lightgcn_pairs(values: np.ndarray, counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(users, items) int64 (nnz,) of LightGCN lines given their tokens and per-line counts."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    is_item = np.ones(values.shape[0], bool)
    is_item[starts] = False
    return np.repeat(values[starts], counts - 1), values[is_item]


def read_lightgcn(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read the LightGCN/NGCF format: one line per user, ``user item item ...``.

    A line holding only a user id (no items) and blank lines are allowed.

    Returns:
        (users, items): int64 arrays of shape (nnz,), one entry per interaction, in file order.
    """
    try:
        tok = read_int_tokens(path)
    except NotIntegers as bad:
        raise DataFormatError(path, bad.lineno, f"expected non-negative integer ids (LightGCN format "
                                                f"'user item item ...'), got {bad.token!r}") from None
    return lightgcn_pairs(tok.values, tok.counts)


EDGE_FIELDS = "'user item [weight [time]]'"


def _edges_from_ints(path: PathLike, values: np.ndarray, counts: np.ndarray,
                     linenos: np.ndarray) -> Interactions:
    """An edge list whose tokens are all integers; its lines must all have the same 2, 3 or 4 fields."""
    if counts.size == 0:
        return Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64))
    bad = np.flatnonzero((counts < 2) | (counts > 4))
    if bad.size:
        raise DataFormatError(path, int(linenos[bad[0]]), f"expected {EDGE_FIELDS}, got {counts[bad[0]]} fields")
    k = int(counts[0])
    if not np.all(counts == k):
        j = int(np.argmax(counts != k))
        raise DataFormatError(path, int(linenos[j]), f"{counts[j]} fields, but line {linenos[0]} has {k}: every "
                                                     "line of an edge list has the same fields")
    cols = values.reshape(-1, k)
    rating = cols[:, 2].astype(np.float64) if k >= 3 else None
    time = cols[:, 3].copy() if k == 4 else None
    return Interactions(cols[:, 0].copy(), cols[:, 1].copy(), rating, time)


def _check_edge_line(path: PathLike) -> Callable[[int, str], None]:
    first: List[Tuple[int, int]] = []  # (line number, fields) of the first line

    def check(lineno: int, line: str) -> None:
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            return
        if len(tokens) not in (2, 3, 4):
            raise DataFormatError(path, lineno, f"expected {EDGE_FIELDS}, got {len(tokens)} fields")
        if not first:
            first.append((lineno, len(tokens)))
        elif first[0][1] != len(tokens):
            raise DataFormatError(path, lineno, f"{len(tokens)} fields, but line {first[0][0]} has {first[0][1]}: "
                                                "every line of an edge list has the same fields")
        _check_numbers(path, lineno, tokens[2:], ("weight", "time"))
    return check


def read_edges(path: PathLike) -> Interactions:
    """Read an edge list: ``user item [weight [time]]`` lines, whitespace separated, ``#``
    comments and blank lines skipped. Ids are integers or strings; weight and time numbers.

    Every line has the same fields (a weight or a time on some lines only would make the file
    read as LightGCN as well).

    Returns:
        :class:`Interactions` with ``rating`` = the weights and ``time`` (None where the lines
        have none).
    """
    try:
        tok = read_int_tokens(path)
    except NotIntegers:
        tok = None
    if tok is not None:
        return _edges_from_ints(path, tok.values, tok.counts, tok.linenos)
    import pandas as pd

    try:
        df = read_csv_strict(path, sep=r"\s+", header=None, comment="#", names=range(4))
    except (ValueError, pd.errors.ParserError) as exc:  # (ParserError is a ValueError)
        raise _locate(path, _check_edge_line(path), str(exc)) from None
    from .tabular import id_column, number_column

    try:
        users = id_column(df[0], path, "user")
        items = id_column(df[1], path, "item")
        width = [int(df[c].notna().any()) for c in (2, 3)]
        if any(df[c].notna().any() and df[c].isna().any() for c in (2, 3)):
            raise DataFormatError(path, None, "every line of an edge list has the same fields")
        rating = number_column(df[2], path, "weight") if width[0] else None
        time = number_column(df[3], path, "time") if width[1] else None
    except DataFormatError as exc:
        raise _locate(path, _check_edge_line(path), exc) from None
    return Interactions(users, items, rating, time)


def read_edgelist(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``user item [weight [time]]`` lines with integer ids (see :func:`read_edges`).

    Returns:
        (users, items, weights): int64, int64, float32 arrays of shape (nnz,); weight defaults to 1.0.
    """
    e = read_edges(path)
    if e.users.dtype != np.int64 or e.items.dtype != np.int64:
        raise DataFormatError(path, None, "expected integer ids (string ids: use load_dataset)")
    w = e.rating if e.rating is not None else np.ones(len(e), np.float64)
    return e.users, e.items, w.astype(np.float32)


def _check_numbers(path: PathLike, lineno: int, tokens: Sequence[str], names: Sequence[str]) -> None:
    """Raises DataFormatError naming the first token that is not a number."""
    for t, what in zip(tokens, names):
        try:
            float(t)
        except ValueError:
            raise DataFormatError(path, lineno, f"bad {what} {t!r}") from None


def _check_movielens_line(path: PathLike) -> Callable[[int, str], None]:
    def check(lineno: int, line: str) -> None:
        line = line.strip()
        if not line:
            return
        parts = line.split("::")
        if len(parts) != 4:
            raise DataFormatError(path, lineno, f"expected 'user::item::rating::timestamp', got {line[:80]!r}")
        _check_ids(parts[:2], path, lineno)
        _check_numbers(path, lineno, parts[2:], ("rating", "timestamp"))
    return check


def read_movielens(path: PathLike) -> Interactions:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``; ml-1m, ml-10m).

    Returns:
        :class:`Interactions`: int64 ids, float64 ratings, int64 timestamps.
    """
    import pandas as pd

    data = Path(path).read_bytes().replace(b"::", b"\t")  # pandas' C parser takes one-byte separators
    try:
        df = read_csv_strict(io.BytesIO(data), sep="\t", header=None, names=range(4),
                         dtype={0: np.int64, 1: np.int64, 2: np.float64, 3: np.int64})
    except (ValueError, pd.errors.ParserError) as exc:
        raise _locate(path, _check_movielens_line(path), str(exc)) from None
    cols = [df[c].to_numpy() for c in range(4)]
    if len(df) and (cols[0].min() < 0 or cols[1].min() < 0):
        raise _locate(path, _check_movielens_line(path), "ids must be non-negative")
    return Interactions(cols[0], cols[1], cols[2], cols[3])


def read_movielens_ratings(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read MovieLens ``ratings.dat``: (users, items, ratings float64, timestamps int64), shape (nnz,)."""
    m = read_movielens(path)
    return m.users, m.items, m.rating, m.time


def _check_netflix_lines(path: PathLike) -> Callable[[int, str], None]:
    seen = [False]

    def check(lineno: int, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line.endswith(":"):
            _check_ids([line[:-1]], path, lineno)
            seen[0] = True
            return
        if not seen[0]:
            raise DataFormatError(path, lineno, "rating line before any 'movie_id:' header")
        parts = line.split(",")
        if len(parts) != 3:
            raise DataFormatError(path, lineno, f"expected 'customer,rating,date', got {line[:80]!r}")
        _check_ids(parts[:2], path, lineno)
    return check


def _count_bytes(path: PathLike, chars: bytes) -> List[int]:
    """How often each byte of ``chars`` occurs in the file."""
    n = [0] * len(chars)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            for k in range(len(chars)):
                n[k] += block.count(chars[k:k + 1])
    return n


def _read_netflix_file(path: PathLike, want_time: bool) -> Interactions:
    import pandas as pd

    # ':' as the comment character turns a 'movie:' header into a row holding only the movie id,
    # so one C-parser pass reads both kinds of line; the header rows are told apart by their
    # missing rating.
    use = [0, 1, 2] if want_time else [0, 1]
    fail = lambda msg: _locate(path, _check_netflix_lines(path), msg)  # noqa: E731
    try:
        df = pd.read_csv(path, header=None, names=range(3), usecols=use, comment=":", engine="c",
                         dtype={0: np.int64, 1: np.float64, 2: str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise fail(str(exc)) from None
    first = df[0].to_numpy()
    rating = df[1].to_numpy()
    header = np.isnan(rating)
    colons, commas = _count_bytes(path, b":,")
    n_head = int(header.sum())
    if (first.size and (first.min() < 0 or not header[0])) or (n_head, 2 * (first.size - n_head)) != (colons, commas):
        raise fail("expected 'movie_id:' headers followed by 'customer,rating,date' lines")
    if want_time and df[2][~header].isna().any():
        raise fail("a rating line without a date")
    movie = first[header][np.cumsum(header) - 1]
    keep = ~header
    time = None
    if want_time:
        try:
            time = pd.to_datetime(df[2][keep], format="%Y-%m-%d").to_numpy().astype("datetime64[s]").astype(np.int64)
        except (ValueError, TypeError) as exc:
            raise fail(f"bad date: {exc}") from None
    return Interactions(first[keep], movie[keep], rating[keep], time)


def read_netflix_interactions(paths: Iterable[PathLike], want_time: bool = False) -> Interactions:
    """Read Netflix Prize ``combined_data_*.txt`` files (a ``movie_id:`` header line, then
    ``customer_id,rating,YYYY-MM-DD`` lines).

    Returns:
        :class:`Interactions`: int64 ids (item = movie id), float64 ratings, and the dates as int64
        seconds since the epoch when ``want_time`` (parsing them costs time; else None).
    """
    parts = [_read_netflix_file(p, want_time) for p in paths]
    if not parts:
        return Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64))
    cat = lambda xs: None if xs[0] is None else np.concatenate(xs)  # noqa: E731
    return Interactions(*(cat([getattr(p, f) for p in parts]) for f in Interactions._fields))


def read_netflix(paths: Iterable[PathLike]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read Netflix Prize files: (users, items, ratings) int64 arrays of shape (nnz,), raw ids."""
    n = read_netflix_interactions(paths)
    return n.users, n.items, n.rating.astype(np.int64)


def write_lightgcn(path: PathLike, users: np.ndarray, items: np.ndarray) -> None:
    """Write interactions in the LightGCN format (users sorted; used for tests and exports)."""
    order = np.lexsort((items, users))
    u, i = users[order], items[order]
    bounds = np.flatnonzero(np.diff(u)) + 1
    with open(Path(path), "w", encoding="utf-8") as f:
        for us, its in zip(np.split(u, bounds), np.split(i, bounds)):
            if us.size:
                f.write(f"{us[0]} " + " ".join(map(str, its.tolist())) + "\n")


__all__ = ["DataError", "DataFormatError", "Interactions", "read_lightgcn", "lightgcn_pairs", "read_edges",
           "read_edgelist", "read_movielens", "read_movielens_ratings", "read_netflix",
           "read_netflix_interactions", "write_lightgcn"]
