"""``torch.compile`` with an eager fallback that warns once, and compile-time logging."""

from __future__ import annotations

import logging
import time
import types
from typing import Any, Callable

import torch

from . import _checks, _guards
from ._checks import check_choice
from ._context import in_transform
from ._jit import jit
from ._typing import CompileOption

logger = logging.getLogger("functional_grads")


class CompileFallbackWarning(UserWarning):
    """``torch.compile`` could not compile a function, which now runs eagerly."""


def maybe_compile(api: str, fn: Callable[..., Any], compile: Any, static: tuple[int, ...] = ()) -> Callable[..., Any]:
    """``fn`` compiled per ``compile``, else as is: True (or ``{"options": inductor config}``)
    traces it with ``make_fx`` (NOTE [traced steps]); a dict with ``torch.compile`` arguments
    (``backend``, ``mode``, ``guards``, ...) compiles it with ``torch.compile``."""
    if not isinstance(compile, (bool, dict)):
        raise TypeError(f"{api}: compile must be a bool or a dict of torch.compile options, got {compile!r}.")
    if not compile or _disabled():
        return fn
    if compile is True or set(compile) == {"options"}:
        options = {} if compile is True else dict(compile["options"])
        return jit(fn, api=api, static=static, options=options,
                   fallback=lambda: compile_or_eager(fn, api=api, options=compile, static=static))
    return compile_or_eager(fn, api=api, options=compile, static=static)


def _disabled() -> bool:
    """``TORCH_COMPILE_DISABLE=1``, torch's switch that turns compilation off (the mutation runs)."""
    import torch._dynamo

    return bool(torch._dynamo.config.disable)


def compile_or_eager(
    fn: Callable[..., Any], *, api: str, options: CompileOption, static: tuple[int, ...] = ()
) -> Callable[..., Any]:
    """Compile ``fn`` with ``torch.compile(fullgraph=True)``; on failure warn once and run eager.

    ``options`` is True (inductor, default settings) or a dict of ``torch.compile`` keyword
    arguments (e.g. ``{"backend": "aot_eager"}``), which override the defaults, plus
    ``"guards"``: ``"fast"`` (default, NOTE [narrow guards]) or ``"all"`` (every dynamo
    guard). Tensor arguments not listed in ``static`` are batches: their leading dimension
    is dynamic. Compilation is logged on the ``functional_grads`` logger (INFO), with its
    duration.
    """
    kwargs = {"fullgraph": True, **(options if isinstance(options, dict) else {})}
    guards = kwargs.pop("guards", "fast")
    check_choice(api, "compile['guards']", guards, ("fast", "all"))
    roots = _narrow(kwargs, fn) if guards == "fast" else None
    graphs: dict[Any, Callable[..., Any]] = {}
    eager = False

    def run(*args: Any) -> Any:
        nonlocal eager
        # torch.compile cannot run inside a torch.func transform (e.g. a user's vmap of the step).
        if eager or in_transform():
            return fn(*args)
        _mark_batch_dynamic(args, static)
        key = None if roots is None else _guards.module_state(roots)
        compiled = graphs.get(key)
        first = compiled is None
        if compiled is None:
            logger.info("%s: compiling the step with torch.compile (the first call can take "
                        "10-60 s on a loaded CPU; later calls reuse the graph)%s", api,
                        ", for a new module state" if graphs else "")
            compiled = graphs[key] = torch.compile(_fresh_code(fn), **_with_filter(kwargs, fn, roots is not None))
        count = _graph_count()
        start = time.perf_counter()
        try:
            out = compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back
            # A mistake in the user's arguments fails eagerly too: report that error.
            out = fn(*args)
            eager = True
            reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            _checks.warn(
                f"{api}(compile=True): torch.compile failed ({type(error).__name__}: "
                f"{reason[:300]}); running eagerly from now on. Pass compile=False to "
                "silence this warning.",
                CompileFallbackWarning,
            )
            return out
        if first or _graph_count() != count:
            logger.info("%s: %s in %.2f s", api, "compiled" if first else "recompiled for new input shapes",
                        time.perf_counter() - start)
        return out

    return run


def _narrow(kwargs: dict[str, Any], fn: Callable[..., Any]) -> list[Any] | None:
    """The modules whose state replaces dynamo's dropped guards (NOTE [narrow guards]), or
    None where guards cannot be narrowed: an old torch, a non-inductor ``mode``, a user's
    own ``guard_filter_fn``, or a step that reaches too much to walk. Moves an inductor
    ``mode`` into ``options`` (torch.compile takes one or the other)."""
    if not _guards.supported() or "guard_filter_fn" in (kwargs.get("options") or {}):
        return None
    if "mode" in kwargs:
        if kwargs.get("backend", "inductor") != "inductor" or "options" in kwargs:
            return None
        kwargs["options"] = dict(torch._inductor.list_mode_options(kwargs.pop("mode")))
    return _guards.reachable_modules(fn)


def _with_filter(kwargs: dict[str, Any], fn: Callable[..., Any], narrow: bool) -> dict[str, Any]:
    if not narrow:
        return kwargs
    # torch.compile pops guard_filter_fn from options: give it a fresh dict every time.
    return {**kwargs, "options": {**(kwargs.get("options") or {}), "guard_filter_fn": _guards.guard_filter(fn)}}


def _graph_count() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _mark_batch_dynamic(args: tuple[Any, ...], static: tuple[int, ...]) -> None:
    # NOTE [dynamic batch]: without this, dynamo compiles once for the first batch size
    # and again for the second. Marking the batch dimension up front gives one graph for
    # all batch sizes, except where a backend guards on a range: dynamo specialises B = 1,
    # and inductor on CPU decomposes small matmuls (guard 23 <= B <= 2048 on torch 2.13),
    # so a batch outside the first graph's range compiles one more graph. Likewise
    # inductor's C++ code for a float32 sum guards on its length <= 4096 (the precision
    # helper of `need_use_acc_helper`): a float32 batch that crosses 4096 summed elements
    # compiles one more graph per threshold (measured in benchmarks/atoms.py; float64
    # ragged batches of 512-5120 atoms: one graph).
    for i, a in enumerate(args):
        if i not in static and isinstance(a, torch.Tensor) and a.ndim > 0:
            torch._dynamo.maybe_mark_dynamic(a, 0)


def _fresh_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    # NOTE [one cache per compiled function]: dynamo keeps its compiled graphs on the
    # *code object* and allows only `recompile_limit` (8) of them. Every value_and_grad
    # closure shares one code object, so the 9th compiled loss in a process would silently
    # run eager. A copy of the code object gives each compiled function its own cache.
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
