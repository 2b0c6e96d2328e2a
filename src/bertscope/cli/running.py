"""bertscope evaluate, predict, embed: streamed chunk by chunk, with a progress bar on a terminal."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from . import BF16, COMPILE, DEVICE, THREADS, command, console, note, progress_bar, say

FORMATS = ("tsv", "jsonl", "json")
SOURCE = typer.Argument(..., help="a .txt (one text a line), .tsv/.csv/.jsonl, or - for standard input")
MAX_LENGTH = typer.Option(None, help="tokens per text [default: what the model's positions allow]")
CHUNK = typer.Option(2048, help="texts read, sorted and run at a time")


def _load(model: str, head: str | None, device, bf16, compile_, threads):
    from .. import api
    from ..api.common import set_threads
    set_threads(threads)
    loaded = api.load(model, head=head, need_tokenizer=True)
    loaded.model = api.place(loaded, device, bf16, compile_, on_event=lambda e: note(e["message"]))
    return loaded


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        from ..errors import UsageError
        raise UsageError(f"--format {fmt!r}: use {', '.join(FORMATS)}")
    return fmt


@command()
def evaluate(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE,
    text_column: Optional[str] = typer.Option(None), label_column: str = typer.Option("label"),
    pair_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(64),
    max_length: Optional[int] = MAX_LENGTH, chunk: int = CHUNK, skip_bad_rows: bool = typer.Option(False),
    fmt: str = typer.Option("text", "--format", help="text | json"),
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """Accuracy, macro-F1 and the confusion matrix of a classifier on a labelled file."""
    from rich.table import Table

    from .. import api
    from ..data import count_rows
    if fmt not in ("text", "json"):
        from ..errors import UsageError
        raise UsageError(f"--format {fmt!r}: use text or json")
    loaded = _load(model, "classification", device, bf16, compile_, threads)
    bar, update = progress_bar("evaluating", count_rows(file))
    start = time.perf_counter()
    with bar:
        m = api.evaluate(loaded, file, text_column=text_column, label_column=label_column, pair_column=pair_column,
                         max_length=max_length, batch_size=batch_size, chunk=chunk, skip_bad_rows=skip_bad_rows,
                         on_event=lambda e: update(e["done"]))
    elapsed = time.perf_counter() - start
    if m["truncated"]:
        note(f"{m['truncated']} texts were longer than the model allows and were cut")
    if fmt == "json":
        print(json.dumps({k: v for k, v in m.items()}, indent=1))
        return
    say(f"{file}: {m['examples']} examples · accuracy {m['accuracy']:.4f} · macro-F1 {m['macro_f1']:.4f} · "
        f"loss {m['loss']:.4f} · {m['examples'] / elapsed:.0f} examples/s")
    table = Table("true \\ predicted", *m["labels"])
    for name, row in zip(m["labels"], m["confusion"]):
        table.add_row(name, *map(str, row))
    console.print(table)


@command()
def predict(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE,
    fmt: str = typer.Option("tsv", "--format", help="tsv | jsonl | json"),
    text_column: Optional[str] = typer.Option(None), pair_column: Optional[str] = typer.Option(None),
    batch_size: int = typer.Option(64), chunk: int = CHUNK, max_length: Optional[int] = MAX_LENGTH,
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """Label and class probabilities for every input text, in input order, streamed chunk by chunk."""
    from .. import api
    from ..data import count_rows
    _format(fmt)
    loaded = _load(model, "classification", device, bf16, compile_, threads)
    labels = loaded.model.config.labels
    start, n, cut = time.perf_counter(), 0, 0
    bar, update = progress_bar("predicting", count_rows(file))

    def on_event(e):
        nonlocal cut
        cut += e.get("truncated", 0)
        update(e["done"])

    if fmt == "tsv":
        print("\t".join(["label"] + [f"p_{x}" for x in labels] + ["text"]))
    records = []
    with bar:
        for r in api.predict(loaded, file, text_column=text_column, pair_column=pair_column, max_length=max_length,
                             batch_size=batch_size, chunk=chunk, on_event=on_event):
            n += 1
            if fmt == "json":
                records.append(r)
            elif fmt == "jsonl":
                print(json.dumps(r, ensure_ascii=False))
            else:
                p = r["probabilities"]
                print("\t".join([r["label"]] + [f"{p[x]:.4f}" for x in labels] + [r["text"]]))
    if fmt == "json":
        print(json.dumps(records, ensure_ascii=False, indent=1))
    sys.stdout.flush()
    if cut:
        note(f"{cut} texts were longer than the model allows and were cut")
    note(f"{n} texts in {time.perf_counter() - start:.2f} s ({n / max(1e-9, time.perf_counter() - start):.0f} "
         "texts/s)")


@command()
def embed(
    model: str = typer.Argument(..., metavar="MODEL"), file: str = SOURCE,
    out: Path = typer.Option(..., help="F.npy (sentence level) or F.jsonl"),
    pooling: str = typer.Option("mean", help="mean | cls"),
    level: str = typer.Option("sentence", help="sentence | token | word"),
    normalize: bool = typer.Option(True, help="L2-normalise sentence embeddings"),
    text_column: Optional[str] = typer.Option(None), batch_size: int = typer.Option(32),
    chunk: int = CHUNK, max_length: Optional[int] = MAX_LENGTH,
    device: str = DEVICE, bf16: bool = BF16, compile_: bool = COMPILE, threads: Optional[int] = THREADS,
):
    """Sentence embeddings (mean pooling + normalisation as sentence-transformers), or per-token / per-word
    vectors (a word's sub-word pieces averaged, written with the words)."""
    from .. import api
    from ..data import count_rows
    from ..io import check_writable_file
    check_writable_file(out)                      # before loading anything: a path that cannot be written fails now
    loaded = _load(model, "base", device, bf16, compile_, threads)
    bar, update = progress_bar("embedding", count_rows(file))
    start = time.perf_counter()
    with bar:
        r = api.embed(loaded, file, out, level=level, pooling=pooling, normalize=normalize, text_column=text_column,
                      max_length=max_length, batch_size=batch_size, chunk=chunk,
                      on_event=lambda e: update(e["done"]))
    if r["truncated"]:
        note(f"{r['truncated']} texts were longer than the model allows and were cut")
    say(f"wrote {out}: {r['shape']} ({level} level) · {r['texts'] / (time.perf_counter() - start):.0f} texts/s")
