"""Sequence classification: one label per text (or text pair), cross-entropy, accuracy / macro-F1 / confusion.

Labels are read as the file gives them and made canonical: integers written `1` and `1.0` are one class; real
numbers are refused (that is regression); a training file with a single class is refused. The class order of a
model that already has a classifier is kept, and the file's labels are mapped onto it: a label the head does not
know is an error unless a new head is asked for, so that re-training never swaps label names silently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import infer
from ..data import Examples, read_examples
from ..errors import DataError
from .. import scoring
from .base import Batch, Task


def canonical_label(value, where: str) -> str:
    """The class name of one label value: strings stripped, integral numbers as integers ("1.0" -> "1")."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: label {value!r} is not a class name or number")
    if isinstance(value, list):
        raise DataError(f"{where}: the label is a list {value!r}, but classification reads one class a row; "
                        "rows with several labels are multi-label data, for a model fine-tuned with --task "
                        "multi-label")
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise DataError(f"{where}: label {value!r} is not a finite number; a class label is a name or an integer")
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return text
        if not math.isfinite(number):          # pandas writes a missing value as "nan"
            raise DataError(f"{where}: label {text!r} is not a class" + (" (a missing value?)" if number != number
                            else "") + "; give every row a class name or integer")
    if number != int(number):
        raise DataError(f"{where}: label {value!r} is a real number, not a class; for a numeric target use "
                        "--task regression")
    return str(int(number))


def label_order(names) -> list[str]:
    """A new head's classes in a stable order: numerically when every name is an integer, else alphabetically."""
    unique = set(names)
    if all(x.lstrip("-").isdigit() for x in unique):
        return sorted(unique, key=int)
    return sorted(unique)


class SequenceClassification(Task):
    name = "classification"
    head = "classification"
    metric = "accuracy"
    problem_type = "single_label_classification"
    empty_label = False                         # an empty label cell is refused (multi-label: a row with none)

    def __init__(self, text_column: str | None = None, label_column: str = "label", pair_column: str | None = None,
                 labels: list[str] | None = None, max_length: int = 128, windows: int | None = None,
                 pool: str = "mean", **_):
        if pool not in ("mean", "max"):
            from ..errors import UsageError
            raise UsageError(f"--pool {pool!r}: use mean or max (how the windows of a long text are combined)")
        self.text_column, self.label_column, self.pair_column = text_column, label_column, pair_column
        self.labels = labels                    # the head's classes, in its order (set by fit_head)
        self.max_length, self.windows, self.pool = max_length, windows, pool

    # ---- reading ------------------------------------------------------------------------------------------------
    def read(self, path, skip_bad_rows: bool = False, labelled: bool = True) -> Examples:
        ex = read_examples(path, self.text_column, self.label_column if labelled else None, self.pair_column,
                           skip_bad_rows, not_text=(self.label_column,),   # unread labels are not the text
                           empty_label=self.empty_label)
        if labelled:
            rows = self._labelled([(ex.lines[i], ex.texts[i], ex.pairs[i] if ex.pairs is not None else None,
                                    ex.labels[i]) for i in range(len(ex))], ex.path, skip_bad_rows, ex.skipped)
            if not rows:
                raise DataError(f"{ex.path}: no examples ({len(ex.skipped)} bad rows skipped)")
            ex.lines, ex.texts, pairs, ex.labels = (list(c) for c in zip(*rows))
            ex.pairs = pairs if ex.pairs is not None else None
        return ex

    def _labelled(self, rows, name, skip_bad_rows: bool, skipped: list) -> list:
        """(line, text, pair, label) rows with each label made canonical; a row whose label is not one (a 'nan', a
        list where a class is expected) raises, or with skip_bad_rows is left out and noted in `skipped`."""
        kept = []
        for n, text, pair, label in rows:
            try:
                kept.append((n, text, pair, self.canonical(label, f"{name} line {n}")))
            except DataError as e:
                if not skip_bad_rows:
                    raise
                skipped.append((n, str(e).split(": ", 1)[-1]))
        return kept

    def chunks(self, source, size: int, skip_bad_rows: bool = False, labelled: bool = True):
        """The file's rows `size` at a time, read lazily (a file of any length streams)."""
        from ..data import iter_rows, source_name
        name = source_name(source)
        block: list = []
        self.skipped: list = []                        # (line, why) of the rows skip_bad_rows left out
        rows = iter_rows(source, self.text_column, self.label_column if labelled else None, self.pair_column,
                         skip_bad_rows, self.skipped, not_text=(self.label_column,), empty_label=self.empty_label)
        for row in rows:
            if labelled:
                row = next(iter(self._labelled([row], name, skip_bad_rows, self.skipped)), None)
                if row is None:
                    continue
            block.append(row)
            if len(block) >= size:
                yield self._examples(name, block, labelled)
                block = []
        if block:
            yield self._examples(name, block, labelled)

    def _examples(self, name, block, labelled) -> Examples:
        return Examples(name, [b[1] for b in block], [b[2] for b in block] if self.pair_column else None,
                        [b[3] for b in block] if labelled else None, [b[0] for b in block])

    def canonical(self, value, where: str):
        return canonical_label(value, where)

    def training_labels(self, ex: Examples) -> list[str]:
        """The classes of a training file, checked: at least two."""
        names = label_order(ex.labels)
        if len(names) < 2:
            raise DataError(f"{ex.path}: every row has label {names[0]!r}; a classifier needs at least two classes "
                            f"(check --label-column {self.label_column!r})")
        return names

    # ---- the head ---------------------------------------------------------------------------------------------
    def fit_head(self, config, saved_head: str | None, train: Examples, new_head: bool):
        """The classes of the head to train, and whether the saved head is kept: the saved classifier's own order
        when it has one (the file's labels mapped onto it), else the file's classes in label_order."""
        names = self.training_labels(train)
        keep = saved_head == self.head and not new_head and config.problem_type in (None, self.problem_type)
        if keep:
            known = config.labels
            if config.generic_labels and all(x.isdigit() and int(x) < len(known) for x in names):
                mapping = {str(i): i for i in range(len(known))}      # LABEL_i heads, integer labels i
            elif config.generic_labels and all(x.isdigit() for x in names):
                # integer classes, more of them than the LABEL_i head has: the count is the problem, not class 0
                wide = [x for x in names if int(x) >= len(known)]
                i = next(i for i, label in enumerate(train.labels) if label == wide[0])
                raise DataError(f"{train.where(i)}: class {wide[0]}, but this classifier has {len(known)} classes "
                                f"(0..{len(known) - 1}, named {known[0]}..{known[-1]}) and the file "
                                f"{len(names)} ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}). Pass "
                                f"--new-head to train a new {len(names)}-class classifier; the saved head is then "
                                "discarded")
            else:
                mapping = {name: i for i, name in enumerate(known)}
            for i, label in enumerate(train.labels):
                if label not in mapping:
                    raise DataError(f"{train.where(i)}: label {label!r} is not one of this classifier's classes "
                                    f"({', '.join(known)}). Pass --new-head to train a new classifier for the file's "
                                    f"classes ({', '.join(names)}); the saved head is then discarded")
            self.labels, self.mapping = list(known), mapping
        else:
            self.labels, self.mapping = names, {name: i for i, name in enumerate(names)}
        return keep

    def configure(self, config):
        """The model's config with this task's labels and problem type."""
        return config.with_labels(self.labels, self.problem_type)

    def use_model_labels(self, config):
        """For evaluate / predict: the classes come from the model."""
        self.labels = config.labels
        generic = config.generic_labels
        self.mapping = {name: i for i, name in enumerate(self.labels)}
        if generic:
            self.mapping.update({str(i): i for i in range(len(self.labels))})

    def targets(self, ex: Examples) -> torch.Tensor:
        for i, label in enumerate(ex.labels):
            if label not in self.mapping:
                raise DataError(f"{ex.where(i)}: label {label!r} is not one the model knows "
                                f"({', '.join(self.labels)}); the label set comes from the training file")
        return torch.tensor([self.mapping[x] for x in ex.labels], dtype=torch.long)

    # ---- encoding and batches ---------------------------------------------------------------------------------
    def encode(self, ex: Examples, tok, max_length: int | None = None, labelled: bool = True) -> infer.Encoded:
        """Token ids of every text (or of its windows, with windows): extra["labels"] holds one target per sequence
        (what training uses), extra["gold"] one per text (what scoring uses)."""
        enc = infer.tokenize(tok, ex.texts, ex.pairs, max_length=max_length or self.max_length, windows=self.windows)
        enc.extra["texts"] = ex.texts
        specials = tok.backend.num_special_tokens_to_add(is_pair=ex.pairs is not None)
        text = enc.extra.get("text")                  # with windows: the text of each window
        enc.extra["pieceless"] = [(ex.texts[i], ex.lines[i]) for i in
                                  (text[k] if text is not None else k for k, n in enumerate(enc.lengths)
                                   if n == specials)]   # texts of which no token is left: special tokens alone
        if labelled and ex.labels is not None:
            gold = self.targets(ex)
            text = enc.extra.get("text")
            enc.extra["gold"] = gold
            enc.extra["labels"] = gold[torch.tensor(text)] if text is not None else gold
        return enc

    def pieceless_notice(self, found: list[tuple[str, int]], name: str, training: bool = False) -> str:
        """Texts that became no token (zero-width or control characters alone, which the tokenizer drops)."""
        text, line = found[0]
        them = "them" if len(found) > 1 else "it"
        return (f"{name}: {len(found)} text{'s' if len(found) > 1 else ''} became no token at all (first: {text!r}, "
                f"line {line}; the tokenizer drops such characters), so the model reads its special tokens alone for "
                f"{them}" + (": its label is learnt from nothing" if training else ""))

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs = infer.packed_batch(data, index)
        return Batch(inputs, {"labels": data.extra["labels"][index]}, {"loss": len(index)}, len(index),
                     int(inputs["input_ids"].numel()))

    def loss(self, model, batch: Batch):
        logits = model(**batch.inputs, first_only=True).logits              # (N, C)
        return {"loss": F.cross_entropy(logits.float(), batch.targets["labels"], reduction="sum")}, {}

    # ---- evaluation and prediction ----------------------------------------------------------------------------
    def probabilities(self, model, data, batch_size: int = 64) -> torch.Tensor:
        return infer.class_probabilities(model, data, batch_size, self.pool)

    def predictions(self, model, data, batch_size: int = 64) -> torch.Tensor:
        return self.probabilities(model, data, batch_size)

    def gold(self, data):
        return data.extra["gold"]


    def score(self, probs: torch.Tensor, gold: torch.Tensor) -> dict:
        m = scoring.classification_scores(gold.tolist(), probs.argmax(-1).tolist(), probs.shape[-1])
        m["loss"] = float(F.nll_loss(probs.clamp(min=1e-12).log(), gold))
        return m

    def decode(self, probs: torch.Tensor, data=None) -> list[dict]:
        out = []
        texts = data.extra["texts"] if data is not None else [None] * len(probs)
        for text, p in zip(texts, probs.tolist()):
            best = max(range(len(p)), key=p.__getitem__)
            out.append({"text": text, "label": self.labels[best], "probabilities": dict(zip(self.labels, p))})
        return out

    def state(self) -> dict:
        return {"task": self.name, "labels": self.labels, "text_column": self.text_column,
                "label_column": self.label_column, "pair_column": self.pair_column, "max_length": self.max_length,
                "windows": self.windows, "pool": self.pool}
