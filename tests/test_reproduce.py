"""CI-sized runs of every reproduction command on a tiny synthetic graph, so none rots."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from train.reproduce.efficiency import learned_like, table4, table4_rows  # noqa: E402
from train.reproduce.tradeoff import mips_to_l2, recall_at_k  # noqa: E402

TINY = "synthetic:users=200,items=300,edges=4000"


def _reproduce(tmp_path, *args):
    from train.cli import main

    assert main(["reproduce", *args, "--data", TINY, "--out", str(tmp_path), "--epochs", "1",
                 "--repeats", "1", "--no-progress", "--alibaba-users", "20",
                 "--alibaba-items", "5000"]) == 0


def test_all_commands_write_their_outputs(tmp_path):
    _reproduce(tmp_path, "all")
    for name in ("table2", "fig3", "table4", "tradeoff"):
        assert (tmp_path / f"{name}.md").read_text().strip()
        json.loads((tmp_path / f"{name}.json").read_text())
    assert list(tmp_path.glob("fig3_*.png")) and list(tmp_path.glob("tradeoff_*.png"))
    t2 = json.loads((tmp_path / "table2.json").read_text())
    (per_data,) = t2.values()
    assert len(per_data["rows"]) == 11
    assert all(0.0 <= r["recall@50"] <= r["recall@100"] <= 1.0 for r in per_data["rows"])
    assert per_data["machine"]["git_revision"]
    t4 = json.loads((tmp_path / "table4.json").read_text())
    methods = {r["method"] for r in t4["rows"]}
    assert {"HamR (ours, linear scan)", "CeS (numpy matmul)"} <= methods
    assert any(m.startswith("HieS (ours") and "by MIH" in m for m in methods)
    assert any(m.startswith("HamR (ours, ClusterIndex C=") for m in methods)
    assert any(m.startswith("HieS (ours") and "by ClusterIndex C=" in m for m in methods)
    tradeoff = json.loads((tmp_path / "tradeoff.json").read_text())
    assert "HamR (ours, ClusterIndex)" in json.dumps(tradeoff)
    extrapolated = [r for r in t4["rows"] if r["extrapolated"]]
    assert extrapolated and all(r["all_users_seconds"] > r["measured_seconds"] for r in extrapolated)
    fig3 = json.loads((tmp_path / "fig3.json").read_text())
    (curves,) = fig3.values()
    for curve in curves["recall"].values():
        values = [curve[str(n)] for n in range(10, 101, 10)]
        assert values == sorted(values)  # Recall@n never decreases in n


def test_second_run_reuses_cached_training(tmp_path):
    _reproduce(tmp_path, "table2")
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/*/metrics.json")}
    _reproduce(tmp_path, "fig3", "--threads", "1")  # another thread count: still the same runs
    assert stamp and all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    # a guided-STE knob: only the guided methods (hashgnn, _nr, _sp, the LightGCN one) retrain
    _reproduce(tmp_path, "fig3", "--p-decay", "0.9")
    changed = {p.parent.name for p, t in stamp.items() if p.stat().st_mtime_ns != t}
    assert changed == {"hashgnn", "hashgnn_nr", "hashgnn_sp", "hashgnn-lightgcn"} & {p.parent.name for p in stamp}
    assert "hashgnn" in changed and "hashnet" in {p.parent.name for p in stamp}
    stamp = {p: p.stat().st_mtime_ns for p in stamp}
    _reproduce(tmp_path, "fig3", "--p-decay", "0.9", "--seed", "1")  # another experiment: retrained
    hashgnn = next(p for p in stamp if p.parent.name == "hashgnn")
    assert hashgnn.stat().st_mtime_ns != stamp[hashgnn]


def test_recall_at_k_by_hand():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [8, 0, 0, 0]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 1 / 4) / 2)


def test_mips_to_l2_keeps_the_inner_product_order():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 8)).astype(np.float32) * rng.uniform(0.1, 3, size=(500, 1)).astype(np.float32)
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    items_l2, queries_l2 = mips_to_l2(items, queries)
    assert items_l2.shape == (500, 9) and queries_l2.shape == (40, 9) and items_l2.dtype == np.float32
    assert np.allclose(np.linalg.norm(items_l2, axis=1), np.linalg.norm(items, axis=1).max(), rtol=1e-5)
    ip = queries.astype(np.float64) @ items.T.astype(np.float64)
    l2 = ((queries_l2[:, None, :].astype(np.float64) - items_l2[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(np.argsort(-ip, axis=1)[:, :20], np.argsort(l2, axis=1)[:, :20])


def test_speedups_and_extrapolation():
    res = {"CeS (faiss IndexFlatIP)": {"seconds": 2.0}, "HamR (ours, linear scan)": {"seconds": 0.5}}
    rows = table4_rows("x", res, n_users=1000, measured_users=100)
    by = {r["method"]: r for r in rows}
    assert by["HamR (ours, linear scan)"]["speedup_vs_ces"] == 4.0
    assert by["HamR (ours, linear scan)"]["all_users_seconds"] == pytest.approx(5.0)


def test_learned_like_codes_match_their_embeddings():
    import hashsearch

    d = learned_like(10, 50, 40, dim=8, seed=1)
    assert d["item_codes"].shape == (50, 1) and d["item_emb"].dtype == np.float32
    again = learned_like(10, 50, 40, dim=8, seed=1)
    np.testing.assert_array_equal(d["item_codes"], again["item_codes"])
    assert hashsearch.unpack(d["item_codes"], 40).shape == (50, 40)


def test_training_flags_reach_every_method():
    """--batch-size/--lr/--eval-every/--patience set every method's FitConfig; omitted, fit's defaults stay."""
    import argparse

    from train.config import FitConfig
    from train.reproduce import _base_config, add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["reproduce", "table2", "--out", "x", "--batch-size", "16384", "--lr", "0.002",
                            "--eval-every", "2", "--patience", "4"])
    cfg = _base_config(ns, TINY)
    assert (cfg.batch_size, cfg.lr, cfg.eval_every, cfg.patience) == (16384, 0.002, 2, 4)
    default = _base_config(parser.parse_args(["reproduce", "table2", "--out", "x"]), TINY)
    d = FitConfig()
    assert (default.batch_size, default.lr, default.eval_every, default.patience) == (
        d.batch_size, d.lr, d.eval_every, d.patience)


def test_cache_key_ignores_other_methods_knobs_and_fills_newer_settings():
    from train.config import FitConfig
    from train.reproduce.common import _cache_key

    hashnet = FitConfig(method="hashnet").to_dict()
    assert _cache_key({**hashnet, "p_decay": 0.5, "threads": 7, "out": "elsewhere", "resume": True}) == _cache_key(hashnet)
    assert _cache_key({**hashnet, "hashnet_gamma": 0.5}) != _cache_key(hashnet)
    hashgnn = FitConfig(method="hashgnn").to_dict()
    assert _cache_key({**hashgnn, "p_decay": 0.5}) != _cache_key(hashgnn)
    older = {k: v for k, v in hashgnn.items() if k != "cont_weight"}  # a run from before the setting
    assert _cache_key(older) == _cache_key(hashgnn)
    assert _cache_key(older) != _cache_key({**hashgnn, "cont_weight": 1.0})


def test_table4_times_mih_and_clusters_on_all_users_without_extrapolation(tmp_path):
    _reproduce(tmp_path, "table4", "--alibaba-all-users", "300")
    rows = json.loads((tmp_path / "table4.json").read_text())["rows"]
    sliced = [r for r in rows if r["data"].startswith("synthetic Alibaba") and r["measured_users"] == 20]
    assert sliced and all(r["extrapolated"] for r in sliced)
    assert all(r["all_users_seconds"] == pytest.approx(r["measured_seconds"] * 300 / 20) for r in sliced)
    full = [r for r in rows if r["data"].endswith(", all users")]
    assert sorted(r["method"].split(" m=")[0].split(" C=")[0] for r in full) == [
        "HamR (ours, ClusterIndex", "HamR (ours, MIH"]
    ces = min(r["all_users_seconds"] for r in sliced if r["method"].startswith("CeS"))
    for r in full:
        assert r["measured_users"] == 300
        assert not r["extrapolated"] and r["all_users_seconds"] == r["measured_seconds"]
        assert r["speedup_vs_ces"] == pytest.approx(ces / r["all_users_seconds"])
    assert ", all users" in (tmp_path / "table4.md").read_text()


def test_table4_users_timed_samples_users_and_times_hamming_methods_on_all(tmp_path):
    """--users-timed N on a trained data set: every method on a seeded sample of N users (times
    extrapolated, Recall@100 on the sample), HamR and HieS also on all users; the run trains with
    the given --test-modes."""
    _reproduce(tmp_path, "table4", "--users-timed", "50", "--alibaba-users", "0",
               "--test-modes", "hamr,hies")
    rows = json.loads((tmp_path / "table4.json").read_text())["rows"]
    sample = [r for r in rows if r["data"].endswith(", 50 users")]
    full = [r for r in rows if r["data"].endswith(", all users")]
    assert {r["method"].split(" (")[0] for r in sample} == {"CeS", "HamR", "HieS"}
    assert all(r["measured_users"] == 50 and r["extrapolated"] for r in sample)
    assert all(r["all_users_seconds"] == pytest.approx(r["measured_seconds"] * 200 / 50) for r in sample)
    assert full and all(r["method"].startswith(("HamR (ours", "HieS (ours")) for r in full)
    assert all(r["measured_users"] == 200 and not r["extrapolated"] for r in full)
    assert all(0.0 <= r["recall"] <= 1.0 for r in sample + full)
    (run,) = tmp_path.glob("runs/*/hashgnn/metrics.json")
    metrics = json.loads(run.read_text())
    assert "continuous" not in metrics and "hamr" in metrics


def test_seeds_and_methods_give_a_mean_table_beside_the_full_one(tmp_path):
    """--seeds trains each chosen method once per seed: the seed of the experiment reuses the
    usual run, the others go to runs/<data>/seed<s>/; cells are mean ± sd of the runs' own metrics."""
    _reproduce(tmp_path, "table2", "--methods", "lsh,hashgnn")
    (single,) = tmp_path.glob("table2_*_lsh+hashgnn.json")
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/*/metrics.json")}
    assert {p.parent.name for p in stamp} == {"lsh", "hashgnn"}
    _reproduce(tmp_path, "table2", "--seeds", "0", "1", "--methods", "lsh,hashgnn")
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())  # seed 0: the same runs, reused
    assert not (tmp_path / "table2.md").exists()  # the summary page is the full table's
    (multi,) = tmp_path.glob("table2_*_seeds0-1_lsh+hashgnn.json")
    payload = json.loads(multi.read_text())
    assert payload["seeds"] == [0, 1] and [r["method"] for r in payload["rows"]] == ["lsh", "hashgnn"]
    runs = next(tmp_path.glob("runs/*"))
    for row in payload["rows"]:
        seed0 = json.loads((runs / row["method"] / "metrics.json").read_text())
        seed1 = json.loads((runs / "seed1" / row["method"] / "metrics.json").read_text())
        assert seed1["config"]["seed"] == 1 and seed0["config"]["seed"] == 0
        got = [seed0["hies"]["recall@50"], seed1["hies"]["recall@50"]]
        assert row["per_seed"]["recall@50"] == got
        assert row["recall@50"] == pytest.approx(np.mean(got))
        assert row["sd"]["recall@50"] == pytest.approx(np.std(got, ddof=1))
    assert len(payload["best_hashing_method_per_seed"]) == 2
    assert "±" in payload["markdown"] and "Recall@50 per seed" in payload["markdown"]
    _reproduce(tmp_path, "fig3", "--seeds", "0", "1", "--methods", "lsh,hashgnn")
    (fig,) = tmp_path.glob("fig3_*_seeds0-1_lsh+hashgnn.json")
    curves = json.loads(fig.read_text())
    for label, per_seed in curves["recall_per_seed"].items():
        assert curves["recall"][label]["50"] == pytest.approx(np.mean([c["50"] for c in per_seed]))
    assert list(tmp_path.glob("fig3_*_seeds0-1_lsh+hashgnn.png"))


@pytest.mark.parametrize("args, message", [(["--methods", "hashgnn,nope"], "unknown method"),
                                           (["--seeds", "1", "1"], "distinct")])
def test_bad_seeds_or_methods_are_refused(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        _reproduce(tmp_path, "table2", *args)


def test_extra_seeds_record_the_split_they_trained_on(tmp_path):
    """A --seeds run trains on the experiment's split (--seed) and records it as data_seed, so a
    later experiment with another --seed retrains it instead of reusing a run of another split."""
    _reproduce(tmp_path, "table2", "--seeds", "0", "1", "--methods", "lsh")
    runs = next(tmp_path.glob("runs/*"))
    extra = runs / "seed1" / "lsh" / "metrics.json"
    config = json.loads(extra.read_text())["config"]
    assert (config["seed"], config["data_seed"]) == (1, 0)
    assert json.loads((runs / "lsh" / "metrics.json").read_text())["config"]["data_seed"] is None
    stamp = extra.stat().st_mtime_ns
    _reproduce(tmp_path, "table2", "--seeds", "0", "1", "--methods", "lsh")
    assert extra.stat().st_mtime_ns == stamp  # same split: reused
    _reproduce(tmp_path, "table2", "--seed", "2", "--seeds", "2", "1", "--methods", "lsh")
    assert extra.stat().st_mtime_ns != stamp  # another split: retrained
    assert json.loads(extra.read_text())["config"]["data_seed"] == 2


def test_cache_key_counts_an_unset_data_seed_as_the_run_seed():
    from train.config import FitConfig
    from train.reproduce.common import _cache_key

    assert _cache_key(FitConfig(seed=3).to_dict()) == _cache_key(FitConfig(seed=3, data_seed=3).to_dict())
    assert _cache_key(FitConfig(seed=3).to_dict()) != _cache_key(FitConfig(seed=3, data_seed=0).to_dict())
    old = FitConfig(seed=1).to_dict()
    del old["data_seed"]  # a run recorded without the field
    assert _cache_key(old) == _cache_key(FitConfig(seed=1).to_dict())


@pytest.mark.parametrize("m", [0, 65])
def test_table4_refuses_mih_table_counts_outside_the_code(tmp_path, m):
    with pytest.raises(ValueError, match=rf"1\.\.nbits=64, got \[{m}\]"):
        table4([], tmp_path, nbits=64, extra_mih_m=(4, m))
    assert not (tmp_path / "table4.json").exists()


def test_table4_times_extra_mih_table_counts(tmp_path):
    """--mih-m adds HamR rows by MIH with more tables, naming their memory, on every workload."""
    _reproduce(tmp_path, "table4", "--bits", "64", "--mih-m", "4", "--alibaba-all-users", "300")
    payload = json.loads((tmp_path / "table4.json").read_text())
    assert payload["extra_mih_m"] == [4]
    extra = [r for r in payload["rows"] if r["method"].startswith("HamR (ours, MIH m=4, tables ")]
    assert {r["data"].endswith(", all users") for r in extra} == {True, False}
    assert len({r["data"] for r in extra}) == len({r["data"] for r in payload["rows"]})
    default = [r for r in payload["rows"] if r["method"].startswith("HamR (ours, MIH m=") and "tables" not in r["method"]]
    assert default and all("m=4" not in r["method"] for r in default)


def test_table4_recall_is_that_of_the_timed_lists() -> None:
    import scipy.sparse as sp

    from train.reproduce.efficiency import recall_at

    truth = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    ids = np.array([[2, 3], [0, 1], [0, 3]])
    assert recall_at(ids, truth, 2) == pytest.approx((0.5 + 0.0) / 2)  # user 1 has no test items
    dist = np.zeros_like(ids, np.int32)
    assert recall_at((dist, ids), truth, 1) == pytest.approx(0.5 / 2)


def test_time_methods_once_calls_each_method_one_time_without_warm_up(monkeypatch):
    """All users of a large data set: one call per method (a call takes minutes there)."""
    from train.reproduce import efficiency

    calls = []

    def record(fn, repeats=3, warmup=1):
        calls.append((repeats, warmup))
        fn()
        return 0.0

    monkeypatch.setattr(efficiency, "median_seconds", record)
    data = efficiency.learned_like(30, 500, 32, seed=0)
    efficiency.time_methods(data, 32, 10, 1, 50, repeats=3, include_numpy=False, once=True)
    assert calls and all(c == (1, 0) for c in calls)
    calls.clear()
    efficiency.time_methods(data, 32, 10, 1, 50, repeats=3, include_numpy=False)
    assert (3, 1) in calls


def test_paper_split_table_sits_beside_the_papers_numbers(tmp_path, monkeypatch):
    """--split paper: runs on the per-user 70/30 re-split in their own directory, each scored by the
    official protocol too; the table puts those scores beside the paper's and names the orderings."""
    from train.reproduce import accuracy
    from train.reproduce.common import data_label

    monkeypatch.setitem(accuracy.PAPER_HR50, data_label(TINY), {"hashnet": 0.1, "hashgnn": 0.3})
    _reproduce(tmp_path, "table2", "--split", "paper", "--methods", "hashnet,hashgnn")
    (page,) = tmp_path.glob("table2_*_paper_hashnet+hashgnn.json")
    payload = json.loads(page.read_text())
    runs = list(tmp_path.glob("runs/*/*/metrics.json"))
    assert {p.parent.parent.name for p in runs} == {data_label(TINY) + "_paper"}
    for row in payload["rows"]:
        metrics = json.loads((runs[0].parent.parent / row["method"] / "metrics.json").read_text())
        assert metrics["config"]["split"] == "paper"
        assert row["paper_protocol"]["recall@50"] == metrics["paper_protocol"]["hies"]["recall@50"]
        assert row["recall@50"] == metrics["hies"]["recall@50"]
    assert [r["paper_hr@50"] for r in payload["rows"]] == [0.1, 0.3]
    md = payload["markdown"]
    assert "paper's HR@50" in md and "0.3000" in md and "- paper: HashGNN > HashNet" in md
    assert "of the paper's 1 pairwise orderings hold" in md


def test_method_set_overrides_one_run_only(tmp_path):
    """--method-set RUN:FIELD=V gives one run its own settings: that run trains with them and
    retrains when they change; the other runs keep the shared settings and their cache."""
    _reproduce(tmp_path, "table2", "--methods", "lsh,mf", "--method-set", "mf:lr=0.01,epochs=2")
    runs = next(tmp_path.glob("runs/*"))
    mf = json.loads((runs / "mf" / "metrics.json").read_text())
    lsh = json.loads((runs / "lsh" / "metrics.json").read_text())
    assert (mf["config"]["lr"], mf["config"]["epochs"], mf["epochs_run"]) == (0.01, 2, 2)
    assert lsh["config"]["epochs"] == 1 and lsh["config"]["lr"] != 0.01
    (page,) = tmp_path.glob("table2_*_lsh+mf.md")
    assert "| MF | continuous |" in page.read_text() and "| 2 |" in page.read_text()  # the epochs column
    stamp = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    _reproduce(tmp_path, "table2", "--methods", "lsh,mf", "--method-set", "mf:lr=0.02,epochs=2")
    changed = {p.parent.name for p, t in stamp.items() if p.stat().st_mtime_ns != t}
    assert changed == {"mf"}


@pytest.mark.parametrize("value, message", [("nope:lr=1", "RUN one of"), ("mf:nope=1", "not FIELD=VALUE"),
                                            ("mf:epochs=1.5", "whole number"), ("mf:lr", "not FIELD=VALUE")])
def test_method_set_refuses_unknown_runs_and_fields(value, message):
    import argparse

    from train.reproduce import parse_method_set

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_method_set(value)
