"""Every gradient transformation against its formula written out by hand, in float64, over
a few steps; and every refusal by its whole message."""

import math

import pytest
import torch

from functional_grads import optim

F64 = torch.float64


def _tree(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, dtype=F64, generator=g), "b": torch.randn(2, 2, dtype=F64, generator=g)}


def _run(opt, steps=3, params=None):
    """The updates of ``steps`` calls, with grads _tree(1), _tree(2), ..."""
    params = params if params is not None else _tree(0)
    state, out = opt.init(params), []
    for k in range(1, steps + 1):
        updates, state = opt.update(_tree(k), state, params)
        out.append(updates)
    return out


def _close(got, want):
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-13, atol=1e-15)


def test_scale_and_a_constant_learning_rate():
    for k, u in enumerate(_run(optim.scale(-2.5)), 1):
        _close(u, {n: -2.5 * g for n, g in _tree(k).items()})
    for k, u in enumerate(_run(optim.scale_by_learning_rate(0.3)), 1):
        _close(u, {n: -0.3 * g for n, g in _tree(k).items()})


def test_a_learning_rate_schedule_sees_the_step_count():
    seen = []

    def schedule(step):
        seen.append(int(step))
        return 0.1 / (1 + step)

    for k, u in enumerate(_run(optim.scale_by_learning_rate(schedule)), 1):
        rate = 0.1 / (1 + torch.tensor(k - 1))  # as the schedule computes it (a float32 tensor)
        _close(u, {n: -rate * g for n, g in _tree(k).items()})
    assert seen == [0, 1, 2]


def test_add_decayed_weights():
    p = _tree(0)
    for k, u in enumerate(_run(optim.add_decayed_weights(0.25), params=p), 1):
        _close(u, {n: g + 0.25 * p[n] for n, g in _tree(k).items()})


def test_clip_by_global_norm_scales_down_only_and_uses_psum():
    big = {n: 10 * g for n, g in _tree(1).items()}
    norm = math.sqrt(sum(float((g**2).sum()) for g in big.values()))
    clip = optim.clip_by_global_norm(1.0)
    out, _ = clip.update(big, clip.init(big))
    _close(out, {n: g / (norm + 1e-6) for n, g in big.items()})
    small = {n: g * (0.5 / norm) for n, g in big.items()}  # norm 0.5: unchanged
    _close(clip.update(small, clip.init(small))[0], small)
    doubled = clip.update(big, clip.init(big), psum=lambda s: 4 * s)[0]  # other shards: total norm 2x
    _close(doubled, {n: g / (2 * norm + 1e-6) for n, g in big.items()})
    assert clip.update({}, clip.init({}))[0] == {}


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
def test_trace_is_torchs_momentum_buffer(nesterov):
    buf = {n: torch.zeros_like(g) for n, g in _tree(0).items()}
    for k, u in enumerate(_run(optim.trace(0.9, nesterov=nesterov)), 1):
        g = _tree(k)
        buf = {n: 0.9 * buf[n] + g[n] for n in g}
        _close(u, {n: g[n] + 0.9 * buf[n] for n in g} if nesterov else buf)


def test_scale_by_adam_is_the_bias_corrected_ratio():
    b1, b2, eps = 0.8, 0.95, 1e-3
    m = {n: torch.zeros_like(g) for n, g in _tree(0).items()}
    v = {n: torch.zeros_like(g) for n, g in _tree(0).items()}
    for k, u in enumerate(_run(optim.scale_by_adam(b1, b2, eps)), 1):
        g = _tree(k)
        m = {n: b1 * m[n] + (1 - b1) * g[n] for n in g}
        v = {n: b2 * v[n] + (1 - b2) * g[n] ** 2 for n in g}
        _close(u, {n: (m[n] / (1 - b1**k)) / ((v[n] / (1 - b2**k)).sqrt() + eps) for n in g})


def test_sgd_and_adam_chain_the_parts():
    for k, u in enumerate(_run(optim.sgd(0.1)), 1):
        _close(u, {n: -0.1 * g for n, g in _tree(k).items()})
    mom = _run(optim.sgd(0.1, momentum=0.5))
    ref = _run(optim.chain(optim.trace(0.5), optim.scale_by_learning_rate(0.1)))
    for a, b in zip(mom, ref):
        _close(a, b)
    for a, b in zip(_run(optim.adam(0.1, betas=(0.8, 0.95), eps=1e-3)),
                    _run(optim.chain(optim.scale_by_adam(0.8, 0.95, 1e-3), optim.scale_by_learning_rate(0.1)))):
        _close(a, b)


REFUSALS = [
    (lambda: optim.scale("x"), ValueError, r"scale: factor must be a number \(finite\), got 'x'\."),
    (lambda: optim.scale_by_learning_rate(0.0), ValueError,
     r"scale_by_learning_rate: lr must be a positive number \(finite\), got 0\.0\."),
    (lambda: optim.add_decayed_weights(-1.0), ValueError,
     r"add_decayed_weights: weight_decay must be a non-negative number \(finite\), got -1\.0\."),
    (lambda: optim.clip_by_global_norm(0.0), ValueError,
     r"clip_by_global_norm: max_norm must be a positive number \(finite\), got 0\.0\."),
    (lambda: optim.trace(1.5), ValueError, r"trace: momentum must be a number \(finite\) >= 0 and <= 1, got 1\.5\."),
    (lambda: optim.trace(0.0, nesterov=True), ValueError,
     r"trace: nesterov=True needs a momentum > 0 \(as torch\.optim\.SGD requires\)\."),
    (lambda: optim.scale_by_adam(b1=1.0), ValueError, r"scale_by_adam: betas \(b1\) must be in \[0, 1\), got 1\.0\."),
    (lambda: optim.scale_by_adam(b2=1.0), ValueError, r"scale_by_adam: betas \(b2\) must be in \[0, 1\), got 1\.0\."),
    (lambda: optim.scale_by_adam(eps=-1.0), ValueError,
     r"scale_by_adam: eps must be a non-negative number \(finite\), got -1\.0\."),
    (lambda: optim.adam(0.1, betas=[0.9, 0.99]), TypeError, r"adam: betas must be a pair \(b1, b2\), got \[0\.9, 0\.99\]\."),
    (lambda: optim.add_decayed_weights(0.1).update({"w": torch.ones(1)}, ()), TypeError,
     r"add_decayed_weights: update needs params: call update\(grads, state, params\)\."),
    (lambda: optim.trace(0.9).update({"w": torch.ones(2)}, optim.trace(0.9).init({"w": torch.ones(3)})), ValueError,
     r"trace: a state leaf has shape \[3\] but its gradient has \[2\]: the state was built for other params\. "
     r"Build a new one with state = optimizer\.init\(params\)\."),
    (lambda: optim.scale_by_adam().update({"w": torch.ones(2)}, optim.scale_by_adam().init({"w": torch.ones(3)})),
     ValueError, r"scale_by_adam: a state leaf has shape \[3\] but its gradient has \[2\]"),
]


@pytest.mark.parametrize("case", range(len(REFUSALS)))
def test_refusals_by_whole_message(case):
    build, kind, message = REFUSALS[case]
    with pytest.raises(kind, match="^" + message):
        build()
