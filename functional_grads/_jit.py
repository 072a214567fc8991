"""``compile=True``: trace a pure step once per call signature with ``make_fx`` and compile the
aten graph with inductor, like ``jax.jit`` (NOTE [traced steps]).

NOTE [traced steps]: our steps are pure functions of their arguments, so the machinery that
``torch.compile`` has for impure code (dynamo's frame evaluation and guards, AOTAutograd's
runtime wrapper) is per-call overhead we do not need: on the seed-002 step it is half the
time of a compiled call. Instead, on the first call with a new *signature*, the step runs
once under ``make_fx`` on fake tensors (Python control flow and side effects happen then, and
only then), the batch dimension (dim 0 of every tensor outside ``static``) symbolic, with
inductor's decompositions; inductor compiles the aten graph (``compile_fx_inner``), and later
calls go straight to the compiled callable. What the graph cannot check is checked here, in
Python and C++ (a few us): the signature (tree structure, non-tensor leaves by value, every
tensor's dtype, device, static sizes and strides, and ``requires_grad``), the state of the
``nn.Module``s the step reaches (NOTE [narrow guards]), and the shape guards the trace and
inductor recorded on the batch sizes (e.g. ``23 <= B <= 2048``, where inductor's CPU code
changes its algorithm): a call outside them traces and compiles once more. Tensors the step
reads from elsewhere (frozen parameters, buffers, captured constants) are inputs of the
graph, read at every call, so in-place changes to them are seen. Random ops draw from torch's
global generator exactly as eagerly; a step drawing from its own ``torch.Generator`` is not
traced (NOTE [random draws under compile]). What ``make_fx`` cannot trace (data-dependent Python control flow, an
op without a fake-tensor rule) falls back to ``torch.compile`` with one log line.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, NamedTuple

import optree
import torch
from torch import Tensor

from . import _guards
from ._context import in_transform, tracing

logger = logging.getLogger("functional_grads")

_LEAF = re.compile(r"L\['t(\d+)'\]")
_GRAPHS = [0]


def graph_count() -> int:
    """How many graphs this process has traced and compiled (tests and benchmarks count them)."""
    return _GRAPHS[0]


class Traced(NamedTuple):
    """One traced step: the aten graph with tensor inputs ``[*tensor leaves, *constants]``."""

    graph: torch.fx.GraphModule
    example_inputs: list[Any]
    """Fake tensors: the batch tensors' dim 0 symbolic."""
    constants: list[Tensor]
    """Tensors the step reads from elsewhere, passed after the arguments' tensors."""
    out_spec: Any
    out_constants: list[Any]
    """The output leaves: None where the graph returns a tensor, else the constant value."""
    shape_env: Any


class _Entry(NamedTuple):
    spec: Any
    others: tuple[Any, ...]
    state: Any
    tensor_guards: Any
    shape_guard: Callable[[list[Tensor]], bool]
    traced: Traced
    run: Callable[[list[Tensor]], list[Tensor]]


def trace(fn: Callable[..., Any], args: tuple[Any, ...], static: tuple[int, ...], *, lift: bool = True,
          live: bool = False, keep: tuple[Any, ...] = ()) -> Traced:
    """``fn(*args)`` traced to aten ops with ``make_fx`` on fake tensors; dim 0 of every tensor
    leaf of an argument outside ``static`` is symbolic. ``lift``: the tensors ``fn`` reads from
    elsewhere become trailing inputs (else they stay constants of the graph); ``live``: those
    inputs are the tensors themselves, so that autograd records through them (else detached
    aliases). ``keep``: ops left undecomposed."""
    from torch._inductor.decomposition import select_decomp_table
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    leaves, spec = optree.tree_flatten(args)  # type: ignore[arg-type,var-annotated]
    batch = _batch_mask(args, static)
    shape_env = ShapeEnv(duck_shape=False)  # equal batch sizes are not assumed equal
    mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=True)

    def fake(t: Tensor, dynamic: bool) -> Tensor:
        dims = [DimDynamic.DYNAMIC if dynamic and d == 0 else DimDynamic.STATIC for d in range(t.ndim)]
        return mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dims))

    fakes = [fake(t, b) for t, b in zip(leaves, batch) if isinstance(t, Tensor)]
    out: dict[str, Any] = {}

    def flat(*tensors: Tensor) -> list[Tensor]:
        it = iter(tensors)
        result = fn(*optree.tree_unflatten(spec, [next(it) if isinstance(t, Tensor) else t for t in leaves]))
        out_leaves, out["spec"] = optree.tree_flatten(result)
        out["constants"] = [None if isinstance(t, Tensor) else t for t in out_leaves]
        if any(isinstance(t, (torch.SymInt, torch.SymFloat, torch.SymBool)) for t in out_leaves):
            raise TypeError("the step returns a size-dependent Python number")
        return [t for t in out_leaves if isinstance(t, Tensor)]

    with tracing(), torch.enable_grad():
        table = {op: rule for op, rule in select_decomp_table().items() if op not in keep}
        graph = make_fx(flat, tracing_mode="symbolic", decomposition_table=table)(*fakes)
    held = [getattr(graph, n.target) for n in graph.graph.nodes if n.op == "get_attr"]
    if any(not isinstance(t, Tensor) for t in held):
        # Seen on torch 2.13: a compiled graph holding a torch.Generator drew other numbers
        # than eager, differently in every process. torch.compile then runs it eagerly.
        raise TypeError("the step holds a Python object (a torch.Generator?), which a compiled graph cannot use")
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in held):
        # Seen on torch 2.13 for conv2d under grad-of-vmap-of-grad: a torch.func wrapper
        # leaks into the trace as a constant whose sizes are the trace's batch size.
        raise RuntimeError("a torch.func wrapper tensor leaked into the trace as a constant (a torch bug)")
    # make_fx leaves its ShapeEnv on the module, which inductor's graph cache cannot key (a
    # bypass: every process compiled from scratch); None makes inductor take it from the inputs.
    graph.shape_env = None
    constants = _lift_constants(graph, mode, live) if lift else []
    example = fakes + [mode.from_tensor(t) for t in constants]
    return Traced(graph, example, constants, out["spec"], out["constants"], shape_env)


def _batch_mask(args: tuple[Any, ...], static: tuple[int, ...]) -> list[bool]:
    """For each leaf of ``args``: True if it belongs to a batch argument."""
    return [i not in static for i, a in enumerate(args) for _ in optree.tree_leaves(a)]


def _lift_constants(graph: torch.fx.GraphModule, mode: Any, live: bool) -> list[Tensor]:
    """Turn the graph's captured tensors into trailing inputs; return them (not copies: the
    tensors themselves with ``live``, else detached aliases)."""
    nodes = [n for n in graph.graph.nodes if n.op == "get_attr" and isinstance(getattr(graph, n.target, None), Tensor)]
    last = [n for n in graph.graph.nodes if n.op == "placeholder"][-1]
    constants: list[Tensor] = []
    lifted: dict[str, Any] = {}  # one input per captured tensor, however many nodes read it
    for node in nodes:
        if node.target not in lifted:
            t = getattr(graph, node.target)
            with graph.graph.inserting_after(last):
                last = graph.graph.placeholder(f"constant_{len(constants)}")
            last.meta = dict(node.meta, val=mode.from_tensor(t))
            lifted[node.target] = last
            constants.append(t if live else t.detach())  # in-place changes are seen either way
        node.replace_all_uses_with(lifted[node.target])
        graph.graph.erase_node(node)
    for target in lifted:
        delattr(graph, target)
    graph.recompile()
    return constants


def compile_traced(traced: Traced, options: dict[str, Any]) -> Callable[[list[Tensor]], list[Tensor]]:
    """The traced graph compiled by inductor (``options``: inductor config, which overrides
    NOTE [cpp wrapper on CPU])."""
    from torch._guards import TracingContext
    from torch._guards import tracing as inductor_tracing
    from torch._inductor import config
    from torch._inductor.compile_fx import compile_fx_inner

    # NOTE [cpp wrapper on CPU]: inductor's default Python wrapper costs ~25 us per call on
    # the seed-002 step (40 tensor re-views and allocations in Python); its C++ wrapper
    # took that step from 81 to 54 us, the near-empty one from 27 to 24 us, and was neutral
    # on the GEMM-bound ones (sobolev 81 vs 80 ms, value_fit 39 vs 38 ms; 1 thread, 2-core
    # AMD EPYC, torch 2.13). Its cold compile was no slower here (11 vs 15 s; warm: equal).
    # So CPU graphs use it; GPU graphs keep inductor's default (not measured here).
    cpu = all(t.device.type == "cpu" for t in traced.example_inputs)
    options = {"cpp_wrapper": cpu, **options}
    with inductor_tracing(TracingContext(traced.example_inputs[0].fake_mode)), config.patch(options):
        return compile_fx_inner(traced.graph, traced.example_inputs, cpp_wrapper=config.cpp_wrapper)


def shape_guard(traced: Traced) -> tuple[Callable[[list[Tensor]], bool], str]:
    """A function of the tensor leaves that is True where the graph is valid for their batch
    sizes, and the guards as text (``L[i]`` is the i-th tensor leaf)."""
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    count = len(traced.example_inputs) - len(traced.constants)
    code = traced.shape_env.produce_guards_expression(traced.example_inputs[:count]) or "True"
    code = _LEAF.sub(r"L[\1]", code)
    return eval(f"lambda L: {code}", dict(SYMPY_INTERP)), code  # noqa: S307 - torch's own guard text


def jit(fn: Callable[..., Any], *, api: str, static: tuple[int, ...], options: dict[str, Any],
        fallback: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    """``fn`` traced and compiled per call signature (NOTE [traced steps]); ``fallback()``
    builds the function used from then on when tracing or compiling fails."""
    roots = _guards.reachable_modules(fn)
    entries: list[_Entry] = []
    fell_back: list[Callable[..., Any]] = []

    def run(*args: Any) -> Any:
        if fell_back:
            return fell_back[0](*args)
        if in_transform():  # inside a user's vmap/grad of the step: trace-free, as eager
            return fn(*args)
        leaves, spec = optree.tree_flatten(args)  # type: ignore[arg-type,var-annotated]
        tensors = [t for t in leaves if isinstance(t, Tensor)]
        others = tuple(t for t in leaves if not isinstance(t, Tensor)) if len(tensors) < len(leaves) else ()
        state = None if roots is None else _guards.module_state(roots)
        for e in entries:
            if _matches(e, spec, others, state, tensors):
                return _unflatten(e.traced, e.run(tensors))
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return fn(*args)  # torch.autograd through the step: only eager records it
        start = time.perf_counter()
        try:
            traced = trace(fn, args, static)
            guard, code = shape_guard(traced)
            entry = _Entry(spec, others, state, _tensor_guards(traced, tensors), guard, traced,
                           _caller(compile_traced(traced, options), traced.constants))
            if not _matches(entry, spec, others, state, tensors):
                raise RuntimeError(f"the graph's guards reject the arguments it was traced from ({code})")
        except Exception as error:  # noqa: BLE001 - what cannot be traced runs under torch.compile
            out = fn(*args)  # a mistake in the arguments fails eagerly too: that error is raised
            reason = " ".join(str(error).split())[:300]
            logger.warning("%s(compile=True): make_fx cannot trace the step (%s: %s); using torch.compile "
                           "instead", api, type(error).__name__, reason)
            fell_back.append(fallback())
            return out
        _GRAPHS[0] += 1
        entries.append(entry)
        logger.info("%s: traced and compiled the step in %.2f s%s", api, time.perf_counter() - start,
                    f" (signature {len(entries)})" if len(entries) > 1 else "")
        return _unflatten(traced, entry.run(tensors))

    return run


def _matches(e: _Entry, spec: Any, others: tuple[Any, ...], state: Any, tensors: list[Tensor]) -> bool:
    return (e.spec == spec and e.others == others and e.state == state and e.tensor_guards.check(*tensors)
            and e.shape_guard(tensors))


def _tensor_guards(traced: Traced, tensors: list[Tensor]) -> Any:
    """dtype, device, requires_grad and every static size and stride, checked in C++."""
    from torch._C._dynamo.guards import TensorGuards

    fakes = traced.example_inputs[:len(tensors)]

    def static(sizes: Any) -> list[int | None]:
        # A batch size the trace specialised (e.g. to the 2 structures of a label check) is static.
        return [n if isinstance(n, int) else None for n in (resolve(x, traced.shape_env) for x in sizes)]

    return TensorGuards(*tensors, dynamic_dims_sizes=[static(f.shape) for f in fakes],  # type: ignore[misc]
                        dynamic_dims_strides=[static(f.stride()) for f in fakes])  # type: ignore[misc]


def resolve(size: Any, shape_env: Any) -> Any:
    """A fake tensor's size after the trace's specialisations: an int, or its symbol."""
    if not isinstance(size, torch.SymInt):
        return size
    expr = shape_env.replace(size.node.expr)
    return int(expr) if expr.is_number else expr


def _caller(compiled: Callable[[list[Tensor]], Any], constants: list[Tensor]) -> Callable[[list[Tensor]], list[Tensor]]:
    if not constants:
        return lambda tensors: compiled(list(tensors))
    return lambda tensors: compiled([*tensors, *constants])


def _unflatten(traced: Traced, tensors: Any) -> Any:
    if len(tensors) == len(traced.out_constants):
        return optree.tree_unflatten(traced.out_spec, list(tensors))
    it = iter(tensors)
    return optree.tree_unflatten(traced.out_spec, [next(it) if c is None else c for c in traced.out_constants])
