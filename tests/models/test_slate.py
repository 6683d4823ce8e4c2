"""SLATE: parameter parity with HHousen, the dVAE tokens detached from the slot pathway (gradient
test), batched greedy decoding equal to the reference's token-by-token decoding, masks, the
temperature schedule, the optimiser groups, overfitting."""

from __future__ import annotations

import functools

import pytest
import torch

from objdisc.config import TrainConfig
from objdisc.models.blocks.dvae import relaxed_tokens
from objdisc.models.slate import PRESETS, SLATE, SLATEConfig
from objdisc.train.optim import Optimisation
from objdisc.train.schedule import Anneal

from . import scenes


def tiny(**overrides) -> SLATEConfig:
    kwargs = dict(
        resolution=16, num_slots=3, vocab_size=16, d_model=16, num_heads=2, num_blocks=2, dropout=0.1,
        slot_size=16, mlp_hidden=16, dvae_hidden=8, tau=Anneal.cosine(1.0, 0.1, 0, 10), warmup_steps=5,
    )
    kwargs.update(overrides)
    return SLATEConfig(**kwargs)


squares = functools.partial(scenes.squares, size=16, background=0.3)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_hhousen() -> None:
    """HHousen counts each decoder block's causal mask, a boolean nn.Parameter of 1024², among its
    16,096,195 parameters; here the mask is computed."""
    with torch.device("meta"):
        model = SLATE(PRESETS["hhousen"])
    masks = 8 * 1024 * 1024
    assert n_params(model) + masks == 16_096_195
    assert n_params(model.dvae) == 681_923
    assert n_params(model.decoder) + masks == 13_124_480
    assert (model.cfg.resolution, model.cfg.num_tokens, model.cfg.num_slots) == (128, 1024, 7)


def test_dvae_tokens_are_detached_from_the_slot_pathway() -> None:
    """The full loss gives the dVAE exactly the gradient of its own MSE (recomputed here with the
    same Gumbel noise): the transformer's cross-entropy reaches no dVAE parameter, while every
    other parameter does learn from it."""
    model = SLATE(tiny()).train()
    image = squares(2)
    dvae = list(model.dvae.parameters())

    torch.manual_seed(7)
    out = model({"image": image}, step=3)
    full = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    torch.manual_seed(7)
    recon = model.dvae.decode(relaxed_tokens(model.dvae.encode(image), out.losses["tau"].item()))
    mse = ((image - recon) ** 2).sum() / 2
    torch.testing.assert_close(mse, out.losses["mse"])
    own = torch.autograd.grad(mse, dvae)
    by_id = {id(p): g for p, g in zip(model.parameters(), full)}
    assert all(torch.equal(by_id[id(p)], g) for p, g in zip(dvae, own))
    others = [g for p, g in zip(model.parameters(), full) if id(p) not in {id(q) for q in dvae}]
    assert others and all(g is not None and g.abs().sum() > 0 for g in others[:3])
    assert sum(g is None for g in others) == 0


def test_batched_greedy_decoding_equals_token_by_token_decoding() -> None:
    torch.manual_seed(0)
    model = SLATE(tiny(resolution=16)).eval()  # 4×4 = 16 tokens
    with torch.no_grad():
        _, slots, _ = model.encode_slots(torch.randint(0, 16, (3, 16)))
        cached = model.generate(slots)
        naive = model.generate_naive(slots)
    assert cached.shape == (3, 16)
    assert torch.equal(cached, naive)
    assert len(cached.unique()) > 1  # not a degenerate constant decoding


def test_cached_decoder_steps_equal_the_teacher_forced_pass() -> None:
    torch.manual_seed(1)
    model = SLATE(tiny()).eval()
    with torch.no_grad():
        tokens = torch.randint(0, 16, (2, 16))
        emb, slots, _ = model.encode_slots(tokens)
        memory = model.slot_proj(slots)
        full, _ = model.decoder(emb[:, :-1], memory)
        cache = model.decoder.start(memory, 16)
        steps = torch.cat([model.decoder.step(emb[:, t : t + 1], cache) for t in range(16)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    # Causal: changing a later input leaves the earlier outputs as they were.
    with torch.no_grad():
        changed = emb[:, :-1].clone()
        # Random, not a constant: the decoder's LayerNorms remove a shift shared by every feature,
        # so `+= 1.0` left the outputs equal up to rounding and the check below passed or failed
        # with the machine's arithmetic.
        changed[:, 10:] += torch.randn_like(changed[:, 10:])
        again, _ = model.decoder(changed, memory)
    torch.testing.assert_close(again[:, :10], full[:, :10], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(again[:, 10:], full[:, 10:])


def test_evaluation_reconstructs_autoregressively_and_masks_sum_to_one() -> None:
    torch.manual_seed(0)
    model = SLATE(tiny()).eval()
    image = squares(2)
    with torch.no_grad():
        out = model({"image": image}, step=5)
        expected = model.tokens_to_image(model.generate(out.slots)).clamp(0, 1)
    torch.testing.assert_close(out.recon, expected)
    assert torch.equal(out.extras["tokens"], model.dvae.encode(image).argmax(1).flatten(1))
    for masks in (out.masks, out.extras["attention"]):
        assert masks.shape == (2, 3, 16, 16)
        torch.testing.assert_close(masks.sum(1), torch.ones(2, 16, 16))
    # Each token's mask value covers its 4×4 patch.
    assert torch.equal(out.masks[:, :, ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1), out.masks)
    picture = model.picture({"image": image, "mask": torch.zeros(2, 16, 16, dtype=torch.long)}, out, limit=2)
    assert picture.ndim == 3 and picture.shape[2] == 3


def test_slot_attention_masks_option() -> None:
    torch.manual_seed(0)
    model = SLATE(tiny(masks="slots")).eval()
    with torch.no_grad():
        out = model({"image": squares(2)}, step=0)
    torch.testing.assert_close(out.masks, out.extras["attention"])


def test_temperature_anneals_by_cosine() -> None:
    model = SLATE(tiny(tau=Anneal.cosine(1.0, 0.1, 0, 10))).train()
    taus = [model({"image": squares(1)}, step=s).losses["tau"].item() for s in (0, 5, 10, 50)]
    assert taus == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert PRESETS["hhousen"].tau == Anneal.cosine(1.0, 0.1, 0, 30000)


def test_optimiser_groups_rates_warmup_and_plateau() -> None:
    model = SLATE(tiny(warmup_steps=10, lr_dvae=3e-4))
    train = TrainConfig(lr=1e-4)
    specs = model.optimizers(train)
    optim = Optimisation(specs, train, model)  # every parameter in exactly one group
    assert specs[0].name == "adam" and specs[0].plateau.metric == "loss"
    assert (specs[0].plateau.factor, specs[0].plateau.patience) == (0.5, 4)
    groups = {g.name: g for g in specs[0].groups}
    assert {id(p) for p in groups["dvae"].params} == {id(p) for p in model.dvae.parameters()}
    optim.set_lr(5)
    assert optim.lrs() == {"lr/dvae": pytest.approx(3e-4), "lr/main": pytest.approx(5e-5)}
    for loss in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0):  # no improvement for more than 4 validations
        optim.on_validation({"loss": loss})
    optim.set_lr(20)
    assert optim.lrs() == {"lr/dvae": pytest.approx(1.5e-4), "lr/main": pytest.approx(5e-5)}


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = SLATE(tiny(dropout=0.0, warmup_steps=0))
    train = TrainConfig(lr=3e-3)
    optim = Optimisation(model.optimizers(train), train, model)
    image = squares(4)
    losses = []
    for step in range(40):
        out = model({"image": image}, step=step)
        optim.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step(step)
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny(resolution=18)
    with pytest.raises(ValueError, match="divisible"):
        tiny(d_model=15)
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        SLATE(tiny())({"image": torch.rand(1, 3, 32, 32)})


def test_dvae_block_shapes_and_token_helpers() -> None:
    from objdisc.models.blocks.dvae import DVAE, hard_tokens

    torch.manual_seed(0)
    dvae = DVAE(vocab_size=10, hidden=8)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    log_probs = dvae.encode(image)
    assert log_probs.shape == (2, 10, 4, 4)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2, 4, 4))
    soft = relaxed_tokens(log_probs, tau=0.5)
    torch.testing.assert_close(soft.sum(1), torch.ones(2, 4, 4))
    assert dvae.decode(soft).shape == (2, 3, 16, 16)
    tokens = hard_tokens(log_probs, tau=0.5)
    assert tokens.shape == (2, 4, 4) and tokens.dtype == torch.long and not tokens.requires_grad
    with pytest.raises(ValueError, match="multiple of 4"):
        dvae.encode(torch.rand(1, 3, 18, 18))
