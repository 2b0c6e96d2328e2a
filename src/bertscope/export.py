"""Export to ONNX (verified in onnxruntime) and draw the architecture as a picture with its dimensions."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from torch import nn

from .arguments import count_arg
from .errors import ExportError, UsageError, missing_extra
from .io import atomic_write
from .model import Model


class _Exported(nn.Module):
    """The model with plain tensor inputs and outputs, as ONNX wants it."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model
        self.names = ["last_hidden_state"] + (["pooler_output"] if model.pooler is not None else []) + \
            (["logits"] if model.mlm is not None or model.classifier is not None
             or model.token_classifier is not None else []) + \
            (["pair_logits"] if model.pair is not None else []) + \
            (["start_logits", "end_logits"] if model.span is not None else [])

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, n) for n in self.names)


def _sample(model: Model, batch: int, length: int, seed: int):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    low = (c.pad_token_id + 1) % c.vocab_size
    ids = torch.randint(max(low, 1), c.vocab_size, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if batch > 1:  # one padded row, so the mask path is exercised
        mask[-1, length // 2:] = 0
        ids[-1, length // 2:] = c.pad_token_id
    return ids, mask, torch.zeros_like(ids)


def check_length(c, length: int, option: str = "--length"):
    """A length (of --length, --max-length) the model's position table has room for; a UsageError naming the
    option if not, in the one wording every command uses."""
    if length > c.max_tokens:
        reserved = f", of which {c.family.title} reserves the first {c.position_offset}" if c.position_offset else ""
        raise UsageError(f"{option} {length}: this {c.family.title} model takes at most {c.max_tokens} tokens a "
                         f"sequence ({c.max_position_embeddings} position embeddings{reserved}); use {option} "
                         f"{c.max_tokens} or less")


def check_shape(c, batch: int, length: int, dynamic: bool) -> tuple[int, int]:
    """The (batch, length) the export is checked on in onnxruntime: with dynamic axes another batch and another
    length than the traced ones (7 more tokens, or 7 fewer where the position table has no room for more; at least
    2, the dynamic axis' minimum), always within what the model's positions allow."""
    if not dynamic:
        return batch, length
    other = length + 7 if length + 7 <= c.max_tokens else max(2, min(c.max_tokens, length - 7))
    return batch + 1, other


def _plain(text: str) -> str:
    """The first line of an error message, without the terminal colour codes some of torch's carry."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).strip().splitlines()[0] if text.strip() else ""


@contextlib.contextmanager
def _quiet_exporter():
    """torch's ONNX exporter without its chatter (torchvision ops it skips, deprecations inside torch, axis names it
    merges): a user sees what was written and how close it runs, as for every command. Errors still raise."""
    import logging
    import warnings
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: Model, path, dynamic: bool = True, batch: int = 2, length: int = 16) -> dict:
    """Write an ONNX graph with named inputs (input_ids, attention_mask, token_type_ids) and outputs, then run it in
    onnxruntime on a different batch and length (when dynamic) and compare with PyTorch. The graph is written to a
    temporary file beside `path` and renamed to it only once that check has passed: a failed export leaves `path`
    as it was (an earlier file there untouched, none made)."""
    c = model.config
    batch, length = count_arg("--batch", batch, 1), count_arg("--length", length, 2)
    check_length(c, length)
    shape = check_shape(c, batch, length, dynamic)
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError:
        raise missing_extra("onnx, onnxscript and onnxruntime", "export", "ONNX export") from None
    path = Path(path)
    wrapped = _Exported(model).eval()
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    kwargs = {}
    if dynamic:
        dim_b, dim_l = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=c.max_tokens)
        kwargs["dynamic_shapes"] = {k: {0: dim_b, 1: dim_l} for k in inputs}
    report = {}

    def write(tmp):
        was_checking, model.check = model.check, False   # data-dependent checks do not belong in a graph
        try:
            with _quiet_exporter():
                torch.onnx.export(wrapped, _sample(model, batch, length, seed=0), str(tmp), input_names=list(inputs),
                                  output_names=wrapped.names, dynamo=True, external_data=False, verbose=False,
                                  **kwargs)
        except Exception as e:
            raise ExportError(f"ONNX export failed: {type(e).__name__}: {_plain(str(e))}") from None
        finally:
            model.check = was_checking
        ids, mask, types = _sample(model, *shape, seed=1)
        try:
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                     "token_type_ids": types.numpy()})
        except Exception as e:
            raise ExportError(f"the exported graph did not run in onnxruntime on a {shape} batch, so nothing was "
                              f"written to {path}: {type(e).__name__}: {_plain(str(e))}") from None
        with torch.no_grad():
            want = wrapped(ids, mask, types)
        real = mask.bool()
        for name, g, w in zip(wrapped.names, got, want):
            d = (torch.from_numpy(g) - w).abs()
            report[name] = float((d[real] if d.dim() == 3 else d).max())   # padded rows are never read

    atomic_write(path, write)
    return {"path": str(path), "inputs": list(inputs), "outputs": wrapped.names, "checked_shape": shape,
            "max_diff": report, "bytes": path.stat().st_size}


# ---- a picture of the architecture --------------------------------------------------------------------------------

def draw(model: Model, path, batch: int = 2, length: int | None = None) -> Path:
    """A block diagram, input at the bottom, with the tensor dims on every edge; .png, .svg or .pdf."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("matplotlib", "plot", "Drawing the architecture") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    c = model.config
    length = min(128, c.max_tokens) if length is None else length
    check_length(c, length)                             # as explain and encode: no picture of what cannot run
    B, L, H, E = batch, length, c.hidden_size, c.embedding_dim
    nh, hd, I, V = c.num_attention_heads, c.head_dim, c.intermediate_size, c.vocab_size
    dims = lambda *d: "[" + ", ".join(map(str, d)) + "]"  # noqa: E731
    fam = c.family
    family = fam.title

    blocks = [("input_ids", "token ids (+ segment ids, position ids)", "#eeeeee", dims(B, L))]
    emb = f"word {V}×{E} + position {c.max_position_embeddings}×{E} + segment {c.type_vocab_size}×{E}, LayerNorm"
    blocks.append(("Embeddings", emb, "#d8e8f8", dims(B, L, E)))
    if fam.factorised_embeddings:
        blocks.append(("Projection E → H", f"Linear {E}→{H} (factorised embedding)", "#d8e8f8", dims(B, L, H)))
    per_layer = [layer.attention.heads for layer in model.encoder.layers]     # fewer where heads were pruned
    if len(set(per_layer)) == 1:
        nh = per_layer[0]
        heads_line = f"{nh} heads × {hd}, Linear {nh * hd}→{H}, add & LayerNorm"
    else:
        nh = "nh"
        heads_line = (f"nh heads × {hd} (pruned; nh by layer: {', '.join(map(str, per_layer))}), Linear nh·{hd}→{H}, "
                      "add & LayerNorm")
    blocks.append(("Self-attention", f"Q, K, V {dims(B, nh, L, hd)} · scores {dims(B, nh, L, L)}\n{heads_line}",
                   "#fde7c8", dims(B, L, H)))
    blocks.append(("Feed-forward", f"Linear {H}→{I} {dims(B, L, I)}, {c.hidden_act}, Linear {I}→{H}\n"
                   "add & LayerNorm", "#fde7c8", dims(B, L, H)))

    heads = []  # (title, detail, output dims), side by side on top
    if model.mlm is not None:
        heads.append(("MLM head", f"Linear {H}→{E}, LayerNorm,\ndecoder {E}→{V} (tied)", dims(B, L, V)))
    if model.pair is not None:
        heads.append(("Pooler + " + fam.pair_objective.upper(),
                      f"token 0, Linear {H}→{H}, tanh,\nLinear {H}→2", dims(B, 2)))
    elif model.classifier is not None and fam.classifier == "first-token":
        heads.append(("Classifier", f"token 0, Linear {H}→{H}, tanh,\nLinear {H}→{c.num_labels}",
                      dims(B, c.num_labels)))
    elif model.classifier is not None:
        heads.append(("Pooler + classifier", f"token 0, Linear {H}→{H}, tanh,\nLinear {H}→{c.num_labels}",
                      dims(B, c.num_labels)))
    elif model.token_classifier is not None:
        heads.append(("Token classifier", f"every token, Linear {H}→{c.num_labels}", dims(B, L, c.num_labels)))
    elif model.span is not None:
        heads.append(("Span head", f"every token, Linear {H}→2: start, end", dims(B, L) + " ×2"))
    elif model.pooler is not None:
        heads.append(("Pooler", f"token 0, Linear {H}→{H}, tanh", dims(B, H)))

    height = 1.25 * (len(blocks) + 1) + 0.4
    fig, ax = plt.subplots(figsize=(9, height))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(f"{family} · {c.num_hidden_layers} layers · H={H} · {model.num_parameters / 1e6:.1f}M parameters "
                 f"· input {dims(B, L)}", fontsize=11)
    ys = [0.4 + 1.25 * i for i in range(len(blocks))]
    for i, ((title, detail, colour, out_dims), y) in enumerate(zip(blocks, ys)):
        ax.add_patch(FancyBboxPatch((1.2, y), 7.6, 0.8, boxstyle="round,pad=0.05", fc=colour, ec="#555555"))
        ax.text(1.4, y + 0.58, title, fontsize=10, fontweight="bold", va="center")
        ax.text(1.4, y + 0.24, detail, fontsize=7.5, va="center", family="monospace")
        if i + 1 < len(blocks):
            ax.annotate("", xy=(5, ys[i + 1] - 0.05), xytext=(5, y + 0.85), arrowprops=dict(arrowstyle="->"))
            ax.text(5.15, y + 1.0, out_dims, fontsize=8, color="#1f4e9c", va="center")
    top = ys[-1] + 1.25
    width = 7.6 / max(1, len(heads))
    for k, (title, detail, out_dims) in enumerate(heads):
        x = 1.2 + k * width
        ax.add_patch(FancyBboxPatch((x + 0.1, top), width - 0.2, 0.8, boxstyle="round,pad=0.05", fc="#f3d9ec",
                                    ec="#555555"))
        ax.text(x + 0.25, top + 0.6, f"{title} → {out_dims}", fontsize=9, fontweight="bold", va="center")
        ax.text(x + 0.25, top + 0.25, detail, fontsize=7, va="center", family="monospace")
        ax.annotate("", xy=(x + width / 2, top - 0.05), xytext=(5, ys[-1] + 0.85), arrowprops=dict(arrowstyle="->"))
    if heads:
        ax.text(5.15, ys[-1] + 1.1, blocks[-1][3], fontsize=8, color="#1f4e9c", va="center")
    first, last = ys[-2], ys[-1]
    ax.add_patch(FancyBboxPatch((0.95, first - 0.15), 8.1, last - first + 1.1, boxstyle="round,pad=0.05",
                                fc="none", ec="#c0392b", ls="--"))
    runs = len(c.layer_plan())                  # ALBERT: each of its N layers runs every inner layer of its group
    label = f"× {runs}"
    if fam.shared_layers:
        groups, inner = c.num_hidden_groups, c.inner_group_num
        if inner == 1:
            label += f", {'one' if groups == 1 else groups} shared weight set{'s' if groups > 1 else ''}"
        else:
            label += (f" ({c.num_hidden_layers} layers × {inner} inner), {'one' if groups == 1 else groups} shared "
                      f"group{'s' if groups > 1 else ''} of {inner} weight sets")
    ax.text(0.6, (first + last) / 2 + 0.4, label, color="#c0392b", fontsize=10, rotation=90, va="center",
            ha="center")
    path = Path(path)
    with matplotlib.rc_context({"svg.fonttype": "none"}):        # text stays text in an SVG (searchable)
        atomic_write(path, lambda p: fig.savefig(p, bbox_inches="tight", dpi=130, format=path.suffix[1:].lower()))
    plt.close(fig)
    return path
