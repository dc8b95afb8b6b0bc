"""``recommend`` on a local Ray cluster of 2 CPUs: user-split and item-sharded jobs give the rows of the
single-process run (8-bit codes and integer embeddings, so ties are frequent; exclusions on)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from test_recommend import assert_same_rows, make_run  # noqa: E402

from train.cli import main  # noqa: E402
from train.recommend import recommend  # noqa: E402
from train.recommend_ray import recommend_ray  # noqa: E402
from train.rundir import load_run  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("ray") / "run", n_users=90, n_items=400)


@pytest.mark.parametrize("mode", ["hamr", "hies", "continuous"])
def test_user_split_and_sharded_equal_single_process(cluster, run_dir: Path, mode: str) -> None:
    want = recommend(run_dir, k=25, mode=mode, candidates=60)
    for shards in (0, 2, 3):
        res = recommend_ray(run_dir, k=25, mode=mode, candidates=60, shards=shards, batch=16)
        assert res["parts"] == 6 and res["rows"] == len(want)
        assert_same_rows(res["frame"], want)
        if shards:
            assert len(res["shard_memory"]) == shards and all(m["peak_rss"] > 0 for m in res["shard_memory"])


def test_other_indexes_and_user_subset(cluster, run_dir: Path) -> None:
    run = load_run(run_dir)
    users = list(run.user_ids[[40, 3, 7]])
    want = recommend(run_dir, k=30, users=users)
    for index in ("mih", "cluster"):
        for shards in (0, 2):
            got = recommend_ray(run_dir, k=30, users=users, index=index, shards=shards, batch=2)["frame"]
            assert_same_rows(got, want)


def test_partitioned_output(cluster, run_dir: Path, tmp_path: Path) -> None:
    want = recommend(run_dir, k=10, mode="hies")
    out = tmp_path / "recs"
    for shards in (0, 2):  # the second run replaces the first one's directory
        res = recommend_ray(run_dir, k=10, mode="hies", shards=shards, batch=32, out=out)
        assert res["rows"] == len(want)
        assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
        assert_same_rows(pd.read_parquet(out), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs"]  # no temporary directories left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an earlier output directory"):
        recommend_ray(run_dir, k=10, out=tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").exists()


def test_cli_ray(cluster, run_dir: Path, tmp_path: Path) -> None:
    want = recommend(run_dir, k=7, mode="continuous")
    for extra in ([], ["--shards", "2"]):
        out = tmp_path / f"csv{len(extra)}"
        assert main(["recommend", "--run", str(run_dir), "--k", "7", "--mode", "continuous", "--out", str(out),
                     "--format", "csv", "--batch", "40", "--ray", "--no-progress", *extra]) == 0
        got = pd.concat([pd.read_csv(p, dtype={"user": str, "item": str}) for p in sorted(out.iterdir())],
                        ignore_index=True)
        assert got["item"].tolist() == want["item"].tolist() and np.array_equal(got["score"], want["score"])
    assert ray.is_initialized()  # a cluster it did not start is left running


@pytest.mark.parametrize("shards", [0, 2])
def test_failed_job_leaves_nothing(cluster, run_dir: Path, tmp_path: Path, shards: int) -> None:
    """A batch that fails (a NaN embedding): the error surfaces, and neither the output nor a
    temporary directory is left."""
    run = load_run(run_dir)
    run.user_emb[50] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        recommend_ray(run, k=10, mode="continuous", out=tmp_path / "recs", batch=8, shards=shards)
    assert list(tmp_path.iterdir()) == []
