"""One way to time things: the best of a few runs of a function, waiting for the GPU where there is one."""

from __future__ import annotations

import time

import torch


def best_time(fn, repeats: int = 3, device=None, warmup: bool = True) -> float:
    """Seconds of the fastest of `repeats` calls of fn() (after one warm-up call unless warmup=False)."""
    cuda = device is not None and torch.device(device).type == "cuda"

    def once():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if warmup:
        fn()
    return min(once() for _ in range(repeats))
