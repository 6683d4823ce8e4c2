"""GNM: Generative Neurosymbolic Machines (Jiang & Ahn, NeurIPS 2020), written from the paper and
the facts of the reference configuration (the original code is GPL and was not copied). The
defaults are the configuration the ClevrTex benchmark and HHousen train.

    image ─▶ conv encoder ─▶ e [B, C, G, G] (one feature vector per cell)
    StructDRAW (the global latent, ``draw_steps`` steps; ConvLSTMs over the G × G cell map):
        for t: prior p(z_g,t | h_dec) = MLP(h_dec);  h_enc = ConvLSTM_enc([e, e − d, h_dec]);
               posterior q(z_g,t | h_enc) = MLP(h_enc);  z_g,t ~ q
               h_dec = ConvLSTM_dec([MLP(z_g,t) reshaped to the grid, d]);  d += Conv(h_dec)
    local latents per cell from one shared network: the prior p(z | z_g) reads d, the posterior
        q(z | x) reads e — presence logit 8.8·tanh(·), where (scale, ratio, shift), depth, what
    z ~ q:  z_pres ~ RelaxedBernoulli(τ),  box = (σ(s)/√r, σ(s)·√r) around the cell centre + tanh(·)
    z_what ─▶ sub-pixel glimpse decoder ─▶ RGB o, α;  α̂ = α·z_pres;  pasted by the inverse STN
    background: q(z_bg | e) (MLP), p(z_bg | z_g) (MLP);  z_bg ─▶ sub-pixel decoder ─▶ bg
    recon = Σ_k w_k·(α̂·o)_k + (1 − α_map)·bg,  w = α̂·σ(−z_depth) normalised over the cells,
            α_map = Σ_k α̂_k (clamped to [ε, 1 − ε] with a straight-through gradient)
    loss  = −log N(x; recon, σ) + KL(q(z_g)‖p(z_g)) + Σ KL(q(z)‖p(z|z_g)) + KL(q(z_bg)‖p(z_bg|z_g))
            + auxiliary KLs against fixed priors (presence p, where N((−1.5, 0, 0, 0), (0.1, 0.3, 1, 1)),
              what and depth N(0, 1), weighted by z_pres; background N(0, 1))

Annealed from the step, every call (reference values): β_global 0 → 1 over 100k steps; τ_pres
1 → 0.5 over 1k–20k; the auxiliary presence prior 0.1 → 0.001 over 4k; β_aux_bg 50 → 1 over 50k;
β_aux_where 10 → 1 over 500; the background-α curriculum (0 < step < 500: α_map = 0.9 and
z_pres ≤ 0.99). The pixel likelihood σ is a config value: 0.2 (benchmark default), 0.5 (benchmark
README for ClevrTex), 0.4 / 0.7 (HHousen CLEVR / ClevrTex checkpoints): the presets.
Optimisation: RMSprop 1e-4, no schedule, gradient clip 1.0, batch 32 (the ``train:`` block).

What differs from the reference code, and why:

* ``masks`` are each cell's depth-weighted share w_k·α of the rendered α (Σ α̂ clamped to 1), so
  they sum to the α the background is blended with and evaluation's background channel is the
  renderer's background weight; the reference hands the evaluator the pasted α̂_k, whose sum can
  pass 1.
* The reference configuration lists a background likelihood σ (0.3) that its code never reads; it
  is not a field here.
* The encoder, decoder and MLP widths are config lists (the reference's are the defaults) so that
  a CPU preset can narrow them; the MLPs and conv stacks are CELU + LayerNorm / GroupNorm as in the
  reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks import glimpse as stn
from objdisc.models.blocks.conv_lstm import ConvLSTMCell
from objdisc.models.blocks.conv_stacks import ConvNormStack, SubPixelStack, fit_upscales
from objdisc.models.blocks.priors import bernoulli_kl, gaussian_prior, presence
from objdisc.train.schedule import Anneal, at

EPS = 1e-15
# Reference schedules (Anneal is frozen: shared defaults are safe).
BETA_GLOBAL = Anneal.linear(0.0, 1.0, 0, 100000)
TAU_PRES = Anneal.linear(1.0, 0.5, 1000, 20000)
PRESENCE_PRIOR = Anneal.linear(0.1, 0.001, 0, 4000)
BETA_AUX_BG = Anneal.linear(50.0, 1.0, 0, 50000)
BETA_AUX_WHERE = Anneal.linear(10.0, 1.0, 0, 500)


@dataclass
class GNMConfig:
    """Defaults: the reference configuration (128×128, 4×4 cells, 64-px glimpses): 8,636,446 parameters."""

    image_size: int = data_input("image_size", 128)  # G = image_size / Π encoder_strides cells per side
    z_global_dim: int = 32
    z_what_dim: int = 64
    z_bg_dim: int = 10
    draw_steps: int = 4
    encoder_filters: tuple[int, ...] = (16, 16, 32, 32, 64, 64, 128, 128, 128)
    encoder_kernels: tuple[int, ...] = (4, 3, 4, 3, 4, 3, 4, 3, 4)
    encoder_strides: tuple[int, ...] = (2, 1, 2, 1, 2, 1, 2, 1, 2)
    what_decoder_filters: tuple[int, ...] = (128, 64, 32, 16, 8, 4)  # the last is RGB + α
    what_decoder_kernels: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    what_decoder_upscales: tuple[int, ...] = (2, 2, 2, 2, 2, 2)  # their product is the glimpse side
    bg_decoder_filters: tuple[int, ...] = (128, 64, 32, 16, 8, 3)
    bg_decoder_kernels: tuple[int, ...] = (1, 1, 1, 1, 1, 3)
    bg_decoder_upscales: tuple[int, ...] = (4, 2, 4, 2, 2, 1)  # halved from the end for images under 128 px
    global_decoder: tuple[int, ...] = (512, 1024, 2048)  # z_g,t → the decoder LSTM's input (last / G² per cell)
    global_encoder: tuple[int, ...] = (512, 512)  # h → (mean, std) of z_g,t, prior and posterior
    bg_generator: tuple[int, ...] = (128, 64)  # z_g → p(z_bg)
    bg_encoder: tuple[int, ...] = (512, 256)  # e → q(z_bg)
    local_hidden: tuple[int, ...] = (128, 128)  # 1×1 convs of the local latent network
    rnn_hidden: int = 128  # both ConvLSTMs
    rnn_kernel: int = 1
    hid_to_dec_kernel: int = 3
    pres_logit_scale: float = 8.8
    scale_mean: float = -1.5
    scale_std: float = 0.1
    ratio_mean: float = 0.0
    ratio_std: float = 0.3
    shift_std: float = 1.0
    sigma: float = 0.2  # pixel likelihood std
    beta_global: float | Anneal = BETA_GLOBAL
    tau_pres: float | Anneal = TAU_PRES
    presence_prior: float | Anneal = PRESENCE_PRIOR
    beta_aux_bg: float | Anneal = BETA_AUX_BG
    beta_aux_where: float | Anneal = BETA_AUX_WHERE
    beta_pres: float | Anneal = 1.0
    beta_where: float | Anneal = 1.0
    beta_what: float | Anneal = 1.0
    beta_depth: float | Anneal = 1.0
    beta_bg: float | Anneal = 1.0
    beta_aux_pres: float | Anneal = 1.0
    beta_aux_what: float | Anneal = 1.0
    beta_aux_depth: float | Anneal = 1.0
    alpha_curriculum: tuple[int, ...] = (0, 500)  # begin < step < end: α_map fixed, z_pres ≤ 0.99
    alpha_curriculum_value: float = 0.9

    def __post_init__(self) -> None:
        lists = [f for f in self.__dataclass_fields__ if isinstance(getattr(self, f), (list, tuple))]
        for name in lists:
            setattr(self, name, tuple(getattr(self, name)))
        if not len(self.encoder_filters) == len(self.encoder_kernels) == len(self.encoder_strides):
            raise ValueError("GNMConfig.encoder_filters, _kernels and _strides need the same length")
        down = math.prod(s for s in self.encoder_strides if s)
        if self.image_size % down:
            raise ValueError(f"GNMConfig: image_size {self.image_size} is not a multiple of the encoder's stride {down}")
        fit_upscales(self.bg_decoder_upscales, self.image_size)  # raises when the decoder cannot draw the image
        if self.bg_decoder_filters[-1] != 3:
            raise ValueError("GNMConfig.bg_decoder_filters must end with 3 (RGB)")
        if self.what_decoder_filters[-1] != 4:
            raise ValueError("GNMConfig.what_decoder_filters must end with 4 (RGB + α)")
        if self.global_decoder[-1] % self.num_cell**2:
            raise ValueError(f"GNMConfig.global_decoder's last width must be divisible by num_cell² = {self.num_cell**2}")
        if len(self.alpha_curriculum) != 2:
            raise ValueError("GNMConfig.alpha_curriculum is (begin, end)")

    @property
    def num_cell(self) -> int:
        """G: the encoder's output is a G × G map of cells."""
        return self.image_size // math.prod(s for s in self.encoder_strides if s)

    @property
    def glimpse_size(self) -> int:
        return math.prod(self.what_decoder_upscales)

    @property
    def enc_dim(self) -> int:
        return self.encoder_filters[-1]


class StackMLP(nn.Sequential):
    """Linear → CELU → LayerNorm per hidden width; the last layer bare unless ``final_norm``."""

    def __init__(self, in_features: int, widths: tuple[int, ...], final_norm: bool = False) -> None:
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers.append(nn.Linear(in_features, width))
            if i < len(widths) - 1 or final_norm:
                layers += [nn.CELU(), nn.LayerNorm(width)]
            in_features = width
        super().__init__(*layers)


def gaussian(params: Tensor, dim: int = 1) -> Normal:
    mean, raw = params.chunk(2, dim)
    return Normal(mean, F.softplus(raw) + 1e-6)


class StructDRAW(nn.Module):
    """The global latent z_g = (z_g,1..T): a DRAW-like loop of two ConvLSTMs over the cell map."""

    def __init__(self, cfg: GNMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        g, c, hid = cfg.num_cell, cfg.enc_dim, cfg.rnn_hidden
        self.dec_in = cfg.global_decoder[-1] // g**2
        self.global_decoder = StackMLP(cfg.z_global_dim, cfg.global_decoder, final_norm=True)
        self.rnn_enc = ConvLSTMCell(2 * c + hid, hid, cfg.rnn_kernel, g)
        self.rnn_dec = ConvLSTMCell(self.dec_in + c, hid, cfg.rnn_kernel, g)
        self.prior_net = StackMLP(g**2 * hid, (*cfg.global_encoder, 2 * cfg.z_global_dim))
        self.posterior_net = StackMLP(g**2 * hid, (*cfg.global_encoder, 2 * cfg.z_global_dim))
        self.hid_to_dec = nn.Conv2d(hid, c, cfg.hid_to_dec_kernel, padding=(cfg.hid_to_dec_kernel - 1) // 2)

    def forward(self, enc: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        b, _, g, _ = enc.shape
        h_enc, c_enc = self.rnn_enc.initial(b)
        h_dec, c_dec = self.rnn_dec.initial(b)
        dec = enc.new_zeros(enc.shape)
        keys = ("p_mean", "p_std", "q_mean", "q_std", "z")
        out: dict[str, list[Tensor]] = {k: [] for k in keys}
        for t in range(cfg.draw_steps):
            p = gaussian(self.prior_net(h_dec.permute(0, 2, 3, 1).flatten(1)))
            residual = enc if t == 0 else enc - dec
            h_enc, c_enc = self.rnn_enc(torch.cat([enc, residual, h_dec], dim=1), (h_enc, c_enc))
            q = gaussian(self.posterior_net(h_enc.permute(0, 2, 3, 1).flatten(1)))
            z = q.rsample()
            dec_input = self.global_decoder(z).reshape(b, self.dec_in, g, g)
            h_dec, c_dec = self.rnn_dec(torch.cat([dec_input, dec], dim=1), (h_dec, c_dec))
            dec = dec + self.hid_to_dec(h_dec)
            for key, value in zip(keys, (p.mean, p.stddev, q.mean, q.stddev, z)):
                out[key].append(value)
        result = {k: torch.stack(v, dim=1) for k, v in out.items()}  # [B, T, D]
        result["dec"] = dec
        return result


class LocalLatents(nn.Module):
    """Cell map [B, C, G, G] → per cell [B, N, ·]: presence logit, where (mean, std), depth, what.
    One network serves the prior (from StructDRAW's canvas) and the posterior (from the image)."""

    def __init__(self, cfg: GNMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = ConvNormStack(cfg.enc_dim, [(c, 1, 1, 1) for c in cfg.local_hidden])
        d = cfg.local_hidden[-1]
        self.depth = nn.Conv2d(d, 2, 1)
        self.where = nn.Conv2d(d, 8, 1)
        self.what = nn.Conv2d(d, 2 * cfg.z_what_dim, 1)
        self.pres = nn.Conv2d(d, 1, 1)
        nn.init.uniform_(self.where.weight, -0.01, 0.01)
        nn.init.zeros_(self.where.bias)
        with torch.no_grad():
            self.where.bias[0] = -1.0  # scale: start with boxes of σ(−1) ≈ 0.27 of the image

    def forward(self, cells: Tensor) -> dict[str, Tensor]:
        x = self.net(cells)

        def per_cell(t: Tensor) -> Tensor:
            return t.flatten(2).transpose(1, 2)

        return {
            "pres_logits": per_cell(self.cfg.pres_logit_scale * torch.tanh(self.pres(x))),
            "where": gaussian(per_cell(self.where(x)), -1),
            "depth": gaussian(per_cell(self.depth(x)), -1),
            "what": gaussian(per_cell(self.what(x)), -1),
        }


class GNM(Model):
    """GNM on ``batch["image"]`` [B, 3, H, W] in [0, 1] (H = W = ``image_size``)."""

    def __init__(self, cfg: GNMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GNMConfig()
        stages = [(f, k, s, 1) for f, k, s in zip(cfg.encoder_filters, cfg.encoder_kernels, cfg.encoder_strides)]
        self.image_encoder = ConvNormStack(3, stages)
        self.struct_draw = StructDRAW(cfg)
        self.local_latents = LocalLatents(cfg)
        self.glimpse_decoder = SubPixelStack(
            cfg.z_what_dim,
            [(f, k, u, 1) for f, k, u in zip(cfg.what_decoder_filters, cfg.what_decoder_kernels, cfg.what_decoder_upscales)],
            final_norm=False,
        )
        self.bg_decoder = SubPixelStack(
            cfg.z_bg_dim,
            [(f, k, u, 1) for f, k, u in zip(cfg.bg_decoder_filters, cfg.bg_decoder_kernels, fit_upscales(cfg.bg_decoder_upscales, cfg.image_size))],
            final_norm=False,
        )
        self.bg_generator = StackMLP(cfg.z_global_dim * cfg.draw_steps, (*cfg.bg_generator, 2 * cfg.z_bg_dim))
        self.bg_encoder = StackMLP(cfg.enc_dim * cfg.num_cell**2, (*cfg.bg_encoder, 2 * cfg.z_bg_dim))
        self.register_buffer(
            "aux_where_loc", torch.tensor([cfg.scale_mean, cfg.ratio_mean, 0.0, 0.0]), persistent=False
        )
        self.register_buffer(
            "aux_where_scale", torch.tensor([cfg.scale_std, cfg.ratio_std, cfg.shift_std, cfg.shift_std]), persistent=False
        )

    def where(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """z_where samples [B, N, 4] (scale, ratio, shift x, y) → glimpse scale and shift [B, N, 2]."""
        g = self.cfg.num_cell
        scale, ratio = torch.sigmoid(raw[..., :1]), torch.exp(raw[..., 1:2])
        sqrt_ratio = ratio.sqrt()
        box_scale = torch.cat([scale / sqrt_ratio, scale * sqrt_ratio], dim=-1)
        shift = stn.cell_shift(0.5 + torch.tanh(raw[..., 2:]), (g, g))
        return box_scale, shift

    picture = stn.picture_with_background_slot  # the family's grid, background as slot 0

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        cfg = self.cfg
        image = batch["image"]
        b, _, h, w = image.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"GNM expects {cfg.image_size}×{cfg.image_size} images, got {h}×{w}")
        n = cfg.num_cell**2

        enc = self.image_encoder(image)
        q_bg = gaussian(self.bg_encoder(enc.flatten(1)))
        z_bg = q_bg.rsample()
        draw = self.struct_draw(enc)
        p_z = self.local_latents(draw["dec"])
        q_z = self.local_latents(enc)
        p_bg = gaussian(self.bg_generator(draw["z"].flatten(1)))

        # Sample the local latents from the posterior and render.
        z_pres = presence(at(cfg.tau_pres, step), logits=q_z["pres_logits"]).rsample()  # [B, N, 1]
        z_where_raw = q_z["where"].rsample()
        z_depth = q_z["depth"].rsample()
        z_what = q_z["what"].rsample()
        scale, shift = self.where(z_where_raw)
        decoded = torch.sigmoid(self.glimpse_decoder(z_what.flatten(0, 1))).unflatten(0, (b, n))
        o, a = decoded[:, :, :3], decoded[:, :, 3:]
        background = torch.sigmoid(self.bg_decoder(z_bg))

        begin, end = cfg.alpha_curriculum
        curriculum = begin < step < end
        pres = z_pres.clamp(max=0.99) if curriculum else z_pres
        alpha_hat = a * pres[..., None, None]  # [B, N, 1, g, g]
        importance = alpha_hat * torch.sigmoid(-z_depth)[..., None, None]
        pasted = [alpha_hat * o, alpha_hat, importance] + ([] if self.training else [o])  # o: pictures only
        placed = stn.place_cells(torch.cat(pasted, dim=2), scale, shift, (h, w))
        y_each, alpha_each, importance_full = placed[:, :, :3], placed[:, :, 3:4], placed[:, :, 4:5]
        o_full = None if self.training else placed[:, :, 5:]
        weights = importance_full / (importance_full.sum(1, keepdim=True) + EPS)
        foreground = (y_each * weights).sum(1)
        alpha_map = alpha_each.sum(1)
        alpha_map = alpha_map + (alpha_map.clamp(EPS, 1.0 - EPS) - alpha_map).detach()
        # Each glimpse's share of the rendered foreground weight: the masks sum to the α the
        # background is blended with, so evaluation's background channel 1 − Σ masks is the
        # renderer's background weight. (w_k · α̂_k summed to less than α where glimpses overlap,
        # and pixels the render gives wholly to objects were scored as background.) Taken before
        # the curriculum's constant α, a training device.
        masks = (weights * alpha_map[:, None]).detach()
        if curriculum:
            alpha_map = torch.full_like(alpha_map, cfg.alpha_curriculum_value)
        recon = foreground + (1.0 - alpha_map) * background

        # Likelihood and KL terms, each summed per scene.
        nll = -Normal(recon, cfg.sigma).log_prob(image).flatten(1).sum(1)
        q_pres = torch.sigmoid(q_z["pres_logits"])
        weight = z_pres.clamp(min=1e-5)

        def kl_sum(q, p, scale_by: Tensor | None = None) -> Tensor:
            kl = kl_divergence(q, p)
            if scale_by is not None:
                kl = kl * scale_by
            return kl.flatten(1).sum(1)

        terms = {
            "kl_pres": bernoulli_kl(q_pres, torch.sigmoid(p_z["pres_logits"])).flatten(1).sum(1),
            "kl_where": kl_sum(q_z["where"], p_z["where"]),
            "kl_depth": kl_sum(q_z["depth"], p_z["depth"]),
            "kl_what": kl_sum(q_z["what"], p_z["what"]),
            "kl_global": kl_sum(Normal(draw["q_mean"], draw["q_std"]), Normal(draw["p_mean"], draw["p_std"])),
            "kl_bg": kl_sum(q_bg, p_bg),
            "kl_aux_pres": bernoulli_kl(q_pres, at(cfg.presence_prior, step)).flatten(1).sum(1),
            "kl_aux_where": kl_sum(q_z["where"], Normal(self.aux_where_loc, self.aux_where_scale), weight),
            "kl_aux_depth": kl_sum(q_z["depth"], gaussian_prior(0.0, 1.0, q_z["depth"].mean), weight),
            "kl_aux_what": kl_sum(q_z["what"], gaussian_prior(0.0, 1.0, q_z["what"].mean), weight),
            "kl_aux_bg": kl_sum(q_bg, gaussian_prior(0.0, 1.0, q_bg.mean)),
        }
        betas = {name: at(getattr(cfg, name.replace("kl_", "beta_")), step) for name in terms}
        kl = sum(betas[name] * value for name, value in terms.items())
        loss = (nll + kl).mean()

        presence_ = z_pres.squeeze(-1)
        losses = {"nll": nll.mean().detach()}
        losses.update({name: value.mean().detach() for name, value in terms.items()})
        losses.update(
            {
                "beta_global": torch.tensor(betas["kl_global"]),
                "tau_pres": torch.tensor(at(cfg.tau_pres, step)),
                "presence_prior": torch.tensor(at(cfg.presence_prior, step)),
                "count": presence_.detach().round().sum(1).mean(),
            }
        )
        return ModelOutput(
            loss=loss,
            losses=losses,
            recon=recon.detach().clamp(0.0, 1.0),
            masks=masks.squeeze(2),
            masks_have_background=False,
            slots=z_what.detach(),
            slot_rgb=None if o_full is None else o_full.detach(),  # evaluation only
            boxes=stn.boxes(scale, shift, (h, w), clip=True).detach(),
            presence=presence_.detach(),
            extras={"background": background.detach(), "foreground": foreground.detach(), "alpha": alpha_map.detach()},
        )


PRESETS = {
    "benchmark": GNMConfig(),  # σ 0.2: the benchmark's default (its CLEVR runs)
    "benchmark-clevrtex": GNMConfig(sigma=0.5),  # the benchmark README's ClevrTex command (--std 0.5)
    "hhousen-clevr": GNMConfig(sigma=0.4),  # HHousen's CLEVR6 checkpoint
    "hhousen-clevrtex": GNMConfig(sigma=0.7),  # HHousen's ClevrTex6 checkpoint
    # The 2D proving ground (64×64 sprites): 4×4 cells of 16 px, 32-px glimpses, narrow layers,
    # schedules compressed to the short run.
    "cpu": GNMConfig(
        image_size=64,
        z_global_dim=16,
        z_what_dim=16,
        z_bg_dim=4,
        encoder_filters=(16, 16, 32, 32, 64, 64, 64),
        encoder_kernels=(4, 3, 4, 3, 4, 3, 4),
        encoder_strides=(2, 1, 2, 1, 2, 1, 2),
        what_decoder_filters=(64, 32, 16, 8, 4),
        what_decoder_kernels=(3, 3, 3, 3, 3),
        what_decoder_upscales=(2, 2, 2, 2, 2),
        bg_decoder_filters=(32, 16, 8, 3),
        bg_decoder_kernels=(1, 1, 1, 3),
        bg_decoder_upscales=(4, 4, 4, 1),
        global_decoder=(64, 128, 256),
        global_encoder=(128, 128),
        bg_generator=(32, 32),
        bg_encoder=(128, 64),
        local_hidden=(64, 64),
        rnn_hidden=32,
        beta_global=Anneal.linear(0.0, 1.0, 0, 1000),
        tau_pres=Anneal.linear(1.0, 0.5, 100, 1000),
        presence_prior=Anneal.linear(0.1, 0.001, 0, 400),
        beta_aux_bg=Anneal.linear(50.0, 1.0, 0, 500),
        beta_aux_where=Anneal.linear(10.0, 1.0, 0, 100),
        alpha_curriculum=(0, 100),
    ),
}

__all__ = ["GNM", "PRESETS", "GNMConfig"]
