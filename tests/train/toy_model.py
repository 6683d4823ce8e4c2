"""A toy image model that uses every hook of the model protocol at once, for the resume tests:
two optimisers (RMSprop for the encoder, Adam with a frozen start and a reduce-on-plateau for the
decoder), an annealed KL weight, and GECO's multiplier updated after each step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdisc.models.base import Model, ModelOutput, data_input
from objdisc.models.blocks.geco import GECO
from objdisc.train.optim import OptimizerSpec, ParamGroup, Plateau
from objdisc.train.schedule import Anneal, at


@dataclass
class ToyConfig:
    resolution: int = data_input("image_size", 16)
    latent: int = 4
    kl_weight: float | Anneal = Anneal.linear(0.0, 1.0, 0, 8)
    frozen_until: int = 3


class Toy(Model):
    def __init__(self, cfg: ToyConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ToyConfig()
        pixels = 3 * cfg.resolution**2
        self.encoder = nn.Linear(pixels, 2 * cfg.latent)
        self.decoder = nn.Linear(cfg.latent, pixels)
        self.geco = GECO(goal=0.05 * pixels, step_size=1e-2, speedup=10.0)

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> ModelOutput:
        x = batch["image"].flatten(1)
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()  # draws from the RNG: resume must restore it
        recon = torch.sigmoid(self.decoder(z))
        err = F.mse_loss(recon, x, reduction="none").sum(-1).mean()
        kl = 0.5 * (mean**2 + log_var.exp() - log_var - 1).sum(-1).mean()
        weight = at(self.cfg.kl_weight, step)
        b = x.shape[0]
        return ModelOutput(
            loss=self.geco.loss(err, weight * kl),
            losses={"err": err.detach(), "kl": kl.detach(), "kl_weight": torch.tensor(weight), "beta": self.geco.beta.clone()},
            recon=recon.detach().reshape(batch["image"].shape),
            masks=torch.ones(b, 1, *batch["image"].shape[2:]),
        )

    def optimizers(self, train) -> list[OptimizerSpec]:
        return [
            OptimizerSpec([ParamGroup(list(self.encoder.parameters()), "encoder", lr=1e-3)], name="rmsprop"),
            OptimizerSpec(
                [ParamGroup(list(self.decoder.parameters()), "decoder", lr_scale=2.0, frozen_until=self.cfg.frozen_until)],
                name="adam",
                plateau=Plateau("loss", factor=0.5, patience=0),
            ),
        ]

    def after_step(self, step: int, out: ModelOutput) -> None:
        self.geco.update(out.losses["err"], step)


def register() -> None:
    """Put the toy into the registry (in the process that trains it)."""
    from objdisc.models import MODELS, Entry

    MODELS["toy"] = Entry(ToyConfig, Toy, "toy model of the protocol tests", {"default": ToyConfig()})
