"""Optimisers as a model asks for them: parameter groups, learning-rate schedules, frozen parts,
reduce-on-plateau, all resumable.

A model describes what it wants with ``OptimizerSpec``s (``Model.optimizers(train)``); the
default is one optimiser (``train.optimizer``, Adam unless told otherwise) over every trainable
parameter at ``train.lr`` with the ``train`` block's warm-up/decay. ``Optimisation`` turns the specs
into torch optimisers and owns everything that changes their learning rates, so the training loop
only calls ``step`` and ``on_validation``:

* every group's learning rate is recomputed before each step as
  ``base_lr · schedule(step) · plateau_scale`` (a pure function of the step and the plateau state,
  so a resumed run sets exactly the rates an uninterrupted one would);
* a group with ``frozen_until = N`` gets no update and no optimiser state before step N (its
  gradients are dropped, so Adam's moments do not collect them either): DTI-Sprites' sprites;
* ``Plateau`` is ReduceLROnPlateau on a validation number (SPAIR: validation MSE; SLATE:
  validation loss). torch's ``ReduceLROnPlateau`` writes the rates into the optimiser, which a
  per-step schedule would overwrite; here it is a multiplicative ``scale`` that composes with the
  schedule (the warm-up of SLATE and its plateau at once), with torch's defaults (relative
  threshold 1e-4, no cool-down) and ``min_lr`` as the floor once the plateau has reduced the rate.

Several optimisers are allowed (SPACE: RMSprop for the foreground, Adam for the background).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from objdisc.train.schedule import WarmupDecay

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


@dataclass
class ParamGroup:
    params: list[nn.Parameter]
    name: str = "all"  # logged as train/lr/<name> when there are several groups
    lr: float | None = None  # absolute base rate; None: train.lr × lr_scale
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: train.weight_decay
    schedule: Callable[[int], float] | None = None  # rate factor per step; None: train's warm-up/decay
    frozen_until: int = 0  # no update before this step


@dataclass
class Plateau:
    metric: str = "loss"  # a validation number: loss, mse, fg_ari, ...
    mode: Literal["min", "max"] = "min"
    factor: float = 0.1
    patience: int = 3  # validations without improvement before the rate is cut
    min_lr: float = 0.0
    threshold: float = 1e-4  # relative improvement that counts

    def __post_init__(self) -> None:
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"Plateau.factor must be in (0, 1), got {self.factor}")
        if self.patience < 0:
            raise ValueError(f"Plateau.patience must be >= 0, got {self.patience}")


@dataclass
class OptimizerSpec:
    groups: list[ParamGroup]
    name: str | None = None  # adam | adamw | rmsprop | sgd; None: train.optimizer
    options: dict[str, Any] = field(default_factory=dict)  # betas, eps, alpha, momentum, ...
    plateau: Plateau | None = None


@dataclass
class _PlateauState:
    best: float | None = None
    bad: int = 0
    scale: float = 1.0


class Optimisation:
    """The torch optimisers of a model's specs, with their schedules and plateau state."""

    def __init__(self, specs: list[OptimizerSpec], train: Any, model: nn.Module | None = None) -> None:
        if not specs:
            raise ValueError("a model must ask for at least one optimiser")
        default_schedule = WarmupDecay(train.warmup_steps, train.decay_steps, train.decay_rate)
        self.specs = specs
        self.optimizers: list[torch.optim.Optimizer] = []
        self._groups: list[list[tuple[ParamGroup, float, Callable[[int], float]]]] = []
        self._plateaus = [_PlateauState() for _ in specs]
        seen: set[int] = set()
        for spec in specs:
            name = spec.name or train.optimizer
            if name not in OPTIMIZERS:
                raise ValueError(f"unknown optimiser '{name}' (known: {', '.join(OPTIMIZERS)})")
            torch_groups, groups = [], []
            for group in spec.groups:
                params = [p for p in group.params if p.requires_grad]
                twice = [p for p in params if id(p) in seen]
                if twice:
                    raise ValueError(f"optimiser group '{group.name}': {len(twice)} parameters are already in another group")
                seen.update(id(p) for p in params)
                base = group.lr if group.lr is not None else train.lr * group.lr_scale
                wd = group.weight_decay if group.weight_decay is not None else train.weight_decay
                torch_groups.append({"params": params, "lr": base, "weight_decay": wd})
                groups.append((group, base, group.schedule or default_schedule))
            self.optimizers.append(OPTIMIZERS[name](torch_groups, **spec.options))
            self._groups.append(groups)
        if model is not None:  # every trainable parameter is somebody's: a forgotten one never learns
            missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
            if missing:
                raise ValueError(f"{len(missing)} trainable parameters are in no optimiser group (first: {missing[0]})")

    def parameters(self) -> Iterator[nn.Parameter]:
        for opt in self.optimizers:
            for group in opt.param_groups:
                yield from group["params"]

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def set_lr(self, step: int) -> None:
        for opt, groups, plateau, spec in zip(self.optimizers, self._groups, self._plateaus, self.specs):
            for torch_group, (_, base, schedule) in zip(opt.param_groups, groups):
                lr = base * schedule(step) * plateau.scale
                if plateau.scale < 1.0:
                    lr = max(lr, spec.plateau.min_lr)
                torch_group["lr"] = lr

    def step(self, step: int) -> None:
        """One update at (0-based) ``step``: rates for this step, frozen groups dropped, all optimisers stepped."""
        self.set_lr(step)
        for opt, groups in zip(self.optimizers, self._groups):
            for torch_group, (group, _, _) in zip(opt.param_groups, groups):
                if step < group.frozen_until:
                    for p in torch_group["params"]:
                        p.grad = None
            opt.step()

    def on_validation(self, scores: dict[str, float]) -> None:
        """Feed the validation numbers to each reduce-on-plateau."""
        for spec, state in zip(self.specs, self._plateaus):
            rule = spec.plateau
            if rule is None:
                continue
            if rule.metric not in scores:
                raise ValueError(f"reduce-on-plateau watches '{rule.metric}', but validation gives {sorted(scores)}")
            value = float(scores[rule.metric])
            margin = 0.0 if state.best is None else abs(state.best) * rule.threshold
            if state.best is None:
                better = True
            elif rule.mode == "min":
                better = value < state.best - margin
            else:
                better = value > state.best + margin
            if better:
                state.best, state.bad = value, 0
            else:
                state.bad += 1
                if state.bad > rule.patience:
                    state.scale *= rule.factor
                    state.bad = 0

    def lrs(self) -> dict[str, float]:
        """Current rates for logging: ``lr`` for a single group, else ``lr/<group name>``."""
        named = [(g.name, tg["lr"]) for opt, groups in zip(self.optimizers, self._groups) for tg, (g, _, _) in zip(opt.param_groups, groups)]
        if len(named) == 1:
            return {"lr": named[0][1]}
        return {f"lr/{name}": lr for name, lr in named}

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "plateaus": [{"best": p.best, "bad": p.bad, "scale": p.scale} for p in self._plateaus],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(f"checkpoint has {len(state['optimizers'])} optimisers, the model asks for {len(self.optimizers)}")
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self._plateaus = [_PlateauState(**p) for p in state["plateaus"]]
