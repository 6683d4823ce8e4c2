"""The pre-norm ViT transformer of SRT and OSRT (stelzner/srt), on ``scaled_dot_product_attention``.

Each layer is ``x += Attn(LN x); x += FF(LN x)`` with no final LayerNorm and no dropout. Attention
projects q, k, v without bias and the output with bias; FF is Linear–GELU–Linear. With ``kv_dim``
the attention is cross-attention: queries from ``x``, keys and values from a context of width
``kv_dim`` (the SRT decoders: rays attend into the scene latents, never into each other, so each
ray is decoded independently and decoding can be chunked freely).

The init helpers reproduce OSRT's initialisation (``jax_linear_``, ``vit_linear_``,
``srt_linear_``); SRT itself keeps PyTorch's defaults.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention: ``heads`` × ``dim_head`` inner width."""

    def __init__(self, dim: int, heads: int, dim_head: int, kv_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.cross = kv_dim is not None
        if self.cross:
            self.to_q = nn.Linear(dim, inner, bias=False)
            self.to_kv = nn.Linear(kv_dim, 2 * inner, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.to_q(x)
            k, v = self.to_kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(-3, -2) for t in (q, k, v))  # [B,h,N,d]
        # SDPA scales by dim_head^-1/2 (the reference's scale) and computes its softmax in float32
        # for bf16 inputs.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(-3, -2).flatten(-2))


class FeedForward(nn.Sequential):
    """Linear(dim → hidden) – GELU – Linear(hidden → dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, kv_dim: int | None = None) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, kv_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm_attn(x), context)
        return x + self.ff(self.norm_ff(x))


class Transformer(nn.Module):
    """``depth`` pre-norm layers of width ``dim``; self-attention, or cross-attention when ``kv_dim``."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, kv_dim: int | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, dim_head, mlp_dim, kv_dim) for _ in range(depth))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, context)
        return x


# --------------------------------------------------------------------------------------------
# OSRT's initialisation (stelzner/osrt, unless its ``use_default_init`` is set).


@torch.no_grad()
def truncated_normal_(tensor: Tensor, std: float) -> Tensor:
    """Fill with N(0, std²) conditioned on |x| ≤ 2·std, by redrawing the ~4.6 % of values outside.

    Same distribution as ``nn.init.trunc_normal_(std=std, a=-2std, b=2std)`` but an order of
    magnitude faster on CPU (no erfinv), which matters for OSRT's 80M parameters.
    """
    if tensor.is_meta:
        return tensor
    tensor.normal_(0.0, std)
    outside = tensor.abs() > 2 * std
    while bool(outside.any()):
        tensor[outside] = torch.empty(int(outside.sum()), dtype=tensor.dtype, device=tensor.device).normal_(0.0, std)
        outside = tensor.abs() > 2 * std
    return tensor


@torch.no_grad()
def jax_linear_(linear: nn.Linear) -> None:
    """JAX's default: weight ~ truncated normal with std √(1/fan_in), cut at ±2σ; zero bias."""
    std = math.sqrt(1.0 / linear.weight.shape[1])
    truncated_normal_(linear.weight, std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


@torch.no_grad()
def vit_linear_(linear: nn.Linear) -> None:
    """ViT's FF init: Xavier-uniform weight, bias ~ N(0, 1e-6²)."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.normal_(linear.bias, std=1e-6)


@torch.no_grad()
def srt_linear_(linear: nn.Linear) -> None:
    """SRT decoder MLP init: Xavier-uniform weight, zero bias."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def init_transformer_(transformer: Transformer) -> None:
    """OSRT's transformer init: attention projections JAX-style, FF layers ViT-style."""
    for layer in transformer.layers:
        for module in layer.attn.modules():
            if isinstance(module, nn.Linear):
                jax_linear_(module)
        for module in layer.ff.modules():
            if isinstance(module, nn.Linear):
                vit_linear_(module)
