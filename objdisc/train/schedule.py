"""Learning-rate schedule: linear warm-up, then exponential decay.

lr(step) = base · min(1, step / warmup) · rate ** (step / decay_steps). This is the Slot Attention /
ClevrTex `decay(W, D, r)` form; SRT/OSRT use rate 0.16 over their decay horizon with the exponent
counted from the end of warm-up, which differs only by a constant factor rate ** (warmup / D).
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup_steps: int, decay_steps: int, decay_rate: float) -> float:
    warm = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    decay = decay_rate ** (step / decay_steps) if decay_steps > 0 else 1.0
    return warm * decay


def warmup_decay(optimizer: Optimizer, warmup_steps: int, decay_steps: int, decay_rate: float) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, decay_steps, decay_rate))
