"""Turn an ``nn.Module`` into a pure function ``f(params, x)``."""

from __future__ import annotations

from typing import Any

import optree
import torch
from torch import nn
from torch.nn import functional as F
from torch.func import functional_call
from torch.nn.modules import module as _nn_module

from ._checks import fmt
from ._context import check_module, is_one_sample
from ._typing import ParamsDict


# Layers whose batched forward is the per-sample forward stacked (dim 0 is the batch),
# matched by exact type: a subclass may override forward and mix samples.
_PER_SAMPLE_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.Identity, nn.Dropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)


# Layers NOTE [direct forward] computes without functional_call: nn.Linear and layers
# without parameters, matched by exact type.
_DIRECT_LAYERS = frozenset(_PER_SAMPLE_LAYERS) - {nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm}


def functionalize(module: nn.Module, /) -> tuple["FunctionalModule", ParamsDict]:
    """Split a module into a pure function and its parameters.

    Args:
      module: any ``nn.Module``. Its buffers (e.g. BatchNorm running stats) are used
        as they are at call time; tied weights appear once in ``params`` and stay tied.

    Returns:
      ``(f, params)``: ``f(params, x, *args, **kwargs)`` equals ``module(x, ...)`` for a
      batch ``[B, *x_shape]`` or a single sample ``[*x_shape]``, and ``params`` is a
      dict name -> tensor. The tensors are detached aliases of the module's parameters
      (no copy, no autograd graph outside our transforms). Functional training returns
      new params and leaves the module alone: write them back with :func:`load_params`.
      To train the module with ``torch.optim``, see :func:`apply_grads`. Inside a
      per-sample transform, the module gets each sample as a batch of one (``x[None]``),
      so modules that insist on a batch dimension (``Flatten``, ``BatchNorm1d``) work.

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
    f = FunctionalModule(module)
    return f, f.params()


def load_params(module: nn.Module, params: ParamsDict, /) -> None:
    """Write ``params`` (e.g. trained by ``make_step``) into ``module``'s parameters, in place.

    Keys, shapes, dtypes and devices must match the module's parameters exactly.

    Example:
      >>> model = torch.nn.Linear(2, 1)
      >>> load_params(model, {"weight": torch.ones(1, 2), "bias": torch.zeros(1)})
      >>> model.weight
      Parameter containing:
      tensor([[1., 1.]], requires_grad=True)
    """
    api = "load_params"
    if not isinstance(module, nn.Module):
        raise TypeError(f"{api}: expected the nn.Module to write into, got {type(module).__name__}.")
    match_names(api, dict(module.named_parameters()), params, "params")
    with torch.no_grad():
        for name, p in module.named_parameters():
            match_tensor(api, f"params[{name!r}]", params[name], p)
            p.copy_(params[name])


class FunctionalModule:
    """``f(params, x, *args, **kwargs) -> module(x, *args, **kwargs)`` with ``params`` swapped in."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._shapes = {name: p.shape for name, p in module.named_parameters()}
        # Without tied weights, functional_call need not walk the module to untie them.
        self._tied = len(list(module.named_parameters(remove_duplicate=False))) != len(self._shapes)

    def __call__(self, params: ParamsDict, x: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.check_params(params)
        check_module(self.module)
        if isinstance(x, torch.Tensor) and is_one_sample(x):
            # NOTE [batch of one]: a per-sample transform hands f one sample [*x_shape];
            # many modules (Flatten, BatchNorm1d, user code) assume a batch dimension, so
            # the module sees [1, *x_shape], as in a plain forward, and we drop it again.
            # An input that already has the batch's ndim (a user's own x[None]) is passed
            # as it is.
            out = self._forward(params, x[None], args, kwargs)
            return optree.tree_map(lambda t: t[0] if isinstance(t, torch.Tensor) and t.ndim else t, out)
        return self._forward(params, x, args, kwargs)

    def _forward(self, params: ParamsDict, x: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # NOTE [direct forward]: functional_call swaps every parameter into the module and
        # back (two setattrs each, ~40 us per call on a 3-layer MLP, a third of a small
        # eager step). An nn.Sequential of nn.Linear and parameter-free layers (exact types,
        # no forward or backward hooks) is computed directly: F.linear with the given params, and each other
        # layer's own forward, which is exactly what the module would run. Anything else
        # goes through functional_call.
        layers = None if args or kwargs or self._tied else self._direct_layers()
        if layers is None:
            return functional_call(self.module, params, (x, *args), kwargs, tie_weights=self._tied)
        for name, layer in layers:
            if type(layer) is nn.Linear:
                x = F.linear(x, params[f"{name}.weight"], params.get(f"{name}.bias"))
            else:
                x = layer.forward(x)
        return x

    def _direct_layers(self) -> list[tuple[str, nn.Module]] | None:
        """The (name, layer) pairs of NOTE [direct forward], or None if it does not apply."""
        module = self.module
        if type(module) is not nn.Sequential:
            return None
        layers: list[tuple[str, nn.Module]] = list(module._modules.items())  # type: ignore[arg-type]
        modules = [module, *(layer for _, layer in layers)]
        if not self.hook_free(modules) or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks \
                or any(m._backward_hooks or m._backward_pre_hooks for m in modules):
            return None
        if any(type(layer) not in _DIRECT_LAYERS or (type(layer) is not nn.Linear and layer._parameters)
               for _, layer in layers):
            return None
        return layers

    def params(self) -> ParamsDict:
        """The module's current parameters as detached aliases (name -> tensor)."""
        return {name: p.detach() for name, p in self.module.named_parameters()}

    def __repr__(self) -> str:
        return f"FunctionalModule({self.module!r})"

    def treats_samples_independently(self) -> bool:
        """True when ``module(X)[i]`` is ``module(X[i])`` by construction, for every ``i``.

        Only ``nn.Sequential`` trees of layers known to act on each sample alone qualify,
        matched by exact type and without hooks (a custom ``forward`` or a hook might mix
        samples, so it never does).
        """
        modules = _submodules(self.module)
        return self.hook_free(modules) and all(
            (type(m) is nn.Sequential or type(m) in _PER_SAMPLE_LAYERS)
            and not (type(m) is nn.Dropout and m.training and m.p > 0)
            for m in modules
        )

    def hook_free(self, modules: list[nn.Module] | None = None) -> bool:
        """True when no forward hook, on a submodule (of ``modules``, default all) or global,
        can change the module's forward: the condition for any path that computes it
        without calling it."""
        if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
            return False
        modules = _submodules(self.module) if modules is None else modules
        return not any(s._forward_hooks or s._forward_pre_hooks for s in modules)

    def check_params(self, params: ParamsDict) -> None:
        """Raise unless ``params`` has exactly the module's parameter names and shapes."""
        # NOTE [strict params]: torch.func.functional_call silently uses the module's own
        # tensor for any name missing from the dict; a typo would then train nothing.
        api = "f(params, x)"
        match_names(api, self._shapes, params, "params")
        dtypes: dict[torch.dtype, str] = {}
        for name, shape in self._shapes.items():
            got = params[name]
            if not isinstance(got, torch.Tensor) or got.shape != shape:
                desc = fmt(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ValueError(f"{api}: params[{name!r}] has shape {desc} but the module expects {fmt(shape)}.")
            if not got.is_floating_point():
                raise TypeError(f"{api}: params[{name!r}] has dtype {got.dtype}; parameters must be floating "
                                "point to be differentiated. Cast it, e.g. .float().")
            dtypes.setdefault(got.dtype, name)
        if len(dtypes) > 1:
            (a, ka), (b, kb) = list(dtypes.items())[:2]
            raise TypeError(f"{api}: params mix dtypes: params[{ka!r}] is {a} but params[{kb!r}] is {b}. "
                            "Cast them to one dtype, e.g. {k: v.double() for k, v in params.items()}.")


def _submodules(module: nn.Module) -> list[nn.Module]:
    """``list(module.modules())`` (shared submodules included once) without the generator
    machinery: several times faster on the eager per-call path."""
    out, seen, stack = [], set(), [module]
    while stack:
        m = stack.pop()
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
            stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return out


def match_names(api: str, expected: dict[str, Any], params: Any, what: str) -> None:
    if not isinstance(params, dict):
        raise TypeError(f"{api}: {what} must be the dict returned by functionalize, got {type(params).__name__}.")
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ValueError(
            f"{api}: {what} does not match the module's parameters (missing: {missing}, "
            f"unexpected: {extra}). Pass the dict returned by functionalize, or one with "
            "exactly the same keys."
        )


def match_tensor(api: str, name: str, got: Any, ref: torch.Tensor) -> None:
    if not isinstance(got, torch.Tensor):
        raise TypeError(f"{api}: {name} must be a tensor, got {type(got).__name__}.")
    for attr in ("shape", "dtype", "device"):
        if getattr(got, attr) != getattr(ref, attr):
            raise ValueError(
                f"{api}: {name} has {attr} {getattr(got, attr)} but the module's parameter has "
                f"{getattr(ref, attr)}. If the module was converted (.to(), .double()) after "
                "functionalize, call functionalize again and convert the params the same way."
            )
