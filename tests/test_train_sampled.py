"""Mini-batch (sampled) training: the neighbour sampler, the CSR graph, sampled and layer-wise
forwards against the whole-graph encoders, row-wise Adam, and sampled fits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from train.config import FitConfig
from train.data import load_dataset
from train.graph import BipartiteCSR, bipartite_coo, mean_adj, spmm, sym_norm_adj
from train.models import LightGCNEncoder, MFEncoder, SAGEEncoder
from train.optim import RowAdam
from train.sampling import NeighborSampler, floyd_sample
from train.trainer import Trainer, fit

TINY = "synthetic:users=120,items=200,edges=2400"


def small_graph(seed: int = 0, nu: int = 40, ni: int = 60, edges: int = 500) -> BipartiteCSR:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, nu, edges)
    i = rng.integers(0, ni, edges)
    return BipartiteCSR(nu, ni, u, i)


def neighbour_sets(g: BipartiteCSR):
    return [set(g.indices[g.indptr[v]:g.indptr[v + 1]].tolist()) for v in range(g.n_nodes)]


def test_floyd_sample_draws_distinct_offsets_uniformly() -> None:
    rng = np.random.default_rng(1)
    deg = np.full(20_000, 7)
    picks = floyd_sample(deg, 3, rng)
    assert picks.shape == (20_000, 3) and picks.min() >= 0 and picks.max() <= 6
    assert all(len(set(row)) == 3 for row in picks[:2000].tolist())
    counts = np.bincount(picks.ravel(), minlength=7)  # each offset in 3/7 of the rows
    assert np.allclose(counts / 20_000, 3 / 7, atol=0.02)
    subsets = {tuple(sorted(r)) for r in picks.tolist()}
    assert len(subsets) == 35  # every 3-subset of 7 occurs


def test_csr_graph_matches_the_scipy_adjacency() -> None:
    rng = np.random.default_rng(2)
    u, i = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    g = BipartiteCSR(30, 50, u, i)
    ref = bipartite_coo(30, 50, u, i).tocsr()
    ref.sort_indices()
    assert np.array_equal(g.indptr, ref.indptr) and np.array_equal(g.indices, ref.indices)
    assert g.indices.dtype == np.int32
    h = torch.randn(80, 5)
    mean, mean_t = mean_adj(bipartite_coo(30, 50, u, i), torch.device("cpu"))
    assert torch.allclose(g.propagate(h, "mean", chunk=7), spmm(mean, h, mean_t), atol=1e-6)
    sym = sym_norm_adj(bipartite_coo(30, 50, u, i), torch.device("cpu"))
    assert torch.allclose(g.propagate(h, "sym", chunk=13), spmm(sym, h), atol=1e-6)


@pytest.mark.parametrize("fanouts", [[3], [4, 2], [1, 1, 1]])
def test_sampler_honours_fanout_with_real_neighbours_only(fanouts) -> None:
    g = small_graph()
    nbrs = neighbour_sets(g)
    deg = g.degree
    seeds = np.array([[0, 5, 5], [45, 99, 0]])
    blocks, inv = NeighborSampler(g.indptr, g.indices, fanouts).sample(seeds, np.random.default_rng(3))
    assert len(blocks) == len(fanouts)
    uniq = np.unique(seeds)
    last = blocks[-1]
    assert last.n_dst == uniq.size and np.array_equal(last.src[: last.n_dst].numpy(), uniq)
    assert np.array_equal(uniq[inv], seeds)  # inverse maps each seed to its output row
    # blocks run first layer first: the seeds' own layer (fanouts[0]) is the last block
    for blk, f in zip(blocks, reversed(fanouts)):
        src, row, col = blk.src.numpy(), blk.row.numpy(), blk.col.numpy()
        assert len(set(src.tolist())) == src.size  # distinct input nodes
        for r in range(blk.n_dst):
            v = int(src[r])
            got = src[col[row == r]].tolist()
            assert len(got) == len(set(got)) == min(f, int(deg[v]))  # fan-out honoured, no repeats
            assert set(got) <= nbrs[v]  # only real neighbours
        w = blk.adj.to_dense().numpy()
        assert np.allclose(w.sum(1)[deg[src[: blk.n_dst]] > 0], 1.0)  # a mean over the sample
    for a, b in zip(blocks[:-1], blocks[1:]):  # each layer's nodes are a prefix of the one before
        assert np.array_equal(a.src[: b.src.shape[0]].numpy(), b.src.numpy())


def test_sampler_is_deterministic_under_a_seed() -> None:
    g = small_graph(seed=4)
    s = NeighborSampler(g.indptr, g.indices, [3, 2])
    seeds = np.arange(0, 100, 3)
    a, _ = s.sample(seeds, np.random.default_rng(7))
    b, _ = s.sample(seeds, np.random.default_rng(7))
    c, _ = s.sample(seeds, np.random.default_rng(8))
    assert all(torch.equal(x.src, y.src) and torch.equal(x.col, y.col) for x, y in zip(a, b))
    assert any(x.src.shape != y.src.shape or not torch.equal(x.src, y.src) for x, y in zip(a, c))


def test_sampler_rejects_bad_fanouts() -> None:
    g = small_graph()
    with pytest.raises(ValueError, match="fanouts"):
        NeighborSampler(g.indptr, g.indices, [])
    with pytest.raises(ValueError, match="fanouts"):
        NeighborSampler(g.indptr, g.indices, [3, 0])


def full_neighbourhood_blocks(g: BipartiteCSR, layers: int, seeds: np.ndarray, norm: str):
    big = int(g.degree.max())
    return NeighborSampler(g.indptr, g.indices, [big] * layers, norm).sample(seeds, np.random.default_rng(0))


def test_sage_sampled_and_layerwise_forwards_equal_the_whole_graph() -> None:
    torch.manual_seed(0)
    g = small_graph(seed=5)
    rng = np.random.default_rng(5)
    u, i = rng.integers(0, 40, 500), rng.integers(0, 60, 500)
    adj = bipartite_coo(40, 60, u, i)
    mean, mean_t = mean_adj(adj, torch.device("cpu"))
    enc = SAGEEncoder(100, 8, [12, 6], mean, mean_t)
    full = enc()
    assert torch.allclose(enc.inference(g, chunk=17), full, atol=1e-5)
    seeds = np.array([3, 41, 77, 3, 99])
    blocks, inv = full_neighbourhood_blocks(g, 2, seeds, "mean")
    out = enc.forward_blocks(enc.base.weight[blocks[0].src], blocks)
    assert torch.allclose(out[torch.from_numpy(inv)], full[torch.from_numpy(seeds)], atol=1e-5)


def test_lightgcn_sampled_and_layerwise_forwards_equal_the_whole_graph() -> None:
    torch.manual_seed(1)
    g = small_graph(seed=6)
    rng = np.random.default_rng(6)
    u, i = rng.integers(0, 40, 500), rng.integers(0, 60, 500)
    enc = LightGCNEncoder(100, 8, sym_norm_adj(bipartite_coo(40, 60, u, i), torch.device("cpu")), layers=3)
    full = enc()
    assert torch.allclose(enc.inference(g), full, atol=1e-5)
    seeds = np.array([0, 39, 40, 99])
    blocks, inv = full_neighbourhood_blocks(g, 3, seeds, "sym")
    out = enc.forward_blocks(enc.base.weight[blocks[0].src], blocks)
    assert torch.allclose(out[torch.from_numpy(inv)], full[torch.from_numpy(seeds)], atol=1e-5)
    mf = MFEncoder(100, 4)
    assert torch.equal(mf.inference(g), mf())


@pytest.mark.parametrize("fused", [True, False])
def test_row_adam_matches_sparse_adam(fused: bool) -> None:
    """Both RowAdam paths (the numba kernel and the torch expression) equal torch's SparseAdam."""
    if fused:
        pytest.importorskip("numba")
    torch.manual_seed(2)
    table = torch.randn(30, 4)
    ref = torch.nn.Parameter(table.clone())
    ref_opt = torch.optim.SparseAdam([ref], lr=0.01)
    ours = RowAdam(table, lr=0.01, fused=fused)
    rng = np.random.default_rng(0)
    for _ in range(6):
        rows = torch.from_numpy(np.sort(rng.choice(30, 9, replace=False)))
        grad = torch.randn(9, 4)
        ref.grad = torch.sparse_coo_tensor(rows[None], grad, (30, 4))
        ref_opt.step()
        ours.stage(rows, grad)
        ours.step()
    assert torch.allclose(table, ref.detach(), atol=1e-6)


@pytest.mark.parametrize("method,extra", [("hashgnn", {}), ("lightgcn", {}), ("mf", {}),
                                          ("lightgcn", {"loss": "softmax", "shared_negatives": 64})])
def test_sampled_fit_runs_and_records_its_mode(tmp_path: Path, method: str, extra: dict) -> None:
    cfg = FitConfig(data=TINY, method=method, epochs=2, batch_size=512, train_mode="sampled",
                    out=str(tmp_path), progress=False, threads=1, eval_users=30, **extra)
    m = fit(cfg)
    assert m["train_mode"] == "sampled" and m["world_size"] == 1 and m["peak_rss_gb"] > 0
    assert all(0.0 <= m[mode]["recall@20"] <= 1.0 for mode in ("hamr", "hies", "continuous"))
    assert json.loads((tmp_path / "metrics.json").read_text())["train_mode"] == "sampled"


def test_sampled_training_learns(tmp_path: Path) -> None:
    """Sampled HashGNN beats random ranking clearly on a topic-structured graph."""
    cfg = FitConfig(data="synthetic:users=400,items=600,edges=12000", epochs=6, batch_size=1024,
                    train_mode="sampled", out=str(tmp_path), progress=False, threads=1, lr=5e-3)
    m = fit(cfg)
    assert m["hies"]["recall@50"] > 3 * 50 / 600


def test_sampled_resume_continues_exactly(tmp_path: Path) -> None:
    base = dict(data=TINY, epochs=3, batch_size=512, train_mode="sampled", progress=False, threads=1)
    straight = fit(FitConfig(out=str(tmp_path / "a"), **base))
    tr = Trainer(FitConfig(out=str(tmp_path / "b"), **base))
    tr.train(stop_after=1)
    resumed = fit(FitConfig(out=str(tmp_path / "b"), resume=True, **base))
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]


def test_auto_mode_picks_by_training_size(tmp_path: Path) -> None:
    ds = load_dataset(TINY, seed=0)
    small = Trainer(FitConfig(data=TINY, out=str(tmp_path), progress=False), ds)
    assert not small.sampled
    big = Trainer(FitConfig(data=TINY, out=str(tmp_path), progress=False, sampled_above=100), ds)
    assert big.sampled and big.neighbours.fanouts == [10, 5]


def test_sampled_mode_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shared-negatives"):
        Trainer(FitConfig(data=TINY, method="lightgcn", loss="softmax", train_mode="sampled", out=str(tmp_path)))
    with pytest.raises(ValueError, match="fanout needs one count per graph layer"):
        Trainer(FitConfig(data=TINY, train_mode="sampled", fanout=[10, 5, 5], out=str(tmp_path)))
    with pytest.raises(ValueError, match="edge dropout"):
        Trainer(FitConfig(data=TINY, method="lightgcn", edge_dropout=0.2, train_mode="sampled", out=str(tmp_path)))


def test_sage_block_layer_gradients_are_exact() -> None:
    from train.models import _SAGEBlockLayer
    from train.sampling import make_block

    rng = np.random.default_rng(0)
    row = np.sort(rng.integers(0, 12, 50))
    blk = make_block(np.arange(30), 12, row, rng.integers(0, 30, 50), rng.random(50).astype(np.float32))
    adj, adj_t = blk.adj.to(torch.float64), blk.adj_t.to(torch.float64)
    h = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, w, b: _SAGEBlockLayer.apply(h, w, b, adj, adj_t, 12), (h, w, b))


def test_negative_pool_draws_each_batch_from_its_pool() -> None:
    from train.sampling import NegativeSampler

    users = np.repeat(np.arange(50), 4)
    items = np.tile(np.arange(4), 50)  # every user has items 0..3
    s = NegativeSampler(users, items, n_items=1000, rounds=20)
    negs = s.sample(np.arange(50), 5, np.random.default_rng(1), pool=16)
    assert negs.shape == (50, 5) and len(np.unique(negs)) <= 16
    assert not np.isin(negs, [0, 1, 2, 3]).any()
    own = s.sample(np.arange(50), 5, np.random.default_rng(1))
    assert len(np.unique(own)) > 100  # without a pool, each pair its own


def test_prefetch_yields_in_order_and_raises_the_producers_error() -> None:
    from train.sampling import prefetch

    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("draw failed")

    got = []
    with pytest.raises(RuntimeError, match="draw failed"):
        for x in prefetch(broken()):
            got.append(x)
    assert got == [1]
    gen = prefetch(iter(range(10**6)), depth=2)
    assert next(gen) == 0
    gen.close()  # the producer stops instead of filling the queue forever


def test_test_modes_choose_the_final_evaluation(tmp_path: Path, capsys) -> None:
    from train.cli import main

    assert main(["fit", "--data", TINY, "--epochs", "1", "--out", str(tmp_path), "--no-progress",
                 "--test-modes", "hamr,hies"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert "hamr" in m and "hies" in m and "continuous" not in m
    with pytest.raises(ValueError, match="test_modes"):
        FitConfig(test_modes=["exact"]).validate()


def test_csr_mm_equals_torch_sparse_mm_with_empty_rows() -> None:
    """csr_mm writes every row of its uninitialised result, empty rows included (memory the
    allocator hands back full of NaN), and equals torch.sparse.mm bit for bit."""
    import warnings

    import scipy.sparse as sp

    from train.graph import csr_mm

    a = sp.random(2000, 300, 0.02, format="csr", dtype=np.float32, random_state=1)
    a = sp.csr_matrix(sp.diags((np.arange(2000) % 3 == 0).astype(np.float32)) @ a)
    a.eliminate_zeros()
    assert (np.diff(a.indptr) == 0).sum() > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                    torch.from_numpy(a.indices.astype(np.int64)),
                                    torch.from_numpy(a.data), size=a.shape)
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        del_me = torch.full((2000, 64), float("nan"))
        del del_me
        assert torch.equal(csr_mm(t, x), torch.sparse.mm(t, x))
