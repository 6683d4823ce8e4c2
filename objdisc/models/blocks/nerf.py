"""Volume-rendering helpers shared by the 3D models (V-SRT after stelzner/srt, ObSuRF).

Sampling along rays: stratified coarse depths in [near, far] (far optionally clipped where the ray
meets the ground, ``objdisc.geometry.clip_far``) and importance (fine) depths drawn from the coarse
weights. Compositing, two ways:

* ``alpha_composite``: standard NeRF. δᵢ = tᵢ₊₁ − tᵢ (last 10¹⁰), αᵢ = 1 − e^{−σᵢδᵢ},
  Tᵢ = Πⱼ<ᵢ (1 − αⱼ + 10⁻¹⁰), wᵢ = αᵢTᵢ; colour Σ wc, depth Σ wt, alpha 1 − T_N.
* ``surface_density_composite``: ObSuRF's evaluation rendering. wᵢ ∝ σᵢ · exp(−Σⱼ<ᵢ σⱼδⱼ),
  normalised over the samples (so the colour is that of the first surface even where the density
  never saturates); alpha = 1 − exp(−Σ σδ).

``render_along_rays`` puts the pieces together as NeRF's hierarchical sampling (coarse samples,
importance samples from their weights, one composite of both), for any scene function: V-SRT's
NeRF decoder and ObSuRF both render through it.

Everything runs in float32 (also under bf16 autocast): exponentials of cumulative sums and
normalisations lose too much in 8 mantissa bits. Per-ray operations only, so rays can be chunked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from objdisc.geometry import clip_far


def stratified_depths(near: float, far: Tensor, num_samples: int, deterministic: bool) -> Tensor:
    """[..., S] depths: S equal bins of [near, far] (``far`` [...] per ray); bin centres when
    ``deterministic``, else one uniform sample per bin (torch's global generator)."""
    far = far.float()
    steps = torch.linspace(0.0, 1.0, num_samples + 1, device=far.device)
    borders = near + steps * (far[..., None] - near)  # [..., S+1]
    lower, upper = borders[..., :-1], borders[..., 1:]
    if deterministic:
        return (lower + upper) / 2
    return lower + (upper - lower) * torch.rand_like(lower)


def sample_pdf(bins: Tensor, weights: Tensor, num_samples: int, deterministic: bool) -> Tensor:
    """Inverse-CDF samples [..., n] from the histogram with borders ``bins`` [..., S+1] and bin
    weights [..., S] (+10⁻⁵ each so empty histograms stay valid, then normalised). Linearly spaced
    quantiles when ``deterministic``."""
    bins, weights = bins.float(), weights.float() + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), pdf.cumsum(dim=-1)], dim=-1).contiguous()
    shape = (*bins.shape[:-1], num_samples)
    if deterministic:
        u = torch.linspace(0.0, 1.0, num_samples, device=bins.device).expand(shape).contiguous()
    else:
        u = torch.rand(shape, device=bins.device)
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_below, cdf_above = cdf.gather(-1, below), cdf.gather(-1, above)
    bins_below, bins_above = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_above - cdf_below
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bins_below + (u - cdf_below) / denom * (bins_above - bins_below)


def importance_depths(
    depths: Tensor, weights: Tensor, near: float, num_samples: int, deterministic: bool
) -> Tensor:
    """Fine depths [..., n] from coarse ``depths`` [..., S] and their ``weights``: bins run from
    ``near`` through every coarse depth to 1.5·t_S − 0.5·t_{S−1}; each weight is split 75 % to the
    bin before its sample and 25 % to the bin after. Detached (no gradient through the sampling)."""
    depths, weights = depths.detach().float(), weights.detach().float()
    bins = torch.cat(
        [torch.full_like(depths[..., :1], near), depths, 1.5 * depths[..., -1:] - 0.5 * depths[..., -2:-1]], dim=-1
    )
    hist = torch.zeros_like(bins[..., 1:])
    hist[..., :-1] = 0.75 * weights
    hist[..., 1:] += 0.25 * weights
    return sample_pdf(bins, hist, num_samples, deterministic)


def merge_depths(*depths: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate sample depths [..., Sᵢ] and sort them; returns (sorted depths, sort order) so
    values computed per sample can be gathered into the same order."""
    merged = torch.cat(depths, dim=-1)
    return torch.sort(merged, dim=-1)


def alpha_composite(density: Tensor, colour: Tensor, depths: Tensor) -> dict[str, Tensor]:
    """Standard NeRF compositing of samples sorted by depth.

    density [..., S] ≥ 0, colour [..., S, C], depths [..., S] → ``rgb`` [..., C] (premultiplied: add
    (1 − alpha)·background), ``depth`` [...], ``weights`` [..., S] (sum = alpha ≤ 1), ``alpha`` [...].
    """
    density, colour, depths = density.float(), colour.float(), depths.float()
    delta = torch.cat([depths[..., 1:] - depths[..., :-1], torch.full_like(depths[..., :1], 1e10)], dim=-1)
    alpha = 1.0 - torch.exp(-density * delta)
    transmittance = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
    shifted = torch.cat([torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]], dim=-1)
    weights = alpha * shifted
    return {
        "rgb": (weights[..., None] * colour).sum(dim=-2),
        "depth": (weights * depths).sum(dim=-1),
        "weights": weights,
        "alpha": 1.0 - transmittance[..., -1],
    }


def surface_density_composite(density: Tensor, colour: Tensor, depths: Tensor) -> dict[str, Tensor]:
    """ObSuRF's surface-density compositing of samples sorted by depth.

    The density of sample i is attributed to the segment up to sample i+1; the weight of sample i
    is its density times the probability that the ray is empty before it, normalised over the
    samples (all-zero densities give all-zero weights). Returns ``rgb`` [..., C] (not premultiplied),
    ``depth`` [...], ``weights`` [..., S] (sum 1, or 0 for an all-empty ray), ``alpha`` [...].
    """
    density, colour, depths = density.float(), colour.float(), depths.float()
    log_empty = (-density[..., :-1] * (depths[..., 1:] - depths[..., :-1])).cumsum(dim=-1)
    log_empty_before = torch.cat([torch.zeros_like(log_empty[..., :1]), log_empty], dim=-1)
    surface = density * torch.exp(log_empty_before)
    weights = surface / surface.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return {
        "rgb": (weights[..., None] * colour).sum(dim=-2),
        "depth": (weights * depths).sum(dim=-1),
        "weights": weights,
        "alpha": 1.0 - torch.exp(log_empty[..., -1]),
    }


def over_background(rgb: Tensor, alpha: Tensor, background: float = 1.0) -> Tensor:
    """Premultiplied colour [..., C] composited over a constant background (NeRF's white)."""
    return rgb + (1.0 - alpha[..., None]) * background


Composite = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]
Field = Callable[[Tensor, bool], dict[str, Tensor]]


def _composite_with_extras(composite: Composite, values: dict[str, Tensor], depths: Tensor) -> dict[str, Tensor]:
    """``composite`` of ``values["density"]`` / ``values["colour"]``; every other per-sample value
    [..., T, D] is summed with the compositing weights, Σᵢ wᵢ vᵢ, under its own name."""
    out = composite(values["density"], values["colour"], depths)
    for key, value in values.items():
        if key not in ("density", "colour"):
            out[key] = (out["weights"][..., None] * value.float()).sum(dim=-2)
    return out


def render_along_rays(
    field: Field,
    origins: Tensor,
    dirs: Tensor,
    near: float,
    far: float,
    num_coarse: int,
    num_fine: int,
    deterministic: bool,
    composite: Composite = alpha_composite,
    min_z: float | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """NeRF's hierarchical volume rendering of rays ``origins`` / ``dirs`` [..., 3].

    ``field(depths [..., T], fine)`` evaluates the scene at the points o + t·d of every ray and
    returns ``density`` [..., T] (≥ 0), ``colour`` [..., T, C] and any other per-sample values
    [..., T, D] (ObSuRF's slot fractions); ``fine`` says whether the depths are the importance
    samples (a model with a separate fine network switches on it).

    1. ``num_coarse`` stratified depths in [near, far'], far' = ``far`` shortened to where the ray
       meets the plane z = ``min_z`` (``None``: no clip) and at least near + 10⁻³; bin centres when
       ``deterministic``, else one uniform draw per bin.
    2. ``num_fine`` importance depths from the coarse weights (``importance_depths``: bins from
       near through every coarse depth, 75 % / 25 % weight split, pdf + 10⁻⁵, detached).
    3. Coarse and fine samples merged and sorted, composited together; the coarse values are
       reused, not evaluated again.

    Returns the (fine, coarse) composites: ``composite``'s outputs (``rgb``, ``depth``,
    ``weights``, ``alpha``) plus every extra value composited with the weights, Σᵢ wᵢ vᵢ. Without
    fine samples both are the coarse composite.
    """
    far_t = clip_far(origins.float(), dirs.float(), far, min_z).clamp_min(near + 1e-3)
    t_coarse = stratified_depths(near, far_t, num_coarse, deterministic)
    coarse = field(t_coarse, False)
    coarse_out = _composite_with_extras(composite, coarse, t_coarse)
    if num_fine < 1:
        return coarse_out, coarse_out
    t_fine = importance_depths(t_coarse, coarse_out["weights"], near, num_fine, deterministic)
    fine = field(t_fine, True)
    t_all, order = merge_depths(t_coarse, t_fine)
    merged = {}
    for key, value in coarse.items():
        both = torch.cat([value, fine[key]], dim=t_all.dim() - 1)
        index = order if both.dim() == order.dim() else order[..., None].expand_as(both)
        merged[key] = both.gather(t_all.dim() - 1, index)
    return _composite_with_extras(composite, merged, t_all), coarse_out
