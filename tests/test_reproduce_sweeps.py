"""``reproduce bits`` (code-width sweep) and ``reproduce throughput`` (test quality vs users/s) on a
tiny synthetic graph, and their parts on hand-made inputs."""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import scipy.sparse as sp  # noqa: E402

from train.evaluate import Embeddings, evaluate  # noqa: E402
from train.reproduce import throughput as tp  # noqa: E402
from train.reproduce.common import data_label, load_codes  # noqa: E402

TINY = "synthetic:users=300,items=400,edges=6000"
LABEL = data_label(TINY)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reproduce(tmp_path, *args):
    from train.cli import main

    return main(["reproduce", *args, "--data", TINY, "--out", str(tmp_path), "--epochs", "2", "--threads", "1",
                 "--repeats", "1", "--no-progress"])


def _dataset():
    from train.data import load_dataset

    return load_dataset(TINY, seed=0)


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_bits_writes_a_row_per_method_and_width_and_shares_table2_runs(tmp_path):
    assert _reproduce(tmp_path, "bits", "--bits-list", "16,32", "--method-set", "distill:epochs=3,lr=0.01") == 0
    payload = json.loads((tmp_path / f"bits_{LABEL}.json").read_text())
    assert _is_png(tmp_path / f"bits_{LABEL}.png")
    assert (tmp_path / "bits.md").read_text().strip() and "[bits](bits.md)" in (tmp_path / "README.md").read_text()
    assert sorted((r["method"], r["bits"]) for r in payload["rows"]) == [
        ("distill", 16), ("distill", 32), ("hashgnn", 16), ("hashgnn", 32), ("hashnet", 16), ("hashnet", 32)]
    runs = tmp_path / "runs" / LABEL
    assert {p.name for p in runs.iterdir()} == {"hashgnn", "hashgnn_16", "hashnet", "hashnet_16", "lightgcn",
                                                 "distill", "distill_16"}
    for name in ("distill", "distill_16"):  # the distilled codes learn from the continuous run
        config = json.loads((runs / name / "metrics.json").read_text())["config"]
        assert config["teacher"] == str(runs / "lightgcn") and config["epochs"] == 3 and config["lr"] == 0.01
    cont = payload["continuous"]
    assert cont["continuous"]["recall@20"] == json.loads((runs / "lightgcn" / "metrics.json").read_text())[
        "continuous"]["recall@20"]
    for r in payload["rows"]:
        own = json.loads((Path(r["run"]) / "metrics.json").read_text())
        assert own["config"]["bits"] == r["bits"]
        for mode in ("hamr", "hies"):
            assert r[mode]["recall@20"] == own[mode]["recall@20"]
            assert 0.0 <= r[mode]["recall@20"] <= r[mode]["recall@50"] <= 1.0
            assert r[f"{mode}_over_continuous"] == pytest.approx(
                r[mode]["recall@20"] / cont["continuous"]["recall@20"])
    md = payload["markdown"]
    assert "HamR / continuous" in md and "HieS / continuous" in md and "LightGCN | exact" in md
    assert "| Distilled | 16 |" in md and "Distilled: codes learned from the continuous model's ranking" in md
    # the width of --bits is table2's run: table2 on the same flags trains nothing new
    stamp = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    assert _reproduce(tmp_path, "table2", "--methods", "hashgnn,hashnet,lightgcn") == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())


def test_bits_cached_only_reports_what_is_trained_and_names_the_rest(tmp_path):
    """--baseline-method none trains HashGNN alone; --cached-only then trains nothing and leaves the
    uncached runs out of the table, naming them."""
    assert _reproduce(tmp_path, "bits", "--bits-list", "16", "--baseline-method", "none",
                      "--continuous-method", "mf", "--no-distill") == 0
    runs = tmp_path / "runs" / LABEL
    assert {p.name for p in runs.iterdir()} == {"hashgnn_16", "mf"}
    stamp = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    assert _reproduce(tmp_path, "bits", "--bits-list", "16,32", "--cached-only", "--continuous-method", "mf",
                      "--no-distill") == 0
    assert {p.name for p in runs.iterdir()} == {"hashgnn_16", "mf"}
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    payload = json.loads((tmp_path / f"bits_{LABEL}.json").read_text())
    assert [(r["method"], r["bits"]) for r in payload["rows"]] == [("hashgnn", 16)]
    assert payload["not_trained"] == ["HashNet 16", "HashGNN 32", "HashNet 32"]
    assert "Not trained (no row): HashNet 16, HashGNN 32, HashNet 32." in payload["markdown"]


def test_bits_evaluates_the_modes_a_run_did_not_test(tmp_path):
    """Runs tested on HamR only (--test-modes hamr): HieS and the continuous model's exact search
    are evaluated from codes.npz by train.evaluate, with training and validation items excluded."""
    assert _reproduce(tmp_path, "bits", "--bits-list", "16", "--test-modes", "hamr",
                      "--baseline-method", "gumbel", "--continuous-method", "mf", "--no-distill") == 0
    payload = json.loads((tmp_path / f"bits_{LABEL}.json").read_text())
    ds = _dataset()
    runs = tmp_path / "runs" / LABEL
    assert sorted(r["method"] for r in payload["rows"]) == ["gumbel", "hashgnn"]
    for r in payload["rows"]:
        want = evaluate(load_codes(runs / f"{r['method']}_16"), ds.csr("test"), ds.csr("train", "valid"),
                        modes=["hies"], num_threads=1)["hies"]
        assert r["hies"]["recall@20"] == pytest.approx(want["recall@20"], abs=1e-12)
        assert r["hies"]["ndcg@20"] == pytest.approx(want["ndcg@20"], abs=1e-12)
    want = evaluate(load_codes(runs / "mf"), ds.csr("test"), ds.csr("train", "valid"), modes=["continuous"])
    assert payload["continuous"]["continuous"]["recall@20"] == pytest.approx(
        want["continuous"]["recall@20"], abs=1e-12)


def test_throughput_writes_its_outputs_and_scores_like_evaluate(tmp_path):
    """Exact search (faiss, over-fetch and filter) and HamR give the Recall@20 and NDCG@20 of
    train.evaluate on the same runs; NSG's search_L is capped at the number of items (400); HashGNN
    is searched at each width of --bits-list, the one of --bits being table2's run."""
    pytest.importorskip("faiss")
    assert _reproduce(tmp_path, "throughput", "--ef-search", "16,64", "--nsg-search-l", "16,1000",
                      "--hies-candidates", "50,100", "--throughputs", "1e3,1e9", "--bits-list", "16,32") == 0
    payload = json.loads((tmp_path / f"throughput_{LABEL}.json").read_text())
    assert _is_png(tmp_path / f"throughput_{LABEL}.png") and (tmp_path / "throughput.md").exists()
    rows = {(r["method"], r["setting"]): r for r in payload["points"]}
    settings = {m: sorted(s for mm, s in rows if mm == m) for m, _ in rows}
    assert settings["LightGCN HNSW (faiss, MIPS→L2, M=32)"] == ["efSearch=16", "efSearch=64"]
    assert settings["LightGCN NSG (faiss, MIPS→L2, R=32)"] == ["search_L=16", "search_L=400"]
    for bits in (16, 32):
        assert settings[f"HashGNN HieS {bits}-bit (hashsearch.HierarchicalIndex)"] == ["candidates=100", "candidates=50"]
    for name in ("HashGNN", "Distilled"):
        assert settings[f"{name} HamR (hashsearch.Index)"] == ["16 bits", "32 bits"]
    assert payload["bits"] == {"HashGNN": [16, 32], "Distilled": [16, 32]}
    assert (tmp_path / "runs" / LABEL / "hashgnn_16" / "codes.npz").exists()
    assert (tmp_path / "runs" / LABEL / "distill_16" / "codes.npz").exists()
    ds = _dataset()
    runs = tmp_path / "runs" / LABEL
    want = evaluate(load_codes(runs / "lightgcn"), ds.csr("test"), ds.csr("train", "valid"), modes=["continuous"])
    exact = rows[("LightGCN exact (faiss IndexFlatIP)", "exact")]
    assert exact["recall@20"] == pytest.approx(want["continuous"]["recall@20"], abs=1e-12)
    assert exact["ndcg@20"] == pytest.approx(want["continuous"]["ndcg@20"], abs=1e-12)
    hamr = evaluate(load_codes(runs / "hashgnn"), ds.csr("test"), ds.csr("train", "valid"), modes=["hamr"])["hamr"]
    assert rows[("HashGNN HamR (hashsearch.Index)", "32 bits")]["recall@20"] == pytest.approx(hamr["recall@20"], abs=1e-12)
    assert all(0.0 <= r["recall@20"] <= 1.0 and r["qps"] > 0 for r in payload["points"])
    best = payload["best_at_throughput"]["LightGCN HNSW (faiss, MIPS→L2, M=32)"]
    assert best[0]["recall@20"] == max(r["recall@20"] for (m, _), r in rows.items() if m.startswith("LightGCN HNSW"))
    assert best[1]["recall@20"] is None and "not reached" in payload["markdown"]


def _random_workload(seed: int = 0, n_users: int = 60, n_items: int = 150, dim: int = 8, k: int = 20) -> tp.Workload:
    """A workload of random embeddings, codes and interactions (no training)."""
    import hashsearch

    rng = np.random.default_rng(seed)
    inter = rng.random((n_users, n_items))
    exclude = sp.csr_matrix(inter < 0.15, dtype=np.float32)
    test = (inter >= 0.15) & (inter < 0.2)
    test[3] = False  # a user without test items: not a query
    truth = sp.csr_matrix(test, dtype=np.float32)
    users = np.flatnonzero(np.diff(truth.indptr) > 0).astype(np.int64)

    def emb():
        ue, ie = rng.normal(size=(n_users, dim)).astype(np.float32), rng.normal(size=(n_items, dim)).astype(np.float32)
        return Embeddings(hashsearch.pack(ue), hashsearch.pack(ie), ue, ie, dim)

    return tp.Workload(users, truth, exclude, {"HashGNN": {dim: emb()}}, emb(), k)


@pytest.mark.parametrize("faiss_installed", [True, False])
def test_exact_search_equals_evaluate_with_or_without_faiss(monkeypatch, caplog, faiss_installed):
    """Exact continuous search scores like train.evaluate's continuous mode by faiss (over-fetch and
    filter) and without it (its torch fallback); without faiss the HNSW and NSG rows are skipped,
    and the log says so."""
    if faiss_installed:
        pytest.importorskip("faiss")
    else:
        monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    w = _random_workload()
    points = tp.points_for(w)
    with caplog.at_level(logging.WARNING, logger="train.reproduce.throughput"):
        tp.exact_points(points, w, "C", threads=1, repeats=1)
        tp.graph_points(points, w, "C", threads=1, repeats=1, ef_values=(16,), nsg_values=(16,))
    want = evaluate(w.continuous, w.truth, w.exclude, modes=["continuous"], ks=(20,))["continuous"]
    exact = points.rows[0]
    assert exact["method"] == ("C exact (faiss IndexFlatIP)" if faiss_installed else "C exact (torch matmul)")
    assert exact["recall@20"] == pytest.approx(want["recall@20"], abs=1e-12) and want["recall@20"] > 0
    assert exact["ndcg@20"] == pytest.approx(want["ndcg@20"], abs=1e-12)
    if faiss_installed:
        assert {r["method"].split(" (")[0] for r in points.rows} == {"C exact", "C HNSW", "C NSG"}
    else:
        assert len(points.rows) == 1
        assert "faiss not installed: no HNSW or NSG points" in caplog.text


def test_hash_points_score_like_evaluate():
    w = _random_workload(seed=1)
    points = tp.points_for(w)
    tp.hash_points(points, w, threads=1, repeats=1, candidate_values=(5, 40, 10_000))
    assert [r["setting"] for r in points.rows] == ["8 bits", "candidates=20", "candidates=40", "candidates=150"]
    want = evaluate(w.hashing["HashGNN"][8], w.truth, w.exclude, modes=["hamr", "hies"], ks=(20,), candidates=40)
    assert points.rows[0]["recall@20"] == pytest.approx(want["hamr"]["recall@20"], abs=1e-12)
    assert points.rows[2]["recall@20"] == pytest.approx(want["hies"]["recall@20"], abs=1e-12)


def test_overfetch_groups_cover_each_users_excluded_items():
    groups = tp.overfetch_groups(np.array([0, 1, 2, 3, 5, 100, 0]), k=20, n_items=64)
    assert [(list(pos), n) for pos, n in groups] == [([0, 6], 20), ([1], 21), ([2], 22), ([3], 24), ([4], 28),
                                                     ([5], 64)]


def test_drop_excluded_keeps_the_order_and_pads():
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0]], np.float32))
    ids = np.array([[3, 0, 1, 2, 5, 4], [0, 5, 1, 2, -1, -1]])
    got = tp.drop_excluded(ids, np.array([0, 1]), exclude, k=4)
    np.testing.assert_array_equal(got, [[0, 2, 5, 4], [5, -1, -1, -1]])


def test_best_recall_at_fixed_throughputs():
    """Per method, the best Recall@20 among its points at or above each throughput; None when none."""
    points = [{"method": "a", "qps": 5e3, "recall@20": 0.9}, {"method": "a", "qps": 1e4, "recall@20": 0.5},
              {"method": "a", "qps": 2e4, "recall@20": 0.6}, {"method": "a", "qps": 2e5, "recall@20": 0.3},
              {"method": "b", "qps": 9.99e3, "recall@20": 0.8}]
    got = tp.recall_at_throughputs(points, [1e3, 1e4, 1e5, 1e6])
    assert got == {"a": {1e3: 0.9, 1e4: 0.6, 1e5: 0.3, 1e6: None}, "b": {1e3: 0.8, 1e4: None, 1e5: None, 1e6: None}}


@pytest.mark.parametrize("args, message", [
    (["bits", "--bits-list", "16,x"], "--bits-list must be comma-separated ints"),
    (["bits", "--bits-list", "16,16"], "--bits-list must be distinct positive ints"),
    (["bits", "--bits-list", "16,2048"], "bits must be in 1..1024, got 2048"),
    (["bits", "--baseline-method", "hashgnn"], "invalid choice: 'hashgnn'"),
    (["throughput", "--throughputs", "1e4,-1"], "--throughputs must be distinct positive floats"),
])
def test_bad_sweep_settings_are_one_line_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as done:
        _reproduce(tmp_path, *args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
