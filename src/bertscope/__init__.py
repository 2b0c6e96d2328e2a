"""bertscope: BERT, RoBERTa and ALBERT encoders in plain PyTorch that load and save Hugging Face checkpoints.

    import bertscope
    model = bertscope.from_pretrained("path/to/folder")
    tok = bertscope.load_tokenizer("path/to/folder")
    out = model(**tok(["a sentence", "another one"]))
    bertscope.save_pretrained(model, "path/to/copy")

    result = bertscope.finetune("path/to/folder", "train.tsv", "runs/mine", eval="dev.tsv", epochs=1)

`import bertscope` is light: torch, tokenizers and safetensors load when a model, tokenizer or checkpoint is
first used.
"""

from .config import Config, named_config
from .errors import (BertscopeError, CapabilityError, CheckpointError, ConfigError, DataError, InputError,
                     OutputError, TokenizerError, TrainingDiverged, TrainingInterrupted, UsageError)

__version__ = "0.1.0"


def from_pretrained(folder, **kwargs):
    """Load a Hugging Face checkpoint folder (config.json + model.safetensors / shards / pytorch_model.bin).

    head="base"|"mlm"|"pretraining"|"classification"|"token-classification"|"question-answering" picks a head
    other than the saved one; num_labels resizes a classifier; reinit_head=True starts a head the checkpoint lacks
    (or has in another shape) from scratch."""
    from .checkpoint import from_pretrained as load
    return load(folder, **kwargs)


def save_pretrained(model, folder, *, overwrite: bool = False, max_shard_size=None):
    """Write config.json and model.safetensors with the reference's tensor names (transformers loads them). A folder
    that already holds a model is refused unless overwrite=True (its weights would be replaced)."""
    from .arguments import check_flag, path_arg
    from .checkpoint import save_pretrained as save
    from .errors import OutputError, UsageError
    from .io import model_files
    from .model import Model
    if not isinstance(model, Model):
        raise UsageError(f"save_pretrained: expected a bertscope Model first, got a {type(model).__name__}"
                         + (" (a folder: load it with bertscope.from_pretrained)" if isinstance(model, str) else ""))
    path_arg("folder", folder)
    check_flag("overwrite", overwrite)
    present = model_files(folder)
    if present and not overwrite:
        raise OutputError(f"{folder} already holds a model ({', '.join(present)}); save_pretrained would replace it: "
                          "choose another folder, or pass overwrite=True")
    return save(model, folder, max_shard_size=max_shard_size)


def load_tokenizer(folder, **kwargs):
    """Tokenizer for a checkpoint folder: tokenizer.json, WordPiece vocab.txt, or BPE vocab.json + merges.txt."""
    from .tokenize import load_tokenizer as load
    return load(folder, **kwargs)


def from_config(config, head: str = "base", **overrides):
    """A model with random weights from a Config or a built-in name (bert-base, roberta-base, albert-base-v2, ...)."""
    from .model import Model
    if isinstance(config, str):
        config = named_config(config, **overrides)
    return Model(config, head=head).eval()


def finetune(model, train, out, **kwargs):
    """Fine-tune a checkpoint folder on a labelled file (see bertscope.api.finetune for the options)."""
    from .api import finetune as run
    return run(model, train, out, **kwargs)


def pretrain(corpus, out, **kwargs):
    """Pretrain on plain text (see bertscope.api.pretrain for the options)."""
    from .api import pretrain as run
    return run(corpus, out, **kwargs)


_SUBMODULES = ("api", "answers", "checkpoint", "cli", "config", "data", "errors", "explain", "export", "families", "infer",
               "inputs", "io", "kernels", "machine", "masking", "model", "packing", "quantize", "scoring", "speed",
               "starts", "tasks", "tokenize", "train")


def __getattr__(name):  # the model classes without importing torch up front
    if name in ("Model", "Output"):
        from . import model
        return getattr(model, name)
    if name == "Tokenizer":
        from .tokenize import Tokenizer
        return Tokenizer
    if name == "LoadReport":
        from .checkpoint import LoadReport
        return LoadReport
    if name in _SUBMODULES:              # bertscope.api.finetune after a bare `import bertscope`, loaded when used
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bertscope' has no attribute {name!r}")


__all__ = ["BertscopeError", "CapabilityError", "CheckpointError", "Config", "ConfigError", "DataError",
           "InputError", "Model", "Output", "OutputError", "TokenizerError", "TrainingDiverged", "TrainingInterrupted",
           "UsageError",
           "finetune", "from_config", "from_pretrained", "load_tokenizer", "named_config", "pretrain",
           "save_pretrained"]
