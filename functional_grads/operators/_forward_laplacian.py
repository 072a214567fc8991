"""The forward Laplacian (Li et al. 2023; collapsed Taylor mode, Dangel et al. 2025) for
``nn.Sequential`` MLPs: value, K input tangents and the weighted second-order term, pushed
through the network together in one forward pass, batched, with no backward pass.

For a layer ``h -> W h + b`` the tangents and the second-order term are linear:
``J -> J W^T`` and ``L -> L W^T``. For an elementwise ``s``:
``J -> s'(h) J`` and ``L -> s'(h) L + s''(h) sum_k w_k J_k^2``, where ``J_k`` is the
tangent along direction ``v_k``. At the output, ``L = sum_k w_k v_k^T H v_k`` (the
Laplacian for the basis vectors and unit weights), ``J_k = v_k . grad f``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._checks import not_scalar_per_sample
from .._functionalize import FunctionalModule

# s(h) -> (s, s', s'') for the elementwise layers we know, matched by exact type.
_Derivs = Callable[[nn.Module, Tensor], "tuple[Tensor, Tensor, Tensor]"]


def _tanh(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    t = torch.tanh(h)
    d = 1 - t * t
    return t, d, -2 * t * d


def _sigmoid(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(h)
    d = s * (1 - s)
    return s, d, d * (1 - 2 * s)


def _softplus(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    beta, threshold = float(m.beta), float(m.threshold)  # type: ignore[arg-type]
    s = torch.sigmoid(beta * h)
    linear = beta * h > threshold  # pragma: no mutate (>=: at equality torch's own f' and f'' disagree)
    d = torch.where(linear, torch.ones_like(s), s)
    dd = torch.where(linear, torch.zeros_like(s), beta * s * (1 - s))
    return nn.functional.softplus(h, beta, threshold), d, dd


def _silu(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(h)
    d = s * (1 + h * (1 - s))
    return h * s, d, s * (1 - s) * (2 + h * (1 - 2 * s))


def _gelu(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    cdf = 0.5 * (1 + torch.erf(h / math.sqrt(2)))
    pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    return h * cdf, cdf + h * pdf, pdf * (2 - h * h)


def _relu(m: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    d = (h > 0).type_as(h)  # autograd's convention: relu'(0) = 0, relu'' = 0
    return torch.relu(h), d, torch.zeros_like(h)


_ACTIVATIONS: dict[type, _Derivs] = {
    nn.Tanh: _tanh, nn.Sigmoid: _sigmoid, nn.Softplus: _softplus, nn.SiLU: _silu, nn.ReLU: _relu,
}


def supports(f: Any, X: Tensor, argnums: int) -> bool:
    """True when ``f`` is a module from ``functionalize`` this fast path can propagate through."""
    if not (isinstance(f, FunctionalModule) and argnums == 1 and X.ndim == 2):
        return False
    module = f.module
    # Every layer in order, a shared (repeated) instance each time it runs, as
    # Sequential.forward does; a weight shared between layers reads from params under one
    # name only, so tied modules take the general path.
    return type(module) is nn.Sequential and not f.tied and f.runs_as_built() and all(
        type(m) is nn.Linear or type(m) is nn.Identity or type(m) in _ACTIVATIONS
        or (type(m) is nn.GELU and m.approximate == "none")
        for m in module._modules.values()
    )


def forward_laplacian(api: str, f: FunctionalModule, params: Any, X: Tensor, V: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(value [B], V grad f [B, K], sum_k w_k v_k^T H v_k [B])`` for directions ``V [K, D]``.

    ``V`` and ``w`` may also be per sample: ``[B, K, D]`` and ``[B, K]``.
    """
    f.check_params(params)
    # Until the first nonlinearity the tangents do not depend on the sample: J stays
    # [K, n], shared by the batch (one small matmul, not B of them), and L stays zero.
    h, J, L = X, V, None
    for name, m in f.module._modules.items():  # as Sequential.forward: repeats included
        assert m is not None  # supports() admits only layers
        if type(m) is nn.Linear:
            W = f.tensor(params, name, m, "weight")
            b = f.tensor(params, name, m, "bias")
            h = h @ W.T + (b if b is not None else 0)
            J = J @ W.T
            L = None if L is None else L @ W.T
        elif type(m) is not nn.Identity:
            derivs = _gelu if type(m) is nn.GELU else _ACTIVATIONS[type(m)]
            h, d, dd = derivs(m, h)
            second = dd * _weighted_square_sum(J, w)
            L = second if L is None else d * L + second
            J = d[:, None, :] * J  # [B, 1, n] * ([K, n] or [B, K, n]) -> [B, K, n]
    J = J if J.ndim == 3 else J.expand(X.shape[0], *J.shape)
    L = X.new_zeros(h.shape) if L is None else L
    if h.shape[1] != 1:
        raise not_scalar_per_sample(api, h.shape[1:])
    return h.reshape(h.shape[0]), J.reshape(J.shape[0], J.shape[1]), L.reshape(L.shape[0])


def _weighted_square_sum(J: Tensor, w: Tensor) -> Tensor:
    """``sum_k w_k J_k^2``: ``[K, n] -> [n]`` (shared) or ``[B, K, n] -> [B, n]``."""
    return (J * J * (w[..., None])).sum(-2)
