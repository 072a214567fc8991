"""The PINN training step against folx: ``python benchmarks/pinn.py [--quick]``.

2D Poisson, ``mean((-lap u - q)^2)`` over 1000 interior points, tanh MLP 2-50x4-1, one
torch thread (JAX on one core as far as XLA allows): ours compiled (``compile=True``,
the forward Laplacian traced), ours loaded (``save_compiled``/``load_compiled``) and folx
(``forward_laplacian`` under ``jax.jit(value_and_grad)``) when installed. Writes
``results/pinn-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax_peer  # noqa: E402
import timing  # noqa: E402

import functional_grads as fg  # noqa: E402


def model(dtype: torch.dtype) -> torch.nn.Sequential:
    torch.manual_seed(0)
    sizes = [2, 50, 50, 50, 50, 1]
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1])] + ([torch.nn.Tanh()] if i < len(sizes) - 2 else [])
    return torch.nn.Sequential(*layers).to(dtype)


def source(X: torch.Tensor) -> torch.Tensor:
    return 2 * math.pi**2 * torch.sin(math.pi * X[:, 0]) * torch.sin(math.pi * X[:, 1])


def ours(m: torch.nn.Module, X: torch.Tensor, loaded: bool):
    f, params = fg.functionalize(m)
    lap = fg.laplacian(f)
    loss = lambda p, X: ((-lap(p, X) - source(X)) ** 2).mean()  # noqa: E731
    step = fg.value_and_grad(loss, compile=not loaded)
    if loaded:
        step = fg.load_compiled(fg.save_compiled(step, Path(tempfile.mkdtemp()) / "pinn.pt2", params, X))
    return lambda: step(params, X)


def folx_step(m: torch.nn.Module, X: torch.Tensor):
    try:
        import jax
        import jax.numpy as jnp
        from folx import forward_laplacian
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    layers, mlp = jax_peer.mlp(m, jnp.tanh)
    Xj = jnp.asarray(X.numpy())
    f = lambda p, x: mlp(p, x)[0]  # noqa: E731

    def loss(p, X):
        lap = jax.vmap(lambda x: forward_laplacian(lambda y: f(p, y))(x).laplacian)(X)
        q = 2 * math.pi**2 * jnp.sin(math.pi * X[:, 0]) * jnp.sin(math.pi * X[:, 1])
        return jnp.mean((-lap - q) ** 2)

    fn = jax.jit(jax.value_and_grad(loss))
    return lambda: jax.block_until_ready(fn(layers, Xj))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    B, repeats = (100, 3) if a.quick else (1000, 30)
    rows = []
    for dtype in ("float32", "float64"):
        m = model(getattr(torch, dtype))
        X = torch.rand(B, 2, dtype=getattr(torch, dtype), generator=torch.Generator().manual_seed(1))
        for name, fn in (("ours compiled", ours(m, X, False)), ("ours loaded", ours(m, X, True)),
                         ("folx (jax jit)", folx_step(m, X))):
            if fn is None:
                continue
            rows.append({"contender": name, "dtype": dtype, "B": B, **timing.measure(fn, repeats, "cpu")})
            print(f"{dtype:8s} {name:16s} {rows[-1]['median_ms']:8.3f} ms (first {rows[-1]['first_call_s']:.1f} s)")
    lines = ["| dtype | contender | median ms | vs folx |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        peer = next((p for p in rows if p["dtype"] == r["dtype"] and p["contender"] == "folx (jax jit)"), None)
        ratio = f"{peer['median_ms'] / r['median_ms']:.2f}x" if peer else "-"
        lines.append(f"| {r['dtype']} | {r['contender']} | {r['median_ms']:.3f} | {ratio} |")
    out = Path(a.out) if a.out else (Path(tempfile.gettempdir()) if a.quick else Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    result = {"torch": torch.__version__, "threads": 1, "quick": a.quick, "rows": rows}
    (out / "pinn-cpu.json").write_text(json.dumps(result, indent=1))
    (out / "pinn-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
