"""bertscope evaluate, predict, embed: streamed chunk by chunk, with a progress bar on a terminal."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..io import json_safe
from . import BF16, COMPILE, DEVICE, THREADS, command, console, note, progress_bar, say, warn

FORMATS = ("tsv", "jsonl", "json")
SOURCE = typer.Argument(..., help="a .txt (one text a line), .tsv/.csv/.jsonl, or - for standard input")
MAX_LENGTH = typer.Option(None, help="tokens per text [default: what the model's positions allow]")
CHUNK = typer.Option(2048, help="texts read, sorted and run at a time")


def _load(model: str, head: str | None, device, bf16, compile_, threads, int8=None):
    from .. import api
    from ..api.common import set_threads
    if int8 and bf16:            # refused before loading, on every CPU (even where --bf16 would fall back to fp32)
        from ..errors import UsageError
        raise UsageError("--int8 and --bf16 are two ways of running faster and do not combine (int8 products take "
                         "fp32 activations): choose one")
    set_threads(threads)
    loaded = api.load(model, head=head, need_tokenizer=True)
    loaded.model = api.place(loaded, device, bf16, compile_, on_event=lambda e: note(e["message"]))
    return loaded


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        from ..errors import UsageError
        raise UsageError(f"--format {fmt!r}: use {', '.join(FORMATS)}")
    return fmt


TASK = typer.Option(None, help="classification | regression | multi-label | token-classification | "
                               "question-answering [default: the task the model was fine-tuned for]")
NO_ANSWER = typer.Option(None, "--no-answer/--always-answer", help="question answering: allow \"no answer\" "
                                                                 "(SQuAD v2.0) [the fine-tuning run's, else where "
                                                                 "the file marks a question is_impossible]")
THRESHOLD = typer.Option(None, help="multi-label: probability from which a label is predicted [the fine-tuning "
                                    "run's, else 0.5]")
WINDOWS = typer.Option(None, help="split texts longer than --max-length into windows overlapping by this many "
                                  "tokens, instead of cutting them")
POOL = typer.Option(None, help="with --windows: combine a text's window scores by mean or max [mean]")
INT8 = typer.Option(None, "--int8/--fp32", help="int8 products on the CPU (where they pay; calibrated on the input's "
                                                "first texts, or as bertscope quantize saved it) [default: int8 for "
                                                "a folder written by bertscope quantize]")


def _progress(update):
    """Progress events to the bar; notices (--int8 calibrated, does not pay here) to stderr."""
    def on_event(e):
        if e.get("event") in ("notice", "warning"):
            (note if e["event"] == "notice" else warn)(e["message"])
        else:
            update(e["done"])
    return on_event


def _cut_note(cut: int, max_length: int | None, windows: bool = True, source: str | None = None) -> None:
    """How many texts were cut, at whose limit (source: "asked", "run.json" or "model"), and (where windows
    apply) how to keep them whole."""
    if cut:
        limit = {"run.json": f"the {max_length} tokens the model was fine-tuned at (its run.json; --max-length "
                             "sets another)",
                 "model": f"the {max_length} tokens the model allows" if max_length else "what the model allows",
                 }.get(source, f"--max-length {max_length}" if max_length else "what the model allows")
        note(f"{cut} texts were longer than {limit} and were cut" + ("; --windows STRIDE keeps them" if windows
                                                                     else ""))


def _task_options(**given) -> dict:
    """The task options given: on/off flags when on, and --no-answer / --always-answer either way."""
    return {k: v for k, v in given.items() if v is not None and (v is not False or k == "no_answer")}


@command()
def evaluate(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE, task: Optional[str] = TASK,
    text_column: Optional[str] = typer.Option(None, help="[default: the fine-tuning run's, else text, sentence, or "
                                                     "the one column that is not the label or an id]"),
    label_column: Optional[str] = typer.Option(None, help="[default: the fine-tuning run's, else label]"),
    pair_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(64),
    max_length: Optional[int] = MAX_LENGTH, chunk: int = CHUNK, skip_bad_rows: bool = typer.Option(False),
    windows: Optional[int] = WINDOWS, pool: Optional[str] = POOL,
    doc_stride: Optional[int] = typer.Option(None, help="question answering: overlap of context windows "
                                                        "[128, or a third of a shorter --max-length]"),
    threshold: Optional[float] = THRESHOLD, no_answer: Optional[bool] = NO_ANSWER,
    fmt: str = typer.Option("text", "--format", help="text | json"), int8: Optional[bool] = INT8,
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """The metrics of a fine-tuned model on a labelled file: accuracy, macro-F1 and the confusion matrix for
    classes; entity precision / recall / F1 per type for tags; exact match and F1 for answers; Pearson / Spearman for
    numbers; micro / macro F1 for several labels."""
    from .. import api
    if fmt not in ("text", "json"):
        from ..errors import UsageError
        raise UsageError(f"--format {fmt!r}: use text or json")
    loaded = _load(model, None, device, bf16, compile_, threads, int8)
    bar, update = progress_bar("evaluating", None)
    start = time.perf_counter()
    with bar:
        m = api.evaluate(loaded, file, task=task, max_length=max_length, batch_size=batch_size, chunk=chunk,
                         skip_bad_rows=skip_bad_rows, int8=int8, on_event=_progress(update),
                         **_task_options(text_column=text_column, label_column=label_column,
                                         pair_column=pair_column, windows=windows, pool=pool,
                                         doc_stride=doc_stride, threshold=threshold, no_answer=no_answer))
    _cut_note(m["truncated"], m["max_length"], windows=m["windows_would_keep"], source=m["max_length_from"])
    if fmt == "json":
        print(json.dumps(json_safe(m), indent=1))
        return
    _print_metrics(file, m, time.perf_counter() - start)


def _print_metrics(file, m: dict, elapsed: float):
    from rich.table import Table

    from ..data import source_name
    shown = [f"{k.replace('_', ' ')} {m[k]:.4f}" for k in ("accuracy", "macro_f1", "precision", "recall", "f1",
                                                            "exact", "micro_f1", "pearson", "spearman", "mse", "loss")
             if isinstance(m.get(k), float)]
    say(f"{source_name(file)}: {m['examples']} examples · {m['task']} · " + " · ".join(shown) +
        f" · {m['examples'] / elapsed:.0f} examples/s")
    if "confusion" in m:
        table = Table("true \\ predicted", *m["labels"])
        for name, row in zip(m["labels"], m["confusion"]):
            table.add_row(name, *map(str, row))
        console.print(table)
    if "per_type" in m:
        table = Table("type", "precision", "recall", "f1", "support")
        for kind, r in m["per_type"].items():
            table.add_row(kind, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"]))
        console.print(table)


def _cell(text) -> str:
    """A text as one TSV cell: backslash, tab, newline and carriage return written as \\, \\t, \\n and \\r,
    so that every row keeps its columns (--format jsonl keeps texts as they are)."""
    return str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _tsv(r: dict, labels) -> str:
    """One prediction as a TSV line (the header is _header's)."""
    if "probabilities" in r and "label" in r:
        return "\t".join([_cell(r["label"])] + [f"{r['probabilities'][x]:.4f}" for x in labels]
                         + [_cell(r["text"])])
    if "probabilities" in r:
        return "\t".join([_cell("|".join(r["labels"]))] + [f"{r['probabilities'][x]:.4f}" for x in labels]
                         + [_cell(r["text"])])
    if "score" in r and "id" not in r:
        return f"{r['score']:.8g}\t{_cell(r['text'])}"
    if "tags" in r:
        return "\n".join(f"{_cell(w)}\t{_cell(t)}" for w, t in zip(r["words"], r["tags"])) + "\n"
    return "\t".join(_cell(r[k]) for k in ("id", "answer", "start", "end", "score"))


def _header(task: str, labels) -> str | None:
    return {"classification": "\t".join(["label"] + [_cell(f"p_{x}") for x in labels] + ["text"]),
            "multi-label": "\t".join(["labels"] + [_cell(f"p_{x}") for x in labels] + ["text"]),
            "regression": "score\ttext", "question-answering": "id\tanswer\tstart\tend\tscore"}.get(task)


@command()
def predict(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE, task: Optional[str] = TASK,
    fmt: str = typer.Option("tsv", "--format", help="tsv (CoNLL for word tags) | jsonl | json"),
    text_column: Optional[str] = typer.Option(None), pair_column: Optional[str] = typer.Option(None),
    batch_size: int = typer.Option(64), chunk: int = CHUNK, max_length: Optional[int] = MAX_LENGTH,
    windows: Optional[int] = WINDOWS, pool: Optional[str] = POOL,
    doc_stride: Optional[int] = typer.Option(None, help="question answering: overlap of context windows "
                                                        "[128, or a third of a shorter --max-length]"),
    max_answer_length: Optional[int] = typer.Option(None, help="question answering: longest answer in tokens [15]"),
    threshold: Optional[float] = THRESHOLD, no_answer: Optional[bool] = NO_ANSWER, int8: Optional[bool] = INT8,
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """Predictions for every input, in input order, streamed: labels and probabilities, numbers, word tags with
    entity spans (character offsets), or answers (id, answer, start, end, score)."""
    from .. import api
    from ..tasks import for_model
    _format(fmt)
    loaded = _load(model, None, device, bf16, compile_, threads, int8)
    name = task or for_model(loaded.model.config, loaded.model.head)
    labels = loaded.model.config.labels
    start, n, cut, limit = time.perf_counter(), 0, 0, {}
    bar, update = progress_bar("predicting", None)

    def on_event(e):
        nonlocal cut
        if e.get("event") in ("notice", "warning"):
            (note if e["event"] == "notice" else warn)(e["message"])
            return
        cut += e.get("truncated", 0)
        limit.update(max_length=e.get("max_length"), source=e.get("max_length_from"),
                     windows=e.get("windows_would_keep", True))
        update(e["done"])

    header = _header(name, labels) if fmt == "tsv" else None    # printed with the first prediction, so that a
    records = []                                                # run refused before it leaves no header behind
    with bar:
        for r in api.predict(loaded, file, task=name, max_length=max_length, batch_size=batch_size, chunk=chunk,
                             int8=int8, on_event=on_event, **_task_options(text_column=text_column, pair_column=pair_column,
                                                                windows=windows, pool=pool, doc_stride=doc_stride,
                                                                max_answer_length=max_answer_length,
                                                                threshold=threshold, no_answer=no_answer)):
            n += 1
            if header:
                print(header)
                header = None
            if fmt == "json":
                records.append(r)
            else:
                print(json.dumps(json_safe(r), ensure_ascii=False) if fmt == "jsonl" else _tsv(r, labels))
    if header:                                                  # no input: the header alone, as before
        print(header)
    if fmt == "json":
        print(json.dumps(json_safe(records), ensure_ascii=False, indent=1))
    sys.stdout.flush()
    _cut_note(cut, limit.get("max_length", max_length), windows=limit.get("windows", True), source=limit.get("source"))
    elapsed = max(1e-9, time.perf_counter() - start)
    note(f"{n} predictions in {elapsed:.2f} s ({n / elapsed:.0f}/s)")


@command()
def embed(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE,
    out: Path = typer.Option(..., help="F.npy (sentence level) or F.jsonl"),
    pooling: str = typer.Option("mean", help="mean | cls"),
    level: str = typer.Option("sentence", help="sentence | token | word"),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize",
                                             help="L2-normalise each vector [default: normalize sentence embeddings, "
                                                  "not token or word vectors]"),
    text_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(32),
    chunk: int = CHUNK, max_length: Optional[int] = MAX_LENGTH, windows: Optional[int] = WINDOWS,
    int8: Optional[bool] = INT8,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """Sentence embeddings (mean pooling + normalisation as sentence-transformers), or per-token / per-word
    vectors (a word's sub-word pieces averaged, written with the words)."""
    from .. import api
    from ..data import count_rows
    from ..io import check_writable_file
    # before loading anything: a path that cannot be written, or a file of yours without --overwrite, fails now
    check_writable_file(out, inputs=(file, model), overwrite=overwrite)
    loaded = _load(model, "base", device, bf16, compile_, threads, int8)
    bar, update = progress_bar("embedding", count_rows(file))
    start = time.perf_counter()
    with bar:
        r = api.embed(loaded, file, out, level=level, pooling=pooling, normalize=normalize, text_column=text_column,
                      max_length=max_length, batch_size=batch_size, chunk=chunk, windows=windows, int8=int8,
                      overwrite=overwrite, on_event=_progress(update))
    _cut_note(r["truncated"], r["max_length"], windows=level == "sentence",
              source="asked" if max_length is not None else "model")
    say(f"wrote {out}: {r['shape']} ({level} level) · {r['texts'] / (time.perf_counter() - start):.0f} texts/s")
