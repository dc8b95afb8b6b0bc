"""Interaction data sets, splits and id remapping.

A :class:`Dataset` holds three disjoint splits of (user, item) pairs with dense
ids ``0..n_users-1`` and ``0..n_items-1``, and the raw ids they stand for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp


class Pairs(NamedTuple):
    """Interactions of one split: ``users`` and ``items``, int64 arrays of shape (nnz,)."""

    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:  # number of interactions
        return int(self.users.shape[0])


def _empty() -> Pairs:
    return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass
class Dataset:
    """Train / valid / test interactions with dense ids.

    Attributes:
        name: a label for logs and metrics.
        n_users, n_items: sizes of the id ranges.
        train, valid, test: :class:`Pairs` (valid may be empty).
        raw_user_ids, raw_item_ids: the raw id of each dense id, shape (n_users,) / (n_items,):
            int64 for integer ids, numpy ``str`` or object arrays for string ids; None when the
            raw id equals the dense id (synthetic data, files already using ids ``0..n-1``).
    """

    name: str
    n_users: int
    n_items: int
    train: Pairs
    valid: Pairs = field(default_factory=_empty)
    test: Pairs = field(default_factory=_empty)
    raw_user_ids: Optional[np.ndarray] = None
    raw_item_ids: Optional[np.ndarray] = None

    def csr(self, *splits: str) -> sp.csr_matrix:
        """Binary (n_users, n_items) CSR matrix (float32, sorted indices) of the union of ``splits``."""
        us = np.concatenate([getattr(self, s).users for s in splits]) if splits else np.zeros(0, np.int64)
        its = np.concatenate([getattr(self, s).items for s in splits]) if splits else np.zeros(0, np.int64)
        m = sp.csr_matrix(
            (np.ones(us.shape[0], np.float32), (us, its)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        m.sort_indices()
        return m

    def merge_valid(self) -> "Dataset":
        """A copy whose training split is train ∪ valid and whose valid split is empty."""
        merged = Pairs(
            np.concatenate([self.train.users, self.valid.users]),
            np.concatenate([self.train.items, self.valid.items]),
        )
        return Dataset(self.name, self.n_users, self.n_items, merged, _empty(), self.test,
                       self.raw_user_ids, self.raw_item_ids)

    def stats(self) -> Dict[str, int]:
        """Sizes, for logs and metrics.json."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
        }


def unique_sorted(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (sort + diff; numpy's hash-based unique is far slower here)."""
    keys = np.sort(keys)
    if keys.shape[0] == 0:
        return keys
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def dedupe(users: np.ndarray, items: np.ndarray) -> Pairs:
    """Drop repeated (user, item) pairs; the result is sorted by (user, item)."""
    if users.size == 0:
        return _empty()
    n_items = int(items.max()) + 1
    keys = unique_sorted(users.astype(np.int64) * n_items + items.astype(np.int64))
    return Pairs(keys // n_items, keys % n_items)


def remap(splits: Sequence[Pairs]) -> Tuple[list, int, int]:
    """Map raw ids of all splits jointly onto dense ranges.

    Returns:
        (remapped splits, n_users, n_items). Ids keep their relative order.
    """
    all_u = np.concatenate([s.users for s in splits])
    all_i = np.concatenate([s.items for s in splits])
    uniq_u, inv_u = np.unique(all_u, return_inverse=True)
    uniq_i, inv_i = np.unique(all_i, return_inverse=True)
    out, start = [], 0
    for s in splits:
        n = len(s)
        out.append(Pairs(inv_u[start : start + n].astype(np.int64), inv_i[start : start + n].astype(np.int64)))
        start += n
    return out, int(uniq_u.shape[0]), int(uniq_i.shape[0])


def paper_split(
    users: np.ndarray,
    items: np.ndarray,
    seed: int,
    test_frac: float = 0.3,
    valid_frac: float = 0.1,
) -> Tuple[Pairs, Pairs, Pairs]:
    """The HashGNN protocol: per user, a random ``test_frac`` of interactions is test,
    and ``valid_frac`` of the remaining training interactions is validation.

    Counts are rounded per user; a user always keeps at least one training item.
    Vectorised (a sort, no per-user loop). Duplicated pairs are removed first.

    Returns:
        (train, valid, test) :class:`Pairs`, raw ids unchanged.
    """
    pairs = dedupe(users, items)
    u, i = pairs.users, pairs.items
    n = u.shape[0]
    if n == 0:
        return _empty(), _empty(), _empty()
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), u))  # users grouped, random order within a user
    return _split_grouped(u[order], i[order], test_frac, valid_frac)


def temporal_split(
    users: np.ndarray,
    items: np.ndarray,
    time: np.ndarray,
    test_frac: float = 0.3,
    valid_frac: float = 0.1,
) -> Tuple[Pairs, Pairs, Pairs]:
    """The paper protocol's counts, by time: per user, the latest ``test_frac`` of interactions
    are test and the latest ``valid_frac`` of the rest validation (a user always keeps one
    training item). A pair seen more than once counts at its first time (a repeat is not new);
    equal times keep file order.

    Args:
        users, items: int64 (n,) dense ids. time: (n,) numbers (any unit).

    Returns:
        (train, valid, test) :class:`Pairs`.
    """
    n = users.shape[0]
    if n == 0:
        return _empty(), _empty(), _empty()
    pos = np.arange(n)
    n_items = int(items.max()) + 1
    key = users.astype(np.int64) * n_items + items
    first = np.lexsort((pos, time, key))
    keep = first[np.concatenate([[True], key[first][1:] != key[first][:-1]])]
    u, i, t, p = users[keep], items[keep], time[keep], pos[keep]
    order = np.lexsort((-p, -t, u))  # users grouped, latest first
    return _split_grouped(u[order], i[order], test_frac, valid_frac)


def _split_grouped(u: np.ndarray, i: np.ndarray, test_frac: float,
                   valid_frac: float) -> Tuple[Pairs, Pairs, Pairs]:
    """Split pairs grouped by user: the first ``round(n·test_frac)`` of each user's group are
    test, the next ``round((n - n_test)·valid_frac)`` validation, the rest training."""
    n = u.shape[0]
    _, first, counts = np.unique(u, return_index=True, return_counts=True)
    per_row_count = np.repeat(counts, counts)
    rank = np.arange(n) - np.repeat(first, counts)
    n_test = np.minimum(np.rint(per_row_count * test_frac), per_row_count - 1)
    n_valid = np.minimum(np.rint((per_row_count - n_test) * valid_frac), per_row_count - n_test - 1)
    is_test = rank < n_test
    is_valid = (~is_test) & (rank < n_test + n_valid)
    is_train = ~(is_test | is_valid)
    return (Pairs(u[is_train], i[is_train]), Pairs(u[is_valid], i[is_valid]), Pairs(u[is_test], i[is_test]))


def make_dataset(
    name: str, train: Pairs, valid: Pairs, test: Pairs, *, dense_remap: bool = True,
    n_users: Optional[int] = None, n_items: Optional[int] = None,
) -> Dataset:
    """Build a :class:`Dataset`, remapping ids to dense ranges unless told not to."""
    if dense_remap:
        (train, valid, test), nu, ni = remap([train, valid, test])
    else:
        allp = [train, valid, test]
        nu = n_users if n_users is not None else int(max((p.users.max() for p in allp if len(p)), default=-1)) + 1
        ni = n_items if n_items is not None else int(max((p.items.max() for p in allp if len(p)), default=-1)) + 1
    return Dataset(name, nu, ni, train, valid, test)


def encode_ids(raw: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Dense ids for raw ids, in the raw ids' sorted order (so integer ids keep their order and
    files already using ``0..n-1`` keep their ids).

    Args:
        raw: (n,) int64, or object / str array of string ids.

    Returns:
        (dense int64 (n,), raw id of each dense id (n_distinct,)), the latter None when it is
        ``arange(n_distinct)`` (raw == dense).
    """
    import pandas as pd

    codes, uniques = pd.factorize(raw, sort=True)
    uniques = np.asarray(uniques)
    if uniques.dtype.kind in "iu":
        uniques = uniques.astype(np.int64)
        if uniques.shape[0] == 0 or (uniques[0] == 0 and uniques[-1] == uniques.shape[0] - 1):
            return codes.astype(np.int64), None  # sorted and distinct: 0..n-1 exactly
    return codes.astype(np.int64), uniques


def drop_repeats(p: Pairs) -> Pairs:
    """``p`` without repeated (user, item) pairs, first occurrences in their original order
    (the order of a given split is kept: training shuffles with a seeded permutation of it)."""
    if len(p) == 0:
        return p
    key = p.users * (int(p.items.max()) + 1) + p.items
    _, first = np.unique(key, return_index=True)
    if first.shape[0] == key.shape[0]:
        return p
    first.sort()
    return Pairs(p.users[first], p.items[first])
