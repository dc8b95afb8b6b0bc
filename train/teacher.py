"""The teacher of ``--method distill``: a finished run on the same data and split, whose ranking
the codes learn (its embeddings frozen) and whose embeddings HieS re-ranks by."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .data import Dataset
from .evaluate import continuous_topk
from .rundir import exclusion_csr, load_run, normalize_raw_ids

log = logging.getLogger(__name__)


class TeacherError(ValueError):
    """The teacher run does not fit this run's data (other users, items or split)."""


def _same_ids(theirs: np.ndarray, ours: Optional[np.ndarray], n: int, what: str, path: Path) -> None:
    mine = normalize_raw_ids(ours, n, what)
    if theirs.shape != mine.shape or theirs.dtype.kind != mine.dtype.kind or not np.array_equal(theirs, mine):
        raise TeacherError(f"teacher {path}: its {what} ids differ from this data's (expected the {n} {what}s of "
                           "this data in the same order: train the teacher with the same --data and split)")


def load_teacher(path: str, ds: Dataset) -> np.ndarray:
    """The teacher's embeddings (n_users + n_items, d) float32, users first, after checking that its
    run directory is whole (:func:`train.rundir.load_run`) and was trained on ``ds``: the same
    users and items in the same order, and the same training items (train ∪ valid), so that its
    ranking never saw this run's validation or test items as training data.

    Raises:
        RunDirError: the directory is missing, incomplete or damaged.
        TeacherError: it holds another data set or split.
    """
    run = load_run(path)
    where = Path(path)
    if (run.n_users, run.n_items) != (ds.n_users, ds.n_items):
        raise TeacherError(f"teacher {where}: expected {ds.n_users} users and {ds.n_items} items (this data), "
                           f"got {run.n_users} and {run.n_items}")
    _same_ids(run.user_ids, ds.raw_user_ids, ds.n_users, "user", where)
    _same_ids(run.item_ids, ds.raw_item_ids, ds.n_items, "item", where)
    seen = exclusion_csr(ds.n_users, ds.n_items, np.concatenate([ds.train.users, ds.valid.users]),
                         np.concatenate([ds.train.items, ds.valid.items]))
    if not (np.array_equal(seen[0], run.exclude_indptr) and np.array_equal(seen[1], run.exclude_indices)):
        raise TeacherError(f"teacher {where}: trained on another split (its training items differ from this "
                           "run's train and validation items); train it with the same --split and seed")
    log.info("teacher %s: %d-d embeddings", where, run.user_emb.shape[1])
    return np.concatenate([run.user_emb, run.item_emb]).astype(np.float32, copy=False)


def teacher_top(emb: torch.Tensor, ds: Dataset, top: int, device: torch.device,
                block: int = 2048, progress: bool = False) -> torch.Tensor:
    """Each user's ``top`` items by the teacher's inner product, the user's training items left out:
    int64 (n_users, top), padded by -1 where a user has fewer unseen items. Costs
    n_users × n_items × d multiply-adds, once per run."""
    x = emb.detach().cpu().numpy()
    users = np.arange(ds.n_users, dtype=np.int64)
    out = continuous_topk(x[:ds.n_users], x[ds.n_users:], users, top, ds.csr("train"), block, device, progress)
    return torch.from_numpy(out)
