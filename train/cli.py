"""Command line: ``python -m train fit ...`` (subcommands leave room for ``reproduce``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from .config import METHODS, FitConfig


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    d = FitConfig()
    a = p.add_argument
    a("--data", default=None, help="LightGCN-format dir, ml-1m, gowalla, a ratings/edge-list file, or "
      "synthetic:users=…,items=…,edges=… (default: a small embedded synthetic graph)")
    a("--method", default=d.method, choices=METHODS)
    a("--bits", type=int, default=d.bits, help="code length K (default %(default)s)")
    a("--encoder", default=None, choices=["sage", "lightgcn", "mf"], help="default: the method's own")
    a("--out", default=d.out, help="output directory (default %(default)s)")
    a("--seed", type=int, default=d.seed)
    a("--data-seed", type=int, default=None, help="seed of the data split (default: --seed)")
    a("--split", default=d.split, choices=["auto", "given", "paper", "temporal"],
      help="given: the files' split; paper: per user a random 70/30 (+10%% validation) re-split; temporal: "
      "the same shares, each user's latest interactions to test (needs a time column); auto: given for "
      "train/test files, paper otherwise")
    a("--merge-valid", action="store_true", help="train on train+valid; no early stopping")
    a("--emb-dim", type=int, default=d.emb_dim)
    a("--sage-dims", default=",".join(map(str, d.sage_dims)), help="GraphSAGE layer sizes")
    a("--layers", type=int, default=d.layers, help="LightGCN layers")
    a("--edge-dropout", type=float, default=d.edge_dropout,
      help="LightGCN: share of edges dropped afresh at each training step (renormalised; 0: off)")
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size)
    a("--lr", type=float, default=d.lr)
    a("--reg", type=float, default=d.reg)
    a("--loss", default=d.loss, choices=["auto", "hashgnn", "bpr", "softmax"],
      help="auto: bpr for lightgcn/mf, the HashGNN loss otherwise; softmax: sampled softmax on cosines")
    a("--temperature", type=float, default=d.temperature)
    a("--shared-negatives", type=int, default=d.shared_negatives,
      help="softmax loss: uniform negatives shared by a batch; 0: all items (full softmax)")
    a("--item-bias", action="store_true",
      help="softmax loss: learn a per-item logit offset b_i (scores cos/τ + b_i, also used for ranking)")
    a("--margin", type=float, default=d.margin, help="softmax loss: positives scored (cos - margin)/τ")
    a("--group-users", action=argparse.BooleanOptionalAction, default=None,
      help="batches of whole users, so the softmax scores each user once (default: on for the softmax loss)")
    a("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
      help="cosine: lr decays to 0 over the planned `--epochs` (a time budget may stop it earlier)")
    a("--negatives", type=int, default=d.negatives)
    a("--lam", type=float, default=d.lam)
    a("--alpha", type=float, default=d.alpha)
    a("--score-scale", type=float, default=d.score_scale, help="scores are scale·<x, y>")
    a("--p-start", type=float, default=d.p_start)
    a("--p-decay", type=float, default=d.p_decay)
    a("--p-every", type=int, default=d.p_every, help="0: ~60 decays over the planned run")
    a("--p-floor", type=float, default=d.p_floor)
    a("--q-mode", default=d.q_mode, choices=["element", "node", "pair"],
      help="guided STE: Q drawn per bit, per code, or per (user, item) pair (default %(default)s)")
    a("--code-scale", default=d.code_scale, choices=["auto", "one", "mean"],
      help="guided/ste: binary codes trained as ±1 or ±(batch mean |z|); auto: mean for the guided "
      "STE, one for plain STE (default %(default)s)")
    a("--quant-weight", type=float, default=d.quant_weight,
      help="guided STE/STE: weight of the quantisation loss mean (1-|z|)^2 (0: off, the paper)")
    a("--cont-weight", type=float, default=d.cont_weight,
      help="guided STE: + this weight x the loss on the continuous codes z alone (0: off, the paper)")
    a("--p-lr-min", type=float, default=d.p_lr_min, help="guided STE: lr x (m + (1-m) p); 1: constant lr")
    a("--hashnet-gamma", type=float, default=d.hashnet_gamma)
    a("--guided-gamma", type=float, default=d.guided_gamma,
      help="guided STE: z = tanh(β a), β = (1 + γ t)^0.5 as HashNet's (0: off, the paper's tanh(a))")
    a("--separate-hash-layers", action="store_true", default=d.separate_hash_layers,
      help="hashing methods: a hash layer for users and another for items (the official HashGNN code)")
    a("--gumbel-tau", type=float, default=d.gumbel_tau)
    a("--sp-pretrain-frac", type=float, default=d.sp_pretrain_frac)
    a("--eval-every", type=int, default=d.eval_every)
    a("--patience", type=int, default=d.patience,
      help="validations without improvement before stopping early; 0 never stops early")
    a("--val-metric", default=None, help="mode:metric, e.g. hies:recall@50")
    a("--candidates", type=int, default=d.candidates)
    a("--paper-protocol", action="store_true", help="also report the official HashGNN code's protocol")
    a("--eval-block", type=int, default=d.eval_block)
    a("--max-minutes", type=float, default=None)
    a("--monitor-test", action="store_true",
      help="log test metrics at each evaluation (learning curves; not used for model selection)")
    a("--threads", type=int, default=d.threads)
    a("--device", default=d.device)
    a("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    a("--no-progress", dest="progress", action="store_false")
    a("-v", "--verbose", action="store_true")
    _add_scale_args(p)
    _add_data_args(p)


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    """Options for large graphs: mini-batch (sampled) training and sampled validation."""
    d = FitConfig()
    a = p.add_argument
    a("--train-mode", default=d.train_mode, choices=["auto", "full", "sampled"],
      help="full: every step propagates the whole graph; sampled: each step runs the encoder on its "
      "batch's sampled neighbourhoods (sparse embedding updates); auto: sampled above "
      "--sampled-above training pairs (default %(default)s)")
    a("--fanout", default=None, help="neighbours sampled per graph layer, the batch's own nodes' layer first, "
      "e.g. 10,5 (default: 10, then 5 for each further layer)")
    a("--sampled-above", type=int, default=d.sampled_above,
      help="auto mode: train sampled when the training split has more pairs than this (default %(default)s)")
    a("--negative-pool", type=int, default=d.negative_pool,
      help="draw each batch's negatives from this many uniform items (0: each pair its own, the paper's; "
      "sampled training then samples far fewer neighbourhoods)")
    a("--test-modes", default=None,
      help="retrieval modes of the final test over all users, e.g. hamr,hies (default: hamr,hies,continuous; "
      "exact continuous search over millions of items takes hours)")
    a("--eval-users", type=int, default=d.eval_users,
      help="validate on a seeded sample of this many users (0: all; the final test always uses all)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """How the --data files are read (train.data.load_dataset)."""
    from .data import FORMATS

    d = FitConfig()
    a = p.add_argument
    a("--format", default=d.format, choices=FORMATS,
      help="format of the --data files (default: detected from the content; content that reads two ways, "
      "e.g. 'user item weight' lines, is an error asking for this option)")
    a("--columns", default=d.columns, metavar="user=NAME,item=NAME[,rating=NAME][,time=NAME]",
      help="csv/tsv/inter/parquet: the columns to read, by name or 0-based position (default: the usual "
      "header names: user_id/userId/user/uid, item_id/itemId/movieId/item/iid, rating, timestamp/time)")
    a("--min-rating", type=float, default=d.min_rating,
      help="keep interactions whose rating (or edge weight) is at least this (default: all)")


class UsageError(Exception):
    """A command-line value that cannot work (reported in one line, exit status 2)."""


def _check_fit_target(cfg: FitConfig) -> None:
    """--out and --device problems, found before any data is read or any model built."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {cfg.out}: exists and is not a directory")
    above = next((q for q in out.parents if q.exists()), None)
    if above is not None and not above.is_dir():
        raise UsageError(f"--out {cfg.out}: {above} is not a directory")
    if cfg.device == "auto":
        return
    import torch

    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise UsageError(f"--device {cfg.device!r}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "finds no CUDA GPU"
            raise UsageError(f"--device {cfg.device}: this torch {torch.__version__} {why}; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {cfg.device}: only {torch.cuda.device_count()} CUDA device(s)")


def _fail(parser: argparse.ArgumentParser, command: str, bad: BaseException) -> int:
    """Report a user error in one line on stderr, the argparse way; exit status 2."""
    msg = " ".join(str(bad).split()) or type(bad).__name__
    print(f"{parser.prog} {command}: error: {msg}", file=sys.stderr)
    return 2


def config_from_args(ns: argparse.Namespace) -> FitConfig:
    """Map parsed arguments onto :class:`FitConfig` (extra argparse keys are ignored)."""
    values = vars(ns).copy()
    values["sage_dims"] = [int(x) for x in str(values["sage_dims"]).split(",") if x]
    if values.get("test_modes") is not None:
        values["test_modes"] = [m.strip() for m in str(values["test_modes"]).split(",") if m.strip()]
    if values.get("fanout") is not None:
        try:
            values["fanout"] = [int(x) for x in str(values["fanout"]).split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"fanout must be comma-separated integers, e.g. 10,5; got {ns.fanout!r}") from None
    names = {f.name for f in fields(FitConfig)}
    return FitConfig(**{k: v for k, v in values.items() if k in names})


def add_recommend_parser(sub) -> None:
    """``recommend``: top-k items per user from a run directory (train/recommend.py, train/recommend_ray.py)."""
    p = sub.add_parser("recommend", help="top-k items per user of a fit run, by raw id, training items excluded",
                       description="Top-k items for each user of a `fit` run directory, by raw id, the user's "
                       "training items excluded. Columns: user, rank (1..k), item, score (Hamming distance "
                       "for hamr, inner product otherwise); a user with fewer than k items left gets fewer rows.")
    a = p.add_argument
    a("--run", required=True, help="run directory written by `python -m train fit --out DIR`")
    a("--k", type=int, default=100, help="items per user (default %(default)s)")
    a("--users", default="all", help="'all' (default) or a file of raw user ids, one a line")
    a("--mode", default="hamr", choices=["hamr", "hies", "continuous"],
      help="hamr: Hamming ranking; hies: Hamming candidates re-ranked by inner product; continuous: exact "
      "inner product (default %(default)s)")
    a("--index", default="scan", choices=["scan", "mih", "cluster"],
      help="hamr/hies: the Hamming search (all exact: the same rows; default %(default)s)")
    a("--candidates", type=int, default=500, help="hies: Hamming candidates per user (default %(default)s)")
    a("--out", required=True, help="output file; with --ray a directory of part files")
    a("--format", default=None, choices=["parquet", "csv"], help="default: csv for a .csv name, else parquet")
    a("--num-threads", type=int, default=0, help="search threads (0: all cores; with --ray: per worker, default 1)")
    a("--batch", type=int, default=4096, help="users per search call (and per Ray task; default %(default)s)")
    a("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
      help="run on Ray: a local cluster without ADDRESS, else the cluster at ADDRESS (e.g. auto, ray://host:10001)")
    a("--shards", type=int, default=0,
      help="with --ray: split the items over N actors, one index each, and merge exactly (0: split users)")
    a("--num-workers", type=int, default=None, help="local Ray cluster: CPUs to start it with (default: all)")
    a("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    fit_p = sub.add_parser("fit", help="train one method; writes OUT/codes.npz and OUT/metrics.json")
    _add_fit_args(fit_p)
    from .reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    add_recommend_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if getattr(ns, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .reproduce import check_settings

    try:  # a setting out of range is a usage error: said the argparse way (exit status 2), no traceback
        if ns.command == "fit":
            cfg = config_from_args(ns)
            cfg.validate()
        elif ns.command == "reproduce":
            check_settings(ns)
    except ValueError as bad:
        parser.error(str(bad))
    if ns.command == "fit":
        from .data import load_dataset
        from .trainer import TrainingInterrupted, fit

        # Input problems are usage errors: one line and exit status 2, not a traceback.
        try:
            _check_fit_target(cfg)
            dataset = load_dataset(cfg.data, seed=cfg.split_seed, split=cfg.split, format=cfg.format,
                                   columns=cfg.columns, min_rating=cfg.min_rating)
        except (UsageError, ValueError, OSError, ImportError) as bad:  # ValueError: DataError, bad options
            return _fail(parser, "fit", bad)
        try:
            metrics = fit(cfg, dataset)
            code = 0
        except (FileExistsError, NotADirectoryError) as bad:  # --out replaced by a file meanwhile
            return _fail(parser, "fit", bad)
        except TrainingInterrupted as stop:  # the outputs were written: report them, exit as Ctrl-C does
            metrics, code = stop.metrics, 130
        if "rank" in metrics:  # a torchrun rank other than 0: rank 0 reports
            return code
        summary = {m: {k: round(v, 4) for k, v in metrics[m].items() if k.startswith(("recall@", "ndcg@"))}
                   for m in ("hamr", "hies", "continuous") if m in metrics}
        print(json.dumps({"out": cfg.out, "train_seconds": round(metrics["train_seconds"], 1), **summary}, indent=1))
        return code
    if ns.command == "reproduce":
        from .reproduce import run as run_reproduce

        return run_reproduce(ns)
    if ns.command == "recommend":
        from .recommend import run_cli as run_recommend

        return run_recommend(ns)
    parser.error(f"unknown command {ns.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
