"""Recall@n / NDCG@n pinned by hand, and the evaluation modes end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from train.evaluate import Embeddings, continuous_topk, evaluate
from train.metrics import hit_matrix, paper_ndcg, recall_ndcg


def _csr(rows, n_items):
    u = [r for r, items in enumerate(rows) for _ in items]
    i = [x for items in rows for x in items]
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(rows), n_items))
    m.sort_indices()
    return m


def test_hit_matrix_and_padding() -> None:
    truth = _csr([[1, 3], [0]], 6)
    top = np.array([[3, 5, 1, -1], [2, 0, -1, -1]])
    hits = hit_matrix(top, np.array([0, 1]), truth)
    assert hits.tolist() == [[True, False, True, False], [False, True, False, False]]


def test_recall_ndcg_by_hand() -> None:
    # user 0: test {1, 3}; ranked 3, 5, 1 -> hits at ranks 1 and 3
    # user 1: test {0, 2, 4}; ranked 9, 0 -> one hit at rank 2
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], bool)
    m = recall_ndcg(hits, np.array([2, 3]), ks=(2, 4))
    assert m["recall@2"].tolist() == pytest.approx([1 / 2, 1 / 3])
    assert m["recall@4"].tolist() == pytest.approx([1.0, 1 / 3])
    # NDCG@4 user 0: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    assert m["ndcg@4"][0] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # NDCG@2 user 1: DCG = 1/log2(3); IDCG over min(3, 2) = 2 positions = 1 + 1/log2(3)
    assert m["ndcg@2"][1] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # NDCG@4 user 1: IDCG over min(3, 4) = 3 positions
    assert m["ndcg@4"][1] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5))


def test_recall_ndcg_needs_enough_items() -> None:
    with pytest.raises(ValueError):
        recall_ndcg(np.zeros((1, 5), bool), np.array([1]), ks=(10,))


def test_paper_ndcg_uses_hits_found() -> None:
    hits = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 1]], bool)
    got = paper_ndcg(hits, 3)
    assert got[0] == pytest.approx((1 / math.log2(3)) / 1.0)  # ideal: the one hit at rank 1
    assert got[1] == 0.0
    assert got[2] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))


def test_continuous_topk_excludes_and_pads() -> None:
    item = np.array([[3.0], [2.0], [1.0]], np.float32)
    user = np.array([[1.0], [-1.0]], np.float32)
    ex = _csr([[0], []], 3)
    top = continuous_topk(user, item, np.array([0, 1]), 4, ex)
    assert top.tolist() == [[1, 2, -1, -1], [2, 1, 0, -1]]


def _toy_embeddings():
    import hashsearch

    # 4 items on the unit circle-ish; codes 2 bits. User 0 likes items 0/1, user 1 likes 2/3.
    item_emb = np.array([[1, 0.1], [0.9, 0.2], [-1, 0.1], [-0.9, 0.3]], np.float32)
    user_emb = np.array([[1, 0], [-1, 0]], np.float32)
    item_bits = np.array([[1, 1], [1, 1], [-1, 1], [-1, 1]])
    user_bits = np.array([[1, 1], [-1, 1]])
    return Embeddings(hashsearch.pack(user_bits), hashsearch.pack(item_bits), user_emb, item_emb, 2)


@pytest.mark.parametrize("mode", ["hamr", "hies", "continuous"])
def test_evaluate_modes_with_exclusion(mode: str) -> None:
    emb = _toy_embeddings()
    truth = _csr([[1], [3]], 4)
    exclude = _csr([[0], [2]], 4)  # each user's best item is a training item
    res = evaluate(emb, truth, exclude, modes=(mode,), ks=(1, 2))
    # after removing the training item, the test item ranks first for both users
    assert res[mode]["recall@1"] == pytest.approx(1.0)
    assert res[mode]["ndcg@1"] == pytest.approx(1.0)
    without = evaluate(emb, truth, None, modes=(mode,), ks=(1, 2))
    assert without[mode]["recall@1"] == pytest.approx(0.0)
    assert without[mode]["recall@2"] == pytest.approx(1.0)


def test_evaluate_paper_protocol_is_labelled() -> None:
    emb = _toy_embeddings()
    res = evaluate(emb, _csr([[1], [3]], 4), _csr([[0], [2]], 4), modes=("hamr",), ks=(1, 2),
                   paper_protocol=True)
    pp = res["paper_protocol"]
    assert "NOT excluded" in pp["note"]
    assert pp["hies"]["recall@1"] == pytest.approx(0.0)  # training items stay in the ranking
    assert pp["hies"]["recall@2"] == pytest.approx(1.0)
    # continuous rows (the paper's GraphSage) by exact search, training items kept there too
    assert pp["continuous"]["recall@1"] == pytest.approx(0.0)
    assert pp["continuous"]["recall@2"] == pytest.approx(1.0)
