"""Readers, splits, the synthetic generator and dataset resolution (no network)."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from train.data import (
    DataError, DataFormatError, SyntheticSpec, generate, load_dataset, paper_split, read_edgelist,
    read_lightgcn, read_movielens_ratings, read_netflix, remap, write_lightgcn,
)
from train.data.dataset import Pairs, dedupe
from train.data import download
from train.data.download import fetch, sha256_file
from train.paths import shared_data_dir


def test_read_lightgcn(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("0 1 2 3\n\n1\n2 5\n")
    u, i = read_lightgcn(f)
    assert u.dtype == np.int64 and i.dtype == np.int64
    assert u.tolist() == [0, 0, 0, 2]
    assert i.tolist() == [1, 2, 3, 5]


@pytest.mark.parametrize("bad", ["0 1 x\n", "0 -1\n", "0 1.5\n"])
def test_read_lightgcn_bad_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    f = tmp_path / "train.txt"
    f.write_text("0 1 2\n1 3\n" + bad)
    with pytest.raises(DataFormatError, match=r"train\.txt:3:"):
        read_lightgcn(f)


def test_read_edgelist(tmp_path: Path) -> None:
    f = tmp_path / "edges.txt"
    f.write_text("# comment\n0 1 1\n2\t3 0.5\n\n4   5  2 # tail\n")
    u, i, w = read_edgelist(f)
    assert u.tolist() == [0, 2, 4] and i.tolist() == [1, 3, 5]
    assert w.tolist() == [1.0, 0.5, 2.0]
    f.write_text("0 1\n2 3\n4 5 0.5\n")  # a weight on some lines only: LightGCN would read it too
    with pytest.raises(DataFormatError, match=r"edges\.txt:3: 3 fields, but line 1 has 2"):
        read_edgelist(f)
    f.write_text("0 1\n0 1 2 3\n")
    with pytest.raises(DataFormatError, match=r"edges\.txt:2:"):
        read_edgelist(f)
    f.write_text("0 1 heavy\n")
    with pytest.raises(DataFormatError, match=r"edges\.txt:1:"):
        read_edgelist(f)


def test_read_movielens_ratings(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat"
    f.write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    u, i, r, t = read_movielens_ratings(f)
    assert u.tolist() == [1, 1, 2] and i.tolist() == [1193, 661, 1193]
    assert r.tolist() == [5, 3, 4] and t[0] == 978300760
    f.write_text("1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:2:"):
        read_movielens_ratings(f)


def test_read_netflix(tmp_path: Path) -> None:
    a = tmp_path / "combined_data_1.txt"
    a.write_text("1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n2059652,4,2005-09-05\n")
    b = tmp_path / "combined_data_2.txt"
    b.write_text("3:\n1488844,1,2005-01-01\n")
    u, i, r = read_netflix([a, b])
    assert u.tolist() == [1488844, 822109, 2059652, 1488844]
    assert i.tolist() == [1, 1, 2, 3] and r.tolist() == [3, 5, 4, 1]
    a.write_text("1488844,3,2005-09-06\n")
    with pytest.raises(DataFormatError, match=r"combined_data_1\.txt:1:"):
        read_netflix([a])
    a.write_text("1:\n1488844;3;2005\n")
    with pytest.raises(DataFormatError, match=r"combined_data_1\.txt:2:"):
        read_netflix([a])


def test_remap_is_dense_and_joint() -> None:
    a = Pairs(np.array([10, 10, 30]), np.array([7, 9, 7]))
    b = Pairs(np.array([20]), np.array([100]))
    (ra, rb), nu, ni = remap([a, b])
    assert (nu, ni) == (3, 3)
    assert ra.users.tolist() == [0, 0, 2] and rb.users.tolist() == [1]
    assert ra.items.tolist() == [0, 1, 0] and rb.items.tolist() == [2]


def test_paper_split_protocol() -> None:
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(50), 40)
    items = np.concatenate([rng.choice(500, 40, replace=False) for _ in range(50)])
    tr, va, te = paper_split(users, items, seed=3)
    # disjoint and complete
    keys = lambda p: set((p.users * 1000 + p.items).tolist())  # noqa: E731
    assert not (keys(tr) & keys(te)) and not (keys(tr) & keys(va)) and not (keys(va) & keys(te))
    assert len(tr) + len(va) + len(te) == 2000
    # per user: 30% of 40 = 12 test, 10% of the remaining 28 = 3 validation
    assert np.all(np.bincount(te.users, minlength=50) == 12)
    assert np.all(np.bincount(va.users, minlength=50) == 3)
    # deterministic in the seed, different across seeds
    tr2, _, te2 = paper_split(users, items, seed=3)
    assert np.array_equal(te.items, te2.items)
    _, _, te3 = paper_split(users, items, seed=4)
    assert not np.array_equal(te.items, te3.items)


def test_paper_split_keeps_a_training_item() -> None:
    tr, va, te = paper_split(np.array([0, 1, 1]), np.array([5, 6, 7]), seed=0)
    assert 0 in tr.users.tolist() and 1 in tr.users.tolist()


def test_dedupe() -> None:
    p = dedupe(np.array([1, 0, 1]), np.array([2, 3, 2]))
    assert p.users.tolist() == [0, 1] and p.items.tolist() == [3, 2]


def test_synthetic_generator() -> None:
    spec = SyntheticSpec.parse("synthetic:users=500,items=800,edges=20000", seed=5)
    a = generate(spec)
    b = generate(spec)
    assert len(a) == 20000
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    keys = a.users * 800 + a.items
    assert np.unique(keys).shape[0] == 20000  # distinct pairs
    assert a.users.min() >= 0 and a.users.max() < 500 and a.items.max() < 800
    deg = np.bincount(a.items, minlength=800)
    assert deg.max() > 5 * np.median(deg)  # heavy-tailed popularity
    c = generate(SyntheticSpec.parse("synthetic:users=500,items=800,edges=20000", seed=6))
    assert not np.array_equal(a.items, c.items)


def test_merge_distinct_is_the_sorted_union() -> None:
    from train.data.synthetic import _merge_distinct

    rng = np.random.default_rng(3)
    for n_a, n_b in ((0, 0), (0, 5), (7, 0), (200, 300), (1000, 1000)):
        a = np.unique(rng.integers(0, 500, n_a))
        b = np.unique(rng.integers(0, 500, n_b))
        np.testing.assert_array_equal(_merge_distinct(a, b), np.union1d(a, b))


def test_synthetic_spec_errors() -> None:
    with pytest.raises(ValueError, match="unknown synthetic parameter"):
        SyntheticSpec.parse("synthetic:users=5,colour=3")
    with pytest.raises(ValueError, match="cannot fit"):
        SyntheticSpec.parse("synthetic:users=2,items=2,edges=5")


def test_load_dataset_lightgcn_dir(tmp_path: Path) -> None:
    write_lightgcn(tmp_path / "train.txt", np.array([0, 0, 1, 2]), np.array([0, 1, 2, 3]))
    write_lightgcn(tmp_path / "valid.txt", np.array([0]), np.array([2]))
    write_lightgcn(tmp_path / "test.txt", np.array([1, 2]), np.array([0, 1]))
    ds = load_dataset(str(tmp_path))
    assert ds.stats() == {"n_users": 3, "n_items": 4, "train": 4, "valid": 1, "test": 2}
    assert ds.csr("train", "valid")[0].toarray().ravel().tolist() == [1, 1, 1, 0]
    merged = ds.merge_valid()
    assert len(merged.train) == 5 and len(merged.valid) == 0 and len(merged.test) == 2


def test_load_dataset_ratings_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [f"{u}::{i}::{rng.integers(1, 6)}::9783000{u}" for u in range(1, 31)
             for i in rng.choice(np.arange(100, 200), 20, replace=False)]
    (tmp_path / "ratings.dat").write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(tmp_path / "ratings.dat"), seed=0)
    assert ds.n_users == 30 and ds.n_items <= 100
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 600
    hi = load_dataset(str(tmp_path / "ratings.dat"), seed=0, min_rating=4)
    assert len(hi.train) + len(hi.valid) + len(hi.test) < 600


def test_load_dataset_missing() -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset("/nonexistent/dir/for/sure")


def _ratings_lines(n_users: int = 30, per_user: int = 20, seed: int = 0) -> str:
    """MovieLens ``ratings.dat`` text: n_users users, per_user distinct items each (ids 100-199)."""
    rng = np.random.default_rng(seed)
    return "".join(f"{u}::{i}::{rng.integers(1, 6)}::97830{u:04d}\n" for u in range(1, n_users + 1)
                   for i in rng.choice(np.arange(100, 200), per_user, replace=False))


def _interactions(ds) -> int:
    return len(ds.train) + len(ds.valid) + len(ds.test)


def test_load_dataset_every_local_form(tmp_path: Path) -> None:
    """Each --data form the docstring lists reads every interaction and splits it."""
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "ratings.dat").write_text(_ratings_lines())
    by_file, by_dir = load_dataset(str(ml / "ratings.dat")), load_dataset(str(ml))
    assert _interactions(by_file) == _interactions(by_dir) == 600 and by_dir.name == "ml"
    assert by_file.stats() == by_dir.stats()

    nf = tmp_path / "netflix"
    nf.mkdir()
    (nf / "combined_data_1.txt").write_text("1:\n10,3,2005-09-06\n11,5,2005-05-13\n2:\n10,4,2005-09-05\n")
    (nf / "combined_data_2.txt").write_text("3:\n11,1,2005-01-01\n12,2,2005-01-02\n")
    assert _interactions(load_dataset(str(nf))) == 5  # both files of the directory
    with pytest.raises(DataError, match=r"the test split is empty \(train 2, valid 0, test 0 interactions"):
        load_dataset(str(nf / "combined_data_2.txt"))  # two users with one rating each: nothing to test
    assert _interactions(load_dataset(str(nf), min_rating=3)) == 3

    edges = tmp_path / "edges.txt"
    edges.write_text("".join(f"{u} {i} {1 + (u + i) % 2}\n" for u in range(20) for i in range(u % 5, 40, 5)))
    with pytest.raises(DataFormatError, match="ambiguous format"):  # 'user item weight' reads as LightGCN too
        load_dataset(str(edges))
    assert _interactions(load_dataset(str(edges), format="edges")) == 160
    assert _interactions(load_dataset(str(edges), format="edges", min_rating=2)) == 80

    # A LightGCN directory without valid.txt has an empty validation split; split="paper"
    # merges its files and re-splits them.
    lg = tmp_path / "lg"
    lg.mkdir()
    users, items = np.repeat(np.arange(10), 20), np.tile(np.arange(20), 10)
    write_lightgcn(lg / "train.txt", users[users % 2 == 0], items[users % 2 == 0])
    write_lightgcn(lg / "test.txt", users[users % 2 == 1], items[users % 2 == 1])
    given = load_dataset(str(lg))
    assert (len(given.train), len(given.valid), len(given.test)) == (100, 0, 100)
    resplit = load_dataset(str(lg), split="paper")
    assert _interactions(resplit) == 200 and len(resplit.valid) > 0


def test_load_dataset_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be auto, given, paper or temporal, got 'random'"):
        load_dataset("synthetic:users=10,items=10,edges=50", split="random")
    with pytest.raises(FileNotFoundError, match="no data files found: expected train/test files"):
        load_dataset(str(tmp_path))
    write_lightgcn(tmp_path / "train.txt", np.array([0]), np.array([0]))
    with pytest.raises(FileNotFoundError, match="test.txt is missing"):
        load_dataset(str(tmp_path))


def test_ml1m_downloads_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data ml-1m`` without the shared copy: the GroupLens archive is fetched into
    $HASHSEARCH_DATA, checked, extracted, and read from the cache afterwards (served here
    from a local file:// URL standing in for GroupLens)."""
    archive = tmp_path / "served" / "ml-1m.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", _ratings_lines())
        zf.writestr("ml-1m/README", "stand-in")
    monkeypatch.setenv("HASHSEARCH_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("HASHSEARCH_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "ML1M_URL", archive.as_uri())
    monkeypatch.setattr(download, "ML1M_SHA256", "0" * 64)
    with pytest.raises(OSError, match="checksum mismatch"):
        load_dataset("ml-1m")
    assert not (tmp_path / "cache" / "ml-1m" / "ratings.dat").exists()

    monkeypatch.setattr(download, "ML1M_SHA256", sha256_file(archive))
    ds = load_dataset("ml-1m", seed=0)
    assert ds.name == "ml-1m" and _interactions(ds) == 600
    assert (tmp_path / "cache" / "ml-1m" / "ratings.dat").read_text() == _ratings_lines()
    # Afterwards the cache answers: no download (the URL no longer resolves).
    monkeypatch.setattr(download, "ML1M_URL", (tmp_path / "gone.zip").as_uri())
    assert load_dataset("ml-1m:download", seed=0).stats() == ds.stats()


def test_fetch_checks_sha256_and_is_atomic(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello" * 1000)
    good = sha256_file(src)
    dest = tmp_path / "cache" / "x.bin"
    with pytest.raises(OSError, match="checksum mismatch"):
        fetch(src.as_uri(), dest, "0" * 64)
    assert not dest.exists() and os.listdir(dest.parent) == []  # no partial file left
    assert fetch(src.as_uri(), dest, good) == dest
    assert dest.read_bytes() == src.read_bytes()
    dest.write_bytes(b"stale")  # a damaged cached copy is downloaded again
    assert fetch(src.as_uri(), dest, good) == dest and dest.read_bytes() == src.read_bytes()


SHARED = shared_data_dir()


@pytest.mark.parametrize("name,stats", [
    ("ml-1m", {"n_users": 6039, "n_items": 3628, "train": 590733, "valid": 80897, "test": 164848}),
    ("gowalla", {"n_users": 29858, "n_items": 40981, "train": 719081, "valid": 91047, "test": 217242}),
])
def test_shared_real_data(name: str, stats: dict) -> None:
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} is absent")
    ds = load_dataset(name)
    assert ds.stats() == stats
    tr, te = ds.csr("train"), ds.csr("test")
    assert tr.multiply(te).nnz == 0  # disjoint splits
