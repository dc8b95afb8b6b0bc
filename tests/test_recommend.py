"""Run directories (train/rundir.py) and ``recommend`` (train/recommend.py) against plain references:
the engine's own ``topk`` with exclusions, an exact numpy inner product, and a simulated item
sharding merged as the Ray job merges it."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pandas as pd
import pytest

import hashsearch
from train.cli import main
from train.data import Pairs
from train.recommend import (
    ContinuousIndex,
    build_index,
    csr_range,
    csr_rows,
    index_payload,
    recommend,
    recommend_dense,
    write_recommendations,
)
from train.recommend_ray import ShardSearcher, _merge
from train.rundir import RunDirError, UnknownIdError, load_run, normalize_raw_ids, write_run_data

TINY = "synthetic:users=150,items=200,edges=3000"


# ---------------------------------------------------------------- helpers shared with test_recommend_ray.py
def make_run(path: Path, n_users: int = 60, n_items: int = 300, nbits: int = 8, dim: int = 6,
             string_ids: bool = True, seed: int = 0, full_user: Optional[int] = 3) -> Path:
    """A run directory written directly: random codes of few bits and small-integer embeddings (so
    distances and inner products tie often, and exactly), raw ids (strings, or sparse integers),
    0-40 training and 0-5 validation items a user; user ``full_user`` has all but 5 items."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "codes.npz",
             user_codes=hashsearch.pack(rng.integers(0, 2, (n_users, nbits)).astype(bool)),
             item_codes=hashsearch.pack(rng.integers(0, 2, (n_items, nbits)).astype(bool)),
             user_emb=rng.integers(-2, 3, (n_users, dim)).astype(np.float32),
             item_emb=rng.integers(-2, 3, (n_items, dim)).astype(np.float32), nbits=np.int64(nbits))
    tu, ti, vu, vi = [], [], [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        nt = n_items - 5 if u == full_user else int(rng.integers(0, min(41, n_items // 2)))
        nv = 0 if u == full_user else int(rng.integers(0, min(6, n_items // 4)))
        tu += [u] * nt
        ti += list(items[:nt])
        vu += [u] * nv
        vi += list(items[nt:nt + nv])
    if string_ids:
        raw_u = np.array([f"user-{rng.integers(1e9)}-{u}" for u in range(n_users)], dtype=object)
        raw_i = np.array([f"item_{i:05d}é" for i in rng.permutation(n_items)], dtype=object)
    else:
        raw_u = 1000 + 7 * rng.permutation(n_users).astype(np.int64)
        raw_i = 10**12 + rng.permutation(n_items).astype(np.int64) * 3
    ds = SimpleNamespace(n_users=n_users, n_items=n_items,
                         train=Pairs(np.array(tu, np.int64), np.array(ti, np.int64)),
                         valid=Pairs(np.array(vu, np.int64), np.array(vi, np.int64)),
                         raw_user_ids=raw_u, raw_item_ids=raw_i)
    write_run_data(path, ds)
    return path


def rows_from(run, users: np.ndarray, D: np.ndarray, I: np.ndarray) -> pd.DataFrame:
    """The expected output, built row by row from dense (D, I) (padding dropped)."""
    rows = [(run.user_ids[u], j + 1, run.item_ids[I[r, j]], D[r, j])
            for r, u in enumerate(users) for j in range(I.shape[1]) if I[r, j] >= 0]
    return pd.DataFrame(rows, columns=["user", "rank", "item", "score"])


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == ["user", "rank", "item", "score"]
    assert len(got) == len(want)
    for c in got.columns:
        assert [x for x in got[c].tolist()] == [x for x in want[c].tolist()], c


def numpy_ip_topk(run, users: np.ndarray, k: int):
    """Reference continuous top-k: every item scored (float64, rounded to float32), training items
    removed, a stable sort by descending score (so ties keep the smaller id)."""
    D = np.full((len(users), k), -np.inf, np.float32)
    I = np.full((len(users), k), -1, np.int64)
    for r, u in enumerate(users):
        s = (run.item_emb.astype(np.float64) @ run.user_emb[u].astype(np.float64)).astype(np.float32)
        keep = np.setdiff1d(np.arange(run.n_items), run.exclude_indices[run.exclude_indptr[u]:run.exclude_indptr[u + 1]])
        order = keep[np.argsort(-s[keep], kind="stable")][:k]
        D[r, :len(order)], I[r, :len(order)] = s[order], order
    return D, I


@pytest.fixture(scope="module")
def str_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "str")


@pytest.fixture(scope="module")
def int_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "int", string_ids=False, seed=1, nbits=70)


# ---------------------------------------------------------------- run directory
def test_fit_writes_run_data(tmp_path: Path) -> None:
    from train.config import FitConfig
    from train.data import load_dataset
    from train.trainer import fit

    ds = load_dataset(TINY, seed=0)
    fit(FitConfig(data=TINY, method="hashgnn", bits=16, epochs=1, batch_size=512, out=str(tmp_path), progress=False,
                  emb_dim=16, sage_dims=[32, 16], threads=1), dataset=ds)
    run = load_run(tmp_path)
    assert run.manifest["format_version"] == 1 and run.nbits == 16
    assert (run.user_ids == np.arange(ds.n_users)).all() and (run.item_ids == np.arange(ds.n_items)).all()
    want = ds.csr("train", "valid")
    assert (run.exclude_indptr == want.indptr).all() and (run.exclude_indices == want.indices).all()
    with np.load(tmp_path / "codes.npz") as z:
        assert (run.item_codes == z["item_codes"]).all() and (run.user_emb == z["user_emb"]).all()
    D, I = hashsearch.Index(run.item_codes, 16).topk(run.user_codes, 50, exclude=(want.indptr, want.indices))
    assert_same_rows(recommend(tmp_path, k=50), rows_from(run, np.arange(ds.n_users), D, I))


@pytest.mark.parametrize("fixture", ["str_run", "int_run"])
def test_raw_ids_round_trip(request, fixture: str) -> None:
    run = load_run(request.getfixturevalue(fixture))
    kind = object if fixture == "str_run" else np.int64
    assert run.user_ids.dtype == kind and run.item_ids.dtype == kind
    assert len(set(run.user_ids.tolist())) == run.n_users
    picked = run.user_ids[[5, 0, 5, 17]]
    assert run.user_index(list(picked)).tolist() == [5, 0, 5, 17]
    if fixture == "int_run":  # ids read from a file are strings of digits
        assert run.user_index([str(x) for x in picked]).tolist() == [5, 0, 5, 17]
    if fixture == "str_run":
        assert run.item_ids[0].endswith("é")


def _corrupt(path: Path, name: str) -> None:
    raw = bytearray((path / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(raw))


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a directory"):
        load_run(tmp_path / "nothing")
    make_run(tmp_path / "a", n_users=5, n_items=20)
    (tmp_path / "a" / "manifest.json").unlink()
    with pytest.raises(RunDirError, match="manifest.json is missing"):
        load_run(tmp_path / "a")
    for name in ("ids.npz", "train_items.npz", "codes.npz"):
        run = make_run(tmp_path / name, n_users=5, n_items=20)
        _corrupt(run, name)
        with pytest.raises(RunDirError, match=f"{name} is damaged"):
            load_run(run)
    run = make_run(tmp_path / "b", n_users=5, n_items=20)
    (run / "train_items.npz").unlink()
    with pytest.raises(RunDirError, match="train_items.npz is missing"):
        load_run(run)
    run = make_run(tmp_path / "c", n_users=5, n_items=20)
    m = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**m, "format_version": 2}))
    with pytest.raises(RunDirError, match="version 2, newer than this code reads"):
        load_run(run)
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match="damaged"):
        load_run(run)


def test_raw_id_validation() -> None:
    assert normalize_raw_ids(None, 3, "x").tolist() == [0, 1, 2]
    assert normalize_raw_ids(np.array(["a", "b"]), 2, "x").dtype == object
    with pytest.raises(RunDirError, match="3 raw ids"):
        normalize_raw_ids(np.arange(2), 3, "raw_user_ids")
    with pytest.raises(RunDirError, match="distinct"):
        normalize_raw_ids(np.array([1, 1, 2]), 3, "raw_user_ids")
    with pytest.raises(RunDirError, match="integers or strings, got dtype float64"):
        normalize_raw_ids(np.array([1.0, 2.0]), 2, "raw_item_ids")
    with pytest.raises(RunDirError, match="all integers or all strings"):
        normalize_raw_ids(np.array(["a", 3], dtype=object), 2, "raw_item_ids")


# ---------------------------------------------------------------- recommend against references
def _exclude(run):
    return run.exclude_indptr, run.exclude_indices


@pytest.mark.parametrize("index", ["scan", "mih", "cluster"])
@pytest.mark.parametrize("fixture", ["str_run", "int_run"])
def test_hamr_equals_index_topk(request, fixture: str, index: str) -> None:
    run = load_run(request.getfixturevalue(fixture))
    users = np.arange(run.n_users)
    D, I = hashsearch.Index(run.item_codes, run.nbits).topk(run.user_codes, 20, exclude=_exclude(run))
    got = recommend(run.path, k=20, index=index, batch=7)
    assert_same_rows(got, rows_from(run, users, D, I))
    assert got["score"].dtype == np.int32 and got["rank"].dtype == np.int32
    full = got[got["user"] == run.user_ids[3]]  # 5 items left: 5 rows, ranks 1..5
    assert full["rank"].tolist() == [1, 2, 3, 4, 5]
    # ties are frequent at 8 bits, and resolved to the smaller dense id
    if run.nbits == 8:
        assert (np.diff(D, axis=1) == 0).mean() > 0.5


@pytest.mark.parametrize("index", ["scan", "mih", "cluster"])
def test_hies_equals_hierarchical_index(str_run: Path, index: str) -> None:
    run = load_run(str_run)
    hier = hashsearch.HierarchicalIndex(run.item_codes, run.item_emb, run.nbits)
    S, I = hier.topk(run.user_codes, run.user_emb, 20, candidates=50, exclude=_exclude(run))
    got = recommend(str_run, k=20, mode="hies", index=index, candidates=50, batch=16)
    assert_same_rows(got, rows_from(run, np.arange(run.n_users), S, I))
    assert got["score"].dtype == np.float32


@pytest.mark.parametrize("fixture", ["str_run", "int_run"])
def test_continuous_equals_numpy_reference(request, fixture: str) -> None:
    run = load_run(request.getfixturevalue(fixture))
    users = np.arange(run.n_users)
    S, I = numpy_ip_topk(run, users, 25)
    assert_same_rows(recommend(run.path, k=25, mode="continuous", batch=9), rows_from(run, users, S, I))


def test_continuous_index_ties_and_blocks(monkeypatch) -> None:
    """All-equal scores: the k smallest ids, whatever the block size."""
    import train.recommend as rec

    idx = ContinuousIndex(np.ones((40, 3), np.float32))
    monkeypatch.setattr(rec, "CONTINUOUS_BLOCK_SCORES", 40 * 3)
    S, I = idx.topk(np.ones((7, 3), np.float32), 5, exclude=(np.array([0, 2, 2, 2, 2, 2, 2, 2]), np.array([0, 3])))
    assert I[0].tolist() == [1, 2, 4, 5, 6] and (I[1:] == np.arange(5)).all() and (S == 3).all()
    with pytest.raises(ValueError, match="NaN"):
        ContinuousIndex(np.full((2, 2), np.nan, np.float32))


def test_users_subset_order_and_unknown(str_run: Path) -> None:
    run = load_run(str_run)
    every = recommend(str_run, k=10)
    pick = [run.user_ids[9], run.user_ids[2], run.user_ids[9]]
    got = recommend(str_run, k=10, users=pick)
    want = pd.concat([every[every["user"] == u] for u in pick], ignore_index=True)
    assert_same_rows(got, want)
    with pytest.raises(UnknownIdError, match=r"2 of 3 user ids are not in this run, e\.g\. 'nobody', 'x'"):
        recommend(str_run, users=[run.user_ids[0], "nobody", "x"])
    with pytest.raises(UnknownIdError, match="not integers"):
        recommend(make_run(str_run.parent / "ints", n_users=4, n_items=10, string_ids=False), users=["a1"])


def test_k_above_items_and_bad_options(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "small", n_users=4, n_items=12, full_user=None))
    for mode in ("hamr", "hies", "continuous"):
        users, D, I = recommend_dense(run, k=30, mode=mode)
        left = 12 - np.diff(run.exclude_indptr)
        assert D.shape == (4, 30) and ((I >= 0).sum(axis=1) == left).all()
        assert len(recommend(run, k=30, mode=mode)) == left.sum()
    for bad, match in ((dict(k=0), "k must be"), (dict(mode="x"), "mode must be"), (dict(index="lsh"), "index must be"),
                       (dict(mode="continuous", index="mih"), "applies to the hamr and hies"),
                       (dict(batch=0), "batch must be"), (dict(users="everyone"), "users must be")):
        with pytest.raises(ValueError, match=match):
            recommend(run, **bad)


def test_csr_helpers(rng) -> None:
    import scipy.sparse as sp

    m = sp.random(30, 50, density=0.2, format="csr", random_state=1)
    m.sort_indices()
    rows = rng.integers(0, 30, 12)
    indptr, indices = csr_rows(m.indptr.astype(np.int64), m.indices.astype(np.int64), rows)
    sub = m[rows]
    assert (indptr == sub.indptr).all() and (indices == sub.indices).all()
    ip, ix = csr_range((indptr, indices), 10, 30)
    want = sub[:, 10:30]
    assert (ip == want.indptr).all() and (ix == want.indices).all()


@pytest.mark.parametrize("mode", ["hamr", "hies", "continuous"])
@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_merge_is_exact(str_run: Path, mode: str, shards: int) -> None:
    """The item-sharded job's searchers and merge, without Ray: the rows of one index over all items."""
    run = load_run(str_run)
    n, k, cand = run.n_items, 15, 40
    bounds = [n * s // shards for s in range(shards + 1)]
    searchers = [ShardSearcher(index_payload(build_index(mode, "scan", run.item_codes[lo:hi], run.item_emb[lo:hi],
                                                         run.nbits)), lo, hi, n, mode, 1)
                 for lo, hi in zip(bounds[:-1], bounds[1:])]
    users = np.arange(run.n_users)
    batch = (run.user_codes, run.user_emb, run.exclude_indptr, run.exclude_indices)
    D, I = _merge(mode, [s.search(batch, k, cand) for s in searchers], k, cand, n)
    _, Dw, Iw = recommend_dense(run, k=k, mode=mode, candidates=cand)
    assert (I == Iw).all() and (D == Dw).all()
    assert_same_rows(recommend(run, k=k, mode=mode, candidates=cand), rows_from(run, users, D, I))


# ---------------------------------------------------------------- files and the command line
def test_write_parquet_and_csv(str_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    want = recommend(str_run, k=12, mode="hies")
    n = write_recommendations(str_run, tmp_path / "r.parquet", k=12, mode="hies", batch=11)
    assert n == len(want)
    assert_same_rows(pd.read_parquet(tmp_path / "r.parquet"), want)
    write_recommendations(str_run, tmp_path / "r.csv", k=12, mode="hies")
    got = pd.read_csv(tmp_path / "r.csv", dtype={"user": str, "item": str}, keep_default_na=False)
    assert got["user"].tolist() == want["user"].tolist() and got["item"].tolist() == want["item"].tolist()
    assert np.allclose(got["score"], want["score"], rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.parquet"]  # no temporary files left


def test_cli(str_run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyarrow")
    run = load_run(str_run)
    users = tmp_path / "users.txt"
    users.write_text(f"{run.user_ids[4]}\n\n  {run.user_ids[1]}  \n")
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(str_run), "--k", "9", "--users", str(users), "--out", str(out),
                 "--no-progress", "--index", "cluster"]) == 0
    assert_same_rows(pd.read_parquet(out), recommend(str_run, k=9, users=[run.user_ids[4], run.user_ids[1]]))
    assert main(["recommend", "--run", str(str_run), "--k", "3", "--out", str(tmp_path / "r.txt"), "--format", "csv",
                 "--mode", "continuous", "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "r.txt")) == 3 * run.n_users
    capsys.readouterr()
    users.write_text("ghost-1\nghost-2\n")
    for args, match in (([f"--users={users}"], "2 of 2 user ids are not in this run, e.g. 'ghost-1', 'ghost-2'"),
                        (["--k", "0"], "k must be an integer >= 1, got 0"),
                        (["--shards", "2"], "--shards 2 needs --ray"),
                        (["--users", str(tmp_path / "none.txt")], "no such file")):
        assert main(["recommend", "--run", str(str_run), "--out", str(tmp_path / "x.parquet"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert main(["recommend", "--run", str(tmp_path), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_fit_on_string_ids_end_to_end(tmp_path: Path) -> None:
    """A CSV with string ids -> fit -> recommend: raw ids out, each user's training items (by raw id) left out."""
    from train.config import FitConfig
    from train.data import generate, load_dataset
    from train.data.synthetic import SyntheticSpec
    from train.trainer import fit

    pairs = generate(SyntheticSpec.parse(TINY, seed=0))
    csv = tmp_path / "inter.csv"
    pd.DataFrame({"user_id": [f"u{u:04d}x" for u in pairs.users], "item_id": [f"i-{i}" for i in pairs.items],
                  "rating": 1}).to_csv(csv, index=False)
    ds = load_dataset(str(csv), seed=0)
    assert ds.raw_user_ids is not None
    fit(FitConfig(data=str(csv), method="lightgcn", bits=16, epochs=1, batch_size=512, out=str(tmp_path / "run"),
                  progress=False, emb_dim=16, threads=1), dataset=ds)
    recs = recommend(tmp_path / "run", k=30, mode="hies")
    assert recs["user"].str.match(r"u\d{4}x").all() and recs["item"].str.startswith("i-").all()
    raw_u, raw_i = np.asarray(ds.raw_user_ids).astype(str), np.asarray(ds.raw_item_ids).astype(str)
    seen = {(raw_u[u], raw_i[i]) for split in (ds.train, ds.valid) for u, i in zip(split.users, split.items)}
    assert not any(pair in seen for pair in zip(recs["user"], recs["item"]))
    assert set(recs["user"]) == set(raw_u) and (recs.groupby("user")["rank"].max() == 30).all()
