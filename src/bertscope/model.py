"""BERT, RoBERTa and ALBERT encoders with their heads, read top to bottom.

    input_ids (B, L) ─ Embeddings ─ (B, L, H) ─ N × EncoderLayer ─ (B, L, H) ─┬─ MLMHead ─ (B, L, V)
                       word + position + segment,      self-attention +      ├─ Pooler (first token) ─ (B, H)
                       LayerNorm, dropout [ALBERT:      feed-forward, each    │     ├─ PairHead (NSP / SOP) ─ (B, 2)
                       E-wide tables, then E -> H]     with residual + LN    │     └─ Classifier ─ (B, num_labels)
                                                                             └─ RobertaClassifier (first token)

B = batch, L = sequence length, H = hidden size, E = embedding size (ALBERT), V = vocabulary, nh = heads,
hd = head dim. A packed batch (tokens of many sequences concatenated, with cumulative lengths `cu_seqlens`) runs the
same modules on (T, H) instead of (B, L, H); only attention pads each sequence back out (see `Packing`).

This module imports torch alone. Checkpoint names (`attention.self.query.weight`) live in checkpoint.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .inputs import InputError, check_inputs, check_labels, check_pair_labels, default_position_ids

HEADS = ("base", "mlm", "pretraining", "classification")


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


class Packing:
    """Where each token of a packed batch sits in a padded (N, Lmax) grid, so attention can run per sequence.

    cu_seqlens (N + 1,) = [0, len_0, len_0 + len_1, ...]; the T = cu_seqlens[-1] tokens are laid out sequence after
    sequence. Projections and feed-forward run on the T real tokens only; `pad` / `unpad` move attention's inputs
    into the grid and its outputs back.
    """

    def __init__(self, cu_seqlens: torch.Tensor, device=None):
        # Worked out on the CPU (a GPU would wait for every size read back), then moved to `device` once.
        cu = cu_seqlens.cpu()
        device = device or cu_seqlens.device
        lengths = cu[1:] - cu[:-1]                                                      # (N,)
        self.num_seqs, self.max_len = lengths.numel(), int(lengths.max())
        self.uniform = int(lengths.min()) == self.max_len      # all one length: the grid is a plain reshape
        seq = torch.repeat_interleave(torch.arange(self.num_seqs), lengths)             # (T,)
        positions = torch.arange(seq.numel()) - cu[seq]                                 # (T,)
        index = seq * self.max_len + positions                                          # (T,) flat slot in grid
        real = torch.zeros(self.num_seqs * self.max_len, dtype=torch.bool)
        real[index] = True
        self.positions, self.index = positions.to(device), index.to(device)
        self.real = real.view(self.num_seqs, self.max_len).to(device)                   # (N, Lmax)
        self.first = cu[:-1].to(device)                                                 # (N,) first token of each
        self.cu32 = cu.to(device=device, dtype=torch.int32)                             # for the varlen kernel

    def pad(self, x: torch.Tensor) -> torch.Tensor:                                     # (T, D) -> (N, Lmax, D)
        if self.uniform:
            return x.view(self.num_seqs, self.max_len, x.shape[-1])
        grid = x.new_zeros(self.num_seqs * self.max_len, x.shape[-1])
        return grid.index_copy(0, self.index, x).view(self.num_seqs, self.max_len, x.shape[-1])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:                                   # (N, Lmax, D) -> (T, D)
        if self.uniform:
            return x.reshape(self.num_seqs * self.max_len, x.shape[-1])
        return x.reshape(self.num_seqs * self.max_len, x.shape[-1]).index_select(0, self.index)


@torch.compiler.disable   # under torch.compile: sizes are read on the CPU, so this runs eagerly, outside the graph
def packing_for(cu_seqlens: torch.Tensor, device) -> Packing:
    return Packing(cu_seqlens, device)


try:  # variable-length flash attention (CUDA, fp16/bf16); elsewhere packed attention pads each sequence
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # older torch
    varlen_attn = None


def _use_varlen(qkv: torch.Tensor, need_weights: bool, dropout: float) -> bool:
    return (varlen_attn is not None and qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16)
            and not need_weights and dropout == 0.0)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's most negative value where not (as the reference does)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# ---- the matrix products ---------------------------------------------------------------------------------------------

def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


# On the CPU, torch's Linear calls MKL's sgemm, which on some x86 CPUs (AMD ones among them) runs a narrower code path
# than the chip has; oneDNN (also inside torch) picks the widest one (AVX-512 where there is one). On the 2-core AMD
# EPYC this project measures on, that is ~2.2x the fp32 GEMM rate (BENCHMARKS.md). BERTSCOPE_ONEDNN=0 turns it off.
ONEDNN_CPU = (os.environ.get("BERTSCOPE_ONEDNN", "1") != "0" and _onednn_available()
              and hasattr(torch.library, "custom_op"))


def _onednn_linear(x, w, b):                                          # x (N, in), w (out, in) -> (N, out)
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


if ONEDNN_CPU:
    # A torch custom op, so that autograd and torch.compile see one opaque product (y = x W^T + b) whose three
    # products in training (y, dL/dx, dL/dW) all run in oneDNN.
    @torch.library.custom_op("bertscope::onednn_linear", mutates_args=())
    def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return _onednn_linear(x, weight, bias)                        # (N, out)

    @onednn_linear.register_fake
    def _(x, weight, bias):
        return x.new_empty(x.shape[0], weight.shape[0])

    def _setup(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    def _backward(ctx, grad):                                         # grad (N, out)
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = onednn_linear(grad, weight.t().contiguous(), None) if need_x else None              # (N, out) @ (out, in)
        gw = onednn_linear(grad.t().contiguous(), x.t().contiguous(), None) if need_w else None  # (out, N) @ (N, in)
        return gx, gw, grad.sum(0) if ctx.has_bias and need_b else None

    onednn_linear.register_autograd(_backward, setup_context=_setup)

    try:    # so that torch's FlopCounterMode counts these products as it counts nn.Linear's
        from torch.utils.flop_counter import register_flop_formula

        @register_flop_formula(torch.ops.bertscope.onednn_linear)
        def _flops(x_shape, w_shape, *args, **kwargs) -> int:
            return 2 * x_shape[0] * x_shape[1] * w_shape[0]
    except ImportError:
        pass


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:                                                 # older torch
        return torch.is_autocast_cpu_enabled()


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN for a CPU product in float32 / bfloat16; torch's own under autocast (which casts inside F.linear) and
    while exporting (an exported graph, ONNX among them, should hold the standard linear op)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return (ONEDNN_CPU and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and x.dtype == weight.dtype and x.numel() > 0 and not _autocast_on_cpu() and not exporting())


class Linear(nn.Linear):
    """nn.Linear (same parameters, same names); on the CPU in float32 / bfloat16 its products run through oneDNN
    (see ONEDNN_CPU above), forward and backward. Elsewhere it is nn.Linear itself (see _use_onednn)."""

    def forward(self, x):                                             # (..., in) -> (..., out)
        if not _use_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        y = onednn_linear(x.reshape(-1, shape[-1]).contiguous(), self.weight, self.bias)   # (N, out)
        return y.view(*shape[:-1], y.shape[-1])                      # (..., out)


# ---- embeddings -----------------------------------------------------------------------------------------------------

class Embeddings(nn.Module):
    """word + position + token type, LayerNorm, dropout; ALBERT factorises: E-wide tables, then a Linear E -> H."""

    def __init__(self, c: Config):
        super().__init__()
        E = c.embedding_dim
        self.word = nn.Embedding(c.vocab_size, E, padding_idx=c.pad_token_id)
        # RoBERTa's table reserves row pad_token_id for padding; its real positions start at pad_token_id + 1.
        self.position = nn.Embedding(c.max_position_embeddings, E,
                                     padding_idx=c.pad_token_id if c.family == "roberta" else None)
        self.token_type = nn.Embedding(c.type_vocab_size, E)
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.project = Linear(E, c.hidden_size) if c.family == "albert" else None

    def forward(self, input_ids, token_type_ids, position_ids):       # each (B, L), or (T,) when packed
        x = self.word(input_ids) + self.token_type(token_type_ids)    # (B, L, E)
        x = x + self.position(position_ids)                           # (B, L, E)
        x = self.dropout(self.norm(x))                                # (B, L, E)
        if self.project is not None:
            x = self.project(x)                                       # (B, L, H)   ALBERT: E -> H
        return x


# ---- one encoder layer ----------------------------------------------------------------------------------------------

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

    def forward(self, x, mask, packing: Packing | None = None, need_weights: bool = False):
        qkv = self.qkv(x)                                             # (B, L, 3·nh·hd)  or packed (T, 3·nh·hd)
        if packing is not None and _use_varlen(qkv, need_weights, self.dropout if self.training else 0.0):
            T = qkv.shape[0]                                          # GPU: flash attention over the packed tokens
            q, k, v = qkv.view(T, 3, self.heads, self.head_dim).unbind(1)            # 3 × (T, nh, hd)
            y = varlen_attn(q, k, v, packing.cu32, packing.cu32, packing.max_len, packing.max_len)  # (T, nh, hd)
            return self.out(y.reshape(T, self.heads * self.head_dim)), None           # (T, H)
        if packing is not None:
            qkv = packing.pad(qkv)                                    # (B, L, 3·nh·hd)  B = sequences, L = longest
        B, L, _ = qkv.shape
        q, k, v = qkv.view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 × (B, nh, L, hd)
        if mask is not None and mask.dtype != q.dtype:                # e.g. under bf16 autocast
            mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        p = self.dropout if self.training else 0.0
        if need_weights:                                              # spelled out, to return the probabilities
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5  # (B, nh, L, L)
            if mask is not None:
                scores = scores + mask                                # mask (B, 1, 1|L, L), 0 or -inf-like
            probs = scores.softmax(dim=-1)                            # (B, nh, L, L)
            y = F.dropout(probs, p, self.training) @ v                # (B, nh, L, hd)
        else:
            probs = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, L, hd)
        y = y.transpose(1, 2).reshape(B, L, self.heads * self.head_dim)  # (B, L, nh·hd)
        if packing is not None:
            y = packing.unpad(y)                                      # (T, nh·hd)
        return self.out(y), probs                                     # (B, L, H) or (T, H)

    @torch.no_grad()
    def prune(self, heads):
        """Remove heads (original numbering, as the reference counts them) from Q/K/V and the output projection."""
        heads = {int(h) for h in heads} - self.pruned
        bad = [h for h in heads if not 0 <= h < self.all_heads]
        if bad:
            raise ValueError(f"cannot prune head {bad[0]}: this layer has heads 0..{self.all_heads - 1}")
        if not heads:
            return
        present = [h for h in range(self.all_heads) if h not in self.pruned]   # original ids, in current order
        keep = [i for i, h in enumerate(present) if h not in heads]
        if not keep:
            raise ValueError(f"pruning heads {sorted(heads)} would remove every head of this layer; keep at least one")
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
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, mask, packing=None, need_weights=False):    # x: (B, L, H) or (T, H)
        a, probs = self.attention(x, mask, packing, need_weights)     # (B, L, H)
        x = self.attention_norm(x + self.dropout(a))                  # (B, L, H)
        h = self.output(self.act(self.intermediate(x)))               # (B, L, 4H) -> (B, L, H)
        x = self.output_norm(x + self.dropout(h))                     # (B, L, H)
        return x, probs


class Encoder(nn.Module):
    """N layer applications. BERT/RoBERTa: N layers. ALBERT: G groups of `inner_group_num` layers, shared so that
    application i runs group int(i / (N / G)) (config.layer_plan)."""

    def __init__(self, c: Config):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.num_unique_layers))
        self.plan = c.layer_plan()                                    # layer index per step

    def forward(self, x, mask, packing=None, output_hidden_states=False, output_attentions=False):
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for i in self.plan:
            x, probs = self.layers[i](x, mask, packing, need_weights=output_attentions)   # (B, L, H)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)                              # (B, nh, L, L)
        return x, hidden_states, attentions


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
        self.act = activation("gelu" if c.family == "roberta" else c.hidden_act)  # RoBERTa's head: always GELU
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.decoder = Linear(E, c.vocab_size)                        # weight: tied in Model.__init__

    def forward(self, x):                                             # (B, L, H) or (M, H) selected positions
        return self.decoder(self.norm(self.act(self.dense(x))))       # (B, L, V)


class PairHead(nn.Module):
    """Two-way classifier on the pooled output: NSP for BERT (is B the next segment?), SOP for ALBERT (swapped?)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = Linear(hidden, 2)

    def forward(self, pooled):                                        # (B, H)
        return self.linear(self.dropout(pooled))                      # (B, 2)


class Classifier(nn.Module):
    """BERT / ALBERT sequence classification: dropout + linear on the pooled output."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = Linear(hidden, num_labels)

    def forward(self, pooled, first):                                 # pooled: (B, H)
        return self.linear(self.dropout(pooled))                      # (B, num_labels)


class RobertaClassifier(nn.Module):
    """RoBERTa sequence classification: <s> token -> dropout, dense, tanh, dropout, out_proj (no pooler)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = Linear(hidden, hidden)
        self.out_proj = Linear(hidden, num_labels)

    def forward(self, pooled, first):                                 # first: (B, H) hidden state of <s>
        x = torch.tanh(self.dense(self.dropout(first)))               # (B, H)
        return self.out_proj(self.dropout(x))                         # (B, num_labels)


# ---- the model ------------------------------------------------------------------------------------------------------

@dataclass
class Output:
    """What a forward pass returns; fields a model does not compute are None."""
    last_hidden_state: torch.Tensor                     # (B, L, H), or (T, H) for a packed batch
    pooler_output: torch.Tensor | None = None           # (B, H)
    hidden_states: tuple | None = None                  # N + 1 × (B, L, H): embeddings, then every layer
    attentions: tuple | None = None                     # N × (B, nh, L, L) probabilities
    logits: torch.Tensor | None = None                  # MLM (B, L, V) or classification (B, num_labels)
    pair_logits: torch.Tensor | None = None             # NSP / SOP (B, 2)
    loss: torch.Tensor | None = None                    # sum of the losses whose labels were given
    mlm_loss: torch.Tensor | None = None
    pair_loss: torch.Tensor | None = None


class Model(nn.Module):
    """An encoder with one of the heads: "base" (encoder + pooler), "mlm", "pretraining" (MLM + NSP for BERT,
    MLM + SOP for ALBERT, MLM for RoBERTa) or "classification"."""

    def __init__(self, config: Config, head: str = "base", pooler: bool | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head {head!r} is not one of {', '.join(HEADS)}")
        c = self.config = config
        self.head = head
        if pooler is None:  # as the reference classes have it
            pooler = head in ("base", "pretraining") or (head == "classification" and c.family != "roberta")
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.pooler = Pooler(c.hidden_size) if pooler else None
        self.mlm = MLMHead(c) if head in ("mlm", "pretraining") else None
        has_pair = head == "pretraining" and c.family != "roberta"
        if has_pair and self.pooler is None:
            raise ValueError("the NSP/SOP head reads the pooled output; build this model with pooler=True")
        self.pair = PairHead(c.hidden_size, c.classifier_dropout_prob if c.family == "albert" else 0.0) \
            if has_pair else None
        self.classifier = None
        if head == "classification":
            if c.family == "roberta":
                drop = c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout
                self.classifier = RobertaClassifier(c.hidden_size, c.num_labels, drop)
            else:
                if self.pooler is None:
                    raise ValueError("a BERT/ALBERT classifier reads the pooled output; build it with pooler=True")
                drop = c.classifier_dropout_prob if c.family == "albert" else (
                    c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout)
                self.classifier = Classifier(c.hidden_size, c.num_labels, drop)
        self.apply(self._init_weights)
        self.tie_weights()
        pruned, self.config.pruned_heads = dict(c.pruned_heads), {}
        if pruned:
            self.prune_heads(pruned)
        self.check = True   # validate inputs on every forward (set False inside a trusted, hot loop)

    def tie_weights(self):
        if self.mlm is not None and self.config.tie_word_embeddings:
            self.mlm.decoder.weight = self.embeddings.word.weight    # (V, E) shared

    def _init_weights(self, m):
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def prune_heads(self, heads_to_prune: dict[int, list[int]]):
        """Remove attention heads: {layer: [head, ...]} in the original numbering. Recorded in config.pruned_heads so
        that a saved model reloads pruned. For ALBERT, `layer` counts the weight-owning layers (group * inner + j)."""
        for layer, heads in heads_to_prune.items():
            layer = int(layer)
            if not 0 <= layer < len(self.encoder.layers):
                raise ValueError(f"cannot prune heads of layer {layer}: the model has layers "
                                 f"0..{len(self.encoder.layers) - 1}")
            self.encoder.layers[layer].attention.prune(heads)
            done = set(self.config.pruned_heads.get(layer, [])) | {int(h) for h in heads}
            self.config.pruned_heads[layer] = sorted(done)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, cu_seqlens=None,
                labels=None, next_sentence_label=None, sentence_order_label=None,
                output_hidden_states=False, output_attentions=False, masked_only=False,
                mlm_positions=None) -> Output:
        """Padded batch: input_ids (B, L) with attention_mask (B, L) of 1/0, or a per-example (B, L, L) mask
        (1 where token i may attend to token j). Packed batch: input_ids (T,) with cu_seqlens (N + 1,).
        masked_only=True (with MLM labels) runs the vocabulary projection only where labels != -100: the same
        loss for much less work; logits are then (M, V) for those M positions, in order. mlm_positions (M,) gives
        those positions directly, as indices into the flattened tokens (what a training loop passes, so that a
        GPU never waits to learn M)."""
        c = self.config
        if self.check:
            check_inputs(c, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens)
            check_labels(c, self.head, labels, input_ids, cu_seqlens)
        packing = packing_for(cu_seqlens, input_ids.device) if cu_seqlens is not None else None
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            if packing is not None:
                position_ids = packing.positions + c.position_offset  # restart at every sequence
            else:
                position_ids = default_position_ids(c, input_ids)     # (B, L)

        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, L, H)

        if packing is not None:
            mask = None if packing.uniform else additive_mask(packing.real[:, None, None, :], x.dtype)  # (N,1,1,Lmax)
        elif attention_mask is None:
            mask = None
        elif attention_mask.dim() == 2:
            mask = additive_mask(attention_mask.bool()[:, None, None, :], x.dtype)  # (B, 1, 1, L)
        else:
            mask = additive_mask(attention_mask.bool()[:, None, :, :], x.dtype)     # (B, 1, L, L)

        x, hidden_states, attentions = self.encoder(x, mask, packing, output_hidden_states, output_attentions)
        out = Output(last_hidden_state=x,
                     hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                     attentions=tuple(attentions) if attentions is not None else None)

        first = x[packing.first] if packing is not None else x[:, 0]  # (B, H) first token of every sequence
        if self.pooler is not None:
            out.pooler_output = self.pooler(first)                    # (B, H)
        if self.mlm is not None:
            if mlm_positions is None and masked_only and labels is not None:
                mlm_positions = (labels.reshape(-1) != -100).nonzero().squeeze(-1)      # (M,)
            if mlm_positions is not None:
                flat = x.reshape(-1, x.shape[-1])                     # (B·L, H) or (T, H)
                out.logits = self.mlm(flat.index_select(0, mlm_positions))  # (M, V) only where a prediction is scored
                if labels is not None:
                    labels = labels.reshape(-1).index_select(0, mlm_positions)  # (M,)
            else:
                out.logits = self.mlm(x)                              # (B, L, V)
            if labels is not None:
                out.mlm_loss = F.cross_entropy(out.logits.reshape(-1, c.vocab_size).float(), labels.reshape(-1),
                                               ignore_index=-100)
        if self.pair is not None:
            out.pair_logits = self.pair(out.pooler_output)            # (B, 2)
            pair_labels = next_sentence_label if next_sentence_label is not None else sentence_order_label
            if pair_labels is not None:
                n = out.pair_logits.shape[0]
                check_pair_labels("next_sentence_label" if c.family == "bert" else "sentence_order_label",
                                  pair_labels, n)
                out.pair_loss = F.cross_entropy(out.pair_logits.float(), pair_labels)
        elif next_sentence_label is not None or sentence_order_label is not None:
            raise InputError("next_sentence_label / sentence_order_label need the pretraining head of BERT (NSP) "
                             "or ALBERT (SOP); load the model with head='pretraining'")
        if self.classifier is not None:
            out.logits = self.classifier(out.pooler_output, first)    # (B, num_labels)
            if labels is not None:
                out.loss = classification_loss(out.logits, labels, c)
        parts = [t for t in (out.mlm_loss, out.pair_loss) if t is not None]
        if parts:
            out.loss = sum(parts)
        return out

    # Checkpoint I/O lives in checkpoint.py; these are the methods users reach for.
    def save_pretrained(self, folder, **kwargs):
        from .checkpoint import save_pretrained
        return save_pretrained(self, folder, **kwargs)

    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> "Model":
        from .checkpoint import from_pretrained
        return from_pretrained(folder, **kwargs)


def compile_model(model: Model) -> Model:
    """torch.compile the model's forward in place, with dynamic shapes (packed batches change size every batch), so
    the element-wise work between the matrix products (bias + GELU, residual + LayerNorm, softmax's neighbours) runs
    fused. Parameters, state_dict names and outputs (to float rounding) are unchanged; the first batch of each new
    kind (padded / packed / one length) pays for compiling. On the CPU the compiler needs a C++ toolchain."""
    import shutil
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise RuntimeError("torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; "
                           "install one, or run without compiling")
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


def mean_pool(last_hidden_state, attention_mask, normalize: bool = True):
    """Sentence embeddings as sentence-transformers makes them: the mean over real tokens, then L2-normalised."""
    m = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)                  # (B, L, 1)
    emb = (last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)               # (B, H)
    return F.normalize(emb, p=2, dim=-1) if normalize else emb
