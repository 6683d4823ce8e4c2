"""The autoregressive transformer decoder of SLATE (Singh et al. 2022; the HHousen seed copies the
SLATE authors' module): each token attends causally to the tokens before it and across to a set
of conditioning vectors (SLATE: the slots), then predicts the next token.

    x ─▶ [block₁ … block_L] ─▶ LayerNorm ─▶ y;   block: x += SelfAttn(LN x, causal); x += CrossAttn(LN x, slots); x += FFN(LN x)

Details kept from the reference: attention projections without biases, Xavier-uniform (the output
projection and the second FFN layer with gain (3·L)^−½), FFN Linear(d, 4d, Kaiming) – ReLU –
Linear(4d, d) – Dropout, attention-weight and output dropout, and the first block's quirk of
normalising its input *in place* (its residual stream starts from LN x, not x). The causal mask is
computed, not stored: the reference keeps it as an L × max_len² boolean ``nn.Parameter`` (SLATE at
128²: 8 × 1024² = 8,388,608 "parameters" that never train), see ``objdisc.models.slate``.

``forward`` runs a whole sequence at once (training, teacher forcing) and can return the
cross-attention of the last block (the weight each token gives each slot, averaged over heads:
SLATE's masks). ``start`` + ``step`` decode one position at a time with a key/value cache, so
greedy decoding of N tokens costs N single-token passes instead of N passes over growing
prefixes; ``step`` equals ``forward`` on the prefix (tests/models/test_slate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _linear(d_in: int, d_out: int, bias: bool = True, init: str = "xavier", gain: float = 1.0) -> nn.Linear:
    m = nn.Linear(d_in, d_out, bias=bias)
    if init == "kaiming":
        nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(m.weight, gain=gain)
    if bias:
        nn.init.zeros_(m.bias)
    return m


class MultiHeadAttention(nn.Module):
    """Bias-free multi-head attention with dropout on the weights and on the output."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, gain: float = 1.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.proj_q = _linear(d_model, d_model, bias=False)
        self.proj_k = _linear(d_model, d_model, bias=False)
        self.proj_v = _linear(d_model, d_model, bias=False)
        self.proj_o = _linear(d_model, d_model, bias=False, gain=gain)
        self.output_dropout = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:
        """[B,T,d] → [B,h,T,d/h]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.proj_k(x)), self.split(self.proj_v(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Heads-split q [B,h,T,e], k, v [B,h,S,e] → output [B,T,d] (projected), weights [B,h,T,S] or None."""
        p = self.dropout if self.training else 0.0
        if need_weights:
            logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
            if causal:
                t, s = logits.shape[-2:]
                logits = logits.masked_fill(torch.ones(t, s, dtype=torch.bool, device=q.device).triu(s - t + 1), float("-inf"))
            weights = logits.float().softmax(-1).to(q.dtype)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
            weights = None
        out = self.output_dropout(self.proj_o(out.transpose(1, 2).flatten(-2)))
        return out, weights

    def forward(self, x: Tensor, context: Tensor, causal: bool = False, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        k, v = self.keys_values(context)
        return self.attend(self.split(self.proj_q(x)), k, v, causal, need_weights)


class DecoderBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float, gain: float, is_first: bool) -> None:
        super().__init__()
        self.is_first = is_first
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, dropout, gain)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout, gain)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            _linear(d_model, 4 * d_model, init="kaiming"),
            nn.ReLU(),
            _linear(4 * d_model, d_model, gain=gain),
            nn.Dropout(dropout),
        )

    def _self_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(residual stream, normalised input of the self-attention)."""
        h = self.self_attn_norm(x)
        return (h, h) if self.is_first else (x, h)

    def _rest(self, x: Tensor, cross_kv: tuple[Tensor, Tensor], need_weights: bool) -> tuple[Tensor, Tensor | None]:
        q = self.cross_attn.split(self.cross_attn.proj_q(self.cross_attn_norm(x)))
        out, weights = self.cross_attn.attend(q, *cross_kv, need_weights=need_weights)
        x = x + out
        return x + self.ffn(self.ffn_norm(x)), weights

    def forward(self, x: Tensor, cross_kv: tuple[Tensor, Tensor], need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        x, h = self._self_input(x)
        x = x + self.self_attn(h, h, causal=True)[0]
        return self._rest(x, cross_kv, need_weights)

    def step(self, x: Tensor, cross_kv: tuple[Tensor, Tensor], cache_k: Tensor, cache_v: Tensor, t: int) -> Tensor:
        """One position ``t``: x [B,1,d]; writes its key/value into ``cache_k/v`` [B,h,T,e] at t."""
        x, h = self._self_input(x)
        k, v = self.self_attn.keys_values(h)
        cache_k[:, :, t : t + 1] = k
        cache_v[:, :, t : t + 1] = v
        q = self.self_attn.split(self.self_attn.proj_q(h))
        x = x + self.self_attn.attend(q, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1])[0]
        return self._rest(x, cross_kv, need_weights=False)[0]


@dataclass
class DecoderCache:
    """Per-block cross-attention keys/values of the conditioning set and the self-attention
    keys/values of the positions decoded so far."""

    cross: list[tuple[Tensor, Tensor]]
    keys: list[Tensor]
    values: list[Tensor]
    position: int = 0
    extra: dict = field(default_factory=dict)


class TransformerDecoder(nn.Module):
    """``num_blocks`` causal decoder blocks of width ``d_model`` conditioned on a set of vectors."""

    def __init__(self, num_blocks: int, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        gain = (3 * num_blocks) ** -0.5
        self.blocks = nn.ModuleList(DecoderBlock(d_model, heads, dropout, gain, is_first=i == 0) for i in range(num_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.heads = heads

    def cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [block.cross_attn.keys_values(memory) for block in self.blocks]

    def forward(self, x: Tensor, memory: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B,T,d] (teacher-forced inputs), memory [B,S,d] → y [B,T,d] and, with
        ``need_weights``, the last block's cross-attention [B,T,S] averaged over heads."""
        weights = None
        for i, (block, kv) in enumerate(zip(self.blocks, self.cross_kv(memory))):
            x, weights = block(x, kv, need_weights=need_weights and i == len(self.blocks) - 1)
        return self.norm(x), (weights.mean(1) if weights is not None else None)

    def start(self, memory: Tensor, length: int) -> DecoderCache:
        """An empty cache for decoding up to ``length`` positions conditioned on ``memory``."""
        b = memory.shape[0]
        d = memory.shape[-1] if not self.blocks else self.blocks[0].self_attn.proj_k.out_features
        shape = (b, self.heads, length, d // self.heads)
        keys = [memory.new_empty(shape) for _ in self.blocks]
        values = [memory.new_empty(shape) for _ in self.blocks]
        return DecoderCache(self.cross_kv(memory), keys, values)

    def step(self, x: Tensor, cache: DecoderCache) -> Tensor:
        """x [B,1,d]: the input at the cache's next position → y [B,1,d]; advances the cache."""
        t = cache.position
        for i, block in enumerate(self.blocks):
            x = block.step(x, cache.cross[i], cache.keys[i], cache.values[i], t)
        cache.position += 1
        return self.norm(x)


__all__ = ["DecoderBlock", "DecoderCache", "MultiHeadAttention", "TransformerDecoder"]
