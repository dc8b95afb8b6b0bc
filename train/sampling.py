"""Vectorised negative sampling (no Python loop per edge)."""
from __future__ import annotations

import numpy as np


class NegativeSampler:
    """Uniform item negatives that avoid a user's training items.

    Membership is checked with a binary search over the sorted keys
    ``user * n_items + item``; colliding draws are redrawn a few times (the
    rare survivors are kept: they are a negligible fraction on sparse data).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, rounds: int = 5) -> None:
        self.n_items = n_items
        self.keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
        self.rounds = rounds

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Bool array, same shape as ``items``: True where (user, item) is a training pair."""
        k = users.astype(np.int64) * self.n_items + items
        pos = np.searchsorted(self.keys, k)
        return self.keys[np.minimum(pos, self.keys.shape[0] - 1)] == k

    def sample(self, users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """int64 (len(users), n) item ids."""
        u = np.repeat(users[:, None], n, axis=1)
        items = rng.integers(0, self.n_items, u.shape)
        if self.keys.shape[0] == 0:
            return items
        for _ in range(self.rounds):
            bad = self.is_positive(u, items)
            nbad = int(bad.sum())
            if nbad == 0:
                break
            items[bad] = rng.integers(0, self.n_items, nbad)
        return items
