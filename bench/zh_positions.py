"""Can the from-scratch Chinese BERT of bench/zh_pretrain.py learn to read its neighbours, and how soon? Two
synthetic corpora of 300 CJK characters, uniform (so that no unigram guess helps), where a masked character can be
read from the text around it only:

  runs   lines of one character repeated 20-40 times: attending to nearby positions is enough;
  pairs  lines of characters each written twice ("AABBCC..."): the partner sits exactly one position away, the
         attention by offset that real text needs (the character before or after).

The model is zh_pretrain's (4 layers × 256, 4 heads, learned positions), dropout off, MLM only, segments of up to
128 tokens, batch 16, AdamW with 6% warm-up and linear decay; held-out MLM accuracy on 300 unseen lines. Copying the
10% of chosen tokens that are left unchanged gives ~10%; reading the neighbours gives up to ~100% (runs) or ~50-100%
(pairs: the partner is on the left or the right).

    python bench/zh_positions.py --corpus pairs --steps 2500          # ~15 min on one core
    python bench/zh_positions.py --corpus pairs --steps 2500 --sinusoid 0.03
"""

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine  # noqa: E402

import bertscope  # noqa: E402
from bertscope import api  # noqa: E402

CHARS = [chr(0x4E00 + i) for i in range(300)]


def lines_of(corpus: str, n: int, rng: random.Random) -> list[str]:
    if corpus == "runs":
        return [rng.choice(CHARS) * rng.randint(20, 40) for _ in range(n)]
    return ["".join(rng.choice(CHARS) * 2 for _ in range(rng.randint(10, 20))) for _ in range(n)]


def sinusoid(rows: int, width: int) -> torch.Tensor:
    """The Transformer's sinusoidal position table (rows, width), values in [-1, 1]."""
    pos = torch.arange(rows, dtype=torch.float32)[:, None]
    angle = pos / 10000 ** (torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(rows, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", choices=["runs", "pairs"], default="pairs")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sinusoid", type=float, default=None, help="start the position table as a sinusoid × this")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/zh-positions"))
    a = p.parse_args()
    work = a.work / a.corpus
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "train.txt").exists():
        rng = random.Random(0)
        for name, n in (("train.txt", 20000), ("heldout.txt", 300)):
            (work / name).write_text("\n".join(lines_of(a.corpus, n, rng)) + "\n", encoding="utf-8")
        api.train_tokenizer([work / "train.txt"], work / "tokenizer", family="bert", vocab_size=1000, overwrite=True)
    tok = bertscope.load_tokenizer(work / "tokenizer")
    c = bertscope.Config(family="bert", vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4,
                         num_attention_heads=4, intermediate_size=1024, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = work / "config.json"
    config.write_text(c.to_json_string(), encoding="utf-8")
    init = None
    if a.sinusoid is not None:
        torch.manual_seed(42)
        m = bertscope.Model(c, head="pretraining")
        with torch.no_grad():
            m.embeddings.position.weight.copy_(sinusoid(*m.embeddings.position.weight.shape) * a.sinusoid)
        init = work / "init-sinusoid"
        shutil.rmtree(init, ignore_errors=True)
        bertscope.save_pretrained(m, init)
        tok.save(init)
    start = time.perf_counter()
    r = api.pretrain([work / "train.txt"], work / "out", tokenizer=work / "tokenizer",
                     family=None if init else "bert", config=None if init else str(config), init=init,
                     objective="mlm",
                     max_length=128, max_steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=0.06,
                     eval=work / "heldout.txt", eval_every=max(1, a.steps // 6), log_every=50, save_every=0,
                     seed=42, device="cpu", overwrite=True, threads=a.threads)
    curve = [(h["step"], h["eval_mlm_accuracy"]) for h in r.history if "eval_mlm_accuracy" in h]
    start_ = f"sinusoid × {a.sinusoid:g}" if a.sinusoid is not None else "random (std 0.02)"
    print(f"{a.corpus}, positions {start_}, lr {a.lr:g}, batch {a.batch_size}, {a.steps} steps, "
          f"{time.perf_counter() - start:.0f} s · {machine()} · commit {commit()}")
    print("held-out MLM accuracy by step: " + ", ".join(f"{s}: {acc:.1%}" for s, acc in curve))


if __name__ == "__main__":
    main()
