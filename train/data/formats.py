"""Interaction file formats: the names ``--format`` takes, detection, and split directories.

Detection (no ``--format``) looks at the content and takes a format only when one reading is
possible:

- Parquet by its magic bytes or ``.parquet``; RecBole by ``.inter`` or a ``name:type`` header;
- a first line ``<digits>:`` is Netflix, one holding ``::`` MovieLens ``ratings.dat``, one
  holding ``,`` CSV, a tab-separated first line naming known columns (``user_id``…) TSV;
- every other file is whitespace-separated text, read whole, and every line of every file of
  the data set is considered together:

  - a token that is not a non-negative integer (a weight ``0.5``, a string id, a ``#`` comment):
    an edge list (LightGCN holds integers only);
  - a line of 1 token or of more than 4, or lines of different lengths in one file: LightGCN
    (every line of an edge list file has the same 2, 3 or 4 fields: ``user item [weight [time]]``);
  - only 2-token lines: an edge list (both readings give the same pairs);
  - otherwise (each file's lines all 3 or all 4 integers, e.g. ``user item weight``) both
    readings are possible and give different data: a :class:`DataFormatError` names both, with
    the number of interactions each would give, and asks for ``--format``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .readers import (
    DataFormatError, Interactions, lightgcn_pairs, read_edges, read_lightgcn, read_movielens,
    read_netflix_interactions,
)
from .tabular import ALIASES, ROLES, Column, has_header, read_parquet, read_table
from .tokens import IntTokens, NotIntegers, first_bytes, read_int_tokens

FORMATS = ("lightgcn", "edges", "csv", "tsv", "inter", "parquet", "movielens", "netflix")
TABULAR = ("csv", "tsv", "inter", "parquet")
SPLITS = ("train", "valid", "test")
_TEXT = "text"  # sniffed: whitespace-separated, lightgcn or edges (decided over all files)
_TYPED = re.compile(r"^[^:\s]+:(token|token_seq|float|float_seq)$")


def _first_line(head: bytes) -> str:
    for line in head.decode("utf-8-sig", "replace").splitlines():
        if line.strip():
            return line
    return ""


def _header_like(tokens: List[str]) -> bool:
    """Two or more known column names (one could be a string id that happens to read ``user``)."""
    known = {a for r in ROLES for a in ALIASES[r]}
    return sum(t.strip().lower() in known for t in tokens) >= 2


def sniff(path: Path) -> str:
    """The format a file's name or first line proves, or ``text`` (lightgcn or edges, decided
    by :func:`_decide_text` over the whole data set)."""
    head = first_bytes(path)
    if path.suffix == ".parquet" or head[:4] == b"PAR1":
        return "parquet"
    line = _first_line(head)
    fields = line.split("\t")
    if path.suffix == ".inter" or (len(fields) >= 2 and all(_TYPED.match(f.strip()) for f in fields)):
        return "inter"
    if re.fullmatch(r"\s*\d+:\s*", line):
        return "netflix"
    if "::" in line:
        return "movielens"
    if "," in line:
        return "csv"
    if "\t" in line and has_header(fields, {}):
        return "tsv"
    if _header_like(line.split()):
        raise DataFormatError(path, 1, f"the first line {line[:80]!r} looks like a header: a space-separated "
                                       "file has none; write it as CSV or TSV")
    return _TEXT


def _decide_text(paths: List[Path]) -> Tuple[str, Optional[List[IntTokens]]]:
    """lightgcn or edges for whitespace-separated files (rules in the module docstring), with
    their integer tokens when all are integers (so they are not read twice)."""
    toks: List[IntTokens] = []
    for p in paths:
        try:
            toks.append(read_int_tokens(p))
        except NotIntegers:
            return "edges", None
    counts = np.concatenate([t.counts for t in toks])
    ragged = any(t.counts.size and np.any(t.counts != t.counts[0]) for t in toks)  # within one file
    if ragged or (counts.size and (counts.min() < 2 or counts.max() > 4)):
        return "lightgcn", toks
    if np.all(counts == 2):
        return "edges", toks
    as_lightgcn = int((counts - 1).sum())
    names = ", ".join(str(p) for p in paths)
    raise DataFormatError(names, None, (
        f"ambiguous format: each file's lines all hold {int(counts.max())} (or 2) integers, which reads as "
        f"LightGCN ('user item item ...': {as_lightgcn:,} interactions) or as an edge list ('user item [weight [time]]': "
        f"{counts.size:,} interactions); pass --format lightgcn or --format edges"))


def _from_tokens(fmt: str, path: Path, tok: IntTokens) -> Interactions:
    if fmt == "lightgcn":
        return Interactions(*lightgcn_pairs(tok.values, tok.counts))
    from .readers import _edges_from_ints

    return _edges_from_ints(path, tok.values, tok.counts, tok.linenos)


def read_file(path: Path, fmt: str, columns: Optional[Dict[str, Column]] = None,
              want_time: bool = False) -> Interactions:
    """Read one file in format ``fmt`` (one of :data:`FORMATS`)."""
    if columns and fmt not in TABULAR:
        raise ValueError(f"columns apply to csv, tsv, inter and parquet files, not to the {fmt} format")
    if fmt == "lightgcn":
        return Interactions(*read_lightgcn(path))
    if fmt == "edges":
        if _header_like(_first_line(first_bytes(path)).split()):
            raise DataFormatError(path, 1, "an edge list has no header line; read this file as csv or tsv")
        return read_edges(path)
    if fmt in ("csv", "tsv", "inter"):
        return read_table(path, fmt, columns)
    if fmt == "parquet":
        return read_parquet(path, columns)
    if fmt == "movielens":
        return read_movielens(path)
    if fmt == "netflix":
        return read_netflix_interactions([path], want_time)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def read_files(paths: List[Path], fmt: Optional[str], columns: Optional[Dict[str, Column]] = None,
               want_time: bool = False) -> Tuple[str, List[Interactions]]:
    """Read the files of one data set (all in one format: ``fmt``, or detected).

    Returns:
        (the format, one :class:`Interactions` per path).
    """
    if fmt is not None:
        return fmt, [read_file(p, fmt, columns, want_time) for p in paths]
    kinds = {p: sniff(p) for p in paths}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{p.name}: {k if k != _TEXT else 'lightgcn/edges'}" for p, k in kinds.items())
        raise DataFormatError(paths[0].parent, None, f"the files of one data set look like different formats "
                                                     f"({listed}); pass --format")
    kind = kinds[paths[0]]
    if kind != _TEXT:
        return kind, [read_file(p, kind, columns, want_time) for p in paths]
    if columns:
        raise ValueError("columns apply to csv, tsv, inter and parquet files; these are whitespace-separated text")
    kind, toks = _decide_text(paths)
    if toks is None:
        return kind, [read_file(p, kind) for p in paths]
    return kind, [_from_tokens(kind, p, t) for p, t in zip(paths, toks)]


def split_files(d: Path) -> Optional[Dict[str, Path]]:
    """``train`` / ``valid`` / ``test`` files of a split directory (``train.txt``, ``train.csv``,
    RecBole's ``NAME.train.inter`` …; ``valid`` is optional), or None when it has no train file."""
    found: Dict[str, List[Path]] = {s: [] for s in SPLITS}
    for f in sorted(d.iterdir()):
        parts = f.name.split(".")
        if not f.is_file() or len(parts) < 2:
            continue
        for s in SPLITS:
            if parts[0] == s or (len(parts) >= 3 and parts[-2] == s):
                found[s].append(f)
    if not found["train"]:
        return None
    for s, fs in found.items():
        if len(fs) > 1:
            raise DataFormatError(d, None, f"more than one {s} file: {', '.join(f.name for f in fs)}")
    if not found["test"]:
        want = found["train"][0].name.replace("train", "test")
        raise FileNotFoundError(f"{d / want} is missing (a split directory needs train and test files)")
    return {s: fs[0] for s, fs in found.items() if fs}


def single_files(d: Path, fmt: Optional[str]) -> Tuple[List[Path], Optional[str]]:
    """The data files of a directory that is not split: Netflix's ``combined_data_*.txt``,
    MovieLens' ``ratings.dat`` / ``ratings.csv``, or its one ``.inter`` / ``.parquet`` file."""
    netflix = sorted(d.glob("combined_data_*.txt"))
    if netflix and fmt in (None, "netflix"):
        return netflix, "netflix"
    for name, kind in (("ratings.dat", "movielens"), ("ratings.csv", "csv")):
        if (d / name).is_file() and fmt in (None, kind):
            return [d / name], kind
    for ext, kind in ((".inter", "inter"), (".parquet", "parquet")):
        files = sorted(d.glob(f"*{ext}"))
        if len(files) == 1 and fmt in (None, kind):
            return files, kind
    raise FileNotFoundError(
        f"{d}: no data files found: expected train/test files (train.txt, train.csv, NAME.train.inter, ...), "
        "ratings.dat, ratings.csv, combined_data_*.txt, or one .inter or .parquet file"
        + (f" for --format {fmt}" if fmt else ""))


__all__ = ["FORMATS", "TABULAR", "ALIASES", "ROLES", "read_file", "read_files", "sniff", "split_files",
           "single_files"]
