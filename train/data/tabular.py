"""Tabular interaction files: CSV, TSV, RecBole ``.inter`` and Parquet, columns chosen by name.

A file's roles (user, item, rating, time) come from ``--columns user=NAME,item=NAME,...`` or,
for roles not named there, from the usual header names (:data:`ALIASES`, case-insensitive;
RecBole's ``name:type`` headers are matched by ``name``). A CSV/TSV file has a header row when
its first line holds one of those names or a name ``--columns`` gives (``.inter`` files always
have one), and none when its first line is all numbers or ``--columns`` gives only positions;
any other first line is an error asking for ``--columns``. Without a header, columns are taken
by position: user, item, then rating and time when present (``--columns user=0,item=2``).
"""
from __future__ import annotations

import csv
import os
import re
from typing import Dict, List, Optional, Union

import numpy as np

from .readers import DataFormatError, Interactions, read_csv_strict

PathLike = Union[str, os.PathLike]
Column = Union[str, int]

ROLES = ("user", "item", "rating", "time")
ALIASES = {
    "user": ("user_id", "userid", "user", "uid", "customer_id", "visitorid"),
    "item": ("item_id", "itemid", "movieid", "movie_id", "item", "iid", "product_id", "business_id"),
    "rating": ("rating", "ratings", "weight", "score"),
    "time": ("timestamp", "time", "ts", "datetime", "date"),
}
_TYPED = re.compile(r"^(.*):(token|token_seq|float|float_seq)$")  # RecBole header fields


def parse_columns(spec: Optional[str]) -> Dict[str, Column]:
    """Parse ``user=NAME,item=NAME,rating=NAME,time=NAME`` (any subset; a number is a position)."""
    out: Dict[str, Column] = {}
    if not spec:
        return out
    for part in spec.split(","):
        role, eq, name = part.partition("=")
        role, name = role.strip(), name.strip()
        if not eq or not name or role not in ROLES:
            raise ValueError(f"columns must be ROLE=NAME pairs with ROLE one of {', '.join(ROLES)} "
                             f"(e.g. user=user_id,item=movieId), got {part!r} in {spec!r}")
        if role in out:
            raise ValueError(f"columns names {role} twice in {spec!r}")
        out[role] = int(name) if name.isdigit() else name
    return out


def _bare(name: str) -> str:
    m = _TYPED.match(name.strip())
    return (m.group(1) if m else name.strip()).lower()


def _find(names: List[str], want: Column, path: PathLike, header: bool) -> int:
    if isinstance(want, int):
        if want >= len(names):
            raise DataFormatError(path, None, f"column {want} requested, but rows have {len(names)} columns")
        return want
    if not header:
        raise DataFormatError(path, None, f"column {want!r} requested, but the file has no header row (its first "
                                          f"line is {names!r}): give positions, e.g. --columns user=0,item=1")
    for j, n in enumerate(names):  # exact, then RecBole's name:type, then any case
        if n == want:
            return j
    for j, n in enumerate(names):
        if _bare(n) == _bare(want):
            return j
    raise DataFormatError(path, None, f"no column {want!r}; the header has {names!r}")


def resolve_columns(names: List[str], columns: Dict[str, Column], path: PathLike, header: bool) -> Dict[str, int]:
    """Map each role to a column index: ``columns`` first, then :data:`ALIASES` (or positions
    without a header). user and item are required."""
    out: Dict[str, int] = {r: _find(names, c, path, header) for r, c in columns.items()}
    bare = [_bare(n) for n in names]
    for j, role in enumerate(ROLES):
        if role in out:
            continue
        if header:
            hit = next((k for a in ALIASES[role] for k, b in enumerate(bare) if b == a), None)
        else:
            hit = j if j < len(names) and j not in out.values() else None
        if hit is not None and hit not in out.values():
            out[role] = hit
        elif role in ("user", "item"):
            raise DataFormatError(path, None, f"no {role} column among {names!r} (looked for "
                                              f"{', '.join(ALIASES[role])}); name it with --columns {role}=NAME")
    return out


def has_header(names: List[str], columns: Dict[str, Column]) -> bool:
    """True when the first record names a known column (or one that ``columns`` asks for)."""
    known = {a for r in ROLES for a in ALIASES[r]} | {_bare(c) for c in columns.values() if isinstance(c, str)}
    return any(_bare(n) in known for n in names)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def table_has_header(names: List[str], columns: Dict[str, Column], path: PathLike) -> bool:
    """Whether a CSV/TSV file's first row is a header: yes when it names a known column (or one
    ``columns`` names); no when it holds only numbers or ``columns`` gives only positions; else
    (unknown names, or string ids?) a :class:`DataFormatError` asking for ``--columns``."""
    if has_header(names, columns):
        return True
    if all(_is_number(n) for n in names) or (columns and all(isinstance(c, int) for c in columns.values())):
        return False
    raise DataFormatError(path, 1, f"the first row {names!r} names no known column ({', '.join(ALIASES['user'])}, "
                                   f"...) and is not all numbers: a header or data? Say which with --columns: "
                                   "names (user=NAME,item=NAME) for a header, positions (user=0,item=1) for none")


def first_record(path: PathLike, sep: str) -> List[str]:
    """The fields of the first non-blank line (quotes honoured)."""
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:  # -sig: drop a BOM
        for line in f:
            if line.strip():
                return next(csv.reader([line], delimiter=sep))
    return []


def _missing(series, path: PathLike, what: str) -> DataFormatError:
    row = int(np.flatnonzero(series.isna().to_numpy())[0]) + 1
    return DataFormatError(path, None, f"data row {row} has no {what}")


def id_column(series, path: PathLike, role: str) -> np.ndarray:
    """Raw ids of one column: int64 (n,) for integer ids (>= 0), object (n,) of ``str`` otherwise."""
    kind = series.dtype.kind
    if kind == "u" and len(series) and int(series.max()) > np.iinfo(np.int64).max:
        return series.astype(str).to_numpy(dtype=object)  # beyond int64: kept as their digits
    if kind in "iu":
        arr = series.to_numpy(np.int64)
        if arr.size and arr.min() < 0:
            raise DataFormatError(path, None, f"{role} ids must be non-negative, found {arr.min()}")
        return arr
    if series.isna().any():
        raise _missing(series, path, f"{role} id")
    if kind in "fcbmM":
        raise DataFormatError(path, None, f"{role} ids must be integers or strings, got {series.dtype} values "
                                          f"such as {series.iloc[0]}")
    return series.astype(str).to_numpy(dtype=object)


def number_column(series, path: PathLike, what: str) -> np.ndarray:
    """A numeric column as float64 (n,)."""
    import pandas as pd

    try:
        arr = pd.to_numeric(series, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(path, None, f"the {what} column is not numeric: {exc}") from None
    if np.isnan(arr).any():
        raise _missing(series, path, what)
    return arr


def time_column(series, path: PathLike) -> np.ndarray:
    """A time column: numbers as they are (float64), dates and date strings as int64 seconds."""
    import pandas as pd

    if series.dtype.kind in "iuf":
        return number_column(series, path, "time")
    if series.isna().any():
        raise _missing(series, path, "time")
    try:
        stamps = pd.to_datetime(series, errors="raise", format="ISO8601")
    except (ValueError, TypeError):
        stamps = None
    try:
        if stamps is None:
            stamps = pd.to_datetime(series, errors="raise", format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataFormatError(path, None, f"the time column holds neither numbers nor dates: {exc}") from None
    return stamps.to_numpy().astype("datetime64[s]").astype(np.int64)


def _frame_to_interactions(df, roles: Dict[str, int], path: PathLike, all_columns: bool = False) -> Interactions:
    order = list(range(df.shape[1])) if all_columns else sorted(set(roles.values()))  # the frame's columns
    col = lambda r: df.iloc[:, order.index(roles[r])]  # noqa: E731
    return Interactions(
        id_column(col("user"), path, "user"),
        id_column(col("item"), path, "item"),
        number_column(col("rating"), path, "rating") if "rating" in roles else None,
        time_column(col("time"), path) if "time" in roles else None,
    )


def read_table(path: PathLike, fmt: str, columns: Optional[Dict[str, Column]] = None) -> Interactions:
    """Read a ``csv`` (comma), ``tsv`` (tab) or ``inter`` (RecBole: tab, typed header) file.

    Blank lines are skipped, quoted fields may hold the separator, ids may be strings.
    """
    import pandas as pd

    columns = columns or {}
    sep = "," if fmt == "csv" else "\t"
    names = first_record(path, sep)
    if not names:
        return Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64))
    header = fmt == "inter" or table_has_header(names, columns, path)
    roles = resolve_columns(names, columns, path, header)
    try:  # every column is parsed (not usecols): a row with extra fields must be an error
        df = read_csv_strict(path, sep=sep, header=0 if header else None, skip_blank_lines=True,
                             names=None if header else range(len(names)))
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataFormatError(path, None, f"not a valid {fmt.upper()} file: {' '.join(str(exc).split())}") from None
    return _frame_to_interactions(df, roles, path, all_columns=True)


def read_parquet(path: PathLike, columns: Optional[Dict[str, Column]] = None) -> Interactions:
    """Read a Parquet file (needs pyarrow); columns by name as for CSV."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow: pip install -e '.[parquet]'") from None
    try:
        names = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError kinds for a damaged file
        raise DataFormatError(path, None, f"not a readable Parquet file: {exc}") from None
    roles = resolve_columns(names, columns or {}, path, header=True)
    df = pq.read_table(path, columns=[names[j] for j in sorted(set(roles.values()))]).to_pandas()
    return _frame_to_interactions(df, roles, path)
