"""How soon does the from-scratch Chinese BERT of bench/zh_pretrain.py leave the floor of no context, by how it
starts? Three starts (bertscope.starts), several seeds each, 1,000 steps of character MLM on the same corpus:

  standard       BERT's: every weight normal(0, 0.02), the position table included;
  local-trained  the local start (order in the position table, first-layer heads reading offsets -1, +1, -2, +2),
                 the position table trained with the rest;
  local          the local start as `bertscope pretrain --start local` runs it: the position table kept fixed.

The floor: copying the visible token of the 10% kept and guessing "，" at every [MASK] gives ~13.7% held-out MLM
accuracy (BENCHMARKS.md); a model that reads its neighbours goes above it. The seed changes the initial weights only:
every run sees the same batches and masks (seed 42). Model 4 × 256, batch 16 × 128 tokens, lr 1e-3 (6% warm-up,
linear decay to 0 at step 1,000), dropout 0, one thread; about 11 minutes a run with two runs at once.

    python bench/zh_pretrain.py tokenizer --work /tmp/zh                  # the tokenizer and corpus, once
    python bench/zh_starts.py run --work /tmp/zh --start local --seed 43   # one run (two at once on 2 cores)
    python bench/zh_starts.py report --work /tmp/zh                        # the table, into BENCHMARKS.md
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine, write_section  # noqa: E402
from zh_pretrain import HEADS, HIDDEN, LAYERS, corpus  # noqa: E402

import bertscope  # noqa: E402
from bertscope.starts import apply_start  # noqa: E402
from bertscope.tasks.pretraining import Pretraining  # noqa: E402
from bertscope.train import Settings, train  # noqa: E402

STARTS = {"standard": "BERT's (all random, std 0.02)", "local-trained": "local, position table trained",
          "local": "local, position table fixed (`--start local`)"}
FLOOR = 0.137


def run(a):
    torch.set_num_threads(a.threads)
    work = a.work
    tok = bertscope.load_tokenizer(work / "tokenizer")
    c = bertscope.Config(family="bert", vocab_size=tok.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, intermediate_size=4 * HIDDEN, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(a.seed)
    model = bertscope.Model(c, head="mlm")
    fixed = apply_start(model, "standard" if a.start == "standard" else "local")
    task = Pretraining(tok, "mlm", None, 0.15, dynamic=True, max_length=128)
    files = corpus(work)
    data = task.encode(task.read(files["train"]), seed=42)
    held = task.encode(task.read([files["heldout"]]), seed=43)
    evals, start = [], time.perf_counter()

    def on_event(e):
        if e["event"] == "eval":
            evals.append({"step": e["step"], "loss": e["eval_mlm_loss"], "accuracy": e["eval_mlm_accuracy"],
                          "seconds": time.perf_counter() - start})
            print(a.start, a.seed, json.dumps(evals[-1]), flush=True)
    s = Settings(epochs=None, max_steps=a.steps, batch_size=16, lr=1e-3, warmup=0.06, eval_every=a.steps // 8,
                 save_every=0, log_every=20, seed=42, freeze=fixed if a.start == "local" else ())
    out = work / "starts" / f"{a.start}-{a.seed}"
    train(model, task, data, held, out, s, tokenizer=tok, on_event=on_event)
    (work / "starts" / f"{a.start}-{a.seed}.json").write_text(json.dumps(
        {"start": a.start, "seed": a.seed, "steps": a.steps, "evals": evals, "threads": a.threads,
         "minutes": (time.perf_counter() - start) / 60}, indent=1))


def report(a):
    runs = [json.loads(p.read_text()) for p in sorted((a.work / "starts").glob("*.json"))]
    if not runs:
        raise SystemExit(f"no runs in {a.work / 'starts'}")
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    shown = [x for x in steps if x >= steps[-1] // 2]
    L = [f"`python bench/zh_starts.py run --work W --start S --seed N` (two at once, one thread each) · {machine()} · "
         f"commit {commit()}", "",
         "Held-out MLM accuracy (300 pfr1998 dev paragraphs + 300 zh_reviews dev texts) of the 4 × 256 Chinese BERT "
         "after character MLM on pfr1998/raw.txt + the zh_reviews training texts, batch 16 × 128, lr 1e-3, dropout "
         f"0; the same batches and masks in every run, the seed draws the initial weights. The floor of no context "
         f"is {FLOOR:.1%}; **bold**: above it by 2 points or more.", "",
         "| start | seed | " + " | ".join(f"step {x:,}" for x in shown) + " | held-out loss at the end |",
         "|---|---|" + "---|" * len(shown) + "---|"]
    order = {name: i for i, name in enumerate(STARTS)}
    for r in sorted(runs, key=lambda r: (order[r["start"]], r["seed"])):
        acc = {e["step"]: e["accuracy"] for e in r["evals"]}
        cells = [("**{:.1%}**" if acc[x] >= FLOOR + 0.02 else "{:.1%}").format(acc[x]) if x in acc else "—"
                 for x in shown]
        L.append(f"| {STARTS[r['start']]} | {r['seed']} | " + " | ".join(cells) + f" | {r['evals'][-1]['loss']:.2f} |")
    write_section("zh-starts", "\n".join(L))
    print("\n".join(L))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["run", "report"])
    p.add_argument("--work", type=Path, default=Path("/tmp/zh"))
    p.add_argument("--start", choices=list(STARTS), default="local")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    (a.work / "starts").mkdir(parents=True, exist_ok=True)
    run(a) if a.stage == "run" else report(a)


if __name__ == "__main__":
    main()
