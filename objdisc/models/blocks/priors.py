"""Latent distributions of the glimpse models (SPAIR, SPACE, GNM): Gaussian "where/what/depth"
posteriors and priors, relaxed-Bernoulli presence samples, Bernoulli KLs, and SPAIR's count prior.

Everything samples through ``torch.distributions`` (``Normal.rsample``, ``RelaxedBernoulli.rsample``)
so that gradients flow by reparameterisation; nothing here keeps state between calls, so annealed
values (prior probabilities, temperatures) are passed in by the model, computed from the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, Normal, RelaxedBernoulli, kl_divergence

PROB_EPS = 1e-6  # presence probabilities are kept in [ε, 1 − ε] (the references' clamp)


def normal(mean: Tensor, raw_std: Tensor, min_std: float = 0.0) -> Normal:
    """A diagonal Gaussian with standard deviation softplus(raw_std) + min_std (> 0)."""
    return Normal(mean, F.softplus(raw_std) + min_std)


def gaussian_prior(loc, scale, like: Tensor) -> Normal:
    """A fixed Gaussian prior broadcast to the shape, device and dtype of ``like``."""
    loc = torch.as_tensor(loc, dtype=like.dtype, device=like.device)
    scale = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    return Normal(loc.expand_as(like), scale.expand_as(like))


def presence(temperature: float | Tensor, *, probs: Tensor | None = None, logits: Tensor | None = None) -> RelaxedBernoulli:
    """The relaxed (Concrete / Gumbel-sigmoid) Bernoulli of a presence variable at ``temperature``;
    ``probs`` are clamped to [ε, 1 − ε] first."""
    if probs is not None:
        probs = probs.clamp(PROB_EPS, 1.0 - PROB_EPS)
    like = probs if probs is not None else logits
    temperature = torch.as_tensor(temperature, dtype=like.dtype, device=like.device)
    return RelaxedBernoulli(temperature, probs=probs, logits=logits)


def straight_through(soft: Tensor) -> Tensor:
    """round(soft) in the forward pass, the gradient of ``soft`` in the backward pass."""
    return soft + (soft.round() - soft).detach()


def bernoulli_kl(q: Tensor, p: Tensor | float, *, q_is_logits: bool = False) -> Tensor:
    """KL(Bernoulli(q) ‖ Bernoulli(p)) elementwise; ``q`` probabilities (or logits), ``p``
    probabilities. Probabilities are clamped to [ε, 1 − ε] so that the KL stays finite, in float32:
    under bf16 autocast 1 − ε rounds to 1 and log(1 − q) would be −∞."""
    q = q.float()
    if isinstance(p, Tensor):
        p = p.float()
    q_dist = Bernoulli(logits=q) if q_is_logits else Bernoulli(probs=q.clamp(PROB_EPS, 1.0 - PROB_EPS))
    p = torch.as_tensor(p, dtype=torch.float32, device=q.device).clamp(PROB_EPS, 1.0 - PROB_EPS)
    return kl_divergence(q_dist, Bernoulli(probs=p.expand_as(q)))


class CountPrior:
    """SPAIR's presence prior (Crawford & Pineau 2019, §3): the number of objects K among the N
    cells has the truncated geometric prior P(K = k) ∝ (1 − p)·p^k on k = 0..N, and the cells are
    visited in order; given the c objects found in the first i cells, the chance that cell i holds
    one is E[(K − c)/(N − i)] under the posterior over K, which is updated with each cell's rounded
    presence. ``probs(i)`` is that chance for cell i; ``update(z, i)`` conditions on cell i."""

    def __init__(self, batch: int, cells: int, p: float, like: Tensor) -> None:
        self.cells = cells
        self.support = torch.arange(cells + 1, dtype=like.dtype, device=like.device)
        p = torch.as_tensor(p, dtype=like.dtype, device=like.device)
        prior = (1.0 - p) * p**self.support
        self.belief = (prior / prior.sum()).expand(batch, -1)  # [B, N + 1] posterior over K
        self.count = torch.zeros(batch, 1, dtype=like.dtype, device=like.device)

    def _on_given_k(self, i: int) -> Tensor:
        """[B, N + 1]: P(cell i on | K = k, c found so far), (k − c)/(N − i) clamped to [0, 1]."""
        return ((self.support[None, :] - self.count) / (self.cells - i)).clamp(0.0, 1.0)

    def probs(self, i: int) -> Tensor:
        """[B, 1] prior probability that cell i (0-based, in visiting order) holds an object."""
        on = (self.belief * self._on_given_k(i)).sum(dim=1, keepdim=True)
        return on.clamp(PROB_EPS, 1.0 - PROB_EPS)

    def update(self, z: Tensor, i: int) -> None:
        """Condition on cell i's presence ``z`` [B, 1] (rounded; no gradient flows through the prior)."""
        z = z.detach().round()
        on = self._on_given_k(i)
        belief = self.belief * (z * on + (1.0 - z) * (1.0 - on))
        self.belief = belief / belief.sum(dim=1, keepdim=True).clamp_min(PROB_EPS)
        self.count = self.count + z


__all__ = ["CountPrior", "bernoulli_kl", "gaussian_prior", "normal", "presence", "straight_through"]
