"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on GPU)."""

from ._data_parallel import all_reduce_mean as all_reduce_mean
from ._data_parallel import broadcast_params as broadcast_params
from ._data_parallel import data_parallel as data_parallel

__all__ = ["all_reduce_mean", "broadcast_params", "data_parallel"]
