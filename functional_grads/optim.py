"""Functional optimizers on params dicts (optax style) and a compiled train step."""

from ._optim import GradientTransformation as GradientTransformation
from ._optim import adam as adam
from ._optim import apply_updates as apply_updates
from ._optim import make_step as make_step
from ._optim import sgd as sgd

__all__ = ["GradientTransformation", "adam", "apply_updates", "make_step", "sgd"]
