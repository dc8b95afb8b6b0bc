"""``--method distill``: codes learned from a trained run's ranking (the teacher), checked against
the teacher itself and its data and split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.cli import main
from train.config import FitConfig
from train.data import load_dataset
from train.evaluate import Embeddings, continuous_topk, topk_lists
from train.rundir import RunDirError
from train.teacher import TeacherError
from train.trainer import Trainer, fit

SMALL = "synthetic:users=300,items=400,edges=9000"


@pytest.fixture(scope="module")
def small():
    return load_dataset(SMALL, seed=0)


def _cfg(out: Path, method: str, **kw) -> FitConfig:
    base = dict(data=SMALL, method=method, bits=32, epochs=6, batch_size=512, out=str(out), progress=False,
                emb_dim=16, threads=1, lr=0.01, eval_every=2)
    base.update(kw)
    return FitConfig(**base)


@pytest.fixture(scope="module")
def teacher(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "lightgcn"
    fit(_cfg(out, "lightgcn", epochs=15, eval_every=5), dataset=small)
    return out


def _teacher_emb(path: Path):
    with np.load(path / "codes.npz") as z:
        return z["user_emb"], z["item_emb"]


def test_distilled_codes_rank_like_the_teacher_and_hies_uses_its_embeddings(tmp_path, small, teacher) -> None:
    cfg = _cfg(tmp_path / "d", "distill", teacher=str(teacher))
    tr = Trainer(cfg, dataset=small)
    tu, ti = _teacher_emb(teacher)
    np.testing.assert_array_equal(tr.model.encoder.base.weight.numpy(), np.concatenate([tu, ti]))
    # the positives: each user's top items by the teacher, its training items left out
    want = continuous_topk(tu, ti, np.arange(small.n_users), cfg.distill_top, small.csr("train"))
    np.testing.assert_array_equal(tr.teacher_top.numpy(), want)
    metrics = tr.run()
    with np.load(Path(cfg.out) / "codes.npz") as z:  # HieS re-ranks by the (unchanged) teacher embeddings
        np.testing.assert_array_equal(z["user_emb"], tu)
        np.testing.assert_array_equal(z["item_emb"], ti)
    theirs = json.loads((teacher / "metrics.json").read_text())["continuous"]
    assert {k: v for k, v in metrics["continuous"].items() if k != "seconds"} == \
        {k: v for k, v in theirs.items() if k != "seconds"}
    # the learned codes find the teacher's top items by Hamming ranking more often than random
    # hyperplanes on the teacher's embeddings (its own codes) do
    assert _top_overlap(Path(cfg.out), small, want) > _top_overlap(teacher, small, want) + 0.05


def _top_overlap(run: Path, ds, want: np.ndarray) -> float:
    """Mean share of each user's ``want`` row (the teacher's top items) in its HamR top list."""
    with np.load(run / "codes.npz") as z:
        emb = Embeddings(z["user_codes"], z["item_codes"], z["user_emb"], z["item_emb"], int(z["nbits"]))
    got = topk_lists("hamr", emb, np.arange(ds.n_users), want.shape[1], ds.csr("train"))
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(want, got)]))


def test_teacher_of_other_data_or_split_is_refused(tmp_path, small, teacher) -> None:
    other = load_dataset("synthetic:users=300,items=400,edges=9000", seed=1)  # same sizes, other graph
    with pytest.raises(TeacherError, match="another split"):
        Trainer(_cfg(tmp_path / "a", "distill", teacher=str(teacher), seed=1), dataset=other)
    bigger = load_dataset("synthetic:users=310,items=400,edges=9000", seed=0)
    with pytest.raises(TeacherError, match="expected 310 users"):
        Trainer(_cfg(tmp_path / "b", "distill", teacher=str(teacher)), dataset=bigger)
    with pytest.raises(RunDirError, match="manifest.json is missing"):
        Trainer(_cfg(tmp_path / "c", "distill", teacher=str(tmp_path)), dataset=small)


def test_teacher_and_method_go_together() -> None:
    with pytest.raises(ValueError, match="needs --teacher"):
        FitConfig(method="distill").validate()
    with pytest.raises(ValueError, match="for distill only"):
        FitConfig(method="hashgnn", teacher="runs/x").validate()
    with pytest.raises(ValueError, match="would overwrite its teacher"):
        FitConfig(method="distill", teacher="runs/x", out="runs/./x").validate()
    with pytest.raises(ValueError, match="distill_top must be"):
        FitConfig(method="distill", teacher="runs/x", distill_top=0).validate()


def test_damaged_teacher_is_a_one_line_cli_error(tmp_path, teacher, capsys) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(teacher, broken)
    (broken / "codes.npz").write_bytes(b"not the codes")
    rc = main(["fit", "--data", SMALL, "--method", "distill", "--teacher", str(broken), "--out", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "damaged" in err[0], err


def test_a_batch_without_unseen_items_takes_a_zero_step(tmp_path, small, teacher) -> None:
    """Users who have seen every item have no teacher positive (-1 padding): the step's loss is 0
    and the head stays finite, not NaN."""
    import torch

    tr = Trainer(_cfg(tmp_path / "z", "distill", teacher=str(teacher)), dataset=small)
    before = [p.detach().clone() for p in tr.model.head.parameters()]
    tr.teacher_top[:] = -1
    assert tr.step(np.array([0, 1, 2]), np.array([0, 0, 0])) == 0.0
    for p, q in zip(tr.model.head.parameters(), before):
        assert torch.isfinite(p).all() and torch.equal(p, q)
