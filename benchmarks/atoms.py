"""Force-matching step time on ragged batches of ~500-5000 atoms, and recompiles.

``python benchmarks/atoms.py [--quick] [--threads N]`` times, in one run and one process,
one training step (energies, forces and stress; Adam) of the radial-descriptor MLP
potential of ``examples/interatomic_potential.py`` on batches of periodic copper-like
cells of 32 atoms:

- ``hand-written``: the plain-PyTorch pattern (strain leaf, ``autograd.grad(create_graph=True)``,
  ``.backward()``, ``torch.optim.Adam``);
- ``hand-written, torch.compile``: the same loss function under ``torch.compile``, first
  with ``fullgraph=True`` (does it compile at all?), then with graph breaks allowed, as a
  user would try it (the table says whether its ``.backward()`` runs);
- ``ours eager`` and ``ours compiled``: ``make_step(atoms.force_matching(...))``; one
  compiled step object serves every batch size, and the graphs it compiles are counted.

Writes ``results/atoms-cpu-<dtype>.json`` and ``.md`` (``--dtype float32``, the default, or
``float64``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

import functional_grads as fg
from functional_grads import atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from interatomic_potential import CUTOFF, Potential, handwritten_loss, handwritten_step  # noqa: E402
from timing import measure  # noqa: E402


def _graphs() -> int:
    """Graphs compiled so far: by the traced path (compile=True) and by torch.compile."""
    from functional_grads import _jit

    return _jit.graph_count() + torch._dynamo.utils.counters["stats"]["unique_graphs"]

def batch_of(n_structures: int, seed: int) -> tuple:
    """Rattled and strained fcc cells of 32 atoms; random labels (only time is measured)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    grid = torch.cartesian_prod(*[torch.arange(2.0)] * 3)
    frac = ((grid[:, None] + base[None]) / 2).reshape(-1, 3)
    items = []
    for _ in range(n_structures):
        cell = 7.22 * (torch.eye(3) + 0.02 * torch.randn(3, 3, generator=g))
        items.append({"positions": frac @ cell + 0.05 * torch.randn(32, 3, generator=g), "numbers": [29] * 32,
                      "cell": cell, "energy": torch.randn((), generator=g), "forces": torch.randn(32, 3, generator=g),
                      "stress": 0.01 * torch.randn(3, 3, generator=g)})
    b = atoms.collate(items)
    return (b.positions, b.cell, b.batch, *atoms.neighbour_list(b.positions, b.cell, b.pbc, b.batch, CUTOFF),
            b.energy, b.forces, b.stress)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small batches, 3 repeats")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))
    sizes = [4, 8] if args.quick else [16, 48, 160]  # x 32 atoms
    repeats = 3 if args.quick else 10
    torch.manual_seed(0)
    model = Potential()
    f, params = fg.functionalize(model)
    loss = atoms.force_matching(f, force_weight=10.0, stress_weight=100.0)
    opt = fg.optim.adam(1e-3)
    eager, compiled = fg.make_step(loss, opt), fg.make_step(loss, opt, compile=True)
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fullgraph_error = None
    try:
        torch.compile(handwritten_loss, fullgraph=True)(model, *batch_of(2, 0))
    except Exception as error:  # noqa: BLE001 - recorded: does the hand-written step compile at all?
        fullgraph_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    hand_compiled = torch.compile(handwritten_loss)
    rows = []
    for n in sizes:
        batch = batch_of(n, seed=n)
        info = {"atoms": len(batch[0]), "structures": n, "edges": len(batch[3])}
        state = opt.init(params)
        contenders = {
            "hand-written": lambda: handwritten_step(handwritten_loss, model, torch_opt, *batch),
            "hand-written, torch.compile": lambda: handwritten_step(hand_compiled, model, torch_opt, *batch),
            "ours eager": lambda: eager(params, state, *batch),
            "ours compiled": lambda: compiled(params, state, *batch),
        }
        for name, fn in contenders.items():
            graphs_before = _graphs()
            try:
                r = measure(fn, repeats, "cpu", warmup=1)
            except Exception as error:  # noqa: BLE001 - recorded in the table: the pattern does not run
                r = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                print(f"{info['atoms']:5d} atoms {name:>44}: fails: {r['error']}")
            else:
                print(f"{info['atoms']:5d} atoms {name:>44}: {r['median_ms']:8.2f} ms  (first call "
                      f"{r['first_call_s']:.1f} s, new graphs "
                      f"{_graphs() - graphs_before})")
            r["new_graphs"] = _graphs() - graphs_before
            rows.append({**info, "contender": name, **r})
    base = {r["atoms"]: r["median_ms"] for r in rows if r["contender"] == "hand-written"}
    for r in rows:
        r["speedup_vs_hand_written"] = base[r["atoms"]] / r["median_ms"] if "median_ms" in r else None
    machine = (f"{platform.platform()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; "
               f"{args.dtype}; {repeats} repeats")
    result = {"machine": machine, "fullgraph_hand_written": fullgraph_error or "compiled", "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"atoms-cpu-{args.dtype}" + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    lines = [f"Machine: {machine}", "",
             f"`torch.compile(fullgraph=True)` of the hand-written step: {result['fullgraph_hand_written']}", "",
             "| atoms | structures | edges | contender | median ms | speedup vs hand-written | first call s | new graphs |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['atoms']} | {r['structures']} | {r['edges']} | {r['contender']} | "
              + (f"{r['median_ms']:.2f} | {r['speedup_vs_hand_written']:.2f}x | {r['first_call_s']:.2f} | "
                 if "median_ms" in r else f"fails: {r['error']} | | | ") + f"{r['new_graphs']} |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
