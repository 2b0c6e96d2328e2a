"""Inference and pretraining-step speed, bertscope against the reference implementation (transformers, sdpa),
measured side by side in one process on the same inputs, plus this machine's fp32 matmul peak.

    pip install -e ".[test]"
    python bench/inference.py                    # everything; writes the "speed" section of BENCHMARKS.md
    python bench/inference.py --quick            # fewer texts and repeats

What is timed (real tokens/s counts only non-padding tokens):
  * mixed-length text in file order, as a user runs it: the reference tokenizes and pads each batch of 32 / 128 in
    file order; bertscope's `infer.sentence_embeddings` (tokenize once, sort by length, packed batches, results in
    input order) on the same texts. Also the reference fed the same length-sorted batches (its best case);
  * equal-length batches (B=8, L=128 and 512), bert-base shape: the kernel path itself;
  * one MLM+NSP pretraining step (forward, backward, AdamW), small and base configs;
  * achieved FLOP/s of bert-base inference at L=128 against the fp32 matmul peak measured in the same run.
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
from bertscope import infer  # noqa: E402
from bertscope.data import read_examples  # noqa: E402
from bertscope.explain import estimate_flops, matmul_rates  # noqa: E402
from bertscope.model import compile_model  # noqa: E402


DEVICE, DTYPE = torch.device("cpu"), torch.float32


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def best_of(fn, repeats):
    fn() if DEVICE.type == "cuda" else None     # warm-up on GPU (kernels, allocator)
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def to_device(batch):
    return {k: v.to(DEVICE) for k, v in batch.items()}


def matmul_peak(repeats=5):
    """torch's matmul and, on the CPU, oneDNN's product (explain.matmul_rates); returns (the faster, {name: rate})."""
    rates = matmul_rates(DEVICE, DTYPE, repeats)
    return max(rates.values()), rates


def twin_models(folder):
    """The same weights in bertscope and in the reference implementation (sdpa attention)."""
    import transformers
    ours = bertscope.from_pretrained(folder, head="base").to(DEVICE, DTYPE)
    theirs = transformers.BertModel.from_pretrained(folder, attn_implementation="sdpa").eval().to(DEVICE, DTYPE)
    return ours, theirs


def text_speed(ours, theirs, tok, hf_tok, texts, batch_size, repeats, compiled=None):
    enc = infer.tokenize(tok, texts, max_length=512)
    real = sum(len(x) for x in enc.ids)
    lengths = [len(x) for x in enc.ids]
    file_batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    sorted_batches = [[texts[j] for j in order[i:i + batch_size]] for i in range(0, len(texts), batch_size)]

    def reference(batches):
        with torch.inference_mode():
            for b in batches:
                theirs(**to_device(hf_tok(b, padding=True, truncation=True, max_length=512, return_tensors="pt")))

    def ours_user_path():  # what `bertscope embed` does on a file: tokenize, sort, pack, restore order
        e = infer.tokenize(tok, texts, max_length=512)
        infer.sentence_embeddings(ours, e, batch_size=batch_size)

    def ours_padded_file_order():
        with torch.inference_mode():
            for b in file_batches:
                ours(**to_device(tok(b, max_length=512)))

    r = {"real_tokens": real}
    r["reference_file"] = real / best_of(lambda: reference(file_batches), repeats)
    r["reference_sorted"] = real / best_of(lambda: reference(sorted_batches), repeats)
    r["ours_padded_file"] = real / best_of(ours_padded_file_order, repeats)
    r["ours"] = real / best_of(ours_user_path, repeats)
    if compiled is not None:   # the same path with the model under torch.compile; compiling itself is not timed
        e = infer.tokenize(tok, texts, max_length=512)
        run = lambda: infer.sentence_embeddings(compiled, e, batch_size=batch_size)  # noqa: E731
        run()
        r["ours_compiled"] = real / best_of(run, repeats)
    return r


def equal_length(ours, theirs, B, L, repeats, compiled=None):
    ids = torch.randint(1000, 20000, (B, L), device=DEVICE)
    mask = torch.ones_like(ids)
    r = {}
    with torch.inference_mode():
        theirs(input_ids=ids, attention_mask=mask)
        ours(input_ids=ids, attention_mask=mask)
        t_ref = best_of(lambda: theirs(input_ids=ids, attention_mask=mask), repeats)
        t_ours = best_of(lambda: ours(input_ids=ids, attention_mask=mask), repeats)
        if compiled is not None:
            compiled(input_ids=ids, attention_mask=mask)
            r["ours_compiled"] = B * L / best_of(lambda: compiled(input_ids=ids, attention_mask=mask), repeats)
    flops = estimate_flops(ours, B, L)["total"]
    return {"reference": B * L / t_ref, "ours": B * L / t_ours, "ours_flops": flops / t_ours,
            "reference_flops": flops / t_ref, **r, "flops": flops}


def pretrain_step(config_kw, B, L, repeats, compile=False):
    import transformers
    c = bertscope.Config(family="bert", **config_kw)
    torch.manual_seed(0)
    ours = bertscope.Model(c, head="pretraining").train()
    with tempfile.TemporaryDirectory() as tmp:
        bertscope.save_pretrained(ours, tmp)
        theirs = transformers.BertForPreTraining.from_pretrained(tmp, attn_implementation="sdpa").train()
    ours, theirs = ours.to(DEVICE), theirs.to(DEVICE)
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=DTYPE == torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, c.vocab_size, (B, L), generator=g)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(B, L, generator=g) < 0.15
    labels[chosen] = ids[chosen]
    nsp = torch.randint(0, 2, (B,), generator=g)
    types = torch.zeros_like(ids)
    types[:, L // 2:] = 1
    ids, labels, nsp, types = (t.to(DEVICE) for t in (ids, labels, nsp, types))

    def step(model, opt, **kw):
        with autocast:
            out = model(input_ids=ids, token_type_ids=types, labels=labels, next_sentence_label=nsp, **kw)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    opt_r = torch.optim.AdamW(theirs.parameters(), 1e-4, fused=True)
    opt_o = torch.optim.AdamW(ours.parameters(), 1e-4, fused=True)
    step(theirs, opt_r), step(ours, opt_o, masked_only=True)
    t_ref = best_of(lambda: step(theirs, opt_r), repeats)
    t_full = best_of(lambda: step(ours, opt_o), repeats)
    t_ours = best_of(lambda: step(ours, opt_o, masked_only=True), repeats)
    r = {"reference": B * L / t_ref, "ours_all_positions": B * L / t_full, "ours": B * L / t_ours}
    if compile:
        compile_model(ours)
        step(ours, opt_o, masked_only=True), step(ours, opt_o, masked_only=True)   # compile forward and backward
        r["ours_compiled"] = B * L / best_of(lambda: step(ours, opt_o, masked_only=True), repeats)
    return r


def check_parity(models, tok, texts):
    """On the GPU: bertscope's packed path (varlen flash attention) and padded path, in the benchmark's dtype,
    against the reference run in fp32: relative error ||a - b|| / ||b|| over the real tokens."""
    for name, (ours, theirs) in models.items():
        b = to_device(tok(texts[:64]))
        real = b["attention_mask"].bool()
        with torch.inference_mode():
            padded = ours(**b).last_hidden_state[real].float()
            packed = torch.cat(infer.token_embeddings(ours, infer.tokenize(tok, texts[:64]))).float().to(DEVICE)
            ref = theirs.float()(**b).last_hidden_state[real].float()
            theirs.to(DTYPE)
            ref_low = theirs(**b).last_hidden_state[real].float()
        rel = lambda a: float((a - ref).norm() / ref.norm())  # noqa: E731
        print(f"parity on {DEVICE}, {name}, relative error against the reference in fp32: bertscope {DTYPE} "
              f"packed {rel(packed):.1e}, padded {rel(padded):.1e}; the reference in {DTYPE} {rel(ref_low):.1e}",
              flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--limit", type=int, default=None,
                   help="texts of SST-2 timed with MiniLM (default 1000, quick 300); AG News texts are 4× longer "
                        "and bert-base is 4× the work, so each of those takes a quarter")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--bf16", action="store_true", help="models in bfloat16 (training steps under bf16 autocast)")
    p.add_argument("--random-weights", action="store_true",
                   help="MiniLM's shape with random weights (where the checkpoint is not at hand); the speed is "
                        "the same, only the tokenizer files are read")
    p.add_argument("--section", default="speed", help="the BENCHMARKS.md section to write")
    p.add_argument("--compile", action="store_true", help="also time bertscope under torch.compile (dynamic shapes)")
    a = p.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = torch.device(a.device), (torch.bfloat16 if a.bf16 else torch.float32)
    import transformers
    repeats = a.repeats
    limit = a.limit or (300 if a.quick else 1000)
    peak, rates = matmul_peak()
    print(f"{str(DTYPE)[6:]} matmul peak: {peak / 1e9:.0f} GFLOP/s", rates, flush=True)

    tok = bertscope.load_tokenizer(MINILM)
    hf_tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        bertscope.save_pretrained(bertscope.from_config("bert-base"), Path(tmp) / "bert-base")
        minilm = MINILM
        if a.random_weights:
            bertscope.save_pretrained(bertscope.from_config("minilm-l6-h384"), Path(tmp) / "minilm")
            minilm = Path(tmp) / "minilm"
        models = {"MiniLM-L6-H384" + (" (random weights)" if a.random_weights else ""): twin_models(minilm),
                  "bert-base (random weights)": twin_models(Path(tmp) / "bert-base")}
        if DEVICE.type == "cuda":
            check_parity(models, tok, read_examples(DATA / "sst2/dev.tsv").texts[:256])
    compiled = {}
    if a.compile:     # a second copy of each model, compiled; the eager one stays as it is
        import copy
        compiled = {name: compile_model(copy.deepcopy(ours)) for name, (ours, _) in models.items()}
    for data in ("sst2/dev.tsv", "agnews/test.tsv"):
        for name, (ours, theirs) in models.items():
            n = limit // (4 if data.startswith("agnews") else 1) // (4 if name.startswith("bert-base") else 1)
            texts = read_examples(DATA / data).texts[:n]
            for bs in (32, 128):
                r = text_speed(ours, theirs, tok, hf_tok, texts, bs, repeats, compiled.get(name))
                results[("text", data, name, bs)] = {**r, "texts": n}
                print(data, name, bs, {k: round(v) for k, v in r.items()}, flush=True)
    ours, theirs = models["bert-base (random weights)"]
    for L in (128, 512):
        r = equal_length(ours, theirs, 8, L, repeats + 1, compiled.get("bert-base (random weights)"))
        results[("equal", L)] = r
        print("equal", L, {k: round(v) for k, v in r.items()}, flush=True)
    small = dict(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                 intermediate_size=2048, max_position_embeddings=512)
    base = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=512)
    for name, kw, B in (("small (4 × 512)", small, 16), ("base (12 × 768)", base, 8)):
        r = pretrain_step(kw, B, 128, repeats, a.compile)
        results[("pretrain", name, B)] = r
        print("pretrain", name, {k: round(v) for k, v in r.items()}, flush=True)

    lines = ["### Speed against the reference implementation (`bench/inference.py`)", "",
             f"`python bench/inference.py {' '.join(sys.argv[1:])}` · {machine()} · commit {commit()} · "
             f"{'bf16' if a.bf16 else 'fp32'} · reference: transformers {transformers.__version__} with "
             f"`attn_implementation=\"sdpa\"` · the first N texts of each file (N in the table) · best of {repeats} · "
             f"{str(DTYPE)[6:]} matmul peak measured in the same run: **{peak / 1e9:.0f} GFLOP/s** ("
             + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items()) + ")." + (
                 " bertscope's Linear layers run oneDNN's product on the CPU; the reference's run torch's "
                 "default (MKL in float32, oneDNN in bfloat16)." if "oneDNN" in rates else ""), "",
             "Mixed-length real text (real tokens/s; ratio = bertscope / reference):", "",
             "| data | model | N | batch | reference, file order | reference, length-sorted | bertscope, padded file "
             "order | **bertscope** (`embed` path) | vs file order | vs length-sorted |" + (
                 " bertscope compiled | compiled vs file order | compiled vs length-sorted |" if a.compile else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if a.compile else "")]
    for (kind, *key), r in results.items():
        if kind == "text":
            data, name, bs = key
            lines.append(f"| {data} | {name} | {r['texts']} | {bs} | {r['reference_file']:,.0f} | {r['reference_sorted']:,.0f} | "
                         f"{r['ours_padded_file']:,.0f} | {r['ours']:,.0f} | "
                         f"{r['ours'] / r['reference_file']:.2f}× | {r['ours'] / r['reference_sorted']:.2f}× |" + (
                             f" {r['ours_compiled']:,.0f} | {r['ours_compiled'] / r['reference_file']:.2f}× | "
                             f"{r['ours_compiled'] / r['reference_sorted']:.2f}× |" if a.compile else ""))
    lines += ["", "Equal-length batches, bert-base shape, B=8 (tokens/s; FLOP/s from `explain`'s count):", "",
              "| L | reference | bertscope | ratio | bertscope GFLOP/s | of matmul peak |" + (
                  " bertscope compiled | ratio | of matmul peak |" if a.compile else ""),
              "|---|---|---|---|---|---|" + ("---|---|---|" if a.compile else "")]
    for L in (128, 512):
        r = results[("equal", L)]
        lines.append(f"| {L} | {r['reference']:,.0f} | {r['ours']:,.0f} | {r['ours'] / r['reference']:.2f}× | "
                     f"{r['ours_flops'] / 1e9:.0f} | {100 * r['ours_flops'] / peak:.0f}% |" + (
                         f" {r['ours_compiled']:,.0f} | {r['ours_compiled'] / r['reference']:.2f}× | "
                         f"{100 * r['flops'] * r['ours_compiled'] / (8 * L) / peak:.0f}% |" if a.compile else ""))
    lines += ["", "MLM + NSP pretraining step (forward, backward, AdamW), L=128, 15% of positions scored "
                  "(tokens/s):", "",
              "| config | batch | reference `BertForPreTraining` | bertscope, MLM head everywhere | **bertscope, "
              "masked positions only** | ratio |" + (" compiled | ratio |" if a.compile else ""),
              "|---|---|---|---|---|---|" + ("---|---|" if a.compile else "")]
    for (kind, *key), r in results.items():
        if kind == "pretrain":
            name, B = key
            lines.append(f"| {name} | {B} | {r['reference']:,.0f} | {r['ours_all_positions']:,.0f} | "
                         f"{r['ours']:,.0f} | {r['ours'] / r['reference']:.2f}× |" + (
                             f" {r['ours_compiled']:,.0f} | {r['ours_compiled'] / r['reference']:.2f}× |"
                             if a.compile else ""))
    write_section(a.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
