"""Functional optimizers (optax style): pure ``init``/``update`` pairs and ``chain``."""

from ._lbfgs import LBFGSState as LBFGSState
from ._lbfgs import lbfgs as lbfgs
from ._transforms import EmptyState as EmptyState
from ._transforms import GradientTransformation as GradientTransformation
from ._transforms import ScaleByAdamState as ScaleByAdamState
from ._transforms import Schedule as Schedule
from ._transforms import ScheduleState as ScheduleState
from ._transforms import TraceState as TraceState
from ._transforms import adam as adam
from ._transforms import add_decayed_weights as add_decayed_weights
from ._transforms import apply_updates as apply_updates
from ._transforms import chain as chain
from ._transforms import clip_by_global_norm as clip_by_global_norm
from ._transforms import scale as scale
from ._transforms import scale_by_adam as scale_by_adam
from ._transforms import scale_by_learning_rate as scale_by_learning_rate
from ._transforms import sgd as sgd
from ._transforms import trace as trace

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "LBFGSState",
    "ScaleByAdamState",
    "Schedule",
    "ScheduleState",
    "TraceState",
    "adam",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "lbfgs",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "trace",
]


def __getattr__(name: str) -> object:
    # optim.make_step was a second spelling of fg.make_step; kept for one release.
    if name == "make_step":
        from .._checks import warn
        from .._train import make_step

        warn("functional_grads.optim.make_step is deprecated; use functional_grads.make_step.", DeprecationWarning)
        return make_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
