"""functional_grads: losses built from a network's input derivatives, on torch.func."""

from . import atoms as atoms
from . import distributed as distributed
from . import inverse as inverse
from . import losses as losses
from . import operators as operators
from . import optim as optim
from . import testing as testing
from ._attacks import Attack as Attack
from ._attacks import fgsm as fgsm
from ._attacks import perturb as perturb
from ._attacks import pgd as pgd
from ._attacks import robust_accuracy as robust_accuracy
from ._compile import CompileFallbackWarning as CompileFallbackWarning
from ._functionalize import FunctionalModule as FunctionalModule
from ._functionalize import functionalize as functionalize
from ._functionalize import load_params as load_params
from ._input_grad import input_grad as input_grad
from ._input_grad import value_and_input_grad as value_and_input_grad
from ._saved import load_compiled as load_compiled
from ._saved import save_compiled as save_compiled
from ._train import apply_grads as apply_grads
from ._train import make_step as make_step
from ._typing import Params as Params
from ._value_and_grad import grad as grad
from ._value_and_grad import value_and_grad as value_and_grad
from .inverse import optimize_input as optimize_input
from .operators import biharmonic as biharmonic
from .operators import derivatives as derivatives
from .operators import divergence as divergence
from .operators import hvp as hvp
from .operators import input_hessian as input_hessian
from .operators import input_jacobian as input_jacobian
from .operators import jacobian_trace as jacobian_trace
from .operators import laplacian as laplacian
from .operators import partial_derivative as partial_derivative
from .operators import partials as partials

__version__ = "0.3.0"

__all__ = [
    "Attack",
    "CompileFallbackWarning",
    "FunctionalModule",
    "Params",
    "apply_grads",
    "atoms",
    "biharmonic",
    "derivatives",
    "distributed",
    "divergence",
    "fgsm",
    "functionalize",
    "grad",
    "hvp",
    "input_grad",
    "input_hessian",
    "input_jacobian",
    "jacobian_trace",
    "inverse",
    "laplacian",
    "load_compiled",
    "load_params",
    "losses",
    "make_step",
    "operators",
    "optim",
    "optimize_input",
    "partial_derivative",
    "partials",
    "perturb",
    "pgd",
    "robust_accuracy",
    "save_compiled",
    "testing",
    "value_and_grad",
    "value_and_input_grad",
]
