"""objdisc/train/step.py: the deterministic-kernels scope of a training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objdisc.data.sprites import SpritesConfig, render_sprites
from objdisc.models import MODELS, model_config
from objdisc.train.step import deterministic_algorithms

CPU = torch.device("cpu")


def test_deterministic_scope_follows_the_setting_and_restores():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms("auto", CPU):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # a missing kernel warns, never stops a run
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms("off", CPU):
        assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError):
        with deterministic_algorithms("on", CPU):
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("a failing step")
    assert not torch.are_deterministic_algorithms_enabled()  # restored after an error too


def sprite_gradients(setting: str, repeats: int = 4) -> list[dict[str, torch.Tensor]]:
    """The gradient of DTI-Sprites' sprites (CPU preset, batch 32, sprites unfrozen) from the same
    batch and weights ``repeats`` times, at 2 threads."""
    images = [render_sprites(SpritesConfig(), i)["image"] for i in range(32)]  # sprites, not noise: the
    batch = {"image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,  # greedy layer
             "index": torch.arange(32)}  # choice then uses many sprites
    torch.manual_seed(0)
    model = MODELS["dti_sprites"].model(model_config("dti_sprites", {"preset": "cpu"}, {"image_size": 64, "num_slots": 6}))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    grads = []
    try:
        with deterministic_algorithms(setting, CPU):
            for _ in range(repeats):
                model.zero_grad()
                torch.manual_seed(1)  # the same noise on the masks every time
                model(batch, step=60).loss.backward()
                grads.append({"prototypes": model.prototypes.grad.clone(), "masks": model.masks.grad.clone()})
    finally:
        torch.set_num_threads(threads)
    return grads


def test_dti_sprites_gradients_are_bit_exact_on_cpu():
    """Without the deterministic kernels these gradients differed by ~1e-13 between identical steps
    at 2 threads (torch 2.13, 2-core AMD EPYC), and two runs with one seed drifted apart."""
    grads = sprite_gradients("auto")
    for other in grads[1:]:
        for name in ("prototypes", "masks"):
            assert torch.equal(grads[0][name], other[name]), name
