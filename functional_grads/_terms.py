"""Losses made of several means over different counts (e.g. atoms and structures).

NOTE [term means]: a force-matching loss averages its energy term over structures and its
force term over atom components. On one process that is ``sum_k sums_k / counts_k``. Split
over ranks, the full-batch loss is ``sum_k (sum_r sums_k^r) / (sum_r counts_k^r)``: each
term needs its own global count, which one count per rank (the batch size) cannot give.
A :class:`TermMeans` exposes both halves, so ``distributed.data_parallel`` all-reduces the
counts first and then sums ``sum_k sums_k^r / counts_k`` over ranks: exactly the full-batch
loss and gradient, however unevenly the structures are split.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


class TermMeans:
    """A loss ``loss(params, *batch) = sum_k sums_k / max(counts_k, 1)``.

    Args:
      sums: ``sums(params, *batch) -> [K]``, each term's weighted sum over its items.
      counts: ``counts(*batch) -> [K]``, each term's number of items (floating point);
        they must not depend on the params.
      name: the loss's name, for ``repr``.

    A term with no items (count 0) contributes 0.
    """

    def __init__(self, sums: Callable[..., Tensor], counts: Callable[..., Tensor], name: str):
        self.sums = sums
        self.counts = counts
        self.name = name

    def __call__(self, params: Any, *batch: Any) -> Tensor:
        return self.normalised(params, self.counts(*batch), *batch)

    def normalised(self, params: Any, totals: Tensor, *batch: Any) -> Tensor:
        """``sum_k sums_k / max(totals_k, 1)``: this batch's share of a loss over ``totals`` items."""
        return (self.sums(params, *batch) / torch.clamp_min(totals, 1)).sum()

    def __repr__(self) -> str:
        return f"<{self.name} loss>"
