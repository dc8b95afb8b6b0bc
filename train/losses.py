"""Training objectives on scores s = scale · <x_u, x_i>.

Shapes: ``pos`` (B,) scores of observed pairs, ``neg`` (B, T) scores of the same
users with T sampled items.
"""
from __future__ import annotations

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


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Sampled softmax cross-entropy ``-s_ui + log(exp(s_ui) + Σ_m exp(s_um))``; ``neg`` (B, S)
    may hold negatives shared by the whole batch. Scores are usually cosines over a temperature."""
    logits = torch.cat([pos[:, None], neg], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()
