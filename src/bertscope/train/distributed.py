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
    raised and stop as well (errors.SaidElsewhere, after leaving the job: a process that exits inside it aborts),
    instead of waiting for it in the next collective step and failing there with a connection error."""
    from ..errors import SaidElsewhere
    dist, rank, _ = current()
    if dist is None:
        return check()
    error = None
    if rank == 0:
        try:
            check()
        except Exception as e:                       # a user's mistake, or anything else: the others must not wait
            error = e
    said = [None if error is None else f"{type(error).__name__}: {error}"]
    dist.broadcast_object_list(said, src=0)
    if said[0] is not None:
        dist.destroy_process_group()
    if error is not None:
        raise error
    if said[0] is not None:
        raise SaidElsewhere(f"the first process stopped: {said[0]}")


def from_first(value):
    """Rank 0's value in every process (a choice each process would otherwise make by its own measurement)."""
    dist, _, world = current()
    if dist is None or world == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]
