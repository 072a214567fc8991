"""Interatomic potentials: energies, forces and stress of ragged batches of structures.

The atoms of all structures are concatenated (NOTE [ragged layout] in ``_batch.py``);
:func:`energy_forces_stress` differentiates a model's energies, :func:`force_matching` is
the training loss (for ``value_and_grad``, ``make_step`` and ``distributed.data_parallel``),
and :func:`collate`, :func:`neighbour_list` and :func:`edge_vectors` build the inputs.
"""

from ._batch import Batch as Batch
from ._batch import collate as collate
from ._batch import edge_vectors as edge_vectors
from ._batch import neighbour_list as neighbour_list
from ._forces import energy_forces_stress as energy_forces_stress
from ._forces import force_matching as force_matching

__all__ = ["Batch", "collate", "edge_vectors", "energy_forces_stress", "force_matching", "neighbour_list"]
