"""The attacks' contract: Attack's settings, every option of perturb/fgsm/pgd/robust_accuracy
reaching the loop, the random starts' laws, and their errors read whole."""

import math

import pytest
import torch

import functional_grads as fg

F64 = torch.float64
MSE = lambda out, y: ((out - y) ** 2).sum()  # noqa: E731


def _setup(calls=None):
    params = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64)}

    def f(p, x, *conditions):
        if calls is not None:
            calls.append(x.shape)
        return torch.tanh(p["w"] * x + sum(conditions))

    X = torch.linspace(-1, 1, 18, dtype=F64).reshape(6, 3)
    return f, params, X, torch.zeros(6, 3, dtype=F64)


def _flat(p, x):  # a loss with zero input gradient: an attack then returns its (clipped) random start
    return p["w"] * 0.0 * x


# --- Attack's settings ------------------------------------------------------------------------

def test_the_default_step_size_is_eps_for_one_step_else_madrys():
    assert fg.Attack(eps=0.1).step_size == 0.1
    assert fg.Attack(eps=0.1, steps=2).step_size == pytest.approx(0.125)
    assert fg.Attack(eps=0.1, steps=4).step_size == pytest.approx(0.0625)
    assert fg.Attack(eps=0.1, steps=4, step_size=0.3).step_size == 0.3


def test_legal_settings_are_kept():
    attack = fg.Attack(eps=0.1, norm="l2", random_start="volume", clip_min=-2.0, clip_max=-1.0)
    assert (attack.norm, attack.random_start, attack.clip_min, attack.clip_max) == ("l2", "volume", -2.0, -1.0)
    assert fg.Attack(eps=0.1, clip_min=0.5, clip_max=0.5).clip_max == 0.5  # an empty range is not refused


@pytest.mark.parametrize("settings, error, message", [
    (dict(step_size=-1.0), ValueError, r"^Attack: step_size must be a non-negative number \(finite\) or None, got -1\.0\.$"),
    (dict(clip_min=math.nan), ValueError, r"^Attack: clip_min must be a number \(finite\) or None, got nan\.$"),
    (dict(clip_max="1"), ValueError, r"^Attack: clip_max must be a number \(finite\) or None, got '1'\.$"),
    (dict(random_start="ball"), ValueError, r"^Attack: random_start must be False, True or 'volume', got 'ball'\.$"),
    (dict(clip_min=1.0, clip_max=0.0), ValueError, r"^Attack: clip_min \(1\.0\) must not exceed clip_max \(0\.0\)\.$"),
], ids=["step_size", "clip_min", "clip_max", "random_start", "empty_range"])
def test_bad_settings_are_refused_by_message(settings, error, message):
    with pytest.raises(error, match=message):
        fg.Attack(eps=0.1, **settings)


def test_the_function_called_is_named_once_even_when_the_value_reads_like_a_name():
    f, params, X, Y = _setup()
    with pytest.raises(ValueError, match=r"^pgd: random_start must be False, True or 'volume', got 'Attack:'\.$"):
        fg.pgd(f, params, X, Y, loss_fn=MSE, eps=0.1, random_start="Attack:")


# --- perturb: errors and options --------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda f, p, X, Y: fg.perturb(f, MSE, 0.1), TypeError,
     r"^perturb: attack must be a functional_grads\.Attack, got float\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1), chunk_size=0), ValueError,
     r"^perturb: chunk_size must be a positive int or None, got 0\.$"),
    (lambda f, p, X, Y: fg.perturb(f, "mse", fg.Attack(eps=0.1)), TypeError,
     r"^perturb: loss_fn must be callable, got str\.$"),
    (lambda f, p, X, Y: fg.perturb(1.0, MSE, fg.Attack(eps=0.1)), TypeError, r"^perturb: f must be callable, got float\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1), in_dims=(0, 0, 0)), ValueError,
     r"^perturb: in_dims\[0\] must be None: the params \(argument 0\) are shared by all samples; got "
     r"in_dims=\(0, 0, 0\)\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1), in_dims=(None, 0, 0))(p, X, Y), TypeError,
     r"^perturb: expected the arguments \(params, X, c1, Y\): 1 conditioning argument\(s\) for f "
     r"\(in_dims=\(None, 0, 0\)\) then 1 target\(s\) after X; got 1 argument\(s\) after X\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1))(p, X.long(), Y), TypeError,
     r"^perturb: X \(argument 1\) must be floating point"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1))(p, X, [0.0] * 6), ValueError,
     r"^perturb: Y must hold one target per sample, leading dimension 6; got list\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1))(p, X, torch.tensor(0.0, dtype=F64)), ValueError,
     r"^perturb: Y must hold one target per sample, leading dimension 6; got \[\]\.$"),
    (lambda f, p, X, Y: fg.perturb(f, MSE, fg.Attack(eps=0.1))(p, X, Y[:2]), ValueError,
     r"^perturb: Y must hold one target per sample, leading dimension 6; got \[2, 3\]\.$"),
], ids=["attack", "chunk_size", "loss_fn", "f", "in_dims", "conditions", "integer_X", "list_Y", "scalar_Y", "short_Y"])
def test_perturb_refuses_by_message(call, error, message):
    f, params, X, Y = _setup()
    with pytest.raises(error, match=message):
        call(f, params, X, Y)


def test_a_shared_condition_is_passed_on_unmapped():
    f, params, X, Y = _setup()
    shift = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    got = fg.perturb(f, MSE, fg.Attack(eps=0.1), in_dims=(None, 0, None))(params, X, shift, Y)
    g = lambda p, x: f(p, x, shift)  # noqa: E731
    torch.testing.assert_close(got, fg.perturb(g, MSE, fg.Attack(eps=0.1))(params, X, Y), rtol=0, atol=0)


def test_perturb_passes_on_chunk_size_generator_and_randomness():
    counts = {}
    for chunk in (None, 2):
        calls = []
        f, params, X, Y = _setup(calls)
        fg.perturb(f, MSE, fg.Attack(eps=0.1, steps=2), chunk_size=chunk)(params, X, Y)
        counts[chunk] = len(calls)
    assert counts == {None: 2, 2: 6}  # one call per step, or one per chunk of 2 of the 6 samples

    f, params, X, Y = _setup()
    for norm in ("linf", "l2"):
        attack = fg.Attack(eps=0.1, steps=2, step_size=0.01, norm=norm, random_start=True)
        runs = []
        for global_seed in (0, 1):
            torch.manual_seed(global_seed)  # must not matter: the generator draws
            runs.append(fg.perturb(f, MSE, attack, generator=torch.Generator().manual_seed(5))(params, X, Y))
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        assert (runs[0] - X).abs().max() < 0.1 - 1e-3  # inside the ball: the start shows

    noisy = lambda p, x: p["w"] * x + 1e-3 * torch.rand_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"^perturb: f calls a random operation"):  # randomness="error" by default
        fg.perturb(noisy, MSE, fg.Attack(eps=0.1))(params, X, Y + 10)
    got = fg.perturb(noisy, MSE, fg.Attack(eps=0.1), randomness="different")(params, X, Y + 10)
    torch.testing.assert_close(got, X - 0.1 * torch.sign(params["w"]))


def test_fgsm_and_pgd_pass_on_their_options():
    calls = []
    f, params, X, Y = _setup(calls)
    fg.pgd(f, params, X, Y, loss_fn=MSE, eps=0.1)
    assert len(calls) == 10  # the default number of steps

    noisy = lambda p, x: p["w"] * x + 1e-3 * torch.rand_like(x)  # noqa: E731
    want = X - 0.1 * torch.sign(params["w"])  # moves up the loss, away from Y = X + 10
    torch.testing.assert_close(fg.fgsm(noisy, params, X, X + 10, loss_fn=MSE, eps=0.1, randomness="different"), want)
    torch.testing.assert_close(fg.pgd(noisy, params, X, X + 10, loss_fn=MSE, eps=0.1, steps=1, randomness="different"),
                               want)

    linear = lambda p, x: p["w"] * x  # noqa: E731
    up = fg.pgd(linear, params, X, X + 10, loss_fn=MSE, eps=0.1, steps=2)
    down = fg.pgd(linear, params, X, X + 10, loss_fn=MSE, eps=0.1, steps=2, targeted=True)
    torch.testing.assert_close(up, X - 0.1 * torch.sign(params["w"]))
    torch.testing.assert_close(down, X + 0.1 * torch.sign(params["w"]))
    clipped = fg.pgd(linear, params, X, X + 10, loss_fn=MSE, eps=0.1, steps=2, clip_min=-0.5, clip_max=0.5)
    torch.testing.assert_close(clipped, up.clamp(-0.5, 0.5))

    starts = [fg.pgd(_flat, params, X, Y, loss_fn=MSE, eps=0.1, steps=1, random_start=True,
                     generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(starts[0], starts[1], rtol=0, atol=0)
    assert not torch.equal(starts[0], X)  # the start was drawn, by the generator given


@pytest.mark.parametrize("bound", ["clip_min", "clip_max"])
def test_one_sided_clipping(bound):
    f, params, X, Y = _setup()
    linear = lambda p, x: p["w"] * x  # noqa: E731
    free = fg.fgsm(linear, params, X, X + 10, loss_fn=MSE, eps=0.3)
    got = fg.fgsm(linear, params, X, X + 10, loss_fn=MSE, eps=0.3, **{bound: 0.2})
    want = free.clamp_min(0.2) if bound == "clip_min" else free.clamp_max(0.2)
    torch.testing.assert_close(got, want)
    assert (got - free).abs().max() > 0.1


def test_the_attacks_detach_their_result_and_leave_params_alone():
    f, params, X, Y = _setup()
    leaf = {"w": params["w"].clone().requires_grad_()}
    for adv in (fg.fgsm(f, leaf, X.requires_grad_(), Y, loss_fn=MSE, eps=0.1),
                fg.pgd(f, leaf, X, Y, loss_fn=MSE, eps=0.1, steps=2)):
        assert not adv.requires_grad
    assert leaf["w"].grad is None and X.grad is None


# --- random starts ----------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_random_start_is_clipped_to_the_valid_range(norm):
    params = {"w": torch.ones(3, dtype=F64)}
    X = torch.full((500, 3), 0.95, dtype=F64)
    attack = fg.Attack(eps=0.2, norm=norm, step_size=0.0, random_start=True, clip_min=0.0, clip_max=1.0)
    adv = fg.perturb(_flat, MSE, attack, generator=torch.Generator().manual_seed(0))(params, X, X)
    assert adv.max() == 1.0 and adv.min() < 0.95 - 0.05  # clipped above, free below


def test_the_linf_start_is_uniform_in_the_cube():
    params = {"w": torch.ones(4, dtype=F64)}
    X = torch.zeros(4000, 4, dtype=F64)
    attack = fg.Attack(eps=0.5, step_size=0.0, random_start=True)
    start = fg.perturb(_flat, MSE, attack, generator=torch.Generator().manual_seed(0))(params, X, X)
    assert start.abs().max() <= 0.5
    assert abs(start.mean()) < 0.01 and abs(start.var() - 0.5**2 / 3) < 0.003  # U(-eps, eps): mean 0, var eps^2/3


@pytest.mark.parametrize("random_start, mean_radius", [(True, 1 / 2), ("volume", 4 / 5)], ids=["radius", "volume"])
def test_the_l2_start_has_the_documented_radius_law(random_start, mean_radius):
    params = {"w": torch.ones(4, dtype=F64)}
    X = torch.zeros(4000, 4, dtype=F64)
    attack = fg.Attack(eps=0.5, norm="l2", step_size=0.0, random_start=random_start)
    start = fg.perturb(_flat, MSE, attack, generator=torch.Generator().manual_seed(0))(params, X, X)
    radius = start.norm(dim=1) / 0.5
    assert radius.max() <= 1.0 + 1e-12
    assert abs(radius.mean() - mean_radius) < 0.02  # uniform radius: 1/2; uniform volume in 4-d: 4/5


# --- robust_accuracy --------------------------------------------------------------------------

def _line(n=10):
    """A per-sample 1-d classifier ``x -> [x, -x]``: class 0 iff x > 0, samples at distances 0.1..1."""
    f = lambda p, x: torch.cat([x * p, -x * p])  # noqa: E731
    X = torch.linspace(0.1, 1.0, n, dtype=F64)[:, None]
    return f, torch.tensor(1.0, dtype=F64), X, torch.zeros(n, dtype=torch.long)


CE = lambda out, y: torch.nn.functional.cross_entropy(out, y)  # noqa: E731


def test_robust_accuracy_evaluates_f_per_sample():
    per_sample_only = lambda p, x: torch.stack([x.sum(), -x.sum()]) * p  # noqa: E731  sums over all of x
    X = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    acc = fg.robust_accuracy(per_sample_only, torch.tensor(1.0, dtype=F64), X, torch.tensor([0, 1]),
                             loss_fn=CE, epsilons=[0.0])
    assert acc.tolist() == [1.0]


def test_robust_accuracy_gives_a_module_its_batch_dimension():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 3)).double()
    f, params = fg.functionalize(model)
    X = torch.randn(6, 1, 4, 4, dtype=F64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    acc = fg.robust_accuracy(f, params, X, labels, loss_fn=CE, epsilons=[0.0])
    assert acc.item() == (model(X).argmax(1) == labels).to(F64).mean().item()


def test_robust_accuracy_passes_randomness_to_the_attack_and_the_predictions():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).double()
    f, params = fg.functionalize(model)
    X, labels = torch.randn(6, 3, dtype=F64), torch.tensor([0, 1, 0, 1, 0, 1])
    for epsilons in ([0.0], [0.1]):  # the predictions alone; the attack first
        with pytest.raises(ValueError, match=r"^robust_accuracy: submodule '1' \(Dropout\) is in training mode"):
            fg.robust_accuracy(f, params, X, labels, loss_fn=CE, epsilons=epsilons)
        fg.robust_accuracy(f, params, X, labels, loss_fn=CE, epsilons=epsilons, randomness="different")  # runs


def test_robust_accuracy_is_the_fraction_beyond_each_radius():
    f, p, X, labels = _line()
    # L-inf PGD moves each sample by eps towards the boundary: those within eps flip; the
    # sample at distance 1 lands on the boundary at eps = 1, where the tie goes to class 0.
    acc = fg.robust_accuracy(f, p, X, labels, loss_fn=CE, epsilons=[0.0, 0.35, 1.0, 2.0])
    torch.testing.assert_close(acc, torch.tensor([1.0, 0.7, 0.1, 0.0], dtype=F64))


def test_robust_accuracy_runs_ten_steps_by_default():
    calls = []
    f, p, X, labels = _line()

    def counted(p, x):
        calls.append(1)
        return f(p, x)

    fg.robust_accuracy(counted, p, X, labels, loss_fn=CE, epsilons=[0.5])
    assert len(calls) == 10 + 1  # ten attack steps, one evaluation


def test_robust_accuracy_keeps_the_attacks_step_ratio():
    f, p, X, labels = _line()
    attack = fg.Attack(eps=0.2, steps=2, step_size=0.025)  # two steps of eps / 8: moves eps / 4
    acc = fg.robust_accuracy(f, p, X, labels, loss_fn=CE, epsilons=[1.8], attack=attack)
    torch.testing.assert_close(acc, torch.tensor([0.6], dtype=F64))  # moved 0.45: 0.1 to 0.4 flip


def test_robust_accuracy_with_a_zero_radius_attack_takes_the_default_step():
    f, p, X, labels = _line()
    template = fg.Attack(eps=0.0, steps=10)
    acc = fg.robust_accuracy(f, p, X, labels, loss_fn=CE, epsilons=[0.35, 1.8], attack=template)
    torch.testing.assert_close(acc, fg.robust_accuracy(f, p, X, labels, loss_fn=CE, epsilons=[0.35, 1.8]))


def test_robust_accuracy_draws_its_start_from_the_generator():
    f, p, X, labels = _line(200)
    attack = fg.Attack(eps=1.0, step_size=0.0, random_start=True)  # the start alone decides
    torch.manual_seed(7)
    acc = fg.robust_accuracy(f, p, X, labels, loss_fn=CE, epsilons=[1.0], attack=attack,
                             generator=torch.Generator().manual_seed(0))
    adv = fg.pgd(f, p, X, labels, loss_fn=CE, eps=1.0, steps=1, step_size=0.0, random_start=True,
                 generator=torch.Generator().manual_seed(0))
    assert acc.item() == (adv[:, 0] > 0).to(F64).mean().item()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(attack="pgd"), TypeError, r"^robust_accuracy: attack must be a functional_grads\.Attack, got str\.$"),
    (dict(epsilons="0.1"), ValueError,
     r"^robust_accuracy: epsilons must be a non-empty sequence of radii \(0 gives the clean accuracy\), got '0\.1'\.$"),
    (dict(epsilons=0.1), ValueError,
     r"^robust_accuracy: epsilons must be a non-empty sequence of radii \(0 gives the clean accuracy\), got 0\.1\.$"),
    (dict(epsilons=[0.1, -1.0]), ValueError,
     r"^robust_accuracy: each of epsilons must be a non-negative number \(finite\), got -1\.0\.$"),
    (dict(loss_fn=lambda out, y: out), ValueError,  # not a scalar: the attack inside refuses, naming this API
     r"^robust_accuracy: f must return one scalar per sample"),
], ids=["attack", "string", "number", "negative", "named_inside"])
def test_robust_accuracy_refuses_by_message(kwargs, error, message):
    f, p, X, labels = _line()
    kwargs = {"loss_fn": CE, "epsilons": [0.1], **kwargs}
    with pytest.raises(error, match=message):
        fg.robust_accuracy(f, p, X, labels, **kwargs)
