"""Values that change with the training step: learning-rate factors and annealed hyper-parameters.

Two kinds of callables ``step → float``, both frozen dataclasses so that they sit in model config
dataclasses as defaults, load from ``params.yaml`` (a mapping with the field names) and record in
checkpoints as plain dicts:

* ``WarmupDecay`` — the learning-rate factor min(1, step / warmup) · rate ** (step / decay_steps),
  the Slot Attention / ClevrTex ``decay(W, D, r)`` form. SRT/OSRT use rate 0.16 over their decay
  horizon with the exponent counted from the end of warm-up, which differs only by the constant
  factor rate ** (warmup / D).
* ``Anneal`` — an annealed value (KL weights, Gumbel temperatures, presence priors, curricula):
  constant; linear or cosine from ``start`` at step ``begin`` to ``end`` at step ``until``
  (constant outside); exponential (geometric) interpolation over the same range; or ``step``:
  ``start`` multiplied by ``gamma`` at each of ``milestones``. The ClevrTex benchmark's
  ``itr_lin(N, a, b)`` is ``Anneal.linear(a, b, 0, N)``.

A model reads an annealed field with ``at(value, step)``, which also accepts a plain number, so a
config field typed ``float | Anneal`` may be either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WarmupDecay:
    warmup_steps: int = 0
    decay_steps: int = 0  # 0: no decay
    decay_rate: float = 0.5

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.decay_steps, self.decay_rate)


def lr_factor(step: int, warmup_steps: int, decay_steps: int, decay_rate: float) -> float:
    warm = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    decay = decay_rate ** (step / decay_steps) if decay_steps > 0 else 1.0
    return warm * decay


@dataclass(frozen=True)
class Anneal:
    kind: Literal["constant", "linear", "cosine", "exp", "step"] = "constant"
    start: float = 0.0  # the value at and before `begin` (and throughout, when constant)
    end: float = 0.0  # the value at and after `until` (linear, cosine, exp)
    begin: int = 0
    until: int = 0
    milestones: tuple[int, ...] = ()  # step: start · gamma ** (number of milestones reached)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "cosine", "exp", "step"):
            raise ValueError(f"Anneal.kind must be constant, linear, cosine, exp or step, got {self.kind!r}")
        if self.kind in ("linear", "cosine", "exp") and self.until < self.begin:
            raise ValueError(f"Anneal: until ({self.until}) must not come before begin ({self.begin})")
        if self.kind == "exp" and self.start * self.end <= 0:
            raise ValueError(f"Anneal(kind='exp') needs start and end of the same sign, non-zero; got {self.start}, {self.end}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"Anneal.milestones must be increasing, got {self.milestones}")

    @classmethod
    def constant(cls, value: float) -> Anneal:
        return cls("constant", value, value)

    @classmethod
    def linear(cls, start: float, end: float, begin: int, until: int) -> Anneal:
        return cls("linear", start, end, begin, until)

    @classmethod
    def cosine(cls, start: float, end: float, begin: int, until: int) -> Anneal:
        return cls("cosine", start, end, begin, until)

    @classmethod
    def exp(cls, start: float, end: float, begin: int, until: int) -> Anneal:
        return cls("exp", start, end, begin, until)

    @classmethod
    def steps(cls, start: float, milestones: tuple[int, ...], gamma: float) -> Anneal:
        return cls("step", start, start, milestones=tuple(milestones), gamma=gamma)

    def progress(self, step: int) -> float:
        """Fraction of the way from ``begin`` to ``until``, clamped to [0, 1]."""
        if step <= self.begin:
            return 0.0
        if step >= self.until:
            return 1.0
        return (step - self.begin) / (self.until - self.begin)

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.start
        if self.kind == "step":
            return self.start * self.gamma ** sum(step >= m for m in self.milestones)
        t = self.progress(step)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * t
        if self.kind == "cosine":  # half a cosine: flat at both ends
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.start * (self.end / self.start) ** t  # exp


def at(value: float | Anneal | WarmupDecay, step: int) -> float:
    """The value of a config field at ``step``: plain numbers are constants."""
    return float(value(step)) if callable(value) else float(value)
