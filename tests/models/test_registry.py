"""Every registered model at every preset takes one training step at batch 2 on tiny inputs: a
finite loss, a finite gradient on every trainable parameter, and an update through the model's own
optimisers. A model is covered here the moment it is registered."""

import pytest
import torch
from torch.utils.data import default_collate

from objdisc.config import DatasetConfig, ImageConfig, TrainConfig
from objdisc.data.synth import SynthConfig, render_scene
from objdisc.models import MODELS, data_inputs, model_config
from objdisc.models.family import IMAGE
from objdisc.train.optim import Optimisation

CASES = [(name, preset) for name, entry in MODELS.items() for preset in entry.presets]
SIZE = 32


def tiny_batch(model_cls) -> dict:
    """Two small synthetic scenes (3 views of 32×32) in the family's layout; scene models get two
    input views where they take several (SRT's second camera embedding then has a gradient)."""
    views = min(2, getattr(model_cls, "max_input_views", None) or 2)
    data = DatasetConfig(source="synth", image=ImageConfig(size=SIZE),
                         views={"num_input_views": views, "num_target_rays": 64, "targets": "all"})
    transform = model_cls.family.transform(data, train=True)
    cfg = SynthConfig(scenes=2, views=3, height=SIZE, width=SIZE, seed=1)
    samples = []
    for i in range(2):
        scene = render_scene(cfg, i) | {"__key__": f"{i:08d}", "objects": [], "meta": {}}
        samples.append(transform(scene, torch.Generator().manual_seed(i)))
    return default_collate(samples)


@pytest.mark.parametrize("name,preset", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_every_model_and_preset_takes_a_training_step(name, preset):
    entry = MODELS[name]
    inputs = {"image_size": SIZE} if "image_size" in data_inputs(entry.config).values() else {}
    torch.manual_seed(0)
    model = entry.model(model_config(name, {"preset": preset}, inputs)).train()
    batch = tiny_batch(entry.model)
    train = TrainConfig(warmup_steps=0)
    optim = Optimisation(model.optimizers(train), train, model)
    before = [p.detach().clone() for p in model.parameters()]

    out = model(batch, step=0)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss), out.loss
    assert all(torch.isfinite(v).all() for v in out.losses.values()), out.losses
    optim.zero_grad()
    out.loss.backward()
    bad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not bad, f"no or non-finite gradient: {bad[:5]}"
    optim.step(0)
    with torch.no_grad():
        model.after_step(0, out)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    if entry.model.family is IMAGE:  # what evaluation and pictures read
        b, _, h, w = batch["image"].shape
        assert out.recon.shape == (b, 3, h, w) and out.masks.shape[0] == b and out.masks.shape[-2:] == (h, w)
