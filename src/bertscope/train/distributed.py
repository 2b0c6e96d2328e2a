"""Several processes under torchrun: start-up from its environment variables, and who this process is."""

from __future__ import annotations

import os


def world_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def init_from_env(use_cuda: bool) -> None:
    """Join the torchrun job this process was started in (gloo on the CPU, nccl on GPUs); nothing when alone."""
    if world_from_env() <= 1:
        return
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def current():
    """(torch.distributed or None, rank, world size)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1
