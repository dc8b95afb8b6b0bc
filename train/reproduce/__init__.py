"""``python -m train reproduce {table2,fig3,table4,tradeoff,bits,throughput,all}``: the paper's
Table 2, Figure 3 and Table 4, the recall-vs-throughput comparison, a code-width sweep (``bits``:
HashGNN, a baseline hashing method and codes distilled from a continuous model at 16…256 bits,
beside that model) and test quality at fixed throughput (``throughput``: test Recall@20 and
NDCG@20 against users/s, HashGNN's and the distilled codes by HamR and HieS against the continuous
model searched exactly and through faiss HNSW and NSG), regenerated
on this machine. ``all`` is the first four.

Training runs are cached under ``OUT/runs/<data>/<method>/`` (``<method>_<bits>`` for the other
widths of ``bits``) and reused while their configuration is unchanged, so ``fig3`` after
``table2`` trains nothing new.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .common import atomic_write_text, data_label, write_outputs

log = logging.getLogger(__name__)

COMMANDS = ("table2", "fig3", "table4", "tradeoff", "bits", "throughput")
ALL = ("table2", "fig3", "table4", "tradeoff")  # what `all` runs: the paper's figures and the trade-off


def add_parser(sub: "argparse._SubParsersAction",
               formatter_class: type = argparse.RawDescriptionHelpFormatter) -> None:
    p = sub.add_parser("reproduce", help="regenerate the paper's tables and figures (and ours)",
                       description=__doc__.replace("``", "`"), formatter_class=formatter_class)
    p.add_argument("what", choices=COMMANDS + ("all",),
                   help="table2: accuracy of every method; fig3: HamR Recall@n by n; table4: search "
                        "time by method; tradeoff: recall of the exact top-k vs throughput against HNSW; "
                        "bits: test accuracy by code width; throughput: test Recall@20/NDCG@20 vs users/s "
                        "against faiss exact, HNSW and NSG search; all: table2, fig3, table4 and tradeoff "
                        "(not bits or throughput)")
    g = p.add_argument_group("data and output")
    g.add_argument("--data", action="append", default=None,
                   help="ml-1m, gowalla, a LightGCN-format directory or synthetic:…; repeatable "
                        "(default: ml-1m and gowalla)")
    g.add_argument("--out", required=True, help="results directory (tables, figures, cached runs)")
    g.add_argument("--seed", type=int, default=0, help="seed of the data split and of training")
    g.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="table2/fig3: train every method once per training seed and report mean ± sd "
                        "(the data and its split stay those of --seed); written as table2_<data>_seeds… "
                        "(default: --seed alone)")
    g.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m], default=None,
                   help="table2/fig3: only these runs, comma-separated (hashgnn,hashgnn_nr,…; "
                        "hashgnn-lightgcn for the LightGCN-encoder row); written as table2_<data>_<runs> "
                        "(default: all rows)")
    g.add_argument("--split", choices=("given", "paper"), default="given",
                   help="given: the data set's own split; paper: the paper's per-user 70/30 re-split, "
                        "each run also scored by the official code's protocol (table2 writes "
                        "table2_<data>_paper beside the paper's numbers; runs under runs/<data>_paper)")
    _add_training_args(p.add_argument_group("training (every method's run)"))
    p.add_argument_group("training (one method's run)").add_argument(
        "--method-set", type=parse_method_set, action="append", default=[], metavar="RUN:FIELD=V,…",
        help="settings of one run only, over the shared ones (fit's option names with _), e.g. "
             "lightgcn:lr=0.01,epochs=200,patience=3: a baseline's own budget, set on validation; "
             "repeatable")
    _add_timing_args(p.add_argument_group("timing (table4, tradeoff, throughput)"))
    _add_sweep_args(p.add_argument_group("sweeps (bits, throughput)"))


def _add_training_args(g: "argparse._ArgumentGroup") -> None:
    a = g.add_argument
    a("--bits", type=int, default=32, help="code length K in bits")
    a("--epochs", type=int, default=30, help="training budget per method")
    a("--max-minutes", type=float, default=None, help="wall-time cap per method (default: none)")
    a("--batch-size", type=int, default=None,
      help="training batch size for every method (default: fit's); large batches make "
           "full-graph CPU training affordable (the README's runs use 16384)")
    a("--lr", type=float, default=None, help="learning rate for every method (default: fit's)")
    a("--eval-every", type=int, default=None, help="epochs between validations (default: fit's)")
    a("--patience", type=int, default=None, help="early-stopping patience (default: fit's)")
    # each method's own knob, chosen per data set on validation; a knob retrains only its methods
    a("--p-decay", type=float, default=None,
      help="guided STE (the HashGNN methods): p's decay factor (default: fit's)")
    a("--cont-weight", type=float, default=None,
      help="guided STE: weight of the loss on the continuous codes alone (default: fit's)")
    a("--hashnet-gamma", type=float, default=None, help="HashNet: β = (1 + γ t)^0.5 (default: fit's)")
    a("--guided-gamma", type=float, default=None,
      help="guided STE: z = tanh(β a) with HashNet's β schedule (default: fit's)")
    a("--gumbel-tau", type=float, default=None, help="Gumbel-softmax temperature (default: fit's)")
    a("--train-mode", default=None, choices=["auto", "full", "sampled"],
      help="whole-graph or sampled mini-batch training (default: fit's, auto by size)")
    a("--fanout", default=None,
      help="sampled training: neighbours per layer, e.g. 10,5 (default: fit's, 10 then 5 per further layer)")
    a("--negative-pool", type=int, default=None,
      help="draw each batch's negatives from this many items (default: fit's, each pair its own)")
    a("--eval-users", type=int, default=None,
      help="validate on a seeded sample of this many users (default: fit's, all)")
    a("--test-modes", default=None,
      help="retrieval modes of each run's final test over all users, e.g. hamr,hies (default: "
           "fit's, also continuous, which takes hours over millions of items)")
    a("--no-progress", action="store_true", help="no progress bars")


def _add_timing_args(g: "argparse._ArgumentGroup") -> None:
    a = g.add_argument
    a("--threads", type=int, default=2, help="threads of training and of the timed searches")
    a("--repeats", type=int, default=3, help="timed runs per method (median)")
    a("--alibaba-users", type=int, default=1000,
      help="table4: users timed at Alibaba scale (0 skips it); the rest is extrapolated")
    a("--alibaba-items", type=int, default=4_167_708, help="table4: items of the Alibaba-scale synthetic codes")
    a("--alibaba-all-users", type=int, nargs="?", const=601_946, default=None, metavar="N",
      help="table4: also time HamR by MIH and by ClusterIndex on all N users (default 601,946) in one call, "
           "no extrapolation (the other methods stay on the slice)")
    a("--users-timed", type=int, default=0, metavar="N",
      help="table4 on a data set with more users: every method on a seeded sample of N users "
           "(extrapolated), the Hamming methods also on all users (default: 0, all users)")
    a("--mih-m", type=int, nargs="+", default=(), metavar="M",
      help="table4: also time HamR by MIH with M tables (the default m keeps the tables "
           "within twice the codes; more tables are faster on learned codes and cost a "
           "copy each: the row gives their size; default: none)")


def _number_list(kind: type, what: str) -> Callable[[str], list]:
    """argparse type of a comma-separated list of positive ``kind`` numbers (1e4 style for floats)."""
    def parse(text: str) -> list:
        try:
            values = [kind(float(v)) if kind is float else kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated {kind.__name__}s, got {text!r}") from None
        if not values or min(values) <= 0 or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{what} must be distinct positive {kind.__name__}s, got {text!r}")
        return values
    return parse


def _add_sweep_args(g: "argparse._ArgumentGroup") -> None:
    from .accuracy import CONTINUOUS_METHODS, TABLE2_ROWS

    baselines = [m for _, m, e in TABLE2_ROWS if e is None and m not in CONTINUOUS_METHODS | {"hashgnn"}]
    a = g.add_argument
    a("--bits-list", type=_number_list(int, "--bits-list"), default="16,32,64,128,256", metavar="B,B,…",
      help="bits: code widths, each trained for HashGNN, the baseline and the distilled codes; throughput: "
           "the widths searched (the width of --bits reuses table2's run, the others train into "
           "runs/<data>/<method>_<bits>)")
    a("--baseline-method", choices=baselines + ["none"], default="hashnet",
      help="bits: the baseline hashing method swept beside HashGNN (none: HashGNN alone)")
    a("--distill", action=argparse.BooleanOptionalAction, default=True,
      help="bits, throughput: also codes distilled from the continuous model (--method distill; default: on)")
    a("--cached-only", action="store_true",
      help="bits: train nothing; report the hashing runs already cached and name the missing ones")
    a("--continuous-method", choices=sorted(CONTINUOUS_METHODS), default="lightgcn",
      help="bits, throughput: the continuous model (trained once at --bits, searched on its embeddings)")
    a("--ef-search", type=_number_list(int, "--ef-search"), default="16,32,64,128,256,512", metavar="E,E,…",
      help="throughput: efSearch values of faiss HNSW (M=32) on the continuous model")
    a("--nsg-search-l", type=_number_list(int, "--nsg-search-l"), default="16,32,64,128,256,512", metavar="L,L,…",
      help="throughput: search_L values of faiss NSG (R=32) on the continuous model (at most the items)")
    a("--hies-candidates", type=_number_list(int, "--hies-candidates"), default="100,200,500,1000,2000,5000",
      metavar="C,C,…", help="throughput: HieS candidate counts (each at least 20, at most the items)")
    a("--throughputs", type=_number_list(float, "--throughputs"), default="1e4,1e5,1e6", metavar="T,T,…",
      help="throughput: users/s at which each method's best Recall@20 is read off")


def _field_value(name: str, text: str, default: Any) -> Any:
    """``text`` as a value of the FitConfig field ``name`` (typed like its default)."""
    import ast

    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, int):
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{name} takes a whole number, got {text!r}")
        return int(number)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_method_set(text: str) -> Tuple[str, Dict[str, Any]]:
    """``RUN:FIELD=V,…`` (``--method-set``) as (run key, {field: value}); argparse's error names
    the run keys or fields it expected."""
    from ..config import FitConfig
    from .accuracy import TABLE2_ROWS
    from .common import run_key

    keys = [run_key(m, e) for _, m, e in TABLE2_ROWS] + ["distill"]  # distill: bits and throughput
    key, _, body = text.partition(":")
    if key not in keys or not body:
        raise argparse.ArgumentTypeError(f"--method-set takes RUN:FIELD=V,… with RUN one of {keys}, got {text!r}")
    defaults = FitConfig()
    settings: Dict[str, Any] = {}
    for item in body.split(","):
        name, eq, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in FitConfig.__dataclass_fields__ or name in ("method", "encoder", "data", "out"):
            raise argparse.ArgumentTypeError(f"--method-set: {item!r} is not FIELD=VALUE with FIELD a training "
                                             f"setting of fit (lr, epochs, patience, …)")
        try:
            settings[name] = _field_value(name, value.strip(), getattr(defaults, name))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"--method-set: {e}") from None
    return key, settings


def _base_config(ns: argparse.Namespace, spec: str):
    from .common import ReproduceConfig

    optional = {name: getattr(ns, name, None) for name in ("batch_size", "lr", "eval_every", "patience",
                                                          "p_decay", "cont_weight", "hashnet_gamma",
                                                          "guided_gamma", "gumbel_tau", "train_mode",
                                                          "negative_pool", "eval_users")}
    if getattr(ns, "fanout", None):
        optional["fanout"] = [int(x) for x in ns.fanout.split(",")]
    if getattr(ns, "test_modes", None):
        optional["test_modes"] = ns.test_modes.split(",")
    if getattr(ns, "split", "given") == "paper":
        optional.update(split="paper", paper_protocol=True)
    per_method: Dict[str, Dict[str, Any]] = {}
    for key, settings in getattr(ns, "method_set", None) or []:
        per_method.setdefault(key, {}).update(settings)
    return ReproduceConfig(data=spec, bits=ns.bits, seed=ns.seed, epochs=ns.epochs, max_minutes=ns.max_minutes,
                           threads=ns.threads, progress=not ns.no_progress, per_method=per_method,
                           **{k: v for k, v in optional.items() if v is not None})


def check_settings(ns: argparse.Namespace) -> None:
    """ValueError naming the first training setting out of range, before any data is loaded
    (each method's run would otherwise stop on it only when its turn comes)."""
    cfg = _base_config(ns, (ns.data or ["ml-1m"])[0])
    cfg.validate()
    for key in cfg.per_method:
        method, _, encoder = key.partition("-")
        run = cfg.for_run(method, encoder or None)
        if method == "distill" and run.teacher is None:  # bits and throughput name the continuous run
            run = replace(run, teacher="<the continuous run>")
        run.validate()
    if ns.what == "bits":
        for bits in ns.bits_list:
            replace(cfg, bits=bits).validate()


def _per_data(ns: argparse.Namespace, spec: str, what: Sequence[str], out: Path, rows: List[Tuple[str, str, Any]],
              sections: Dict[str, List[str]], payloads: Dict[str, Dict[str, Any]],
              workloads: List[Dict[str, Any]]) -> None:
    """The commands of ``what`` on one data set: its tables, figures and payloads appended to
    ``sections``/``payloads``, its table4 workloads to ``workloads``."""
    from ..data import load_dataset
    from . import accuracy, bits, efficiency, throughput, tradeoff
    from .common import ensure_run

    base = _base_config(ns, spec)
    dataset = load_dataset(spec, seed=ns.seed, split=base.split)
    # a re-split data set is another data set: its runs and tables never replace the given split's
    label = data_label(spec) + ("_paper" if base.split == "paper" else "")
    runs = out / "runs" / label
    if "table2" in what:
        p = accuracy.table2(base, out, runs, rows=rows, dataset=dataset, name=f"table2_{label}", seeds=ns.seeds)
        sections["table2"].append(p["markdown"])
        payloads["table2"][label] = p
    if "fig3" in what:
        p = accuracy.fig3(base, out, runs, dataset, rows=rows, name=f"fig3_{label}", seeds=ns.seeds)
        sections["fig3"].append(p["markdown"] + f"\n![fig3 {label}]({p['name']}.png)\n")
        payloads["fig3"][label] = p
    if "bits" in what:
        p = bits.bits_sweep(base, out, runs, dataset, bits_list=ns.bits_list,
                            baseline=None if ns.baseline_method == "none" else ns.baseline_method,
                            train=not ns.cached_only, distill=ns.distill,
                            continuous=ns.continuous_method, name=f"bits_{label}")
        sections["bits"].append(p["markdown"] + f"\n![bits {label}](bits_{label}.png)\n")
        payloads["bits"][label] = p
    if {"table4", "tradeoff", "throughput"} & set(what):
        ensure_run(base, "hashgnn", runs / "hashgnn", dataset=dataset)
    if "table4" in what or "tradeoff" in what:
        ws = efficiency.dataset_workload(label, runs / "hashgnn", truth=dataset.csr("test"),
                                         users_timed=ns.users_timed, seed=ns.seed)
        if "table4" in what:
            workloads.extend(ws)
        if "tradeoff" in what:
            w = ws[-1]  # all users
            p = tradeoff.tradeoff(w["data"], out, label=label, nbits=w["nbits"], threads=ns.threads,
                                  seed=ns.seed, name=f"tradeoff_{label}")
            sections["tradeoff"].append(p["markdown"] + f"\n![tradeoff {label}](tradeoff_{label}.png)\n")
            payloads["tradeoff"][label] = p
    if "throughput" in what:
        cont = ns.continuous_method
        ensure_run(base, cont, runs / cont, dataset=dataset)
        methods = [bits.table2_row("hashgnn")] + ([bits.DISTILL_ROW] if ns.distill else [])
        taught = bits.with_teacher(base, runs / cont)
        widths: Dict[str, Dict[int, Path]] = {}
        for name, method, _ in methods:  # the runs of `reproduce bits`, trained here when missing
            widths[name] = {b: runs / accuracy.width_key(method, b, base.bits) for b in ns.bits_list}
            for b, run_dir in widths[name].items():
                ensure_run(replace(taught, bits=b), method, run_dir, dataset=dataset)
        p = throughput.throughput(
            throughput.make_workload(dataset, widths, runs / cont), out, label=label,
            continuous_name=bits.table2_row(cont)[0], threads=ns.threads, repeats=ns.repeats,
            ef_values=ns.ef_search, nsg_values=ns.nsg_search_l, candidate_values=ns.hies_candidates,
            throughputs=ns.throughputs, seed=ns.seed, name=f"throughput_{label}")
        sections["throughput"].append(p["markdown"] + f"\n![throughput {label}](throughput_{label}.png)\n")
        payloads["throughput"][label] = p


def run(ns: argparse.Namespace) -> int:
    # OpenMP's default busy-waiting makes faiss' timings swing 10x or more on a
    # shared machine; passive waiting keeps the comparison fair (set before any
    # OpenMP runtime starts; an explicit setting wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from . import accuracy, efficiency

    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    specs: List[str] = ns.data or ["ml-1m", "gowalla"]
    what = ALL if ns.what == "all" else (ns.what,)
    rows = accuracy.select_rows(accuracy.TABLE2_ROWS, ns.methods)
    sections: Dict[str, List[str]] = {w: [] for w in what}
    payloads: Dict[str, Dict[str, Any]] = {w: {} for w in what}
    workloads: List[Dict[str, Any]] = []
    for spec in specs:
        _per_data(ns, spec, what, out, rows, sections, payloads, workloads)
    if "table4" in what:
        if ns.alibaba_users > 0:
            workloads.extend(efficiency.alibaba_workloads(ns.bits, ns.alibaba_users, ns.seed,
                                                          n_items=ns.alibaba_items,
                                                          n_users=ns.alibaba_all_users or efficiency.ALIBABA_USERS,
                                                          all_users_mih=ns.alibaba_all_users is not None))
        efficiency.table4(workloads, out, nbits=ns.bits, threads=ns.threads, repeats=ns.repeats,
                          seed=ns.seed, extra_mih_m=ns.mih_m)
        log.info("table4 written")
    for w in what:
        if w == "table4":
            continue
        # A multi-seed or partial table2/fig3 was written under its own name (accuracy._output_name);
        # the summary pages table2.md / fig3.md are left to the full single-seed runs.
        if w in ("table2", "fig3") and any(p["name"] != f"{w}_{label}" for label, p in payloads[w].items()):
            continue
        # One page per command over all data sets; per-data files sit beside it.
        write_outputs(out, w, "\n".join(sections[w]), payloads[w])
    atomic_write_text(out / "README.md", "".join(
        f"- [{w}]({w}.md)\n" for w in COMMANDS if (out / f"{w}.md").exists()))
    return 0
