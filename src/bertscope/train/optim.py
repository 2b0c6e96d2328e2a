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


class KeptRows:
    """Large embedding tables (not tied to another weight) train with sparse gradients that are written into one
    dense buffer per table, kept from step to step. A dense gradient of the word table (all-MiniLM-L6-v2: 30,522 ×
    384, 47 MB) is otherwise allocated afresh every step, and glibc serves blocks that size by mmap, so each step
    pays ~11,000 page faults to zero it (26 ms a step on the 2-core AMD EPYC, 7% of a token-classification step).
    Here only the rows the previous step wrote are cleared. The optimizer sees the same dense gradient as before."""

    MIN_ROWS = 10_000

    def __init__(self, model):
        seen: dict[int, int] = {}
        for _, p in model.named_parameters(remove_duplicate=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
        self.tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and not m.sparse
                       and m.num_embeddings >= self.MIN_ROWS and m.weight.requires_grad and seen[id(m.weight)] == 1]
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for m in self.tables:
            m.sparse = True

    def densify(self):
        """After backward: each table's sparse gradient becomes its kept dense buffer (rows of the last step zeroed)."""
        for m in self.tables:
            g = m.weight.grad
            if g is None or not g.is_sparse:
                continue
            buffer, rows = self.kept.get(id(m), (None, None))
            if buffer is None:
                buffer = torch.zeros_like(m.weight)
            elif rows is not None:
                buffer.index_fill_(0, rows, 0.0)
            g = g.coalesce()
            rows = g.indices()[0]
            buffer.index_copy_(0, rows, g.values().to(buffer.dtype))
            m.weight.grad = buffer
            self.kept[id(m)] = (buffer, rows)

    def close(self):
        for m in self.tables:
            m.sparse = False
        self.kept.clear()
