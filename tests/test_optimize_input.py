"""optimize_input: per-sample independence, feasibility, frozen models, convergence, errors."""

import warnings

import pytest
import torch
from hypothesis import given, strategies as st

import functional_grads as fg
from functional_grads import inverse
from helpers import mlp


def _frozen_problem(B=5):
    model = mlp(3, 8, 1, d_out=2)
    f, params = fg.functionalize(model)
    Y = torch.randn(B, 2, dtype=torch.float64)
    # The small L2 term gives a unique minimiser (3 inputs, 2 outputs leave a flat valley).
    objective = lambda x: ((f(params, x) - Y) ** 2).sum(1) + 0.1 * (x**2).sum(1)  # noqa: E731  [B, 3] -> [B]
    return model, f, params, Y, objective


@pytest.mark.parametrize("optimizer, lr, tol", [("adam", 0.05, None), ("sgd", 0.1, None), ("lbfgs", None, None),
                                               ("adam", 0.05, 1e-4), ("sgd", 0.1, 3e-3), ("lbfgs", None, 1e-9)])
def test_a_batch_equals_each_sample_alone(optimizer, lr, tol):
    _, f, params, Y, objective = _frozen_problem()
    x0 = torch.randn(5, 3, dtype=torch.float64)
    batch = fg.optimize_input(objective, x0, steps=40, optimizer=optimizer, lr=lr, tol=tol)
    for i in range(5):
        one = fg.optimize_input(lambda x: ((f(params, x) - Y[i : i + 1]) ** 2).sum(1) + 0.1 * (x**2).sum(1), x0[i : i + 1],
                                steps=40, optimizer=optimizer, lr=lr, tol=tol)
        # Batched and single matmuls round differently; L-BFGS's curvature pairs amplify
        # that once converged (to ~1e-8 here). Coupled samples would differ by far more.
        tol_x = 1e-7 if optimizer == "lbfgs" else 1e-9
        torch.testing.assert_close(batch.x[i : i + 1], one.x, rtol=tol_x, atol=tol_x)
        steps = one.history.shape[0]  # alone, the run ends when this sample stops
        torch.testing.assert_close(batch.history[:steps, i], one.history[:, 0], rtol=tol_x, atol=tol_x)
        assert bool(batch.converged[i]) == bool(one.converged[0])  # early stop per sample, as alone
        if one.converged[0] and steps < batch.history.shape[0]:  # frozen afterwards in the batch
            assert (batch.history[steps:, i] == batch.history[steps, i]).all()
    assert batch.history[-1].mean() < batch.history[0].mean()
    if tol is not None:  # the early-stop path ran
        assert batch.converged.any()


@given(st.integers(1, 4), st.integers(1, 5), st.floats(0.0, 2.0), st.sampled_from(["box", "linf", "l2"]))
def test_projections_keep_every_iterate_feasible(B, D, radius, kind):
    g = torch.Generator().manual_seed(B * 10 + D)
    center = torch.randn(B, D, generator=g, dtype=torch.float64)
    target = 5 * torch.randn(B, D, generator=g, dtype=torch.float64)  # far outside the set
    project = {"box": inverse.box(-radius, radius), "linf": inverse.linf_ball(center, radius),
               "l2": inverse.l2_ball(center, radius)}[kind]
    iterates = []
    fg.optimize_input(lambda x: ((x - target) ** 2).sum(1), center.clone(), steps=15, lr=0.5, project=project,
                      callback=lambda step, x, losses: iterates.append(x.clone()))
    for x in iterates:
        if kind == "box":
            assert (x.abs() <= radius + 1e-12).all()
        elif kind == "linf":
            assert ((x - center).abs() <= radius + 1e-12).all()
        else:
            assert ((x - center).norm(dim=1) <= radius + 1e-9).all()


def test_the_model_is_untouched():
    model, f, params, Y, _ = _frozen_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = torch.randn(5, 3, dtype=torch.float64)
    for objective in (lambda x: ((f(params, x) - Y) ** 2).sum(1), lambda x: ((model(x) - Y) ** 2).sum(1)):
        for optimizer, lr in (("adam", 0.1), ("lbfgs", None)):
            fg.optimize_input(objective, x0, steps=5, optimizer=optimizer, lr=lr)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and x0.grad is None


def test_lbfgs_finds_the_minimiser_of_a_convex_problem():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(4, 6, 6, generator=g, dtype=torch.float64)
    A = M @ M.transpose(1, 2) + 0.5 * torch.eye(6, dtype=torch.float64)  # one SPD matrix per sample
    b = torch.randn(4, 6, generator=g, dtype=torch.float64)
    objective = lambda x: 0.5 * torch.einsum("bi,bij,bj->b", x, A, x) - (b * x).sum(1)  # noqa: E731
    result = fg.optimize_input(objective, torch.zeros(4, 6, dtype=torch.float64), steps=100, optimizer="lbfgs", tol=1e-14)
    torch.testing.assert_close(result.x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-6)
    assert result.converged.all() and len(result.history) < 100


def test_regularizers_and_progress(capsys):
    x = torch.zeros(2, 1, 4, 4)
    x[..., 2:] = 1.0
    assert torch.allclose(inverse.total_variation(1.0, eps=0.0)(x), torch.tensor([3.0, 3.0]))
    res = fg.optimize_input(lambda x: (x**2).flatten(1).sum(1), x + 1, steps=20, lr=0.1,
                            regularizer=inverse.l2(1.0, center=x), progress=True)
    assert res.history.shape == (20, 2)
    assert "optimize_input: step 20/20" in capsys.readouterr().err


def test_bad_inputs():
    obj = lambda x: (x**2).sum(1)  # noqa: E731
    with pytest.raises(TypeError, match=r"X \(argument 0\) must be floating point"):
        fg.optimize_input(obj, torch.zeros(2, 3, dtype=torch.int64), steps=5, lr=0.1)
    with pytest.raises(ValueError, match=r"objective must return one loss per sample, shape \[2\], got \[\]"):
        fg.optimize_input(lambda x: (x**2).sum(), torch.zeros(2, 3), steps=5, lr=0.1)
    with pytest.raises(TypeError, match="needs a step size"):
        fg.optimize_input(obj, torch.zeros(2, 3), steps=5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fg.optimize_input(obj, torch.zeros(2, 3), steps=5, optimizer="rmsprop", lr=0.1)
    with pytest.raises(ValueError, match="radius must be a non-negative"):
        inverse.l2_ball(torch.zeros(1, 2), -1.0)


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("lbfgs", None)])
def test_compiled_inner_step_equals_eager(optimizer, lr):
    _, f, params, Y, objective = _frozen_problem()
    x0 = torch.randn(5, 3, dtype=torch.float64)
    eager = fg.optimize_input(objective, x0, steps=8, optimizer=optimizer, lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        compiled = fg.optimize_input(objective, x0, steps=8, optimizer=optimizer, lr=lr, compile=True)
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(compiled.history, eager.history, rtol=1e-9, atol=1e-9)
