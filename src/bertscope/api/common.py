"""What every command needs: the device, threads and dtype asked for, and a model with its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..arguments import check_flag, count_arg, path_arg, whole_number
from ..errors import CheckpointError, TokenizerError, UsageError
from ..machine import usable_cpus

VERSION = "0.1.0"


# ---- devices, threads, dtypes -------------------------------------------------------------------------------------

def pick_device(name: str = "auto"):
    """'auto' -> CUDA where there is one, else the CPU; anything else must name a device this machine has."""
    import torch
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise UsageError(f"--device {name!r}: expected a device name (str), such as cpu, cuda, cuda:N, mps or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                         "use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         "numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu (or auto)")
    return device


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    threads = count_arg("--threads", threads, what="CPU threads")
    if threads > usable_cpus():             # more threads than CPUs only slow each other down (and 10^5 crashes)
        raise UsageError(f"--threads {threads}: this process may use {usable_cpus()} CPUs; expected at most that")
    import torch
    torch.set_num_threads(threads)


def bf16_for(device, asked: bool, on_event=None) -> bool:
    """Whether to run in bfloat16: as asked, except on a CPU where bf16 does not pay (said in one notice)."""
    if not asked or device.type != "cpu":
        return asked
    from ..kernels import bf16_on_cpu
    pays, why = bf16_on_cpu()
    if not pays and on_event:
        on_event({"event": "notice", "message": f"--bf16: {why}; running in fp32"})
    return pays


# ---- models and tokenizers ------------------------------------------------------------------------------------------

@dataclass
class Loaded:
    model: object
    tokenizer: object | None
    description: str
    folder: Path | None
    tokenizer_error: Exception | None = None      # why the folder's tokenizer files could not be read, if they could not


def load(source, head: str | None = None, tokenizer=None, need_tokenizer: bool = False,
         shapes_only: bool = False) -> Loaded:
    """A checkpoint folder (with its tokenizer, if it has one) or a built-in shape with random weights. A tokenizer
    given separately, or the folder's own, must fit the model's vocabulary. shapes_only (explain, draw): a head the
    checkpoint lacks starts from random weights, said in the description, instead of being refused."""
    from .. import checkpoint
    from ..config import NAMED, named_config
    from ..model import Model
    from ..tokenize import load_tokenizer
    check_flag("need_tokenizer", need_tokenizer), check_flag("shapes_only", shapes_only)
    if isinstance(source, Model):
        raise UsageError("api.load takes a checkpoint folder or a built-in shape's name; a Model is loaded already "
                         "(save it with bertscope.save_pretrained and load that folder)")
    path = Path(str(path_arg("MODEL", source)))
    if path.is_dir():
        model = checkpoint.from_pretrained(path, head=head, reinit_head=shapes_only and head is not None)
        desc = f"{path} ({model.config.family.name}, head {model.head}" + (
            "; not in the checkpoint: random weights, shapes only)" if model.load_report.fresh else ")")
        folder = path
    elif str(source) in NAMED:
        model = Model(named_config(str(source)), head=head or "base").eval()
        desc = f"{source} (built-in shape, random weights, head {model.head})"
        folder = None
    elif path.exists():
        raise CheckpointError(f"{source}: is a file; expected a checkpoint folder (config.json + model.safetensors) "
                              f"or a built-in shape ({', '.join(NAMED)})")
    else:
        raise CheckpointError(f"{source!r} is neither a checkpoint folder nor a built-in shape ({', '.join(NAMED)})")
    tok, unreadable = None, None
    where = tokenizer or folder
    if where is not None:
        try:
            tok = load_tokenizer(where)
        except TokenizerError as e:
            if tokenizer is not None:
                raise
            unreadable = e
    if tok is not None:
        tok.check_fits(model.config, f"the tokenizer of {where}")
    elif need_tokenizer:
        if unreadable is not None and "no tokenizer found" not in str(unreadable):
            raise unreadable                              # a tokenizer file is there but cannot be read: say which
        if folder is None:
            raise TokenizerError(f"{source} is a built-in shape (random weights), with no tokenizer to read text "
                                 "with; give a checkpoint folder that has its tokenizer files")
        raise TokenizerError(f"{source} has no tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt) to "
                             "read text with; copy the tokenizer files of the model it came from into it "
                             "(bertscope finetune, pretrain and quantize write them)")
    unreadable = unreadable if unreadable is not None and "no tokenizer found" not in str(unreadable) else None
    return Loaded(model, tok, desc, folder, unreadable)


def max_length_for(config, tok, asked: int | None, option: str = "--max-length", pairs: bool = False) -> int:
    """The length texts (or pairs of texts) are cut to: what was asked, which must fit the model's position table
    and keep some of every text."""
    limit = config.max_tokens
    if asked is None:
        return min(tok.max_length, limit)
    n = whole_number(asked)
    least = tok.least_length(pairs) if tok is not None else 3
    if n is None or n < least:
        said = tok.room_needed(pairs) if tok is not None else "the special tokens take 2, and a text needs at least 1"
        raise UsageError(f"{option} {asked!r}: expected a whole number of tokens, at least {least} ({said})")
    asked = n
    from ..export import check_length
    check_length(config, asked, option)
    return asked


def windows_apply(t) -> bool:
    """Whether --windows would keep the texts this task cut: single texts read without windows (pairs and QA
    contexts have none; texts read in windows are not cut)."""
    return getattr(t, "windows", None) is None and getattr(t, "pair_column", None) is None \
        and t.name != "question-answering"


def truncation_notice(enc, what: str, limit: int, on_event, windows_help: bool = True) -> None:
    n, most, _ = enc.truncation()
    if n and on_event:
        on_event({"event": "notice", "message": f"{what}: {n} of {len(enc)} texts are longer than {limit} tokens "
                                                f"and were cut (by up to {most} tokens)" +
                                                ("; --windows STRIDE keeps all of them" if windows_help else "")})


def make_task(name: str | None, **kwargs):
    from ..tasks import make
    return make(name or "classification", **kwargs)


def expect_loaded(loaded, name: str) -> None:
    """The api's model-taking functions take what load() returns; a folder or a Model is refused saying so."""
    if not isinstance(loaded, Loaded):
        raise UsageError(f"api.{name} takes a model from api.load (its tokenizer comes with it): "
                         f"api.{name}(api.load(FOLDER), ...); got {type(loaded).__name__}"
                         + (f" {str(loaded)!r}" if isinstance(loaded, (str, Path)) else ""))


def expect_placed(model, name: str) -> None:
    """The model argument after a Loaded is what api.place returned (the model on its device, maybe compiled)."""
    if not callable(model) or not hasattr(model, "parameters") or not hasattr(model, "config"):
        raise UsageError(f"api.{name}(loaded, model, ...): model is what api.place(loaded) returns; got "
                         f"{type(model).__name__}" + (f" {str(model)!r}" if isinstance(model, (str, Path)) else ""))


def task_for(loaded: Loaded, task: str | None, **options):
    """The task of evaluate / predict: as asked, else the one the model was fine-tuned for; it must match the head."""
    from ..tasks import check_options, for_model, make
    name = task or for_model(loaded.model.config, loaded.model.head)
    check_options(name, options)                                                 # options that would do nothing
    t = make(name, **options)
    if loaded.model.head != t.head:
        raise CheckpointError(f"{loaded.description}: has head {loaded.model.head!r}; {name} needs a model "
                              f"fine-tuned for it (head {t.head!r}); fine-tune one with bertscope finetune --task "
                              f"{name}")
    c = loaded.model.config
    if task and t.head == "classification":          # one head, three readings of it: the one it was trained for
        natural = for_model(c, loaded.model.head)
        if name != natural and (c.problem_type is not None or (name == "regression" and c.num_labels != 1)):
            raise CheckpointError(
                f"{loaded.description}: its head was fine-tuned for {natural} ({c.num_labels} output"
                f"{'s' if c.num_labels != 1 else ''}" + (f", problem_type {c.problem_type}" if c.problem_type else "")
                + f"); --task {name} would read those outputs as something they are not. Leave --task out, or "
                f"fine-tune a model for {name}")
    t.use_model_labels(c)
    return t


def place(loaded: Loaded, device: str = "auto", bf16: bool = False, compile: bool = False, on_event=None):
    """The model on the device asked for, in bfloat16 where that pays, compiled if asked."""
    import torch

    from ..model import compile_model
    check_flag("bf16", bf16), check_flag("compile", compile)
    where = pick_device(device)
    model = loaded.model.to(where)
    if bf16_for(where, bf16, on_event):
        model = model.to(torch.bfloat16)
    if compile:
        compile_model(model)
    return model
