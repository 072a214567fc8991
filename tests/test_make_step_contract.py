"""make_step's contract at its edges: defaults, options passed on, whole error messages."""

import inspect
import math

import pytest
import torch

import functional_grads as fg
from functional_grads.distributed import data_parallel

F64 = torch.float64


@pytest.mark.parametrize("api", [fg.make_step, fg.value_and_grad, fg.grad, data_parallel, fg.optimize_input],
                         ids=lambda a: a.__name__)
def test_eager_is_the_default_everywhere(api):  # test names avoid mutmut's -k words
    assert inspect.signature(api).parameters["compile"].default is False


def _setup():
    params = {"w": torch.ones(3, dtype=F64)}
    loss = lambda p, X: ((X @ p["w"]) ** 2).mean()  # noqa: E731
    return params, loss, torch.ones(4, 3, dtype=F64)


def test_a_torch_optimizer_is_refused_with_the_fix():
    params, loss, _ = _setup()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match=r"^make_step: optimizer must be a functional_grads\.optim "
                                        r"GradientTransformation \(e\.g\. optim\.adam\(1e-3\)\), got SGD\. For a "
                                        r"torch\.optim optimizer, use value_and_grad and apply_grads\.$"):
        fg.make_step(loss, opt)


def test_options_are_checked_and_check_false_is_passed_on():
    params, loss, X = _setup()
    opt = fg.optim.sgd(0.1)
    with pytest.raises(TypeError, match=r"^make_step: compile must be a bool or a dict of torch\.compile options, "
                                        r"got 'yes'\.$"):
        fg.make_step(loss, opt, compile="yes")
    _, _, value = fg.make_step(loss, opt, check=False)(params, opt.init(params), X * math.nan)
    assert math.isnan(value.item())  # no check: NaN comes back instead of raising


def test_a_non_finite_step_names_the_leaves_and_the_optimizer_hint():
    params, loss, X = _setup()
    opt = fg.optim.sgd(0.1)
    with pytest.raises(FloatingPointError, match=r"^make_step: non-finite result: loss = inf, gradient leaves with "
                                                 r"NaN/Inf: \[\"grads\['w'\]\"\], results with NaN/Inf: \[\"params\['w'\]\"\]\. "
                                                 r"Check the data and the optimizer's settings \(learning rate, betas, "
                                                 r"eps\)\.$"):
        fg.make_step(loss, opt)(params, opt.init(params), X * 1e300)


def test_make_step_describes_itself_for_saving():
    params, loss, _ = _setup()
    saved = fg.make_step(loss, fg.optim.sgd(0.1)).saved
    assert (saved.kind, saved.has_aux, saved.step.core.api) == ("make_step", False, "make_step")
