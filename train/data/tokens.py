"""A vectorised reader of whitespace-separated non-negative integers, line structure kept.

The LightGCN format has a variable number of tokens per line, which pandas' parsers cannot
read without padding to floats (ids above 2**53 would lose digits), and a Python loop over
100M lines takes minutes. This reader classifies bytes with a lookup table and builds each
token's value digit by digit over all tokens of a chunk at once (numpy only).
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

CHUNK_BYTES = 1 << 24  # 16 MiB: bounds the per-byte temporaries to a few hundred MB
MAX_DIGITS = 18        # every 18-digit number fits int64

# byte class: 0 whitespace (space, \t, \n, \v, \f, \r), 1 digit, 2 anything else
_CLASS = np.full(256, 2, np.uint8)
_CLASS[[9, 10, 11, 12, 13, 32]] = 0
_CLASS[48:58] = 1


class IntTokens(NamedTuple):
    """The non-blank lines of a file of integer tokens.

    Attributes:
        values: int64 (n_tokens,), every token in file order.
        counts: int64 (n_lines,), tokens on each non-blank line.
        linenos: int64 (n_lines,), 1-based line number of each non-blank line (for messages).
    """

    values: np.ndarray
    counts: np.ndarray
    linenos: np.ndarray

    def line_starts(self) -> np.ndarray:
        """int64 (n_lines,): index into ``values`` of each line's first token."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


class NotIntegers(Exception):
    """A token that is not a non-negative integer (or longer than :data:`MAX_DIGITS` digits)."""

    def __init__(self, lineno: int, token: str) -> None:
        super().__init__(f"line {lineno}: {token!r} is not a non-negative integer of at most {MAX_DIGITS} digits")
        self.lineno = lineno
        self.token = token


def _chunk(b: np.ndarray, line0: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of one chunk ending at a line boundary; ``line0`` is its first line's 0-based number.

    Returns (values int64, counts int64, line numbers int64 0-based) of its non-blank lines.
    """
    cls = _CLASS[b]
    newlines = np.flatnonzero(b == 10)
    bad = np.flatnonzero(cls == 2)
    tok = (cls != 0).view(np.int8)
    edge = np.diff(tok, prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    lengths = ends - starts
    if bad.size or (lengths.size and lengths.max() > MAX_DIGITS):
        pos = int(bad[0]) if bad.size else int(starts[np.argmax(lengths > MAX_DIGITS)])
        t = int(np.searchsorted(starts, pos, side="right")) - 1
        lineno = line0 + int(np.searchsorted(newlines, pos)) + 1
        raise NotIntegers(lineno, bytes(b[starts[t]:ends[t]]).decode("utf-8", "replace")[:40])
    values = np.zeros(starts.shape[0], np.int64)
    top = int(lengths.max()) if lengths.size else 0
    for p in range(top):  # one pass per digit position, over all tokens at once
        more = lengths > p
        digit = b[np.minimum(starts + p, b.shape[0] - 1)].astype(np.int64) - 48
        values = np.where(more, values * 10 + digit, values)
    tok_line = np.searchsorted(newlines, starts).astype(np.int64)
    first = np.flatnonzero(np.diff(tok_line, prepend=-1)) if tok_line.size else np.zeros(0, np.int64)
    counts = np.diff(np.append(first, tok_line.shape[0])).astype(np.int64)
    return values, counts, tok_line[first] + line0


def read_int_tokens(path: PathLike, chunk_bytes: int = CHUNK_BYTES) -> IntTokens:
    """Read a file of whitespace-separated non-negative integers, one record per line.

    Raises:
        NotIntegers: at the first token that is not a run of at most 18 digits (the caller
            turns it into a format error or tries another reading).
    """
    vals: List[np.ndarray] = []
    cnts: List[np.ndarray] = []
    lines: List[np.ndarray] = []
    line0 = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            data = carry + block
            if not block:
                carry = b""
            else:
                cut = data.rfind(b"\n") + 1  # a chunk ends at a line boundary; the rest waits
                data, carry = data[:cut], data[cut:]
            if data:
                v, c, ln = _chunk(np.frombuffer(data, np.uint8), line0)
                vals.append(v)
                cnts.append(c)
                lines.append(ln)
                line0 += data.count(b"\n")
            if not block:
                break
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return IntTokens(cat(vals), cat(cnts), cat(lines) + 1)


def first_bytes(path: PathLike, n: int = 1 << 16) -> bytes:
    """The first ``n`` bytes of a file (for sniffing its format)."""
    with open(path, "rb") as f:
        return f.read(n)


__all__ = ["IntTokens", "NotIntegers", "read_int_tokens", "first_bytes"]
