"""One training step, written once: the loop, ``objdisc bench`` and ``benchmarks/`` all call it.

forward (bf16 autocast on CUDA) → finite-loss check → backward → gradient clipping → the model's
optimisers (``objdisc.train.optim.Optimisation``: per-group rates for this step, frozen groups
skipped) → the model's ``after_step`` hook (state outside the gradient: GECO, sprite re-assignment).
EMA and logging stay in the loop: a benchmark step does not need them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import Tensor, nn

from objdisc.models.base import Model, ModelOutput
from objdisc.train.optim import Optimisation


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (``auto`` or ``bf16``); plain fp32 on CPU unless ``bf16`` is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic_algorithms(setting: str, device: torch.device):
    """torch's deterministic kernels while training (``TrainConfig.deterministic``), restored after.

    Why: with 2 CPU threads DTI-Sprites' gradient of its sprite prototypes and masks came out
    different in the last bits from one identical step to the next (~1e-13), so two runs with the
    same seed drifted apart after the sprites unfroze; with the deterministic kernels they agree
    bit for bit, for about 2% of a CPU step (Slot Attention and DTI-Sprites, 2 threads). On CUDA
    ("on") cuBLAS also needs a fixed workspace, set here unless the environment sets one."""
    enabled = setting == "on" or (setting == "auto" and device.type == "cpu")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns instead of stopping the training
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def train_step(
    net: nn.Module,
    model: Model,
    batch: dict[str, Tensor],
    optim: Optimisation,
    step: int,
    *,
    precision: str = "auto",
    grad_clip: float = 0.0,
) -> tuple[ModelOutput, Tensor | None]:
    """One update at 0-based ``step``. ``net`` is what runs the forward (the DDP wrapper, or the
    model itself); ``model`` the module whose hooks and parameters it owns. Returns the output and
    the pre-clip gradient norm (None without clipping)."""
    device = next(model.parameters()).device
    with autocast(device, precision):
        out = net(batch, step=step)
    if not torch.isfinite(out.loss):
        raise FloatingPointError(f"loss is {out.loss.item()} at step {step}")
    optim.zero_grad()
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    optim.step(step)
    with torch.no_grad():
        model.after_step(step, out)
    return out, grad_norm
