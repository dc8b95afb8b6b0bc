"""Progress bars of the long steps besides training: evaluation over all users (every pass, the
paper's protocol included) and downloads."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
import scipy.sparse as sp
import tqdm.auto

import hashsearch
from train.data.download import fetch, sha256_file
from train.evaluate import Embeddings, evaluate


class RecordingBar:
    """Stands in for tqdm: records each bar's description and how far it got."""

    made: List["RecordingBar"] = []

    def __init__(self, iterable=None, total=None, desc="", disable=False, **_kw) -> None:
        self.iterable, self.total, self.desc, self.disable, self.n = iterable, total, desc, disable, 0
        RecordingBar.made.append(self)

    def __iter__(self):
        for x in self.iterable:
            self.n += 1
            yield x

    def update(self, n: int = 1) -> None:
        self.n += n

    def __enter__(self) -> "RecordingBar":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> List[RecordingBar]:
    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    return RecordingBar.made


def test_download_shows_its_bytes(tmp_path: Path, bars: List[RecordingBar]) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(np.random.default_rng(0).bytes(3 << 20))
    fetch(src.as_uri(), tmp_path / "cache" / "x.bin", sha256_file(src))
    assert len(bars) == 1 and bars[0].n == 3 << 20 and bars[0].desc == "x.bin"


def test_evaluation_over_all_users_shows_every_pass(bars: List[RecordingBar]) -> None:
    rng = np.random.default_rng(1)
    n_users, n_items, nbits = 50, 80, 32
    u, i = rng.normal(size=(n_users, 8)).astype(np.float32), rng.normal(size=(n_items, 8)).astype(np.float32)
    emb = Embeddings(hashsearch.pack(rng.normal(size=(n_users, nbits)) > 0),
                     hashsearch.pack(rng.normal(size=(n_items, nbits)) > 0), u, i, nbits)
    truth = sp.random(n_users, n_items, density=0.1, format="csr", random_state=2)
    truth.data[:] = 1
    evaluate(emb, truth, None, modes=("hamr", "hies", "continuous"), block=16, paper_protocol=True, progress=True)
    blocks = -(-n_users // 16)
    done = {}
    for bar in bars:
        done.setdefault(bar.desc, []).append(bar.n)
    # the three modes, then the paper protocol's hies, hamr and continuous passes: each over every block
    assert done == {"hamr": [blocks, blocks], "hies": [blocks, blocks], "continuous": [blocks, blocks]}, done
