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


def on_first(check) -> None:
    """check() on the first process alone (it writes the run's folder, so it checks it); the others learn whether it
    raised a user's mistake and stop as well (errors.SaidElsewhere), instead of waiting for it in the first
    collective step and failing there with a connection error."""
    from ..errors import BertscopeError, SaidElsewhere
    dist, rank, _ = current()
    if dist is None:
        return check()
    error = None
    if rank == 0:
        try:
            check()
        except BertscopeError as e:
            error = e
    said = [None if error is None else str(error)]
    dist.broadcast_object_list(said, src=0)
    if error is not None:
        raise error
    if said[0] is not None:
        raise SaidElsewhere(f"the first process stopped: {said[0]}")
