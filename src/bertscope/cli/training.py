"""bertscope finetune, pretrain, tokenizer train, masks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import THREADS, app, command, err, note, say, warn

tokenizer_app = typer.Typer(help="Train a tokenizer.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

# Training settings default to None here so that a resumed run can tell what was given; train.Settings holds the
# defaults.
EPOCHS = typer.Option(None, help="passes over the training data [default: 3]")
LR = typer.Option(None, help="peak learning rate, above 0 [default: 5e-5 fine-tuning, 5e-4 pretraining]")
BATCH = typer.Option(None, help="sequences per batch (per process) [default: 32]")
ACCUM = typer.Option(None, help="batches whose gradients add up to one step [default: 1]")
WARMUP = typer.Option(None, help="warm-up: a fraction of all steps (< 1) or a number of steps [default: 0.06]")
SEED = typer.Option(None, help="seed of the shuffling, dropout and a new head [default: 42]")
SAVE = typer.Option(None, help="steps between resumable checkpoints (0: epoch ends only) [default: 500]")
KEEP = typer.Option(False, "--keep-checkpoint", help="keep the resumable checkpoint/ after the run succeeds")
OVERWRITE = typer.Option(False, "--overwrite", help="write into --out even if it holds a model or a run")
TASK = typer.Option(None, help="classification | regression | multi-label | token-classification | "
                               "question-answering [default: guessed from the training file]")
WINDOWS = typer.Option(None, help="split texts longer than --max-length into windows overlapping by this many "
                                  "tokens, instead of cutting them")
WHOLE_WORD = typer.Option(None, help="mask whole words: none (token by token), pieces (the tokenizer's own words), "
                                     "jieba (Chinese words; pip install 'bertscope[zh]') or words:FILE (gold words, "
                                     "a sentence a line, separated by spaces) [default: none]")


class Reporter:
    """Training events as a progress bar (on a terminal) and one line per evaluation and notice."""

    def __init__(self, what: str, describe_log, describe_eval, every: int = 100):
        self.what, self.describe_log, self.describe_eval, self.every = what, describe_log, describe_eval, every
        self.bar = self.update = None

    def __call__(self, e: dict):
        kind = e.get("event")
        if kind == "notice":
            note(e["message"])
        elif kind == "stopping":
            note("stopping after this step, with a checkpoint (Ctrl-C again to stop at once)")
        elif kind == "start" and self.bar is None:
            from . import progress_bar
            self.bar, self.update = progress_bar(self.what, e["total_steps"])
            self.bar.start()
            self.update(e["step"])
        elif kind == "log":
            line = self.describe_log(e)
            self.update(e["step"], line)
            if not err.is_terminal and (e["step"] % self.every == 0 or e["step"] == e["total_steps"]):
                say(f"step {e['step']}/{e['total_steps']} · {line}")
        elif kind == "eval":
            say(self.describe_eval(e))
        elif kind == "end" and self.bar is not None:
            self.bar.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None and v is not False}


def _given_on_resume(folder, **given) -> None:
    """--resume runs as the run was set up: options given again must be the run's (api.check_resume_options); the
    settings it may change are api.resume's to check. Notes name those it does not read. Every value but None was
    typed (flags not given are passed as None, so that a typed --dynamic-masks, a False, is compared too)."""
    from .. import api
    for line in api.check_resume_options(folder, **{k: v for k, v in given.items() if v is not None}):
        if _first_process():                              # every process checks (a refusal stops them all)
            note(line)


def _first_process() -> bool:
    """Under torchrun, only the first process (RANK 0) prints; alone, this one."""
    import os
    return os.environ.get("RANK", "0") == "0"


def _processes() -> int:
    """How many processes torchrun started (1 without it)."""
    import os
    return int(os.environ.get("WORLD_SIZE", "1"))


def _finish(result, out: Path, command_name: str, what: str):
    if not _first_process():
        if not result.finished:
            raise typer.Exit(130)
        return
    if not result.finished:
        processes = _processes()
        how = "bertscope" if processes == 1 else f"torchrun --nproc_per_node {processes} -m bertscope.cli"
        err.print(f"[yellow]interrupted:[/] stopped at step {result.steps} of {result.total_steps}; a checkpoint of "
                  f"this point is in {out / 'checkpoint'}. Continue with: {how} {command_name} --resume {out}",
                  soft_wrap=True)
        raise typer.Exit(130)
    curves = " and curves.png" if (out / "curves.png").exists() else \
        " (curves.png needs matplotlib: pip install 'bertscope[plot]')"
    say(f"done: {result.steps} steps{what}; {out} holds the model, run.json, metrics.jsonl{curves}")


def _classification_log(e):
    return f"loss {e['loss']:.4f} · {e['examples_per_s']:.0f} ex/s · {e['tokens_per_s']:.0f} tok/s"


SHOWN = ("accuracy", "macro_f1", "f1", "precision", "recall", "exact", "pearson", "spearman", "micro_f1", "loss")


def _classification_eval(e):
    shown = [f"{k.replace('_', ' ')} {e['eval_' + k]:.4f}" for k in SHOWN if isinstance(e.get("eval_" + k), float)]
    return f"epoch {e['epoch']:.2f} · step {e['step']}: eval " + " · ".join(shown)


@command()
def finetune(
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="checkpoint folder to start from"),
    train: Optional[Path] = typer.Option(None, help="training file (.tsv/.csv/.jsonl rows, .conll, SQuAD .json)"),
    task: Optional[str] = TASK,
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="evaluation file, scored after every epoch"),
    out: Optional[Path] = typer.Option(None, help="output folder (the best model, metrics, curves)"),
    text_column: Optional[str] = typer.Option(None, help="default: 'text', 'sentence', or the one column that is "
                                                     "not the label, the pair or an id"),
    label_column: Optional[str] = typer.Option(None, help="[default: label]"),
    pair_column: Optional[str] = typer.Option(None, help="second segment, for sentence-pair tasks"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer folder (default: the model folder)"),
    epochs: Optional[int] = EPOCHS, lr: Optional[float] = LR, batch_size: Optional[int] = BATCH,
    grad_accum: Optional[int] = ACCUM,
    max_length: Optional[int] = typer.Option(None, help="tokens per text, special tokens included [default: 128]"),
    warmup: Optional[float] = WARMUP, weight_decay: Optional[float] = typer.Option(None),
    seed: Optional[int] = SEED,
    bf16: bool = typer.Option(False, help="bfloat16 autocast (where this CPU or GPU has bf16 instructions)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after this many steps"),
    save_every: Optional[int] = SAVE, keep_checkpoint: bool = KEEP,
    new_head: bool = typer.Option(False, "--new-head", help="train a new classifier instead of the model's own"),
    overwrite: bool = OVERWRITE,
    skip_bad_rows: bool = typer.Option(False, help="skip (and count) malformed rows instead of stopping"),
    resume: Optional[Path] = typer.Option(None, help="continue the unfinished run in this output folder"),
    threads: Optional[int] = THREADS,
    bucket: Optional[int] = typer.Option(None, help="batches per length-sorting window (1: random batches)"),
    windows: Optional[int] = WINDOWS,
    label_all_pieces: bool = typer.Option(False, help="token tasks: every piece of a word takes its tag (default: "
                                                      "the first piece only)"),
    doc_stride: Optional[int] = typer.Option(None, help="question answering: overlap of context windows "
                                                        "[128, or a third of a shorter --max-length]"),
    threshold: Optional[float] = typer.Option(None, help="multi-label: probability from which a label is predicted"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N, mps, or auto (under torchrun: cpu, or auto for "
                                            "each process's own GPU)"),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model first"),
):
    """Fine-tune for sentence labels, numbers, several labels, word tags (NER) or answers (QA); the best model is
    kept in --out."""
    from .. import api
    settings = _given(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, warmup=warmup,
                      weight_decay=weight_decay, seed=seed, bf16=bf16, max_steps=max_steps, save_every=save_every,
                      keep_checkpoint=keep_checkpoint, bucket=bucket, compile=compile_)
    with Reporter("fine-tuning", _classification_log, _classification_eval) as report:
        if resume is not None:
            _given_on_resume(resume, model=model, out=out, task=task, text_column=text_column,
                             label_column=label_column, pair_column=pair_column, tokenizer=tokenizer,
                             max_length=max_length, new_head=new_head or None, overwrite=overwrite or None,
                             skip_bad_rows=skip_bad_rows or None, windows=windows,
                             label_all_pieces=label_all_pieces or None, doc_stride=doc_stride, threshold=threshold)
            result = api.resume(resume, device=device, threads=threads, on_event=report, kind="finetune",
                                data={"train": [train] if train else [], "eval": [eval_file] if eval_file else []},
                                **settings)
            out = resume
        else:
            if model is None or train is None or out is None:
                from ..errors import UsageError
                raise UsageError("give MODEL, --train and --out (or --resume DIR to continue a run)")
            api.check_settings(**settings)           # a bad option is the only line printed
            processes = _processes()
            if _first_process():
                say(f"fine-tuning {model} on {train}" + (f", evaluating on {eval_file}" if eval_file else "") +
                    (f"; {processes} processes, each adding --grad-accum batches of --batch-size to every step"
                     if processes > 1 else ""))
            options = _given(text_column=text_column, label_column=label_column, pair_column=pair_column,
                             windows=windows, label_all_pieces=label_all_pieces, doc_stride=doc_stride,
                             threshold=threshold)
            result = api.finetune(model, train, out, eval=eval_file, task=task, tokenizer=tokenizer,
                                  max_length=max_length, new_head=new_head, overwrite=overwrite,
                                  skip_bad_rows=skip_bad_rows, device=device, threads=threads, on_event=report,
                                  **options, **settings)
    _finish(result, out, "finetune", f"; best eval score {result.best:.4f}" if result.best is not None else "")


def _whole_words(unit) -> str:
    return f" (whole words: {unit})" if unit else ""


def _pretrain_log(e):
    extra = f" · pair acc {e['pair_accuracy']:.3f}" if "pair_accuracy" in e else ""
    return f"loss {e['loss']:.4f} · MLM acc {e['mlm_accuracy']:.3f}{extra} · {e['tokens_per_s']:,.0f} tok/s"


def _pretrain_eval(e):
    extra = f" · pair accuracy {e['eval_pair_accuracy']:.3f}" if "eval_pair_accuracy" in e else ""
    return (f"step {e['step']}: held-out masked-LM loss {e['eval_mlm_loss']:.4f} · accuracy "
            f"{e['eval_mlm_accuracy']:.3f}{extra}")


@command()
def pretrain(
    family: Optional[str] = typer.Option(None, help="bert | roberta | albert"),
    config: Optional[str] = typer.Option(None, help="tiny | small | base | a config.json [tiny; not with --init]"),
    corpus: Optional[List[Path]] = typer.Option(None, help="plain text training files (repeat the option)"),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="held-out text for masked-LM loss / accuracy"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer folder (bertscope tokenizer train) [default "
                                                        "with --init: the checkpoint's own]"),
    out: Optional[Path] = typer.Option(None),
    objective: Optional[str] = typer.Option(None, help="mlm | mlm+nsp | mlm+sop (default: the family's own)"),
    whole_word: Optional[str] = WHOLE_WORD,
    mlm_probability: Optional[float] = typer.Option(None, help="share of tokens masked [default: 0.15]"),
    static_masks: Optional[bool] = typer.Option(None, "--static-masks/--dynamic-masks",
                                                help="one fixed set of masks (BERT's recipe) or new masks every "
                                                     "epoch (RoBERTa's) [default: the family's recipe]"),
    max_length: Optional[int] = typer.Option(None, min=8, help="tokens per sequence [default: 128]"),
    batch_size: Optional[int] = BATCH,
    grad_accum: Optional[int] = ACCUM,
    steps: Optional[int] = typer.Option(None, min=1, help="optimizer steps [default: 1000]"),
    lr: Optional[float] = LR, warmup: Optional[float] = WARMUP, seed: Optional[int] = SEED,
    bf16: bool = typer.Option(False, help="bfloat16 autocast"),
    eval_every: Optional[int] = typer.Option(None, help="steps between evaluations [default: 200]"),
    save_every: Optional[int] = SAVE, keep_checkpoint: bool = KEEP, overwrite: bool = OVERWRITE,
    init: Optional[Path] = typer.Option(None, help="continue training this checkpoint instead of random weights"),
    start: Optional[str] = typer.Option(None, help="how a model from scratch starts: standard (BERT's random weights) "
                                               "or local (order in the position table, kept fixed, and first-layer "
                                               "heads that read their neighbours: leaves the no-context floor sooner "
                                               "on a small corpus) [default: standard]"),
    freeze: Optional[List[str]] = typer.Option(None, help="keep these parameters fixed (bertscope's names or "
                                                          "prefixes, e.g. --freeze embeddings --freeze encoder: "
                                                          "train a checkpoint's fresh MLM head alone first)"),
    resume: Optional[Path] = typer.Option(None, help="continue the unfinished run in this output folder"),
    threads: Optional[int] = THREADS,
    device: str = typer.Option("auto", help="cpu, or auto (under torchrun: this process's GPU where there are "
                                            "GPUs, else the CPU)"),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model first"),
):
    """Pretrain (masked LM, + NSP for BERT, + SOP for ALBERT) on plain text. Runs as is on one CPU or GPU, and
    under `torchrun --nproc_per_node N` on several processes (gloo on CPU, nccl on GPU)."""
    from .. import api
    rank0 = _first_process()
    settings = _given(batch_size=batch_size, grad_accum=grad_accum, max_steps=steps, lr=lr, warmup=warmup,
                      seed=seed, bf16=bf16, eval_every=eval_every, save_every=save_every,
                      keep_checkpoint=keep_checkpoint, compile=compile_, freeze=tuple(freeze) if freeze else None)

    def on_data(e):
        if e.get("event") == "data" and rank0:
            say(f"{e['documents']} documents -> {e['sequences']} sequences of up to {e['max_length']} tokens; "
                f"{e['objective']}{_whole_words(e['whole_word'])}; {e['parameters'] / 1e6:.1f}M "
                f"parameters; global batch {e['global_batch']} = {e['batch_size']} × {e['processes']} process(es) "
                f"× {e['grad_accum']}" + (f"; start {e['start']}" if e.get("start") else "") +
                (f"; kept fixed: {', '.join(e['fixed'])}" if e.get("fixed") else ""))
        elif rank0:
            report(e)

    with Reporter("pretraining", _pretrain_log, _pretrain_eval) as report:
        if resume is not None:
            _given_on_resume(resume, family=family, config=config, tokenizer=tokenizer, out=out,
                             objective=objective, whole_word=whole_word, mlm_probability=mlm_probability,
                             static_masks=static_masks, max_length=max_length, init=init, start=start,
                             overwrite=overwrite or None)
            result = api.resume(resume, device=device, threads=threads, on_event=on_data, kind="pretrain",
                                data={"train": list(corpus or []), "eval": [eval_file] if eval_file else []},
                                **settings)
            out = resume
        else:
            missing = [o for o, v in (("--corpus", corpus), ("--tokenizer", tokenizer or init), ("--out", out))
                       if not v]
            if missing:
                from ..errors import UsageError
                raise UsageError(f"missing {', '.join(missing)}: give --family (or --init CHECKPOINT), "
                                         "--corpus, --tokenizer (default with --init: its own) and --out (or "
                                         "--resume DIR)")
            typed = _given(mlm_probability=mlm_probability, max_length=max_length, start=start)  # else api's own
            result = api.pretrain(corpus, out, tokenizer=tokenizer, family=family, config=config, eval=eval_file,
                                  objective=objective, whole_word=whole_word, static_masks=static_masks, init=init,
                                  overwrite=overwrite, device=device, threads=threads, on_event=on_data, **typed,
                                  **settings)
    _finish(result, out, "pretrain", "")


@command(tokenizer_app, "train")
def tokenizer_train(
    corpus: List[Path] = typer.Argument(..., help="plain text files (a text a line), or .tsv/.csv/.jsonl tables"),
    family: str = typer.Option(..., help="bert (WordPiece; Chinese: a character a token) | roberta (byte-level "
                                         "BPE) | albert (Unigram)"),
    vocab_size: int = typer.Option(30000, min=10, help="about this many tokens: at most this many, except that "
                                                       "the special tokens and every character of the corpus are "
                                                       "always kept (a Chinese corpus gives fewer: its characters and "
                                                       "the Latin pieces seen twice; ALBERT's Unigram refuses a size "
                                                       "below the corpus's number of characters)"),
    out: Path = typer.Option(...),
    cased: Optional[bool] = typer.Option(None, "--cased/--no-cased",
                                         help="keep case, or lower-case [default: BERT and ALBERT lower-case, "
                                              "RoBERTa keeps case]"),
    min_frequency: int = typer.Option(2, min=1, help="a merge (word piece) is learnt if seen this often; every "
                                                     "character is kept"),
    text_column: Optional[str] = typer.Option(None, help="the column of .tsv/.csv/.jsonl files to read (default: "
                                                         "'text', 'sentence', or the one column that is not a label "
                                                         "or an id)"),
    held_out: Optional[Path] = typer.Option(None, help="text to measure the [UNK] rate on [default: every 20th "
                                                       "text of the corpus, then not trained on]"),
    max_unk_rate: float = typer.Option(0.002, help="warn when more of the held-out tokens are [UNK]"),
    overwrite: bool = OVERWRITE,
):
    """Train the family's tokenizer with the `tokenizers` library; writes tokenizer.json (and vocab files), and
    says how much of held-out text comes out as [UNK]."""
    from .. import api

    def report(e):
        if e.get("event") == "warning":
            warn(e["message"])
        else:
            note(e["message"])
    r = api.train_tokenizer(corpus, out, family=family, vocab_size=vocab_size,
                            lowercase=None if cased is None else not cased,
                            min_frequency=min_frequency, text_column=text_column, held_out=held_out,
                            max_unk_rate=max_unk_rate, overwrite=overwrite, on_event=report)
    title = r.tokenizer.family.title
    say(f"trained {'an' if title[0] in 'AEIOU' else 'a'} {title} tokenizer of {r.tokenizer.vocab_size:,} tokens on "
        f"{r.texts:,} texts in {r.seconds:.1f} s -> {out} ({', '.join(r.files)})")
    if r.held_out:
        h = r.held_out
        top = "; most frequent unknown: " + ", ".join(f"{t} ×{n}" for t, n in h["top"][:5]) if h["top"] else ""
        say(f"held-out [UNK] rate: {h['rate']:.2%} ({h['unknown']:,} of {h['tokens']:,} tokens in {h['texts']:,} "
            f"texts: {h['source']}){top}")
    say(f"example ({r.example['where']}): {r.example['text']!r} -> {r.example['tokens']}")


@command(name="masks")
def masks(
    file: Path = typer.Argument(..., help="plain text, a line a sequence"),
    tokenizer: Path = typer.Option(..., help="tokenizer folder (bertscope tokenizer train, or a model's)"),
    whole_word: Optional[str] = WHOLE_WORD,
    seed: int = typer.Option(42, help="the pretraining run's --seed"),
    out: Path = typer.Option(..., help="JSON lines file to write (.jsonl)"),
    max_length: int = typer.Option(128, min=3, help="tokens per sequence, [CLS] and [SEP] included (a longer line "
                                   "is cut into segments, as pretraining cuts it)"),
    mlm_probability: float = typer.Option(0.15, help="share of tokens masked"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
):
    """Write the masks pretraining draws on each line of FILE (as the sequence [CLS] line [SEP], a longer line in
    segments; blank lines skipped): for every sequence {"line", "tokens", "words" (masking unit of each token, -1
    special), "actions" (null/mask/random/keep)}."""
    from .. import api
    c = api.masks(file, out, tokenizer=tokenizer, whole_word=whole_word, seed=seed, mlm_probability=mlm_probability,
                  max_length=max_length, overwrite=overwrite, on_event=lambda e: note(e["message"]))
    share = lambda k: c[k] / max(c["chosen"], 1)  # noqa: E731
    skipped = f" ({c['skipped']:,} blank lines skipped)" if c["skipped"] else ""
    cut = (f" in {c['sequences']:,} sequences ({c['cut']:,} lines longer than --max-length {max_length} cut into "
           "segments, as pretraining cuts them)") if c["cut"] else ""
    say(f"{c['lines']:,} lines{skipped}{cut}, {c['tokens']:,} tokens: {c['chosen'] / max(c['tokens'], 1):.1%} "
        f"chosen in {c['words']:,} units{_whole_words(whole_word if whole_word != 'none' else None)} "
        f"(mask {share('mask'):.1%}, random {share('random'):.1%}, keep {share('keep'):.1%}) -> {out}")
