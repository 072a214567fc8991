"""Check derivatives against central finite differences along random directions."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import optree
import torch
from torch import Tensor

# NOTE [finite differences in float64]: the central differences are always taken in
# float64 (the floating inputs are upcast; a function that refuses float64 falls back to
# its own dtype), so the reference is accurate to ~1e-10 and the tolerance only has to
# cover the autodiff result's own rounding, from the dtype's eps: float32 then catches a
# backward that is 1% wrong, float64 one that is 1e-6 wrong (rtol 1e-7). The step is 1e-6,
# grown with the input's scale beyond 1e4 so that x + eps v stays many ulps away from x;
# the rounding of the realised step (ulp(x) / step) is added to the relative tolerance.
# Per-dtype (atol, rtol) of the autodiff side.
_TOLERANCES = {
    torch.float64: (1e-8, 1e-7),
    torch.float32: (1e-4, 2e-3),
    torch.float16: (1e-1, 2e-1),
    torch.bfloat16: (1e-1, 3e-1),
}
_STEP = 1e-6
_MODES = ("fwd", "rev")


def check_grads(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    order: int = 1,
    modes: Sequence[str] = ("rev",),
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
) -> None:
    """Check ``fn``'s derivatives w.r.t. every floating tensor in ``args`` by finite differences.

    Each floating tensor leaf of ``args`` (pytrees: dicts, tuples, lists) is perturbed
    along a random unit direction ``v``; the autodiff directional derivative is compared
    with ``(fn(x + eps v) - fn(x - eps v)) / (2 eps)``. Reverse mode checks VJPs (contracted
    with a random cotangent), forward mode checks JVPs. Use float64 for tight tolerances.

    Args:
      fn: ``fn(*args) -> out``, a pytree of floating tensors.
      args: the positional arguments, a tuple of pytrees. Non-floating leaves stay fixed.
      order: 1 checks first derivatives; 2 also checks the derivatives of the VJP, i.e.
        the mixed second derivatives an outer gradient of an input-gradient loss uses.
      modes: any of ``"rev"`` (default) and ``"fwd"``.
      eps, atol, rtol: step and tolerances. The differences are taken in float64 with
        step ``1e-6 * max(1, |x|_max / 1e4)``; the tolerances come from the least precise
        input dtype (float64: ``atol=1e-8, rtol=1e-7``; float32: ``1e-4, 2e-3``), plus
        ``4 ulp(|x|_max) / step`` relative for the rounding of the step. A check
        passes when ``|ad - fd| <= atol + rtol * max(|ad|, |fd|)``.
      seed: seeds the random directions.

    Raises:
      AssertionError: naming the failing leaf by key path, with both values.

    Example:
      >>> check_grads(lambda p: (p["w"] ** 3).sum(), ({"w": torch.randn(3, dtype=torch.float64)},), order=2)
    """
    if not isinstance(args, tuple):
        raise TypeError(f"check_grads: args must be a tuple of positional arguments, got {type(args).__name__}.")
    if order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2, got {order!r}.")
    if not modes or any(m not in _MODES for m in modes):
        raise ValueError(f"check_grads: modes must be a non-empty subset of {_MODES}, got {modes!r}.")
    paths, leaves, spec = optree.tree_flatten_with_path(args)  # type: ignore[var-annotated,arg-type]
    where = [i for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.is_floating_point()]
    if not where:
        raise ValueError("check_grads: args contain no floating-point tensor to differentiate.")
    xs = [leaves[i] for i in where]
    dtype = max((x.dtype for x in xs), key=lambda d: torch.finfo(d).eps)  # the least precise
    d_atol, d_rtol = _TOLERANCES.get(dtype, _TOLERANCES[torch.float32])
    scale = max(float(x.detach().abs().max()) if x.numel() else 0.0 for x in xs)
    step = eps or _STEP * max(1.0, scale / 1e4)
    # x + step * v is rounded to x's float64 grid: a relative error of up to ulp(x) / step in
    # the realised step, which the relative tolerance must cover (negligible below ~1e4).
    represent = 4 * torch.finfo(torch.float64).eps * max(scale, 1.0) / step
    tol = (step, d_atol if atol is None else atol, (d_rtol if rtol is None else rtol) + represent)

    def g(*ys: Tensor) -> Any:
        full = list(leaves)
        for i, y in zip(where, ys):
            full[i] = y
        return fn(*optree.tree_unflatten(spec, full))

    names = ["args" + "".join(f"[{k!r}]" for k in paths[i]) for i in where]
    gen = torch.Generator().manual_seed(seed)
    _check(g, xs, names, order, tuple(modes), tol, gen, "fn")


def _check(g, xs, names, order, modes, tol, gen, what) -> None:
    for mode in modes:
        (_check_jvp if mode == "fwd" else _check_vjp)(g, xs, names, tol, gen, what)
    if order == 2:
        u = _random_like(g(*xs), gen)

        def vjp_of_g(*ys: Tensor) -> Any:
            out, pullback = torch.func.vjp(g, *ys)  # type: ignore[misc]
            return pullback(optree.tree_map(lambda a, o: a.to(o.dtype), u, out))

        _check(vjp_of_g, xs, names, 1, modes, tol, gen, "the VJP of fn")


def _check_vjp(g, xs, names, tol, gen, what) -> None:
    out, vjp_fn = torch.func.vjp(g, *xs)  # type: ignore[misc]  # the stub unions the has_aux form
    u = _random_like(out, gen)
    cotangents = vjp_fn(u)
    for i, name in enumerate(names):
        v = _direction(xs[i], gen)
        ad = (cotangents[i] * v).sum().item()
        plus, minus = (_dot(u, out) for out in _at_shifts(g, xs, i, v, tol[0]))
        _compare("rev", what, name, ad, (plus - minus) / (2 * tol[0]), tol)


def _check_jvp(g, xs, names, tol, gen, what) -> None:
    for i, name in enumerate(names):
        v = _direction(xs[i], gen)
        tangents = [torch.zeros_like(x) for x in xs]
        tangents[i] = v
        _, t_out = torch.func.jvp(g, tuple(xs), tuple(tangents))  # type: ignore[misc]
        plus, minus = _at_shifts(g, xs, i, v, tol[0])
        fd = optree.tree_map(lambda a, b: (a - b) / (2 * tol[0]), plus, minus)
        for ad_leaf, fd_leaf in zip(optree.tree_leaves(t_out), optree.tree_leaves(fd)):
            k = (ad_leaf - fd_leaf).abs().argmax()
            _compare("fwd", what, name, ad_leaf.flatten()[k].item(), fd_leaf.flatten()[k].item(), tol)


def _compare(mode, what, name, ad: float, fd: float, tol) -> None:
    eps, atol, rtol = tol
    bound = atol + rtol * max(abs(ad), abs(fd))
    if not abs(ad - fd) <= bound:
        raise AssertionError(
            f"check_grads: the {mode}-mode derivative of {what} w.r.t. {name} disagrees with "
            f"central finite differences (eps={eps:g}): autodiff {ad:.10g}, finite "
            f"differences {fd:.10g}, |difference| {abs(ad - fd):.3g} > tolerance {bound:.3g}."
        )


def _direction(x: Tensor, gen: torch.Generator) -> Tensor:
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    return v / v.norm().clamp_min(torch.finfo(x.dtype).tiny)


def _random_like(tree: Any, gen: torch.Generator) -> Any:
    return optree.tree_map(lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device), tree)


def _at_shifts(g, xs: list[Tensor], i: int, v: Tensor, step: float) -> tuple[Any, Any]:
    """``g`` at ``x_i +- step v``, in float64 when ``g`` accepts it (NOTE [finite differences
    in float64]), its outputs as float64."""
    def run(ys: list[Tensor], w: Tensor) -> tuple[Any, Any]:
        plus, minus = (optree.tree_map(lambda t: t.double(), g(*_shift(ys, i, w, s * step))) for s in (1, -1))
        return plus, minus

    wide = [x.double() for x in xs]
    try:
        return run(wide, v.double())
    except (RuntimeError, TypeError):  # g holds tensors of its own dtype: stay in it
        return run(xs, v)


def _shift(xs: list[Tensor], i: int, v: Tensor, step: float) -> list[Tensor]:
    ys = list(xs)
    ys[i] = xs[i] + step * v
    return ys


def _dot(u: Any, out: Any) -> float:
    return sum((a.to(b.dtype) * b).sum().item() for a, b in zip(optree.tree_leaves(u), optree.tree_leaves(out)))
