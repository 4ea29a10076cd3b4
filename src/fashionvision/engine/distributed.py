"""Multi-GPU and multi-node training through ``torchrun`` only.

The user launches the processes; this module reads torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and never re-launches
anything::

    torchrun --nproc_per_node=4 -m fashionvision.cli.train trainer=ddp hydra.run.dir=runs/exp1

One run folder for all ranks: Hydra would give every rank its own timestamped folder, so
under torchrun ``fashion-train`` requires ``hydra.run.dir=DIR`` (or the environment variable
``FASHION_RUN_DIR``, which it turns into that override). Rank 0 writes checkpoints,
TensorBoard files and metrics; the other ranks only train. NCCL is used on CUDA, gloo on the
CPU (the test suite runs two gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP and ``torch.compile`` wrappers (in any nesting)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """The rank layout from torchrun's environment (single process when it is absent)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun with more than one process."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return info


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalars over ranks (identity on one process)."""
    if not values or not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def all_true(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a bool tensor on the device) held on every rank, as a device tensor: no host read.

    One MIN all-reduce when distributed, so that every rank takes the same branch; the caller
    reads the result once.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = flag.reshape(1).to(torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor[0].bool()


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over ranks (identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def broadcast_object(obj, src: int = 0):
    """Send a small picklable object (metrics, a decision) from ``src`` to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last forward of an
    epoch every rank holds statistics updated by its own batch; this makes them agree again
    before validation and checkpoints.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)
