"""BERT, RoBERTa and ALBERT as records: everything that differs between the three families, in one place.

The rest of bertscope asks the record (`config.family.positions_after_padding`, `family.pair_objective`, ...) and
never compares family names. A record holds:
  - the architecture: ALBERT's factorised embedding and shared layer groups, RoBERTa's position rule and its
    first-token classifier, which pair objective pretraining uses (NSP, SOP or none);
  - the checkpoint layout: tensor-name prefix and the reference names of every head;
  - the tokenizer: its kind, special tokens, pair template;
  - the reference implementation's config defaults and class names;
  - the pretraining recipe's defaults (dynamic masking for RoBERTa).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layer:
    """Reference tensor names of one encoder layer (a format string with {i} for the layer)."""
    base: str                       # "encoder.layer.{i}."
    query: str                      # relative to base
    key: str
    value: str
    attention_out: str
    attention_norm: str
    intermediate: str
    output: str
    output_norm: str


@dataclass(frozen=True)
class Family:
    name: str                       # Hugging Face model_type
    title: str                      # how the family is written in messages
    prefix: str                     # tensor-name prefix of the encoder inside a model with a head
    layer: Layer
    mlm_names: dict                 # our MLM-head part -> reference name
    pooler_name: str                # the pooler's Linear, relative to the prefix
    pair_objective: str | None      # "nsp" (BERT), "sop" (ALBERT), None (RoBERTa)
    pair_head_name: str | None      # reference name of the NSP / SOP Linear
    pair_dropout: bool              # the NSP / SOP head applies dropout (ALBERT's SOP head does, BERT's NSP not)
    positions_after_padding: bool   # RoBERTa: real tokens take positions pad+1, pad+2, ...; padding takes pad
    segments: bool                  # token_type_ids mark the two segments of a pair (RoBERTa: </s></s> instead)
    factorised_embeddings: bool     # ALBERT: E-wide tables then a Linear E -> H
    shared_layers: bool             # ALBERT: groups of layers whose weights are reused
    classifier: str                 # "pooled": dropout + linear on the pooler; "first-token": dense, tanh, out_proj
    classifier_dropout_key: str     # the config key of the classifier's dropout
    mlm_activation: str | None      # the MLM head's activation when it is fixed (RoBERTa: gelu), else hidden_act
    dynamic_masking: bool           # the recipe's default: new masks every epoch (RoBERTa) or one fixed set
    tokenizer: str                  # "wordpiece" | "bpe" | "unigram"
    specials: dict                  # cls, sep, pad, unk, mask
    architectures: dict             # our head -> the reference's class name
    config_defaults: dict = field(default_factory=dict)   # what the reference assumes when a key is absent
    new_model_defaults: dict = field(default_factory=dict)  # what a model made from scratch gets

    def __str__(self):
        return self.name

    @property
    def pair_special_tokens(self) -> int:
        """Special tokens around a pair: [CLS] A [SEP] B [SEP], or without segments <s> A </s></s> B </s>."""
        return 3 if self.segments else 4

    # ---- positions ------------------------------------------------------------------------------------------------
    def position_offset(self, pad_token_id: int) -> int:
        """Rows of the position table no token can use: RoBERTa's positions start at pad_token_id + 1."""
        return pad_token_id + 1 if self.positions_after_padding else 0

    def position_ids(self, input_ids, pad_token_id: int):
        """Positions of a padded (B, L) batch as the reference computes them."""
        import torch
        if self.positions_after_padding:                               # fairseq's rule, from the ids
            real = input_ids.ne(pad_token_id).long()                   # (B, L)
            return torch.cumsum(real, dim=-1) * real + pad_token_id     # (B, L)
        return torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)

    @property
    def pair_label(self) -> str | None:
        """The reference's keyword for the pair label."""
        return {"nsp": "next_sentence_label", "sop": "sentence_order_label"}.get(self.pair_objective)

    @property
    def objectives(self) -> tuple[str, ...]:
        """Pretraining objectives this family can train: masked LM alone, or with its pair objective."""
        return ("mlm",) + ((f"mlm+{self.pair_objective}",) if self.pair_objective else ())

    @property
    def default_objective(self) -> str:
        return self.objectives[-1]


_HEADS = ("base", "mlm", "pretraining", "classification", "token-classification", "question-answering")


def _architectures(stem: str, pretraining: str) -> dict:
    return dict(zip(_HEADS, (f"{stem}Model", f"{stem}ForMaskedLM", pretraining, f"{stem}ForSequenceClassification",
                             f"{stem}ForTokenClassification", f"{stem}ForQuestionAnswering")))


BERT = Family(
    name="bert", title="BERT", prefix="bert.",
    layer=Layer("encoder.layer.{i}.", "attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
                "output.LayerNorm"),
    mlm_names={"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
               "bias": "cls.predictions.bias", "decoder": "cls.predictions.decoder"},
    pooler_name="pooler.dense", pair_objective="nsp", pair_head_name="cls.seq_relationship", pair_dropout=False,
    positions_after_padding=False, segments=True, factorised_embeddings=False, shared_layers=False,
    classifier="pooled", classifier_dropout_key="classifier_dropout", mlm_activation=None, dynamic_masking=False,
    tokenizer="wordpiece", specials=dict(cls="[CLS]", sep="[SEP]", pad="[PAD]", unk="[UNK]", mask="[MASK]"),
    architectures=_architectures("Bert", "BertForPreTraining"),
    new_model_defaults={"type_vocab_size": 2, "layer_norm_eps": 1e-12},
)

ROBERTA = Family(
    name="roberta", title="RoBERTa", prefix="roberta.",
    layer=BERT.layer,
    mlm_names={"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias",
               "decoder": "lm_head.decoder"},
    pooler_name="pooler.dense", pair_objective=None, pair_head_name=None, pair_dropout=False,
    positions_after_padding=True, segments=False, factorised_embeddings=False, shared_layers=False,
    classifier="first-token", classifier_dropout_key="classifier_dropout", mlm_activation="gelu",
    dynamic_masking=True,
    tokenizer="bpe", specials=dict(cls="<s>", sep="</s>", pad="<pad>", unk="<unk>", mask="<mask>"),
    architectures={**_architectures("Roberta", "RobertaForMaskedLM")},
    config_defaults={"pad_token_id": 1},
    new_model_defaults={"type_vocab_size": 1, "layer_norm_eps": 1e-5},
)

ALBERT = Family(
    name="albert", title="ALBERT", prefix="albert.",
    layer=Layer("encoder.albert_layer_groups.{g}.albert_layers.{j}.", "attention.query", "attention.key",
                "attention.value", "attention.dense", "attention.LayerNorm", "ffn", "ffn_output",
                "full_layer_layer_norm"),
    mlm_names={"dense": "predictions.dense", "norm": "predictions.LayerNorm", "bias": "predictions.bias",
               "decoder": "predictions.decoder"},
    pooler_name="pooler", pair_objective="sop", pair_head_name="sop_classifier.classifier", pair_dropout=True,
    positions_after_padding=False, segments=True, factorised_embeddings=True, shared_layers=True,
    classifier="pooled", classifier_dropout_key="classifier_dropout_prob", mlm_activation=None,
    dynamic_masking=False,
    tokenizer="unigram", specials=dict(cls="[CLS]", sep="[SEP]", pad="<pad>", unk="<unk>", mask="[MASK]"),
    architectures=_architectures("Albert", "AlbertForPreTraining"),
    config_defaults={"embedding_size": 128, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.0,
                     "attention_probs_dropout_prob": 0.0},
    new_model_defaults={"type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu_new"},
)

FAMILIES = {f.name: f for f in (BERT, ROBERTA, ALBERT)}
HEADS = _HEADS
# The reference class name -> our head, for reading config.json's "architectures" (RobertaForMaskedLM is "mlm").
HEAD_OF_ARCHITECTURE = {arch: head for f in FAMILIES.values() for head, arch in f.architectures.items()
                        if not (head == "pretraining" and arch.endswith("ForMaskedLM"))}


def family(name) -> Family:
    """The record for a model_type (or a record passed through)."""
    if isinstance(name, Family):
        return name
    from .errors import ConfigError
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError(f"model_type {name!r} is not supported; bertscope reads {', '.join(FAMILIES)}")
    return FAMILIES[name]
