"""A/B timing of two builds of hashsearch's native core on the engine's searches.

Each build is a source tree with its extension built in place (``python setup.py
build_ext --inplace``), e.g. a ``git worktree`` of an earlier commit and the working
tree. Index (scan), MIHIndex and ClusterIndex top-k (k=100) on learned-like and
uniform codes of 64 and 256 bits (the scan also 32 and 128), as batches and as single queries, are timed in a
fresh process per build; the builds alternate, round after round, so that load on a
shared machine falls on both alike. Prints per case the median seconds of each build
and the ratio new/old (< 1: the new build is faster), and checks both builds return
the same rows.

    python benchmarks/ab_native.py OLD_TREE NEW_TREE [--rounds 5] [--threads 1] [--level avx2]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
K = 100
N_ITEMS = 200_000
N_BATCH = 1_000
N_SINGLE = 200
# (index, bits, code distribution, how queries come): the cases timed.
# "mih-tables": MIHIndex with its scan fallback off, so that every query goes through
# the tables (one query at a time, or joined in batches of 64-bit codes).
CASES = [
    (index, nbits, dist, mode)
    for index in ("scan", "mih", "mih-tables", "cluster")
    for nbits in (32, 64, 128, 256)
    for dist in ("learned", "uniform")
    for mode in ("batch", "single")
    if (nbits in (64, 256) or index == "scan")
    and not (index in ("cluster", "mih-tables") and dist == "uniform" and mode == "single")
    and not (index == "mih-tables" and (dist == "uniform" or (nbits == 256 and mode == "batch")))
]


def _child(tree: str, threads: int, reps: int) -> None:
    """Times every case with the build in `tree`; prints {case: [median s, digest]} as JSON."""
    sys.path.insert(0, tree)
    sys.path.insert(1, HERE)
    import numpy as np

    import hashsearch

    assert os.path.realpath(hashsearch.__file__).startswith(os.path.realpath(tree)), hashsearch.__file__
    import data

    out: Dict[str, list] = {}
    built: Dict[tuple, object] = {}
    only = os.environ.get("AB_CASES", "")
    for index, nbits, dist, mode in CASES:
        if only not in f"{index}/{nbits}/{dist}/{mode}":
            continue
        items = data.codes(N_ITEMS, nbits, dist, "items")
        queries = data.codes(N_BATCH, nbits, dist, "users")
        key = (index, nbits, dist)
        if key not in built:
            if index == "scan":
                built[key] = hashsearch.Index(items, nbits, num_threads=threads)
            elif index.startswith("mih"):
                built[key] = hashsearch.MIHIndex(items, nbits, num_threads=threads)
                if index == "mih-tables":
                    built[key]._native._set_scan_fallback(False)
            else:
                built[key] = hashsearch.ClusterIndex(items, nbits, num_threads=threads)
        idx = built[key]
        if mode == "batch":
            run = lambda: idx.topk(queries, K)  # noqa: E731
        else:
            run = lambda: [idx.topk(queries[i : i + 1], K) for i in range(N_SINGLE)]  # noqa: E731
        result = run()  # warm-up (and MIH's batch timing), and the rows to compare
        times: List[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        rows = result if mode == "batch" else (np.concatenate([d for d, _ in result]), np.concatenate([i for _, i in result]))
        digest = hashlib.sha1(np.ascontiguousarray(rows[0]).tobytes() + np.ascontiguousarray(rows[1]).tobytes()).hexdigest()
        out[f"{index}/{nbits}/{dist}/{mode}"] = [statistics.median(times), digest]
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="source tree of the old build")
    ap.add_argument("new", help="source tree of the new build")
    ap.add_argument("--rounds", type=int, default=5, help="old/new process pairs (default 5)")
    ap.add_argument("--reps", type=int, default=3, help="timings per case in a process (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="search threads (default 1)")
    ap.add_argument("--level", default="", help="SIMD level of both builds (HASHSEARCH_SIMD; default: the best)")
    ap.add_argument("--cases", default="", help="only the cases whose name contains this (e.g. 'mih/64')")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.old, args.threads, args.reps)
    runs: Dict[str, List[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            tree = getattr(args, name)
            cmd = [sys.executable, __file__, tree, tree, "--child", "--reps", str(args.reps), "--threads", str(args.threads)]
            env = dict(os.environ, HASHSEARCH_SIMD=args.level, AB_CASES=args.cases)
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree, env=env)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{'case':32s} {'old s':>9s} {'new s':>9s} {'new/old':>8s}  rows")
    ratios = []
    for case in runs["old"][0]:
        old = statistics.median(run[case][0] for run in runs["old"])
        new = statistics.median(run[case][0] for run in runs["new"])
        same = {run[case][1] for run in runs["old"] + runs["new"]}
        ratios.append(new / old)
        print(f"{case:32s} {old:9.4f} {new:9.4f} {new / old:8.3f}  {'same' if len(same) == 1 else 'DIFFER'}")
    print(f"median ratio new/old over {len(ratios)} cases: {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
