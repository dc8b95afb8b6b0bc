"""Gradient estimators, the guided STE, losses, sparse propagation and negative sampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from train.graph import bipartite_coo, mean_adj, spmm, sym_norm_adj
from train.hashing import ProbSchedule, gumbel_bits, guided_ste, hard_sign, hashnet_tanh, sign_ste
from train.losses import bce_link, bpr, hashgnn_loss, ranking
from train.models import HashHead
from train.sampling import NegativeSampler


def test_hard_sign_zero_is_plus_one() -> None:
    z = torch.tensor([-0.5, 0.0, -0.0, 2.0])
    assert hard_sign(z).tolist() == [-1.0, 1.0, 1.0, 1.0]


def test_ste_forward_sign_backward_identity() -> None:
    z = torch.tensor([[-0.7, 0.0, 0.3], [0.9, -0.1, -2.0]], requires_grad=True)
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    h = sign_ste(z)
    assert h.tolist() == [[-1, 1, 1], [1, -1, -1]]
    (h * w).sum().backward()
    assert torch.equal(z.grad, w)  # d sign / d z taken as 1


def test_guided_p1_is_continuous_and_p0_is_ste() -> None:
    torch.manual_seed(0)
    z0 = torch.tanh(torch.randn(64, 16))
    w = torch.randn(64, 16)
    z = z0.clone().requires_grad_(True)
    out1 = guided_ste(z, 1.0)
    assert torch.equal(out1, z0)
    (out1 * w).sum().backward()
    assert torch.equal(z.grad, w)

    z = z0.clone().requires_grad_(True)
    out0 = guided_ste(z, 0.0)
    assert torch.equal(out0, hard_sign(z0))
    assert torch.equal(out0, sign_ste(z0))
    (out0 * w).sum().backward()
    assert torch.equal(z.grad, w)


def test_guided_mixes_elementwise() -> None:
    torch.manual_seed(1)
    z = torch.tanh(torch.randn(200, 50))
    out = guided_ste(z, 0.3)
    is_z = torch.isclose(out, z)
    is_h = out == hard_sign(z)
    assert bool((is_z | is_h).all())
    frac = float((is_z & ~is_h).float().mean())
    assert 0.25 < frac < 0.35  # Q ~ Bernoulli(0.3)


def test_guided_rows_mixes_whole_codes() -> None:
    torch.manual_seed(4)
    z = torch.tanh(torch.randn(400, 32))
    out = guided_ste(z, 0.3, rows=True)
    cont = torch.isclose(out, z).all(1)
    binary = (out == hard_sign(z)).all(1)
    assert bool((cont | binary).all())  # every code is wholly continuous or wholly binary
    assert 0.2 < float(cont.float().mean()) < 0.4
    q = torch.tensor([[1.0], [0.0]])
    z2 = z[:2].clone().requires_grad_(True)
    mixed = guided_ste(z2, 0.5, q=q)  # an explicit mask overrides the draw (and p)
    assert torch.equal(mixed[0], z[0]) and torch.equal(mixed[1], hard_sign(z[1]))
    mixed.sum().backward()
    assert torch.equal(z2.grad, torch.ones_like(z2))  # straight through on both paths
    z3 = z[:2].clone().requires_grad_(True)
    scaled = guided_ste(z3, 0.5, q=q, scale=torch.tensor(0.25))
    assert torch.equal(scaled[0], z[0]) and torch.equal(scaled[1], 0.25 * hard_sign(z[1]))
    scaled.sum().backward()
    assert torch.allclose(z3.grad[1], torch.full_like(z3.grad[1], 0.25))
    assert torch.equal(guided_ste(z[:2], 0.0, scale=0.5), 0.5 * hard_sign(z[:2]))


def test_head_guided_at_p1_equals_continuous_head() -> None:
    torch.manual_seed(2)
    head = HashHead(8, 16, "guided")
    tanh_head = HashHead(8, 16, "tanh")
    tanh_head.load_state_dict(head.state_dict())
    e = torch.randn(10, 8)
    assert torch.equal(head.relax(e, p=1.0), tanh_head.relax(e))
    ste_head = HashHead(8, 16, "ste")
    ste_head.load_state_dict(head.state_dict())
    assert torch.equal(head.relax(e, p=0.0), ste_head.relax(e))
    assert torch.equal(head.codes(e), hard_sign(head.continuous(e)))


def test_prob_schedule() -> None:
    s = ProbSchedule(start=1.0, decay=0.95, every=250, floor=0.1)
    assert s(0) == 1.0 and s(249) == 1.0
    assert s(250) == pytest.approx(0.95) and s(500) == pytest.approx(0.95 ** 2)
    assert s(10_000_000) == 0.1


def test_gumbel_and_hashnet() -> None:
    torch.manual_seed(3)
    a = torch.randn(32, 8, requires_grad=True)
    g = gumbel_bits(a, 1.0)
    assert set(g.detach().unique().tolist()) <= {-1.0, 1.0}
    g.sum().backward()
    assert a.grad is not None and bool((a.grad > 0).all())  # soft sample's gradient flows
    assert torch.allclose(hashnet_tanh(torch.tensor([0.5]), 1000.0), torch.tensor([1.0]))


def test_losses_by_hand() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0, 1.0], [1.0, -1.0]])
    sig = torch.sigmoid
    want_rank = torch.relu(sig(neg) - sig(pos)[:, None] + 0.2).mean()
    assert ranking(pos, neg, 0.2).item() == pytest.approx(want_rank.item())
    want_bce = (-torch.log(sig(pos))).mean() + (-torch.log(1 - sig(neg[:, 0]))).mean()
    assert bce_link(pos, neg).item() == pytest.approx(want_bce.item(), rel=1e-6)
    assert hashgnn_loss(pos, neg, 0.5, 0.2).item() == pytest.approx(want_bce.item() + 0.5 * want_rank.item(), rel=1e-6)
    assert hashgnn_loss(pos, neg, 0.0, 0.2).item() == pytest.approx(want_bce.item(), rel=1e-6)
    want_bpr = (-torch.log(sig(pos[:, None] - neg))).mean()
    assert bpr(pos, neg).item() == pytest.approx(want_bpr.item(), rel=1e-6)


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.to_dense()


def test_normalised_adjacency_and_spmm_gradients() -> None:
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    adj = bipartite_coo(3, 3, users, items)
    a = adj.toarray()
    assert np.array_equal(a, a.T) and a.sum() == 8
    sym = sym_norm_adj(adj, torch.device("cpu"))
    deg = a.sum(1)
    want = a / np.sqrt(np.outer(deg, deg))
    assert np.allclose(_dense(sym).numpy(), want)
    mean, mean_t = mean_adj(adj, torch.device("cpu"))
    assert np.allclose(_dense(mean).numpy(), a / deg[:, None])
    assert np.allclose(_dense(mean_t).numpy(), (a / deg[:, None]).T)
    # custom backward (A^T grad) matches autograd through the dense matrix
    x = torch.randn(6, 4, dtype=torch.float32, requires_grad=True)
    w = torch.randn(6, 4)
    (spmm(mean, x, mean_t) * w).sum().backward()
    xd = x.detach().clone().requires_grad_(True)
    (_dense(mean) @ xd * w).sum().backward()
    assert torch.allclose(x.grad, xd.grad, atol=1e-6)


def test_negative_sampler_avoids_positives() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 8)
    items = np.tile(np.arange(8), 20)  # every user has items 0..7 of 10
    s = NegativeSampler(users, items, n_items=10, rounds=50)
    negs = s.sample(np.arange(20), 30, rng)
    assert negs.shape == (20, 30)
    assert set(np.unique(negs).tolist()) <= {8, 9}


def test_separate_hash_layers_route_users_and_items() -> None:
    torch.manual_seed(4)
    head = HashHead(8, 16, "guided", n_users=3)
    e = torch.randn(7, 8)  # a node matrix: 3 users, then 4 items
    users, items = head.lin(e[:3]), head.item_lin(e[3:])
    assert not torch.allclose(head.lin(e), head.item_lin(e))
    assert torch.equal(head.pre(e), torch.cat([users, items]))
    assert torch.equal(head.pre(e[:3], "user"), users) and torch.equal(head.pre(e[3:], "item"), items)
    assert torch.equal(head.codes(e), hard_sign(torch.cat([users, items])))
    assert torch.equal(head.relax(e[3:], p=1.0, side="item"), torch.tanh(items))
    with pytest.raises(ValueError, match="side must be"):
        head.pre(e, "items")
    shared = HashHead(8, 16, "guided")  # one layer: the side does not matter
    assert shared.item_lin is None and torch.equal(shared.pre(e, "item"), shared.pre(e, "user"))
