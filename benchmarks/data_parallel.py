"""Data-parallel step time and bytes per rank: 1, 2 and 4 processes, every shard mode.

``python benchmarks/data_parallel.py [--quick]`` spawns the process groups itself (gloo on
loopback, CPU) and times, in one run, one gradient-matching step on N samples:
``eager`` (``data_parallel``), ``compiled, collective inside`` (one graph with the
all-reduce), ``compiled, collective outside`` (compiled ``value_and_grad``, then an
eager ``all_reduce_mean`` and optimizer update), and the sharded modes ``shard=optimizer``
and ``shard=params`` (eager). For each it records the bytes of params and optimizer state
that rank 0 keeps between steps (exact), next to the step time (indicative only: 4
processes share 2 cores). Writes ``data_parallel-cpu.json``/``.md``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optree
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import functional_grads as fg


def _worker(rank: int, world: int, threads: int, port: int, args: dict, out: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(args["samples"], 8, generator=g)
    S = 2 * X
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 128), torch.nn.Tanh(), torch.nn.Linear(128, 128),
                                torch.nn.Tanh(), torch.nn.Linear(128, 1))
    f, params = fg.functionalize(model)
    loss, opt = fg.losses.gradient_matching(f), fg.optim.adam(1e-3)
    shard = torch.tensor_split(torch.arange(args["samples"]), world)[rank]
    batch = (X[shard], S[shard])
    vg = fg.value_and_grad(loss, compile=True)

    def outside(p, s, *b):
        value, grads = vg(p, *b)
        grads = fg.distributed.all_reduce_mean(grads, b[0].shape[0])
        updates, s = opt.update(grads, s, p)
        return fg.optim.apply_updates(p, updates), s, value

    contenders = {
        "eager": (fg.distributed.data_parallel(loss, opt), None),
        "compiled, collective inside": (fg.distributed.data_parallel(loss, opt, compile=True), None),
        "compiled, collective outside": (outside, None),
        "eager, shard=optimizer": (fg.distributed.data_parallel(loss, opt, shard="optimizer"), "optimizer"),
        "eager, shard=params": (fg.distributed.data_parallel(loss, opt, shard="params"), "params"),
    }
    if args["quick"] or world == 4:  # 4 processes on 2 cores: only the eager modes
        contenders = {k: v for k, v in contenders.items() if k.startswith("eager")}
    rows = {}
    for name, (step, mode) in contenders.items():
        held = fg.distributed.shard_params(params) if mode == "params" else params
        state = fg.distributed.init_state(opt, held, shard=mode)
        kept = sum(t.numel() * t.element_size() for t in optree.tree_leaves((held, state))
                   if isinstance(t, torch.Tensor))
        t0 = time.perf_counter()
        step(held, state, *batch)
        first = time.perf_counter() - t0
        for _ in range(3):
            step(held, state, *batch)
        times = []
        for _ in range(args["repeats"]):
            dist.barrier()
            t = time.perf_counter()
            step(held, state, *batch)
            times.append((time.perf_counter() - t) * 1e3)
        rows[name] = {"median_ms": statistics.median(times), "first_call_s": first, "bytes_rank0": kept}
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def _run(world: int, threads: int, args: dict) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(tempfile.mkdtemp()) / "rows.json"
    mp.start_processes(_worker, args=(world, threads, port, args, str(out)), nprocs=world, start_method="spawn")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    args = {"samples": 1024 if a.quick else 8192, "repeats": 5 if a.quick else 20, "quick": a.quick}
    configs = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1),
               "4 processes x 1 thread": (4, 1)}
    results = {name: _run(world, threads, args) for name, (world, threads) in configs.items()}
    base = results["1 process x 1 thread"]["eager"]["median_ms"]
    lines = [f"Data-parallel gradient matching, MLP 8-128-128-1 tanh, N = {args['samples']}, float32, gloo on "
             f"loopback, {args['repeats']} repeats, torch {torch.__version__}" + (" (quick)" if a.quick else ""), "",
             "| configuration | contender | median ms | vs 1 process eager | first call s | bytes kept by rank 0 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for config, rows in results.items():
        for name, r in rows.items():
            lines.append(f"| {config} | {name} | {r['median_ms']:.2f} | {base / r['median_ms']:.2f}x | "
                         f"{r['first_call_s']:.2f} | {r['bytes_rank0']} |")
    two = results["2 processes x 1 thread"]
    if "compiled, collective inside" in two:
        lines += ["", f"Collective inside vs outside the compiled graph (2 processes): "
                  f"{two['compiled, collective outside']['median_ms'] / two['compiled, collective inside']['median_ms']:.2f}x"]
    full = results["1 process x 1 thread"]["eager"]["bytes_rank0"]
    lines += ["", "Params + optimizer state kept by rank 0, as a fraction of one full copy (Adam: params, m, v):"]
    for config, rows in results.items():
        lines.append(f"- {config}: " + ", ".join(f"{name.split(', ')[-1]} {r['bytes_rank0'] / full:.3f}"
                                                   for name, r in rows.items() if name.startswith("eager")))
    out = Path(a.out) if a.out else (Path(tempfile.gettempdir()) if a.quick else Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_parallel-cpu.json").write_text(json.dumps({"args": args, "results": results}, indent=2))
    (out / "data_parallel-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
