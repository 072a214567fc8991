"""Turn an ``nn.Module`` into a pure function ``f(params, x)``."""

from __future__ import annotations

from typing import Any

import optree
import torch
from torch import nn
from torch.nn import functional as F
from torch.func import functional_call
from torch.nn.modules import module as _nn_module

from ._checks import fmt, match_names, match_tensor
from ._context import check_module, is_one_sample, mapped_conditions
from ._typing import ParamsDict


# Layers whose batched forward is the per-sample forward stacked (dim 0 is the batch),
# matched by exact type: a subclass may override forward and mix samples.
_PER_SAMPLE_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.Identity, nn.Dropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)



def functionalize(module: nn.Module, /) -> tuple["FunctionalModule", ParamsDict]:
    """Split a module into a pure function and its trainable parameters.

    Args:
      module: any ``nn.Module``. Its buffers (e.g. BatchNorm running stats) and its frozen
        parameters (``requires_grad=False``) stay in the module and are used as they are at
        call time (a checkpoint loaded into them later is seen); tied weights appear once
        in ``params`` and stay tied.

    Returns:
      ``(f, params)``: ``f(params, x, *args, **kwargs)`` equals ``module(x, ...)`` for a
      batch ``[B, *x_shape]`` or a single sample ``[*x_shape]``, and ``params`` is a
      dict name -> tensor of the trainable parameters only, so gradients, optimizers and
      :func:`load_params` never touch a frozen one. The tensors are detached aliases of
      the module's parameters (no copy, no autograd graph outside our transforms).
      Functional training returns new params and leaves the module alone: write them back
      with :func:`load_params`. To train the module with ``torch.optim``, see
      :func:`apply_grads`. Inside a per-sample transform, the module gets each sample as
      a batch of one (``x[None]``), so modules that insist on a batch dimension
      (``Flatten``, ``BatchNorm1d``) work. Freezing or unfreezing a parameter after this
      call makes ``f`` raise until ``functionalize`` is called again.

    Example:
      >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
      >>> model[0].requires_grad_(False)  # doctest: +ELLIPSIS
      Linear(...)
      >>> f, params = functionalize(model)
      >>> sorted(params), f(params, torch.ones(5, 3)).shape
      (['1.bias', '1.weight'], torch.Size([5, 1]))
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"functionalize: expected an nn.Module, got {type(module).__name__}. "
            "For a plain function, write it as f(params, x) and use it directly."
        )
    f = FunctionalModule(module)
    return f, f.params()


def load_params(module: nn.Module, params: ParamsDict, /) -> None:
    """Write ``params`` (e.g. trained by ``make_step``) into ``module``'s trainable parameters, in place.

    Keys, shapes, dtypes and devices must match the module's trainable parameters exactly
    (those :func:`functionalize` returns); frozen parameters are never written.

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
    trainable, frozen = split_params(module)
    match_names(api, trainable, params, "params", frozen=frozen)
    with torch.no_grad():
        for name, p in trainable.items():
            match_tensor(api, f"params[{name!r}]", params[name], p)
            p.copy_(params[name])


class FunctionalModule:
    """``f(params, x, *args, **kwargs) -> module(x, *args, **kwargs)`` with ``params`` swapped in."""

    def __init__(self, module: nn.Module):
        self.module = module
        trainable, frozen = split_params(module)
        self._shapes = {name: p.shape for name, p in trainable.items()}
        self._frozen = frozenset(frozen)
        # The requires_grad flags as functionalize saw them (NOTE [frozen parameters]).
        self._flags = [(p, p.requires_grad) for p in (*trainable.values(), *frozen.values())]
        # Without tied weights or shared submodules, functional_call need not walk the
        # module to untie them, and the fast paths may read a parameter by its layer's name.
        self.tied = len(list(module.named_parameters(remove_duplicate=False))) != len(trainable) + len(frozen)  # pragma: no mutate (only turns the direct forward off: same values)
        self._aliases = _aliases(module, trainable)

    def __call__(self, params: ParamsDict, x: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.check_params(params)
        check_module(self.module)
        if isinstance(x, torch.Tensor) and is_one_sample(x):
            # NOTE [batch of one]: a per-sample transform hands f one sample [*x_shape];
            # many modules (Flatten, BatchNorm1d, user code) assume a batch dimension, so
            # the module sees [1, *x_shape], as in a plain forward, and we drop it again.
            # An input that already has the batch's ndim (a user's own x[None]) is passed
            # as it is. Arguments mapped by in_dims (by position: f(params, x, *args)) get
            # the same batch of one, e.g. a noise level sigma [B] reaches forward as [1].
            conditions = mapped_conditions()
            if conditions:
                args = tuple(optree.tree_map(lambda t: t[None], a) if i + 2 in conditions else a  # mapped: tensors
                             for i, a in enumerate(args))
            out = self._forward(params, x[None], args, kwargs)
            return optree.tree_map(lambda t: t[0] if isinstance(t, torch.Tensor) and t.ndim else t, out)
        return self._forward(params, x, args, kwargs)

    def _forward(self, params: ParamsDict, x: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # NOTE [direct forward]: functional_call swaps every parameter into the module and
        # back (two setattrs each, ~40 us per call on a 3-layer MLP, a third of a small
        # eager step). An nn.Sequential of exactly nn.Linear and of layers without
        # parameters (no hooks, no forward replaced on an instance, no weight shared between
        # layers) is computed directly: F.linear with the given params (frozen ones from the
        # module), and each other layer's own forward, which is exactly what the module
        # would run. Anything else goes through functional_call.
        layers = None if args or kwargs else self._direct_layers()  # pragma: no mutate (None only skips the direct forward: same values)
        if layers is None:
            # NOTE [shared submodules]: functional_call(tie_weights=True) swaps a shared module's
            # parameter in once per name it has and swaps back in the same order, so the module
            # kept the swapped-in tensor (a plain alias eagerly, a fake tensor after make_fx) in
            # place of its Parameter. We swap every slot once: the given names, plus the other
            # modules' names of a tied weight.
            if self._aliases:
                params = {**params, **{alias: params[name] for alias, name in self._aliases}}
            return functional_call(self.module, params, (x, *args), kwargs, tie_weights=False)  # pragma: no mutate (None reads as False)
        for name, layer in layers:
            if type(layer) is nn.Linear:
                x = F.linear(x, self.tensor(params, name, layer, "weight"), self.tensor(params, name, layer, "bias"))
            else:
                x = layer.forward(x)
        return x

    def _direct_layers(self) -> list[tuple[str, nn.Module]] | None:
        """The (name, layer) pairs of NOTE [direct forward], or None if it does not apply."""
        module = self.module
        if type(module) is not nn.Sequential or self.tied:
            return None
        layers: list[tuple[str, nn.Module]] = list(module._modules.items())  # type: ignore[arg-type]
        modules = _submodules(module)
        if not _runs_as_built(modules) or _nn_module._global_backward_hooks \
                or _nn_module._global_backward_pre_hooks or any(m._backward_hooks or m._backward_pre_hooks for m in modules):
            return None
        # exactly nn.Linear (a subclass may override forward), or any layer without parameters
        # at any depth (its own forward is what Sequential would call)
        if any(type(layer) is not nn.Linear and next(layer.parameters(), None) is not None for _, layer in layers):
            return None
        return layers

    @staticmethod
    def tensor(params: ParamsDict, name: str, layer: nn.Module, attr: str) -> Any:
        """Parameter ``attr`` of the layer called ``name``: from ``params`` if trainable,
        else the module's own (frozen) tensor, or None (a Linear without bias)."""
        key = f"{name}.{attr}"
        return params[key] if key in params else getattr(layer, attr)

    def params(self) -> ParamsDict:
        """The module's current trainable parameters as detached aliases (name -> tensor)."""
        return {name: p.detach() for name, p in split_params(self.module)[0].items()}

    def __repr__(self) -> str:
        return f"FunctionalModule({self.module!r})"

    def treats_samples_independently(self) -> bool:
        """True when ``module(X)[i]`` is ``module(X[i])`` by construction, for every ``i``.

        Only ``nn.Sequential`` trees of layers known to act on each sample alone qualify,
        matched by exact type, without hooks and without a ``forward`` replaced on an
        instance (any of which might mix samples).
        """
        modules = _submodules(self.module)
        return _runs_as_built(modules) and all(
            (type(m) is nn.Sequential or type(m) in _PER_SAMPLE_LAYERS)
            and not (type(m) is nn.Dropout and m.training and m.p > 0)  # pragma: no mutate (p = 0 draws nothing: both paths agree)
            for m in modules
        )

    def check_params(self, params: ParamsDict) -> None:
        """Raise unless ``params`` has exactly the module's trainable parameter names and shapes."""
        # NOTE [strict params]: torch.func.functional_call silently uses the module's own
        # tensor for any name missing from the dict; a typo would then train nothing.
        api = "f(params, x)"
        match_names(api, self._shapes, params, "params", frozen=self._frozen)
        # NOTE [frozen parameters]: a frozen parameter is not in params, so it is never
        # trained; one frozen or unfrozen after functionalize would silently keep its old
        # role, so that is an error.
        stale = self._stale_flag()
        if stale is not None:
            p = self._flags[stale][0]
            raise ValueError(
                f"{api}: a parameter of shape {fmt(p.shape)} was {'un' if p.requires_grad else ''}frozen "
                "(requires_grad changed) after functionalize, so params no longer holds exactly the "
                "trainable parameters. Call functionalize(module) again for new params."
            )
        dtypes: dict[torch.dtype, str] = {}
        for name, shape in self._shapes.items():
            got = params[name]
            if not isinstance(got, torch.Tensor):
                raise ValueError(f"{api}: params[{name!r}] must be a tensor of shape {fmt(shape)}, got "
                                 f"{type(got).__name__}.")
            if got.shape != shape:
                raise ValueError(f"{api}: params[{name!r}] has shape {fmt(got.shape)} but the module expects {fmt(shape)}.")
            if not got.is_floating_point():
                raise TypeError(f"{api}: params[{name!r}] has dtype {got.dtype}; parameters must be floating "
                                "point to be differentiated. Cast it, e.g. .float().")
            dtypes.setdefault(got.dtype, name)
        if len(dtypes) > 1:
            (a, ka), (b, kb) = list(dtypes.items())[:2]
            raise TypeError(f"{api}: params mix dtypes: params[{ka!r}] is {a} but params[{kb!r}] is {b}. "
                            "Cast them to one dtype, e.g. {k: v.double() for k, v in params.items()}.")


    def _stale_flag(self) -> int | None:
        """The index in ``_flags`` of the first parameter whose ``requires_grad`` changed, or None.

        A constant for torch.compile (no guard on every parameter, which cost ~60 us per
        call on a small step): a compiled step keys its graphs on every parameter's
        ``requires_grad`` (NOTE [narrow guards]), so a change retraces and runs this again.
        """
        return next((i for i, (p, flag) in enumerate(self._flags) if p.requires_grad != flag), None)

    # What torch._dynamo.assume_constant_result sets, without importing dynamo (0.75 s) with
    # the library: a loaded compiled step starts without it (see _saved.py).
    _stale_flag._dynamo_marked_constant = True  # type: ignore[attr-defined]


def split_params(module: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """The module's parameters by name: ``(trainable, frozen)``."""
    named = dict(module.named_parameters())
    return ({k: p for k, p in named.items() if p.requires_grad},
            {k: p for k, p in named.items() if not p.requires_grad})


def _aliases(module: nn.Module, trainable: dict[str, nn.Parameter]) -> list[tuple[str, str]]:
    """``(alias, name)`` for each other module slot holding the trainable parameter ``name``
    (tied weights); a shared module's one slot is reached under several names, but listed once."""
    names = {id(p): name for name, p in trainable.items()}
    seen: set[tuple[int, str]] = set()
    out = []
    for full, p in module.named_parameters(remove_duplicate=False):  # pragma: no mutate (None reads as False)
        owner, _, attr = full.rpartition(".")
        slot = (id(module.get_submodule(owner)), attr)
        if slot not in seen:
            seen.add(slot)
            if id(p) in names and names[id(p)] != full:
                out.append((full, names[id(p)]))
    return out


def _runs_as_built(modules: list[nn.Module]) -> bool:
    """True when calling the module of ``modules`` (all its submodules) runs exactly its
    classes' ``forward`` methods: no forward hook (on any of them, or global) and no
    ``forward``/``_call_impl`` replaced on an instance (as accelerate's hooks do). The
    condition for any path that computes the module from its structure instead of calling it."""
    if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
        return False
    return not any(s._forward_hooks or s._forward_pre_hooks or "forward" in s.__dict__
                   or "_call_impl" in s.__dict__ for s in modules)


def _submodules(module: nn.Module) -> list[nn.Module]:
    """``list(module.modules())`` (shared submodules included once) without the generator
    machinery: several times faster on the eager per-call path."""
    out, seen, stack = [], set(), [module]
    while stack:
        m = stack.pop()
        if id(m) not in seen:  # pragma: no mutate (a module listed twice is only checked twice)
            seen.add(id(m))  # pragma: no mutate (as above)
            out.append(m)
            stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return out
