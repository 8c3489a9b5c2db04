"""Data-parallel training under ``torchrun`` (PyTorch DDP): one run across K processes.

``cp-plan train`` needs no flag: under ``torchrun --nproc-per-node K`` the environment names the
rank and world size, the process group starts (NCCL on CUDA, gloo on CPU), each rank trains on
its 1/K slice of every global batch, and DDP averages the gradients, so the update equals the
single-process update on the whole batch (the mean of K equal-sized slice means is the batch
mean). Losses used for decisions (divergence, validation) are averaged over ranks, so every
rank takes the same branch. Rank 0 alone writes the run database and checkpoints; a
checkpoint holds the unwrapped model and the full optimizer state, so a run resumes at any
world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from planner.errors import CpPlanError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call started the process group and must end it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise CpPlanError(f"${name}={raw!r} is not an integer; launch with torchrun, which sets it") from None


def setup(device: torch.device, batch_size: int) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; return this rank's info and device.

    On CUDA each rank uses ``cuda:LOCAL_RANK``. The global batch must split evenly."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if batch_size % world:
        raise CpPlanError(f"batch_size={batch_size} does not split over {world} processes; use a multiple of "
                          f"{world} (each rank trains batch_size / world_size sequences per step)")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local_rank, owns), device


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP around ``model`` when distributed (gradients averaged)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's equal slice of a global batch (dimension 0)."""
    return x if not info.enabled else x.chunk(info.world_size, dim=0)[info.rank]


def mean(value: torch.Tensor, info: DistInfo) -> float:
    """The average of a scalar over ranks (every rank gets the same float)."""
    if not info.enabled:
        return value.item()
    t = value.detach().float().reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).item()
