"""Data-parallel training: two gloo ranks under torchrun average gradients exactly as one process
on the whole batch would, and ``torchrun -m train fit`` trains one model and writes it once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import FitConfig
from train.trainer import fit

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # a hung collective fails the test instead of hanging CI


def torchrun(args, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


RANK_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch, torch.distributed as dist
    from train.distributed import World, average_gradients, merge_row_grads
    dist.init_process_group("gloo")
    world = World(dist.get_rank(), dist.get_world_size())
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    table = torch.randn(20, 4)
    rows_all = [torch.tensor([1, 4, 7, 9]), torch.tensor([4, 5, 9, 19])]
    x_all = torch.randn(2, 8, 4)
    rows = rows_all[world.rank]
    x0 = table.index_select(0, rows).requires_grad_(True)
    loss = (lin(x_all[world.rank]) ** 2).mean() + (x0 ** 3).sum() / 8
    loss.backward()
    average_gradients(lin.parameters(), world)
    merged_rows, merged = merge_row_grads(rows, x0.grad, world)
    torch.save({"w": lin.weight.grad, "b": lin.bias.grad, "rows": merged_rows, "g": merged},
               f"{sys.argv[1]}/rank{world.rank}.pt")
    dist.destroy_process_group()
""")


def test_two_ranks_average_gradients_as_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    res = torchrun(["rank.py", str(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    # one process, both halves in one batch (each half's loss is a mean over its rows: the whole
    # batch's loss is their mean)
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    table = torch.randn(20, 4)
    rows_all = [torch.tensor([1, 4, 7, 9]), torch.tensor([4, 5, 9, 19])]
    x_all = torch.randn(2, 8, 4)
    full = torch.zeros_like(table)
    for r in range(2):
        x0 = table.index_select(0, rows_all[r]).requires_grad_(True)
        loss = ((lin(x_all[r]) ** 2).mean() + (x0 ** 3).sum() / 8) / 2
        loss.backward()
        full.index_add_(0, rows_all[r], x0.grad)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for g in got:  # every rank ends with the same, whole-batch gradients
        assert torch.allclose(g["w"], lin.weight.grad, atol=1e-6)
        assert torch.allclose(g["b"], lin.bias.grad, atol=1e-6)
        assert g["rows"].tolist() == [1, 4, 5, 7, 9, 19]
        assert torch.allclose(g["g"], full[g["rows"]], atol=1e-6)


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_torchrun_fit_trains_one_model_and_writes_it_once(tmp_path: Path, mode: str) -> None:
    data = "synthetic:users=400,items=600,edges=12000"
    common = ["--data", data, "--epochs", "4", "--batch-size", "1024", "--lr", "5e-3", "--threads", "1",
              "--train-mode", mode, "--no-progress"]
    res = torchrun(["-m", "train", "fit", "--out", str(tmp_path / "ddp"), *common], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["train_mode"] == mode
    assert res.stdout.count('"out"') == 1  # only rank 0 reports
    one = fit(FitConfig(data=data, epochs=4, batch_size=1024, lr=5e-3, threads=1, train_mode=mode,
                        out=str(tmp_path / "one"), progress=False))
    # the same batches split over two ranks: the same quality (random ranking: 50/600 = 0.083)
    assert m["hies"]["recall@50"] > 0.25
    assert abs(m["hies"]["recall@50"] - one["hies"]["recall@50"]) < 0.05


def test_torchrun_distill_trains_like_one_process(tmp_path: Path) -> None:
    """--method distill under two ranks: each rank takes its share of the batch's users (the
    teacher's top lists computed on each), one model is written, of one process's quality."""
    data = "synthetic:users=400,items=600,edges=12000"
    teacher = tmp_path / "teacher"
    fit(FitConfig(data=data, method="lightgcn", epochs=6, batch_size=1024, lr=1e-2, threads=1, out=str(teacher),
                  progress=False))
    common = ["--data", data, "--method", "distill", "--teacher", str(teacher), "--bits", "64", "--epochs", "4",
              "--batch-size", "512", "--lr", "1e-2", "--threads", "1", "--no-progress"]
    res = torchrun(["-m", "train", "fit", "--out", str(tmp_path / "ddp"), *common], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and res.stdout.count('"out"') == 1
    one = fit(FitConfig(data=data, method="distill", teacher=str(teacher), bits=64, epochs=4, batch_size=512,
                        lr=1e-2, threads=1, out=str(tmp_path / "one"), progress=False))
    assert m["hamr"]["recall@50"] > 0.25  # random ranking: 50/600 = 0.083
    assert abs(m["hamr"]["recall@50"] - one["hamr"]["recall@50"]) < 0.05
