"""Text in, sentence vectors out: bertscope against the tools a user would otherwise reach for, side by side in one
run on all-MiniLM-L6-v2 (mean pooling, L2-normalised), the same texts, batch size and threads for all.
Tokenization is inside the timed call of every contender.

    pip install -e ".[bench]"
    python bench/peers.py                                   # SST-2 dev, first 872 sentences, 2 threads, best of 3
    python bench/peers.py --dataset agnews --limit 500      # AG News test (longer texts)
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/peers.py
                                                            # the AVX2 stand-in for other CPUs (section ...-avx2)

Contenders:
  1. sentence-transformers `encode(texts, batch_size=B)` (it sorts by character count, longest first);
  2. the reference implementation (transformers BertModel, sdpa), batches in file order, each tokenized with the
     fast tokenizer and padded to its longest; mean pooling + L2 normalisation;
  3. the same reference fed length-sorted batches (the texts tokenized once, sorted by token count, each batch
     padded to its longest; results put back in input order);
  4. ONNX Runtime fp32 (CPUExecutionProvider) on bertscope's own export, length-sorted batches as in 3, pooling in
     numpy;
  5. ONNX Runtime with dynamic int8 quantization (QInt8 weights) of that export, the same way;
  6. bertscope: `infer.tokenize` + `infer.sentence_embeddings` (length-sorted packed batches, input order);
  7. bertscope int8 (`--int8`), where `api.place` has an int8 option.

Every contender gets one untimed warm-up call, then --repeats timed calls in a fresh random order each round (so
machine noise hits all alike); the best is kept. Real tokens/s counts the non-padding tokens of bertscope's
tokenizer (the same count for all). Each contender's vectors are compared with the reference's (2, file order).

Threads: torch (`set_num_threads`, OMP/MKL), onnxruntime (intra_op_num_threads) and the `tokenizers` library get
--threads. `tokenizers` parallelises encode_batch over rayon's global pool when TOKENIZERS_PARALLELISM is unset or
true; the pool's size comes from RAYON_NUM_THREADS (older rayon: RAYON_RS_NUM_CPUS), read when it is first used, so
both are set here before anything is imported.

ISA caps: ONEDNN_MAX_CPU_ISA caps oneDNN (bertscope's Linear products where it picked oneDNN) and
ATEN_CPU_CAPABILITY torch's own vectorised kernels; MKL (torch's default fp32 matmul, which the reference and
sentence-transformers run) is capped only by MKL_ENABLE_INSTRUCTIONS, and ONNX Runtime's MLAS kernels by nothing
(they dispatch on CPUID). The header of the table says which caps were in force.
"""

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("sst2", "agnews"), default="sst2",
                   help="sst2: GLUE SST-2 dev sentences; agnews: AG News test texts (longer)")
    p.add_argument("--limit", type=int, default=872, help="the first N texts of the file (default 872)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per contender, best kept (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--int8", action="store_true", help="also bertscope int8 (where api.place offers it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-round contender order")
    p.add_argument("--ort-per-channel", action="store_true",
                   help="quantize the ONNX weights per output channel (default: per tensor, quantize_dynamic's own)")
    p.add_argument("--ort-no-spin", action="store_true",
                   help="onnxruntime's intra-op threads block instead of spin-waiting (helps on a loaded machine)")
    p.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    return p.parse_args(argv)


ARGS = parse_args()
# Before torch, onnxruntime or tokenizers are imported: thread pools read these once.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
    os.environ[_var] = str(ARGS.threads)
os.environ["TOKENIZERS_PARALLELISM"] = "true"

import gc  # noqa: E402
import inspect  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MINILM, commit, cpu_label, machine, vendor, write_section  # noqa: E402

MAX_LENGTH = 512
FILES = {"sst2": ("sst2/dev.tsv", "sentence"), "agnews": ("agnews/test.tsv", "text")}


def vendor_title() -> str:
    return cpu_label()


def isa_tag() -> str:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip()
    return cap.lower() if cap else "native"


def caps_note() -> str:
    caps = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
            if os.environ.get(k)}
    if not caps:
        return "no ISA caps"
    note = "caps: " + ", ".join(f"`{k}={v}`" for k, v in caps.items())
    if "MKL_ENABLE_INSTRUCTIONS" not in caps:
        note += " (MKL, torch's default fp32 matmul, not capped: set MKL_ENABLE_INSTRUCTIONS too)"
    return note + "; ONNX Runtime's MLAS kernels ignore these caps"


# ---- shared pieces --------------------------------------------------------------------------------------------

def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def padded(ids: list[list[int]], index: list[int]):
    """(ids, mask) int64 arrays of the sequences at `index`, padded with 0 to the longest of them."""
    width = max(len(ids[i]) for i in index)
    a = np.zeros((len(index), width), dtype=np.int64)
    m = np.zeros((len(index), width), dtype=np.int64)
    for r, i in enumerate(index):
        a[r, :len(ids[i])] = ids[i]
        m[r, :len(ids[i])] = 1
    return a, m


def sorted_batches(hf_tok, texts, batch_size):
    """Tokenize all texts once (no padding), then yield (index, ids, mask) batches of similar token count."""
    ids = hf_tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for s in range(0, len(order), batch_size):
        index = order[s:s + batch_size]
        yield (index, *padded(ids, index))


def torch_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


# ---- the contenders ----------------------------------------------------------------------------------------------

def sentence_transformers_contender(texts, batch_size):
    from sentence_transformers import SentenceTransformer
    with warnings.catch_warnings():         # 6.x moved the modules; the old path still works everywhere
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers import models
    st = SentenceTransformer(modules=[
        models.Transformer(str(MINILM), model_kwargs={"attn_implementation": "sdpa"}),
        models.Pooling(384, pooling_mode="mean"),
        models.Normalize()], device="cpu")
    st.eval()
    print(f"sentence-transformers: max_seq_length {st.max_seq_length}, attention "
          f"{st[0].auto_model.config._attn_implementation}", flush=True)

    def run():
        return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return run


def reference_model():
    import transformers
    return transformers.BertModel.from_pretrained(MINILM, attn_implementation="sdpa").eval()


def reference_file_order(ref, hf_tok, texts, batch_size):
    def run():
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                b = hf_tok(texts[s:s + batch_size], padding=True, truncation=True, max_length=MAX_LENGTH,
                           return_tensors="pt")
                out.append(torch_mean(ref(**b).last_hidden_state, b["attention_mask"]))
        return torch.cat(out).numpy()
    return run


def reference_sorted(ref, hf_tok, texts, batch_size):
    def run():
        emb = np.zeros((len(texts), ref.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for index, ids, mask in sorted_batches(hf_tok, texts, batch_size):
                ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
                hidden = ref(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
                emb[index] = torch_mean(hidden.last_hidden_state, mask).numpy()
        return emb
    return run


def ort_contender(path, hf_tok, texts, batch_size, threads, spin=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run():
        emb = None
        for index, ids, mask in sorted_batches(hf_tok, texts, batch_size):
            hidden = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                          "token_type_ids": np.zeros_like(ids)})[0]
            m = mask[..., None].astype(np.float32)
            pooled = l2((hidden * m).sum(1) / np.maximum(m.sum(1), 1))
            if emb is None:
                emb = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            emb[index] = pooled
        return emb
    return run


def bertscope_contender(model, tok, texts, batch_size):
    from bertscope import infer

    def run():
        return infer.sentence_embeddings(model, infer.tokenize(tok, texts), batch_size=batch_size).numpy()
    return run


def export_and_quantize(model, folder: Path, per_channel: bool = False):
    """bertscope's ONNX export (fp32) and its dynamic int8 quantization; returns (fp32 path, int8 path or error)."""
    from bertscope.export import export_onnx
    fp32 = folder / "minilm.onnx"
    info = export_onnx(model, fp32)
    print(f"exported {fp32.name}: {info['bytes'] / 1e6:.1f} MB, onnxruntime vs torch max diff {info['max_diff']}",
          flush=True)
    int8 = folder / "minilm-int8.onnx"
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=per_channel)
        print(f"quantized {int8.name}: {int8.stat().st_size / 1e6:.1f} MB", flush=True)
        return fp32, int8
    except Exception as e:            # keep the other rows if quantization fails on this graph
        return fp32, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# ---- measuring ---------------------------------------------------------------------------------------------------

def compare(emb: np.ndarray, ref: np.ndarray) -> dict:
    cos = (l2(emb.astype(np.float64)) * l2(ref.astype(np.float64))).sum(1)
    return {"max_abs": float(np.abs(emb - ref).max()), "min_cos": float(cos.min()), "mean_cos": float(cos.mean()),
            "worst": int(cos.argmin())}


def measure(contenders: dict, repeats: int, seed: int) -> tuple[dict, dict]:
    """One untimed warm-up call of each (random order), then `repeats` rounds, each in a fresh random order."""
    rng = random.Random(seed)
    names = list(contenders)
    outputs, times = {}, {n: [] for n in names}
    rng.shuffle(names)
    for n in names:
        t = time.perf_counter()
        outputs[n] = contenders[n]()
        print(f"  warm-up {n}: {time.perf_counter() - t:.2f} s", flush=True)
    for r in range(repeats):
        rng.shuffle(names)
        for n in names:
            gc.collect()
            t = time.perf_counter()
            outputs[n] = contenders[n]()
            times[n].append(time.perf_counter() - t)
        print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    return times, outputs


def real_share(tok_lengths: list[int], char_lengths: list[int], batch_size: int) -> dict:
    """Of the positions each way of batching computes (batch × its longest), the share that are real tokens."""
    def share(order):
        computed = sum(len(b) * max(tok_lengths[i] for i in b)
                       for b in (order[s:s + batch_size] for s in range(0, len(order), batch_size)))
        return sum(tok_lengths) / computed
    n = len(tok_lengths)
    return {"file": share(list(range(n))),
            "chars": share([int(i) for i in np.argsort([-c for c in char_lengths])]),   # sentence-transformers
            "tokens": share(sorted(range(n), key=lambda i: tok_lengths[i]))}


def versions() -> str:
    import importlib.metadata as md
    parts = []
    for pkg in ("torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers"):
        try:
            parts.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def main():
    a = ARGS
    import transformers

    from bertscope import api, infer
    from bertscope.data import read_texts
    from bertscope.explain import estimate_flops, matmul_rates

    rel, column = FILES[a.dataset]
    texts = read_texts(DATA / rel, column=column, limit=a.limit)
    loaded = api.load(MINILM)
    model, tok = loaded.model.eval(), loaded.tokenizer
    lengths = infer.tokenize(tok, texts, max_length=MAX_LENGTH).lengths
    real = sum(lengths)
    hf_tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    hf_real = sum(len(x) for x in hf_tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"])
    if hf_real != real:
        print(f"note: the transformers tokenizer counts {hf_real} tokens, bertscope's {real}", flush=True)
    flops_by_length = {n: estimate_flops(model, 1, n)["total"] for n in set(lengths)}
    flops = sum(flops_by_length[n] for n in lengths)
    print(f"{len(texts)} texts of {rel}, {real} real tokens (mean {real / len(texts):.1f}, max {max(lengths)}), "
          f"{flops / real / 1e6:.1f} MFLOP per token; {a.threads} threads; {caps_note()}", flush=True)

    rates = matmul_rates("cpu", repeats=3)
    peak = max(rates.values())
    print("matmul rates (GFLOP/s):", {k: round(v / 1e9) for k, v in rates.items()}, flush=True)

    ref = reference_model()
    contenders = {
        "sentence-transformers": sentence_transformers_contender(texts, a.batch_size),
        "reference, file order": reference_file_order(ref, hf_tok, texts, a.batch_size),
        "reference, length-sorted": reference_sorted(ref, hf_tok, texts, a.batch_size),
    }
    notes = []
    tmp = tempfile.TemporaryDirectory()
    fp32_path, int8_path = export_and_quantize(model, Path(tmp.name), a.ort_per_channel)
    spin = not a.ort_no_spin
    contenders["ONNX Runtime fp32"] = ort_contender(fp32_path, hf_tok, texts, a.batch_size, a.threads, spin)
    if isinstance(int8_path, Path):
        label = f"ONNX Runtime int8 (dynamic, QInt8 per {'channel' if a.ort_per_channel else 'tensor'})"
        contenders[label] = ort_contender(int8_path, hf_tok, texts, a.batch_size, a.threads, spin)
    else:
        notes.append(f"ONNX Runtime int8: quantize_dynamic failed ({int8_path})")
        print(notes[-1], flush=True)
    contenders["**bertscope**"] = bertscope_contender(model, tok, texts, a.batch_size)
    if a.int8:
        from bertscope import infer, quantize
        from bertscope.data import read_texts
        from bertscope.kernels import bf16_on_cpu, int8_on_cpu
        pays, why = int8_on_cpu()
        calibration = read_texts(DATA / "sst2" / "train.tsv", limit=512)     # not the measured texts
        model8 = api.load(MINILM).model
        quantize.quantize(model8, infer.tokenize(tok, calibration))
        contenders["bertscope int8"] = bertscope_contender(model8, tok, texts, a.batch_size)
        if not pays:
            notes.append(f"bertscope int8: {why} (so `--int8` runs fp32 on this CPU; the row shows the int8 path "
                         "forced)")
        pays16, why16 = bf16_on_cpu()
        if pays16:
            contenders["bertscope bf16"] = bertscope_contender(api.load(MINILM).model.to(torch.bfloat16), tok,
                                                               texts, a.batch_size)
        else:
            notes.append(f"bertscope bf16: not run, {why16}")

    shares = real_share(lengths, [len(t) for t in texts], a.batch_size)

    def share_of(name):
        if "bertscope" in name:
            return f"{100 * shares['tokens']:.0f}% (sorted; packed where >15% padding)"
        way = "chars" if name.startswith("sentence") else "file" if "file order" in name else "tokens"
        return f"{100 * shares[way]:.0f}%"
    print("real share of computed positions:", {k: f"{100 * v:.0f}%" for k, v in shares.items()}, flush=True)

    times, outputs = measure(contenders, a.repeats, a.seed)
    tmp.cleanup()
    best = {n: min(t) for n, t in times.items()}
    ours = best["**bertscope**"]
    base = outputs["reference, file order"]
    peers = [n for n in contenders if "bertscope" not in n]
    fastest = min(peers, key=best.get)
    fastest_fp32 = min((n for n in peers if "int8" not in n), key=best.get)
    achieved = flops / ours

    lines = [f"### Sentence embeddings against other tools: {a.dataset}, {vendor_title()}, {isa_tag()} (`bench/peers.py`)", "",
             f"`python bench/peers.py {' '.join(sys.argv[1:])}` · {machine()} · {caps_note()} · "
             f"commit {commit()} · {versions()}", "",
             f"all-MiniLM-L6-v2 (mean pooling, L2-normalised) on the first {len(texts)} texts of `{rel}` "
             f"({real:,} real tokens, mean {real / len(texts):.1f}, longest {max(lengths)}); batch {a.batch_size}; "
             f"{a.threads} threads for torch, onnxruntime and tokenizers; tokenization inside every timed call; "
             f"best of {a.repeats} after a warm-up, contenders in a random order each round. Differences are "
             "against the reference in file order (row 2), per text: max |Δ| over all vector entries, min and "
             "mean cosine. Real positions: the share of the positions each way of batching computes that are real "
             "tokens (sentence-transformers sorts by character count, longest first).", "",
             "| # | contender | wall s | real tokens/s | bertscope speed-up | real positions | max abs diff | min cos "
             "| mean cos |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, n in enumerate(contenders, 1):
        c = compare(outputs[n], base) if n != "reference, file order" else None
        diff = (f"{c['max_abs']:.1e} | {c['min_cos']:.6f} | {c['mean_cos']:.6f}" if c else "(baseline) | | ")
        lines.append(f"| {i} | {n} | {best[n]:.3f} | {real / best[n]:,.0f} | {best[n] / ours:.2f}× | "
                     f"{share_of(n)} | {diff} |")
        if c:
            print(f"{n}: worst text #{c['worst']} cos {c['min_cos']:.6f}: {texts[c['worst']][:80]!r}")
    lines += ["", f"Fastest alternative: **{fastest}** ({real / best[fastest]:,.0f} tokens/s); bertscope is "
                  f"**{best[fastest] / ours:.2f}×** its speed" + (
                      f". Fastest fp32 alternative: {fastest_fp32}, bertscope {best[fastest_fp32] / ours:.2f}×."
                      if fastest_fp32 != fastest else "."),
              f"bertscope achieves {achieved / 1e9:.0f} GFLOP/s on the model's {flops / 1e9:.1f} GFLOP "
              f"(`explain.estimate_flops`, per text), {100 * achieved / peak:.0f}% of this machine's matmul rate "
              f"measured in the same run ({peak / 1e9:.0f} GFLOP/s: "
              + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items()) + ")."]
    lines += [f"{n}." for n in notes]
    md = "\n".join(lines)
    print("\n" + md)
    if not a.no_write:
        write_section(f"peers-{a.dataset}-{vendor()}-{isa_tag()}", md)
        print(f"\nwrote section peers-{a.dataset}-{vendor()}-{isa_tag()} of BENCHMARKS.md")


if __name__ == "__main__":
    main()
