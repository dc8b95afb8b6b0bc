"""Seeded synthetic interaction graphs: a latent-factor (topic) model with power-law degrees.

Model: item i has a topic t_i and a Zipf popularity b_i; user u has a Zipf
activity a_u and a preference over two topics (weights w_u, 1-w_u). An edge
draws u ∝ a_u, then a topic (one of u's two with prob. 1-noise, else any topic
by mass), then an item of that topic ∝ b_i. So P(i | u) ∝ b_i Σ_t θ_ut [t_i = t],
a non-negative rank-``topics`` factorisation; degrees of both sides follow the
Zipf weights (power laws). Everything is vectorised (sorts and searchsorted in
chunks), so 100M edges over millions of nodes fit in a few minutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .dataset import Pairs, unique_sorted

_CHUNK = 8_000_000  # edges drawn per vectorised step (bounds the temporaries)


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of :func:`generate` (parsed from ``synthetic:users=…,items=…,edges=…``)."""

    users: int = 2000
    items: int = 3000
    edges: int = 60000
    topics: Optional[int] = None  # default: about sqrt(items)/2, within [4, 1024]
    user_zipf: float = 0.6
    item_zipf: float = 0.8
    noise: float = 0.1
    seed: int = 0

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> "SyntheticSpec":
        """Parse ``synthetic:users=1000,items=2000,edges=50000[,topics=..,seed=..]``."""
        body = text.split(":", 1)[1] if text.startswith("synthetic") and ":" in text else ""
        kw: Dict[str, object] = {"seed": seed}
        for part in filter(None, (p.strip() for p in body.split(","))):
            if "=" not in part:
                raise ValueError(f"bad synthetic spec part {part!r} in {text!r} (want key=value)")
            key, val = (s.strip() for s in part.split("=", 1))
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown synthetic parameter {key!r} in {text!r}")
            num = float(val.replace("_", ""))
            kw[key] = num if key in ("user_zipf", "item_zipf", "noise") else int(num)
        spec = cls(**kw)  # type: ignore[arg-type]
        if spec.users < 1 or spec.items < 1 or spec.edges < 1:
            raise ValueError(f"synthetic sizes must be positive: {spec}")
        if spec.edges > spec.users * spec.items:
            raise ValueError(f"{spec.edges} edges cannot fit in {spec.users} x {spec.items}")
        return spec


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Weights (rank+1)^-s assigned to a random permutation of n ids; float64 (n,)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** (-s)
    return w[rng.permutation(n)]


def _merge_distinct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two sorted, distinct int64 arrays. numpy's stable sort
    (timsort) merges the two runs in linear time, where a fresh sort of the whole would not."""
    merged = np.sort(np.concatenate([a, b]), kind="stable")
    if merged.shape[0] == 0:
        return merged
    return merged[np.concatenate([[True], merged[1:] != merged[:-1]])]


def generate(spec: SyntheticSpec) -> Pairs:
    """Draw ``spec.edges`` distinct (user, item) pairs.

    Returns:
        :class:`Pairs` of int64 arrays (nnz = spec.edges), ids in [0, users) and [0, items),
        sorted by (user, item).
    """
    rng = np.random.default_rng(spec.seed)
    nu, ni = spec.users, spec.items
    n_topics = spec.topics or int(np.clip(round(np.sqrt(ni) / 2), 4, 1024))
    n_topics = min(n_topics, ni)

    user_cum = np.cumsum(_zipf_weights(nu, spec.user_zipf, rng))
    item_w = _zipf_weights(ni, spec.item_zipf, rng)
    item_topic = rng.integers(0, n_topics, ni)
    by_topic = np.argsort(item_topic, kind="stable")  # sorted position -> item id
    item_cum = np.cumsum(item_w[by_topic])
    topic_end = np.searchsorted(item_topic[by_topic], np.arange(n_topics), side="right")
    topic_begin = np.concatenate([[0], topic_end[:-1]])
    mass_before = np.where(topic_begin > 0, item_cum[np.maximum(topic_begin - 1, 0)], 0.0)
    topic_mass = item_cum[np.maximum(topic_end - 1, 0)] - mass_before
    topic_cum = np.cumsum(topic_mass)

    # Two preferred topics per user; an empty topic (possible when items < topics) is never drawn.
    nonempty = np.flatnonzero(topic_mass > 0)
    pref = nonempty[rng.integers(0, nonempty.shape[0], (nu, 2))]
    pref_w = rng.beta(2.0, 2.0, nu)

    def draw(m: int) -> np.ndarray:
        u = np.minimum(np.searchsorted(user_cum, rng.random(m) * user_cum[-1], side="right"), nu - 1)
        topic = np.where(rng.random(m) < pref_w[u], pref[u, 0], pref[u, 1])
        noisy = rng.random(m) < spec.noise
        topic[noisy] = np.minimum(
            np.searchsorted(topic_cum, rng.random(int(noisy.sum())) * topic_cum[-1], side="right"), n_topics - 1
        )
        r = mass_before[topic] + rng.random(m) * topic_mass[topic]
        pos = np.searchsorted(item_cum, r, side="right")
        pos = np.clip(pos, topic_begin[topic], topic_end[topic] - 1)
        return u.astype(np.int64) * ni + by_topic[pos]

    keys = np.zeros(0, np.int64)
    for _ in range(50):  # top up until enough distinct pairs (popular pairs collide)
        need = spec.edges - keys.shape[0]
        if need <= 0:
            break
        want = int(need * 1.1) + 16
        parts = [draw(min(_CHUNK, want - s)) for s in range(0, want, _CHUNK)]
        keys = _merge_distinct(keys, unique_sorted(np.concatenate(parts)))
    if keys.shape[0] < spec.edges:
        raise ValueError(f"could not draw {spec.edges} distinct edges (got {keys.shape[0]}); graph too dense")
    if keys.shape[0] > spec.edges:
        keep = np.sort(rng.choice(keys.shape[0], spec.edges, replace=False))
        keys = keys[keep]
    return Pairs(keys // ni, keys % ni)
