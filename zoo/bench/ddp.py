"""torch.distributed plumbing for `torchrun` launches (gloo on CPU, nccl on GPU).

A run is distributed when WORLD_SIZE > 1 in the environment (torchrun sets it, with RANK,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT). Every rank sees the same shuffled order of training
graphs; each step takes one global batch and gives rank r the graphs r, r + W, ... of it, so
the union over ranks is the single-process batch. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistContext:
    """Initialise the process group if launched under torchrun (or already initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    backend = "nccl" if device.type == "cuda" else "gloo"
    # a rank that never arrives should fail the run, not hang it for torch's default 30 minutes
    timeout = datetime.timedelta(seconds=float(os.environ.get("ZOO_DIST_TIMEOUT_S", "600")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


def teardown(ctx: DistContext) -> None:
    if ctx.initialised_here and dist.is_initialized():
        # anything still holding the group (a DDP reducer in a reference cycle) must go first:
        # freed after destroy_process_group, it would destroy the group with the GIL held (see
        # Trainer._unwrap_ddp)
        gc.collect()
        dist.destroy_process_group()


def shard(items: Sequence, ctx: DistContext) -> list:
    """This rank's share of a global batch: items rank, rank + W, ..."""
    return list(items[ctx.rank::ctx.world_size])


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_max(value: float, ctx: DistContext, device: torch.device) -> float:
    """The largest of the ranks' values, on every rank (e.g. the budget fraction a cosine lr follows)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if any rank says True (e.g. a time budget ran out on rank 0)."""
    return all_max(1.0 if flag else 0.0, ctx, device) > 0


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's value of a picklable object on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
