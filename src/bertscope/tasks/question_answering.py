"""Extractive question answering (SQuAD v1.1 and v2.0): a start and an end score per token.

A question and its context become windows (answers.windows: the question in every window, the context split with
`doc_stride` tokens of overlap); training points each window at its answer's first and last token, or at the CLS
token where the answer is not in the window (or the question has none); prediction picks the best span over all
windows of a question as the reference pipeline does (answers.best_answers), with "no answer" allowed for v2.0
data; scoring is the official SQuAD script's exact match and F1 (scoring.squad_scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import answers, infer, scoring
from ..errors import DataError
from .base import Batch, Task


class QuestionAnswering(Task):
    name = "question-answering"
    head = "question-answering"
    metric = "f1"

    def __init__(self, max_length: int = 384, doc_stride: int | None = None, max_answer_length: int = 15,
                 no_answer: bool | None = None, **_):
        self.max_length, self.doc_stride = max_length, doc_stride   # doc_stride None: see stride
        self.max_answer_length, self.no_answer = max_answer_length, no_answer
        self.labels = ["start", "end"]

    def stride(self, max_length: int) -> int:
        """--doc-stride, by default 128 (the reference pipeline's, at its 384 tokens), or a third of a shorter
        --max-length (a model of 128 positions: 42), so that windows still move on."""
        return self.doc_stride if self.doc_stride is not None else min(128, max_length // 3)

    # ---- reading and the head -----------------------------------------------------------------------------------
    def read(self, path, skip_bad_rows: bool = False, labelled: bool = True) -> list[answers.Question]:
        questions = answers.read_squad(path, answered=labelled)
        if labelled and not any(q.answers or q.impossible for q in questions):
            raise DataError(f"{path}: no question has an answer; training and evaluation need SQuAD answers")
        return questions

    def chunks(self, source, size: int, skip_bad_rows: bool = False, labelled: bool = True):
        questions = self.read(source, skip_bad_rows, labelled)
        # "no answer" is allowed for the whole file or not at all (never by chunk): as asked, else where the file
        # is SQuAD v2.0 (a question marked is_impossible)
        self.file_no_answer = any(q.impossible for q in questions)
        for a in range(0, len(questions), size):
            yield questions[a:a + size]

    def gold(self, data):
        return data.extra["questions"]

    def fit_head(self, config, saved_head, train, new_head: bool) -> bool:
        return saved_head == self.head and not new_head

    def configure(self, config):
        return config.with_labels(self.labels)

    def use_model_labels(self, config):
        pass

    # ---- encoding and batches ---------------------------------------------------------------------------------
    def encode(self, questions, tok, max_length: int | None = None, labelled: bool = True) -> infer.Encoded:
        length = max_length or self.max_length
        ws = answers.windows(tok, questions, length, self.stride(length))
        enc = infer.Encoded(ids=[w.input_ids for w in ws], types=[w.type_ids for w in ws],
                            extra={"windows": ws, "questions": questions})
        if labelled:
            enc.extra["positions"] = [self._position(w, questions[w.question]) for w in ws]
        return enc

    @staticmethod
    def _position(w: answers.Window, q: answers.Question) -> tuple[int, int]:
        """The answer's first and last token in this window, or (0, 0) (the CLS token) where it is not inside."""
        if not q.answers:
            return 0, 0
        text, start = q.answers[0]
        end = start + len(text)
        tokens = [(t, o) for t, o in enumerate(w.offsets) if o is not None]
        if not tokens or start < tokens[0][1][0] or end > tokens[-1][1][1]:
            return 0, 0
        first = next(t for t, (a, b) in tokens if b > start)
        last = next(t for t, (a, b) in reversed(tokens) if a < end)
        return (first, last) if first <= last else (0, 0)

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs = infer.packed_batch(data, index)
        lengths = [len(data.ids[i]) for i in index]
        starts = torch.tensor([data.extra["positions"][i][0] for i in index])
        ends = torch.tensor([data.extra["positions"][i][1] for i in index])
        return Batch(inputs, {"start": starts, "end": ends, "lengths": torch.tensor(lengths)}, {"loss": len(index)},
                     len(index), sum(lengths))

    def loss(self, model, batch: Batch):
        out = model(**batch.inputs)
        lengths = batch.targets["lengths"].tolist()
        start = _rows(out.start_logits.float(), lengths)                     # (N, Lmax), -inf past each window
        end = _rows(out.end_logits.float(), lengths)
        loss = (F.cross_entropy(start, batch.targets["start"], reduction="sum") +
                F.cross_entropy(end, batch.targets["end"], reduction="sum")) / 2
        return {"loss": loss}, {}

    # ---- predictions ----------------------------------------------------------------------------------------
    def predictions(self, model, data, batch_size: int = 64, no_answer: bool | None = None) -> list:
        per_window = infer.run(model, data, batch_size, fn=lambda out, b, i: list(zip(
            out.start_logits.float().cpu().split((b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).tolist()),
            out.end_logits.float().cpu().split((b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).tolist()))))
        questions = data.extra["questions"]
        impossible = self.no_answer if self.no_answer is not None else getattr(
            self, "file_no_answer", any(q.impossible for q in questions))
        best = answers.best_answers(questions, data.extra["windows"], [s for s, _ in per_window],
                                    [e for _, e in per_window], max_answer_len=self.max_answer_length,
                                    handle_impossible_answer=impossible)
        return [b if b is not None else {"id": q.id, "answer": "", "start": 0, "end": 0, "score": 0.0}
                for q, b in zip(questions, best)]


    def score(self, preds, questions) -> dict:
        return scoring.squad_scores({p["id"]: p["answer"] for p in preds},     # in percent, as the official script
                                    {q.id: [a for a, _ in q.answers] for q in questions})

    def decode(self, preds, data) -> list[dict]:
        return [{"id": p["id"], "answer": p["answer"], "start": p["start"], "end": p["end"], "score": p["score"]}
                for p in preds]

    def settle(self, train) -> None:
        """A model trained on SQuAD v2.0 (questions marked is_impossible) says "no answer" on new questions too."""
        if self.no_answer is None and any(q.impossible for q in train):
            self.no_answer = True

    def state(self) -> dict:
        return {"task": self.name, "max_length": self.max_length, "doc_stride": self.doc_stride,
                "max_answer_length": self.max_answer_length, "no_answer": self.no_answer}


def _rows(flat: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(T,) packed scores as (N, Lmax) rows, padded with -inf (no probability)."""
    rows = flat.new_full((len(lengths), max(lengths)), float("-inf"))
    for k, piece in enumerate(flat.split(lengths)):
        rows[k, :len(piece)] = piece
    return rows
