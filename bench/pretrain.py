"""MLM + NSP pretraining, bertscope against the reference implementation's BertForPreTraining: the same tiny
config, the same initial weights, the same batches, steps and schedule, in one run. Records tokens/s and the final
held-out masked-LM loss (both scored by the same evaluator), then whether the pretrained model, fine-tuned on SST-2,
beats the same model fine-tuned from random initialisation.

    pip install -e ".[test]"
    python bench/pretrain.py                       # writes the "pretrain" section of BENCHMARKS.md
    python bench/pretrain.py --steps 100 --quick
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, commit, machine, write_section  # noqa: E402

import bertscope  # noqa: E402
from bertscope.data import read_documents  # noqa: E402
from bertscope import api, infer  # noqa: E402
from bertscope.tasks.pretraining import Pretraining  # noqa: E402
from bertscope.tokenize import train_tokenizer  # noqa: E402
from bertscope.train import Settings, train  # noqa: E402


def reference_pretrain(folder, task, instances, args, device):
    """BertForPreTraining on the same batches as bertscope's loop (padded, logits at every position)."""
    import transformers
    model = transformers.BertForPreTraining.from_pretrained(folder, attn_implementation="sdpa").train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)
    steps = args.max_steps
    warmup = max(1, int(args.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    tok = task.tok
    tokens, epoch, position, warmup_steps = 0, 0, 0, 10
    order = torch.randperm(len(instances), generator=torch.Generator().manual_seed(args.seed * 7919)).tolist()
    start = time.perf_counter()
    for step in range(steps):
        if step == warmup_steps:     # steady state: leave the first steps (allocations, kernel choice) out
            if device.type == "cuda":
                torch.cuda.synchronize()
            tokens, start = 0, time.perf_counter()
        if position + args.batch_size > len(order):
            epoch, position = epoch + 1, 0
            order = torch.randperm(len(instances),
                                   generator=torch.Generator().manual_seed(args.seed * 7919 + epoch)).tolist()
        index = order[position:position + args.batch_size]
        position += len(index)
        batch, labels, pairs = task.masked(instances, index, args.seed, epoch if task.dynamic else 0)
        cu = batch["cu_seqlens"]
        L = int((cu[1:] - cu[:-1]).max())
        B = len(index)
        ids = torch.full((B, L), tok.pad_token_id)
        types, lab, mask = torch.zeros(B, L, dtype=torch.long), torch.full((B, L), -100), torch.zeros(B, L, dtype=torch.long)
        for b in range(B):
            s, e = int(cu[b]), int(cu[b + 1])
            ids[b, :e - s], types[b, :e - s], lab[b, :e - s], mask[b, :e - s] = \
                batch["input_ids"][s:e], batch["token_type_ids"][s:e], labels[s:e], 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), token_type_ids=types.to(device),
                    labels=lab.to(device), next_sentence_label=pairs.to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad()
        tokens += int(mask.sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model.cpu(), tokens / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--finetune-examples", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ft-lrs", default="1e-4,5e-4", help="fine-tuning learning rates tried for both starts")
    p.add_argument("--section", default="pretrain")
    a = p.parse_args()
    device = torch.device(a.device)
    import transformers
    valid, test = DATA / "wikitext2" / "valid.txt", DATA / "wikitext2" / "test.txt"
    tok = train_tokenizer([valid], "bert", 8000)
    task = Pretraining(tok, "mlm+nsp", dynamic=True, max_length=128)
    data = task.encode(read_documents([valid]), seed=1)
    instances = data.extra["instances"]
    held = task.encode(read_documents([test]), seed=2)
    held_out = infer.Encoded(held.ids[:512], held.types[:512], extra={"instances": held.extra["instances"][:512]})
    config = bertscope.Config(family="bert", vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4,
                              num_attention_heads=4, intermediate_size=1024, max_position_embeddings=128)
    args = Settings(epochs=None, max_steps=a.steps, batch_size=a.batch_size, lr=1e-3, save_every=0, log_every=10,
                    seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        init = bertscope.Model(config, head="pretraining")
        bertscope.save_pretrained(init, tmp / "init")
        tok.save(tmp / "init")

        ours = bertscope.from_pretrained(tmp / "init").train().to(device)
        windows = []     # the loop's own per-window tokens/s: the steady state, without the final saves
        train(ours, task, data, None, tmp / "ours", args, tokenizer=tok,
              on_event=lambda r: windows.append(r["tokens_per_s"]) if r.get("event") == "log" else None)
        ours_tps = sum(windows[1:]) / len(windows[1:])
        ours_eval = task.evaluate(bertscope.from_pretrained(tmp / "ours"), held_out, seed=args.seed)
        print("bertscope", round(ours_tps), ours_eval, flush=True)

        torch.manual_seed(0)
        ref_model, ref_tps = reference_pretrain(tmp / "init", task, instances, args, device)
        ref_model.save_pretrained(tmp / "ref")
        ref_eval = task.evaluate(bertscope.from_pretrained(tmp / "ref"), held_out, seed=args.seed)
        print("reference", round(ref_tps), ref_eval, flush=True)

        # does pretraining help? fine-tune both the pretrained and the random model on SST-2
        rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp / "train.tsv").write_text("".join(rows[:a.finetune_examples + 1]), encoding="utf-8")
        lrs = [float(x) for x in a.ft_lrs.split(",")]
        acc = {}
        for name, folder in (("pretrained", tmp / "ours"), ("random init", tmp / "init")):
            for lr in lrs:
                res = api.finetune(folder, tmp / "train.tsv", tmp / f"ft-{name}-{lr}", eval=DATA / "sst2" / "dev.tsv",
                                   new_head=True, epochs=1, lr=lr, batch_size=32, save_every=0, seed=0,
                                   device=str(device))
                acc[(name, lr)] = res.best
                print(name, lr, acc[(name, lr)], flush=True)

    uniform = math.log(tok.vocab_size)
    where = f" on {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    lines = [f"### MLM + NSP pretraining{where} (`bench/pretrain.py`)", "",
             f"`python bench/pretrain.py {' '.join(sys.argv[1:])}` · {machine()} · commit "
             f"{commit()} · BERT 4 layers × 256, vocab {tok.vocab_size} (WordPiece trained on wikitext2/valid.txt), "
             f"sequences of up to 128 tokens from wikitext2/valid.txt ({len(instances)} NSP pairs), lr 1e-3, "
             f"the same initial weights, batches, masks and schedule for both (tokens/s in the steady state, after "
             f"the first 10 steps); the reference is transformers "
             f"{transformers.__version__} `BertForPreTraining` (sdpa) on padded batches. Held-out masked-LM loss on "
             f"512 pairs of wikitext2/test.txt, scored by the same evaluator (uniform guess: ln {tok.vocab_size} = "
             f"{uniform:.2f}).", "",
             "| | real tokens/s | held-out MLM loss | held-out MLM accuracy | NSP accuracy |", "|---|---|---|---|---|",
             f"| reference | {ref_tps:,.0f} | {ref_eval['mlm_loss']:.3f} | {ref_eval['mlm_accuracy']:.3f} | "
             f"{ref_eval['pair_accuracy']:.3f} |",
             f"| bertscope | {ours_tps:,.0f} | {ours_eval['mlm_loss']:.3f} | {ours_eval['mlm_accuracy']:.3f} | "
             f"{ours_eval['pair_accuracy']:.3f} |",
             f"| ratio | **{ours_tps / ref_tps:.2f}×** | | | |", "",
             f"Then fine-tuned on the first {a.finetune_examples} SST-2 training phrases for one epoch (batch 32, "
             "at each learning rate), scored on sst2/dev.tsv (the majority class alone scores 0.5555):", "",
             "| start | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs),
             f"| pretrained above ({a.steps} steps) | " + " | ".join(f"{acc[('pretrained', lr)]:.4f}" for lr in lrs)
             + " |",
             "| random initialisation | " + " | ".join(f"{acc[('random init', lr)]:.4f}" for lr in lrs) + " |"]
    write_section(a.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
