"""Fine-tune the shared all-MiniLM-L6-v2 checkpoint for classification with bertscope and with the reference
implementation's Trainer on the same budget (epochs, batch size, learning rate, schedule, max length, seed), in one
run, and record accuracy, wall time and examples/s in BENCHMARKS.md.

    pip install -e ".[bench]"
    python bench/finetune_sst2.py                 # SST-2 train -> dev, and AG News train -> test
    python bench/finetune_sst2.py --task sst2 --epochs 1
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MINILM, commit, cpu_label, machine, vendor, write_section  # noqa: E402

from bertscope import api  # noqa: E402
from bertscope.data import read_examples  # noqa: E402
from bertscope.scoring import classification_scores  # noqa: E402
from bertscope.tasks.classification import label_order  # noqa: E402
from bertscope.train import Settings  # noqa: E402

TASKS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"), "agnews": ("agnews/train.tsv", "agnews/test.tsv")}


def run_bertscope(train_file, dev_file, args: Settings, max_length, out, device):
    start = time.perf_counter()
    r = api.finetune(MINILM, train_file, out, eval=dev_file, max_length=max_length, device=str(device),
                     **{k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "save_every", "log_every",
                                                      "bucket", "seed", "max_steps", "bf16")})
    wall = time.perf_counter() - start
    final = [h["eval_accuracy"] for h in r.history if "eval_accuracy" in h][-1]
    n = len(read_examples(train_file))
    # the steps alone (Result.seconds["training"]: no loading, tokenizing, evaluating or saving the best model), which
    # is what the reference's time covers (Trainer.train()); on a GPU the rest outweighs the steps
    return {"accuracy": r.best, "final_accuracy": final, "wall_s": wall, "loop_s": r.seconds["training"],
            "examples_per_s": n * args.epochs / r.seconds["training"]}


def run_reference(train, dev, args: Settings, max_length, out, device):
    import transformers
    names = label_order(train.labels)
    index = {n: i for i, n in enumerate(names)}
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=len(names))

    class Rows(torch.utils.data.Dataset):
        def __init__(self, ex):
            self.enc = tok(ex.texts, truncation=True, max_length=max_length)
            self.labels = [index[x] for x in ex.labels]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "token_type_ids": self.enc["token_type_ids"][i], "labels": self.labels[i]}

    steps = (len(train) + args.batch_size - 1) // args.batch_size * args.epochs
    targs = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, learning_rate=args.lr, warmup_steps=int(args.warmup * steps),
        weight_decay=args.weight_decay, lr_scheduler_type="linear", max_grad_norm=args.grad_clip, seed=args.seed,
        logging_steps=200, save_strategy="no", eval_strategy="no", report_to=[], use_cpu=device.type == "cpu",
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=Rows(train),
                                   data_collator=transformers.DataCollatorWithPadding(tok))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    pred = trainer.predict(Rows(dev))
    m = classification_scores(Rows(dev).labels, torch.from_numpy(pred.predictions).argmax(-1).tolist(), len(names))
    return {"accuracy": m["accuracy"], "wall_s": wall, "examples_per_s": len(train) * args.epochs / wall}


def in_child(which, a, task, seed, train_file, dev_file) -> dict:
    """Run one contender in a fresh process, so that its peak RSS is its own."""
    import json
    import subprocess
    cmd = [sys.executable, __file__, "--child", which, "--task", task, "--seeds", str(seed), "--epochs", str(a.epochs),
           "--lr", str(a.lr), "--batch-size", str(a.batch_size), "--max-length", str(a.max_length), "--device",
           a.device, "--bucket", str(a.bucket)]
    env = {**__import__("os").environ, "BENCH_TRAIN": str(train_file), "BENCH_DEV": str(dev_file)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{which} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def child(a):
    import json
    import os
    import resource
    train_file, dev_file = Path(os.environ["BENCH_TRAIN"]), Path(os.environ["BENCH_DEV"])
    args = Settings(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, save_every=0, log_every=100,
                    bucket=a.bucket, seed=int(a.seeds), bf16=a.child == "bertscope-bf16")
    with tempfile.TemporaryDirectory() as tmp:
        if a.child.startswith("bertscope"):
            r = run_bertscope(train_file, dev_file, args, a.max_length, Path(tmp) / "ours", torch.device(a.device))
        else:
            r = run_reference(read_examples(train_file), read_examples(dev_file), args, a.max_length,
                              Path(tmp) / "ref", torch.device(a.device))
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(r))


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=[*TASKS, "all"], default="all")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bucket", type=int, default=50, help="batches per length-sorting window (1: random batches)")
    p.add_argument("--seeds", default="42", help="comma-separated seeds; both run once per seed")
    p.add_argument("--limit", type=int, default=None, help="train on the first N examples only")
    p.add_argument("--bf16", action="store_true", help="also bertscope with bf16 autocast (where the CPU has bf16)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)   # one contender in its own process (RSS)
    a = p.parse_args()
    if a.child:
        return child(a)
    device = torch.device(a.device)
    seeds = [int(x) for x in a.seeds.split(",")]
    rows = []
    from bertscope.kernels import bf16_on_cpu
    bf16, bf16_why = (bf16_on_cpu() if device.type == "cpu" else (True, "")) if a.bf16 else (False, "")
    for task in (TASKS if a.task == "all" else [a.task]):
        train_file, dev_file = DATA / TASKS[task][0], DATA / TASKS[task][1]
        train, dev = read_examples(train_file), read_examples(dev_file)
        for seed in seeds:
            args = Settings(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, save_every=0, log_every=100,
                            bucket=a.bucket, seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                used = train_file
                if a.limit:
                    lines = train_file.read_text(encoding="utf-8").splitlines(keepends=True)
                    used = Path(tmp) / "train.tsv"
                    used.write_text("".join(lines[:a.limit + 1]), encoding="utf-8")
                    train = read_examples(used)
                ours = in_child("bertscope", a, task, seed, used, dev_file)
                print(task, seed, "bertscope", ours, flush=True)
                ours16 = in_child("bertscope-bf16", a, task, seed, used, dev_file) if bf16 else None
                print(task, seed, "bertscope bf16", ours16, flush=True)
                ref = None if a.skip_reference else in_child("reference", a, task, seed, used, dev_file)
                print(task, seed, "reference", ref, flush=True)
                rows.append((task, seed, len(train), len(dev), ours, ref))
                if ours16:
                    rows.append((f"{task}, bertscope `--bf16`", seed, len(train), len(dev), ours16, ref))

    where = (f" on {torch.cuda.get_device_name()}" if device.type == "cuda" else
             f" ({cpu_label()})")
    batching = "length-bucketed packed batches" if a.bucket > 1 else "random packed batches (`--bucket 1`)"
    lines = [f"#### Fine-tuning all-MiniLM-L6-v2: {a.task}{where}", "",
             f"`python bench/finetune_sst2.py {' '.join(sys.argv[1:])}` · {a.epochs} epoch(s) · lr {a.lr:g} · "
             f"batch {a.batch_size} · max length {a.max_length} · linear warm-up 6% and decay · AdamW · weight decay "
             f"0.01 · {machine()} · commit {commit()}. Each runs in a child process of its own (so that its peak RSS is its own), one after the other, on the "
             "same data, seed and budget; the reference is `transformers.Trainer` with `DataCollatorWithPadding` "
             "(padding to the longest in each random batch), evaluation and saving off, and is scored once at the "
             f"end; bertscope uses {batching}, evaluates after every epoch and keeps the best epoch; its last "
             "epoch's accuracy is given too. Times: the reference's is `Trainer.train()` (the steps; loading, "
             "tokenizing and scoring are outside it); bertscope's *steps* are the same span (`Result.seconds"
             "['training']`), and its *whole call* is `api.finetune` from loading the checkpoint to the best model "
             "saved, evaluations included. ex/s and the speed ratio compare the steps.", "",
             "| task | train → eval | seed | bertscope accuracy (best / last epoch) | reference accuracy | "
             "bertscope steps | bertscope whole call | reference `train()` | bertscope ex/s | reference ex/s | "
             "speed ratio | bertscope peak RSS | reference peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, seed, n_train, n_dev, ours, ref in rows:
        acc = f"{ours['accuracy']:.4f} / {ours['final_accuracy']:.4f}"
        if ref is None:
            lines.append(f"| {task} | {n_train:,} → {n_dev:,} | {seed} | {acc} | not run | {duration(ours['loop_s'])}"
                         f" | {duration(ours['wall_s'])} | not run | {ours['examples_per_s']:.0f} | not run | — | "
                         f"{ours['peak_rss_mb']:,.0f} MB | — |")
            continue
        lines.append(f"| {task} | {n_train:,} → {n_dev:,} | {seed} | {acc} | {ref['accuracy']:.4f} | "
                     f"{duration(ours['loop_s'])} | {duration(ours['wall_s'])} | {duration(ref['wall_s'])} | "
                     f"{ours['examples_per_s']:.0f} | "
                     f"{ref['examples_per_s']:.0f} | {ours['examples_per_s'] / ref['examples_per_s']:.2f}× | "
                     f"{ours['peak_rss_mb']:,.0f} MB | {ref['peak_rss_mb']:,.0f} MB |")
    if a.skip_reference:
        lines[2] += " The reference run was skipped (`--skip-reference`): no side-by-side figure."
    if a.bf16:
        lines += ["", "The `--bf16` row: bertscope with bfloat16 autocast, against the same fp32 reference run."
                  if bf16 else f"bertscope bf16: not run, {bf16_why}."]
    write_section(f"finetune-{a.task}-" + ("gpu" if device.type == "cuda" else vendor()), "\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
