"""SLATE (Singh et al. 2022, "Illiterate DALL-E Learns to Compose"), as the HHousen seed trains it:
Slot Attention over discrete image tokens, decoded by an autoregressive transformer.

    image ─▶ dVAE encoder ─▶ token log-probabilities [V, H/4, W/4]
        ├─ Gumbel-softmax (τ annealed 1 → 0.1) ─▶ dVAE decoder ─▶ recon;   MSE (sum / B)
        └─ hard sample, detached ─▶ tokens z₁…z_N
    [BOS, z₁…z_N] ─▶ embedding + learned positions (dropout) ─▶ e₀…e_N
    e₁…e_N ─▶ LayerNorm + MLP ─▶ (implicit) Slot Attention ─▶ slots ─▶ Linear ─▶ memory
    e₀…e_{N−1} ─▶ causal transformer decoder (cross-attending to memory) ─▶ logits of z₁…z_N
    loss = cross-entropy (sum over tokens, mean over images) + dVAE MSE

The tokens are detached: the transformer and Slot Attention never train the dVAE, which learns
from its own reconstruction only (tests/models/test_slate.py checks the gradient).

Masks: the last decoder block's cross-attention — for every token, how much each slot is read to
predict it (averaged over heads; sums to 1 over slots) — upsampled from the token grid to pixels
(``masks="slots"`` takes Slot Attention's attention instead, as HHousen's pictures do). Evaluation
(``model.eval()``) reconstructs autoregressively: the slots of the image's own (argmax) tokens
condition a greedy decoding of all N tokens, which the dVAE decoder turns into the image that the
metrics score; the decoding runs one batched single-token pass per position with a key/value cache
(``generate``). The picture adds the dVAE reconstruction, the autoregressive one and each slot's
attention.

Optimisation (HHousen): Adam, dVAE 3e-4 constant, the rest 1e-4 (the train block's rate) with a
30k-step linear warm-up, both ×0.5 on a validation-loss plateau (patience 4), gradient clipping
1.0, batch 50.

What differs from the reference code, and why:

* The reference keeps each decoder block's causal mask as a boolean ``nn.Parameter`` (1024² per
  block): 8 × 1,048,576 = 8,388,608 of its 16,096,195 "parameters" never train. Here the mask is
  computed, so the model has 7,707,587 parameters; the count test checks 7,707,587 + 8,388,608 =
  16,096,195.
* HHousen's schedule multiplies with a LambdaLR that resets the rate every step, so its
  ReduceLROnPlateau cut is overwritten at the next step; here the plateau factor composes with the
  warm-up (``objdisc.train.optim``), as intended.
* The validation / evaluation loss and masks use the argmax tokens (deterministic) where the
  reference's validation step sampled them; the training targets are Gumbel samples as in the
  reference.
* Slot Attention's initial slots use the block's Keras-style initialisation (HHousen: PyTorch
  Xavier on the [1, 1, D] tensors) — same distributions family, different bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc import viz
from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks.dvae import DVAE, hard_tokens, relaxed_tokens
from objdisc.models.blocks.pictures import stack_pictures
from objdisc.models.blocks.slot_attention import SlotAttention
from objdisc.models.blocks.transformer_decoder import TransformerDecoder
from objdisc.train.optim import OptimizerSpec, ParamGroup, Plateau
from objdisc.train.schedule import Anneal, WarmupDecay, at


@dataclass
class SLATEConfig:
    """Defaults: HHousen's SLATE at 128×128 (object_discovery/params.py ``slate_params``, CLEVR6)."""

    resolution: int = data_input("image_size", 128)
    num_slots: int = data_input("num_slots", 7)
    vocab_size: int = 4096
    d_model: int = 192
    num_heads: int = 8
    num_blocks: int = 8  # decoder blocks
    dropout: float = 0.1
    slot_size: int = 192
    mlp_hidden: int = 192
    iters: int = 3  # Slot Attention iterations (+ 1 implicit step)
    dvae_hidden: int = 64
    tau: float | Anneal = Anneal.cosine(1.0, 0.1, 0, 30000)  # Gumbel-softmax temperature
    hard: bool = False  # straight-through one-hot samples for the dVAE decoder
    lr_dvae: float = 3e-4  # absolute, constant; the rest trains at train.lr with the warm-up below
    warmup_steps: int = 30000
    plateau_factor: float = 0.5
    plateau_patience: int = 4
    masks: Literal["decoder", "slots"] = "decoder"

    def __post_init__(self) -> None:
        if isinstance(self.tau, dict):
            self.tau = Anneal(**self.tau)
        if self.resolution % DVAE.downsample:
            raise ValueError(f"SLATEConfig.resolution must be a multiple of {DVAE.downsample}, got {self.resolution}")
        for name in ("num_slots", "vocab_size", "d_model", "num_heads", "num_blocks", "slot_size", "mlp_hidden", "iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"SLATEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"SLATEConfig.d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.masks not in ("decoder", "slots"):
            raise ValueError(f"SLATEConfig.masks must be 'decoder' or 'slots', got {self.masks!r}")

    @property
    def grid(self) -> int:
        return self.resolution // DVAE.downsample

    @property
    def num_tokens(self) -> int:
        return self.grid**2


def _xavier(d_in: int, d_out: int, bias: bool = True, init: str = "xavier") -> nn.Linear:
    m = nn.Linear(d_in, d_out, bias=bias)
    if init == "kaiming":
        nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(m.weight)
    if bias:
        nn.init.zeros_(m.bias)
    return m


class SLATE(Model):
    def __init__(self, cfg: SLATEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SLATEConfig()
        d = cfg.d_model
        self.dvae = DVAE(cfg.vocab_size, cfg.dvae_hidden)
        self.dictionary = nn.Embedding(cfg.vocab_size + 1, d)  # index 0: BOS; token t: t + 1
        self.position = nn.Parameter(torch.empty(1, cfg.num_tokens + 1, d))
        nn.init.trunc_normal_(self.position)
        self.position_dropout = nn.Dropout(cfg.dropout)
        self.input_norm = nn.LayerNorm(d)
        self.input_mlp = nn.Sequential(_xavier(d, d, init="kaiming"), nn.ReLU(), _xavier(d, d))
        self.slot_attention = SlotAttention(
            num_slots=cfg.num_slots, input_dim=d, slot_dim=cfg.slot_size, iters=cfg.iters,
            mlp_hidden=cfg.mlp_hidden, qkv_bias=False, implicit=True,
        )  # fmt: skip
        self.slot_proj = _xavier(cfg.slot_size, d, bias=False)
        self.decoder = TransformerDecoder(cfg.num_blocks, d, cfg.num_heads, cfg.dropout)
        self.out = _xavier(d, cfg.vocab_size, bias=False)

    # ------------------------------------------------------------------ pieces

    def optimizers(self, train) -> list[OptimizerSpec]:
        cfg = self.cfg
        dvae = list(self.dvae.parameters())
        ids = {id(p) for p in dvae}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [
            OptimizerSpec(
                [
                    ParamGroup(dvae, "dvae", lr=cfg.lr_dvae, weight_decay=0.0, schedule=Anneal.constant(1.0)),
                    ParamGroup(rest, "main", weight_decay=0.0, schedule=WarmupDecay(cfg.warmup_steps)),
                ],
                name="adam",
                plateau=Plateau("loss", "min", cfg.plateau_factor, cfg.plateau_patience),
            )
        ]

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens [B, N] → [B, N+1, d]: BOS then the tokens, plus positions (dropout in training)."""
        bos = tokens.new_zeros(tokens.shape[0], 1)
        x = self.dictionary(torch.cat([bos, tokens + 1], 1))
        return self.position_dropout(x + self.position[:, : x.shape[1]])

    def encode_slots(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens [B, N] → embeddings [B, N+1, d], slots [B, K, D], attention [B, K, N] (over slots)."""
        emb = self.embed(tokens)
        slots, attn = self.slot_attention(self.input_mlp(self.input_norm(emb[:, 1:])))
        return emb, slots, attn

    def tokens_to_image(self, tokens: Tensor) -> Tensor:
        """tokens [B, N] → the dVAE decoding [B, 3, H, W] (unclamped)."""
        g = self.cfg.grid
        one_hot = F.one_hot(tokens, self.cfg.vocab_size).to(self.position.dtype)
        return self.dvae.decode(one_hot.view(-1, g, g, self.cfg.vocab_size).permute(0, 3, 1, 2))

    @torch.no_grad()
    def generate(self, slots: Tensor, length: int | None = None) -> Tensor:
        """Greedy autoregressive decoding of ``length`` (default all N) tokens [B, length] from
        slots [B, K, D]: one batched single-token pass per position, keys and values cached."""
        length = self.cfg.num_tokens if length is None else length
        memory = self.slot_proj(slots)
        b = slots.shape[0]
        cache = self.decoder.start(memory, length)
        tokens = torch.zeros(b, length, dtype=torch.long, device=slots.device)
        x = self.dictionary(tokens.new_zeros(b, 1)) + self.position[:, :1]
        for t in range(length):
            y = self.decoder.step(x, cache)
            tokens[:, t] = self.out(y[:, 0]).argmax(-1)
            if t + 1 < length:
                x = self.dictionary(tokens[:, t : t + 1] + 1) + self.position[:, t + 1 : t + 2]
        return tokens

    @torch.no_grad()
    def generate_naive(self, slots: Tensor, length: int | None = None) -> Tensor:
        """The reference's greedy decoding: the whole prefix through the decoder at every position
        (for tests: ``generate`` must give the same tokens)."""
        length = self.cfg.num_tokens if length is None else length
        memory = self.slot_proj(slots)
        tokens = torch.zeros(slots.shape[0], 0, dtype=torch.long, device=slots.device)
        for _ in range(length):
            y, _ = self.decoder(self.embed(tokens)[:, : tokens.shape[1] + 1], memory)
            tokens = torch.cat([tokens, self.out(y[:, -1]).argmax(-1, keepdim=True)], 1)
        return tokens

    def upsample(self, maps: Tensor) -> Tensor:
        """[B, K, N] per-token maps → [B, K, H, W] (each token covers a 4×4 patch)."""
        g, r = self.cfg.grid, self.cfg.resolution
        return maps.unflatten(-1, (g, g)).repeat_interleave(r // g, -2).repeat_interleave(r // g, -1)

    # ------------------------------------------------------------------ forward

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        cfg = self.cfg
        image = batch["image"]
        r = cfg.resolution
        if image.dim() != 4 or tuple(image.shape[1:]) != (3, r, r):
            raise ValueError(f"SLATE expects batch['image'] [B, 3, {r}, {r}], got {tuple(image.shape)}")
        B = image.shape[0]
        tau = at(cfg.tau, step)
        log_probs = self.dvae.encode(image)  # [B, V, g, g]
        dvae_recon = self.dvae.decode(relaxed_tokens(log_probs, tau, cfg.hard))
        mse = ((image - dvae_recon) ** 2).sum() / B
        if self.training:
            tokens = hard_tokens(log_probs, tau).flatten(1)  # [B, N], detached
        else:
            tokens = log_probs.detach().argmax(1).flatten(1)
        emb, slots, attn = self.encode_slots(tokens)
        y, cross = self.decoder(emb[:, :-1], self.slot_proj(slots), need_weights=True)
        logits = self.out(y)
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="sum") / B
        loss = ce + mse

        maps = cross.transpose(1, 2) if cfg.masks == "decoder" else attn  # [B, K, N], sums to 1 over K
        masks = self.upsample(maps.detach().float())
        extras = {"attention": self.upsample(attn.detach().float()), "tokens": tokens}
        if self.training:
            recon = dvae_recon.detach()
        else:
            generated = self.generate(slots)
            recon = self.tokens_to_image(generated)
            extras["dvae_recon"] = self.tokens_to_image(tokens).clamp(0, 1)
            extras["generated"] = generated
        return ModelOutput(
            loss=loss,
            losses={"cross_entropy": ce.detach(), "mse": mse.detach(), "tau": torch.tensor(tau)},
            recon=recon.clamp(0, 1),
            masks=masks,
            masks_have_background=True,
            slots=slots,
            extras=extras,
        )

    # ------------------------------------------------------------------ pictures

    def picture(self, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """The family's grid (input, autoregressive reconstruction, segmentation, slots), then per
        scene: the dVAE reconstruction of its tokens, the autoregressive reconstruction, and each
        slot's Slot Attention map over the image (image · attention + white · (1 − attention))."""
        grid = self.family.picture(self, batch, out, limit)
        n = min(limit, batch["image"].shape[0])
        dvae = out.extras.get("dvae_recon", out.recon)
        rows = []
        for b in range(n):
            image = batch["image"][b].float().cpu()
            row = [viz.to_image(dvae[b].float().cpu()), viz.to_image(out.recon[b].float().cpu())]
            for k in range(out.extras["attention"].shape[1]):
                a = out.extras["attention"][b, k][None].cpu()
                row.append(viz.to_image(image * a + (1 - a)))
            rows.append(row)
        k = out.extras["attention"].shape[1]
        labels = ["dVAE recon", "autoregressive" if "generated" in out.extras else "recon (dVAE)"]
        labels += [f"attention {i}" for i in range(k)]
        return stack_pictures(grid, viz.image_grid(rows, labels=labels))


PRESETS = {
    "hhousen": SLATEConfig(),
    # The proving ground (64×64 sprites → 16×16 = 256 tokens): a small vocabulary, a narrow
    # 2-block decoder without dropout (on CPU the dropout masks cost a fifth of a step), a shorter
    # warm-up and temperature schedule.
    "cpu": SLATEConfig(
        resolution=64, num_slots=6, vocab_size=128, d_model=64, num_heads=4, num_blocks=2, dropout=0.0,
        slot_size=64, mlp_hidden=64, dvae_hidden=32, tau=Anneal.cosine(1.0, 0.1, 0, 400), warmup_steps=100, lr_dvae=3e-3,
    ),
}

__all__ = ["PRESETS", "SLATE", "SLATEConfig"]
