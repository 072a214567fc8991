"""Write one run's results: JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
from pathlib import Path

CONTENDERS = ("seed autograd", "ours eager", "ours compiled", "ours compiled + CUDA graphs", "jax jit")
_COLOURS = ("#7f7f7f", "#1f77b4", "#d62728", "#9467bd", "#2ca02c")


def write(result: dict, out: Path, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-{tag}.json").write_text(json.dumps(result, indent=2))
    (out / f"results-{tag}.md").write_text(markdown(result))
    plot(result, out / f"results-{tag}.png")


def machine_line(result: dict) -> str:
    m = result["machine"]
    return (f"{m.get('gpu', m['platform'])}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
            f"torch {m['torch']}" + (f", jax {m['jax']}" if "jax" in m else "") + f"; {result['repeats']} repeats"
            + (" (quick mode: sizes too small to grade)" if result["quick"] else ""))


def markdown(result: dict) -> str:
    lines = [f"Machine: {machine_line(result)}", "",
             "| workload | contender | median ms | IQR ms | speedup vs seed | first call s | peak MiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        peak = f"{r['peak_mem_mib']:.1f}" if r["peak_mem_mib"] is not None else "n/a"
        name = r["contender"] + (" (eager fallback)" if r["notes"] else "")
        lines.append(f"| {r['workload']} | {name} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | "
                     f"{r['speedup_vs_seed']:.2f}x | {r['first_call_s']:.2f} | {peak} |")
    notes = [f"- {r['workload']} / {r['contender']}: {n}" for r in result["rows"] for n in r["notes"]]
    lines += (["", "Fallbacks:"] + notes) if notes else []
    lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
    verdict = {True: "yes", False: "NO", None: "not graded"}
    lines += [f"| {t['target']} | {t['measured']} | {verdict[t['met']]} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Speedup vs the seed pattern on a log axis, IQR error bars, fallbacks hatched."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = result["rows"]
    names = list(dict.fromkeys(r["workload"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(CONTENDERS)
    for i, (c, colour) in enumerate(zip(CONTENDERS, _COLOURS)):
        mine = [(j, r) for j, n in enumerate(names) for r in rows if r["workload"] == n and r["contender"] == c]
        if not mine:
            continue
        xs = [j + i * width for j, _ in mine]
        ys = [r["speedup_vs_seed"] for _, r in mine]
        # The speedup's spread from this contender's quartiles (the seed's median fixed).
        lo = [r["speedup_vs_seed"] - r["speedup_vs_seed"] * r["median_ms"] / r["q3_ms"] for _, r in mine]
        hi = [r["speedup_vs_seed"] * r["median_ms"] / max(r["q1_ms"], 1e-9) - r["speedup_vs_seed"] for _, r in mine]
        bars = ax.bar(xs, ys, width, label=c, color=colour, yerr=[lo, hi], capsize=2)
        for bar, (_, r) in zip(bars, mine):
            if r["notes"]:
                bar.set_hatch("//")
                ax.annotate("eager fallback", (bar.get_x() + width / 2, bar.get_height()), fontsize=6,
                            rotation=90, ha="center", va="bottom")
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_ylabel("speedup vs the seed autograd pattern (log)")
    ax.set_title(machine_line(result), fontsize=8)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
