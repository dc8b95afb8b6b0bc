"""Trainer speed and memory at scale: ``python benchmarks/train_scale.py [options]``.

Loads (or generates) a data set, builds the trainer, times training steps and prints one JSON
line: set-up time, seconds per step (wall and process CPU), steps per epoch and the epoch time
they imply (or, with ``--epoch``, one whole epoch timed), the validation and embedding export
times, and the peak RSS. Shapes: ``alibaba`` (601,946 users x 4,167,708 items, 28.5M
interactions), ``netflix`` (480,189 x 17,770, 100,480,507), ``gowalla``/``ml-1m`` (the shared
files), ``synthetic:...`` or any ``--data`` value; ``--fraction F`` scales a synthetic shape.

With ``--fit OUT`` it trains a whole run instead (``train.trainer.fit`` into the run directory
OUT: validation each epoch, early stopping, the final test, codes and checkpoint; ``--resume``
continues it) and prints the run's metrics.

Examples::

    python benchmarks/train_scale.py --shape alibaba --batch-size 65536 --steps 5
    python benchmarks/train_scale.py --shape alibaba --fraction 0.05 --train-mode full --steps 3
    python benchmarks/train_scale.py --shape netflix --batch-size 262144 --negative-pool 16384 \
        --lr 0.01 --cache /tmp/netflix.npz --fit runs/netflix --epochs 1 --test-modes hamr,hies
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.config import FitConfig  # noqa: E402
from train.data import Dataset, Pairs, load_dataset  # noqa: E402
from train.trainer import Trainer, TrainingInterrupted, fit, peak_rss_gb  # noqa: E402

SHAPES = {
    "alibaba": (601_946, 4_167_708, 28_500_000),
    "netflix": (480_189, 17_770, 100_480_507),
}


def data_spec(shape: str, fraction: float) -> str:
    if shape in SHAPES:
        u, i, e = (max(1, round(x * fraction)) for x in SHAPES[shape])
        return f"synthetic:users={u},items={i},edges={e}"
    return shape


def load_cached(spec: str, cache: str) -> Dataset:
    """``load_dataset(spec)``, kept in the npz file ``cache`` for the next run (a synthetic graph
    of 10^8 interactions takes minutes to draw and split)."""
    path = Path(cache)
    if path.exists():
        with np.load(path) as z:
            if str(z["spec"]) == spec:
                parts = [Pairs(z[f"{s}_u"], z[f"{s}_i"]) for s in ("train", "valid", "test")]
                return Dataset(spec, int(z["n_users"]), int(z["n_items"]), *parts)
    ds = load_dataset(spec, seed=0)
    arrays = {f"{s}_{c}": getattr(getattr(ds, s), f) for s in ("train", "valid", "test")
              for c, f in (("u", "users"), ("i", "items"))}
    np.savez(path, spec=spec, n_users=ds.n_users, n_items=ds.n_items, **arrays)
    return ds


def time_steps(tr: Trainer, steps: int) -> dict:
    """Wall and CPU seconds per step over ``steps`` steps after one warm-up step."""
    u, i = tr.ds.train.users, tr.ds.train.items
    perm = np.random.default_rng(0).permutation(len(u))
    bs = tr.cfg.batch_size
    batch = lambda b: perm[(b * bs) % len(u):][:bs]  # noqa: E731
    tr.step(u[batch(0)], i[batch(0)])
    t0, c0 = time.perf_counter(), time.process_time()
    for b in range(1, steps + 1):
        tr.step(u[batch(b)], i[batch(b)])
    wall = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    return {"step_s": wall, "step_cpu_s": cpu, "epoch_min_estimate": wall * tr.batches_per_epoch / 60}


def fit_run(cfg: FitConfig, ds: Dataset, out: dict) -> int:
    """Train the whole run (``--fit``) and print its wall time, peak RSS and final metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.perf_counter()
    try:
        metrics, rc = fit(cfg, ds), 0
    except TrainingInterrupted as stop:  # Ctrl-C: the best model was still tested and written
        metrics, rc = stop.metrics, 130
    out.update(fit_min=(time.perf_counter() - t0) / 60, peak_rss_gb=peak_rss_gb())
    out["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    print(json.dumps(out, default=str))
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="alibaba", help="alibaba | netflix | a --data value (default %(default)s)")
    p.add_argument("--fraction", type=float, default=1.0, help="scale of a named synthetic shape")
    p.add_argument("--method", default="hashgnn")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-mode", default="sampled", choices=["auto", "full", "sampled"])
    p.add_argument("--fanout", default=None, help="e.g. 10,5")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--epoch", action="store_true", help="also train one whole epoch and time it")
    p.add_argument("--epoch-steps", type=int, default=0,
                   help="also time the epoch loop (background sampling included) over its first N batches")
    p.add_argument("--eval-users", type=int, default=20000, help="users of the timed validation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--negative-pool", type=int, default=0)
    p.add_argument("--cache", default=None, help="npz file keeping the loaded data set between runs")
    p.add_argument("--fit", default=None, metavar="OUT",
                   help="train a whole run into the run directory OUT instead of timing steps")
    p.add_argument("--epochs", type=int, default=30, help="--fit: planned epochs")
    p.add_argument("--patience", type=int, default=2, help="--fit: validations without improvement")
    p.add_argument("--test-modes", default="hamr,hies", help="--fit: modes of the final test")
    p.add_argument("--max-minutes", type=float, default=None, help="--fit: training wall-time limit")
    p.add_argument("--resume", action="store_true", help="--fit: continue OUT from its checkpoint")
    ns = p.parse_args()
    spec = data_spec(ns.shape, ns.fraction)
    out: dict = {"data": spec, "threads": ns.threads, "batch_size": ns.batch_size, "load1": os.getloadavg()[0]}
    t0 = time.perf_counter()
    ds = load_cached(spec, ns.cache) if ns.cache else load_dataset(spec, seed=0)
    out.update(load_s=time.perf_counter() - t0, **ds.stats())
    cfg = FitConfig(data=spec, method=ns.method, bits=ns.bits, batch_size=ns.batch_size, lr=ns.lr,
                    train_mode=ns.train_mode, threads=ns.threads, eval_users=ns.eval_users, progress=False,
                    negative_pool=ns.negative_pool,
                    fanout=[int(x) for x in ns.fanout.split(",")] if ns.fanout else None,
                    out=ns.fit or "/tmp/train_scale_bench", epochs=ns.epochs, patience=ns.patience,
                    test_modes=ns.test_modes.split(","), max_minutes=ns.max_minutes, resume=ns.resume)
    if ns.fit:
        return fit_run(cfg, ds, out)
    t0 = time.perf_counter()
    tr = Trainer(cfg, ds)
    out.update(setup_s=time.perf_counter() - t0, train_mode="sampled" if tr.sampled else "full",
               steps_per_epoch=tr.batches_per_epoch)
    out.update(time_steps(tr, ns.steps))
    if ns.epoch_steps:
        full, tr.batches_per_epoch = tr.batches_per_epoch, ns.epoch_steps
        t0 = time.perf_counter()
        tr._train_epoch()
        loop = (time.perf_counter() - t0) / ns.epoch_steps
        tr.batches_per_epoch = full
        out.update(loop_step_s=loop, loop_epoch_min_estimate=loop * full / 60)
    if ns.epoch:
        t0 = time.perf_counter()
        out["epoch_loss"] = tr._train_epoch()
        out["epoch_min"] = (time.perf_counter() - t0) / 60
    t0 = time.perf_counter()
    out["val"] = tr.validate()
    out["validate_s"] = time.perf_counter() - t0
    out["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
