"""AdamW without weight decay on biases and LayerNorms, and a linear warm-up then linear decay to zero."""

from __future__ import annotations

import torch


def optimizer(model, lr: float, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "norm" in name else decay).append(p)
    # fused: one kernel over all parameters instead of a Python loop over tensors (CPU and CUDA)
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=fused or None)


def schedule(opt, warmup_steps: int, total_steps: int):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def warmup_steps(warmup: float, total: int) -> int:
    """--warmup below 1 is a fraction of all steps, from 1 on a number of steps."""
    return max(1, int(warmup * total) if warmup < 1 else int(warmup))
