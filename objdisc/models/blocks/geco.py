"""GECO: a reconstruction constraint instead of a fixed KL weight (Rezende & Viola 2018,
"Taming VAEs"); used by GENESIS-v2 and Efficient-MORL.

The objective is ``err + β·KL``: the reconstruction error must come down to ``goal``, and β is the
(inverse) Lagrange multiplier that trades the two. After every update β moves multiplicatively
with the constraint's moving average C̄ = EMA_α(goal − err):

    β ← clamp(β · exp(s · C̄), β_min, β_max),   s = step_size (× speedup while C̄ > 0)

so while the error is above the goal (C̄ < 0, constraint violated) β falls and the reconstruction
gets the weight; once the goal is met (C̄ > 0) β rises, faster by ``speedup`` (GENESIS-v2's ×10),
and the KL is pressed down. The multiplier of the constraint itself is 1/β: it grows while the
constraint is violated. ``warm_start`` holds β for the first steps (Efficient-MORL).

The state (β, the moving average, whether it has started) lives in buffers: it is in every
checkpoint, and a resumed run continues exactly. Call ``loss`` in ``forward`` and ``update`` from
the model's ``after_step`` with the same error, so β changes only outside the gradient.

``SoftplusGECO`` is Efficient-MORL's variant: the multiplier softplus(b) weighs the reconstruction
term instead of β weighing the KL, b moves additively, and a warm start trains the plain ELBO first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GECO(nn.Module):
    def __init__(
        self,
        goal: float,
        step_size: float,
        alpha: float = 0.99,
        beta_init: float = 1.0,
        beta_min: float = 1e-10,
        beta_max: float = 1e10,
        speedup: float | None = None,
        warm_start: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"GECO alpha must be in [0, 1), got {alpha}")
        if not 0.0 < beta_min <= beta_init <= beta_max:
            raise ValueError(f"GECO needs 0 < beta_min <= beta_init <= beta_max, got {beta_min}, {beta_init}, {beta_max}")
        self.goal, self.step_size, self.alpha = goal, step_size, alpha
        self.beta_min, self.beta_max, self.speedup, self.warm_start = beta_min, beta_max, speedup, warm_start
        self.register_buffer("beta", torch.tensor(float(beta_init), dtype=torch.float64))
        self.register_buffer("err_ema", torch.zeros((), dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def loss(self, err: Tensor, kl: Tensor) -> Tensor:
        """err + β·KL with the current β (a constant for the gradient)."""
        return err + self.beta.to(kl.dtype) * kl

    @torch.no_grad()
    def update(self, err: Tensor | float, step: int) -> None:
        """Fold this step's error into the moving average and move β (after the update of ``step``)."""
        err = torch.as_tensor(err, dtype=torch.float64, device=self.beta.device).detach()
        if not bool(self.started):
            self.err_ema.copy_(err)
            self.started.fill_(True)
        else:
            self.err_ema.mul_(self.alpha).add_((1.0 - self.alpha) * err)
        if step < self.warm_start:
            return
        constraint = self.goal - self.err_ema
        rate = self.step_size * (self.speedup if self.speedup is not None and constraint > 0 else 1.0)
        self.beta.mul_(torch.exp(rate * constraint)).clamp_(self.beta_min, self.beta_max)

    def extra_repr(self) -> str:
        return f"goal={self.goal}, step_size={self.step_size}, alpha={self.alpha}, speedup={self.speedup}"


class SoftplusGECO(nn.Module):
    """Efficient-MORL's form of GECO: a Lagrange multiplier λ = softplus(b) on the reconstruction
    constraint err ≤ goal, moved additively, with a warm start.

        before ``warm_start``:  loss = err + kl_weight · KL
        afterwards:             loss = kl_weight · KL + λ · (err − goal)
        after each update from ``warm_start`` on: C̄ = EMA_α(goal − err) (started with this step's
        value at ``warm_start``), then  b ← max(b_min, b − s · C̄)

    so λ grows while the error is above the goal (C̄ < 0) and shrinks, down to softplus(b_min),
    once it is met. The state (b, the moving average of the error, whether it has started) lives in
    buffers, as ``GECO``'s. Call ``loss`` in ``forward`` and ``update`` from ``after_step``.
    """

    def __init__(
        self, goal: float, step_size: float, alpha: float = 0.99, beta_init: float = 0.55, beta_min: float = 0.55, warm_start: int = 0
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"GECO alpha must be in [0, 1), got {alpha}")
        if beta_init < beta_min:
            raise ValueError(f"SoftplusGECO needs beta_init >= beta_min, got {beta_init} < {beta_min}")
        self.goal, self.step_size, self.alpha = goal, step_size, alpha
        self.beta_min, self.warm_start = beta_min, warm_start
        self.register_buffer("beta", torch.tensor(float(beta_init), dtype=torch.float64))
        self.register_buffer("err_ema", torch.zeros((), dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @property
    def multiplier(self) -> Tensor:
        """λ = softplus(b), the weight of the reconstruction constraint."""
        return torch.nn.functional.softplus(self.beta)

    def loss(self, err: Tensor, kl: Tensor, step: int, kl_weight: float = 1.0) -> Tensor:
        if step < self.warm_start:
            return err + kl_weight * kl
        return kl_weight * kl + self.multiplier.to(err.dtype) * (err - self.goal)

    @torch.no_grad()
    def update(self, err: Tensor | float, step: int) -> None:
        if step < self.warm_start:
            return
        err = torch.as_tensor(err, dtype=torch.float64, device=self.beta.device).detach()
        if not bool(self.started):
            self.err_ema.copy_(err)
            self.started.fill_(True)
            return
        self.err_ema.mul_(self.alpha).add_((1.0 - self.alpha) * err)
        constraint = self.goal - self.err_ema
        self.beta.sub_(self.step_size * constraint).clamp_(min=self.beta_min)

    def extra_repr(self) -> str:
        return f"goal={self.goal}, step_size={self.step_size}, alpha={self.alpha}, warm_start={self.warm_start}"
