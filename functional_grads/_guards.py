"""Cheaper guards for compiled steps: dynamo keeps its guards on the arguments, tensors and
global state; the state of every ``nn.Module`` the step can reach is checked here instead.

NOTE [narrow guards]: before each call of a compiled function, dynamo evaluates a few
hundred guards (on small steps, 80-100 us, more than the step): the identity of every
function, closure cell, module and global the trace went through, and every attribute of
every ``nn.Module``. Our steps are pure functions of their arguments, so most of them can
never fail. We keep dynamo's guards on the arguments (structure, Python values, tensor
metadata), on every tensor read from elsewhere (buffers, captured constants), on symbolic
shapes and on global state (grad mode, autocast); we drop the rest and
check, per call and in Python, what could still change the graph: the ``nn.Module``s that
the step reaches (through closures, defaults, referenced globals or ``FunctionalModule``).
The key holds, for each module and submodule: its identity, its hook count, its parameters
and buffers by identity and ``requires_grad`` (a replaced tensor, e.g. a frozen weight
loaded into a new Parameter, gets a new graph; in-place changes are read by every graph),
its plain attributes (``training``, numbers, strings, dtypes, devices) and lists, tuples,
dicts and sets of them by value (mutated in place or replaced), and any other attribute
object by identity (replacing it is seen, mutating its insides is not); plus the global
hook counts. A new key gets its own compiled graph (flipping back reuses the old one). Compiled
steps are only called outside torch.func transforms, so the transform stack needs no guard
(inside one, the step runs eagerly: torch.compile cannot run there). What is not
checked, as under ``jax.jit``: Python values the loss reads from closures or globals other
than module attributes are constants of the compiled step.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

# Guards that do not name an object: tensor metadata, symbolic shapes, global state.
_KEPT_TYPES = frozenset({
    "TENSOR_MATCH", "SHAPE_ENV", "GLOBAL_STATE", "GRAD_MODE", "TORCH_FUNCTION_STATE", "DEFAULT_DEVICE",
    "DETERMINISTIC_ALGORITHMS", "AUTOGRAD_SAVED_TENSORS_HOOKS", "DUAL_LEVEL",
})
_ROOT = re.compile(r"[A-Za-z_]\w*(?!\w|\s*\()")
_PLAIN = frozenset({bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device})
_CONTAINERS = frozenset({tuple, list, dict, set, frozenset})
# nn.Module's own bookkeeping, keyed above or irrelevant to the forward.
_MODULE_INTERNALS = frozenset({
    "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_forward_hooks",
    "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
    "_is_full_backward_hook",
})
_WALK_LIMIT = 20_000


def supported() -> bool:
    """True on torch versions whose ``torch.compile`` takes a ``guard_filter_fn``."""
    return hasattr(torch.compiler, "keep_tensor_guards_unsafe")


def guard_filter(fn: Callable[..., Any]) -> Callable[[Sequence[Any]], list[bool]]:
    """A ``guard_filter_fn`` for ``torch.compile(fn)``: keep the guards on ``fn``'s arguments,
    on tensors and on global state (NOTE [narrow guards])."""
    code = fn.__code__
    count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)
    arguments = frozenset(code.co_varnames[:count])

    def keep(entries: Sequence[Any]) -> list[bool]:
        out = []
        for e in entries:
            root = _ROOT.search(e.name)
            out.append(e.guard_type in _KEPT_TYPES
                       or (not e.is_global and root is not None and root.group() in arguments))
        return out

    return keep


def reachable_modules(fn: Callable[..., Any]) -> list[nn.Module] | None:
    """The ``nn.Module``s ``fn`` can reach: through closures, defaults, ``functools.partial``,
    bound methods, containers, object attributes, ``FunctionalModule`` and the globals its
    code (and that of functions it reaches) names. Torch's own globals are not walked.
    None if there is too much to walk (then dynamo's guards are kept)."""
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()
    stack: list[Any] = [fn]
    while stack and len(seen) < _WALK_LIMIT:
        obj = stack.pop()
        if id(obj) in seen or type(obj) in _PLAIN or isinstance(obj, (types.ModuleType, type, torch.Tensor)):
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
        elif isinstance(obj, types.FunctionType):
            stack += [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
            stack += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
            if not (obj.__module__ or "").startswith("torch"):
                stack += [obj.__globals__[n] for n in _names(obj.__code__) if n in obj.__globals__]
        elif isinstance(obj, types.MethodType):
            stack += [obj.__self__, obj.__func__]
        elif isinstance(obj, functools.partial):
            stack += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, dict):
            stack += list(obj.values())
        elif hasattr(obj, "__dict__"):
            stack += list(vars(obj).values())
    return None if stack else list(found.values())


def module_state(roots: list[nn.Module]) -> tuple[Any, ...]:
    """A key that changes when anything dynamo stopped guarding in ``roots`` changes: the
    submodules, their ``training`` flags, hooks and plain attributes, and global hooks."""
    key: list[Any] = [len(_nn_module._global_forward_hooks), len(_nn_module._global_forward_pre_hooks),
                      len(_nn_module._global_backward_hooks), len(_nn_module._global_backward_pre_hooks)]
    for root in roots:
        _add_state(root, key)
    return tuple(key)


def _add_state(m: nn.Module, key: list[Any]) -> None:
    d = m.__dict__
    append = key.append
    append(id(m))
    append(len(d["_forward_hooks"]) + len(d["_forward_pre_hooks"]) + len(d["_backward_hooks"])
           + len(d["_backward_pre_hooks"]))
    # Parameters and buffers by identity (a replaced tensor, e.g. a frozen weight loaded
    # from a checkpoint, is read by a new graph; in-place changes are seen by every graph)
    # and requires_grad flag.
    for t in d["_parameters"].values():
        if t is not None:
            append(id(t))
            append(t.requires_grad)
    for t in d["_buffers"].values():
        append(id(t))
    append(len(d))  # attributes added or removed: the positions below stay aligned
    for name, v in d.items():  # plain attributes: training, sizes, p, eps, coefficient tuples, ...
        kind = type(v)
        if kind in _PLAIN:
            append(v)
        elif name in _MODULE_INTERNALS:
            continue
        elif kind in _CONTAINERS:
            append(_value(v))
        elif not isinstance(v, (torch.Tensor, nn.Module)):
            append(id(v))  # any other object: by identity (NOTE [narrow guards])
    for child in d["_modules"].values():
        if child is not None:
            _add_state(child, key)


def _value(v: Any) -> Any:
    """A hashable snapshot of a plain value, or of a list/tuple/dict/set of plain values
    (mutated in place or replaced, it compares unequal); other contents by identity."""
    if type(v) in _PLAIN:
        return v
    if type(v) is dict:
        return ("dict", tuple((k, _value(x)) for k, x in v.items()))
    if type(v) in (set, frozenset):
        return (type(v).__name__, tuple(sorted((_value(x) for x in v), key=repr)))
    if type(v) in _CONTAINERS:
        return (type(v).__name__, tuple(_value(x) for x in v))
    return ("id", id(v))


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _names(const)
    return names
