"""check_grads itself: it must pass on right derivatives and fail on wrong ones."""

import pytest
import torch

from functional_grads.testing import check_grads


def _sin_with_backward_off_by(factor):
    """sin whose backward is ``factor`` times the right one: a bug check_grads must catch."""

    class WrongBackward(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.sin()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * factor

    return WrongBackward


_WrongBackward = _sin_with_backward_off_by(1.01)


class _WrongSecondOrder(torch.autograd.Function):
    """x**3 whose first derivative is right but is not itself differentiated correctly."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x.detach() ** 2  # detached: the second derivative is lost


def _args():
    return ({"w": torch.randn(4, dtype=torch.float64), "n": 3}, torch.randn(2, 4, dtype=torch.float64))


def test_passes_on_correct_derivatives_of_pytrees():
    fn = lambda p, x: {"a": (p["w"] * x).sin(), "b": (x**p["n"]).sum()}  # noqa: E731
    check_grads(fn, _args(), order=2, modes=("fwd", "rev"))


def test_fails_on_a_wrong_first_derivative_naming_the_leaf():
    with pytest.raises(AssertionError, match=r"rev-mode derivative of fn w.r.t. args\[0\]\['w'\]"):
        check_grads(lambda p, x: _WrongBackward.apply(p["w"] * x).sum(), _args())


def test_fails_on_a_wrong_second_derivative():
    fn = lambda p, x: _WrongSecondOrder.apply(p["w"] * x).sum()  # noqa: E731
    check_grads(fn, _args(), order=1)
    with pytest.raises(AssertionError, match="the VJP of fn"):
        check_grads(fn, _args(), order=2)


def test_bad_arguments():
    with pytest.raises(TypeError, match="tuple"):
        check_grads(lambda x: x, torch.ones(2))
    with pytest.raises(ValueError, match="order"):
        check_grads(lambda x: x, (torch.ones(2),), order=3)
    with pytest.raises(ValueError, match="no floating-point tensor"):
        check_grads(lambda x: x, (torch.ones(2, dtype=torch.int64),))


def test_float32_catches_a_backward_one_and_a_half_percent_wrong():
    OffByOneAndAHalf = _sin_with_backward_off_by(1.015)
    x = torch.randn(8)
    check_grads(lambda x: x.sin().sum(), (x,), order=2, modes=("fwd", "rev"))  # the right one passes
    with pytest.raises(AssertionError, match="rev-mode derivative"):
        check_grads(lambda x: OffByOneAndAHalf.apply(x).sum(), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_right_derivative_at_a_large_scale_passes(dtype):
    x = 1e6 + torch.randn(6, dtype=dtype)
    check_grads(lambda x: x.sin(), (x,), modes=("fwd", "rev"))
    check_grads(lambda x: (x * 1e-3) ** 2, (x,), order=2)


def test_float64_catches_a_one_in_a_million_error():
    x = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    check_grads(torch.sin, (x,))  # the right derivative passes
    with pytest.raises(AssertionError, match="rev-mode derivative"):
        check_grads(_sin_with_backward_off_by(1 + 1e-6).apply, (x,))
