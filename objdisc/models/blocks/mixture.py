"""The image as a mixture of K components (MONet, IODINE, GENESIS-v2, Efficient-MORL): pixel
likelihoods, stick-breaking masks and the diagonal-Gaussian latents of the component VAEs.

Every pixel x_i is explained by one of K components, chosen with the mask m_ik (Σ_k m_ik = 1):

    p(x | z) = Π_i Σ_k m_ik N(x_i; μ_ik, σ_k² I)                       (``component="pixel"``)

which is the papers' model (a pixel belongs to one component). The ClevrTex benchmark's
re-implementations (and the GENESIS-v2 / Efficient-MORL code they adapt) take the mixture per
colour channel instead,

    p(x | z) = Π_i Π_c Σ_k m_ik N(x_ic; μ_ikc, σ_k²)                   (``component="channel"``)

which lets two components share a pixel, one channel each. The benchmark presets keep the per-channel
form (that is how the published numbers were trained); ``component`` switches.

``normalised`` keeps the Gaussian's −½ log 2π per element (torch's ``Normal.log_prob``, as MONet and
GENESIS-v2 compute it) or drops it (IODINE, Efficient-MORL): a constant for the gradient, but GECO's
goals are absolute numbers and were calibrated with one or the other.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Component = Literal["pixel", "channel"]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float, normalised: bool = True) -> Tensor:
    """Element-wise log N(x; mean, std²)."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    out = -0.5 * ((x - mean) / std) ** 2 - torch.log(std)
    return out - _HALF_LOG_2PI if normalised else out


def component_log_likelihood(
    image: Tensor, means: Tensor, std: Tensor | float, component: Component = "pixel", normalised: bool = True
) -> Tensor:
    """log N(x | μ_k) per component: [B,K,1,H,W] (``pixel``: summed over channels) or [B,K,C,H,W]
    (``channel``). ``image`` [B,C,H,W], ``means`` [B,K,C,H,W], ``std`` a number or [K] (per slot)."""
    if torch.is_tensor(std) and std.dim() == 1:
        std = std.view(1, -1, 1, 1, 1)
    ll = gaussian_log_prob(image.unsqueeze(1), means, std, normalised)
    return ll.sum(dim=2, keepdim=True) if component == "pixel" else ll


def mixture_nll(
    image: Tensor,
    means: Tensor,
    log_masks: Tensor,
    std: Tensor | float,
    component: Component = "pixel",
    normalised: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """−log p(x | z) per image [B] of the mixture, and its parts for inference networks.

    ``log_masks`` [B,K,1,H,W] or [B,K,H,W] (log m_k, normalised over K). Parts: ``ll`` the
    component log-likelihoods (see ``component_log_likelihood``), ``log_p`` the per-pixel
    log-likelihood [B,1,H,W] (summed over channels)."""
    if log_masks.dim() == 4:
        log_masks = log_masks.unsqueeze(2)
    ll = component_log_likelihood(image, means, std, component, normalised)
    log_p = torch.logsumexp(log_masks + ll, dim=1).sum(dim=1, keepdim=True)  # [B,1,H,W]
    return -log_p.flatten(1).sum(1), {"ll": ll, "log_p": log_p}


def stick_breaking(log_alphas: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """Masks of a stick-breaking process from K − 1 log α_k (and their log(1 − α_k)):

        m_k = s_{k−1} α_k,  s_k = s_{k−1} (1 − α_k),  s_0 = 1,  m_K = s_{K−1}

    ``log_alphas`` is a list of pairs (log α_k, log(1 − α_k)) as tensors [B,1,H,W] (given as pairs
    so that each may be computed stably, e.g. ``logsigmoid(±logits)``). Returns the K log masks
    and the final log scope; the masks sum to one exactly up to rounding."""
    log_scope = torch.zeros_like(log_alphas[0][0])
    log_masks = []
    for log_a, log_not_a in log_alphas:
        log_masks.append(log_scope + log_a)
        log_scope = log_scope + log_not_a
    log_masks.append(log_scope)
    return log_masks, log_scope


def softplus_std(pre: Tensor, eps: float = 0.0, limit: float | None = None) -> Tensor:
    """σ = sqrt(softplus(pre) + eps): the variance is the softplus (IODINE, Efficient-MORL);
    ``limit`` caps ``pre`` first (Efficient-MORL: 80)."""
    if limit is not None:
        pre = pre.clamp(max=limit)
    return torch.sqrt(F.softplus(pre) + eps)


def kl_normal(mu_q: Tensor, std_q: Tensor, mu_p: Tensor | float = 0.0, std_p: Tensor | float = 1.0) -> Tensor:
    """Analytic KL(N(mu_q, std_q²) ‖ N(mu_p, std_p²)), element-wise."""
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    std_p = torch.as_tensor(std_p, dtype=mu_q.dtype, device=mu_q.device)
    var_ratio = (std_q / std_p) ** 2
    return 0.5 * (var_ratio + ((mu_q - mu_p) / std_p) ** 2 - 1.0 - torch.log(var_ratio))


def log_normal(x: Tensor, mu: Tensor | float, std: Tensor | float) -> Tensor:
    """Element-wise log N(x; mu, std²) with the constant (Monte-Carlo KL terms)."""
    mu = torch.as_tensor(mu, dtype=x.dtype, device=x.device)
    return gaussian_log_prob(x, mu, std, normalised=True)


__all__ = [
    "Component",
    "component_log_likelihood",
    "gaussian_log_prob",
    "kl_normal",
    "log_normal",
    "mixture_nll",
    "softplus_std",
    "stick_breaking",
]
