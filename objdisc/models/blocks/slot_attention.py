"""Slot Attention (Locatello et al., 2020, "Object-Centric Learning with Slot Attention").

K slots compete for N input tokens: the attention is normalised over the *slots* (so every input
is divided among them), then each slot takes the weighted mean of the values it won and updates
itself with a GRU and a residual MLP. Repeated ``iters`` times from a random (or learned) start.

The block is shared by every slot model in the package:

* Slot Attention autoencoder (paper): ``init="gaussian"``, 3 iterations, MLP hidden 128.
* OSRT: ``init="learned"`` (fixed learned slots, no sampling), 1 iteration, MLP hidden 2·D.
* ObSuRF: ``slot_self_attention=True`` (4-head attention among slots after the GRU), 5 iterations.
* Implicit Slot Attention (Chang et al., 2022): ``implicit=True`` adds one update from the detached
  fixed point, so the gradient flows through that last step only (first-order implicit gradient);
  the initial slots get it straight through (BO-QSA, Jia et al. 2023), so they learn too.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn


class SlotAttention(nn.Module):
    """Iterative attention from ``num_slots`` slots of width ``slot_dim`` onto ``input_dim`` tokens.

    Args:
        num_slots: default number of slots K (``forward`` may override it for the gaussian init).
        input_dim: width of the input tokens.
        slot_dim: width D of the slots (also of queries, keys and values).
        iters: number of attention iterations.
        mlp_hidden: hidden width of the residual slot MLP.
        qkv_bias: biases on the q, k, v projections (paper: none; the ClevrTex benchmark copy and
            ObSuRF use them).
        eps: added to the attention before the weighted mean, so that no slot divides by zero.
        init: ``"gaussian"``: slots ~ N(μ, σ²) with μ, log σ learned and shared over slots (paper);
            ``"learned"``: a fixed learned [K, D] table, no sampling (OSRT).
        implicit: one extra update from the detached slots after ``iters`` updates.
        slot_self_attention: multi-head attention among slots (residual) after the GRU (ObSuRF).
        self_attention_heads: heads of that attention.
    """

    def __init__(
        self,
        num_slots: int,
        input_dim: int,
        slot_dim: int,
        iters: int = 3,
        mlp_hidden: int = 128,
        qkv_bias: bool = False,
        eps: float = 1e-8,
        init: Literal["gaussian", "learned"] = "gaussian",
        implicit: bool = False,
        slot_self_attention: bool = False,
        self_attention_heads: int = 4,
    ) -> None:
        super().__init__()
        if init not in ("gaussian", "learned"):
            raise ValueError(f"SlotAttention init must be 'gaussian' or 'learned', got {init!r}")
        if num_slots < 1 or iters < 1:
            raise ValueError(f"SlotAttention needs num_slots >= 1 and iters >= 1, got {num_slots}, {iters}")
        self.num_slots = num_slots
        self.input_dim = input_dim
        self.slot_dim = slot_dim
        self.iters = iters
        self.eps = eps
        self.init = init
        self.implicit = implicit
        self.scale = slot_dim**-0.5

        # Initial slots.
        if init == "gaussian":
            self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_dim))
            self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
        else:
            self.slots_init = nn.Parameter(torch.empty(num_slots, slot_dim))

        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)

        self.project_q = nn.Linear(slot_dim, slot_dim, bias=qkv_bias)
        self.project_k = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        self.project_v = nn.Linear(input_dim, slot_dim, bias=qkv_bias)

        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.self_attention = (
            nn.MultiheadAttention(slot_dim, self_attention_heads, batch_first=True)
            if slot_self_attention
            else None
        )
        self.mlp = nn.Sequential(nn.Linear(slot_dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, slot_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's (Keras) initialisation: Glorot-uniform kernels, zero biases, orthogonal GRU
        recurrent kernels. For the [1,1,D] slot μ and log σ Keras' Glorot uses fan_in 1 and
        fan_out D. Learned slot tables are N(0, 1) (OSRT)."""
        if self.init == "gaussian":
            bound = math.sqrt(6.0 / (1 + self.slot_dim))
            nn.init.uniform_(self.slots_mu, -bound, bound)
            nn.init.uniform_(self.slots_log_sigma, -bound, bound)
        else:
            nn.init.normal_(self.slots_init)
        for linear in (self.project_q, self.project_k, self.project_v, self.mlp[0], self.mlp[2]):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        # GRUCell stacks the three gates (reset, update, new) along dim 0: initialise each gate.
        d = self.slot_dim
        for g in range(3):
            nn.init.xavier_uniform_(self.gru.weight_ih[g * d : (g + 1) * d])
            nn.init.orthogonal_(self.gru.weight_hh[g * d : (g + 1) * d])
        nn.init.zeros_(self.gru.bias_ih)
        nn.init.zeros_(self.gru.bias_hh)

    def initial_slots(self, batch_size: int, num_slots: int | None = None) -> Tensor:
        """[B, K, D] starting slots. Gaussian noise comes from torch's global generator, so a run is
        reproducible under ``torch.manual_seed``."""
        if self.init == "learned":
            if num_slots is not None and num_slots != self.num_slots:
                raise ValueError(
                    f"SlotAttention(init='learned') has a fixed table of {self.num_slots} slots; "
                    f"cannot run with num_slots={num_slots}"
                )
            return self.slots_init.unsqueeze(0).expand(batch_size, -1, -1)
        k = self.num_slots if num_slots is None else num_slots
        mu = self.slots_mu.expand(batch_size, k, -1)
        noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype)
        return mu + self.slots_log_sigma.exp() * noise

    def attention(self, slots: Tensor, k: Tensor) -> Tensor:
        """Attention [B, K, N] normalised over slots (softmax in float32, also under autocast)."""
        q = self.project_q(self.norm_slots(slots))
        logits = torch.einsum("bkd,bnd->bkn", q, k).float() * self.scale
        return logits.softmax(dim=1)

    def step(self, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """One iteration: attend, take the weighted mean of the values, GRU, (self-attention), MLP."""
        b, num_slots, d = slots.shape
        attn = self.attention(slots, k)
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over the inputs
        updates = torch.einsum("bkn,bnd->bkd", weights.to(v.dtype), v)
        slots = self.gru(updates.reshape(b * num_slots, d), slots.reshape(b * num_slots, d))
        slots = slots.reshape(b, num_slots, d)
        if self.self_attention is not None:
            slots = slots + self.self_attention(slots, slots, slots, need_weights=False)[0]
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn

    def forward(
        self, inputs: Tensor, num_slots: int | None = None, slots: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """inputs [B, N, input_dim] -> slots [B, K, slot_dim], attn [B, K, N].

        ``attn`` is the attention of the last iteration, normalised over slots (float32).
        ``slots`` optionally replaces the initial slots (e.g. slots carried over between video
        frames); ``num_slots`` overrides K for the gaussian init.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_dim:
            raise ValueError(
                f"SlotAttention expects inputs [B, N, {self.input_dim}], got {tuple(inputs.shape)}"
            )
        if slots is None:
            slots = self.initial_slots(inputs.shape[0], num_slots)
        inputs = self.norm_inputs(inputs)
        k = self.project_k(inputs)
        v = self.project_v(inputs)
        if self.implicit:
            # The iterations only find the fixed point; its gradient is approximated by
            # differentiating one more update from the detached result. The starting slots get
            # that gradient straight through (BO-QSA, Jia et al. 2023): without it a learned (or
            # gaussian) initialisation would never learn. The added term is exactly zero.
            start = slots
            with torch.no_grad():
                for _ in range(self.iters):
                    slots, attn = self.step(slots, k, v)
            slots, attn = self.step(slots.detach() + (start - start.detach()), k, v)
        else:
            for _ in range(self.iters):
                slots, attn = self.step(slots, k, v)
        return slots, attn
