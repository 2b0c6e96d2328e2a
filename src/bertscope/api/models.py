"""Looking at a model: encode texts and show every shape, trace a forward pass, check a planned input, fill masks,
time a model on a user's texts, list the built-in shapes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..arguments import check_flag, count_arg, path_arg, texts_arg
from ..errors import CheckpointError, DataError, InputError, TokenizerError, UsageError
from .common import Loaded, expect_loaded, expect_placed, max_length_for, truncation_notice


@dataclass
class Encoding:
    """What `bertscope encode` shows."""
    first_input: tuple                 # input_ids of the first batch, padded
    hidden_states_0: tuple
    last_hidden_state: tuple
    pooler_output: tuple | None
    embeddings: object                 # (N, H) sentence embeddings, float32 on the CPU
    tokens: int                        # real tokens encoded
    seconds: float
    texts: list | None


def encode(loaded: Loaded, model, texts: list[str] | None = None, batch: int = 2, length: int = 16,
           batch_size: int = 32, on_event=None) -> Encoding:
    """Texts (all of them, length-sorted packed batches) or random ids of (batch, length) through the model; the
    first batch again, padded, with every hidden state, to show the shapes."""
    expect_loaded(loaded, "encode")
    expect_placed(model, "encode")
    texts = texts_arg("texts", texts, optional=True)
    import torch

    from .. import infer
    from ..model import mean_pool
    where = next(model.parameters()).device
    c = model.config
    tok = loaded.tokenizer
    if texts and tok is None and getattr(loaded, "tokenizer_error", None) is not None:
        raise loaded.tokenizer_error                   # its tokenizer files are there but cannot be read: say why
    if texts and tok is None:
        raise TokenizerError(f"{loaded.description} has no tokenizer (a built-in shape, or a folder without "
                             "tokenizer.json / vocab files); encode random ids with --batch and --length, or pass a "
                             "checkpoint folder with its tokenizer")
    batch, length, batch_size = (count_arg(option, value) for option, value in
                                 (("--batch", batch), ("--length", length), ("--batch-size", batch_size)))
    start = time.perf_counter()
    with torch.inference_mode():
        if texts:
            limit = max_length_for(c, tok, None)
            enc = infer.tokenize(tok, texts, max_length=limit)
            truncation_notice(enc, "encode", limit, on_event, windows_help=False)
            emb = infer.sentence_embeddings(model, enc, batch_size=batch_size)
            n_tokens = sum(enc.lengths)
            first = {k: v.to(where) for k, v in tok(texts[:batch_size], max_length=limit).items()}
        else:
            from ..export import check_length
            check_length(c, length)                  # the one wording of a --length the positions cannot hold
            g = torch.Generator().manual_seed(0)
            low = min(5, c.vocab_size - 1)                                   # above most special tokens
            ids = torch.randint(low, c.vocab_size, (batch, length), generator=g)
            ids[ids == c.pad_token_id] = low
            first = {"input_ids": ids.to(where), "attention_mask": torch.ones_like(ids).to(where)}
            out = model(**first)
            n_tokens = ids.numel()
            emb = mean_pool(out.last_hidden_state, first["attention_mask"]).float().cpu()
        seconds = time.perf_counter() - start
        shown = model(**first, output_hidden_states=True)
    return Encoding(tuple(first["input_ids"].shape), tuple(shown.hidden_states[0].shape),
                    tuple(shown.last_hidden_state.shape),
                    tuple(shown.pooler_output.shape) if shown.pooler_output is not None else None,
                    emb, n_tokens, seconds, texts)


def trace(loaded: Loaded, texts: list[str] | None = None, batch: int = 2, length: int = 16, unfold: bool = False,
          on_event=None):
    """explain.explain on tokenized texts, or on random ids of (batch, length)."""
    expect_loaded(loaded, "trace")
    texts = texts_arg("texts", texts, optional=True)
    check_flag("unfold", unfold)
    batch, length = count_arg("--batch", batch), count_arg("--length", length)
    from ..explain import explain
    from ..export import check_length
    ids = mask = types = None
    if not texts:
        check_length(loaded.model.config, length)
    if texts:
        if loaded.tokenizer is None:
            raise TokenizerError(f"{loaded.description} has no tokenizer; use --batch and --length instead of --text")
        from .. import infer
        limit = max_length_for(loaded.model.config, loaded.tokenizer, None)
        truncation_notice(infer.tokenize(loaded.tokenizer, texts, max_length=limit), "--text", limit, on_event,
                          windows_help=False)
        b = loaded.tokenizer(texts, max_length=limit)
        ids, mask, types = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    return explain(loaded.model, ids, mask, types, batch=batch, length=length, unfold=unfold)


def check(source: str, length: int | None = None, batch: int | None = None, pairs: bool = False, ids_file=None,
          data=None, label_column: str | None = None, num_labels: int | None = None):
    """(config, head, problems) for a planned input, from config.json alone: nothing is loaded or run. The data's
    labels (a table's label column, or a CoNLL file's tags) are checked against the head's classes."""
    from ..checkpoint import WEIGHT_FILES, saved_head, shard_map, weights_file
    from ..config import Config, named_config
    from ..data import is_conll, read_conll, read_ids, read_labels
    from ..explain import preflight
    check_flag("pairs", pairs)
    for option, given, needs, what in (("--pairs", pairs, length, "--length"), ("--batch", batch, length, "--length"),
                                       ("--num-labels", num_labels, data, "--data"),
                                       ("--label-column", label_column, data, "--data")):
        if given and needs is None:                # an option of a check not asked for would pass unnoticed
            raise UsageError(f"{option} applies to the check of {what}; give {what} too")
    path = Path(path_arg("MODEL", source))
    length = None if length is None else count_arg("--length", length, what="tokens")
    batch = 1 if batch is None else count_arg("--batch", batch, what="sequences")
    num_labels = None if num_labels is None else count_arg("--num-labels", num_labels, what="labels")
    config = Config.from_json(path) if path.is_dir() else named_config(source)
    if path.is_dir() and any((path / f).exists() or (path / f).is_symlink() for f in WEIGHT_FILES):
        f = weights_file(path)                      # the file it would be read from is there: a shard index's
        if f.name.endswith(".index.json"):          # shards too (listed, not loaded)
            shard_map(f)
    head = saved_head(path) if path.is_dir() and ((path / "model.safetensors").exists() or
                                                  config.extra.get("architectures")) else "base"
    ids = read_ids(ids_file) if ids_file is not None else None      # a path, or "-" for standard input
    tags = data is not None and (is_conll(data) or (head == "token-classification" and
                                                    Path(data).suffix.lower() == ".jsonl"))
    if tags and head == "classification":
        raise UsageError(f"--data {data}: holds a tag per word, and this model labels whole texts (head "
                         "classification); check it with a table of texts and labels, or check a token model")
    if data is not None and str(data) != "-" and not Path(data).is_file():
        raise DataError(f"--data {data}: " + ("is a folder; expected a file" if Path(data).is_dir() else
                                              "no such file"))
    if data is not None and not tags and head == "token-classification":
        raise UsageError(f"--data {data}: not word tags, and this model tags words (head token-classification); "
                         "check it with its tags: a CoNLL file (.conll, or a .txt whose lines are a word, a tab and "
                         "a tag, with blank lines between sentences) or a .jsonl of tokens and tags")
    if data is not None and head == "question-answering":
        raise UsageError(f"--data {data}: checks labels against a model's classes or tags, and a question-answering "
                         "model has none (it points at spans); check a planned length with --length")
    if tags and label_column is not None:
        raise UsageError(f"--label-column {label_column}: {data} holds a tag per word, in no named column")
    wrong = None
    if data is None:
        labels = None
    elif tags:
        from ..explain import Problem
        from ..tasks import make
        try:                                             # the tags as fine-tuning reads them (IOB2, B/M/E/S)
            sentences = make("token-classification").read(data).tags
        except DataError as e:                           # said, and the tags read as they are for the rest
            wrong = Problem("labels", f"{e} (fine-tuning and evaluating refuse the file)")
            sentences = read_conll(data).tags
        labels = [t for sentence in sentences for t in sentence]
    else:
        labels, wrong = _classes_of(read_labels(data, label_column or "label"), data, config, head,
                                    label_column or "label")
    if length is None and ids is None and labels is None:
        raise UsageError("nothing to check: give --length, --ids-file or --data")
    problems = preflight(config, length=length, batch=batch, pairs=pairs, ids=ids, labels=labels,
                         head=head if labels is not None and head != "base" else None, num_labels=num_labels)
    return config, head, problems + ([wrong] if wrong else []) + _weights_problems(path, config)


def _weights_problems(path: Path, config) -> list:
    """A checkpoint folder without weights, or whose safetensors file has no readable header or tables of other
    sizes than config.json says (a config without max_position_embeddings is read as 512): the config alone would
    pass the check, and loading would fail."""
    from ..checkpoint import WEIGHT_FILES, weights_file
    from ..explain import Problem
    if not path.is_dir():
        return []
    if not any((path / f).exists() for f in WEIGHT_FILES):
        return [Problem("weights", f"{path} has no weights ({', '.join(WEIGHT_FILES)}): its config is checked, but "
                                   "loading the model fails")]
    f = weights_file(path)
    if f.suffix == ".safetensors":
        try:
            from safetensors import safe_open
            with safe_open(str(f), "pt") as s:
                rows = {name.rsplit(".", 2)[-2]: s.get_slice(name).get_shape()[0] for name in s.keys()
                        if name.endswith(("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"))}
        except Exception as e:                  # a file cut short or of another kind: safetensors says how
            return [Problem("weights", f"{f}: not a readable safetensors file ({e}); loading the model fails")]
        import json
        written = json.loads((path / "config.json").read_text(encoding="utf-8"))   # (read already: it parses)
        for table, key in (("word_embeddings", "vocab_size"), ("position_embeddings", "max_position_embeddings")):
            if table in rows and rows[table] != getattr(config, key):
                given = f"gives {key} {getattr(config, key)}" if key in written else \
                    f"has no {key}, so {getattr(config, key)} (the default)"
                return [Problem("weights", f"{f}: its {table} table has {rows[table]} rows, but config.json {given}; "
                                           f"loading the model fails: set {key} to {rows[table]}")]
    elif f.suffix == ".bin":                    # torch.save writes a zip archive (older torch: a pickle)
        with open(f, "rb") as b:
            head = b.read(4)
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            return [Problem("weights", f"{f}: not a file torch.save wrote (it starts {head!r}); loading the model "
                                       "fails")]
    return []


def _classes_of(rows, data, config, head: str, label_column: str):
    """The classes a table's labels name, read as fine-tuning this model would read them (classification: "1.0" is
    class 1; multi-label: each name of a|b or a list; regression: numbers, which name no class), and the first
    label it would refuse, as a problem (None if there is none)."""
    from ..data import source_name
    from ..explain import Problem
    from ..tasks import for_model, guess, make
    name = for_model(config, head) if head == "classification" else guess(data, label_column)[0]
    if name not in ("classification", "multi-label", "regression"):
        name = "classification"
    task = make(name)
    classes = []
    for n, value in rows:
        try:
            label = task.canonical(value, f"{source_name(data)} line {n}")
        except DataError as e:
            model = f"this model is {name}" if head == "classification" else f"the file reads as {name}"
            return classes, Problem("labels", f"{e} ({model})")
        if name == "multi-label":
            classes.extend(label)
        elif name == "classification":
            classes.append(label)
    return classes, None


def fill_mask(loaded: Loaded, text: str, top_k: int = 5, on_event=None) -> list[dict]:
    """For every mask token in the text: its position and the top_k (token, probability, filled text). A text
    longer than the model is cut, and on_event hears so; a mask past the cut is refused."""
    expect_loaded(loaded, "fill_mask")
    top_k = count_arg("--top-k", top_k)
    if not isinstance(text, str):
        raise UsageError(f"fill_mask takes one text (a str) holding the mask token; got a {type(text).__name__}")
    import torch
    model, tok = loaded.model, loaded.tokenizer
    if model.mlm is None:
        raise CheckpointError(f"{loaded.description}: fill-mask needs a checkpoint that has its masked-LM head")
    if tok is None:
        raise TokenizerError(f"{loaded.description} has no tokenizer")
    if tok.mask_token_id is None:
        raise TokenizerError(f"{loaded.description}: the tokenizer's mask token {tok.mask_token!r} is not in its "
                             "vocabulary (tokenizer_config.json's mask_token?), so no text can hold a mask")
    b = tok([text])
    where = (b["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    whole = tok([text], truncation=False)["input_ids"][0]                    # (L_text,), before the cut
    kept, masks_in_all = b["input_ids"].shape[1], int((whole == tok.mask_token_id).sum())
    if not masks_in_all:
        raise InputError(f"no mask token in the text; this {model.config.family.title} model's mask token is "
                         f"{tok.mask_token!r}, e.g. \"The {tok.mask_token} sat on the mat.\"")
    if len(where) < masks_in_all:
        lost = masks_in_all - len(where)
        what = "the mask token is" if masks_in_all == 1 else \
            f"{lost} of the {masks_in_all} mask tokens {'is' if lost == 1 else 'are'}"
        raise InputError(f"{what} past the first {kept} tokens, where the text ({len(whole)} tokens) is cut to fit "
                         f"this model ({model.config.max_tokens} positions); shorten the text before "
                         f"{'it' if masks_in_all == 1 else 'them'}")
    if len(whole) > kept and on_event:
        on_event({"event": "notice", "message": f"fill-mask: the text is {len(whole)} tokens, longer than {kept}: "
                                                f"the last {len(whole) - kept} were cut"})
    with torch.inference_mode():
        probs = model(**b).logits[0].float().softmax(-1)                 # (L, V)
    known = min(tok.vocab_size, probs.shape[-1])     # rows past the tokenizer's ids (a padded vocabulary) name no token
    ids_in = b["input_ids"][0].tolist()
    ends = (1 if ids_in[0] == tok.cls_token_id else 0, len(ids_in) - (1 if ids_in[-1] == tok.sep_token_id else 0))
    masks = []
    for pos in where:
        p, ids = probs[pos, :known].topk(min(top_k, known))
        rows = []
        for pi, i in zip(p.tolist(), ids.tolist()):
            filled = list(ids_in)
            filled[pos] = i                          # the other masks stay in the text, as masks
            rows.append({"token": tok.decode([i]).strip() or tok.backend.id_to_token(i), "probability": pi,
                         "text": tok.decode(filled[ends[0]:ends[1]], skip_special_tokens=False).strip()})
        masks.append({"position": pos, "candidates": rows})
    return masks


def bench(loaded: Loaded, model, texts: list[str], batch_size: int = 32, compile: bool = False) -> dict:
    """Real tokens/s of padded batches in file order against length-sorted packed batches (and compiled), and the
    achieved FLOP/s against this machine's matmul rate in the model's dtype."""
    expect_loaded(loaded, "bench")
    expect_placed(model, "bench")
    check_flag("compile", compile)
    batch_size = count_arg("batch_size", batch_size, what="texts")
    texts = texts_arg("texts", texts)
    if not texts:
        raise UsageError("bench: no texts to time")
    if loaded.tokenizer is None:
        raise TokenizerError(f"{loaded.description} has no tokenizer (a built-in shape, or a folder without "
                             "tokenizer.json / vocab files): bench times your texts, so it needs a checkpoint folder "
                             "with its tokenizer")
    import torch

    from .. import infer
    from ..model import compile_model
    from ..explain import estimate_flops, matmul_rates
    from ..speed import best_time
    tok = loaded.tokenizer
    where, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    limit = max_length_for(model.config, tok, None)
    enc = infer.tokenize(tok, texts, max_length=limit)
    real = sum(enc.lengths)
    flops = sum(estimate_flops(model, 1, n)["total"] for n in enc.lengths)
    peak = max(matmul_rates(where, dtype).values())

    def padded_file_order():
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = tok(texts[i:i + batch_size], max_length=limit)
                model(**{k: v.to(where) for k, v in batch.items()})

    def packed():
        infer.sentence_embeddings(model, infer.tokenize(tok, texts, max_length=limit), batch_size=batch_size)

    times = {"padded": best_time(padded_file_order, 1, where, warmup=where.type == "cuda"),
             "packed": best_time(packed, 1, where, warmup=where.type == "cuda")}
    if compile:
        compile_model(model)
        start = time.perf_counter()
        packed()                                                    # compiles each kind of batch once
        times["compiling"] = time.perf_counter() - start
        times["compiled"] = best_time(packed, 1, where, warmup=False)
    best = min(v for k, v in times.items() if k != "compiling" and k != "padded")
    return {"texts": len(texts), "real_tokens": real, "longest": max(enc.lengths), "seconds": times,
            "tokens_per_s": {k: real / v for k, v in times.items() if k != "compiling"},
            "gflops": flops / best / 1e9, "peak_gflops": peak / 1e9, "dtype": str(dtype).replace("torch.", ""),
            "device": str(where)}


def builtin_shapes() -> list[tuple[str, object, int]]:
    """(name, config, parameters) of every built-in shape, counted without allocating weights."""
    import torch

    from ..config import NAMED, named_config
    from ..model import Model
    rows = []
    for name in NAMED:
        c = named_config(name)
        with torch.device("meta"):
            n = Model(c).num_parameters
        rows.append((name, c, n))
    return rows
