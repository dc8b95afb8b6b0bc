"""Encoders (GraphSAGE-mean, LightGCN, MF) and the hash head.

An encoder maps the whole graph to node embeddings (N, d) float32, users first;
the hash head maps embeddings to K relaxed bits.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .graph import BipartiteCSR, EdgeDropout, csr_mm, spmm
from .sampling import Block
from .hashing import gumbel_bits, guided_ste, hard_sign, sign_ste


def aggregate(h: torch.Tensor, blk: Block) -> torch.Tensor:
    """A block's weighted sum of its input rows ``h`` (n_src, d) into its output rows: (n_dst, d),
    a sparse product whose backward uses the block's prebuilt transpose."""
    return spmm(blk.adj, h, blk.adj_t)


class _SAGEBlockLayer(torch.autograd.Function):
    """One GraphSAGE layer on a block, ``W_self h[:n_dst] + W_neigh (A h) + b``, with a hand-written
    backward: the input's gradient is one sparse product ``Aᵀ g_agg`` plus the self term added in
    place, where autograd would zero-fill and sum two input-sized gradients (a slice's and the
    product's). On multi-million-row blocks those passes were a third of a step.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, adj: torch.Tensor,
                adj_t: torch.Tensor, n_dst: int) -> torch.Tensor:  # type: ignore[override]
        d = h.shape[1]
        w_self, w_neigh = weight[:, :d], weight[:, d:]
        agg = csr_mm(adj, h)
        out = torch.addmm(bias, h[:n_dst], w_self.t()).addmm_(agg, w_neigh.t())
        ctx.save_for_backward(h, weight, agg)
        ctx.adj_t, ctx.n_dst = adj_t, n_dst
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        h, weight, agg = ctx.saved_tensors
        d, n_dst = h.shape[1], ctx.n_dst
        g_weight = torch.cat([g.t() @ h[:n_dst], g.t() @ agg], dim=1)
        g_h = None
        if ctx.needs_input_grad[0]:
            g_h = csr_mm(ctx.adj_t, g @ weight[:, d:])
            g_h[:n_dst].addmm_(g, weight[:, :d])
        return g_h, g_weight, g.sum(0), None, None, None


class Encoder(nn.Module):
    """Base class: ``forward() -> (N, out_dim)`` over the whole graph; ``base`` is the ID-embedding
    table (N, in_dim).

    Mini-batch training uses ``forward_blocks(x0, blocks)``: the outputs (n_seeds, out_dim) of a
    sampled computation graph whose first layer reads the rows ``x0`` = base[blocks[0].src];
    ``sampled_layers`` blocks are needed (0: the encoder ignores the graph). ``inference(graph)``
    computes all nodes' outputs layer by layer over full neighbourhoods, in bounded memory.
    """

    out_dim: int
    base: nn.Embedding
    sampled_layers: int = 0

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_blocks(self, x0: torch.Tensor, blocks: List[Block]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def inference(self, graph: BipartiteCSR) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TableEncoder(Encoder):
    """An encoder without graph layers: its outputs are the rows of its table ``base``."""

    def forward(self) -> torch.Tensor:
        return self.base.weight

    def forward_blocks(self, x0: torch.Tensor, blocks: List[Block]) -> torch.Tensor:
        return x0

    @torch.no_grad()
    def inference(self, graph: BipartiteCSR) -> torch.Tensor:
        return self.base.weight.detach()


class MFEncoder(TableEncoder):
    """Matrix factorisation: the embedding table itself."""

    def __init__(self, n_nodes: int, dim: int) -> None:
        super().__init__()
        self.base = nn.Embedding(n_nodes, dim)
        nn.init.normal_(self.base.weight, std=0.1)
        self.out_dim = dim


class LightGCNEncoder(Encoder):
    """LightGCN: ``mean(E0, Â E0, …, Â^L E0)`` with Â the symmetric-normalised adjacency.

    ``edge_dropout`` (an :class:`EdgeDropout`): in training mode each forward propagates over a fresh
    random subgraph instead (renormalised); evaluation always uses the full graph.
    """

    def __init__(self, n_nodes: int, dim: int, adj: Optional[torch.Tensor], layers: int = 3,
                 edge_dropout: Optional[EdgeDropout] = None) -> None:
        """``adj``: the (N, N) normalised adjacency for whole-graph forwards (None in mini-batch
        training, whose forwards take sampled blocks)."""
        super().__init__()
        self.base = nn.Embedding(n_nodes, dim)
        nn.init.normal_(self.base.weight, std=0.1)
        self.adj = adj
        self.layers = layers
        self.out_dim = dim
        self.edge_dropout = edge_dropout

    def forward(self) -> torch.Tensor:
        x = self.base.weight
        acc = x
        adj = self.adj
        if self.training and self.edge_dropout is not None and self.edge_dropout.p > 0:
            adj = self.edge_dropout.sample()
        for _ in range(self.layers):
            x = spmm(adj, x)
            acc = acc + x
        return acc / (self.layers + 1)

    @property
    def sampled_layers(self) -> int:  # type: ignore[override]
        return self.layers

    def forward_blocks(self, x0: torch.Tensor, blocks: List[Block]) -> torch.Tensor:
        """Sampled propagation (blocks weighted by :class:`~train.sampling.NeighborSampler` with
        ``norm="sym"``: an unbiased estimate of Â's rows), averaged over the layers as forward()."""
        n_out = blocks[-1].n_dst
        x, acc = x0, x0[:n_out]
        for blk in blocks:
            x = aggregate(x, blk)
            acc = acc + x[:n_out]
        return acc / (self.layers + 1)

    @torch.no_grad()
    def inference(self, graph: BipartiteCSR) -> torch.Tensor:
        x = self.base.weight.detach()
        acc = x.clone()
        for _ in range(self.layers):
            x = graph.propagate(x, "sym")
            acc += x
        return acc / (self.layers + 1)


class SAGEEncoder(Encoder):
    """GraphSAGE with mean aggregation over the full graph:
    ``h^k = act(W_k [h^{k-1} ‖ mean_{u∈N(v)} h_u^{k-1}])`` (ReLU between layers, none after the last).
    """

    def __init__(
        self, n_nodes: int, in_dim: int, dims: Sequence[int], mean: torch.Tensor, mean_t: torch.Tensor
    ) -> None:
        super().__init__()
        self.base = nn.Embedding(n_nodes, in_dim)
        nn.init.normal_(self.base.weight, std=0.1)
        self.mean, self.mean_t = mean, mean_t
        sizes = [in_dim, *dims]
        self.lins = nn.ModuleList(nn.Linear(2 * a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out_dim = sizes[-1]

    def forward(self) -> torch.Tensor:
        h = self.base.weight
        for k, lin in enumerate(self.lins):
            agg = spmm(self.mean, h, self.mean_t)
            h = lin(torch.cat([h, agg], dim=1))
            if k < len(self.lins) - 1:
                h = torch.relu(h)
        return h

    @property
    def sampled_layers(self) -> int:  # type: ignore[override]
        return len(self.lins)

    def forward_blocks(self, x0: torch.Tensor, blocks: List[Block]) -> torch.Tensor:
        h = x0
        for k, (blk, lin) in enumerate(zip(blocks, self.lins)):
            h = _SAGEBlockLayer.apply(h, lin.weight, lin.bias, blk.adj, blk.adj_t, blk.n_dst)
            if k < len(self.lins) - 1:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def inference(self, graph: BipartiteCSR, chunk: int = 262_144) -> torch.Tensor:
        h = self.base.weight.detach()
        for k, lin in enumerate(self.lins):
            out = torch.empty(h.shape[0], lin.out_features, dtype=h.dtype, device=h.device)
            for s in range(0, h.shape[0], chunk):
                e = min(h.shape[0], s + chunk)
                out[s:e] = lin(torch.cat([h[s:e], graph.propagate_rows(s, e, h, "mean")], dim=1))
                if k < len(self.lins) - 1:
                    out[s:e].relu_()
            h = out
        return h


class TeacherEncoder(TableEncoder):
    """A trained model's embeddings (N, d) float32, users first, frozen: the input of the ``distill``
    hash head, and what its HieS re-ranks by. :meth:`rows` gives the head's input, each side divided
    by its mean row norm, so that the head's tanh starts unsaturated whatever the teacher's scale
    (a softmax teacher's users are u/τ)."""

    def __init__(self, emb: torch.Tensor, n_users: int) -> None:
        super().__init__()
        self.base = nn.Embedding.from_pretrained(emb, freeze=True)
        norms = emb.norm(dim=1)
        scale = torch.empty(emb.shape[0], 1, dtype=emb.dtype)
        for side in (slice(0, n_users), slice(n_users, None)):
            scale[side] = 1.0 / norms[side].mean().clamp_min(1e-12) if norms[side].numel() else 1.0
        self.register_buffer("scale", scale)
        self.out_dim = emb.shape[1]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The hash head's input rows (len(ids), d) of node ids (int64, users first)."""
        return self.base.weight.index_select(0, ids) * self.scale.index_select(0, ids)

    def scaled(self) -> torch.Tensor:
        """The hash head's input (N, d) of every node."""
        return self.base.weight * self.scale


class HashHead(nn.Module):
    """``a = W e + b``, ``z = tanh(a)``, codes ``sign(z)``; ``relax`` gives the training-time code.

    kind: ``guided`` (HashGNN), ``ste``, ``hashnet``, ``gumbel`` or ``tanh`` (no binarisation).
    """

    def __init__(self, in_dim: int, bits: int, kind: str, n_users: Optional[int] = None) -> None:
        """``n_users``: given, users and items get separate hash layers (as in the official
        HashGNN code); rows of a whole node matrix are then users first, then items."""
        super().__init__()
        self.lin = nn.Linear(in_dim, bits)
        self.item_lin = nn.Linear(in_dim, bits) if n_users is not None else None
        self.n_users = n_users
        self.kind = kind

    def pre(self, e: torch.Tensor, side: str = "all", n_user_rows: Optional[int] = None) -> torch.Tensor:
        """``W e + b`` (n, K) of embeddings e (n, d); ``side``: ``user``, ``item`` or ``all`` (rows
        users first: a whole node matrix, or its first ``n_user_rows`` rows are users), which picks
        the layer when users and items have their own."""
        if self.item_lin is None or side == "user":
            return self.lin(e)
        if side == "item":
            return self.item_lin(e)
        if side != "all":
            raise ValueError(f"side must be user, item or all, got {side!r}")
        nu = self.n_users if n_user_rows is None else n_user_rows
        return torch.cat([self.lin(e[:nu]), self.item_lin(e[nu:])])

    def z(self, e: torch.Tensor, beta: float = 1.0, side: str = "all") -> torch.Tensor:
        """The continuous code ``tanh(β a)`` (n, K) of embeddings e (n, d); β > 1 only under a
        continuation (HashNet's, or the guided head's with ``guided_gamma``)."""
        return torch.tanh(beta * self.pre(e, side))

    def relax(self, e: torch.Tensor, *, beta: float = 1.0, side: str = "all", **kw: Any) -> torch.Tensor:
        """Training-time code (n, K) of embeddings e (n, d): :meth:`relax_from` on their ``a`` and
        ``z``. β applies to the heads with a continuation (guided, hashnet); the others read tanh(a)."""
        a = self.pre(e, side)
        z = torch.tanh((beta if self.kind in ("guided", "hashnet") else 1.0) * a)
        return self.relax_from(z, a, **kw)

    def relax_from(self, z: torch.Tensor, a: Optional[torch.Tensor] = None, *, p: float = 0.0,
                   tau: float = 1.0, generator: Optional[torch.Generator] = None,
                   q: Optional[torch.Tensor] = None, q_rows: bool = False,
                   code_scale: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
        """Training-time code (..., K) from continuous codes ``z = tanh(β a)`` and, for ``gumbel``
        only, the pre-activations ``a`` (same shape). ``q``/``q_rows``: the guided mask,
        ``code_scale``: magnitude of the binary codes of ``guided``/``ste`` (see guided_ste)."""
        if self.kind == "guided":
            return guided_ste(z, p, generator, q=q, rows=q_rows, scale=code_scale)
        if self.kind == "ste":
            return code_scale * sign_ste(z)
        if self.kind in ("hashnet", "tanh"):
            return z
        if self.kind == "gumbel":
            if a is None:
                raise ValueError("the gumbel head needs the pre-activations a")
            return gumbel_bits(a, tau, generator)
        raise ValueError(f"unknown hash head kind {self.kind!r}")

    @torch.no_grad()
    def continuous(self, e: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """The continuous code used for HieS re-ranking of a node matrix: ``z(e, β)`` (the trainer
        passes β = 1 for heads without a continuation)."""
        return self.z(e, beta)

    @torch.no_grad()
    def codes(self, e: torch.Tensor) -> torch.Tensor:
        """±1 float codes (n, K) of a node matrix: sign(a), sign(0) = +1."""
        return hard_sign(self.pre(e))


class HashModel(nn.Module):
    """An encoder plus an optional hash head (None for continuous methods)."""

    def __init__(self, encoder: Encoder, head: Optional[HashHead], n_users: int, n_items: int = 0,
                 item_bias: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.n_users = n_users
        # softmax loss: a learned per-item logit offset (scores cos/τ + b_i), None when off
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, d) node rows -> (users (n_users, d), items (n_items, d))."""
        return x[: self.n_users], x[self.n_users :]


def build_encoder(kind: str, n_nodes: int, emb_dim: int, *, sage_dims: List[int], layers: int,
                  sym_adj=None, mean=None, mean_t=None, edge_dropout=None) -> Encoder:
    """Factory for ``--encoder`` (sage, lightgcn, mf)."""
    if kind == "mf":
        return MFEncoder(n_nodes, emb_dim)
    if kind == "lightgcn":
        return LightGCNEncoder(n_nodes, emb_dim, sym_adj, layers, edge_dropout)
    if kind == "sage":
        return SAGEEncoder(n_nodes, emb_dim, sage_dims, mean, mean_t)
    raise ValueError(f"unknown encoder {kind!r} (sage, lightgcn, mf)")
