"""Gradient matching trained data-parallel: replicas stay identical, loss equals one process.

Run: ``torchrun --nproc_per_node 2 examples/data_parallel.py [--steps N] [--compile]
[--shard none|optimizer|params]`` (or plain ``python examples/data_parallel.py`` for one
process). Each rank trains on its own shard of N samples of ``grad V(x) = 2 P x``;
``fg.distributed.data_parallel`` averages gradients over the global sample count (one
all-reduce per step; with ``--shard``, a reduce-scatter and an all-gather, and each rank
keeps only its slice of the optimizer state, and of the params with ``params``). Rank 0
also trains the same model on the full batch in one process and prints the difference
and the bytes of params and optimizer state it kept.
"""

from __future__ import annotations

import os
import socket

import optree
import torch
import torch.distributed as dist

import functional_grads as fg

import _cli  # examples/_cli.py: the shared --threads option


def main(argv: list[str] | None = None) -> dict:
    parser = _cli.parser(__doc__, "python examples/data_parallel.py")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--samples", type=int, default=4097)  # deliberately not divisible by 2
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--shard", choices=["none", "optimizer", "params"], default="none",
                        help="none: full copies on every rank; optimizer: ZeRO-1/2 (optimizer state and "
                             "gradients sharded); params: ZeRO-3 (params too)")
    args = _cli.parse(parser, argv)
    shard_mode = None if args.shard == "none" else args.shard
    _init()
    rank, world = dist.get_rank(), dist.get_world_size()

    g = torch.Generator().manual_seed(0)
    P = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 3.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
    X = torch.randn(args.samples, 3, generator=g, dtype=torch.float64)
    S = X @ (2 * P)
    torch.manual_seed(rank)  # different initial weights per rank: broadcast_params fixes that
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    f, params = fg.functionalize(model)
    params = fg.distributed.broadcast_params(params, src=0)
    loss, opt = fg.losses.gradient_matching(f), fg.optim.adam(1e-2)
    step = fg.distributed.data_parallel(loss, opt, shard=shard_mode, compile=args.compile)

    shard = torch.tensor_split(torch.arange(args.samples), world)[rank]
    p = fg.distributed.shard_params(params) if shard_mode == "params" else params
    state = fg.distributed.init_state(opt, p, shard=shard_mode)
    for i in range(args.steps):
        p, state, value = step(p, state, X[shard], S[shard])
        if rank == 0 and (i % max(args.steps // 5, 1) == 0 or i == args.steps - 1):
            print(f"step {i:4d}  global loss {value.item():.6f}  (rank 0 holds {len(shard)} of {args.samples})")
    kept = sum(t.numel() * t.element_size() for t in optree.tree_leaves((p, state))
               if isinstance(t, torch.Tensor))
    full = sum(t.numel() * t.element_size() for t in optree.tree_leaves((params, opt.init(params))))
    if shard_mode == "params":
        p = fg.distributed.gather_params(p)

    flat = torch.cat([t.flatten() for t in p.values()])
    replicas = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(replicas, flat)
    result = {"replica_gap": max((r - flat).abs().max().item() for r in replicas)}
    if rank == 0:
        single, s_state = params, opt.init(params)
        one = fg.make_step(loss, opt)
        for _ in range(args.steps):
            single, s_state, single_value = one(single, s_state, X, S)
        result["vs_single"] = max((p[k] - single[k]).abs().max().item() for k in p)
        result["loss_gap"] = abs(value.item() - single_value.item())
        result["bytes_per_rank"], result["bytes_full"] = kept, full
        print(f"\n{world} process(es), shard={shard_mode}: replicas identical to {result['replica_gap']:.1e}; "
              f"params vs one process on the full batch: max difference {result['vs_single']:.1e}; loss "
              f"difference {result['loss_gap']:.1e}; params + optimizer state kept by rank 0: {kept} bytes "
              f"of {full} ({kept / full:.2f})")
    dist.destroy_process_group()
    return result


def _init() -> None:
    if "RANK" not in os.environ:  # plain python: a one-process group
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    else:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


if __name__ == "__main__":
    main()
