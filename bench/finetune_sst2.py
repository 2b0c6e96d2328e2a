"""Fine-tune the shared all-MiniLM-L6-v2 checkpoint for classification with bertscope and with the reference
implementation's Trainer on the same budget (epochs, batch size, learning rate, schedule, max length, seed), in one
run, and record accuracy, wall time and examples/s in BENCHMARKS.md.

    pip install -e ".[test]" accelerate
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
from common import DATA, MINILM, commit, machine, write_section  # noqa: E402

import bertscope  # noqa: E402
from bertscope.data import label_names, read_examples  # noqa: E402
from bertscope.train import FinetuneArgs, classification_metrics, finetune  # noqa: E402

TASKS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"), "agnews": ("agnews/train.tsv", "agnews/test.tsv")}


def run_bertscope(train, dev, args, out, device):
    tok = bertscope.load_tokenizer(MINILM)
    torch.manual_seed(args.seed)
    names = label_names(train.labels)
    model = bertscope.from_pretrained(MINILM, head="classification", num_labels=len(names), reinit_head=True)
    start = time.perf_counter()
    r = finetune(model.to(device), train, dev, out, args, tokenizer=tok)
    wall = time.perf_counter() - start
    return {"accuracy": r["best_accuracy"], "wall_s": wall, "examples_per_s": len(train) * args.epochs / wall}


def run_reference(train, dev, args, out, device):
    import transformers
    names = label_names(train.labels)
    index = {n: i for i, n in enumerate(names)}
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=len(names))

    class Rows(torch.utils.data.Dataset):
        def __init__(self, ex):
            self.enc = tok(ex.texts, truncation=True, max_length=args.max_length)
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
    m = classification_metrics(torch.from_numpy(pred.predictions).argmax(-1), torch.tensor(Rows(dev).labels),
                               len(names))
    return {"accuracy": m["accuracy"], "wall_s": wall, "examples_per_s": len(train) * args.epochs / wall}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=[*TASKS, "all"], default="all")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for task in (TASKS if a.task == "all" else [a.task]):
        train = read_examples(DATA / TASKS[task][0])
        dev = read_examples(DATA / TASKS[task][1])
        args = FinetuneArgs(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, max_length=a.max_length,
                            save_every=0, log_every=100)
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_bertscope(train, dev, args, Path(tmp) / "ours", device)
            print(task, "bertscope", ours, flush=True)
            ref = None if a.skip_reference else run_reference(train, dev, args, Path(tmp) / "ref", device)
            print(task, "reference", ref, flush=True)
        rows.append((task, len(train), len(dev), ours, ref))

    where = f" on {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    lines = [f"#### Fine-tuning all-MiniLM-L6-v2: {a.task}{where}", "",
             f"`python bench/finetune_sst2.py {' '.join(sys.argv[1:])}` · batch {a.batch_size} · max length "
             f"{a.max_length} · linear warm-up 6% and decay · AdamW · weight decay 0.01 · seed 42 · {machine()} · "
             f"commit {commit()}. Both run in the same process, one after the other, on the same data and budget; "
             "the reference is `transformers.Trainer` with `DataCollatorWithPadding` (padding to the longest in "
             "each random batch), bertscope uses length-bucketed packed batches.", "",
             "| task | train → eval | bertscope accuracy | reference accuracy | bertscope wall | reference wall | "
             "bertscope ex/s | reference ex/s | speed ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for task, n_train, n_dev, ours, ref in rows:
        if ref is None:
            lines[2] += " The reference run was skipped (`--skip-reference`): no side-by-side figure for this task."
            lines.append(f"| {task} | {n_train:,} → {n_dev:,} | {ours['accuracy']:.4f} | not run | "
                         f"{ours['wall_s'] / 60:.1f} min | not run | {ours['examples_per_s']:.0f} | not run | — |")
            continue
        lines.append(f"| {task} | {n_train:,} → {n_dev:,} | {ours['accuracy']:.4f} | {ref['accuracy']:.4f} | "
                     f"{ours['wall_s'] / 60:.1f} min | {ref['wall_s'] / 60:.1f} min | {ours['examples_per_s']:.0f} | "
                     f"{ref['examples_per_s']:.0f} | {ours['examples_per_s'] / ref['examples_per_s']:.2f}× |")
    write_section(f"finetune-{a.task}" + ("-gpu" if device.type == "cuda" else ""), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
