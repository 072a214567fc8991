"""Per-sample derivative operators: Jacobian, Hessian, HVP, Laplacian, divergence."""

from ._hessian import hvp as hvp
from ._hessian import input_hessian as input_hessian
from ._hessian import laplacian as laplacian
from ._jacobian import divergence as divergence
from ._jacobian import input_jacobian as input_jacobian

__all__ = ["divergence", "hvp", "input_hessian", "input_jacobian", "laplacian"]
