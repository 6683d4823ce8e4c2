"""DTI-Sprites (Monnier et al. 2021, "Unsupervised Layered Image Decomposition into Object
Prototypes"): an image is explained as a background plus L layers, each layer one of K learned
sprites (an RGB prototype with a mask, or the empty sprite) deformed by transformations that a
network predicts from the image.

    image ─▶ ResNet-18 (2×2 average pool) ─▶ feature f
    prototypes + masks [K] ─▶ per-layer sprite transformations (identity, then projective: curriculum)
        ─▶ per-layer colour + position (sprite frame → image) ─▶ candidate layers [L, K]
    background ─▶ colour transformation ─▶ background layer
    f ─▶ occlusion predictor ─▶ pairwise "layer i in front of layer j" probabilities
    greedy selection (no gradient, 3 sweeps): each layer takes the sprite that best explains the
        image given the others ─▶ composition Σ_l m_l Π_{j≠l}(1 − occ_jl m_j) x_l ─▶ recon
    loss = MSE(recon, image)  (+ λ_empty for every non-empty sprite inside the selection)

Every transformation network is an MLP (f → 128 → 128 → parameters) whose last layer starts at
zero, i.e. at the neutral transformation: colour ×1 + 0, projective = identity homography, and
position = the sprite centred at half the canvas side (the reference's neutral position is
scale exp(0) + 1 = 2 in ``affine_grid`` coordinates). The L × K sprite MLPs (110 at the
benchmark setting) are evaluated as one batched MLP (``BatchedMLP``), parameter for parameter
the reference's separate ``nn.Linear`` stacks.

Training schedule (all a function of the step, so resumable): sprites (prototypes and masks) get
no update before ``freeze_sprites_until`` (``ParamGroup(frozen_until=...)``; while frozen the empty
sprite is not selectable and nothing is re-assigned); the sprite transformation curriculum adds
the projective transformation at ``curriculum[0]``; uniform noise of ±``noise`` is injected into
the transformed masks during training (inside each sprite's support); every ``reassign_every``
steps the sprites of one random layer used less than ``reassign_threshold / num_sprites`` of the
most used one are re-initialised from it (prototype + 1e-4 noise, mask, transformation networks).
The usage since the last check lives in buffers, so the check is in every checkpoint.

Optimisation (benchmark experiments/dtisprites.py): Adam at the train block's rate (1e-4) in three
groups — sprites (frozen at first), background, and the transformation/occlusion networks with
weight decay 1e-6 and ×0.1 at epochs 250 and 400 — all with a 1000-step linear warm-up.

What differs from the reference code, and why:

* The benchmark put the shared ResNet in the transformer parameter group once per transformer
  (12 times at the benchmark setting), so Adam updated it 12 times per step; here every parameter
  is in exactly one group.
* Re-assignment copies parameters but not Adam's moments: the protocol's ``after_step`` has no
  handle on the optimiser (the reference copies the mask rows' moments and *aliases* the
  transformation networks' moment tensors, which then get updated twice per step). It happens after
  the update of its step, not between the forward and the backward as in the reference.
* The background's "mean of 100 training images" is the mean of the first training batch, taken
  by the first training forward (``background_init='mean'``; a buffer records that it happened).
* The projective warp samples with ``align_corners=False`` pixel centres (kornia's
  ``homography_warp`` used corner-aligned coordinates), so the identity homography reproduces a
  sprite exactly.
* The greedy selection computes, for each layer, the composition of the other layers once and then
  scores all K candidates in closed form (the same numbers as the reference's K full compositions).
* Epoch-based milestones are steps: the ClevrTex benchmark trains on 40,000 images at batch 32,
  1,250 steps per epoch (freeze 40 epochs = 50,000; curriculum 150 = 187,500; step-downs 250 and
  400 = 312,500 and 500,000; 450 epochs = 562,500 steps).
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
from objdisc.models.blocks.pictures import stack_pictures
from objdisc.models.blocks.resnet import ResNet
from objdisc.models.blocks.transforms import BatchedMLP, position_theta, projective_grid, soft_clamp, transform_color
from objdisc.train.optim import OptimizerSpec, ParamGroup
from objdisc.train.schedule import Anneal, WarmupDecay

STEPS_PER_EPOCH = 1250  # ClevrTex train split (40,000 images) at batch 32
TRANSFORMS = {"identity": 0, "color": 6, "position": 3, "projective": 9}  # name → number of parameters


@dataclass
class DTISpritesConfig:
    """Defaults: the ClevrTex benchmark's DTI-Sprites (experiments/dtisprites.py), 48,235,051
    parameters at 128×128 with 11 slots (10 layers + background)."""

    image_size: int = data_input("image_size", 128)
    num_slots: int = data_input("num_slots", 11)  # background + layers (L = num_slots − 1)
    num_sprites: int = 10  # K prototypes (+ the empty sprite)
    empty_sprite: bool = True
    lambda_empty: float = 1e-4  # added to the error of every non-empty sprite in the greedy selection
    sprite_size: int = 40
    proto_init: float = 0.9  # constant initial prototype colour
    mask_init_std: float = 10.0  # Gaussian initial masks, std in pixels
    background_init: Literal["mean", "constant"] = "mean"  # mean of the first training batch, or 0.5
    sprite_transforms: tuple[str, ...] = ("identity", "projective")
    layer_transforms: tuple[str, ...] = ("color", "position")
    background_transforms: tuple[str, ...] = ("color",)
    curriculum: tuple[int, ...] = (150 * STEPS_PER_EPOCH,)  # step at which each later sprite transformation starts
    encoder_stem: int = 64
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)  # ResNet-18 stages
    encoder_pool: int = 2  # adaptive average pool to pool × pool: features = widths[-1] · pool²
    encoder_downsample: int | None = None  # stride-2 steps besides the max-pool; None: the stem and every stage but the first (ResNet-18: 32× in all)
    mlp_hidden: int = 128
    mlp_layers: int = 2  # hidden layers of every transformation / occlusion MLP
    occlusion: bool = True  # predict the layer order (False: fixed, later layers in front)
    greedy_iters: int = 3
    noise: float = 0.4  # uniform mask noise during training
    clamp_leak: float = 0.01  # soft clamp: slope outside [0, 1]
    freeze_sprites_until: int = 40 * STEPS_PER_EPOCH
    reassign_every: int = 250
    reassign_threshold: float = 0.2  # a sprite is re-assigned below threshold / num_sprites of the most used
    warmup_steps: int = 1000
    sprite_lr_scale: float = 1.0  # prototypes and masks train at train.lr × this (the reference: 1)
    transformer_milestones: tuple[int, ...] = (250 * STEPS_PER_EPOCH, 400 * STEPS_PER_EPOCH)
    transformer_gamma: float = 0.1
    transformer_weight_decay: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("sprite_transforms", "layer_transforms", "background_transforms", "curriculum",
                     "encoder_widths", "transformer_milestones"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.num_slots < 2:
            raise ValueError(f"DTISpritesConfig.num_slots must be >= 2 (background + layers), got {self.num_slots}")
        if self.encoder_downsample is not None and not 0 <= self.encoder_downsample <= len(self.encoder_widths):
            raise ValueError(
                f"DTISpritesConfig.encoder_downsample must be in [0, {len(self.encoder_widths)}] (the stem and "
                f"every stage but the first), got {self.encoder_downsample}"
            )
        for name in ("image_size", "num_sprites", "sprite_size", "greedy_iters", "reassign_every", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"DTISpritesConfig.{name} must be >= 1, got {getattr(self, name)}")
        for group in ("sprite_transforms", "layer_transforms", "background_transforms"):
            bad = [t for t in getattr(self, group) if t not in TRANSFORMS]
            if bad:
                raise ValueError(f"DTISpritesConfig.{group}: unknown {bad} (known: {', '.join(TRANSFORMS)})")
        if "position" in self.sprite_transforms or "position" in self.background_transforms:
            raise ValueError("DTISpritesConfig: 'position' maps a sprite onto the canvas and belongs to layer_transforms")
        if len(self.curriculum) not in (0, len(self.sprite_transforms) - 1):
            raise ValueError(
                f"DTISpritesConfig.curriculum needs one step per sprite transformation after the first "
                f"({len(self.sprite_transforms) - 1}), got {self.curriculum}"
            )

    @property
    def num_layers(self) -> int:
        return self.num_slots - 1


# ------------------------------------------------------------------------------------ pieces


def occlusion_weights(masks: Tensor, occ: Tensor) -> Tensor:
    """masks [N, B, 1, H, W], occ [N, N, B] (occ[j, k]: layer j in front of layer k, zero diagonal)
    → visible weights m_k · Π_j (1 − occ[j,k] m_j), [N, B, 1, H, W]."""
    factors = 1 - occ[:, :, :, None, None, None] * masks[:, None]  # [j, k, B, 1, H, W]
    return masks * factors.prod(0)


def with_background_order(occ: Tensor) -> Tensor:
    """[L, L, B] layer order → [L+1, L+1, B] with the background first: it occludes nothing and
    every layer occludes it."""
    n, _, b = occ.shape
    out = occ.new_zeros(n + 1, n + 1, b)
    out[1:, 0] = 1
    out[1:, 1:] = occ
    return out


def gaussian_window(size: int, std: float) -> Tensor:
    """scipy.signal.windows.gaussian(size, std) as a tensor."""
    n = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return torch.exp(-0.5 * (n / std) ** 2)


def resnet_features(stem: int, widths: tuple[int, ...], pool: int, downsample: int | None = None) -> nn.Sequential:
    """ResNet-18 layout (7×7/2 stem, 3×3/2 max-pool, stages of 2 BasicBlocks, stride 2 from the
    second stage on) from ``objdisc.models.blocks.resnet`` + adaptive average pool + flatten;
    ``downsample`` (default: one per stage) counts the stride-2 steps besides the max-pool, the
    first ones taken."""
    downsample = len(widths) if downsample is None else downsample
    net = ResNet(3, stem, widths, blocks=(2,) * len(widths), downsample=downsample)
    return nn.Sequential(net.stem, nn.MaxPool2d(3, 2, 1), net.stages, nn.AdaptiveAvgPool2d(pool), nn.Flatten(1))


class _Schedule:
    """warm-up × step-downs, a picklable rate factor."""

    def __init__(self, warmup: int, milestones: tuple[int, ...], gamma: float) -> None:
        self.warm = WarmupDecay(warmup)
        self.steps = Anneal.steps(1.0, milestones, gamma)

    def __call__(self, step: int) -> float:
        return self.warm(step) * self.steps(step)


# ------------------------------------------------------------------------------------ model


class DTISprites(Model):
    def __init__(self, cfg: DTISpritesConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DTISpritesConfig()
        L, K0, s, size = cfg.num_layers, cfg.num_sprites, cfg.sprite_size, cfg.image_size
        K = K0 + int(cfg.empty_sprite)
        self.encoder = resnet_features(cfg.encoder_stem, cfg.encoder_widths, cfg.encoder_pool, cfg.encoder_downsample)
        features = cfg.encoder_widths[-1] * cfg.encoder_pool**2

        self.prototypes = nn.Parameter(torch.full((K0, 3, s, s), cfg.proto_init))
        window = gaussian_window(s, cfg.mask_init_std)
        self.masks = nn.Parameter((window[:, None] * window[None, :]).expand(K0, 1, s, s).clone())
        self.background = nn.Parameter(torch.full((1, 3, size, size), 0.5))

        def mlps(n: int, names: tuple[str, ...]) -> nn.ModuleDict:
            return nn.ModuleDict(
                {t: BatchedMLP(n, features, cfg.mlp_hidden, TRANSFORMS[t], cfg.mlp_layers) for t in names if TRANSFORMS[t]}
            )

        self.sprite_transforms = mlps(L * K, cfg.sprite_transforms)
        self.layer_transforms = mlps(L, cfg.layer_transforms)
        self.background_transforms = mlps(1, cfg.background_transforms)
        self.occlusion = None
        if cfg.occlusion and L > 1:
            self.occlusion = BatchedMLP(1, features, cfg.mlp_hidden, L * (L - 1) // 2, cfg.mlp_layers)
        self.register_buffer("fixed_order", torch.tril(torch.ones(L, L), diagonal=-1), persistent=False)
        # Per-step state: sprite usage since the last re-assignment check, the background init.
        self.register_buffer("usage_sum", torch.zeros(L, K, dtype=torch.float64))
        self.register_buffer("usage_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("background_ready", torch.tensor(cfg.background_init != "mean"))

    # ------------------------------------------------------------------ schedule

    def sprites_frozen(self, step: int) -> bool:
        return step < self.cfg.freeze_sprites_until

    def active_sprite_transforms(self, step: int) -> list[str]:
        names = self.cfg.sprite_transforms
        active = [names[0]] + [t for t, start in zip(names[1:], self.cfg.curriculum) if step >= start]
        if not self.cfg.curriculum:
            active = list(names)
        return [t for t in active if TRANSFORMS[t]]

    def optimizers(self, train) -> list[OptimizerSpec]:
        """Adam (the train block's rate): sprites (frozen at first), background, and the networks
        (weight decay, step-downs); a sprite transformation that the curriculum starts later has
        its own group, frozen until then."""
        cfg = self.cfg
        warm = WarmupDecay(cfg.warmup_steps)
        networks = _Schedule(cfg.warmup_steps, cfg.transformer_milestones, cfg.transformer_gamma)
        sprites = [self.prototypes, self.masks]
        starts = dict(zip(cfg.sprite_transforms[1:], cfg.curriculum))
        late = {t: list(mlp.parameters()) for t, mlp in self.sprite_transforms.items() if starts.get(t, 0) > 0}
        own = {id(p) for p in (*sprites, self.background)} | {id(p) for ps in late.values() for p in ps}
        groups = [
            ParamGroup(sprites, "sprites", lr_scale=cfg.sprite_lr_scale, weight_decay=0.0, schedule=warm,
                       frozen_until=cfg.freeze_sprites_until),
            ParamGroup([self.background], "background", weight_decay=0.0, schedule=warm),
            ParamGroup([p for p in self.parameters() if id(p) not in own], "transformations",
                       weight_decay=cfg.transformer_weight_decay, schedule=networks),
        ]
        groups += [
            ParamGroup(ps, f"sprite_{t}", weight_decay=cfg.transformer_weight_decay, schedule=networks, frozen_until=starts[t])
            for t, ps in late.items()
        ]
        return [OptimizerSpec(groups, name="adam")]

    # ------------------------------------------------------------------ forward pieces

    def sprite_stack(self, noise: bool) -> Tensor:
        """[K, 4 (+1), s, s]: clamped prototypes, masks (raw when noise is injected later), the
        empty sprite last, and with ``noise`` a channel marking each sprite's support. Frozen
        sprites are not detached: their group drops the gradient (``frozen_until``)."""
        cfg = self.cfg
        protos = soft_clamp(self.prototypes, cfg.clamp_leak)
        masks = self.masks if noise else soft_clamp(self.masks, cfg.clamp_leak)
        sprites = torch.cat([protos, masks], 1)
        if noise:
            sprites = torch.cat([sprites, torch.ones_like(masks)], 1)
        if cfg.empty_sprite:
            sprites = torch.cat([sprites, sprites.new_zeros(1, *sprites.shape[1:])])
        return sprites

    def transformation_parameters(self, features: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The predicted parameters of every sprite transformation {name: [L, K, B, P]} (active or
        not: see ``forward``) and layer transformation {name: [L, B, P]}."""
        L, B = self.cfg.num_layers, features.shape[0]
        sprite = {t: mlp(features).view(L, -1, B, TRANSFORMS[t]) for t, mlp in self.sprite_transforms.items()}
        layer = {t: mlp(features) for t, mlp in self.layer_transforms.items()}
        return sprite, layer

    def render(self, sprites: Tensor, sprite_betas: dict[str, Tensor], layer_betas: dict[str, Tensor], step: int) -> Tensor:
        """Sprites [L, K, B, C, s, s] (K candidates per layer and image, usually an expanded view)
        → layers [L, K, B, C, H, W]: the sprite transformations (per candidate), then the layer's
        colour and position (shared by its candidates: one sampling grid for all K)."""
        cfg = self.cfg
        L, K, B, C, s, _ = sprites.shape
        H = cfg.image_size
        x = sprites
        for name in self.active_sprite_transforms(step):
            beta = sprite_betas[name].reshape(L * K * B, -1)
            x = self._transform(name, x.reshape(L * K * B, C, s, s), beta, (s, s), "zeros").view(L, K, B, C, s, s)
        for name in cfg.layer_transforms:
            if name not in layer_betas:
                continue
            beta = layer_betas[name]  # [L, B, P]
            if name == "color":
                beta = beta[:, None].expand(L, K, B, beta.shape[-1]).reshape(L * K * B, -1)
                x = transform_color(x.reshape(L * K * B, C, *x.shape[-2:]), beta, cfg.clamp_leak).view(L, K, B, C, *x.shape[-2:])
            else:  # position: the image of each (layer, image) samples all its candidates with one grid
                planes = x.permute(0, 2, 1, 3, 4, 5).reshape(L * B, K * C, *x.shape[-2:])
                planes = self._transform(name, planes, beta.reshape(L * B, -1), (H, H), "zeros")
                x = planes.view(L, B, K, C, H, H).transpose(1, 2)
        if x.shape[-1] != H:  # no position transformation: the sprite frame is the image
            x = F.interpolate(x.reshape(-1, C, *x.shape[-2:]), size=(H, H), mode="bilinear", align_corners=False).view(L, K, B, C, H, H)
        return x

    def _transform(self, name: str, x: Tensor, beta: Tensor, out: tuple[int, int], padding: str) -> Tensor:
        if name == "color":
            return transform_color(x, beta, self.cfg.clamp_leak)
        if name == "position":
            grid = F.affine_grid(position_theta(beta), [x.shape[0], x.shape[1], *out], align_corners=False)
        else:  # projective
            grid = projective_grid(beta, out)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)

    def transform_background(self, features: Tensor) -> Tensor:
        """→ [B, 3, H, W]."""
        b = features.shape[0]
        x = soft_clamp(self.background, self.cfg.clamp_leak).expand(b, -1, -1, -1)
        for name in self.cfg.background_transforms:
            if TRANSFORMS[name]:
                x = self._transform(name, x, self.background_transforms[name](features)[0], x.shape[-2:], "border")
        return x

    def layer_order(self, features: Tensor) -> Tensor:
        """[L, L, B]: occ[i, j] = probability that layer i is in front of layer j."""
        L, B = self.cfg.num_layers, features.shape[0]
        if self.occlusion is None:
            return self.fixed_order[:, :, None].expand(L, L, B)
        probs = self.occlusion(features)[0].sigmoid()  # [B, L(L−1)/2]
        grid = probs.new_zeros(B, L, L)
        rows, cols = torch.tril_indices(L, L, offset=-1, device=probs.device)
        grid[:, rows, cols] = probs
        grid = grid + torch.triu(1 - grid.transpose(1, 2), diagonal=1)
        return grid.permute(1, 2, 0)

    @torch.no_grad()
    def greedy_selection(self, image: Tensor, layers: Tensor, masks: Tensor, background: Tensor, occ: Tensor, frozen: bool) -> Tensor:
        """One-hot choices [L, K, B]: ``greedy_iters`` sweeps over the layers, each layer taking the
        sprite that minimises the reconstruction error with the other layers as they stand.

        With m_l := 0, A_k = m_k x_k Π_j (1 − o_jk m_j) is every other layer's visible colour; a
        candidate c at layer l then gives Σ_k A_k (1 − o_lk m_c) + m_c x_c Π_j (1 − o_jl m_j)
        = S0 − m_c S1 + m_c x_c T, scored for all candidates at once."""
        cfg = self.cfg
        L, K, B = layers.shape[:3]
        usable = K - 1 if (cfg.empty_sprite and frozen) else K
        cur_layers = torch.cat([background[None], layers.new_zeros(L, *layers.shape[2:])])  # [L+1, B, 3, H, W]
        cur_masks = torch.cat([masks.new_ones(1, *masks.shape[2:]), masks.new_zeros(L, *masks.shape[2:])])
        choice = layers.new_zeros(L, K, B)
        penalty = None
        if cfg.empty_sprite and not frozen and cfg.lambda_empty:
            penalty = torch.full((K, 1), cfg.lambda_empty, device=layers.device, dtype=layers.dtype)
            penalty[-1] = 0
        for _ in range(cfg.greedy_iters):
            for l in range(1, L + 1):
                cur_masks[l] = 0
                factors = 1 - occ[:, :, :, None, None, None] * cur_masks[:, None]  # [j, k, B, 1, H, W]
                visible = cur_masks * factors.prod(0) * cur_layers  # A_k, [L+1, B, 3, H, W]
                s0 = visible.sum(0)
                s1 = (occ[l][:, :, None, None, None] * visible).sum(0)
                t = factors[:, l].prod(0)  # [B, 1, H, W]
                m_c, x_c = masks[l - 1, :usable], layers[l - 1, :usable]
                recon = s0 - m_c * s1 + m_c * x_c * t
                distance = ((image - recon) ** 2).flatten(2).mean(2)  # [usable, B]
                if penalty is not None:
                    distance = distance + penalty[:usable]
                best = distance.argmin(0)  # [B]
                choice[l - 1].zero_()
                choice[l - 1].scatter_(0, best[None], 1.0)
                idx = best[None, :, None, None, None]
                cur_layers[l] = layers[l - 1].gather(0, idx.expand(1, *layers.shape[2:]))[0]
                cur_masks[l] = masks[l - 1].gather(0, idx.expand(1, *masks.shape[2:]))[0]
        return choice

    def compose(self, layers: Tensor, masks: Tensor, background: Tensor, occ: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Selected layers [L, B, 3, H, W] + masks [L, B, 1, H, W] over the background → recon
        [B,3,H,W], visible weights [B, L+1, H, W] (background first), colours [B, L+1, 3, H, W]."""
        chosen = torch.cat([background[None], layers])
        alpha = torch.cat([masks.new_ones(1, *masks.shape[1:]), masks])
        weights = occlusion_weights(alpha, occ)
        recon = (weights * chosen).sum(0)
        return recon, weights[:, :, 0].transpose(0, 1), chosen.transpose(0, 1)

    # ------------------------------------------------------------------ protocol

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        """All L × K candidate layers are rendered without gradient for the greedy selection; the
        selected sprite of each layer is then rendered again with gradient (the reference's
        gradient through the one-hot selection is zero for every other candidate)."""
        cfg = self.cfg
        image = batch["image"]
        if image.dim() != 4 or tuple(image.shape[1:]) != (3, cfg.image_size, cfg.image_size):
            raise ValueError(f"DTISprites expects batch['image'] [B, 3, {cfg.image_size}, {cfg.image_size}], got {tuple(image.shape)}")
        if self.training and not bool(self.background_ready):
            self._init_background(image)
        frozen = self.sprites_frozen(step)
        noise = self.training and cfg.noise > 0
        L, B, H = cfg.num_layers, image.shape[0], cfg.image_size
        features = self.encoder(image)
        sprites = self.sprite_stack(noise)  # [K, C, s, s]
        K = sprites.shape[0]
        sprite_betas, layer_betas = self.transformation_parameters(features)
        background = self.transform_background(features)
        occ = with_background_order(self.layer_order(features))
        u = torch.rand(K, 1, H, H, device=image.device, dtype=image.dtype) if noise else None

        def finish(x: Tensor, noise_maps: Tensor | None) -> tuple[Tensor, Tensor]:
            layers, masks = x[:, :, :, :3], x[:, :, :, 3:4]
            if noise_maps is not None:
                masks = soft_clamp(masks + x[:, :, :, 4:5] * (2 * cfg.noise * noise_maps - cfg.noise), cfg.clamp_leak)
            return layers, masks

        with torch.no_grad():
            expanded = sprites.detach()[None, :, None].expand(L, K, B, *sprites.shape[1:])
            detached = ({k: v.detach() for k, v in sprite_betas.items()}, {k: v.detach() for k, v in layer_betas.items()})
            all_layers, all_masks = finish(self.render(expanded, *detached, step), None if u is None else u[None, :, None])
            choice = self.greedy_selection(image, all_layers, all_masks, background.detach(), occ.detach(), frozen)
        best = choice.argmax(1)  # [L, B]
        if torch.is_grad_enabled():
            chosen = sprites[best][:, None]  # [L, 1, B, C, s, s]
            picked = {k: v.gather(1, best[:, None, :, None].expand(L, 1, B, v.shape[-1])) for k, v in sprite_betas.items()}
            layers, masks = finish(self.render(chosen, picked, layer_betas, step), None if u is None else u[best][:, None])
            # A transformation that the curriculum has not started yet adds an exact zero, so its
            # networks get a zero gradient, which their group (frozen until the start) drops: no
            # update and no optimiser state before the start, as in the reference.
            active = self.active_sprite_transforms(step)
            idle = [v.sum() for k, v in picked.items() if k not in active]
            if idle:
                layers = layers + 0.0 * torch.stack(idle).sum()
        else:
            idx = best[:, None, :, None, None, None]
            layers = all_layers.gather(1, idx.expand(L, 1, B, *all_layers.shape[3:]))
            masks = all_masks.gather(1, idx.expand(L, 1, B, *all_masks.shape[3:]))
        recon, weights, colours = self.compose(layers[:, 0], masks[:, 0], background, occ)
        mse = F.mse_loss(recon, image)
        return ModelOutput(
            loss=mse,
            losses={"mse": mse.detach()},
            recon=recon.detach().clamp(0, 1),
            masks=weights.detach(),
            masks_have_background=True,
            slot_rgb=colours.detach().clamp(0, 1),
            extras={"assignment": choice.permute(2, 0, 1)},  # [B, L, K] one-hot
        )

    @torch.no_grad()
    def _init_background(self, image: Tensor) -> None:
        mean = image.mean(0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean)
            mean /= torch.distributed.get_world_size()
        self.background.copy_(mean)
        self.background_ready.fill_(True)

    @torch.no_grad()
    def after_step(self, step: int, out: ModelOutput) -> None:
        """Accumulate sprite usage; every ``reassign_every`` steps re-assign rarely used sprites."""
        self.usage_sum += out.extras["assignment"].double().mean(0)
        self.usage_steps += 1
        if step % self.cfg.reassign_every:
            return
        if not self.sprites_frozen(step):
            layer = int(torch.randint(self.cfg.num_layers, ()))
            self.reassign(self.usage_sum[layer] / self.usage_steps)
        self.usage_sum.zero_()
        self.usage_steps.zero_()

    @torch.no_grad()
    def reassign(self, usage: Tensor) -> list[int]:
        """Re-initialise every sprite used less than threshold / K of the most used one from it;
        returns the re-assigned indices (``usage`` [K (+ empty)])."""
        cfg = self.cfg
        usage = usage[: cfg.num_sprites].float()
        if usage.max() <= 0:
            # The layer drew only the empty sprite over the window: there is no most-used sprite to
            # measure the others against (the reference's 0/0 compares False and changes nothing).
            # Dividing by a clamped zero instead called every sprite rare and overwrote the whole
            # dictionary with copies of sprite 0; late layers of scenes with few objects are often
            # empty for a whole window.
            return []
        usage = usage / usage.max()
        source = int(usage.argmax())
        rare = [i for i in range(cfg.num_sprites) if usage[i] < cfg.reassign_threshold / cfg.num_sprites]
        for i in rare:
            self._restart(i, source)
        if rare:
            self._restart(source, source)
        return rare

    def _restart(self, i: int, j: int) -> None:
        self.prototypes[i] = self.prototypes[j] + torch.randn_like(self.prototypes[j]) * 1e-4
        self.masks[i] = self.masks[j]
        K = self.cfg.num_sprites + int(self.cfg.empty_sprite)
        for mlp in self.sprite_transforms.values():
            for layer in range(self.cfg.num_layers):
                mlp.copy_row(layer * K + i, layer * K + j)

    # ------------------------------------------------------------------ pictures

    def picture(self, batch: dict[str, Tensor], out: ModelOutput, limit: int = 8) -> np.ndarray:
        """The family's grid, then the learned sprites (prototype · mask on white), their masks and
        the background."""
        grid = self.family.picture(self, batch, out, limit)
        with torch.no_grad():
            protos = soft_clamp(self.prototypes, 0).float().cpu()
            masks = soft_clamp(self.masks, 0).float().cpu()
            sprites = protos * masks + (1 - masks)
            background = soft_clamp(self.background, 0)[0].float().cpu()
        rows = [[sprites[k] for k in range(len(sprites))] + [background], [masks[k, 0] for k in range(len(masks))]]
        labels = [f"sprite {k}" for k in range(len(sprites))] + ["background"]
        return stack_pictures(grid, viz.image_grid(rows, labels=labels))


PRESETS = {
    "benchmark": DTISpritesConfig(),
    # The proving ground (64×64 sprites, 5 layers): a narrow ResNet, 24-pixel sprites, and the
    # schedule compressed from 562,500 steps to a few hundred (freeze, curriculum, re-assignment);
    # the sprites' pixels train 10× faster than the networks so that the masks can sharpen from
    # their Gaussian start within those few hundred steps.
    "cpu": DTISpritesConfig(
        image_size=64, num_slots=6, num_sprites=10, sprite_size=24, mask_init_std=6.0,
        encoder_stem=16, encoder_widths=(16, 32, 64, 64), mlp_hidden=64,
        freeze_sprites_until=50, curriculum=(200,), reassign_every=50, warmup_steps=50, transformer_milestones=(),
        sprite_lr_scale=10.0,
    ),
}

__all__ = ["DTISprites", "DTISpritesConfig", "PRESETS"]
