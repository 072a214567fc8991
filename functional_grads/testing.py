"""Finite-difference checks of derivatives, for our tests and yours."""

from ._testing import check_grads as check_grads

__all__ = ["check_grads"]
