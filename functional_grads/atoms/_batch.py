"""Ragged batches of structures: collate, a neighbour list with periodic images, edge vectors.

NOTE [ragged layout]: the atoms of all structures are concatenated (``positions [N, 3]``,
``batch [N]`` the structure of each atom) and every per-structure array leads with ``S``
(``cell [S, 3, 3]``, ``energy [S]``), every per-edge array with ``E`` (``i``, ``j``,
``shifts``). Each size is the leading dimension of a tensor, so a compiled step marks
them dynamic and serves batches of any size without recompiling, and a model never
needs a data-dependent size (``batch.max() + 1``): ``S`` is ``cell.shape[0]``. Structures
with no periodic direction get a zero cell, which also marks them for the stress term.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # ASE's order: xx yy zz yz xz xy


class Batch(NamedTuple):
    """Structures concatenated into one ragged batch (NOTE [ragged layout]).

    ``positions [N, 3]``, ``numbers [N]`` (int64), ``cell [S, 3, 3]`` (rows are the lattice
    vectors; zero for non-periodic structures), ``pbc [S, 3]`` (bool), ``batch [N]`` (int64,
    the structure of each atom), and the labels when every structure has them:
    ``energy [S]``, ``forces [N, 3]``, ``stress [S, 3, 3]`` (else None).
    """

    positions: Tensor
    numbers: Tensor
    cell: Tensor
    pbc: Tensor
    batch: Tensor
    energy: Tensor | None
    forces: Tensor | None
    stress: Tensor | None


def collate(structures: Sequence[Any], /, *, dtype: torch.dtype | None = None) -> Batch:
    """Concatenate structures into one :class:`Batch`.

    Args:
      structures: each a mapping with ``"positions"`` ``[n, 3]`` and ``"numbers"`` ``[n]``,
        optionally ``"cell"`` ``[3, 3]``, ``"pbc"`` (a bool or 3 bools; default: periodic
        when a cell is given), and labels ``"energy"`` (a number), ``"forces"`` ``[n, 3]``,
        ``"stress"`` ``[3, 3]`` or Voigt ``[6]``; or an ``ase.Atoms`` (labels from its
        calculator's results, if any). Arrays may be lists, numpy arrays or tensors.
      dtype: the floating dtype (default: torch's default dtype).

    Returns:
      A :class:`Batch`. A label is kept only if every structure has it.

    Example:
      >>> b = collate([{"positions": [[0, 0, 0], [1, 0, 0]], "numbers": [1, 1]},
      ...              {"positions": [[0, 0, 0]], "numbers": [8], "cell": torch.eye(3) * 3}])
      >>> b.positions.shape, b.batch.tolist(), b.pbc.tolist()
      (torch.Size([3, 3]), [0, 0, 1], [[False, False, False], [True, True, True]])
    """
    api = "atoms.collate"
    dtype = dtype or torch.get_default_dtype()
    if len(structures) == 0:
        raise ValueError(f"{api}: got no structures; pass a list of at least one.")
    items = [_read(api, k, s, dtype) for k, s in enumerate(structures)]
    labels = {name: None if any(it[name] is None for it in items) else [it[name] for it in items]
              for name in ("energy", "forces", "stress")}
    return Batch(
        positions=torch.cat([it["positions"] for it in items]),
        numbers=torch.cat([it["numbers"] for it in items]),
        cell=torch.stack([it["cell"] for it in items]),
        pbc=torch.stack([it["pbc"] for it in items]),
        batch=torch.cat([torch.full((len(it["positions"]),), k) for k, it in enumerate(items)]),  # int64
        energy=None if labels["energy"] is None else torch.stack(labels["energy"]),
        forces=None if labels["forces"] is None else torch.cat(labels["forces"]),
        stress=None if labels["stress"] is None else torch.stack(labels["stress"]),
    )


def neighbour_list(positions: Tensor, cell: Tensor | None, pbc: Tensor | None, batch: Tensor, cutoff: float,
                   /) -> tuple[Tensor, Tensor, Tensor]:
    """All pairs closer than ``cutoff``, periodic images included, as ASE's ``"ijS"``.

    Args:
      positions: ``[N, 3]``. cell: ``[S, 3, 3]`` or None (nothing periodic). pbc:
        ``[S, 3]`` bool or None (periodic where the cell is nonzero). batch: ``[N]`` int64.
      cutoff: the pair cutoff, in the units of ``positions``.

    Returns:
      ``(i [E], j [E], shifts [E, 3])``: atom ``j`` of image ``shifts`` (integer lattice
      offsets, in ``positions``' dtype) is a neighbour of atom ``i``; both directions of
      each pair are listed, an atom is never its own neighbour in image 0, and
      :func:`edge_vectors` gives ``r_j - r_i + shifts @ cell``.

    Cost and limits: every structure on its own, all pairs against all images that can
    lie within ``cutoff``: ``O(n^2 x images)`` time and memory for a structure of ``n``
    atoms, a Python loop over structures, no gradient. Fine for the few hundred atoms
    per structure of training sets; for thousands of atoms use a cell-list code (e.g.
    ``vesin`` or ``matscipy``) and pass its ``i, j, shifts`` to the model instead.

    Example:
      >>> i, j, s = neighbour_list(torch.tensor([[0., 0, 0], [1, 0, 0]]), None, None,
      ...                          torch.tensor([0, 0]), 1.5)
      >>> i.tolist(), j.tolist()
      ([0, 1], [1, 0])
    """
    api = "atoms.neighbour_list"
    if not (isinstance(cutoff, (int, float)) and cutoff > 0):
        raise ValueError(f"{api}: cutoff must be a positive number, got {cutoff!r}.")
    positions, batch = positions.detach(), batch.detach()
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    for s in batch.unique().tolist():
        atoms = (batch == s).nonzero().squeeze(1)
        r = positions[atoms]
        images = offsets = r.new_zeros(1, 3)  # a cluster: image 0 only
        if cell is not None:
            periodic = cell[s].ne(0).any(dim=1) if pbc is None else pbc[s].bool()
            images = _images(api, r, cell[s].detach(), periodic, cutoff, s)
            offsets = images @ cell[s].detach()
        d = (r[None, :, None, :] - r[:, None, None, :] + offsets[None, None]).norm(dim=-1)  # [n, n, images]
        keep = d < cutoff
        home = (images == 0).all(dim=1)
        keep &= ~(torch.eye(len(r), dtype=torch.bool)[:, :, None] & home[None, None])
        a, b, g = keep.nonzero(as_tuple=True)
        out.append((atoms[a], atoms[b], images[g]))
    if not out:
        return (torch.zeros(0, dtype=torch.int64),) * 2 + (positions.new_zeros(0, 3),)  # type: ignore[return-value]
    i, j, shifts = (torch.cat(t) for t in zip(*out))
    return i, j, shifts


def edge_vectors(positions: Tensor, cell: Tensor | None, batch: Tensor, i: Tensor, j: Tensor,
                 shifts: Tensor | None, /) -> Tensor:
    """``r_j - r_i + shifts @ cell[batch[i]]``: ``[E, 3]``, differentiable w.r.t. positions and
    cell (so forces and stress flow through it). ``shifts`` may be None without a cell.

    Example:
      >>> edge_vectors(torch.zeros(2, 3), torch.eye(3)[None] * 2, torch.tensor([0, 0]),
      ...              torch.tensor([0]), torch.tensor([1]), torch.tensor([[1., 0, 0]]))
      tensor([[2., 0., 0.]])
    """
    vectors = positions[j] - positions[i]
    if cell is None or shifts is None:
        return vectors
    return vectors + torch.einsum("ek,ekl->el", shifts.to(vectors.dtype), cell[batch[i]])  # pragma: no mutate


def _images(api: str, r: Tensor, cell: Tensor, periodic: Tensor, cutoff: float, s: int) -> Tensor:
    """The integer lattice offsets ``[images, 3]`` that can hold a neighbour within ``cutoff``
    of atoms ``r [n, 3]`` (unwrapped positions included: their spread widens the reach)."""
    if not periodic.any():
        return r.new_zeros(1, 3)
    if torch.linalg.matrix_rank(cell) < 3:
        raise ValueError(f"{api}: structure {s} is periodic (pbc {periodic.tolist()}) but its cell "
                         f"{cell.tolist()} is singular; give three independent lattice vectors.")
    inverse = torch.linalg.inv(cell)  # columns: reciprocal vectors
    # An over-estimate of heights' inverse or of the spread only adds images (same edges):
    heights = 1 / inverse.norm(dim=0)  # pragma: no mutate (distance between opposite faces)
    fractional = r @ inverse
    spread = fractional.amax(0) - fractional.amin(0)  # pragma: no mutate (r is never empty)
    reach = [math.ceil(cutoff / float(h) + float(w)) if p else 0 for h, w, p in zip(heights, spread, periodic)]
    grid = itertools.product(*(range(-n, n + 1) for n in reach))
    return torch.tensor(list(grid), dtype=r.dtype)


def _read(api: str, k: int, s: Any, dtype: torch.dtype) -> dict[str, Any]:
    """One structure as tensors: positions, numbers, cell (zero when nothing is periodic),
    pbc, and its labels or None."""
    if hasattr(s, "get_positions"):  # an ase.Atoms
        results = s.calc.results if s.calc is not None else {}
        s = {"positions": s.get_positions(), "numbers": s.get_atomic_numbers(), "cell": s.cell[:],
             "pbc": s.pbc, **{key: results.get(key) for key in ("energy", "forces", "stress")}}
    if not isinstance(s, Mapping) or "positions" not in s or "numbers" not in s:
        raise TypeError(f"{api}: structure {k} must be a mapping with 'positions' and 'numbers' (or an ase.Atoms), "
                        f"got {type(s).__name__}.")
    positions = torch.as_tensor(s["positions"], dtype=dtype).reshape(-1, 3)
    n = len(positions)
    numbers = torch.as_tensor(s["numbers"], dtype=torch.int64).reshape(-1)
    if len(numbers) != n:
        raise ValueError(f"{api}: structure {k} has {n} positions but {len(numbers)} numbers.")
    cell = s.get("cell")
    pbc = torch.as_tensor(s.get("pbc", cell is not None), dtype=torch.bool).expand(3).clone()
    cell = torch.zeros(3, 3, dtype=dtype) if cell is None or not pbc.any() else torch.as_tensor(cell, dtype=dtype)
    if cell.shape != (3, 3):
        raise ValueError(f"{api}: structure {k} has a cell of shape {list(cell.shape)}; give [3, 3] "
                         "(rows are the lattice vectors).")
    out: dict[str, Any] = {"positions": positions, "numbers": numbers, "cell": cell, "pbc": pbc}
    out["energy"] = None if s.get("energy") is None else torch.as_tensor(s["energy"], dtype=dtype).reshape(())
    out["forces"] = None if s.get("forces") is None else torch.as_tensor(s["forces"], dtype=dtype).reshape(n, 3)
    stress = s.get("stress")
    if stress is not None:
        stress = torch.as_tensor(stress, dtype=dtype)
        if stress.shape == (6,):
            full = stress.new_zeros(3, 3)
            for v, (a, b) in zip(stress, _VOIGT):
                full[a, b] = full[b, a] = v
            stress = full
        stress = stress.reshape(3, 3)
    out["stress"] = stress
    return out
