"""Texts longer than the model: WikiText-2 paragraphs of more than 512 tokens through `embed` and `predict`, cut at
512 tokens against split into windows (`--windows`), side by side in one run, tokenization included.

    python bench/long_texts.py                  # writes the "long-texts" section of BENCHMARKS.md
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MINILM, commit, machine, write_section  # noqa: E402

import bertscope  # noqa: E402
from bertscope import api, infer  # noqa: E402


def paragraphs(tok, min_tokens: int) -> list[str]:
    out = []
    for name in ("valid.txt", "test.txt"):
        for line in (DATA / "wikitext2" / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith(" =") and len(tok.encode(line)) > min_tokens:
                out.append(line.strip())
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stride", type=int, default=128, help="overlap of two windows, in tokens")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each, best kept (after a warm-up)")
    a = p.parse_args()
    loaded = api.load(MINILM)
    tok = loaded.tokenizer
    texts = paragraphs(tok, a.max_length)
    total = sum(len(tok.encode(t)) for t in texts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cls = Path(tmp) / "cls"
        bertscope.save_pretrained(bertscope.from_pretrained(MINILM, head="classification", num_labels=2,
                                                            reinit_head=True), cls)
        tok.save(cls)
        classifier = api.load(cls)
        modes = (("cut at 512 tokens", None), (f"windows of 512, overlap {a.stride}", a.stride))

        def embed(windows):
            enc = infer.tokenize(tok, texts, max_length=a.max_length, windows=windows)
            infer.sentence_embeddings(loaded.model, enc)
            return enc

        def predict(windows):
            infer.class_probabilities(classifier.model, infer.tokenize(tok, texts, max_length=a.max_length,
                                                                       windows=windows))
        for _, windows in modes:                        # warm-up: allocations and kernel choice are not timed
            embed(windows), predict(windows)
        best = {}
        for _ in range(a.repeats):                      # the modes take turns; each keeps its best time
            for name, windows in modes:
                for what, fn in (("embed", embed), ("predict", predict)):
                    start = time.perf_counter()
                    fn(windows)
                    key = (name, what)
                    best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
        for name, windows in modes:
            enc = embed(windows)
            seen = sum(enc.lengths)
            covered = total if windows is not None else sum(min(len(tok.encode(t)), a.max_length) for t in texts)
            rows.append((name, seen, covered, best[(name, "embed")], best[(name, "predict")]))
            print(name, seen, round(best[(name, "embed")], 2), round(best[(name, "predict")], 2), flush=True)
    lines = [f"`python bench/long_texts.py {' '.join(sys.argv[1:])}` · {machine()} · commit {commit()}", "",
             f"all-MiniLM-L6-v2 on the {len(texts)} WikiText-2 paragraphs (valid + test) longer than {a.max_length} "
             f"tokens: {total:,} tokens in all. Tokenization included; `predict` with a two-class head; best of "
             f"{a.repeats} calls after a warm-up, the two ways taking turns.", "",
             "| | tokens of the texts covered | tokens run (with overlaps and special tokens) | embed tokens/s | "
             "embed time | predict time |", "|---|---|---|---|---|---|"]
    for name, seen, covered, t_embed, t_pred in rows:
        lines.append(f"| {name} | {covered:,} ({100 * covered / total:.0f}%) | {seen:,} | {seen / t_embed:,.0f} | "
                     f"{t_embed:.2f} s | {t_pred:.2f} s |")
    write_section("long-texts", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
