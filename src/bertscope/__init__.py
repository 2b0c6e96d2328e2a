"""bertscope: BERT, RoBERTa and ALBERT encoders in plain PyTorch that load and save Hugging Face checkpoints.

    import bertscope
    model = bertscope.from_pretrained("path/to/folder")
    tok = bertscope.load_tokenizer("path/to/folder")
    out = model(**tok(["a sentence", "another one"]))

`import bertscope` loads torch and the model only; tokenizers and safetensors are imported when first used.
"""

from .config import Config, ConfigError, named_config
from .inputs import InputError
from .model import Model, Output

__version__ = "0.1.0"


def from_pretrained(folder, **kwargs) -> Model:
    """Load a Hugging Face checkpoint folder (config.json + model.safetensors / shards / pytorch_model.bin).

    head="base"|"mlm"|"pretraining"|"classification" picks a head other than the saved one; num_labels resizes a
    classifier; reinit_head=True starts a head the checkpoint lacks (or has in another shape) from scratch."""
    from .checkpoint import from_pretrained as _load
    return _load(folder, **kwargs)


def load_tokenizer(folder, **kwargs):
    """Tokenizer for a checkpoint folder: tokenizer.json, WordPiece vocab.txt, or BPE vocab.json + merges.txt."""
    from .tokenize import load_tokenizer as _load
    return _load(folder, **kwargs)


def from_config(config: Config | str, head: str = "base", **overrides) -> Model:
    """A model with random weights from a Config or a built-in name (bert-base, roberta-base, albert-base-v2, ...)."""
    if isinstance(config, str):
        config = named_config(config, **overrides)
    return Model(config, head=head).eval()


def __getattr__(name):  # CheckpointError / Tokenizer without importing safetensors / tokenizers up front
    if name in ("CheckpointError", "LoadReport"):
        from . import checkpoint
        return getattr(checkpoint, name)
    if name == "Tokenizer":
        from .tokenize import Tokenizer
        return Tokenizer
    raise AttributeError(f"module 'bertscope' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "InputError", "Model", "Output", "from_pretrained", "from_config",
           "load_tokenizer", "named_config"]
