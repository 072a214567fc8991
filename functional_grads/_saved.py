"""Compiled steps saved as AOTInductor packages and loaded without the compiler
(NOTE [saved steps]).

NOTE [saved steps]: ``save_compiled`` traces the step's pure core as ``compile=True`` does
(NOTE [traced steps]), exports the aten graph (not the module: ``torch.export`` of code
calling torch.func fails) with the batch sizes dynamic, and compiles it ahead of time into
one ``.pt2`` file with AOTInductor. Tensors the step reads from elsewhere (frozen params,
buffers) are stored in it as constants. The package keeps, as metadata, the signature it
serves: the argument tree, each tensor's dtype, device and static sizes, the batch
dimensions (which must be equal, and their range), and the public function to rebuild
around it. ``load_compiled`` opens it with torch's C++ loader (``aoti_load_package`` would
import inductor: +2 s) and checks every call against that signature, which the package
itself does not (float64 weights into a float32 package fail deep in ``addmm_out``).
A package is tied to the torch version, the device kind and the dtypes it was built for:
rebuild it after upgrading torch or to serve another device or dtype.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import warnings
from typing import Any, Callable

import optree
import torch
from torch import Tensor

from . import _checks
from ._engine import checked

_KEY = "functional_grads"
_FORMAT = 1


def save_compiled(step: Callable[..., Any], path: str | os.PathLike[str], /, *example_args: Any) -> str:
    """Compile ``step`` ahead of time for arguments like ``example_args`` and save it.

    Args:
      step: a function from :func:`value_and_grad`, :func:`grad` or :func:`make_step`
        (built with any ``compile`` setting).
      path: the file to write, conventionally ``*.pt2``.
      *example_args: arguments as the step will be called with; the batch arguments'
        leading dimension is dynamic (batch sizes from 2 up, unless the step fixes them).

    Returns:
      ``path``, as a string.

    Load it with :func:`load_compiled`, in any process with the same torch version and
    device kind. Python values the step reads from closures are constants of the package,
    as under ``compile=True``; tensors it reads from modules (frozen params, buffers) are
    stored with their values at save time.
    """
    api = "save_compiled"
    saved = getattr(step, "saved", None)
    if saved is None:
        raise TypeError(f"{api}: step must be a function from value_and_grad, grad or make_step, got "
                        f"{_checks.describe(step)}. Build it with one of those first.")
    leaves, spec = optree.tree_flatten(example_args)  # type: ignore[arg-type,var-annotated]
    tensors = [t for t in leaves if isinstance(t, Tensor)]
    if len(tensors) < len(leaves):  # checked before the trace, which takes seconds
        raise TypeError(f"{api}: every argument leaf must be a tensor, got {[_checks.describe(t) for t in leaves if not isinstance(t, Tensor)]}. "
                        "Bind other values in the loss (e.g. with functools.partial) before building the step.")
    from ._jit import trace

    core = saved.step.core
    try:
        traced = trace(core.pure, example_args, core.static, lift=False)
    except Exception as error:
        reason = " ".join(str(error).split())[:300]
        raise RuntimeError(f"{api}: make_fx cannot trace the step ({type(error).__name__}: {reason}), so it cannot "
                           "be saved; compile=True runs such a step under torch.compile instead.") from error
    if any(c is not None for c in traced.out_constants):
        raise TypeError(f"{api}: the step returns Python values besides tensors (in its aux), which a package "
                        "cannot hold. Return tensors.")
    dims = tuple({0: torch.export.Dim.AUTO} if _batch_symbol(f, traced.shape_env) else None
                 for f in traced.example_inputs[:len(tensors)])
    from torch._inductor import aoti_compile_and_package

    with warnings.catch_warnings():  # torch's own pytree deprecation, raised inside export on torch 2.13
        warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated", category=FutureWarning)
        exported = torch.export.export(traced.graph, tuple(tensors), dynamic_shapes=dims, strict=False)
        inputs = {n.name: n.meta["val"] for n in exported.graph.nodes if n.op == "placeholder"}
        fakes = [inputs[name] for name in exported.graph_signature.user_inputs]
        batch = [_batch_symbol(f, fakes[0].fake_mode.shape_env) for f in fakes]
        meta = {
            "format": _FORMAT, "torch": torch.__version__, "kind": saved.kind, "has_aux": saved.has_aux,
            "check": core.check, "api": core.api, "static": list(core.static),
            "args": _encode(spec), "out": _encode(traced.out_spec),
            "tensors": [{"dtype": str(t.dtype).removeprefix("torch."), "device": t.device.type,
                         "shape": [None if b is not None and d == 0 else int(n) for d, n in enumerate(f.shape)],
                         "batch": b} for t, f, b in zip(tensors, fakes, batch)],
            "ranges": _ranges(exported),
        }
        return str(aoti_compile_and_package(exported, package_path=os.fspath(path),
                                            inductor_configs={"aot_inductor.metadata": {_KEY: json.dumps(meta)}}))


def load_compiled(path: str | os.PathLike[str], /) -> Callable[..., Any]:
    """A step saved by :func:`save_compiled`, ready to call, without torch's compiler.

    Returns:
      The same public function as was saved (``value_and_grad``: ``(params, *batch) ->
      (loss, grads)``; ``make_step``: ``(params, state, *batch) -> (params, state, loss)``),
      which checks every call against the saved signature and, if it was built with
      ``check=True``, its results.
    """
    api = "load_compiled"
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{api}: no file at {where!r}; pass the path save_compiled wrote (a .pt2 package).")
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(where, "model", False, 1, -1)
    except RuntimeError as e:
        raise ValueError(f"{api}: {where!r} is not a package written by save_compiled, or it is damaged "
                         f"(torch's loader: {' '.join(str(e).split())[:200]}). Write it again with save_compiled.") from e
    text = loader.get_metadata().get(_KEY)
    if text is None:
        raise ValueError(f"{api}: {os.fspath(path)!r} is an AOTInductor package but not one written by "
                         "save_compiled (no functional_grads signature in its metadata).")
    meta = json.loads(text)
    if meta["torch"] != torch.__version__:
        raise RuntimeError(f"{api}: {os.fspath(path)!r} was built with torch {meta['torch']}, this is torch "
                           f"{torch.__version__}. Rebuild it with save_compiled under this torch.")
    run = _runner(api, loader, meta)
    core = checked(meta["api"], run, update=None, check=meta["check"], static=tuple(meta["static"]), hint="")
    from ._train import around_step as around_train
    from ._value_and_grad import around_step, around_value_and_grad

    if meta["kind"] == "make_step":
        return around_train(core)
    vg = around_step(core, has_aux=meta["has_aux"])
    return vg if meta["kind"] == "value_and_grad" else around_value_and_grad(vg, has_aux=meta["has_aux"])


def _runner(api: str, loader: Any, meta: dict[str, Any]) -> Callable[..., Any]:
    """The package's call with the signature checks: dtype, device, static sizes and strides
    in C++ (as the traced path, NOTE [traced steps]), the checks that name the problem only
    when those fail; then the batch sizes."""
    from torch._C._dynamo.guards import TensorGuards  # C++ only: imports no compiler

    args_spec, out_spec = _decode(meta["args"]), _decode(meta["out"])
    wants = [(getattr(torch, w["dtype"]), w["device"], w["shape"]) for w in meta["tensors"]]
    batch = [(i, w["batch"]) for i, w in enumerate(meta["tensors"]) if w["batch"] is not None]
    ranges = {symbol: (low, math.inf if high is None else high) for symbol, (low, high) in meta["ranges"].items()}
    examples = [torch.empty([2 if n is None else n for n in shape], dtype=dtype, device=device)
                for dtype, device, shape in wants]
    guards = TensorGuards(*examples, dynamic_dims_sizes=[list(w["shape"]) for w in meta["tensors"]],  # type: ignore[misc]
                          dynamic_dims_strides=[list(t.stride()) for t in examples])  # type: ignore[misc]

    def explain(leaves: list[Any]) -> list[Tensor]:
        for i, (t, (dtype, device, shape)) in enumerate(zip(leaves, wants)):
            if not (isinstance(t, Tensor) and t.dtype == dtype and t.device.type == device and t.ndim == len(shape)
                    and all(w is None or w == s for w, s in zip(shape, t.shape))):
                want = ", ".join("B" if w is None else str(w) for w in shape)
                raise ValueError(f"{api}: argument leaf {i} must be a {device} {str(dtype).removeprefix('torch.')} "
                                 f"tensor [{want}] as saved, got {_checks.describe(t)}. Save the step again with "
                                 "examples like these.")
        return [t.contiguous() for t in leaves]  # other strides or requires_grad: fine for the package

    def run(*args: Any) -> Any:
        leaves, spec = optree.tree_flatten(args)  # type: ignore[arg-type,var-annotated]
        if spec != args_spec:
            raise ValueError(f"{api}: the step was saved for arguments structured as {args_spec}, got {spec}. "
                             "Pass arguments like the examples given to save_compiled.")
        if not guards.check(*leaves):
            leaves = explain(leaves)
        sizes: dict[str, int] = {}
        for i, symbol in batch:
            n = leaves[i].shape[0]
            if sizes.setdefault(symbol, n) != n:
                raise ValueError(f"{api}: argument leaf {i} has batch size {n} but the step was saved "
                                 f"for batches where it equals the others' ({sizes[symbol]}).")
            low, high = ranges[symbol]
            if not low <= n <= high:
                raise ValueError(f"{api}: batch size {n} is outside the range the step was saved for "
                                 f"[{low}, {'inf' if high == math.inf else high}]. Save it again with an example "
                                 "of this size.")
        return optree.tree_unflatten(out_spec, loader.run(leaves))

    return run


def _batch_symbol(fake: Tensor, shape_env: Any) -> str | None:
    """The name of the symbol of a fake tensor's dim 0, None if it is static."""
    from ._jit import resolve

    size = resolve(fake.shape[0], shape_env) if fake.ndim else 0
    return None if isinstance(size, int) else str(size)


def _ranges(exported: Any) -> dict[str, list[int | None]]:
    """Each batch symbol's ``[low, high]`` (None: unbounded)."""
    from torch.utils._sympy.numbers import int_oo

    return {str(symbol): [int(r.lower), None if r.upper == int_oo else int(r.upper)]
            for symbol, r in exported.range_constraints.items()}


# The tree structures a package records, as JSON: "*" a leaf, null None, and tagged nodes;
# named tuples only of this library (step results, optimizer states, atoms batches).


def _encode(spec: Any) -> Any:
    kind = spec.kind
    children = [_encode(c) for c in spec.children()]
    if kind == optree.PyTreeKind.LEAF:
        return "*"
    if kind == optree.PyTreeKind.NONE:
        return None
    if kind in (optree.PyTreeKind.TUPLE, optree.PyTreeKind.LIST):
        return {"tuple" if kind == optree.PyTreeKind.TUPLE else "list": children}
    if kind == optree.PyTreeKind.DICT and all(isinstance(k, str) for k in spec.entries()):
        return {"dict": [[k, c] for k, c in zip(spec.entries(), children)]}
    if kind == optree.PyTreeKind.NAMEDTUPLE and spec.type.__module__.startswith("functional_grads."):
        return {"namedtuple": f"{spec.type.__module__}:{spec.type.__qualname__}", "children": children}
    raise TypeError(f"save_compiled: cannot record a {spec.type.__name__} in the arguments or results; "
                    "use tuples, lists and dicts with string keys.")


def _decode(code: Any) -> Any:
    """The tree structure :func:`_encode` recorded."""

    def example(code: Any) -> Any:
        if code == "*" or code is None:
            return 0 if code == "*" else None
        if "namedtuple" in code:
            module, name = code["namedtuple"].split(":")
            if not module.startswith("functional_grads."):
                raise ValueError(f"load_compiled: the package names a type outside functional_grads: {module}")
            return getattr(importlib.import_module(module), name)(*map(example, code["children"]))
        if "dict" in code:
            return {k: example(c) for k, c in code["dict"]}
        return tuple(map(example, code["tuple"])) if "tuple" in code else list(map(example, code["list"]))

    return optree.tree_structure(example(code))
