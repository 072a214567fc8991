"""input_hessian / hvp: options checked when built and passed on, errors naming the API."""

import pytest
import torch

import functional_grads as fg

F64 = torch.float64
APIS = {"input_hessian": fg.input_hessian, "hvp": fg.hvp}


def _quadratic(calls=None):
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=F64)

    def f(p, x):
        if calls is not None:
            calls.append(1)
        return p * (x @ A @ x) / 2  # Hessian p * A

    return f, A


@pytest.mark.parametrize("name", APIS)
def test_bad_options_fail_when_built_naming_the_api(name):
    f, _ = _quadratic()
    api = APIS[name]
    with pytest.raises(TypeError, match=rf"^{name}: f must be callable, got int\.$"):
        api(3)
    with pytest.raises(ValueError, match=rf"^{name}: chunk_size must be a positive int or None, got 0\.$"):
        api(f, chunk_size=0)
    with pytest.raises(ValueError, match=rf"^{name}: in_dims\[1\] must be 0: the argument differentiated "
                                         r"\(argnums=1\) is the batch X"):
        api(f, in_dims=(None,))


def test_a_vector_output_is_refused_naming_the_api():
    X = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"^hvp: f must return one scalar per sample \(shape \[\] or \[1\]\), "
                                         r"but its per-sample output has shape \[2\]"):
        fg.hvp(lambda p, x: p * x)(1.0, X, X)


def test_input_hessian_of_a_vector_output_is_one_hessian_per_component():
    f, A = _quadratic()
    X = torch.randn(3, 2, dtype=F64)
    H = fg.input_hessian(lambda p, x: torch.stack([f(p, x), f(p, x) ** 2]))(torch.tensor(2.0, dtype=F64), X)
    assert H.shape == (3, 2, 2, 2)
    torch.testing.assert_close(H[:, 0], (2 * A).expand(3, 2, 2), rtol=1e-12, atol=1e-12)
    g = (2 * X @ A)[:, :, None]  # d(f^2) = 2 f grad f;  d2(f^2) = 2 grad f grad f^T + 2 f H
    want = 2 * g * g.transpose(1, 2) + 2 * (X * (X @ A)).sum(1)[:, None, None] * 2 * A
    torch.testing.assert_close(H[:, 1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", APIS)
def test_chunk_size_is_passed_on(name):
    counts = {}
    for chunk in (None, 2):
        calls = []
        f, A = _quadratic(calls)
        X = torch.randn(6, 2, dtype=F64)
        extra = [torch.ones(6, 2, dtype=F64)] if name == "hvp" else []
        out = APIS[name](f, chunk_size=chunk)(torch.tensor(2.0, dtype=F64), X, *extra)
        want = (2 * A).expand(6, 2, 2) if name == "input_hessian" else (2 * A @ torch.ones(2, dtype=F64)).expand(6, 2)
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
        counts[chunk] = len(calls)
    assert counts[2] == 3 * counts[None]


def test_hvp_of_a_function_of_x_alone():
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=F64)
    X, V = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    out = fg.hvp(lambda x: x @ A @ x / 2, argnums=0)(X, V)  # called with exactly (X, V)
    torch.testing.assert_close(out, V @ A, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match=r"^hvp: call as hvp\(f\)\(\*args, V\) with V shaped like X\.$"):
        fg.hvp(lambda x: x @ A @ x / 2, argnums=0)(X)


def test_hvp_names_a_v_of_the_wrong_kind_or_shape():
    f, _ = _quadratic()
    X = torch.ones(3, 2, dtype=F64)
    step = fg.hvp(f)
    with pytest.raises(ValueError, match=r"^hvp: V \(last argument\) must be shaped like X \[3, 2\], one vector per "
                                         r"sample; got list\.$"):
        step(1.0, X, [[1.0, 2.0]] * 3)
    with pytest.raises(ValueError, match=r"^hvp: V \(last argument\) must be shaped like X \[3, 2\], one vector per "
                                         r"sample; got \[3, 1\]\.$"):
        step(1.0, X, torch.ones(3, 1, dtype=F64))


def test_hvp_names_itself_for_a_bad_batch_and_a_module_that_mixes_samples():
    f, _ = _quadratic()
    with pytest.raises(TypeError, match=r"^hvp: X \(argument 1\) must be a tensor \[B, \*x_shape\], got str\.$"):
        fg.hvp(f)(1.0, "x", torch.ones(2, dtype=F64))
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 1)).double()
    g, params = fg.functionalize(model)
    X = torch.ones(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"^hvp: submodule '1' \(BatchNorm1d\) is in training mode"):
        fg.hvp(g)(params, X, X)
