"""Optimisers for mini-batch training: row-wise (lazy) Adam for embedding tables, and a group
of optimisers stepped as one."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch


def _compile_row_adam() -> Optional[Callable[..., None]]:
    """The fused row-wise Adam kernel (numba), or None where numba is not installed: one pass
    over each touched row instead of the ten table-sized passes of the torch expression."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is in the train extra
        return None

    @numba.njit(parallel=True, cache=True)
    def row_adam(table, exp_avg, exp_avg_sq, rows, grad, b1, b2, step_size, eps):  # pragma: no cover
        for k in numba.prange(rows.shape[0]):
            r = rows[k]
            for j in range(table.shape[1]):
                g = grad[k, j]
                m = b1 * exp_avg[r, j] + (1 - b1) * g
                v = b2 * exp_avg_sq[r, j] + (1 - b2) * g * g
                exp_avg[r, j] = m
                exp_avg_sq[r, j] = v
                table[r, j] -= step_size * m / (math.sqrt(v) + eps)

    return row_adam


_ROW_ADAM: Any = "unset"


def _row_adam_kernel() -> Optional[Callable[..., None]]:
    global _ROW_ADAM
    if _ROW_ADAM == "unset":
        _ROW_ADAM = _compile_row_adam()
    return _ROW_ADAM


class RowAdam:
    """Adam on the rows of an embedding table that a step touched, the others left alone (as
    ``torch.optim.SparseAdam``; the bias corrections count all steps).

    The gradient comes as a dense (n, d) block of distinct rows, the rows a sampled batch read,
    so no sparse tensor is built or coalesced: a step costs its rows, not the table.
    """

    def __init__(self, table: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool = True) -> None:
        """``fused``: the numba kernel where it applies (CPU float32; rows must be distinct, as
        a sampled batch's are); False: the torch expression."""
        self.table = table
        self.fused = fused
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
        self.t += 1
        b1, b2 = self.betas
        step_size = self.param_groups[0]["lr"] * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        if not (self.fused and self._step_fused(step_size)):
            self._step_torch(step_size)
        self.rows = self.grad = None

    def _step_torch(self, step_size: float) -> None:
        b1, b2 = self.betas
        rows, g = self.rows, self.grad
        m = self.exp_avg.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
        v = self.exp_avg_sq.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        self.exp_avg.index_copy_(0, rows, m)
        self.exp_avg_sq.index_copy_(0, rows, v)
        update = m.div_(v.sqrt_().add_(self.eps)).mul_(-step_size)
        self.table.index_add_(0, rows, update)

    def _step_fused(self, step_size: float) -> bool:
        """The numba kernel on CPU float32 tensors; False (nothing done) where it does not apply."""
        kernel = _row_adam_kernel()
        tensors = (self.table, self.exp_avg, self.exp_avg_sq, self.grad)
        if kernel is None or any(t.device.type != "cpu" or t.dtype != torch.float32
                                 or not t.is_contiguous() for t in tensors):
            return False
        import numba

        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        f32 = np.float32
        kernel(self.table.numpy(), self.exp_avg.numpy(), self.exp_avg_sq.numpy(),
               self.rows.numpy().astype(np.int64, copy=False), self.grad.numpy(),
               f32(self.betas[0]), f32(self.betas[1]), f32(step_size), f32(self.eps))
        return True

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
