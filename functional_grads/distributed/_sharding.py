"""Sharded params and optimizer state (ZeRO): one flat buffer, padded, split across ranks.

NOTE [flat shards]: the params pytree is flattened, in its leaf order, into one buffer of
their common dtype, zero-padded to ``world * chunk`` elements; rank ``r`` holds
``[r * chunk, (r + 1) * chunk)``. The gradient is reduce-scattered into the same slices,
so each rank updates exactly its slice, with an optimizer state shaped like the slice
(``{"flat": [chunk]}``); padding stays zero (a zero gradient and a zero parameter). One
bucket: a step gathers the whole buffer once (``shard="params"``) and frees it after the
step; between steps a rank keeps ``1 / world`` of params, gradients and optimizer state,
plus at most ``world - 1`` padding elements.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import optree
import torch
import torch.distributed as dist
from torch import Tensor

from .._typing import Params, PyTree
from ..optim._transforms import GradientTransformation


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """Where each leaf of a params pytree lives in the flat, padded buffer (NOTE [flat shards])."""

    skeleton: Any
    """The params pytree with leaf ``i`` replaced by ``i`` (a plain structure: a treespec
    passed into a compiled step cannot be used by dynamo's pytree functions)."""
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    dtype: torch.dtype
    numel: int
    world: int

    @property
    def chunk(self) -> int:
        """Elements per rank: ``ceil(numel / world)``."""
        return max(1, math.ceil(self.numel / self.world))


class ShardedParams(NamedTuple):
    """This rank's slice ``shard [chunk]`` of the flat params, and the layout to rebuild them."""

    shard: Tensor
    layout: Layout


def layout_of(tree: PyTree, world: int) -> Layout:
    """The :class:`Layout` of a pytree of tensors split over ``world`` ranks."""
    leaves, spec = optree.tree_flatten(tree)
    return Layout(optree.tree_unflatten(spec, list(range(len(leaves)))), tuple(tuple(t.shape) for t in leaves),
                  tuple(t.dtype for t in leaves), common_dtype(leaves), sum(t.numel() for t in leaves), world)


def flatten(tree: PyTree, world: int) -> Tensor:
    """``tree`` as one buffer of its leaves' common dtype, zero-padded to ``world * chunk``
    elements (traces under torch.compile: no :class:`Layout` is built)."""
    leaves = optree.tree_leaves(tree)
    dtype = common_dtype(leaves)
    numel = sum(t.numel() for t in leaves)
    pad = world * max(1, math.ceil(numel / world)) - numel
    parts = [t.reshape(-1).to(dtype) for t in leaves]
    if pad or not parts:
        parts.append(torch.zeros(pad, dtype=dtype, device=leaves[0].device if leaves else None))
    return torch.cat(parts)


def unflatten(flat: Tensor, like: PyTree | Layout) -> PyTree:
    """The pytree of a (padded) flat buffer: shaped like the pytree ``like``, or as a
    :class:`Layout` says."""
    if isinstance(like, Layout):
        out = pieces(flat, like.shapes, like.dtypes)
        return optree.tree_map(lambda j: out[j], like.skeleton)
    leaves, spec = optree.tree_flatten(like)
    return optree.tree_unflatten(spec, pieces(flat, [tuple(t.shape) for t in leaves], [t.dtype for t in leaves]))


def pieces(flat: Tensor, shapes: Any, dtypes: Any) -> list[Tensor]:
    """Consecutive pieces of ``flat`` with the given shapes, cast to the given dtypes."""
    out, i = [], 0
    for shape, dtype in zip(shapes, dtypes):
        n = math.prod(shape)
        out.append(flat[i:i + n].reshape(shape).to(dtype))
        i += n
    return out


def local(flat: Tensor, world: int, rank: int) -> Tensor:
    """Rank ``rank``'s slice of a padded flat buffer of ``world`` equal slices."""
    chunk = flat.shape[0] // world
    return flat[rank * chunk:(rank + 1) * chunk]


def shard_params(params: Params, /, *, group: Any = None) -> ShardedParams:
    """This rank's slice of ``params`` (equal on every rank, e.g. after ``broadcast_params``).

    Returns:
      :class:`ShardedParams`: ``shard [ceil(N / world)]`` of the flat params (``N``
      elements in all) and the layout that :func:`gather_params` needs.

    Example (on every rank of a group of 2)::

        sharded = fg.distributed.shard_params(params)   # each rank: half of the elements
        params = fg.distributed.gather_params(sharded)  # the full pytree again
    """
    layout = layout_of(params, dist.get_world_size(group))
    return ShardedParams(local(flatten(params, layout.world), layout.world, dist.get_rank(group)).clone(), layout)


def gather_params(sharded: ShardedParams, /, *, group: Any = None) -> Params:
    """The full params pytree from every rank's :class:`ShardedParams` (a collective)."""
    if not isinstance(sharded, ShardedParams):
        raise TypeError(f"gather_params: expected the ShardedParams of shard_params or of a shard='params' "
                        f"step, got {type(sharded).__name__}.")
    return unflatten(all_gather(sharded.shard, group), sharded.layout)


def init_state(optimizer: GradientTransformation, params: Params | ShardedParams, /, *,
               shard: str | None = None, group: Any = None) -> PyTree:
    """The optimizer state a ``data_parallel(..., shard=shard)`` step takes.

    ``shard=None``: ``optimizer.init(params)``; ``"optimizer"`` (full ``params``) and
    ``"params"`` (:class:`ShardedParams`): the state of this rank's slice only.
    """
    if shard is None:
        return optimizer.init(params)
    if isinstance(params, ShardedParams):
        return optimizer.init({"flat": params.shard})
    world = dist.get_world_size(group)
    return optimizer.init({"flat": local(flatten(params, world), world, dist.get_rank(group))})


def save_checkpoint(path: str | Path, params: Params | ShardedParams, state: PyTree, /, *,
                    group: Any = None) -> None:
    """Write params and a sharded optimizer state as full tensors (a collective; rank 0 writes).

    The file (``torch.save`` of plain tensors, our own format) holds the full params
    pytree and the optimizer state with every slice gathered into a full flat tensor, so
    :func:`load_checkpoint` can shard it for any world size and ``shard`` mode other than
    None. Pass the ``params`` and ``state`` of a ``shard="optimizer"`` or ``"params"`` step.
    """
    if isinstance(params, ShardedParams):
        full, layout = gather_params(params, group=group), params.layout
    else:
        full, layout = params, layout_of(params, dist.get_world_size(group))
    leaves, spec = optree.tree_flatten(state)
    gathered = [all_gather(t, group)[:layout.numel] if _is_slice(t, layout) else t for t in leaves]
    plain = lambda t: t.detach().clone() if isinstance(t, Tensor) else t  # noqa: E731  (collectives' async tensors)
    if dist.get_rank(group) == 0:
        torch.save({"params": optree.tree_map(plain, full), "state": optree.tree_unflatten(spec, [plain(t) for t in gathered]),
                    "numel": layout.numel}, str(path))
    dist.barrier(group)


def load_checkpoint(path: str | Path, /, *, shard: str, group: Any = None) -> tuple[Params | ShardedParams, PyTree]:
    """``(params, state)`` for a ``data_parallel(..., shard=shard)`` step at this world size,
    from :func:`save_checkpoint` (written at any world size).

    The optimizer state holds this library's ``NamedTuple`` states, so the file is read with
    ``torch.load(weights_only=False)``: load only checkpoints you trust, as with any pickle.
    """
    if shard not in ("optimizer", "params"):
        raise ValueError(f"load_checkpoint: shard must be 'optimizer' or 'params', got {shard!r}.")
    saved = torch.load(str(path), weights_only=False)
    params, numel = saved["params"], saved["numel"]
    layout = layout_of(params, dist.get_world_size(group))
    rank = dist.get_rank(group)

    def reshard(t: Any) -> Any:
        if isinstance(t, Tensor) and t.ndim == 1 and t.numel() == numel:
            padded = torch.cat([t, t.new_zeros(layout.world * layout.chunk - numel)])
            return local(padded, layout.world, rank).clone()
        return t

    state = optree.tree_map(reshard, saved["state"])
    return (shard_params(params, group=group) if shard == "params" else params), state


def all_gather(t: Tensor, group: Any) -> Tensor:
    """Every rank's ``t`` concatenated (a functional collective: traces into a compiled graph)."""
    import torch.distributed._functional_collectives as funcol

    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor
    return gather(t, 0, group if group is not None else dist.group.WORLD)  # type: ignore[arg-type]


def reduce_scatter(t: Tensor, group: Any) -> Tensor:
    """The sum over ranks of ``t``, this rank's slice of it (a functional collective)."""
    import torch.distributed._functional_collectives as funcol

    scatter = getattr(funcol, "reduce_scatter_single", None) or funcol.reduce_scatter_tensor
    return scatter(t, "sum", 0, group if group is not None else dist.group.WORLD)  # type: ignore[arg-type]


def common_dtype(leaves: list[Tensor]) -> torch.dtype:
    """The promoted dtype of the floating leaves (float32 if none): the flat buffer's."""
    floating = [t.dtype for t in leaves if t.is_floating_point()]
    dtype = floating[0] if floating else torch.float32
    for d in floating[1:]:
        dtype = torch.promote_types(dtype, d)
    return dtype


def _is_slice(t: Any, layout: Layout) -> bool:
    return isinstance(t, Tensor) and t.ndim == 1 and t.numel() == layout.chunk
