"""One configuration dataclass for BERT, RoBERTa and ALBERT, read from and written to Hugging Face `config.json`.

The field names are the Hugging Face ones, so a `config.json` maps onto `Config` key for key. Keys we do not model
(`architectures`, `transformers_version`, `use_cache`, ...) are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .families import FAMILIES, Family, family as family_record

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")

# Keys a config.json must hold: without them no shape in the model is known.
REQUIRED = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class FrozenDict(dict):
    """A dict that cannot be changed after it is made, so that a Config is a value (copy it to change it)."""

    def _frozen(self, *args, **kwargs):
        raise TypeError("this mapping belongs to a Config, which is a value: make a new one with "
                        "config.replace(...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _frozen

    def __reduce__(self):                   # copy / deepcopy / pickle make a new FrozenDict of the same items
        return (FrozenDict, (dict(self),))

    def __hash__(self):
        return hash(tuple(sorted(self.items(), key=repr)))


@dataclass(frozen=True)
class Config:
    family: Family                      # bertscope.families record (give "bert" | "roberta" | "albert"); HF model_type
    vocab_size: int                     # V: rows of the word-embedding table
    hidden_size: int                    # H: width of every encoder layer
    num_hidden_layers: int              # N: layers applied (ALBERT: applications of the shared groups)
    num_attention_heads: int            # heads per layer before pruning; head_dim = H / heads
    intermediate_size: int              # feed-forward width, usually 4H
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # P: rows of the position table (RoBERTa: 2 of them reserved)
    type_vocab_size: int = 2            # segments (RoBERTa checkpoints: 1)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # ALBERT: factorised embedding (V x E, then E -> H) and cross-layer sharing.
    embedding_size: int | None = None   # E; None means E = H (BERT, RoBERTa)
    num_hidden_groups: int = 1          # distinct groups of layer weights
    inner_group_num: int = 1            # layers inside one group
    # Heads.
    num_labels: int = 2
    id2label: dict | None = None        # {class id: name}; None means LABEL_0 .. LABEL_{num_labels-1}
    problem_type: str | None = None     # "single_label_classification" | "multi_label_classification" | "regression"
    classifier_dropout: float | None = None        # BERT/RoBERTa classifier; None means hidden_dropout_prob
    classifier_dropout_prob: float = 0.1           # ALBERT classifier and SOP head
    tie_word_embeddings: bool = True
    pruned_heads: dict = field(default_factory=dict)   # {layer: (head, ...)} removed
    position_embedding_type: str = "absolute"
    extra: dict = field(default_factory=dict)      # every other config.json key, kept for the round trip

    def __post_init__(self):
        fam = family_record(self.family)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen: only here)
        set_("family", fam)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_hidden_groups", "inner_group_num"):
            _positive_int(name, getattr(self, name))
        if self.embedding_size is not None:
            _positive_int("embedding_size", self.embedding_size)
            if not fam.factorised_embeddings and self.embedding_size != self.hidden_size:
                raise ConfigError(f"embedding_size {self.embedding_size}: {fam.title} embeds tokens at hidden_size "
                                  f"({self.hidden_size}); only ALBERT factorises its embeddings into a smaller E")
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool) or \
                not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id must be an integer id in 0..{self.vocab_size - 1}, "
                              f"got {self.pad_token_id!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            _probability(name, getattr(self, name))
        if self.classifier_dropout is not None:
            _probability("classifier_dropout", self.classifier_dropout)
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(f"tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}")
        if self.hidden_size % self.num_attention_heads:
            divisors = [h for h in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % h == 0]
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}: "
                f"every head gets hidden_size / heads dims. Choose a head count that divides {self.hidden_size} "
                f"(e.g. {', '.join(map(str, divisors[-4:]))}) or change hidden_size.")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type {self.position_embedding_type!r} is not supported; "
                              "bertscope implements the absolute position embeddings of BERT, RoBERTa and ALBERT")
        decoder = [k for k in ("is_decoder", "add_cross_attention") if self.extra.get(k) is True]
        if decoder:     # the reference's decoder attends causally (and to an encoder): read two-way, silently wrong
            raise ConfigError(f"{decoder[0]} is true: this config describes a decoder (causal attention"
                              + (", cross-attention to an encoder" if "add_cross_attention" in decoder else "")
                              + "); bertscope implements the two-way encoder, whose outputs would differ. Use an "
                              "encoder's config (is_decoder false)")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ConfigError(f"num_hidden_groups {self.num_hidden_groups} exceeds num_hidden_layers "
                              f"{self.num_hidden_layers}: every group must be used by at least one layer")
        if not fam.shared_layers and (self.num_hidden_groups, self.inner_group_num) != (1, 1):
            raise ConfigError("num_hidden_groups / inner_group_num are ALBERT settings; "
                              f"a {fam.title} model has one layer per num_hidden_layers")
        if self.max_position_embeddings <= fam.position_offset(self.pad_token_id):
            raise ConfigError(f"max_position_embeddings {self.max_position_embeddings} leaves no room for tokens: "
                              f"{fam.title} positions start at pad_token_id + 1 = {self.pad_token_id + 1}")
        if not isinstance(self.pruned_heads, dict):
            raise ConfigError(f"pruned_heads must be a mapping of layer to heads, got {self.pruned_heads!r}")
        try:
            pruned = {int(k): tuple(sorted({int(h) for h in v})) for k, v in self.pruned_heads.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"pruned_heads must map layer numbers to lists of head numbers, got "
                              f"{dict(self.pruned_heads)!r}") from None
        layers = self.num_unique_layers
        for layer, heads in pruned.items():
            if not 0 <= layer < layers:
                raise ConfigError(f"pruned_heads names layer {layer}; this model has layers 0..{layers - 1}")
            if not all(0 <= h < self.num_attention_heads for h in heads):
                raise ConfigError(f"pruned_heads names heads {list(heads)} of layer {layer}; it has heads "
                                  f"0..{self.num_attention_heads - 1}")
            if len(heads) >= self.num_attention_heads:
                raise ConfigError(f"pruned_heads removes every head of layer {layer}; a layer keeps at least one")
        set_("pruned_heads", FrozenDict(pruned))
        _positive_int("num_labels", self.num_labels)
        if self.id2label:
            if not isinstance(self.id2label, dict):
                raise ConfigError(f"id2label must be a mapping of class id to name, e.g. {{\"0\": \"neg\", "
                                  f"\"1\": \"pos\"}}, got a {type(self.id2label).__name__}")
            try:
                labels = {int(k): str(v) for k, v in self.id2label.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"id2label keys must be class numbers 0, 1, ..., got {list(self.id2label)}") \
                    from None
            if sorted(labels) != list(range(len(labels))):
                raise ConfigError(f"id2label keys must be 0..{len(labels) - 1}, got {sorted(labels)}")
            if len(set(labels.values())) != len(labels):
                raise ConfigError(f"id2label names must differ, got {list(labels.values())}")
            set_("num_labels", len(labels))
        else:
            labels = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        set_("id2label", FrozenDict(labels))
        set_("extra", FrozenDict(self.extra))

    # ---- derived sizes -------------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        """E: width of the embedding tables (ALBERT factorises V x H into V x E and E x H)."""
        return self.embedding_size or self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_offset(self) -> int:
        """Rows of the position table that no token can use: RoBERTa starts at pad_token_id + 1 (so 2 of 514)."""
        return self.family.position_offset(self.pad_token_id)

    @property
    def max_tokens(self) -> int:
        """The longest sequence the position table allows (512 for BERT-base and for RoBERTa's 514 rows)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def num_unique_layers(self) -> int:
        """Layers that own weights: N for BERT/RoBERTa, groups x inner layers for ALBERT."""
        if not self.family.shared_layers:
            return self.num_hidden_layers
        return self.num_hidden_groups * self.inner_group_num

    @property
    def approx_parameters(self) -> int:
        """About how many parameters a model of this config holds (embeddings and layers; heads and norms left out):
        enough to tell, before anything is allocated, that it cannot fit this machine."""
        return self.vocab_size * self.embedding_dim + self.num_unique_layers * (
            4 * self.hidden_size ** 2 + 2 * self.hidden_size * self.intermediate_size)

    def layer_plan(self) -> list[int]:
        """Which weight-owning layer runs at each step, exactly as the reference shares ALBERT's groups.

        Layer i runs every inner layer of group int(i / (N / G)); BERT and RoBERTa simply run 0..N-1.
        """
        if not self.family.shared_layers:
            return list(range(self.num_hidden_layers))
        plan = []
        for i in range(self.num_hidden_layers):
            group = int(i / (self.num_hidden_layers / self.num_hidden_groups))
            plan += [group * self.inner_group_num + j for j in range(self.inner_group_num)]
        return plan

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def generic_labels(self) -> bool:
        """True when the label names are the reference's placeholders LABEL_0, LABEL_1, ..."""
        return self.labels == [f"LABEL_{i}" for i in range(self.num_labels)]

    def with_labels(self, names: list[str], problem_type: str | None = None) -> "Config":
        return self.replace(num_labels=len(names), id2label=dict(enumerate(names)),
                            problem_type=problem_type or self.problem_type)

    # ---- Hugging Face config.json ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        if "model_type" in d:                  # another architecture (DistilBERT, GPT-2) is said as one first
            try:
                family_record(d["model_type"])
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}; a BERT-family config.json "
                              f"needs {', '.join(REQUIRED)}")
        d = dict(d)
        try:
            fam = family_record(d.pop("model_type"))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        other = [(a, f) for a in d.get("architectures") or [] if isinstance(a, str)
                 for f in FAMILIES.values() if f is not fam and a in f.architectures.values()]
        if other:                         # RoBERTa's weights read with BERT's position rule would be silently wrong
            a, f = other[0]
            raise ConfigError(f"{source}: model_type {fam.name!r}, but architectures names {a}, a {f.title} class; "
                              f"the file was edited or belongs to another model: set model_type {f.name!r} if the "
                              f"weights are {f.title}'s, or architectures to a {fam.title} class")
        known = {f.name for f in dataclasses.fields(cls)} - {"family", "extra"}
        kwargs = dict(fam.config_defaults)
        kwargs.update({k: d.pop(k) for k in list(d) if k in known})
        label2id = d.pop("label2id", None)  # derived from id2label on the way out; read where id2label is absent
        ids = sorted(v for v in label2id.values() if isinstance(v, int) and not isinstance(v, bool)) \
            if isinstance(label2id, dict) else []
        if not kwargs.get("id2label") and label2id and ids == list(range(len(label2id))) \
                and kwargs.get("num_labels", len(ids)) == len(ids):
            kwargs["id2label"] = {i: str(name) for name, i in label2id.items()}   # else ignored, as the reference
        if not fam.factorised_embeddings:
            kwargs.pop("embedding_size", None)
        try:
            return cls(family=fam, extra=d, **kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:  # a value of the wrong kind, e.g. a list where an int belongs
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict:
        fam = self.family
        d = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in self.extra.items()}
        d["model_type"] = fam.name
        skip = {"family", "extra", "pruned_heads", "id2label", "embedding_size"}
        if not fam.shared_layers:
            skip |= {"num_hidden_groups", "inner_group_num"}
        skip |= {"classifier_dropout", "classifier_dropout_prob"} - {fam.classifier_dropout_key}
        for f in dataclasses.fields(self):
            if f.name not in skip:
                d[f.name] = getattr(self, f.name)
        if fam.factorised_embeddings:
            d["embedding_size"] = self.embedding_dim
        # as the reference writes them: num_labels is id2label's length; two generic labels, no problem_type and
        # absolute positions (the only kind there is) are its defaults, left out
        d.pop("num_labels")
        if not (self.num_labels == 2 and self.generic_labels):
            d["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
            d["label2id"] = {name: i for i, name in enumerate(self.labels)}
        for name, default in (("problem_type", None), ("position_embedding_type", "absolute")):
            if d[name] == default:
                d.pop(name)
        if self.pruned_heads:
            d["pruned_heads"] = {str(k): list(v) for k, v in sorted(self.pruned_heads.items())}
        return dict(sorted(d.items()))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Config":
        path = Path(path)
        folder = path.is_dir()
        if folder:
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"{path}: no such file" + ("; a Hugging Face checkpoint folder holds config.json next "
                                                        "to its weights" if folder else ""))
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; expected the config.json file")
        try:
            d = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(d).__name__}")
        return cls.from_dict(d, source=str(path))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **changes) -> "Config":
        """A new Config with these fields changed (a Config itself never changes)."""
        return dataclasses.replace(self, **changes)

    def with_extra(self, **items) -> "Config":
        return self.replace(extra={**self.extra, **items})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _probability(name, value):
    if not _is_number(value) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")


# Built-in shapes (random weights, nothing downloaded): the sizes of the public base checkpoints.
NAMED = {
    "bert-base": dict(family="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                      type_vocab_size=2),
    "bert-large": dict(family="bert", vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
                       num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512,
                       type_vocab_size=2),
    "roberta-base": dict(family="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                         type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "albert-base-v2": dict(family="albert", vocab_size=30000, embedding_size=128, hidden_size=768,
                           num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu_new",
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "minilm-l6-h384": dict(family="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                           num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512,
                           type_vocab_size=2),
}


def named_config(name: str, **overrides) -> Config:
    """A built-in shape (random weights); `overrides` change any field."""
    if name not in NAMED:
        raise ConfigError(f"unknown model name {name!r}; built-in shapes are {', '.join(NAMED)} "
                          "(or pass a checkpoint folder)")
    return Config(**{**NAMED[name], **overrides})
