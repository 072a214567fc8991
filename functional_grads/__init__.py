"""functional_grads: losses built from a network's input derivatives, on torch.func."""

from . import inverse as inverse
from . import losses as losses
from . import optim as optim
from . import testing as testing
from ._attacks import fgsm as fgsm
from ._attacks import pgd as pgd
from ._compile import CompileFallbackWarning as CompileFallbackWarning
from ._functionalize import FunctionalModule as FunctionalModule
from ._functionalize import functionalize as functionalize
from ._input_grad import input_grad as input_grad
from ._input_grad import value_and_input_grad as value_and_input_grad
from ._operators import divergence as divergence
from ._optim_interop import apply_grads as apply_grads
from ._operators import hvp as hvp
from ._operators import input_hessian as input_hessian
from ._operators import input_jacobian as input_jacobian
from ._operators import laplacian as laplacian
from ._optim import make_step as make_step
from ._optimize_input import optimize_input as optimize_input
from ._typing import Params as Params
from ._value_and_grad import value_and_grad as value_and_grad

__version__ = "0.1.0"

__all__ = [
    "CompileFallbackWarning",
    "apply_grads",
    "FunctionalModule",
    "Params",
    "divergence",
    "fgsm",
    "functionalize",
    "hvp",
    "input_grad",
    "input_hessian",
    "input_jacobian",
    "inverse",
    "laplacian",
    "losses",
    "make_step",
    "optim",
    "optimize_input",
    "pgd",
    "testing",
    "value_and_grad",
    "value_and_input_grad",
]
