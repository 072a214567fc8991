"""Energies, forces and stress of ragged batches of structures, and the force-matching loss."""

from __future__ import annotations

from typing import Any, Callable, Literal, cast

import torch
from torch import Tensor

from .. import _checks
from .._per_sample import sum_grad
from .._terms import TermMeans
from .._typing import choices

EnergyFn = Callable[..., Tensor]
"""``energy_fn(params, positions [N, 3], cell [S, 3, 3] or None, batch [N], *args) -> [S]``."""

EnergyMode = Literal["per_atom", "per_structure"]


def energy_forces_stress(energy_fn: EnergyFn, /, *, stress: bool = False) -> Callable[..., tuple[Tensor, Tensor, Tensor | None]]:
    """Energies, forces ``-dE/dpositions`` and, optionally, stress of a ragged batch.

    Args:
      energy_fn: ``energy_fn(params, positions [N, 3], cell [S, 3, 3] or None, batch [N],
        *args) -> energies [S]``, one energy per structure (NOTE [ragged layout]); ``*args``
        carries whatever the model needs (species, ``i, j, shifts`` of a neighbour list).
        Edge vectors must be built from ``positions`` *and* ``cell``
        (:func:`edge_vectors`), so that the strain reaches periodic images.
      stress: also return the stress ``(1 / |det cell|) dE/d(strain)``, per structure, with
        the symmetric strain ``eps`` applied to positions and cell alike
        (``r -> r (1 + eps)``, ``cell -> cell (1 + eps)``): ASE's convention and sign
        (``atoms.get_stress(voigt=False)``). Structures with a zero cell (non-periodic ones
        in a :func:`collate` batch) get stress 0. Needs a ``cell``.

    Returns:
      ``fn(params, positions, cell, batch, *args) -> (energies [S], forces [N, 3], stress
      [S, 3, 3] or None)``, differentiable w.r.t. params (an outer gradient trains on
      forces and stress) and w.r.t. positions.

    Example:
      >>> def energy(p, r, cell, batch):  # a harmonic well per atom, summed per structure
      ...     return torch.zeros(2).index_add(0, batch, p["k"] * (r ** 2).sum(1))
      >>> E, F, _ = energy_forces_stress(energy)({"k": torch.tensor(0.5)}, torch.ones(3, 3), None,
      ...                                        torch.tensor([0, 0, 1]))
      >>> E.tolist(), F[0].tolist()
      ([3.0, 1.5], [-1.0, -1.0, -1.0])
    """
    api = "atoms.energy_forces_stress"
    _checks.check_callable(api, energy_fn, "energy_fn")
    if not isinstance(stress, bool):
        raise TypeError(f"{api}: stress must be True or False, got {stress!r}.")

    def fn(params: Any, positions: Tensor, cell: Tensor | None, batch: Tensor, *args: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        _check_structures(api, positions, cell, batch, stress)

        def energies(r: Tensor) -> Tensor:
            return _energies(api, energy_fn(params, r, cell, batch, *args), cell)

        if not stress or cell is None:
            dr, E = sum_grad(energies, positions, params)
            return E, -dr, None
        cells: Tensor = cell

        def strained_energies(x: tuple[Tensor, Tensor]) -> Tensor:
            r, eps = x
            strain = (eps + eps.transpose(1, 2)) / 2  # symmetric: no rotation
            r = r + torch.einsum("ni,nij->nj", r, strain[batch])  # pragma: no mutate (einsum is case-blind)
            return _energies(api, energy_fn(params, r, cells + cells @ strain, batch, *args), cells)

        (dr, deps), E = sum_grad(strained_energies, (positions, positions.new_zeros(cell.shape)), params)
        volume = torch.linalg.det(cell).abs()
        periodic = volume > 0
        per_volume = torch.where(periodic, 1 / torch.where(periodic, volume, 1), 0)  # pragma: no mutate (masked)
        return E, -dr, deps * per_volume[:, None, None]

    return fn


def force_matching(
    energy_fn: EnergyFn,
    /,
    *,
    energy_weight: float = 1.0,
    force_weight: float = 1.0,
    stress_weight: float = 0.0,
    energy: EnergyMode = "per_atom",
) -> TermMeans:
    """The usual potential-fitting loss on energies, forces and (optionally) stress.

    ``loss(params, positions, cell, batch, *args, energy, forces[, stress])`` with the
    reference labels last (``stress`` only when ``stress_weight > 0``), shapes as in
    :class:`Batch`, ``*args`` passed on to ``energy_fn``. The loss is
    ``energy_weight * mean_S (dE)^2 + force_weight * mean_{3N} (dF)^2 +
    stress_weight * mean_{9 S_periodic} (dsigma)^2``:

    - energies per atom by default (``dE = (E - E_ref) / n_atoms``): energy is extensive,
      so per-structure errors would weigh large structures by their size squared and tie
      the weight to the batch's composition; ``energy="per_structure"`` uses ``E - E_ref``.
    - forces per component, averaged over every atom of the batch: each atom counts once,
      whatever the size of its structure.
    - stress per component, averaged over the periodic structures only (non-periodic ones
      have no stress: their zero cell masks them out).

    Each term is a mean over its own count (structures, atom components, periodic
    structures), so ``distributed.data_parallel`` weights each by its global count
    (NOTE [term means]) and uneven shards give exactly the full-batch loss.

    Args:
      energy_fn: as in :func:`energy_forces_stress`.
      energy_weight, force_weight, stress_weight: the terms' weights (>= 0); a zero weight
        skips its term (``force_weight=0, stress_weight=0`` needs no derivative at all).
      energy: ``"per_atom"`` (default) or ``"per_structure"``.

    Example:
      >>> def energy(p, r, cell, batch):
      ...     return torch.zeros(cell.shape[0]).index_add(0, batch, p["k"] * (r ** 2).sum(1))
      >>> loss = force_matching(energy)
      >>> r, cell, batch = torch.ones(3, 3), torch.zeros(2, 3, 3), torch.tensor([0, 0, 1])
      >>> loss({"k": torch.tensor(0.5)}, r, cell, batch, torch.tensor([3.0, 1.5]), -r)
      tensor(0.)
    """
    api = "atoms.force_matching"
    _checks.check_callable(api, energy_fn, "energy_fn")
    weights = {"energy_weight": energy_weight, "force_weight": force_weight, "stress_weight": stress_weight}
    for name, w in weights.items():
        _checks.check_number(api, name, w)
    _checks.check_choice(api, "energy", energy, choices(EnergyMode))
    n_labels = 3 if stress_weight else 2
    derivatives = energy_forces_stress(energy_fn, stress=bool(stress_weight))

    def split(batch: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Tensor, ...]]:
        if len(batch) < 3 + n_labels:
            labels = "energy, forces" + (", stress" if stress_weight else "")
            raise TypeError(f"{api}: expected (params, positions, cell, batch, *args, {labels}): "
                            f"got {len(batch) + 1} argument(s).")
        return batch[:-n_labels], batch[-n_labels:]

    def sums(params: Any, *batch: Any) -> Tensor:
        inputs, labels = split(batch)
        positions, cell, index, *args = inputs
        _check_labels(api, positions, cell, labels)
        if force_weight or stress_weight:
            E, F, sigma = derivatives(params, *inputs)
        else:
            E, F, sigma = _energies(api, energy_fn(params, *inputs), cell), None, None
        dE = E - labels[0]
        if energy == "per_atom":
            dE = dE / _atoms_per_structure(index, labels[0])
        terms = [energy_weight * (dE ** 2).sum()]
        terms.append(force_weight * ((F - labels[1]) ** 2).sum() if F is not None else dE.new_zeros(()))
        if stress_weight:
            periodic = _periodic(cell)[:, None, None]
            sigma = cast(Tensor, sigma)  # pragma: no mutate (typing only: stress_weight > 0 built it with stress)
            terms.append(stress_weight * torch.where(periodic, sigma - labels[2], 0).pow(2).sum())
        return torch.stack(terms)

    def counts(*batch: Any) -> Tensor:
        (positions, cell, *_), labels = split(batch)
        # Sizes times a tensor, not float(size): a traced step keeps the batch sizes symbolic.
        one = positions.new_ones(())
        out = torch.stack([one * labels[0].shape[0], one * (3 * positions.shape[0])])
        if stress_weight:
            n_periodic = _periodic(cell).sum(0, keepdim=True)  # pragma: no mutate ([S] -> [1])
            out = torch.cat([out, 9 * n_periodic.to(out.dtype)])  # pragma: no mutate (cat promotes the dtype)
        return out

    return TermMeans(sums, counts, api)


def _periodic(cell: Tensor) -> Tensor:
    """``[S]`` bool: the structures with a cell (a zero cell marks a non-periodic one)."""
    return torch.linalg.det(cell) != 0


def _atoms_per_structure(batch: Tensor, like: Tensor) -> Tensor:
    return torch.zeros_like(like).index_add(0, batch, torch.ones_like(batch, dtype=like.dtype)).clamp_min(1)


def _check_structures(api: str, positions: Any, cell: Any, batch: Any, stress: bool) -> None:
    """Shape and dtype checks only (nothing that reads values: they stay compile-friendly)."""
    if not (isinstance(positions, Tensor) and positions.is_floating_point() and positions.ndim == 2
            and positions.shape[1] == 3):
        raise ValueError(f"{api}: positions must be a floating tensor [N, 3], got {_checks.describe(positions)}.")
    if not (isinstance(batch, Tensor) and batch.dtype == torch.int64 and batch.shape == positions.shape[:1]):
        raise ValueError(f"{api}: batch must be an int64 tensor [N] = [{positions.shape[0]}] giving each atom's "
                         f"structure, got {_checks.describe(batch)}.")
    if cell is None:
        if stress:
            raise ValueError(f"{api}: stress=True needs a cell per structure [S, 3, 3], got cell=None. Pass the "
                             "cells (atoms.collate gives non-periodic structures a zero cell; their stress is 0).")
        return
    if not (isinstance(cell, Tensor) and cell.dtype == positions.dtype and cell.ndim == 3 and cell.shape[1:] == (3, 3)):
        raise ValueError(f"{api}: cell must be None or a tensor [S, 3, 3] of positions' dtype "
                         f"({positions.dtype}), got {_checks.describe(cell)}.")


def _check_labels(api: str, positions: Tensor, cell: Tensor | None, labels: tuple[Tensor, ...]) -> None:
    first = labels[0]
    S = cell.shape[0] if cell is not None else first.shape[0] if isinstance(first, Tensor) and first.ndim == 1 else None
    want = {"energy": (S,), "forces": (positions.shape[0], 3), "stress": (S, 3, 3)}
    for (name, shape), got in zip(want.items(), labels):
        if not isinstance(got, Tensor) or got.shape != shape:
            names = ", ".join(list(want)[:len(labels)])
            raise ValueError(f"{api}: the {name} label must be a tensor "
                             f"{'[S]' if S is None else _checks.fmt(shape)}, got {_checks.describe(got)}. "
                             f"The labels are the last {len(labels)} arguments ({names}); stress is "
                             "one of them only when stress_weight > 0.")


def _energies(api: str, out: Any, cell: Tensor | None) -> Tensor:
    out = _checks.check_tensor_output(api, out, "energy_fn")
    if out.ndim != 1 or (cell is not None and out.shape[0] != cell.shape[0]):
        want = f"[S] = [{cell.shape[0]}]" if cell is not None else "[S]"
        raise ValueError(f"{api}: energy_fn must return one energy per structure, {want}, got shape "
                         f"{_checks.fmt(out.shape)}. Sum atomic energies per structure, e.g. "
                         "torch.zeros(cell.shape[0]).index_add(0, batch, atomic_energies).")
    return out
