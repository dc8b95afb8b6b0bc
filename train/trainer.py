"""The training loop: mini-batch Adam, guided STE schedule, early stopping, checkpoints, outputs."""
from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .config import EVAL_MODES, FitConfig
from .curves import EpochLog, write_learning_curve
from .data import Dataset, load_dataset
from .evaluate import Embeddings, evaluate
from .fileio import atomic_file, atomic_write_bytes
from .distributed import (World, average_gradients, broadcast_object, broadcast_parameters, init_world,
                          merge_row_grads, shutdown)
from .graph import BipartiteCSR, EdgeDropout, bipartite_coo, mean_adj, sym_norm_adj
from .hashing import ProbSchedule, bernoulli_mask, hard_sign
from .losses import bpr, hashgnn_loss, sampled_softmax
from .models import HashHead, HashModel, TeacherEncoder, build_encoder
from .optim import Optimizers, RowAdam
from .batch import BatchRows, take_rows
from .sampling import Block, NegativeSampler, NeighborSampler, prefetch
from .teacher import load_teacher, teacher_top

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def save_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_torch(path: Path, obj: Any) -> None:
    """torch.save to ``path`` atomically, streamed (a checkpoint at the Alibaba shape is ~5 GB)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def save_codes(path: Path, emb: Embeddings) -> None:
    """``codes.npz``: user_codes, item_codes (packed uint64), user_emb, item_emb (float32), nbits."""
    with atomic_file(path) as f:
        np.savez(f, user_codes=emb.user_codes, item_codes=emb.item_codes,
                 user_emb=emb.user_emb.astype(np.float32, copy=False),
                 item_emb=emb.item_emb.astype(np.float32, copy=False), nbits=np.int64(emb.nbits))


# ---------------------------------------------------------------- set-up
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended training early; the best model so far was still evaluated and its outputs
    written. ``metrics`` is what :func:`fit` would have returned."""

    def __init__(self, metrics: Dict[str, Any]) -> None:
        super().__init__(metrics["stopped"])
        self.metrics = metrics


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def use_sampled(cfg: FitConfig, ds: Dataset) -> bool:
    """Mini-batch (sampled) training, or whole-graph steps: ``cfg.train_mode``, or by size under
    auto (a whole-graph step costs every edge, a sampled one its batch's neighbourhoods)."""
    if cfg.method == "distill":  # no graph: the teacher's embeddings are the input
        return False
    if cfg.train_mode != "auto":
        return cfg.train_mode == "sampled"
    return len(ds.train) > cfg.sampled_above


def build_model(cfg: FitConfig, ds: Dataset, device: torch.device,
                graph: Optional[BipartiteCSR] = None) -> HashModel:
    """Encoder over the training graph plus the method's hash head. With ``graph`` (sampled
    training) no (N, N) propagation matrix is built: forwards take sampled blocks instead."""
    kind = cfg.encoder_kind
    if kind == "teacher":
        emb = torch.from_numpy(load_teacher(cfg.teacher, ds))  # type: ignore[arg-type]
        head = HashHead(emb.shape[1], cfg.bits, cfg.head_kind, n_users=ds.n_users)  # type: ignore[arg-type]
        return HashModel(TeacherEncoder(emb, ds.n_users), head, ds.n_users, ds.n_items).to(device)
    if graph is None:
        adj = bipartite_coo(ds.n_users, ds.n_items, ds.train.users, ds.train.items)
        sym = sym_norm_adj(adj, device) if kind == "lightgcn" else None
        mean, mean_t = mean_adj(adj, device) if kind == "sage" else (None, None)
        drop = EdgeDropout(adj, cfg.edge_dropout, device) if kind == "lightgcn" and cfg.edge_dropout > 0 else None
    else:
        if cfg.edge_dropout > 0:
            raise ValueError("edge dropout is for whole-graph training (--train-mode full)")
        sym = mean = mean_t = drop = None
    encoder = build_encoder(kind, ds.n_users + ds.n_items, cfg.emb_dim, sage_dims=list(cfg.sage_dims),
                            layers=cfg.layers, sym_adj=sym, mean=mean, mean_t=mean_t, edge_dropout=drop)
    head = (HashHead(encoder.out_dim, cfg.bits, cfg.head_kind,
                     n_users=ds.n_users if cfg.separate_hash_layers else None)
            if cfg.head_kind else None)
    return HashModel(encoder, head, ds.n_users, ds.n_items, item_bias=cfg.item_bias).to(device)


class Trainer:
    """One run. ``run()`` trains (resuming if asked), evaluates on test and writes the outputs.

    Under ``torchrun`` each rank trains on its share of every batch (see :mod:`train.distributed`)."""

    def __init__(self, cfg: FitConfig, dataset: Optional[Dataset] = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        self.world: World = init_world(self.device)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)  # the epochs' order: the same on every rank
        ds = dataset if dataset is not None else load_dataset(
            cfg.data, seed=cfg.split_seed, split=cfg.split, format=cfg.format, columns=cfg.columns,
            min_rating=cfg.min_rating)
        self.ds = ds.merge_valid() if cfg.merge_valid else ds
        log.info("data %s: %s", self.ds.name, self.ds.stats())
        self.sampled = use_sampled(cfg, self.ds)
        # negatives (and neighbourhoods): whole-graph training in one process draws them from rng;
        # sampled or distributed training from a stream per rank and epoch (_start_epoch_stream),
        # so that a background thread can draw them and a resumed run repeats them
        self.own_stream = self.sampled or self.world.size > 1
        self.sample_rng = self.rng
        self.graph = (BipartiteCSR(self.ds.n_users, self.ds.n_items, self.ds.train.users, self.ds.train.items)
                      if self.sampled else None)
        self.model = build_model(cfg, self.ds, self.device, self.graph)
        self.neighbours = self._neighbour_sampler()
        if self.world.size > 1:
            broadcast_parameters(self.model.parameters())
            torch.manual_seed(cfg.seed + 1000 * self.world.rank)  # the guided masks: a stream per rank
        self.sampler = NegativeSampler(self.ds.train.users, self.ds.train.items, self.ds.n_items)
        self._csr_cache: Dict[Tuple[str, ...], Any] = {}
        self.val_users = self._pick_eval_users()
        # distill: each user's positives, the teacher's top unseen items (n_users, distill_top)
        self.teacher_top = (teacher_top(self.model.encoder.base.weight, self.ds, cfg.distill_top, self.device,
                                        cfg.eval_block, cfg.progress) if cfg.method == "distill" else None)
        self.train_u = torch.from_numpy(self.ds.train.users)
        self.train_i = torch.from_numpy(self.ds.train.items)
        n = len(self.ds.train)
        self.batches_per_epoch = max(1, math.ceil(n / cfg.batch_size))
        every = cfg.p_every or max(1, (cfg.epochs * self.batches_per_epoch) // 60)
        self.p_schedule = ProbSchedule(cfg.p_start, cfg.p_decay, every, cfg.p_floor)
        # hashgnn_sp: a continuous stage on the encoder, then the hash head on frozen embeddings.
        self.sp_split = 0
        if cfg.method == "hashgnn_sp" and cfg.epochs >= 2:
            self.sp_split = min(cfg.epochs - 1, max(1, round(cfg.epochs * cfg.sp_pretrain_frac)))
        self.frozen: Optional[torch.Tensor] = None
        # state (checkpointed)
        self.epoch = 0
        self.it = 0
        self.best = -math.inf
        self.best_epoch = -1
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.interrupted = False  # Ctrl-C ended train()
        self.bad = 0
        self.stopped = ""
        self.history: List[Dict[str, Any]] = []
        self.train_seconds = 0.0
        self.optim = self._make_optim()
        self.epoch_log = EpochLog(cfg.tensorboard if self.world.main else None, ":".join(cfg.val_spec))

    # ------------------------------------------------------------ pieces
    def _neighbour_sampler(self) -> Optional[NeighborSampler]:
        if not self.sampled:
            return None
        if self.cfg.loss_kind == "softmax" and self.cfg.shared_negatives == 0:
            raise ValueError("the full softmax scores every item at each step; sampled training needs "
                             "--shared-negatives N (or --train-mode full)")
        layers = self.model.encoder.sampled_layers
        fan = self.cfg.fanout_for(layers)
        log.info("sampled training: fanout %s over %d nodes, %d edges", fan, self.graph.n_nodes,
                 self.graph.indices.shape[0] // 2)
        norm = "sym" if self.cfg.encoder_kind == "lightgcn" else "mean"
        return NeighborSampler(self.graph.indptr, self.graph.indices, fan, norm) if layers else None

    def _pick_eval_users(self) -> Optional[np.ndarray]:
        """The seeded sample of validation users (``cfg.eval_users``; None: all)."""
        n = self.cfg.eval_users
        if n == 0 or len(self.ds.valid) == 0:
            return None
        have = np.unique(self.ds.valid.users)
        if n >= have.shape[0]:
            return None
        return np.sort(np.random.default_rng(self.cfg.seed + 31).choice(have, n, replace=False))

    def csr(self, *splits: str):
        """``Dataset.csr`` of these splits, built once per run."""
        if splits not in self._csr_cache:
            self._csr_cache[splits] = self.ds.csr(*splits)
        return self._csr_cache[splits]

    def _stage(self) -> str:
        return "pretrain" if self.epoch < self.sp_split else "main"

    def _make_optim(self) -> Optimizers:
        if self.cfg.method == "hashgnn_sp" and self._stage() == "main":
            params = list(self.model.head.parameters())  # type: ignore[union-attr]
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]  # distill: not the teacher
        if not self.sampled:
            return Optimizers([torch.optim.Adam(params, lr=self.cfg.lr)])
        table = self.model.encoder.base.weight
        dense = [p for p in params if p is not table]
        optims: List[Any] = [torch.optim.Adam(dense, lr=self.cfg.lr)] if dense else []
        if len(dense) < len(params):
            optims.append(RowAdam(table.data, lr=self.cfg.lr))
        return Optimizers(optims)

    def _epoch_order(self) -> np.ndarray:
        """Order of the training pairs in this epoch: a permutation, or with ``group_users`` the
        pairs of each user together, users in random order (batches then hold few distinct users)."""
        n = len(self.ds.train)
        if not self.cfg.group_users_eff:
            return self.rng.permutation(n)
        users = self.ds.train.users
        by_user = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=self.ds.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        up = self.rng.permutation(self.ds.n_users)
        lens = counts[up]
        offs = np.repeat(starts[up] - (np.cumsum(lens) - lens), lens)
        return by_user[np.arange(n) + offs]

    def lr_now(self) -> float:
        """Learning rate of the next step under ``cfg.lr_schedule`` (a function of the step count only)."""
        if self.cfg.lr_schedule == "cosine":
            total = max(1, self.cfg.epochs * self.batches_per_epoch)
            return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.it / total)))
        return self.cfg.lr

    def p_now(self) -> float:
        it = self.it - self.sp_split * self.batches_per_epoch
        return self.p_schedule(max(0, it))

    def beta_now(self) -> float:
        """β = (1 + γ t)^0.5 at iteration t: HashNet's continuation (γ = hashnet_gamma), or the guided
        head's with guided_gamma (0: β = 1, the paper's z = tanh(a)); 1 for other heads."""
        gamma = {"hashnet": self.cfg.hashnet_gamma, "guided": self.cfg.guided_gamma}.get(
            self.cfg.head_kind or "", 0.0)
        return (1.0 + gamma * self.it) ** 0.5

    def _use_head(self) -> bool:
        return self.model.head is not None and self._stage() == "main"

    def _scale(self) -> float:
        return self.cfg.score_scale

    def _node_embeddings(self) -> torch.Tensor:
        """Encoder outputs (N, d) of all nodes: the frozen ones in hashgnn_sp's second stage."""
        if self.cfg.method == "hashgnn_sp" and self._stage() == "main":
            if self.frozen is None:
                with torch.no_grad():
                    self.frozen = self._all_nodes().detach()
            return self.frozen
        return self.model.encoder()

    def _all_nodes(self) -> torch.Tensor:
        """Encoder outputs (N, d) over full neighbourhoods: one whole-graph forward, or in sampled
        training a layer-by-layer inference in bounded memory."""
        enc = self.model.encoder
        return enc.inference(self.graph) if self.sampled else enc()

    def _sample_blocks(self, groups: Sequence[np.ndarray]) -> Tuple[list, np.ndarray]:
        """The sampled computation graph of groups of nodes (global ids): (blocks, inverse) as
        :meth:`NeighborSampler.sample`; for an encoder without graph layers ([distinct seeds],
        inverse)."""
        seeds = np.concatenate([g.ravel() for g in groups])
        if self.neighbours is None:
            uniq, inv = np.unique(seeds, return_inverse=True)
            return [uniq], inv
        return self.neighbours.sample(seeds, self.sample_rng)

    def _uses_blocks(self) -> bool:
        """Whether steps run the encoder on sampled blocks (hashgnn_sp's second stage reads its
        frozen outputs instead)."""
        return self.sampled and not (self.cfg.method == "hashgnn_sp" and self._stage() == "main")

    def prepare(self, users: np.ndarray, items: np.ndarray) -> Dict[str, Any]:
        """What a step draws at random for its batch: the negatives (B, T) and, in sampled
        training, the blocks. Runs in the prefetch thread during an epoch."""
        cfg = self.cfg
        negs = self.sampler.sample(users, cfg.negatives, self.sample_rng, cfg.negative_pool)
        prep: Dict[str, Any] = {"negs": negs}
        if self._uses_blocks():
            nu = self.ds.n_users
            prep["sampled"] = self._sample_blocks([users, items + nu, negs + nu])
        return prep

    def _batch_rows(self, groups: Sequence[np.ndarray],
                    sampled: Optional[Tuple[list, np.ndarray]] = None) -> BatchRows:
        """The rows a step reads for groups of nodes (global ids, int64 arrays of any shape, users
        before items). Whole-graph training propagates the graph once and gathers an entry's row
        per entry; sampled training runs the encoder on the groups' sampled neighbourhoods
        (``sampled``: drawn already by :meth:`prepare`) and keeps one row per distinct node."""
        dev, base = self.device, self.model.encoder.base.weight
        shapes = [tuple(g.shape) for g in groups]
        if not self._uses_blocks():
            ids = torch.from_numpy(np.concatenate([g.ravel() for g in groups])).to(dev)
            n_users = int((ids < self.ds.n_users).sum())
            return BatchRows(take_rows(self._node_embeddings(), ids), take_rows(base, ids),
                             n_users, None, shapes)
        blocks, inv = sampled if sampled is not None else self._sample_blocks(groups)
        if blocks and isinstance(blocks[0], Block):
            seeds = blocks[-1].src[:blocks[-1].n_dst]
            blocks = [b.to(dev) for b in blocks]
            src = blocks[0].src
        else:  # an encoder without graph layers (MF): "blocks" holds the distinct seeds
            seeds = torch.from_numpy(blocks[0])
            src, blocks = seeds.to(dev), []
        # the rows read, as a leaf of their own: RowAdam updates just them from its gradient
        x0 = base.detach().index_select(0, src).requires_grad_(True)
        self._read = (src, x0)
        out = self.model.encoder.forward_blocks(x0, blocks) if blocks else x0
        index, at = [], 0
        for g in groups:  # the seeds (sorted ids: users first) are x0's first rows, as out's
            index.append(torch.from_numpy(inv[at:at + g.size].reshape(g.shape)).to(dev))
            at += g.size
        n_users = int((seeds < self.ds.n_users).sum())
        return BatchRows(out, x0[:out.shape[0]], n_users, index, shapes)

    def _rows(self, groups: Sequence[np.ndarray], sampled: Optional[Tuple[list, np.ndarray]] = None
              ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Encoder outputs and ID-embedding rows of groups of nodes, one per entry:
        ([(*g.shape, d_out)], [(*g.shape, d_in)]) (see :meth:`_batch_rows`)."""
        rows = self._batch_rows(groups, sampled)
        n = range(len(groups))
        return [rows.pick(rows.out, g) for g in n], [rows.pick(rows.base, g) for g in n]

    def _hash_rows(self, rows: BatchRows) -> Tuple[torch.Tensor, torch.Tensor]:
        """The hash layer on a batch's rows: pre-activations ``a`` and ``z = tanh(β a)`` (R, K)
        (β = 1 but for a continuation), once per row."""
        a = self.model.head.pre(rows.out, "all", n_user_rows=rows.n_users)  # type: ignore[union-attr]
        return a, torch.tanh(self.beta_now() * a)

    def relax_batch(self, rows: BatchRows, a: torch.Tensor, z: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training-time codes of a batch's users (B, K), positives (B, K) and negatives
        (B, T, K), from the rows' pre-activations ``a`` and continuous codes ``z`` (R, K)."""
        cfg, head = self.cfg, self.model.head
        p = self.p_now()
        shapes = [(*s, z.shape[1]) for s in rows.shapes]
        zs = [rows.pick(z, g).reshape(-1, z.shape[1]) for g in range(3)]  # a row per entry
        a_s = ([rows.pick(a, g).reshape(-1, a.shape[1]) for g in range(3)]
               if head.kind == "gumbel" else [None] * 3)  # type: ignore[union-attr]
        qs: List[Optional[torch.Tensor]] = [None, None, None]
        if cfg.head_kind == "guided" and cfg.q_mode == "pair" and 0.0 < p < 1.0:
            # the official HashGNN code: one draw per (user, positive) pair, one per negative
            qs[0] = qs[1] = bernoulli_mask((zs[0].shape[0], 1), p, z.device)
            qs[2] = bernoulli_mask((zs[2].shape[0], 1), p, z.device)
        kw: Dict[str, Any] = dict(p=p, tau=cfg.gumbel_tau, q_rows=cfg.q_mode == "node")
        if cfg.code_scale_eff == "mean" and cfg.head_kind in ("guided", "ste"):
            # binary codes at the magnitude of the batch's continuous codes, so that their scores
            # (and the sigmoid's saturation) match those of the continuous pairs
            with torch.no_grad():
                kw["code_scale"] = sum(v.abs().sum() for v in zs) / sum(v.numel() for v in zs)
        return tuple(head.relax_from(zv, av, q=qv, **kw).reshape(shape)  # type: ignore[union-attr,return-value]
                     for zv, av, qv, shape in zip(zs, a_s, qs, shapes))

    def _hashed_pair_loss(self, rows: BatchRows) -> torch.Tensor:
        """The pair loss on the batch's relaxed codes, plus the quantisation and continuous-code
        terms of the guided/STE heads."""
        cfg = self.cfg
        a, z = self._hash_rows(rows)
        terms = []
        if cfg.quant_weight > 0 and cfg.head_kind in ("guided", "ste"):
            zu, zi = rows.pick(z, 0), rows.pick(z, 1)
            n = zu.numel() + zi.numel()
            terms.append(cfg.quant_weight * ((1.0 - zu.abs()).pow(2).sum()
                                             + (1.0 - zi.abs()).pow(2).sum()) / n)
        if cfg.cont_weight > 0 and cfg.head_kind == "guided":
            terms.append(cfg.cont_weight * self._pair_loss(*(rows.pick(z, g) for g in range(3))))
        loss = self._pair_loss(*self.relax_batch(rows, a, z))
        for t in terms:
            loss = loss + t
        return loss

    def _reduce_gradients(self) -> None:
        """Average the gradients over the ranks, and hand the embedding rows a sampled batch read
        to the row-wise optimiser."""
        average_gradients(self.model.parameters(), self.world)
        rows_opt, read = self.optim.rows, getattr(self, "_read", None)
        self._read = None
        if rows_opt is not None and read is not None and read[1].grad is not None:
            rows_opt.stage(*merge_row_grads(read[0], read[1].grad, self.world))

    def _pair_loss(self, xu: torch.Tensor, xi: torch.Tensor, xm: torch.Tensor) -> torch.Tensor:
        """The training loss of users (B, d), their positives (B, d) and negatives (B, T, d)."""
        cfg, s = self.cfg, self._scale()
        pos = s * (xu * xi).sum(-1)
        neg = s * (xu[:, None, :] * xm).sum(-1)
        if cfg.loss_kind == "bpr":
            return bpr(pos, neg[:, :1]) if cfg.negatives == 1 else bpr(pos, neg)
        return hashgnn_loss(pos, neg, cfg.lam_eff, cfg.alpha)

    def step(self, users: np.ndarray, items: np.ndarray, prep: Optional[Dict[str, Any]] = None) -> float:
        """One optimisation step on a batch of training pairs (int64 (B,) each); returns the loss.
        ``prep``: the batch's random draws from :meth:`prepare` (drawn here when None)."""
        cfg, nu = self.cfg, self.ds.n_users
        if cfg.loss_kind == "softmax":
            return self._softmax_step(users, items)
        if cfg.method == "distill":
            return self._distill_step(users)
        prep = self.prepare(users, items) if prep is None else prep
        rows = self._batch_rows([users, items + nu, prep["negs"] + nu], prep.get("sampled"))
        if self._use_head():
            loss = self._hashed_pair_loss(rows)
        else:
            loss = self._pair_loss(*(rows.pick(rows.out, g) for g in range(3)))
        if cfg.reg > 0 and not (cfg.method == "hashgnn_sp" and self._stage() == "main"):
            # users, positives and each pair's first negative (the BPR triple)
            loss = loss + cfg.reg * rows.sum_sq([(0, None), (1, None), (2, 0)]) / (2 * users.shape[0])
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self._reduce_gradients()
        if cfg.p_lr_min < 1.0 and self._use_head() and cfg.head_kind == "guided":
            m = cfg.p_lr_min
            for g in self.optim.param_groups:
                g["lr"] = cfg.lr * (m + (1.0 - m) * self.p_now())
        self.optim.step()
        self.it += 1
        return float(loss.detach())

    def _optimise(self, loss: torch.Tensor) -> float:
        """One optimiser step on ``loss`` (gradients averaged over the ranks); returns its value."""
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self._reduce_gradients()
        self.optim.step()
        self.it += 1
        return float(loss.detach())

    def _softmax_step(self, users: np.ndarray, items: np.ndarray) -> float:
        """Sampled softmax over cosines (continuous encoders): S uniform items shared by the batch
        (``shared_negatives`` 0: all items, the full softmax). Negative scores are computed once
        per distinct user of the batch."""
        cfg, dev, nu = self.cfg, self.device, self.ds.n_users
        bias = self.model.item_bias
        uniq, inv_np = np.unique(users, return_inverse=True)
        inv = torch.from_numpy(inv_np.astype(np.int64)).to(dev)
        i_t = torch.from_numpy(items).to(dev)
        if cfg.shared_negatives > 0:
            shared = self.rng.integers(0, self.ds.n_items, cfg.shared_negatives)
            (xu, xi, xs), (bu, bi, _) = self._rows([uniq, items + nu, shared + nu])
            bs = take_rows(bias, torch.from_numpy(shared).to(dev)) if bias is not None else None
        else:  # every item (whole-graph training only: see _neighbour_sampler)
            x, base = self._node_embeddings(), self.model.encoder.base.weight
            u_t, i_n = torch.from_numpy(uniq).to(dev), i_t + nu
            xu, xi, bu, bi = take_rows(x, u_t), take_rows(x, i_n), take_rows(base, u_t), take_rows(base, i_n)
            xs, bs = x[nu:], bias
        norm = torch.nn.functional.normalize
        xq = norm(xu, dim=-1) / cfg.temperature  # scale the (U, d) side, not the (U, S) scores
        pos = (take_rows(xq, inv) * norm(xi, dim=-1)).sum(-1)
        if cfg.margin:
            pos = pos - cfg.margin / cfg.temperature
        neg = xq @ norm(xs, dim=-1).T
        if bias is not None:
            pos = pos + take_rows(bias, i_t)
            neg = neg + bs[None, :]
        loss = sampled_softmax(pos, neg, inv)
        if cfg.reg > 0:
            loss = loss + cfg.reg * (take_rows(bu, inv).pow(2).sum() + bi.pow(2).sum()) / (2 * users.shape[0])
        return self._optimise(loss)

    def _distill_step(self, users: np.ndarray) -> float:
        """A step of ``distill`` on a batch's users (int64 (B,)): each user's positive is one of the
        teacher's top ``distill_top`` unseen items, its negatives ``distill_negatives`` uniform items
        shared by the batch; the loss is the softmax cross-entropy of the code cosines
        ⟨h_u, h_i⟩/K over ``distill_temperature`` (codes ±1 forward, tanh's gradient back)."""
        cfg, dev, nu, rng = self.cfg, self.device, self.ds.n_users, self.sample_rng
        top = self.teacher_top
        pos = top[torch.from_numpy(users), torch.from_numpy(rng.integers(0, top.shape[1], users.shape[0]))]
        keep = pos >= 0  # a user with fewer unseen items than distill_top has -1 padding
        u_t = torch.from_numpy(users).to(dev)[keep.to(dev)]
        neg = torch.from_numpy(rng.integers(0, self.ds.n_items, cfg.distill_negatives)).to(dev)
        enc, head = self.model.encoder, self.model.head
        hu = head.relax(enc.rows(u_t), side="user")  # type: ignore[union-attr,operator]
        hp = head.relax(enc.rows(pos[keep].to(dev) + nu), side="item")  # type: ignore[union-attr,operator]
        hn = head.relax(enc.rows(neg + nu), side="item")  # type: ignore[union-attr,operator]
        s = 1.0 / (cfg.bits * cfg.distill_temperature)
        logits = torch.cat([s * (hu * hp).sum(1, keepdim=True), s * (hu @ hn.T)], dim=1)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=dev)
        # users who have seen every item have no positive; with none left the mean would be NaN,
        # so the step still runs (its gradients meet the other ranks') on a zero loss
        loss = (torch.nn.functional.cross_entropy(logits, target) if logits.shape[0]
                else 0.0 * sum(p.sum() for p in head.parameters()))  # type: ignore[union-attr]
        return self._optimise(loss)

    @torch.no_grad()
    def embeddings(self) -> Embeddings:
        """Codes and continuous embeddings of all users and items from the current model."""
        import hashsearch

        self.model.eval()
        x = self._node_embeddings() if self.cfg.method == "hashgnn_sp" else self._all_nodes()
        if self.cfg.method == "distill":  # HieS re-ranks by the teacher's own embeddings
            codes, cont = self.model.head.codes(self.model.encoder.scaled()), x  # type: ignore[union-attr,operator]
        elif self.model.head is not None and self._use_head():
            codes = self.model.head.codes(x)
            cont = self.model.head.continuous(x, self.beta_now())
        else:
            # Random hyperplanes (LSH): a fixed Gaussian projection of the continuous embeddings.
            g = np.random.default_rng(self.cfg.seed + 7919).standard_normal((x.shape[1], self.cfg.bits))
            codes = hard_sign(x @ torch.from_numpy(g.astype(np.float32)).to(x.device))
            cont = x
            if self.cfg.loss_kind == "softmax":  # trained on cosines: rank by cosine
                cont = torch.nn.functional.normalize(x, dim=-1)
                if self.model.item_bias is not None:
                    # rank by the training logits cos/τ + b_i: users [u/τ, 1], items [i, b_i]
                    nu_ = self.ds.n_users
                    cont = torch.cat([cont, torch.ones(cont.shape[0], 1, device=cont.device)], dim=1)
                    cont[:nu_, :-1] /= self.cfg.temperature
                    cont[nu_:, -1] = self.model.item_bias.detach()
        self.model.train()
        codes_np = codes.cpu().numpy()
        cont_np = cont.float().cpu().numpy()
        nu = self.ds.n_users
        return Embeddings(
            user_codes=hashsearch.pack(codes_np[:nu]), item_codes=hashsearch.pack(codes_np[nu:]),
            user_emb=np.ascontiguousarray(cont_np[:nu]), item_emb=np.ascontiguousarray(cont_np[nu:]),
            nbits=self.cfg.bits,
        )

    def validate(self) -> Optional[float]:
        """Validation metric (``cfg.val_spec``) of the current model, or None without a validation split."""
        if len(self.ds.valid) == 0 or self._stage() != "main":
            return None
        mode, metric = self.cfg.val_spec
        res = evaluate(self.embeddings(), self.csr("valid"), self.csr("train"), modes=(mode,),
                       candidates=self.cfg.candidates, block=self.cfg.eval_block, device=self.device,
                       users=self.val_users, progress=self.cfg.progress)
        return res[mode][metric]

    def monitor(self) -> Dict[str, float]:
        """Test Recall/NDCG@20 of the current model in its validation mode (for learning curves only)."""
        mode, _ = self.cfg.val_spec
        res = evaluate(self.embeddings(), self.csr("test"), self.csr("train", "valid"), modes=(mode,),
                       ks=(20,), candidates=self.cfg.candidates, block=self.cfg.eval_block, device=self.device,
                       users=self.val_users, progress=self.cfg.progress)
        return {f"{mode}:{k}": v for k, v in res[mode].items() if k != "seconds"}

    # ------------------------------------------------------------ checkpoints
    def state(self) -> Dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "it": self.it,
            "model": self.model.state_dict(), "optim": self.optim.state_dict(),
            "best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state,
            "bad": self.bad, "stopped": self.stopped, "history": self.history,
            "train_seconds": self.train_seconds, "np_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, st: Dict[str, Any]) -> None:
        self.epoch, self.it = st["epoch"], st["it"]
        self.model.load_state_dict(st["model"])
        self.optim = self._make_optim()
        self.optim.load_state_dict(st["optim"])
        self.best, self.best_epoch, self.best_state = st["best"], st["best_epoch"], st["best_state"]
        self.bad, self.history = st["bad"], st["history"]
        self.train_seconds = st["train_seconds"]
        # why the run stopped is decided again under the resumed settings: a larger time budget or
        # patience continues a run that the checkpoint's settings had stopped
        self.stopped = self._stop_reason()
        self.rng.bit_generator.state = st["np_rng"]
        if self.world.size > 1:  # (one process: the same generator as rng)
            log.warning("resumed with %d ranks: each rank's sampling stream restarts", self.world.size)
        torch.set_rng_state(st["torch_rng"])

    def _stop_reason(self) -> Optional[str]:
        """Why training is over at this point under the current settings (None: it is not)."""
        cfg = self.cfg
        if cfg.max_minutes is not None and self.train_seconds > 60 * cfg.max_minutes:
            return f"time budget of {cfg.max_minutes} min reached"
        if cfg.patience and self.bad >= cfg.patience:
            return f"early stop: no better {cfg.val_spec} in {cfg.patience} evaluations"
        return None

    # ------------------------------------------------------------ main loop
    def train(self, stop_after: Optional[int] = None) -> None:
        """Train until ``cfg.epochs`` (or early stop / time budget). ``stop_after`` ends this call
        after that many epochs, as an interruption would (tests use it to check resume).

        Resume with the same configuration: the guided-STE and two-stage schedules depend on
        ``epochs``.
        """
        cfg = self.cfg
        ckpt = self.out / CHECKPOINT
        if cfg.resume and ckpt.exists():
            self.load_state(torch.load(ckpt, map_location=self.device, weights_only=False))
            log.info("resumed from %s at epoch %d (iteration %d)", ckpt, self.epoch, self.it)
        t_start = time.perf_counter() - self.train_seconds
        first = self.epoch
        saved_epoch = self.epoch if cfg.resume and ckpt.exists() else None  # what the checkpoint holds
        try:
            while self.epoch < cfg.epochs and not self.stopped:
                if stop_after is not None and self.epoch - first >= stop_after:
                    break
                loss = self._train_epoch()
                self._end_epoch(loss, time.perf_counter() - t_start)
                if self.world.main:
                    save_torch(ckpt, self.state())
                saved_epoch = self.epoch
        except KeyboardInterrupt:
            # Ctrl-C ends training, not the run: finish() still restores the best validated model,
            # evaluates it and writes the outputs (a second Ctrl-C aborts that), then run() raises
            # TrainingInterrupted so that callers looping over fits stop too. The checkpoint holds
            # the last whole epoch, so --resume continues from there.
            self.interrupted = True
            where = "no checkpoint" if saved_epoch is None else f"the checkpoint holds epoch {saved_epoch}"
            self.stopped = f"interrupted (Ctrl-C) after {self.epoch} whole epochs; {where}"
            log.warning("%s: finishing with the best model validated so far (Ctrl-C again aborts)", self.stopped)
        if self.stopped:
            log.info("%s", self.stopped)

    def _train_epoch(self) -> float:
        """One pass over the training pairs; returns the mean loss. Each rank takes its share of
        every batch (all of it in a one-process run)."""
        from tqdm.auto import tqdm

        cfg, world = self.cfg, self.world
        perm = self._epoch_order()
        if self.own_stream:
            self.sample_rng = np.random.default_rng([cfg.seed, world.rank + 1, self.epoch])
        bar = tqdm(total=self.batches_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and world.main), leave=False, dynamic_ncols=True)
        total = 0.0
        last_val = self.history[-1].get("val") if self.history else None
        batches: Iterator = (self._epoch_batch(perm, b) for b in range(self.batches_per_epoch))
        if self.own_stream and cfg.loss_kind != "softmax" and cfg.method != "distill":
            # the next batches' negatives and neighbourhoods are drawn (numpy, mostly without the
            # GIL) while this one trains; the stream is that thread's alone, so the draws repeat
            # (distill draws its few numbers in its step instead)
            batches = prefetch(((u, i, self.prepare(u, i)) for u, i in batches), depth=2)
        try:
            for b, (users, items, *prep) in enumerate(batches):
                if cfg.lr_schedule != "constant":
                    for g in self.optim.param_groups:
                        g["lr"] = self.lr_now()
                total += self.step(users, items, *prep)
                bar.update(1)
                if b % 10 == 0:
                    bar.set_postfix(loss=f"{total / (b + 1):.4f}", val="-" if last_val is None else f"{last_val:.4f}")
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        bar.close()
        self.epoch += 1
        if self.sp_split and self.epoch == self.sp_split:
            # hashgnn_sp stage 2: only the hash head learns, on frozen encoder outputs.
            # Switched before the checkpoint so a resumed run rebuilds the same optimiser.
            self.optim = self._make_optim()
            self.frozen = None
        return total / self.batches_per_epoch

    def _epoch_batch(self, perm: np.ndarray, b: int) -> Tuple[np.ndarray, np.ndarray]:
        """This rank's share of batch b of the epoch: (users, items) int64."""
        world, bs = self.world, self.cfg.batch_size
        idx = perm[b * bs : (b + 1) * bs]
        if idx.shape[0] >= world.size:  # (a last batch smaller than the world: every rank takes it)
            idx = idx[world.rank :: world.size]
        return self.ds.train.users[idx], self.ds.train.items[idx]

    def _end_epoch(self, loss: float, seconds: float) -> None:
        """Record the epoch; validate when due and decide early stopping (rank 0 decides for all)."""
        cfg = self.cfg
        self.train_seconds = seconds
        rec: Dict[str, Any] = {"epoch": self.epoch, "loss": loss, "seconds": seconds, "peak_rss_gb": peak_rss_gb()}
        if self.model.head is not None and self.cfg.head_kind == "guided":
            rec["p"] = self.p_now()
        # a run cut short by its time budget is validated at its last epoch too, so the epochs
        # since the previous validation are not thrown away when the best state is restored
        over_time = cfg.max_minutes is not None and self.train_seconds > 60 * cfg.max_minutes
        due = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
        if self.world.main:
            if due or over_time:
                self._record_validation(rec)
            if cfg.monitor_test and due:
                rec["test_monitor"] = self.monitor()
            self.stopped = self._stop_reason() or self.stopped
        shared = broadcast_object((rec, self.stopped, self.best, self.best_epoch, self.bad), self.world)
        rec, self.stopped, self.best, self.best_epoch, self.bad = shared
        self.history.append(rec)
        self.epoch_log.epoch(rec)
        log.info("epoch %d: %s", self.epoch, {k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()})

    def _record_validation(self, rec: Dict[str, Any]) -> None:
        val = self.validate()
        if val is None:
            return
        rec["val"] = val
        if val > self.best:
            self.best, self.best_epoch, self.bad = val, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad += 1  # patience 0 never stops early (_stop_reason)

    def finish(self) -> Dict[str, Any]:
        """Restore the best validated model, evaluate on test, write codes.npz and metrics.json.
        Other ranks than 0 write nothing and return ``{"rank": r, "world_size": n}``."""
        cfg = self.cfg
        if not self.world.main:
            return {"rank": self.world.rank, "world_size": self.world.size}
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            self.frozen = None
        emb = self.embeddings()
        t0 = time.perf_counter()
        exclude = self.csr("train", "valid")
        res = evaluate(emb, self.csr("test"), exclude, modes=tuple(cfg.test_modes or EVAL_MODES),
                       candidates=cfg.candidates, block=cfg.eval_block, paper_protocol=cfg.paper_protocol,
                       device=self.device, progress=cfg.progress)
        metrics: Dict[str, Any] = dict(res)
        metrics.update({
            "train_seconds": self.train_seconds,
            "eval_seconds": time.perf_counter() - t0,
            "epochs_run": self.epoch,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "dataset": {"name": self.ds.name, **self.ds.stats()},
            "history": self.history,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "world_size": self.world.size,
            "train_mode": "sampled" if self.sampled else "full",
            "fanout": self.neighbours.fanouts if self.neighbours is not None else None,
            "peak_rss_gb": peak_rss_gb(),
            "config": cfg.to_dict(),
        })
        self.out.mkdir(parents=True, exist_ok=True)
        save_codes(self.out / "codes.npz", emb)
        from .rundir import write_run_data  # raw id maps, training items, manifest: docs/run_directory.md

        write_run_data(self.out, self.ds)
        save_json(self.out / "metrics.json", metrics)
        write_learning_curve(self.out, self.history, cfg)
        self.epoch_log.close()
        return metrics

    def run(self) -> Dict[str, Any]:
        """train() then finish(); TrainingInterrupted (after finish) if Ctrl-C ended training."""
        self.train()
        metrics = self.finish()
        shutdown(self.world)
        if self.interrupted:
            raise TrainingInterrupted(metrics)
        return metrics


def fit(cfg: FitConfig, dataset: Optional[Dataset] = None) -> Dict[str, Any]:
    """Train ``cfg.method`` and write ``cfg.out``/{codes.npz, metrics.json}; returns the metrics dict.

    ``dataset`` skips loading ``cfg.data`` (handy when one process trains many methods).
    Ctrl-C during training still writes the outputs of the best model so far, then raises
    :class:`TrainingInterrupted` (a KeyboardInterrupt) holding the metrics.
    """
    return Trainer(cfg, dataset).run()
