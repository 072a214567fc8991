"""Run the benchmark suite: ``python benchmarks/run.py [--quick] [--device cuda]``.

For every workload, in one process and one run: the seeds' hand-written autograd pattern,
functional_grads eager, functional_grads compiled, and JAX ``jit`` when jax is installed.
Timing is in ``timing.py``, grading in ``targets.py``, writing in ``report.py``. Writes
``results-<device>.json``, ``.md`` and (with matplotlib) ``.png`` to ``--out``: by default
``benchmarks/results`` for full runs and a temporary folder for ``--quick`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax_peer  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
import timing  # noqa: E402
import workloads  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test; not graded)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workloads", nargs="*", default=list(workloads.NAMES), choices=workloads.NAMES)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 30)
    use_jax = not args.no_jax and jax_peer.available()
    default_out = Path(tempfile.gettempdir()) / "functional_grads_bench" if args.quick else Path(__file__).parent / "results"
    out = Path(args.out) if args.out else default_out

    rows = []
    packages = tempfile.mkdtemp(prefix="functional_grads_packages_")
    for name in args.workloads:
        w = workloads.make(name, args.quick, args.device)
        steps = {
            "seed autograd": w.seed,
            "ours eager": w.ours(compile=False),
            "ours compiled": w.ours(compile=True),
            # CUDA graphs replay the whole step with one launch: what small GPU steps need.
            "ours compiled + CUDA graphs": w.ours(compile={"mode": "reduce-overhead"})
            if args.device.startswith("cuda") else None,
            # AOTInductor, saved and loaded back (NOTE [saved steps]); CPU only here.
            "ours loaded": w.loaded(packages) if args.device == "cpu" else None,
            "jax jit": jax_peer.step_for(w) if use_jax else None,
        }
        for contender, fn in steps.items():
            if fn is None:
                continue
            row = {"workload": name, "description": w.description, "contender": contender,
                   **timing.measure(fn, repeats, args.device)}
            rows.append(row)
            print(f"{name:10s} {contender:28s} first {row['first_call_s']:7.2f} s  "
                  f"median {row['median_ms']:9.3f} ms  iqr {row['iqr_ms']:.3f}", flush=True)
        torch._dynamo.reset()

    for row in rows:
        base = next(r for r in rows if r["workload"] == row["workload"] and r["contender"] == "seed autograd")
        row["speedup_vs_seed"] = base["median_ms"] / row["median_ms"]
    seed_package = Path(packages) / "seed002.pt2"
    fresh = _first_call_from_package(seed_package) if seed_package.exists() else None
    result = {"machine": _machine(args.device), "quick": args.quick, "repeats": repeats,
              "rows": rows, "first_call_from_package_s": fresh, "targets": targets.grade(rows, args.quick, fresh)}
    report.write(result, out, args.device + ("-quick" if args.quick else ""))
    print(report.markdown(result))
    print(f"written to {out}")
    return result


def _first_call_from_package(path: Path) -> float:
    """Seconds from after ``import torch`` to the first result of a saved seed002 step, in a
    fresh process (``import functional_grads`` and loading included)."""
    script = (
        "import time, torch\n"
        "start = time.perf_counter()\n"
        "import functional_grads as fg\n"
        f"step = fg.load_compiled({str(path)!r})\n"
        "torch.manual_seed(0)\n"
        "m = torch.nn.Sequential(torch.nn.Linear(2, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10), torch.nn.ReLU(),"
        " torch.nn.Linear(10, 1))\n"
        "f, params = fg.functionalize(m)\n"
        "step(params, torch.randn(100, 2), torch.randn(100, 2))\n"
        "print(time.perf_counter() - start)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _machine(device: str) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    if jax_peer.available():
        import jax
        info["jax"] = jax.__version__
    return info


if __name__ == "__main__":
    main()
