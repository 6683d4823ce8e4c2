"""The models' convolution stacks and ConvLSTM: output sizes follow the strides and
upscales, GroupNorm stays valid when narrowed, the ConvLSTM step is the LSTM equations."""

import pytest
import torch

from objdisc.models.blocks.conv_lstm import ConvLSTMCell
from objdisc.models.blocks.conv_stacks import (
    ConvNormStack,
    SubPixelStack,
    conv_relu_stack,
    fit_upscales,
    group_count,
)


def test_conv_relu_stack_keeps_the_resolution_and_the_state_dict_layout():
    stack = conv_relu_stack(3, 8)
    assert stack(torch.rand(2, 3, 9, 7)).shape == (2, 8, 9, 7)
    # The layout Slot Attention and Efficient-MORL checkpoints were saved with: convs.{0,2,4,6}.
    assert sorted(stack.state_dict()) == sorted(f"{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias"))
    assert all(isinstance(stack[i], torch.nn.ReLU) for i in (1, 3, 5, 7))
    assert [m.kernel_size for m in stack if isinstance(m, torch.nn.Conv2d)] == [(5, 5)] * 4
    with pytest.raises(ValueError, match="odd kernel"):
        conv_relu_stack(3, 8, kernel=4)


def test_conv_norm_stack_sizes():
    stack = ConvNormStack(3, [(8, 4, 2, 4), (8, 4, 1, 4), (12, 3, 2, 8), (6, 2, 0, 3)], final_norm=False)
    out = stack(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 6, 3, 3)  # 16 → 8 → 8 ("same" even kernel) → 4 → valid 2×2 → 3
    assert not isinstance(stack[-1], torch.nn.GroupNorm)  # last conv bare
    assert isinstance(ConvNormStack(3, [(8, 3, 1, 4)])[-1], torch.nn.GroupNorm)


def test_sub_pixel_stack_grows_a_latent_into_a_glimpse():
    stack = SubPixelStack(5, [(16, 1, 1, 4), (8, 3, 2, 4), (4, 3, 4, 2)], final_norm=False)
    assert stack.upscale == 8
    out = stack(torch.rand(3, 5))
    assert out.shape == (3, 4, 8, 8)


def test_group_counts_and_upscales():
    assert group_count(16, 64) == 16 and group_count(16, 8) == 8 and group_count(8, 12) == 4
    assert fit_upscales((4, 2, 4, 4), 128) == (4, 2, 4, 4)
    assert fit_upscales((4, 2, 4, 4), 64) == (4, 2, 4, 2)
    assert fit_upscales((4, 2, 4, 2, 2, 1), 32) == (4, 2, 4, 1, 1, 1)
    with pytest.raises(ValueError):
        fit_upscales((2, 2), 6)


def test_conv_lstm_step_is_the_lstm_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4, kernel=1, grid=2)
    h, c = cell.initial(2)
    assert h.shape == (2, 4, 2, 2) and c.requires_grad
    x = torch.rand(2, 3, 2, 2)
    h = torch.rand(2, 4, 2, 2)
    h1, c1 = cell(x, (h, c))
    w, b = cell.conv.weight[:, :, 0, 0], cell.conv.bias
    gates = torch.einsum("oi,bihw->bohw", w, torch.cat([x, h], 1)) + b[None, :, None, None]
    i, f, o, g = gates.chunk(4, 1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c1, c_ref)
    torch.testing.assert_close(h1, torch.sigmoid(o) * torch.tanh(c_ref))
