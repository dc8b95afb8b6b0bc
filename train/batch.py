"""A training batch's node rows, read once per distinct node."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``x[idx]`` for an int64 index of any shape: (*idx.shape, *x.shape[1:]).

    By ``index_select``, whose backward (``index_add_``) sums each row's gradients in a fixed
    order: the backward of ``x[idx]`` (``index_put_`` with accumulate) is not deterministic with
    more than one thread, and is slower."""
    return x.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *x.shape[1:])


@dataclass
class BatchRows:
    """The rows a step's loss reads for groups of nodes (users (B,), positives (B,), negatives
    (B, T), as global node ids).

    Attributes:
        out: float32 (R, d_out) encoder outputs; rows [0, n_users) are users, the rest items.
        base: float32 (R, d_in) the same rows' ID embeddings (for the L2 term).
        n_users: number of user rows (heads with a layer per side split there).
        index: per group, int64 row numbers into ``out`` of the group's shape; None when the
            groups' rows are ``out``'s rows in order (whole-graph training gathers per entry).
        shapes: the groups' shapes.

    Sampled training holds one row per distinct node, so the hash layer and everything else
    computed per node runs once per node rather than once per pair.
    """

    out: torch.Tensor
    base: torch.Tensor
    n_users: int
    index: Optional[List[torch.Tensor]]
    shapes: List[Tuple[int, ...]]

    def pick(self, t: torch.Tensor, g: int) -> torch.Tensor:
        """Group g's rows of a per-row tensor t (R, k): (*shapes[g], k)."""
        if self.index is not None:
            return take_rows(t, self.index[g])
        start = sum(int(np.prod(s)) for s in self.shapes[:g])
        n = int(np.prod(self.shapes[g]))
        return t[start:start + n].reshape(*self.shapes[g], t.shape[-1])

    def sum_sq(self, parts: Sequence[Tuple[int, Optional[int]]]) -> torch.Tensor:
        """Σ of the squared norms of the base rows of group entries, one term per entry (a node
        met twice counts twice); ``parts``: (group, column of a 2-D group or None for all)."""
        if self.index is None:
            total = torch.zeros((), dtype=self.base.dtype, device=self.base.device)
            for g, col in parts:
                rows = self.pick(self.base, g)
                total = total + (rows if col is None else rows[:, col]).pow(2).sum()
            return total
        count = torch.zeros(self.base.shape[0], dtype=self.base.dtype, device=self.base.device)
        for g, col in parts:
            idx = self.index[g] if col is None else self.index[g][:, col]
            count.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=count.dtype,
                                                             device=count.device))
        return (count * self.base.pow(2).sum(1)).sum()
