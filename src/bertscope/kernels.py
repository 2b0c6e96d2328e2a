"""The matrix products behind every Linear layer, and what this machine's CPU can do, decided by trial.

On the CPU, torch's Linear calls MKL's sgemm, which on some x86 CPUs (AMD EPYC with AVX-512 among them) runs a
narrower code path than the chip has; oneDNN (also inside torch) picks the widest one. On a 2-core AMD EPYC with
AVX-512 that is ~2.2x the fp32 rate; on an Intel Xeon the two are about even. So the product is chosen per machine
from a short measurement at first use, cached on disk beside the CPU's name, flags and the torch version, and taken
again by later processes while it finds the machine busy (`BERTSCOPE_ONEDNN=1` / `=0` forces one). bf16 is
decided the same way: a oneDNN bf16 product must exist (on AVX2-only CPUs it does not) and must beat fp32 (without
bf16 instructions it is emulated and slower).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available() and hasattr(torch.library, "custom_op")


def onednn_product(x, w, b):                                          # x (N, in), w (out, in) -> (N, out)
    """One oneDNN inner product, y = x wᵀ + b."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


if ONEDNN:
    # A torch custom op, so that autograd and torch.compile see one opaque product (y = x W^T + b) whose three
    # products in training (y, dL/dx, dL/dW) all run in oneDNN.
    @torch.library.custom_op("bertscope::onednn_linear", mutates_args=())
    def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return onednn_product(x, weight, bias)                        # (N, out)

    @onednn_linear.register_fake
    def _(x, weight, bias):
        return x.new_empty(x.shape[0], weight.shape[0])

    def _setup(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    def _backward(ctx, grad):                                         # grad (N, out)
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = onednn_linear(grad, weight.t().contiguous(), None) if need_x else None              # (N, out) @ (out, in)
        gw = onednn_linear(grad.t().contiguous(), x.t().contiguous(), None) if need_w else None  # (out, N) @ (N, in)
        return gx, gw, grad.sum(0) if ctx.has_bias and need_b else None

    onednn_linear.register_autograd(_backward, setup_context=_setup)

    try:    # so that torch's FlopCounterMode counts these products as it counts nn.Linear's
        from torch.utils.flop_counter import register_flop_formula

        @register_flop_formula([torch.ops.bertscope.onednn_linear, torch.ops.mkldnn._linear_pointwise])
        def _flops(x_shape, w_shape, *args, **kwargs) -> int:                 # the op, or its eager product
            return 2 * x_shape[0] * x_shape[1] * w_shape[0]
    except ImportError:
        pass


# ---- what this CPU can do ----------------------------------------------------------------------------------------

def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def isa_summary() -> str:
    """The instruction sets that matter here, as `lscpu` names them, and any cap set in the environment."""
    flags = cpu_flags()
    names = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
             if f in flags]
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
            if os.environ.get(k)]
    return " ".join(names) + (f" (capped: {', '.join(caps)})" if caps else "")


def _cache_path() -> Path:
    root = os.environ.get("BERTSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bertscope")
    return Path(root) / "cpu.json"


def _machine_key() -> str:
    # Not the thread count: a process measures before or after it sets its threads, and every process of a run
    # (the interrupted one, its resume) must choose the same products, or a resume is no longer exact.
    parts = [cpu_name(), " ".join(sorted(cpu_flags())), torch.__version__,
             *(os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


TRIAL_ROUNDS = 7


def _measure() -> dict:
    """A BERT-shaped product (800 tokens × 384 → 1536) through each candidate: torch's Linear and oneDNN in fp32,
    oneDNN in bf16, torch's dynamic int8 Linear. The candidates take turns, round after round, and each keeps its
    best time: a machine that gets busy halfway through (another process starting) slows them alike, instead of
    the ones timed last (timed one after the other, a busy spell once made int8 look 1.2× fp32 where a quiet
    trial gives 1.5×). Taking turns is not enough when another process holds a core: the two fp32 products then
    slow down unevenly (the older AMD EPYC here, quiet: oneDNN 0.89× torch's time; beside one busy process 0.95×,
    beside two 1.02× or 0.58×, from run to run). So the trial also says whether it had the CPU to itself: `quiet`
    when the process got at least QUIET_SHARE of its threads' time while the products ran."""
    import time
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 384, generator=g)
    w = torch.randn(1536, 384, generator=g)
    candidates = {"torch_fp32": lambda: F.linear(x, w)}
    facts: dict = {}
    if ONEDNN:
        candidates["onednn_fp32"] = lambda: onednn_product(x, w, None)
        xb, wb = x.bfloat16(), w.bfloat16()
        try:
            onednn_product(xb, wb, None)
            candidates["onednn_bf16"] = lambda: onednn_product(xb, wb, None)
        except RuntimeError:                           # AVX2-only: oneDNN has no bf16 primitive here
            facts["onednn_bf16"] = None
    int8 = _int8_linear(w)
    if int8 is None:
        facts["int8_dynamic"] = None
    else:
        candidates["int8_dynamic"] = lambda: int8(x)
    best = {}
    for fn in candidates.values():                     # warm-up: allocations, primitive creation
        fn()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(TRIAL_ROUNDS):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    share = (time.process_time() - cpu) / max(1e-9, (time.perf_counter() - wall) * torch.get_num_threads())
    return {**best, **facts, "quiet": share >= QUIET_SHARE, "trials": 1}


QUIET_SHARE = 0.8   # quiet: 0.93-1.0 of its threads' time on the 2-core EPYC; beside 1-2 busy processes 0.38-0.73
BUSY_TRIALS = 4     # a machine never quiet at first use: after this many trials the best times stand as they are


def _merge(old: dict, new: dict) -> dict:
    """Two trials of one machine: each candidate's best time of both. A product one trial found missing (None) is
    missing; a candidate the older trial did not know (an earlier version's entry) takes the new time."""
    merged = {k: new[k] if k not in old else (None if old[k] is None or new[k] is None else min(old[k], new[k]))
              for k in new if k not in ("quiet", "trials")}
    return {**merged, "quiet": bool(old.get("quiet")) or bool(new.get("quiet")),
            "trials": int(old.get("trials", 1)) + int(new.get("trials", 1))}


def _int8_linear(w):
    """torch's dynamic int8 Linear (fbgemm / x86) for weight w, or None where this build has no int8 engine."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch.ao.nn.quantized.dynamic as qd
            from torch.ao.quantization import per_channel_dynamic_qconfig
            plain = nn.Linear(w.shape[1], w.shape[0])
            plain.qconfig = per_channel_dynamic_qconfig
            q = qd.Linear.from_float(plain)
            q(torch.zeros(1, w.shape[1]))
            return q
    except Exception:                                  # no quantized engine in this build
        return None


_FACTS: dict | None = None


def cpu_facts(remeasure: bool = True) -> dict:
    """Measured per machine (CPU, flags, torch, ISA caps) and cached on disk, one entry per such key. A trial that
    did not have the CPU to itself (another process running; see _measure) is taken again by the next processes,
    each candidate keeping its best time over the trials, until one is quiet or BUSY_TRIALS were taken: a busy
    first use no longer fixes this machine's products for good. Entries of earlier versions (no `quiet`) count as
    one busy trial. A run records the product it chose, and its resume keeps that one (pin_products)."""
    global _FACTS
    if _FACTS is not None:
        return _FACTS
    path, key = _cache_path(), _machine_key()
    entries = _read_cache(path)
    old = entries.get(key)
    if old is not None and (old.get("quiet") or old.get("trials", 1) >= BUSY_TRIALS or not remeasure):
        _FACTS = old
        return _FACTS
    _FACTS = _measure() if old is None else _merge(old, _measure())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {**_read_cache(path), key: _FACTS}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"cpu": cpu_name(), "facts_by_key": entries}))
        os.replace(tmp, path)
    except OSError:                                   # a read-only home: measure again next time
        pass
    return _FACTS


def _read_cache(path: Path) -> dict:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cached, dict):
        return {}
    if "facts_by_key" in cached and isinstance(cached["facts_by_key"], dict):
        return cached["facts_by_key"]
    if "key" in cached and "facts" in cached:          # the one-entry format of earlier versions
        return {cached["key"]: cached["facts"]}
    return {}


ONEDNN_MUST_WIN = 0.8       # oneDNN's trial product must take at most this share of torch's time


def use_onednn_cpu() -> bool:
    """Whether CPU Linear products run in oneDNN: forced by BERTSCOPE_ONEDNN=0/1, else the faster of the two."""
    forced = os.environ.get("BERTSCOPE_ONEDNN")
    if not ONEDNN or forced == "0":
        return False
    if forced == "1":
        return True
    facts = cpu_facts()
    # oneDNN must win clearly: in training it pays for copies into and out of its own layout (torch's product
    # takes transposed operands as they are) and keeps a cache of built products. Where the two forward products
    # are close (the Intel Xeon here: 6.7 against 7.6 ms in the trial), a 4 × 256 pretraining step ran 1.4× slower
    # through oneDNN (with the transposed copies of then); on the older AMD EPYC (4.45 against 5.0 ms) 100 steps
    # of SST-2 fine-tuning took the same time either way, and 160 MB more memory through oneDNN; where oneDNN is
    # twice as fast (the newer AMD EPYC with AVX-512) it wins in training too (BENCHMARKS.md).
    return facts["onednn_fp32"] < ONEDNN_MUST_WIN * facts["torch_fp32"]


def bf16_on_cpu() -> tuple[bool, str]:
    """(whether bf16 pays on this CPU, why not). bf16 pays where oneDNN has a bf16 product and it beats fp32."""
    facts = cpu_facts() if ONEDNN else {}
    bf16 = facts.get("onednn_bf16")
    if bf16 is None:
        return False, ("this CPU has no bf16 kernels (no avx512_bf16 / amx_bf16 instructions, or an ISA cap): "
                       "bf16 would fail or be emulated, and fp32 is faster here")
    fp32 = min(facts["torch_fp32"], facts["onednn_fp32"])
    if bf16 > 0.9 * fp32:
        return False, (f"bf16 is emulated on this CPU ({bf16 / fp32:.1f}× the time of fp32 in a trial product): "
                       "fp32 is faster here")
    return True, ""


def int8_on_cpu() -> tuple[bool, str]:
    """(whether int8 pays on this CPU, why not): the int8 product must beat the fp32 one by a clear margin (VNNI)."""
    facts = cpu_facts()
    int8 = facts.get("int8_dynamic")
    fp32 = min(v for k, v in facts.items() if k in ("torch_fp32", "onednn_fp32") and v)
    if int8 is None:
        return False, "this torch build has no int8 kernels"
    if int8 > 0.75 * fp32:
        vnni = {"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()
        why = ("a trial on a busy machine can say so too: delete " + str(_cache_path()) + " to measure again"
               if vnni else "without VNNI instructions int8 products are not faster")
        return False, f"int8 does not pay on this CPU ({fp32 / int8:.1f}× the speed of fp32 in a trial product; {why})"
    return True, ""


BF16_CLEARLY_FASTER = 1.2   # bf16 must beat int8 by this factor in the trial before --int8 suggests it


def bf16_beats_int8() -> float | None:
    """How many times faster the trial's bf16 product is than its int8 one, where bf16 pays and is the faster (AMX
    on an Intel Xeon: 1.57 against 2.82 ms, so bf16 runs MiniLM 1.7× faster than int8 there, closer to fp32 too);
    None elsewhere."""
    facts = cpu_facts() if ONEDNN else {}
    bf16, int8 = facts.get("onednn_bf16"), facts.get("int8_dynamic")
    if bf16 is None or int8 is None or not bf16_on_cpu()[0] or bf16 * BF16_CLEARLY_FASTER >= int8:
        return None
    return int8 / bf16


_ONEDNN_CPU: bool | None = None                         # decided at the first CPU product of the process


def _cpu_onednn() -> bool:
    global _ONEDNN_CPU
    if _ONEDNN_CPU is None:
        _ONEDNN_CPU = use_onednn_cpu()
    return _ONEDNN_CPU


def products_record() -> dict:
    """The CPU product this process runs, for a run's record: its resume keeps it (pin_products), since a trial
    taken again after a busy first use may choose the other, and the two products round differently."""
    return {"machine": _machine_key(), "onednn": _cpu_onednn()}


def pin_products(record: dict | None) -> None:
    """Run the product a run recorded (products_record), on the machine that recorded it; elsewhere, or where the
    user forces one with BERTSCOPE_ONEDNN, the choice is this machine's own."""
    global _ONEDNN_CPU
    if os.environ.get("BERTSCOPE_ONEDNN") in ("0", "1"):
        return
    if record is None:              # a run of an earlier version: the cached trial as it chose then, not a new one
        cpu_facts(remeasure=False)
    elif (isinstance(record, dict) and isinstance(record.get("onednn"), bool)
          and record.get("machine") == _machine_key()):
        _ONEDNN_CPU = record["onednn"] and ONEDNN


def prepare() -> None:
    """Decide the CPU product now (before torch.compile traces a model, or a timed loop starts)."""
    _cpu_onednn()
    if ONEDNN and _cpu_onednn():
        cpu_facts()


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:                                                 # older torch
        return torch.is_autocast_cpu_enabled()


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN for a CPU product in float32 (and bfloat16 where it has kernels); torch's own under autocast (which
    casts inside F.linear) and while exporting (an exported graph, ONNX among them, should hold the standard op)."""
    if x.device.type != "cpu" or x.dtype != weight.dtype or x.numel() == 0 or not ONEDNN:
        return False
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    if exporting() or _autocast_on_cpu() or not _cpu_onednn():
        return False
    if x.dtype == torch.float32:
        return True
    return x.dtype == torch.bfloat16 and cpu_facts().get("onednn_bf16") is not None


# Environment variables that cap the instructions torch's CPU code uses (to try another CPU's code path).
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def separate_compile_cache() -> None:
    """Keep torch.compile's on-disk cache apart for each instruction cap. Its cache key leaves out
    ATEN_CPU_CAPABILITY: code compiled under `ATEN_CPU_CAPABILITY=avx2`, loaded later by an uncapped run, corrupts
    the heap (glibc aborts: "free(): invalid pointer"; measured with torch 2.13 on an Intel Xeon). A cache folder
    the user chose (TORCHINDUCTOR_CACHE_DIR) is left alone."""
    caps = [f"{k.lower()}-{os.environ[k].lower()}" for k in ISA_CAPS if os.environ.get(k)]
    if not caps or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = default_cache_dir() + "-" + "-".join(re.sub(r"[^a-z0-9_]", "_", c)
                                                                                  for c in caps)


_LIBC: list = []


def trim_heap() -> None:
    """Give memory freed by the last batch back to the system (glibc's malloc_trim). Batches of changing shapes
    leave freed blocks that glibc keeps; without this, the peak memory of a long `embed` grows with its input
    (633 MB at 5,000 lines, 972 MB at 50,000 measured); with it, it stays flat, at no measurable cost."""
    if not _LIBC:
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
            _LIBC.append(libc.malloc_trim if hasattr(libc, "malloc_trim") else None)
        except OSError:                                  # not glibc (macOS, musl): nothing to do
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same names); on the CPU its products run through oneDNN where that is the faster
    product (see the module docstring), forward and backward. Elsewhere it is nn.Linear itself."""

    def forward(self, x, then=None):                                  # (..., in) -> (..., out)
        """The product, then `then` (an element-wise function such as GELU) if given: in training through oneDNN
        it runs on the rounded rows too, so that its own oneDNN kernels (GELU's are) see few shapes."""
        if _round_rows(x, self.weight):                               # training through oneDNN: see ROUND_ROWS
            return self._rounded(x, then)
        y = self._product(x)                                          # (..., out)
        return y if then is None else then(y)

    def _product(self, x):                                            # (..., in) -> (..., out)
        if not _use_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()                    # (N, in)
        if _needs_graph(x, self.weight):                              # autograd or torch.compile: the custom op
            y = onednn_linear(x2, self.weight, self.bias)             # (N, out)
        else:   # inference, eager: the product itself (the custom op's first call imports torch._dynamo, ~1.1 s)
            y = onednn_product(x2, self.weight, self.bias)            # (N, out)
        return y.view(*shape[:-1], y.shape[-1])                      # (..., out)


    def _rounded(self, x, then=None):                                 # (..., in) -> (..., out)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                 # (N, in)
        n = x2.shape[0]
        pad = -n % ROUND_ROWS
        x2 = _PadRows.apply(x2, pad) if pad else x2.contiguous()      # (N', in), N' = N rounded up, zero rows
        if _use_onednn(x2, self.weight):
            if x2.dtype == torch.float32:                             # oneDNN's own backward products
                y = _OneDNNTraining.apply(x2, self.weight, self.bias)  # (N', out)
            else:
                y = onednn_linear(x2, self.weight, self.bias)         # (N', out)
        else:                                                         # bf16 autocast: torch's product (oneDNN's)
            y = F.linear(x2, self.weight, self.bias)                  # (N', out)
        if then is not None:
            y = then(y)                                               # (N', out), on the rounded rows too
        y = _UnpadRows.apply(y, n) if pad else y                      # (N, out); zero rows add no gradient
        return y.view(*shape[:-1], y.shape[-1])                       # (..., out)


class _PadRows(torch.autograd.Function):
    """x (N, in) -> (N + pad, in) with zero rows below. F.pad fills the whole result with zeros and then copies x
    in; this writes the pad rows only (a fill of every product's input was 4% of a token-classification step)."""

    @staticmethod
    def forward(ctx, x, pad):                                         # (N, in) -> (N', in)
        ctx.n = x.shape[0]
        out = x.new_empty(x.shape[0] + pad, x.shape[1])
        out[:ctx.n].copy_(x)
        out[ctx.n:].zero_()
        return out

    @staticmethod
    def backward(ctx, grad):                                          # (N', in) -> (N, in)
        return grad[:ctx.n], None


class _UnpadRows(torch.autograd.Function):
    """y (N', out) -> its first n rows; the gradient comes back with zero rows below, written once (slicing's own
    backward fills all of it with zeros first, then copies: another 4% of a step)."""

    @staticmethod
    def forward(ctx, y, n):                                           # (N', out) -> (n, out)
        ctx.rows = y.shape[0]
        return y.narrow(0, 0, n)

    @staticmethod
    def backward(ctx, grad):                                          # (n, out) -> (N', out)
        n = grad.shape[0]
        out = grad.new_empty(ctx.rows, grad.shape[1])
        out[:n].copy_(grad)
        out[n:].zero_()
        return out, None


class _OneDNNTraining(torch.autograd.Function):
    """y = x Wᵀ + b through oneDNN, eager training in float32, with oneDNN's own backward products: the inner
    product's backward-data and backward-weights (with the bias's gradient) read W, x and the gradient as they
    are. The custom op's backward computes them as two more forward products, which needs Wᵀ, xᵀ and gradᵀ
    copied out first: 14% of a token-classification step on an AMD EPYC (AVX-512), where oneDNN's fp32 product
    is 2.2× torch's. float32 only: these backward ops take no bf16 weight."""

    @staticmethod
    def forward(ctx, x, weight, bias):                                # (N, in) -> (N, out)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):                                          # grad (N, out)
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g = grad.contiguous().to_mkldnn()
        gx = gw = gb = None
        if need_x:                                                    # (N, out) @ (out, in) -> (N, in)
            gx = torch.ops.aten.mkldnn_linear_backward_input(x.shape, g, weight).to_dense()
        if need_w or (need_b and ctx.has_bias):                       # (out, N) @ (N, in) -> (out, in); (out,)
            gw, gb = torch.ops.aten.mkldnn_linear_backward_weights(g, x.to_mkldnn(), weight, ctx.has_bias)
        return gx, gw if need_w else None, gb if need_b and ctx.has_bias else None


# oneDNN keeps every product it has built (its primitive cache, 1,024 by default), one per shape. Packed training
# batches have a new token count N almost every step, so the cache fills with products, each with its own buffers:
# MiniLM fine-tuned on 3,200 SST-2 rows peaked at 1,777 MB with bf16 autocast on an Intel Xeon with AMX, 1,262 MB
# with the cache off (but 2.2× slower: every product rebuilt), and 1,368 MB at the same speed with N rounded up to
# a multiple of 64 (at most 63 zero rows per product); through oneDNN in fp32, 1,665 against 1,528 MB. torch's own
# fp32 product (MKL) keeps no such cache, so there nothing is rounded. GELU after the first feed-forward product has
# oneDNN kernels of its own (forward and backward, one per shape), so it runs on the rounded rows too (`then`): on
# 10,000 SST-2 rows (bf16 autocast, Intel Xeon with AMX) that took the peak from 1,518 to 1,473 MB.
# What is left is attention's batched products (a new (B, L) almost every batch) and the products per rounded row
# count, ~900 in all, under oneDNN's default capacity of 1,024. A smaller cache costs rebuilding the products that
# fall out: ONEDNN_PRIMITIVE_CACHE_CAPACITY=64 peaks at 1,276 MB, but with 128 it already rebuilt 4,298 products
# (11 s of building in a 125 s run) and with 256, 2,484 (6 s); so it is left to the user (BENCHMARKS.md).
ROUND_ROWS = 64


def _round_rows(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this product's rows are rounded up: training on the CPU through oneDNN (bf16, or fp32 where oneDNN
    was chosen), eager. Not under torch.compile, whose graphs keep their shapes."""
    if x.device.type != "cpu" or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    if not (x.requires_grad or weight.requires_grad) or x.numel() == 0 or x.shape[-1] != weight.shape[1]:
        return False
    return _autocast_on_cpu() or x.dtype == torch.bfloat16 or _use_onednn(x, weight)


def rows_multiple(weight: torch.Tensor) -> int:
    """ROUND_ROWS where products with this weight round their rows in this pass (see _round_rows), else 1. A
    packed batch then carries spare rows up to that multiple from its embeddings on (packing.Packing), so that no
    product pads its input and cuts its output again: 4 copies a layer less, and their memory."""
    if weight.device.type != "cpu" or not weight.requires_grad:
        return 1
    return ROUND_ROWS if _round_rows(weight.new_empty(1, weight.shape[1]), weight) else 1


def _needs_graph(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)) or torch.compiler.is_compiling()


# ---- dropout ---------------------------------------------------------------------------------------------------------

def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout; on the CPU its mask is cut from 64-bit random words, four 16-bit lanes each: an element is kept
    when its lane is at least p * 65536 above the lowest. bernoulli_ draws one random number per element and torch.rand
    one too (as this function did before); this draws a quarter as many, so a mask costs ~3x less (640 x 384
    activations, 2 threads, Intel Xeon: 0.57 ms against 1.68 ms with torch.rand and 2.46 ms with bernoulli_;
    bernoulli_ was 8% of a token-classification step, torch.rand still 8%). Kept ones are scaled by 1 / (1 - p).
    p is rounded to a multiple of 1/65536 (0.1 drops 0.1000061 of the elements); a p that rounds to 0 or 1 takes
    torch.rand's path. The mask is drawn from torch's default generator and ends in x's dtype (bf16 under autocast)."""
    if not training or x.device.type != "cpu" or not 0 < p < 1:
        return F.dropout(x, p, training)
    return x * _keep_mask(x.shape, p, x.dtype)


_LANES = 65536


def _keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor:
    """1 / (1 - p) where an element is kept, 0 where it is dropped, in `dtype`."""
    drop = round(p * _LANES)
    if not 0 < drop < _LANES:
        return torch.rand(shape, dtype=torch.float32).ge_(p).to(dtype).mul_(1.0 / (1.0 - p))
    n = math.prod(shape)
    # random_(-2**63, None): the full 64-bit range, so all four int16 lanes are uniform over [-32768, 32767]
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None).view(torch.int16)[:n]
    # lane >= low + drop  <=>  clamp(lane - (low + drop - 1), 0, 1) == 1: integers, so no compare and no bool
    # tensor (both ~4x slower here than float arithmetic); in float32, where every int16 is exact (bf16 is not)
    keep = lanes.to(torch.float32).sub_(drop - _LANES // 2 - 1).clamp_(0, 1)
    return keep.to(dtype).mul_(1.0 / (1.0 - p)).view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout (same repr, no parameters) whose mask is drawn by `dropout` above."""

    def forward(self, x):
        return dropout(x, self.p, self.training)
