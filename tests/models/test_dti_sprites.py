"""DTI-Sprites: parameter parity with the ClevrTex benchmark, identity transformations, the greedy
selection, sprite re-assignment (only rarely used sprites, resumable), the schedule, overfitting."""

from __future__ import annotations

import copy

import functools

import pytest
import torch

from objdisc.models.base import ModelOutput
from objdisc.models.dti_sprites import (
    DTISprites,
    DTISpritesConfig,
    occlusion_weights,
    with_background_order,
)
from objdisc.train.optim import Optimisation
from objdisc.config import TrainConfig

from . import scenes


def tiny(**overrides) -> DTISpritesConfig:
    kwargs = dict(
        image_size=32, num_slots=3, num_sprites=3, sprite_size=16, mask_init_std=4.0, encoder_stem=8,
        encoder_widths=(8, 8), encoder_pool=1, mlp_hidden=16, freeze_sprites_until=4, curriculum=(8,),
        reassign_every=5, warmup_steps=2, transformer_milestones=(20,),
    )
    kwargs.update(overrides)
    return DTISpritesConfig(**kwargs)


squares = functools.partial(scenes.squares, size=32, background=0.3)


def test_parameter_count_matches_benchmark() -> None:
    with torch.device("meta"):
        model = DTISprites(DTISpritesConfig())
    assert sum(p.numel() for p in model.parameters()) == 48_235_051
    cfg = model.cfg
    assert (cfg.num_layers, cfg.num_sprites, cfg.sprite_size, cfg.greedy_iters) == (10, 10, 40, 3)
    assert cfg.freeze_sprites_until == 40 * 1250 and cfg.curriculum == (150 * 1250,)
    assert len(model.sprite_transforms["projective"].weights) == 3 and model.sprite_transforms["projective"].n == 110


def test_identity_transformations_reproduce_the_prototypes() -> None:
    """Zero transformation parameters (the initial regressors' output) give each prototype and
    mask unchanged — colour ×1 + 0, identity homography — centred at half the canvas side: a
    16-pixel sprite lands pixel for pixel on the middle 16×16 of a 32×32 canvas."""
    torch.manual_seed(0)
    model = DTISprites(tiny(curriculum=(0,))).eval()
    with torch.no_grad():
        model.prototypes.uniform_(0, 1)
        model.masks.uniform_(0, 1)
    L, B, K = 2, 2, 4
    sprites = model.sprite_stack(noise=False)  # [K, 4, 16, 16], the empty sprite last
    features = model.encoder(squares(B))
    sprite_betas, layer_betas = model.transformation_parameters(features)
    assert all(torch.count_nonzero(b) == 0 for b in [*sprite_betas.values(), *layer_betas.values()])
    assert model.active_sprite_transforms(0) == ["projective"]
    out = model.render(sprites[None, :, None].expand(L, K, B, *sprites.shape[1:]), sprite_betas, layer_betas, step=0)
    assert out.shape == (L, K, B, 4, 32, 32)
    expected = torch.zeros(K, 4, 32, 32)
    expected[:3, :3, 8:24, 8:24] = model.prototypes.detach()  # in [0, 1]: the soft clamp is the identity
    expected[:3, 3:, 8:24, 8:24] = model.masks.detach()
    torch.testing.assert_close(out, expected[None, :, None].expand_as(out), atol=2e-6, rtol=0)

    # A translation of −0.5 in sampling coordinates moves the layer right by 0.5 / 2 · 16 = 4 px.
    shifted = {"color": layer_betas["color"], "position": layer_betas["position"].clone()}
    shifted["position"][..., 1] = -0.5
    moved = model.render(sprites[None, :, None].expand(L, K, B, *sprites.shape[1:]), sprite_betas, shifted, step=0)
    torch.testing.assert_close(moved[..., :, 4:], out[..., :, :-4], atol=2e-6, rtol=0)
    # A colour weight of −0.5 halves the RGB and leaves the mask.
    dim = {"color": torch.zeros_like(layer_betas["color"]), "position": layer_betas["position"]}
    dim["color"][..., 0::2] = -0.5
    darker = model.render(sprites[None, :, None].expand(L, K, B, *sprites.shape[1:]), sprite_betas, dim, step=0)
    torch.testing.assert_close(darker[:, :, :, :3], out[:, :, :, :3] / 2, atol=2e-6, rtol=0)
    torch.testing.assert_close(darker[:, :, :, 3:], out[:, :, :, 3:])


def naive_greedy(model: DTISprites, image, layers, masks, background, occ, frozen: bool) -> torch.Tensor:
    """The reference's greedy selection: a full composition per candidate."""
    L, K, B = layers.shape[:3]
    usable = K - 1 if frozen else K
    cur_l = [background] + [torch.zeros_like(background)] * L
    cur_m = [torch.ones_like(masks[0, 0])] + [torch.zeros_like(masks[0, 0])] * L
    choice = torch.zeros(L, K, B)
    for _ in range(model.cfg.greedy_iters):
        for l in range(1, L + 1):
            dists = []
            for k in range(usable):
                lay = torch.stack(cur_l[:l] + [layers[l - 1, k]] + cur_l[l + 1 :])
                msk = torch.stack(cur_m[:l] + [masks[l - 1, k]] + cur_m[l + 1 :])
                recon = (occlusion_weights(msk, occ) * lay).sum(0)
                d = ((image - recon) ** 2).flatten(1).mean(1)
                if not frozen and k < K - 1:
                    d = d + model.cfg.lambda_empty
                dists.append(d)
            best = torch.stack(dists).argmin(0)
            choice[l - 1] = torch.nn.functional.one_hot(best, K).t().float()
            cur_l[l] = layers[l - 1][best, torch.arange(B)]
            cur_m[l] = masks[l - 1][best, torch.arange(B)]
    return choice


@pytest.mark.parametrize("frozen", [False, True])
def test_greedy_selection_equals_full_compositions(frozen) -> None:
    torch.manual_seed(1)
    model = DTISprites(tiny(num_slots=4, num_sprites=4))
    L, K, B, H = 3, 5, 3, 8
    layers, masks = torch.rand(L, K, B, 3, H, H), torch.rand(L, K, B, 1, H, H).round()
    background, image = torch.rand(B, 3, H, H), torch.rand(B, 3, H, H)
    pairs = torch.rand(B, L, L)
    occ = torch.tril(pairs, -1) + torch.triu(1 - torch.tril(pairs, -1).transpose(1, 2), 1)
    occ = with_background_order(occ.permute(1, 2, 0))
    fast = model.greedy_selection(image, layers, masks, background, occ, frozen)
    torch.testing.assert_close(fast, naive_greedy(model, image, layers, masks, background, occ, frozen))
    assert fast.sum(1).eq(1).all()
    if frozen:
        assert fast[:, -1].sum() == 0  # the empty sprite cannot be chosen while the sprites are frozen


def test_forward_outputs_and_composition() -> None:
    torch.manual_seed(0)
    model = DTISprites(tiny()).to("cpu")  # nn.Module machinery (to, eval, deepcopy) works
    image = squares(3)
    out = model({"image": image}, step=10)
    assert isinstance(out, ModelOutput) and out.loss.shape == () and torch.isfinite(out.loss)
    assert out.recon.shape == (3, 3, 32, 32) and out.masks.shape == (3, 3, 32, 32) and out.masks_have_background
    assert out.slot_rgb.shape == (3, 3, 3, 32, 32)
    assert out.extras["assignment"].shape == (3, 2, 4) and out.extras["assignment"].sum(-1).eq(1).all()
    model.eval()
    with torch.no_grad():
        out = model({"image": image}, step=10)
    torch.testing.assert_close((out.masks[:, :, None] * out.slot_rgb).sum(1).clamp(0, 1), out.recon, atol=1e-5, rtol=0)


def test_background_starts_at_the_mean_of_the_first_training_batch() -> None:
    model = DTISprites(tiny())
    image = squares(4)
    model.eval()
    model({"image": image}, step=0)  # evaluation never initialises it
    assert not bool(model.background_ready) and torch.all(model.background == 0.5)
    model.train()
    model({"image": image}, step=0)
    assert bool(model.background_ready)
    torch.testing.assert_close(model.background[0], image.mean(0))
    model({"image": squares(4, seed=3)}, step=1)  # only once
    torch.testing.assert_close(model.background[0], image.mean(0))


def fake_output(assignment: torch.Tensor) -> ModelOutput:
    return ModelOutput(loss=torch.zeros(()), extras={"assignment": assignment})


def usage(B: int, L: int, K: int, rare: int, seed: int) -> torch.Tensor:
    """One-hot assignments [B, L, K], the same in every layer, that never pick sprite ``rare``
    (nor the empty sprite)."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, K - 2, (B, 1), generator=g).expand(B, L)
    picks = picks + (picks >= rare).long()
    return torch.nn.functional.one_hot(picks, K).float()


def test_reassignment_changes_only_rarely_used_sprites() -> None:
    torch.manual_seed(0)
    cfg = tiny(num_sprites=4, freeze_sprites_until=0)
    model = DTISprites(cfg)
    with torch.no_grad():
        model.prototypes.uniform_(0, 1)
        for mlp in model.sprite_transforms.values():
            for p in mlp.parameters():
                p.normal_()
    before = copy.deepcopy(model.state_dict())
    L, K = cfg.num_layers, cfg.num_sprites + 1
    assignment = usage(8, L, K, rare=2, seed=0)
    for step in range(1, cfg.reassign_every + 1):
        model.after_step(step, fake_output(assignment))
    after = model.state_dict()
    counts = assignment.sum((0, 1))
    source = int(counts[: cfg.num_sprites].argmax())
    assert source != 2
    # The rare sprite is now a copy of the most used one (prototype up to 1e-4 noise).
    torch.testing.assert_close(after["prototypes"][2], before["prototypes"][source], atol=1e-3, rtol=0)
    torch.testing.assert_close(after["masks"][2], before["masks"][source], atol=0, rtol=0)
    mlp = model.sprite_transforms["projective"]
    for layer in range(L):
        for p in (*mlp.weights, *mlp.biases):
            torch.testing.assert_close(p[layer * K + 2], p[layer * K + source], atol=0, rtol=0)
    # Every other sprite is untouched, bit for bit (the source's prototype gets the 1e-4 noise).
    for k in range(cfg.num_sprites):
        if k in (2, source):
            continue
        assert torch.equal(after["prototypes"][k], before["prototypes"][k])
        assert torch.equal(after["masks"][k], before["masks"][k])
    assert (after["prototypes"][source] - before["prototypes"][source]).abs().max() < 1e-3
    assert not torch.equal(after["prototypes"][2], before["prototypes"][2])
    others = [n for n in before if not n.startswith(("prototypes", "sprite_transforms", "usage_", "masks"))]
    assert all(torch.equal(after[n], before[n]) for n in others)
    assert int(model.usage_steps) == 0 and model.usage_sum.abs().sum() == 0  # reset after the check


def test_a_layer_that_drew_only_the_empty_sprite_reassigns_nothing() -> None:
    """Usage of the checked layer is zero for every real sprite: nothing is rare relative to
    nothing, so the dictionary stays as it is (it used to be overwritten by copies of sprite 0)."""
    torch.manual_seed(0)
    cfg = tiny(num_sprites=4, freeze_sprites_until=0)
    model = DTISprites(cfg)
    with torch.no_grad():
        model.prototypes.uniform_(0, 1)
    before = copy.deepcopy(model.state_dict())
    only_empty = torch.zeros(cfg.num_sprites + 1)
    only_empty[-1] = 1.0
    assert model.reassign(only_empty) == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # Through the training hook too: every layer empty for a whole window.
    L, K = cfg.num_layers, cfg.num_sprites + 1
    assignment = torch.zeros(8, L, K)
    assignment[..., -1] = 1
    for step in range(1, cfg.reassign_every + 1):
        model.after_step(step, fake_output(assignment))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items() if not k.startswith("usage_"))


def test_no_reassignment_while_the_sprites_are_frozen() -> None:
    model = DTISprites(tiny(num_sprites=4, freeze_sprites_until=100))
    before = copy.deepcopy(model.state_dict())
    for step in range(1, 11):
        model.after_step(step, fake_output(usage(4, 2, 5, rare=1, seed=step)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items() if not k.startswith("usage_"))


def test_reassignment_is_resumable_bit_exactly() -> None:
    """Usage statistics live in buffers: a run interrupted between two checks, restored from its
    state_dict (and the RNG state the checkpoint keeps), re-assigns exactly as an uninterrupted one."""
    cfg = tiny(num_sprites=4, freeze_sprites_until=0, reassign_every=4)
    torch.manual_seed(0)
    full = DTISprites(cfg)
    torch.manual_seed(0)
    resumed = DTISprites(cfg)
    outs = [fake_output(usage(4, 2, 5, rare=1 + step % 3, seed=step)) for step in range(1, 13)]
    torch.manual_seed(5)
    for step, out in enumerate(outs, start=1):
        full.after_step(step, out)
    torch.manual_seed(5)
    for step, out in enumerate(outs[:6], start=1):
        resumed.after_step(step, out)
    state, rng = copy.deepcopy(resumed.state_dict()), torch.get_rng_state()
    torch.manual_seed(0)
    fresh = DTISprites(cfg)
    fresh.load_state_dict(state)
    torch.manual_seed(123)  # anything in between
    torch.set_rng_state(rng)
    for step, out in enumerate(outs[6:], start=7):
        fresh.after_step(step, out)
    assert int(fresh.usage_steps) == int(full.usage_steps)
    for (name, a), b in zip(full.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_schedule_groups_freeze_curriculum_and_step_downs() -> None:
    cfg = tiny()
    model = DTISprites(cfg)
    train = TrainConfig(lr=1e-4)
    optim = Optimisation(model.optimizers(train), train, model)  # every parameter in exactly one group
    groups = {g.name: g for spec in model.optimizers(train) for g in spec.groups}
    assert set(groups) == {"sprites", "background", "transformations", "sprite_projective"}
    assert groups["sprites"].frozen_until == cfg.freeze_sprites_until
    assert groups["sprite_projective"].frozen_until == cfg.curriculum[0]
    assert groups["transformations"].weight_decay == cfg.transformer_weight_decay
    net = groups["transformations"].schedule
    assert net(0) == 0 and net(1) == 0.5 and net(10) == 1.0 and net(20) == pytest.approx(0.1)
    assert groups["sprites"].schedule(20) == 1.0
    assert model.active_sprite_transforms(cfg.curriculum[0] - 1) == []
    assert model.active_sprite_transforms(cfg.curriculum[0]) == ["projective"]
    optim.set_lr(25)
    rates = optim.lrs()
    assert rates["lr/sprites"] == pytest.approx(1e-4) and rates["lr/transformations"] == pytest.approx(1e-5)


def test_sprites_and_inactive_transformations_do_not_move_before_their_start() -> None:
    torch.manual_seed(0)
    cfg = tiny(freeze_sprites_until=3, curriculum=(3,), empty_sprite=False)  # a sprite is always drawn
    model = DTISprites(cfg)
    train = TrainConfig(lr=1e-2, warmup_steps=0, grad_clip=0)
    optim = Optimisation(model.optimizers(train), train, model)
    image = squares(4)
    snap = lambda: [p.detach().clone() for p in (model.prototypes, model.masks, *model.sprite_transforms.parameters())]  # noqa: E731
    start = snap()
    for step in range(3):
        out = model({"image": image}, step=step)
        optim.zero_grad()
        out.loss.backward()
        optim.step(step)
        model.after_step(step, out)
    assert all(torch.equal(a, b) for a, b in zip(start, snap()))
    for step in range(3, 6):
        out = model({"image": image}, step=step)
        optim.zero_grad()
        out.loss.backward()
        optim.step(step)
    now = snap()
    assert not torch.equal(start[0], now[0])  # prototypes
    assert not all(torch.equal(a, b) for a, b in zip(start[2:], now[2:]))  # the projective networks


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    # As in training: sprites frozen at first (the empty sprite is then not selectable, so the
    # transformations learn to place the sprites), then everything.
    model = DTISprites(tiny(freeze_sprites_until=15, curriculum=(15,), warmup_steps=0, noise=0.0))
    train = TrainConfig(lr=3e-3, warmup_steps=0, grad_clip=0)
    optim = Optimisation(model.optimizers(train), train, model)
    image = squares(4)
    losses = []
    for step in range(40):
        out = model({"image": image}, step=step)
        optim.zero_grad()
        out.loss.backward()
        optim.step(step)
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_encoder_downsample_sets_the_feature_map() -> None:
    """The ResNet-18 layout halves 64 pixels five times (stem, max-pool, three stages) to 2×2;
    with two stride-2 steps besides the max-pool the map is 8×8."""
    x = torch.rand(1, 3, 64, 64)
    for downsample, side in ((None, 2), (4, 2), (2, 8), (0, 32)):
        cfg = tiny(image_size=64, encoder_widths=(8, 8, 8, 8), encoder_downsample=downsample, encoder_pool=1)
        features = DTISprites(cfg).encoder[:-2](x)
        assert tuple(features.shape[-2:]) == (side, side)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown"):
        tiny(sprite_transforms=("identity", "tps"))
    with pytest.raises(ValueError, match="curriculum"):
        tiny(curriculum=(1, 2))
    with pytest.raises(ValueError, match="num_slots"):
        tiny(num_slots=1)
    with pytest.raises(ValueError, match="encoder_downsample"):
        tiny(encoder_downsample=3)  # two stages: the stem and the second stage are all it has
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        DTISprites(tiny())({"image": torch.rand(2, 3, 16, 16)})
