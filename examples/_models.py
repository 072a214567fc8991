"""A network the PINN examples share: the residual MLP that real PINN codes use."""

from __future__ import annotations

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """``x -> tanh(W_in x)``, then blocks ``h + tanh(W h)``, then a linear head: ``[B, d_in] -> [B, d_out]``."""

    def __init__(self, d_in: int, width: int, blocks: int, d_out: int):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.out(h)
