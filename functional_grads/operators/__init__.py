"""Per-sample derivative operators: Jacobian, Hessian, HVP, Laplacian, divergence."""

from ._hessian import hvp as hvp
from ._hessian import input_hessian as input_hessian
from ._jacobian import divergence as divergence
from ._jacobian import input_jacobian as input_jacobian
from ._jacobian import jacobian_trace as jacobian_trace
from ._laplacian import derivatives as derivatives
from ._laplacian import laplacian as laplacian

__all__ = ["derivatives", "divergence", "hvp", "input_hessian", "input_jacobian", "jacobian_trace", "laplacian"]
