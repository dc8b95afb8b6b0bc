"""The sampled-softmax objective (fused forward/backward) and the cosine learning-rate schedule."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from train.config import FitConfig
from train.data import load_dataset
from train.losses import sampled_softmax
from train.trainer import Trainer

TINY = "synthetic:users=150,items=200,edges=3000"


def test_sampled_softmax_by_hand() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0, 1.0], [1.0, -1.0]])
    row0 = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.0)) - 2.0
    row1 = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(-1.0)) - 0.0
    assert sampled_softmax(pos, neg).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_sampled_softmax_is_stable_and_matches_autograd() -> None:
    g = torch.Generator().manual_seed(0)
    pos = (torch.randn(40, generator=g, dtype=torch.float64) * 30).requires_grad_()
    neg = (torch.randn(40, 17, generator=g, dtype=torch.float64) * 30).requires_grad_()
    want = (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).mean()
    got = sampled_softmax(pos, neg)
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-12)
    gp, gn = torch.autograd.grad(3.0 * want, (pos, neg))
    hp, hn = torch.autograd.grad(3.0 * sampled_softmax(pos, neg), (pos, neg))
    assert torch.allclose(gp, hp) and torch.allclose(gn, hn)
    assert torch.autograd.gradcheck(sampled_softmax, (pos[:5].detach().requires_grad_(),
                                                      neg[:5].detach().requires_grad_()))


def _cfg(tmp_path: Path, **kw) -> FitConfig:
    base = dict(data=TINY, method="lightgcn", loss="softmax", epochs=3, batch_size=512, lr=0.01,
                emb_dim=16, shared_negatives=64, out=str(tmp_path / "run"), progress=False, threads=1)
    base.update(kw)
    return FitConfig(**base)


def test_cosine_lr_schedule(tmp_path: Path) -> None:
    tiny = load_dataset(TINY, seed=0)
    tr = Trainer(_cfg(tmp_path, lr_schedule="cosine"), tiny)
    total = 3 * tr.batches_per_epoch
    assert tr.lr_now() == pytest.approx(0.01)
    tr.it = total // 2
    assert tr.lr_now() == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * (total // 2) / total)))
    tr.it = 0
    tr.train()
    assert tr.it == total
    # the last step ran at the rate of step total-1, close to 0
    last = 0.01 * 0.5 * (1 + math.cos(math.pi * (total - 1) / total))
    assert tr.optim.param_groups[0]["lr"] == pytest.approx(last)
    const = Trainer(_cfg(tmp_path, out=str(tmp_path / "c")), tiny)
    const.train()
    assert const.optim.param_groups[0]["lr"] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        _cfg(tmp_path, lr_schedule="linear").validate()


def test_softmax_with_distinct_users_matches_the_expanded_rows() -> None:
    g = torch.Generator().manual_seed(1)
    inv = torch.randint(0, 6, (25,), generator=g)
    pos = (torch.randn(25, generator=g, dtype=torch.float64) * 20).requires_grad_()
    neg = (torch.randn(6, 9, generator=g, dtype=torch.float64) * 20).requires_grad_()
    want = (torch.logsumexp(torch.cat([pos[:, None], neg[inv]], 1), 1) - pos).mean()
    got = sampled_softmax(pos, neg, inv)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for a, b in zip(torch.autograd.grad(want, (pos, neg)), torch.autograd.grad(got, (pos, neg))):
        assert torch.allclose(a, b)
    assert torch.autograd.gradcheck(lambda p, n: sampled_softmax(p, n, inv), (pos, neg))


def test_group_users_order_and_full_softmax(tmp_path: Path) -> None:
    import numpy as np

    tiny = load_dataset(TINY, seed=0)
    tr = Trainer(_cfg(tmp_path, group_users=True, shared_negatives=0, epochs=1), tiny)
    order = tr._epoch_order()
    assert np.array_equal(np.sort(order), np.arange(len(tr.ds.train)))
    u = tr.ds.train.users[order]
    # each user's pairs are contiguous: the user changes exactly (distinct users - 1) times
    assert int((u[1:] != u[:-1]).sum()) == len(np.unique(u)) - 1
    assert not np.array_equal(tr._epoch_order(), order)  # a new user order each epoch
    tr.train()
    assert np.isfinite(tr.history[-1]["loss"])


def test_group_users_defaults_to_the_softmax_loss_only() -> None:
    from train.cli import build_parser, config_from_args

    assert FitConfig(method="lightgcn", loss="softmax").group_users_eff
    assert not FitConfig(method="lightgcn").group_users_eff  # auto loss: BPR
    assert not FitConfig(method="lightgcn", loss="softmax", group_users=False).group_users_eff
    parse = lambda *a: config_from_args(build_parser().parse_args(["fit", *a]))  # noqa: E731
    assert parse().group_users is None and parse().shared_negatives == 0
    assert parse("--group-users").group_users is True
    assert parse("--no-group-users", "--shared-negatives", "512").group_users is False
    with pytest.raises(ValueError):
        FitConfig(shared_negatives=-1).validate()
