"""How a model pretrained from scratch starts (`bertscope pretrain --start`).

  standard  BERT's own: every weight normal(0, initializer_range), LayerNorms at 1 and 0 (Model._init_weights).
  local     BERT's, except where word order comes in. The position table (L, H) starts as sinusoids whose frequencies
            are chosen for locality, and the first layer's heads start reading the token at a fixed offset (-1, +1,
            -2, +2: one head each). The table stays fixed while pretraining.

Why `local` exists: a small BERT pretrained from BERT's start on a small corpus sits for thousands of steps on the
floor of no context (copy the visible token, guess the most frequent one at [MASK]) before attention by position
appears, suddenly (BENCHMARKS.md, the Chinese section): a random position table has no order in it, and a head of
64 dimensions cannot shift 128 unrelated position vectors by one. With order in the table and heads that already
read their neighbours, the model has the bigram signal from the first steps. The saved model is a plain BERT; only
the starting weights differ.

The offset heads. Position i's row holds, for frequencies w_k, the pair (sin i·w_k, cos i·w_k) × scale. A head whose
query rotates each pair of a band of frequencies forward by delta·w_k and whose key reads the same pairs scores
q_i·k_j = alpha · Σ_k cos((j - i - delta)·w_k): the most at j = i + delta. The band is chosen with delta·w_k around
π/2, where cos(delta·w_k) averages to zero, so that the rest of the token's vector (its word) scores nothing with
itself and the head does not simply attend to its own position. Pairs beyond the two bands carry slow frequencies
(where in the text a token is).

Why the table is fixed while pretraining: Adam's first hundred steps at a learning rate of 1e-3 move every entry by
about its own size (0.03) in directions the loss does not yet care about, and the order is gone before it is used
(measured on the Chinese corpus of bench/zh_pretrain.py, 1,000 steps × 16: with the table trained, the same start left
the floor on one seed of three; fixed, on each of the three seeds tried, 16.9–22.3% held-out MLM accuracy at step 1,000
against 14.2% from the standard start; BENCHMARKS.md).
"""

from __future__ import annotations

import math

import torch

from .errors import UsageError

STARTS = ("standard", "local")
OFFSETS = (-1, 1, -2, 2)            # one head each, in the first layer
SHARPNESS = 4.0                     # alpha: 60-75% of a head's attention on its offset at the start (Chinese text)
TABLE_SCALE = 1.5                   # the table's entries × initializer_range: as large as the word vectors' (rms)
FIXED = ("embeddings.position",)    # parameters kept fixed while pretraining with `local`


def frequencies(width: int) -> torch.Tensor:
    """width // 2 frequencies (radians per position): a band for offsets ±1, a band for ±2, then slow ones."""
    pairs = width // 2
    band = pairs // 4
    near = torch.linspace(0.35, 0.65, band) * math.pi              # delta · w ≈ π/2 for delta = ±1
    slow = 0.5 * 0.01 ** (torch.arange(pairs - 2 * band, dtype=torch.float32) / max(1, pairs - 2 * band - 1))
    return torch.cat([near, near / 2, slow])


def position_table(rows: int, width: int, scale: float) -> torch.Tensor:
    """(rows, width): row i is (sin i·w_k, cos i·w_k) for every frequency w_k, × scale."""
    angle = torch.arange(rows, dtype=torch.float32)[:, None] * frequencies(width)[None]    # (rows, width/2)
    table = torch.empty(rows, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return table * scale


def offset_head(width: int, head_dim: int, delta: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The query and key rows (head_dim, width) of a head that reads the token at offset delta."""
    w = frequencies(width)
    band = len(w) // 4
    first = 0 if abs(delta) == 1 else band
    q, k = torch.zeros(head_dim, width), torch.zeros(head_dim, width)
    for r in range(min(head_dim // 2, band)):
        pair = first + r
        d = delta * float(w[pair])
        cos, sin = math.cos(d), math.sin(d)
        q[2 * r, 2 * pair], q[2 * r, 2 * pair + 1] = cos, sin            # (sin, cos) of i·w rotated to (i+delta)·w
        q[2 * r + 1, 2 * pair], q[2 * r + 1, 2 * pair + 1] = -sin, cos
        k[2 * r, 2 * pair], k[2 * r + 1, 2 * pair + 1] = 1.0, 1.0
    root = math.sqrt(alpha)
    return q * root, k * root


def check_name(start: str) -> None:
    """Refuse a start that does not exist, naming the option (before any model is built)."""
    if start not in STARTS:
        raise UsageError(f"--start {start!r}: use {' or '.join(STARTS)}")


def check_start(start: str, config) -> None:
    """Refuse a start this model cannot take, naming the option."""
    check_name(start)
    if start == "standard":
        return
    c = config
    if c.family.factorised_embeddings:
        raise UsageError(f"--start local: {c.family.title}'s position table is {c.embedding_dim} wide and reaches "
                         "the heads through a projection; the local start is built for BERT and RoBERTa (use "
                         "--start standard)")
    head_dim = c.hidden_size // c.num_attention_heads
    if head_dim < 4 or head_dim % 2 or c.hidden_size < 16:
        raise UsageError(f"--start local: heads of {head_dim} dimensions (hidden {c.hidden_size} / "
                         f"{c.num_attention_heads} heads) are too narrow to read an offset; it needs an even head "
                         "size of at least 4")


@torch.no_grad()
def apply_start(model, start: str) -> tuple[str, ...]:
    """Give a freshly built model the start `start`; returns the parameters to keep fixed while pretraining."""
    c = model.config
    check_start(start, c)
    if start == "standard":
        return ()
    table = model.embeddings.position.weight                                       # (P, H)
    table.copy_(position_table(*table.shape, TABLE_SCALE * c.initializer_range))
    if model.embeddings.position.padding_idx is not None:                          # RoBERTa's reserved row
        table[model.embeddings.position.padding_idx].zero_()
    attention = model.encoder.layers[0].attention
    H, hd = c.hidden_size, attention.head_dim
    weight, bias = attention.qkv.weight, attention.qkv.bias                        # (3H, H): Q, K, V stacked
    for head, delta in enumerate(OFFSETS[:attention.heads]):
        q, k = offset_head(H, hd, delta, SHARPNESS)
        rows = slice(head * hd, (head + 1) * hd)
        weight[rows], bias[rows] = q, 0.0
        rows = slice(H + head * hd, H + (head + 1) * hd)
        weight[rows], bias[rows] = k, 0.0
    return FIXED
