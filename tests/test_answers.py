"""bertscope.answers: SQuAD files, windows over long contexts, and the answer span, against transformers 4.57's
question-answering pipeline (the last version with it).

The parity tests need a folder made by bench/qa_reference.py in a transformers 4.57 environment:

    /work/venv-tf457/bin/python bench/qa_reference.py --out /tmp/qa-ref
    BERTSCOPE_QA_REFERENCE=/tmp/qa-ref python -m pytest tests/test_answers.py
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import DATA, MINILM, need_shared

import bertscope
from bertscope.answers import Question, best_answers, read_squad, windows
from bertscope.data import DataError

SHAPE = '{"data": [{"paragraphs": [{"context": "...", "qas": [{"id", "question", "answers": [...]}]}]}]}'
CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
           "in France.")


def squad(tmp_path, doc, name="squad.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def one_question(**qa) -> dict:
    return {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": CONTEXT, "qas": [qa]}]}]}


# ---- read_squad -------------------------------------------------------------------------------------------------

def test_read_squad_v11_keeps_every_answer_and_file_order(tmp_path):
    doc = {"version": "1.1", "data": [
        {"title": "Normans", "paragraphs": [{"context": CONTEXT, "qas": [
            {"id": "q1", "question": "In what country is Normandy located?",
             "answers": [{"text": "France", "answer_start": 104}, {"text": "France", "answer_start": 104}]},
            {"id": "q2", "question": "When did the Normans name Normandy?",
             "answers": [{"text": "10th and 11th centuries", "answer_start": 39}]}]}]},
        {"title": "Other", "paragraphs": [{"context": "Paris is the capital.", "qas": [
            {"id": "q3", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
    qs = read_squad(squad(tmp_path, doc))
    assert [q.id for q in qs] == ["q1", "q2", "q3"]
    assert qs[0] == Question("q1", "In what country is Normandy located?", CONTEXT, [("France", 104)] * 2, False)
    assert qs[1].answers == [("10th and 11th centuries", 39)]
    assert qs[2].context == "Paris is the capital."


def test_read_squad_v20_unanswerable_questions_have_no_answers(tmp_path):
    doc = one_question(id="q1", question="Who gave their name to Paris?", answers=[], is_impossible=True,
                       plausible_answers=[{"text": "The Normans", "answer_start": 0}])
    doc["data"][0]["paragraphs"][0]["qas"].append(
        {"id": "q2", "question": "Who named Normandy?", "answers": [{"text": "The Normans", "answer_start": 0}],
         "is_impossible": False})
    qs = read_squad(squad(tmp_path, doc))
    assert [(q.id, q.impossible, q.answers) for q in qs] == [("q1", True, []), ("q2", False, [("The Normans", 0)])]


def test_questions_without_answers_are_refused_for_training_not_for_predicting(tmp_path):
    doc = one_question(id="q1", question="Who?", answers=[])
    doc["version"] = "1.1"
    path = squad(tmp_path, doc)
    assert read_squad(path)[0].answers == []                 # predict: a question to answer
    with pytest.raises(DataError, match=r"qas\[0\]: no answers, and the file says version 1.1"):
        read_squad(path, answered=True)
    doc["version"] = "v1.1"                                   # as some exports spell it
    with pytest.raises(DataError, match=r"qas\[0\]: no answers, and the file says version v1.1"):
        read_squad(squad(tmp_path, doc), answered=True)
    doc["version"] = "v2.0"                                   # v2.0 (and no version: Hugging Face's squad_v2 export)
    assert read_squad(squad(tmp_path, doc), answered=True)[0].answers == []
    doc["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = False          # said answerable, and no answer
    with pytest.raises(DataError, match=r"qas\[0\]: is_impossible is false but it has no answers"):
        read_squad(squad(tmp_path, doc), answered=True)
    del doc["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"]
    del doc["data"][0]["paragraphs"][0]["qas"][0]["answers"]        # a new question, to predict: no answers yet
    assert read_squad(squad(tmp_path, doc))[0].answers == []
    with pytest.raises(DataError, match=r"qas\[0\]: no 'answers' field"):
        read_squad(squad(tmp_path, doc), answered=True)


def test_read_squad_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(one_question(id="a", question="Who?", answers=[])).encode())
    assert read_squad(path)[0].id == "a"


BAD = {
    "not_json": ("{'data': []}", "{p}: not valid JSON (Expecting property name enclosed in double quotes at line 1, "
                                 f"column 2); expected a SQuAD file, {SHAPE}"),
    "a_list": ("[1, 2]", f"{{p}}: not a SQuAD file: expected {SHAPE}, found a list"),
    "no_data": ('{"version": "v2.0"}', f"{{p}}: not a SQuAD file: expected {SHAPE}, found an object without a "
                                       "'data' field"),
    "data_not_a_list": ('{"data": {"paragraphs": []}}', "{p} data: expected a list, found an object"),
    "article_not_an_object": ('{"data": ["text"]}',
                              "{p} data[0]: expected an object with a 'paragraphs' list, found the string 'text'"),
    "no_context": ({"data": [{"paragraphs": [{"qas": []}]}]}, "{p} data[0].paragraphs[0]: no 'context' field"),
    "empty_context": ({"data": [{"paragraphs": [{"context": " ", "qas": []}]}]},
                      "{p} data[0].paragraphs[0].context: empty; a question needs a context to answer from"),
    "no_question": (one_question(id="q1", answers=[]), "{p} data[0].paragraphs[0].qas[0]: no 'question' field"),
    "id_a_number": (one_question(id=5, question="Who?", answers=[]),
                    "{p} data[0].paragraphs[0].qas[0].id: expected a string, found the number 5"),
    "impossible_not_bool": (one_question(id="q1", question="Who?", answers=[], is_impossible="yes"),
                            "{p} data[0].paragraphs[0].qas[0].is_impossible: expected true or false, found the "
                            "string 'yes'"),
    "start_a_string": (one_question(id="q1", question="Who?", answers=[{"text": "France", "answer_start": "104"}]),
                       "{p} data[0].paragraphs[0].qas[0].answers[0].answer_start: expected an integer, found the "
                       "string '104'"),
    "start_off_by_two": (one_question(id="q1", question="Where?", answers=[{"text": "France", "answer_start": 102}]),
                         "{p} data[0].paragraphs[0].qas[0].answers[0]: answer_start 102 does not match the context: "
                         "context[102:108] is 'n Fran', the answer text is 'France'"),
    "start_past_the_end": (one_question(id="q1", question="Where?", answers=[{"text": "France.", "answer_start": 105}]),
                           "{p} data[0].paragraphs[0].qas[0].answers[0]: answer_start 105 with the answer text "
                           "'France.' (7 characters) lies outside the context (111 characters)"),
    "impossible_with_answers": (one_question(id="q1", question="Where?", is_impossible=True,
                                             answers=[{"text": "France", "answer_start": 104}]),
                                "{p} data[0].paragraphs[0].qas[0]: is_impossible is true but it has 1 answers; SQuAD "
                                "v2.0 keeps those of an unanswerable question in 'plausible_answers'"),
    "no_questions": ({"data": [{"paragraphs": [{"context": CONTEXT, "qas": []}]}]},
                     "{p}: no questions: every paragraph's 'qas' list is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_read_squad_names_the_file_and_the_json_path_of_a_bad_field(tmp_path, case):
    doc, message = BAD[case]
    path = squad(tmp_path, doc)
    with pytest.raises(DataError) as e:
        read_squad(path)
    assert str(e.value) == message.replace("{p}", str(path))


def test_read_squad_duplicate_id_names_both_places(tmp_path):
    doc = one_question(id="q1", question="Who?", answers=[])
    doc["data"].append({"paragraphs": [{"context": "Another text.", "qas": [
        {"id": "q2", "question": "What?", "answers": []}, {"id": "q1", "question": "Which?", "answers": []}]}]})
    path = squad(tmp_path, doc)
    with pytest.raises(DataError) as e:
        read_squad(path)
    assert str(e.value) == (f"{path} data[1].paragraphs[0].qas[1]: question id 'q1' is already used by "
                            "data[0].paragraphs[0].qas[0]; ids must be unique in a file")


def test_read_squad_missing_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_squad(tmp_path / "absent.json")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"data": "caf\xe9"}')
    with pytest.raises(DataError) as e:
        read_squad(path)
    assert str(e.value) == f"{path}: not UTF-8 text (byte 13); a SQuAD file is UTF-8 JSON"


# ---- windows and answers on real text (BERT's WordPiece tokenizer) --------------------------------------------------

@pytest.fixture(scope="module")
def bert_tok():
    need_shared()
    return bertscope.load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def long_question():
    """A WikiText-2 article's first paragraphs, about 750 tokens: 3 windows of 384 with doc_stride 128."""
    need_shared()
    lines = (DATA / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
    paragraphs = [line.strip() for line in lines[:40] if line.strip() and not line.startswith(" =")]
    context = " ".join(paragraphs)[:3000]
    return Question("wt2", "Which television series did Robert appear in as a guest in 2000?", context)


def test_windows_overlap_by_doc_stride_tokens_and_cover_the_context(bert_tok, long_question):
    ws = windows(bert_tok, [long_question], max_length=384, doc_stride=128)
    context_ids = bert_tok.encode(long_question.context, add_special_tokens=False)
    question_ids = bert_tok.encode(long_question.question, add_special_tokens=False)
    assert len(ws) == 3
    covered = []
    for k, w in enumerate(ws):
        assert len(w) <= 384 and w.question == 0
        assert w.input_ids[:len(question_ids) + 2] == [bert_tok.cls_token_id, *question_ids, bert_tok.sep_token_id]
        ctx = [t for t, o in zip(w.input_ids, w.offsets) if o is not None]
        if k:
            assert ctx[:128] == covered[-128:]          # the overlap is doc_stride tokens, not the step
            covered += ctx[128:]
        else:
            covered = ctx
        assert w.p_mask == [o is None and t != bert_tok.cls_token_id for t, o in zip(w.input_ids, w.offsets)]
        assert w.type_ids == [0] * (len(question_ids) + 2) + [1] * (len(ctx) + 1)
    assert covered == context_ids


def test_window_offsets_point_at_the_context_words(bert_tok, long_question):
    w = windows(bert_tok, [long_question])[1]
    context = long_question.context
    pieces = [(bert_tok.backend.id_to_token(t), o) for t, o in zip(w.input_ids, w.offsets) if o is not None]
    for piece, (a, b) in pieces:
        if piece != "[UNK]":
            assert context[a:b].lower() == piece.removeprefix("##")
    assert [o for _, o in pieces] == sorted(o for _, o in pieces)


def test_windows_leave_the_tokenizer_backend_as_found(bert_tok, long_question):
    backend = bert_tok.backend
    windows(bert_tok, [long_question])
    assert backend.truncation is None and backend.padding is None
    backend.enable_truncation(100, stride=5)
    backend.enable_padding(pad_id=0, pad_token="[PAD]", length=120)
    try:
        before = (backend.truncation, backend.padding)
        ws = windows(bert_tok, [long_question])
        assert (backend.truncation, backend.padding) == before
        assert len(ws) == 3 and len(ws[-1]) < 384      # neither the 100-token truncation nor the padding applied
    finally:
        backend.no_truncation()
        backend.no_padding()


def test_a_question_that_leaves_the_context_less_room_than_the_stride_is_an_error(bert_tok, long_question):
    q = Question("long", "word " * 260, long_question.context)
    with pytest.raises(ValueError) as e:
        windows(bert_tok, [q])
    assert str(e.value).startswith("question 'long' has 260 tokens, which with 3 special tokens leaves 121 of "
                                   "--max-length 384 for its context of ")
    short = Question("short", "word " * 250, "A short context.")
    assert len(windows(bert_tok, [short])) == 1           # no windows needed, so no stride either


def spike(ws, where: dict, base=0.0, cls=0.0):
    """Logit rows that are `base` everywhere, `cls` at position 0, and where[(window, token)] at chosen tokens."""
    rows = []
    for k, w in enumerate(ws):
        row = torch.full((len(w),), base)
        row[0] = cls
        for (wk, t), v in where.items():
            if wk == k:
                row[t] = v
        rows.append(row)
    return rows


def allowed(w) -> int:
    return sum(not m for m in w.p_mask)


def test_an_answer_found_in_two_windows_adds_both_windows_scores(bert_tok, long_question):
    """Scores are per-window probabilities (CLS in the softmax), never normalised across windows; a text found in
    two overlapping windows sums."""
    ws = windows(bert_tok, [long_question])
    context = long_question.context
    # a word of one WordPiece token, found once in the context, inside the overlap of windows 0 and 1
    span = next(o for o, w in zip(ws[1].offsets, ws[1].word_ids) if o and o in ws[0].offsets
                and ws[1].word_ids.count(w) == 1 and context[o[0]:o[1]].isalpha() and o[1] - o[0] >= 5
                and context.lower().count(context[o[0]:o[1]].lower()) == 1)
    at = {k: w.offsets.index(span) for k, w in enumerate(ws) if span in w.offsets}
    assert sorted(at) == [0, 1]
    logits = spike(ws, {(k, t): 10.0 for k, t in at.items()})
    [got] = best_answers([long_question], ws, logits, logits)
    p = [math.exp(10) / (math.exp(10) + allowed(ws[k]) - 1) for k in at]
    assert (got["answer"], got["start"], got["end"]) == (context[span[0]:span[1]], *span)
    assert got["score"] == pytest.approx(p[0] ** 2 + p[1] ** 2, rel=1e-5)


def test_no_answer_scores_the_least_likely_windows_cls(bert_tok, long_question):
    ws = windows(bert_tok, [long_question])
    logits = spike(ws, {}, cls=10.0)
    [null] = best_answers([long_question], ws, logits, logits, handle_impossible_answer=True)
    p = min(math.exp(10) / (math.exp(10) + allowed(w) - 1) for w in ws)
    assert (null["answer"], null["start"], null["end"]) == ("", 0, 0)
    assert null["score"] == pytest.approx(p ** 2, rel=1e-5)
    [span] = best_answers([long_question], ws, logits, logits)
    assert span["answer"] != "" and span["score"] < null["score"]
    ranked = best_answers([long_question], ws, logits, logits, top_k=3, handle_impossible_answer=True)[0]
    assert [a["answer"] for a in ranked][0] == "" and len(ranked) == 3


def test_spans_longer_than_max_answer_len_are_never_chosen(bert_tok, long_question):
    ws = windows(bert_tok, [long_question])[:1]
    first = ws[0].p_mask.index(False, 1)               # first context token
    start, end = spike(ws, {(0, first): 10.0}), spike(ws, {(0, first + 20): 10.0})
    text = long_question.context
    long = best_answers([long_question], ws, start, end, max_answer_len=21)[0]
    w = ws[0]
    assert (long["start"], long["end"]) == (w.word_chars(w.word_ids[first])[0], w.word_chars(w.word_ids[first + 20])[1])
    short = best_answers([long_question], ws, start, end)[0]           # max_answer_len=15
    assert short["end"] - short["start"] < long["end"] - long["start"]
    assert text[short["start"]:short["end"]] == short["answer"]


def test_a_span_starting_inside_a_word_grows_to_the_whole_word(bert_tok, long_question):
    ws = windows(bert_tok, [long_question])[:1]
    w = ws[0]
    piece = next(t for t, i in enumerate(w.input_ids)
                 if w.offsets[t] and bert_tok.backend.id_to_token(i).startswith("##"))
    word = w.word_chars(w.word_ids[piece])
    logits = spike(ws, {(0, piece): 10.0})
    aligned = best_answers([long_question], ws, logits, logits)[0]
    raw = best_answers([long_question], ws, logits, logits, align_to_words=False)[0]
    assert (aligned["start"], aligned["end"]) == word
    assert (raw["start"], raw["end"]) == w.offsets[piece] and raw["start"] > word[0]


# ---- parity with transformers 4.57's pipeline --------------------------------------------------------------------

FAMILIES = ["bert", "roberta", "albert"]
HOW = ("make it with transformers 4.57: `python3 -m venv /work/venv-tf457 && /work/venv-tf457/bin/pip install "
       "torch==2.13.0 transformers==4.57.1 && /work/venv-tf457/bin/python bench/qa_reference.py --out /tmp/qa-ref`, "
       "then set BERTSCOPE_QA_REFERENCE=/tmp/qa-ref")


@pytest.fixture(scope="module")
def reference():
    folder = os.environ.get("BERTSCOPE_QA_REFERENCE")
    if not folder:
        pytest.skip(f"BERTSCOPE_QA_REFERENCE is not set: no transformers 4.57 question-answering reference; {HOW}")
    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        pytest.fail(f"BERTSCOPE_QA_REFERENCE={folder} has no manifest.json: not a bench/qa_reference.py folder; {HOW}")
    return folder


class Family:
    """One family's reference: the 4.57 records, our windows of the same questions, and both sets of logits."""

    def __init__(self, folder: Path, family: str):
        from safetensors.torch import load_file
        self.folder = folder / family
        self.ref = json.loads((self.folder / "reference.json").read_text(encoding="utf-8"))
        self.questions = read_squad(folder / "squad.json")
        self.tok = bertscope.load_tokenizer(self.folder)
        self.windows = windows(self.tok, self.questions, max_length=self.ref["settings"]["max_seq_len"],
                               doc_stride=self.ref["settings"]["doc_stride"])
        self.index = []                                   # (question id, window number) of each window
        for w in self.windows:
            qid = self.questions[w.question].id
            self.index.append((qid, sum(1 for q, _ in self.index if q == qid)))
        saved = load_file(str(self.folder / "logits.safetensors"))
        self.ref_start = [saved[f"{q}/{n}/start"] for q, n in self.index]
        self.ref_end = [saved[f"{q}/{n}/end"] for q, n in self.index]
        self._ours = None

    def ours(self):
        """Logits of the saved model run by transformers 5 (eager attention) on our windows, one at a time."""
        if self._ours is None:
            from transformers import AutoModelForQuestionAnswering
            model = AutoModelForQuestionAnswering.from_pretrained(str(self.folder), attn_implementation="eager")
            model.eval()
            starts, ends = [], []
            with torch.no_grad():
                for w in self.windows:
                    inputs = w.inputs()
                    if not self.tok.family.segments:   # as the pipeline: RoBERTa's tokenizer gives no type ids
                        inputs.pop("token_type_ids")
                    out = model(**inputs)
                    starts.append(out.start_logits[0])
                    ends.append(out.end_logits[0])
            self._ours = starts, ends
        return self._ours


@pytest.fixture(scope="module")
def families(reference):
    cache = {}
    return lambda family: cache.setdefault(family, Family(reference, family))


MODES = {"answers": {}, "answers_impossible": {"handle_impossible_answer": True},
         "answers_top3_impossible": {"handle_impossible_answer": True, "top_k": 3}}


def mismatches(f: Family, got: list, mode: str) -> list[str]:
    """Questions whose answers (text, start, end; score to 1e-4 relative) differ from the 4.57 pipeline's."""
    bad = []
    for q, ours in zip(f.questions, got):
        want = f.ref[mode][q.id]
        pairs = list(zip(ours, want)) if isinstance(want, list) else [(ours, want)]
        same = not isinstance(want, list) or len(ours) == len(want)
        for a, b in pairs:
            same &= (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
            same &= math.isclose(a["score"], b["score"], rel_tol=1e-4)
        if not same:
            bad.append(f"{q.id}: ours {ours}, 4.57 {want}")
    return bad


@pytest.mark.parametrize("family", FAMILIES)
def test_windows_equal_the_457_pipelines_windows(families, family):
    f = families(family)
    assert len(f.windows) == sum(len(v) for v in f.ref["windows"].values())
    for w, (qid, n) in zip(f.windows, f.index):
        want = f.ref["windows"][qid][n]
        where = f"{family} question {qid} window {n}"
        assert w.input_ids == want["input_ids"], where
        # BERT and ALBERT feed the tokenizer's type ids; RoBERTa's tokenizer feeds none, so its model uses zeros
        assert w.type_ids == (want["token_type_ids"] or [0] * len(w)), where
        assert [int(m) for m in w.p_mask] == want["p_mask"], where
        context = [tuple(o) if s == 1 else None for o, s in zip(want["offsets"], want["sequence_ids"])]
        assert w.offsets == context, where
        assert w.word_ids == [x if s == 1 else None for x, s in zip(want["word_ids"], want["sequence_ids"])], where


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_postprocess_of_the_457_logits_gives_the_457_answers(families, family, mode):
    """best_answers alone: the 4.57 pipeline's own logits in, its answers out, for every question."""
    f = families(family)
    got = best_answers(f.questions, f.windows, f.ref_start, f.ref_end, **MODES[mode])
    bad = mismatches(f, got, mode)
    assert not bad, f"{family} {mode}: {len(bad)} of {len(got)} differ:\n" + "\n".join(bad[:5])


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_from_transformers_5_logits_on_our_windows_equal_the_457_pipelines(families, family):
    f = families(family)
    starts, ends = f.ours()
    worst = max(max((a - b).abs().max().item(), (c - d).abs().max().item())
                for a, b, c, d in zip(starts, f.ref_start, ends, f.ref_end))
    assert worst < 1e-4, f"{family}: logits differ from 4.57's by up to {worst:.2e}"
    for mode, options in MODES.items():
        got = best_answers(f.questions, f.windows, starts, ends, **options)
        bad = mismatches(f, got, mode)
        assert not bad, f"{family} {mode}: {len(bad)} of {len(got)} differ:\n" + "\n".join(bad[:5])


def test_reference_covers_long_contexts_and_both_no_answer_outcomes(families):
    """The reference is only worth its name if it has multi-window questions and "no answer" both winning and
    losing, in every family."""
    for family in FAMILIES:
        f = families(family)
        counts = [len(v) for v in f.ref["windows"].values()]
        nulls = sum(a["answer"] == "" for a in f.ref["answers_impossible"].values())
        assert len(f.questions) >= 60 and max(counts) >= 3 and sum(c > 1 for c in counts) >= 15, family
        assert 0 < nulls < len(f.questions), family
        assert any(q.impossible for q in f.questions)
