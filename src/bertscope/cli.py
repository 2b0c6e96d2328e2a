"""The `bertscope` command. Argument parsing and printing only: every command calls the library."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from .config import NAMED, ConfigError
from .inputs import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="BERT, RoBERTa and ALBERT encoders: load Hugging Face checkpoints and see every dimension.")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


DEVICE = typer.Option("auto", help="cpu, cuda, cuda:N, mps, or auto (CUDA where there is one, else the CPU)")
BF16 = typer.Option(False, help="run in bfloat16 (fast on GPUs; slower on CPUs without bf16 instructions)")
COMPILE = typer.Option(False, "--compile", help="torch.compile the model first (fuses element-wise work; the "
                                                "first batches pay for compiling)")


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA where there is one, else the CPU; anything else must name a device this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        _fail(f"--device {name!r} is not a device name; use cpu, cuda, cuda:N, mps or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        _fail(f"--device {name}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
              "use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        _fail(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        _fail(f"--device {name}: MPS is not available here; use --device cpu (or auto)")
    return device


def place(model, device: str = "auto", bf16: bool = False, compile: bool = False):
    """The model on the device asked for, in bfloat16 if asked (inference), compiled if asked."""
    from .model import compile_model
    model = model.to(pick_device(device))
    if bf16:
        model = model.to(torch.bfloat16)
    if compile:
        try:
            compile_model(model)
        except RuntimeError as e:
            _fail(str(e))
    return model


def load_model(name_or_folder: str, head: str | None = None):
    """A checkpoint folder, or a built-in shape (random weights). Returns (model, tokenizer or None, description)."""
    import bertscope
    from .checkpoint import CheckpointError
    from .tokenize import TokenizerError, load_tokenizer
    path = Path(name_or_folder)
    try:
        if path.is_dir():
            model = bertscope.from_pretrained(path, head=head)
            try:
                tok = load_tokenizer(path)
            except TokenizerError:
                tok = None
            return model, tok, f"{path} ({model.config.family}, head {model.head})"
        if name_or_folder in NAMED:
            model = bertscope.from_config(name_or_folder, head=head or "base")
            return model, None, f"{name_or_folder} (built-in shape, random weights, head {model.head})"
    except (CheckpointError, ConfigError, TokenizerError) as e:
        _fail(str(e))
    _fail(f"{name_or_folder!r} is neither a checkpoint folder nor a built-in shape ({', '.join(NAMED)})")


def _shape(t) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


@app.command()
def encode(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder or built-in shape"),
    texts: Optional[List[str]] = typer.Argument(None, help="texts to encode"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="texts from a .txt/.tsv/.csv/.jsonl file"),
    column: Optional[str] = typer.Option(None, help="column of a .tsv/.csv (default: the first) or key of .jsonl"),
    limit: Optional[int] = typer.Option(None, help="read at most this many texts from --file"),
    batch: int = typer.Option(2, help="batch size of random ids when the model has no tokenizer"),
    length: int = typer.Option(16, help="sequence length of random ids when the model has no tokenizer"),
    batch_size: int = typer.Option(32, help="texts per forward pass"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE,
):
    """Encode texts (or random ids for a built-in shape) and print every output's shape; for texts, the
    mean-pooled sentence embeddings and the most similar pair."""
    from .data import DataError, read_texts
    from .model import mean_pool
    if threads:
        torch.set_num_threads(threads)
    model, tok, desc = load_model(model_name)
    model = place(model, device, bf16, compile_)
    where = next(model.parameters()).device
    c = model.config
    console.print(f"[bold]model[/]      {desc} · {where}{' · bf16' if bf16 else ''}{' · compiled' if compile_ else ''}")
    console.print(f"[bold]shape[/]      {c.num_hidden_layers} layers, H={c.hidden_size}, {c.num_attention_heads} heads, "
                  f"vocab {c.vocab_size}, {c.max_position_embeddings} positions, "
                  f"{model.num_parameters / 1e6:.1f}M parameters")
    if file is not None:
        try:
            texts = read_texts(file, column=column, limit=limit)
        except DataError as e:
            _fail(str(e))
    if texts and tok is None:
        _fail(f"{model_name} has no tokenizer (a built-in shape, or a folder without tokenizer.json / vocab files); "
              "encode random ids with --batch and --length, or pass a checkpoint folder with its tokenizer")

    from . import infer
    start = time.perf_counter()
    with torch.inference_mode():
        try:
            if texts:   # all texts: length-sorted packed batches, back in input order
                enc = infer.tokenize(tok, texts, max_length=_max_length(model, tok, None))
                emb = infer.sentence_embeddings(model, enc, batch_size=batch_size)
                n_tokens = sum(len(x) for x in enc.ids)
                first = tok(texts[:batch_size], max_length=_max_length(model, tok, None))
                first = {k: v.to(where) for k, v in first.items()}
            else:
                g = torch.Generator().manual_seed(0)
                ids = torch.randint(5, c.vocab_size, (batch, length), generator=g).to(where)  # above most specials
                first = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                out = model(**first)
                n_tokens = ids.numel()
                emb = mean_pool(out.last_hidden_state, first["attention_mask"])
            elapsed = time.perf_counter() - start
            shown = model(**first, output_hidden_states=True)   # the first batch, padded, to show every shape
        except InputError as e:
            _fail(str(e))

    console.print(f"[bold]input[/]      input_ids {_shape(first['input_ids'])}" +
                  (f" (first batch of {len(texts)} texts)" if texts else " (random ids)"))
    console.print(f"[bold]embeddings[/] hidden_states[0] {_shape(shown.hidden_states[0])}")
    console.print(f"[bold]encoder[/]    {c.num_hidden_layers} × layer -> last_hidden_state "
                  f"{_shape(shown.last_hidden_state)}")
    if shown.pooler_output is not None:
        console.print(f"[bold]pooler[/]     pooler_output {_shape(shown.pooler_output)}")
    console.print(f"[bold]sentences[/]  mean-pooled, L2-normalised {_shape(emb)}")
    console.print(f"[bold]speed[/]      {n_tokens} real tokens in {elapsed:.2f} s ({n_tokens / elapsed:,.0f} tokens/s)")
    if texts and len(texts) > 1:
        sim = emb @ emb.T
        sim.fill_diagonal_(-2)
        i, j = divmod(int(sim.argmax()), len(texts))
        table = Table(title="most similar pair (cosine)", show_header=False)
        table.add_row(f"{sim[i, j].item():.3f}", texts[i])
        table.add_row("", texts[j])
        console.print(table)


def _planned_input(model, tok, texts, batch, length):
    if texts:
        if tok is None:
            _fail("this model has no tokenizer; use --batch and --length instead of --text")
        b = tok(texts)
        return b["input_ids"], b["attention_mask"], b["token_type_ids"]
    return None, None, None


@app.command()
def explain(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder or built-in shape"),
    batch: int = typer.Option(2, help="batch size B of the traced input"),
    length: int = typer.Option(16, help="sequence length L of the traced input"),
    text: Optional[List[str]] = typer.Option(None, "--text", help="trace these texts instead (repeatable)"),
    head: Optional[str] = typer.Option(None, help="base | mlm | pretraining | classification"),
    fmt: str = typer.Option("text", "--format", help="text | markdown | json"),
    depth: Optional[int] = typer.Option(None, help="show this many levels below the model"),
    unfold: bool = typer.Option(False, help="show every layer instead of folding repeats"),
):
    """The module tree with constructor dims, parameters and the real input -> output shape of every layer for
    one forward pass, the attention internals, and totals: parameters, FLOPs, activation memory."""
    import json as _json
    from .explain import explain as run, render_text
    model, tok, _ = load_model(model_name, head=head)
    ids, mask, types = _planned_input(model, tok, text, batch, length)
    try:
        e = run(model, ids, mask, types, batch=batch, length=length, unfold=unfold)
    except InputError as ex:
        _fail(str(ex))
    if fmt == "json":
        print(_json.dumps(e.to_dict(), indent=1))
    elif fmt in ("text", "markdown"):
        print(render_text(e, depth=depth, markdown=fmt == "markdown"), end="")
    else:
        _fail(f"--format {fmt!r}: use text, markdown or json")


@app.command()
def check(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder or built-in shape"),
    length: Optional[int] = typer.Option(None, help="planned sequence length in tokens (special tokens included)"),
    batch: int = typer.Option(1, help="planned batch size"),
    pairs: bool = typer.Option(False, help="inputs are sentence pairs (segment ids 0 and 1)"),
    ids_file: Optional[Path] = typer.Option(None, help="token ids, one sequence per line, separated by spaces"),
    data: Optional[Path] = typer.Option(None, help="a labelled .tsv/.csv/.jsonl to check against the classifier"),
    label_column: str = typer.Option("label", help="label column of --data"),
    num_labels: Optional[int] = typer.Option(None, help="the classifier width you plan to load the model with"),
):
    """Check a planned input against a model without running it. Exit 0 if it fits; 1 with a report if not."""
    from .checkpoint import HEAD_OF_ARCHITECTURE
    from .config import Config, named_config
    from .data import DataError, read_examples, read_texts
    from .explain import preflight
    try:  # the config alone: nothing is loaded or run
        config = Config.from_json(model_name) if Path(model_name).is_dir() else named_config(model_name)
    except ConfigError as e:
        _fail(str(e))
    head = next((HEAD_OF_ARCHITECTURE[a] for a in config.extra.get("architectures") or []
                 if a in HEAD_OF_ARCHITECTURE), "base")
    ids = None
    if ids_file is not None:
        try:
            ids = [[int(x) for x in line.split()] for line in read_texts(ids_file)]
        except ValueError as e:
            _fail(f"{ids_file}: expected whitespace-separated integer ids on every line ({e})")
    labels = None
    if data is not None:
        try:
            labels = read_examples(data, label_column=label_column).labels
        except DataError as e:
            _fail(str(e))
    if length is None and ids is None and labels is None:
        _fail("nothing to check: give --length, --ids-file or --data")
    problems = preflight(config, length=length, batch=batch, pairs=pairs, ids=ids, labels=labels,
                         head=head if labels is not None and head != "base" else None, num_labels=num_labels)
    c = config
    console.print(f"model: {model_name} ({c.family}, head {head}); positions {c.max_position_embeddings} (at most "
                  f"{c.max_tokens} tokens), vocab {c.vocab_size}, segments {c.type_vocab_size}" +
                  (f", num_labels {c.num_labels}" if head == "classification" else ""), soft_wrap=True)
    if not problems:
        console.print("[green]ok[/]: the planned input fits this model")
        return
    for p in problems:
        console.print(f"[red]✗ {p.what}[/]: {p.message}", soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def export(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder or built-in shape"),
    out: Path = typer.Argument(..., help="the .onnx file to write"),
    dynamic: bool = typer.Option(True, "--dynamic/--static", help="dynamic batch and sequence axes"),
    batch: int = typer.Option(2), length: int = typer.Option(16),
):
    """Export to ONNX and verify it in onnxruntime against PyTorch (max difference reported)."""
    import logging
    import warnings
    from .export import ExportError, export_onnx
    model, _, desc = load_model(model_name)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = export_onnx(model, out, dynamic=dynamic, batch=batch, length=length)
        except ExportError as e:
            _fail(str(e))
    console.print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB) from {desc}")
    console.print(f"inputs  {', '.join(r['inputs'])} \\[batch, sequence]" + (" (dynamic axes)" if dynamic else ""))
    console.print(f"outputs {', '.join(r['outputs'])}")
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in r["max_diff"].items())
    console.print(f"onnxruntime vs PyTorch on a {tuple(r['checked_shape'])} batch: max abs diff {diffs}")


@app.command()
def draw(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder or built-in shape"),
    out: Path = typer.Argument(..., help="picture to write (.png or .svg)"),
    batch: int = typer.Option(2), length: int = typer.Option(128),
    head: Optional[str] = typer.Option(None, help="base | mlm | pretraining | classification"),
):
    """Draw the architecture with the dims on every edge."""
    from .export import draw as run
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        _fail(f"{out}: use a .png, .svg or .pdf file name")
    model, _, desc = load_model(model_name, head=head)
    console.print(f"wrote {run(model, out, batch=batch, length=length)} ({desc})")


# ---- fine-tuning, evaluation, prediction, embeddings -------------------------------------------------------------

def _tokenizer_for(model_name: str, tokenizer: Optional[Path]):
    from .tokenize import TokenizerError, load_tokenizer
    source = tokenizer or (Path(model_name) if Path(model_name).is_dir() else None)
    if source is None:
        _fail(f"{model_name} is a built-in shape without a tokenizer; pass --tokenizer FOLDER")
    try:
        return load_tokenizer(source)
    except TokenizerError as e:
        _fail(str(e))


@app.command()
def finetune(
    model_name: Optional[str] = typer.Argument(None, metavar="MODEL", help="checkpoint folder to start from"),
    train: Optional[Path] = typer.Option(None, help="training file (.tsv, .csv or .jsonl)"),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="evaluation file, scored after every epoch"),
    out: Optional[Path] = typer.Option(None, help="output folder (the best model, metrics, curves, checkpoint)"),
    text_column: Optional[str] = typer.Option(None, help="default: 'text' or 'sentence' or the first column"),
    label_column: str = typer.Option("label"),
    pair_column: Optional[str] = typer.Option(None, help="second segment, for sentence-pair tasks"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer folder (default: the model folder)"),
    epochs: int = typer.Option(3), lr: float = typer.Option(5e-5), batch_size: int = typer.Option(32),
    max_length: int = typer.Option(128), warmup: float = typer.Option(0.06, help="fraction of steps, or steps"),
    weight_decay: float = typer.Option(0.01), seed: int = typer.Option(42),
    bf16: bool = typer.Option(False, help="bfloat16 autocast (slower on CPUs without bf16 instructions)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after this many steps"),
    save_every: int = typer.Option(500, help="steps between resumable checkpoints"),
    skip_bad_rows: bool = typer.Option(False, help="skip (and count) malformed rows instead of stopping"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this output folder"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    bucket: int = typer.Option(50, help="batches per length-sorting window (1: plain random batches)"),
    device: str = DEVICE, compile_: bool = COMPILE,
):
    """Fine-tune a sequence classifier on a labelled file; the best model is kept in --out."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from .data import DataError, read_examples
    from .train import FinetuneArgs, TrainingInterrupted, checkpoint_dir, read_run_info
    from .train import finetune as run
    if threads:
        torch.set_num_threads(threads)
    try:
        if resume is not None:
            info = read_run_info(resume)
            model_name, out = info["model"], resume
            train, eval_file = Path(info["train"]), (Path(info["eval"]) if info["eval"] else None)
            text_column, label_column, pair_column = info["text_column"], info["label_column"], info["pair_column"]
            skip_bad_rows = info["skip_bad_rows"]
            tok = _tokenizer_for(str(checkpoint_dir(resume)), None)
        else:
            if model_name is None or train is None or out is None:
                _fail("give MODEL, --train and --out (or --resume DIR to continue a run)")
            tok = _tokenizer_for(model_name, tokenizer)
        train_ex = read_examples(train, text_column, label_column, pair_column, skip_bad_rows)
        eval_ex = read_examples(eval_file, text_column, label_column, pair_column, skip_bad_rows) \
            if eval_file else None
    except DataError as e:
        _fail(str(e))
    for ex in (train_ex, eval_ex):
        if ex is not None and ex.skipped:
            err.print(f"skipped {len(ex.skipped)} bad rows of {ex.path} (first: line {ex.skipped[0][0]}: "
                      f"{ex.skipped[0][1]})")
    args = FinetuneArgs(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, warmup=warmup,
                        weight_decay=weight_decay, seed=seed, bf16=bf16, max_steps=max_steps, save_every=save_every,
                        bucket=bucket, compile=compile_)
    where = pick_device(device)
    info = {"model": model_name, "train": str(train), "eval": str(eval_file) if eval_file else None,
            "text_column": text_column, "label_column": label_column, "pair_column": pair_column,
            "skip_bad_rows": skip_bad_rows}
    console.print(f"training on {len(train_ex)} examples of {train} ({where})" +
                  (f", evaluating on {len(eval_ex)} of {eval_file}" if eval_ex else ""))
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                        disable=not console.is_terminal)
    task = None

    def on_log(r):
        nonlocal task
        if task is None:
            task = progress.add_task("fine-tuning", total=r["total_steps"], info="")
        if "eval_accuracy" in r:
            console.print(f"epoch {r['epoch']:.0f} · step {r['step']}: eval accuracy {r['eval_accuracy']:.4f} · "
                          f"macro-F1 {r['eval_macro_f1']:.4f} · loss {r['eval_loss']:.4f}")
        else:
            progress.update(task, completed=r["step"], info=f"loss {r['loss']:.4f} · {r['examples_per_s']:.0f} ex/s "
                                                            f"· {r['tokens_per_s']:.0f} tok/s")
            if not console.is_terminal and r["step"] % 100 == 0:
                console.print(f"step {r['step']}/{r['total_steps']} · loss {r['loss']:.4f} · "
                              f"{r['examples_per_s']:.0f} ex/s")

    try:
        with progress:
            result = run(model_name, train_ex, eval_ex, out, args, tokenizer=tok, resume=resume is not None,
                         on_log=on_log, run_info=info, device=where)
    except TrainingInterrupted as e:
        err.print(f"[yellow]interrupted:[/] {e}")
        raise typer.Exit(130)
    except (DataError, InputError) as e:
        _fail(str(e))
    best = result["best_accuracy"]
    score = f"; best eval accuracy {best:.4f}" if best is not None else ""
    console.print(f"done: {result['steps']} steps{score}; model, metrics.jsonl and curves.png in {out}")


def _max_length(model, tok, asked):
    return min(asked or tok.max_length, model.config.max_tokens)


def _examples_or_stdin(file: str, text_column, label_column, pair_column, skip_bad_rows):
    from .data import DataError, Examples, read_examples
    import sys
    try:
        if file == "-":
            texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
            if not texts:
                _fail("no input lines on standard input")
            return Examples("<stdin>", texts, None, None, list(range(1, len(texts) + 1)))
        path = Path(file)
        if path.suffix.lower() in (".tsv", ".csv", ".jsonl"):
            return read_examples(path, text_column, label_column, pair_column, skip_bad_rows)
        from .data import read_texts
        texts = read_texts(path)
        return Examples(str(path), texts, None, None, list(range(1, len(texts) + 1)))
    except DataError as e:
        _fail(str(e))


@app.command()
def evaluate(
    model_name: str = typer.Argument(..., metavar="MODEL"), file: Path = typer.Argument(...),
    text_column: Optional[str] = typer.Option(None), label_column: str = typer.Option("label"),
    pair_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(64),
    max_length: Optional[int] = typer.Option(None, help="default: what the model's positions allow"),
    skip_bad_rows: bool = typer.Option(False),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE,
):
    """Accuracy, macro-F1 and the confusion matrix of a classifier on a labelled file."""
    from . import infer
    from .data import DataError
    from .train import evaluate as run, label_ids
    model, tok, desc = load_model(model_name, head="classification")
    if tok is None:
        _fail(f"{model_name} has no tokenizer (tokenizer.json or vocab files) to read text with")
    model = place(model, device, bf16, compile_)
    ex = _examples_or_stdin(str(file), text_column, label_column, pair_column, skip_bad_rows)
    try:
        gold = label_ids(ex, model.config.labels)
    except DataError as e:
        _fail(str(e))
    start = time.perf_counter()
    max_length = _max_length(model, tok, max_length)
    m = run(model, infer.tokenize(tok, ex.texts, ex.pairs, max_length=max_length), gold, batch_size)
    elapsed = time.perf_counter() - start
    console.print(f"{file}: {len(ex)} examples · accuracy {m['accuracy']:.4f} · macro-F1 {m['macro_f1']:.4f} · "
                  f"loss {m['loss']:.4f} · {len(ex) / elapsed:.0f} examples/s")
    table = Table("true \\ predicted", *model.config.labels)
    for name, row in zip(model.config.labels, m["confusion"]):
        table.add_row(name, *map(str, row))
    console.print(table)


@app.command()
def predict(
    model_name: str = typer.Argument(..., metavar="MODEL"),
    file: str = typer.Argument(..., help="a .txt (one text a line), .tsv/.csv/.jsonl, or - for standard input"),
    fmt: str = typer.Option("tsv", "--format", help="tsv | jsonl"),
    text_column: Optional[str] = typer.Option(None), pair_column: Optional[str] = typer.Option(None),
    batch_size: int = typer.Option(64), chunk: int = typer.Option(2048, help="texts read and sorted at a time"),
    max_length: Optional[int] = typer.Option(None, help="default: what the model's positions allow"),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE,
):
    """Label and class probabilities for every input text, in input order, streamed chunk by chunk."""
    import json as _json
    import sys
    from . import infer
    model, tok, _ = load_model(model_name, head="classification")
    if tok is None:
        _fail(f"{model_name} has no tokenizer (tokenizer.json or vocab files) to read text with")
    model = place(model, device, bf16, compile_)
    ex = _examples_or_stdin(file, text_column, None, pair_column, False)
    labels = model.config.labels
    max_length = _max_length(model, tok, max_length)
    start, n = time.perf_counter(), 0
    if fmt == "tsv":
        print("\t".join(["label"] + [f"p_{x}" for x in labels] + ["text"]))
    for i in range(0, len(ex), chunk):
        texts = ex.texts[i:i + chunk]
        pairs = ex.pairs[i:i + chunk] if ex.pairs else None
        probs = infer.class_probabilities(model, infer.tokenize(tok, texts, pairs, max_length=max_length), batch_size)
        for text, p in zip(texts, probs.tolist()):
            best = labels[max(range(len(p)), key=p.__getitem__)]
            if fmt == "jsonl":
                print(_json.dumps({"text": text, "label": best, "probabilities": dict(zip(labels, p))}))
            else:
                print("\t".join([best] + [f"{x:.4f}" for x in p] + [text]))
        sys.stdout.flush()
        n += len(texts)
    elapsed = time.perf_counter() - start
    err.print(f"{n} texts in {elapsed:.2f} s ({n / elapsed:.0f} texts/s)")


@app.command()
def embed(
    model_name: str = typer.Argument(..., metavar="MODEL"),
    file: str = typer.Argument(..., help="a .txt (one text a line), .tsv/.csv/.jsonl, or - for standard input"),
    out: Path = typer.Option(..., help="F.npy (sentence level) or F.jsonl"),
    pooling: str = typer.Option("mean", help="mean | cls"),
    level: str = typer.Option("sentence", help="sentence | token | word"),
    normalize: bool = typer.Option(True, help="L2-normalise sentence embeddings"),
    text_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(32),
    max_length: Optional[int] = typer.Option(None, help="default: what the model's positions allow"),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE,
):
    """Sentence embeddings (mean pooling + normalisation as sentence-transformers), or per-token / per-word
    vectors (a word's sub-word pieces averaged)."""
    import json as _json
    from . import infer
    from .checkpoint import atomic_write
    if level not in ("sentence", "token", "word") or pooling not in ("mean", "cls"):
        _fail("--level is sentence, token or word; --pooling is mean or cls")
    if out.suffix not in (".npy", ".jsonl") or (out.suffix == ".npy" and level != "sentence"):
        _fail(f"{out}: write sentence embeddings to .npy or .jsonl, token and word vectors to .jsonl")
    model, tok, _ = load_model(model_name, head="base")
    if tok is None:
        _fail(f"{model_name} has no tokenizer (tokenizer.json or vocab files) to read text with")
    model = place(model, device, bf16, compile_)
    ex = _examples_or_stdin(file, text_column, None, None, False)
    start = time.perf_counter()
    enc = infer.tokenize(tok, ex.texts, max_length=_max_length(model, tok, max_length), word_ids=level == "word")
    if level == "sentence":
        vectors = infer.sentence_embeddings(model, enc, pooling, normalize, batch_size)
        if out.suffix == ".npy":
            import numpy as np
            atomic_write(out, lambda p: np.save(open(p, "wb"), vectors.numpy()))
        else:
            lines = "".join(_json.dumps({"text": t, "embedding": [round(x, 6) for x in v]}) + "\n"
                            for t, v in zip(ex.texts, vectors.tolist()))
            atomic_write(out, lambda p: Path(p).write_text(lines, encoding="utf-8"))
        shape = tuple(vectors.shape)
    else:
        per = infer.token_embeddings(model, enc, batch_size) if level == "token" else \
            infer.word_embeddings(model, enc, batch_size)
        with_tokens = level == "token"
        lines = []
        for i, (t, v) in enumerate(zip(ex.texts, per)):
            rec = {"text": t, "vectors": [[round(x, 6) for x in row] for row in v.tolist()]}
            if with_tokens:
                rec["tokens"] = [tok.backend.id_to_token(x) for x in enc.ids[i]]
            lines.append(_json.dumps(rec) + "\n")
        atomic_write(out, lambda p: Path(p).write_text("".join(lines), encoding="utf-8"))
        shape = (len(per), "L", model.config.hidden_size)
    elapsed = time.perf_counter() - start
    console.print(f"wrote {out}: {shape} ({level} level) · {len(ex) / elapsed:.0f} texts/s")


# ---- pretraining ------------------------------------------------------------------------------------------------

tokenizer_app = typer.Typer(help="Train a tokenizer.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    corpus: List[Path] = typer.Argument(..., help="plain text files"),
    family: str = typer.Option(..., help="bert (WordPiece) | roberta (byte-level BPE) | albert (Unigram)"),
    vocab_size: int = typer.Option(30000), out: Path = typer.Option(...),
    cased: bool = typer.Option(False, help="keep case (BERT, ALBERT lower-case by default)"),
    min_frequency: int = typer.Option(2),
):
    """Train the family's tokenizer with the `tokenizers` library; writes tokenizer.json (and vocab files)."""
    from .tokenize import TokenizerError, save_vocab_files, train_tokenizer
    start = time.perf_counter()
    try:
        tok = train_tokenizer(corpus, family, vocab_size, lowercase=not cased, min_frequency=min_frequency)
    except TokenizerError as e:
        _fail(str(e))
    tok.save(out)
    save_vocab_files(tok, out)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    console.print(f"trained a {family} tokenizer of {tok.vocab_size} tokens in {time.perf_counter() - start:.1f} s "
                  f"-> {out} ({files})")
    sample = "The quick brown fox jumps over the lazy dog."
    console.print(f"example: {sample!r} -> {tok.tokenize(sample)}")


SIZES = {"tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
         "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
         "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}


@app.command()
def pretrain(
    family: Optional[str] = typer.Option(None, help="bert | roberta | albert"),
    config: str = typer.Option("tiny", help="tiny | small | base | a config.json"),
    corpus: Optional[List[Path]] = typer.Option(None, help="plain text training files (repeat the option)"),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="held-out text for masked-LM loss / accuracy"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer folder (bertscope tokenizer train)"),
    out: Optional[Path] = typer.Option(None),
    objective: Optional[str] = typer.Option(None, help="mlm | mlm+nsp | mlm+sop (default: the family's own)"),
    whole_word: bool = typer.Option(False), mlm_probability: float = typer.Option(0.15),
    static_masks: bool = typer.Option(False, help="one fixed set of masks (BERT) instead of new masks per epoch"),
    max_length: int = typer.Option(128), batch_size: int = typer.Option(32), grad_accum: int = typer.Option(1),
    steps: int = typer.Option(1000), lr: float = typer.Option(5e-4), warmup: float = typer.Option(0.06),
    seed: int = typer.Option(42), bf16: bool = typer.Option(False), eval_every: int = typer.Option(200),
    save_every: int = typer.Option(500),
    init: Optional[Path] = typer.Option(None, help="continue training this checkpoint instead of random weights"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this output folder"),
    threads: Optional[int] = typer.Option(None),
    device: str = typer.Option("auto", help="cpu, or auto (under torchrun: this process's GPU where there are "
                                            "GPUs, else the CPU)"),
    compile_: bool = COMPILE,
):
    """Pretrain (masked LM, + NSP for BERT, + SOP for ALBERT) on plain text. Runs as is on one CPU or GPU, and
    under `torchrun --nproc_per_node N` on several processes (gloo on CPU, nccl on GPU)."""
    import json as _json
    import os
    from .config import Config, ConfigError
    from .data import DataError, read_documents
    from .masking import build_instances, tokenize_documents
    from .model import Model
    from .tokenize import TokenizerError, load_tokenizer
    from .train import PretrainArgs, TrainingInterrupted, checkpoint_dir, read_checkpoint, read_run_info
    from .train import pretrain as run
    if threads:
        torch.set_num_threads(threads)
    if device not in ("auto", "cpu"):
        _fail(f"--device {device}: pretrain takes cpu or auto (auto uses this process's GPU where there is one; "
              "pick GPUs with CUDA_VISIBLE_DEVICES)")
    use_cuda = device == "auto" and torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend)
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rank = int(os.environ.get("RANK", "0"))
    say = console.print if rank == 0 else (lambda *a, **k: None)
    try:
        if resume is not None:
            info = read_run_info(resume)
            args = PretrainArgs(**_json.loads(read_checkpoint(resume)["args"]))
            corpus, eval_file, out = [Path(p) for p in info["corpus"]], info["eval"], resume
            eval_file = Path(eval_file) if eval_file else None
            tok = load_tokenizer(checkpoint_dir(resume))
            model = bertscope_load(checkpoint_dir(resume))
        else:
            if not (family and corpus and tokenizer and out):
                _fail("give --family, --corpus, --tokenizer and --out (or --resume DIR)")
            tok = load_tokenizer(tokenizer, family=family)
            objective = objective or {"bert": "mlm+nsp", "albert": "mlm+sop", "roberta": "mlm"}[family]
            allowed = {"bert": ("mlm", "mlm+nsp"), "albert": ("mlm", "mlm+sop"), "roberta": ("mlm",)}[family]
            if objective not in allowed:
                _fail(f"--objective {objective} does not fit {family}; use {' or '.join(allowed)}")
            args = PretrainArgs(objective=objective, whole_word=whole_word, mlm_probability=mlm_probability,
                                dynamic=not static_masks, max_length=max_length, batch_size=batch_size,
                                grad_accum=grad_accum, steps=steps, lr=lr, warmup=warmup, seed=seed, bf16=bf16,
                                eval_every=eval_every, save_every=save_every, compile=compile_)
            head = "mlm" if objective == "mlm" else "pretraining"
            torch.manual_seed(seed)
            if init is not None:
                model = bertscope_load(init, head=head)
            else:
                if config in SIZES:
                    offset = tok.pad_token_id + 1 if family == "roberta" else 0
                    extra = {"embedding_size": 128 if config != "tiny" else 64} if family == "albert" else {}
                    if family == "albert":
                        extra["hidden_act"] = "gelu_new"
                    c = Config(family=family, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                               max_position_embeddings=max(512, max_length) + offset, **SIZES[config], **extra,
                               type_vocab_size=1 if family == "roberta" else 2,
                               layer_norm_eps=1e-5 if family == "roberta" else 1e-12)
                else:
                    c = Config.from_json(config)
                if c.vocab_size < tok.vocab_size:
                    _fail(f"the config's vocab_size {c.vocab_size} is smaller than the tokenizer's {tok.vocab_size}")
                model = Model(c, head=head)
        if use_cuda:
            model = model.cuda()
        say(f"reading {', '.join(map(str, corpus))}")
        docs = tokenize_documents(tok, read_documents(corpus))
        instances = build_instances(docs, tok, args.max_length, args.objective, seed=args.seed)
        eval_instances = None
        if eval_file:
            eval_instances = build_instances(tokenize_documents(tok, read_documents([eval_file])), tok,
                                             args.max_length, args.objective, seed=args.seed + 1)
    except (DataError, ConfigError, TokenizerError) as e:
        _fail(str(e))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    say(f"{len(docs)} documents -> {len(instances)} sequences of up to {args.max_length} tokens; "
        f"{args.objective}{' (whole words)' if args.whole_word else ''}; {model.num_parameters / 1e6:.1f}M parameters; "
        f"global batch {args.batch_size * world * args.grad_accum} = {args.batch_size} × {world} process(es) × "
        f"{args.grad_accum}")

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    progress = Progress(TextColumn("[bold]pretraining"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                        disable=rank != 0 or not console.is_terminal)
    task = progress.add_task("pretraining", total=args.steps, info="")

    def on_log(r):
        if "eval_mlm_loss" in r:
            extra = f" · pair accuracy {r['eval_pair_accuracy']:.3f}" if "eval_pair_accuracy" in r else ""
            say(f"step {r['step']}: held-out masked-LM loss {r['eval_mlm_loss']:.4f} · accuracy "
                f"{r['eval_mlm_accuracy']:.3f}{extra}")
            return
        extra = f" · pair acc {r['pair_accuracy']:.3f}" if "pair_accuracy" in r else ""
        line = f"loss {r['loss']:.4f} · MLM acc {r['mlm_accuracy']:.3f}{extra} · {r['tokens_per_s']:,.0f} tok/s"
        progress.update(task, completed=r["step"], info=line)
        if not console.is_terminal and (r["step"] % (args.log_every * 10) == 0 or r["step"] == r["total_steps"]):
            say(f"step {r['step']}/{r['total_steps']} · {line}")

    info = {"corpus": [str(p) for p in corpus], "eval": str(eval_file) if eval_file else None}
    try:
        with progress:
            result = run(model, tok, instances, eval_instances, out, args, resume=resume is not None,
                         on_log=on_log, run_info=info)
    except TrainingInterrupted as e:
        err.print(f"[yellow]interrupted:[/] {e}")
        raise typer.Exit(130)
    except DataError as e:
        _fail(str(e))
    say(f"done: {result['steps']} steps; model, tokenizer, metrics.jsonl and curves.png in {out}")


def bertscope_load(folder, head=None):
    import bertscope
    from .checkpoint import CheckpointError
    try:
        return bertscope.from_pretrained(folder, head=head, reinit_head=True).train()
    except (CheckpointError, ConfigError) as e:
        _fail(str(e))


@app.command("fill-mask")
def fill_mask(
    model_name: str = typer.Argument(..., metavar="MODEL", help="a checkpoint with an MLM head"),
    text: str = typer.Argument(..., help="text with the model's mask token, e.g. [MASK] or <mask>"),
    top_k: int = typer.Option(5),
):
    """The most likely tokens, with probabilities, for every mask token in the text."""
    from .checkpoint import CheckpointError
    import bertscope
    try:
        model = bertscope.from_pretrained(model_name, head="mlm")
    except (CheckpointError, ConfigError) as e:
        _fail(str(e) + "\n(fill-mask needs a checkpoint that has its masked-LM head)")
    tok = _tokenizer_for(model_name, None)
    b = tok([text])
    where = (b["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    if not where:
        _fail(f"no mask token in the text; this {model.config.family} model's mask token is {tok.mask_token!r}, "
              f"e.g. \"The {tok.mask_token} sat on the mat.\"")
    with torch.inference_mode():
        probs = model(**b).logits[0].softmax(-1)                     # (L, V)
    for n, pos in enumerate(where, 1):
        p, ids = probs[pos].topk(top_k)
        table = Table("#", "token", "probability", "text", title=f"mask {n} of {len(where)} (token {pos})")
        for rank, (pi, i) in enumerate(zip(p.tolist(), ids.tolist()), 1):
            filled = b["input_ids"][0].clone()
            filled[pos] = i
            table.add_row(str(rank), tok.decode([i]).strip() or tok.backend.id_to_token(i), f"{pi:.4f}",
                          tok.decode(filled))
        console.print(table)


@app.command()
def bench(
    model_name: str = typer.Argument(..., metavar="MODEL", help="checkpoint folder (with its tokenizer)"),
    file: Path = typer.Argument(..., help="your texts: .txt (one a line), .tsv/.csv (--column) or .jsonl"),
    column: Optional[str] = typer.Option(None), limit: int = typer.Option(2000, help="texts to time"),
    batch_size: int = typer.Option(32), threads: Optional[int] = typer.Option(None),
    device: str = DEVICE, bf16: bool = BF16,
    compile_: bool = typer.Option(False, "--compile", help="also time the packed path under torch.compile"),
):
    """Time your model on your texts: padded batches in file order against bertscope's length-sorted packed
    batches (and, with --compile, the same compiled), in real tokens/s, and the achieved FLOP/s against this
    machine's matmul rate in the same dtype."""
    from . import infer
    from .data import DataError, read_texts
    from .explain import estimate_flops, matmul_rates
    from .model import compile_model
    if threads:
        torch.set_num_threads(threads)
    model, tok, desc = load_model(model_name)
    if tok is None:
        _fail(f"{model_name} has no tokenizer to read text with")
    model = place(model, device, bf16)
    where, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    try:
        texts = read_texts(file, column=column, limit=limit)
    except DataError as e:
        _fail(str(e))
    max_length = _max_length(model, tok, None)
    enc = infer.tokenize(tok, texts, max_length=max_length)
    real = sum(len(x) for x in enc.ids)
    flops = sum(estimate_flops(model, 1, len(x))["total"] for x in enc.ids)

    def timed(fn):
        if where.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if where.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    peak = max(matmul_rates(where, dtype).values())

    def padded_file_order():
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = tok(texts[i:i + batch_size], max_length=max_length)
                model(**{k: v.to(where) for k, v in batch.items()})

    def packed():
        infer.sentence_embeddings(model, infer.tokenize(tok, texts, max_length=max_length), batch_size=batch_size)

    if where.type == "cuda":
        packed()                                                  # kernels loaded, allocator warm
    padded = timed(padded_file_order)
    t_packed = timed(packed)
    console.print(f"model   {desc} · {where} · {str(dtype).replace('torch.', '')}\ntexts   {len(texts)} from "
                  f"{file}: {real:,} real tokens, longest {max(len(x) for x in enc.ids)}")
    console.print(f"padded batches in file order      {real / padded:10,.0f} real tokens/s")
    console.print(f"length-sorted packed batches      {real / t_packed:10,.0f} real tokens/s   "
                  f"({padded / t_packed:.2f}× faster)")
    best = t_packed
    if compile_:
        try:
            compile_model(model)
        except RuntimeError as e:
            _fail(str(e))
        first = timed(packed)                                     # compiles each kind of batch once
        t_compiled = timed(packed)
        best = min(best, t_compiled)
        console.print(f"the same, torch.compile           {real / t_compiled:10,.0f} real tokens/s   "
                      f"({padded / t_compiled:.2f}× faster; the first pass, compiling, took {first:.0f} s)")
    console.print(f"achieved {flops / best / 1e9:,.0f} GFLOP/s of a measured {str(dtype).replace('torch.', '')} "
                  f"matmul rate of {peak / 1e9:,.0f} GFLOP/s ({100 * flops / best / peak:.0f}%)")


@app.command()
def configs():
    """List the built-in shapes (random weights, nothing downloaded)."""
    from .config import named_config
    from .model import Model
    table = Table("name", "family", "layers", "hidden", "heads", "vocab", "positions", "parameters")
    for name in NAMED:
        c = named_config(name)
        with torch.device("meta"):
            n = Model(c).num_parameters
        table.add_row(name, c.family, str(c.num_hidden_layers), str(c.hidden_size), str(c.num_attention_heads),
                      str(c.vocab_size), str(c.max_position_embeddings), f"{n / 1e6:.1f}M")
    console.print(table)


if __name__ == "__main__":
    app()
