"""Data-parallel and sharded (ZeRO) training on torch.distributed (gloo on CPU, NCCL on GPU)."""

from ._data_parallel import all_reduce_mean as all_reduce_mean
from ._data_parallel import broadcast_params as broadcast_params
from ._data_parallel import data_parallel as data_parallel
from ._sharding import ShardedParams as ShardedParams
from ._sharding import gather_params as gather_params
from ._sharding import init_state as init_state
from ._sharding import load_checkpoint as load_checkpoint
from ._sharding import save_checkpoint as save_checkpoint
from ._sharding import shard_params as shard_params

__all__ = ["ShardedParams", "all_reduce_mean", "broadcast_params", "data_parallel", "gather_params", "init_state",
           "load_checkpoint", "save_checkpoint", "shard_params"]
