"""Evaluate, predict and embed: read, tokenize, run and write in chunks, so memory stays flat."""

from __future__ import annotations

from pathlib import Path

from ..arguments import count_arg, number_arg, path_arg, whole_number
from ..errors import DataError, TokenizerError, UsageError
from .common import VERSION, Loaded, expect_loaded, max_length_for, task_for, windows_apply

# ---- evaluate, predict, embed: streamed in chunks ------------------------------------------------------------------

def _chunks(items, size: int):
    block = []
    for item in items:
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


TASK_OPTIONS = ("text_column", "label_column", "pair_column", "windows", "pool", "doc_stride", "max_answer_length",
                "no_answer", "threshold")


def _wants_int8(loaded: Loaded, int8: bool | None) -> bool:
    """As asked; by default, a folder that `bertscope quantize` wrote runs int8."""
    from .. import quantize
    from ..arguments import check_flag
    if int8 is not None:
        check_flag("int8", int8)                      # "no" is true in Python: it must not run int8
    return quantize.has_calibration(loaded.folder) if int8 is None else int8


def _int8(loaded: Loaded, enc, on_event, asked: bool | None = None) -> None:
    """--int8: the model becomes int8 before its first batch, calibrated as `bertscope quantize` saved it, or on
    the first texts of the input; where int8 does not pay on this CPU, a notice, and fp32. A model placed in bf16
    (--bf16) stays bf16: asked for with --int8 too, that is refused; a quantized folder's default int8 gives way."""
    import torch

    from .. import quantize
    from ..kernels import bf16_beats_int8, int8_on_cpu
    if getattr(loaded.model, "int8", None) is not None:
        return
    weight = next(loaded.model.parameters())
    if weight.dtype != torch.float32:
        if asked:
            raise UsageError("--int8 and --bf16 are two ways of running faster and do not combine (int8 products "
                             "take fp32 activations): choose one")
        if on_event:
            on_event({"event": "notice", "message": "--bf16: this folder's int8 calibration is not used (int8 "
                                                    "products take fp32 activations); running in bf16"})
        loaded.model.int8 = []                          # decided: not int8
        return
    said = "--int8" if asked else "this folder's int8 calibration (bertscope quantize)"   # asked, or the folder's
    if weight.device.type != "cpu":
        if not asked:
            loaded.model.int8 = []                      # a quantized folder on a GPU runs as it is placed
            if on_event:
                on_event({"event": "notice", "message": f"{said} is not used on the GPU ({weight.device.type}: "
                                                        "int8 products run on the CPU); running in fp32 (--bf16 "
                                                        "is the faster choice there)"})
            return
        raise UsageError("--int8 runs on the CPU; on a GPU use --bf16")
    pays, why = int8_on_cpu()
    if not pays:
        if on_event:
            on_event({"event": "notice", "message": f"{said}: {why}; running in fp32"})
        loaded.model.int8 = []                          # decided: fp32
        return
    faster = bf16_beats_int8()
    if faster and on_event:
        on_event({"event": "notice", "message": f"{said}: bf16 products are {faster:.1f}× faster than int8 ones on "
                                                "this CPU (a trial product) and closer to fp32; --bf16"
                                                + (" instead of --int8" if asked else "") + " is the faster choice "
                                                "here"})
    if quantize.has_calibration(loaded.folder):
        quantize.load(loaded.model, loaded.folder)
        return
    from .. import infer
    first = infer.Encoded(enc.ids[:256], enc.types[:256])
    report = quantize.quantize(loaded.model, first)
    few = report.calibration_texts < FEW_CALIBRATION_TEXTS
    if on_event:
        on_event({"event": "warning" if few else "notice",
                  "message": f"--int8: calibrated on the first {report.calibration_texts} texts of the input "
                             f"({report.layers} layers int8, {report.kept} kept fp32)" +
                             (f"; so few that the ranges int8 is scaled to may not cover later texts: a --chunk "
                              f"of at least {FEW_CALIBRATION_TEXTS} (the first chunk calibrates), or" if few else ";")
                             + " bertscope quantize saves a calibration with the model"})


def _total(t, source):
    """Rows of a table or lines of a text file, for the progress bar (sentences and questions are not counted)."""
    from ..data import count_rows, is_conll
    return count_rows(source) if hasattr(t, "text_column") or (t.name == "token-classification" and
                                                               not is_conll(source)) else None


def _setup(loaded: Loaded, source, task, max_length, batch_size, chunk, options):
    """The checked options and the task of evaluate / predict, with the length texts are cut to; batch_size and
    chunk as Python's ints."""
    from ..data import check_columns_apply, is_table, source_name
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:                                       # a typo (max_lenght=) must not pass unnoticed
        raise UsageError(f"unknown option {unknown[0]!r}; evaluate and predict take max_length, batch_size, chunk, "
                         f"int8 and the task options {', '.join(TASK_OPTIONS)}")
    _check_source(source)                             # said when called (predict's rows come later)
    if max_length is not None:                        # its type; its range is max_length_for's (as --max-length)
        max_length = number_arg("max_length", max_length, whole=True)
    batch_size, chunk = count_arg("--batch-size", batch_size), count_arg("--chunk", chunk, what="texts per chunk")
    check_columns_apply([source], **{k: options.get(k) for k in ("text_column", "pair_column")},   # as given:
                        label_column=None if options.get("label_column") == "label" else options.get("label_column"))
    # (run.json's columns apply to tables only; "label", the default, names no column of a file without any)
    trained = _trained_task(loaded)
    if task is None or task == trained.get("task"):  # the columns the model was fine-tuned on (a pair model reads
        for column in ("text_column", "label_column", "pair_column"):  # its pairs), unless others are named
            if options.get(column) is None and isinstance(trained.get(column), str):
                options[column] = trained[column]
        if options.get("threshold") is None and isinstance(trained.get("threshold"), float):
            options["threshold"] = trained["threshold"]        # a multi-label run's: its scores reproduce
        if options.get("no_answer") is None and isinstance(trained.get("no_answer"), bool):
            options["no_answer"] = trained["no_answer"]        # a QA run's --no-answer, where it was given
        for count in ("windows", "doc_stride", "max_answer_length"):   # its windows (and their pooling), its QA
            if options.get(count) is None and whole_number(trained.get(count)) is not None:   # spans, as trained
                options[count] = trained[count]
        if options.get("windows") is not None and options.get("pool") is None and isinstance(trained.get("pool"), str):
            options["pool"] = trained["pool"]
        pair = trained.get("pair_column")
        if options.get("pair_column") == pair and isinstance(pair, str) and not is_table(source):
            where = "" if loaded.folder is None else f" (its {Path(loaded.folder) / 'run.json'})"
            raise DataError(f"{source_name(source)}: this model was fine-tuned on sentence pairs, columns "
                            f"{trained.get('text_column') or 'text'!r} and {pair!r}{where}, so it reads pairs: give a "
                            ".tsv, .csv or .jsonl with those columns, or name yours with --text-column and "
                            "--pair-column; plain text is one text a line, with no pair")
    t = task_for(loaded, task, **options)
    t.length_from = "asked" if max_length is not None else "run.json" if isinstance(trained.get("max_length"), int) \
        else "model"                        # whose length texts are cut to, said with the count of cut texts
    if max_length is None:                  # the length the model was fine-tuned at, so that scores reproduce
        length = trained.get("max_length")
        max_length = length if isinstance(length, int) else (min(t.max_length, loaded.model.config.max_tokens)
                                                             if t.name == "question-answering" else None)
    t.max_length = max_length_for(loaded.model.config, loaded.tokenizer, max_length,
                                  pairs=getattr(t, "pair_column", None) is not None)
    return t, loaded.tokenizer, batch_size, chunk


def _check_source(source) -> None:
    """An input file that is there (or "-" for standard input)."""
    path_arg("source", source)
    if str(source) != "-" and not Path(source).is_file():
        raise DataError(f"{source}: " + ("is a folder; expected a file" if Path(source).is_dir() else "no such file"))


def _trained_task(loaded: Loaded) -> dict:
    """The task settings of the bertscope fine-tuning run that wrote this folder (its run.json: task, columns,
    max_length), if one did; else {}."""
    import json
    if loaded.folder is None or not (Path(loaded.folder) / "run.json").is_file():
        return {}
    try:
        run = json.loads((Path(loaded.folder) / "run.json").read_text(encoding="utf-8"))
        task = run["task"] if run.get("kind") in ("finetune", "quantized") else {}
    except (ValueError, KeyError, TypeError, OSError):
        return {}
    return task if isinstance(task, dict) else {}


def _merge(parts):
    import torch
    if parts and isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [x for part in parts for x in part]


def evaluate(loaded: Loaded, source, *, task: str | None = None, max_length: int | None = None, batch_size: int = 64,
             chunk: int = 2048, skip_bad_rows: bool = False, int8: bool | None = None, on_event=None, **options) -> dict:
    """The task's metrics of a model on a labelled file (the task the model was fine-tuned for unless `task`),
    read, tokenized and run chunk by chunk."""
    expect_loaded(loaded, "evaluate")
    from ..data import source_name
    t, tok, batch_size, chunk = _setup(loaded, source, task, max_length, batch_size, chunk, options)
    total, done, cut, preds, gold, pieceless = _total(t, source), 0, 0, [], [], []
    from ..arguments import check_flag
    from ..tasks import check_skip_bad_rows
    check_flag("skip_bad_rows", skip_bad_rows)
    check_skip_bad_rows(t.name, skip_bad_rows)
    for ex in t.chunks(source, chunk, skip_bad_rows):
        enc = t.encode(ex, tok)
        if _wants_int8(loaded, int8):
            _int8(loaded, enc, on_event, asked=int8)
        cut += enc.truncation()[0]
        pieceless += enc.extra.get("pieceless", [])
        preds.append(t.predictions(loaded.model, enc, batch_size))
        gold.append(t.gold(enc))
        done += len(ex)
        if on_event:
            on_event({"event": "progress", "done": done, "total": total})
    if pieceless and on_event:
        on_event({"event": "notice", "message": t.pieceless_notice(pieceless, source_name(source))})
    skipped = getattr(t, "skipped", None) or []       # --skip-bad-rows: said, as finetune says it
    if skipped and on_event:
        on_event({"event": "notice", "message": f"skipped {len(skipped)} bad rows of {source_name(source)} (first: "
                                                f"line {skipped[0][0]}: {skipped[0][1]})"})
    if not preds:
        why = f" ({len(skipped)} bad rows skipped; first: line {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{source_name(source)}: no examples{why}")
    metrics = t.score(_merge(preds), _merge(gold))
    why = t.undefined_scores(_merge(gold), _merge(preds)) if hasattr(t, "undefined_scores") else None
    if why and on_event:
        on_event({"event": "notice", "message": f"{source_name(source)}: pearson and spearman are nan (not a "
                                                f"number): {why}"})
    metrics.update(task=t.name, examples=done, labels=t.labels, truncated=cut, skipped_rows=len(skipped),
                   max_length=t.max_length, max_length_from=t.length_from, windows_would_keep=windows_apply(t))
    return metrics


def predict(loaded: Loaded, source, *, task: str | None = None, max_length: int | None = None, batch_size: int = 64,
            chunk: int = 2048, int8: bool | None = None, on_event=None, **options):
    """Predictions for every input, in input order, yielded chunk by chunk (a dict per text, sentence or
    question). The arguments are checked here, before the first prediction is asked for."""
    expect_loaded(loaded, "predict")
    t, tok, batch_size, chunk = _setup(loaded, source, task, max_length, batch_size, chunk, options)
    _wants_int8(loaded, int8)
    return _predictions(loaded, source, t, tok, batch_size, chunk, int8, on_event)


def _predictions(loaded: Loaded, source, t, tok, batch_size: int, chunk: int, int8, on_event):
    total, done, pieceless, wordless = _total(t, source), 0, [], []
    from ..data import is_conll, is_table
    one_a_line = not is_table(source) and not is_conll(source) and not str(source).lower().endswith(".json") \
        and t.name != "question-answering"
    blank = _BlankLines()                            # a text a line: blank lines are skipped, so rows are not lines
    for ex in t.chunks(source, chunk, labelled=False):
        if one_a_line:
            blank.see(ex.lines)
        enc = t.encode(ex, tok, labelled=False)
        if _wants_int8(loaded, int8):
            _int8(loaded, enc, on_event, asked=int8)
        pieceless += enc.extra.get("pieceless", [])
        results = t.decode(t.predictions(loaded.model, enc, batch_size), enc)
        if t.name == "token-classification":          # a text of which the tokenizer keeps no word
            wordless += [(r.get("text"), n) for r, n in zip(results, ex.lines) if not r["words"]]
        yield from results
        done += len(ex)
        if on_event:
            on_event({"event": "progress", "done": done, "total": total, "truncated": enc.truncation()[0],
                      "max_length": t.max_length, "max_length_from": t.length_from,
                      "windows_would_keep": windows_apply(t)})
    from ..data import source_name
    if done == 0:                                     # as embed and evaluate: an empty input is a mistake, said
        raise DataError(f"{source_name(source)}: no texts found")
    if pieceless and on_event:
        on_event({"event": "notice", "message": t.pieceless_notice(pieceless, source_name(source))})
    if wordless and on_event:
        (text, line), k = wordless[0], len(wordless)
        on_event({"event": "notice", "message": f"{source_name(source)}: {k} text{'s' if k > 1 else ''} kept no word "
                                                f"(first: {text!r}, line {line}; the tokenizer drops such "
                                                "characters), predicted as sentences without words: word<TAB>tag "
                                                "output (--format tsv) has no rows for them, so its sentences no "
                                                "longer follow the input's lines; --format jsonl keeps one record "
                                                "a line"})
    blank.notice(source_name(source), "the predictions", on_event)


class _BlankLines:
    """The blank lines a text-a-line file skipped, from the line numbers of the texts read (embed and predict say
    them: their rows then follow the non-blank lines, not the file's line numbers)."""

    def __init__(self):
        self.count, self.first, self.previous = 0, None, 0

    def see(self, line_numbers) -> None:
        for n in line_numbers:
            if n > self.previous + 1:
                self.count += n - self.previous - 1
                self.first = self.first or self.previous + 1
            self.previous = n

    def notice(self, name: str, rows: str, on_event) -> None:
        if self.count and on_event:
            on_event({"event": "notice", "message": f"{name}: {self.count} blank line{'s' if self.count > 1 else ''} "
                                                    f"skipped (first: line {self.first}), so {rows} follow its "
                                                    "non-blank lines, not its line numbers"})


def embed(loaded: Loaded, source, out, *, level: str = "sentence", pooling: str = "mean", normalize: bool | None = None,
          text_column=None, max_length: int | None = None, batch_size: int = 32, chunk: int = 2048,
          windows: int | None = None, int8: bool | None = None, overwrite: bool = False, on_event=None) -> dict:
    """Sentence embeddings (.npy or .jsonl), or per-token / per-word vectors (.jsonl), written chunk by chunk to a
    temporary file that replaces `out` only when everything is written. An existing `out` is refused unless
    `overwrite`. Sentence embeddings are L2-normalised unless normalize=False; token and word vectors are written
    as the model's last layer has them unless normalize=True (each vector then has length 1)."""
    expect_loaded(loaded, "embed")
    import json

    import torch

    from .. import infer
    from ..arguments import check_flag
    from ..data import check_columns_apply, count_rows, is_table, iter_rows, source_name
    from ..io import NpyWriter, StreamFile, check_writable_file
    if level not in ("sentence", "token", "word"):
        raise UsageError(f"--level {level!r}: use sentence, token or word")
    if pooling not in ("mean", "cls"):
        raise UsageError(f"--pooling {pooling!r}: use mean or cls")
    if normalize is not None:
        check_flag("normalize", normalize)
    check_flag("overwrite", overwrite)
    _check_source(source), path_arg("out", out)
    normalize = level == "sentence" if normalize is None else normalize
    check_columns_apply([source], text_column=text_column)
    if pooling != "mean" and level != "sentence":
        raise UsageError(f"--pooling {pooling} makes sentence embeddings; --level {level} writes a vector per "
                         f"{level} (leave --pooling out)")
    out = Path(out)
    if out.suffix not in (".npy", ".jsonl") or (out.suffix == ".npy" and level != "sentence"):
        raise UsageError(f"--out {out}: write sentence embeddings to .npy or .jsonl, token and word vectors to .jsonl")
    batch_size, chunk = count_arg("--batch-size", batch_size), count_arg("--chunk", chunk, what="texts per chunk")
    check_writable_file(out, inputs=((source,) if isinstance(source, (str, Path)) else ()) + (loaded.folder,),
                        overwrite=overwrite)
    if loaded.tokenizer is None:
        raise TokenizerError(f"{loaded.description} has no tokenizer to read texts with: load it with one "
                             "(api.load(folder, tokenizer=...))")
    model, tok = loaded.model, loaded.tokenizer
    limit = max_length_for(model.config, tok, max_length)
    width = model.config.hidden_size
    if windows is not None and level != "sentence":
        raise UsageError("--windows combines windows into sentence embeddings; token and word vectors of a "
                         "long text are cut at --max-length")
    _wants_int8(loaded, int8)
    total, done, cut = count_rows(source), 0, 0
    writer = NpyWriter(out, width) if out.suffix == ".npy" else StreamFile(out)
    blank = _BlankLines()
    try:
        for block in _chunks(iter_rows(source, text_column), chunk):
            texts = [b[1] for b in block]
            if not is_table(source):
                blank.see(b[0] for b in block)
            enc = infer.tokenize(tok, texts, max_length=limit, word_ids=level == "word", windows=windows)
            if _wants_int8(loaded, int8):
                _int8(loaded, enc, on_event, asked=int8)
            cut += enc.truncation()[0]
            if level == "sentence":
                vectors = infer.sentence_embeddings(model, enc, pooling, normalize, batch_size)
                if out.suffix == ".npy":
                    writer.write(vectors.numpy())
                else:
                    writer.write("".join(json.dumps({"text": t, "embedding": [round(x, 6) for x in v]}) + "\n"
                                         for t, v in zip(texts, vectors.tolist())))
            else:
                per = infer.token_embeddings(model, enc, batch_size) if level == "token" else \
                    infer.word_embeddings(model, enc, batch_size)
                for i, (t, v) in enumerate(zip(texts, per)):
                    if normalize:
                        v = torch.nn.functional.normalize(v.float(), dim=-1)
                    rec = {"text": t}
                    if level == "token":
                        rec["tokens"] = [tok.backend.id_to_token(x) for x in enc.ids[i]]
                    else:
                        rec["words"] = infer.words_of(tok, t, enc, i)
                    rec["vectors"] = [[round(x, 6) for x in row] for row in v.tolist()]
                    writer.write(json.dumps(rec, ensure_ascii=False) + "\n")
            done += len(texts)
            if on_event:
                on_event({"event": "progress", "done": done, "total": total})
        if done == 0:
            raise DataError(f"{source_name(source)}: no texts found")
    except BaseException:
        writer.discard()
        raise
    writer.close()
    blank.notice(source_name(source), f"the rows of {out.name}", on_event)
    return {"path": str(out), "texts": done, "shape": (done, width) if level == "sentence" else (done, "L", width),
            "truncated": cut, "max_length": limit, "blank_lines": blank.count}


FEW_CALIBRATION_TEXTS = 16


def quantize(loaded: Loaded, calibration, out, *, column=None, limit: int = 512, alpha: float | None = None,
             overwrite: bool = False, on_event=None) -> dict:
    """An int8 folder: the model and tokenizer as they are, plus the calibration from `limit` texts of the file
    `calibration`; and how close int8 stays to fp32 on those texts (mean-pooled embedding cosine, and for a
    classifier the share of equal predictions)."""
    expect_loaded(loaded, "quantize")
    import copy

    from .. import infer
    from .. import quantize as q
    from ..arguments import check_flag
    from ..checkpoint import save_pretrained
    from ..data import read_texts
    from ..io import QUANTIZE_WRITES, FolderLock, check_output_folder, create_output_folder, write_json
    from ..kernels import bf16_beats_int8, int8_on_cpu
    calibration = path_arg("calibration", calibration)          # a file of texts ("-" for standard input)
    path_arg("out", out, what="a folder"), check_flag("overwrite", overwrite)
    from ..data import is_table, source_name
    if column is not None and not is_table(calibration):        # it would be ignored: the lines are the texts
        raise UsageError(f"--column {column}: names a column of .tsv, .csv or .jsonl files, but "
                         f"{source_name(calibration)} is read as plain text, one text a line: leave --column out")
    check_output_folder(out, overwrite, sources=[loaded.folder] if loaded.folder else [], resumable=False,
                        inputs=[calibration], writes=QUANTIZE_WRITES)
    if alpha is not None and not 0 < number_arg("alpha", alpha) <= 1:
        raise UsageError(f"--alpha {alpha}: expected a number in (0, 1] (0.9 by default)")
    limit = count_arg("--limit", limit, what="calibration texts")
    texts = read_texts(calibration, column=column, limit=limit)
    if len(texts) < FEW_CALIBRATION_TEXTS and on_event:
        on_event({"event": "warning", "message": f"calibrated on only {len(texts)} texts: the ranges int8 is scaled "
                                                 "to may not cover other texts' (the cosine below is measured on "
                                                 f"these same texts); give at least {FEW_CALIBRATION_TEXTS}, "
                                                 "like the texts the model will see"})
    tok, fp32 = loaded.tokenizer, loaded.model
    enc = infer.tokenize(tok, texts)
    int8 = copy.deepcopy(fp32)
    report = q.quantize(int8, enc, **({"alpha": alpha} if alpha is not None else {}))
    int8, cos, restored = q.restore_for_cosine(fp32, int8, enc)   # layers back to fp32 until cosine ≥ 0.99
    parity = {"texts": len(texts), "layers_int8": report.layers - len(restored),
              "layers_fp32": report.kept + len(restored), "restored": restored, "alpha": report.alpha,
              "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    if fp32.head == "classification":
        same = (infer.class_logits(fp32, enc).argmax(-1) == infer.class_logits(int8, enc).argmax(-1)).float()
        parity["same_prediction"] = float(same.mean())
    if parity["min_cosine"] < q.CLOSE_COSINE and on_event:        # said, with the text that moved most
        worst = int(cos.argmin())
        on_event({"event": "warning", "message": f"int8 moves some texts' embeddings: cosine to fp32 "
                                                 f"{parity['min_cosine']:.4f} (under {q.CLOSE_COSINE}, with "
                                                 f"{len(restored)} layers back in fp32) on calibration text "
                                                 f"{worst + 1} ({texts[worst][:60]!r}); where embeddings must stay "
                                                 "close, run fp32 (or --bf16 where it pays)"})
    pays, why = int8_on_cpu()
    parity["pays_here"], parity["why_not"], parity["bf16_faster"] = pays, why, bf16_beats_int8()
    create_output_folder(out)
    task = _trained_task(loaded)                 # a fine-tuned model's columns, pairs and length go along
    with FolderLock(out, "quantize"):
        save_pretrained(fp32, out)
        tok.save(out, overwrite=True)            # (--out was checked above, and is locked)
        q.save(int8, out)
        if task:
            write_json(Path(out) / "run.json", {"kind": "quantized", "bertscope": VERSION, "task": task,
                                                "model": str(Path(loaded.folder).resolve())})
        else:                                    # another model's run.json, left by an --overwrite, would be read
            (Path(out) / "run.json").unlink(missing_ok=True)
    return parity
