"""How many items MIH must read to prove the k-th distance, with the index's key-bit rings (its
directories of <= 2^17-2^18 buckets), with rings on the full substrings (2^21-2^22 buckets), and with
the index's own layout (key rings, and key + sub-key rings inside the buckets that have a
sub-directory): for each query the least sum over tables of the items within radius r_j, over the
radius profiles with sum_j (r_j + 1) > d_k (the pigeonhole bound MIH stops at). An analysis, not a
benchmark:

    PYTHONPATH=. python benchmarks/mih_reads.py [n_items] [queries]

4,167,708 learned-like 64-bit items, 40 queries, k=100: key rings (17 of 21-22 bits)
41,478 items per query (median 22,216), full-substring rings 6,336 (median 3,595): 6.5x fewer.
The index's own layout (sub-directories, uint8/uint16 ends, for the buckets of >= 27 / 27 / 32
items: the 2.6 MB that twice the codes leave): 11,630 (median 5,175), 3.5x fewer than key rings; the
search itself read 11,012 per query over 1,000 queries. (uint16 ends only, buckets of >= 49 / 49 / 64
items: 16,574.) Time per query is bound by cache misses, not reads: see docs/RESULTS.md.
"""
import itertools
import sys

import numpy as np

import hashsearch
from train.reproduce.efficiency import learned_like

POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcnt(a: np.ndarray) -> np.ndarray:
    """Bits set in each uint64 of a, as uint8."""
    c = np.zeros(a.shape, np.uint8)
    for s in range(0, 64, 8):
        c += POP8[((a >> np.uint64(s)) & np.uint64(255)).astype(np.uint8)]
    return c


n_items = int(sys.argv[1]) if len(sys.argv) > 1 else 4_167_708
nq = int(sys.argv[2]) if len(sys.argv) > 2 else 40
d = learned_like(nq, n_items, 64, seed=0)
items, users = d["item_codes"], d["user_codes"]
mih = hashsearch.MIHIndex(items)
print("substring bits", mih.substring_bits, "key bits", mih.key_bits)
D, _ = hashsearch.Index(items).topk(users, 100)
x = items[:, 0]
starts = np.cumsum([0] + list(mih.substring_bits))[:-1]
# per table, the size of each item's bucket, and whether that bucket has a sub-directory
crowded = []
for j, st in enumerate(starts):
    key = ((x >> np.uint64(st)) & np.uint64((1 << mih.key_bits[j]) - 1)).astype(np.int64)
    size = np.bincount(key, minlength=1 << mih.key_bits[j])[key]
    smin = mih.sub_min_items[j]
    crowded.append((smin > 0) & (size >= max(smin, 1)) & (size < 1 << 16))
print("sub bits", mih.sub_bits, "sub-directories for buckets of >=", mih.sub_min_items, "items,",
      mih.sub_dir_bytes(), "bytes")
res = {"key": [], "full": [], "index": []}
for q in range(nq):
    diff = x ^ users[q, 0]
    dk = int(D[q, -1])
    for kind in res:
        hists = []
        for j, st in enumerate(starts):
            kb = mih.key_bits[j]
            b = kb if kind == "key" else mih.substring_bits[j] if kind == "full" else kb + mih.sub_bits[j]
            ring = popcnt((diff >> np.uint64(st)) & np.uint64((1 << b) - 1))
            if kind == "index":  # buckets without a sub-directory are read at their key distance
                ring = np.where(crowded[j], ring, popcnt((diff >> np.uint64(st)) & np.uint64((1 << kb) - 1)))
            h = np.bincount(ring, minlength=b + 1).cumsum()
            hists.append(h)
        best = None
        m = len(starts)
        for rs in itertools.product(range(dk + 1), repeat=m):
            if sum(r + 1 for r in rs) <= dk:
                continue
            if sum(r + 1 for r in rs) > dk + m:  # no need to overshoot
                continue
            c = sum(int(hists[j][min(rs[j], len(hists[j]) - 1)]) for j in range(m))
            best = c if best is None or c < best else best
        res[kind].append(best)
    if q % 10 == 0:
        print(q, dk, res["key"][-1], res["full"][-1], res["index"][-1], flush=True)
for kind in res:
    print(kind, "mean items read per query", np.mean(res[kind]), "median", np.median(res[kind]))
print("ratio key/full", np.mean(res["key"]) / np.mean(res["full"]),
      "key/index", np.mean(res["key"]) / np.mean(res["index"]))
