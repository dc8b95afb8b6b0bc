"""Training objectives on scores s = scale · <x_u, x_i>.

Shapes: ``pos`` (B,) scores of observed pairs, ``neg`` (B, T) scores of the same
users with T sampled items.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def bce_link(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Link reconstruction BCE: ``-log σ(s_ui) - log(1 - σ(s_um))`` with the first negative of each row."""
    return F.softplus(-pos).mean() + F.softplus(neg[:, 0]).mean()


def ranking(pos: torch.Tensor, neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """HashGNN's triplet loss ``max(0, -σ(s_ij) + σ(s_im) + α)`` averaged over all B·T triplets."""
    return torch.relu(torch.sigmoid(neg) - torch.sigmoid(pos)[:, None] + alpha).mean()


def hashgnn_loss(pos: torch.Tensor, neg: torch.Tensor, lam: float, alpha: float) -> torch.Tensor:
    """BCE link reconstruction + λ · ranking (λ = 0 is HashGNN_nr)."""
    loss = bce_link(pos, neg)
    if lam > 0:
        loss = loss + lam * ranking(pos, neg, alpha)
    return loss


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking ``-log σ(s_ui - s_uj)`` over all B·T pairs."""
    return F.softplus(neg - pos[:, None]).mean()


class _SampledSoftmax(torch.autograd.Function):
    """Mean over rows r of ``log(exp(pos_r) + Σ_s exp(neg[inv_r, s])) - pos_r`` in a few passes over
    the (U, S) negative scores, which are computed once per distinct user (``inv`` maps rows to them).

    Autograd through ``cat`` + ``logsumexp`` walks a (B, S) matrix about ten times (copy, max,
    subtract, exp, sum, and again for the backward); here the forward keeps ``exp(neg - max)`` and
    the backward scales it once.
    """

    @staticmethod
    def forward(ctx, pos: torch.Tensor, neg: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        m = neg.amax(dim=1)                               # (U,) stabiliser of each user's row
        e = (neg - m[:, None]).exp_()                     # (U, S)
        zn = e.sum(dim=1)                                 # (U,) >= 1
        mr = m[inv]
        big = torch.maximum(mr, pos)                      # (B,)
        a = zn[inv] * (mr - big).exp()                    # Σ_s exp(neg - big)
        b = (pos - big).exp()                             # exp(pos - big)
        z = a + b
        ctx.save_for_backward(e, zn, inv, a, b, z)
        return (big + z.log() - pos).mean()

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        e, zn, inv, a, b, z = ctx.saved_tensors
        gb = g / z.shape[0]
        # d/d neg[u, s] = Σ_{r: inv_r = u} gb · exp(neg[u, s] - big_r) / z_r = e[u, s] · w_u
        w = torch.zeros_like(zn).index_add_(0, inv, gb * a / z) / zn
        return gb * (b / z - 1.0), e * w[:, None], None


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor, inv: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sampled softmax cross-entropy ``-s_ui + log(exp(s_ui) + Σ_m exp(s_um))`` averaged over rows.

    ``pos`` (B,) scores of the observed pairs; ``neg`` (B, S) scores of the same users with S items
    (usually negatives shared by the batch), or (U, S) scores of U distinct users when ``inv`` (B,)
    int64 gives each row's user (``neg[inv]`` would be the (B, S) matrix, never built).
    Scores are usually cosines over a temperature.
    """
    if inv is None:
        inv = torch.arange(pos.shape[0], device=pos.device)
    return _SampledSoftmax.apply(pos, neg, inv)
