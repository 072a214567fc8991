"""Models, hypothesis strategies and finite-difference references shared by the tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

import functional_grads as fg


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


SMOOTH = {"tanh": nn.Tanh, "softplus": nn.Softplus, "sin": Sin, "gelu": nn.GELU}


def mlp(d_in: int, width: int, depth: int, d_out: int = 1, act: str = "tanh",
        dtype=torch.float64, seed: int = 0) -> nn.Module:
    """An MLP ``d_in -> width (x depth) -> d_out`` with the given activation."""
    torch.manual_seed(seed)
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), SMOOTH[act]() if act in SMOOTH else nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers).to(dtype)


@st.composite
def smooth_problems(draw, d_out: int | None = 1, square: bool = False):
    """``(f, params, X)``: a float64 smooth MLP and a batch, of random sizes (B may be 1)."""
    d_in = draw(st.integers(1, 4))
    out = d_in if square else (d_out if d_out is not None else draw(st.integers(1, 4)))
    model = mlp(d_in, draw(st.integers(1, 8)), draw(st.integers(1, 3)), out,
                draw(st.sampled_from(sorted(SMOOTH))), seed=draw(st.integers(0, 2**16)))
    f, params = fg.functionalize(model)
    B = draw(st.integers(1, 5))
    X = torch.randn(B, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    return f, params, X


def fd_along(fn, params, X, V, eps: float = 1e-6):
    """Central difference of a batched ``fn(params, X)`` along per-sample directions ``V``."""
    return (fn(params, X + eps * V) - fn(params, X - eps * V)) / (2 * eps)


def assert_close(a, b, rtol=1e-6, atol=1e-7):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
