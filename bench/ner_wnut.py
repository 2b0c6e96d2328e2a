"""NER on W-NUT 2016 (Twitter, 10 entity types): fine-tune the shared all-MiniLM-L6-v2 with bertscope and with a
plain training loop around the reference implementation's BertForTokenClassification, on the same split, epochs,
learning rate, batch size, schedule and seed, in one run; entity-level F1 on dev scored by seqeval for both.

    pip install -e ".[test]"
    python bench/ner_wnut.py --epochs 3 --lr 1e-4        # writes the "ner-wnut-<cpu>" section of BENCHMARKS.md
    python bench/ner_wnut.py --epochs 3 --lr 1e-4 --bf16 # and bertscope with bf16 autocast, where the CPU has bf16
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MINILM, commit, cpu_label, machine, vendor, write_section  # noqa: E402

from bertscope import api  # noqa: E402
from bertscope.data import read_conll  # noqa: E402
from bertscope.tasks.token_classification import tag_order  # noqa: E402

TRAIN, DEV = DATA / "wnut16" / "train.conll", DATA / "wnut16" / "dev.conll"


def run_bertscope(a, out, bf16=False):
    start = time.perf_counter()
    r = api.finetune(MINILM, TRAIN, out, eval=DEV, task="token-classification", epochs=a.epochs, lr=a.lr,
                     batch_size=a.batch_size, seed=a.seed, save_every=0, log_every=50, device="cpu", bf16=bf16)
    wall = time.perf_counter() - start
    last = [h["eval_f1"] for h in r.history if "eval_f1" in h][-1]
    return {"f1": last, "best_f1": r.best, "train_s": r.seconds["training"], "eval_s": r.seconds["evaluation"],
            "wall_s": wall}


def run_reference(a):
    """The reference's BertForTokenClassification in a plain loop: first-piece labels (-100 on the other pieces),
    random batches padded to their longest, AdamW with linear warm-up (6%) and decay, clipping at 1.0."""
    import transformers
    from seqeval.metrics import f1_score
    train, dev = read_conll(TRAIN), read_conll(DEV)
    tags = tag_order(t for s in train.tags for t in s)
    index = {t: i for i, t in enumerate(tags)}
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(a.seed)
    model = transformers.BertForTokenClassification.from_pretrained(MINILM, num_labels=len(tags))

    def encode(ex):
        enc = tok(ex.words, is_split_into_words=True, truncation=True, max_length=128)
        labels = []
        for i, tags_ in enumerate(ex.tags):
            previous, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == previous else index[tags_[w]])
                previous = w
            labels.append(row)
        return enc, labels

    enc, labels = encode(train)
    collate = transformers.DataCollatorForTokenClassification(tok)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "token_type_ids": enc["token_type_ids"][i], "labels": labels[i]} for i in range(len(labels))]
    steps = math.ceil(len(rows) / a.batch_size) * a.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    g = torch.Generator().manual_seed(a.seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(a.epochs):
        order = torch.randperm(len(rows), generator=g).tolist()
        for k in range(0, len(order), a.batch_size):
            batch = collate([rows[i] for i in order[k:k + a.batch_size]])
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    train_s = time.perf_counter() - start
    model.eval()
    denc, _ = encode(dev)
    pred = []
    with torch.no_grad():
        for i in range(len(dev.words)):
            ids = {k: torch.tensor([denc[k][i]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            best = model(**ids).logits[0].argmax(-1).tolist()
            words, previous = {}, None
            for pos, w in enumerate(denc.word_ids(i)):
                if w is not None and w != previous:
                    words[w] = tags[best[pos]]
                previous = w
            pred.append([words.get(w, "O") for w in range(len(dev.words[i]))])
    return {"f1": f1_score(dev.tags, pred), "train_s": train_s}


def in_child(side, a, seed) -> dict:
    """One side, one seed, in a fresh process: no side inherits another's threads, heap or caches (in one process,
    bertscope's fp32 run of the third seed took 147 s, and 121 s alone)."""
    import json
    import subprocess
    cmd = [sys.executable, __file__, "--child", side, "--seeds", str(seed), "--epochs", str(a.epochs), "--lr",
           str(a.lr), "--batch-size", str(a.batch_size)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{side}, seed {seed} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def child(a):
    import json
    import resource
    a.seed = int(a.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_reference(a) if a.child == "ref" else run_bertscope(a, Path(tmp) / a.child, bf16=a.child == "ours16")
    r = {k: float(v) for k, v in r.items()}
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(r))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", default="42", help="comma-separated seeds; every side runs once per seed")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--bf16", action="store_true", help="also bertscope with bf16 autocast (where the CPU has bf16)")
    p.add_argument("--child", choices=["ours", "ours16", "ref"], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    from bertscope.kernels import bf16_on_cpu
    bf16_ok, bf16_why = bf16_on_cpu()
    sides = ["ours"] + (["ours16"] if a.bf16 and bf16_ok else []) + ([] if a.skip_reference else ["ref"])
    runs = {side: [] for side in sides}
    for seed in seeds:                  # one seed at a time, every side, so that drift hits all sides alike
        for side in sides:
            runs[side].append(in_child(side, a, seed))
            print("seed", seed, side, runs[side][-1], flush=True)
    n_train, n_dev = len(read_conll(TRAIN)), len(read_conll(DEV))
    caps = [f"`{k}={os.environ[k]}`" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
            if os.environ.get(k)]                       # an ISA-capped run (another CPU's code path) has its own table
    lines = [f"#### {cpu_label()}" + (f", capped: {', '.join(caps)}" if caps else ""), "", f"`python bench/ner_wnut.py {' '.join(sys.argv[1:])}` · {machine()} · commit {commit()}", "",
             f"all-MiniLM-L6-v2, W-NUT 2016 train ({n_train} tweets) → dev ({n_dev}), {a.epochs} epoch(s), lr "
             f"{a.lr:g}, batch {a.batch_size}, AdamW, linear warm-up 6% and decay, max length 128, first-piece labels, "
             f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, the same for every side. Entity F1 "
             "by seqeval (exact span and type) after the last epoch. Each side and seed runs in a child process of "
             "its own, one after the other. Training time: the steps alone (for bertscope "
             "its epoch-end checkpoints too, evaluation excluded: `Result.seconds`); the whole bertscope call adds "
             "loading, tokenizing, an evaluation of dev after every epoch and saving.", ""]
    names = {"ours": "bertscope `finetune --task token-classification`", "ours16": "bertscope, bf16 autocast (`--bf16`)",
             "ref": "reference `BertForTokenClassification`, plain loop (fp32)"}
    short = {"ours": "bertscope", "ours16": "bertscope bf16", "ref": "the reference"}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines += ["| | " + " | ".join(f"F1, seed {s}" for s in seeds) + (" | mean F1" if len(seeds) > 1 else "")
              + " | training (mean) | ratio |", "|---|" + "---|" * (len(seeds) + (len(seeds) > 1) + 2)]
    for side in sides:
        f1s = [r["f1"] for r in runs[side]]
        t = mean([r["train_s"] for r in runs[side]])
        if side == "ref":
            ratio = "(baseline)"
        elif "ref" in runs:
            ratio = f"**{mean([r['train_s'] for r in runs['ref']]) / t:.2f}×** faster"
        else:
            ratio = ""
        lines.append(f"| {names[side]} | " + " | ".join(f"{f:.4f}" for f in f1s)
                     + (f" | **{mean(f1s):.4f}**" if len(seeds) > 1 else "") + f" | {t:.0f} s | {ratio} |")
    if a.bf16 and not bf16_ok:
        lines += ["", f"bertscope bf16: not run, {bf16_why}."]
    walls = [r["wall_s"] for r in runs["ours"]]
    evals = [r["eval_s"] for r in runs["ours"]]
    lines += ["", f"bertscope's whole call (fp32): {mean(walls):.0f} s on average, of which {mean(evals):.0f} s "
              "evaluating dev after every epoch. Peak RSS (mean over seeds): "
              + ", ".join(f"{short[side]} {mean([r['peak_rss_mb'] for r in runs[side]]):,.0f} MB" for side in sides)
              + "."]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    write_section(f"ner-wnut-{vendor()}" + (f"-{cap}" if cap else ""), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
