"""optimize_input's contract at its edges: each refusal by whole message, the optimizer
picked by name equal to the one passed explicitly, the progress lines, the callback."""

import pytest
import torch

from functional_grads import optim
from functional_grads.inverse import optimize_input

F64 = torch.float64
OBJ = lambda x: ((x - 1.0) ** 2).sum(1)  # noqa: E731
X0 = torch.zeros(2, 3, dtype=F64)

REFUSALS = [
    (dict(objective=3), TypeError, r"optimize_input: objective must be callable, got int\."),
    (dict(x0="x"), TypeError, r"optimize_input: X \(argument 0\) must be a tensor \[B, \*x_shape\], got str\."),
    (dict(steps=0), ValueError, r"optimize_input: steps must be a positive int, got 0\."),
    (dict(steps=1.5), ValueError, r"optimize_input: steps must be a positive int, got 1\.5\."),
    (dict(lr=0.0), ValueError, r"optimize_input: lr must be a positive number \(finite\) or None, got 0\.0\."),
    (dict(tol=-1.0), ValueError, r"optimize_input: tol must be a non-negative number \(finite\) or None, got -1\.0\."),
    (dict(project=3), TypeError, r"optimize_input: project must be callable, got int\."),
    (dict(regularizer=3), TypeError, r"optimize_input: regularizer must be callable, got int\."),
    (dict(callback=3), TypeError, r"optimize_input: callback must be callable, got int\."),
    (dict(optimizer="x"), ValueError,
     r"optimize_input: optimizer must be one of \('adam', 'sgd', 'lbfgs'\) or a GradientTransformation, got 'x'\."),
    (dict(optimizer="adam", lr=None), TypeError, r"optimize_input: optimizer='adam' needs a step size: pass lr=\.\.\."),
    (dict(optimizer="sgd", lr=None), TypeError, r"optimize_input: optimizer='sgd' needs a step size: pass lr=\.\.\."),
    (dict(objective=lambda x: x.sum()), ValueError,
     r"optimize_input: objective must return one loss per sample, shape \[2\], got \[\]\. Reduce over the "
     r"non-batch dimensions only, e\.g\. \.flatten\(1\)\.sum\(1\)\."),
    (dict(regularizer=lambda x: x.sum()), ValueError,
     r"optimize_input: regularizer must return one loss per sample, shape \[2\], got \[\]\."),
    (dict(objective=lambda x: (x**2).sum(1).log(), x0=torch.zeros(2, 3, dtype=F64)), FloatingPointError,
     r"optimize_input: the objective is NaN/Inf at step 0 for sample\(s\) \[0, 1\]; lower lr, add a projection "
     r"\(inverse\.box\) or a regularizer, or check the objective\."),
]


@pytest.mark.parametrize("case", range(len(REFUSALS)))
def test_refusals_by_whole_message(case):
    changes, kind, message = REFUSALS[case]
    kwargs = {"objective": OBJ, "x0": X0 + 0.5, "steps": 2, "lr": 0.1, **changes}
    with pytest.raises(kind, match="^" + message):
        optimize_input(kwargs.pop("objective"), kwargs.pop("x0"), **kwargs)


@pytest.mark.parametrize("name, explicit", [("sgd", optim.sgd(0.1)), ("adam", optim.adam(0.1)),
                                            ("lbfgs", optim.lbfgs(1.0))], ids=["sgd", "adam", "lbfgs"])
def test_an_optimizer_by_name_is_the_one_built_explicitly(name, explicit):
    lr = None if name == "lbfgs" else 0.1  # L-BFGS's default step is 1
    by_name = optimize_input(OBJ, X0, steps=3, optimizer=name, lr=lr)
    built = optimize_input(OBJ, X0, steps=3, optimizer=explicit)
    torch.testing.assert_close(by_name.x, built.x, rtol=0, atol=0)
    torch.testing.assert_close(by_name.history, built.history, rtol=0, atol=0)


def test_progress_lines_and_the_callback(capsys):
    seen = []
    optimize_input(OBJ, X0, steps=20, optimizer="sgd", lr=0.1, progress=True,
                   callback=lambda step, x, losses: seen.append((step, float(losses.sum()))))
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"optimize_input: step {k}/20" for k in (1, 3, 5, 7, 9, 11, 13,
                                                                                              15, 17, 19, 20)]
    assert lines[0] == "optimize_input: step 1/20, mean loss 3, active 2/2"
    assert [s for s, _ in seen] == list(range(20)) and seen[0][1] == 6.0
