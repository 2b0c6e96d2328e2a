"""Batched inference over many texts: length-sorted, packed batches (no padding through the projections and the
feed-forward), results handed back in the input order.

Real text varies in length; padded file-order batches spend most of their work on padding. Here the texts are
tokenized once, sorted by length, cut into batches, and each batch runs as a packed batch (`cu_seqlens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .arguments import whole_number
from .errors import CheckpointError
from .inputs import check_inputs
from .kernels import trim_heap
from .model import Model


@dataclass
class Encoded:
    """Token ids of many texts, unpadded; `extra` holds whatever else a task keeps per text (labels, offsets)."""
    ids: list[list[int]]
    types: list[list[int]]
    word_ids: list[list[int]] | None = None
    offsets: list[list[tuple[int, int]]] | None = None   # character span of every token (with word_ids)
    cut: list[int] = field(default_factory=list)      # tokens cut from each text by truncation (0 if none)
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def truncation(self) -> tuple[int, int, int]:
        """(texts cut, most tokens cut from one text, tokens cut in all)."""
        cut = [c for c in self.cut if c]
        return len(cut), max(cut, default=0), sum(cut)


def tokenize(tok, texts, pairs=None, max_length: int | None = None, word_ids: bool = False,
             windows: int | None = None) -> Encoded:
    """Token ids of every text (and pair), cut to max_length; how much was cut from each text is kept in `cut`.
    With windows=STRIDE a longer text is not cut but split into windows of max_length tokens that overlap by STRIDE
    tokens; extra["text"] then says which text each window belongs to (Encoded holds windows, not texts)."""
    limit = max_length or tok.max_length
    if windows is not None:
        return _windows(tok, texts, pairs, limit, windows)
    encodings = tok.encode_batch(texts, pairs, truncation=False)
    cut = [max(0, len(e.ids) - limit) for e in encodings]
    long = [i for i, c in enumerate(cut) if c]
    if long:                                  # only the long ones again, truncated as the tokenizer does it
        again = tok.encode_batch([texts[i] for i in long], [pairs[i] for i in long] if pairs else None,
                                 max_length=limit)
        for i, e in zip(long, again):
            encodings[i] = e
    return _encoded(tok, encodings, word_ids, cut)


def _encoded(tok, encodings, word_ids: bool, cut, text=None) -> Encoded:
    enc = Encoded(ids=[e.ids for e in encodings],
                  types=[e.type_ids if tok.family.segments else [0] * len(e.ids) for e in encodings],
                  word_ids=[[-1 if w is None else w for w in e.word_ids] for e in encodings] if word_ids else None,
                  offsets=[list(e.offsets) for e in encodings] if word_ids else None, cut=cut)
    if text is not None:
        enc.extra["text"] = text
    return enc


def _windows(tok, texts, pairs, limit: int, stride: int) -> Encoded:
    from .errors import UsageError
    if pairs is not None:
        raise UsageError("--windows splits single texts; sentence pairs (--pair-column) are cut to --max-length")
    room = limit - tok.backend.num_special_tokens_to_add(is_pair=False)
    if whole_number(stride) is None or not 0 <= stride < room:
        raise UsageError(f"--windows {stride}: the overlap of two windows must be 0 or more and less than the "
                         f"{room} text tokens a window of --max-length {limit} holds")
    encodings = tok.encode_batch(texts, max_length=limit, stride=int(stride))
    flat, text = [], []
    for i, e in enumerate(encodings):
        for part in (e, *e.overflowing):
            flat.append(part)
            text.append(i)
    return _encoded(tok, flat, True, [0] * len(flat), text)


def words_of(tok, text: str, enc: Encoded, i: int) -> list[str]:
    """The words of text i as the tokenizer split them (what word_embeddings averages over), in order."""
    spans: dict[int, list[int]] = {}
    for w, (a, b) in zip(enc.word_ids[i], enc.offsets[i]):
        if w >= 0:
            span = spans.setdefault(w, [a, b])
            span[0], span[1] = min(span[0], a), max(span[1], b)
    return [text[a:b] for _, (a, b) in sorted(spans.items())]


def length_batches(lengths: list[int], max_tokens: int | None = None, batch_size: int = 32) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), at most batch_size texts and max_tokens tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, tokens = [], [], 0
    for i in order:
        if current and (len(current) >= batch_size or (max_tokens and tokens + lengths[i] > max_tokens)):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    return batches + ([current] if current else [])


def check_all(config, enc: Encoded):
    """Every text checked against the model's limits once, as one packed batch on the CPU, so that the loops over
    batches can run with the model's per-forward checks off (model.check = False)."""
    everything = packed_batch(enc, list(range(len(enc))))
    check_inputs(config, everything["input_ids"], token_type_ids=everything["token_type_ids"],
                 cu_seqlens=everything["cu_seqlens"])


def packed_batch(enc: Encoded, index: list[int]) -> dict[str, torch.Tensor]:
    """input_ids (T,), token_type_ids (T,), cu_seqlens (N + 1,) for the sequences at `index`."""
    lengths = torch.tensor([len(enc.ids[i]) for i in index])
    return {"input_ids": torch.tensor([t for i in index for t in enc.ids[i]], dtype=torch.long),
            "token_type_ids": torch.tensor([t for i in index for t in enc.types[i]], dtype=torch.long),
            "cu_seqlens": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])}


def padded_batch(enc: Encoded, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask (B, L) for the sequences at `index`, padded to the longest."""
    L = max(len(enc.ids[i]) for i in index)
    gap = [L - len(enc.ids[i]) for i in index]
    return {"input_ids": torch.tensor([enc.ids[i] + [pad_id] * g for i, g in zip(index, gap)], dtype=torch.long),
            "token_type_ids": torch.tensor([enc.types[i] + [0] * g for i, g in zip(index, gap)], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * (L - g) + [0] * g for g in gap], dtype=torch.long)}


def _as_packed(out, mask: torch.Tensor):
    """A padded batch's per-token outputs as a packed batch's: (B, L, ...) -> (T, ...) at the real tokens."""
    real = mask.bool()
    out.last_hidden_state = out.last_hidden_state[real]                       # (T, H)
    for name in ("start_logits", "end_logits"):
        if getattr(out, name) is not None:
            setattr(out, name, getattr(out, name)[real])                      # (T,)
    if out.logits is not None and out.logits.dim() == 3:
        out.logits = out.logits[real]                                         # (T, C)
    return out


# On the CPU a forward pass works best on at most this many tokens: a bigger batch's activations fall out of the
# caches (measured on the 2-core AMD EPYC: AG News at batch 128 ran 1.9x faster split this way; BENCHMARKS.md).
CPU_TOKENS_PER_PASS = 2048
# Length-sorted batches are near-uniform: there the padded layout (one (B, L) tensor, a mask in attention) beats
# the packed one, whose attention moves every layer's tokens into a grid and back (6% faster on SST-2 sentences at
# batch 32, Intel Xeon); a batch with more padding than this share runs packed.
PADDED_UP_TO = 0.15


@torch.inference_mode()
def run(model: Model, enc: Encoded, batch_size: int = 32, max_tokens: int | None = None, fn=None,
        first_only: bool = False, rows=None):
    """Run the model over every text; `fn(out, batch, index)` maps each batch's Output to per-text results, which
    come back as one list in input order. A batch holds at most batch_size texts and max_tokens tokens (default:
    CPU_TOKENS_PER_PASS on the CPU, no limit elsewhere). first_only: `fn` reads only the first token of each text
    (its pooled output or logits), so the last layer computes that token alone (Model.forward). rows(i): the
    positions in text i that `fn` reads (a token head's logits), so that the last layer computes those alone; the
    logits then come (R, C), text after text, each text's rows in the order given."""
    results: list = [None] * len(enc)
    device = next(model.parameters()).device
    if max_tokens is None and device.type == "cpu":
        max_tokens = CPU_TOKENS_PER_PASS
    check_all(model.config, enc)
    was_checking, model.check = model.check, False
    try:
        for index in length_batches([len(x) for x in enc.ids], max_tokens, batch_size):
            batch = packed_batch(enc, index)
            lengths = [len(enc.ids[i]) for i in index]
            padded = device.type == "cpu" and 1 - sum(lengths) / (len(index) * max(lengths)) <= PADDED_UP_TO
            last = None
            if rows is not None:                                          # flat indices of the rows fn reads
                starts = [k * max(lengths) for k in range(len(index))] if padded else \
                    batch["cu_seqlens"][:-1].tolist()
                last = torch.tensor([s + p for i, s in zip(index, starts) for p in rows(i)], dtype=torch.long,
                                    device=device)
            if padded:
                padded = to_device(padded_batch(enc, index, model.config.pad_token_id), device)
                out = model(**padded, first_only=first_only, last_rows=last)
                out = out if first_only or rows is not None else _as_packed(out, padded["attention_mask"])
                del padded
            else:
                batch = to_device(batch, device)
                out = model(**batch, first_only=first_only, last_rows=last)
            _check_finite(model, out, index, enc)
            for i, value in zip(index, fn(out, batch, index)):
                results[i] = value
            del out, batch
            if device.type == "cpu":
                trim_heap()
    finally:
        model.check = was_checking
    return results


def _check_finite(model, out, index, enc) -> None:
    """A model whose outputs are not numbers (weights that blew up in a diverged run) would give class 0 and NaN
    scores for every text: refused, with the largest weight, at the first batch it shows in (named by the input
    texts its rows, windows included, come from)."""
    value = next((v for v in (out.logits, out.start_logits, out.last_hidden_state) if v is not None), None)
    if value is None or bool(torch.isfinite(value).all()):
        return
    broken = next(((n, p) for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())), None)
    if broken is not None:
        weights = f"{broken[0]} holds {float(broken[1].detach()[~torch.isfinite(broken[1].detach())][0])}"
    else:
        name, p = max(model.named_parameters(), key=lambda kv: float(kv[1].detach().abs().max()))
        weights = f"the largest, in {name}, is {float(p.detach().abs().max()):.3g}"
    windows = enc.extra.get("windows")                       # a window's text or question (--windows, NER, QA)
    of_text = [w.question for w in windows] if windows is not None else \
        enc.extra.get("text") or enc.extra.get("sentence")
    what = "question" if windows is not None else "text"
    numbers = sorted({(of_text[i] if of_text is not None else i) + 1 for i in index})
    texts = f"{what} {numbers[0]}" if len(numbers) == 1 else f"{what}s " + ", ".join(map(str, numbers[:3])) + \
        (f" and {len(numbers) - 3} more" if len(numbers) > 3 else "")
    raise CheckpointError(f"this model's outputs for {texts} are not numbers (NaN or infinite): its weights are "
                          f"broken ({weights}), as a training run that diverged leaves them. Train it again with a "
                          "lower --lr")


def to_device(batch: dict, device) -> dict:
    """Tensors to the model's device; cu_seqlens stays on the CPU, where the model reads the sizes from."""
    return {k: (v if k == "cu_seqlens" else v.to(device, non_blocking=True)) for k, v in batch.items()}


def by_text(enc: Encoded) -> list[list[int]]:
    """The windows of each text, in order (one window per text without --windows)."""
    text = enc.extra.get("text")
    if text is None:
        return [[i] for i in range(len(enc))]
    groups: list[list[int]] = [[] for _ in range(max(text) + 1)] if text else []
    for w, t in enumerate(text):
        groups[t].append(w)
    return groups


def sentence_embeddings(model: Model, enc: Encoded, pooling: str = "mean", normalize: bool = True,
                        batch_size: int = 32) -> torch.Tensor:
    """(N, H) float32 sentence embeddings (on the CPU): mean over real tokens (sentence-transformers) or the first
    token. A text in several windows gets the length-weighted mean of its windows' vectors."""
    def pool(out, batch, index):
        x = out.last_hidden_state                                             # (T, H)
        cu = batch["cu_seqlens"].to(x.device)
        lengths = cu[1:] - cu[:-1]                                            # (N,)
        if pooling == "cls":
            emb = x                                                           # (N, H): first_only
        else:
            seq = torch.repeat_interleave(torch.arange(len(index), device=x.device), lengths)
            emb = torch.zeros(len(index), x.shape[-1], dtype=x.dtype, device=x.device).index_add_(0, seq, x)
            emb = emb / lengths.unsqueeze(-1).to(x.dtype)                     # (N, H)
        return list(emb.float().cpu())
    if pooling not in ("mean", "cls"):
        from .errors import UsageError
        raise UsageError(f"--pooling {pooling!r}: use mean or cls")
    per_window = run(model, enc, batch_size, fn=pool, first_only=pooling == "cls")
    lengths = enc.lengths
    emb = torch.stack([per_window[g[0]] if len(g) == 1 else
                       sum(per_window[w] * lengths[w] for w in g) / sum(lengths[w] for w in g)
                       for g in by_text(enc)])                                 # (N, H)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def token_embeddings(model: Model, enc: Encoded, batch_size: int = 32) -> list[torch.Tensor]:
    """One (L_i, H) float32 tensor of per-token vectors per sequence (special tokens included), on the CPU."""
    def split(out, batch, index):
        return list(out.last_hidden_state.float().cpu().split((batch["cu_seqlens"][1:] - batch["cu_seqlens"][:-1]).tolist()))
    return run(model, enc, batch_size, fn=split)


def word_embeddings(model: Model, enc: Encoded, batch_size: int = 32) -> list[torch.Tensor]:
    """One (W_i, H) tensor per sequence: each word's sub-word pieces averaged (word ids from the tokenizer);
    special tokens dropped."""
    if enc.word_ids is None:
        raise ValueError("word-level vectors need the word ids: tokenize(..., word_ids=True)")
    out = []
    for vectors, words in zip(token_embeddings(model, enc, batch_size), enc.word_ids):
        w = torch.tensor(words)
        keep = w >= 0
        n = int(w[keep].max()) + 1 if keep.any() else 0
        sums = torch.zeros(n, vectors.shape[-1]).index_add_(0, w[keep], vectors[keep])
        counts = torch.zeros(n).index_add_(0, w[keep], torch.ones(int(keep.sum())))
        out.append(sums / counts.clamp(min=1).unsqueeze(-1))
    return out


def class_logits(model: Model, enc: Encoded, batch_size: int = 32, pool: str = "mean") -> torch.Tensor:
    """(N, num_labels) float32 logits of a sequence classifier, one row per text: a text in several windows gets
    the mean (or the max) of its windows' logits."""
    if model.head != "classification":
        raise ValueError(f"this model has head {model.head!r}; predictions need a classification head")
    per_window = run(model, enc, batch_size, fn=lambda out, b, i: list(out.logits.float().cpu()), first_only=True)
    rows = []
    for g in by_text(enc):
        stacked = torch.stack([per_window[w] for w in g])                     # (W, C)
        rows.append(stacked[0] if len(g) == 1 else (stacked.max(0).values if pool == "max" else stacked.mean(0)))
    return torch.stack(rows)


def class_probabilities(model: Model, enc: Encoded, batch_size: int = 32, pool: str = "mean") -> torch.Tensor:
    """(N, num_labels) softmax probabilities of a classification model (windows pooled by class_logits)."""
    return class_logits(model, enc, batch_size, pool).softmax(-1)
