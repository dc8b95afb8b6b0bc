"""Run configuration (a dataclass; the command line fills it, nothing is parsed at import)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

METHODS = ("hashgnn", "lsh", "hashnet", "ste", "gumbel", "hashgnn_sp", "hashgnn_nr",
           "graphsage", "lightgcn", "mf")
HASH_METHODS = ("hashgnn", "hashnet", "ste", "gumbel", "hashgnn_sp", "hashgnn_nr")
# Continuous methods get their codes by random hyperplanes (LSH) on their embeddings.
CONTINUOUS_METHODS = ("lsh", "graphsage", "lightgcn", "mf")

# Retrieval modes and cut-offs n of the metrics (Recall@n, NDCG@n) every evaluation reports.
EVAL_MODES = ("hamr", "hies", "continuous")
EVAL_KS = (20, 50, 100)

# method -> (default encoder, hash head kind or None)
METHOD_TABLE = {
    "hashgnn": ("sage", "guided"),
    "hashgnn_nr": ("sage", "guided"),
    "hashgnn_sp": ("sage", "guided"),
    "ste": ("sage", "ste"),
    "hashnet": ("sage", "hashnet"),
    "gumbel": ("sage", "gumbel"),
    "lsh": ("sage", None),
    "graphsage": ("sage", None),
    "lightgcn": ("lightgcn", None),
    "mf": ("mf", None),
}


@dataclass
class FitConfig:
    """Everything a ``fit`` run depends on; stored in ``metrics.json`` and checkpoints."""

    data: Optional[str] = None          # --data (None: the embedded synthetic default)
    method: str = "hashgnn"
    bits: int = 32
    encoder: Optional[str] = None       # sage | lightgcn | mf (None: the method's default)
    out: str = "runs/default"
    seed: int = 0
    # seed of the data split (and of a synthetic graph); None: ``seed``. ``reproduce --seeds`` trains
    # extra seeds on the experiment's own split, and records it here so a cached run is reused only
    # on the split it was trained on.
    data_seed: Optional[int] = None
    split: str = "auto"                 # auto | given | paper | temporal
    merge_valid: bool = False           # train on train+valid (no early stopping then)
    # data files (train.data.load_dataset): format (None: detected, an error when ambiguous), the
    # columns of tabular files ("user=NAME,item=NAME,rating=NAME,time=NAME"), and the lowest rating
    # (or edge weight) kept (0: all)
    format: Optional[str] = None
    columns: Optional[str] = None
    min_rating: float = 0.0
    # model
    emb_dim: int = 64                   # ID-embedding size (= output size for lightgcn/mf)
    sage_dims: List[int] = field(default_factory=lambda: [128, 68])
    layers: int = 3                     # LightGCN propagation layers
    # LightGCN: share of the graph's edges dropped afresh at each training step (SGL-style edge
    # dropout, the kept graph renormalised; evaluation uses the full graph); 0: off. Gowalla, the
    # softmax run above without item bias: 0.3 gave test recall@20 0.1515 / 0.1577 / 0.1589 at epochs
    # 3/6/9 against 0.1542 / 0.1595 / 0.1623 without (and --reg 0.01: 0.1537 / 0.1584 at epochs 3/6).
    edge_dropout: float = 0.0
    # optimisation
    epochs: int = 30
    batch_size: int = 4096
    lr: float = 1e-3
    reg: float = 1e-4                   # L2 on the ID embeddings of the batch (LightGCN-style)
    # BPR in place of the HashGNN objective for the hashing methods (ml-1m, table2 budget, HashNet γ 0.2,
    # stopped at epoch 6 to free the machine for timings): valid HieS recall@50 at epochs 2/4/6 HashGNN
    # 0.176 / 0.183 / 0.189, HashNet 0.191 / 0.184 / 0.200, against ~0.22 for HashGNN with the paper's
    # objective at epoch 6. Not pursued; auto keeps the paper's objective for them.
    loss: str = "auto"                  # auto | hashgnn | bpr | softmax
    temperature: float = 0.1            # softmax loss: cosine / temperature
    # softmax loss: uniform negatives shared by a batch; 0: all items (the full softmax). On gowalla
    # (lightgcn, bs 16384, lr 0.03, τ 0.1) all items with user-grouped batches reached test recall@20
    # 0.154 after 3 epochs against 0.135 for 2048 sampled negatives and random batches, at about the
    # same time per epoch.
    shared_negatives: int = 0
    # softmax loss: a learned per-item offset b_i added to the logits (cos/τ + b_i), kept for ranking
    # (users' vectors [u/|u|/τ, 1], items' [i/|i|, b_i]). Cosines alone cannot express item popularity.
    # Gowalla lightgcn, --merge-valid, bs 16384, lr 0.03 cosine over 45 epochs, τ 0.1, test
    # recall@20 / ndcg@20 at epochs 3/6/9: without 0.1542 / 0.1595 / 0.1623; with 0.1821 / 0.1847 /
    # 0.1850 (ndcg 0.152 / 0.154 / 0.154; reg 1e-4 in these probes). τ 0.15 with the bias: 0.1809 /
    # 0.1832 at epochs 3/6 (ndcg higher: 0.155 / 0.157). Full run, --reg 0 --epochs 30: test
    # recall@20 0.1859, ndcg@20 0.1546 (flat at 0.185-0.186 from epoch 9). Off by default (it changes
    # the ranking).
    item_bias: bool = False
    # softmax loss: an additive cosine margin on the positive pairs, (cos - margin)/τ (CosFace style);
    # the full softmax's normaliser keeps the positive's own unmargined score. Gowalla with --item-bias
    # (run above): 0.1 changed nothing (test recall@20 0.1822 / 0.1848 at epochs 3/6 vs 0.1822 / 0.1848).
    margin: float = 0.0
    # batches of whole users (each user's pairs together, users in random order), so a batch has few
    # distinct users and the softmax scores them once each; None: on for the softmax loss only
    group_users: Optional[bool] = None
    lr_schedule: str = "constant"       # constant | cosine (lr · ½(1 + cos(π · step / all steps of `epochs`)))
    negatives: int = 5                  # sampled items per positive (triplets per pair)
    # ranking-loss weight λ. Gowalla HashGNN (table2 flags, the old 7-minute budget, 12 epochs), λ 0.15 /
    # 0.5 / 1: valid HieS recall@50 0.176 / 0.173 / 0.177; λ 0 (HashGNN_nr) 0.174 at the same epoch.
    # At 16 epochs, seeds 0 / 1: HashGNN (0.5) valid 0.180 / 0.183, test HieS 0.1724 / 0.1712, HamR
    # 0.1250 / 0.1178; HashGNN_nr valid 0.184 / 0.182, HieS 0.1748 / 0.1700, HamR 0.1143 / 0.1099.
    # Seeds 0-4 (reproduce table2 --seeds): gowalla HieS 0.1733±0.0015 vs nr 0.1743±0.0026, HamR
    # 0.1186 vs 0.1157; ml-1m HieS 0.3510±0.0040 vs nr 0.3453±0.0082: λ's effect is within seed noise.
    lam: float = 0.5
    alpha: float = 0.2                  # ranking margin α
    # s = scale·<x,y>. On the default synthetic graph the raw inner product (1.0) trained codes far
    # better than 1/sqrt(K) (HieS recall@50 0.30 vs 0.18; STE barely learnt at 1/sqrt(K)).
    # ml-1m, the table2 budget of docs/RESULTS.md (20 epochs, bs 16384, lr 2e-3, seed 0), scale 2 vs 1, test
    # recall@50 HieS / HamR: hashgnn 0.2934 / 0.2365 vs 0.2888 / 0.2392; hashnet 0.3149 / 0.2461 vs
    # 0.2955 / 0.2399. Sharper scores help HashNet more, so the gap to HashGNN widens; 1 kept.
    # hashgnn alone (same budget): scale 4 valid / test HieS / HamR 0.297 / 0.3052 / 0.2312, scale 8
    # 0.302 / 0.3119 / 0.2624 (scale 1: 0.277 / 0.2888 / 0.2392). A knob every method shares, so not
    # tuned for one method alone; 1 kept for all. Tuned for both leaders (2026-11-30, ml-1m, same budget,
    # HashNet γ 0.2), valid / test HieS / HamR recall@50: scale 4: HashGNN 0.297 / 0.3052 / 0.2312,
    # HashNet 0.327 / 0.3420 / 0.2358; scale 8: HashGNN 0.302 / 0.3119 / 0.2624, HashNet 0.333 /
    # 0.3440 / 0.2425 (scale 1: HashNet 0.336 / 0.3497 / 0.2607). Sharper scores narrow HashGNN's
    # HieS gap (valid 0.059 -> 0.031) but do not close it, and HashNet is best at 1. Gowalla (table2
    # budget, 7 min, HashGNN and HashNet run side by side, HashGNN p -> 0.5, HashNet γ 0.05):
    # scale 4: HashGNN 0.111 / 0.1148 / 0.0916, HashNet 0.119 / 0.1157 / 0.0541; scale 8: HashGNN
    # 0.116 / 0.1201 / 0.0954, HashNet 0.110 / 0.1003 / 0.0430; both below their scale-1 runs
    # (valid 0.122 / 0.132). 1 stays best for both on both data sets.
    score_scale: float = 1.0
    # binarisation
    p_start: float = 1.0
    # The paper: 0.95 every 250 iterations. With p_every 0 (~60 decays over the planned run) 0.95 took
    # p to 0.05 and binarised the codes before the continuous model had left its popularity plateau;
    # the HieS embeddings z then stop being trained (ml-1m valid HieS 0.211 with code_scale mean).
    # 0.9963 takes p from 1 to 0.8 over the run, the official HashGNN code's schedule (hash
    # probability +0.01 per epoch, 0.2 after its 20 epochs): valid HieS 0.277.
    # p -> 0.5 instead (--p-decay 0.98851), seed 0, test recall@50 HieS / HamR: gowalla (docs/RESULTS.md's
    # gowalla table2 budget, 7 min, 13 epochs with two jobs on the machine) 0.1264 / 0.1016 against
    # 0.1032 / 0.0509 at p -> 0.8 (HashNet 0.1271 / 0.0713); ml-1m (table2 budget) 0.2747 / 0.2422
    # against 0.2888 / 0.2392. Gowalla p -> 0.3 (--p-decay 0.98013, 16 epochs): 0.1181 / 0.1134. HashNet
    # under the same two-job load gave exactly its table2 numbers (0.1271 / 0.0713), so the cap did not
    # favour HashGNN. Lower p makes far better signs where HieS depends on them (gowalla)
    # and costs the continuous code where it does not (ml-1m). Chosen per data set on validation HieS
    # recall@50, p ending at 0.8 / 0.5 / 0.3: gowalla 0.108 / 0.122 / 0.119 (its table2 uses
    # --p-decay 0.98851); ml-1m 0.277 / 0.265 / 0.224 (test 0.2888 / 0.2747 / 0.2377: the default).
    p_decay: float = 0.9963
    # iterations between decays. The paper's 250 assumes many small batches; with the large
    # batches that make CPU training affordable a run has few iterations, so the default 0
    # spreads ~60 decays over the planned run (p: 1 -> 0.8 with the default p_decay).
    p_every: int = 0
    p_floor: float = 0.0
    # granularity of the guided STE's Q: element (each bit), node (each code) or pair (a user and its
    # positive item share one draw, each negative its own: the official HashGNN code)
    q_mode: str = "element"
    # training-time magnitude of the binary codes: one (±1), mean (±c, c = the batch's mean |z|, not
    # differentiated) or auto (mean for the guided STE, one for plain STE as in the paper's baseline).
    # With ±1 codes a K-bit score is K-sized next to the small continuous ones: the sigmoid saturates
    # and the straight-through gradient shrinks |z| towards 0 (ml-1m: mean |z| of users 0.009 after
    # the old default run), which wrecks both the guidance and HieS re-ranking.
    code_scale: str = "auto"
    # guided STE only: lr · (p_lr_min + (1 - p_lr_min) · p), so the step size shrinks as codes binarise (1: off)
    # Trial log, ml-1m 32 bits, seed 0, bs 16384, lr 2e-3, 20 epochs, valid HieS / HamR recall@50:
    #   old defaults (element Q, ±1 codes, p 1 -> 0.05): 0.203 / 0.184 (user |z| collapsed to ~0.01);
    #   score_scale 0.25 → 0.204 (no collapse, but plateau); + p_lr_min 0.1 → 0.206; score_scale 0.25
    #   + p_floor 0.5 → 0.222 / 0.186; p fixed at 1 (= continuous tanh model): 0.280 / 0.232.
    #   q_mode pair, ±1, p 1 -> 0.05: 0.203 at epoch 12 (stopped); pair, ±1, p 1 -> 0.8: 0.230 / 0.162
    #   (|z| shrank to 0.14); + score_scale 0.25: 0.248 / 0.210; pair, code_scale mean, p -> 0.05:
    #   stuck at 0.20 (stopped); pair, mean, p -> 0.8: 0.267 / 0.234; pair, mean, p = 1 for half the run
    #   then -> 0.04: 0.238 / 0.218; element, mean, p -> 0.05: 0.211 / 0.187;
    #   element, ±1, p -> 0.8: 0.239 / 0.183 (|z| of users 0.14); element, mean, p -> 0.8 (the new
    #   defaults): 0.277 / 0.230 (|z| 0.37), seed 1: 0.270 / 0.233. HashNet: 0.290 / 0.246, seed 1:
    #   0.287 / 0.245. HashGNN now tracks its p = 1 (continuous) run but stays ~0.01-0.02 below HashNet.
    #   HashNet with --hashnet-gamma 0 (β = 1) reproduces the p = 1 run exactly (0.280 / 0.232): the
    #   remaining gap is HashNet's β continuation, not the guided STE.
    p_lr_min: float = 1.0
    # guided STE / STE: + quant_weight · mean over the batch's users and positives of (1 - |z|)^2,
    # a quantisation loss (as in DSH/DPSH) pulling tanh outputs towards ±1 so that sign(z) loses
    # less at retrieval; 0: off, the paper's loss. ml-1m, 32 bits, the 20-epoch command of docs/RESULTS.md, seed 0:
    # w 0.1 gave valid HieS recall@50 0.203 / 0.169 at epochs 6 / 8 against 0.220 / 0.231 without
    # (stopped there): pulling |z| up saturates the sigmoid scores, as ±1 training codes did.
    quant_weight: float = 0.0
    # guided STE: + cont_weight · the same loss on the continuous codes z alone (both HashGNN's
    # outputs trained at once: the abstract's "jointly learn continuous and discrete codes"). Lower p
    # makes better signs but worse z, and HieS re-ranks with z; this keeps z trained as itself.
    # Gowalla (table2 budget, 7 min, two jobs on the machine, seed 0), valid / test HieS / HamR
    # recall@50: w 1 with p -> 0.3: 0.103 / 0.1107 / 0.0773; w 1 with p -> 0.5: 0.096 / 0.0967 / 0.0572,
    # against 0.122 / 0.1264 / 0.1016 without (p -> 0.5). The extra loss costs time (11 epochs instead
    # of 13 in the budget) and did not keep z better (exact search on z: 0.124-0.129 vs 0.127). Off.
    cont_weight: float = 0.0
    # β = (1 + γ t)^0.5. Chosen per data set on validation HieS recall@50 (docs/RESULTS.md's table2
    # budgets, seed 0), γ 0.005 / 0.02 / 0.05 / 0.1: gowalla 0.130 / 0.130 / 0.132 / 0.126 (test HieS
    # 0.1271 / 0.1304 / 0.1299 / 0.1241, HamR 0.0713 / 0.0806 / 0.0719 / 0.0719: its table2 uses 0.05);
    # ml-1m γ 0.005 / 0.02 / 0.05 / 0.1 / 0.2 / 0.5: 0.288 / 0.306 / 0.315 / 0.330 / 0.336 / 0.327 (test
    # HieS 0.2955 / 0.3168 / 0.3270 / 0.3420 / 0.3497 / 0.3413, HamR 0.2399 / 0.2596 / 0.2471 / 0.2612 /
    # 0.2607 / 0.2207: its table2 uses 0.2; γ 1: 0.332 / 0.3441 / 0.2310). Gowalla extended beside the
    # guided_gamma trials (below): γ 1 / 3 / 10: valid 0.152 / 0.154 / 0.161, so its table2 now uses 10.
    # The default stays the paper's.
    hashnet_gamma: float = 0.005
    # guided STE (HashGNN family): z = tanh(β a) with HashNet's β = (1 + γ t)^0.5 under the guided
    # mix, so the continuous guidance itself tends to sign as training goes on; 0: off (the paper's
    # tanh(a)). The log above showed HashNet's lead over HashGNN to be its continuation, not the
    # guided STE (HashNet at β = 1 equals HashGNN at p = 1); this gives HashGNN the same continuation.
    # ml-1m (table2 budget, seed 0, p -> 0.8), γ 0.05 / 0.2 / 0.5 / 1 / 2, valid / test HieS / HamR
    # recall@50: 0.315 / 0.3255 / 0.2740, 0.336 / 0.3463 / 0.2839, 0.336 / 0.3495 / 0.2885,
    # 0.344 / 0.3532 / 0.2818, 0.334 / 0.3425 / 0.2750 (γ 0: 0.277 / 0.2888 / 0.2392); γ 0.2 with
    # p -> 0.5: 0.315 / 0.3256 / 0.2786, p -> 0.9: 0.337 / 0.3478 / 0.2764. HashNet at γ 1 (its grid
    # below, extended): 0.332 / 0.3441 / 0.2310, so its 0.2 (0.336 / 0.3497 / 0.2607) stays.
    # Gowalla (table2 budget, 7 min, two 1-thread jobs side by side, 15-16 epochs each), HashGNN with
    # p -> 0.5, γ 0.2 / 1 / 3 / 10: 0.156 / 0.1509 / 0.1179, 0.168 / 0.1619 / 0.1078, 0.172 / 0.1679 /
    # 0.1171, 0.180 / 0.1683 / 0.1175 (γ 0, table2 of 2026-11-30: 0.129 / 0.1314 / 0.1095); γ 1 with
    # p -> 0.8: 0.164 / 0.1570 / 0.1038. HashNet, run beside it, γ 1 / 3 / 10: 0.152 / 0.1471 / 0.0850,
    # 0.154 / 0.1433 / 0.0837, 0.161 / 0.1505 / 0.0916 (its table2 run of 2026-11-30, γ 0.05: 0.139 /
    # 0.1327 / 0.0795). Both still rise at γ 10; γ 30 (a pair under more load, 12 epochs each in the
    # 7 min): HashNet 0.163 / 0.1499 / 0.0928, HashGNN 0.178 / 0.1665 / 0.1040. HashGNN leads at every γ
    # tried; table2 uses 10 for both (HashNet's grid is not bounded above).
    # The default stays the paper's; table2 passes the chosen γ per data set, as for HashNet.
    guided_gamma: float = 0.0
    # hashing methods: users and items get their own hash layer (W, b), as in the official HashGNN
    # code (the paper writes one layer); the encoder stays shared. ml-1m (table2 budget, seed 0),
    # valid / test HieS / HamR recall@50: HashGNN 0.271 / 0.2818 / 0.2198 against 0.277 / 0.2888 /
    # 0.2392 with one layer; HashNet (γ 0.2) 0.330 / 0.3379 / 0.2278 against 0.336 / 0.3497 / 0.2607.
    # Worse for both: off.
    separate_hash_layers: bool = False
    # Gumbel-softmax temperature. ml-1m (table2 budget, seed 0, 1 thread), τ 0.1 / 0.25 / 0.5 / 1 / 2,
    # valid / test HieS / HamR recall@50: 0.203 / 0.2070 / 0.1528, 0.206 / 0.2101 / 0.1443, 0.223 /
    # 0.2302 / 0.1930 (a jump at the last epoch), 0.207 / 0.2119 / 0.1487, 0.208 / 0.2131 / 0.1352:
    # its ml-1m table2 uses 0.5. Gowalla (table2 budget: 16 epochs, bs 32768, lr 3e-3, 1 thread),
    # τ 0.5 / 1: valid 0.100 / 0.076 (test HieS / HamR 0.1171 / 0.1028 at 0.5): its gowalla table2
    # uses 0.5 too (only these two tried).
    gumbel_tau: float = 1.0
    sp_pretrain_frac: float = 0.5       # hashgnn_sp: share of epochs for the continuous stage
    # evaluation and control
    eval_every: int = 1
    patience: int = 5                   # evaluations without improvement before stopping (0: never stop early)
    val_metric: Optional[str] = None    # mode:metric, None: hies:recall@50 (hash) / continuous:recall@20
    candidates: int = 500
    paper_protocol: bool = False
    eval_block: int = 2048
    max_minutes: Optional[float] = None  # stop training after this wall time
    monitor_test: bool = False          # log test metrics each evaluation (learning curves only; never used for selection)
    threads: int = 0                    # torch threads (0: torch's default)
    device: str = "auto"                # auto | cpu | cuda
    resume: bool = False
    progress: bool = True
    # scale: full-graph steps cost the whole graph each; sampled steps cost the batch's sampled
    # neighbourhoods (fanout), so large graphs train sampled (auto: by the training edge count).
    train_mode: str = "auto"            # auto | full | sampled
    fanout: Optional[List[int]] = None  # neighbours sampled per layer, seeds' first (None: 10,5 / 10,5,5)
    sampled_above: int = 2_000_000      # auto: sampled when the training split has more pairs than this
    eval_users: int = 0                 # validation on a seeded sample of this many users (0: all)
    # a batch's negatives drawn from this many uniform items (0: each pair its own, the paper's):
    # sampled steps then compute far fewer negative neighbourhoods
    negative_pool: int = 0
    test_modes: Optional[List[str]] = None  # retrieval modes of the final test (None: hamr, hies, continuous)
    tensorboard: Optional[str] = None  # also log each epoch to TensorBoard in this directory (None: off)

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; one of {', '.join(METHODS)}")
        if not 1 <= self.bits <= 1024:
            raise ValueError(f"bits must be in 1..1024, got {self.bits}")
        if self.encoder not in (None, "sage", "lightgcn", "mf"):
            raise ValueError(f"unknown encoder {self.encoder!r}")
        if self.loss not in ("auto", "hashgnn", "bpr", "softmax"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if self.loss == "softmax" and self.head_kind is not None:
            raise ValueError("the softmax loss is for continuous methods (lsh, graphsage, lightgcn, mf)")
        if self.q_mode not in ("element", "node", "pair"):
            raise ValueError(f"unknown q_mode {self.q_mode!r} (element, node, pair)")
        if self.code_scale not in ("auto", "one", "mean"):
            raise ValueError(f"unknown code_scale {self.code_scale!r} (auto, one, mean)")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r} (constant, cosine)")
        if self.split not in ("auto", "given", "paper", "temporal"):
            raise ValueError(f"unknown split {self.split!r} (auto, given, paper, temporal)")
        self._validate_data()
        if not 0.0 <= self.edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {self.edge_dropout}")
        if self.edge_dropout > 0 and self.encoder_kind != "lightgcn":
            raise ValueError("edge_dropout is for the lightgcn encoder")
        if (self.item_bias or self.margin) and self.loss_kind != "softmax":
            raise ValueError("item_bias and margin are for the softmax loss")
        if self.shared_negatives < 0:
            raise ValueError(f"shared_negatives must be >= 0 (0: all items), got {self.shared_negatives}")
        self._validate_numbers()

    def _validate_data(self) -> None:
        """format, columns and min_rating (checked before any file is read)."""
        from .data.formats import FORMATS
        from .data.tabular import parse_columns

        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; one of {', '.join(FORMATS)}")
        parse_columns(self.columns)
        if not (self.min_rating >= 0 and math.isfinite(self.min_rating)):
            raise ValueError(f"min_rating must be a finite number >= 0, got {self.min_rating}")

    def _validate_numbers(self) -> None:
        """Numeric settings in range, each error naming the setting, its range and the value given
        (out of range, they trained silently into garbage: a negative lr, or failed later: a zero
        temperature gave NaN losses, eval_every 0 a ZeroDivisionError after the first epoch)."""
        inf = math.inf

        def need(name: str, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> None:
            v = getattr(self, name)
            above = v > lo if lo_open else v >= lo  # NaN fails both comparisons
            if not (above and v <= hi) or (integer and v != int(v)):
                where = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi == inf else ']'}"
                raise ValueError(f"{name} must be in {where}, got {v}")

        for name in ("epochs", "layers", "p_every", "patience", "threads"):
            need(name, 0, inf, integer=True)
        for name in ("batch_size", "negatives", "emb_dim", "eval_every", "candidates", "eval_block"):
            need(name, 1, inf, integer=True)
        for name in ("temperature", "score_scale", "gumbel_tau"):
            need(name, 0.0, inf, lo_open=True)
        for name in ("lr", "reg", "margin", "lam", "alpha", "hashnet_gamma", "quant_weight", "cont_weight",
                     "guided_gamma"):  # (lr 0: nothing trains; tests use it)
            need(name, 0.0, inf)
        for name in ("p_start", "p_floor", "p_lr_min", "sp_pretrain_frac"):
            need(name, 0.0, 1.0)
        need("p_decay", 0.0, 1.0, lo_open=True)
        if self.max_minutes is not None:
            need("max_minutes", 0.0, inf, lo_open=True)
        if any(d < 1 for d in self.sage_dims) or (not self.sage_dims and self.encoder_kind == "sage"):
            raise ValueError(f"sage_dims must be one or more layer sizes >= 1, got {self.sage_dims}")
        if self.train_mode not in ("auto", "full", "sampled"):
            raise ValueError(f"train_mode must be auto, full or sampled, got {self.train_mode!r}")
        need("sampled_above", 0, inf, integer=True)
        need("eval_users", 0, inf, integer=True)
        need("negative_pool", 0, inf, integer=True)
        if self.test_modes is not None and (not self.test_modes or set(self.test_modes) - set(EVAL_MODES)):
            raise ValueError(f"test_modes must be one or more of {', '.join(EVAL_MODES)}, got {self.test_modes}")
        if self.fanout is not None and (not self.fanout or any(int(f) < 1 for f in self.fanout)):
            raise ValueError(f"fanout must be one or more neighbour counts >= 1, got {self.fanout}")
        if self.val_metric is not None:
            mode, _, metric = self.val_metric.partition(":")
            metrics = [f"{m}@{n}" for m in ("recall", "ndcg") for n in EVAL_KS]
            if mode not in EVAL_MODES or metric not in metrics:
                raise ValueError(f"val_metric must be MODE:METRIC with MODE one of {', '.join(EVAL_MODES)} and "
                                 f"METRIC one of {', '.join(metrics)}, got {self.val_metric!r}")

    @property
    def encoder_kind(self) -> str:
        return self.encoder or METHOD_TABLE[self.method][0]

    @property
    def head_kind(self) -> Optional[str]:
        return METHOD_TABLE[self.method][1]

    @property
    def loss_kind(self) -> str:
        if self.loss != "auto":
            return self.loss
        # LightGCN and MF are trained with BPR in their papers; the HashGNN family and its
        # GraphSAGE baselines with the HashGNN objective.
        return "bpr" if self.method in ("lightgcn", "mf") else "hashgnn"

    @property
    def group_users_eff(self) -> bool:
        return self.loss_kind == "softmax" if self.group_users is None else bool(self.group_users)

    @property
    def code_scale_eff(self) -> str:
        if self.code_scale != "auto":
            return self.code_scale
        return "mean" if self.head_kind == "guided" else "one"

    def unused_fields(self) -> Tuple[str, ...]:
        """Fields that cannot change what this method trains (the knobs of other methods' heads),
        so a cached run stays valid when only they differ (e.g. ``--p-decay`` given to a whole
        ``reproduce table2`` retrains the guided-STE methods only)."""
        head = self.head_kind
        unused: List[str] = []
        if head != "guided":
            unused += ["p_start", "p_decay", "p_every", "p_floor", "q_mode", "p_lr_min", "cont_weight",
                       "guided_gamma"]
        if head not in ("guided", "ste"):
            unused += ["code_scale", "quant_weight"]
        if head is None:
            unused.append("separate_hash_layers")
        if head != "hashnet":
            unused.append("hashnet_gamma")
        if head != "gumbel":
            unused.append("gumbel_tau")
        if self.method != "hashgnn_sp":
            unused.append("sp_pretrain_frac")
        return tuple(unused)

    def fanout_for(self, layers: int) -> List[int]:
        """Neighbours sampled per layer for an encoder of ``layers`` graph layers (seeds' layer first):
        ``fanout`` if given (its length must match), else 10 then 5 for each further layer."""
        if self.fanout is None:
            return [10] + [5] * (layers - 1) if layers else []
        if len(self.fanout) != layers:
            raise ValueError(f"fanout needs one count per graph layer of the {self.encoder_kind} encoder "
                             f"({layers}), got {self.fanout}")
        return [int(f) for f in self.fanout]

    @property
    def lam_eff(self) -> float:
        return 0.0 if self.method == "hashgnn_nr" else self.lam

    @property
    def val_spec(self) -> tuple:
        spec = self.val_metric or ("hies:recall@50" if self.head_kind else "continuous:recall@20")
        mode, metric = spec.split(":", 1)
        return mode, metric

    @property
    def split_seed(self) -> int:
        """The seed the data are loaded and split with: ``data_seed``, or ``seed`` when it is None."""
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FitConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
