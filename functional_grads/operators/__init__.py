"""Per-sample derivative operators: Jacobian, Hessian, HVP, Laplacian, divergence, biharmonic
and partial derivatives of any order."""

from ._hessian import hvp as hvp
from ._hessian import input_hessian as input_hessian
from ._jacobian import divergence as divergence
from ._jacobian import input_jacobian as input_jacobian
from ._jacobian import jacobian_trace as jacobian_trace
from ._laplacian import derivatives as derivatives
from ._laplacian import laplacian as laplacian
from ._partials import biharmonic as biharmonic
from ._partials import partial_derivative as partial_derivative
from ._partials import partials as partials
from ._rules import register_rule as register_rule

__all__ = ["biharmonic", "derivatives", "divergence", "hvp", "input_hessian", "input_jacobian", "jacobian_trace",
           "laplacian", "partial_derivative", "partials", "register_rule"]
