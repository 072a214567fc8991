"""optim: chain and the gradient transformations, schedules, L-BFGS in pure form."""

import pytest
import torch

import functional_grads as fg
from functional_grads import optim
from helpers import mlp


def _params():
    torch.manual_seed(0)
    return {"w": torch.randn(3, dtype=torch.float64), "b": torch.randn(2, dtype=torch.float64)}


def test_chain_with_decay_and_clipping_equals_torch_optim():
    params = _params()
    torch_params = [torch.nn.Parameter(v.clone()) for v in params.values()]
    reference = torch.optim.AdamW(torch_params, lr=0.1, weight_decay=0.0)
    ours = optim.chain(optim.clip_by_global_norm(0.5), optim.add_decayed_weights(0.01), optim.adam(0.1))
    state = ours.init(params)
    for i in range(5):
        grads = {k: torch.sin(v * (i + 1)) for k, v in params.items()}
        updates, state = ours.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        for p, g, v in zip(torch_params, grads.values(), [None, None]):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(torch_params, 0.5)
        with torch.no_grad():
            for p in torch_params:
                p.grad += 0.01 * p
        reference.step()
        for p, v in zip(torch_params, params.values()):
            torch.testing.assert_close(p.detach(), v, rtol=1e-12, atol=1e-12)
        # the reference's next gradient is evaluated at the same point as ours
        params = {k: p.detach().clone() for k, p in zip(params, torch_params)}


def test_a_schedule_sees_the_step_count():
    seen = []
    opt = optim.sgd(lambda step: (seen.append(int(step)), 0.1 / (1 + step))[1])
    params = {"w": torch.zeros(1)}
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update({"w": torch.ones(1)}, state, params)
    assert seen == [0, 1, 2]
    torch.testing.assert_close(updates["w"], torch.tensor([-0.1 / 3]))


def test_weight_decay_keyword_was_removed_in_0_3():
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decay'"):
        optim.sgd(0.1, momentum=0.9, weight_decay=0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decay'"):
        optim.adam(0.1, weight_decay=0.1)


def test_make_step_has_one_spelling():
    with pytest.warns(DeprecationWarning, match="use functional_grads.make_step"):
        assert optim.make_step is fg.make_step
    with pytest.raises(AttributeError, match="no attribute 'typo'"):
        optim.typo  # noqa: B018


@pytest.mark.parametrize("make, match", [
    (lambda: optim.sgd(0.1, nesterov=True), "nesterov=True needs a momentum"),
    (lambda: optim.adam(0.1, betas=(0.9, 1.0)), r"betas \(b2\) must be in \[0, 1\)"),
    (lambda: optim.adam(float("nan")), "lr must be a positive number"),
    (lambda: optim.adam(0.1, eps=-1.0), "eps must be a non-negative"),
    (lambda: optim.clip_by_global_norm(0.0), "max_norm must be a positive"),
    (lambda: optim.lbfgs(history=0), "history must be a positive int"),
])
def test_hyperparameters_are_validated_like_torch_optim(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_make_step_accepts_a_chain_and_trains():
    f, params = fg.functionalize(mlp(2, 8, 1))
    X = torch.randn(32, 2, dtype=torch.float64)
    loss = fg.losses.gradient_matching(f)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2))
    step = fg.make_step(loss, opt)
    state = opt.init(params)
    first = None
    for _ in range(30):
        params, state, value = step(params, state, X, 2 * X)
        first = value if first is None else first
    assert value < first


def test_make_step_names_non_finite_params():
    f, params = fg.functionalize(mlp(2, 4, 1))
    opt = optim.sgd(1e300)  # finite gradients, overflowing update
    step = fg.make_step(fg.losses.gradient_matching(f), opt)
    X = torch.randn(8, 2, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"results with NaN/Inf: .*params\['0.weight'\]"):
        step(params, opt.init(params), X, 1e10 * X)


def test_lbfgs_is_pure_and_matches_its_own_restart():
    target = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    fn = lambda x: ((x - target) ** 2 * torch.tensor([1.0, 10.0], dtype=torch.float64)).sum(1)  # noqa: E731
    opt = optim.lbfgs()
    x, state = torch.zeros(2, 2, dtype=torch.float64), opt.init(torch.zeros(2, 2, dtype=torch.float64))
    states = []
    for _ in range(8):
        g = torch.func.grad(lambda x: fn(x).sum())(x)
        updates, new_state = opt.update(g, state, x, value=fn(x), value_fn=fn)
        states.append((state, x))
        x, state = x + updates, new_state
    torch.testing.assert_close(x, target, rtol=1e-8, atol=1e-8)
    # calling update again on an old state gives the same step (no hidden mutation)
    old_state, old_x = states[3]
    g = torch.func.grad(lambda x: fn(x).sum())(old_x)
    a, _ = opt.update(g, old_state, old_x, value=fn(old_x), value_fn=fn)
    b, _ = opt.update(g, old_state, old_x, value=fn(old_x), value_fn=fn)
    assert torch.equal(a, b)
