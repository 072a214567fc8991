"""Run the benchmark suite: ``python benchmarks/run.py [--quick] [--device cuda]``.

For every workload, in one process and one run: the seeds' hand-written autograd pattern,
functional_grads eager (torch.func), functional_grads compiled, and JAX ``jit`` when jax is
installed. First call (compile) is timed apart from the steady state; we report medians,
the interquartile range, speed ratios against the seed pattern, and peak memory (CUDA).
Writes ``results-<device>.json``, ``results-<device>.md`` and, with matplotlib, a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax_peer  # noqa: E402
import workloads  # noqa: E402

CONTENDERS = ("seed autograd", "torch.func eager", "ours compiled", "ours compiled + CUDA graphs", "jax jit")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workloads", nargs="*", default=list(workloads.NAMES), choices=workloads.NAMES)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 30)
    use_jax = not args.no_jax and jax_peer.available()

    rows = []
    for name in args.workloads:
        w = workloads.make(name, args.quick, args.device)
        steps = {
            "seed autograd": w.seed,
            "torch.func eager": w.ours(compile=False),
            "ours compiled": w.ours(compile=True),
            # CUDA graphs replay the whole step with one launch: what small GPU steps need.
            "ours compiled + CUDA graphs": w.ours(compile={"mode": "reduce-overhead"})
            if args.device.startswith("cuda") else None,
            "jax jit": jax_peer.step_for(w) if use_jax else None,
        }
        for contender, fn in steps.items():
            if fn is None:
                continue
            row = {"workload": name, "description": w.description, "contender": contender,
                   **_measure(fn, repeats, args.device)}
            rows.append(row)
            print(f"{name:10s} {contender:17s} first {row['first_call_s']:7.2f} s  "
                  f"median {row['median_ms']:9.3f} ms  iqr {row['iqr_ms']:.3f}", flush=True)
        torch._dynamo.reset()

    for row in rows:
        base = next(r for r in rows if r["workload"] == row["workload"] and r["contender"] == "seed autograd")
        row["speedup_vs_seed"] = base["median_ms"] / row["median_ms"]
    result = {"machine": _machine(args.device), "quick": args.quick, "repeats": repeats,
              "rows": rows, "targets": _targets(rows)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.device + ("-quick" if args.quick else "")
    (out / f"results-{tag}.json").write_text(json.dumps(result, indent=2))
    (out / f"results-{tag}.md").write_text(_markdown(result))
    _plot(result, out / f"results-{tag}.png")
    print(_markdown(result))
    return result


def _measure(fn, repeats: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    sync()
    first = time.perf_counter() - t0
    notes = [str(w.message)[:400] for w in caught if "Fallback" in type(w.message).__name__]
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"first_call_s": first, "median_ms": statistics.median(times), "iqr_ms": q[2] - q[0],
            "peak_mem_mib": peak, "notes": notes}


def _targets(rows: list[dict]) -> list[dict]:
    """Each target, measured with our fastest compiled variant of the workload."""
    get = lambda w, c: next((r for r in rows if r["workload"] == w and r["contender"] == c), None)  # noqa: E731

    def ours(w):
        mine = [r for r in rows if r["workload"] == w and r["contender"].startswith("ours compiled")]
        return min(mine, key=lambda r: r["median_ms"]) if mine else None

    out = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        r = ours(w)
        if r:
            out.append({"target": f"{w}: compiled >= 2x faster than the seed pattern ({r['contender']})",
                        "measured": round(r["speedup_vs_seed"], 2), "met": r["speedup_vs_seed"] >= 2})
    for w in ("seed002", "sobolev"):
        mine, jax = ours(w), get(w, "jax jit")
        if mine and jax:
            ratio = jax["median_ms"] / mine["median_ms"]
            out.append({"target": f"{w}: compiled >= 1.5x faster than JAX jit", "measured": round(ratio, 2), "met": ratio >= 1.5})
    sob, fit = ours("sobolev"), ours("value_fit")
    if sob and fit:
        ratio = sob["median_ms"] / fit["median_ms"]
        out.append({"target": "Sobolev step <= 1.5x a value-fitting step", "measured": round(ratio, 2), "met": ratio <= 1.5})
    s2 = get("seed002", "ours compiled")
    if s2:
        out.append({"target": "seed002 first-call compile <= 3 s", "measured": round(s2["first_call_s"], 2),
                    "met": s2["first_call_s"] <= 3})
    return out


def _machine(device: str) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    if jax_peer.available():
        import jax
        info["jax"] = jax.__version__
    return info


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m.get('gpu', m['platform'])}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
             f"torch {m['torch']}" + (f", jax {m['jax']}" if "jax" in m else "") + f"; {result['repeats']} repeats"
             + (" (quick mode)" if result["quick"] else ""), "",
             "| workload | contender | median ms | IQR ms | speedup vs seed | first call s | peak MiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        peak = f"{r['peak_mem_mib']:.1f}" if r["peak_mem_mib"] is not None else "n/a"
        lines.append(f"| {r['workload']} | {r['contender']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | "
                     f"{r['speedup_vs_seed']:.2f}x | {r['first_call_s']:.2f} | {peak} |")
    notes = [f"- {r['workload']} / {r['contender']}: {n}" for r in result["rows"] for n in r["notes"]]
    lines += (["", "Fallbacks:"] + notes) if notes else []
    lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(dict.fromkeys(r["workload"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(CONTENDERS)
    for i, c in enumerate(CONTENDERS):
        xs = [j + i * width for j, n in enumerate(names) for r in result["rows"] if r["workload"] == n and r["contender"] == c]
        ys = [r["speedup_vs_seed"] for n in names for r in result["rows"] if r["workload"] == n and r["contender"] == c]
        ax.bar(xs, ys, width, label=c)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_ylabel("speedup vs seed autograd pattern")
    ax.set_title(result["machine"].get("gpu", "CPU"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
