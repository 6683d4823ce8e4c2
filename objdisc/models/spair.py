"""SPAIR, Spatially Invariant Attend, Infer, Repeat (Crawford & Pineau, AAAI 2019), in the
configuration of the ClevrTex benchmark's re-implementation (karazijal/clevrtex).

    image ─▶ backbone (3×3 convs, CELU + GroupNorm, stride 2^n) ─▶ a feature vector per cell
             (G_h × G_w cells of ``cell_size`` px)
    cells in raster order; context = latents of the visited neighbours (up-left, up, up-right,
    left; a learned "empty" vector off the grid and for the cell's own earlier anchor):
      [feature, context]                       ─▶ box MLP      ─▶ z_where ~ N ─▶ box ─▶ glimpse = STN(image)
      [feature, box, glimpse]                  ─▶ object MLP   ─▶ z_what ~ N
      [feature, context, box, z_what, pass]    ─▶ depth MLP    ─▶ z_depth = σ(sample of N)
      [… , z_depth, pass']                     ─▶ presence MLP ─▶ z_pres ~ RelaxedBernoulli(τ, p)
    z_what ─▶ spatial broadcast decoder ─▶ RGB + α glimpse ─▶ STN⁻¹ ─▶ layer k (α·z_pres)
    image  ─▶ conv encoder ─▶ z_bg ~ N ─▶ broadcast decoder ─▶ background
    recon = Σ_k w_k·(α_k·rgb_k + (1 − α_k)·bg) / Σ_k w_k,   w_k = max(α_k / z_depth_k, 0.01)
    loss  = −log N(image; recon, σ) + β·(KL_where + KL_what + KL_depth + KL_pres) + KL_bg

The box: z_where (4 numbers) → σ(·) → (w, h) ∈ [0, 1] × anchor pixels and a centre in [−½, 1½]
cell units. The presence prior is the paper's count prior (``blocks.priors.CountPrior``): a
geometric prior with parameter p over the number of objects, conditioned cell by cell on the
objects found so far; p is annealed (``itr_lin(10000, 1e-4, .99)``). ``presence`` is the relaxed
sample while training and its straight-through rounding in evaluation (as the reference).

What differs from the reference code, and why:

* Objects are decoded and pasted in one batch after the sequential pass over the cells (the
  reference decodes inside the loop); the decoded glimpses feed nothing in the loop, so the result
  is the same and it is faster.
* ``masks`` are each object's share of the rendered pixel, w_k·α_k / Σ_j w_j, so they are ≥ 0 and
  sum to ≤ 1 (the reference hands the raw α_k·z_pres_k to the evaluator, which can sum past 1 where
  objects overlap); the background channel 1 − Σ masks is then the background's share.
* Boxes are scaled by the image width on x and its height on y (the reference divides both by
  (H, W) in (x, y) order, the same for its square images).
* The REINFORCE baseline MLP exists (parameter parity), frozen: the benchmark's configuration
  (relaxed Bernoulli, ``rein=False``) never uses it.
* Gaussian posteriors use softplus(·) + 1e-6 as standard deviation (the reference clamps at 1e-21,
  which float32 cannot tell from 0).
* The loss is also computed in evaluation mode (the reference only in training), so validation
  logs it; it is the same expression.

Optimisation (reference): Adam 1e-4, gradient clip 1.0, batch 128, ReduceLROnPlateau(×0.1,
patience 3, min 5e-5) on validation MSE (``optimizers``); the learning rate, batch and clip are the
``train:`` block's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks import glimpse as stn
from objdisc.models.blocks.broadcast import SpatialBroadcastDecoder
from objdisc.models.blocks.conv_stacks import ConvNormStack
from objdisc.models.blocks.priors import (
    CountPrior,
    bernoulli_kl,
    gaussian_prior,
    normal,
    presence,
    straight_through,
)
from objdisc.train.optim import OptimizerSpec, ParamGroup, Plateau
from objdisc.train.schedule import Anneal, at

MIN_STD = 1e-6
PRESENCE_PRIOR = Anneal.linear(1e-4, 0.99, 0, 10000)  # Anneal is frozen: a shared default is safe


@dataclass
class SPAIRConfig:
    """Defaults: the ClevrTex benchmark's SPAIR (``experiments/spair.py`` with ``--large``,
    README's CLEVR command: bg_dim 1, σ 0.15); 1,309,089 parameters at 128×128."""

    image_size: int = data_input("image_size", 128)
    cell_size: int = 32  # pixels per cell: the backbone's first log2(cell_size) convs have stride 2
    backbone: tuple[int, ...] = (16, 32, 64, 128, 256)  # 3×3 conv widths (CELU + GroupNorm)
    backbone_groups: tuple[int, ...] = (4, 8, 8, 16, 32)
    features: int = 100  # 1×1 conv to the per-cell feature vector
    features_groups: int = 10
    anchor: int = 48  # a box of w = h = 1 covers anchor × anchor pixels
    glimpse_size: int = 24  # side of the glimpses the object encoder reads and the decoder draws
    what_dim: int = 64
    passthrough: int = 100  # features passed from the box MLP to the depth MLP to the presence MLP
    context: int = 1  # neighbourhood radius in cells (1: the 4 visited neighbours)
    hidden: tuple[int, ...] = (100, 100)  # box, depth and presence MLPs
    encoder_hidden: tuple[int, ...] = (256, 128)  # object encoder MLP
    decoder_hidden: int = 32  # object broadcast decoder
    bg_dim: int = 1  # 0: black background
    bg_encoder: tuple[int, ...] = (32, 32, 64, 64)  # stride-2 3×3 convs, then average pool
    bg_encoder_hidden: int = 128
    bg_decoder_hidden: int = 32
    bg_decode_size: int = 0  # > 0: decode the background at this side and resize (bilinear); 0: full size
    sigma: float | Anneal = 0.15  # pixel likelihood std
    presence_prior: float | Anneal = PRESENCE_PRIOR  # itr_lin(10000, 1e-4, .99)
    temperature: float | Anneal = 1.0  # relaxed Bernoulli
    beta_pres: float | Anneal = 2.7
    beta_where: float | Anneal = 2.7
    beta_what: float | Anneal = 2.7
    beta_depth: float | Anneal = 2.7
    beta_bg: float | Anneal = 1.0
    where_prior_loc: tuple[float, ...] = (-2.197, -2.197, 0.0, 0.0)
    where_prior_scale: tuple[float, ...] = (0.5, 0.5, 1.0, 1.0)
    bg_prior_scale: float = 3.0
    train_empty: bool = True  # learn the "empty" context vector
    plateau: bool = True  # ReduceLROnPlateau on validation MSE (×0.1, patience 3, min 5e-5)

    def __post_init__(self) -> None:
        for name in ("backbone", "backbone_groups", "hidden", "encoder_hidden", "bg_encoder", "where_prior_loc", "where_prior_scale"):
            setattr(self, name, tuple(getattr(self, name)))
        n = round(math.log2(self.cell_size)) if self.cell_size > 0 else -1
        if self.cell_size < 1 or 2**n != self.cell_size or n > len(self.backbone):
            raise ValueError(f"SPAIRConfig.cell_size must be a power of 2 up to 2^{len(self.backbone)}, got {self.cell_size}")
        if self.image_size % self.cell_size:
            raise ValueError(f"SPAIRConfig.image_size {self.image_size} is not a multiple of cell_size {self.cell_size}")
        if len(self.backbone_groups) != len(self.backbone):
            raise ValueError("SPAIRConfig.backbone_groups needs one entry per backbone layer")
        if len(self.where_prior_loc) != 4 or len(self.where_prior_scale) != 4:
            raise ValueError("SPAIRConfig.where_prior_loc/scale need 4 numbers (w, h, x, y)")
        for name in ("anchor", "glimpse_size", "what_dim", "features", "decoder_hidden", "bg_encoder_hidden", "bg_decoder_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"SPAIRConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.bg_dim < 0 or self.passthrough < 0 or self.context < 0:
            raise ValueError("SPAIRConfig.bg_dim, passthrough and context must be >= 0")

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size // self.cell_size, self.image_size // self.cell_size

    @property
    def state_dim(self) -> int:
        """Latents of one cell: z_pres 1 + z_where 4 + z_depth 1 + z_what."""
        return 6 + self.what_dim

    @property
    def context_len(self) -> int:
        """Context vectors per cell: the visited neighbours within the radius, plus one for the
        cell's own earlier anchor (always empty with one object per cell)."""
        return (2 * self.context + 1) ** 2 // 2 + 1


class MLP(nn.Module):
    """Linear layers with ReLU between; the last layer's first ``out`` outputs are returned as they
    are, the remaining ``passthrough`` ones after a ReLU (features handed to the next MLP)."""

    def __init__(self, in_features: int, out: int, hidden: tuple[int, ...] = (), passthrough: int = 0) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out + passthrough]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        x = self.layers[-1](x)
        return x[:, : self.out], torch.relu(x[:, self.out :])


class BackgroundEncoder(nn.Module):
    """Stride-2 3×3 convs with ReLU → global average pool → MLP → (mean, raw std) of z_bg."""

    def __init__(self, cfg: SPAIRConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in cfg.bg_encoder:
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU()]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, cfg.bg_encoder_hidden), nn.ReLU()]
        layers += [nn.Linear(cfg.bg_encoder_hidden, 2 * cfg.bg_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(image).chunk(2, dim=1)


class SPAIR(Model):
    """SPAIR on ``batch["image"]`` [B, 3, H, W] in [0, 1] (H = W = ``image_size``)."""

    def __init__(self, cfg: SPAIRConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SPAIRConfig()
        n_down = round(math.log2(cfg.cell_size))
        stages = [(w, 3, 2 if i < n_down else 1, g) for i, (w, g) in enumerate(zip(cfg.backbone, cfg.backbone_groups))]
        self.backbone = ConvNormStack(3, [*stages, (cfg.features, 1, 1, cfg.features_groups)])
        context = cfg.features + cfg.context_len * cfg.state_dim
        self.empty = nn.Parameter(torch.zeros(cfg.state_dim), requires_grad=cfg.train_empty)
        self.box_net = MLP(context, 8, cfg.hidden, cfg.passthrough)
        self.depth_net = MLP(context + 4 + cfg.what_dim + cfg.passthrough, 2, cfg.hidden, cfg.passthrough)
        self.presence_net = MLP(context + 4 + cfg.what_dim + cfg.passthrough + 1, 1, cfg.hidden)
        self.object_encoder = MLP(cfg.features + 4 + 3 * cfg.glimpse_size**2, 2 * cfg.what_dim, cfg.encoder_hidden)
        g = (cfg.glimpse_size, cfg.glimpse_size)
        self.object_decoder = SpatialBroadcastDecoder(cfg.what_dim, g, [cfg.decoder_hidden] * 4, out_channels=4)
        self.baseline = MLP(context, 1)  # REINFORCE baseline of the reference: unused, frozen
        self.baseline.requires_grad_(False)
        if cfg.bg_dim > 0:
            self.bg_encoder = BackgroundEncoder(cfg)
            hw = (cfg.image_size, cfg.image_size)
            small = (cfg.bg_decode_size, cfg.bg_decode_size) if cfg.bg_decode_size else None
            self.bg_decoder = SpatialBroadcastDecoder(cfg.bg_dim, hw, [cfg.bg_decoder_hidden] * 4, out_channels=3, decode_hw=small)
        self.register_buffer("box_min", torch.tensor([0.0, 0.0, -0.5, -0.5]), persistent=False)
        self.register_buffer("box_max", torch.tensor([1.0, 1.0, 1.5, 1.5]), persistent=False)
        r = cfg.context
        offsets = [(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1)]
        self.neighbours = offsets[: len(offsets) // 2]  # the cells visited before (0, 0)

    def optimizers(self, train) -> list[OptimizerSpec]:
        plateau = Plateau("mse", "min", factor=0.1, patience=3, min_lr=5e-5) if self.cfg.plateau else None
        return [OptimizerSpec([ParamGroup([p for p in self.parameters() if p.requires_grad])], plateau=plateau)]

    # ------------------------------------------------------------------------------ inference

    def box(self, z_where: Tensor, cell: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """z_where [B, 4] of cell (row, col) → box [B, 4] ((w, h) ∈ [0,1], centre in cell units),
        glimpse scale [B, 2] and shift [B, 2] in image coordinates."""
        size = self.cfg.image_size
        box = (self.box_max - self.box_min) * torch.sigmoid(z_where.clamp(-10.0, 10.0)) + self.box_min
        scale = box[:, :2] * self.cfg.anchor / size
        row, col = cell
        gh, gw = self.cfg.grid
        shift = 2.0 * (box[:, 2:] + box.new_tensor([col, row])) / box.new_tensor([gw, gh]) - 1.0
        return box, scale, shift

    def background(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The background [B, 3, H, W] and its KL [B] (black and 0 without a background latent)."""
        if self.cfg.bg_dim == 0:
            return torch.zeros_like(image), image.new_zeros(image.shape[0])
        mean, raw = self.bg_encoder(image)
        q = normal(mean, raw, MIN_STD)
        z = q.rsample()
        kl = kl_divergence(q, gaussian_prior(0.0, self.cfg.bg_prior_scale, mean)).sum(1)
        return torch.sigmoid(self.bg_decoder(z)), kl

    def infer(self, image: Tensor, step: int) -> dict[str, Tensor]:
        """The sequential pass over the cells: every cell's latents, boxes and KL terms [B, N, ...]."""
        cfg = self.cfg
        b = image.shape[0]
        feats = self.backbone(image)
        gh, gw = feats.shape[-2:]
        if (gh, gw) != cfg.grid:
            raise ValueError(f"SPAIR expects {cfg.image_size}×{cfg.image_size} images, got {tuple(image.shape[-2:])}")
        temperature = at(cfg.temperature, step)
        prior = CountPrior(b, gh * gw, at(cfg.presence_prior, step), image)
        empty = self.empty.expand(b, -1)
        states: dict[tuple[int, int], Tensor] = {}
        keys = ("where_mean", "where_std", "what_mean", "what_std", "depth_mean", "depth_std", "pres_prob", "pres_prior", "z_pres", "z_depth", "z_what", "scale", "shift")
        out: dict[str, list[Tensor]] = {k: [] for k in keys}
        for i in range(gh * gw):
            row, col = divmod(i, gw)
            feat = feats[:, :, row, col]
            context = [states.get((row + dr, col + dc), empty) for dr, dc in self.neighbours] + [empty]
            where_out, passed = self.box_net(torch.cat([feat, *context], 1))
            where_mean, where_raw = where_out.chunk(2, 1)
            q_where = normal(where_mean, where_raw, MIN_STD)
            z_where = q_where.rsample()
            box, scale, shift = self.box(z_where, (row, col))
            glimpse = stn.extract(image, scale, shift, cfg.glimpse_size)
            what_out, _ = self.object_encoder(torch.cat([feat, box, glimpse.flatten(1)], 1))
            what_mean, what_raw = what_out.chunk(2, 1)
            q_what = normal(what_mean, what_raw, MIN_STD)
            z_what = q_what.rsample()
            depth_out, passed = self.depth_net(torch.cat([feat, *context, box, z_what, passed], 1))
            q_depth = normal(depth_out[:, :1], depth_out[:, 1:], MIN_STD)
            z_depth = torch.sigmoid(q_depth.rsample().clamp(-10.0, 10.0))
            pres_logit, _ = self.presence_net(torch.cat([feat, *context, box, z_what, z_depth, passed], 1))
            pres_prob = torch.sigmoid(pres_logit)
            z_pres = presence(temperature, probs=pres_prob).rsample()
            if not self.training:
                z_pres = straight_through(z_pres)
            out["pres_prior"].append(prior.probs(i))
            prior.update(z_pres, i)
            states[(row, col)] = torch.cat([z_pres, z_where, z_depth, z_what], 1)
            for key, value in (
                ("where_mean", q_where.mean), ("where_std", q_where.stddev), ("what_mean", q_what.mean),
                ("what_std", q_what.stddev), ("depth_mean", q_depth.mean), ("depth_std", q_depth.stddev),
                ("pres_prob", pres_prob), ("z_pres", z_pres), ("z_depth", z_depth), ("z_what", z_what),
                ("scale", scale), ("shift", shift),
            ):  # fmt: skip
                out[key].append(value)
        return {k: torch.stack(v, dim=1) for k, v in out.items()}

    # ------------------------------------------------------------------------------ forward

    picture = stn.picture_with_background_slot  # the family's grid, background as slot 0

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        cfg = self.cfg
        image = batch["image"]
        b, _, h, w = image.shape
        lat = self.infer(image, step)
        n = lat["z_pres"].shape[1]
        background, kl_bg = self.background(image)

        # Decode every object at once and paste it into its own layer.
        rgba = torch.sigmoid(self.object_decoder(lat["z_what"].flatten(0, 1))).unflatten(0, (b, n))
        layers = stn.place_cells(rgba, lat["scale"], lat["shift"], (h, w))
        rgb, alpha = layers[:, :, :3], layers[:, :, 3:] * lat["z_pres"][..., None, None]  # [B,N,3|1,H,W]
        weight = torch.maximum(alpha / lat["z_depth"][..., None, None], alpha.new_tensor(0.01))
        total = weight.sum(1).clamp_min(1e-6)
        recon = (weight * (alpha * rgb + (1.0 - alpha) * background[:, None])).sum(1) / total
        masks = (weight * alpha).squeeze(2) / total  # each object's share of the pixel

        beta = {k: at(getattr(cfg, f"beta_{k}"), step) for k in ("pres", "where", "what", "depth", "bg")}
        q_where = torch.distributions.Normal(lat["where_mean"], lat["where_std"])
        kl_where = kl_divergence(q_where, gaussian_prior(cfg.where_prior_loc, cfg.where_prior_scale, lat["where_mean"])).sum((1, 2))
        q_what = torch.distributions.Normal(lat["what_mean"], lat["what_std"])
        kl_what = kl_divergence(q_what, gaussian_prior(0.0, 1.0, lat["what_mean"])).sum((1, 2))
        q_depth = torch.distributions.Normal(lat["depth_mean"], lat["depth_std"])
        kl_depth = kl_divergence(q_depth, gaussian_prior(0.0, 1.0, lat["depth_mean"])).sum((1, 2))
        kl_pres = bernoulli_kl(lat["pres_prob"], lat["pres_prior"]).sum((1, 2))
        nll = -torch.distributions.Normal(recon, at(cfg.sigma, step)).log_prob(image).sum((1, 2, 3))
        kl = beta["where"] * kl_where + beta["what"] * kl_what + beta["depth"] * kl_depth + beta["pres"] * kl_pres
        loss = (nll + kl + beta["bg"] * kl_bg).mean()

        presence_ = lat["z_pres"].squeeze(-1)
        return ModelOutput(
            loss=loss,
            losses={
                "nll": nll.mean().detach(),
                "kl_where": kl_where.mean().detach(),
                "kl_what": kl_what.mean().detach(),
                "kl_depth": kl_depth.mean().detach(),
                "kl_pres": kl_pres.mean().detach(),
                "kl_bg": kl_bg.mean().detach(),
                "presence_prior": torch.tensor(at(cfg.presence_prior, step)),
                "count": presence_.detach().round().sum(1).mean(),
            },
            recon=recon.detach().clamp(0.0, 1.0),
            masks=masks.detach(),
            masks_have_background=False,
            slots=lat["z_what"].detach(),
            slot_rgb=rgb.detach(),
            boxes=stn.boxes(lat["scale"], lat["shift"], (h, w), clip=True).detach(),
            presence=presence_.detach(),
            extras={"background": background.detach(), "presence_prob": lat["pres_prob"].squeeze(-1).detach()},
        )


PRESETS = {
    "benchmark": SPAIRConfig(),
    # README's ClevrTex command: bg_dim 4, σ itr_lin(50000, 0.5, 0.15), prior itr_lin(50000, 1e-4, .99).
    "benchmark-clevrtex": SPAIRConfig(
        bg_dim=4, sigma=Anneal.linear(0.5, 0.15, 0, 50000), presence_prior=Anneal.linear(1e-4, 0.99, 0, 50000)
    ),
    # The 2D proving ground (64×64 sprites, 2–5 objects of 10–24 px): 4×4 cells of 16 px.
    "cpu": SPAIRConfig(
        image_size=64,
        cell_size=16,
        backbone=(16, 32, 32, 64, 64),
        backbone_groups=(4, 8, 8, 16, 16),
        features=32,
        features_groups=8,
        anchor=32,
        glimpse_size=12,
        what_dim=16,
        passthrough=32,
        hidden=(64, 64),
        encoder_hidden=(128, 64),
        decoder_hidden=16,
        bg_dim=1,
        bg_encoder=(16, 16, 32, 32),
        bg_encoder_hidden=32,
        bg_decoder_hidden=16,
        bg_decode_size=16,
        presence_prior=Anneal.linear(1e-4, 0.99, 0, 1000),
    ),
}

__all__ = ["PRESETS", "SPAIR", "SPAIRConfig"]
