"""The Taylor engine: ``f`` traced to aten ops once per call signature, then Taylor
coefficients along K directions pushed through the graph by the per-op rules of
``_rules.py`` (NOTE [Taylor engine]).

NOTE [Taylor engine]: the operators run what ``module(x)`` runs, not a model of it: the
per-sample function, mapped over the batch as every transform maps it (``in_dims``), is
traced with ``make_fx`` (symbolic batch size, inductor's decompositions, mutations removed),
so shared submodules, tied weights, hooks and instance-level ``forward`` overrides are in
the graph as they run. The graph is then interpreted with ordinary torch ops: the result is
differentiable w.r.t. the params (an outer ``grad``), works under ``torch.func`` transforms,
and, inside a ``compile=True`` trace, becomes part of the compiled step. The trace is cached
per signature (tree structure, non-tensor leaves, dtypes, devices, static sizes, the state
of the modules ``f`` reaches) and guarded on the batch sizes, as ``compile=True`` is
(NOTE [traced steps]): ``f`` must be a pure function of its arguments and modules. What
``make_fx`` cannot trace (data-dependent control flow) or an op without a rule on an
input-dependent value raises :class:`Unsupported`; the operators then fall back to nested
reverse mode for the whole ``f`` (``_directional``, NOTE [fallback batching]) and log the
reason. What autograd treats as constant is constant here too (NOTE [autograd's constants]).
"""

from __future__ import annotations

import functools
import logging
import operator
import types
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Sequence

import optree
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import _guards, _jit
from .._constants import autograd_constants
from .._context import running
from .._per_sample import map_samples
from .._typing import InDims
from ._jet import BadRule, Jet, Mode, NoRule
from ._rules import rule_for

logger = logging.getLogger("functional_grads")


class Unsupported(Exception):
    """The engine cannot run ``f``: the reason, for the log line of the fallback."""


class _Graph(NamedTuple):
    graph: torch.fx.GraphModule
    constants: list[Tensor]
    guard: Callable[[list[Tensor]], Any]
    last_use: dict[Any, list[Any]]


class Engine:
    """``engine(args, tangent, mode) -> (value [B, *out], jet)`` for a per-sample ``f``.

    ``tangent`` is the first Taylor coefficient of ``X = args[argnums]``: ``[K, 1, *x_shape]``
    (the same directions for every sample) or ``[K, B, *x_shape]``.
    """

    def __init__(self, api: str, f: Callable[..., Tensor], argnums: int, in_dims: InDims, randomness: str):
        self.api, self.f, self.argnums, self.in_dims, self.randomness = api, f, argnums, in_dims, randomness
        self.roots = _guards.reachable_modules(f)
        self.traces = _cache((_fn_key(f), api, argnums, in_dims, randomness))

    def __call__(self, args: Sequence[Any], tangent: Tensor, mode: Mode) -> tuple[Tensor, Jet]:
        if running() == "dynamo":
            raise Unsupported("torch.compile (dynamo) cannot trace make_fx; the traced path (compile=True) can")  # pragma: no mutate (mutation runs do not compile)
        leaves, spec = optree.tree_flatten(tuple(args))  # type: ignore[arg-type,var-annotated]
        tensors = [t for t in leaves if isinstance(t, Tensor)]
        g = self._graph(args, leaves, spec, tensors)
        x = sum(isinstance(t, Tensor) for a in args[: self.argnums] for t in optree.tree_leaves(a))
        try:
            first = tangent if mode.per_direction(1) else mode.collapse(tangent)  # order 1, collapsed: one direction
            (value,), (jet,) = _propagate(g, [*tensors, *g.constants], {x: [first, *[None] * (mode.order - 1)]}, mode)  # pragma: no mutate (extra Nones are never read)
        except NoRule as e:
            raise Unsupported(str(e)) from None
        return value, _expanded(jet, value, tangent.shape[0], mode)

    def _graph(self, args: Sequence[Any], leaves: list[Any], spec: Any, tensors: list[Tensor]) -> _Graph:
        batch = self._batched(args)
        key = (spec, tuple(t for t in leaves if not isinstance(t, Tensor)),
               tuple((t.dtype, t.device, tuple(t.shape[1:] if b else t.shape)) for t, b in zip(tensors, batch)),
               None if self.roots is None else _guards.module_state(self.roots))
        entries = self.traces.graphs.setdefault(key, [])
        for g in entries:
            if isinstance(g, Unsupported):
                raise g  # this signature cannot be traced: decided once (f is pure)
            if g.guard(tensors):
                return g
        try:
            g = self._trace(args, spec, leaves)
        except Unsupported as e:
            entries.append(e)
            raise
        if not g.guard(tensors):
            raise Unsupported("the trace's shape guards reject the arguments it was traced from")  # pragma: no mutate (never seen)
        entries.append(g)
        return g

    def _batched(self, args: Sequence[Any]) -> list[bool]:
        dims = mapped(args, self.argnums, self.in_dims)
        return [d == 0 for a, d in zip(args, dims) for t in optree.tree_leaves(a) if isinstance(t, Tensor)]

    def _trace(self, args: Sequence[Any], spec: Any, leaves: list[Any]) -> _Graph:
        from torch._functorch.pyfunctorch import temporarily_clear_interpreter_stack
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

        api, f, argnums, in_dims, randomness = self.api, self.f, self.argnums, self.in_dims, self.randomness

        def per_sample(*a: Any) -> Tensor:
            return map_samples(api, autograd_constants(f), a, argnums=argnums, chunk_size=None, randomness=randomness, in_dims=in_dims)

        dims = mapped(args, argnums, in_dims)
        static = tuple(i for i, d in enumerate(dims) if d is None)
        # Outside any trace or transform around us: the graph is of f alone, on stand-ins.
        with disable_proxy_modes_tracing(), unset_fake_temporarily(), temporarily_clear_interpreter_stack():
            stand_ins = optree.tree_unflatten(spec, [_stand_in(t) if isinstance(t, Tensor) else t for t in leaves])
            try:
                # detach stays detach (inductor's table makes it an alias, which would pass
                # derivatives), a norm a norm (its rule keeps autograd's subgradient at 0);
                # the tensors f reaches by closure stay live (their gradient); attention is
                # traced as its math (matmuls and a softmax), not a fused kernel
                with sdpa_kernel(SDPBackend.MATH):
                    traced = _jit.trace(torch.func.functionalize(per_sample), tuple(stand_ins), static, live=True,
                                        keep=_KEEP)
            except Exception as e:  # noqa: BLE001 - the fallback runs f again: a user's mistake raises there
                raise Unsupported(f"{type(e).__name__}: {_short(e)}") from None
            shapes, _ = _jit.shape_guard(traced)
        # A batch size the trace specialised (e.g. to a view's size) has no guard of its own:
        # the fake size became a number (as in _jit._tensor_guards, where it counts as static).
        fixed = [(i, n) for i, (t, b) in enumerate(zip(traced.example_inputs, self._batched(args)))
                 if b and t.ndim and isinstance(n := _jit.resolve(t.shape[0], traced.shape_env), int)]

        def guard(tensors: list[Tensor]) -> Any:
            return all(tensors[i].shape[0] == n for i, n in fixed) and shapes(tensors)

        return _Graph(traced.graph, traced.constants, guard, _last_uses(traced.graph))


_KEEP = (torch.ops.aten.detach.default, torch.ops.aten.linalg_vector_norm.default)


# NOTE [trace cache]: operators are often built inside the loss (fg.laplacian(f)(p, X)),
# so a new Engine per call; its traces are kept here, by what f computes: the same object,
# or a function with the same code, closure contents, globals it names and defaults (the
# lambda a loss rebuilds on every call). Closure values that are not numbers, strings or functions count
# by identity, as jax.jit counts them. The least recently used of 256 are dropped.
class Traces(NamedTuple):
    """What the engine keeps for one ``f``: per signature, its graphs (or the ``Unsupported``
    that refused it), and the log lines already written about it (once per ``f``)."""

    graphs: dict[Any, list[Any]]
    logged: set[str]

    def log_once(self, line: str) -> None:
        if line not in self.logged:
            self.logged.add(line)
            logger.info("%s", line)


_CACHES: OrderedDict[Any, Traces] = OrderedDict()


def _cache(key: Any) -> Traces:
    if key in _CACHES:
        _CACHES.move_to_end(key)
    else:
        _CACHES[key] = Traces({}, set())
        if len(_CACHES) > 256:
            _CACHES.popitem(last=False)  # pragma: no mutate (None is False here too)
    return _CACHES[key]


class _Ref:
    """An object compared by identity (and kept alive, so that its id is not reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)  # pragma: no mutate (a worse hash is slower, not wrong)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Ref) and other.obj is self.obj  # pragma: no mutate (a dict compares the hashes, ids, first)


def _fn_key(f: Any, depth: int = 0) -> Any:
    if isinstance(f, types.FunctionType) and depth < 4:
        cells = []
        for cell in f.__closure__ or ():
            try:
                cells.append(_value_key(cell.cell_contents, depth))
            except ValueError:  # an empty cell
                cells.append(None)
        named = f.__globals__  # the globals f's code names: a loop variable rebinds them
        found = tuple((n, _value_key(named[n], depth)) for n in f.__code__.co_names if n in named)
        return (f.__code__, tuple(cells), found, _value_key(f.__defaults__, depth),
                _value_key(tuple(sorted((f.__kwdefaults__ or {}).items())), depth))
    if isinstance(f, functools.partial):
        return (functools.partial, _fn_key(f.func, depth + 1), _value_key(f.args, depth),
                _value_key(tuple(sorted(f.keywords.items())), depth))
    return _Ref(f)


def _value_key(v: Any, depth: int) -> Any:
    if v is None or type(v) in (bool, int, float, str, torch.dtype, torch.device):
        return (type(v), v)
    if type(v) is tuple:
        return tuple(_value_key(x, depth) for x in v)
    if isinstance(v, (types.FunctionType, functools.partial)):
        return _fn_key(v, depth + 1)
    return _Ref(v)


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:300]  # pragma: no mutate (the length of a log line)


def _stand_in(t: Tensor) -> Tensor:
    """A plain tensor with ``t``'s dtype, device and (hinted) sizes, to trace with."""
    shape = [s.node.hint if isinstance(s, torch.SymInt) else s for s in t.shape]
    return torch.empty(shape, dtype=t.dtype, device=t.device)


def _last_uses(graph: torch.fx.GraphModule) -> dict[Any, list[Any]]:
    """For each node, the values whose last use it is (freed after it runs: peak memory)."""
    seen: set[Any] = set()
    out: dict[Any, list[Any]] = {}
    for node in reversed(graph.graph.nodes):
        for used in node.all_input_nodes:
            if used not in seen:
                seen.add(used)
                out.setdefault(node, []).append(used)
    return out


def _propagate(g: _Graph, inputs: list[Tensor], jets: dict[int, Jet], mode: Mode) -> tuple[list[Any], list[Any]]:
    """Run the graph on ``inputs``, pushing the jets of the inputs at the given positions."""
    env: dict[Any, Any] = {}
    jet_env: dict[Any, Any] = {}
    position = 0
    for node in g.graph.graph.nodes:
        if node.op == "placeholder":
            env[node] = inputs[position]
            if position in jets:
                jet_env[node] = jets[position]
            position += 1
        elif node.op == "call_function":
            args = torch.fx.node.map_arg(node.args, env.__getitem__)
            kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
            out = _SIZES[node.target](*args) if node.target in _SIZES else node.target(*args, **kwargs)
            env[node] = out
            if any(n in jet_env for n in node.all_input_nodes) and _differentiable(out):
                if any(isinstance(v, torch.fx.Node) and v in jet_env for v in node.kwargs.values()):  # pragma: no mutate
                    raise NoRule(f"{node.target} takes an input-dependent tensor as a keyword argument")  # (none seen yet)
                if node.target is operator.getitem:
                    parent = jet_env.get(node.args[0])
                    jet = None if parent is None else parent[node.args[1]]
                else:
                    in_jets = [_jets_of(a, jet_env) for a in node.args]
                    jet = _apply(rule_for(node.target), node.target, mode, args, kwargs, in_jets, out)
                if jet is not None:
                    jet_env[node] = jet
        elif node.op == "output":
            outs = node.args[0]
            return [env[n] for n in outs], [jet_env.get(n) for n in outs]
        for dead in g.last_use.get(node, ()):  # pragma: no mutate (freeing early saves memory, changes no value)
            env.pop(dead, None)  # pragma: no mutate
            jet_env.pop(dead, None)  # pragma: no mutate
    raise AssertionError("a graph without an output")  # pragma: no mutate (fx graphs end in one)


# Size queries read the logical shape in Python: under a user's vmap the aten ops have no
# batching rule ("Batching rule not implemented for aten::sym_size.int").
_SIZES: dict[Any, Callable[..., Any]] = {
    torch.ops.aten.sym_size.int: lambda t, d: t.shape[d],
    torch.ops.aten.sym_numel.default: lambda t: t.numel(),
}


def _apply(rule: Any, op: Any, mode: Mode, args: Any, kwargs: Any, jets: list[Any], out: Any) -> Any:
    """``rule(...)``; a rule that cannot take these arguments is a missing rule (the fallback
    runs f), never a crash of the operator."""
    try:
        return rule(mode, args, kwargs, jets, out)
    except (NoRule, BadRule):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. nested jvp of an op torch has no second derivative for
        raise NoRule(f"the Taylor rule for {op} cannot take these arguments ({type(e).__name__}: {_short(e)})") from None


def _differentiable(out: Any) -> bool:
    """False for an integer or bool result (indices, comparisons, casts): autograd's constants."""
    if isinstance(out, Tensor):
        return out.dtype.is_floating_point or out.dtype.is_complex
    return isinstance(out, (tuple, list)) and any(_differentiable(o) for o in out)


def _jets_of(arg: Any, jet_env: dict[Any, Any]) -> Any:
    if isinstance(arg, torch.fx.Node):
        return jet_env.get(arg)
    if isinstance(arg, (list, tuple)) and any(isinstance(a, torch.fx.Node) for a in arg):
        parts = [_jets_of(a, jet_env) for a in arg]
        return parts if any(p is not None for p in parts) else None
    return None


def _expanded(jet: Jet | None, value: Tensor, K: int, mode: Mode) -> Jet:
    """Every coefficient at its full shape (``[K, *value.shape]``, or ``value.shape`` collapsed), zeros for None."""
    out: Jet = []
    for m in range(1, mode.order + 1):
        c = None if jet is None else jet[m - 1]
        shape = (K, *value.shape) if mode.per_direction(m) else tuple(value.shape)
        if c is None:
            out.append(value.new_zeros(shape))
        else:
            out.append(c.reshape(c.shape[0], *(1,) * (len(shape) - c.ndim), *c.shape[1:]).expand(shape)
                       if mode.per_direction(m) else c.expand(shape))
    return out



def mapped(args: Sequence[Any], argnums: int, in_dims: InDims) -> tuple[int | None, ...]:
    """``vmap``'s in_dims for ``args``: ``in_dims``, or only ``X`` mapped (NOTE [in_dims])."""
    return in_dims or tuple(0 if i == argnums else None for i in range(len(args)))
