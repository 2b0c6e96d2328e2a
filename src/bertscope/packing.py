"""Packed batches: the tokens of many sequences concatenated, (T,), with cumulative lengths `cu_seqlens` (N + 1,).

Projections and the feed-forward run on the T real tokens only; attention needs each sequence on its own, so
`Packing` says where every token sits in a padded (N, Lmax) grid and moves attention's inputs there and back.
On CUDA in fp16/bf16, flash attention's variable-length kernel runs on the packed tokens directly.
"""

from __future__ import annotations

import functools

import torch


class Packing:
    """Where each token of a packed batch sits in a padded (N, Lmax) grid, so attention can run per sequence.

    cu_seqlens (N + 1,) = [0, len_0, len_0 + len_1, ...]; the T = cu_seqlens[-1] tokens are laid out sequence after
    sequence. `pad` / `unpad` move attention's inputs into the grid and its outputs back.

    spare > 0: the packed tensors carry that many rows more below the T tokens (training on the CPU rounds the
    row count so that oneDNN's products see few shapes, kernels.ROUND_ROWS). The spare rows sit in the grid's
    padding slots (or in extra sequences of padding below the N, `grid_seqs`), which no real query attends to:
    what they compute is never read, so their gradient is zero. Dropout draws its masks over them too, so with
    dropout on, the random stream (not the arithmetic) differs from a pass without them; spare rows depend only on
    the batch and the product chosen for this machine, so a resume on it stays exact.
    """

    def __init__(self, cu_seqlens: torch.Tensor, device=None, spare: int = 0):
        # Worked out on the CPU (a GPU would wait for every size read back), then moved to `device` once.
        cu = cu_seqlens.cpu()
        device = device or cu_seqlens.device
        lengths = cu[1:] - cu[:-1]                                                      # (N,)
        self.num_seqs, self.max_len = lengths.numel(), int(lengths.max())
        self.uniform = int(lengths.min()) == self.max_len and spare == 0  # the grid is then a plain reshape
        seq = torch.repeat_interleave(torch.arange(self.num_seqs), lengths)             # (T,)
        positions = torch.arange(seq.numel()) - cu[seq]                                 # (T,)
        index = seq * self.max_len + positions                                          # (T,) flat slot in grid
        free = self.num_seqs * self.max_len - seq.numel()                               # padding slots
        self.grid_seqs = self.num_seqs + max(0, -(-(spare - free) // self.max_len))     # (N + extra) rows of grid
        real = torch.zeros(self.grid_seqs * self.max_len, dtype=torch.bool)
        real[index] = True
        if spare:                                                # the spare rows: the first free slots
            index = torch.cat([index, (~real).nonzero().squeeze(1)[:spare]])           # (T + spare,)
        self.lengths, self.spare, self.starts = lengths, spare, cu.long()                # starts: (N + 1,) on the CPU
        if torch.device(device).type != "cpu":    # one host-to-device copy, not five (each one waits on a GPU)
            positions, index, real, cu = one_copy([positions, index, real, cu], device)
        self.positions, self.index = positions.to(device), index.to(device)
        self.real = real.view(self.grid_seqs, self.max_len).to(device)                  # (N + extra, Lmax)
        self.first = cu[:-1].to(device)                                                 # (N,) first token of each
        self.cu32 = cu.to(device=device, dtype=torch.int32)                             # for the varlen kernel

    def pad(self, x: torch.Tensor) -> torch.Tensor:                     # (T + spare, D) -> (N + extra, Lmax, D)
        if self.uniform:
            return x.view(self.num_seqs, self.max_len, x.shape[-1])
        grid = _IntoGrid.apply(x, self.index, self.grid_seqs * self.max_len)                  # (S, D)
        return grid.view(self.grid_seqs, self.max_len, x.shape[-1])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:                   # (N + extra, Lmax, D) -> (T + spare, D)
        if self.uniform:
            return x.reshape(self.num_seqs * self.max_len, x.shape[-1])
        return x.reshape(self.grid_seqs * self.max_len, x.shape[-1]).index_select(0, self.index)


class _IntoGrid(torch.autograd.Function):
    """x (T, D) written into a zero grid (S, D) at rows `index`; the gradient is the grid's, read at those rows.
    torch's index_copy does the same but keeps x itself for its backward (for its shape): a layer's fused Q/K/V
    output, 9 MB a layer at 2,000 tokens of MiniLM, alive until the backward pass."""

    @staticmethod
    def forward(ctx, x, index, slots):                                # (T, D) -> (S, D)
        ctx.save_for_backward(index)
        return x.new_zeros(slots, x.shape[-1]).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, grad):                                          # (S, D) -> (T, D)
        index, = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def one_copy(tensors: list[torch.Tensor], device) -> list[torch.Tensor]:
    """The tensors (integer or bool) on `device` through one copy: laid end to end as int64, moved, cut apart and
    given back their shapes and dtypes."""
    flat = torch.cat([t.reshape(-1).long() for t in tensors]).to(device)
    parts = flat.split([t.numel() for t in tensors])
    return [p.view(t.shape).to(t.dtype) for p, t in zip(parts, tensors)]


def _packing_for(cu_seqlens: torch.Tensor, device, spare: int = 0) -> Packing:
    return Packing(cu_seqlens, device, spare)


packing_for = _packing_for


def _rows_for(positions, packing, shape, device, with_first: bool, first_only: bool) -> "Rows":
    if first_only:
        return Rows.first_tokens(packing, shape, device)
    return Rows.at(positions, packing, shape, device, with_first)


rows_for = _rows_for


def keep_out_of_graphs() -> None:
    """Under torch.compile the sizes of a packed batch (and of the rows a last layer computes) are read on the CPU,
    so Packing and Rows must be made eagerly, outside the graph. Called by compile_model (torch.compiler.disable
    imports the compiler, ~2 s, so only then)."""
    global packing_for, rows_for
    if packing_for is _packing_for:
        packing_for = torch.compiler.disable(_packing_for)
    if rows_for is _rows_for:
        rows_for = torch.compiler.disable(_rows_for)


def cu_seqlens_of(lengths) -> torch.Tensor:
    """[0, l0, l0 + l1, ...] as a long tensor."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


class _FlashVarlen(torch.autograd.Function):
    """Flash attention over packed sequences (CUDA, fp16/bf16, no dropout): aten's kernels called directly.
    torch.nn.attention.varlen wraps the same two kernels in torch.library custom ops, whose first call imports the
    compiler (torch._dynamo, sympy): 6.2-6.5 s on an H200 host, so that `embed --bf16` on 64 texts took 6.1 s
    against 0.40 s without it. Here the first call costs what the kernel costs."""

    @staticmethod
    def forward(ctx, q, k, v, cu, max_len):                          # 3 × (T, nh, hd), cu (N + 1,) int32
        out, lse, seed, offset, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_len, max_len, 0.0, False, False)    # dropout 0, not causal, no debug mask
        ctx.save_for_backward(q, k, v, out, lse, cu, seed, offset)
        ctx.max_len = max_len
        return out                                                    # (T, nh, hd)

    @staticmethod
    def backward(ctx, grad):                                          # (T, nh, hd)
        q, k, v, out, lse, cu, seed, offset = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad.contiguous(), q, k, v, out, lse, cu, cu, ctx.max_len, ctx.max_len, 0.0, False, seed, offset)
        return dq, dk, dv, None, None


def flash_varlen(q, k, v, cu_seqlens, max_len):
    """Attention of each packed sequence over itself: q, k, v (T, nh, hd) -> (T, nh, hd)."""
    return _FlashVarlen.apply(q, k, v, cu_seqlens, max_len)


def varlen_attn():
    """Variable-length flash attention (CUDA, fp16/bf16), or None where this torch build has no such kernel."""
    return flash_varlen if hasattr(torch.ops.aten, "_flash_attention_forward") else None


def use_varlen(qkv: torch.Tensor, need_weights: bool, dropout: float) -> bool:
    return (qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and not need_weights and dropout == 0.0
            and varlen_attn() is not None and _flash_capable(qkv.device.index or 0))


@functools.lru_cache(maxsize=None)
def _flash_capable(device_index: int) -> bool:
    """Flash attention's kernels need compute capability 8.0 (Ampere) or later; ROCm builds bring their own."""
    return torch.version.hip is not None or torch.cuda.get_device_capability(device_index) >= (8, 0)


class Rows:
    """Some tokens of a batch, for a last layer that computes only those (the rows its heads read): `index` (R,)
    into the flattened tokens ((T,) packed, (B·L,) padded), ascending, and `grid`, a Packing of the R rows by
    sequence, so that attention puts each sequence's queries side by side, (N, R_max). `first` (N,) says where each
    sequence's first token sits among the rows, when the rows hold it."""

    def __init__(self, index: torch.Tensor, seq: torch.Tensor, num_seqs: int, device, first=None):
        counts = torch.bincount(seq, minlength=num_seqs)                                # (N,) rows per sequence
        self.index = index.to(device)                                                   # (R,)
        self.grid = Packing(torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), device)
        self.first = first.to(device) if first is not None else None                    # (N,)

    @classmethod
    def first_tokens(cls, packing: Packing | None, shape, device) -> "Rows":
        """The first token of every sequence: one row each (the grid is then a plain reshape)."""
        n = packing.num_seqs if packing is not None else shape[0]
        index = packing.first.cpu() if packing is not None else torch.arange(n) * shape[1]
        return cls(index, torch.arange(n), n, device, first=torch.arange(n))

    @classmethod
    def at(cls, positions: torch.Tensor, packing: Packing | None, shape, device, with_first: bool) -> "Rows":
        """The rows at `positions` (M,) (flat token indices, any order), with every sequence's first token added
        when `with_first`."""
        positions = positions.cpu()
        if packing is not None:
            n, starts = packing.num_seqs, packing.starts
        else:
            n, starts = shape[0], torch.arange(shape[0] + 1) * shape[1]
        wanted = torch.cat([positions, starts[:-1]]) if with_first else positions
        index = torch.unique(wanted)                                                    # (R,) ascending
        seq = torch.searchsorted(starts, index, right=True) - 1                         # (R,) sequence of each row
        first = torch.searchsorted(index, starts[:-1]) if with_first else None
        return cls(index, seq, n, device, first)
