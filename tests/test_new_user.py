"""What a new user trips on: CNNs with Flatten, write-back, vmap of value_and_grad, fg.grad,
compile logging, robust accuracy."""

import logging
import warnings

import pytest
import torch
from torch import nn

import functional_grads as fg
from helpers import assert_close, mlp


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    ).double()


def _reference_input_grad(model, X, pick):
    x = X.clone().requires_grad_()
    out = pick(model(x))
    return torch.autograd.grad(out.sum(), x)[0]


@pytest.mark.parametrize("compile", [False, True])
def test_a_flatten_cnn_works_in_every_per_sample_api(compile):
    model = _critic()
    f, params = fg.functionalize(model)
    score = lambda p, x: f(p, x)[..., 0]  # noqa: E731  [1, 8, 8] -> []
    X = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])
    ce = lambda out, y: nn.functional.cross_entropy(out, y)  # noqa: E731
    reference = _reference_input_grad(model, X, lambda out: out[:, 0])
    assert_close(fg.input_grad(score)(params, X), reference)
    assert fg.input_jacobian(f)(params, X).shape == (5, 3, 1, 8, 8)

    def loss(p, X, labels):
        return fg.losses.gradient_penalty(score, target=1.0)(p, X) \
            + fg.losses.adversarial(f, ce, fg.Attack(eps=0.1, steps=2))(p, X, labels)

    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        value, grads = fg.value_and_grad(loss, compile=compile)(params, X, labels)
    eager = fg.value_and_grad(loss)(params, X, labels)
    assert_close(value, eager[0], rtol=1e-9, atol=1e-9)
    x_adv = fg.pgd(f, params, X, labels, loss_fn=ce, eps=0.1, steps=2)
    assert ((x_adv - X).abs() <= 0.1 + 1e-12).all()


def test_trained_params_are_written_back_with_load_params():
    model = mlp(2, 8, 1)
    f, params = fg.functionalize(model)
    opt = fg.optim.adam(1e-2)
    step = fg.make_step(fg.losses.gradient_matching(f), opt)
    state = opt.init(params)
    X = torch.randn(16, 2, dtype=torch.float64)
    for _ in range(5):
        params, state, _ = step(params, state, X, 2 * X)
    assert not torch.equal(model(X), f(params, X))  # functional training leaves the module alone
    fg.load_params(model, params)
    assert torch.equal(model(X), f(params, X))
    with pytest.raises(ValueError, match=r"load_params: params\['0.weight'\] has dtype torch.float32"):
        fg.load_params(model, {k: v.float() for k, v in params.items()})
    with pytest.raises(ValueError, match=r"missing: \['2.bias'\]"):
        fg.load_params(model, {k: v for k, v in params.items() if k != "2.bias"})


def test_apply_grads_on_the_module_respects_frozen_layers():
    model = mlp(2, 4, 1)
    model[0].requires_grad_(False)
    f, params = fg.functionalize(model)
    frozen = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X = torch.randn(8, 2, dtype=torch.float64)
    _, grads = fg.value_and_grad(fg.losses.gradient_matching(f))(params, X, X)
    fg.apply_grads(model, grads)
    opt.step()
    assert torch.equal(model[0].weight, frozen) and model[0].weight.grad is None
    assert torch.equal(params["2.weight"], model[2].weight.detach())  # the alias saw the step
    model.float()  # the link is broken now: a clear error, not a silent no-op
    with pytest.raises(ValueError, match="call functionalize again"):
        fg.apply_grads(model, grads)


def test_value_and_grad_without_checks_can_be_vmapped():
    loss = lambda p, x: (p["w"] * x).sum() ** 2  # noqa: E731
    params = {"w": torch.ones(3)}
    xs = torch.randn(4, 3)
    per_example = torch.func.vmap(fg.value_and_grad(loss, check=False), in_dims=(None, 0))(params, xs)
    for i in range(4):
        v, g = fg.value_and_grad(loss)(params, xs[i])
        assert_close(per_example[0][i], v)
        assert_close(per_example[1]["w"][i], g["w"])


def test_grad_beside_value_and_grad():
    loss = lambda p, x: ((p["w"] * x) ** 2).sum()  # noqa: E731
    params, x = {"w": torch.tensor([1.0, 2.0])}, torch.tensor([3.0, 4.0])
    assert_close(fg.grad(loss)(params, x)["w"], fg.value_and_grad(loss)(params, x)[1]["w"])
    g, aux = fg.grad(lambda p, x: (loss(p, x), x.sum()), has_aux=True)(params, x)
    assert_close(aux, torch.tensor(7.0))
    assert set(g) == {"w"}
    assert_close(g["w"], 2 * params["w"] * x**2)


def test_compilation_is_logged_with_its_duration(caplog):
    f, params = fg.functionalize(mlp(2, 4, 1, dtype=torch.float32))
    step = fg.value_and_grad(fg.losses.gradient_matching(f), compile={"backend": "eager"})
    X = torch.randn(8, 2)
    with caplog.at_level(logging.INFO, logger="functional_grads"):
        step(params, X, X)
        step(params, X, X)
    messages = [r.getMessage() for r in caplog.records if r.name == "functional_grads"]
    assert len(messages) == 2 and "compiling" in messages[0] and "compiled in" in messages[1]


def test_robust_accuracy_over_epsilons():
    torch.manual_seed(0)
    clf, params = fg.functionalize(nn.Sequential(nn.Linear(2, 2)).double())
    X = torch.randn(64, 2, dtype=torch.float64)
    labels = clf(params, X).argmax(1)
    ce = lambda out, y: nn.functional.cross_entropy(out, y)  # noqa: E731
    acc = fg.robust_accuracy(clf, params, X, labels, loss_fn=ce, epsilons=[0.0, 0.1, 10.0])
    assert acc[0] == 1.0 and acc[0] >= acc[1] >= acc[2] and acc[2] < 0.1


def test_missing_batch_dimension_says_so():
    f, params = fg.functionalize(mlp(3, 4, 1))
    with pytest.raises(ValueError, match=r"leading dimension is not the batch.*X\[None\]"):
        fg.input_grad(f)(params, torch.randn(3, dtype=torch.float64))
