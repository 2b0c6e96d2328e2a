"""BERT, RoBERTa and ALBERT encoders with their heads, read top to bottom.

    input_ids (B, L) ─ Embeddings ─ (B, L, H) ─ N × EncoderLayer ─ (B, L, H) ─┬─ MLMHead ─ (B, L, V)
    or inputs_embeds   word + position + segment,   self-attention +          ├─ TokenClassifier ─ (B, L, C)
      (B, L, E)        LayerNorm, dropout [ALBERT:  feed-forward, each        ├─ SpanHead ─ start, end (B, L)
                       E-wide tables, then E -> H]  with residual + LN        ├─ Pooler (first token) ─ (B, H)
                                                                              │    ├─ PairHead (NSP / SOP) ─ (B, 2)
                                                                              │    └─ Classifier ─ (B, C)
                                                                              └─ RobertaClassifier (first token)

B = batch, L = sequence length, H = hidden size, E = embedding size (ALBERT), V = vocabulary, C = labels,
nh = heads, hd = head dim. A packed batch (tokens of many sequences concatenated, with cumulative lengths
`cu_seqlens`) runs the same modules on (T, H) instead of (B, L, H); only attention pads each sequence back out
(packing.py). What differs between the families comes from their records (families.py); the products of every
Linear come from kernels.py.

This module imports torch alone. Checkpoint names (`attention.self.query.weight`) live in checkpoint.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .errors import InputError
from .families import HEADS
from .inputs import check_flat_indices, check_inputs, check_labels, check_pair_labels
from .kernels import Dropout, Linear, dropout, rows_multiple
from . import packing as packed
from .packing import Packing, Rows, use_varlen, varlen_attn


def activation(name: str):
    return {
        "gelu": F.gelu,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "silu": F.silu,
        "swish": F.silu,
        "tanh": torch.tanh,
    }[name]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's most negative value where not (as the reference does)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def classifier_dropout(c: Config) -> float:
    """The dropout before a classifier, as the reference reads it for this family."""
    if c.family.classifier_dropout_key == "classifier_dropout_prob":
        return c.classifier_dropout_prob
    return c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout


# ---- embeddings -----------------------------------------------------------------------------------------------------

class Embeddings(nn.Module):
    """word + position + token type, LayerNorm, dropout; ALBERT factorises: E-wide tables, then a Linear E -> H."""

    def __init__(self, c: Config):
        super().__init__()
        E = c.embedding_dim
        self.word = nn.Embedding(c.vocab_size, E, padding_idx=c.pad_token_id)
        # RoBERTa's table reserves row pad_token_id for padding; its real positions start at pad_token_id + 1.
        self.position = nn.Embedding(c.max_position_embeddings, E,
                                     padding_idx=c.pad_token_id if c.family.positions_after_padding else None)
        self.token_type = nn.Embedding(c.type_vocab_size, E)
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)
        self.project = Linear(E, c.hidden_size) if c.family.factorised_embeddings else None

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds=None):  # each (B, L), or (T,) packed
        x = self.word(input_ids) if inputs_embeds is None else inputs_embeds   # (B, L, E)
        x = x + self.token_type(token_type_ids)                       # (B, L, E)
        x = x + self.position(position_ids)                           # (B, L, E)
        x = self.dropout(self.norm(x))                                # (B, L, E)
        if self.project is not None:
            x = self.project(x)                                       # (B, L, H)   ALBERT: E -> H
        return x


# ---- one encoder layer ----------------------------------------------------------------------------------------------

# On the CPU, SDPA's fused kernel costs more than three plain products for short sequences: batch 32, 12 heads of 32,
# 2 threads (AMD EPYC, AVX2): L = 13 1.19 ms fused against 0.51 ms spelled out, L = 62 5.98 against 5.30, L = 128
# 13.8 against 40; in training with dropout (forward + backward) the spelled-out form wins up to L = 128.
CPU_SPELLED_OUT_UP_TO = 64
CPU_SPELLED_OUT_UP_TO_TRAINING = 128


def spelled_out_attention(q: torch.Tensor, dropout: float) -> bool:
    """Attention as q·kᵀ, softmax, ·v rather than one SDPA call: on the CPU, for sequences up to these lengths."""
    if q.device.type != "cpu":
        return False
    return q.shape[-2] <= (CPU_SPELLED_OUT_UP_TO_TRAINING if dropout > 0 else CPU_SPELLED_OUT_UP_TO)


# On CUDA, SDPA may pick cuDNN's attention for bf16/fp16 with a mask, and cuDNN builds an execution plan for every new
# (B, L): packed batches bring a new shape almost every step. On an H200 (torch 2.11), 100 MiniLM training steps
# under bf16 autocast in a fresh process took 13.4 s with cuDNN's attention allowed and 3.1 s without it (1.5 s
# for both once the plans were built). Flash and memory-efficient attention have no per-shape build, so cuDNN's
# is left out here (torch's other backends keep their order).
CUDA_SDPA_WITHOUT_CUDNN = True


def cuda_attention_backends(q: torch.Tensor):
    """A context for one SDPA call: on CUDA, every backend but cuDNN's (see above); elsewhere, and under
    torch.compile (whose graphs choose their own attention), nothing."""
    if not (q.is_cuda and CUDA_SDPA_WITHOUT_CUDNN) or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused Q/K/V projection; heads can be pruned."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = Linear(hidden, 3 * hidden)                         # Q, K, V stacked on the output dim
        self.out = Linear(hidden, hidden)
        self.dropout = dropout
        self.all_heads = heads                                        # before pruning
        self.pruned: set[int] = set()                                 # original indices of removed heads

    def forward(self, x, mask, packing: Packing | None = None, need_weights: bool = False, rows: Rows | None = None):
        qkv = self.qkv(x)                                             # (B, L, 3·nh·hd)  or packed (T, 3·nh·hd)
        if rows is not None:                                          # only these tokens ask (the last layer)
            return self._queries_at(qkv, mask, packing, rows), None   # (R, H)
        if packing is not None and use_varlen(qkv, need_weights, self.dropout if self.training else 0.0):
            T = qkv.shape[0]                                          # GPU: flash attention over the packed tokens
            q, k, v = qkv.view(T, 3, self.heads, self.head_dim).unbind(1)            # 3 × (T, nh, hd)
            y = varlen_attn()(q, k, v, packing.cu32, packing.max_len)                  # (T, nh, hd)
            return self.out(y.reshape(T, self.heads * self.head_dim)), None           # (T, H)
        if packing is not None:
            qkv = packing.pad(qkv)                                    # (B, L, 3·nh·hd)  B = sequences, L = longest
        B, L, _ = qkv.shape
        # unbind before the transpose: its gradient (a stack) is then (B, L, 3, nh, hd) as it is, no copy to reshape
        q, k, v = (t.transpose(1, 2) for t in qkv.view(B, L, 3, self.heads, self.head_dim).unbind(2))  # (B, nh, L, hd)
        if mask is not None and mask.dtype != q.dtype:                # e.g. under bf16 autocast
            mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        p = self.dropout if self.training else 0.0
        if need_weights or spelled_out_attention(q, p):               # spelled out: the probabilities, short texts
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5  # (B, nh, L, L)
            if mask is not None:
                scores = scores + mask                                # mask (B, 1, 1|L, L), 0 or -inf-like
            probs = scores.softmax(dim=-1)                            # (B, nh, L, L)
            y = dropout(probs, p, self.training) @ v                  # (B, nh, L, hd)
            probs = probs if need_weights else None
        else:
            probs = None
            with cuda_attention_backends(q):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, L, hd)
        y = y.transpose(1, 2).reshape(B, L, self.heads * self.head_dim)  # (B, L, nh·hd)
        if packing is not None:
            y = packing.unpad(y)                                      # (T, nh·hd)
        return self.out(y), probs                                     # (B, L, H) or (T, H)

    def _queries_at(self, qkv, mask, packing: Packing | None, rows: Rows):
        """Attention for some tokens alone (their queries against all of their sequence's keys): what the heads
        read from the last layer. The queries of each sequence sit side by side in rows.grid, (N, R_max)."""
        H, nh, hd = self.heads * self.head_dim, self.heads, self.head_dim
        q = qkv.reshape(-1, qkv.shape[-1]).index_select(0, rows.index)[:, :H]        # (R, nh·hd)
        qkv = packing.pad(qkv) if packing is not None else qkv       # (N, L, 3·nh·hd)
        N = rows.grid.num_seqs
        if qkv.shape[0] > N:                                          # a grid with spare sequences below
            qkv, mask = qkv[:N], (mask[:N] if mask is not None else None)
        L = qkv.shape[1]
        q = rows.grid.pad(q)                                          # (N, R_max, nh·hd)
        Rm = q.shape[1]
        q = q.view(N, Rm, nh, hd).transpose(1, 2)                     # (N, nh, R_max, hd)
        k, v = (t.transpose(1, 2) for t in qkv.view(N, L, 3, nh, hd).unbind(2)[1:])  # 2 × (N, nh, L, hd)
        if mask is not None:
            if mask.shape[2] == 1:                                    # (N, 1, 1, L): the same keys for every query
                pass
            else:                                                     # (B, 1, L, L): each query's own row
                mask = rows.grid.pad(mask.reshape(N * L, L).index_select(0, rows.index))[:, None]  # (N, 1, R_max, L)
            if mask.dtype != q.dtype:
                mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        p = self.dropout if self.training else 0.0
        if spelled_out_attention(k, p):
            scores = (q @ k.transpose(-2, -1)) * hd ** -0.5           # (N, nh, R_max, L)
            if mask is not None:
                scores = scores + mask
            y = dropout(scores.softmax(dim=-1), p, self.training) @ v  # (N, nh, R_max, hd)
        else:
            with cuda_attention_backends(q):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (N, nh, R_max, hd)
        y = rows.grid.unpad(y.transpose(1, 2).reshape(N, Rm, H))     # (R, nh·hd)
        return self.out(y)                                            # (R, H)

    @torch.no_grad()
    def prune(self, heads):
        """Remove heads (original numbering, as the reference counts them) from Q/K/V and the output projection."""
        heads = {int(h) for h in heads} - self.pruned
        bad = [h for h in heads if not 0 <= h < self.all_heads]
        if bad:
            raise InputError(f"cannot prune head {bad[0]}: this layer has heads 0..{self.all_heads - 1}")
        if not heads:
            return
        present = [h for h in range(self.all_heads) if h not in self.pruned]   # original ids, in current order
        keep = [i for i, h in enumerate(present) if h not in heads]
        if not keep:
            raise InputError(f"pruning heads {sorted(heads)} would remove every head of this layer; keep at least one")
        hd, nh = self.head_dim, self.heads
        cols = torch.cat([torch.arange(i * hd, (i + 1) * hd) for i in keep])    # within one of Q, K, V
        rows = torch.cat([part * nh * hd + cols for part in range(3)])          # within the fused Q/K/V
        qkv = Linear(self.qkv.in_features, rows.numel(), device=self.qkv.weight.device,
                        dtype=self.qkv.weight.dtype)
        qkv.weight.copy_(self.qkv.weight[rows]), qkv.bias.copy_(self.qkv.bias[rows])
        out = Linear(cols.numel(), self.out.out_features, device=self.out.weight.device,
                        dtype=self.out.weight.dtype)
        out.weight.copy_(self.out.weight[:, cols]), out.bias.copy_(self.out.bias)
        self.qkv, self.out, self.heads = qkv, out, len(keep)
        self.pruned |= heads


class EncoderLayer(nn.Module):
    """x -> LN(x + Attention(x)) -> LN(x + FFN(x)); the same block in BERT, RoBERTa and ALBERT."""

    def __init__(self, c: Config):
        super().__init__()
        H = c.hidden_size
        self.attention = SelfAttention(H, c.num_attention_heads, c.attention_probs_dropout_prob)
        self.attention_norm = nn.LayerNorm(H, eps=c.layer_norm_eps)
        self.intermediate = Linear(H, c.intermediate_size)
        self.output = Linear(c.intermediate_size, H)
        self.output_norm = nn.LayerNorm(H, eps=c.layer_norm_eps)
        self.act = activation(c.hidden_act)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, x, mask, packing=None, need_weights=False, rows=None):  # x: (B, L, H) or (T, H)
        a, probs = self.attention(x, mask, packing, need_weights, rows)  # (B, L, H); rows given: (R, H)
        if rows is not None:                                          # the rest of the layer for those rows alone
            x = x.reshape(-1, x.shape[-1]).index_select(0, rows.index)  # (R, H)
        x = self.attention_norm(x + self.dropout(a))                  # (B, L, H)
        h = self.output(self.intermediate(x, then=self.act))         # (B, L, 4H), GELU'd -> (B, L, H)
        x = self.output_norm(x + self.dropout(h))                     # (B, L, H)
        return x, probs


class Encoder(nn.Module):
    """N layer applications. BERT/RoBERTa: N layers. ALBERT: G groups of `inner_group_num` layers, shared so that
    application i runs group int(i / (N / G)) (config.layer_plan)."""

    def __init__(self, c: Config):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.num_unique_layers))
        self.plan = c.layer_plan()                                    # layer index per step

    def forward(self, x, mask, packing=None, output_hidden_states=False, output_attentions=False, rows=None):
        """rows (a packing.Rows): the last layer computes those tokens alone (its keys and values still come from
        every token), and x comes back (R, H)."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        last = len(self.plan) - 1
        for step, i in enumerate(self.plan):
            x, probs = self.layers[i](x, mask, packing, need_weights=output_attentions,
                                      rows=rows if step == last else None)   # (B, L, H)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)                              # (B, nh, L, L)
        return x, hidden_states, attentions


def _with_spare_rows(spare: int, c: Config, input_ids, token_type_ids, position_ids, inputs_embeds):
    """Packed inputs (T,) with `spare` rows more below: valid ids whose results nothing reads."""
    def more(t, value):
        return None if t is None else torch.cat([t, t.new_full((spare, *t.shape[1:]), value)])
    return (more(input_ids, 0), more(token_type_ids, 0), more(position_ids, c.position_offset),
            more(inputs_embeds, 0.0))


# ---- pooler and heads -----------------------------------------------------------------------------------------------

class Pooler(nn.Module):
    """tanh(dense(first token)): the [CLS] summary that NSP/SOP and BERT/ALBERT classifiers read."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = Linear(hidden, hidden)

    def forward(self, first):                                         # first: (B, H) hidden state of token 0
        return torch.tanh(self.dense(first))                          # (B, H)


class MLMHead(nn.Module):
    """dense + act + LayerNorm, then the decoder back to the vocabulary (weight tied to the word embeddings)."""

    def __init__(self, c: Config):
        super().__init__()
        E = c.embedding_dim
        self.dense = Linear(c.hidden_size, E)
        self.act = activation(c.family.mlm_activation or c.hidden_act)  # RoBERTa's head: always GELU
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.decoder = Linear(E, c.vocab_size)                        # weight: tied in Model.__init__

    def forward(self, x):                                             # (B, L, H) or (M, H) selected positions
        return self.decoder(self.norm(self.act(self.dense(x))))       # (B, L, V)


class PairHead(nn.Module):
    """Two-way classifier on the pooled output: NSP for BERT (is B the next segment?), SOP for ALBERT (swapped?)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.linear = Linear(hidden, 2)

    def forward(self, pooled):                                        # (B, H)
        return self.linear(self.dropout(pooled))                      # (B, 2)


class Classifier(nn.Module):
    """BERT / ALBERT sequence classification: dropout + linear on the pooled output."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.linear = Linear(hidden, num_labels)

    def forward(self, pooled, first):                                 # pooled: (B, H)
        return self.linear(self.dropout(pooled))                      # (B, C)


class RobertaClassifier(nn.Module):
    """RoBERTa sequence classification: <s> token -> dropout, dense, tanh, dropout, out_proj (no pooler)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.dense = Linear(hidden, hidden)
        self.out_proj = Linear(hidden, num_labels)

    def forward(self, pooled, first):                                 # first: (B, H) hidden state of <s>
        x = torch.tanh(self.dense(self.dropout(first)))               # (B, H)
        return self.out_proj(self.dropout(x))                         # (B, C)


class TokenClassifier(nn.Module):
    """Token classification (NER, POS): dropout + linear on every token's hidden state."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.linear = Linear(hidden, num_labels)

    def forward(self, x):                                             # (B, L, H) or (T, H)
        return self.linear(self.dropout(x))                           # (B, L, C)


class SpanHead(nn.Module):
    """Extractive question answering: a start and an end score for every token."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = Linear(hidden, 2)

    def forward(self, x):                                             # (B, L, H) or (T, H)
        start, end = self.linear(x).unbind(-1)                        # 2 × (B, L)
        return start, end


# ---- the model ------------------------------------------------------------------------------------------------------

@dataclass
class Output:
    """What a forward pass returns; fields a model does not compute are None."""
    last_hidden_state: torch.Tensor                     # (B, L, H), or (T, H) for a packed batch
    pooler_output: torch.Tensor | None = None           # (B, H)
    hidden_states: tuple | None = None                  # N + 1 × (B, L, H): embeddings, then every layer
    attentions: tuple | None = None                     # N × (B, nh, L, L) probabilities
    logits: torch.Tensor | None = None                  # MLM (B, L, V), sequence (B, C) or token (B, L, C) labels
    pair_logits: torch.Tensor | None = None             # NSP / SOP (B, 2)
    start_logits: torch.Tensor | None = None            # question answering (B, L)
    end_logits: torch.Tensor | None = None              # question answering (B, L)
    loss: torch.Tensor | None = None                    # sum of the losses whose labels were given
    mlm_loss: torch.Tensor | None = None
    pair_loss: torch.Tensor | None = None


class Model(nn.Module):
    """An encoder with one of the heads: "base" (encoder + pooler), "mlm", "pretraining" (MLM + the family's pair
    objective: NSP for BERT, SOP for ALBERT, none for RoBERTa), "classification" (one label per sequence, or
    regression / multi-label by config.problem_type), "token-classification" (one label per token) or
    "question-answering" (start / end scores per token).

    The model keeps its own Config, a value: pruning or relabelling gives the model a new one and never changes the
    Config it was built from."""

    def __init__(self, config: Config, head: str = "base", pooler: bool | None = None):
        super().__init__()
        if head not in HEADS:
            raise InputError(f"head {head!r} is not one of {', '.join(HEADS)}")
        c = config
        fam = c.family
        self.head = head
        if pooler is None:  # as the reference classes have it
            pooler = head in ("base", "pretraining") or (head == "classification" and fam.classifier == "pooled")
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.pooler = Pooler(c.hidden_size) if pooler else None
        self.mlm = MLMHead(c) if head in ("mlm", "pretraining") else None
        has_pair = head == "pretraining" and fam.pair_objective is not None
        if has_pair and self.pooler is None:
            raise InputError(f"the {fam.pair_objective.upper()} head reads the pooled output; build this model with "
                             "pooler=True")
        self.pair = PairHead(c.hidden_size, c.classifier_dropout_prob if fam.pair_dropout else 0.0) \
            if has_pair else None
        self.classifier = None
        if head == "classification":
            if fam.classifier == "first-token":
                self.classifier = RobertaClassifier(c.hidden_size, c.num_labels, classifier_dropout(c))
            else:
                if self.pooler is None:
                    raise InputError(f"a {fam.title} classifier reads the pooled output; build it with pooler=True")
                self.classifier = Classifier(c.hidden_size, c.num_labels, classifier_dropout(c))
        self.token_classifier = TokenClassifier(c.hidden_size, c.num_labels, classifier_dropout(c)) \
            if head == "token-classification" else None
        self.span = SpanHead(c.hidden_size) if head == "question-answering" else None
        self.config = c.replace(pruned_heads={})
        self.apply(self._init_weights)
        self.tie_weights()
        if c.pruned_heads:
            self.prune_heads(c.pruned_heads)
        self.check = True   # validate inputs on every forward (set False inside a trusted, hot loop)

    def initialise(self, names) -> None:
        """The usual initialisation for these parameters alone (a head the checkpoint lacks). Only the parameters
        named: the MLM decoder's weight is the word table, so initialising the decoder as a whole because its bias
        is new would throw the loaded word vectors away."""
        modules = dict(self.named_modules())
        for name in names:
            owner, _, leaf = name.rpartition(".")
            self._init_weights(modules[owner], only=leaf)
        self.tie_weights()

    def tie_weights(self):
        if self.mlm is not None and self.config.tie_word_embeddings:
            self.mlm.decoder.weight = self.embeddings.word.weight    # (V, E) shared

    def _init_weights(self, m, only: str | None = None):
        """BERT's initialisation of module m (of its parameter `only`, when given): weights normal(0, std), biases
        zero, LayerNorms one and zero, an embedding's padding row zero."""
        std = self.config.initializer_range
        do = (lambda leaf: only is None or only == leaf)
        if isinstance(m, nn.Linear):
            if do("weight"):
                nn.init.normal_(m.weight, std=std)
            if do("bias") and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            if do("weight"):
                nn.init.ones_(m.weight)
            if do("bias"):
                nn.init.zeros_(m.bias)

    def prune_heads(self, heads_to_prune: dict[int, list[int]]):
        """Remove attention heads: {layer: [head, ...]} in the original numbering. Recorded in the model's
        config.pruned_heads (a new Config), so that a saved model reloads pruned. For ALBERT, `layer` counts the
        weight-owning layers (group * inner + j)."""
        if not isinstance(heads_to_prune, dict) or not all(
                hasattr(h, "__iter__") and not isinstance(h, (str, bytes, dict))
                and not (isinstance(h, torch.Tensor) and h.dim() != 1) for h in heads_to_prune.values()) \
                or not all(_whole(k) for k in heads_to_prune) \
                or not all(_whole(h) for v in heads_to_prune.values() for h in v):
            raise InputError(f"prune_heads takes {{layer: [head, ...]}}, e.g. {{0: [1, 2]}}; got {heads_to_prune!r}")
        pruned = {k: set(v) for k, v in self.config.pruned_heads.items()}
        for layer, heads in heads_to_prune.items():
            layer = int(layer)
            if not 0 <= layer < len(self.encoder.layers):
                raise InputError(f"cannot prune heads of layer {layer}: the model has layers "
                                 f"0..{len(self.encoder.layers) - 1}")
            self.encoder.layers[layer].attention.prune(heads)
            pruned[layer] = pruned.get(layer, set()) | {int(h) for h in heads}
        self.config = self.config.replace(pruned_heads={k: sorted(v) for k, v in pruned.items()})

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                cu_seqlens=None, inputs_embeds=None, labels=None, next_sentence_label=None,
                sentence_order_label=None, start_positions=None, end_positions=None,
                output_hidden_states=False, output_attentions=False, masked_only=False,
                mlm_positions=None, first_only=False, last_rows=None) -> Output:
        """Padded batch: input_ids (B, L) with attention_mask (B, L) of 1/0, or a per-example (B, L, L) mask
        (1 where token i may attend to token j). Packed batch: input_ids (T,) with cu_seqlens (N + 1,).
        inputs_embeds (B, L, E) (or (T, E) packed) replaces input_ids with embeddings of your own; positions and
        segments are added to them as to the word embeddings.
        masked_only=True (with MLM labels) runs the vocabulary projection only where labels != -100: the same
        loss for much less work; logits are then (M, V) for those M positions, in order. mlm_positions (M,) gives
        those positions directly, as indices into the flattened tokens (what a training loop passes, so that a
        GPU never waits to learn M).
        first_only=True, for heads that read the first token alone (the pooler, sequence classification): the last
        layer runs only that token's query, attention output and feed-forward (its keys and values still come from
        every token), the same logits for about a sixth less work in a six-layer model; last_hidden_state is then
        (N, H), the first token of each sequence.
        last_rows (R,), flat token indices: the same for heads that read those tokens (token classification at
        its labelled pieces; MLM at its scored positions: mlm_positions defaults to last_rows, must be among them,
        and is read once where it is the same tensor); the first tokens are added where a pooler reads them. logits (and labels, for the loss) are then those rows', in the order given."""
        c = self.config
        tokens = input_ids if input_ids is not None else (inputs_embeds[..., 0] if inputs_embeds is not None
                                                          else None)
        if self.check:
            for name, given, head in (("start_positions", start_positions, self.span),
                                      ("end_positions", end_positions, self.span), ("mlm_positions", mlm_positions,
                                                                                     self.mlm)):
                if given is not None and head is None:       # an argument this head reads nothing from
                    raise InputError(f"{name} was given but this model has head {self.head!r}, which does not "
                                     "read it")
            if masked_only and (self.mlm is None or (labels is None and mlm_positions is None)):
                raise InputError("masked_only=True computes the masked-LM logits where labels are not -100: "
                                 + ("give the labels (or mlm_positions)" if self.mlm is not None else
                                    f"this model has head {self.head!r}, with no masked-LM head"))
            check_inputs(c, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds)
            n = tokens.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
            check_labels(c, self.head, labels, tuple(tokens.shape), n)
            weights = self.embeddings.word.weight.dtype
            if inputs_embeds is not None and inputs_embeds.dtype != weights:
                raise InputError(f"inputs_embeds has dtype {inputs_embeds.dtype} but this model's weights are "
                                 f"{weights}: inputs_embeds.to({weights}) converts them")
            if mlm_positions is not None:
                check_flat_indices("mlm_positions", mlm_positions, tokens.numel())
        packing = None
        if cu_seqlens is not None:
            # spare rows up to the row count the products round to (training on the CPU): see Packing
            w = getattr(self.encoder.layers[0].attention.qkv, "weight", None)  # (an int8 layer has none)
            every = 1 if w is None or output_hidden_states or output_attentions else rows_multiple(w)
            packing = packed.packing_for(cu_seqlens, tokens.device, -tokens.shape[0] % every)
        if token_type_ids is None:
            token_type_ids = torch.zeros(tokens.shape, dtype=torch.long, device=tokens.device)
        if position_ids is None:
            if packing is not None:
                position_ids = packing.positions + c.position_offset  # restart at every sequence
            elif input_ids is not None:
                position_ids = c.family.position_ids(input_ids, c.pad_token_id)              # (B, L)
            else:     # from embeddings no padding can be seen: every position counts (as the reference)
                position_ids = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape) \
                    + c.position_offset

        if packing is not None and packing.spare:                     # (T + spare,)
            input_ids, token_type_ids, position_ids, inputs_embeds = _with_spare_rows(
                packing.spare, c, input_ids, token_type_ids, position_ids, inputs_embeds)
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, L, H)

        if packing is not None:
            mask = None if packing.uniform else additive_mask(packing.real[:, None, None, :], x.dtype)  # (N,1,1,Lmax)
        elif attention_mask is None:
            mask = None
        elif attention_mask.dim() == 2:
            mask = additive_mask(attention_mask.bool()[:, None, None, :], x.dtype)  # (B, 1, 1, L)
        else:
            mask = additive_mask(attention_mask.bool()[:, None, :, :], x.dtype)     # (B, 1, L, L)

        rows = None
        if first_only or last_rows is not None:
            if output_hidden_states or output_attentions or self.span is not None or (
                    first_only and (self.mlm is not None or self.token_classifier is not None)):
                raise InputError(f"{'first_only' if first_only else 'last_rows'} computes some tokens alone in the "
                                 f"last layer; the {self.head} head, hidden states and attentions need every token")
            if first_only and last_rows is not None:
                raise InputError("give first_only or last_rows, not both")
            if last_rows is not None and self.check:
                check_flat_indices("last_rows", last_rows, tokens.numel())
                if mlm_positions is not None and not bool(torch.isin(mlm_positions, last_rows).all()):
                    raise InputError("mlm_positions: every scored position must be among last_rows")
            if first_only or last_rows.numel():                       # (an empty last_rows: the full pass, then none)
                rows = packed.rows_for(last_rows, packing, tokens.shape, x.device, self.pooler is not None, first_only)
        x, hidden_states, attentions = self.encoder(x, mask, packing, output_hidden_states, output_attentions,
                                                    rows)            # (B, L, H), (T, H), or rows given (R, H)
        if packing is not None and packing.spare and rows is None:
            x = x[:tokens.shape[0]]                                   # (T, H) without the spare rows

        def at(positions):                                            # flat token indices -> their rows of x
            if rows is None:
                return x.reshape(-1, x.shape[-1]).index_select(0, positions)
            return x.index_select(0, torch.searchsorted(rows.index, positions))

        if rows is None:
            first = x[packing.first] if packing is not None else x[:, 0]  # (B, H) first token of every sequence
        else:
            first = x.index_select(0, rows.first) if rows.first is not None else None  # (N, H)
        out = Output(last_hidden_state=at(last_rows) if last_rows is not None else (first if first_only else x),
                     hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                     attentions=tuple(attentions) if attentions is not None else None)
        if self.pooler is not None:
            out.pooler_output = self.pooler(first)                    # (B, H)
        if self.mlm is not None:
            if mlm_positions is None and masked_only and labels is not None:
                mlm_positions = (labels.reshape(-1) != -100).nonzero().squeeze(-1)      # (M,)
            if mlm_positions is None and last_rows is not None:
                mlm_positions = last_rows
            if mlm_positions is not None:                             # (M, V) only where a prediction is scored
                out.logits = self.mlm(out.last_hidden_state if mlm_positions is last_rows else at(mlm_positions))
                if labels is not None:
                    labels = labels.reshape(-1).index_select(0, mlm_positions)  # (M,)
            else:
                out.logits = self.mlm(x)                              # (B, L, V)
            if labels is not None:
                out.mlm_loss = F.cross_entropy(out.logits.reshape(-1, c.vocab_size).float(), labels.reshape(-1),
                                               ignore_index=-100)
        if self.pair is not None:
            out.pair_logits = self.pair(out.pooler_output)            # (B, 2)
            given = {k: v for k, v in (("next_sentence_label", next_sentence_label),
                                       ("sentence_order_label", sentence_order_label)) if v is not None}
            wrong = sorted(set(given) - {c.family.pair_label})
            if wrong:                   # BERT's head predicts sentence order no more than ALBERT's predicts NSP
                raise InputError(f"{wrong[0]}: this {c.family.title} pretraining head is trained with "
                                 f"{c.family.pair_label} ({c.family.pair_objective.upper()}); pass the pair labels "
                                 "under that name")
            pair_labels = given.get(c.family.pair_label)
            if pair_labels is not None:
                check_pair_labels(c.family.pair_label, pair_labels, out.pair_logits.shape[0])
                out.pair_loss = F.cross_entropy(out.pair_logits.float(), pair_labels)
        elif next_sentence_label is not None or sentence_order_label is not None:
            raise InputError("next_sentence_label / sentence_order_label need the pretraining head of BERT (NSP) "
                             "or ALBERT (SOP); load the model with head='pretraining'")
        if self.classifier is not None:
            out.logits = self.classifier(out.pooler_output, first)    # (B, C)
            if labels is not None:
                out.loss = classification_loss(out.logits, labels, c)
        if self.token_classifier is not None:
            out.logits = self.token_classifier(out.last_hidden_state)  # (B, L, C), (T, C) or last_rows (R, C)
            if labels is not None:
                labels = labels.reshape(-1).index_select(0, last_rows) if last_rows is not None else labels
                out.loss = F.cross_entropy(out.logits.reshape(-1, c.num_labels).float(), labels.reshape(-1),
                                           ignore_index=-100)
        if self.span is not None:
            out.start_logits, out.end_logits = self.span(x)           # 2 × (B, L)
            if (start_positions is None) != (end_positions is None):
                raise InputError("give start_positions and end_positions together: the span loss needs both")
            if start_positions is not None and end_positions is not None:
                if out.start_logits.dim() != 2:
                    raise InputError("start_positions / end_positions: the span loss takes a padded batch (B, L); "
                                     "for a packed one, score each sequence's start_logits and end_logits yourself")
                if self.check:
                    n = out.start_logits.shape[0]
                    for name, t in (("start_positions", start_positions), ("end_positions", end_positions)):
                        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.numel() != n:
                            raise InputError(f"{name}: expected a long tensor of {n} token positions, one per "
                                             "sequence (0 for no answer)")
                out.loss = span_loss(out.start_logits, out.end_logits, start_positions, end_positions)
        parts = [t for t in (out.mlm_loss, out.pair_loss) if t is not None]
        if parts:
            out.loss = sum(parts)
        return out


def _whole(n) -> bool:
    """A layer or head number as prune_heads takes it: an int (numpy's, or an element of an integer tensor: whatever
    has __index__), or its digits (config.json's keys are strings)."""
    import operator
    if isinstance(n, bool) or (isinstance(n, torch.Tensor) and (n.dim() or n.is_floating_point()
                                                                or n.dtype == torch.bool)):   # (a head mask is not
        return False                                                                          # a list of heads)
    if isinstance(n, str):
        return n.isdigit()
    try:
        operator.index(n)
    except TypeError:
        return False
    return True


def compile_model(model: Model) -> Model:
    """torch.compile the model's forward in place, with dynamic shapes (packed batches change size every batch), so
    the element-wise work between the matrix products (bias + GELU, residual + LayerNorm, softmax's neighbours) runs
    fused. Parameters, state_dict names and outputs (to float rounding) are unchanged; the first batch of each new
    kind (padded / packed / one length) pays for compiling. On the CPU the compiler needs a C++ toolchain."""
    import shutil

    from .errors import CapabilityError
    from .kernels import prepare, separate_compile_cache
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise CapabilityError("torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; "
                              "install one, or run without compiling")
    prepare()                       # the CPU product is chosen before tracing, not inside it
    if on_cpu:
        separate_compile_cache()
    packed.keep_out_of_graphs()
    model.compile(dynamic=True)
    return model


def classification_loss(logits, labels, c: Config):
    """As the reference: regression for one label, cross-entropy for integer labels, BCE for float multi-labels."""
    problem = c.problem_type
    if problem is None:
        if c.num_labels == 1:
            problem = "regression"
        elif not labels.dtype.is_floating_point:
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(-1))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.reshape(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """As the reference: the mean of the start and end cross-entropies; positions outside the sequence are
    clamped to its length and ignored."""
    L = start_logits.shape[-1]
    start = start_positions.reshape(-1).clamp(0, L)
    end = end_positions.reshape(-1).clamp(0, L)
    return (F.cross_entropy(start_logits.float(), start, ignore_index=L) +
            F.cross_entropy(end_logits.float(), end, ignore_index=L)) / 2


def mean_pool(last_hidden_state, attention_mask, normalize: bool = True):
    """Sentence embeddings as sentence-transformers makes them: the mean over real tokens, then L2-normalised."""
    m = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)                  # (B, L, 1)
    emb = (last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)               # (B, H)
    return F.normalize(emb, p=2, dim=-1) if normalize else emb
