"""save_compiled / load_compiled: an AOTInductor package, loaded and run in a fresh process
without torch's compiler, equal to the eager step; every call checked against the saved
signature."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import functional_grads as fg
from helpers import mlp

OPT = fg.optim.adam(1e-2)


def _setup():
    torch.manual_seed(0)
    f, params = fg.functionalize(mlp(2, 6, 2))
    return fg.losses.gradient_matching(f), params


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """One saved make_step (float64), its eager reference on two batch sizes, and the data."""
    loss, params = _setup()
    step = fg.make_step(loss, OPT)
    folder = tmp_path_factory.mktemp("saved")
    batches = {B: (torch.randn(B, 2, dtype=torch.float64), torch.randn(B, 2, dtype=torch.float64)) for B in (7, 40)}
    path = fg.save_compiled(step, folder / "train.pt2", params, OPT.init(params), *batches[7])
    torch.save({"params": params, "batches": batches,
                "want": {B: step(params, OPT.init(params), *b)[::2] for B, b in batches.items()}}, folder / "data.pt")
    return folder, path


def test_a_loaded_step_in_a_fresh_process_equals_eager_without_the_compiler(package):
    folder, path = package
    script = textwrap.dedent(f"""
        import json, sys, time
        import torch
        start = time.perf_counter()
        import functional_grads as fg
        step = fg.load_compiled({str(path)!r})
        data = torch.load({str(folder / "data.pt")!r})
        opt = fg.optim.adam(1e-2)
        gaps = []
        for B, batch in data["batches"].items():
            params, state, value = step(data["params"], opt.init(data["params"]), *batch)
            want_params, want_value = data["want"][B]
            gaps.append(max([float((value - want_value).abs())]
                            + [float((params[k] - want_params[k]).abs().max()) for k in params]))
        print(json.dumps({{"gaps": gaps, "seconds": time.perf_counter() - start,
                          "compiler": [m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(got["gaps"]) < 1e-12, got
    assert got["compiler"] == [], got  # loaded without importing torch's compiler


def test_a_loaded_step_checks_its_arguments_against_the_saved_signature(package):
    _, path = package
    step = fg.load_compiled(path)
    loss, params = _setup()
    state = OPT.init(params)
    X, S = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"load_compiled: argument leaf \d+ must be a cpu float64 tensor \[B, 2\] "
                                         r"as saved, got a float32 tensor \[5, 2\]\. Save the step again"):
        step(params, state, X.float(), S)
    with pytest.raises(ValueError, match=r"load_compiled: argument leaf \d+ has batch size 4 but the step was saved "
                                         r"for batches where it equals the others' \(5\)"):
        step(params, state, X, S[:4])
    with pytest.raises(ValueError, match=r"load_compiled: batch size 1 is outside the range the step was saved "
                                         r"for \[2, inf\]\. Save it again with an example of this size"):
        step(params, state, X[:1], S[:1])
    with pytest.raises(ValueError, match=r"load_compiled: the step was saved for arguments structured as "
                                         r"PyTreeSpec\(\(\{'0\.bias'.*got PyTreeSpec"):
        step({k: v for k, v in list(params.items())[1:]}, state, X, S)
    want = fg.make_step(loss, OPT)(params, state, X, S)[2]
    torch.testing.assert_close(step(params, state, X, S)[2], want, rtol=1e-12, atol=1e-12)
    strided = torch.empty(2, 5, dtype=torch.float64).t().copy_(X)  # [5, 2] with strides (1, 5)
    torch.testing.assert_close(step(params, state, strided, S.requires_grad_(True))[2], want, rtol=1e-12, atol=1e-12)


def test_a_loaded_value_and_grad_checks_results_like_the_step_it_came_from(tmp_path):
    loss, params = _setup()
    vg = fg.value_and_grad(lambda p, X, S: (loss(p, X, S), S.sum()), has_aux=True)
    X, S = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    path = fg.save_compiled(vg, tmp_path / "vg.pt2", params, X, S)
    loaded = fg.load_compiled(path)
    (value, aux), grads = loaded(params, X, S)
    (want, want_aux), want_grads = vg(params, X, S)
    torch.testing.assert_close((value, aux, grads), (want, want_aux, want_grads), rtol=1e-12, atol=1e-12)
    with pytest.raises(FloatingPointError, match=r"value_and_grad: non-finite result: loss = nan"):
        loaded(params, torch.full_like(X, float("nan")), S)


def test_save_compiled_refuses_what_it_cannot_save(tmp_path):
    loss, params = _setup()
    X = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"save_compiled: step must be a function from value_and_grad, grad or "
                                        r"make_step, got function\. Build it with one of those first"):
        fg.save_compiled(loss, tmp_path / "x.pt2", params, X, X)
    with pytest.raises(TypeError, match=r"save_compiled: every argument leaf must be a tensor, got \['int'\]"):
        fg.save_compiled(fg.value_and_grad(lambda p, X, k: loss(p, X, X) * k), tmp_path / "x.pt2", params, X, 3)
    branchy = fg.value_and_grad(lambda p, X, S: loss(p, X, S) * (2.0 if X.sum() > 0 else 1.0))
    with pytest.raises(RuntimeError, match=r"save_compiled: make_fx cannot trace the step \(.*\), so it cannot be saved; "
                                           r"compile=True runs such a step under torch.compile instead"):
        fg.save_compiled(branchy, tmp_path / "x.pt2", params, X, X)
