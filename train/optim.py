"""Optimisers for mini-batch training: row-wise (lazy) Adam for embedding tables, and a group
of optimisers stepped as one."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch


class RowAdam:
    """Adam on the rows of an embedding table that a step touched, the others left alone (as
    ``torch.optim.SparseAdam``; the bias corrections count all steps).

    The gradient comes as a dense (n, d) block of distinct rows, the rows a sampled batch read,
    so no sparse tensor is built or coalesced: a step costs its rows, not the table.
    """

    def __init__(self, table: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.table = table
        self.param_groups: List[Dict[str, Any]] = [{"params": [table], "lr": lr}]
        self.betas, self.eps = betas, eps
        self.t = 0
        self.exp_avg = torch.zeros_like(table)
        self.exp_avg_sq = torch.zeros_like(table)
        self.rows: Optional[torch.Tensor] = None
        self.grad: Optional[torch.Tensor] = None

    def stage(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """The next step's gradient: int64 (n,) distinct row ids and float (n, d) their gradients."""
        self.rows, self.grad = rows, grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.rows = self.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.rows is None or self.grad is None:
            return
        b1, b2 = self.betas
        self.t += 1
        rows, g = self.rows, self.grad
        m = self.exp_avg.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
        v = self.exp_avg_sq.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        self.exp_avg.index_copy_(0, rows, m)
        self.exp_avg_sq.index_copy_(0, rows, v)
        step_size = self.param_groups[0]["lr"] * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        update = m.div_(v.sqrt_().add_(self.eps)).mul_(-step_size)
        self.table.index_add_(0, rows, update)
        self.rows = self.grad = None

    def state_dict(self) -> Dict[str, Any]:
        return {"t": self.t, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        self.t = int(st["t"])
        self.exp_avg.copy_(st["exp_avg"])
        self.exp_avg_sq.copy_(st["exp_avg_sq"])
        self.param_groups[0]["lr"] = st["lr"]


class Optimizers:
    """Several optimisers stepped as one (Adam for the dense parameters, :class:`RowAdam` for the
    ID-embedding table in sampled training)."""

    def __init__(self, optims: Sequence[Any]) -> None:
        self.optims = list(optims)

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return [g for o in self.optims for g in o.param_groups]

    @property
    def rows(self) -> Optional[RowAdam]:
        """The row-wise optimiser of the embedding table, if this run has one."""
        return next((o for o in self.optims if isinstance(o, RowAdam)), None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optims:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optims:
            o.step()

    def state_dict(self) -> List[Dict[str, Any]]:
        return [o.state_dict() for o in self.optims]

    def load_state_dict(self, states: Any) -> None:
        if isinstance(states, dict):  # a checkpoint of one plain optimiser
            states = [states]
        if len(states) != len(self.optims):
            raise ValueError("the checkpoint's optimiser state does not match this run's training mode "
                             "(--train-mode full or sampled)")
        for o, st in zip(self.optims, states):
            o.load_state_dict(st)
