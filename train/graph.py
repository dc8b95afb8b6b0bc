"""Sparse propagation matrices of the user-item bipartite graph (torch CSR, built from COO).

Node ids: users are ``0..n_users-1``, items are ``n_users..n_users+n_items-1``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def bipartite_coo(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> sp.coo_matrix:
    """Symmetric binary adjacency (N, N), N = n_users + n_items, of the distinct training pairs."""
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    a = sp.coo_matrix((np.ones(rows.shape[0], np.float32), (rows, cols)), shape=(n, n)).tocsr()
    a.sum_duplicates()
    a.data[:] = 1.0  # repeated interactions count once
    return a.tocoo()


def _to_torch_csr(m: sp.spmatrix, device: torch.device) -> torch.Tensor:
    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():  # "CSR support is in beta": it is what makes spmm fast on CPU
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
        ).to(device)


def sym_norm_adj(adj: sp.coo_matrix, device: torch.device) -> torch.Tensor:
    """LightGCN propagation ``D^-1/2 A D^-1/2`` as a torch CSR (N, N) float32 tensor (isolated nodes: 0 rows)."""
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    data = inv[adj.row] * adj.data * inv[adj.col]
    return _to_torch_csr(sp.coo_matrix((data, (adj.row, adj.col)), shape=adj.shape), device)


class EdgeDropout:
    """Symmetric-normalised adjacencies of a random subgraph: each undirected edge of ``adj`` is kept
    with probability ``1 - p`` (both directions together) and ``D^-1/2 A D^-1/2`` is recomputed with
    the kept degrees, as in SGL's edge dropout. The CSR structure is that of the full graph (dropped
    edges are stored zeros), so a draw costs a few vector operations, no sort.
    """

    def __init__(self, adj: sp.coo_matrix, p: float, device: torch.device) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"edge dropout must be in [0, 1), got {p}")
        m = adj.tocsr()
        m.sort_indices()
        n = m.shape[0]
        row = np.repeat(np.arange(n, dtype=np.int64), np.diff(m.indptr))
        col = m.indices.astype(np.int64)
        key = np.minimum(row, col) * n + np.maximum(row, col)
        _, eid = np.unique(key, return_inverse=True)
        self.p = p
        self.n = n
        self.n_edges = int(eid.max()) + 1 if eid.size else 0
        self.crow = torch.from_numpy(m.indptr.astype(np.int64)).to(device)
        self.col = torch.from_numpy(col).to(device)
        self.row = torch.from_numpy(row).to(device)
        self.eid = torch.from_numpy(eid.astype(np.int64)).to(device)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A torch CSR (N, N) float32 ``D'^-1/2 A' D'^-1/2`` of a fresh random subgraph A'."""
        dev = self.row.device
        keep = (torch.rand(self.n_edges, generator=generator, device=dev) >= self.p).float()[self.eid]
        deg = torch.zeros(self.n, device=dev).index_add_(0, self.row, keep)
        inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
        vals = inv[self.row] * keep * inv[self.col]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, vals, size=(self.n, self.n))


def mean_adj(adj: sp.coo_matrix, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """GraphSAGE mean aggregation ``D^-1 A`` and its transpose, both torch CSR (N, N) float32."""
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1e-12), 0.0).astype(np.float32)
    p = sp.coo_matrix((inv[adj.row] * adj.data, (adj.row, adj.col)), shape=adj.shape)
    return _to_torch_csr(p, device), _to_torch_csr(p.T, device)


def csr_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (n, m) times dense (m, d) -> dense (n, d) float32, as ``torch.sparse.mm``.

    A CSR matrix on the CPU goes through ``addmm`` with ``beta=0`` into an uninitialised result:
    ``torch.sparse.mm`` zero-fills a result, computes into a second one and copies it over, which
    costs more than the product on the multi-million-row blocks of sampled training."""
    if a.layout != torch.sparse_csr or a.device.type != "cpu":
        return torch.sparse.mm(a, x)
    out = torch.empty(a.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    return torch.addmm(out, a, x, beta=0.0, out=out)


class _SpMM(torch.autograd.Function):
    """``A @ X`` with the backward ``A^T @ grad`` done by a second, precomputed CSR matrix.

    torch's own backward for sparse @ dense transposes the sparse matrix on every
    call (slow on CPU); here the transpose is built once (or is A itself when symmetric).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.a_t = a_t
        return csr_mm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, None, csr_mm(ctx.a_t, grad)


def spmm(a: torch.Tensor, x: torch.Tensor, a_t: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sparse (N, N) CSR times dense (N, d) -> dense (N, d); ``a_t`` defaults to ``a`` (symmetric)."""
    return _SpMM.apply(a, a if a_t is None else a_t, x)


class BipartiteCSR:
    """The training graph held once, as CSR over all N = n_users + n_items nodes (users first).

    ``indptr`` int64 (N + 1,), ``indices`` int32 (2E,) when N fits (int64 otherwise): each distinct
    training pair (u, i) appears as u -> n_users + i and n_users + i -> u, neighbours sorted. Built by
    sorts over int64 keys, without a float matrix or an (N, N) scipy intermediate.
    """

    def __init__(self, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> None:
        n = n_users + n_items
        self.n_users, self.n_items, self.n_nodes = n_users, n_items, n
        idx_dtype = np.int32 if n < 2**31 else np.int64
        u = np.asarray(users, np.int64)
        it = np.asarray(items, np.int64) + n_users
        # one key per directed edge: src * N + dst, both directions, deduplicated and sorted
        keys = np.concatenate([u * n + it, it * n + u])
        keys.sort()
        if keys.size:
            keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        src = keys // n
        self.indices = (keys - src * n).astype(idx_dtype)
        del keys
        counts = np.bincount(src, minlength=n)
        self.indptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=self.indptr[1:])

    @property
    def degree(self) -> np.ndarray:
        """int64 (N,) number of distinct neighbours of each node."""
        return np.diff(self.indptr)

    def propagate_rows(self, start: int, end: int, h: torch.Tensor, norm: str = "mean") -> torch.Tensor:
        """One propagation step for nodes ``start..end-1`` over ``h`` (N, d): (end - start, d).

        ``norm``: ``mean`` averages the neighbours (GraphSAGE, :func:`mean_adj`), ``sym`` weighs
        neighbour u of v by 1/sqrt(deg v · deg u) (LightGCN, :func:`sym_norm_adj`). Isolated nodes
        get zero rows.
        """
        lo, hi = int(self.indptr[start]), int(self.indptr[end])
        crow = torch.from_numpy((self.indptr[start:end + 1] - lo).astype(np.int64))
        col = torch.from_numpy(self.indices[lo:hi].astype(np.int64))
        deg = crow[1:] - crow[:-1]
        if norm == "mean":
            w = (1.0 / deg.clamp_min(1).to(h.dtype)).repeat_interleave(deg)
        elif norm == "sym":
            inv = torch.from_numpy(self.degree).clamp_min(1).to(h.dtype).rsqrt()
            w = inv[start:end].repeat_interleave(deg) * inv[col]
        else:
            raise ValueError(f"norm must be mean or sym, got {norm!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            m = torch.sparse_csr_tensor(crow.to(h.device), col.to(h.device), w.to(h.device),
                                        size=(end - start, h.shape[0]))
        return csr_mm(m, h)

    def propagate(self, h: torch.Tensor, norm: str = "mean", chunk: int = 262_144) -> torch.Tensor:
        """:meth:`propagate_rows` for all nodes, ``chunk`` rows at a time: (N, d)."""
        out = torch.empty_like(h)
        for s in range(0, self.n_nodes, chunk):
            e = min(self.n_nodes, s + chunk)
            out[s:e] = self.propagate_rows(s, e, h, norm)
        return out
