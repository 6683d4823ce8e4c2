"""Convolutional LSTM cell (Shi et al. 2015) with a learned initial state, as GNM's StructDRAW
runs it over the grid of cells: the four gates come from one convolution of [input, h]."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvLSTMCell(nn.Module):
    """One step of a ConvLSTM over a ``grid`` × ``grid`` map of ``hidden`` channels.

    gates = Conv_k([x, h]) split into input i, forget f, output o and candidate g;
    c' = σ(f)·c + σ(i)·tanh(g);  h' = σ(o)·tanh(c').  ``initial(batch)`` is the learned (h₀, c₀)."""

    def __init__(self, input_dim: int, hidden: int, kernel: int = 1, grid: int | tuple[int, int] = 4) -> None:
        super().__init__()
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        self.hidden = hidden
        self.conv = nn.Conv2d(input_dim + hidden, 4 * hidden, kernel, padding=(kernel - 1) // 2)
        self.h0 = nn.Parameter(torch.zeros(1, hidden, gh, gw))
        self.c0 = nn.Parameter(torch.zeros(1, hidden, gh, gw))

    def initial(self, batch: int) -> tuple[Tensor, Tensor]:
        return self.h0.expand(batch, -1, -1, -1), self.c0.expand(batch, -1, -1, -1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


__all__ = ["ConvLSTMCell"]
