"""hashsearch trainer: learn binary codes for users and items (HashGNN and baselines), reproduce the
paper's tables, and serve top-k recommendations from a trained run."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from .config import METHODS, FitConfig
from .config_file import ConfigFileError, load_config_file

PROG = f"python -m {__package__}"  # `python -m train` from a checkout; the console script passes its own


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, unless the help states it already, the option
    is a flag or it has no value by default (its help then says what happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        states_it = any(mark in text for mark in ("(default", "default:", "%(default)"))
        if states_it or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        if action.nargs == 0 or isinstance(action.default, bool):  # store_true/false, --no-x flags
            return text
        return f"{text} (default: %(default)s)"


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    """All of ``fit``'s options, in groups (also used by ``python -m train.profiling``)."""
    d = FitConfig()
    _add_data_args(p.add_argument_group("data"), d)
    _add_model_args(p.add_argument_group("model"), d)
    _add_hashing_args(p.add_argument_group("hashing (the methods with a hash layer)"), d)
    _add_optim_args(p.add_argument_group("optimisation"), d)
    _add_loss_args(p.add_argument_group("loss"), d)
    _add_eval_args(p.add_argument_group("evaluation"), d)
    _add_runtime_args(p.add_argument_group("runtime and output"), d)
    _add_scale_args(p.add_argument_group("scale (large graphs)"), d)


def _add_data_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    """Which data, how the files are read (train.data.load_dataset) and how they are split."""
    from .data import FORMATS

    a = g.add_argument
    a("--data", default=None, metavar="SPEC",
      help="LightGCN-format dir, ml-1m, gowalla, a ratings/edge-list file, or synthetic:users=…,items=…,edges=… "
      "(default: a small embedded synthetic graph)")
    a("--format", default=d.format, choices=FORMATS,
      help="format of the --data files (default: detected from the content; content that reads two ways, "
      "e.g. 'user item weight' lines, is an error asking for this option)")
    a("--columns", default=d.columns, metavar="user=NAME,item=NAME[,rating=NAME][,time=NAME]",
      help="csv/tsv/inter/parquet: the columns to read, by name or 0-based position (default: the usual "
      "header names: user_id/userId/user/uid, item_id/itemId/movieId/item/iid, rating, timestamp/time)")
    a("--min-rating", type=float, default=d.min_rating,
      help="keep interactions whose rating (or edge weight) is at least this (default: 0, all)")
    a("--split", default=d.split, choices=["auto", "given", "paper", "temporal"],
      help="given: the files' split; paper: per user a random 70/30 (+10%% validation) re-split; temporal: "
      "the same shares, each user's latest interactions to test (needs a time column); auto: given for "
      "train/test files, paper otherwise")
    a("--data-seed", type=int, default=None, help="seed of the data split and of a synthetic graph (default: --seed)")
    a("--merge-valid", action="store_true", help="train on train+valid; no validation, no early stopping")


def _add_model_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--method", default=d.method, choices=METHODS,
      help="hashgnn (+ _nr: no ranking loss, _sp: continuous then hash stage), hashnet, ste, gumbel: learned "
      "codes; distill: codes learned from a --teacher run's ranking; lsh, graphsage, lightgcn, mf: continuous "
      "embeddings hashed by random hyperplanes")
    a("--encoder", default=None, choices=["sage", "lightgcn", "mf"],
      help="embedding encoder (default: the method's own: lightgcn for lightgcn, mf for mf, sage otherwise)")
    a("--emb-dim", type=int, default=d.emb_dim, help="ID-embedding size (the output size for lightgcn/mf)")
    a("--sage-dims", default=",".join(map(str, d.sage_dims)), metavar="D1,D2,…",
      help="GraphSAGE layer sizes, one per graph layer")
    a("--layers", type=int, default=d.layers, help="LightGCN propagation layers")
    a("--edge-dropout", type=float, default=d.edge_dropout,
      help="LightGCN: share of edges dropped afresh at each training step (renormalised; 0: off)")


def _add_hashing_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--bits", type=int, default=d.bits, help="code length K in bits")
    a("--p-start", type=float, default=d.p_start,
      help="guided STE: starting probability p of keeping the continuous value of a bit (1: all continuous)")
    a("--p-decay", type=float, default=d.p_decay, help="guided STE: p is multiplied by this at each decay")
    a("--p-every", type=int, default=d.p_every,
      help="guided STE: iterations between decays of p (0: ~60 decays spread over the planned run)")
    a("--p-floor", type=float, default=d.p_floor, help="guided STE: p never decays below this")
    a("--q-mode", default=d.q_mode, choices=["element", "node", "pair"],
      help="guided STE: Q drawn per bit, per code, or per (user, item) pair")
    a("--code-scale", default=d.code_scale, choices=["auto", "one", "mean"],
      help="guided/ste: binary codes trained as ±1 or ±(batch mean |z|); auto: mean for the guided "
      "STE, one for plain STE")
    a("--quant-weight", type=float, default=d.quant_weight,
      help="guided STE/STE: weight of the quantisation loss mean (1-|z|)^2 (0: off, the paper)")
    a("--cont-weight", type=float, default=d.cont_weight,
      help="guided STE: + this weight x the loss on the continuous codes z alone (0: off, the paper)")
    a("--p-lr-min", type=float, default=d.p_lr_min,
      help="guided STE: lr x (m + (1-m) p), so steps shrink as codes binarise (1: constant lr)")
    a("--guided-gamma", type=float, default=d.guided_gamma,
      help="guided STE: z = tanh(β a), β = (1 + γ t)^0.5 as HashNet's (0: off, the paper's tanh(a))")
    a("--hashnet-gamma", type=float, default=d.hashnet_gamma, help="HashNet: z = tanh(β a), β = (1 + γ t)^0.5")
    a("--gumbel-tau", type=float, default=d.gumbel_tau, help="gumbel: Gumbel-softmax temperature")
    a("--sp-pretrain-frac", type=float, default=d.sp_pretrain_frac,
      help="hashgnn_sp: share of the epochs spent on the continuous stage")
    a("--separate-hash-layers", action="store_true", default=d.separate_hash_layers,
      help="a hash layer for users and another for items (the official HashGNN code; default: one shared)")
    a("--teacher", default=None, metavar="RUN_DIR",
      help="distill: a finished run on the same data and split (e.g. lightgcn) whose ranking the codes learn; "
      "HieS re-ranks by its embeddings (default: none; distill needs one)")
    a("--distill-top", type=int, default=d.distill_top,
      help="distill: each user's positives are drawn from the teacher's top this many unseen items")
    a("--distill-negatives", type=int, default=d.distill_negatives,
      help="distill: uniform items shared by a batch as negatives")
    a("--distill-temperature", type=float, default=d.distill_temperature,
      help="distill: logits are code cosines <h_u, h_i>/bits over this temperature")


def _add_optim_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--epochs", type=int, default=d.epochs, help="planned training epochs (schedules are spread over them)")
    a("--batch-size", type=int, default=d.batch_size, help="training (user, item) pairs per step")
    a("--lr", type=float, default=d.lr, help="Adam learning rate")
    a("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
      help="cosine: lr decays to 0 over the planned --epochs (a time budget may stop it earlier)")
    a("--reg", type=float, default=d.reg, help="L2 weight on the batch's ID embeddings")
    a("--seed", type=int, default=d.seed, help="seed of the initialisation, batches and negatives")
    a("--max-minutes", type=float, default=None,
      help="stop training after this wall time, validating the last epoch (default: no limit)")


def _add_loss_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--loss", default=d.loss, choices=["auto", "hashgnn", "bpr", "softmax"],
      help="auto: bpr for lightgcn/mf, the HashGNN loss otherwise; softmax: sampled softmax on cosines")
    a("--negatives", type=int, default=d.negatives, help="sampled negative items per positive pair")
    a("--lam", type=float, default=d.lam, help="HashGNN loss: weight λ of the ranking (triplet) term")
    a("--alpha", type=float, default=d.alpha, help="HashGNN loss: ranking margin α")
    a("--score-scale", type=float, default=d.score_scale, help="HashGNN loss: scores are scale·<x, y>")
    a("--temperature", type=float, default=d.temperature, help="softmax loss: logits are cosine / temperature")
    a("--shared-negatives", type=int, default=d.shared_negatives,
      help="softmax loss: uniform negatives shared by a batch; 0: all items (full softmax)")
    a("--item-bias", action="store_true",
      help="softmax loss: learn a per-item logit offset b_i (scores cos/τ + b_i, also used for ranking)")
    a("--margin", type=float, default=d.margin, help="softmax loss: positives scored (cos - margin)/τ")
    a("--group-users", action=argparse.BooleanOptionalAction, default=None,
      help="batches of whole users, so the softmax scores each user once (default: on for the softmax loss)")


def _add_eval_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--eval-every", type=int, default=d.eval_every, help="epochs between validations")
    a("--patience", type=int, default=d.patience,
      help="validations without improvement before stopping early; 0 never stops early")
    a("--val-metric", default=None, metavar="MODE:METRIC",
      help="model-selection metric, e.g. hies:recall@50 (default: hies:recall@50 for hashing methods, "
      "continuous:recall@20 otherwise)")
    a("--candidates", type=int, default=d.candidates, help="hies: Hamming candidates re-ranked per user")
    a("--eval-block", type=int, default=d.eval_block, help="users per evaluation block (memory vs speed)")
    a("--eval-users", type=int, default=d.eval_users,
      help="validate on a seeded sample of this many users (0: all; the final test always uses all)")
    a("--test-modes", default=None, metavar="MODE,…",
      help="retrieval modes of the final test over all users, e.g. hamr,hies (default: hamr,hies,continuous; "
      "exact continuous search over millions of items takes hours)")
    a("--paper-protocol", action="store_true", help="also report the official HashGNN code's protocol")
    a("--monitor-test", action="store_true",
      help="log test metrics at each evaluation (learning curves; not used for model selection)")


def _add_runtime_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    a = g.add_argument
    a("--out", default=d.out, help="run directory: codes.npz, metrics.json, learning_curve.png, checkpoint")
    a("--config", default=None, metavar="FILE",
      help="take the settings of a recorded run (its metrics.json, or a JSON object of fit settings) so "
      "it can be repeated; options given on the command line override them (--out, --resume, "
      "--tensorboard and progress are never taken from the file; default: none)")
    a("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    a("--device", default=d.device, help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    a("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch's default)")
    a("--tensorboard", default=None, metavar="DIR",
      help="also log loss and validation metrics per epoch to TensorBoard in DIR (needs the tensorboard "
      "package; default: off)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bars")
    a("-v", "--verbose", action="store_true", help="debug logging")


def _add_scale_args(g: argparse._ArgumentGroup, d: FitConfig) -> None:
    """Options for large graphs: mini-batch (sampled) training."""
    a = g.add_argument
    a("--train-mode", default=d.train_mode, choices=["auto", "full", "sampled"],
      help="full: every step propagates the whole graph; sampled: each step runs the encoder on its "
      "batch's sampled neighbourhoods (sparse embedding updates); auto: sampled above --sampled-above "
      "training pairs")
    a("--fanout", default=None, metavar="N1,N2,…",
      help="neighbours sampled per graph layer, the batch's own nodes' layer first, e.g. 10,5 "
      "(default: 10, then 5 for each further layer)")
    a("--sampled-above", type=int, default=d.sampled_above,
      help="auto mode: train sampled when the training split has more pairs than this")
    a("--negative-pool", type=int, default=d.negative_pool,
      help="draw each batch's negatives from this many uniform items (0: each pair its own, the paper's; "
      "sampled training then samples far fewer neighbourhoods)")


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


def add_recommend_parser(sub: "argparse._SubParsersAction") -> None:
    """``recommend``: top-k items per user from a run directory (train/recommend.py, train/recommend_ray.py)."""
    p = sub.add_parser("recommend", help="top-k items per user of a fit run, by raw id, training items excluded",
                       formatter_class=HelpFormatter,
                       description="Top-k items for each user of a `fit` run directory, by raw id, the user's "
                       "training items excluded. Columns: user, rank (1..k), item, score (Hamming distance "
                       "for hamr, inner product otherwise); a user with fewer than k items left gets fewer rows.")
    a = p.add_argument_group("input and output").add_argument
    a("--run", required=True, help="run directory written by `fit --out DIR`")
    a("--users", default="all", help="'all' (default) or a file of raw user ids, one a line")
    a("--out", required=True, help="output file; with --ray a directory of part files")
    a("--format", default=None, choices=["parquet", "csv"],
      help="output format (default: csv for a .csv name, else parquet)")
    a = p.add_argument_group("search").add_argument
    a("--k", type=int, default=100, help="items per user")
    a("--mode", default="hamr", choices=["hamr", "hies", "continuous"],
      help="hamr: Hamming ranking; hies: Hamming candidates re-ranked by inner product; continuous: exact "
      "inner product")
    a("--index", default="scan", choices=["scan", "mih", "cluster"],
      help="hamr/hies: the Hamming search (all exact: the same rows)")
    a("--candidates", type=int, default=500, help="hies: Hamming candidates per user")
    a = p.add_argument_group("runtime and scale").add_argument
    a("--num-threads", type=int, default=0, help="search threads (0: all cores, or 1 per worker with --ray)")
    a("--batch", type=int, default=4096, help="users per search call (and per Ray task)")
    a("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
      help="run on Ray: a local cluster without ADDRESS, else the cluster at ADDRESS (e.g. auto, ray://host:10001; "
      "default: no Ray)")
    a("--shards", type=int, default=0,
      help="with --ray: split the items over N actors, one index each, and merge exactly (0: split users)")
    a("--num-workers", type=int, default=None, help="local Ray cluster: CPUs to start it with (default: all)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of all subcommands: fit, reproduce, recommend."""
    from . import __version__

    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter,
                                     epilog=f"`{prog} COMMAND --help` lists a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    fit_p = sub.add_parser("fit", help="train one method; writes OUT/codes.npz, OUT/metrics.json and its "
                           "learning curve", description="Train one method on one data set and evaluate it on "
                           "the test split; the run directory OUT holds the codes, the metrics, the recorded "
                           "configuration (metrics.json) and the learning curve.", formatter_class=HelpFormatter)
    _add_fit_args(fit_p)
    from .reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub, formatter_class=HelpFormatter)
    add_recommend_parser(sub)
    return parser


def _fit_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


def parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse ``argv``; for ``fit --config FILE`` the file's settings become the defaults, so the
    options given on the command line override them. Raises ConfigFileError for a bad file."""
    ns, _ = parser.parse_known_args(argv)
    if getattr(ns, "command", None) == "fit" and ns.config is not None:
        _fit_parser(parser).set_defaults(**load_config_file(ns.config))
    return parser.parse_args(argv)


def parse_fit_args(p: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """:func:`parse_args` for a parser holding fit's options itself (``python -m train.profiling``)."""
    ns, _ = p.parse_known_args(argv)
    if ns.config is not None:
        p.set_defaults(**load_config_file(ns.config))
    return p.parse_args(argv)


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


def _run_fit(parser: argparse.ArgumentParser, cfg: FitConfig) -> int:
    from .curves import require_tensorboard
    from .data import load_dataset
    from .trainer import TrainingInterrupted, fit

    # Input problems are usage errors: one line and exit status 2, not a traceback.
    try:
        _check_fit_target(cfg)
        if cfg.tensorboard is not None:
            require_tensorboard()
        dataset = load_dataset(cfg.data, seed=cfg.split_seed, split=cfg.split, format=cfg.format,
                               columns=cfg.columns, min_rating=cfg.min_rating)
        if cfg.method == "distill":  # a teacher missing, damaged or of other data: said before training
            from .teacher import load_teacher

            load_teacher(cfg.teacher, dataset)  # type: ignore[arg-type]
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


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    """Run one subcommand; returns the exit status (2: a usage error, reported in one line)."""
    parser = build_parser(prog)
    try:
        ns = parse_args(parser, argv)
    except ConfigFileError as bad:
        return _fail(parser, "fit", bad)
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
        return _run_fit(parser, cfg)
    if ns.command == "reproduce":
        from .reproduce import run as run_reproduce

        return run_reproduce(ns)
    if ns.command == "recommend":
        from .recommend import run_cli as run_recommend

        return run_recommend(ns)
    parser.error(f"unknown command {ns.command}")
    return 2


def console_main() -> int:
    """The ``hashsearch-train`` console script."""
    return main(prog="hashsearch-train")


if __name__ == "__main__":
    sys.exit(main())
