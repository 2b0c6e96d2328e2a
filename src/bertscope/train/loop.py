"""The one training engine: every task (fine-tuning of any kind, pretraining) runs through `train`.

The engine owns the device, the optimizer and schedule, gradient accumulation, bf16 autocast, clipping, when to
evaluate, which model to keep, checkpoints and exact resume, Ctrl-C, torchrun processes, metrics.jsonl and the
curves, and progress events. It knows nothing about what a batch means: the task (tasks/base.py) makes the batches
and computes the loss terms, as sums with the number of items each runs over, so that a step of several
micro-batches on several processes averages exactly as one big batch would.

A step takes `grad_accum × processes` micro-batches of `batch_size` sequences; process r takes micro-batches
r, r + processes, ... of the step. Steps never straddle an epoch (the last step of an epoch may be shorter).
Ctrl-C (SIGINT) asks the loop to stop: it finishes the step (or evaluation) under way, writes a checkpoint and
returns; a second Ctrl-C stops at once, leaving the previous checkpoint. Either way `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..arguments import python_number, whole_number
from ..errors import TrainingDiverged, UsageError
from ..kernels import trim_heap
from . import distributed, optim, state as disk

# Settings a resumed run may change: they do not touch the arithmetic of training.
RESUME_MAY_CHANGE = ("log_every", "save_every", "keep_checkpoint", "eval_batch_size")


def check_stop_after(stop_after) -> None:
    """stop_after (a test's or a notebook's way to stop a run early) is a number of steps, at least 1."""
    if stop_after is not None and (whole_number(stop_after) is None or stop_after < 1):
        raise UsageError(f"stop_after {stop_after!r}: expected a number of steps, at least 1")


def settings_from(options: dict, also=()) -> "Settings":
    """Settings from keyword options, an unknown one refused by name with the ones there are (`also`: the other
    keywords the caller takes), instead of a TypeError from the dataclass."""
    fields = [f.name for f in dataclasses.fields(Settings)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        import difflib
        near = difflib.get_close_matches(unknown[0], fields + list(also), n=1)
        raise UsageError(f"unknown option {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                         + f"; the training settings are {', '.join(fields)}"
                         + (f"; the other options {', '.join(also)}" if also else ""))
    return Settings(**options)


@dataclass(frozen=True)
class Settings:
    """How to train. Every field is checked here, with the command-line option in the message."""
    epochs: int | None = 3            # None: run until max_steps (pretraining)
    max_steps: int | None = None      # stop after this many optimizer steps in all (a budget)
    lr: float = 5e-5
    batch_size: int = 32              # sequences per process per micro-batch
    grad_accum: int = 1               # micro-batches per process per step
    warmup: float = 0.06              # a fraction of all steps (< 1) or a number of steps (>= 1)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 42
    bf16: bool = False                # bfloat16 autocast
    log_every: int = 10               # steps between logged training losses
    eval_every: int | None = None     # steps between evaluations; None: after every epoch
    eval_batch_size: int = 64
    save_every: int = 500             # steps between resumable checkpoints (0: only at epoch ends and the end)
    bucket: int = 50                  # batches per length-sorting window; 1 = plain random batches
    compile: bool = False             # torch.compile the model (dynamic shapes) before training
    keep_checkpoint: bool = False     # keep checkpoint/ after success
    freeze: tuple = ()                # parameters kept fixed: names or prefixes ("embeddings.position")

    def __post_init__(self):
        for f in dataclasses.fields(self):              # numpy's numbers (a grid search's np.int64) as Python's own
            value = getattr(self, f.name)
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
                object.__setattr__(self, f.name, python_number(value))

        def need(ok, option, value, expected):
            if not ok:              # a str from Python ("2") is said as one: it looks like the number it is not
                said = f"{value!r} (a str)" if isinstance(value, str) else value
                raise UsageError(f"{option} {said}: expected {expected}")
        need(self.epochs is None or (_int(self.epochs) and self.epochs >= 1), "--epochs", self.epochs,
             "a whole number of epochs, at least 1")
        need(self.max_steps is None or (_int(self.max_steps) and self.max_steps >= 1), "--max-steps",
             self.max_steps, "at least 1 step")
        need(self.epochs is not None or self.max_steps is not None, "--max-steps", None,
             "a number of steps when there are no epochs")
        need(_num(self.lr) and self.lr > 0, "--lr", self.lr, "a learning rate above 0 (e.g. 5e-5)")
        need(_int(self.batch_size) and self.batch_size >= 1, "--batch-size", self.batch_size, "at least 1")
        need(_int(self.grad_accum) and self.grad_accum >= 1, "--grad-accum", self.grad_accum, "at least 1")
        need(_num(self.warmup) and self.warmup >= 0 and (self.warmup < 1 or float(self.warmup).is_integer()),
             "--warmup", self.warmup, "a fraction of the steps (0 to 1) or a whole number of steps (0 or more)")
        need(_num(self.weight_decay) and self.weight_decay >= 0, "--weight-decay", self.weight_decay, "0 or more")
        need(_num(self.grad_clip) and self.grad_clip > 0, "--grad-clip", self.grad_clip, "a norm above 0")
        need(_int(self.seed), "--seed", self.seed, "a whole number")
        for flag in ("bf16", "compile", "keep_checkpoint"):
            need(isinstance(getattr(self, flag), bool), "--" + flag.replace("_", "-"), getattr(self, flag),
                 "True or False")
        need(_int(self.log_every) and self.log_every >= 1, "--log-every", self.log_every, "at least 1 step")
        need(self.eval_every is None or (_int(self.eval_every) and self.eval_every >= 1), "--eval-every",
             self.eval_every, "at least 1 step")
        need(_int(self.eval_batch_size) and self.eval_batch_size >= 1, "--eval-batch-size", self.eval_batch_size,
             "at least 1")
        need(_int(self.save_every) and self.save_every >= 0, "--save-every", self.save_every,
             "0 (checkpoints only at epoch ends) or a number of steps")
        need(_int(self.bucket) and self.bucket >= 1, "--bucket", self.bucket,
             "at least 1 (1 = plain random batches)")
        need(isinstance(self.freeze, (tuple, list)) and all(isinstance(x, str) and x for x in self.freeze),
             "--freeze", self.freeze, "parameter names or prefixes, such as embeddings.position")
        object.__setattr__(self, "freeze", tuple(self.freeze))      # a list when read back from run.json

    def changed(self, other: "Settings") -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Result:
    steps: int
    total_steps: int
    finished: bool                    # False: stopped early (Ctrl-C or stop_after) with a checkpoint written
    stopped_by: str | None            # "interrupt" | "stop_after" | None
    best: float | None                # the best evaluation of task.metric
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)   # "training" (the steps, checkpoints included), "evaluation"


class _Interrupts:
    """SIGINT while training: the first asks the loop to stop after the current step, the second stops at once."""

    def __init__(self, on_event):
        self.requested = False
        self.on_event = on_event
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_event:
            self.on_event({"event": "stopping"})

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def train(model, task, data, eval_data, out, settings: Settings, tokenizer=None, run: dict | None = None,
          resume: dict | None = None, on_event=None, stop_after: int | None = None) -> Result:
    """Train `model` (already on its device) on `data` with `task`, writing into the folder `out`.

    `run` is the record stored with the run (run.json and every checkpoint); `resume` a state from
    state.read_state(out) to continue from. `stop_after` ends the run after that many steps in all, with a
    checkpoint, exactly as Ctrl-C does. Returns a Result; nothing here prints (progress goes to `on_event`)."""
    from ..checkpoint import save_pretrained
    from ..model import compile_model
    out = Path(out)
    dist, rank, world = distributed.current()
    device = next(model.parameters()).device
    s = settings
    check_stop_after(stop_after)
    emit = (on_event if rank == 0 else None) or (lambda e: None)

    def epoch_batches(e):
        return _epoch_batches(task, data, s, e, world)

    group = s.grad_accum * world
    batches = fills_a_batch(task, data, s, world)
    per_epoch = math.ceil(len(batches) / group)
    total = s.max_steps if s.epochs is None else min(per_epoch * s.epochs, s.max_steps or per_epoch * s.epochs)

    frozen = _freeze(model, s.freeze)                   # before the optimizer and DDP, which take what trains
    opt = optim.optimizer(model, s.lr, s.weight_decay)
    warm = optim.warmup_steps(s.warmup, total)
    sched = optim.schedule(opt, warm, total)
    if warm > total and resume is None:
        emit({"event": "notice", "message": f"--warmup {s.warmup:g}: {warm} warm-up steps in a run of {total}, so the "
                                            f"learning rate never reaches --lr {s.lr:g}"})
    step, epoch, position, best, history = 0, 0, 0, None, []
    batch = None                                         # the last batch a step ran (none in a resume at the end)
    window = {"losses": [], "sizes": [], "tokens": 0, "stats": {}}
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        rng = resume["rng"]
        torch.set_rng_state(rng[rank] if isinstance(rng, list) else rng)
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"][rank], device)
        p = resume["position"]
        step, epoch, position, best, window = p["step"], p["epoch"], p["position"], p["best"], p["window"]
        window = window[rank] if isinstance(window, list) else window    # each process's own open window
        history = resume["history"]
        batches = epoch_batches(epoch)
    if s.compile:
        compile_model(model)
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)

    def save_model(folder):
        save_pretrained(model, folder)
        if tokenizer is not None:
            tokenizer.save(folder, overwrite=True)     # (--out was checked before the run, and is locked)

    pending = {"losses": [], "stats": {}}               # device tensors of the open window, read back when logged

    def settle():
        """Fold what piled up on the device into plain numbers, in step order (so that a resume is exact)."""
        if pending["losses"]:
            losses = torch.stack(pending["losses"]).double().tolist()
            bad = next((x for x in losses if not math.isfinite(x)), None)
            if dist is not None:                          # every process stops, or the others would wait for it
                flag = torch.tensor([float(bad is not None)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                bad = bad if bad is not None or not flag.item() else "not a number in another process"
            if bad is not None:                           # before anything is written from it
                raise _diverged(f"the loss is {bad}", step, s, out, since=True)
            window["losses"] += losses
        for name, (num, den) in pending["stats"].items():
            w = window["stats"].setdefault(name, [0, 0])
            w[0], w[1] = w[0] + int(num), w[1] + den
        pending["losses"], pending["stats"] = [], {}

    def checkpoint():
        settle()
        rngs = [torch.get_rng_state()]
        cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else None
        windows = window
        if dist is not None:                              # every process's own random state and open log window
            rngs, windows = [None] * world, [None] * world
            dist.all_gather_object(rngs, torch.get_rng_state())
            dist.all_gather_object(windows, window)
            if cuda is not None:
                cuda = [None] * world
                dist.all_gather_object(cuda, torch.cuda.get_rng_state(device).cpu())
        if rank == 0:
            disk.write_checkpoint(out, save_model, {
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs, "cuda_rng": cuda,
                "history": history, "run": run or {},
                "position": {"step": step, "epoch": epoch, "position": position, "best": best, "window": windows}})
            disk.write_metrics(out, history, task.name)
        if dist is not None:
            dist.barrier()

    spent = {"evaluation": 0.0}
    # the step of the last evaluation, the same in every process (only the first one keeps eval records in history)
    evaluated = {"step": next((r["step"] for r in reversed(history) if any(k.startswith("eval_") for k in r)), None)}

    def evaluate():
        nonlocal best
        settle()                                         # a diverged run stops here, before a "best" model is saved
        evaluated["step"] = step
        started = time.perf_counter()
        if eval_data is not None and rank == 0:
            metrics = task.evaluate(model, eval_data, s.eval_batch_size, s.seed)
            record = {"step": step, "epoch": round(epoch + position / max(1, len(batches)), 6),
                      **{f"eval_{k}": v for k, v in metrics.items()}}
            history.append(record)
            emit({"event": "eval", **record, "total_steps": total})
            score = metrics.get(task.metric) if task.metric is not None else None
            if score is not None and score == score and (best is None or score > best):   # (NaN: never best)
                best = score
                save_model(out)
        if dist is not None:
            dist.barrier()
        spent["evaluation"] += time.perf_counter() - started

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.bf16)
    # sparse word-table gradients into a kept buffer: on the CPU, one process, not compiled (optim.KeptRows)
    rows = optim.KeptRows(model) if device.type == "cpu" and dist is None and not s.compile else None
    was_checking, model.check = model.check, False
    model.train()
    emit({"event": "start", "total_steps": total, "steps_per_epoch": per_epoch, "step": step})
    stopped_by = None
    largest = 0                                          # the most tokens in one step so far
    t0 = began = time.perf_counter()
    try:
        with _Interrupts(emit) as interrupts:
            while True:
                if position >= len(batches):                       # an epoch ends
                    epoch, position = epoch + 1, 0
                    batches = epoch_batches(epoch)
                    if s.eval_every is None:
                        evaluate()
                    if s.epochs is not None and epoch < s.epochs and step < total:
                        checkpoint()                             # (the last epoch's state is written below)
                if step >= total or (s.epochs is not None and epoch >= s.epochs):
                    break
                mine = batches[position:position + group][rank::world]
                position = min(position + group, len(batches))
                micro = [task.collate(data, index, epoch, s.seed) for index in mine]
                if device.type == "cpu":                     # freed heap back: every 16 steps, and see TRIM_BEFORE
                    tokens = sum(b.tokens for b in micro)
                    if step % 16 == 0 or tokens >= TRIM_BEFORE * largest:
                        trim_heap()
                    largest = max(largest, tokens)
                counts = _step_counts(micro, dist, device)
                for k, batch in enumerate(micro):
                    batch = batch.to(device)
                    sync = dist is None or k == len(micro) - 1
                    with (contextlib.nullcontext() if sync else net.no_sync()), autocast:
                        terms, stats = task.loss(net, batch)
                        part = sum(terms[name] / max(1, counts[name]) for name in terms)
                    (part * world).backward()
                    pending["losses"].append(part.detach().float() * counts["size"])
                    for name, (num, den) in stats.items():
                        acc = pending["stats"].setdefault(name, [0, 0])
                        acc[0], acc[1] = acc[0] + num, acc[1] + den
                    window["tokens"] += batch.tokens
                window["sizes"].append(counts["size"])
                if rows is not None:
                    rows.densify()
                norm = optim.clip_grad_norm(model.parameters(), s.grad_clip, rows)
                if norm.device.type == "cpu" and not math.isfinite(float(norm)):   # (on a GPU: see settle)
                    raise _diverged(f"the gradient's norm is {float(norm)}", step + 1, s, out)
                rate = sched.get_last_lr()[0]                  # the rate of this step, as logged
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if step % s.log_every == 0 or step == total:
                    record = _log_record(step, epoch, position, len(batches), rate, pending, window, settle, dist,
                                         device)
                    history.append(record["record"])
                    dt = time.perf_counter() - t0
                    emit({"event": "log", **record["record"], "total_steps": total,
                          "examples_per_s": record["examples"] / dt, "tokens_per_s": record["tokens"] / dt})
                    t0 = time.perf_counter()
                if s.eval_every is not None and step % s.eval_every == 0:
                    evaluate()
                if _stop_requested(interrupts, dist, device) or (stop_after is not None and step >= stop_after):
                    stopped_by = "interrupt" if interrupts.requested else "stop_after"
                    checkpoint()
                    break
                if s.save_every and step % s.save_every == 0:
                    checkpoint()
    finally:
        model.check = was_checking
        for p in frozen:
            p.requires_grad_(True)
        if rows is not None:
            rows.close()
    finished = stopped_by is None
    if finished:
        settle()                                             # (a loss that is not a number stops the run here)
        _check_last_update(model, task, batch, autocast, step, s, out, dist, device)
        if evaluated["step"] != step:
            evaluate()                                       # a budget that ended mid-epoch, or between evaluations
        if rank == 0 and (task.metric is None or eval_data is None or best is None):
            save_model(out)                                  # nothing picks a best: the last model is kept
        if s.keep_checkpoint:
            checkpoint()
        elif rank == 0:
            disk.write_metrics(out, history, task.name)
            disk.remove_checkpoint(out)
        if dist is not None:
            dist.barrier()
    emit({"event": "end", "step": step, "total_steps": total, "finished": finished})
    whole = time.perf_counter() - began
    return Result(step, total, finished, stopped_by, best, history,
                  {"training": whole - spent["evaluation"], "evaluation": spent["evaluation"]})


def _epoch_batches(task, data, s, epoch: int, world: int) -> list:
    batches = task.batches(data, epoch, s.batch_size, s.seed, s.bucket)
    return batches[:len(batches) - len(batches) % world] if world > 1 else batches


def fills_a_batch(task, data, s, world: int = 1) -> list:
    """The first epoch's batches; refused when the data does not fill one (callers ask before making --out)."""
    batches = _epoch_batches(task, data, s, 0, world)
    if not batches:
        raise UsageError(f"--batch-size {s.batch_size}: the training data ({len(data)} sequences) does not fill "
                         f"one batch" + (f" per process ({world} processes)" if world > 1 else ""))
    return batches


def _check_last_update(model, task, batch, autocast, step: int, s, out, dist=None, device=None) -> None:
    """The last step's update is checked by no later loss: the weights it left, and their loss on its last batch
    (without dropout), must be numbers before the model is written."""
    what = None
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            what = f"{name} holds {float(p.detach()[~torch.isfinite(p.detach())].flatten()[0])}"
            break
    if what is None and batch is not None:
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast:
                terms, _ = task.loss(model, batch)
            loss = float(sum(v.detach().float().sum() for v in terms.values()))
            what = None if math.isfinite(loss) else f"the loss on the last batch is {loss}"
        finally:
            model.train(was)
    if dist is not None:                     # every process stops, or the others would wait for it at the end
        flag = torch.tensor([float(what is not None)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        what = what or ("the loss in another process is not a number" if flag.item() else None)
    if what is not None:
        raise _diverged(f"after the last update, {what}", step, s, out)


def _diverged(what: str, step: int, s, out, since: bool = False) -> TrainingDiverged:
    when = f"by step {step}" if since else f"step {step}"   # (losses are read back a window of steps at a time)
    return TrainingDiverged(
        f"{when}: {what}, not a finite number, so training stopped there; nothing in {out} comes from it. "
        f"Usually the learning rate is too high (--lr {s.lr:g}) or a batch holds extreme values: start again with "
        "a lower --lr")                  # (the caller says what became of the folder: api.training._run_folder)


def _freeze(model, names: tuple[str, ...]) -> list:
    """Keep the parameters named (or under a named prefix) fixed for this run; returns them, to be freed after."""
    frozen = freezable(model, names)
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def freezable(model, names: tuple[str, ...]) -> list:
    """The trainable parameters `--freeze names` would keep fixed; a name that matches nothing, or names that
    would leave nothing to train, are refused naming --freeze (callers check this before reading any data)."""
    params = list(model.named_parameters())
    frozen = []
    for name in names:
        found = [p for n, p in params if n == name or n.startswith(name + ".")]
        if not found:
            raise UsageError(f"--freeze {name}: this model has no parameter of that name or under it (names are "
                             f"bertscope's, e.g. {params[0][0]}; `bertscope explain MODEL` lists them)")
        frozen += [p for p in found if p.requires_grad and all(p is not q for q in frozen)]
    if frozen and len(frozen) == sum(p.requires_grad for _, p in params):
        raise UsageError(f"--freeze {' '.join(names)}: that keeps every parameter of the model fixed; nothing would "
                         "train")
    return frozen


# Peak memory on the CPU is what the step with the most tokens touches, on top of freed blocks glibc keeps from
# earlier steps of other shapes (batches change shape, and the blocks pile up between the trims every 16 steps).
# Giving those back just before a step of at least this fraction of the most tokens seen yet (8 of 313 steps in an
# epoch of 10,000 SST-2 rows) cut the peak RSS of MiniLM's fp32 fine-tuning from 1,608-1,647 MB (four runs) to
# 1,508-1,549 MB (four runs; AMD EPYC with AVX-512), at no cost measured. A trim after every step costs 15-40%
# (BENCHMARKS.md); after every 4th or 8th step, it did not lower the peak clearly.
TRIM_BEFORE = 0.9


def _step_counts(micro, dist, device) -> dict:
    """How many items each loss term averages over in this whole step: every micro-batch, every process."""
    counts: dict = {"size": 0}
    for b in micro:
        counts["size"] += b.size
        for name, n in b.counts.items():
            counts[name] = counts.get(name, 0) + n
    if dist is not None:
        names = sorted(counts)
        t = torch.tensor([counts[n] for n in names], dtype=torch.long, device=device)
        dist.all_reduce(t)
        counts = dict(zip(names, t.tolist()))
    return counts


def _stop_requested(interrupts, dist, device) -> bool:
    if dist is None:
        return interrupts.requested
    flag = torch.tensor([int(interrupts.requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        interrupts.requested = True
    return bool(flag.item())


def _log_record(step, epoch, position, num_batches, rate, pending, window, settle, dist, device) -> dict:
    """The logged training record of the window since the last one (every process's share summed); "lr" is the
    rate the window's last step was taken at."""
    settle()
    sizes, losses = window["sizes"], window["losses"]
    loss_sum, size, tokens = sum(losses), sum(sizes), window["tokens"]
    stats = {k: list(v) for k, v in sorted(window["stats"].items())}
    if dist is not None:
        flat = [loss_sum, tokens] + [x for v in stats.values() for x in v]
        t = torch.tensor(flat, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        loss_sum, tokens, rest = t[0].item(), int(t[1].item()), t[2:].tolist()
        stats = {k: [rest[2 * i], rest[2 * i + 1]] for i, k in enumerate(stats)}
    record = {"step": step, "epoch": round(epoch + position / max(1, num_batches), 6),
              "loss": loss_sum / max(1, size), **{k: num / max(1, den) for k, (num, den) in stats.items()},
              "lr": rate}
    window.update({"losses": [], "sizes": [], "tokens": 0, "stats": {}})
    return {"record": record, "examples": size, "tokens": tokens}
