"""Slot Attention block and soft position embedding."""

from __future__ import annotations

import copy

import pytest
import torch

from objdisc.models.blocks import SlotAttention, SoftPositionEmbed, build_grid




def reference_step(sa: SlotAttention, slots: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The paper's iteration written out with plain ops, independently of the block's code."""
    x = torch.nn.functional.layer_norm(inputs, (sa.input_dim,), sa.norm_inputs.weight, sa.norm_inputs.bias)
    k = x @ sa.project_k.weight.T + sa.project_k.bias
    v = x @ sa.project_v.weight.T + sa.project_v.bias
    s = torch.nn.functional.layer_norm(slots, (sa.slot_dim,), sa.norm_slots.weight, sa.norm_slots.bias)
    q = s @ sa.project_q.weight.T + sa.project_q.bias
    logits = q @ k.transpose(1, 2) / sa.slot_dim**0.5  # [B, K, N]
    attn = logits.softmax(dim=1) + sa.eps  # compete over slots
    attn = attn / attn.sum(dim=2, keepdim=True)  # weighted mean over inputs
    updates = attn @ v
    b, n_slots, d = slots.shape
    new = sa.gru(updates.reshape(-1, d), slots.reshape(-1, d)).reshape(b, n_slots, d)
    h = torch.nn.functional.layer_norm(new, (d,), sa.norm_mlp.weight, sa.norm_mlp.bias)
    return new + sa.mlp(h)


def test_shapes_and_attention_normalised_over_slots() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=5, input_dim=12, slot_dim=16, iters=2)
    slots, attn = sa(torch.randn(3, 20, 12))
    assert slots.shape == (3, 5, 16) and attn.shape == (3, 5, 20)
    assert attn.dtype == torch.float32
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(3, 20))
    # Softmax over slots, not over inputs: the rows over inputs do not sum to one in general.
    assert not torch.allclose(attn.sum(dim=2), torch.ones(3, 5))
    slots, attn = sa(torch.randn(2, 20, 12), num_slots=9)
    assert slots.shape == (2, 9, 16) and attn.shape == (2, 9, 20)


def test_matches_the_paper_iteration() -> None:
    torch.manual_seed(1)
    sa = SlotAttention(num_slots=4, input_dim=6, slot_dim=8, iters=2, mlp_hidden=10, qkv_bias=True)
    for p in sa.parameters():  # non-trivial LayerNorm affines and biases
        torch.nn.init.normal_(p, std=0.3)
    inputs = torch.randn(2, 11, 6)
    start = torch.randn(2, 4, 8)
    expected = reference_step(sa, reference_step(sa, start, inputs), inputs)
    slots, _ = sa(inputs, slots=start)
    torch.testing.assert_close(slots, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_init_deterministic_under_seed() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=3, input_dim=8, slot_dim=8)
    x = torch.randn(2, 10, 8)
    torch.manual_seed(123)
    a, _ = sa(x)
    torch.manual_seed(123)
    b, _ = sa(x)
    c, _ = sa(x)  # the generator moved on: new noise
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # Paper init: μ and log σ are [1, 1, D], shared over slots, Glorot-uniform with fan_in 1.
    assert sa.slots_mu.shape == (1, 1, 8) and sa.slots_log_sigma.shape == (1, 1, 8)
    assert sa.slots_mu.abs().max() <= (6 / 9) ** 0.5


def test_learned_init_is_permutation_equivariant() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=5, input_dim=8, slot_dim=16, iters=3, init="learned")
    x = torch.randn(2, 30, 8)
    slots, attn = sa(x)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = copy.deepcopy(sa)
    with torch.no_grad():
        permuted.slots_init.copy_(sa.slots_init[perm])
    slots_p, attn_p = permuted(x)
    torch.testing.assert_close(slots_p, slots[:, perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attn_p, attn[:, perm], rtol=1e-5, atol=1e-6)
    # Learned slots involve no sampling: two calls agree without reseeding.
    torch.testing.assert_close(sa(x)[0], slots)
    with pytest.raises(ValueError, match="fixed table of 5 slots"):
        sa(x, num_slots=6)


def test_implicit_gradient_flows_through_last_step_only_and_reaches_the_start() -> None:
    torch.manual_seed(0)
    implicit = SlotAttention(num_slots=3, input_dim=8, slot_dim=8, iters=3, implicit=True)
    x = torch.randn(2, 15, 8, requires_grad=True)
    torch.manual_seed(7)
    slots, _ = implicit(x)
    slots.square().sum().backward()
    grad_implicit = x.grad.clone()
    mu_grad = implicit.slots_mu.grad.clone()

    # Same weights, explicit: 3 iterations to the fixed point, detach, then one differentiated step.
    plain = copy.deepcopy(implicit)
    plain.implicit = False
    x.grad = None
    torch.manual_seed(7)
    fixed, _ = plain(x)
    plain.iters = 1
    start = fixed.detach().requires_grad_()
    last, _ = plain(x, slots=start)
    torch.testing.assert_close(last, slots)
    last.square().sum().backward()
    torch.testing.assert_close(x.grad, grad_implicit)
    # The initial slots get the last step's gradient straight through (BO-QSA): the gradient of
    # the mean μ is the sum over scenes and slots of the gradient at the last step's input.
    torch.testing.assert_close(mu_grad, start.grad.sum(dim=(0, 1), keepdim=True))

    # Differentiating all iterations gives a different gradient.
    plain.iters = 4
    x.grad = None
    torch.manual_seed(7)
    plain(x)[0].square().sum().backward()
    assert not torch.allclose(x.grad, grad_implicit)


def test_slot_self_attention_variant() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=4, input_dim=8, slot_dim=16, iters=2, slot_self_attention=True)
    assert isinstance(sa.self_attention, torch.nn.MultiheadAttention) and sa.self_attention.num_heads == 4
    x = torch.randn(2, 10, 8)
    start = torch.randn(2, 4, 16)
    slots, _ = sa(x, slots=start)
    # The attention among slots changes the result, and stays permutation-equivariant.
    without = copy.deepcopy(sa)
    without.self_attention = None
    assert not torch.allclose(without(x, slots=start)[0], slots)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(sa(x, slots=start[:, perm])[0], slots[:, perm], rtol=1e-5, atol=1e-6)


def test_bf16_autocast() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=3, input_dim=8, slot_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        slots, attn = sa(torch.randn(2, 10, 8))
    assert attn.dtype == torch.float32 and torch.isfinite(slots).all()
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(2, 10))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="init"):
        SlotAttention(3, 8, 8, init="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"inputs \[B, N, 8\]"):
        SlotAttention(3, 8, 8)(torch.randn(2, 10, 7))


def test_build_grid_values() -> None:
    grid = build_grid(3, 2)
    assert grid.shape == (1, 3, 2, 4)
    torch.testing.assert_close(grid[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))  # y down the rows
    torch.testing.assert_close(grid[0, 0, :, 1], torch.tensor([0.0, 1.0]))  # x along the columns
    torch.testing.assert_close(grid[..., 2:], 1.0 - grid[..., :2])
    torch.testing.assert_close(grid[0, 2, 1], torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_soft_position_embed() -> None:
    torch.manual_seed(0)
    embed = SoftPositionEmbed(5, (3, 4))
    x = torch.randn(2, 3, 4, 5)
    out = embed(x)
    expected = x + build_grid(3, 4) @ embed.proj.weight.T + embed.proj.bias
    torch.testing.assert_close(out, expected)
    assert "grid" not in embed.state_dict()
    with pytest.raises(ValueError, match="SoftPositionEmbed expects"):
        embed(torch.randn(2, 4, 3, 5))
