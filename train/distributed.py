"""Data-parallel training on torch.distributed, launched by ``torchrun``.

``torchrun --nproc-per-node 2 -m train fit ...`` starts one process per rank with ``RANK``,
``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT`` set. Every rank loads the same data and splits
it with the same seed, starts from rank 0's parameters, and takes its share of every batch; after
each backward pass the gradients are averaged over the ranks (dense ones in one flat all-reduce,
as DDP's buckets do; the rows of the embedding table that sampled batches touched by an
all-gather of those rows), so every rank
applies the same update and the model stays identical everywhere. Rank 0 validates, decides early
stopping for all, and writes the outputs.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` in ``0..size-1`` (size 1: no torch.distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process validates and writes the outputs."""
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a
    one-process world. gloo on CPU, nccl on CUDA."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # evaluation on rank 0 can take long at scale while the others wait at a collective
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
    world = World(dist.get_rank(), dist.get_world_size())
    log.info("torch.distributed: rank %d of %d (%s)", world.rank, world.size, dist.get_backend())
    return world


def broadcast_parameters(params: Iterable[torch.Tensor]) -> None:
    """Every rank takes rank 0's values (the model's initial state)."""
    for p in params:
        dist.broadcast(p.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Replace each dense gradient by its mean over the ranks, in one flat all-reduce (no-op in a
    one-process world)."""
    if world.size == 1:
        return
    dense = [p.grad for p in params if p.grad is not None]
    if not dense:
        return
    flat = torch.cat([g.reshape(-1) for g in dense])
    dist.all_reduce(flat)
    flat /= world.size
    at = 0
    for g in dense:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def merge_row_grads(rows: torch.Tensor, grad: torch.Tensor, world: World):
    """The mean over the ranks of a gradient given on some rows of a table: each rank's int64 (n_r,)
    distinct rows and (n_r, d) gradients in, (rows, gradients) over the union of the rows out, the
    same on every rank (rows sorted; a row a rank did not touch counts as zero there)."""
    if world.size == 1:
        return rows, grad
    n = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(n) for _ in range(world.size)]
    dist.all_gather(sizes, n)
    m = int(max(int(s) for s in sizes))
    pad_rows = torch.zeros(m, dtype=rows.dtype, device=rows.device)
    pad_grad = torch.zeros((m, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    pad_rows[: rows.shape[0]], pad_grad[: rows.shape[0]] = rows, grad
    all_rows = [torch.empty_like(pad_rows) for _ in range(world.size)]
    all_grad = [torch.empty_like(pad_grad) for _ in range(world.size)]
    dist.all_gather(all_rows, pad_rows)
    dist.all_gather(all_grad, pad_grad)
    cat_rows = torch.cat([a[: int(s)] for a, s in zip(all_rows, sizes)])
    cat_grad = torch.cat([a[: int(s)] for a, s in zip(all_grad, sizes)])
    uniq, inv = torch.unique(cat_rows, return_inverse=True)
    merged = torch.zeros((uniq.shape[0], grad.shape[1]), dtype=grad.dtype, device=grad.device)
    merged.index_add_(0, inv, cat_grad)  # rank order: the same sums on every rank
    return uniq, merged / world.size


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every rank (validation results, the stop decision)."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
