"""Binarisation layers and their gradient estimators.

All functions map a pre-activation or tanh output of shape (n, K) to a
relaxed code of the same shape; codes used at test time are always
``sign(z)`` with sign(0) = +1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch


def hard_sign(z: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1 (so every bit is ±1); no gradient."""
    return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def sign_ste(z: torch.Tensor) -> torch.Tensor:
    """Forward ``sign(z)``, backward identity (the straight-through estimator): d out / d z = 1."""
    return z + (hard_sign(z) - z).detach()


def bernoulli_mask(shape, p: float, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Float mask of the given shape, each entry 1 with probability p (Q of the guided STE)."""
    return (torch.rand(shape, generator=generator, device=device) < p).float()


def guided_ste(z: torch.Tensor, p: float, generator: Optional[torch.Generator] = None, *,
               q: Optional[torch.Tensor] = None, rows: bool = False,
               scale: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """HashGNN's guided mix ``ĥ = Q ⊙ z + (1 - Q) ⊙ c·sign_ste(z)``, ``Q ~ Bernoulli(p)``.

    Q is drawn per element, per row (``rows=True``: a node's whole code is either continuous or
    binary, as in the official HashGNN code), or given as ``q`` (broadcast against z, e.g. (n, 1)
    shared by a user and its positive item). ``scale`` c (a constant, not differentiated) sets the
    training-time magnitude of the binary codes. p = 1 gives z exactly; p = 0 plain STE (times c).
    """
    if q is None:
        if p >= 1.0:
            return z
        if p <= 0.0:
            return scale * sign_ste(z)
        q = bernoulli_mask((z.shape[0], 1) if rows else z.shape, p, z.device, generator)
    q = q.to(z.dtype)
    return q * z + (1.0 - q) * (scale * sign_ste(z))


def hashnet_tanh(a: torch.Tensor, beta: float) -> torch.Tensor:
    """HashNet's continuation ``tanh(β a)``; β grows during training so tanh tends to sign."""
    return torch.tanh(beta * a)


def gumbel_bits(a: torch.Tensor, tau: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the two states of each bit.

    With logits (a, -a) for (+1, -1), the soft sample is ``tanh((a + L/2) / τ)``
    with L logistic noise (the difference of two Gumbels); the forward pass is its
    sign, the backward pass the soft sample's gradient.
    """
    u = torch.rand(a.shape, generator=generator, device=a.device).clamp_(1e-6, 1 - 1e-6)
    logistic = torch.log(u) - torch.log1p(-u)
    soft = torch.tanh((a + 0.5 * logistic) / tau)
    return soft + (hard_sign(soft) - soft).detach()


@dataclass
class ProbSchedule:
    """p of the guided STE: ``max(floor, start * decay ** (iteration // every))``.

    The paper: start 1, decay 0.95 every 250 iterations.
    """

    start: float = 1.0
    decay: float = 0.95
    every: int = 250
    floor: float = 0.0

    def __call__(self, iteration: int) -> float:
        return max(self.floor, self.start * self.decay ** (iteration // max(1, self.every)))
