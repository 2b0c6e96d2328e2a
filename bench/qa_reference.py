"""Reference answers of the transformers 4.57 `question-answering` pipeline, for tests/test_answers.py.

transformers 5 removed that pipeline, so this runs in a separate environment with the last 4.x:

    python3 -m venv /work/venv-tf457
    /work/venv-tf457/bin/pip install torch==2.13.0 transformers==4.57.1
    /work/venv-tf457/bin/python bench/qa_reference.py --out /tmp/qa-ref
    BERTSCOPE_QA_REFERENCE=/tmp/qa-ref .venv/bin/python -m pytest tests/test_answers.py

What it writes under --out:
  squad.json                 SQuAD v2.0 questions on WikiText-2 test paragraphs (some unanswerable, some contexts
                             long enough for 2-4 windows of 384 tokens)
  {bert,roberta,albert}/     a small random-weight *ForQuestionAnswering and its fast tokenizer (save_pretrained)
    reference.json           per question: the pipeline's windows (input ids, type ids, p_mask, offsets, sequence
                             ids, word ids) and its answers with the defaults, with handle_impossible_answer=True,
                             and with top_k=3 and handle_impossible_answer=True
    logits.safetensors       the start / end logits the pipeline's model gave for every window
  manifest.json              versions, settings, counts, wall time

The models are random (seeded); only their logits matter. Their span head is drawn wider than the usual 0.02 so
that scores are well separated (no near-ties for float rounding to decide) and the CLS logit is raised so that
the no-answer mode answers "" for some questions and a span for others.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTSCOPE_SHARED", ROOT.parent / "shared"))
MINILM = SHARED / "models" / "minilm-l6-h384"
WIKITEXT = SHARED / "data" / "wikitext2"

MAX_SEQ_LEN, DOC_STRIDE = 384, 128
FAMILIES = ("bert", "roberta", "albert")
CLS_BOOST = {"bert": 5.0, "roberta": 9.5, "albert": 4.7}    # CLS logit raise: "no answer" wins for some questions


# ---- questions from real text -----------------------------------------------------------------------------------

def detokenize(line: str) -> str:
    """WikiText's ` @-@ `, ` , ` and ` 's ` back to ordinary prose spacing (quotes stay spaced as they are)."""
    s = line.strip()
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    s = re.sub(r" ([,.;:!?%)\]])", r"\1", s)
    s = re.sub(r"([(\[$]) ", r"\1", s)
    s = re.sub(r" ('s|'re|'ve|n't|'d|'ll|'m)\b", r"\1", s)
    return s


def articles(path: Path) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) in file order; ` = Title = ` starts an article, ` = = Section = = ` is skipped."""
    out: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r" = [^=].* = ", line):
            out.append((line.strip(" ="), []))
        elif line.strip() and not line.startswith(" = ") and out:
            out[-1][1].append(detokenize(line))
    return [(t, ps) for t, ps in out if ps]


def pick_contexts(arts, rng: random.Random):
    """About 32 contexts from ~40 tokens to 4 windows: single paragraphs, and runs of consecutive paragraphs of one
    article for the long ones."""
    buckets = [((30, 60), 7), ((60, 150), 7), ((150, 240), 6), ((280, 400), 5), ((400, 480), 4), ((520, 580), 3)]
    singles, runs = [], []
    for a, (title, paras) in enumerate(arts):
        for i, p in enumerate(paras):
            singles.append((title, [p]))
            for j in range(i + 2, min(i + 6, len(paras)) + 1):
                runs.append((title, paras[i:j]))
    rng.shuffle(singles)
    rng.shuffle(runs)
    chosen, used = [], set()
    for (lo, hi), n in buckets:
        got = 0
        for title, paras in (singles if hi <= 450 else []) + runs:
            words = sum(len(p.split()) for p in paras)
            if lo <= words <= hi and not used.intersection(paras) and len(paras[0].split()) >= 8:
                chosen.append((title, paras))
                used.update(paras)
                got += 1
                if got == n:
                    break
        if got < n:
            raise SystemExit(f"only {got} contexts of {lo}-{hi} words in {WIKITEXT / 'test.txt'}")
    joins = [" ", "\n", "  "]                 # as users' files have them: a space, a newline, two spaces
    return [(title, joins[k % 3].join(paras)) for k, (title, paras) in enumerate(chosen)]


def sentences(context: str) -> list[tuple[int, str]]:
    """(start character, sentence) for the sentences of a context with at least 6 words."""
    out = []
    for m in re.finditer(r"[^.!?\n]+[.!?]?", context):
        text = m.group().strip()
        if len(text.split()) >= 6:
            out.append((m.start() + m.group().index(text), text))
    return out


def make_question(rng: random.Random, context: str, long: bool):
    """A question made from one sentence of the context: a run of 1-3 words becomes "what", a few words around it
    stay. Returns (question, answer text, answer start in the context)."""
    start, sent = rng.choice(sentences(context))
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", sent)]
    i = rng.randrange(len(words))
    j = min(len(words), i + rng.choice([1, 1, 2, 3]))
    a0, a1 = words[i][0], words[j - 1][1]
    while a1 > a0 + 1 and sent[a1 - 1] in ",.;:!?\")":
        a1 -= 1
    answer = sent[a0:a1]
    keep = 40 if long else rng.choice([4, 6, 8, 12])
    before = sent[words[max(0, i - keep)][0]:a0] if i else ""
    after = sent[a1:words[min(len(words), j + keep) - 1][1]]
    question = (before + "what" + after).rstrip(" .,;:!") + "?"
    return question[0].upper() + question[1:], answer, start + a0


def build_squad(seed: int) -> dict:
    rng = random.Random(seed)
    arts = articles(WIKITEXT / "test.txt")
    contexts = pick_contexts(arts, rng)
    data, n = [], 0
    for k, (title, context) in enumerate(contexts):
        qas = []
        for _ in range(1 if k % 3 == 2 else 2):
            q, answer, at = make_question(rng, context, long=(n % 5 == 4))
            assert context[at:at + len(answer)] == answer
            qas.append({"id": f"wt2-{n:03d}", "question": q, "answers": [{"text": answer, "answer_start": at}],
                        "is_impossible": False})
            n += 1
        if k % 2 == 0:                        # unanswerable: a question about another context
            other = contexts[(k + len(contexts) // 2) % len(contexts)][1]
            q, _, _ = make_question(rng, other, long=False)
            qas.append({"id": f"wt2-{n:03d}", "question": q, "answers": [], "is_impossible": True})
            n += 1
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0", "data": data}


# ---- tokenizers -------------------------------------------------------------------------------------------------

def bert_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(MINILM), model_max_length=MAX_SEQ_LEN)


def roberta_tokenizer(vocab_size: int):
    """Byte-level BPE as roberta-base's tokenizer.json: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>, RobertaProcessing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train([str(WIKITEXT / "valid.txt")], trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.post_processor = processors.RobertaProcessing(("</s>", backend.token_to_id("</s>")),
                                                          ("<s>", backend.token_to_id("<s>")),
                                                          trim_offsets=True, add_prefix_space=False)
    return RobertaTokenizerFast(tokenizer_object=backend, model_max_length=MAX_SEQ_LEN)


def albert_tokenizer(vocab_size: int):
    """Unigram with SentencePiece's "▁" as albert-base-v2's tokenizer.json (less its precompiled charsmap):
    <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4, `[CLS] A [SEP] B [SEP]` with segments 0 / 1."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AlbertTokenizerFast
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Sequence([
        normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
        normalizers.StripAccents(), normalizers.Lowercase(), normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.train([str(WIKITEXT / "valid.txt")], trainers.UnigramTrainer(
        vocab_size=vocab_size, show_progress=False, unk_token="<unk>",
        special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return AlbertTokenizerFast(tokenizer_object=backend, model_max_length=MAX_SEQ_LEN)


EXPECTED = {   # family: (tokenizer class, cls, sep, pad, ids of <s>/<pad>/... where the brief fixes them)
    "bert": ("BertTokenizerFast", "[CLS]", "[SEP]", "[PAD]", {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102}),
    "roberta": ("RobertaTokenizerFast", "<s>", "</s>", "<pad>", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}),
    "albert": ("AlbertTokenizerFast", "[CLS]", "[SEP]", "<pad>",
               {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}),
}


def check_tokenizer(family: str, tok) -> None:
    cls_name, cls, sep, pad, ids = EXPECTED[family]
    problems = []
    if type(tok).__name__ != cls_name or not tok.is_fast:
        problems.append(f"loads as {type(tok).__name__} (fast={tok.is_fast}), expected fast {cls_name}")
    if (tok.cls_token, tok.sep_token, tok.pad_token) != (cls, sep, pad):
        problems.append(f"special tokens {(tok.cls_token, tok.sep_token, tok.pad_token)}, expected {(cls, sep, pad)}")
    for t, i in ids.items():
        if tok.convert_tokens_to_ids(t) != i:
            problems.append(f"{t} has id {tok.convert_tokens_to_ids(t)}, expected {i}")
    pair = tok("a question", "the context").input_ids
    want = [tok.cls_token_id] + tok("a question", add_special_tokens=False).input_ids + [tok.sep_token_id]
    want += [tok.sep_token_id] if family == "roberta" else []
    want += tok("the context", add_special_tokens=False).input_ids + [tok.sep_token_id]
    if pair != want:
        problems.append(f"pair template gives {tok.convert_ids_to_tokens(pair)}")
    if problems:
        raise SystemExit(f"{family} tokenizer: " + "; ".join(problems))


# ---- models -----------------------------------------------------------------------------------------------------

def build_model(family: str, tok, seed: int):
    import transformers as tf
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  vocab_size=len(tok))
    if family == "bert":
        config = tf.BertConfig(max_position_embeddings=MAX_SEQ_LEN, **common)
        cls = tf.BertForQuestionAnswering
    elif family == "roberta":                 # positions start after padding_idx=1: 384 tokens need 386 rows
        config = tf.RobertaConfig(max_position_embeddings=MAX_SEQ_LEN + 2, pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, type_vocab_size=1, **common)
        cls = tf.RobertaForQuestionAnswering
    else:
        config = tf.AlbertConfig(max_position_embeddings=MAX_SEQ_LEN, embedding_size=32, pad_token_id=0,
                                 bos_token_id=2, eos_token_id=3, **common)
        cls = tf.AlbertForQuestionAnswering
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        head = model.qa_outputs
        head.weight.normal_(0.0, 0.5)         # logits with a spread of several units
        head.bias.zero_()
        # Raise the CLS logits a little (the no-answer score) along the direction CLS hidden states take apart from
        # the context tokens'.
        probe = tok(["The film was released in 2004 .", "He was born in London"],
                    ["It was performed at the Drum Theatre in Plymouth .", "The city has a port"],
                    padding=True, return_tensors="pt")
        hidden = model.base_model(**probe).last_hidden_state                  # (2, L, H)
        direction = hidden[:, 0].mean(0) - hidden[:, 1:].reshape(-1, hidden.shape[-1]).mean(0)
        head.weight += CLS_BOOST[family] * direction / direction.norm() ** 2
    return model


# ---- running the pipeline ---------------------------------------------------------------------------------------

def run_family(family: str, folder: Path, questions: list[dict]) -> dict:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline
    tok = AutoTokenizer.from_pretrained(str(folder))
    check_tokenizer(family, tok)
    model = AutoModelForQuestionAnswering.from_pretrained(str(folder), attn_implementation="eager").eval()
    qa = pipeline("question-answering", model=model, tokenizer=tok, device="cpu")

    seen: list[dict] = []

    def hook(module, args, kwargs, output):
        seen.append({"input_ids": kwargs["input_ids"][0].tolist(),
                     "token_type_ids": (kwargs["token_type_ids"][0].tolist()
                                        if kwargs.get("token_type_ids") is not None else None),
                     "start": output.start_logits[0].detach().clone(), "end": output.end_logits[0].detach().clone()})

    model.register_forward_hook(hook, with_kwargs=True)
    windows, answers, answers_null, answers_top3, logits = {}, {}, {}, {}, {}
    settings = dict(max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE)
    for q in questions:
        example = {"question": q["question"], "context": q["context"]}
        features = list(qa.preprocess(example, doc_stride=DOC_STRIDE, max_seq_len=MAX_SEQ_LEN))
        seen.clear()
        answers[q["id"]] = qa(question=q["question"], context=q["context"], **settings)
        first = list(seen)
        seen.clear()
        answers_null[q["id"]] = qa(question=q["question"], context=q["context"], handle_impossible_answer=True,
                                   **settings)
        top3 = qa(question=q["question"], context=q["context"], top_k=3, handle_impossible_answer=True, **settings)
        answers_top3[q["id"]] = top3 if isinstance(top3, list) else [top3]     # a dict where only one was found
        if len(first) != len(features) or 2 * [w["input_ids"] for w in first] != [w["input_ids"] for w in seen]:
            raise SystemExit(f"{family} {q['id']}: the pipeline runs saw different windows")
        rows = []
        for j, (f, w) in enumerate(zip(features, first)):
            if f["input_ids"][0].tolist() != w["input_ids"]:
                raise SystemExit(f"{family} {q['id']} window {j}: preprocess and forward disagree")
            enc = f["encoding"]
            rows.append({"input_ids": w["input_ids"], "token_type_ids": w["token_type_ids"],
                         "tokenizer_type_ids": f["token_type_ids"][0].tolist(),
                         "p_mask": [int(x) for x in f["p_mask"][0].tolist()],
                         "offsets": [list(o) for o in enc.offsets], "sequence_ids": enc.sequence_ids,
                         "word_ids": enc.word_ids})
            logits[f"{q['id']}/{j}/start"] = w["start"]
            logits[f"{q['id']}/{j}/end"] = w["end"]
        windows[q["id"]] = rows
    return {"windows": windows, "answers": answers, "answers_impossible": answers_null,
            "answers_top3_impossible": answers_top3, "logits": logits,
            "tokenizer_class": type(tok).__name__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write (created; existing files are replaced)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=8000, help="for the trained RoBERTa and ALBERT tokenizers")
    args = ap.parse_args(argv)

    import tokenizers
    import transformers
    from safetensors.torch import save_file
    if not transformers.__version__.startswith("4.57"):
        raise SystemExit(f"transformers {transformers.__version__}: run this with 4.57 (the last with the "
                         "question-answering pipeline), e.g. /work/venv-tf457/bin/python")
    for p in (MINILM, WIKITEXT / "test.txt", WIKITEXT / "valid.txt"):
        if not p.exists():
            raise SystemExit(f"{p}: missing (set BERTSCOPE_SHARED to the shared data folder)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    squad = build_squad(args.seed)
    (out / "squad.json").write_text(json.dumps(squad, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    questions = [dict(qa, context=p["context"]) for art in squad["data"] for p in art["paragraphs"]
                 for qa in p["qas"]]

    makers = {"bert": bert_tokenizer, "roberta": lambda: roberta_tokenizer(args.vocab_size),
              "albert": lambda: albert_tokenizer(args.vocab_size)}
    summary = {}
    for k, family in enumerate(FAMILIES):
        t = time.perf_counter()
        folder = out / family
        folder.mkdir(exist_ok=True)
        tok = makers[family]()
        tok.save_pretrained(str(folder))
        build_model(family, tok, args.seed + k).save_pretrained(str(folder))
        ref = run_family(family, folder, questions)
        save_file({k_: v.contiguous() for k_, v in ref.pop("logits").items()}, str(folder / "logits.safetensors"))
        ref.update(family=family, settings={"max_seq_len": MAX_SEQ_LEN, "doc_stride": DOC_STRIDE})
        (folder / "reference.json").write_text(json.dumps(ref) + "\n", encoding="utf-8")
        n_windows = [len(w) for w in ref["windows"].values()]
        summary[family] = {"questions": len(questions), "windows": sum(n_windows),
                           "windows_per_question": {str(n): n_windows.count(n) for n in sorted(set(n_windows))},
                           "null_answers": sum(a["answer"] == "" for a in ref["answers_impossible"].values()),
                           "seconds": round(time.perf_counter() - t, 1)}
        print(f"{family}: {summary[family]}", file=sys.stderr)
    manifest = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "torch": torch.__version__, "seed": args.seed, "vocab_size": args.vocab_size,
                "max_seq_len": MAX_SEQ_LEN, "doc_stride": DOC_STRIDE, "families": summary,
                "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} in {manifest['wall_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
