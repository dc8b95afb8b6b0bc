"""Table 2 (hierarchical search accuracy) and Figure 3 (Hamming ranking recall@n)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .common import (data_label, ensure_run, load_codes, machine_info, markdown_table, plot_lines, run_key,
                     write_outputs)

log = logging.getLogger(__name__)

# (row label, --method, --encoder); the paper's rows first, then ours.
TABLE2_ROWS = [
    ("LSH", "lsh", None),
    ("HashGNN_sp", "hashgnn_sp", None),
    ("Hash_gumb", "gumbel", None),
    ("Hash_ste", "ste", None),
    ("HashNet", "hashnet", None),
    ("HashGNN_nr", "hashgnn_nr", None),
    ("MF", "mf", None),
    ("GraphSAGE", "graphsage", None),
    ("HashGNN", "hashgnn", None),
    ("LightGCN", "lightgcn", None),
    ("HashGNN (LightGCN encoder)", "hashgnn", "lightgcn"),
]
CONTINUOUS_METHODS = {"mf", "graphsage", "lightgcn"}
TABLE2_METRICS = ("recall@50", "recall@100", "ndcg@50", "ndcg@100")
FIG3_NS = tuple(range(10, 101, 10))

PROTOCOL_NOTE = (
    "Our numbers: the data set's own train/valid/test split, training and validation items "
    "excluded from every ranking, Recall@n (the paper's HR@n) and NDCG@n with ideal DCG over "
    "min(#test items, n). The paper used a per-user 70/30 re-split and the official code's "
    "protocol, so its numbers are not directly comparable; `reproduce table2 --split paper` puts "
    "them beside runs on its split."
)


# The paper's Table 2 (Tan et al., WWW 2020): HieS HR@50 under the official code's protocol, for
# the rows with a counterpart here; keyed by data label and run key.
PAPER_HR50 = {
    "ml-1m": {"hashnet": 0.185, "hashgnn_nr": 0.223, "graphsage": 0.228, "hashgnn": 0.248},
    "gowalla": {"hashnet": 0.346, "hashgnn_nr": 0.378, "graphsage": 0.389, "hashgnn": 0.405},
}
PAPER_SOURCE = ("Paper: HashGNN's Table 2 (Tan et al., WWW 2020), HieS HR@50 on its own 70/30 split "
                "(its MovieLens is ml-1m); rows it does not report are left blank.")


def seed_run_dir(runs_dir: Path, key: str, seed: int, base_seed: int) -> Path:
    """Where a run of ``key`` trained with ``seed`` lives: ``runs_dir/key`` for the experiment's own
    seed (the run every other command uses), ``runs_dir/seed<s>/key`` for the extra seeds of
    ``--seeds``."""
    return runs_dir / key if seed == base_seed else runs_dir / f"seed{seed}" / key


def select_rows(rows, methods: Optional[Sequence[str]]):
    """The rows whose run key (``hashgnn``, ``hashgnn-lightgcn``, ...) is in ``methods``, in table
    order; all rows when ``methods`` is None. An unknown key raises ValueError naming the known ones."""
    if not methods:
        return list(rows)
    known = [run_key(m, e) for _, m, e in rows]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {known}")
    return [r for r in rows if run_key(r[1], r[2]) in methods]


def width_key(key: str, bits: int, base_bits: int) -> str:
    """The cache name of run ``key`` at code width ``bits``: ``key`` itself at the experiment's width
    (``--bits``: the run table2, fig3 and the others use), ``<key>_<bits>`` at any other width
    (``reproduce bits``), so the sweep and the tables share the run where their configs match."""
    return key if bits == base_bits else f"{key}_{bits}"


def train_all(base_cfg, runs_dir: Path, rows=TABLE2_ROWS, dataset=None,
              seeds: Optional[Sequence[int]] = None, bits: Optional[int] = None,
              train: bool = True) -> Dict[str, List[Optional[Dict[str, Any]]]]:
    """Train (or reuse) every row's run once per seed (default: the config's own seed), at code
    width ``bits`` (default: the config's; another width goes to :func:`width_key`'s directory).
    ``train`` False: cached runs only, None for a run that is not cached.

    Returns {run key: [metrics of each seed, in ``seeds`` order]}.
    """
    from tqdm import tqdm

    seeds = list(seeds) if seeds else [base_cfg.seed]
    width = base_cfg.bits if bits is None else bits
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    results: Dict[str, List[Dict[str, Any]]] = {}
    jobs = [(row, seed) for seed in seeds for row in rows]
    for (label, method, encoder), seed in tqdm(jobs, desc="runs", unit="run", disable=not base_cfg.progress):
        key = run_key(method, encoder)
        log.info("run: %s (%s), %d bits, seed %d", label, key, width, seed)
        # every seed trains on the experiment's split (the dataset given), and says so in its config
        cfg = replace(base_cfg, seed=seed, bits=width,
                      data_seed=None if seed == base_cfg.seed else base_cfg.split_seed)
        run_dir = seed_run_dir(runs_dir, width_key(key, width, base_cfg.bits), seed, base_cfg.seed)
        results.setdefault(key, []).append(ensure_run(cfg, method, run_dir, dataset=dataset, encoder=encoder,
                                                      train=train))
    return results


def _mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _cell(values: Sequence[float]) -> Any:
    """One seed: the value; several: "mean ± sd"."""
    if len(values) == 1:
        return float(values[0])
    mean, sd = _mean_sd(values)
    return f"{mean:.4f} ± {sd:.4f}"


def _seeds_text(seeds: Sequence[int]) -> str:
    return "seeds " + ", ".join(map(str, seeds))


def _output_name(name: str, seeds: Sequence[int], base_seed: int, rows, all_rows) -> str:
    """``name``, plus ``_seeds0-1-2`` for seeds other than the experiment's own and ``_<key>+<key>``
    for a subset of the rows, so a partial or multi-seed run never overwrites the full table."""
    if list(seeds) != [base_seed]:
        name += "_seeds" + "-".join(str(s) for s in seeds)
    if len(rows) < len(all_rows):
        name += "_" + "+".join(run_key(m, e) for _, m, e in rows)
    return name


def _epochs_cell(runs: Sequence[Dict[str, Any]]) -> Any:
    """Epochs each seed's run trained (its best epoch in brackets where validation stopped earlier)."""
    def one(m: Dict[str, Any]) -> str:
        ran, best = m.get("epochs_run"), m.get("best_epoch")
        return f"{ran}" if best is None or best < 0 or best == ran else f"{ran} ({best})"
    return ", ".join(one(m) for m in runs)


def _paper_scores(runs: Sequence[Dict[str, Any]], mode: str) -> Dict[str, List[float]]:
    """Each seed's HR@50 and NDCG@50 of ``mode`` under the paper's protocol (``--paper-protocol``)."""
    return {k: [m["paper_protocol"][mode][k] for m in runs] for k in ("recall@50", "ndcg@50")}


def _ordering(rows: Sequence[Dict[str, Any]], value) -> str:
    """The rows' labels from best to worst by ``value(row)``, joined by " > "."""
    return " > ".join(r["label"] for r in sorted(rows, key=value, reverse=True))


def _paper_note(rows: Sequence[Dict[str, Any]]) -> str:
    """The orderings of the rows the paper reports: the paper's, ours under its protocol and ours
    under the standard one, and how many of the paper's pairwise orderings each keeps."""
    both = [r for r in rows if r.get("paper_hr@50") is not None]
    views = {"ours, paper protocol": lambda r: r["paper_protocol"]["recall@50"],
             "ours, standard protocol (training items excluded)": lambda r: r["recall@50"]}
    pairs = [(a, b) for i, a in enumerate(both) for b in both[i + 1:]]
    lines = [PAPER_SOURCE, "", "Orderings by HR@50 (Recall@50) of the rows the paper reports:", "",
             f"- paper: {_ordering(both, lambda r: r['paper_hr@50'])}"]
    for name, value in views.items():
        kept = sum((value(a) - value(b)) * (a["paper_hr@50"] - b["paper_hr@50"]) > 0 for a, b in pairs)
        lines.append(f"- {name}: {_ordering(both, value)} ({kept} of the paper's {len(pairs)} pairwise orderings hold)")
    from ..evaluate import PAPER_PROTOCOL_NOTE
    return "\n".join(lines) + f"\n\nPaper protocol: {PAPER_PROTOCOL_NOTE}. The first columns are the standard " \
        "protocol on the same split: training and validation items excluded."


def table2(base_cfg, out: Path, runs_dir: Path, rows=TABLE2_ROWS, dataset=None, name: str = "table2",
           seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Writes ``table2.{md,json}``: HieS metrics for hashing methods, exact search for continuous ones.

    With several ``seeds`` every method is trained once per seed; a cell is "mean ± sd" over the
    seeds (sample sd), the best method and the gaps to the continuous models are by the means, and a
    second table gives each seed's Recall@50 and its best hashing method.
    """
    seeds = list(seeds) if seeds else [base_cfg.seed]
    results = train_all(base_cfg, runs_dir, rows, dataset, seeds)
    paper_hr50 = PAPER_HR50.get(data_label(base_cfg.data), {})
    table_rows: List[List[Any]] = []
    payload_rows = []
    for label, method, encoder in rows:
        runs = results[run_key(method, encoder)]
        mode = "continuous" if method in CONTINUOUS_METHODS else "hies"
        per_seed = {k: [m[mode][k] for m in runs] for k in TABLE2_METRICS}
        train_s = [m["train_seconds"] for m in runs]
        paper = _paper_scores(runs, mode) if base_cfg.paper_protocol else {}
        paper_hr = paper_hr50.get(run_key(method, encoder))
        table_rows.append([label, mode] + [_cell(per_seed[k]) for k in TABLE2_METRICS]
                          + [f"{np.mean(train_s):.1f}", _epochs_cell(runs)]
                          + ([_cell(v) for v in paper.values()] + [paper_hr] if paper else []))
        row = {"label": label, "method": method, "encoder": encoder, "mode": mode,
               **{k: _mean_sd(v)[0] for k, v in per_seed.items()}, "train_seconds": float(np.mean(train_s)),
               "epochs_run": runs[0].get("epochs_run") if len(runs) == 1 else [m.get("epochs_run") for m in runs],
               "hamr": runs[0].get("hamr") if len(runs) == 1 else [m.get("hamr") for m in runs]}
        if paper:
            row["paper_protocol"] = {k: _mean_sd(v)[0] for k, v in paper.items()}
            row["paper_hr@50"] = paper_hr
        if len(seeds) > 1:
            row["seeds"] = seeds
            row["per_seed"] = per_seed
            row["sd"] = {k: _mean_sd(v)[1] for k, v in per_seed.items()}
        payload_rows.append(row)
    hashing = [r for r in payload_rows if r["method"] not in CONTINUOUS_METHODS]
    best = max(hashing, key=lambda r: r["recall@50"]) if hashing else None
    gaps = {}
    ref = next((r for r in payload_rows if r["method"] == "hashgnn" and r["encoder"] is None), None)
    for cont in ("graphsage", "lightgcn"):
        c = next((r for r in payload_rows if r["method"] == cont), None)
        if ref and c and c["recall@50"] > 0:
            gaps[cont] = {"recall@50_ratio": ref["recall@50"] / c["recall@50"],
                          "recall@50_diff": ref["recall@50"] - c["recall@50"]}
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± sd over {_seeds_text(seeds)}"
    headers = ["method", "search"] + list(TABLE2_METRICS) + ["train s", "epochs"]
    if base_cfg.paper_protocol:
        headers += ["paper protocol HR@50", "paper protocol NDCG@50", "paper's HR@50"]
        seed_text += ", the paper's per-user 70/30 split"
    md = [f"# Table 2: hierarchical search (HieS), {base_cfg.data}, {base_cfg.bits} bits, {seed_text}\n",
          markdown_table(headers, table_rows)]
    if best:
        md.append(f"\nBest hashing method by {'mean ' if len(seeds) > 1 else ''}Recall@50: "
                  f"**{best['label']}** ({best['recall@50']:.4f}).\n")
    best_per_seed = []
    if len(seeds) > 1:
        for i, seed in enumerate(seeds):
            top = max(hashing, key=lambda r: r["per_seed"]["recall@50"][i]) if hashing else None
            best_per_seed.append(top["label"] if top else None)
        md.append("\nRecall@50 per seed:\n\n" + markdown_table(
            ["method"] + [f"seed {s}" for s in seeds] + ["mean", "sd"],
            [[r["label"]] + r["per_seed"]["recall@50"] + [r["recall@50"], r["sd"]["recall@50"]]
             for r in payload_rows]))
        md.append("\nBest hashing method per seed: "
                  + ", ".join(f"seed {s}: {b}" for s, b in zip(seeds, best_per_seed)) + ".\n")
    for cont, g in gaps.items():
        md.append(f"HashGNN vs continuous {cont}: Recall@50 {g['recall@50_diff']:+.4f} "
                  f"({100 * g['recall@50_ratio']:.1f}% of it).\n")
    md.append(f"\n{_paper_note(payload_rows) if base_cfg.paper_protocol else PROTOCOL_NOTE}\n")
    payload = {"data": base_cfg.data, "bits": base_cfg.bits, "seed": base_cfg.seed, "seeds": seeds,
               "rows": payload_rows, "best_hashing_method": best["label"] if best else None,
               "best_hashing_method_per_seed": best_per_seed or None, "gap_to_continuous": gaps,
               "protocol": PROTOCOL_NOTE, "config": base_cfg.to_dict(), "machine": machine_info(base_cfg.threads)}
    payload["markdown"] = "".join(md)
    payload["name"] = _output_name(name, seeds, base_cfg.seed, rows, TABLE2_ROWS)
    write_outputs(out, payload["name"], payload["markdown"], payload)
    return payload


def hamr_recall_curve(run_dir: Path, dataset, ns: Sequence[int] = FIG3_NS, num_threads: int = 0) -> Dict[int, float]:
    """Recall@n of Hamming ranking (training and validation items excluded) for each n."""
    from ..evaluate import topk_lists
    from ..metrics import hit_matrix

    emb = load_codes(run_dir)
    truth = dataset.csr("test")
    n_true = np.diff(truth.indptr)
    users = np.flatnonzero(n_true > 0).astype(np.int64)
    top = topk_lists("hamr", emb, users, max(ns), dataset.csr("train", "valid"), num_threads=num_threads)
    hits = np.cumsum(hit_matrix(top, users, truth), axis=1)
    return {n: float((hits[:, n - 1] / n_true[users]).mean()) for n in ns}


def fig3(base_cfg, out: Path, runs_dir: Path, dataset, rows=TABLE2_ROWS, name: str = "fig3",
         seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Writes ``fig3.{md,json,png}``: HamR Recall@n, n = 10…100, for every hashing method (with
    several ``seeds``: the mean curve over the seeds, and each seed's curve in the JSON)."""
    seeds = list(seeds) if seeds else [base_cfg.seed]
    hashing_rows = [r for r in rows if r[1] not in CONTINUOUS_METHODS]
    train_all(base_cfg, runs_dir, hashing_rows, dataset, seeds)
    per_seed = {label: [hamr_recall_curve(seed_run_dir(runs_dir, run_key(m, e), s, base_cfg.seed), dataset,
                                          num_threads=base_cfg.threads) for s in seeds]
                for label, m, e in hashing_rows}
    curves = {label: {n: _mean_sd([c[n] for c in cs])[0] for n in FIG3_NS} for label, cs in per_seed.items()}
    table = [[label] + [_cell([c[n] for c in per_seed[label]]) for n in FIG3_NS] for label in curves]
    seed_text = "" if len(seeds) == 1 else f", mean ± sd over {_seeds_text(seeds)}"
    md = (f"# Figure 3: Hamming ranking (HamR) Recall@n, {base_cfg.data}, {base_cfg.bits} bits{seed_text}\n\n"
          + markdown_table(["method"] + [f"@{n}" for n in FIG3_NS], table) + f"\n{PROTOCOL_NOTE}\n")
    name = _output_name(name, seeds, base_cfg.seed, hashing_rows, [r for r in TABLE2_ROWS if r[1] not in CONTINUOUS_METHODS])
    plot_seeds = "" if len(seeds) == 1 else f", mean over {_seeds_text(seeds)}"
    plot_lines(out / f"{name}.png", curves, f"HamR on {base_cfg.data} ({base_cfg.bits} bits{plot_seeds})",
               xlabel="n", ylabel="Recall@n", highlight=lambda label: label == "HashGNN")
    payload = {"data": base_cfg.data, "bits": base_cfg.bits, "seed": base_cfg.seed, "seeds": seeds,
               "ns": list(FIG3_NS), "recall": curves, "config": base_cfg.to_dict(),
               "machine": machine_info(base_cfg.threads)}
    if len(seeds) > 1:
        payload["recall_per_seed"] = per_seed
    payload["markdown"] = md
    payload["name"] = name
    write_outputs(out, name, md, payload)
    return payload

