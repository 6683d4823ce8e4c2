"""Parametric image transformations and the batched MLPs that predict their parameters, as
DTI-Sprites (Monnier et al. 2021) uses them: a colour transformation (per-channel gain and bias),
a position transformation (isotropic scale and translation), a projective one (a homography), a
leaky clamp that keeps colours in [0, 1] while letting gradients through, and ``n`` small MLPs
evaluated as one batched matmul. Every transformation is neutral at zero parameters, so networks
whose last layer starts at zero start at the identity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def soft_clamp(x: Tensor, leak: float) -> Tensor:
    """clamp to [0, 1] with slope ``leak`` outside (the reference's SoftClamp)."""
    return x.clamp(0, 1) + leak * (x.clamp(max=0) + (x - 1).clamp(min=0))


class BatchedMLP(nn.Module):
    """``n`` independent MLPs (d_in → hidden ×layers, ReLU → d_out) on one shared input: the
    parameters of ``n`` ``nn.Linear`` stacks, stacked, evaluated with batched matmuls. Hidden
    layers start like ``nn.Linear``; the last layer starts at zero (the neutral transformation)."""

    def __init__(self, n: int, d_in: int, hidden: int, d_out: int, layers: int) -> None:
        super().__init__()
        dims = [d_in] + [hidden] * layers + [d_out]
        self.n = n
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n, a, b)) for a, b in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n, b)) for b in dims[1:])
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i == len(self.weights) - 1:
                nn.init.zeros_(w)
                nn.init.zeros_(b)
            else:
                bound = 1.0 / math.sqrt(w.shape[1])
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, d_in] → [n, B, d_out]."""
        w0, b0 = self.weights[0], self.biases[0]
        h = (x @ w0.permute(1, 0, 2).flatten(1)).unflatten(1, (self.n, -1)).transpose(0, 1) + b0[:, None]
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = torch.baddbmm(b[:, None], h.relu(), w)
        return h

    @torch.no_grad()
    def copy_row(self, i: int, j: int) -> None:
        """MLP ``i`` becomes an exact copy of MLP ``j``."""
        for p in (*self.weights, *self.biases):
            p[i] = p[j]


def transform_color(x: Tensor, beta: Tensor, leak: float) -> Tensor:
    """x [N, 3+extra, h, w], beta [N, 6] (weight, bias per channel) → (1 + w)·rgb + b, soft-clamped;
    extra channels (mask, noise support) pass through."""
    rgb, rest = x[:, :3], x[:, 3:]
    beta = beta.view(-1, 3, 2)
    rgb = soft_clamp((1 + beta[..., 0, None, None]) * rgb + beta[..., 1, None, None], leak)
    return torch.cat([rgb, rest], dim=1) if rest.shape[1] else rgb


def position_theta(beta: Tensor) -> Tensor:
    """beta [N, 3] (log-scale, tx, ty) → affine [N, 2, 3]: (exp(s) + 1)·I | t (neutral: 2·I)."""
    s = beta[:, 0].exp() + 1
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s, zero, beta[:, 1]], -1), torch.stack([zero, s, beta[:, 2]], -1)], 1)


def projective_grid(beta: Tensor, size: tuple[int, int]) -> Tensor:
    """beta [N, 9] → sampling grid [N, h, w, 2]: the homography (beta + I) maps output pixel
    centres (align_corners=False coordinates) to input coordinates."""
    h, w = size
    ys = (torch.arange(h, device=beta.device, dtype=beta.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=beta.device, dtype=beta.dtype) * 2 + 1) / w - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)  # [hw, 3]
    homography = beta.view(-1, 3, 3) + torch.eye(3, device=beta.device, dtype=beta.dtype)
    mapped = points @ homography.transpose(1, 2)  # [N, hw, 3]
    z = mapped[..., 2:]
    z = torch.where(z.abs() > 1e-8, z, torch.full_like(z, 1e-8))  # the reference: 1 where |z| <= eps; a tiny z sends the point far outside
    return (mapped[..., :2] / z).view(-1, h, w, 2)


__all__ = ["BatchedMLP", "position_theta", "projective_grid", "soft_clamp", "transform_color"]
