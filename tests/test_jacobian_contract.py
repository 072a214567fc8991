"""input_jacobian's mode dispatch, observed through functions differentiable in one mode
only; has_aux in both modes; input_jacobian's and divergence's refusals by whole message."""

import pytest
import torch

import functional_grads as fg

F64 = torch.float64


class _Double(torch.autograd.Function):
    """``x -> 2 x``; the subclasses give it a rule for one AD mode only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass


class RevOnly(_Double):
    """A backward, no forward-mode rule."""

    @staticmethod
    def backward(ctx, g):
        return 2 * g


class FwdOnly(_Double):
    """A forward-mode rule, and a backward that refuses."""

    @staticmethod
    def jvp(ctx, t):
        return 2 * t

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("reverse mode used")


def _f(op, d_out):
    """``[D] -> [d_out]``: the op, then a fixed linear map (so the Jacobian is 2 M)."""
    return lambda M, x: M @ op.apply(x)


def _run(op, mode, D, d_out):
    M = torch.arange(d_out * D, dtype=F64).reshape(d_out, D)
    J = fg.input_jacobian(_f(op, d_out), mode=mode)(M, torch.ones(4, D, dtype=F64))
    torch.testing.assert_close(J, (2 * M).expand(4, d_out, D))


@pytest.mark.parametrize("mode, works, fails", [("fwd", FwdOnly, RevOnly), ("rev", RevOnly, FwdOnly)])
def test_an_explicit_mode_is_used(mode, works, fails):
    _run(works, mode, 2, 5)
    with pytest.raises(Exception):  # noqa: B017 - torch's own error for the missing rule
        _run(fails, mode, 2, 5)


@pytest.mark.parametrize("D, d_out, works, fails", [(2, 5, FwdOnly, RevOnly), (5, 2, RevOnly, FwdOnly),
                                                     (3, 3, RevOnly, FwdOnly)],
                         ids=["wide_output_fwd", "narrow_output_rev", "square_rev"])
def test_auto_takes_forward_mode_only_for_fewer_inputs_than_outputs(D, d_out, works, fails):
    _run(works, "auto", D, d_out)
    with pytest.raises(Exception):  # noqa: B017
        _run(fails, "auto", D, d_out)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_has_aux_returns_the_aux_in_both_modes(mode):
    M = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=F64)
    X = torch.randn(4, 2, dtype=F64)
    J, aux = fg.input_jacobian(lambda p, x: (torch.tanh(p @ x), x.sum()), mode=mode, has_aux=True)(M, X)
    want = fg.input_jacobian(lambda p, x: torch.tanh(p @ x), mode="rev")(M, X)
    torch.testing.assert_close(J, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(aux, X.sum(1), rtol=0, atol=0)


_f2 = lambda p, x: p * x  # noqa: E731
REFUSALS = [
    (lambda: fg.input_jacobian(3), TypeError, r"input_jacobian: f must be callable, got int\."),
    (lambda: fg.input_jacobian(_f2, chunk_size=0), ValueError,
     r"input_jacobian: chunk_size must be a positive int or None, got 0\."),
    (lambda: fg.input_jacobian(_f2, mode="x"), ValueError,
     r"input_jacobian: mode must be one of \('auto', 'rev', 'fwd'\), got 'x'\."),
    (lambda: fg.input_jacobian(_f2, in_dims=(None,)), ValueError,
     r"input_jacobian: in_dims\[1\] must be 0: the argument differentiated \(argnums=1\)"),
    (lambda: fg.input_jacobian(lambda p, x: [x])(1.0, torch.ones(2, 2)), TypeError,
     r"input_jacobian: f must return a tensor, got list\. With an auxiliary output, pass has_aux=True and return "
     r"\(output, aux\)\."),
    (lambda: fg.input_jacobian(_f2, has_aux=True)(1.0, torch.ones(2, 2)), TypeError,
     r"input_jacobian: with has_aux=True, f must return a pair \(output, aux\), got Tensor\."),
    (lambda: fg.divergence(3), TypeError, r"divergence: f must be callable, got int\."),
    (lambda: fg.divergence(_f2, method="x"), ValueError,
     r"divergence: method must be one of \('auto', 'jacobian', 'forward', 'hutchinson'\), got 'x'\."),
    (lambda: fg.divergence(_f2, num_samples=0), ValueError, r"divergence: num_samples must be a positive int, got 0\."),
    (lambda: fg.divergence(_f2, num_samples=1.5), ValueError,
     r"divergence: num_samples must be a positive int, got 1\.5\."),
    (lambda: fg.divergence(_f2, probe="x"), ValueError,
     r"divergence: probe must be one of \('rademacher', 'gaussian', 'sphere'\), got 'x'\."),
]


@pytest.mark.parametrize("case", range(len(REFUSALS)))
def test_refusals_by_whole_message(case):
    build, kind, message = REFUSALS[case]
    with pytest.raises(kind, match="^" + message):
        build()


def test_the_hutchinson_divergence_draws_one_probe_per_sample_by_default():
    A = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.0, 1.0, 4.0]], dtype=F64)
    f = lambda p, x: p @ x  # noqa: E731  divergence tr(A) = 4 exactly; one probe gives v^T A v
    X = torch.zeros(6, 3, dtype=F64)
    default = fg.divergence(f, method="hutchinson", generator=torch.Generator().manual_seed(0))(A, X)
    one = fg.divergence(f, method="hutchinson", num_samples=1, generator=torch.Generator().manual_seed(0))(A, X)
    torch.testing.assert_close(default, one, rtol=0, atol=0)


def _counting(calls):
    def field(p, x):
        calls.append(1)
        return torch.tanh(p @ x)
    return field


def test_chunk_size_reaches_the_jacobian_and_the_forward_divergence(monkeypatch):
    from functional_grads.operators import _taylor

    A = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.0, 1.0, 4.0]], dtype=F64)
    X = torch.randn(6, 3, dtype=F64)
    counts, outs = {}, {}
    for chunk in (None, 2):
        calls = []
        outs[chunk] = fg.input_jacobian(_counting(calls), chunk_size=chunk)(A, X)
        counts[chunk] = len(calls)
    torch.testing.assert_close(outs[2], outs[None], rtol=1e-12, atol=1e-12)
    assert counts[2] > counts[None]  # f runs once per chunk of 2 samples
    seen, real = [], _taylor.Engine.__call__
    monkeypatch.setattr(_taylor.Engine, "__call__", lambda self, args, *a: seen.append(args[1].shape[0]) or real(self, args, *a))
    f = lambda p, x: p @ torch.tanh(x)  # noqa: E731
    whole = fg.divergence(f, method="forward")(A, X)
    torch.testing.assert_close(fg.divergence(f, method="forward", chunk_size=4)(A, X), whole, rtol=1e-12, atol=1e-12)
    assert seen == [6, 4, 2]  # the Taylor engine runs once per chunk


def test_divergence_passes_argnums_and_mode_on_to_the_jacobian():
    A = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=F64)
    X = torch.randn(4, 2, dtype=F64)
    got = fg.divergence(lambda x, p: p @ torch.tanh(x), argnums=0, method="jacobian")(X, A)
    want = fg.divergence(lambda p, x: p @ torch.tanh(x), method="jacobian")(A, X)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    field = lambda p, x: p @ FwdOnly.apply(x)  # noqa: E731
    torch.testing.assert_close(fg.divergence(field, method="jacobian", mode="fwd")(A, X),
                               torch.full((4,), 2 * float(A.trace()), dtype=F64), rtol=1e-12, atol=1e-12)
    with pytest.raises(Exception):  # noqa: B017 - reverse mode is refused by the Function
        fg.divergence(field, method="jacobian", mode="rev")(A, X)


def test_rademacher_probes_give_the_exact_trace_of_a_diagonal_jacobian():
    # v^T diag(d) v = sum d_i v_i^2 = tr for +-1 entries: exact, unlike Gaussian probes.
    d = torch.tensor([1.0, -2.0, 3.5], dtype=F64)
    X = torch.randn(5, 3, dtype=F64)
    got = fg.divergence(lambda p, x: p * x, method="hutchinson", generator=torch.Generator().manual_seed(0))(d, X)
    torch.testing.assert_close(got, torch.full((5,), float(d.sum()), dtype=F64), rtol=1e-14, atol=1e-14)


def test_has_aux_in_auto_mode_and_a_dict_aux():
    M = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=F64)
    X = torch.randn(4, 2, dtype=F64)
    J, aux = fg.input_jacobian(lambda p, x: (torch.tanh(p @ x), {"s": x.sum()}), has_aux=True)(M, X)
    torch.testing.assert_close(J, fg.input_jacobian(lambda p, x: torch.tanh(p @ x))(M, X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(aux["s"], X.sum(1), rtol=0, atol=0)


def test_a_shared_argument_shaped_like_the_batch_is_refused_naming_the_api():
    X = torch.randn(3, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"^input_jacobian: argument 0 has shape \[3, 3\], one row per sample like X"):
        fg.input_jacobian(lambda p, x: p @ x)(torch.eye(3, dtype=F64), X)


@pytest.mark.parametrize("api", [fg.input_grad, fg.input_jacobian], ids=["input_grad", "input_jacobian"])
def test_a_per_sample_aux_must_hold_tensors(api):
    name = api.__name__
    f = lambda p, x: ((p * x).sum(), {"n": 1.0, "x": x})  # noqa: E731
    with pytest.raises(TypeError, match=rf"^{name}: with has_aux=True, the aux must hold only tensors, since f runs "
                                        r"one sample at a time and the aux is mapped too; got float\. Return e\.g\. "
                                        r"torch\.as_tensor\(value\)\.$"):
        api(f, has_aux=True)(torch.ones(2, dtype=F64), torch.ones(3, 2, dtype=F64))
    ok = lambda p, x: ((p * x).sum(), {"n": torch.as_tensor(1.0), "x": x})  # noqa: E731
    _, aux = api(ok, has_aux=True)(torch.ones(2, dtype=F64), torch.ones(3, 2, dtype=F64))
    torch.testing.assert_close(aux["n"], torch.ones(3))
