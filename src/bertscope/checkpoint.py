"""Hugging Face checkpoint folders: one name table used both ways, safetensors / pytorch_model.bin reading,
atomic writes.

A folder holds `config.json` and the weights as `model.safetensors`, as shards listed in
`model.safetensors.index.json`, or as `pytorch_model.bin` (read with `torch.load(weights_only=True)` only).
Tensor names follow the reference layout, so a folder written here loads in `transformers` and back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .arguments import count_arg, path_arg
from .config import Config
from .errors import CheckpointError, ConfigError, UsageError
from .families import FAMILIES, HEAD_OF_ARCHITECTURE, HEADS
from .io import atomic_write, write_text
from .model import Model

# Tensors the reference writes that are not weights (old buffers) or are tied copies of another tensor.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
TIED_DECODER = ("cls.predictions.decoder.", "lm_head.decoder.", "predictions.decoder.")
HEAD_PREFIXES = ("cls.", "lm_head.", "predictions.", "sop_classifier.", "classifier.", "qa_outputs.")


# ---- the name table -------------------------------------------------------------------------------------------------

def name_table(model: Model) -> list[tuple[str, tuple[str, ...]]]:
    """(our parameter name, the reference tensor names it is made of). Q, K and V are three reference tensors
    stacked into our fused `qkv`; every other entry is one to one. Encoder names carry the family prefix
    (`bert.`, `roberta.`, `albert.`), as in the reference's models with heads."""
    c = model.config
    fam = c.family
    p = fam.prefix
    t = [("embeddings.word.weight", p + "embeddings.word_embeddings.weight"),
         ("embeddings.position.weight", p + "embeddings.position_embeddings.weight"),
         ("embeddings.token_type.weight", p + "embeddings.token_type_embeddings.weight"),
         ("embeddings.norm.weight", p + "embeddings.LayerNorm.weight"),
         ("embeddings.norm.bias", p + "embeddings.LayerNorm.bias")]
    if fam.factorised_embeddings:
        t += [(f"embeddings.project.{w}", f"{p}encoder.embedding_hidden_mapping_in.{w}") for w in ("weight", "bias")]
    n = fam.layer
    for i in range(len(model.encoder.layers)):
        g, j = divmod(i, c.inner_group_num)
        ref = p + n.base.format(i=i, g=g, j=j)
        q, k, v = (ref + part for part in (n.query, n.key, n.value))
        names = {"attention.out": n.attention_out, "attention_norm": n.attention_norm,
                 "intermediate": n.intermediate, "output": n.output, "output_norm": n.output_norm}
        for w in ("weight", "bias"):
            t.append((f"encoder.layers.{i}.attention.qkv.{w}", (f"{q}.{w}", f"{k}.{w}", f"{v}.{w}")))
            t += [(f"encoder.layers.{i}.{ours}.{w}", f"{ref}{theirs}.{w}") for ours, theirs in names.items()]
    if model.pooler is not None:
        t += [(f"pooler.dense.{w}", f"{p}{fam.pooler_name}.{w}") for w in ("weight", "bias")]
    if model.mlm is not None:
        h = fam.mlm_names
        t += [(f"mlm.dense.{w}", f"{h['dense']}.{w}") for w in ("weight", "bias")]
        t += [(f"mlm.norm.{w}", f"{h['norm']}.{w}") for w in ("weight", "bias")]
        t.append(("mlm.decoder.bias", h["bias"]))
        if not c.tie_word_embeddings:
            t.append(("mlm.decoder.weight", h["decoder"] + ".weight"))
    if model.pair is not None:
        t += [(f"pair.linear.{w}", f"{fam.pair_head_name}.{w}") for w in ("weight", "bias")]
    if model.classifier is not None:
        if fam.classifier == "first-token":
            t += [(f"classifier.{m}.{w}", f"classifier.{m}.{w}") for m in ("dense", "out_proj") for w in ("weight", "bias")]
        else:
            t += [(f"classifier.linear.{w}", f"classifier.{w}") for w in ("weight", "bias")]
    if model.token_classifier is not None:
        t += [(f"token_classifier.linear.{w}", f"classifier.{w}") for w in ("weight", "bias")]
    if model.span is not None:
        t += [(f"span.linear.{w}", f"qa_outputs.{w}") for w in ("weight", "bias")]
    return [(ours, (theirs,) if isinstance(theirs, str) else theirs) for ours, theirs in t]


def architecture(model: Model) -> str:
    """The reference class this model corresponds to (config.json "architectures")."""
    return model.config.family.architectures[model.head]


def to_reference(model: Model) -> dict[str, torch.Tensor]:
    """Our state -> reference tensor names (fused Q/K/V split back into three)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for ours, theirs in name_table(model):
        for name, part in zip(theirs, params[ours].detach().chunk(len(theirs), dim=0)):
            out[name] = part.contiguous()
    if model.mlm is not None and not model.config.tie_word_embeddings:
        # Untied, the reference (5.x) computes with the decoder's own bias and leaves the head's unused (4.x ties the
        # two): both names carry the one bias, so that either version reads what this model computes with
        h = model.config.family.mlm_names
        out[h["decoder"] + ".bias"] = out[h["bias"]].clone()
    if model.head == "base":  # the reference's bare encoder classes save without the family prefix
        p = model.config.family.prefix
        out = {k[len(p):] if k.startswith(p) else k: v for k, v in out.items()}
    return out


@dataclass
class LoadReport:
    """What happened to every tensor of a checkpoint when it was loaded."""
    missing: list[str] = field(default_factory=list)            # the model needs it, the file lacks it
    unexpected: list[str] = field(default_factory=list)         # the file has it, this model has no place for it
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file shape, model shape)
    reinitialised: list[str] = field(default_factory=list)      # head tensors left at their fresh initialisation
    ignored: list[str] = field(default_factory=list)            # buffers / tied copies, not weights
    fresh: list[str] = field(default_factory=list)              # our parameters the checkpoint did not fill

    def describe(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)}): {_names(self.missing)}")
        if self.mismatched:
            shapes = "; ".join(f"{n}: checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in self.mismatched[:8])
            lines.append(f"of another shape ({len(self.mismatched)}): {shapes}")
        if self.unexpected:
            lines.append(f"in the checkpoint but not in this model ({len(self.unexpected)}): {_names(self.unexpected)}")
        if self.reinitialised:
            lines.append(f"re-initialised ({len(self.reinitialised)}): {_names(self.reinitialised)}")
        return "\n".join(lines)


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_reference_state(model: Model, state: dict[str, torch.Tensor], reinit_head: bool = False,
                         source: str = "checkpoint") -> LoadReport:
    """Copy reference-named tensors into the model. Missing or mis-shaped encoder tensors are an error; so are
    those of the head unless `reinit_head`, which keeps the head's fresh initialisation for them instead."""
    c, p = model.config, model.config.family.prefix
    report = LoadReport()
    # LayerNorm's old names (gamma, beta; checkpoints converted from the original TensorFlow BERT), which the
    # reference renames as it loads
    state = {(k[:-6] + ".weight" if k.endswith(".gamma") else k[:-5] + ".bias" if k.endswith(".beta") else k): v
             for k, v in state.items()}
    for k in list(state):
        if k.endswith(IGNORED_SUFFIXES):
            report.ignored.append(k)
            del state[k]
    # A bare encoder's file (BertModel) has no family prefix: bring it to the prefixed layout of the table.
    prefixes = [f.prefix for f in FAMILIES.values()]
    if not any(k.startswith(q) for q in prefixes for k in state):
        state = {(k if k.startswith(HEAD_PREFIXES) else p + k): v for k, v in state.items()}
    _check_family(c, state, source)
    # Tied copies of the MLM decoder: the weight is the word-embedding matrix, the bias is the head's bias. Untied,
    # the reference (5.x) computes with the decoder's own bias and leaves the head's unused, so that one is read.
    for k in list(state):
        if k.startswith(TIED_DECODER) and (c.tie_word_embeddings or k.endswith(".bias")):
            bias_name = k.replace("decoder.bias", "bias")
            if k.endswith(".bias") and (bias_name not in state or not c.tie_word_embeddings):
                state[bias_name] = state[k]
            report.ignored.append(k)
            del state[k]

    params = dict(model.named_parameters(remove_duplicate=False))
    used, loaded = set(), set()
    with torch.no_grad():
        for ours, theirs in name_table(model):
            target = params[ours]
            is_head = not ours.startswith(("embeddings.", "encoder.", "pooler."))
            lacking = [n for n in theirs if n not in state]
            used.update(n for n in theirs if n in state)
            if lacking:
                # A checkpoint pretrained without a pair objective (MLM only) has no pooler: a new head starts its
                # pooler fresh too, as the reference does
                fresh = is_head or ours.startswith("pooler.")
                (report.reinitialised if fresh and reinit_head else report.missing).extend(lacking)
                continue
            tensor = torch.cat([state[n] for n in theirs], dim=0) if len(theirs) > 1 else state[theirs[0]]
            if tensor.shape != target.shape:
                if is_head and reinit_head:
                    report.reinitialised.extend(theirs)
                else:
                    shape = state[theirs[0]].shape if len(theirs) == 1 else tensor.shape
                    report.mismatched.append((theirs[0] if len(theirs) == 1 else ours, tuple(shape),
                                              tuple(target.shape)))
                continue
            target.copy_(tensor.to(target.dtype))
            loaded.add(id(target))
    report.fresh = [name for name, p in params.items() if id(p) not in loaded]   # tied copies count as loaded
    for k in sorted(set(state) - used):
        # A tensor of another head (loading an encoder from a pretraining checkpoint) is dropped, as the
        # reference does; a tensor of the encoder that has no place here is a real mismatch.
        if k.startswith(HEAD_PREFIXES) or (model.pooler is None and k.startswith(p + "pooler")):
            report.ignored.append(k)
        else:
            report.unexpected.append(k)
    model.tie_weights()
    if report.missing or report.mismatched or report.unexpected:
        head_only = all(not n.startswith(p) for n in report.missing + [m[0] for m in report.mismatched]) \
            and not report.unexpected
        fix = ("Pass reinit_head=True to start this head from a fresh initialisation (it then needs training), "
               "or load with head='base' to use the encoder alone." if head_only else
               "The checkpoint does not match this configuration: check that config.json belongs to these weights.")
        cli = ("To train this head from a fresh start: bertscope finetune --new-head."
               + (" If the folder was saved with this head, its config.json does not match its weights (id2label / "
                  "num_labels)." if report.mismatched else "") if head_only else fix)
        what = f"{source} does not fit a {c.family.title} model with head {model.head!r}:\n{report.describe()}\n"
        raise CheckpointError(what + fix, cli=what + cli)
    return report


def _check_family(c: Config, state: dict, source: str):
    found = {name for name, f in FAMILIES.items() if any(k.startswith(f.prefix) for k in state)}
    if found and c.family.name not in found:
        other = sorted(found)[0]
        raise CheckpointError(f"{source} holds {other} tensors ({other}.embeddings...), but config.json says "
                              f"model_type {c.family.name!r}: the weights belong to another model family. Put the "
                              "matching config.json next to them.")


# ---- reading ------------------------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")                   # in the order the reference prefers them


def weights_file(folder: Path) -> Path:
    """The weights file a checkpoint folder is read from: the first of WEIGHT_FILES it holds. One of them that is a
    folder, or a link to nothing, is named when it comes first (the files after it are not looked at)."""
    for name in WEIGHT_FILES:
        f = folder / name
        if f.is_dir():
            raise CheckpointError(f"{f}: is a folder; expected the weights file of that name")
        if f.is_symlink() and not f.exists():
            raise CheckpointError(f"{f}: a link to {os.readlink(f)}, which does not exist (moved or deleted?)")
        if f.exists():
            return f
    raise CheckpointError(f"{folder}: no weights found; expected model.safetensors, model.safetensors.index.json "
                          "(shards) or pytorch_model.bin")


def read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint folder, from the weights file it is read from."""
    f = weights_file(folder)
    read = _read_safetensors if f.name.startswith("model.safetensors") else _read_bin
    return (_read_sharded(f, read) if f.name.endswith(".index.json") else read(f)), str(f)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: not a readable safetensors file ({size} bytes; {e}). It is truncated or "
                              "corrupt: copy or save it again.") from None


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling reports through many exception types
        import zipfile
        with open(path, "rb") as f:                  # torch.save writes a zip archive, before PyTorch 1.6 a pickle
            corrupt = not zipfile.is_zipfile(path) and f.read(1) != b"\x80"   # (protocol byte): else damaged
        if corrupt:
            raise CheckpointError(f"{path}: neither the zip archive nor the pickle torch.save writes "
                                  f"({path.stat().st_size} bytes): "
                                  "truncated or corrupt; copy or save it again") from None
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}). bertscope never unpickles arbitrary "
                              "objects; convert the file to safetensors with the tool that wrote it.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors")
    return state


def _read_sharded(index_path: Path, read) -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint, each from the shard its index names (a copy of a tensor in another shard
    is not read: the index decides, as in the reference)."""
    weight_map = shard_map(index_path)
    state = {}
    for shard in sorted(set(weight_map.values())):
        tensors = read(index_path.parent / shard)
        state.update({k: v for k, v in tensors.items() if weight_map.get(k, shard) == shard})
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed in the index are absent from their shards: "
                              f"{_names(missing)}")
    return state


def shard_map(index_path: Path) -> dict[str, str]:
    """A shard index's {tensor name: shard file}, checked: well formed, and every shard a file of its folder."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index_path}: not a shard index ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                   for k, v in weight_map.items()):
        raise CheckpointError(f"{index_path}: not a shard index: expected {{\"weight_map\": {{tensor name: shard file "
                              "name, ...}}}}")
    folder = index_path.parent.resolve()
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if shard_path.resolve().parent != folder:
            raise CheckpointError(f"{index_path} lists shard {shard!r}, which is not a file of {index_path.parent}")
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path} lists shard {shard}, which is not in {index_path.parent}")
    return weight_map


# Keyword arguments of transformers' from_pretrained that have a bertscope spelling, or no meaning here
HF_KEYWORDS = {"torch_dtype": "dtype=", "ignore_mismatched_sizes": "reinit_head=True (a head of another width starts "
               "from scratch)", "problem_type": "the task's own (bertscope.api.finetune(..., task=...))"}
HUB_ONLY = ("local_files_only", "trust_remote_code", "cache_dir", "revision", "token", "use_auth_token",
            "force_download", "proxies", "subfolder", "device_map", "low_cpu_mem_usage", "attn_implementation")


def unfinished_run(folder: Path) -> str | None:
    """What to say of a training run's folder that holds no model yet (stopped before it saved one), or None."""
    if not (folder / "run.json").is_file() and not (folder / "checkpoint").is_dir():
        return None
    try:
        kind = json.loads((folder / "run.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    command = {"finetune": "finetune", "pretrain": "pretrain"}.get(kind, "finetune (or pretrain)")
    if (folder / "checkpoint" / "config.json").is_file():
        return (f"{folder}: a training run that has not saved its model yet (no config.json): its latest weights are "
                f"in {folder / 'checkpoint'}; continue the run with bertscope {command} --resume {folder}, or read "
                f"{folder / 'checkpoint'} as it is")
    return (f"{folder}: a training run that saved neither a model nor a checkpoint (it stopped before its first); "
            f"start it again with --overwrite")


def from_pretrained(folder, head: str | None = None, num_labels: int | None = None, reinit_head: bool = False,
                    dtype: torch.dtype | None = None, **unknown) -> Model:
    """Load a Hugging Face checkpoint folder. The head comes from config.json's `architectures` unless given;
    `num_labels` resizes a classifier (with reinit_head=True when the checkpoint's classifier has another width)."""
    if unknown:
        name = next(iter(unknown))
        if name in HF_KEYWORDS:
            hint = f"bertscope's spelling is {HF_KEYWORDS[name]}"
        elif name in HUB_ONLY:
            hint = "bertscope reads a local folder as it is (no hub, no remote code, no device map): leave it out"
        else:
            import difflib
            near = difflib.get_close_matches(name, ["head", "num_labels", "reinit_head", "dtype"], n=1)
            hint = f"did you mean {near[0]}?" if near else "expected head, num_labels, reinit_head or dtype"
        raise UsageError(f"from_pretrained: unknown keyword {name}={unknown[name]!r}; {hint}")
    path_arg("folder", folder, what="a checkpoint folder")
    if not isinstance(reinit_head, bool):       # "no" is true in Python: it would throw the trained head away
        raise UsageError(f"reinit_head={reinit_head!r}: expected True or False")
    num_labels = None if num_labels is None else count_arg("num_labels", num_labels, what="outputs")
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: " + ("is a file" if folder.exists() else "no such folder") +
                              "; a Hugging Face checkpoint is a folder with config.json and model.safetensors")
    if (folder / "config.json").is_dir():
        raise CheckpointError(f"{folder / 'config.json'}: is a folder; expected the model's JSON configuration file")
    if not (folder / "config.json").is_file():
        raise CheckpointError(unfinished_run(folder) or f"{folder}: not a checkpoint folder (no config.json); a "
                              "Hugging Face checkpoint folder holds config.json next to model.safetensors or "
                              "pytorch_model.bin")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise UsageError(f"dtype={dtype!r}: expected a floating torch dtype, e.g. torch.bfloat16")
    config = Config.from_json(folder / "config.json")
    from .machine import available_memory, fmt_gib
    need, (room, where) = config.approx_parameters * 4, available_memory()    # float32, before anything is made
    if need > room:
        raise CheckpointError(f"{folder / 'config.json'}: a model of these sizes (vocab_size {config.vocab_size}, "
                              f"hidden_size {config.hidden_size}, num_hidden_layers {config.num_hidden_layers}, "
                              f"intermediate_size {config.intermediate_size}) holds about "
                              f"{config.approx_parameters / 1e9:,.1f}B parameters, {fmt_gib(need)} in float32, but "
                              f"this machine has {fmt_gib(room)} {where}: the config is wrong, or the model is too "
                              "big for this machine")
    state, source = read_weights(folder)
    if head is None:
        head = _head_from(config, state)
    elif head not in HEADS:
        raise CheckpointError(f"head {head!r} is not one of {', '.join(HEADS)}")
    if num_labels is not None and head in ("base", "mlm", "pretraining") and num_labels != config.num_labels:
        raise UsageError(f"num_labels={num_labels}: head {head!r} has no labels (num_labels sizes a "
                         "classification, token-classification or question-answering head)")
    if num_labels is not None and num_labels != config.num_labels:
        config = config.replace(num_labels=num_labels, id2label=None)
    pooler = None
    if head == "base":  # an encoder saved from a masked-LM model (RoBERTa's, BERT's) carries no pooler
        pooler = any(k.endswith(config.family.pooler_name + ".weight") for k in state)
    with _no_init():                             # no time spent drawing random weights that the file replaces
        model = Model(config, head=head, pooler=pooler)
    model.load_report = load_reference_state(model, state, reinit_head=reinit_head, source=source)
    model.initialise(model.load_report.fresh)    # a head started from scratch gets its usual initialisation
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def saved_head(folder) -> str:
    """The head a checkpoint folder was saved with (from config.json, else from its tensor names), read without
    loading the weights where the format allows."""
    folder = Path(folder)
    config = Config.from_json(folder / "config.json")
    for arch in config.extra.get("architectures") or []:
        if arch in HEAD_OF_ARCHITECTURE:
            return HEAD_OF_ARCHITECTURE[arch]
    if (folder / "model.safetensors").exists():
        from safetensors import safe_open
        try:
            with safe_open(str(folder / "model.safetensors"), "pt") as f:
                return _head_from(config, dict.fromkeys(f.keys()))
        except Exception:       # unreadable: from_pretrained will say why
            pass
    return _head_from(config, read_weights(folder)[0])


@contextlib.contextmanager
def _no_init():
    """torch.nn.init's functions as no-ops while a model is built, so its tensors are only allocated."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def _head_from(config: Config, state: dict) -> str:
    for arch in config.extra.get("architectures") or []:
        if arch in HEAD_OF_ARCHITECTURE:
            return HEAD_OF_ARCHITECTURE[arch]
    keys = set(state)
    if any(k.startswith("qa_outputs.") for k in keys):
        return "question-answering"
    if any(k.startswith(("cls.seq_relationship", "sop_classifier.")) for k in keys):
        return "pretraining"
    if any(k.startswith(("cls.predictions", "lm_head.", "predictions.")) for k in keys):
        return "mlm"
    if any(k.startswith("classifier.") for k in keys):
        return "classification"
    return "base"


# ---- writing ------------------------------------------------------------------------------------------------------

def save_pretrained(model: Model, folder, max_shard_size: int | str | None = None) -> Path:
    """Write config.json and model.safetensors (or shards + index when larger than max_shard_size: bytes, or a
    size such as "500MB" or "5GB" as Hugging Face writes it)."""
    from safetensors.torch import save_file
    max_shard_size = _bytes(max_shard_size)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: is a file; a model is saved as a folder")
    if getattr(model, "int8", None):
        raise CheckpointError("this model's Linear layers are int8: save the fp32 model, and its calibration beside "
                              "it with quantize.save(model, folder) (bertscope quantize does both)")
    state = to_reference(model)
    config = model.config.with_extra(architectures=[architecture(model)])
    # the dtype a config records is the one written here (a float16 folder loaded as float32 is saved as float32)
    floats = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(floats) == 1:
        written = str(floats.pop()).removeprefix("torch.")
        config = config.with_extra(**{k: written for k in ("dtype", "torch_dtype") if k in config.extra})
    shards = _split(state, max_shard_size)
    if len(shards) == 1:
        atomic_write(folder / "model.safetensors", lambda p: save_file(shards[0], p, metadata={"format": "pt"}))
        stale = [folder / "model.safetensors.index.json"]
    else:
        weight_map, n = {}, len(shards)
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{n:05d}.safetensors"
            atomic_write(folder / name, lambda p, s=shard: save_file(s, p, metadata={"format": "pt"}))
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        write_text(folder / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
        stale = [folder / "model.safetensors"]
    written = {f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)} \
        if len(shards) > 1 else set()
    stale += [f for f in folder.glob("model-*-of-*.safetensors")          # shards of an earlier save
              if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f.name) and f.name not in written]
    stale += [f for f in folder.glob("pytorch_model*.bin*") if re.fullmatch(
        r"pytorch_model(-\d{5}-of-\d{5})?\.bin(\.index\.json)?", f.name)]
    for f in stale:                                   # an older save or format left beside would shadow or confuse
        if f.exists():
            f.unlink()
    write_text(folder / "config.json", config.to_json_string())
    return folder


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _bytes(size) -> int | None:
    """max_shard_size as a number of bytes: an int, or "500MB" / "5GB" / "2GiB" (Hugging Face's spelling)."""
    if size is None or size == 0:                      # 0, as None: one file
        return None
    if isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0:
        return int(size)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)\s*", str(size).upper()) if isinstance(size, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"max_shard_size={size!r}: expected a number of bytes above 0, or a size such as '500MB' "
                         "or '5GB'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _split(state: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    if not max_bytes:
        return [state]
    shards, current, size = [], {}, 0
    for k, t in state.items():
        n = t.numel() * t.element_size()
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k], size = t, size + n
    return shards + [current]


__all__ = ["CheckpointError", "ConfigError", "LoadReport", "architecture", "from_pretrained", "save_pretrained",
           "name_table", "to_reference", "load_reference_state", "read_weights"]
