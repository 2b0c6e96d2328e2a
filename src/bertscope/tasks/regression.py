"""Regression: one number per text (problem_type "regression"), mean squared error, Pearson / Spearman."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from .. import infer, scoring
from ..errors import CheckpointError, DataError
from .base import Batch
from .classification import SequenceClassification


_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Regression(SequenceClassification):
    name = "regression"
    metric = "pearson"
    problem_type = "regression"

    def canonical(self, value, where: str):
        if isinstance(value, bool) or isinstance(value, list) or value is None:
            raise DataError(f"{where}: a regression target must be a number, got {value!r}")
        if isinstance(value, str) and not _PLAIN_NUMBER.fullmatch(value.strip()) and \
                value.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity"):
            # float() also reads "1_000" and other scripts' digits ("３", "١٢"): a number is written as 3.5 or 1e-3
            raise DataError(f"{where}: a regression target must be a number written with the digits 0-9 (3.5, -2, 1e-3), "
                            f"got {value!r}" + ("" if any(c.isdigit() for c in value) else
                                                "; for class names use --task classification"))
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: a regression target must be a number, got {value!r}; for class names use "
                            "--task classification") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: the target {value!r} is not a finite number")
        if abs(number) > 1e30:            # float32 ends at 3.4e38, and the squared error of such a target long before
            raise DataError(f"{where}: the target {value!r} is too large to train on in float32 (|target| ≤ 1e30; "
                            "scale the targets down)")
        return number

    def training_labels(self, ex):
        if len(set(ex.labels)) < 2:
            raise DataError(f"{ex.path}: every row has the target {ex.labels[0]}; there is nothing to regress on")
        return ["score"]

    def fit_head(self, config, saved_head, train, new_head: bool) -> bool:
        self.training_labels(train)
        keep = saved_head == self.head and not new_head and config.num_labels == 1 and \
            config.problem_type in (None, "regression")
        self.labels, self.mapping = (list(config.labels) if keep else ["score"]), {}
        return keep

    def use_model_labels(self, config):
        if config.num_labels != 1:                     # Hugging Face's multi-output regression: one target a row here
            raise CheckpointError(f"this model's config.json has problem_type {config.problem_type!r} with "
                                  f"{config.num_labels} outputs; bertscope's regression reads one number a row, so "
                                  "it scores and predicts models with num_labels 1 (fine-tune one: bertscope "
                                  "finetune --task regression --new-head)")
        self.labels, self.mapping = list(config.labels), {}

    def targets(self, ex) -> torch.Tensor:
        return torch.tensor(ex.labels, dtype=torch.float32)

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs = infer.packed_batch(data, index)
        return Batch(inputs, {"labels": data.extra["labels"][index]}, {"loss": len(index)}, len(index),
                     int(inputs["input_ids"].numel()))

    def loss(self, model, batch: Batch):
        pred = model(**batch.inputs, first_only=True).logits.squeeze(-1).float()  # (N,)
        return {"loss": F.mse_loss(pred, batch.targets["labels"], reduction="sum")}, {}

    def probabilities(self, model, data, batch_size: int = 64) -> torch.Tensor:
        return infer.class_logits(model, data, batch_size, self.pool)         # (N, 1): the predicted numbers

    def score(self, pred: torch.Tensor, gold: torch.Tensor) -> dict:
        m = scoring.regression_scores(gold.tolist(), pred.squeeze(-1).tolist())
        m["loss"] = m["mse"]
        return m

    def undefined_scores(self, gold, pred=None) -> str | None:
        """Why Pearson and Spearman are nan (not a number) for these targets (and predictions), or None: a
        correlation needs values that vary on both sides."""
        gold = gold.tolist() if isinstance(gold, torch.Tensor) else list(gold)
        if len(set(gold)) == 1:
            return f"every target is {gold[0]:g}, and a correlation needs targets that differ"
        if pred is not None and len(set(pred.reshape(-1).tolist())) == 1:
            return "the model gives every text the same number, and a correlation needs predictions that differ"
        return None

    def decode(self, pred: torch.Tensor, data=None) -> list[dict]:
        texts = data.extra["texts"] if data is not None else [None] * len(pred)
        return [{"text": t, "score": float(v)} for t, v in zip(texts, pred.squeeze(-1).tolist())]
