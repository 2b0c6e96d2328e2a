"""Multi-label classification: any number of labels per text (problem_type "multi_label_classification"),
binary cross-entropy per label, micro / macro F1 at a threshold.

Labels are a JSON list (in a .jsonl file, or as the text of a .tsv / .csv cell: `["a", "b"]`), or `a|b` in a
.tsv / .csv cell; an empty list, `[]`, means no label (an empty cell is an error: a missing value, not "none")."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from .. import infer, scoring
from ..errors import DataError
from .base import Batch
from .classification import SequenceClassification, label_order


def json_list(cell) -> list | None:
    """The list a table cell holds as JSON (`["a", "b"]`, `[]`), or None where the cell is not one."""
    if not isinstance(cell, str) or not cell.strip().startswith("["):
        return None
    try:
        value = json.loads(cell)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


class MultiLabel(SequenceClassification):
    name = "multi-label"
    metric = "micro_f1"
    problem_type = "multi_label_classification"
    empty_label = True                          # an empty cell, as [] in JSON: none of the labels (predict writes it)

    def __init__(self, *args, threshold: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 < threshold < 1:
            raise DataError(f"--threshold {threshold}: expected a probability between 0 and 1")
        self.threshold = threshold

    def canonical(self, value, where: str):
        if isinstance(value, str) and value.strip().startswith("["):     # a JSON list in a .tsv / .csv cell
            if json_list(value) is None:
                raise DataError(f"{where}: {value!r} starts as a JSON list but is not one; write labels as "
                                '["a", "b"] or a|b')
            value = json_list(value)
        if isinstance(value, list):
            names = value
        elif isinstance(value, str):
            names = value.split("|") if value.strip() else []
        else:
            raise DataError(f"{where}: multi-label rows hold a list of labels or `a|b`, got {value!r}")
        bad = [x for x in names if isinstance(x, (list, dict, bool)) or x is None
               or (isinstance(x, float) and not math.isfinite(x))]
        if bad:
            raise DataError(f"{where}: label {bad[0]!r} in {value!r} is not a label name")
        names = [str(x).strip() for x in names]
        if any(not x for x in names):
            raise DataError(f"{where}: an empty label name in {value!r}")
        if isinstance(value, list) and any("|" in x for x in names):     # predictions write a|b: it would read as two
            raise DataError(f"{where}: label {next(x for x in names if '|' in x)!r} holds '|', which separates "
                            "labels (a|b is two labels); rename the class")
        return tuple(sorted(set(names)))

    def training_labels(self, ex):
        names = label_order({x for row in ex.labels for x in row})
        if len(names) < 2:
            raise DataError(f"{ex.path}: " + (f"only the label {names[0]!r} occurs" if names else "no row has a label")
                            + "; multi-label needs at least two")
        return names

    def fit_head(self, config, saved_head, train, new_head: bool) -> bool:
        names = self.training_labels(train)
        keep = saved_head == self.head and not new_head and config.problem_type == self.problem_type
        if keep:
            unknown = sorted(set(names) - set(config.labels))
            if unknown:
                i = next(i for i, row in enumerate(train.labels) if unknown[0] in row)
                raise DataError(f"{train.where(i)}: label {unknown[0]!r} is not one of this classifier's labels "
                                f"({', '.join(config.labels)}); pass --new-head to train a new head")
            names = list(config.labels)
        self.labels, self.mapping = names, {n: i for i, n in enumerate(names)}
        return keep

    def targets(self, ex) -> torch.Tensor:
        y = torch.zeros(len(ex), len(self.labels))
        for i, row in enumerate(ex.labels):
            for name in row:
                if name not in self.mapping:
                    raise DataError(f"{ex.where(i)}: label {name!r} is not one the model knows "
                                    f"({', '.join(self.labels)})")
                y[i, self.mapping[name]] = 1
        return y

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs = infer.packed_batch(data, index)
        return Batch(inputs, {"labels": data.extra["labels"][index]}, {"loss": len(index) * len(self.labels)},
                     len(index), int(inputs["input_ids"].numel()))

    def loss(self, model, batch: Batch):
        logits = model(**batch.inputs, first_only=True).logits.float()         # (N, C)
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch.targets["labels"], reduction="sum")}, {}

    def probabilities(self, model, data, batch_size: int = 64) -> torch.Tensor:
        return infer.class_logits(model, data, batch_size, self.pool).sigmoid()  # (N, C), each label on its own

    def score(self, probs: torch.Tensor, gold: torch.Tensor) -> dict:
        pred = probs >= self.threshold
        m = scoring.multilabel_scores([set(torch.nonzero(r).flatten().tolist()) for r in gold.bool()],
                                      [set(torch.nonzero(r).flatten().tolist()) for r in pred], len(self.labels))
        m["loss"] = float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), gold))
        return m

    def decode(self, probs: torch.Tensor, data=None) -> list[dict]:
        texts = data.extra["texts"] if data is not None else [None] * len(probs)
        return [{"text": t, "labels": [n for n, x in zip(self.labels, p) if x >= self.threshold],
                 "probabilities": dict(zip(self.labels, p))} for t, p in zip(texts, probs.tolist())]

    def state(self) -> dict:
        return {**super().state(), "threshold": self.threshold}
