"""Where a training step's time goes: ``python -m train.profiling [fit options] [--steps N]``.

Builds the same model as ``fit`` (so ``--data gowalla --method lightgcn ...`` profiles
exactly that run), times N steps, and prints torch profiler's per-operator table.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import numpy as np
from torch.profiler import ProfilerActivity, profile

from .cli import _add_fit_args, config_from_args, parse_fit_args
from .trainer import Trainer


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.profiling", description=__doc__)
    _add_fit_args(p)
    p.add_argument("--steps", type=int, default=5)
    ns = parse_fit_args(p, argv)
    cfg = config_from_args(ns)
    cfg.progress = False
    t0 = time.perf_counter()
    tr = Trainer(cfg)
    print(f"set-up (data + graph + model): {time.perf_counter() - t0:.2f}s")
    u, i = tr.ds.train.users, tr.ds.train.items
    perm = np.random.default_rng(0).permutation(len(u))
    bs = cfg.batch_size
    batch = lambda b: (u[perm[b * bs:(b + 1) * bs]], i[perm[b * bs:(b + 1) * bs]])  # noqa: E731
    tr.step(*batch(0))  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in range(1, ns.steps + 1):
            tr.step(*batch(b))
    dt = (time.perf_counter() - t0) / ns.steps
    print(f"{dt:.3f}s per step (profiled), {tr.batches_per_epoch} steps per epoch -> "
          f"~{dt * tr.batches_per_epoch:.1f}s per epoch")
    t0 = time.perf_counter()
    tr.embeddings()
    print(f"export of codes/embeddings: {time.perf_counter() - t0:.2f}s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
