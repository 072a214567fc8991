"""Laplacian benchmark: ``python benchmarks/operators.py [--quick]``.

Tanh MLP D-256-256-256-1, B = 256 (128 at D = 256), D in {8, 64, 256}, float32 and
float64, 1 torch thread, all in one process: the Laplacian's value and a training step
(``value_and_grad`` of ``mean(laplacian ** 2)``) for each method, against today's
Hessian trace; the stochastic estimators at D = 1024 against the exact forward
Laplacian; folx (JAX ``jit``) as an optional peer (jet-for-pytorch needs Python >= 3.12
and is skipped when absent). Peak memory of each training step is measured in a fresh
subprocess (``ru_maxrss``). Writes ``operators-cpu.json``/``.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax_peer  # noqa: E402
import timing  # noqa: E402

import functional_grads as fg  # noqa: E402

METHODS = ("hessian", "forward", "forward (generic)", "taylor", "forward compiled")


def model(D: int, dtype: torch.dtype, width: int = 256):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(D, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                            torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))
    return m.to(dtype)


def contender(name: str, D: int, dtype: torch.dtype, B: int, kind: str, num_samples: int = 8):
    """A zero-argument callable: the Laplacian value ("value") or a training step ("step")."""
    f, params = fg.functionalize(model(D, dtype))
    X = torch.randn(B, D, dtype=dtype, generator=torch.Generator().manual_seed(1))
    method = name.split(" ")[0]
    g = (lambda p, x: f(p, x)) if "generic" in name else f  # a lambda takes the generic path
    stochastic = method in ("stde", "hutchinson")
    lap = fg.laplacian(g, method=method, **({"num_samples": num_samples} if stochastic else {}))
    compiled = "compiled" in name
    if kind == "value":
        fn = torch.compile(lap, fullgraph=True) if compiled else lap
        return lambda: fn(params, X)
    if stochastic:  # two independent estimates: an unbiased square
        loss = lambda p, X: (lap(p, X) * lap(p, X)).mean()  # noqa: E731
    else:
        loss = lambda p, X: lap(p, X).pow(2).mean()  # noqa: E731
    step = fg.value_and_grad(loss, compile=compiled, check=False)
    return lambda: step(params, X)


def _memory(name: str, D: int, dtype: str, B: int) -> float:
    """Peak RSS (MiB) of a fresh process that runs the step twice, minus its idle RSS."""
    code = (f"import sys, resource, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); import operators as o; "
            f"torch.set_num_threads(1); fn = o.contender({name!r}, {D}, torch.{dtype}, {B}, 'step'); "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; fn(); fn(); "
            "print('PEAK', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    peaks = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("PEAK")]
    return float(peaks[-1]) if out.returncode == 0 and peaks else float("nan")


def folx_step(D: int, B: int, dtype: str, kind: str):
    """The same MLP's forward Laplacian in folx (JAX jit), or None without folx."""
    try:
        import jax
        import jax.numpy as jnp
        from folx import forward_laplacian
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    layers, mlp = jax_peer.mlp(model(D, getattr(torch, dtype)), jnp.tanh)
    X = jnp.asarray(torch.randn(B, D, dtype=getattr(torch, dtype), generator=torch.Generator().manual_seed(1)).numpy())
    f = lambda p, x: mlp(p, x)[0]  # noqa: E731

    def lap(p, X):
        return jax.vmap(lambda x: forward_laplacian(lambda y: f(p, y))(x).laplacian)(X)

    fn = jax.jit(lap) if kind == "value" else jax.jit(jax.value_and_grad(lambda p, X: jnp.mean(lap(p, X) ** 2)))
    return lambda: jax.block_until_ready(fn(layers, X))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="re-measure memory into an existing JSON")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    dims = (8, 16) if a.quick else (8, 64, 256)
    rows: list[dict] = []
    out = Path(a.out) if a.out else (Path(tempfile.gettempdir()) if a.quick else Path(__file__).parent / "results")
    if a.memory_only:
        rows = json.loads((out / "operators-cpu.json").read_text())["rows"]
        return _finish(a, rows, out, memory=True)

    def record(name, D, dtype, B, kind, fn, repeats):
        r = {"method": name, "D": D, "dtype": dtype, "B": B, "kind": kind,
             **timing.measure(fn, repeats, "cpu", warmup=1 if D >= 256 else 3)}
        rows.append(r)
        print(f"D={D:5d} {dtype:8s} {kind:5s} {name:22s} {r['median_ms']:10.2f} ms (first {r['first_call_s']:.1f} s)", flush=True)

    for dtype in ("float32", "float64"):
        for D in dims:
            B = 128 if D >= 256 else (32 if a.quick else 256)
            repeats = 2 if a.quick else (3 if D >= 256 else 7)
            for kind in ("value", "step"):
                for name in METHODS:
                    if name == "taylor" and D >= 256:
                        continue  # several minutes per call: see the README's note on Taylor mode
                    record(name, D, dtype, B, kind, contender(name, D, getattr(torch, dtype), B, kind), repeats)
                peer = folx_step(D, B, dtype, kind)
                if peer is not None:
                    record("folx (jax jit)", D, dtype, B, kind, peer, repeats)
                torch._dynamo.reset()
    D_hi = 64 if a.quick else 1024
    for name in ("forward", "stde", "hutchinson", "forward compiled", "stde compiled"):
        record(name, D_hi, "float32", 64 if a.quick else 128, "step",
               contender(name, D_hi, torch.float32, 64 if a.quick else 128, "step"), 2 if a.quick else 3)
    return _finish(a, rows, out, memory=not a.no_memory and not a.quick)


def _finish(a: argparse.Namespace, rows: list[dict], out: Path, memory: bool) -> dict:
    if memory:
        for r in rows:
            if r["kind"] == "step" and r["D"] == 256 and r["method"] in ("hessian", "forward", "forward compiled"):
                r["peak_rss_mib"] = _memory(r["method"], r["D"], r["dtype"], r["B"])
                print(f"peak RSS of {r['method']} D={r['D']} {r['dtype']}: {r['peak_rss_mib']:.0f} MiB", flush=True)
    result = {"torch": torch.__version__, "threads": 1, "quick": a.quick, "rows": rows, "targets": grade(rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "operators-cpu.json").write_text(json.dumps(result, indent=2))
    (out / "operators-cpu.md").write_text(markdown(result))
    print(markdown(result))
    return result


def _get(rows, method, D, dtype, kind):
    return next((r for r in rows if r["method"] == method and r["D"] == D and r["dtype"] == dtype and r["kind"] == kind), None)


def grade(rows: list[dict]) -> list[dict]:
    out = []
    for dtype in ("float32", "float64"):
        for D, need in ((256, 4.0), (64, 2.5)):
            base = _get(rows, "hessian", D, dtype, "step")
            best = min((r for r in rows if r["D"] == D and r["dtype"] == dtype and r["kind"] == "step"
                        and r["method"].startswith("forward")), key=lambda r: r["median_ms"], default=None)
            if base and best:
                ratio = base["median_ms"] / best["median_ms"]
                out.append({"target": f"exact step >= {need}x today's at D={D} {dtype} ({best['method']})",
                            "measured": round(ratio, 2), "met": ratio >= need})
            peer = _get(rows, "folx (jax jit)", D, dtype, "step")
            if peer and best:
                ratio = best["median_ms"] / peer["median_ms"]
                out.append({"target": f"within 1.3x of folx at D={D} {dtype}", "measured": round(ratio, 2), "met": ratio <= 1.3})
            base_mem, best_mem = (base or {}).get("peak_rss_mib"), (best or {}).get("peak_rss_mib")
            if base_mem and best_mem:
                ratio = best_mem / base_mem
                out.append({"target": f"step memory <= 1/3 of today's at D={D} {dtype}", "measured": round(ratio, 2),
                            "met": ratio <= 1 / 3})
    hi = [r for r in rows if r["D"] >= 1024]
    exact, stde = _get(hi, "forward compiled", 1024, "float32", "step"), _get(hi, "stde compiled", 1024, "float32", "step")
    if exact and stde:
        ratio = exact["median_ms"] / stde["median_ms"]
        out.append({"target": "stochastic step at D=1024 >= 20x the exact one", "measured": round(ratio, 2), "met": ratio >= 20})
    return out


def markdown(result: dict) -> str:
    lines = [f"Laplacian of a tanh MLP D-256-256-256-1, torch {result['torch']}, {result['threads']} thread"
             + (" (quick)" if result["quick"] else ""), "",
             "| D | dtype | B | kind | method | median ms | vs hessian | first call s | peak RSS MiB |",
             "| ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        base = _get(result["rows"], "hessian", r["D"], r["dtype"], r["kind"]) or _get(
            result["rows"], "forward", r["D"], r["dtype"], r["kind"])
        mem = r.get("peak_rss_mib")
        lines.append(f"| {r['D']} | {r['dtype']} | {r['B']} | {r['kind']} | {r['method']} | {r['median_ms']:.2f} | "
                     f"{base['median_ms'] / r['median_ms']:.2f}x | {r['first_call_s']:.2f} | "
                     f"{'' if mem is None else f'{mem:.0f}'} |")
    lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
