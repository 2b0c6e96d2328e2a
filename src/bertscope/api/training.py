"""Fine-tuning, resuming and pretraining: a task, its data and a model handed to the one training engine."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict, fields
from pathlib import Path

from ..arguments import number_arg, path_arg, paths_arg
from ..errors import CheckpointError, DataError, TokenizerError, TrainingDiverged, UsageError
from ..machine import available_memory, fmt_gib, usable_cpus
from .common import VERSION, bf16_for, load, make_task as _task, max_length_for, pick_device, set_threads, \
    truncation_notice, windows_apply

# ---- fine-tuning ---------------------------------------------------------------------------------------------------

def _data_record(paths) -> list[dict]:
    from ..data import sha256_of
    return [{"path": str(Path(p).absolute()), "sha256": sha256_of([p])} for p in paths]


def _shown(value) -> str:
    """An option's value as a command line reads it: none, on/off, a list joined by commas."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


NOT_COMPARED = ("tokenizer",)      # the run's own is in its checkpoint: compared by vocabulary, not by path
SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")   # what --config sizes


def _same_config(value, checkpoint) -> tuple[bool, str]:
    """Whether pretrain's --config (a built-in size, or a config.json) describes the model in a run's checkpoint,
    and that model's sizes in words: its family and SHAPE (and, for a config.json, the vocabulary and positions)."""
    from ..config import Config
    from ..tasks.pretraining import SIZES
    had = Config.from_json(checkpoint)
    fields = SHAPE if str(value) in SIZES else SHAPE + ("vocab_size", "max_position_embeddings")
    given = SIZES[str(value)] if str(value) in SIZES else Config.from_json(value).to_dict()
    same = all(given.get(f) == getattr(had, f) for f in fields) and given.get("model_type", had.family.name) == \
        had.family.name
    return same, f"a {had.family.title} model of " + ", ".join(f"{f} {getattr(had, f)}" for f in fields)


def _same_path(given, recorded) -> bool:
    """Whether a path given again names the recorded one: the same file or folder however spelt (../, a symlink)."""
    import os
    try:
        return os.path.samefile(given, recorded)
    except OSError:                                      # one of them is gone: compare the spellings, resolved
        return Path(given).resolve() == Path(recorded).resolve()


def check_resume_options(folder, **given) -> list[str]:
    """The options a command line gives again with --resume (MODEL, --out, the task's and the data's options), checked
    against the run in `folder`: the same value as the run's passes, another is refused (a resumed run continues as
    it was set up; a --tokenizer passes with the vocabulary of the checkpoint's own). Returns notes for the ones a
    resume does not read: a --tokenizer that cannot be read (the run reads its own from its checkpoint) and
    --overwrite (a resume continues in place)."""
    from ..train import state
    run = state.read_run(folder)
    task = run.get("task", {})
    recorded = {**task, "skip_bad_rows": run.get("skip_bad_rows", False), "start": run.get("start", "standard"),
                "new_head": run.get("new_head"),
                "static_masks": not task.get("dynamic", True) if "dynamic" in task else None}
    if isinstance(task.get("task"), str):           # an option the run's task does not read: said as such, not
        from ..tasks import check_options          # as a difference from a value the run never had
        check_options(task["task"], {**{k: v for k, v in given.items()
                                        if k in ("threshold", "label_all_pieces", "doc_stride", "max_answer_length",
                                                 "pool")},
                                     "windows": given.get("windows") or task.get("windows")})   # pool needs it
    different, unused, notes = [], [], []
    for name, value in given.items():
        if value is None or value == []:
            continue
        option = "MODEL" if name == "model" else "--" + name.replace("_", "-")
        if name in NOT_COMPARED:                  # the tokenizer: compared by vocabulary with the checkpoint's own
            from ..tokenize import load_tokenizer
            try:
                mine = load_tokenizer(value).backend.get_vocab()
                theirs = load_tokenizer(state.checkpoint_dir(folder)).backend.get_vocab()
            except TokenizerError:
                unused.append(option)               # one that cannot be read here: not read by the resume either
                continue
            if mine != theirs:
                different.append(f"{option} {_shown(value)} (its vocabulary, {len(mine):,} tokens, is not the run's, "
                                 f"{len(theirs):,})")
            continue
        if name == "overwrite":
            if value:
                notes.append("--overwrite is not read by --resume: the run continues in its folder, and what it "
                             "saved is kept")
            continue
        if name == "out":
            same, had = _same_path(value, folder), str(folder)
        elif name == "model":
            had = run.get("model")
            same = had is not None and _same_path(value, had)
        elif name == "whole_word":
            had = task.get("whole_word")
            had = None if had is False else "pieces" if had is True else had     # (older runs: a bool)
            same = (None if value == "none" else value) == had or (
                str(value).startswith("words:") and str(had).startswith("words:")
                and _same_path(str(value)[len("words:"):], str(had)[len("words:"):]))
        elif name == "init":
            had = run.get("model")
            same = had is not None and _same_path(value, had)
        elif name == "start" and run.get("start") is None and run.get("model") is not None:
            had, same = "standard", value == "standard"             # an --init run starts from its checkpoint
        elif name in ("text_column", "label_column", "pair_column") and name not in task:
            continue                               # a task that reads no such column (CoNLL, SQuAD): nothing to compare
        elif name == "config":
            same, had = _same_config(value, state.checkpoint_dir(folder))
        elif name == "family":
            from ..config import Config
            had = Config.from_json(state.checkpoint_dir(folder)).family.name
            same = value == had
        elif name == "new_head" and recorded["new_head"] is None:     # a run.json of before it was recorded
            notes.append("--new-head: this run's run.json does not say whether it started with a new head; the "
                         "resume trains the head its checkpoint has")
            continue
        else:
            had = recorded.get(name)
            same = had is not None and (value == had or isinstance(had, float) and value == float(had))
        if not same:
            different.append(f"{option} {_shown(value)} (the run has {_shown(had)})")
    if different:
        raise UsageError(f"--resume {folder} continues the run as it was set up: {'; '.join(different)}. Leave these "
                         "out, or start a new run with another --out")
    if unused:
        notes.insert(0, "--resume continues the run with the tokenizer of its checkpoint; not read: "
                     + ", ".join(unused))
    return notes


def _check_same_files(out, run: dict, given: dict):
    """A resume given its data files again: they must be the run's (another file would be silently ignored)."""
    for role, paths in given.items():
        if not paths:
            continue
        recorded = [f["path"] for f in run.get("data", {}).get(role, [])]
        if len(paths) != len(recorded) or not all(_same_path(p, r) for p, r in zip(paths, recorded)):
            option = {"train": "--train" if run.get("kind") == "finetune" else "--corpus", "eval": "--eval"}[role]
            verb = "trains on" if role == "train" else "evaluates on"
            has = f"{verb} {', '.join(recorded)}" if recorded else f"has no {option} file"
            then = ("to train on others, start a new run from its model (another --out)" if role == "train" else
                    "to score the model on another file, run bertscope evaluate on it when the run is done")
            raise UsageError(f"{option} {' '.join(map(str, paths))}: the run in {out} {has}, and --resume "
                             f"continues it on the same files; {then}")


def _check_data_unchanged(run: dict):
    from ..data import sha256_of
    for role, files in run.get("data", {}).items():
        for f in files:
            p = Path(f["path"])
            if not p.exists():
                raise DataError(f"{p}: the {role} file of this run is gone; a resumed run reads the same files "
                                "(restore it, or start a new run with another --out)")
            if sha256_of([p]) != f["sha256"]:
                raise DataError(f"{p}: the {role} file changed since the run started (its content hash differs); a "
                                "resumed run must see the same data: restore the file, or start a new run with "
                                "another --out")


TASK_OPTIONS = ("text_column", "label_column", "pair_column", "windows", "pool", "label_all_pieces", "doc_stride",
                "max_answer_length", "no_answer", "threshold")


def check_settings(**settings) -> None:
    """Raise a UsageError for a training option out of its range (train.Settings' checks), before any work."""
    from ..train import settings_from
    settings_from(settings)


def finetune(model, train, out, *, eval=None, task: str | None = None, tokenizer=None, max_length: int | None = None,
             new_head: bool = False, overwrite: bool = False, skip_bad_rows: bool = False, device: str = "auto",
             threads: int | None = None, on_event=None, stop_after: int | None = None, **options):
    """Fine-tune `model` (a checkpoint folder, or a Model with `tokenizer`) on the labelled file `train`, writing the
    best model, metrics and curves to the folder `out`. `task` is one of tasks.TASKS (default: guessed from the
    file, said in a notice); task options (TASK_OPTIONS: text_column, label_column, windows, doc_stride, ...) and
    train.Settings fields (epochs, lr, batch_size, ...) go in as keyword arguments. Returns a train.Result; a run
    stopped by Ctrl-C or stop_after has finished=False and resumes with `resume(out)`."""
    from ..io import check_output_folder
    from ..model import Model
    from ..data import check_columns_apply
    from ..train import Settings, check_stop_after, distributed, settings_from, state
    from ..tasks import check_options, check_skip_bad_rows, guess
    set_threads(threads)
    check_stop_after(stop_after)
    from ..arguments import check_flag
    for name, value in (("new_head", new_head), ("overwrite", overwrite), ("skip_bad_rows", skip_bad_rows)):
        check_flag(name, value)
    path_arg("train", train), path_arg("out", out), path_arg("eval", eval, optional=True)
    if not hasattr(tokenizer, "backend"):                 # (a Tokenizer object is taken as it is)
        path_arg("tokenizer", tokenizer, optional=True)
    if max_length is not None:
        max_length = number_arg("max_length", max_length, whole=True)
    task_options = {k: options.pop(k) for k in list(options) if k in TASK_OPTIONS}
    if options.get("eval_every") is not None and eval is None:
        raise UsageError(f"--eval-every {options['eval_every']}: evaluations read --eval FILE, and none was given")
    s = settings_from(options, also=(*TASK_OPTIONS, "eval", "task", "tokenizer", "max_length", "new_head", "overwrite",
                                     "skip_bad_rows", "device", "threads", "on_event", "stop_after"))
    if distributed.world_from_env() > 1 and "-" in (str(train), str(eval)):
        raise UsageError("'-' (standard input) is not read under torchrun, where every process reads the data: give "
                         "the training and --eval data as files")
    where, rank, world = _training_device(device)
    on_event = on_event if rank == 0 else None           # notices once, from the first process
    source = None if isinstance(model, Model) else Path(str(model))

    def check_out():
        _not_into_source(out, source, "MODEL")
        check_output_folder(out, overwrite, sources=[source] if source else [], tokenizer=_folder(tokenizer),
                            inputs=[train] + ([eval] if eval is not None else []))
    distributed.on_first(check_out)
    if task is None:
        task, why = guess(train, task_options.get("label_column") or "label", task_options.get("text_column"),
                          task_options.get("pair_column"))
        if on_event:
            on_event({"event": "notice", "message": f"--task {task} ({why}; pass --task to choose another)"})
    check_options(task, task_options)
    check_skip_bad_rows(task, skip_bad_rows)
    t = _task(task, **task_options)
    if isinstance(model, Model):
        if tokenizer is None:
            raise TokenizerError("fine-tuning a Model object needs its tokenizer: finetune(model, ..., tokenizer=tok)")
        from ..tokenize import Tokenizer, load_tokenizer
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        saved_head, net = model.head, model
    else:
        try:
            tok = load(source, head="base", tokenizer=tokenizer, need_tokenizer=True).tokenizer \
                if tokenizer is None or not hasattr(tokenizer, "backend") else tokenizer
        except TokenizerError as e:
            if tokenizer is not None or "has no tokenizer" not in str(e):
                raise
            raise TokenizerError(f"{e}; or name one with --tokenizer FOLDER") from None
        if tokenizer is not None and not hasattr(tokenizer, "backend"):   # another tokenizer than the model's own
            _same_vocabulary(tok, tokenizer, source, None, said=f"the model {source}",
                             instead="leave --tokenizer out to fine-tune with it")
        from ..checkpoint import saved_head as read_saved_head
        saved_head, net = read_saved_head(source), None
    if eval is not None and on_event and str(eval) != "-" and Path(eval).resolve() == Path(train).resolve():
        on_event({"event": "notice", "message": f"--eval {eval} is the training file: its scores say how well the "
                                                "model fits what it learnt, not how it does on new text, and the "
                                                "best epoch is chosen by them"})
    train_ex = t.read(train, skip_bad_rows)
    t.settle(train_ex)                              # what the training data decides (QA: "no answer" for SQuAD v2.0)
    eval_ex = _read_eval(t, train, eval, skip_bad_rows, on_event) if eval is not None else None
    columns = {k: task_options.get(k) for k in ("text_column", "label_column", "pair_column")}
    if columns["label_column"] == "label":             # the default: it names no column of a file without any
        columns["label_column"] = None
    check_columns_apply([train] + ([eval] if eval is not None else []), **columns)
    for ex in (train_ex, eval_ex):
        if ex is not None and getattr(ex, "skipped", None) and on_event:
            on_event({"event": "notice", "message": f"skipped {len(ex.skipped)} bad rows of {ex.path} (first: line "
                                                    f"{ex.skipped[0][0]}: {ex.skipped[0][1]})"})
    import torch
    torch.manual_seed(s.seed)
    if net is None:
        from ..checkpoint import from_pretrained
        from ..config import Config
        keep = t.fit_head(Config.from_json(source), saved_head, train_ex, new_head)
        if not keep and not new_head and saved_head in ("classification", "token-classification",
                                                        "question-answering") and on_event:
            on_event({"event": "notice", "message": f"{source} has a fine-tuned {saved_head} head, which {t.name} "
                                                    f"does not use: a new head for {t.name} starts from scratch"})
        net = from_pretrained(source, head=t.head) if keep else \
            from_pretrained(source, head=t.head, num_labels=len(t.labels), reinit_head=True)
    else:                                      # a Model given: its own head must be the one this task trains
        keep = t.fit_head(net.config, saved_head, train_ex, new_head)
        width = len(t.labels) if t.head != "question-answering" else net.config.num_labels
        if not keep or net.config.num_labels != width:
            raise UsageError(
                f"the Model given has head {saved_head!r}"
                + (f" with {net.config.num_labels} outputs" if saved_head == t.head else "")
                + f"; {t.name} on {train} trains head {t.head!r} with {width} outputs"
                + (" (new_head=True asked for a fresh one)" if new_head else "") + ". Pass the checkpoint folder "
                "instead (finetune then makes the head), or a Model from bertscope.from_pretrained(folder, "
                f"head={t.head!r}, num_labels={width}, reinit_head=True)")
    net.config = t.configure(net.config)
    tok.check_fits(net.config)
    # (a task's own default, QA's 384, is capped at what the model allows; a length asked for is checked)
    t.max_length = max_length_for(net.config, tok, max_length if max_length is not None else
                                  min(t.max_length, net.config.max_tokens),
                                  pairs=getattr(t, "pair_column", None) is not None)
    data = t.encode(train_ex, tok)
    eval_data = t.encode(eval_ex, tok) if eval_ex is not None else None
    windows_help = windows_apply(t)
    truncation_notice(data, str(train), t.max_length, on_event, windows_help)
    if eval_data is not None:
        truncation_notice(eval_data, str(eval), t.max_length, on_event, windows_help)
    for file, d in ((train, data), (eval, eval_data)):
        if d is not None and d.extra.get("pieceless") and on_event:      # tags the model is neither taught nor shown
            on_event({"event": "notice", "message": t.pieceless_notice(d.extra["pieceless"], str(file),
                                                                       training=d is data)})
    why = t.undefined_scores(eval_data.extra["gold"]) if eval_data is not None and hasattr(t, "undefined_scores") \
        else None
    if why and on_event:                                  # every evaluation would score nan: none is the best
        on_event({"event": "notice", "message": f"{eval}: {why}, so pearson and spearman are nan (not a number) "
                                                "at every evaluation and none can be chosen as the best: the last "
                                                "model is kept"})
    from ..infer import check_all
    check_all(net.config, data)
    if eval_data is not None:
        check_all(net.config, eval_data)
    # under torchrun the first process's choice (each one's own trial, taken at the same moment, could differ)
    s = Settings(**{**asdict(s), "bf16": distributed.from_first(bf16_for(where, s.bf16, on_event))})
    from ..train import fills_a_batch, freezable
    freezable(net, s.freeze)                             # said before --out is made, as everything above
    batches = fills_a_batch(t, data, s, world)
    if on_event and s.batch_size > len(data):          # what was asked for is not what runs: said
        on_event({"event": "notice", "message": f"--batch-size {s.batch_size}: the training data has {len(data)} "
                                                "sequences, so every batch holds all of them"})
    if on_event and s.grad_accum > len(batches):
        on_event({"event": "notice", "message": f"--grad-accum {s.grad_accum}: an epoch has {len(batches)} batches, "
                                                f"so a step adds up {len(batches)}, not {s.grad_accum}"})
    run = {"kind": "finetune", "bertscope": VERSION, "model": str(source.resolve()) if source else None,
           "task": t.state(), "settings": asdict(s), "skip_bad_rows": skip_bad_rows, "new_head": new_head,
           "threads": torch.get_num_threads(), "processes": world,
           "global_batch": s.batch_size * world * s.grad_accum, **_products(where),
           "data": {"train": _data_record([train]), **({"eval": _data_record([eval])} if eval else {})}}
    with _run_folder(out, "fine-tuning run", rank == 0, overwrite=overwrite):
        if rank == 0:
            state.write_run(Path(out), run)
        net.to(where)
        from ..train import train as engine
        return engine(net, t, data, eval_data, out, s, tokenizer=tok, run=run, on_event=on_event,
                      stop_after=stop_after)


def resume(out, *, device: str = "auto", threads: int | None = None, on_event=None, stop_after: int | None = None,
           kind: str | None = None, data: dict | None = None, **changes):
    """Continue the unfinished run in `out` exactly where it stopped (kind: "finetune" or "pretrain", the kind of
    run the caller continues; another is refused). `changes` may only touch the settings that do
    not change the arithmetic (train.RESUME_MAY_CHANGE); the data files must be unchanged. `data` ({"train":
    [paths], "eval": [paths]}, as a command line gave them again) must name the run's own files."""
    from ..checkpoint import from_pretrained
    from ..io import FolderLock
    from ..tokenize import load_tokenizer
    from ..train import RESUME_MAY_CHANGE, Settings, distributed, state
    if kind not in (None, "finetune", "pretrain"):
        raise UsageError(f"kind={kind!r}: expected 'finetune', 'pretrain' or None")
    unknown = sorted(set(changes) - {f.name for f in fields(Settings)})
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; a resume may change {', '.join(RESUME_MAY_CHANGE)} "
                         "(and threads, device); the rest are the run's own")
    out = Path(path_arg("out", out))
    FolderLock(out, "training run").check_free()          # a run still going: say so, not what its files look like
    saved = state.read_state(out)
    run = saved["run"]
    if kind is not None and run.get("kind") != kind:
        raise UsageError(f"--resume {out}: this is a {run.get('kind')} run; continue it with bertscope "
                         f"{run.get('kind')} --resume {out}")
    differs = state.restore_run_record(out, run)
    recorded = run.get("threads")                          # the run's own, unless asked otherwise (at most the CPUs here)
    set_threads(threads if threads is not None else min(recorded, usable_cpus()) if isinstance(recorded, int) else None)
    from ..kernels import pin_products
    pin_products(run.get("products"))                      # the run's CPU product, on the machine that chose it
    where, rank, world = _training_device(device, run["kind"])   # (and under torchrun, this process's place)
    then = run.get("processes") or (len(saved["rng"]) if isinstance(saved["rng"], list) else 1)

    def same_processes():
        if world != then:
            how = "without torchrun (or with --nproc_per_node 1)" if then == 1 else \
                f"under torchrun with {then} processes (--nproc_per_node {then} in all)"
            raise UsageError(f"--resume {out}: the run ran in {then} process{'es' if then > 1 else ''} and this is "
                             f"{world}; the processes share each step's batches, so another number of them would "
                             f"train on other batches than the run did. Resume it {how}")
    distributed.on_first(same_processes)                  # said once, by the first process
    on_event = on_event if rank == 0 else None           # notices too
    if differs and on_event:
        on_event({"event": "notice", "message": f"{out / 'run.json'} differed from the run's record in its "
                                                f"checkpoint ({differs}): the run continues as its checkpoint says, "
                                                "and run.json is written again from it"})
    import torch
    if on_event and isinstance(recorded, int) and torch.get_num_threads() != recorded:
        on_event({"event": "notice", "message": f"{torch.get_num_threads()} CPU threads where the run had {recorded}: "
                                                "sums split over threads round differently, so the weights end "
                                                "close to, not bit for bit equal to, the uninterrupted run's"})
    s = Settings(**run["settings"])
    if changes.get("bf16") is True and not s.bf16:       # asked again where the run found bf16 does not pay
        changes["bf16"] = distributed.from_first(bf16_for(where, True))
    if changes.get("freeze") is not None and run.get("start") not in (None, "standard"):
        from ..starts import FIXED                         # a start's own fixed parameters are the run's, not typed
        changes["freeze"] = tuple(dict.fromkeys((*changes["freeze"], *FIXED)))
    different = {k: v for k, v in changes.items() if v is not None and getattr(s, k, None) != v}
    refused = sorted(k for k in different if k not in RESUME_MAY_CHANGE)
    if refused:
        flag = (lambda k: "steps" if k == "max_steps" else k) if run["kind"] == "pretrain" else (lambda k: k)
        opts = ", ".join(f"--{flag(k).replace('_', '-')} {_shown(different[k])} (the run has {_shown(getattr(s, k))})"
                         for k in refused)
        def said(names, out):
            return (f"a resumed run keeps its settings, so that it ends as the uninterrupted run would: {opts}. A "
                    f"resume may change only {', '.join(names)}; start a new run with another {out} to change the "
                    "others")
        raise UsageError(said([*RESUME_MAY_CHANGE, "threads", "device"], "out folder"),   # the command line: two
                         cli=said(["--save-every", "--keep-checkpoint", "--threads", "--device"], "--out"))
    s = Settings(**{**asdict(s), **{k: v for k, v in different.items()}})
    _check_same_files(out, run, data or {})
    _check_data_unchanged(run)
    state.remove_stale_temporaries(out)                   # half-written files of a process killed mid-write
    ckpt = state.checkpoint_dir(out)
    tok = load_tokenizer(ckpt)
    from ..tasks import restore
    t = restore(run["task"], tok)
    model = from_pretrained(ckpt, head=t.head).train()
    if run["kind"] == "finetune":
        t.use_model_labels(model.config)
        data = t.encode(t.read(run["data"]["train"][0]["path"], run.get("skip_bad_rows", False)), tok)
        eval_data = t.encode(t.read(run["data"]["eval"][0]["path"], run.get("skip_bad_rows", False)), tok) \
            if "eval" in run["data"] else None                    # read as the run read it
    else:
        data = t.encode(t.read([f["path"] for f in run["data"]["train"]], on_event), s.seed)
        eval_data = t.encode(t.read([f["path"] for f in run["data"]["eval"]], on_event, held_out=True),
                             s.seed + 1) \
            if "eval" in run["data"] else None
    with (FolderLock(out, "training run") if rank == 0 else _NoLock()):
        model.to(where)
        from ..train import train as engine
        try:
            return engine(model, t, data, eval_data, out, s, tokenizer=tok, run=run, resume=saved,
                          on_event=on_event, stop_after=stop_after)
        except TrainingDiverged as e:
            _next_after_divergence(e, "a resumed run keeps its --lr: start the run again with --overwrite, or "
                                      "choose another --out")
            raise


# ---- pretraining ---------------------------------------------------------------------------------------------------

def pretrain(corpus, out, *, tokenizer=None, family: str | None = None, config: str | None = None, eval=None,
             objective: str | None = None, whole_word: str | None = None, mlm_probability: float = 0.15,
             static_masks: bool | None = None, max_length: int = 128, init=None, start: str = "standard",
             overwrite: bool = False, device: str = "auto", threads: int | None = None, on_event=None,
             stop_after: int | None = None, **settings):
    """Pretrain on plain-text files `corpus` (masked LM, + NSP for BERT, + SOP for ALBERT). Under torchrun every
    process runs this; rank 0 writes. `settings` are train.Settings fields (max_steps is the step budget).
    whole_word: None (token by token), "pieces" (the tokenizer's words), "jieba" or "words:FILE" (masking.py).
    start: how a model from scratch starts, "standard" (BERT's) or "local" (starts.py; "local" keeps its position
    table fixed)."""
    import torch

    from ..checkpoint import from_pretrained
    from ..config import Config
    from ..families import FAMILIES, family as family_record
    from ..io import check_output_folder
    from ..model import Model
    from ..tasks.pretraining import SIZES, Pretraining, new_config
    from ..tokenize import load_tokenizer
    from ..train import Settings, check_stop_after, distributed, fills_a_batch, freezable, settings_from, state
    from ..starts import apply_start, check_name
    set_threads(threads)
    check_stop_after(stop_after)
    check_name(start)
    path_arg("out", out), path_arg("init", init, optional=True), path_arg("eval", eval, optional=True)
    corpus = paths_arg("corpus", corpus)
    seen: dict = {}
    for p in corpus:                                  # one file twice would be trained on twice, without a word
        key = Path(p).resolve() if str(p) != "-" else p
        if key in seen:
            raise UsageError(f"--corpus {p}: given twice (also as {seen[key]}); each file is read once, so name it once")
        seen[key] = p
    max_length = number_arg("max_length", max_length, whole=True)
    mlm_probability = number_arg("mlm_probability", mlm_probability)
    if init is not None and start != "standard":
        raise UsageError(f"--start {start} sets the first weights of a model from scratch; --init {init} continues "
                         "a checkpoint's own weights: give one of the two")
    if settings.get("eval_every") is not None and eval is None:
        raise UsageError(f"--eval-every {settings['eval_every']}: evaluations read --eval FILE, and none was given")
    settings.setdefault("epochs", None)
    settings.setdefault("max_steps", 1000)
    settings.setdefault("lr", 5e-4)
    settings.setdefault("eval_every", 200)
    s = settings_from(settings, also=("tokenizer", "family", "config", "eval", "objective", "whole_word",
                                      "mlm_probability", "static_masks", "max_length", "init", "start", "overwrite",
                                      "device", "threads", "on_event", "stop_after"))
    where, rank, world = _training_device(device, "pretrain")
    if not corpus:
        raise UsageError("--corpus: give at least one plain-text file")
    if any(str(f) == "-" for f in [*corpus, *([eval] if eval is not None else [])]):
        raise UsageError("'-' (standard input) is not read here: give the corpus and --eval as files")
    if init is not None and config is not None:
        raise UsageError(f"--config {config}: --init {init} brings its own config (its shapes are the checkpoint's); "
                         "give one of the two")
    config = "tiny" if config is None else config
    if family is None and init is None and not str(config).endswith(".json"):
        from ..tokenize import recorded_family           # the tokenizer's own (bertscope tokenizer train records it)
        family = recorded_family(tokenizer)
        if family is None:
            raise UsageError(f"--family: say which model family to pretrain ({', '.join(FAMILIES)}); the tokenizer "
                             "folder names none")
    if family is not None and family not in FAMILIES:
        raise UsageError(f"--family {family!r}: use {', '.join(FAMILIES)}")
    on_event = on_event if rank == 0 else None           # notices once, from the first process

    def check_out():
        words = (whole_word or "")[len("words:"):] if (whole_word or "").startswith("words:") else None
        _not_into_source(out, init, "--init")
        given = str(config).endswith(".json") if config is not None else False    # a config.json file read
        check_output_folder(out, overwrite, sources=[init] if init else [], tokenizer=_folder(tokenizer),
                            inputs=[*corpus, *([eval] if eval is not None else []), *([words] if words else []),
                                    *([config] if given else [])])
    distributed.on_first(check_out)
    if init is not None and not Path(str(init)).is_dir():
        raise CheckpointError(f"--init {init}: " + ("is a file; expected a checkpoint folder" if Path(str(init)).exists()
                                                    else "no such folder"))
    if init is not None and not (Path(init) / "config.json").is_file():     # said before its tokenizer is asked for
        from ..checkpoint import unfinished_run
        raise CheckpointError("--init " + (unfinished_run(Path(init)) or f"{init}: not a checkpoint folder (no "
                                           "config.json); give a folder with config.json and its weights"))
    if init is not None and family is not None and Path(init).is_dir():
        started = Config.from_json(init).family                     # the checkpoint decides; a different one is a slip
        if started is not family_record(family):
            raise UsageError(f"--family {family}, but --init {init} is a {started.title} checkpoint; leave --family "
                             "out (pretraining continues the checkpoint's own family) or --init a "
                             f"{family_record(family).title} one")
    if tokenizer is None and init is None:
        raise UsageError("--tokenizer: give the tokenizer folder to pretrain with (bertscope tokenizer train)")
    try:
        tok = load_tokenizer(tokenizer if tokenizer is not None else init, family=family)
    except TokenizerError as e:
        if tokenizer is not None:
            raise
        raise TokenizerError(f"{e}; --init {init} holds no tokenizer of its own, so pass --tokenizer FOLDER") from None
    if init is not None:
        model = from_pretrained(init, head="pretraining" if (objective or tok.family.default_objective) != "mlm"
                                else "mlm", reinit_head=True)
        if tokenizer is not None:
            _same_vocabulary(tok, tokenizer, init, model.config)
    else:
        if str(config) in SIZES:
            fam = family_record(family)
            c = new_config(fam, str(config), tok, max_length)
        elif Path(str(config)).suffix == ".json" or Path(str(config)).is_dir():
            c = Config.from_json(config)
            if family is not None and c.family is not family_record(family):
                a = "an" if c.family.title[0] in "AEIOU" else "a"
                raise UsageError(f"--family {family}, but --config {config} is {a} {c.family.title} config "
                                 f"(model_type {c.family.name}); leave --family out, or give a "
                                 f"{family_record(family).title} config")
        else:
            raise UsageError(f"--config {config}: use {', '.join(SIZES)} or a config.json file")
        _check_size(c)
        if c.vocab_size < tok.vocab_size:
            raise UsageError(f"the config's vocab_size {c.vocab_size} is smaller than the tokenizer's "
                             f"{tok.vocab_size}: ids {c.vocab_size}.. would have no embedding")
        model = None
    fam = tok.family if init is None and family is None else family_record(family or tok.family)
    if family is not None and tok.family is not fam:
        tok = load_tokenizer(tokenizer, family=fam)
    pairs = (objective or fam.default_objective) != "mlm"
    need = (2 + 1) if not pairs else (3 + 2 + (0 if fam.segments else 1))  # specials + one token (each half)
    if max_length < need:
        raise UsageError(f"--max-length {max_length}: a {objective or fam.default_objective} sequence needs at least "
                         f"{need} tokens (its special tokens and a token{' in each half' if pairs else ''})")
    t = Pretraining(tok, objective or fam.default_objective, whole_word, mlm_probability,
                    dynamic=fam.dynamic_masking if static_masks is None else not static_masks,
                    max_length=max_length)
    torch.manual_seed(s.seed)
    if model is None:
        model = Model(c, head=t.head)
        fixed = apply_start(model, start)
        if fixed:
            s = Settings(**{**asdict(s), "freeze": tuple(dict.fromkeys(s.freeze + fixed))})
    freezable(model, s.freeze)                                    # a wrong --freeze is said before the corpus is read
    tok.check_fits(model.config)
    from ..export import check_length
    check_length(model.config, max_length, "--max-length")
    if t.objective != "mlm" and model.config.family.segments and model.config.type_vocab_size < 2:
        raise UsageError(f"--objective {t.objective} puts its second segment in token type 1, but the model's config "
                         f"has type_vocab_size {model.config.type_vocab_size}; use --objective mlm, or a config with "
                         "type_vocab_size 2")
    report = getattr(model, "load_report", None)
    fresh_head = [n for n in (report.reinitialised if report else []) if "predictions" in n or "lm_head" in n]
    if on_event and init is not None and fresh_head:
        on_event({"event": "notice", "message": (
            f"{init}: the checkpoint has no trained MLM head ({len(fresh_head)} tensors start from random weights, "
            f"e.g. {fresh_head[0]}), so the encoder first learns through a head that knows nothing; to train the "
            "head alone first, run a few hundred steps with --freeze embeddings --freeze encoder and continue with "
            "--init on that folder (all-MiniLM-L6-v2 on SST-2: 18.9% held-out MLM accuracy after such a warm-up "
            "and 135 steps, 7.3% after 87 steps without; BENCHMARKS.md)")})
    if on_event:
        on_event({"event": "notice", "message": f"reading {', '.join(map(str, corpus))}"})
    eval_docs = t.read([eval], on_event, held_out=True) if eval is not None else None   # said before the corpus
    if eval is not None and on_event and any(str(eval) != "-" and Path(eval).resolve() == Path(p).resolve()
                                             for p in corpus if str(p) != "-"):
        on_event({"event": "notice", "message": f"--eval {eval} is also a --corpus file: its held-out loss is "
                                                "measured on text the model trains on"})
    docs = t.read(corpus, on_event)
    data = t.encode(docs, s.seed)
    used, total = t.coverage
    if on_event and t.objective != "mlm" and total and used < 0.9 * total:
        on_event({"event": "notice", "message": (
            f"{t.objective}: the training pairs hold {used:,} of the corpus's {total:,} tokens ({used / total:.0%}); "
            f"pairs longer than --max-length {max_length} are trimmed, as in BERT's recipe, so text in long lines "
            "is left out. --objective mlm uses every token, and a larger --max-length keeps more")})
    eval_data = t.encode(eval_docs, s.seed + 1) if eval is not None else None
    from ..infer import check_all
    check_all(model.config, data)
    if on_event:
        on_event({"event": "data", "documents": len(docs), "sequences": len(data), "max_length": t.max_length,
                  "objective": t.objective,
                  "whole_word": t.whole_word, "parameters": model.num_parameters,
                  "global_batch": s.batch_size * world * s.grad_accum, "batch_size": s.batch_size,
                  "processes": world, "grad_accum": s.grad_accum, "start": None if init else start,
                  "fixed": list(s.freeze)})
    s = Settings(**{**asdict(s), "bf16": distributed.from_first(bf16_for(where, s.bf16, on_event))})
    run = {"kind": "pretrain", "bertscope": VERSION, "model": str(Path(init).resolve()) if init else None,
           "start": None if init else start, "task": t.state(), "settings": asdict(s),
           "threads": torch.get_num_threads(), **_products(where),
           "data": {"train": _data_record(corpus), **({"eval": _data_record([eval])} if eval else {}),
                    **({"words": _data_record([t.whole_word[len("words:"):]])}
                       if (t.whole_word or "").startswith("words:") else {})}}
    fills_a_batch(t, data, s, world)                     # said before --out is made
    with _run_folder(out, "pretraining run", rank == 0, overwrite=overwrite):
        if rank == 0:
            state.write_run(Path(out), run)
        model.to(where).train()
        from ..train import train as engine
        return engine(model, t, data, eval_data, out, s, tokenizer=tok, run=run, on_event=on_event,
                      stop_after=stop_after)


def _training_device(device, kind: str = "finetune"):
    """The device a training run trains on, and this process's (rank, world size). Under torchrun (WORLD_SIZE
    above 1) every process joins the job first and trains on its own GPU (auto) or the CPU; pretraining does so in
    one process too, fine-tuning takes any device there."""
    import torch

    from ..train import distributed
    if kind == "finetune" and distributed.world_from_env() <= 1:
        return pick_device(device), 0, 1
    if device not in ("auto", "cpu"):
        who = "pretrain takes" if kind == "pretrain" else "under torchrun, training takes"
        raise UsageError(f"--device {device}: {who} cpu or auto (auto uses this process's GPU where there is one; "
                         "pick GPUs with CUDA_VISIBLE_DEVICES)")
    use_cuda = device == "auto" and torch.cuda.is_available()
    distributed.init_from_env(use_cuda)
    _, rank, world = distributed.current()
    return torch.device("cuda" if use_cuda else "cpu"), rank, world


@contextlib.contextmanager
def _run_folder(out, what: str, rank0: bool = True, overwrite: bool = False):
    """Make the run's folder and hold its lock for the block. A run that ends by an exception before anything of it
    was saved (Ctrl-C before the first checkpoint, a diverged first steps) takes the folder it made along, so that
    the same command can simply run again. In a folder that existed before (--overwrite) the earlier model and run
    are removed first (its weights, config.json, int8 calibration, checkpoint/ and metrics): a run stopped before it
    saves must not leave the old model beside its new run.json, nor an old checkpoint for --resume to continue."""
    from ..io import FolderLock, create_output_folder
    made = create_output_folder(out) if rank0 else False      # (a folder another process made is never removed)
    locked = False
    try:
        with FolderLock(out, what) if rank0 else _NoLock():
            locked = True
            if rank0 and not made and overwrite:     # (without it, check_output_folder found nothing to clear)
                _clear_earlier_run(Path(out))
            yield
    except BaseException as e:
        saved = any((Path(out) / name).exists() for name in ("checkpoint", "model.safetensors"))
        removed = rank0 and made and locked and not saved
        if removed:
            shutil.rmtree(out, ignore_errors=True)
        _next_after_divergence(e, f"the same command runs again: {out}, made for this run, is removed" if removed
                               else f"{out} holds this run's run.json and what it saved: add --overwrite, or choose "
                               "another --out")
        raise


def _read_eval(t, train, eval, skip_bad_rows: bool, on_event):
    """The --eval file, its texts from the column training read them from where it has that one too (a file with
    both 'text' and 'sentence' would otherwise be read from 'text' though training read 'sentence')."""
    from ..data import is_table, named_text_column, table_columns
    used = named_text_column(train) if getattr(t, "text_column", "given") is None and is_table(train) and \
        is_table(eval) else None
    if used is None or named_text_column(eval) == used:
        return t.read(eval, skip_bad_rows)
    if used not in table_columns(eval):
        return t.read(eval, skip_bad_rows)
    t.text_column = used                                  # for this file only: run.json keeps "none given"
    try:
        ex = t.read(eval, skip_bad_rows)
    finally:
        t.text_column = None
    if on_event:
        on_event({"event": "notice", "message": f"--eval {eval}: its texts are read from its {used!r} column, as "
                                                f"the training file's (it has a {named_text_column(eval)!r} column "
                                                "too; --text-column names one for both)"})
    return ex


def _not_into_source(out, source, option: str) -> None:
    """A run never writes into the folder of the model it starts from, --overwrite or not: the old model would be
    removed before the new one is saved, so a run stopped in between would leave neither."""
    from ..errors import OutputError
    if source is not None and Path(str(source)).is_dir() and _under_checkpoints(out, source):
        raise OutputError(f"--out {out} holds the model this run starts from ({option} {source}); the run would "
                          "write over or clear it before the new model is saved. Copy it elsewhere first, or write "
                          "the run to another folder")
    if source is not None and Path(str(source)).is_dir() and Path(out).resolve() == Path(str(source)).resolve():
        raise OutputError(f"--out {out} is the folder of the model this run starts from ({option}); training there "
                          "would remove that model before the new one is saved, so a stopped run would leave neither. "
                          "Write the run to another folder (and move it afterwards if you like)")


def _under_checkpoints(out, path) -> bool:
    """Whether `path` lies in OUT/checkpoint/ (or its temporary or old forms), which a run replaces."""
    from ..io import CHECKPOINT, inside
    here = Path(str(path)).resolve()
    return any(inside(here, Path(out).resolve() / name)
               for name in (CHECKPOINT, f".{CHECKPOINT}.tmp", f".{CHECKPOINT}.old"))


def _same_vocabulary(tok, tokenizer, init, config, said: str | None = None, instead: str | None = None) -> None:
    """--init's (or finetune's MODEL's) embeddings are rows of its own tokenizer's ids: another --tokenizer would
    read every text through the wrong rows (silently: a smaller vocabulary's ids all have rows). Compared with the
    checkpoint's own tokenizer where it has one, else by size (config None: not at all)."""
    said = said or f"--init {init}"
    instead = instead or "leave --tokenizer out to pretrain with it, or start from scratch (--config) with this tokenizer"
    from ..tokenize import load_tokenizer
    try:
        own = load_tokenizer(init)
    except TokenizerError:
        own = None
    if own is not None:
        mine, theirs = tok.backend.get_vocab(), own.backend.get_vocab()
        if mine != theirs:
            differ = next((t for t, i in sorted(mine.items(), key=lambda x: x[1]) if theirs.get(t) != i), None)
            example = f"; e.g. {differ!r} is id {mine[differ]} in it" + (
                f" and {theirs[differ]} in the checkpoint's" if differ in theirs else ", and not in the checkpoint's") \
                if differ is not None else ""
            raise UsageError(f"--tokenizer {tokenizer}: its vocabulary ({len(mine):,} tokens) is not the one of "
                             f"{said} ({len(theirs):,}){example}. The checkpoint's embeddings are rows of its "
                             f"own tokenizer's ids: {instead}")
    elif config is not None and tok.vocab_size != config.vocab_size:
        raise UsageError(f"--tokenizer {tokenizer}: {tok.vocab_size:,} tokens, but --init {init} has "
                         f"{config.vocab_size:,} embedding rows; its embeddings are rows of the tokenizer it was "
                         "trained with: give that one, or start from scratch (--config) with this tokenizer")


def _clear_earlier_run(out: Path) -> None:
    from ..io import CHECKPOINT, MODEL_FILES, RUN_FILES, is_run_checkpoint
    from ..quantize import FILE as INT8_FILE
    shards = [p.name for p in out.glob("model-*-of-*.safetensors")] + [p.name for p in
                                                                       out.glob("pytorch_model-*-of-*.bin")]
    # (the tokenizer stays: it may be the --tokenizer this run reads; the run's own replaces it with the model)
    for name in (*MODEL_FILES, *RUN_FILES, INT8_FILE, "curves.png", *shards):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            if name == CHECKPOINT and not is_run_checkpoint(p):           # another tool's folder of that name
                continue
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _next_after_divergence(e: BaseException, said: str) -> None:
    """A diverged run's message ends with what the next command is (the engine does not know what its folder is)."""
    if isinstance(e, TrainingDiverged) and len(e.args) == 1:
        e.args = (f"{e.args[0]} ({said})",)


def _folder(tokenizer):
    """The tokenizer folder a command reads, when it was given as one (not as a Tokenizer object)."""
    return tokenizer if isinstance(tokenizer, (str, Path)) else None


def _products(where) -> dict:
    """A CPU run records which product it runs (kernels.products_record), so that its resume runs the same. Under
    torchrun every process runs rank 0's choice (each process's own trial, taken at the same moment, could differ)."""
    if where.type != "cpu":
        return {}
    from ..kernels import pin_products, products_record
    from ..train import distributed
    record = products_record()
    if distributed.current()[2] > 1:
        record = distributed.from_first(record)
        pin_products(record)
    return {"products": record}


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _check_size(c) -> None:
    """Refuse a model that cannot fit the memory this process has before anything is allocated."""
    params = c.approx_parameters
    need = params * 4 * 4                                   # weights, gradients and AdamW's two moments, fp32
    room, where = available_memory()
    if need > room:
        raise UsageError(f"this config has about {params / 1e9:.1f}B parameters, which need about {fmt_gib(need)} "
                         f"to train (weights, gradients and AdamW state in fp32), but this machine has "
                         f"{fmt_gib(room)} {where}; choose a smaller --config")


