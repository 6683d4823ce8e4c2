"""Checkpoints: written atomically, loaded with ``weights_only=True``, resumed automatically.

A checkpoint holds everything a resumed run needs to continue as if never stopped: model,
optimiser, schedule, EMA shadow weights, the step, and the RNG states (python, numpy, torch, CUDA).
The data position follows from the step (see ``objdisc.data.loading.TrainSampler``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from objdisc.io import atomic_write


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_write(path, "wb", durable=True) as f:
        torch.save(obj, f)


def rng_state() -> dict[str, Any]:
    state = {
        "python": list(random.getstate()[1]),  # 624 words + position
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys = np.asarray(state["numpy"].numpy(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be read; the message names it and what to do."""


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (``weights_only``: no code runs from the file). A damaged file is one
    clear error naming it, not a torch traceback."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: cannot be read ({type(err).__name__}: {reason}); the file is damaged or not an objdisc "
            f"checkpoint: move it away (or train with --restart) to start afresh"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an objdisc checkpoint (holds a {type(state).__name__})")
    return state
