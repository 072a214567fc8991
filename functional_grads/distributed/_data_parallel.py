"""Data-parallel training on torch.distributed: the gradient pytree, averaged in one collective.

NOTE [why not DDP]: DistributedDataParallel hooks ``.backward()``; with
``autograd.grad(create_graph=True)`` inside the loss it raises "Expected to have finished
reduction" or, with ``static_graph=True``, reduces at the end of the *inner* backward and
never averages the outer gradient (pytorch/pytorch#63812, #63929, #47562). Our gradients
are a pytree returned by a pure function, so averaging them is one all-reduce, JAX
``pmap``/``shard_map`` style, and it can live inside the compiled step.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import optree
import torch
import torch.distributed as dist
from torch import Tensor

from .. import _checks
from .._engine import Update, build_step, optimizer_update
from .._terms import TermMeans
from .._typing import CompileOption, LossFn, Params, PyTree, ShardMode, choices
from ..optim._transforms import GradientTransformation
from . import _sharding


def broadcast_params(params: Params, /, *, src: int = 0, group: Any = None) -> Params:
    """``params`` from rank ``src`` on every rank, after checking that all ranks agree on
    the tree structure, names, shapes and dtypes.

    Args:
      params: any pytree of tensors, e.g. from :func:`functional_grads.functionalize`.
      src: the rank whose values everyone gets. group: the process group (default: the
        default group, which must be initialised).

    Returns:
      New tensors (the input is not modified), equal on every rank.

    Raises:
      ValueError: on every rank, naming the first key where a rank's layout differs.
    """
    api = "broadcast_params"
    world = _world(api, group)
    check_same_layout(api, params, group=group)
    leaves, spec = optree.tree_flatten(params)
    flat = _flat([t.detach() for t in leaves], _sharding.common_dtype(leaves)) if leaves else None
    if flat is None:
        return params
    flat = flat.clone()
    if world > 1:
        dist.broadcast(flat, src=_global_rank(src, group), group=group)
    return optree.tree_unflatten(spec, _unflat(flat, leaves))


def check_same_layout(api: str, tree: Any, *, group: Any = None) -> None:
    """Raise on every rank unless all ranks hold the same tree layout (a crc32 compare)."""
    world = _world(api, group)
    layout = _layout(tree)
    checksum = zlib.crc32(repr(layout).encode())
    sums = [torch.zeros((), dtype=torch.int64, device=_device(tree, group)) for _ in range(world)]
    dist.all_gather(sums, torch.tensor(checksum, dtype=torch.int64, device=sums[0].device), group=group)
    if len({int(s) for s in sums}) == 1:
        return
    layouts: list[Any] = [None] * world
    dist.all_gather_object(layouts, layout, group=group)
    ref: list[Any] = layouts[0]
    for rank, other in enumerate(layouts):
        if other == ref:
            continue
        for i in range(max(len(ref), len(other))):
            a = ref[i] if i < len(ref) else None
            b = other[i] if i < len(other) else None
            if a != b:
                where = next(e[0] for e in (a, b) if e is not None)
                raise ValueError(
                    f"{api}: rank {rank} holds a different params layout from rank 0 at "
                    f"{where}: rank 0 has {_describe(a)}, rank {rank} has {_describe(b)}. "
                    "Build the same model on every rank (same architecture and dtype) before training."
                )


def all_reduce_mean(tree: PyTree, count: int | Tensor, /, *, group: Any = None) -> PyTree:
    """The sample-weighted mean of ``tree`` over ranks: ``sum_r count_r * tree_r / sum_r count_r``.

    For users of ``torch.optim``: average gradients from :func:`value_and_grad` (a mean over
    the local batch of ``count`` samples) before ``apply_grads``. One flattened all-reduce.
    """
    api = "all_reduce_mean"
    _world(api, group)
    leaves, spec = optree.tree_flatten(tree)
    n = torch.as_tensor(count, dtype=_sharding.common_dtype(leaves), device=_device(tree, group))
    total = _all_reduce(torch.cat([_flat(leaves, n.dtype) * n, n.reshape(1)]), group)
    return optree.tree_unflatten(spec, _unflat(total[:-1] / total[-1], leaves))


def data_parallel(
    loss: LossFn,
    optimizer: GradientTransformation,
    /,
    *,
    shard: ShardMode = None,
    group: Any = None,
    compile: CompileOption = False,
    check: bool = True,
) -> Callable[..., tuple[Any, PyTree, Tensor]]:
    """A data-parallel train step ``(params, opt_state, *local_batch) -> (params, opt_state, loss)``.

    Each rank computes ``value_and_grad(loss)`` on its own shard; the gradients and the
    loss are averaged over the **global sample count** (each rank weighs its mean by its
    local batch size), so uneven shards and empty shards give the full-batch answer, and
    every rank ends the step with the same params. A loss made of means over different
    counts (:func:`functional_grads.atoms.force_matching`: structures for energies, atoms
    for forces) has each term weighted by its own global count instead (NOTE [term
    means]; one more small all-reduce, of the counts, before the step). The step is
    :func:`functional_grads.make_step`'s core with the collectives in the middle.

    Args:
      loss: ``loss(params, *batch) -> []``, a mean over the batch's samples (every loss
        in :mod:`functional_grads.losses` is). The batch's leading dimension counts samples
        (for ``atoms.force_matching``, a shard is whole structures).
      optimizer: a :mod:`functional_grads.optim` transformation (``chain`` included;
        ``clip_by_global_norm`` takes the norm over all shards).
      shard: ``None`` (default): every rank keeps full params, gradients and optimizer
        state; one all-reduce per step carries the gradients x n, the loss x n, n and a
        non-finite flag per rank. ``"optimizer"`` (ZeRO-1/2): the gradient is
        reduce-scattered (one flat buffer, NOTE [flat shards]), each rank updates and keeps
        the optimizer state of its own slice only, and the updated params are
        all-gathered; params stay a full pytree on every rank. ``"params"`` (ZeRO-3): the
        step takes and returns the :class:`ShardedParams` of :func:`shard_params`; inside,
        the params are all-gathered for the loss (the per-sample transforms see full
        weights), and the gradient is reduce-scattered to the slices. Build the state with
        :func:`init_state` for the sharded modes.
      group: the process group (default: the default group).
      compile: one compiled graph for the whole step, collectives included (functional
        collectives); falls back to eager with ``CompileFallbackWarning``.
      check: after the reduction, every rank raises the same ``FloatingPointError`` if a
        rank's gradient was non-finite, naming the rank(s), and the same ``ValueError`` if
        the global batch is empty; no rank is left waiting.

    Start from equal params on every rank: see :func:`broadcast_params`.
    """
    api = "data_parallel"
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(f"{api}: optimizer must be a functional_grads.optim GradientTransformation, "
                        f"got {type(optimizer).__name__}.")
    _checks.check_choice(api, "shard", shard, choices(ShardMode))
    world = _world(api, group)
    rank = dist.get_rank(group)
    term_means = loss if isinstance(loss, TermMeans) else None
    terms = term_means is not None  # then batch = (global term counts, *local batch)

    def local_loss(params: Params, *batch: Any) -> Tensor:
        if _count(api, batch[terms:]) == 0:  # an empty shard: weight 0, no loss to evaluate
            leaves = [t for t in optree.tree_leaves(params) if isinstance(t, Tensor)]
            return sum(((t * 0).sum() for t in leaves), torch.zeros(()))
        if term_means is not None:
            return term_means.normalised(params, *batch)  # this shard's share of the global loss
        return loss(params, *batch)

    def counted(value: Tensor, grads: Params, batch: tuple[Any, ...], dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(weight, count, one slot per rank: 1 where this rank's numbers hold NaN/Inf)``:
        a mean loss is weighted by its sample count; a term-means shard is already a share
        of the global loss (weight 1)."""
        count = value.new_ones((), dtype=dtype) * _count(api, batch[terms:])
        finite = torch.stack([torch.isfinite(value).all(), *(torch.isfinite(g).all() for g in optree.tree_leaves(grads))])
        bad = (torch.arange(world, device=value.device) == rank).to(dtype) * (~finite.all()).to(dtype)
        return (count.new_ones(()) if terms else count), count, bad

    def reduce(value: Tensor, grads: Params, batch: tuple[Any, ...]) -> tuple[Tensor, Params, Tensor]:
        leaves, spec = optree.tree_flatten(grads)
        dtype = _sharding.common_dtype(leaves)
        weight, count, bad = counted(value, grads, batch, dtype)
        head = [(value.to(dtype) * weight).reshape(1), count.reshape(1), bad]
        # The global sample count scales a mean loss; a term-means loss's shares add up to it.
        # An empty global batch (count 0) is reported by check_reduced.
        if shard is None:
            total = _all_reduce(torch.cat([_flat(leaves, dtype) * weight, *head]), group)
            n = len(total) - world - 2
            scale = 1 if terms else total[n + 1].clamp_min(1)
            return ((total[n] / scale).to(value.dtype),
                    optree.tree_unflatten(spec, _unflat(total[:n] / scale, leaves)), total[n + 1:])
        info = _all_reduce(torch.cat(head), group)
        scale = 1 if terms else info[1].clamp_min(1)
        mine = _sharding.reduce_scatter(_sharding.flatten(grads, world) * weight, group) / scale
        return (info[0] / scale).to(value.dtype), {"flat": mine}, info[1:]

    def check_reduced(info: Tensor) -> None:
        n_total, *flags = info.tolist()
        if n_total == 0:
            raise ValueError(f"{api}: the global batch is empty (0 samples on every rank), so there is no "
                             "loss to average. Skip steps whose shards are all empty.")
        bad = [r for r, flag in enumerate(flags) if flag]
        if bad:
            raise FloatingPointError(
                f"{api}: non-finite loss or gradient on rank(s) {bad} (this is rank {rank}); "
                "every rank raises this error. Check those ranks' data for NaN/Inf, lower "
                "the learning rate, or look for a norm/sqrt/log evaluated at 0 inside the loss.")

    run = build_step(api, local_loss, update=_update(api, optimizer, shard, group, world, rank), reduce=reduce,
                     check_reduced=check_reduced if check else None, compile=compile, check=check)

    def step(params: Any, state: PyTree, *batch: Any) -> tuple[Any, PyTree, Tensor]:
        if (shard == "params") != isinstance(params, _sharding.ShardedParams):
            raise TypeError(
                f"{api}: with shard={shard!r} the step takes "
                + ("the ShardedParams of fg.distributed.shard_params(params)" if shard == "params"
                   else "the params pytree") + f", got {type(params).__name__}.")
        if term_means is not None:  # NOTE [term means]: every term's global count, before the step
            batch = (_all_reduce(term_means.counts(*batch).detach(), group), *batch)
        result = run(params, state, *batch)
        return result.params, result.state, result.value

    return step


def _update(api: str, optimizer: GradientTransformation, shard: ShardMode, group: Any, world: int,
            rank: int) -> Update:
    """How each shard mode turns the reduced gradient into new params and state."""
    if shard is None:
        return optimizer_update(optimizer)
    psum = lambda t: _all_reduce(t, group)  # noqa: E731  clip_by_global_norm's norm over all shards

    def step_slice(mine: Tensor, state: PyTree, grads: Params) -> tuple[Tensor, PyTree]:
        updates, state = optimizer.update(grads, state, {"flat": mine}, psum=psum)
        return mine + updates["flat"], state

    if shard == "optimizer":
        def apply(params: Params, state: PyTree, grads: Params) -> tuple[Params, PyTree]:
            mine, state = step_slice(_sharding.local(_sharding.flatten(params, world), world, rank), state, grads)
            return _sharding.unflatten(_sharding.all_gather(mine, group), params), state

        return Update(lambda params: params, apply,
                      lambda params: _sharding.init_state(optimizer, params, shard=shard, group=group))

    def apply_sharded(params: _sharding.ShardedParams, state: PyTree, grads: Params) -> tuple[Any, PyTree]:
        mine, state = step_slice(params.shard, state, grads)
        return _sharding.ShardedParams(mine, params.layout), state

    return Update(lambda params: _sharding.unflatten(_sharding.all_gather(params.shard, group), params.layout),
                  apply_sharded, lambda params: optimizer.init({"flat": params.shard}))


def _count(api: str, batch: tuple[Any, ...]) -> int:
    leaves: list[Any] = optree.tree_leaves(list(batch))  # type: ignore[arg-type]
    first = next((t for t in leaves if isinstance(t, Tensor) and t.ndim), None)
    if first is None:
        raise TypeError(f"{api}: the local batch must hold a tensor whose leading dimension counts the samples.")
    return first.shape[0]


def _world(api: str, group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{api}: no torch.distributed process group is initialised. Launch with torchrun "
            "and call torch.distributed.init_process_group('gloo' or 'nccl') first.")
    return dist.get_world_size(group)


def _global_rank(rank: int, group: Any) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def _all_reduce(t: Tensor, group: Any) -> Tensor:
    # Functional collectives trace into a compiled graph; eagerly they run the same op.
    import torch.distributed._functional_collectives as funcol

    return funcol.all_reduce(t, "sum", group if group is not None else dist.group.WORLD)  # type: ignore[arg-type]


def _flat(leaves: list[Tensor], dtype: torch.dtype) -> Tensor:
    if not leaves:
        return torch.zeros(0, dtype=dtype)
    return torch.cat([t.reshape(-1).to(dtype) for t in leaves])


def _unflat(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    return _sharding.pieces(flat, [tuple(t.shape) for t in like], [t.dtype for t in like])


def _device(tree: Any, group: Any) -> torch.device:
    leaves = [t for t in optree.tree_leaves(tree) if isinstance(t, Tensor)]
    if leaves:
        return leaves[0].device
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")


def _layout(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    paths, leaves, spec = optree.tree_flatten_with_path(tree)
    out = [(_checks.key_path("params", p), tuple(t.shape), str(t.dtype)) for p, t in zip(paths, leaves)]
    return out + [("<structure>", (), str(spec))]


def _describe(entry: Any) -> str:
    return "nothing" if entry is None else f"shape {list(entry[1])} {entry[2]}"
