"""The tasks beyond sentence labels against the reference implementation: token classification and question
answering heads for every family (logits and round trips both ways), the token-classification pipeline's entities,
seqeval's numbers on real model output, regression and multi-label with problem_type kept, inputs_embeds with a
GraphCodeBERT-style mask, and windows over texts longer than the model."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import DATA, MINILM, TINY, TOL, max_diff, need_shared
from typer.testing import CliRunner

import bertscope
from bertscope import api
from bertscope.cli import app

FAMILY_FIXTURE = {"bert": "bert", "roberta": "roberta", "albert": "albert"}
HF_CLASS = {"token-classification": "ForTokenClassification", "question-answering": "ForQuestionAnswering"}
STEM = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert"}


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return tiny_folder


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def reference_model(family: str, head: str, num_labels: int = 5):
    """A transformers model of the head, on a tiny fixture's config, every parameter perturbed (seeded) so that a
    loader that skips any tensor gives other outputs."""
    transformers = pytest.importorskip("transformers")
    need_shared()
    config = transformers.AutoConfig.from_pretrained(TINY / FAMILY_FIXTURE[family], num_labels=num_labels)
    torch.manual_seed(0)
    model = getattr(transformers, STEM[family] + HF_CLASS[head])(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def inputs(family):
    from safetensors.torch import load_file
    r = load_file(str(TINY / FAMILY_FIXTURE[family] / "reference.safetensors"))
    return {k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
@pytest.mark.parametrize("head", ["token-classification", "question-answering"])
def test_new_heads_match_the_reference_and_round_trip_both_ways(family, head, tmp_path):
    import transformers
    theirs = reference_model(family, head, num_labels=5 if head == "token-classification" else 2)
    theirs.save_pretrained(tmp_path / "hf")
    ours = bertscope.from_pretrained(tmp_path / "hf")
    assert ours.head == head and not ours.load_report.fresh
    x = inputs(family)
    real = x["attention_mask"].bool()
    with torch.no_grad():
        want = theirs(**x)
    got = ours(**x)
    if head == "token-classification":
        assert max_diff(got.logits[real], want.logits[real]) <= TOL
    else:
        assert max_diff(got.start_logits[real], want.start_logits[real]) <= TOL
        assert max_diff(got.end_logits[real], want.end_logits[real]) <= TOL
    bertscope.save_pretrained(ours, tmp_path / "ours")                     # and back into the reference
    again = getattr(transformers, STEM[family] + HF_CLASS[head]).from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        back = again(**x)
    for name in ("logits",) if head == "token-classification" else ("start_logits", "end_logits"):
        assert max_diff(getattr(back, name)[real], getattr(want, name)[real]) <= TOL
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == \
        [STEM[family] + HF_CLASS[head]]


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    """A BERT tagger with the W-NUT tags and MiniLM's tokenizer: random weights drawn wide (so it predicts many
    entities), saved by bertscope."""
    need_shared()
    from bertscope.data import read_conll
    from bertscope.tasks.token_classification import tag_order
    tags = tag_order(t for s in read_conll(DATA / "wnut16" / "train.conll").tags for t in s)
    torch.manual_seed(0)
    config = bertscope.Config(family="bert", vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128, max_position_embeddings=512,
                              id2label=dict(enumerate(tags)))
    model = bertscope.Model(config, head="token-classification")
    with torch.no_grad():
        model.token_classifier.linear.weight.normal_(std=0.6)
    folder = tmp_path_factory.mktemp("ner")
    bertscope.save_pretrained(model, folder)
    bertscope.load_tokenizer(MINILM).save(folder)
    return folder


def test_entity_scores_equal_seqevals_on_real_model_output(ner_model):
    seqeval = pytest.importorskip("seqeval.metrics")
    from bertscope.tasks.token_classification import TokenClassification
    loaded = api.load(ner_model)
    task = TokenClassification()
    task.use_model_labels(loaded.model.config)
    ex = task.read(DATA / "wnut16" / "dev.conll")
    enc = task.encode(ex, loaded.tokenizer, max_length=128)
    preds = task.predictions(loaded.model, enc)
    m = task.score(preds, task.gold(enc))
    pred_tags = [p["tags"] for p in preds]
    assert sum(t != "O" for s in pred_tags for t in s) > 100            # real output with many entities
    assert abs(m["f1"] - seqeval.f1_score(ex.tags, pred_tags)) < 1e-12
    assert abs(m["precision"] - seqeval.precision_score(ex.tags, pred_tags)) < 1e-12
    report = seqeval.classification_report(ex.tags, pred_tags, output_dict=True)
    for kind, r in m["per_type"].items():
        assert abs(r["f1"] - report[kind]["f1-score"]) < 1e-12 and r["support"] == report[kind]["support"]


def test_predicted_entities_equal_the_reference_pipelines(ner_model):
    transformers = pytest.importorskip("transformers")
    texts = [line for line in (DATA / "wnut16" / "dev.conll").read_text(encoding="utf-8").split("\n\n")][:40]
    sentences = [" ".join(row.split("\t")[0] for row in block.splitlines() if row.strip()) for block in texts]
    pipe = transformers.pipeline("token-classification", model=str(ner_model), aggregation_strategy="first",
                                 device="cpu")
    loaded = api.load(ner_model)
    path = Path(ner_model) / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    ours = list(api.predict(loaded, path, task="token-classification"))
    compared = 0
    for sentence, mine in zip(sentences, ours):
        theirs = [(e["entity_group"], e["start"], e["end"]) for e in pipe(sentence)]
        assert [(e["type"], e["start"], e["end"]) for e in mine["entities"]] == theirs, sentence
        compared += len(theirs)
    assert compared > 30


def test_an_i_tag_that_continues_nothing_names_the_line(tmp_path):
    need_shared()
    p = tmp_path / "bad.conll"
    p.write_text("Paris\tB-geo-loc\nis\tO\n\nnice\tO\nLondon\tI-geo-loc\n", encoding="utf-8")
    tok = tmp_path / "tiny"
    bertscope.save_pretrained(bertscope.Model(bertscope.Config(family="bert", vocab_size=30522, hidden_size=16,
                                                               num_hidden_layers=1, num_attention_heads=2,
                                                               intermediate_size=32)), tok)
    bertscope.load_tokenizer(MINILM).save(tok)
    r = run("finetune", tok, "--train", p, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "bad.conll line 5: tag 'I-geo-loc' of 'London'" in r.output
    assert "I-geo-loc follows O" in r.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ner_on_wnut_learns_entities(tmp_path):
    """A real fine-tuning: MiniLM for 2 epochs on the W-NUT training tweets finds entities on dev (3 epochs reach
    0.44 entity F1, BENCHMARKS.md)."""
    need_shared()
    r = api.finetune(MINILM, DATA / "wnut16" / "train.conll", tmp_path / "ner", eval=DATA / "wnut16" / "dev.conll",
                     epochs=2, lr=1e-4, batch_size=16, save_every=0, device="cpu")
    assert r.finished and r.best is not None and r.best > 0.2             # untrained: 0
    m = api.evaluate(api.load(tmp_path / "ner"), DATA / "wnut16" / "dev.conll")
    assert m["task"] == "token-classification" and abs(m["f1"] - r.best) < 1e-12 and m["per_type"]




def sst_rows(n):
    rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    return [r.split("\t") for r in rows]


def test_regression_learns_a_real_target_and_keeps_problem_type(tiny, tmp_path):
    """The target is each SST-2 phrase's word count / 10 (a number the text determines): Pearson well above 0."""
    transformers = pytest.importorskip("transformers")
    rows = [(t.strip(), len(t.split()) / 10) for t, _ in sst_rows(1200)]
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y:.1f}\n" for t, y in rows[:1000]))
    (tmp_path / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y:.1f}\n" for t, y in rows[1000:]))
    r = api.finetune(tiny, tmp_path / "train.tsv", tmp_path / "reg", eval=tmp_path / "dev.tsv", epochs=3, lr=1e-3,
                     device="cpu", save_every=0)
    assert r.best > 0.5
    m = api.evaluate(api.load(tmp_path / "reg"), tmp_path / "dev.tsv")
    assert m["task"] == "regression" and abs(m["pearson"] - r.best) < 1e-9 and m["spearman"] > 0.4
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "reg")
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
    preds = list(api.predict(api.load(tmp_path / "reg"), tmp_path / "dev.tsv"))
    assert len(preds) == 200 and all(isinstance(p["score"], float) for p in preds)


def test_multi_label_from_lists_and_pipes_round_trips_with_the_reference(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    rows = sst_rows(900)
    lines = []
    for text, label in rows:          # two real labels per phrase: its sentiment, and whether it is long
        names = ["positive" if label.strip() == "1" else "negative"] + (["long"] if len(text.split()) > 8 else [])
        lines.append(json.dumps({"text": text.strip(), "labels": names}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:800]) + "\n")
    (tmp_path / "dev.tsv").write_text("text\tlabels\n" + "".join(
        f"{json.loads(x)['text']}\t{'|'.join(json.loads(x)['labels'])}\n" for x in lines[800:]))
    r = api.finetune(tiny, tmp_path / "train.jsonl", tmp_path / "ml", eval=tmp_path / "dev.tsv",
                     label_column="labels", epochs=3, lr=1e-3, device="cpu", save_every=0)
    assert r.best > 0.6
    config = bertscope.Config.from_json(tmp_path / "ml")
    assert config.problem_type == "multi_label_classification" and config.labels == ["long", "negative", "positive"]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ml").eval()
    assert hf.config.problem_type == "multi_label_classification"
    ours = bertscope.from_pretrained(tmp_path / "ml")
    b = bertscope.load_tokenizer(tmp_path / "ml")(["a long and very tedious film about nothing much at all"])
    with torch.no_grad():
        assert max_diff(hf(**b).logits, ours(**b).logits) <= TOL
    pred = list(api.predict(api.load(tmp_path / "ml"), tmp_path / "dev.tsv", text_column="text"))
    assert all(set(p["labels"]) <= set(config.labels) for p in pred)


def test_inputs_embeds_with_a_graph_mask_and_positions_match_the_reference():
    """GraphCodeBERT's input: data-flow nodes whose embedding is the mean of their sub-tokens' embeddings, a
    (B, L, L) mask that lets a node see only the tokens it comes from, and explicit positions."""
    transformers = pytest.importorskip("transformers")
    need_shared()
    ours = bertscope.from_pretrained(TINY / "roberta", head="base")
    theirs = transformers.RobertaModel.from_pretrained(TINY / "roberta", attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(3)
    B, code, nodes = 2, 12, 4
    L = code + nodes
    ids = torch.randint(5, 1000, (B, L), generator=g)
    table = ours.embeddings.word.weight.detach()
    embeds = table[ids].clone()                                          # (B, L, E)
    mask = torch.zeros(B, L, L, dtype=torch.long)
    mask[:, :code, :code] = 1                                            # code tokens see each other
    for n in range(nodes):                                               # node n comes from code tokens 2n, 2n + 1
        src = [2 * n, 2 * n + 1]
        embeds[:, code + n] = table[ids[:, src]].mean(1)
        mask[:, code + n, src] = 1
        mask[:, src, code + n] = 1
        mask[:, code + n, code + n] = 1
    position_ids = torch.cat([torch.arange(2, 2 + code), torch.zeros(nodes, dtype=torch.long)]).expand(B, L)
    got = ours(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids)
    additive = (1.0 - mask[:, None].float()) * torch.finfo(torch.float32).min   # how GraphCodeBERT feeds it
    with torch.no_grad():
        want = theirs(inputs_embeds=embeds, attention_mask=additive, position_ids=position_ids)
    assert max_diff(got.last_hidden_state, want.last_hidden_state) <= TOL
    with torch.no_grad():                                                # and without explicit positions
        plain = theirs(inputs_embeds=embeds).last_hidden_state
    assert max_diff(ours(inputs_embeds=embeds).last_hidden_state, plain) <= TOL
    with pytest.raises(bertscope.InputError, match="inputs_embeds has shape \\(2, 16, 50\\); expected \\(B, L, E\\) "
                                                   "with E = 64"):
        ours(inputs_embeds=torch.zeros(B, L, 50))
    with pytest.raises(bertscope.InputError, match="exactly one"):
        ours(input_ids=ids, inputs_embeds=embeds)


def long_texts(n, min_tokens, tok):
    """Real WikiText-2 paragraphs longer than min_tokens."""
    out = []
    for line in (DATA / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(" =") and len(tok.encode(line)) > min_tokens:
            out.append(line.strip())
            if len(out) == n:
                break
    return out


def test_embed_windows_are_the_length_weighted_mean_of_window_means(tmp_path):
    need_shared()
    from bertscope import infer
    loaded = api.load(MINILM)
    tok, model = loaded.tokenizer, loaded.model
    texts = long_texts(3, 300, tok)
    enc = infer.tokenize(tok, texts, max_length=128, windows=32)
    groups = infer.by_text(enc)
    assert all(len(g) >= 3 for g in groups)
    got = infer.sentence_embeddings(model, enc, normalize=False)
    per_window = infer.sentence_embeddings(model, infer.Encoded(enc.ids, enc.types), normalize=False)
    for t, g in enumerate(groups):
        weights = torch.tensor([len(enc.ids[w]) for w in g], dtype=torch.float32)
        want = (per_window[g] * weights[:, None]).sum(0) / weights.sum()
        assert max_diff(got[t], want) < 1e-5
    # every token of the text is in some window, and consecutive windows share 32 tokens
    full = tok.encode(texts[0], add_special_tokens=False)
    pieces = [enc.ids[w][1:-1] for w in groups[0]]
    assert pieces[0] + [x for p in pieces[1:] for x in p[32:]] == full
    (tmp_path / "long.txt").write_text("\n".join(texts) + "\n")
    r = run("embed", MINILM, tmp_path / "long.txt", "--out", tmp_path / "e.npy", "--max-length", "128",
            "--windows", "32")
    assert r.exit_code == 0 and "were cut" not in r.output
    r = run("embed", MINILM, tmp_path / "long.txt", "--out", tmp_path / "cut.npy", "--max-length", "128")
    assert r.exit_code == 0 and "3 texts were longer than --max-length 128 and were cut; --windows" in r.output
    r = run("embed", MINILM, tmp_path / "long.txt", "--out", tmp_path / "w.jsonl", "--max-length", "128",
            "--level", "word")                          # word vectors take no windows: none offered
    assert r.exit_code == 0 and "3 texts were longer than --max-length 128 and were cut" in r.output
    assert "--windows" not in r.output


def test_predict_windows_pools_the_window_logits(tiny, tmp_path):
    from bertscope import infer
    from bertscope.tasks.classification import SequenceClassification
    rows = sst_rows(64)
    (tmp_path / "t.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    api.finetune(tiny, tmp_path / "t.tsv", tmp_path / "cls", epochs=1, device="cpu", save_every=0)
    loaded = api.load(tmp_path / "cls")
    texts = long_texts(4, 200, loaded.tokenizer)
    (tmp_path / "long.txt").write_text("\n".join(texts) + "\n")
    for pool in ("mean", "max"):
        got = list(api.predict(loaded, tmp_path / "long.txt", max_length=64, windows=16, pool=pool))
        enc = infer.tokenize(loaded.tokenizer, texts, max_length=64, windows=16)
        logits = infer.run(loaded.model, infer.Encoded(enc.ids, enc.types),
                           fn=lambda out, b, i: list(out.logits.float()))
        for t, g in enumerate(infer.by_text(enc)):
            rows_ = torch.stack([logits[w] for w in g])
            want = (rows_.max(0).values if pool == "max" else rows_.mean(0)).softmax(-1)
            assert max(abs(got[t]["probabilities"][n] - float(p)) for n, p in zip(loaded.model.config.labels, want)) \
                < 1e-6
    assert isinstance(SequenceClassification(windows=16).windows, int)


def test_token_tags_of_a_long_sentence_come_from_every_window(ner_model, tmp_path):
    """A sentence of 400 words in 64-token windows: every word gets a tag (none unseen), and a word's tag is the
    one of the window where it sits most centrally."""
    from bertscope.tasks.token_classification import TokenClassification
    loaded = api.load(ner_model)
    words = " ".join(long_texts(6, 100, loaded.tokenizer)).split()[:400]
    cut = TokenClassification(max_length=64)
    windowed = TokenClassification(max_length=64, windows=16)
    for t in (cut, windowed):
        t.use_model_labels(loaded.model.config)
    from bertscope.data import TokenExamples
    ex = TokenExamples("long", [words], None, [1])
    full = windowed.predictions(loaded.model, windowed.encode(ex, loaded.tokenizer, labelled=False))[0]
    short = cut.predictions(loaded.model, cut.encode(ex, loaded.tokenizer, labelled=False))[0]
    assert full["unseen"] == 0 and len(full["tags"]) == 400 and short["unseen"] > 300
    n = sum(a == b for a, b in zip(full["tags"], short["tags"]) if True)
    assert n > 0                                                          # the first window's words agree mostly
    first_words = [i for i, s in enumerate(short["scores"]) if s > 0]
    agree = sum(full["tags"][i] == short["tags"][i] for i in first_words[:20]) / 20
    assert agree >= 0.8


@pytest.mark.skipif(not os.environ.get("BERTSCOPE_QA_REFERENCE"),
                    reason="set BERTSCOPE_QA_REFERENCE to a folder made by bench/qa_reference.py (transformers 4.57)")
@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_bertscope_question_answering_equals_the_4_57_pipeline(family):
    """bertscope's own QA model (the reference checkpoint loaded into it) and predict path give the 4.57
    pipeline's answers, with and without "no answer", including contexts of several windows."""
    folder = Path(os.environ["BERTSCOPE_QA_REFERENCE"])
    ref = json.loads((folder / family / "reference.json").read_text())
    loaded = api.load(folder / family)
    for key, no_answer in (("answers", False), ("answers_impossible", True)):
        want = ref[key]
        got = list(api.predict(loaded, folder / "squad.json", task="question-answering", no_answer=no_answer,
                               max_length=384, doc_stride=128))
        assert len(got) >= 50
        for g in got:
            w = want[g["id"]]
            assert (g["answer"], g["start"], g["end"]) == (w["answer"], w["start"], w["end"]), g["id"]
            assert abs(g["score"] - w["score"]) <= 1e-4 * max(1.0, abs(w["score"]))


def test_multi_label_cells_of_a_table_take_a_json_list_as_labels():
    from bertscope.tasks.multi_label import MultiLabel
    t = MultiLabel(label_column="labels")
    assert t.canonical('["fun", "bad"]', "x") == t.canonical("bad|fun", "x") == t.canonical(["fun", "bad"], "x") \
        == ("bad", "fun")
    assert t.canonical("[]", "x") == ()                                  # no label, as in a .jsonl
    with pytest.raises(bertscope.DataError, match=r"x: '\[fun' starts as a JSON list but is not one"):
        t.canonical("[fun", "x")
    with pytest.raises(bertscope.DataError, match=r"label 'a\|b' holds '\|', which separates labels"):
        t.canonical(["a|b", "c"], "x")


def test_an_unknown_piece_is_a_word_of_its_own_as_in_the_reference_pipeline():
    """The reference's token-classification pipeline takes an [UNK] (a rare character, an emoji) as a word of its
    own, where a piece whose token is longer than its text ("##ing") continues the word before."""
    need_shared()
    from bertscope.tasks.token_classification import word_spans
    tok = bertscope.load_tokenizer(MINILM)
    text = "我爱㐀龘北京 playing"
    encoding = tok.backend.encode(text)
    assert encoding.tokens.count("[UNK]") == 3                                   # 爱, 㐀 and 龘 are not in MiniLM's
    assert [text[a:b] for a, b in word_spans(tok, text, encoding)] == ["我", "爱", "㐀", "龘", "北", "京", "playing"]
