"""Operator benchmark: ``python benchmarks/operators.py [--quick]``.

1 torch thread, one process, training steps (``value_and_grad`` of ``mean(op ** 2)``):

- the Laplacian of three architectures of the same size, tanh, width 256, three hidden
  layers: an ``nn.Sequential`` MLP, the same Sequential wrapped in a custom module, and a
  residual MLP (``h + tanh(W h)`` blocks); D in {16, 64, 256}, float32, B = 256 (128 at
  D = 256); the Taylor engine eagerly and compiled against the Hessian trace and folx
  (JAX ``jit``, the same architecture and weights) when installed;
- the stochastic Laplacians at D = 1024 against the exact engine;
- the biharmonic and the third-order partial ``d3f/dx0^3`` of a tanh MLP (width 128, two
  hidden layers, B = 128, float32), D in {2, 4, 8, 16}, against nested ``torch.autograd``
  with ``create_graph`` (the hand-written pattern).

Peak memory of some warm steps is measured in a fresh subprocess (the growth of the
resident set's high-water mark, reset before the step; Linux). Writes
``operators-cpu.json``/``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax_peer  # noqa: E402
import timing  # noqa: E402

import functional_grads as fg  # noqa: E402

ARCHS = ("sequential", "wrapped", "residual")


class Wrapped(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class Residual(nn.Module):
    def __init__(self, D: int, width: int, blocks: int):
        super().__init__()
        self.inp = nn.Linear(D, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.out(h)


def model(arch: str, D: int, dtype: torch.dtype, width: int = 256, hidden: int = 3) -> nn.Module:
    torch.manual_seed(0)
    if arch == "residual":
        return Residual(D, width, hidden - 1).to(dtype)
    layers: list[nn.Module] = [nn.Linear(D, width), nn.Tanh()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    seq = nn.Sequential(*layers, nn.Linear(width, 1)).to(dtype)
    return Wrapped(seq) if arch == "wrapped" else seq


def _operator(op: str, f, method: str, num_samples: int):
    if op == "laplacian":
        stochastic = method in ("stde", "hutchinson")
        return fg.laplacian(f, method=method, **({"num_samples": num_samples} if stochastic else {}))
    if op == "biharmonic":
        return fg.biharmonic(f, method=method)
    return fg.partial_derivative(f, (0, 0, 0))


def nested(op: str, f):
    """The hand-written pattern: nested ``torch.autograd.grad(create_graph=True)``."""

    def second(g, x, i):  # d/dx_i of a per-sample quantity [B], kept differentiable
        return torch.autograd.grad(g.sum(), x, create_graph=True)[0][:, i]

    def lap(u, x):
        return sum(second(second(u, x, i), x, i) for i in range(x.shape[1]))

    def run(p, X):
        x = X.detach().requires_grad_()
        u = f(p, x)[:, 0]
        if op == "laplacian":
            return lap(u, x)
        if op == "biharmonic":
            return lap(lap(u, x), x)
        return second(second(second(u, x, 0), x, 0), x, 0)

    return run


def contender(name: str, arch: str, op: str, D: int, dtype: torch.dtype, B: int, width: int, hidden: int,
              num_samples: int = 8):
    """A zero-argument callable: one training step of ``mean(op ** 2)``."""
    f, params = fg.functionalize(model(arch, D, dtype, width, hidden))
    X = torch.randn(B, D, dtype=dtype, generator=torch.Generator().manual_seed(1))
    method = name.split(" ")[0]
    if method == "nested":
        value = nested(op, f)
        loss = lambda p, X: value(p, X).pow(2).mean()  # noqa: E731
        step = fg.value_and_grad(loss, check=False)
        return lambda: step(params, X)
    value = _operator(op, f, method, num_samples)
    if method in ("stde", "hutchinson"):  # two independent estimates: an unbiased square
        loss = lambda p, X: (value(p, X) * value(p, X)).mean()  # noqa: E731
    else:
        loss = lambda p, X: value(p, X).pow(2).mean()  # noqa: E731
    step = fg.value_and_grad(loss, compile="compiled" in name, check=False)
    return lambda: step(params, X)


def _memory(args: tuple) -> float:
    """Peak RSS growth (MiB) of one warm step, in a fresh process: the step runs once (traces,
    caches), freed memory goes back to the system (``malloc_trim``), the kernel's high-water
    mark is reset (``/proc/self/clear_refs``), then the step runs again."""
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); import operators as o; "
            f"torch.set_num_threads(1); a = {args!r}; fn = o.contender(*a[:4], getattr(torch, a[4]), *a[5:]); "
            "fn(); kb = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]); "
            "import gc, ctypes; gc.collect(); ctypes.CDLL('libc.so.6').malloc_trim(0); "
            "open('/proc/self/clear_refs', 'w').write('5'); base = kb('VmRSS'); fn(); "
            "print('PEAK', (kb('VmHWM') - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    peaks = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("PEAK")]
    return float(peaks[-1]) if out.returncode == 0 and peaks else float("nan")


def folx_step(arch: str, D: int, B: int, dtype: torch.dtype):
    """The same architecture's forward-Laplacian training step in folx (JAX jit), or None."""
    try:
        import jax
        import jax.numpy as jnp
        from folx import forward_laplacian
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    m = model(arch, D, dtype)
    if arch == "residual":
        arr = lambda t: jnp.asarray(t.detach().numpy())  # noqa: E731
        params = [(arr(m.inp.weight), arr(m.inp.bias)), *[(arr(b.weight), arr(b.bias)) for b in m.blocks],
                  (arr(m.out.weight), arr(m.out.bias))]

        def f(p, x):
            h = jnp.tanh(p[0][0] @ x + p[0][1])
            for W, b in p[1:-1]:
                h = h + jnp.tanh(W @ h + b)
            return p[-1][0] @ h + p[-1][1]
    else:
        params, f = jax_peer.mlp(m.net if arch == "wrapped" else m, jnp.tanh)
    X = jnp.asarray(torch.randn(B, D, dtype=dtype, generator=torch.Generator().manual_seed(1)).numpy())

    def lap(p, X):
        return jax.vmap(lambda x: forward_laplacian(lambda y: f(p, y)[0])(x).laplacian)(X)

    fn = jax.jit(jax.value_and_grad(lambda p, X: jnp.mean(lap(p, X) ** 2)))
    return lambda: jax.block_until_ready(fn(params, X))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="re-measure memory into an existing JSON")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[dict] = []
    out = Path(a.out) if a.out else (Path(tempfile.gettempdir()) if a.quick else Path(__file__).parent / "results")

    if a.memory_only:
        rows = json.loads((out / "operators-cpu.json").read_text())["rows"]
        return _finish(a, rows, out, memory=True)

    def record(name, arch, op, D, B, fn, repeats, dtype="float32"):
        r = {"op": op, "arch": arch, "method": name, "D": D, "dtype": dtype, "B": B,
             **timing.measure(fn, repeats, "cpu", warmup=1 if D >= 256 else 2)}
        rows.append(r)
        print(f"{op:10s} {arch:10s} D={D:5d} {name:18s} {r['median_ms']:10.2f} ms (first {r['first_call_s']:.1f} s)",
              flush=True)
        return r

    f32 = torch.float32
    for D in (16,) if a.quick else (16, 64, 256):
        B = 128 if D >= 256 else (32 if a.quick else 256)
        repeats = 2 if a.quick else (3 if D >= 256 else 5)
        for arch in ARCHS:
            for name in ("hessian", "forward", "forward compiled"):
                record(name, arch, "laplacian", D, B, contender(name, arch, "laplacian", D, f32, B, 256, 3), repeats)
            peer = folx_step(arch, D, B, f32)
            if peer is not None:
                record("folx (jax jit)", arch, "laplacian", D, B, peer, repeats)
            torch._dynamo.reset()
    D_hi, B_hi = (64, 64) if a.quick else (1024, 128)
    for name in ("forward", "stde", "hutchinson", "forward compiled", "stde compiled"):
        record(name, "sequential", "laplacian", D_hi, B_hi,
               contender(name, "sequential", "laplacian", D_hi, f32, B_hi, 256, 3), 2 if a.quick else 3)
    for op in ("biharmonic", "d3"):
        for D in (2, 8) if a.quick else (2, 4, 8, 16):
            B = 32 if a.quick else 128
            for name in ("nested autograd", "forward", "forward compiled"):
                record(name, "sequential", op, D, B, contender(name, "sequential", op, D, f32, B, 128, 2),
                       2 if a.quick else 5)
    return _finish(a, rows, out, memory=not a.no_memory and not a.quick)


def _finish(a: argparse.Namespace, rows: list[dict], out: Path, memory: bool) -> dict:
    if memory:
        for r in rows:
            if (r["op"] == "laplacian" and r["D"] == 256 and r["method"] in ("hessian", "forward", "forward compiled")) or \
                    (r["op"] == "biharmonic" and r["D"] == 8 and r["method"] in ("nested autograd", "forward")):
                width, hidden = (256, 3) if r["op"] == "laplacian" else (128, 2)
                r["peak_rss_mib"] = _memory((r["method"], r["arch"], r["op"], r["D"], r["dtype"], r["B"], width, hidden))
                print(f"peak RSS of {r['op']} {r['arch']} {r['method']} D={r['D']}: {r['peak_rss_mib']:.0f} MiB", flush=True)
    result = {"torch": torch.__version__, "threads": 1, "quick": a.quick, "rows": rows, "targets": grade(rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "operators-cpu.json").write_text(json.dumps(result, indent=2))
    (out / "operators-cpu.md").write_text(markdown(result))
    print(markdown(result))
    return result


def _get(rows, op, arch, method, D):
    return next((r for r in rows if r["op"] == op and r["arch"] == arch and r["method"] == method and r["D"] == D), None)


def _best(rows, op, arch, D):
    return min((r for r in rows if r["op"] == op and r["arch"] == arch and r["D"] == D
                and r["method"].startswith("forward")), key=lambda r: r["median_ms"], default=None)


def grade(rows: list[dict]) -> list[dict]:
    out = []
    for arch in ARCHS:
        for D, need in ((16, 1.8), (256, 4.0)):
            base, best = _get(rows, "laplacian", arch, "hessian", D), _best(rows, "laplacian", arch, D)
            if base and best:
                ratio = base["median_ms"] / best["median_ms"]
                out.append({"target": f"{arch} Laplacian step >= {need}x the Hessian trace at D={D} ({best['method']})",
                            "measured": round(ratio, 2), "met": ratio >= need})
        base = _get(rows, "laplacian", arch, "hessian", 256)
        for method in ("forward", "forward compiled"):
            ours = _get(rows, "laplacian", arch, method, 256)
            if base and ours and base.get("peak_rss_mib") and ours.get("peak_rss_mib"):
                ratio = ours["peak_rss_mib"] / base["peak_rss_mib"]
                out.append({"target": f"{arch} Laplacian step memory <= 1/3 of the Hessian trace's at D=256 ({method}; "
                                      "the forward-Laplacian issue's target)", "measured": round(ratio, 2),
                            "met": ratio <= 1 / 3})
        for D in (16, 64, 256):
            peer, best = _get(rows, "laplacian", arch, "folx (jax jit)", D), _best(rows, "laplacian", arch, D)
            if peer and best:
                ratio = best["median_ms"] / peer["median_ms"]
                out.append({"target": f"{arch} Laplacian within 1.3x of folx at D={D} ({best['method']})",
                            "measured": round(ratio, 2), "met": ratio <= 1.3})
    base, best = _get(rows, "biharmonic", "sequential", "nested autograd", 8), _best(rows, "biharmonic", "sequential", 8)
    if base and best:
        ratio = base["median_ms"] / best["median_ms"]
        out.append({"target": f"biharmonic step >= 3x nested autograd at D=8 ({best['method']})",
                    "measured": round(ratio, 2), "met": ratio >= 3})
        eager = _get(rows, "biharmonic", "sequential", "forward", 8)
        if base.get("peak_rss_mib") and eager and eager.get("peak_rss_mib"):
            ratio = eager["peak_rss_mib"] / base["peak_rss_mib"]
            out.append({"target": "biharmonic step memory <= 1/2 of nested autograd at D=8 (eager)",
                        "measured": round(ratio, 2), "met": ratio <= 0.5})
    exact, stde = _get(rows, "laplacian", "sequential", "forward compiled", 1024), \
        _get(rows, "laplacian", "sequential", "stde compiled", 1024)
    if exact and stde:
        ratio = exact["median_ms"] / stde["median_ms"]
        out.append({"target": "stochastic step at D=1024 >= 20x the exact one", "measured": round(ratio, 2),
                    "met": ratio >= 20})
    return out


def markdown(result: dict) -> str:
    lines = [f"Operator training steps, torch {result['torch']}, {result['threads']} thread, float32"
             + (" (quick)" if result["quick"] else ""), "",
             "| op | arch | D | B | method | median ms | vs baseline | first call s | peak RSS MiB |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        base = (_get(result["rows"], r["op"], r["arch"], "hessian", r["D"])
                or _get(result["rows"], r["op"], r["arch"], "nested autograd", r["D"])
                or _get(result["rows"], r["op"], r["arch"], "forward", r["D"]))
        mem = r.get("peak_rss_mib")
        lines.append(f"| {r['op']} | {r['arch']} | {r['D']} | {r['B']} | {r['method']} | {r['median_ms']:.2f} | "
                     f"{base['median_ms'] / r['median_ms']:.2f}x | {r['first_call_s']:.2f} | "
                     f"{'' if mem is None else f'{mem:.0f}'} |")
    lines += ["", "Baseline: the Hessian trace (Laplacian), nested autograd (biharmonic, d3), the exact "
              "engine (stochastic rows).", "", "| target | measured | met |", "| --- | ---: | --- |"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
