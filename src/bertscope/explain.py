"""See every dimension: a shape trace of a real forward pass, parameter / FLOP / memory accounting, and a
pre-flight check of planned inputs.

`explain(model, ...)` runs the model once with forward hooks on every module and returns an `Explanation`: the
module tree (our names, the reference implementation's names, constructor dims, parameters, the input and output
shapes of this very input, and the attention internals that `print(model)` never shows), folded where layers repeat.
`preflight(config, ...)` checks a planned input against a model's limits without running anything.
`estimate_memory(...)` says, from the dims alone, how many bytes a forward pass of (batch, length) takes, and
`guard_memory(...)` refuses one that this machine cannot hold before a single tensor of it is made.
The CLI renders both (text, markdown or JSON); nothing here prints.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import Config
from .inputs import input_problems
from .machine import available_memory, fmt_gib
from .model import Model, Output, SelfAttention

Shape = tuple


@dataclass
class Node:
    name: str                                     # path in our model ("encoder.layers.0.attention.qkv")
    kind: str                                     # type and constructor dims, as print(model) shows them
    params: int                                   # parameters in this subtree (shared / tied ones counted once)
    inputs: list[Shape] = field(default_factory=list)   # tensor inputs of its first call
    outputs: list[Shape] = field(default_factory=list)  # tensor outputs of its first call
    calls: int = 0                                # how often it ran (ALBERT's shared layers run several times)
    reference: list[str] = field(default_factory=list)  # the reference implementation's module name(s)
    reference_kind: list[str] = field(default_factory=list)  # and their constructor dims
    note: str = ""
    children: list["Node"] = field(default_factory=list)
    fold: str = ""                                # "layers 0-11: 12 × EncoderLayer" when folded

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class Explanation:
    family: str
    head: str
    input_shape: Shape
    tree: Node
    totals: dict[str, int]                        # parameters by component, and "total"
    sharing: dict[str, int] | None                # ALBERT: actual vs an unshared, unfactorised twin
    flops: dict[str, int]                         # multiply-adds × 2, by part, for this input
    activation_bytes: int                         # all module outputs + attention scores / probs of one pass
    largest_activation: tuple[str, Shape]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- the shape trace --------------------------------------------------------------------------------------------

def _shapes(x) -> list[Shape]:
    if isinstance(x, torch.Tensor):
        return [tuple(x.shape)]
    if isinstance(x, (list, tuple)):
        return [s for item in x for s in _shapes(item)]
    if isinstance(x, Output):
        return _shapes([t for t in (x.last_hidden_state, x.pooler_output, x.logits, x.pair_logits) if t is not None])
    return []


def _kind(m: nn.Module) -> str:
    extra = m.extra_repr()
    return f"{type(m).__name__}({extra})" if extra else type(m).__name__


def _reference_modules(model: Model) -> dict[str, list[str]]:
    """Our module path -> the reference module(s) holding the same weights (Q/K/V: three for our fused one)."""
    from .checkpoint import name_table
    prefix = model.config.family.prefix if model.head == "base" else ""
    out: dict[str, list[str]] = {}
    for ours, theirs in name_table(model):
        module = ours.rsplit(".", 1)[0]
        names = [t.rsplit(".", 1)[0] for t in theirs]
        if module == "mlm.decoder":  # the reference keeps the decoder's bias one level up, on the head
            names = [n if n.endswith(".decoder") else n + ".decoder" for n in names]
        names = [n[len(prefix):] if prefix and n.startswith(prefix) else n for n in names]
        out.setdefault(module, [])
        out[module] += [n for n in names if n not in out[module]]
    return out


def _reference_kind(m: nn.Module, n_parts: int) -> str:
    """Constructor dims of each reference module behind ours (a fused Linear splits on its output dim)."""
    if isinstance(m, nn.Linear):
        return f"Linear(in_features={m.in_features}, out_features={m.out_features // n_parts}, " \
               f"bias={m.bias is not None})"
    return _kind(m)


def explain(model: Model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None, batch: int = 2, length: int = 16,
            unfold: bool = False) -> Explanation:
    """Run one forward pass with hooks and account for every module. Without input_ids, random ids of
    (batch, length) are used (the shapes, not the values, are what is explained)."""
    c = model.config
    if input_ids is None:
        too_long = _too_long(c, length)      # before the batch is made (or measured against memory)
        if too_long:
            from .errors import InputError
            raise InputError(too_long)
        guard_memory(model, batch, length, attentions=True, what=(f"batch={batch}, length={length}",
                                                                  f"--batch {batch} --length {length}"))
        g = torch.Generator().manual_seed(0)
        low = min(5, c.vocab_size - 1)
        input_ids = torch.randint(low, c.vocab_size, (batch, length), generator=g)
        input_ids[input_ids == c.pad_token_id] = low                 # no padding: every row is real tokens
    else:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else ()
        if len(shape) == 2:
            guard_memory(model, shape[0], shape[1], attentions=True, what=(f"input_ids of shape {shape}",) * 2,
                         fix=("; trace fewer or shorter texts",) * 2)
    problems = input_problems(c, input_ids, attention_mask, token_type_ids)
    if problems:
        from .errors import InputError
        raise InputError("\n".join(message for _, message in problems))

    records: dict[str, dict] = {}
    hooks = []
    for name, m in model.named_modules():
        def hook(mod, args, kwargs, out, name=name):
            r = records.setdefault(name, {"calls": 0})
            r["calls"] += 1
            if r["calls"] == 1:
                r["inputs"] = _shapes(list(args) + [v for v in kwargs.values()])
                r["outputs"] = _shapes(out)
                r["bytes"] = sum(t.numel() * t.element_size() for t in _tensors(out))
            else:
                r["bytes"] += sum(t.numel() * t.element_size() for t in _tensors(out))
        hooks.append(m.register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    owner = _param_owner(model)
    refs = _reference_modules(model)
    tree = _build(model, "", records, owner, refs)
    if not unfold:
        _fold(tree)
    totals = {child.name: child.params for child in tree.children}
    totals["total"] = tree.params
    B, L = input_ids.shape
    leaves = {n for n, m in model.named_modules() if not any(True for _ in m.children())}
    activation = sum(r.get("bytes", 0) for n, r in records.items() if n in leaves)  # every leaf output, every call
    activation += sum(a.numel() * a.element_size() * 2 for a in out.attentions)   # scores and probabilities
    largest = max(((n, s) for n, r in records.items() if n for s in r.get("outputs", [])),
                  key=lambda item: _numel(item[1]), default=("", ()))
    return Explanation(family=c.family.name, head=model.head, input_shape=(B, L), tree=tree, totals=totals,
                       sharing=_sharing(model) if c.family.shared_layers else None,
                       flops=estimate_flops(model, B, L), activation_bytes=int(activation),
                       largest_activation=largest)


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    return []


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _param_owner(model: nn.Module) -> dict[int, str]:
    """Each parameter's first owner, so tied and shared weights are counted once, where they live."""
    owner = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owner.setdefault(id(p), name)
    return owner


def _build(module: nn.Module, name: str, records, owner, refs) -> Node:
    own = {id(p): p for p in module.parameters()}
    params = sum(p.numel() for pid, p in own.items() if owner[pid] == name or owner[pid].startswith(name + ".")
                 or not name)
    r = records.get(name, {})
    node = Node(name=name, kind=_kind(module), params=params, inputs=r.get("inputs", []),
                outputs=r.get("outputs", []), calls=r.get("calls", 0))
    if name in refs:
        node.reference = refs[name]
        node.reference_kind = [_reference_kind(module, len(refs[name]))] * len(refs[name])
    tied = [n for n, p in module.named_parameters(recurse=False) if owner[id(p)] != f"{name}.{n}"]
    if tied:
        node.note = "; ".join(f"{n} tied to {owner[id(getattr(module, n))]}" for n in tied)
    for child_name, child in module.named_children():
        node.children.append(_build(child, f"{name}.{child_name}" if name else child_name, records, owner, refs))
    if isinstance(module, SelfAttention) and node.outputs:
        node.children += _attention_internals(module, node)
    if node.calls > 1 and type(module).__name__ == "EncoderLayer":
        node.note = (node.note + "; " if node.note else "") + f"shared: runs {node.calls}× per forward pass"
    return node


def _attention_internals(m: SelfAttention, node: Node) -> list[Node]:
    """What happens inside attention, shaped from the real Q/K/V projection output of this pass."""
    x = node.inputs[0]                                        # (B, L, H)
    B, L = x[0], x[1]
    nh, hd = m.heads, m.head_dim
    qkv = (B, nh, L, hd)
    return [
        Node(f"{node.name}.(q, k, v)", f"split qkv into {nh} heads", 0, [(B, L, 3 * nh * hd)], [qkv, qkv, qkv]),
        Node(f"{node.name}.(scores)", f"q·kᵀ / √{hd} + mask", 0, [qkv, qkv], [(B, nh, L, L)]),
        Node(f"{node.name}.(probs)", "softmax over keys", 0, [(B, nh, L, L)], [(B, nh, L, L)]),
        Node(f"{node.name}.(context)", "probs·v, heads merged", 0, [(B, nh, L, L), qkv], [(B, L, nh * hd)]),
    ]


def _signature(n: Node):
    return (n.kind, n.params, tuple(n.inputs), tuple(n.outputs), tuple(_signature(c) for c in n.children))


def _fold(node: Node):
    """Fold runs of identical siblings (encoder layers) into one block that stands for all of them."""
    for child in node.children:
        _fold(child)
    folded, i = [], 0
    while i < len(node.children):
        j = i + 1
        while j < len(node.children) and _signature(node.children[j]) == _signature(node.children[i]):
            j += 1
        first = node.children[i]
        if j - i > 1:
            last = node.children[j - 1].name.rsplit(".", 1)[-1]
            block = dataclasses.replace(first, params=sum(c.params for c in node.children[i:j]))
            parent = first.name.rsplit(".", 2)[-2] if first.name.count(".") else ""
            block.fold = f"{parent} {first.name.rsplit('.', 1)[-1]}-{last}: {j - i} × {first.kind}"
            block.reference = [r for c in node.children[i:j] for r in c.reference]
            folded.append(block)
        else:
            folded.append(first)
        i = j
    node.children = folded


# ---- accounting -----------------------------------------------------------------------------------------------------

def _sharing(model: Model) -> dict[str, int]:
    """ALBERT against its twin with one set of weights per layer application and an unfactorised embedding."""
    c = model.config
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in model.encoder.layers]
    encoder_actual = sum(p.numel() for p in model.encoder.parameters())
    encoder_unshared = sum(per_layer[i] for i in model.encoder.plan)   # one weight set per layer application
    H = c.hidden_size
    tables = c.vocab_size + c.max_position_embeddings + c.type_vocab_size
    emb_actual = sum(p.numel() for p in model.embeddings.parameters())
    emb_unfactorised = tables * H + 2 * H
    actual = sum(p.numel() for p in model.parameters())
    twin = actual - encoder_actual - emb_actual + encoder_unshared + emb_unfactorised
    return {"encoder": encoder_actual, "encoder_unshared": encoder_unshared, "embeddings": emb_actual,
            "embeddings_unfactorised": emb_unfactorised, "total": actual, "twin_total": twin,
            "saved": twin - actual}


def matmul_rates(device, dtype=torch.float32, repeats: int = 3) -> dict[str, float]:
    """This machine's matrix-product rate in FLOP/s, best of `repeats`: torch's matmul, and on the CPU oneDNN's
    product too (what bertscope's Linear layers may run there, kernels.py). The larger is the peak to compare with."""
    from .kernels import ONEDNN, onednn_product
    from .speed import best_time
    device = torch.device(device)
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    products = {"torch matmul": lambda: a @ b}
    if device.type == "cpu" and ONEDNN:
        products["oneDNN"] = lambda: onednn_product(a, b, None)
    rates = {}
    for name, product in products.items():
        try:
            rates[name] = 2 * n ** 3 / best_time(product, repeats, device)
        except RuntimeError:            # e.g. no oneDNN bf16 primitive on this CPU
            continue
    return rates


def estimate_flops(model: Model, B: int, L: int) -> dict[str, int]:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass over a (B, L) batch."""
    c = model.config
    E, H, V, T = c.embedding_dim, c.hidden_size, c.vocab_size, B * L
    flops = {"embeddings": 2 * T * E * H if c.family.factorised_embeddings else 0, "attention": 0,
             "feed_forward": 0}
    for i in model.encoder.plan:
        layer = model.encoder.layers[i]
        inner = layer.attention.heads * layer.attention.head_dim
        flops["attention"] += 2 * T * H * 3 * inner + 2 * T * inner * H    # Q/K/V and output projections
        flops["attention"] += 2 * 2 * B * L * L * inner                     # q·kᵀ and probs·v
        flops["feed_forward"] += 2 * 2 * T * H * c.intermediate_size
    if model.pooler is not None:
        flops["pooler"] = 2 * B * H * H
    if model.mlm is not None:
        flops["mlm_head"] = 2 * T * (H * E + E * V)
    if model.pair is not None:
        flops["pair_head"] = 2 * B * H * 2
    if model.classifier is not None:
        flops["classifier"] = 2 * B * H * (c.num_labels + (H if c.family.classifier == "first-token" else 0))
    if model.token_classifier is not None:
        flops["token_classifier"] = 2 * T * H * c.num_labels
    if model.span is not None:
        flops["span_head"] = 2 * T * H * 2
    flops["total"] = sum(flops.values())
    return flops


# ---- memory: what a forward pass takes, and what this machine has ------------------------------------------------

def estimate_memory(model_or_config, batch: int, length: int, head: str | None = None, attentions: bool = False,
                    dtype: torch.dtype | None = None) -> dict[str, int]:
    """Bytes one inference forward pass of a (batch, length) input takes at its peak, from the dims alone (nothing
    is allocated, so any batch can be asked about): the input tensors (ids, segments, positions, mask), the largest
    of the embeddings, one encoder layer (Q/K/V, the (B, heads, L, L) attention scores and probabilities, the
    feed-forward's (B, L, I)) and the head, plus, with `attentions`, every layer's attention map kept for the output
    (explain's trace keeps them). Activations are in the model's dtype (float32 for a config). Training keeps every
    layer's activations for backward and needs several times more (explain's `activation_bytes`)."""
    if isinstance(model_or_config, Model):
        model, c = model_or_config, model_or_config.config
        head = model.head if head is None else head
        heads = [(model.encoder.layers[i].attention.heads, model.encoder.layers[i].attention.head_dim)
                 for i in model.encoder.plan]
        dtype = dtype or next(model.parameters()).dtype
    else:
        c = model_or_config
        heads = [(c.num_attention_heads, c.head_dim)] * len(c.layer_plan())
        dtype = dtype or torch.float32
    head = head or "base"
    s = torch.empty((), dtype=dtype).element_size()
    B, L, H, E, I, V = int(batch), int(length), c.hidden_size, c.embedding_dim, c.intermediate_size, c.vocab_size
    T = B * L
    # ids, segments, positions and a mask as int64, the checks' bool temporaries, the additive mask in the dtype
    inputs = T * (4 * 8 + 4) + T * s
    # (a product's result and its bias-added copy can be alive together: two of every product's output)
    embeddings = 4 * T * E * s + (2 * T * H * s if c.family.factorised_embeddings else 0)
    layer = 0
    for nh, hd in heads:
        inner = nh * hd
        attention = T * H + 6 * T * inner + 2 * B * nh * L * L        # x, qkv, q/k copies, context; scores, probs
        feed_forward = 4 * T * H + 3 * T * I                          # x, residuals, norms; the (B, L, I)s
        layer = max(layer, attention * s, feed_forward * s)
    kept = sum(B * nh * L * L for nh, _ in heads) * s if attentions else 0
    n = c.num_labels
    mlm = 3 * T * E + 2 * T * V
    head_bytes = {"mlm": mlm, "pretraining": mlm + 3 * B * H, "classification": 3 * B * H + 2 * B * n,
                  "token-classification": 2 * T * n, "question-answering": 4 * T}.get(head, 2 * B * H) * s
    output = T * H * s                                                # last_hidden_state
    parts = {"inputs": inputs, "embeddings": embeddings, "layer": layer, "attentions": kept, "head": head_bytes,
             "output": output}
    parts["total"] = inputs + max(embeddings, layer, head_bytes) + kept + output
    return parts


def memory_message(parts: dict[str, int], batch: int, length: int, heads: int, room: int, what: str,
                   doing: str | None = None) -> str:
    """'one forward pass of (B, L) needs about X GiB ... but this machine has Y GiB available' (the part after an
    option or shape); doing replaces 'one forward pass of (B, L)'."""
    doing = doing or f"one forward pass of ({batch}, {length})"
    return (f"{doing} needs about {fmt_gib(parts['total'])} (inputs, activations and the ({batch}, {heads}, "
            f"{length}, {length}) attention scores) but this machine has {fmt_gib(room)} {what}")



def guard_memory(model: Model, batch: int, length: int, attentions: bool = False, factor: int = 1,
                 what: tuple[str, str] = ("", ""), fix: tuple[str, str] | None = None,
                 doing: str | None = None) -> dict[str, int]:
    """Refuse (UsageError) a (batch, length) run whose estimated peak (`factor` passes of it held at once) is more
    than this machine's available memory, before any tensor of it is made. what: (Python words, CLI words) for the
    input, e.g. ("batch=8, length=128", "--batch 8 --length 128"); fix: the same for the way out (a smaller batch or
    length); doing: what runs, in words ('one forward pass of (B, L)' unless given)."""
    parts = estimate_memory(model, batch, length, attentions=attentions)
    if factor != 1:
        parts = {k: v * factor for k, v in parts.items()}
    room, where = available_memory()
    if parts["total"] > room:
        from .errors import UsageError
        heads = model.config.num_attention_heads
        body = memory_message(parts, batch, length, heads, room, where, doing)
        fix = fix or ("; use a smaller batch (or length)", "; use a smaller --batch (or --length)")
        raise UsageError(f"{what[0]}: {body}{fix[0]}", cli=f"{what[1]}: {body}{fix[1]}")
    return parts


# ---- pre-flight check of a planned input ------------------------------------------------------------------------

@dataclass
class Problem:
    what: str            # "length", "vocab", "segments", "labels", ...
    message: str


def preflight(config: Config, length: int | None = None, batch: int = 1, pairs: bool = False,
              ids: list[list[int]] | None = None, labels: list | None = None, head: str | None = None,
              num_labels: int | None = None) -> list[Problem]:
    """Check a planned input against a model without running it. Every violation comes back in plain words with
    the fix; an empty list means the input fits."""
    problems: list[Problem] = []
    if length is not None:
        pair_specials = config.family.pair_special_tokens
        if length < 1:
            problems.append(Problem("length", f"length {length}: a sequence needs at least one token"))
        elif pairs and length < pair_specials + 2:
            problems.append(Problem("length", f"length {length}: a pair needs {pair_specials} special tokens and a "
                                              f"token of each text, at least {pair_specials + 2}"))
        else:
            # every planned row is the same, so one row stands for the batch: nothing of the batch's size is built
            # (and for an absurd length, one of the tokens the model allows, the length said in words by _too_long)
            L = length if length <= max(config.max_tokens, ROW_CAP) else config.max_tokens
            planned = torch.full((1, L), _ordinary_id(config))
            types = None
            if pairs:
                if not config.family.segments:
                    types = None  # RoBERTa marks pairs with </s></s>; its tokenizer gives segment 0 throughout
                else:
                    types = torch.zeros(1, L, dtype=torch.long)
                    types[:, L // 2:] = 1
            problems += [Problem(what, re.sub(r"^(row 0 of )?input_ids has", "a planned sequence has", m))
                         for what, m in input_problems(config, planned, token_type_ids=types)]
            if L < length:
                problems.append(Problem("length", _too_long(config, length)))
            if batch >= 1:
                parts = estimate_memory(config, batch, length)
                room, where = available_memory()
                if parts["total"] > room:
                    problems.append(Problem("memory", f"--batch {batch} × --length {length}: " + memory_message(
                        parts, batch, length, config.num_attention_heads, room, where) + "; it does not fit: plan a "
                        "smaller batch (or length)"))
    V = config.vocab_size
    for row, seq in enumerate(ids or []):
        huge = next((x for x in seq if not -2 ** 63 <= x < 2 ** 63), None)
        if huge is not None:
            # no tensor holds it (an int64 overflows): said here, as the other ids outside the vocabulary are
            problems.append(Problem("vocab", f"sequence {row + 1}: input_ids position {seq.index(huge)} holds id "
                                             f"{huge}, outside this model's vocabulary of {V} ids (0..{V - 1})"))
            continue
        t = torch.tensor([seq], dtype=torch.long)
        for what, m in input_problems(config, t):
            problems.append(Problem(what, f"sequence {row + 1}: " + m.replace("input_ids row 0, position",
                                                                              "input_ids position")))
    if labels is not None:
        classes = sorted({str(x) for x in labels})
        n = num_labels if num_labels is not None else config.num_labels
        listed = f"{len(classes)} classes ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
        if head not in LABELLED_HEADS and num_labels is None:
            pass                        # fine-tuning makes a new classifier for the file's classes: nothing to fit
        elif num_labels is not None and len(classes) > num_labels:
            problems.append(Problem("labels", f"the data has {listed} but --num-labels {num_labels} plans a "
                                              f"classifier of {num_labels} output{'s' * (num_labels != 1)}, and it needs "
                                              f"one per class: plan --num-labels {len(classes)} (bertscope finetune "
                                              "sizes a new head from the file's classes itself)"))
        elif len(classes) > n:
            problems.append(Problem("labels", f"the data has {listed} but the classifier has "
                                              f"{n}. Fine-tuning on this file needs a new {len(classes)}-class head, "
                                              "trained from scratch: bertscope finetune --new-head (in Python: "
                                              "new_head=True)."))
        else:
            known = set(config.labels)
            ints = all(x.lstrip("-").isdigit() for x in classes)
            if head in LABELLED_HEADS and n == config.num_labels and known and not set(classes) <= known \
                    and config.id2label and not (ints and config.generic_labels):
                # (a saved classifier maps labels by its class names; LABEL_i names take integers 0..n-1 alone)
                unseen = sorted(set(classes) - known)
                problems.append(Problem("labels", f"labels {', '.join(unseen[:10])} are not among the model's "
                                                  f"classes ({', '.join(config.labels)}); fine-tuning refuses them "
                                                  "unless it trains a new head (--new-head)"))
            if ints and (config.generic_labels or head != "classification"):
                bad = [x for x in classes if not 0 <= int(x) < n]
                if bad:
                    problems.append(Problem("labels", f"integer labels {', '.join(bad)} fall outside 0..{n - 1} "
                                                      f"(the classifier has {n} classes); renumber the classes from "
                                                      "0, or train a new head (--new-head)"))
    return problems


LABELLED_HEADS = ("classification", "token-classification")    # heads whose width is the data's classes (or tags)
ROW_CAP = 1 << 20            # the longest row made to check a length by: 8 MiB of ids


def _too_long(config: Config, length: int) -> str | None:
    """input_problems' message for a sequence of `length` tokens where the positions allow fewer (None if they
    allow it), from one row of that length; past ROW_CAP tokens, in words made from the numbers."""
    if length <= config.max_tokens:
        return None
    if length <= ROW_CAP:
        row = torch.full((1, length), _ordinary_id(config))
        return next(m for what, m in input_problems(config, row) if what == "length")
    return (f"a sequence of {length} tokens: this {config.family.title} model has {config.max_position_embeddings} "
            f"position embeddings" + (f", of which the first {config.position_offset} are reserved"
                                      if config.position_offset else "")
            + f", so at most {config.max_tokens} tokens fit. Truncate to {config.max_tokens} tokens or split the "
            "text into windows (--windows STRIDE in bertscope's commands).")


def _ordinary_id(config: Config) -> int:
    """An id that is not the pad token (RoBERTa's positions skip pads, so a planned length must not use it)."""
    return (config.pad_token_id + 1) % config.vocab_size


# ---- rendering (strings; the CLI prints them) ---------------------------------------------------------------------

def fmt_shapes(shapes: list[Shape]) -> str:
    parts, i = [], 0
    while i < len(shapes):
        j = i
        while j < len(shapes) and shapes[j] == shapes[i]:
            j += 1
        text = "[" + ", ".join(map(str, shapes[i])) + "]"
        parts.append(text + (f" ×{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(parts)


def fmt_names(names: list[str]) -> str:
    """query/key/value of one layer as `...attention.self.{query,key,value}`; a folded block as its first name +n."""
    if not names:
        return ""
    stems = {n.rsplit(".", 1)[0] for n in names}
    if len(stems) == 1 and len(names) > 1:
        return f"{stems.pop()}.{{{','.join(n.rsplit('.', 1)[1] for n in names)}}}"
    return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")


def fmt_count(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _rows(e: Explanation, depth: int | None):
    """(tree prefix + label, node) in display order, down to `depth` levels below the model."""
    out = []

    def visit(node: Node, prefix: str, last: bool, level: int, label: str):
        branch = "" if level == 0 else ("└─ " if last else "├─ ")
        out.append((prefix + branch + label, node))
        if depth is not None and level >= depth:
            return
        kids = []
        for child in node.children:   # a ModuleList is only a container: show its layers in its place
            if child.kind == "ModuleList":
                kids += [(k, k.fold or f"{child.name.rsplit('.', 1)[-1]}.{k.name.rsplit('.', 1)[-1]}")
                         for k in child.children]
            else:
                kids.append((child, child.fold or child.name.rsplit(".", 1)[-1]))
        for i, (child, name) in enumerate(kids):
            nxt = prefix + ("" if level == 0 else ("   " if last else "│  "))
            visit(child, nxt, i == len(kids) - 1, level + 1, name)

    visit(e.tree, "", True, 0, f"{e.family} ({e.head})")
    return out


def render_text(e: Explanation, depth: int | None = None, markdown: bool = False) -> str:
    header = ["module", "type", "params", "input → output", "reference name"]
    table = []
    for label, n in _rows(e, depth):
        kind = n.kind if len(n.kind) <= 72 else n.kind[:69] + "..."
        io = f"{fmt_shapes(n.inputs)} → {fmt_shapes(n.outputs)}" if n.outputs else ""
        ref = fmt_names(n.reference)
        if n.note:
            ref = (ref + "  " if ref else "") + f"[{n.note}]"
        table.append([label, kind, fmt_count(n.params) if n.params else "", io, ref])
    lines = [f"{e.family} · head {e.head} · input {fmt_shapes([e.input_shape])} · "
             f"{e.totals['total']:,} parameters", ""]
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(c.replace("|", "\\|") or " " for c in row) + " |" for row in table]
    else:
        widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
        for row in [header] + table:
            lines.append("  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in
                                   enumerate(zip(row, widths))).rstrip())
    lines.append("")
    lines += summary_lines(e)
    return "\n".join(lines) + "\n"


def summary_lines(e: Explanation) -> list[str]:
    t = e.totals
    parts = " · ".join(f"{k} {v:,}" for k, v in t.items() if k != "total")
    lines = [f"parameters   {parts} · total {t['total']:,}"]
    if e.sharing:
        s = e.sharing
        lines.append(f"ALBERT       encoder {s['encoder']:,} shared vs {s['encoder_unshared']:,} with one set of "
                     f"weights per layer; embeddings {s['embeddings']:,} factorised (V×E + E×H) vs "
                     f"{s['embeddings_unfactorised']:,} at V×H; twin {s['twin_total']:,} → saved {s['saved']:,} "
                     f"({100 * s['saved'] / s['twin_total']:.1f}%)")
    f = e.flops
    parts = " · ".join(f"{k.replace('_', ' ')} {fmt_count(v)}" for k, v in f.items() if k != "total" and v)
    B, L = e.input_shape
    lines.append(f"FLOPs        {fmt_count(f['total'], 'FLOP')} per forward pass of ({B}, {L}) "
                 f"({fmt_count(f['total'] / (B * L), 'FLOP')} per token): {parts}")
    name, shape = e.largest_activation
    lines.append(f"activations  {fmt_count(e.activation_bytes, 'B')} for one pass (every layer's output and "
                 f"attention map: what training keeps for backward); largest {name} {fmt_shapes([shape])}")
    return lines
