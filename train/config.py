"""Run configuration (a dataclass; the command line fills it, nothing is parsed at import)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

METHODS = ("hashgnn", "lsh", "hashnet", "ste", "gumbel", "hashgnn_sp", "hashgnn_nr",
           "graphsage", "lightgcn", "mf", "distill")
HASH_METHODS = ("hashgnn", "hashnet", "ste", "gumbel", "hashgnn_sp", "hashgnn_nr", "distill")
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
    # codes learned from a trained continuous model's ranking (--teacher), its embeddings frozen
    "distill": ("teacher", "ste"),
}


@dataclass
class FitConfig:
    """Everything a ``fit`` run depends on; stored in ``metrics.json`` and checkpoints."""

    # Each default carries its reason; the tuning behind the trainer's defaults and the values
    # that `reproduce` passes per data set are in docs/RESULTS.md ("Knobs chosen on validation",
    # "Continuous LightGCN on gowalla").

    # data
    data: Optional[str] = None          # --data; None: the embedded synthetic graph, small enough for 2 cores
    method: str = "hashgnn"             # the paper's method; the baselines are one flag away
    bits: int = 32                      # the width of the Table 2 runs; the engine holds <= 32-bit codes as uint32
    encoder: Optional[str] = None       # sage | lightgcn | mf; None: the method's own (METHOD_TABLE)
    out: str = "runs/default"           # run directory; one fixed place under runs/ for runs not named
    seed: int = 0                       # training seed; every random draw derives from it
    # seed of the data split (and of a synthetic graph); None: ``seed``. Recorded so that a cached
    # run of ``reproduce --seeds`` is reused only on the split it was trained on.
    data_seed: Optional[int] = None
    split: str = "auto"                 # auto | given | paper | temporal; auto keeps a data set's own split
    merge_valid: bool = False           # train on train+valid (no early stopping); off: validation picks the model
    format: Optional[str] = None        # input format; None: detected, and an error when two readings fit
    columns: Optional[str] = None       # tabular columns "user=NAME,item=NAME,rating=NAME,time=NAME"; None: known headers
    min_rating: float = 0.0             # lowest rating (or edge weight) kept; 0 keeps all, as implicit feedback
    # model
    emb_dim: int = 64                   # ID-embedding size (= output size for lightgcn/mf), LightGCN's size
    sage_dims: List[int] = field(default_factory=lambda: [128, 68])  # GraphSAGE layer sizes: HashGNN's two layers
    layers: int = 3                     # LightGCN propagation layers, its paper's setting
    # LightGCN: share of edges dropped afresh each step (SGL-style, renormalised); 0: off, since it
    # did not help on gowalla.
    edge_dropout: float = 0.0
    # optimisation
    epochs: int = 30                    # planned epochs; schedules (p, cosine lr) are spread over them
    batch_size: int = 4096              # pairs per step; large batches keep whole-graph CPU steps affordable
    lr: float = 1e-3                    # Adam's usual rate; large-batch and sampled runs need more (RESULTS)
    reg: float = 1e-4                   # L2 on the batch's ID embeddings (LightGCN-style)
    loss: str = "auto"                  # auto: BPR for lightgcn/mf (their papers), HashGNN's objective otherwise
    temperature: float = 0.1            # softmax loss: cosine / temperature; 0.1 beat 0.15 on gowalla recall
    # softmax loss: uniform negatives shared by a batch; 0: all items (the full softmax), which
    # trained better than 2,048 sampled ones at about the same time per epoch.
    shared_negatives: int = 0
    # softmax loss: a learned per-item offset b_i on the logits (cos/τ + b_i), kept for ranking,
    # since cosines alone cannot express popularity. Off: it changes the ranking.
    item_bias: bool = False
    margin: float = 0.0                 # softmax loss: cosine margin on positives (CosFace); 0: it changed nothing
    # batches of whole users, so the softmax scores each distinct user once; None: on for the
    # softmax loss only.
    group_users: Optional[bool] = None
    lr_schedule: str = "constant"       # constant | cosine (lr · ½(1 + cos(π · step / all steps of `epochs`)))
    negatives: int = 5                  # sampled items per positive pair: the triplets of the ranking loss
    lam: float = 0.5                    # ranking-loss weight λ; shared by every method, its effect is within seed noise
    alpha: float = 0.2                  # ranking margin α of the paper's triplet loss
    score_scale: float = 1.0            # s = scale·<x,y>; 1 is best for HashGNN and HashNet on both data sets
    # binarisation (guided STE)
    p_start: float = 1.0                # p starts fully continuous: the codes follow the continuous model first
    # p's decay factor: 0.9963 takes p from 1 to 0.8 over the run (the official code's schedule);
    # the paper's 0.95 binarises before the model leaves its popularity plateau.
    p_decay: float = 0.9963
    # iterations between decays; 0 spreads ~60 decays over the planned run, since large batches
    # make few iterations (the paper's 250 assumes many small ones).
    p_every: int = 0
    p_floor: float = 0.0                # lowest p; 0: the schedule alone decides
    # granularity of the guided STE's Q: element (each bit), node (each code) or pair (a user and
    # its positive share one draw, as the official code); element trained best.
    q_mode: str = "element"
    # training magnitude of binary codes: one (±1), mean (±c, c the batch's mean |z|, not
    # differentiated) or auto (mean for the guided STE, one for plain STE as the paper's baseline);
    # ±1 codes saturate the sigmoid and collapse |z|.
    code_scale: str = "auto"
    # guided STE: lr · (p_lr_min + (1 - p_lr_min) · p), the step shrinking as codes binarise;
    # 1 (off): it did not help.
    p_lr_min: float = 1.0
    # guided STE / STE: weight of a quantisation loss (1 - |z|)^2 pulling tanh towards ±1 (DSH/DPSH);
    # 0, the paper's loss: it saturates the sigmoid scores.
    quant_weight: float = 0.0
    # guided STE: weight of the same loss on the continuous codes z alone (joint continuous and
    # discrete training); 0: it cost time and did not keep z better.
    cont_weight: float = 0.0
    # HashNet: β = (1 + γ t)^0.5; the paper's default. `reproduce` passes each data set's choice.
    hashnet_gamma: float = 0.005
    # guided STE: z = tanh(β a) with HashNet's β schedule under the guided mix; 0: the paper's
    # tanh(a). `reproduce` passes each data set's choice.
    guided_gamma: float = 0.0
    # a hash layer (W, b) for users and another for items (the official code; the paper writes
    # one); off: worse for HashGNN and HashNet.
    separate_hash_layers: bool = False
    gumbel_tau: float = 1.0             # Gumbel-softmax temperature; the usual default, `reproduce` passes 0.5
    sp_pretrain_frac: float = 0.5       # hashgnn_sp: share of epochs for the continuous stage (untuned: half)
    # distill: the run directory of the continuous model (same data and split) whose ranking the
    # codes learn; HieS re-ranks by its embeddings
    teacher: Optional[str] = None
    # distill: a user's positives are the teacher's top items it has not seen; 5 led validation HamR
    # on ml-1m (3-5 level, 10 and 20 below) and was within noise of 10 on gowalla
    distill_top: int = 5
    distill_negatives: int = 256        # distill: uniform items shared by a batch as the softmax's negatives
    distill_temperature: float = 0.03   # distill: logits are code cosines <h_u, h_i>/K over this; 0.02 was worse on validation
    # evaluation and control
    eval_every: int = 1                 # epochs between validations; 1 catches the best epoch on short runs
    patience: int = 5                   # validations without improvement before stopping (0: never stop early)
    val_metric: Optional[str] = None    # mode:metric, None: hies:recall@50 (hash) / continuous:recall@20
    candidates: int = 500               # HieS Hamming candidates per user: 0.98 of the exact top-100 on ml-1m
    paper_protocol: bool = False        # also report the official code's NDCG; off: ours is the standard one
    eval_block: int = 2048              # users scored per evaluation block, bounding memory
    max_minutes: Optional[float] = None  # stop training after this wall time; None: epochs decide
    monitor_test: bool = False          # log test metrics each evaluation (learning curves only; never used for selection)
    threads: int = 0                    # torch threads (0: torch's default)
    device: str = "auto"                # auto | cpu | cuda; auto takes a GPU when there is one
    resume: bool = False                # continue from OUT/checkpoint.pt; off: a run starts afresh
    progress: bool = True               # progress bars; off for logs and tests
    # scale: whole-graph steps cost every edge; sampled steps cost the batch's sampled
    # neighbourhoods (fanout), so large graphs train sampled.
    train_mode: str = "auto"            # auto | full | sampled; auto decides by the training pair count
    fanout: Optional[List[int]] = None  # neighbours sampled per layer, seeds' first (None: 10,5 / 10,5,5, the official code's)
    sampled_above: int = 2_000_000      # auto: sampled above this many training pairs (ml-1m and gowalla stay whole-graph)
    eval_users: int = 0                 # validation on a seeded sample of this many users (0: all)
    # a batch's negatives drawn from this many uniform items (0: each pair its own, the paper's);
    # sampled steps then compute far fewer negative neighbourhoods.
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
        if (self.method == "distill") != (self.teacher is not None):
            raise ValueError("--method distill needs --teacher RUN_DIR (a trained continuous run on the same data), "
                             f"and --teacher is for distill only; got method {self.method!r}, teacher {self.teacher!r}")
        if self.teacher is not None and Path(self.teacher).resolve() == Path(self.out).resolve():
            raise ValueError(f"--teacher and --out are the same directory ({self.out}): the distilled run would "
                             "overwrite its teacher; give another --out")
        if self.method == "distill" and self.encoder is not None:
            raise ValueError(f"distill encodes nothing (the teacher's embeddings are its input), got encoder {self.encoder!r}")
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
        (out of range they would train silently into garbage, e.g. a negative lr, or fail later: a
        zero temperature gives NaN losses, eval_every 0 a ZeroDivisionError after the first epoch)."""
        inf = math.inf

        def need(name: str, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> None:
            v = getattr(self, name)
            above = v > lo if lo_open else v >= lo  # NaN fails both comparisons
            if not (above and v <= hi) or (integer and v != int(v)):
                where = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi == inf else ']'}"
                raise ValueError(f"{name} must be in {where}, got {v}")

        for name in ("epochs", "layers", "p_every", "patience", "threads"):
            need(name, 0, inf, integer=True)
        for name in ("batch_size", "negatives", "emb_dim", "eval_every", "candidates", "eval_block",
                     "distill_top", "distill_negatives"):
            need(name, 1, inf, integer=True)
        for name in ("temperature", "score_scale", "gumbel_tau", "distill_temperature"):
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
        if self.method != "distill":
            unused += ["teacher", "distill_top", "distill_negatives", "distill_temperature"]
        else:  # the teacher's embeddings are frozen and the loss is its own
            unused += ["emb_dim", "sage_dims", "layers", "edge_dropout", "reg", "negatives", "lam", "alpha",
                       "score_scale", "loss", "temperature", "shared_negatives", "item_bias", "margin",
                       "separate_hash_layers", "train_mode", "fanout", "negative_pool"]
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
        # distill: HieS re-ranks by the teacher's own embeddings, so HamR is what training changes
        default = {"distill": "hamr:recall@50"}.get(self.method, "hies:recall@50")
        spec = self.val_metric or (default if self.head_kind else "continuous:recall@20")
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
