"""Slot Attention autoencoder (Locatello et al., 2020) for unsupervised object discovery in images.

    image ─▶ CNN encoder ─▶ + soft position embedding ─▶ LayerNorm ─▶ MLP ─▶ Slot Attention ─▶ slots
    slot ─▶ broadcast to 8×8 + position embedding ─▶ transposed-conv decoder ─▶ RGB + mask logit
    masks = softmax over slots of the logits;  recon = Σ_k mask_k · rgb_k;  loss = MSE(recon, image)

With ``masks="attention"`` the decoder draws colour only and the masks are Slot Attention's own
last attention over the slots (see ``SlotAttentionConfig.masks``).

The paper works on images scaled to [−1, 1]; the batch holds [0, 1] images (``objdisc.models.base``),
so the model converts on the way in and returns ``recon`` in [0, 1]. The loss is the per-element mean
squared error on the [−1, 1] scale (the paper's normalisation; the ClevrTex benchmark's per-image sum
differs by the constant factor 3·H·W, i.e. only in the effective learning rate of Adam's first steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks.conv_stacks import conv_relu_stack
from objdisc.models.blocks.position import SoftPositionEmbed
from objdisc.models.blocks.slot_attention import SlotAttention


@dataclass
class SlotAttentionConfig:
    """Defaults: the paper's CLEVR6 object-discovery setting.

    ``qkv_bias`` defaults to True, as in the ClevrTex benchmark copy: the official model has no
    q/k/v biases, but reproductions (lucidrains/slot-attention PR #2) reported the biases matter for
    reaching the paper's numbers; set False for the official architecture.

    ``layernorm`` chooses the encoder LayerNorm: ``"token"`` normalises each position's feature
    vector (paper); ``"map"`` normalises the whole [H·W, C] feature map with an element-wise affine,
    as the benchmark does (unlike the paper) — only for parameter/checkpoint parity with it.
    """

    resolution: int | tuple[int, int] = data_input("image_size", 128)  # input (and output) H = W, or (H, W)
    num_slots: int = data_input("num_slots", 7)  # CLEVR6 (11 for CLEVR10 / ClevrTex, 6 Multi-dSprites, 4 Tetrominoes)
    iters: int = 3
    slot_dim: int = 64
    hidden: int = 64  # CNN channels (encoder and decoder) = width of the tokens fed to Slot Attention
    mlp_hidden: int = 128  # hidden width of the slot MLP
    decoder_init: int = 8  # side of the spatial-broadcast grid
    qkv_bias: bool = True
    layernorm: Literal["token", "map"] = "token"
    implicit: bool = False  # implicit Slot Attention: gradient through one extra, detached step
    # Initial slots: "gaussian" (paper: sampled around a learned mean) or "learned" (one learned
    # start per slot; with `implicit`, BO-QSA's recipe, which binds objects in far fewer steps and
    # keeps slot k the same kind of slot in every scene).
    slot_init: Literal["gaussian", "learned"] = "gaussian"
    # Side of the grid each slot is decoded at (None: the image size). A CPU economy, not a paper
    # setting: the decoder's full-resolution layers cost K times the encoder's, so decoding at half
    # the side and resizing the RGB and mask logits bilinearly to the image saves about 3/4 of them.
    decoder_resolution: int | None = None
    # Convolutions in channels-last (NHWC) memory, weights and activations. A CPU economy: oneDNN's
    # NHWC kernels made the CPU step about a fifth faster (0.31 → 0.24 s at 64², 0.23 → 0.18 s at
    # 32², 2 threads; benchmarks/sa_cpu.py). The numbers computed are the same up to rounding.
    channels_last: bool = False
    # What composes the slots' colours into the image. "decoder" (paper): each slot's decoder also
    # draws a mask logit, softmax over slots. "attention": the masks are Slot Attention's last
    # attention over the slots (one per encoder position, i.e. per pixel: the encoder does not
    # downsample), and the decoder draws colour only. Why: with decoded masks the loss reaches the
    # attention only through the slots' contents; where objects are small (the 2D sprites at 32×32)
    # the model falls within 150 steps into a state where every slot decodes the same mask (1/6
    # everywhere) and the same background, the loss no longer depends on which slot attends where,
    # and the attention's projections get ~1/40 of the other gradients. Composing with the attention
    # puts the partition into the loss directly. Measured (2D sprites, 32×32, 1,500 steps): test
    # FG-ARI 0.55 against 0.04. The price: the attention follows colour, so shaded 3D objects split
    # between slots (synthetic scenes, 2,000 steps: FG-ARI 0.33 against 0.78, PSNR 31.5 dB against 23.0).
    masks: Literal["decoder", "attention"] = "decoder"
    eps: float = 1e-8
    # The paper's optimisation (Adam 4e-4, warm-up 10k, ×0.5 every 100k, batch 64, 500k steps) is
    # a `train:` block, not model config: see pipelines/slot-attention-clevr6/params.yaml.

    def __post_init__(self) -> None:
        if isinstance(self.resolution, list):  # from YAML
            self.resolution = tuple(self.resolution)
        hw = self.hw
        if len(hw) != 2 or min(hw) < 1:
            raise ValueError(
                f"SlotAttentionConfig.resolution must be a positive int or (H, W), got {self.resolution!r}"
            )
        if self.layernorm not in ("token", "map"):
            raise ValueError(
                f"SlotAttentionConfig.layernorm must be 'token' or 'map', got {self.layernorm!r}"
            )
        if self.masks not in ("decoder", "attention"):
            raise ValueError(f"SlotAttentionConfig.masks must be 'decoder' or 'attention', got {self.masks!r}")
        for name in ("num_slots", "iters", "slot_dim", "hidden", "mlp_hidden", "decoder_init"):
            if getattr(self, name) < 1:
                raise ValueError(f"SlotAttentionConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def hw(self) -> tuple[int, int]:
        r = self.resolution
        return (r, r) if isinstance(r, int) else tuple(r)


class Encoder(nn.Module):
    """4 × (Conv 5×5, stride 1, ReLU) → soft position embedding → flatten → LayerNorm → MLP."""

    def __init__(self, cfg: SlotAttentionConfig) -> None:
        super().__init__()
        h, w = cfg.hw
        c = cfg.hidden
        self.convs = conv_relu_stack(3, c)
        self.position = SoftPositionEmbed(c, (h, w))
        self.norm = nn.LayerNorm(c) if cfg.layernorm == "token" else nn.LayerNorm((h * w, c))
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))

    def forward(self, image: Tensor) -> Tensor:
        """image [B, 3, H, W] in [−1, 1] → tokens [B, H·W, hidden]."""
        x = self.convs(image).permute(0, 2, 3, 1)  # channels-last [B, H, W, C]
        x = self.position(x).flatten(1, 2)
        return self.mlp(self.norm(x))


class SpatialBroadcastDecoder(nn.Module):
    """Each slot is tiled over a ``decoder_init``² grid, given positions, and upsampled by stride-2
    transposed convs until the grid covers the image, then decoded to RGB + a mask logit.

    With n = ceil(log2(max(H, W) / decoder_init)) upsampling layers the grid reaches (or passes) the
    image size; when it does not match exactly (non-power-of-two sizes) the output is resized
    bilinearly (antialiased) to (H, W), like the benchmark's resize fallback. The last layer draws
    RGB and a mask logit, or RGB alone where the masks come from the attention."""

    def __init__(self, cfg: SlotAttentionConfig) -> None:
        super().__init__()
        self.hw = cfg.hw
        self.init = cfg.decoder_init
        self.channels_last = cfg.channels_last
        self.channels = 4 if cfg.masks == "decoder" else 3
        c = cfg.hidden
        side = cfg.decoder_resolution or max(self.hw)
        n_up = max(0, math.ceil(math.log2(side / self.init) - 1e-9))
        self.position = SoftPositionEmbed(cfg.slot_dim, (self.init, self.init))
        layers: list[nn.Module] = []
        in_ch = cfg.slot_dim
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(in_ch, c, 5, stride=2, padding=2, output_padding=1), nn.ReLU()]
            in_ch = c
        layers += [nn.ConvTranspose2d(in_ch, c, 5, stride=1, padding=2), nn.ReLU()]
        layers += [nn.ConvTranspose2d(c, self.channels, 3, stride=1, padding=1)]
        self.convs = nn.Sequential(*layers)
        self.out_side = self.init * 2**n_up

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor | None]:
        """slots [B, K, D] → rgb [B, K, 3, H, W] (the model's [−1, 1] scale), mask logits [B, K, H, W]
        (None where the decoder draws colour only)."""
        b, k, d = slots.shape
        x = slots.reshape(b * k, 1, 1, d).expand(-1, self.init, self.init, -1)
        x = self.position(x).permute(0, 3, 1, 2)  # [B·K, C, h, w] with NHWC strides
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        x = self.convs(x)
        if (self.out_side, self.out_side) != self.hw:
            x = F.interpolate(x.float(), size=self.hw, mode="bilinear", align_corners=False, antialias=True)
        x = x.reshape(b, k, self.channels, *self.hw)
        return x[:, :, :3], (x[:, :, 3] if self.channels == 4 else None)


class SlotAttentionAutoEncoder(Model):
    """The paper's object-discovery model. ``forward(batch)`` needs ``batch["image"]`` [B, 3, H, W]
    in [0, 1] at the configured resolution."""

    def __init__(self, cfg: SlotAttentionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SlotAttentionConfig()
        self.encoder = Encoder(cfg)
        self.slot_attention = SlotAttention(
            num_slots=cfg.num_slots,
            input_dim=cfg.hidden,
            slot_dim=cfg.slot_dim,
            iters=cfg.iters,
            mlp_hidden=cfg.mlp_hidden,
            qkv_bias=cfg.qkv_bias,
            eps=cfg.eps,
            init=cfg.slot_init,
            implicit=cfg.implicit,
        )
        self.decoder = SpatialBroadcastDecoder(cfg)
        # Keras defaults of the paper's code: Glorot-uniform kernels, zero biases (the Slot
        # Attention block initialises itself the same way).
        for module in (*self.encoder.modules(), *self.decoder.modules()):
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def encode(self, image: Tensor, num_slots: int | None = None) -> tuple[Tensor, Tensor]:
        """image [B, 3, H, W] in [0, 1] → slots [B, K, D], attention [B, K, H·W] (over slots)."""
        h, w = self.cfg.hw
        if image.dim() != 4 or tuple(image.shape[1:]) != (3, h, w):
            raise ValueError(
                f"SlotAttentionAutoEncoder expects batch['image'] [B, 3, {h}, {w}] "
                f"(config resolution {self.cfg.resolution}), got {tuple(image.shape)}"
            )
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        tokens = self.encoder(image * 2.0 - 1.0)
        return self.slot_attention(tokens, num_slots=num_slots)

    def decode(self, slots: Tensor, attention: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """slots [B, K, D] → recon [B, 3, H, W] and per-slot rgb [B, K, 3, H, W] on the [−1, 1] scale,
        masks [B, K, H, W] (float32, summing to 1 over slots). With ``masks="attention"`` the masks
        are ``attention`` [B, K, H·W] from ``encode``, which must be given."""
        rgb, logits = self.decoder(slots)
        if logits is not None:
            masks = logits.float().softmax(dim=1)
        elif attention is None:
            raise ValueError("SlotAttentionAutoEncoder(masks='attention').decode needs the attention from encode()")
        else:
            masks = attention.float().reshape(*attention.shape[:2], *self.cfg.hw)
        recon = (masks.unsqueeze(2) * rgb).sum(dim=1)
        return recon, rgb, masks

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        image = batch["image"]
        slots, attention = self.encode(image)
        recon, rgb, masks = self.decode(slots, attention)
        loss = F.mse_loss(recon.float(), image.float() * 2.0 - 1.0)
        return ModelOutput(
            loss=loss,
            losses={"mse": loss.detach()},
            recon=((recon.detach() + 1.0) / 2.0).clamp(0.0, 1.0),
            masks=masks,
            slots=slots,
            slot_rgb=((rgb.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0),  # what each slot draws, for pictures
        )
