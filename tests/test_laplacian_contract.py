"""laplacian's and derivatives' options reach every method: chunks, the default number of
draws, the probe kind, indefinite weights on both of derivatives' paths, weights of another
dtype; Hutchinson is not STDE."""

import pytest
import torch

import functional_grads as fg

F64 = torch.float64
Q = torch.tensor([[2.0, 0.5, -1.0], [0.5, 1.0, 0.3], [-1.0, 0.3, 3.0]], dtype=F64)
A = torch.tensor([[1.0, 2.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.5, 0.25]], dtype=F64)  # indefinite
X = torch.linspace(-1, 1, 12, dtype=F64).reshape(4, 3)


def quadratic(p, x):
    return 0.5 * p * (x @ Q @ x) + torch.sin(x).sum()


def _exact(weights=None):
    """tr(A H) by hand: H = p Q - diag(sin x)."""
    H = Q - torch.diag_embed(torch.sin(X))
    return torch.einsum("ij,bji->b", torch.eye(3, dtype=F64) if weights is None else weights, H)


def _counted(calls):
    def f(p, x):  # logcumsumexp has no Taylor rule: the forward methods fall back to nested reverse mode per chunk
        calls.append(1)
        return quadratic(p, x) + torch.logcumsumexp(x, 0).sin().sum()
    return f


@pytest.mark.parametrize("build", [
    lambda f, c: fg.laplacian(f, method="taylor", chunk_size=c),
    lambda f, c: fg.laplacian(f, method="hessian", chunk_size=c),
    lambda f, c: fg.laplacian(f, method="forward", chunk_size=c),
    lambda f, c: fg.derivatives(f, chunk_size=c),
], ids=["taylor", "hessian", "forward", "derivatives"])
def test_chunk_size_reaches_every_method(build):
    counts, outs = {}, {}
    for chunk in (None, 1):
        calls = []
        out = build(_counted(calls), chunk)(torch.tensor(1.0, dtype=F64), X)
        counts[chunk], outs[chunk] = len(calls), out[2] if isinstance(out, tuple) else out
    torch.testing.assert_close(outs[1], outs[None])
    assert counts[1] > counts[None]  # four chunks of one sample: f runs in each


def test_the_stochastic_defaults_draw_one_direction():
    p = torch.tensor(1.0, dtype=F64)
    for method in ("stde", "hutchinson"):
        default = fg.laplacian(quadratic, method=method, generator=torch.Generator().manual_seed(3))(p, X)
        one = fg.laplacian(quadratic, method=method, num_samples=1, generator=torch.Generator().manual_seed(3))(p, X)
        torch.testing.assert_close(default, one, rtol=0, atol=0)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_with_indefinite_weights_is_unbiased(probe):
    p = torch.tensor(1.0, dtype=F64)
    est = fg.laplacian(quadratic, method="hutchinson", weights=A, probe=probe, num_samples=20000,
                       generator=torch.Generator().manual_seed(0))(p, X)
    # A + cI (c ~ 4.3) and -c I are estimated apart: a standard error of about 0.3 per sample
    # here; a wrong sign or part would be off by 2c tr(H) > 8.
    torch.testing.assert_close(est, _exact(A), rtol=0, atol=1.0)


def test_the_probe_kind_is_used():
    p = torch.tensor(1.0, dtype=F64)
    draws = {probe: fg.laplacian(quadratic, method="hutchinson", probe=probe, num_samples=3,
                                 generator=torch.Generator().manual_seed(0))(p, X) for probe in ("gaussian", "rademacher")}
    assert not torch.allclose(draws["gaussian"], draws["rademacher"])


def test_hutchinson_is_not_stde():
    # STDE with as many draws as directions is exact; Hutchinson with three probes is not.
    p = torch.tensor(1.0, dtype=F64)
    stde = fg.laplacian(quadratic, method="stde", num_samples=3, generator=torch.Generator().manual_seed(0))(p, X)
    hutch = fg.laplacian(quadratic, method="hutchinson", num_samples=3, generator=torch.Generator().manual_seed(0))(p, X)
    torch.testing.assert_close(stde, _exact())
    assert (hutch - _exact()).abs().max() > 1e-3


@pytest.mark.parametrize("dims", [None, [0, 2]], ids=["all", "subset"])
def test_derivatives_with_indefinite_weights_equal_the_laplacian(dims):
    p = torch.tensor(1.0, dtype=F64)
    weights = A if dims is None else A[:2, :2]
    value, grad, lap = fg.derivatives(quadratic, dims=dims, weights=weights)(p, X)
    torch.testing.assert_close(lap, fg.laplacian(quadratic, dims=dims, weights=weights, method="hessian")(p, X))
    torch.testing.assert_close(grad, torch.func.vmap(torch.func.grad(quadratic, argnums=1), in_dims=(None, 0))(p, X))


def test_weights_of_another_dtype_are_cast():
    p = torch.tensor(1.0, dtype=F64)
    torch.testing.assert_close(fg.laplacian(quadratic, weights=A.float())(p, X),
                               fg.laplacian(quadratic, weights=A)(p, X), rtol=1e-6, atol=1e-6)
