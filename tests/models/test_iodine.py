"""IODINE: parameter parity with the ClevrTex benchmark, the 17 refinement inputs (each slot sees its
own image; gradients and likelihoods are stop-gradient and layer-normalised), the iteration-weighted
loss, evaluation without outer gradients, and that it learns a fixed batch."""

from __future__ import annotations

import torch

from objdisc.models import MODELS
from objdisc.models.iodine import IODINE, IODINEConfig, PRESETS

from .scenes import squares




def tiny(**kw) -> IODINEConfig:
    base = dict(image_size=16, num_slots=3, z_dim=8, iterations=3, conv_channels=16, decoder_layers=2, lstm_dim=32)
    return IODINEConfig(**{**base, **kw})


def test_parameter_count_matches_the_benchmark():
    with torch.device("meta"):
        model = IODINE(PRESETS["benchmark"])
    assert sum(p.numel() for p in model.parameters()) == 1_637_060
    assert model.refinement.convs[0].in_channels == 17
    assert MODELS["iodine"].presets["benchmark"] == IODINEConfig()


def test_refinement_inputs_pair_each_slot_with_its_own_image_and_stop_gradients():
    torch.manual_seed(0)
    model = IODINE(tiny())
    image = squares(2, 16)
    b, k = 2, 3
    lam = model.lambda0.expand(b * k, -1)
    terms = model.elbo_terms(image, lam, b)
    images, vectors = model.refinement_inputs(image, lam, terms, keep_graph=True)
    assert images.shape == (b * k, 17, 16, 16) and vectors.shape == (b * k, 4 * 8)
    per_slot = images.view(b, k, 17, 16, 16)
    for i in range(b):
        for j in range(k):
            torch.testing.assert_close(per_slot[i, j, :3], image[i])  # the reference mixes images up here
    # Layer-normalised inputs (gradients, likelihoods): zero mean, unit variance per slot at init.
    for channels in ((9, 12), (12, 13), (13, 14), (14, 15)):
        x = images[:, channels[0] : channels[1]].detach().flatten(1)
        torch.testing.assert_close(x.mean(1), torch.zeros(b * k), atol=1e-4, rtol=0)
    # The log posterior over slots is normalised; coordinates are the last two channels.
    torch.testing.assert_close(per_slot[:, :, 8].exp().sum(1), torch.ones(b, 16, 16))
    torch.testing.assert_close(images[0, 15, 0], torch.linspace(-1, 1, 16))
    # Stop-gradient: the normalised gradient inputs carry no graph back to the decoder.
    grads = torch.autograd.grad(images[:, 9:15].sum(), list(model.decoder.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)


def test_loss_weights_iterations_and_masks_sum_to_one():
    torch.manual_seed(0)
    model = IODINE(tiny())
    out = model({"image": squares(2, 16)})
    t = model.cfg.iterations
    expected = sum((i + 1) / t * out.losses[f"loss_t{i + 1}"] for i in range(t))
    torch.testing.assert_close(out.loss.detach(), expected)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 16, 16))
    assert out.extras["recon_iterations"].shape == (2, t, 3, 16, 16)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_evaluation_runs_without_outer_gradients_and_matches_training():
    torch.manual_seed(0)
    model = IODINE(tiny())
    image = squares(2, 16)
    torch.manual_seed(1)
    train_out = model({"image": image})
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        eval_out = model({"image": image})
    assert not eval_out.loss.requires_grad
    torch.testing.assert_close(eval_out.loss, train_out.loss.detach(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(eval_out.recon, train_out.recon, rtol=1e-5, atol=1e-5)


def test_overfits_one_batch():
    """The loss (negative: σ 0.1, no 2π constant) falls and the reconstruction error halves."""
    torch.manual_seed(0)
    model = IODINE(tiny(component="pixel", init_gain=1.0))
    image = squares(4, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, errors = [], []
    for _ in range(40):
        out = model({"image": image})
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(float(out.loss.detach()))
        errors.append(float(((out.recon - image) ** 2).mean()))
    assert sum(losses[-5:]) / 5 < losses[0] - 500, losses
    assert sum(errors[-5:]) / 5 < 0.6 * errors[0], errors
