"""Fine-tuning for sequence classification: one thin loop with AdamW, linear warm-up and decay, gradient clipping,
length-bucketed packed batches, evaluation each epoch, the best model kept, and checkpoints that resume exactly.

Output folder layout:
    DIR/config.json, model.safetensors, tokenizer.json   the best model so far (a Hugging Face checkpoint folder)
    DIR/metrics.jsonl                                   one line per logged step and per evaluation
    DIR/curves.png                                      loss and accuracy curves
    DIR/checkpoint/                                     the last training state (model, optimizer, scheduler,
                                                        RNG, data position) for --resume
Nothing here prints: progress goes to the `on_log` callback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import infer
from .checkpoint import atomic_write, from_pretrained
from .data import DataError, Examples, label_names
from .model import Model, compile_model


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C, once a checkpoint of the current position has been written."""


@dataclass
class FinetuneArgs:
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.06          # a fraction of all steps (< 1) or a number of steps (>= 1)
    weight_decay: float = 0.01
    seed: int = 42
    bf16: bool = False
    grad_clip: float = 1.0
    log_every: int = 10
    save_every: int = 500         # steps between resumable checkpoints (one is also written after every epoch)
    max_steps: int | None = None  # stop after this many steps in all (a budget)
    eval_batch_size: int = 64
    bucket: int = 50              # batches per length-sorting window; 1 = plain random batches (no bucketing)
    compile: bool = False         # torch.compile the model (dynamic shapes) before training


# ---- metrics ------------------------------------------------------------------------------------------------------

def classification_metrics(pred: torch.Tensor, gold: torch.Tensor, num_labels: int) -> dict:
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)   # rows: true class, columns: predicted
    confusion.index_put_((gold, pred), torch.ones_like(gold), accumulate=True)
    tp = confusion.diag().float()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    return {"accuracy": float((pred == gold).float().mean()), "macro_f1": float(f1.mean()),
            "confusion": confusion.tolist()}


def evaluate(model: Model, enc: infer.Encoded, gold: torch.Tensor, batch_size: int = 64) -> dict:
    was_training = model.training
    model.eval()
    probs = infer.class_probabilities(model, enc, batch_size)
    model.train(was_training)
    m = classification_metrics(probs.argmax(-1), gold, model.config.num_labels)
    m["loss"] = float(torch.nn.functional.nll_loss(probs.clamp(min=1e-12).log(), gold))
    return m


def label_ids(ex: Examples, names: list[str], what: str = "labels") -> torch.Tensor:
    index = {name: i for i, name in enumerate(names)}
    for label, line in zip(ex.labels, ex.lines):
        if label not in index:
            raise DataError(f"{ex.path} line {line}: label {label!r} is not one the model knows "
                            f"({', '.join(names)}); the label set comes from the training file")
    return torch.tensor([index[x] for x in ex.labels], dtype=torch.long)


# ---- batches --------------------------------------------------------------------------------------------------------

def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, bucket: int = 50) -> list[list[int]]:
    """This epoch's batches: a seeded shuffle, sorted by length inside windows of `bucket` batches (so a batch holds
    texts of similar length: less padding, less work), then the batches shuffled; bucket=1 gives plain random
    batches. The same (seed, epoch) always gives the same batches, which is what lets a resumed run skip exactly
    the batches it has done."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * max(1, bucket)
    batches = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


# ---- the loop -------------------------------------------------------------------------------------------------------

def _optimizer(model: Model, args: FinetuneArgs):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "norm" in name else decay).append(p)
    # fused: one kernel over all parameters instead of a Python loop over tensors (CPU and CUDA)
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, fused=fused or None)


def _schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def finetune(model_source, train: Examples, eval_set: Examples | None, out_dir, args: FinetuneArgs | None = None,
             tokenizer=None, resume: bool = False, on_log=None, stop_after: int | None = None,
             run_info: dict | None = None, device=None) -> dict:
    """Fine-tune `model_source` (a checkpoint folder, or a Model) on `train`; evaluate on `eval_set` each epoch.
    `device` moves the model there first (default: leave it where it is; a folder loads onto the CPU).

    resume=True continues from out_dir/checkpoint exactly where it stopped (same batches, same dropout draws,
    same optimizer state), so metrics come out as if the run had never been interrupted. `stop_after` ends the
    run after that many steps with a checkpoint (what Ctrl-C does), for tests and budgets."""
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    if resume:
        state = read_checkpoint(out)
        args = FinetuneArgs(**json.loads(state["args"]))
        names = json.loads(state["labels"])
        model = from_pretrained(checkpoint_dir(out), head="classification")
        history = json.loads(state["history"])
    else:
        args = args or FinetuneArgs()
        names = label_names(train.labels)
        if (out / "metrics.jsonl").exists() or ckpt.exists():
            raise DataError(f"{out} already holds a training run; continue it with --resume or choose another --out")
        torch.manual_seed(args.seed)
        if isinstance(model_source, Model):
            model = model_source
        else:
            model = from_pretrained(model_source, head="classification", num_labels=len(names), reinit_head=True)
        history = []
    if device is not None:
        model.to(device)
    if args.compile:
        compile_model(model)
    model.config.id2label = dict(enumerate(names))
    model.config.num_labels = len(names)
    model.config.problem_type = "single_label_classification"
    y_train = label_ids(train, names)
    y_eval = label_ids(eval_set, names) if eval_set is not None else None

    max_length = min(args.max_length, model.config.max_tokens)
    enc = infer.tokenize(tokenizer, train.texts, train.pairs, max_length=max_length)
    enc_eval = infer.tokenize(tokenizer, eval_set.texts, eval_set.pairs, max_length=max_length) \
        if eval_set is not None else None
    lengths = [len(x) for x in enc.ids]
    infer.check_all(model.config, enc)                   # every example once, up front; the loop then trusts them
    per_epoch = math.ceil(len(lengths) / args.batch_size)
    total = per_epoch * args.epochs if args.max_steps is None else min(args.max_steps, per_epoch * args.epochs)
    warmup = int(args.warmup * total) if args.warmup < 1 else int(args.warmup)

    optimizer = _optimizer(model, args)
    scheduler = _schedule(optimizer, max(1, warmup), total)
    step, epoch, position, best = 0, 0, 0, None
    if resume:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        best = float(state["best"]) if state["best"] >= 0 else None
        torch.set_rng_state(state["rng"])
    out.mkdir(parents=True, exist_ok=True)

    def save_checkpoint():
        write_checkpoint(out, model, tokenizer, optimizer, scheduler, history, {
            "window_losses": json.dumps(_floats(window_losses)), "window_examples": window_examples, "run_info": json.dumps(run_info or {}),
            "step": step, "epoch": epoch, "position": position, "best": best if best is not None else -1.0,
            "args": json.dumps(dataclasses.asdict(args)), "labels": json.dumps(names)})

    window_losses, window_examples = [], 0
    if resume:
        window_losses, window_examples = json.loads(state["window_losses"]), int(state["window_examples"])
    model.train()
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    window_tokens, t0 = 0, time.perf_counter()
    was_checking, model.check = model.check, False
    try:
        while epoch < args.epochs and step < total:
            batches = epoch_batches(lengths, args.batch_size, args.seed, epoch, args.bucket)
            while position < len(batches) and step < total:
                index = batches[position]
                batch = infer.to_device(infer.packed_batch(enc, index), device)
                with autocast:
                    loss = model(**batch, labels=y_train[index].to(device)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step, position = step + 1, position + 1
                window_losses.append(loss.detach() * len(index))  # tensors: read back only when logged
                window_examples += len(index)
                window_tokens += int(batch["input_ids"].numel())
                if step % args.log_every == 0 or step == total:
                    dt = time.perf_counter() - t0
                    record = {"step": step, "epoch": epoch + position / len(batches),
                              "loss": sum(_floats(window_losses)) / window_examples, "lr": scheduler.get_last_lr()[0]}
                    history.append(record)
                    if on_log:
                        on_log({**record, "total_steps": total, "examples_per_s": window_examples / dt,
                                "tokens_per_s": window_tokens / dt})
                    window_losses, window_examples, window_tokens, t0 = [], 0, 0, time.perf_counter()
                if stop_after is not None and step >= stop_after:
                    raise KeyboardInterrupt
                if args.save_every and step % args.save_every == 0:
                    save_checkpoint()
            if position >= len(batches):
                epoch, position = epoch + 1, 0
                if enc_eval is not None:
                    metrics = evaluate(model, enc_eval, y_eval, args.eval_batch_size)
                    record = {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}}
                    history.append(record)
                    if on_log:
                        on_log({**record, "total_steps": total})
                    if best is None or metrics["accuracy"] > best:
                        best = metrics["accuracy"]
                        save_best(model, tokenizer, out)
                save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        raise TrainingInterrupted(f"stopped at step {step} of {total}; a checkpoint of this point is in {ckpt}. "
                                  f"Continue with: bertscope finetune --resume {out}") from None
    finally:
        model.check = was_checking
    if step >= total and enc_eval is not None and (not history or "eval_accuracy" not in history[-1]):
        metrics = evaluate(model, enc_eval, y_eval, args.eval_batch_size)    # a budget that ended mid-epoch
        history.append({"step": step, "epoch": epoch + position / per_epoch,
                        **{f"eval_{k}": v for k, v in metrics.items()}})
        if best is None or metrics["accuracy"] > best:
            best = metrics["accuracy"]
            save_best(model, tokenizer, out)
    if enc_eval is None:
        save_best(model, tokenizer, out)
    save_checkpoint()
    return {"steps": step, "best_accuracy": best, "history": history, "labels": names}


def _floats(values) -> list[float]:
    """0-d tensors and floats as Python floats, in order, with one device round trip for all the tensors."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack(tensors).double().tolist() if tensors else [])
    return [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]


def write_checkpoint(out: Path, model: Model, tokenizer, optimizer, scheduler, history: list, state: dict):
    """out/checkpoint/: the model folder, its tokenizer and trainer_state.pt (optimizer, scheduler, torch RNG,
    history and the loop's position), written to a temporary folder and swapped in, so an interruption at any
    moment leaves the previous checkpoint whole. metrics.jsonl and curves.png are rewritten from the history."""
    ckpt, tmp, old = out / "checkpoint", out / ".checkpoint.tmp", out / ".checkpoint.old"
    for stale in (tmp, old):          # left by a save that was itself interrupted
        if stale.exists() and (stale != old or (ckpt / "trainer_state.pt").exists()):
            shutil.rmtree(stale)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "history": json.dumps(history), **state}, tmp / "trainer_state.pt")
    if ckpt.exists():
        if old.exists():              # ckpt is incomplete and old is the last whole one: this one replaces both
            shutil.rmtree(ckpt)
        else:
            ckpt.rename(old)
    tmp.rename(ckpt)
    if old.exists():
        shutil.rmtree(old)
    write_metrics(out, history)


def checkpoint_dir(out) -> Path:
    """out/checkpoint, or the previous one if a save was cut off between swapping the two."""
    for folder in (Path(out) / "checkpoint", Path(out) / ".checkpoint.old"):
        if (folder / "trainer_state.pt").exists():
            return folder
    raise DataError(f"{out}: no checkpoint to resume (expected {Path(out) / 'checkpoint' / 'trainer_state.pt'})")


def read_checkpoint(out: Path) -> dict:
    return torch.load(checkpoint_dir(out) / "trainer_state.pt", map_location="cpu", weights_only=True)


def read_run_info(out_dir) -> dict:
    """What the caller stored with the run (the CLI keeps its data files and columns there)."""
    return json.loads(read_checkpoint(out_dir)["run_info"])


def save_best(model: Model, tokenizer, out: Path):
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save(out)


def write_metrics(out: Path, history: list[dict]):
    text = "".join(json.dumps(r) + "\n" for r in history)
    atomic_write(out / "metrics.jsonl", lambda p: Path(p).write_text(text, encoding="utf-8"))
    if history:
        plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict], path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r for r in history if "loss" in r]
    loss_key = "eval_mlm_loss" if any("eval_mlm_loss" in r for r in history) else "eval_loss"
    acc_key = "eval_mlm_accuracy" if loss_key == "eval_mlm_loss" else "eval_accuracy"
    evals = [r for r in history if acc_key in r]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="training loss", color="#1f77b4")
    if evals:
        ax.plot([r["step"] for r in evals], [r[loss_key] for r in evals], "o--", label="eval loss", color="#ff7f0e")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r[acc_key] for r in evals], "s-", color="#2ca02c",
                 label="eval " + acc_key[5:].replace("_", " "))
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("pretraining" if loss_key == "eval_mlm_loss" else "fine-tuning")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


# ---- pretraining ------------------------------------------------------------------------------------------------

@dataclass
class PretrainArgs:
    objective: str = "mlm"        # "mlm" | "mlm+nsp" (BERT) | "mlm+sop" (ALBERT)
    whole_word: bool = False
    mlm_probability: float = 0.15
    dynamic: bool = True          # new masks every epoch (RoBERTa); False: one fixed set of masks (BERT)
    max_length: int = 128
    batch_size: int = 32          # sequences per process per micro-step
    grad_accum: int = 1
    steps: int = 1000
    lr: float = 5e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 42
    bf16: bool = False
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 200
    save_every: int = 500
    compile: bool = False         # torch.compile the model (dynamic shapes) before training


def _distributed():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _masked_batch(instances, index, tok, args: PretrainArgs, mask_epoch: int, with_pairs: bool):
    """A packed batch of the instances at `index`, masked reproducibly: the mask of instance i depends only on
    (seed, mask_epoch, i), so every process and every resumed run draws the same one."""
    from .masking import mask_tokens
    ids, labels, types, lengths, pair = [], [], [], [], []
    for i in index:
        g = torch.Generator().manual_seed((args.seed * 1_000_003 + mask_epoch) * 10_000_019 + i)
        x, y = mask_tokens(instances[i], tok, args.mlm_probability, args.whole_word, g)
        ids.append(x), labels.append(y), types.append(torch.tensor(instances[i].types)), lengths.append(len(x))
        pair.append(instances[i].pair_label)
    batch = {"input_ids": torch.cat(ids), "token_type_ids": torch.cat(types),
             "cu_seqlens": torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(lengths).cumsum(0)])}
    return batch, torch.cat(labels), torch.tensor(pair) if with_pairs else None


def _share(masked, first: int, last: int):
    """Sequences first..last-1 of a packed masked batch (this process's share of a global batch)."""
    batch, labels, pairs = masked
    cu = batch["cu_seqlens"]
    last = min(last, len(cu) - 1)
    a, b = int(cu[first]), int(cu[last])
    part = {"input_ids": batch["input_ids"][a:b], "token_type_ids": batch["token_type_ids"][a:b],
            "cu_seqlens": cu[first:last + 1] - cu[first]}
    return part, labels[a:b], pairs[first:last] if pairs is not None else None


def pretrain_evaluate(model: Model, instances, tok, args: PretrainArgs, batch_size: int = 64) -> dict:
    """Held-out masked-LM loss and accuracy (and NSP/SOP accuracy), with one fixed set of masks."""
    was = model.training
    model.eval()
    with_pairs = model.pair is not None
    loss_sum, hits, n, pair_hits = 0.0, 0, 0, 0
    fixed = dataclasses.replace(args, seed=args.seed + 1)
    with torch.no_grad():
        for start in range(0, len(instances), batch_size):
            index = list(range(start, min(start + batch_size, len(instances))))
            batch, labels, pairs = _masked_batch(instances, index, tok, fixed, 0, with_pairs)
            device = next(model.parameters()).device
            batch, labels = {k: v.to(device) for k, v in batch.items()}, labels.to(device)
            pairs = pairs.to(device) if pairs is not None else None
            out = model(**batch, labels=labels, masked_only=True)
            y = labels[labels != -100]
            loss_sum += float(torch.nn.functional.cross_entropy(out.logits.float(), y, reduction="sum"))
            hits += int((out.logits.argmax(-1) == y).sum())
            n += len(y)
            if with_pairs:
                pair_hits += int((out.pair_logits.argmax(-1) == pairs).sum())
    model.train(was)
    m = {"mlm_loss": loss_sum / max(n, 1), "mlm_accuracy": hits / max(n, 1)}
    if with_pairs:
        m["pair_accuracy"] = pair_hits / len(instances)
    return m


def pretrain(model: Model, tok, instances, eval_instances, out_dir, args: PretrainArgs, resume: bool = False,
             on_log=None, stop_after: int | None = None, run_info: dict | None = None) -> dict:
    """Masked-LM (+ NSP / SOP) pretraining over packed batches, with the vocabulary projection computed only at
    the masked positions. Under `torchrun` (torch.distributed initialised) every process takes its share of each
    global batch of batch_size × processes × grad_accum sequences; gradients are averaged by DDP and the losses
    are scaled so that the update equals a single process's on the same global batch. Rank 0 writes."""
    dist, rank, world = _distributed()
    out = Path(out_dir)
    with_pairs = args.objective != "mlm"
    if with_pairs and model.pair is None:
        raise ValueError(f"objective {args.objective} needs the model's pretraining head (NSP / SOP)")
    history, step, epoch, position = [], 0, 0, 0
    optimizer = _optimizer(model, args)
    warmup = int(args.warmup * args.steps) if args.warmup < 1 else int(args.warmup)
    scheduler = _schedule(optimizer, max(1, warmup), args.steps)
    if resume:
        state = read_checkpoint(out)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = json.loads(state["history"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
    elif rank == 0 and ((out / "metrics.jsonl").exists() or (out / "checkpoint").exists()):
        raise DataError(f"{out} already holds a training run; continue it with --resume or choose another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if args.compile:
        compile_model(model)
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)
    per_step = args.batch_size * world * args.grad_accum

    def order_of(e):
        g = torch.Generator().manual_seed(args.seed * 7919 + e)
        return torch.randperm(len(instances), generator=g).tolist()

    def save_checkpoint():
        settle()
        if rank == 0:
            write_checkpoint(out, model, tok, optimizer, scheduler, history, {
                "step": step, "epoch": epoch, "position": position, "args": json.dumps(dataclasses.asdict(args)),
                "run_info": json.dumps(run_info or {}), "window": json.dumps(sums)})
        if dist is not None:
            dist.barrier()

    order = order_of(epoch)
    device = next(model.parameters()).device
    infer.check_all(model.config, infer.Encoded(ids=[inst.ids for inst in instances],
                                                types=[inst.types for inst in instances]))  # once, up front
    was_checking, model.check = model.check, False
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    sums = {"losses": [], "mlm_hits": 0, "mlm_n": 0, "pair_hits": 0, "pair_n": 0, "tokens": 0, "steps": 0}
    if resume:   # the logging window that was open when the checkpoint was taken
        sums = json.loads(state["window"])
    live = {"loss": [], "mlm_hits": torch.zeros((), device=device, dtype=torch.long),
            "pair_hits": torch.zeros((), device=device, dtype=torch.long)}

    def settle():   # fold what piled up on the device into plain numbers, in step order (exact on resume)
        sums["losses"] = sums.get("losses", []) + _floats(live["loss"])
        live["loss"] = []
        for key in ("mlm_hits", "pair_hits"):
            sums[key] += int(live[key])
            live[key].zero_()
    t0 = time.perf_counter()
    try:
        while step < args.steps:
            chunks = []
            for _ in range(args.grad_accum):                       # the global batch of this step
                if position + per_step // args.grad_accum > len(order):
                    epoch, position = epoch + 1, 0
                    order = order_of(epoch)
                take = order[position:position + per_step // args.grad_accum]
                position += len(take)
                chunks.append(take)
            mask_epoch = epoch if args.dynamic else 0
            whole = [_masked_batch(instances, c, tok, args, mask_epoch, with_pairs) for c in chunks]  # every rank's
            total_masked = sum(int((m[1] != -100).sum()) for m in whole)   # masks are drawn once, for the count too
            masked = [_share(m, rank * args.batch_size, (rank + 1) * args.batch_size) for m in whole] \
                if world > 1 else whole
            total_pairs = sum(len(c) for c in chunks)
            for k, (batch, labels, pairs) in enumerate(masked):
                scored = (labels != -100).nonzero().squeeze(-1)        # on the CPU: no GPU round trip
                y = labels[scored].to(device)
                scored = scored.to(device)
                batch = infer.to_device(batch, device)
                pairs = pairs.to(device) if pairs is not None else None
                sync = k == len(masked) - 1 or dist is None
                ctx = net.no_sync() if not sync else contextlib.nullcontext()
                with ctx, autocast:
                    o = net(**batch, mlm_positions=scored)
                    mlm_sum = torch.nn.functional.cross_entropy(o.logits.float(), y, reduction="sum")
                    loss = mlm_sum / total_masked * world
                    if with_pairs:
                        pair_sum = torch.nn.functional.cross_entropy(o.pair_logits.float(), pairs, reduction="sum")
                        loss = loss + pair_sum / total_pairs * world
                loss.backward()
                live["loss"].append(loss.detach() / world)             # tensors, read back only when logged
                live["mlm_hits"] += (o.logits.argmax(-1) == y).sum()
                sums["mlm_n"] += len(y)
                if with_pairs:
                    live["pair_hits"] += (o.pair_logits.argmax(-1) == pairs).sum()
                    sums["pair_n"] += len(pairs)
                sums["tokens"] += int(batch["input_ids"].numel())
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            sums["steps"] += 1
            if step % args.log_every == 0 or step == args.steps:
                settle()
                totals = dict(sums)
                totals["loss"] = sum(totals.pop("losses"))
                if dist is not None:                               # every process's share, for the record
                    t = torch.tensor([totals[k] for k in ("loss", "mlm_hits", "mlm_n", "pair_hits", "pair_n",
                                                          "tokens")], dtype=torch.float64, device=device)
                    dist.all_reduce(t)
                    totals.update(zip(("loss", "mlm_hits", "mlm_n", "pair_hits", "pair_n", "tokens"), t.tolist()))
                dt = time.perf_counter() - t0
                record = {"step": step, "loss": totals["loss"] / totals["steps"],  # mean over the window's steps
                          "mlm_accuracy": totals["mlm_hits"] / max(1, totals["mlm_n"]), "lr": scheduler.get_last_lr()[0]}
                if with_pairs:
                    record["pair_accuracy"] = totals["pair_hits"] / max(1, totals["pair_n"])
                history.append(record)
                if on_log and rank == 0:
                    on_log({**record, "total_steps": args.steps, "tokens_per_s": totals["tokens"] / dt})
                sums = {"losses": [], "mlm_hits": 0, "mlm_n": 0, "pair_hits": 0, "pair_n": 0, "tokens": 0, "steps": 0}
                t0 = time.perf_counter()
            if eval_instances and (step % args.eval_every == 0 or step == args.steps):
                if rank == 0:
                    m = pretrain_evaluate(model, eval_instances, tok, args)
                    record = {"step": step, **{f"eval_{k}": v for k, v in m.items()}}
                    history.append(record)
                    if on_log:
                        on_log({**record, "total_steps": args.steps})
                if dist is not None:
                    dist.barrier()
            if stop_after is not None and step >= stop_after:
                raise KeyboardInterrupt
            if args.save_every and step % args.save_every == 0:
                save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        raise TrainingInterrupted(f"stopped at step {step} of {args.steps}; a checkpoint of this point is in "
                                  f"{out / 'checkpoint'}. Continue with: bertscope pretrain --resume {out}") from None
    finally:
        model.check = was_checking
    save_checkpoint()
    if rank == 0:
        model.save_pretrained(out)
        tok.save(out)
    if dist is not None:
        dist.barrier()
    return {"steps": step, "history": history}

