"""Every operator's ``"auto"`` choice, in one table, decided by where the code runs
(``_context.running``) and, for the Jacobian's AD mode, by the sizes.

NOTE [operator auto]: the Taylor engine (the forward Laplacian and directional derivatives
of any traced f) is the fastest exact method at every D measured (benchmarks/operators.py),
eagerly, inside user transforms and in compile=True's trace. Under torch.compile (dynamo)
it cannot trace (make_fx inside dynamo), and forward mode through functional_call there
hits "ZeroTensors are immutable" (pytorch/pytorch#177261, NOTE [jacfwd under compile]), so
under dynamo "auto" takes the methods built from reverse mode, which compile.
"""

from __future__ import annotations

from .._context import running

_AUTO = {  # api: (under dynamo, anywhere else)
    "laplacian": ("hessian", "forward"),
    "divergence": ("jacobian", "forward"),
}


def method(api: str, chosen: str) -> str:
    """The method an operator runs: ``chosen``, or the table's for ``"auto"``."""
    if chosen != "auto":
        return chosen
    under_dynamo, elsewhere = _AUTO[api]
    return under_dynamo if running() == "dynamo" else elsewhere  # pragma: no mutate (mutation runs do not compile)


def jacobian_mode(mode: str, inputs: int, outputs: int) -> str:
    """``input_jacobian``'s AD mode: ``mode``, or for ``"auto"`` forward when the sample has
    fewer elements than the output, except while compiling (NOTE [jacfwd under compile]:
    inductor miscompiles forward mode under an outer grad on torch 2.13,
    pytorch/pytorch#177261; an explicit ``"fwd"`` then falls back to eager)."""
    if mode != "auto":
        return mode
    return "fwd" if running() not in ("dynamo", "traced") and inputs < outputs else "rev"
