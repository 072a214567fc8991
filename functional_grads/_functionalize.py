"""Turn an ``nn.Module`` into a pure function ``f(params, x)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ._context import check_module
from ._typing import Params


# Layers whose batched forward is the per-sample forward stacked (dim 0 is the batch).
# Not GroupNorm or Flatten: on an unbatched sample they read dim 0 differently.
_PER_SAMPLE_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.Identity, nn.Dropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)


def functionalize(module: nn.Module, /) -> tuple["FunctionalModule", Params]:
    """Split a module into a pure function and its parameters.

    Args:
      module: any ``nn.Module``. Its buffers (e.g. BatchNorm running stats) are used
        as they are at call time; tied weights appear once in ``params`` and stay tied.

    Returns:
      ``(f, params)``: ``f(params, x, *args, **kwargs)`` equals ``module(x, ...)`` for a
      batch ``[B, *x_shape]`` or a single sample ``[*x_shape]``, and ``params`` is a
      dict name -> tensor. The tensors share storage with the module's parameters but
      do not require grad, so an in-place optimizer step on them (see ``apply_grads``)
      updates the module, and no autograd graph is recorded outside our transforms.

    Example:
      >>> f, params = functionalize(torch.nn.Linear(3, 1))
      >>> f(params, torch.ones(5, 3)).shape
      torch.Size([5, 1])
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"functionalize: expected an nn.Module, got {type(module).__name__}. "
            "For a plain function, write it as f(params, x) and use it directly."
        )
    params = {name: p.detach() for name, p in module.named_parameters()}
    return FunctionalModule(module), params


class FunctionalModule:
    """``f(params, x, *args, **kwargs) -> module(x, *args, **kwargs)`` with ``params`` swapped in."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._shapes = {name: p.shape for name, p in module.named_parameters()}

    def __call__(self, params: Params, x: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._check_params(params)
        check_module(self.module)
        tensors = {**dict(self.module.named_buffers()), **params}
        return functional_call(self.module, tensors, (x, *args), kwargs)

    def __repr__(self) -> str:
        return f"FunctionalModule({self.module!r})"

    def treats_samples_independently(self) -> bool:
        """True when ``module(X)[i]`` is ``module(X[i])`` by construction, for every ``i``.

        Only ``nn.Sequential`` trees of layers known to act on each sample alone qualify
        (a custom ``forward`` might mix samples, so it never does).
        """
        return all(
            type(m) is nn.Sequential
            or (isinstance(m, _PER_SAMPLE_LAYERS) and not (isinstance(m, nn.Dropout) and m.training and m.p > 0))
            for m in self.module.modules()
        )

    def _check_params(self, params: Params) -> None:
        # NOTE [strict params]: torch.func.functional_call silently uses the module's own
        # tensor for any name missing from the dict; a typo would then train nothing.
        if not isinstance(params, dict):
            raise TypeError(
                f"f(params, x): params must be the dict returned by functionalize, "
                f"got {type(params).__name__}."
            )
        missing = [k for k in self._shapes if k not in params]
        extra = [k for k in params if k not in self._shapes]
        if missing or extra:
            raise ValueError(
                f"f(params, x): params does not match the module's parameters "
                f"(missing: {missing}, unexpected: {extra}). Pass the dict returned by "
                "functionalize, or one with exactly the same keys."
            )
        for name, shape in self._shapes.items():
            got = params[name]
            if not isinstance(got, torch.Tensor) or got.shape != shape:
                desc = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ValueError(
                    f"f(params, x): params[{name!r}] has shape {desc} but the module "
                    f"expects {list(shape)}."
                )
