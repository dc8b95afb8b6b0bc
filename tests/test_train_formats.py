"""Interaction formats: each one read, detection that refuses to guess, raw ids, temporal split,
and the too-little-data errors."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from train.data import DataError, DataFormatError, Dataset, load_dataset, write_lightgcn
from train.data.formats import sniff
from train.data.readers import read_edges, read_lightgcn
from train.data.tabular import read_table
from train.data.tokens import read_int_tokens


def _n(ds: Dataset) -> int:
    return len(ds.train) + len(ds.valid) + len(ds.test)


def _raw_pairs(ds: Dataset, *splits: str) -> set:
    """The (raw user, raw item) pairs of ``splits``, through the dataset's id maps."""
    ru = ds.raw_user_ids if ds.raw_user_ids is not None else np.arange(ds.n_users)
    ri = ds.raw_item_ids if ds.raw_item_ids is not None else np.arange(ds.n_items)
    out = set()
    for s in splits:
        p = getattr(ds, s)
        out |= set(zip(ru[p.users].tolist(), ri[p.items].tolist()))
    return out


def _ratings(n_users: int = 20, per_user: int = 10, seed: int = 0) -> List[Tuple[str, str, float, int]]:
    """(user, item, rating, time) rows with string ids, distinct pairs, distinct times per user."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(60, per_user, replace=False)):
            rows.append((f"u{u}", f"item-{i}", float(rng.integers(1, 6)), 1_000_000 + 100 * u + k))
    return rows


# ---------------------------------------------------------------- every format


def test_csv_with_header_and_string_ids(tmp_path: Path) -> None:
    rows = _ratings()
    f = tmp_path / "ratings.csv"
    f.write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    ds = load_dataset(str(f), seed=0)
    assert _n(ds) == len(rows) and ds.n_users == 20
    assert ds.raw_user_ids.dtype.kind in "OU" and sorted(ds.raw_user_ids.tolist()) == ds.raw_user_ids.tolist()
    assert _raw_pairs(ds, "train", "valid", "test") == {(u, i) for u, i, _, _ in rows}
    hi = load_dataset(str(f), seed=0, min_rating=4)
    assert _n(hi) == sum(r >= 4 for _, _, r, _ in rows)


def test_movielens_csv_header_names_and_columns_option(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{10 + i},3.5,{u * 100 + i}\n"
                                                               for u in range(6) for i in range(u, u + 5)))
    ds = load_dataset(str(f))
    assert _n(ds) == 30 and ds.raw_item_ids.tolist() == list(range(10, 20))
    assert ds.raw_user_ids is None  # users 0..5: raw == dense
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # a UTF-8 byte order mark before the header
    assert load_dataset(str(f)).stats() == ds.stats()
    g = tmp_path / "odd.csv"
    g.write_text("who,what,stars\n" + "".join(f"{u},{i},{1 + i % 5}\n" for u in range(6) for i in range(u, u + 5)))
    with pytest.raises(DataFormatError, match=r"first row \['who', 'what', 'stars'\] names no known column"):
        load_dataset(str(g))
    with pytest.raises(DataFormatError, match=r"no user column among \['who', 'what', 'stars'\].*--columns"):
        load_dataset(str(g), columns="item=what")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("1,5,2.5\n2,5,4\n")  # all numbers: data, columns by position
    got = read_table(numbers, "csv")
    assert got.users.tolist() == [1, 2] and got.items.tolist() == [5, 5] and got.rating.tolist() == [2.5, 4.0]
    ds = load_dataset(str(g), columns="user=who,item=what,rating=stars", min_rating=3)
    assert _n(ds) == sum(1 + i % 5 >= 3 for u in range(6) for i in range(u, u + 5))
    with pytest.raises(DataFormatError, match=r"no column 'nope'; the header has"):
        load_dataset(str(g), columns="user=who,item=nope")


def test_csv_without_header_quoting_blank_lines_and_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "plain.csv"
    body = "".join(f'{u},"item, {i}"\n' + ("\n" if i == 2 else "") for u in range(5) for i in range(4))
    f.write_text(body + '0,"item, 0"\n')  # a repeated interaction
    with pytest.raises(DataFormatError, match=r"first row \['0', 'item, 0'\] names no known column.*--columns"):
        load_dataset(str(f))  # a header of unknown names, or data? Not guessed
    ds = load_dataset(str(f), columns="user=0,item=1")
    assert _n(ds) == 20 and ds.n_items == 4  # blank lines skipped, the repeat dropped
    assert "item, 3" in ds.raw_item_ids.tolist()


def test_tsv_and_recbole_inter(tmp_path: Path) -> None:
    rows = _ratings(10, 6)
    tsv = tmp_path / "data.tsv"
    tsv.write_text("user\titem\trating\n" + "".join(f"{u}\t{i}\t{r}\n" for u, i, r, _ in rows))
    assert sniff(tsv) == "tsv" and _n(load_dataset(str(tsv))) == 60
    inter = tmp_path / "ml.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    ds = load_dataset(str(inter), split="temporal")
    assert _n(ds) == 60 and ds.raw_user_ids[0] == "u0"
    # RecBole's split files in a directory
    d = tmp_path / "rb"
    d.mkdir()
    head = "user_id:token\titem_id:token\n"
    (d / "ml.train.inter").write_text(head + "".join(f"{u}\t{i}\n" for u, i, _, _ in rows[:40]))
    (d / "ml.valid.inter").write_text(head + "".join(f"{u}\t{i}\n" for u, i, _, _ in rows[40:50]))
    (d / "ml.test.inter").write_text(head + "".join(f"{u}\t{i}\n" for u, i, _, _ in rows[50:]))
    ds = load_dataset(str(d))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (40, 10, 10)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = _ratings(8, 5)
    f = tmp_path / "x.parquet"
    pq.write_table(pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                             "rating": [r[2] for r in rows], "timestamp": [r[3] for r in rows]}), f)
    ds = load_dataset(str(f), split="temporal")
    assert _n(ds) == 40 and _raw_pairs(ds, "train", "valid", "test") == {(u, i) for u, i, _, _ in rows}
    g = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"uid": np.repeat(np.arange(4), 5) * 7, "iid": np.tile(np.arange(5), 4) + 99999999999}), g)
    ds = load_dataset(str(g), format="parquet")
    assert ds.raw_user_ids.tolist() == [0, 7, 14, 21] and ds.raw_item_ids[0] == 99999999999


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    f = tmp_path / "x.parquet"
    f.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match=r"pip install -e '\.\[parquet\]'"):
        load_dataset(str(f))


def test_movielens_and_netflix(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat"
    f.write_text("".join(f"{u}::{100 + i}::{1 + (u + i) % 5}::{97830000 + i}\n" for u in range(1, 9) for i in range(6)))
    assert sniff(f) == "movielens"
    ds = load_dataset(str(f), split="temporal")
    assert _n(ds) == 48
    # each user's latest items (largest i, so time) are test: 30% of 6 = 2
    assert sorted(ds.raw_item_ids[ds.test.items[ds.test.users == 0]].tolist()) == [104, 105]
    nf = tmp_path / "combined_data_1.txt"
    nf.write_text("1:\n10,3,2005-09-06\n11,5,2005-05-13\n12,4,2005-05-14\n2:\n10,4,2005-09-05\n11,2,2005-01-01\n"
                  "3:\n\n10,1,2005-01-01\n12,2,2005-01-01\n")
    assert sniff(nf) == "netflix"
    ds = load_dataset(str(nf), split="temporal")
    assert _n(ds) == 7 and ds.raw_user_ids.tolist() == [10, 11, 12] and ds.raw_item_ids is not None
    # user 10: movie 1 on 2005-09-06 is the latest
    assert ds.raw_item_ids[ds.test.items[ds.raw_user_ids[ds.test.users] == 10]].tolist() == [1]


# ---------------------------------------------------------------- detection


def _write_split_dir(d: Path, rows: Dict[str, List[Tuple[int, int]]]) -> None:
    d.mkdir()
    for name, pairs in rows.items():
        (d / f"{name}.txt").write_text("".join(f"{u} {i} 1\n" for u, i in pairs))


def test_user_item_weight_split_directory_is_not_read_as_lightgcn(tmp_path: Path) -> None:
    """A split directory of 'user item weight' lines: LightGCN would give every user item 1."""
    rng = np.random.default_rng(3)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 40, 900), rng.integers(2, 300, 900))})
    rng.shuffle(pairs)
    parts = {"train": pairs[:500], "valid": pairs[500:600], "test": pairs[600:]}
    d = tmp_path / "uiw"
    _write_split_dir(d, parts)
    with pytest.raises(DataFormatError, match=r"ambiguous format.*LightGCN .*: 1,\d+ interactions\) or as an edge "
                                              r"list .*: \d+ interactions\); pass --format lightgcn or --format edges"):
        load_dataset(str(d))
    ds = load_dataset(str(d), format="edges")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (500, 100, len(pairs) - 600)
    assert _raw_pairs(ds, "train") == set(parts["train"]) and _raw_pairs(ds, "test") == set(parts["test"])
    assert 1 not in (ds.raw_item_ids.tolist() if ds.raw_item_ids is not None else [])


@pytest.mark.parametrize("text,fmt", [
    ("0 1 2 3 4\n1 5\n", "lightgcn"),     # a line of more than 4 integers
    ("0 1 2\n1 5\n", "lightgcn"),         # lines of different lengths
    ("7\n0 1\n", "lightgcn"),             # a user without items
    ("0 1\n1 5\n\n2 5\n", "edges"),       # only pairs: both readings agree
    ("0 1 0.5\n1 5 2\n", "edges"),        # a non-integer weight
    ("u1 i1\nu2 i1\n", "edges"),          # string ids
])
def test_detection_takes_a_format_only_when_one_reading_fits(tmp_path: Path, text: str, fmt: str) -> None:
    f = tmp_path / "data.txt"
    f.write_text(text)
    from train.data.formats import read_files

    assert read_files([f], None)[0] == fmt


@pytest.mark.parametrize("text", ["0 1 1\n1 5 1\n", "0 1 5 99\n1 5 4 98\n"])
def test_detection_refuses_lines_of_3_or_4_integers(tmp_path: Path, text: str) -> None:
    f = tmp_path / "data.txt"
    f.write_text(text * 5)
    with pytest.raises(DataFormatError, match="ambiguous format"):
        load_dataset(str(f))


def test_detection_judges_line_lengths_per_file(tmp_path: Path) -> None:
    """'user item weight' training lines beside 'user item' test lines: still both readings."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.txt").write_text("".join(f"{u} {i} 1\n" for u in range(4) for i in range(5)))
    (d / "test.txt").write_text("".join(f"{u} {i + 5}\n" for u in range(4) for i in range(2)))
    with pytest.raises(DataFormatError, match="ambiguous format"):
        load_dataset(str(d))
    (d / "test.txt").write_text("0 5 6\n1 7\n")  # lines of different lengths in one file: LightGCN
    from train.data.formats import read_files

    fmt, (train, test) = read_files([d / "train.txt", d / "test.txt"], None)
    assert fmt == "lightgcn" and len(train) == 40 and test.items.tolist() == [5, 6, 7]


def test_mixed_formats_and_headers_in_text_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "train.csv").write_text("user_id,item_id\n1,2\n")
    (d / "test.txt").write_text("1 3\n")
    with pytest.raises(DataFormatError,
                       match=r"look like different formats \(train\.csv: csv, test\.txt: lightgcn/edges\)"):
        load_dataset(str(d))
    f = tmp_path / "h.txt"
    f.write_text("user item rating\n1 2 3\n")
    with pytest.raises(DataFormatError, match=r"h\.txt:1: .*looks like a header"):
        load_dataset(str(f))
    with pytest.raises(DataFormatError, match=r"h\.txt:1: an edge list has no header"):
        load_dataset(str(f), format="edges")
    with pytest.raises(ValueError, match="columns apply to csv, tsv, inter and parquet"):
        load_dataset(str(tmp_path / "h.txt"), format="lightgcn", columns="user=0,item=1")


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "e.txt"
    f.write_text("0 1 1.0\n2 3 x\n")
    with pytest.raises(DataFormatError, match=r"e\.txt:2: bad weight 'x'"):
        read_edges(f)
    f.write_text("1:\n10,3,2005-09-06\n10;4\n")
    with pytest.raises(DataFormatError, match=r"e\.txt:3: expected 'customer,rating,date'"):
        load_dataset(str(f), format="netflix")
    f.write_text("1::2::3::4\n1::2::3\n")
    with pytest.raises(DataFormatError, match=r"e\.txt:2: expected 'user::item::rating::timestamp'"):
        load_dataset(str(f), format="movielens")


@pytest.mark.parametrize("name,text,match", [
    ("a.csv", "user_id,item_id\n1,2,3\n2,3\n", "more fields than the columns"),   # extra field, first row
    ("b.csv", "user_id,item_id\n1,2\n2,3,4\n", "Expected 2 fields in line 3, saw 3"),
    ("c.txt", "# a comment\n0 1 2 3 4\n", r"c\.txt:2: expected 'user item \[weight \[time\]\]', got 5 fields"),
    ("d.csv", "user_id,item_id\n1.5,2\n", "user ids must be integers or strings, got float64 values such as 1.5"),
    ("e.csv", "user_id,item_id,rating\n1,2,\n", "data row 1 has no rating"),
])
def test_rows_that_do_not_fit_the_columns_are_errors(tmp_path: Path, name: str, text: str, match: str) -> None:
    """pandas takes a first row's extra fields as an index, shifting every column: refused."""
    (tmp_path / name).write_text(text)
    with pytest.raises(DataFormatError, match=match):
        load_dataset(str(tmp_path / name))


def test_int_tokens_are_the_same_at_every_chunk_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, rng.integers(0, 10**int(rng.integers(1, 12)), int(rng.integers(1, 9)))))
             for _ in range(300)]
    f = tmp_path / "t.txt"
    f.write_text("\n".join(lines[:150]) + "\n\n\r\n" + "\r\n".join(lines[150:]))
    whole = read_int_tokens(f)
    for chunk in (1, 7, 64, 1000):
        part = read_int_tokens(f, chunk_bytes=chunk)
        assert all(np.array_equal(a, b) for a, b in zip(whole, part))
    assert whole.values.tolist() == [int(t) for line in lines for t in line.split()]
    assert whole.linenos[150] == 153  # two blank lines skipped, numbering kept


# ---------------------------------------------------------------- ids, splits, too little data


def test_large_ids_are_remapped_and_kept(tmp_path: Path) -> None:
    """An id must not set the model size: 99999999999 is just a label."""
    d = tmp_path / "big"
    d.mkdir()
    (d / "train.txt").write_text("0 1 5000000\n99999999999 1 7\n")
    (d / "test.txt").write_text("0 7\n99999999999 5000000\n")
    ds = load_dataset(str(d), format="lightgcn")  # (3-integer lines: an edge list too, so named)
    assert (ds.n_users, ds.n_items) == (2, 3)
    assert ds.raw_user_ids.tolist() == [0, 99999999999] and ds.raw_item_ids.tolist() == [1, 7, 5000000]
    assert _raw_pairs(ds, "test") == {(0, 7), (99999999999, 5000000)}
    merged = ds.merge_valid()
    assert merged.raw_user_ids is ds.raw_user_ids and merged.raw_item_ids is ds.raw_item_ids


def test_dense_ids_keep_raw_ids_none_and_lightgcn_order(tmp_path: Path) -> None:
    users, items = np.repeat(np.arange(6), 4), np.tile(np.arange(4), 6)
    write_lightgcn(tmp_path / "train.txt", users, items)
    write_lightgcn(tmp_path / "test.txt", np.arange(6), (np.arange(6) + 1) % 4)
    (tmp_path / "train.txt").write_text((tmp_path / "train.txt").read_text() + "0 1\n")  # a repeat
    ds = load_dataset(str(tmp_path))
    assert ds.raw_user_ids is None and ds.raw_item_ids is None
    u, i = read_lightgcn(tmp_path / "train.txt")
    assert ds.train.users.tolist() == u[:-1].tolist() and ds.train.items.tolist() == i[:-1].tolist()
    assert load_dataset("synthetic:users=50,items=60,edges=500").raw_user_ids is None


def test_temporal_split_needs_a_time_column(tmp_path: Path) -> None:
    f = tmp_path / "e.txt"
    f.write_text("".join(f"{u} {i}\n" for u in range(5) for i in range(5)))
    with pytest.raises(DataError, match="split 'temporal' needs a time column"):
        load_dataset(str(f), split="temporal")
    with pytest.raises(DataError, match="min_rating 3.0 needs a rating"):
        load_dataset(str(f), min_rating=3.0)
    with pytest.raises(DataError, match="split 'given' needs a split directory"):
        load_dataset(str(f), split="given")


def test_temporal_split_takes_each_users_latest_and_first_time_of_a_repeat(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    rows = [(u, i, 10 * i + u) for u in range(3) for i in range(10)] + [(0, 0, 10_000)]  # (0, 0) again, later
    f.write_text("user,item,time\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    ds = load_dataset(str(f), split="temporal")
    assert len(ds.test) == 9 and len(ds.valid) == 3 and len(ds.train) == 18
    for u in range(3):
        assert sorted(ds.test.items[ds.test.users == u].tolist()) == [7, 8, 9]
        assert ds.valid.items[ds.valid.users == u].tolist() == [6]
    assert 0 in ds.train.items[ds.train.users == 0].tolist()  # the repeat counts at its first time


def test_empty_train_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "test.txt").write_text("0 3\n")
    with pytest.raises(DataError, match=r"the training split is empty \(train 0, valid 0, test 1 interactions"):
        load_dataset(str(tmp_path))


def test_too_little_data_for_a_split_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "tiny.txt"
    f.write_text("0 1\n1 2\n2 3\n")
    with pytest.raises(DataError, match=r"the test split is empty \(train 3, valid 0, test 0 interactions of 3 users"):
        load_dataset(str(f))
