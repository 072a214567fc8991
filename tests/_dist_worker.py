"""One rank of the data-parallel tests: runs every scenario, writes what it saw as JSON."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import optree
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

import functional_grads as fg  # noqa: E402
from helpers import atoms_batch, atoms_energy, atoms_params, atoms_structures, mlp  # noqa: E402

STEPS = 50


def _data(n=101, d=3):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, (X**2).sum(1), 2 * X


def _shard(t, rank, world, sizes=None):
    sizes = sizes or [len(c) for c in torch.tensor_split(torch.arange(t.shape[0]), world)]
    start = sum(sizes[:rank])
    return t[start:start + sizes[rank]]


def _train(step, params, opt, batch, steps):
    state = opt.init(params)
    for _ in range(steps):
        params, state, _ = step(params, state, *batch)
    return params


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def scenario_equal(rank, world, compile, losses=("gradient_matching", "sobolev"), sizes=None):
    out = {}
    X, Y, dY = _data()
    for name in losses:
        f, params = fg.functionalize(mlp(3, 8, 2, seed=1))
        loss = getattr(fg.losses, name)(f)
        batch = (X, dY) if name == "gradient_matching" else (X, Y, dY)
        opt = fg.optim.adam(1e-2)
        reference = _train(fg.make_step(loss, opt), params, opt, batch, STEPS)
        params = fg.distributed.broadcast_params(params)
        step = fg.distributed.data_parallel(loss, opt, compile=compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fg.CompileFallbackWarning)
            local = tuple(_shard(t, rank, world, sizes) for t in batch)
            ours = _train(step, params, opt, local, STEPS)
        gathered = [None] * world
        dist.all_gather_object(gathered, {k: v.tolist() for k, v in ours.items()})
        replicas = max(_max_diff({k: torch.tensor(v, dtype=torch.float64) for k, v in g.items()}, ours) for g in gathered)
        out[name] = {"vs_single": _max_diff(ours, reference), "replicas": replicas,
                     "fallbacks": [str(w.message)[:200] for w in caught]}
    return out


def scenario_nan(rank, world):
    f, params = fg.functionalize(mlp(3, 4, 1, seed=1))
    X, _, dY = _data(8)
    if rank == world - 1:
        X = X.clone()
        X[0, 0] = float("nan")
    opt = fg.optim.sgd(0.1)
    step = fg.distributed.data_parallel(fg.losses.gradient_matching(f), opt)
    try:
        step(params, opt.init(params), X, dY)
    except FloatingPointError as e:
        return str(e)
    return None


def scenario_empty_global(rank, world):
    f, params = fg.functionalize(mlp(3, 4, 1, seed=1))
    X, _, dY = _data(8)
    opt = fg.optim.sgd(0.1)
    try:
        fg.distributed.data_parallel(fg.losses.gradient_matching(f), opt)(params, opt.init(params), X[:0], dY[:0])
    except ValueError as e:
        return str(e)
    return None


def scenario_frozen(rank, world):
    """A frozen first layer is not trained, and the rest trains as in one process."""
    model = mlp(3, 8, 2, seed=1)
    model[0].requires_grad_(False)
    f, params = fg.functionalize(model)
    X, _, dY = _data()
    loss, opt = fg.losses.gradient_matching(f), fg.optim.adam(1e-2)
    reference = _train(fg.make_step(loss, opt), params, opt, (X, dY), 10)
    ours = _train(fg.distributed.data_parallel(loss, opt), params, opt,
                  (_shard(X, rank, world), _shard(dY, rank, world)), 10)
    return {"keys": sorted(ours), "vs_single": _max_diff(ours, reference)}


def _sharded_losses(f):
    return {
        "gradient_matching": (fg.losses.gradient_matching(f), lambda X, dY: (X, dY)),
        "gradient_penalty": (fg.losses.gradient_penalty(f, target=1.0), lambda X, dY: (X,)),
        "laplacian_pinn": (fg.losses.pde_residual(lambda p, X: fg.laplacian(f)(p, X) - X.sum(1)), lambda X, dY: (X,)),
    }


def _bytes(tree):
    return sum(t.numel() * t.element_size() for t in optree.tree_leaves(tree) if isinstance(t, torch.Tensor))


def scenario_sharded(rank, world, compile, losses=("gradient_matching", "gradient_penalty", "laplacian_pinn"),
                     steps=20, sizes=None):
    """Every shard mode equals single-process full-batch training; bytes kept per rank."""
    out = {}
    X, _, dY = _data()
    sizes = sizes or ([51, 50] if world == 2 else None)  # uneven
    opt = fg.optim.chain(fg.optim.clip_by_global_norm(1.0), fg.optim.adam(1e-2))
    for name in losses:
        f, params = fg.functionalize(mlp(3, 8, 2, seed=1))
        loss, args = _sharded_losses(f)[name]
        reference = _train(fg.make_step(loss, opt), params, opt, args(X, dY), steps)
        local = args(_shard(X, rank, world, sizes), _shard(dY, rank, world, sizes))
        for shard in ("optimizer", "params"):
            held = fg.distributed.shard_params(params) if shard == "params" else params
            state = fg.distributed.init_state(opt, held, shard=shard)
            step = fg.distributed.data_parallel(loss, opt, shard=shard, compile=compile)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", fg.CompileFallbackWarning)
                for _ in range(steps):
                    held, state, _ = step(held, state, *local)
            ours = fg.distributed.gather_params(held) if shard == "params" else held
            full = _bytes(params) + _bytes(opt.init(params))
            kept = _bytes(held.shard if shard == "params" else {}) + _bytes(state)
            out[f"{name}/{shard}"] = {"vs_single": _max_diff(ours, reference), "kept": kept, "full": full,
                                      "full_state": _bytes(opt.init(params)), "state": _bytes(state),
                                      "fallbacks": [str(w.message)[:200] for w in caught]}
    return out


def scenario_checkpoint(rank, world, out_dir, save):
    """Save after 10 sharded steps at one world size; load at another and train 10 more."""
    X, _, dY = _data()
    f, params = fg.functionalize(mlp(3, 8, 2, seed=1))
    loss, opt = fg.losses.gradient_matching(f), fg.optim.adam(1e-2)
    path = Path(out_dir).parent / "sharded.pt"
    local = (_shard(X, rank, world), _shard(dY, rank, world))
    step = fg.distributed.data_parallel(loss, opt, shard="params")
    if save:
        held = fg.distributed.shard_params(params)
        state = fg.distributed.init_state(opt, held, shard="params")
        for _ in range(10):
            held, state, _ = step(held, state, *local)
        fg.distributed.save_checkpoint(path, held, state)
        return None
    held, state = fg.distributed.load_checkpoint(path, shard="params")
    for _ in range(10):
        held, state, _ = step(held, state, *local)
    reference = _train(fg.make_step(loss, opt), params, opt, (X, dY), 20)
    return {"vs_single": _max_diff(fg.distributed.gather_params(held), reference)}


def scenario_all_reduce_mean(rank, world):
    """The sample-weighted mean of a pytree, against the formula."""
    def tree(r):
        return {"a": torch.tensor([r + 1.0, 2.0 * r], dtype=torch.float64), "b": torch.tensor(3.0 * r, dtype=torch.float64)}

    got = fg.distributed.all_reduce_mean(tree(rank), rank + 1)
    counts = [r + 1 for r in range(world)]
    want = {k: sum(c * tree(r)[k] for r, c in enumerate(counts)) / sum(counts) for k in ("a", "b")}
    return max((got[k] - want[k]).abs().max().item() for k in want)


def scenario_layout(rank, world):
    _, params = fg.functionalize(mlp(3, 4 + (rank == world - 1), 1, seed=rank))
    try:
        fg.distributed.broadcast_params(params)
    except ValueError as e:
        return str(e)
    return None


def scenario_ddp(rank, world):
    """Document DDP under double backward: what happens, whatever the torch version."""
    out = {}
    X, _, dY = _data(20)
    X, dY = _shard(X, rank, world), _shard(dY, rank, world)
    for mode in ("static_graph", "default"):  # static_graph first: a failed default run ends DDP use
        torch.manual_seed(0)
        model = mlp(3, 8, 1, seed=1)
        ddp = torch.nn.parallel.DistributedDataParallel(model, static_graph=mode == "static_graph")
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        try:
            for _ in range(3):
                x = X.clone().requires_grad_()
                (gx,) = torch.autograd.grad(ddp(x).sum(), x, create_graph=True)
                opt.zero_grad()
                ((gx - dY) ** 2).mean().backward()
                opt.step()
            flat = torch.cat([p.detach().flatten() for p in model.parameters()])
            gathered = [torch.zeros_like(flat) for _ in range(world)]
            dist.all_gather(gathered, flat)
            out[mode] = {"error": None, "replica_gap": max((g - flat).abs().max().item() for g in gathered)}
        except RuntimeError as e:
            out[mode] = {"error": str(e)[:200], "replica_gap": None}
            break
    return out


def scenario_atoms(rank, world, shard):
    """Force matching on 5 structures split 1 | 4 (atoms 3 | 19): each term weighted by its
    own global count (structures, atoms, periodic structures) gives the full-batch training."""
    sizes, periodic = [3, 6, 1, 5, 7], [True, False, True, True, False]
    structures = atoms_structures(sizes, periodic, seed=2)
    inputs = atoms_batch(structures)
    labels = fg.atoms.energy_forces_stress(atoms_energy, stress=True)(atoms_params(seed=3), *inputs)
    loss = fg.atoms.force_matching(atoms_energy, force_weight=10.0, stress_weight=1.0)
    opt = fg.optim.adam(1e-2)
    params = atoms_params()
    reference = _train(fg.make_step(loss, opt), params, opt, (*inputs, *labels), 5)
    mine = [0] if rank == 0 else [1, 2, 3, 4]
    local_inputs = atoms_batch([structures[k] for k in mine])
    atom_rows = torch.cat([torch.nonzero(inputs[2] == k).squeeze(1) for k in mine])
    local_labels = (labels[0][mine], labels[1][atom_rows], labels[2][mine])
    step = fg.distributed.data_parallel(loss, opt, shard=shard)
    state = opt.init(params) if shard is None else fg.distributed.init_state(opt, params, shard=shard)
    for _ in range(5):
        params, state, _ = step(params, state, *local_inputs, *local_labels)
    return _max_diff(params, reference)


def main(rank, world, out_dir, scenarios):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    # a file rendezvous in the run's own folder: no port is chosen ahead of the workers (a free
    # port found by the parent could be taken by another process before they bind it)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        results = {}
        for name in scenarios:
            if name == "eager":
                results[name] = scenario_equal(rank, world, False)
            elif name == "compiled":
                results[name] = scenario_equal(rank, world, True, losses=("gradient_matching",))
            elif name == "empty":
                results[name] = scenario_equal(rank, world, False, losses=("sobolev",), sizes=[101] + [0] * (world - 1))
            elif name == "nan":
                results[name] = scenario_nan(rank, world)
            elif name == "empty_global":
                results[name] = scenario_empty_global(rank, world)
            elif name == "frozen":
                results[name] = scenario_frozen(rank, world)
            elif name == "sharded":
                results[name] = scenario_sharded(rank, world, False)
            elif name == "sharded_compiled":
                results[name] = scenario_sharded(rank, world, True, losses=("gradient_matching",), steps=5)
            elif name == "sharded_empty":
                results[name] = scenario_sharded(rank, world, False, losses=("gradient_matching",), steps=5,
                                                 sizes=[101] + [0] * (world - 1))
            elif name == "checkpoint_save":
                results[name] = scenario_checkpoint(rank, world, out_dir, save=True)
            elif name == "checkpoint_load":
                results[name] = scenario_checkpoint(rank, world, out_dir, save=False)
            elif name == "all_reduce_mean":
                results[name] = scenario_all_reduce_mean(rank, world)
            elif name == "layout":
                results[name] = scenario_layout(rank, world)
            elif name == "atoms":
                results[name] = {str(shard): scenario_atoms(rank, world, shard) for shard in (None, "optimizer")}
            elif name == "ddp":
                results[name] = scenario_ddp(rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()
    # A rank that finished first sometimes died at interpreter exit with "terminate called
    # without an active exception" (SIGABRT: a C++ thread still joinable in a static
    # destructor, seen on a loaded 2-core machine), and spawn then killed the ranks still
    # working. Its results are written: leave without running the destructors.
    os._exit(0)
