"""The exact methods of the second-order operators behind one protocol: ``(args, V, w) ->
(value, tangents, sum_k w_k v_k^T H v_k)``. A new exact method is a class here and a name
in ``_typing.LaplacianMethod``; the ``"auto"`` choice among them is ``_strategy``'s."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor
from torch.func import jvp, vmap
from torch.overrides import TorchFunctionMode

from .._constants import autograd_constants
from .._per_sample import INNER_RANDOMNESS, map_samples
from .._typing import InDims
from ._directional import Directional


class Method(Protocol):
    """An exact method: ``(args, V, w) -> (value, tangents or None, sum_k w_k v_k^T H v_k)``
    for directions ``V [K, D]`` and weights ``w [K]`` (:class:`Forward` also takes them per
    sample, ``[B, K, D]`` and ``[B, K]``: the stochastic methods' draws);
    ``value [B, *out]``, ``tangents [K, B, *out]`` (``v_k . grad f``), the operator ``[B, *out]``."""

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]: ...


class Forward:
    """Second-order Taylor mode through f's graph (the forward Laplacian, NOTE [Taylor engine])."""

    def __init__(self, directional: Directional):
        self.directional = directional

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        value, (tangents,), top = self.directional(args, V, w, 2)
        return value, tangents, 2 * top


class Taylor:
    """Second-order forward mode by nested ``jvp`` along each direction, per sample."""

    def __init__(self, api: str, f: Callable[..., Tensor], *, argnums: int, in_dims: InDims, chunk_size: int | None,
                 randomness: str):
        self.api, self.f, self.argnums, self.in_dims = api, f, argnums, in_dims
        self.chunk_size, self.randomness = chunk_size, randomness

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        f, argnums = self.f, self.argnums

        def one(*a: Any) -> Tensor:
            x, fx = a[argnums], _at(autograd_constants(f), list(a), argnums)  # NOTE [autograd's constants]

            def second(v: Tensor) -> Tensor:
                v = v.reshape(x.shape)
                return jvp(lambda y: jvp(fx, (y,), (v,))[1], (x,), (v,))[1]

            with _RefuseWrongSecondOrderJvp():
                return torch.tensordot(w, vmap(second, randomness=INNER_RANDOMNESS)(V), 1)

        op = map_samples(self.api, one, args, argnums=argnums, chunk_size=self.chunk_size,
                         randomness=self.randomness, in_dims=self.in_dims)
        return None, None, op


class HessianTrace:
    """The trace of the full Hessian ``[B, *out, D, D]`` against the directions."""

    def __init__(self, hessian: Callable[..., Tensor], argnums: int):
        self.hessian, self.argnums = hessian, argnums

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        H, D, n = self.hessian(*args), V.shape[1], args[self.argnums].ndim - 1  # V is [K, D]
        H = H.reshape(*H.shape[:H.ndim - 2 * n], D, D)  # [B, *out, *x_shape, *x_shape] -> [B, *out, D, D]
        return None, None, torch.einsum("b...ij,ki,kj,k->b...", H, V, V, w)  # pragma: no mutate (upper-case labels agree)


class _RefuseWrongSecondOrderJvp(TorchFunctionMode):
    # NOTE [nested jvp of norms]: torch's forward-mode rules for the normalisation ops drop
    # a second-order term when differentiated again, so jvp(jvp(layer_norm)) is silently
    # wrong (pytorch/pytorch#196700, #196699, umbrella #198017; reproduced on torch 2.13).
    # Forward-over-reverse is right, so method="taylor" refuses these ops and points there.
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _NORMS:
            raise ValueError(
                f"laplacian(method='taylor'): f calls {getattr(func, '__name__', func)}, whose nested "
                "forward-mode derivative is wrong in torch (pytorch/pytorch#196700); use "
                "method='forward' (forward-over-reverse), which is exact here.")
        return func(*args, **(kwargs or {}))


_NORMS = {torch.nn.functional.layer_norm, torch.nn.functional.batch_norm, torch.nn.functional.group_norm,
          torch.nn.functional.instance_norm, torch.layer_norm, torch.batch_norm, torch.group_norm,
          torch.instance_norm}


def _at(f: Callable[..., Tensor], args: list[Any], argnums: int) -> Callable[[Tensor], Tensor]:
    def fx(y: Tensor) -> Tensor:
        a = list(args)
        a[argnums] = y
        return f(*a)

    return fx
