"""adversarial()'s options reach the attack and the loss, and its errors read whole."""

import pytest
import torch

import functional_grads as fg

F64 = torch.float64
MSE = lambda out, y: ((out - y) ** 2).sum()  # noqa: E731


def _setup(calls=None):
    params = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64)}

    def f(p, x):
        if calls is not None:
            calls.append(x.shape)
        return torch.tanh(p["w"] * x)

    X = torch.linspace(-1, 1, 18, dtype=F64).reshape(6, 3)
    return f, params, X, torch.zeros(6, 3, dtype=F64)


def test_bad_attacks_are_refused_by_message():
    f, *_ = _setup()
    with pytest.raises(TypeError, match=r"^adversarial: attack must be a functional_grads\.Attack, got float\.$"):
        fg.losses.adversarial(f, MSE, 0.1)
    with pytest.raises(ValueError, match=r"^adversarial: eps must be positive \(eps=0 is the plain loss: use "
                                         r"loss_fn directly\)\.$"):
        fg.losses.adversarial(f, MSE, fg.Attack(eps=0.0))


def test_the_loss_is_the_mean_over_samples_at_the_fgsm_point():
    f, params, X, Y = _setup()
    attack = fg.Attack(eps=0.1)
    X_adv = fg.perturb(f, MSE, attack)(params, X, Y)
    want = torch.stack([MSE(f(params, x), y) for x, y in zip(X_adv, Y)]).mean()
    torch.testing.assert_close(fg.losses.adversarial(f, MSE, attack)(params, X, Y), want, rtol=1e-12, atol=1e-12)


def test_the_generator_draws_the_random_start():
    f, params, X, Y = _setup()
    attack = fg.Attack(eps=0.1, steps=2, random_start=True)
    losses = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # must not matter: the generator draws
        losses.append(fg.losses.adversarial(f, MSE, attack, generator=torch.Generator().manual_seed(5))(params, X, Y))
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_chunk_size_reaches_the_attack_and_the_loss():
    counts = {}
    for chunk in (None, 2):
        calls = []
        f, params, X, Y = _setup(calls)
        fg.losses.adversarial(f, MSE, fg.Attack(eps=0.1), chunk_size=chunk)(params, X, Y)
        counts[chunk] = len(calls)
    assert counts[2] == 3 * counts[None]  # 6 samples in chunks of 2: three calls where one did


def test_randomness_reaches_the_attack_and_the_loss():
    params = {"w": torch.ones(3, dtype=F64)}
    noisy = lambda p, x: p["w"] * x + 1e-3 * torch.rand_like(x)  # noqa: E731
    X, Y = torch.zeros(4, 3, dtype=F64), torch.ones(4, 3, dtype=F64)
    value = fg.losses.adversarial(noisy, MSE, fg.Attack(eps=0.1), randomness="different")(params, X, Y)
    assert 3 * 1.1**2 * 0.9 < value.item() < 3 * 1.1**2 * 1.1


def test_errors_inside_the_attack_name_the_function_the_user_called():
    f, params, X, Y = _setup()
    vector = lambda out, y: (out - y) ** 2  # noqa: E731  not reduced to a scalar
    with pytest.raises(ValueError, match=r"^adversarial: f must return one scalar per sample \(shape \[\] or \[1\]\), "
                                         r"but its per-sample output has shape \[3\]"):
        fg.losses.adversarial(f, vector, fg.Attack(eps=0.1))(params, X, Y)
    with pytest.raises(ValueError, match=r"^fgsm: f must return one scalar per sample"):
        fg.fgsm(f, params, X, Y, loss_fn=vector, eps=0.1)
    with pytest.raises(ValueError, match=r"^pgd: f must return one scalar per sample"):
        fg.pgd(f, params, X, Y, loss_fn=vector, eps=0.1, steps=2)
    loss = fg.losses.adversarial(f, MSE, fg.Attack(eps=0.1))
    with pytest.raises(TypeError, match=r"^adversarial: expected the arguments \(params, X, Y\): 0 conditioning "
                                        r"argument\(s\) for f \(in_dims=None\) then 1 target\(s\) after X; got 0 "
                                        r"argument\(s\) after X\.$"):
        loss(params, X)
    with pytest.raises(ValueError, match=r"^adversarial: Y must hold one target per sample, leading dimension 6; "
                                         r"got \[5, 3\]\.$"):
        loss(params, X, Y[:5])


def test_a_conditional_critic_gets_its_conditions_in_the_attack_and_the_loss():
    params = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64)}
    f = lambda p, x, c: torch.tanh(p["w"] * x * c)  # noqa: E731  D(x, c)
    X = torch.linspace(-1, 1, 18, dtype=F64).reshape(6, 3)
    C = torch.linspace(0.5, 2, 6, dtype=F64)[:, None].expand(6, 3).contiguous()
    Y = torch.zeros(6, 3, dtype=F64)
    attack = fg.Attack(eps=0.1)
    losses = [fg.losses.adversarial(f, MSE, attack, in_dims=(None, 0, 0), differentiable=d)(params, X, C, Y)
              for d in (False, True)]
    want = []
    for x, c, y in zip(X, C, Y):  # FGSM by hand, one sample at a time
        x = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(MSE(f(params, x, c), y), x)
        want.append(MSE(f(params, (x + 0.1 * g.sign()).detach(), c), y))
    for loss in losses:  # the value is the same either way; only the gradient differs
        torch.testing.assert_close(loss, torch.stack(want).mean(), rtol=1e-12, atol=1e-12)
