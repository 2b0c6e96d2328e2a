"""Extractive question answering around the model: SQuAD files, windows over long contexts, the best answer span.

A port of what the reference implementation's `question-answering` pipeline does with a fast tokenizer
(transformers 4.57, the last with that pipeline), checked number for number by tests/test_answers.py against the
references that bench/qa_reference.py makes with 4.57 itself:

* Windows. The question comes first, then as much of the context as fits in max_length tokens; a longer context is
  cut into windows that overlap by doc_stride tokens (the tokenizers library's `stride` is the overlap, not the
  step). The question is never cut: the pipeline's max_question_len only applies to slow tokenizers.
* p_mask. Every token but the context's may not start or end an answer, except the CLS token, which is kept in the
  softmax (its score stands for "no answer").
* Scores. Per window, a softmax over the allowed tokens, for starts and ends separately; then CLS's probability is
  set to 0 and a span (i, j) scores p_start(i) * p_end(j) for i <= j < i + max_answer_len. The windows of a question
  are not normalised together: their n-best spans are pooled, and spans with the same text (ignoring case) add up.
  "No answer" (handle_impossible_answer) scores the smallest p_start(CLS) * p_end(CLS) over the windows.
* Characters. With align_to_words a span grows to whole words of the tokenizer (BERT: split at spaces and
  punctuation; RoBERTa: byte-level pre-tokens; ALBERT: split at spaces), as far as they lie in the window. The
  answer is the context's slice, with whatever spaces the tokenizer's offsets include (ALBERT's include the space
  before a word).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from .errors import DataError, UsageError

if TYPE_CHECKING:
    from .tokenize import Tokenizer


# ---- SQuAD files ------------------------------------------------------------------------------------------------

@dataclass
class Question:
    """One SQuAD question with its context; answers are (text, start character) pairs, none when impossible."""
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    impossible: bool = False


SQUAD_SHAPE = '{"data": [{"paragraphs": [{"context": "...", "qas": [{"id", "question", "answers": [...]}]}]}]}'


def _kind(value) -> str:
    """How JSON would name a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


def _field(obj: dict, key: str, kind: type, path: Path, where: str):
    """obj[key], which must be of JSON type `kind` (str, int, bool, list, dict)."""
    if key not in obj:
        raise DataError(f"{path} {where}: no {key!r} field")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}
        raise DataError(f"{path} {where + '.' if where else ''}{key}: expected {expected[kind]}, found "
                        f"{_kind(value)}")
    return value


def read_squad(path, answered: bool = False) -> list[Question]:
    """The questions of a SQuAD v1.1 or v2.0 JSON file, in file order.

    Every question needs an `id` (unique in the file), a `question` and, to train or score on (`answered`), an
    `answers` list (empty for a v2.0 question with `is_impossible`: true); every answer a `text` found at
    `answer_start` in its context. An empty list means "no answer" (as in Hugging Face's squad_v2), except, with `answered` (files to train or score on),
    in a file whose "version" is 1.x: SQuAD v1.1 has no unanswerable questions, so there it is a missing answer."""
    if str(path) == "-":                                    # standard input, read whole: one JSON document
        import sys
        path, raw = "<stdin>", sys.stdin.buffer.read()
    else:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: " + ("is a folder; expected a SQuAD .json file" if path.is_dir() else
                                           "no such file"))
        raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); a SQuAD file is UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        lines = (" (JSON lines, an object a line? question answering reads one SQuAD JSON document)"
                 if e.msg == "Extra data" and e.colno == 1 else "")
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}){lines}; expected a "
                        f"SQuAD file, {SQUAD_SHAPE}") from None
    if not isinstance(doc, dict) or "data" not in doc:
        found = "an object without a 'data' field" if isinstance(doc, dict) else _kind(doc)
        raise DataError(f"{path}: not a SQuAD file: expected {SQUAD_SHAPE}, found {found}")
    articles = _field(doc, "data", list, path, "")

    questions: list[Question] = []
    first_seen: dict[str, str] = {}
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        if not isinstance(article, dict):
            raise DataError(f"{path} {where}: expected an object with a 'paragraphs' list, found {_kind(article)}")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, where)):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise DataError(f"{path} {where}: expected an object with 'context' and 'qas', found "
                                f"{_kind(paragraph)}")
            context = _field(paragraph, "context", str, path, where)
            if not context.strip():
                raise DataError(f"{path} {where}.context: empty; a question needs a context to answer from")
            for k, qa in enumerate(_field(paragraph, "qas", list, path, where)):
                questions.append(_question(qa, context, path, f"{where}.qas[{k}]", first_seen, answered))
                q = questions[-1]
                v1 = str(doc.get("version", "")).lower().lstrip("v").startswith("1.")          # "1.1", "v1.1"
                if answered and v1 and not (q.answers or q.impossible):
                    raise DataError(f"{path} {where}.qas[{k}]: no answers, and the file says version "
                                    f"{doc['version']}: SQuAD v1.1 has no unanswerable questions. Give it its "
                                    "answer, or mark the file version 2.0 and the question is_impossible: true")
    if not questions:
        raise DataError(f"{path}: no questions: every paragraph's 'qas' list is empty")
    return questions


def _question(qa, context: str, path: Path, where: str, first_seen: dict[str, str], answered: bool) -> Question:
    if not isinstance(qa, dict):
        raise DataError(f"{path} {where}: expected an object with 'id', 'question' and 'answers', found {_kind(qa)}")
    qid = _field(qa, "id", str, path, where)
    if not qid.strip():                               # the id names the question in every output and score
        raise DataError(f"{path} {where}.id: " + ("empty" if not qid else "only spaces") + "; give each question "
                        "an id of its own")
    if qid in first_seen:
        raise DataError(f"{path} {where}: question id {qid!r} is already used by {first_seen[qid]}; ids must be "
                        "unique in a file")
    first_seen[qid] = where
    text = _field(qa, "question", str, path, where)
    if not text.strip():
        raise DataError(f"{path} {where}.question: empty")
    impossible = _field(qa, "is_impossible", bool, path, where) if "is_impossible" in qa else False
    answers = []
    given = _field(qa, "answers", list, path, where) if answered or "answers" in qa else []   # new questions: none
    for n, answer in enumerate(given):
        at = f"{where}.answers[{n}]"
        if not isinstance(answer, dict):
            raise DataError(f"{path} {at}: expected an object with 'text' and 'answer_start', found {_kind(answer)}")
        answer_text = _field(answer, "text", str, path, at)
        start = _field(answer, "answer_start", int, path, at)
        if not answer_text.strip():
            raise DataError(f"{path} {at}.text: " + ("empty" if not answer_text else "only spaces"))
        end = start + len(answer_text)
        if start < 0 or end > len(context):
            raise DataError(f"{path} {at}: answer_start {start} with the answer text {answer_text!r} "
                            f"({len(answer_text)} characters) lies outside the context ({len(context)} characters)")
        if context[start:end] != answer_text:
            raise DataError(f"{path} {at}: answer_start {start} does not match the context: context[{start}:{end}] "
                            f"is {context[start:end]!r}, the answer text is {answer_text!r}")
        answers.append((answer_text, start))
    if impossible and answers:
        raise DataError(f"{path} {where}: is_impossible is true but it has {len(answers)} answers; SQuAD v2.0 keeps "
                        "those of an unanswerable question in 'plausible_answers'")
    if answered and "is_impossible" in qa and not impossible and not answers:
        raise DataError(f"{path} {where}: is_impossible is false but it has no answers; give its answer, or mark it "
                        "is_impossible: true")
    return Question(qid, text, context, answers, impossible)


# ---- windows ----------------------------------------------------------------------------------------------------

@dataclass
class Window:
    """One model input: a question and a stretch of its context, `[CLS] question [SEP] context [SEP]` (RoBERTa:
    `<s> question </s></s> context </s>`)."""
    question: int                           # index of its question in the list given to windows()
    input_ids: list[int]
    type_ids: list[int]                     # segment 1 on the context and its [SEP]; all 0 for RoBERTa
    offsets: list[tuple[int, int] | None]   # [start, end) characters in the context; None off the context
    word_ids: list[int | None]              # the tokenizer's word index in the context; None off the context
    p_mask: list[bool]                      # True: may not start or end an answer (all but context and CLS)

    def __len__(self) -> int:
        return len(self.input_ids)

    def inputs(self) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids, attention_mask as (1, L) tensors, as the pipeline feeds one window."""
        ids = torch.tensor([self.input_ids])
        return {"input_ids": ids, "token_type_ids": torch.tensor([self.type_ids]),
                "attention_mask": torch.ones_like(ids)}

    def word_chars(self, word: int) -> tuple[int, int]:
        """The characters of a context word, as far as its tokens lie in this window."""
        tokens = [t for t, w in enumerate(self.word_ids) if w == word]
        return self.offsets[tokens[0]][0], self.offsets[tokens[-1]][1]


def windows(tok: Tokenizer, questions: Sequence[Question], max_length: int = 384,
            doc_stride: int = 128) -> list[Window]:
    """Every question's windows, in order: question first, the context cut to fit (truncation "only_second"),
    overflowing windows sharing doc_stride tokens with the one before. Not padded.

    The tokenizer's backend is left as it was found (bertscope's keeps no truncation and no padding)."""
    if not 0 <= doc_stride <= max_length:   # the pipeline's check; the tokenizer's (below) is stricter
        raise UsageError(f"--doc-stride {doc_stride} must lie between 0 and --max-length {max_length}")
    backend = tok.backend
    single, pair = backend.num_special_tokens_to_add(is_pair=False), backend.num_special_tokens_to_add(is_pair=True)
    if max_length < pair + 2:
        raise UsageError(f"--max-length {max_length}: a window holds the special tokens ({pair} around a question "
                         "and its context) and at least a token of each; 384 is usual for question answering")
    if doc_stride >= max_length - single:              # the tokenizers library's own condition, said as ours
        raise UsageError(f"--doc-stride {doc_stride} must be smaller than --max-length {max_length} less {single} (the special tokens "
                         "of one text, as the tokenizers library counts the room a window needs); lower --doc-stride")
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        _check_room(backend, questions, max_length, doc_stride)
        backend.enable_truncation(max_length, stride=doc_stride, strategy="only_second", direction="right")
        encodings = backend.encode_batch([(q.question, q.context) for q in questions])
    finally:
        backend.no_truncation()
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)

    out = []
    for n, encoding in enumerate(encodings):
        for part in [encoding, *encoding.overflowing]:
            in_context = [s == 1 for s in part.sequence_ids]
            p_mask = [not c and t != tok.cls_token_id for c, t in zip(in_context, part.ids)]
            out.append(Window(
                question=n, input_ids=list(part.ids),
                type_ids=list(part.type_ids) if tok.family.segments else [0] * len(part.ids),
                offsets=[tuple(o) if c else None for o, c in zip(part.offsets, in_context)],
                word_ids=[w if c else None for w, c in zip(part.word_ids, in_context)],
                p_mask=p_mask))
    return out


def _check_room(backend, questions, max_length: int, doc_stride: int) -> None:
    """A clear error where the tokenizers library would fail (or panic): a question that leaves the context no
    room, or less room than the overlap of two windows."""
    added = backend.num_special_tokens_to_add(is_pair=True)
    lengths = [len(e.ids) for e in backend.encode_batch([q.question for q in questions], add_special_tokens=False)]
    for q, n in zip(questions, lengths):
        room = max_length - added - n
        if room > doc_stride:
            continue
        context = len(backend.encode(q.context, add_special_tokens=False).ids)
        if context <= room and room > 0:
            continue                                   # fits in one window: no stride needed
        raise UsageError(f"question {q.id!r} has {n} tokens, which with {added} special tokens leaves "
                         f"{max(room, 0)} of --max-length {max_length} for its context of {context} tokens; windows "
                         f"over the context must be longer than their overlap --doc-stride {doc_stride}. Shorten "
                         "the question, raise --max-length or lower --doc-stride.")


# ---- choosing the answer ----------------------------------------------------------------------------------------

def best_answers(questions: Sequence[Question], windows: Sequence[Window], start_logits, end_logits, *,
                 top_k: int = 1, max_answer_len: int = 15, handle_impossible_answer: bool = False,
                 align_to_words: bool = True) -> list:
    """The answer of every question, from the start / end logits of its windows.

    start_logits, end_logits: one row per window, in the order of `windows` (a list of (L,) tensors, or a (W, L)
    tensor padded past each window's length). Returns per question `{"id", "answer", "start", "end", "score"}`
    (characters of the context, end exclusive) with top_k=1, or a list of up to top_k such dicts, best first; with
    handle_impossible_answer "no answer" competes as `answer=""`, start=end=0. None (top_k=1) or [] where no span
    scores above 0 (a context with no tokens)."""
    if max_answer_len < 1:
        raise UsageError(f"--max-answer-length {max_answer_len}: expected at least 1 token")
    if top_k < 1:
        raise UsageError(f"top_k {top_k}: expected at least 1 answer")
    if not len(windows) == len(start_logits) == len(end_logits):
        raise ValueError(f"{len(windows)} windows but {len(start_logits)} rows of start logits and "
                         f"{len(end_logits)} of end logits; give one row per window")
    grouped: list[list] = [[] for _ in questions]
    for k, (w, s, e) in enumerate(zip(windows, start_logits, end_logits)):
        if not 0 <= w.question < len(questions):
            raise ValueError(f"window {k} belongs to question {w.question}, but there are {len(questions)}")
        grouped[w.question].append((w, _row(s, w, k, "start"), _row(e, w, k, "end")))

    results = []
    for q, items in zip(questions, grouped):
        if not items:
            raise ValueError(f"question {q.id!r} has no windows; pass windows(tok, questions) of the same questions")
        ranked = [dict(id=q.id, **a) for a in
                  _rank(q.context, items, top_k, max_answer_len, handle_impossible_answer, align_to_words)]
        results.append(ranked if top_k > 1 else (ranked[0] if ranked else None))
    return results


def _row(logits, w: Window, k: int, name: str) -> torch.Tensor:
    logits = torch.as_tensor(logits).detach()
    if logits.dim() != 1 or logits.shape[0] < len(w):
        raise ValueError(f"{name} logits of window {k}: shape {tuple(logits.shape)}; expected ({len(w)},) or "
                         "longer (padding is ignored)")
    return logits[:len(w)].float().cpu()


def _rank(context: str, items, top_k: int, max_answer_len: int, handle_impossible: bool,
          align_to_words: bool) -> list[dict]:
    """Pool the n-best spans of a question's windows; same texts add up; best first."""
    answers: list[dict] = []
    null = 1e6                                     # the pipeline's start: above any probability product
    n_best = top_k * 2 + 10 if align_to_words else top_k   # word alignment may merge candidates
    for w, start, end in items:
        allowed = ~torch.tensor(w.p_mask)                                       # (L,) context tokens and CLS
        p_start, p_end = _softmax(start, allowed), _softmax(end, allowed)        # (L,) each
        if handle_impossible:
            null = min(null, (p_start[0] * p_end[0]).item())
        p_start[0] = p_end[0] = 0.0                # CLS (position 0) neither starts nor ends a span
        for i, j, score in _top_spans(p_start, p_end, allowed, n_best, max_answer_len):
            a, b = _characters(w, i, j, align_to_words)
            text = context[a:b]
            same = next((x for x in answers if x["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score             # keeps the first one's characters
            else:
                answers.append({"answer": text, "start": a, "end": b, "score": score})
    if handle_impossible:
        answers.append({"answer": "", "start": 0, "end": 0, "score": null})
    answers.sort(key=lambda x: x["score"], reverse=True)       # stable: earlier first among equals
    return answers[:top_k]


def _softmax(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Probabilities over the allowed positions, in fp32; the others get -10000 as in the pipeline (exp -> 0)."""
    x = torch.where(allowed, logits, torch.tensor(-10000.0))
    x = torch.exp(x - x.max())
    return x / x.sum()


def _top_spans(p_start, p_end, allowed, n: int, max_answer_len: int) -> list[tuple[int, int, float]]:
    """The n best (start, end, score) with start <= end < start + max_answer_len, best first, dropping spans that
    score 0 (the pipeline keeps those, in numpy's order, only when fewer than n spans score above 0)."""
    L = p_start.shape[0]
    scores = p_start[:, None] * p_end[None, :]                       # (L, L): [start, end]
    scores = torch.triu(scores).tril(max_answer_len - 1)             # 0 <= end - start < max_answer_len
    top, flat = scores.flatten().topk(min(n, L * L))
    spans = []
    for score, f in zip(top.tolist(), flat.tolist()):
        i, j = divmod(f, L)
        if score > 0 and allowed[i] and allowed[j]:
            spans.append((i, j, score))
    return spans


def _characters(w: Window, i: int, j: int, align_to_words: bool) -> tuple[int, int]:
    """Context characters [start, end) of the span of tokens i..j: whole words with align_to_words; the tokens'
    own offsets without, or where a token has no word (CLS, offsets (0, 0))."""
    if align_to_words and w.word_ids[i] is not None and w.word_ids[j] is not None:
        return w.word_chars(w.word_ids[i])[0], w.word_chars(w.word_ids[j])[1]
    return (w.offsets[i] or (0, 0))[0], (w.offsets[j] or (0, 0))[1]
