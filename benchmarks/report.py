"""Markdown table from a pytest-benchmark JSON file.

    pytest benchmarks/ --benchmark-only --benchmark-json out.json
    python benchmarks/report.py out.json

One row per benchmark: workload, engine, its peer, ours ms, peer ms and the
ratio (peer / ours; > 1 means hashsearch is faster, or for MIH, faster than our
linear scan; for Table 4 rows, the speed-up over CeS with faiss IndexFlatIP).
"ours" is always the hashsearch side: for a faiss or numpy benchmark the
hashsearch time is the one measured inside that test.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List


def _fmt(x, nd=1):
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def rows(doc: dict) -> List[List[str]]:
    out = []
    for b in doc.get("benchmarks", []):
        e = b.get("extra_info", {})
        med_ms = b["stats"]["median"] * 1e3
        engine = e.get("engine", b["name"])
        is_ours = str(engine).startswith("hashsearch") or engine in ("hies", "hamr_ours", "mih")
        workload = f"{e.get('workload', '?')} n={e.get('n', '?'):,} nq={e.get('nq', '?'):,} {e.get('nbits', '?')}b {e.get('dist', '')}"
        note = []
        if "table_over_codes" in e:
            note.append(f"m={e['m']} tables/codes={e['table_over_codes']} cand/q={e.get('candidates_per_query')}")
        if "faiss_dist_recall" in e:
            note.append(f"faiss exact rows={e['faiss_exact_rows']} dist-recall={e['faiss_dist_recall']}")
        if "recall_at_100_vs_ces" in e:
            note.append(f"recall@100 vs CeS={e['recall_at_100_vs_ces']}")
        if e.get("loadavg_1m") is not None:
            note.append(f"load {e['loadavg_1m']}")
        if "table4" in str(b.get("group", "")):
            ours_ms, peer_ms = med_ms, e.get("peer_ms")
        elif is_ours:
            ours_ms, peer_ms = med_ms, e.get("peer_ms")
        else:  # a faiss/numpy benchmark: its time is the peer; ours was timed inside
            ours_ms, peer_ms = e.get("ours_ms"), med_ms
        out.append([
            workload, str(engine), str(e.get("peer", "")), _fmt(ours_ms, 2), _fmt(peer_ms, 2),
            _fmt(e.get("ratio"), 2) + "×" if e.get("ratio") is not None else "", e.get("simd", ""),
            "; ".join(note),
        ])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="file written by --benchmark-json")
    args = ap.parse_args(argv)
    with open(args.json) as fh:
        doc = json.load(fh)
    m = doc.get("machine_info", {})
    print(f"Machine: {m.get('cpu', {}).get('brand_raw', m.get('processor', '?'))}, "
          f"{m.get('cpu', {}).get('count', '?')} CPUs, python {m.get('python_version', '?')}; "
          f"run {doc.get('datetime', '?')}\n")
    head = ["workload", "benchmark", "peer", "ours ms", "peer ms", "ratio (peer/ours)", "simd", "notes"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows(doc):
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
