"""Softmax-loss options: the learned item bias and the cosine margin on positives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import FitConfig
from train.data import load_dataset
from train.trainer import Trainer

TINY = "synthetic:users=150,items=200,edges=3000"


def _cfg(tmp_path: Path, **kw) -> FitConfig:
    base = dict(data=TINY, method="lightgcn", loss="softmax", epochs=1, batch_size=512, lr=0.0,
                emb_dim=16, shared_negatives=0, out=str(tmp_path / "run"), progress=False, threads=1,
                reg=0.0, temperature=0.2)
    base.update(kw)
    return FitConfig(**base)


def _manual_loss(tr: Trainer, users: np.ndarray, items: np.ndarray, margin: float) -> float:
    cfg, nu = tr.cfg, tr.ds.n_users
    with torch.no_grad():
        x = torch.nn.functional.normalize(tr.model.encoder(), dim=-1)
        xu, xi = x[torch.from_numpy(users)], x[nu:]
        logits = xu @ xi.T / cfg.temperature
        if tr.model.item_bias is not None:
            logits = logits + tr.model.item_bias[None, :]
        pos = logits[torch.arange(len(users)), torch.from_numpy(items)] - margin / cfg.temperature
        lse = torch.logsumexp(torch.cat([pos[:, None], logits], 1), 1)
        return float((lse - pos).mean())


@pytest.mark.parametrize("margin,bias", [(0.0, False), (0.15, False), (0.0, True), (0.1, True)])
def test_softmax_step_matches_the_formula(tmp_path: Path, margin: float, bias: bool) -> None:
    tiny = load_dataset(TINY, seed=0)
    tr = Trainer(_cfg(tmp_path, margin=margin, item_bias=bias), tiny)
    if bias:
        with torch.no_grad():
            tr.model.item_bias.copy_(torch.randn(tr.ds.n_items))
    users, items = tr.ds.train.users[:300], tr.ds.train.items[:300]
    want = _manual_loss(tr, users, items, margin)
    assert tr.step(users, items) == pytest.approx(want, rel=1e-5)


def test_item_bias_is_learnt_and_ranks(tmp_path: Path) -> None:
    tiny = load_dataset(TINY, seed=0)
    tr = Trainer(_cfg(tmp_path, item_bias=True, lr=0.05, epochs=2), tiny)
    tr.train()
    b = tr.model.item_bias.detach()
    assert float(b.abs().max()) > 0
    emb = tr.embeddings()
    nu = tr.ds.n_users
    x = torch.nn.functional.normalize(tr.model.encoder().detach(), dim=-1)
    want = (x[:nu] @ x[nu:].T / tr.cfg.temperature + b[None, :]).numpy()
    assert np.allclose(emb.user_emb @ emb.item_emb.T, want, atol=1e-4)
    assert "item_bias" in tr.state()["model"]


def test_options_need_the_softmax_loss() -> None:
    from train.cli import build_parser, config_from_args

    parse = lambda *a: config_from_args(build_parser().parse_args(["fit", *a]))  # noqa: E731
    assert parse().margin == 0.0 and parse().item_bias is False
    assert parse("--item-bias", "--margin", "0.1").item_bias is True
    with pytest.raises(ValueError):
        FitConfig(method="lightgcn", loss="bpr", margin=0.1).validate()
    with pytest.raises(ValueError):
        FitConfig(method="lightgcn", loss="bpr", item_bias=True).validate()
