"""LightGCN edge dropout: a renormalised random subgraph per training forward, the full graph in eval."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from train.config import FitConfig
from train.graph import EdgeDropout, bipartite_coo, sym_norm_adj
from train.models import LightGCNEncoder


def _graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 12, 60)
    items = rng.integers(0, 15, 60)
    return bipartite_coo(12, 15, users, items)


def _dense(t: torch.Tensor) -> np.ndarray:
    return t.to_dense().numpy()


def test_no_dropout_is_the_full_normalised_graph() -> None:
    adj = _graph()
    full = _dense(sym_norm_adj(adj, torch.device("cpu")))
    assert np.allclose(_dense(EdgeDropout(adj, 0.0, torch.device("cpu")).sample()), full)


def test_dropped_graph_is_the_normalised_kept_subgraph() -> None:
    adj = _graph(1)
    torch.manual_seed(3)
    a = _dense(EdgeDropout(adj, 0.4, torch.device("cpu")).sample())
    assert np.allclose(a, a.T)  # both directions of an edge dropped together
    kept = (a != 0).astype(np.float32)
    n_full = adj.nnz
    assert 0 < kept.sum() < n_full
    assert np.all(kept <= adj.toarray())  # only edges of the graph
    want = _dense(sym_norm_adj(sp.coo_matrix(kept), torch.device("cpu")))
    assert np.allclose(a, want, atol=1e-6)


def test_encoder_drops_edges_in_training_only() -> None:
    adj = _graph(2)
    dev = torch.device("cpu")
    torch.manual_seed(0)
    enc = LightGCNEncoder(27, 8, sym_norm_adj(adj, dev), layers=2, edge_dropout=EdgeDropout(adj, 0.5, dev))
    plain = LightGCNEncoder(27, 8, sym_norm_adj(adj, dev), layers=2)
    plain.load_state_dict(enc.state_dict())
    enc.eval()
    assert torch.allclose(enc(), plain())
    enc.train()
    assert not torch.allclose(enc(), plain())
    out = enc()
    out.sum().backward()
    assert enc.base.weight.grad is not None


def test_edge_dropout_config() -> None:
    from train.cli import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["fit"])).edge_dropout == 0.0
    assert config_from_args(build_parser().parse_args(["fit", "--edge-dropout", "0.2"])).edge_dropout == 0.2
    FitConfig(method="lightgcn", edge_dropout=0.2).validate()
    with pytest.raises(ValueError):
        FitConfig(method="lightgcn", edge_dropout=1.0).validate()
    with pytest.raises(ValueError):
        FitConfig(method="hashgnn", edge_dropout=0.2).validate()  # sage encoder


def test_fit_with_edge_dropout(tmp_path) -> None:
    from train.trainer import Trainer

    cfg = FitConfig(data="synthetic:users=150,items=200,edges=3000", method="lightgcn", loss="softmax",
                    epochs=2, batch_size=512, lr=0.01, emb_dim=16, edge_dropout=0.3,
                    out=str(tmp_path / "run"), progress=False, threads=1)
    tr = Trainer(cfg)
    tr.train()
    assert np.isfinite(tr.history[-1]["loss"])
