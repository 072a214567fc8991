"""What autograd treats as constant, kept constant where derivatives do not come from
autograd's backward pass (NOTE [autograd's constants]).

NOTE [autograd's constants]: ``torch.autograd`` (and so ``torch.func.grad``/``jacrev``)
treats what ``f`` computes under ``torch.no_grad()``, ``set_grad_enabled(False)`` or
``inference_mode()`` as a constant. Forward-mode AD does not (``torch.func.jvp`` passes
tangents through such a block), and neither does a trace to aten ops (``make_fx`` records
the ops, not the grad mode). So wherever ``f`` runs for a derivative that is not a
backward pass (the Taylor engine's trace, nested ``jvp``, ``jacfwd``), it runs under
:func:`autograd_constants`: every tensor a torch function returns while grad mode is off is
detached, which forward mode, the trace (``aten.detach``, kept by the engine) and the
engine's rules all read as a constant, as autograd would. ``f`` starts with grad mode on,
as torch.func's transforms ignore a ``no_grad`` around them: only the blocks inside ``f``
count.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import optree
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode


def autograd_constants(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` with what it computes with grad mode off detached (NOTE [autograd's constants])."""

    @functools.wraps(f)
    def g(*args: Any, **kwargs: Any) -> Any:
        with torch.enable_grad(), _DetachWithoutGrad():
            return f(*args, **kwargs)

    return g


class _DetachWithoutGrad(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled():
            return out
        return optree.tree_map(_detached, out, none_is_leaf=True)


def _detached(t: Any) -> Any:
    return t.detach() if isinstance(t, Tensor) else t
