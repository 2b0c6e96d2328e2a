"""int8 inference on the CPU, with its accuracy kept: SmoothQuant-style smoothing, per-channel int8 weights, and
dynamic int8 activations (torch's fbgemm/x86 int8 kernels, VNNI where the CPU has it).

Plain dynamic int8 loses too much on BERT-family encoders: a few hidden dimensions carry activations far larger
than the rest, so one scale per batch crushes the others (ONNX Runtime's dynamic int8 of MiniLM: cosine to fp32
down to 0.86 on SST-2 sentences). Smoothing moves that range into the weights: for every Linear, from the largest
|activation| of each input channel over a few hundred calibration texts, s_j = max|x_j|^α / max|w_j|^(1-α); the
layer computes (x / s) (W s)ᵀ, the same product, with activations that quantize well. The feed-forward's output
projection (the GELU's output, whose outliers no smoothing tames) and attention's output projection stay fp32 by
default.

A quantized folder is the fp32 checkpoint as it was (so that other tools still load it) plus `int8.safetensors`:
the smoothing vectors and which layers run in int8; bertscope quantizes the weights when it loads the folder.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CapabilityError, CheckpointError, UsageError
from .io import atomic_write

FILE = "int8.safetensors"
# EncoderLayer.output (the feed-forward's second Linear) and SelfAttention.out: with the attention output in int8 too,
# the shortest texts lost most (MiniLM, 2,000 SST-2 dev texts, AMD EPYC AVX-512: min cosine 0.9900, "sucker";
# with it kept fp32, 0.9925).
KEEP_FP32 = ("output", "out")
ALPHA = 0.9


def _quiet():
    """torch.ao's int8 modules warn that they are deprecated on every use; the kernels are what bertscope needs."""
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated.*")


class Int8Linear(nn.Module):
    """y = (x / s) · int8(W s)ᵀ + b, with x quantized to int8 per batch on the fly (dynamic)."""

    def __init__(self, linear: nn.Linear, smooth: torch.Tensor):
        super().__init__()
        _quiet()
        import torch.ao.nn.quantized.dynamic as qd
        from torch.ao.quantization import per_channel_dynamic_qconfig
        plain = nn.Linear(linear.in_features, linear.out_features)
        with torch.no_grad():
            plain.weight.copy_(linear.weight.detach().float() * smooth)       # (out, in) · (in,)
            plain.bias.copy_(linear.bias.detach().float())
        plain.qconfig = per_channel_dynamic_qconfig
        self.q = qd.Linear.from_float(plain)
        self.register_buffer("inverse", (1 / smooth).float())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x, then=None):                                           # (..., in) -> (..., out)
        shape = x.shape
        y = self.q((x.reshape(-1, shape[-1]) * self.inverse).contiguous())    # (N, out)
        y = y.view(*shape[:-1], self.out_features)
        return y if then is None else then(y)                                  # then: as kernels.Linear's


def calibrate(model, enc, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The largest |activation| of every input channel of every encoder Linear, over the encoded texts."""
    from .infer import run
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.startswith("encoder."):
            def hook(mod, args, out, name=name):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(0).float()
                stats[name] = torch.maximum(stats[name], x) if name in stats else x
            hooks.append(m.register_forward_hook(hook))
    try:
        run(model, enc, batch_size, fn=lambda out, b, i: [None] * len(i))
    finally:
        for h in hooks:
            h.remove()
    return stats


def smoothing(model, stats: dict[str, torch.Tensor], alpha: float = ALPHA, keep_fp32=KEEP_FP32) -> dict:
    """{layer name: smoothing vector s} for the layers that go int8."""
    modules = dict(model.named_modules())
    out = {}
    for name, amax in stats.items():
        if name.rsplit(".", 1)[-1] in keep_fp32:
            continue
        w = modules[name].weight.detach().float().abs().amax(0).clamp(min=1e-5)   # (in,)
        out[name] = (amax.clamp(min=1e-5) ** alpha / w ** (1 - alpha)).clamp(min=1e-5, max=1e5)
    return out


def apply(model, smooth: dict[str, torch.Tensor]):
    """Replace the named Linear layers by Int8Linear, in place (CPU inference only). Returns the model."""
    if next(model.parameters()).device.type != "cpu":
        raise CapabilityError("int8 runs on the CPU; use --bf16 on a GPU instead")
    modules = dict(model.named_modules())
    for name, s in smooth.items():
        parent, child = name.rsplit(".", 1)
        setattr(modules[parent], child, Int8Linear(modules[name], s))
    model.int8 = sorted(smooth)
    return model.eval()


@dataclass
class Report:
    layers: int                     # Linear layers in int8
    kept: int                       # encoder Linear layers kept in fp32
    calibration_texts: int
    alpha: float


def quantize(model, enc, alpha: float = ALPHA, keep_fp32=KEEP_FP32) -> Report:
    """Calibrate on the encoded texts and turn the model int8, in place."""
    if getattr(model, "int8", None):
        raise UsageError("this model is int8 already; quantize its fp32 original (from_pretrained(folder) again)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise UsageError(f"alpha {alpha!r}: expected a number in (0, 1] ({ALPHA} by default)")
    stats = calibrate(model, enc)
    smooth = smoothing(model, stats, alpha, keep_fp32)
    apply(model, smooth)
    model.int8_smoothing = {k: v.clone() for k, v in smooth.items()}
    model.int8_alpha = alpha
    return Report(len(smooth), len(stats) - len(smooth), len(enc), alpha)


CLOSE_COSINE = 0.99    # every calibration text's mean-pooled embedding at least this close to fp32's
MOST_RESTORED = 3      # int8 layers given back to fp32 at most, to reach it
PROBE_TEXTS = 32       # the texts furthest from fp32, on which each candidate layer is tried


def restore_for_cosine(fp32, int8, enc, target: float = CLOSE_COSINE, most: int = MOST_RESTORED):
    """Give int8 layers back to fp32, one at a time, until every text's embedding is within `target` cosine of
    fp32's (or `most` layers are back): each round tries every int8 layer on the texts furthest from fp32 and keeps
    the one that lifts their minimum most. A fine-tuned SST-2 MiniLM fell to 0.988 on one text of 512 with all 12
    int8; with its first feed-forward product fp32 again, 0.993 (alpha 0.9). Returns (model, cosines, restored)."""
    from .infer import Encoded, sentence_embeddings
    ref = sentence_embeddings(fp32, enc)                                       # (N, H), unit length
    cos = (ref * sentence_embeddings(int8, enc)).sum(-1)                       # (N,)
    smooth, alpha, restored = dict(int8.int8_smoothing), int8.int8_alpha, []
    while float(cos.min()) < target and len(restored) < most and len(smooth) > 1:
        worst = cos.argsort()[:PROBE_TEXTS].tolist()
        probe = Encoded([enc.ids[i] for i in worst], [enc.types[i] for i in worst])
        lows = {name: _lowest_with_fp32(int8, fp32, name, ref[worst], probe) for name in sorted(smooth)}
        name = max(lows, key=lows.get)
        smooth = _without(smooth, name)
        restored.append(name)
        int8 = _built(fp32, smooth, alpha)
        cos = (ref * sentence_embeddings(int8, enc)).sum(-1)
    return int8, cos, restored


def _lowest_with_fp32(int8, fp32, name: str, ref, probe) -> float:
    """The lowest cosine to `ref` on `probe` with layer `name` of int8 run by fp32's own Linear for the while (no
    copy of the model, nothing quantized again: a candidate costs one pass over the probe texts)."""
    from .infer import sentence_embeddings
    parent, child = name.rsplit(".", 1)
    holder = int8.get_submodule(parent)
    quantized = getattr(holder, child)
    setattr(holder, child, fp32.get_submodule(name))
    try:
        return float((ref * sentence_embeddings(int8, probe)).sum(-1).min())
    finally:
        setattr(holder, child, quantized)


def _without(smooth: dict, name: str) -> dict:
    return {k: v for k, v in smooth.items() if k != name}


def _built(fp32, smooth: dict, alpha: float):
    """A copy of the fp32 model with these layers int8, as quantize leaves one."""
    import copy
    model = apply(copy.deepcopy(fp32), smooth)
    model.int8_smoothing = {k: v.clone() for k, v in smooth.items()}
    model.int8_alpha = alpha
    return model


def save(model, folder) -> Path:
    """int8.safetensors beside a saved fp32 folder: the smoothing vectors of the int8 layers, and alpha."""
    from safetensors.torch import save_file
    tensors = {k: v.contiguous() for k, v in model.int8_smoothing.items()}
    meta = {"bertscope_int8": json.dumps({"alpha": model.int8_alpha, "layers": sorted(tensors)})}
    return atomic_write(Path(folder) / FILE, lambda p: save_file(tensors, p, metadata=meta))


def load(model, folder):
    """Turn a model loaded from a quantized folder int8, as `bertscope quantize` calibrated it."""
    from safetensors import safe_open
    path = Path(folder) / FILE
    try:
        with safe_open(str(path), "pt") as f:
            smooth = {k: f.get_tensor(k) for k in f.keys()}
            info = json.loads(f.metadata()["bertscope_int8"])
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable int8 calibration file ({e}); run bertscope quantize again") \
            from None
    modules = dict(model.named_modules())
    missing = [k for k in smooth if k not in modules]
    if missing:
        raise CheckpointError(f"{path}: names layers this model does not have ({', '.join(missing[:3])}); it belongs "
                              "to another model")
    for name, v in smooth.items():                  # each a Linear's input smoothing: positive, one per input
        layer = modules[name]
        width = getattr(layer, "in_features", None)
        if "." not in name or width is None:
            raise CheckpointError(f"{path}: {name} is not a Linear layer of this model; the file belongs to another "
                                  "model: run bertscope quantize again")
        if v.dim() != 1 or v.numel() != width or not v.is_floating_point() or not bool(torch.isfinite(v).all()) \
                or not bool((v > 0).all()):
            raise CheckpointError(f"{path}: the vector of {name} has shape {tuple(v.shape)}"
                                  + ("" if v.dim() != 1 or v.numel() != width else " and values that are not positive "
                                     "finite numbers") + f", where the layer takes {width} inputs: the file belongs "
                                  "to another model or is damaged; run bertscope quantize again")
    apply(model, smooth)
    model.int8_smoothing, model.int8_alpha = smooth, info["alpha"]
    return model


def has_calibration(folder) -> bool:
    return folder is not None and (Path(folder) / FILE).exists()
