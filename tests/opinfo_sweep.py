"""The Taylor engine and its fallback against nested ``torch.autograd``, op by op, on torch's
OpInfo samples (``op_db``, shipped in the wheel), as functorch's own transforms are tested.

For every op that supports forward and backward AD in float64, for its sample inputs: a
scalar ``g(x) = sum_i <w_i, op(x, ...)_i>`` of the sample's first tensor ``x`` (fixed random
weights ``w_i`` on the floating outputs) is differentiated through the operators' one
directional core (``Directional``: the engine, or the fallback it chooses): Taylor
coefficients of orders 1-4 along two random directions and the mixed partial ``d2/dx0 dx1``
(kept per direction), and the Laplacian over the first coordinates (collapsed), on a batch
of two samples (``x`` and a scaled copy), against nested ``torch.autograd.grad`` of the
same ``g``, sample by sample. Each op lands in one row: served by the engine's rules, by
the fallback, or refused (with the message); and the largest relative error.

Full sweep (writes ``tests/OPINFO_SWEEP.md``)::

    OMP_NUM_THREADS=1 python tests/opinfo_sweep.py --samples 3

``tests/test_opinfo_sweep.py`` runs a seeded slice of it in the suite.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from typing import Any, NamedTuple

import optree
import torch

F64 = torch.float64
TOLERANCE = 1e-7
"""Largest relative error (``|ours - autograd| / max(1, |autograd|)``) counted as agreement."""
ORDER = 4
AUTOGRAD_WRONG = "nested autograd is wrong here; ours agrees with finite differences"
LAPLACIAN_DIMS = 6


class Row(NamedTuple):
    op: str
    served: str
    """``engine``, ``fallback``, ``loop`` (the fallback one sample at a time), ``refused`` or ``skipped``."""
    error: float
    """The largest relative error over the op's samples and quantities (NaN: nothing compared)."""
    note: str


def differentiable_ops() -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db

    return [op for op in op_db if op.supports_autograd and op.supports_forward_ad
            and F64 in op.supported_dtypes("cpu")]


def op_name(op: Any) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def sweep_op(op: Any, samples: int, seed: int = 0) -> Row:
    """One op's row: its first ``samples`` float64 sample inputs through the engine."""
    name = op_name(op)
    if op.name in RANDOM or "nondeterministic_seeded" in str(getattr(op, "decorators", "")):
        return Row(name, "skipped", math.nan, "random")
    served, worst, notes, wrong = set(), 0.0, [], False
    try:
        inputs = list(op.sample_inputs("cpu", F64, requires_grad=False))
    except Exception as e:  # noqa: BLE001 - a sample generator torch itself cannot run here
        return Row(name, "skipped", math.nan, f"no samples ({type(e).__name__})")
    tried = 0
    for sample in inputs:
        if tried == samples:
            break
        problem = _problem(op, sample, seed)
        if isinstance(problem, str):
            notes.append(problem)
            continue
        tried += 1
        try:
            how, error, autograd_wrong = _compare(problem)
        except Exception as e:  # noqa: BLE001 - recorded: the row says refused, with the message
            served.add("refused")
            notes.append(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
            continue
        served.add(how)
        worst = max(worst, error)
        if autograd_wrong:
            wrong = True
    if not tried:
        return Row(name, "skipped", math.nan, notes[0] if notes else "no sample")
    order = ["refused", "loop", "fallback", "engine"]
    how = next(h for h in order if h in served)
    note = "; ".join(dict.fromkeys(notes))[:200] if how == "refused" else ""
    if wrong:
        note = AUTOGRAD_WRONG
    return Row(name, how, worst if served - {"refused"} else math.nan, note)


RANDOM = {"bernoulli", "normal", "rand_like", "randn_like", "randint_like", "multinomial", "nn.functional.dropout",
          "nn.functional.dropout2d", "nn.functional.dropout3d", "nn.functional.alpha_dropout",
          "nn.functional.feature_alpha_dropout", "nn.functional.rrelu", "uniform", "cauchy", "exponential",
          "geometric", "log_normal", "randint", "bernoulli_", "nn.functional.fractional_max_pool2d",
          "nn.functional.fractional_max_pool3d"}


class _Problem(NamedTuple):
    g: Any
    """``g(x) -> scalar`` of one sample ``x`` (the op's first tensor input)."""
    X: torch.Tensor
    """``[2, *x.shape]``: the sample and a scaled copy."""


def _problem(op: Any, sample: Any, seed: int) -> _Problem | str:
    leaves, spec = optree.tree_flatten((sample.input, sample.args, sample.kwargs))
    first = next((i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor)), None)
    if first is None or not leaves[first].dtype.is_floating_point or leaves[first].numel() == 0:
        return "first input not a non-empty float64 tensor"
    x = leaves[first].detach()
    try:
        args, kwargs = _call(spec, leaves, first, x)
        out = op(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        return f"sample fails eagerly ({type(e).__name__})"
    outs = [t for t in optree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if any(t.is_complex() for t in outs):
        return "complex output"
    floating = [t for t in outs if t.dtype.is_floating_point]
    if not floating:
        return "no floating output"
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, dtype=t.dtype, generator=gen) for t in floating]

    def g(y: torch.Tensor) -> torch.Tensor:
        args, kwargs = _call(spec, leaves, first, y)
        result = op(*args, **kwargs)
        parts = [t for t in optree.tree_leaves(result) if isinstance(t, torch.Tensor) and t.dtype.is_floating_point]
        return sum((w * t).sum() for w, t in zip(weights, parts)).to(F64)

    if not bool(torch.isfinite(g(x))):
        return "the function is not finite at the sample (no derivative to compare)"
    return _Problem(g, torch.stack([x, x * 0.999]))


def _call(spec: Any, leaves: list[Any], first: int, x: torch.Tensor) -> tuple[list[Any], dict[str, Any]]:
    """The op's positional and keyword arguments with ``x`` as its first tensor."""
    args = list(leaves)
    args[first] = x
    inp, rest, kwargs = optree.tree_unflatten(spec, args)
    return [inp, *rest], kwargs


def _compare(problem: _Problem) -> tuple[str, float]:
    from functional_grads.operators._directional import Directional

    g, X = problem
    D = X[0].numel()
    f = lambda p, x: g(x.reshape(X.shape[1:]))  # noqa: E731 - the flattened sample
    d = Directional("sweep", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    flat = X.reshape(2, D)
    gen = torch.Generator().manual_seed(1)
    V = torch.randn(2, D, dtype=F64, generator=gen)
    V = V / V.norm(dim=1, keepdim=True)
    if D >= 2:
        e = torch.eye(D, dtype=F64)
        V = torch.cat([V, (e[0] + e[1])[None], (e[0] - e[1])[None]])
    value, lower, top = d((None, flat), V, None, ORDER)
    served = [d.served]
    coefficients = torch.stack([*lower, top], 1)  # [K, order, B]
    k = min(D, LAPLACIAN_DIMS)
    _, _, half_laplacian = d((None, flat), torch.eye(D, dtype=F64)[:k], flat.new_ones(k), 2)
    served.append(d.served)
    worst, autograd_wrong = 0.0, False
    for b in range(2):
        x = flat[b].clone()  # its own storage: as_strided reads offsets from it
        worst = max(worst, _relative(value[b], g(x.reshape(X.shape[1:]))))
        for j, v in enumerate(V):
            want = _autograd_coefficients(f, x, v, ORDER)
            for m in range(ORDER):
                error = _relative(coefficients[j, m, b], want[m])
                if error > TOLERANCE and _autograd_is_wrong(f, x, v, m + 1, coefficients[j, m, b], want):
                    autograd_wrong = True  # and its higher orders along v: no reference
                    break
                worst = max(worst, error)
        lap = sum(2 * _autograd_coefficients(f, x, e_i, 2)[1] for e_i in torch.eye(D, dtype=F64)[:k])
        worst = max(worst, _relative(2 * half_laplacian[b], lap))
    return max(served, key=["engine", "fallback", "loop"].index), worst, autograd_wrong


def _autograd_is_wrong(f: Any, x: torch.Tensor, v: torch.Tensor, m: int, ours: torch.Tensor,
                       theirs: torch.Tensor) -> bool:
    """Arbitrate a disagreement on ``c_m`` by a central difference of autograd's ``c_(m-1)``
    (right where the lower orders agree): ``c_m ~ (c_(m-1)(x + hv) - c_(m-1)(x - hv)) / (2 h m)``."""
    h = 1e-4
    lower = (lambda y: f(None, y)) if m == 1 else (lambda y: _autograd_coefficients(f, y, v, m - 1)[m - 2])
    fd = (lower(x + h * v) - lower(x - h * v)) / (2 * h * m)
    return _relative(ours, fd) < 1e-4 < _relative(theirs[m - 1], fd)


def _autograd_coefficients(f: Any, x: torch.Tensor, v: torch.Tensor, order: int) -> torch.Tensor:
    """``[c_1, ..., c_order]``: ``d^m/dt^m f(x + t v) / m!`` at 0, by nested ``torch.autograd.grad``."""
    t = torch.zeros((), dtype=F64, requires_grad=True)
    y = f(None, x + t * v)
    out = []
    for m in range(1, order + 1):
        if y.requires_grad:
            (y,) = torch.autograd.grad(y, t, create_graph=True, allow_unused=True, materialize_grads=True)
        else:  # the previous order did not depend on t: this one is 0
            y = torch.zeros_like(y)
        out.append(y.detach() / math.factorial(m))
    return torch.stack(out)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    finite = torch.isfinite(want)
    if bool((~torch.isfinite(got) & finite).any()):
        return math.inf
    if not bool(finite.any()):
        return 0.0
    err = (got[finite] - want[finite]).abs() / want[finite].abs().clamp_min(1.0)
    return float(err.max())


def table(rows: list[Row], seconds: float, samples: int) -> str:
    counts = {k: sum(r.served == k for r in rows) for k in ("engine", "fallback", "loop", "refused", "skipped")}
    bad = [r for r in rows if not math.isnan(r.error) and r.error > TOLERANCE]
    lines = [
        "# The Taylor engine against nested autograd on torch's OpInfo samples",
        "",
        f"`python tests/opinfo_sweep.py --samples {samples}` (torch {torch.__version__}, float64, "
        f"{seconds:.0f} s on one thread): {len(rows)} ops (variants counted apart) that support forward and "
        f"backward AD; up to {samples} sample(s) each; Taylor coefficients of orders 1-{ORDER} along two random "
        "directions and e0 +- e1, and the collapsed Laplacian over the first "
        f"{LAPLACIAN_DIMS} coordinates, on a batch of two samples, against nested `torch.autograd.grad` "
        "(tests/opinfo_sweep.py says how).",
        "",
        f"- served by the engine's rules: {counts['engine']}",
        f"- served by the fallback (nested reverse mode, samples mapped): {counts['fallback']}",
        f"- served by the fallback one sample at a time: {counts['loop']}",
        f"- refused with a message (the message in the row): {counts['refused']}",
        f"- not swept (no float64 tensor input, complex or no floating output, random): {counts['skipped']}",
        f"- where nested autograd itself is wrong (a central difference of its previous order agrees with "
        f"ours, not with it): {sum(r.note == AUTOGRAD_WRONG for r in rows)}",
        f"- **disagreements (relative error > {TOLERANCE:g}): {len(bad)}**"
        + ("" if not bad else ": " + ", ".join(r.op for r in bad)),
        "",
        "| op | served | max relative error | note |",
        "| --- | --- | ---: | --- |",
    ]
    for r in rows:
        err = "" if math.isnan(r.error) else f"{r.error:.1e}"
        lines.append(f"| `{r.op}` | {r.served} | {err} | {r.note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3, help="sample inputs per op (default 3)")
    parser.add_argument("--only", nargs="*", help="op names to sweep (default: all)")
    parser.add_argument("--out", default="tests/OPINFO_SWEEP.md", help="the table to write ('-': print only)")
    a = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    ops = [op for op in differentiable_ops() if not a.only or op_name(op) in a.only or op.name in a.only]
    start, rows = time.perf_counter(), []
    for i, op in enumerate(ops):
        rows.append(sweep_op(op, a.samples))
        r = rows[-1]
        print(f"[{i + 1}/{len(ops)}] {r.op}: {r.served} {r.error:.1e} {r.note[:100]}", file=sys.stderr, flush=True)
    text = table(rows, time.perf_counter() - start, a.samples)
    if a.out != "-":
        with open(a.out, "w") as fh:
            fh.write(text)
    print(text.split("| op |")[0])


if __name__ == "__main__":
    main()
