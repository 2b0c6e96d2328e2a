"""scoring.py against the tools it follows: seqeval on real W-NUT 2016 tags and on corrupted predictions of them,
sklearn and scipy on random data, the official SQuAD scripts' rules on hand-worked answers, and the SIGHAN word-span
rule on the PFR 1998 gold segmentation. Hand-worked examples pin each metric without a reference installed."""

import math
import os
import random
import warnings
from pathlib import Path

import pytest

from bertscope.scoring import (bio_problems, bmes_to_words, classification_scores, cws_scores, entity_scores,
                               entity_spans, multilabel_scores, regression_scores, squad_exact, squad_f1,
                               squad_normalize, squad_scores)

SHARED = Path(os.environ.get("BERTSCOPE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WNUT = SHARED / "data" / "wnut16"
PFR = SHARED / "data" / "pfr1998"
TOL = 1e-12


def read_columns(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences of a two-column file (token<TAB>tag, a blank line between sentences)."""
    if not path.exists():
        pytest.skip(f"{path} not found (shared reference data; set BERTSCOPE_SHARED)")
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            token, tag = line.split("\t")
            current.append((token, tag))
        elif current:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def wnut_tags(split: str) -> list[list[str]]:
    return [[tag for _, tag in sentence] for sentence in read_columns(WNUT / f"{split}.conll")]


# ---- entities ----

def corrupt(tags: list[str], types: list[str], rng: random.Random, get_entities) -> list[str]:
    """Tags a weak tagger might predict for a sentence whose gold tags are tags: entities dropped, retyped (whole or
    only the B-), cut short, stretched, B- written as I-, and stray I- tags after O."""
    out = list(tags)
    for type_, start, end in get_entities(tags):
        roll = rng.random()
        other = rng.choice([t for t in types if t != type_])
        if roll < 0.1:                                            # dropped
            out[start:end + 1] = ["O"] * (end + 1 - start)
        elif roll < 0.2:                                          # wrong type throughout
            out[start:end + 1] = [f"B-{other}"] + [f"I-{other}"] * (end - start)
        elif roll < 0.25 and end > start:                         # wrong type on B- only: I-X after B-Y
            out[start] = f"B-{other}"
        elif roll < 0.35 and end + 1 < len(tags) and tags[end + 1] == "O":   # stretched one token right
            out[end + 1] = f"I-{type_}"
        elif roll < 0.4 and end > start:                          # cut short on the left
            out[start], out[start + 1] = "O", f"B-{type_}"
        elif roll < 0.5:                                          # B- written as I-
            out[start] = f"I-{type_}"
    for i in range(len(out)):
        if out[i] == "O" and (i == 0 or out[i - 1] == "O") and rng.random() < 0.02:
            out[i] = f"I-{rng.choice(types)}"                    # stray I- after O
    return out


@pytest.fixture(scope="module")
def wnut_dev_with_predictions():
    labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")
    gold = wnut_tags("dev")
    types = sorted({tag[2:] for tags in gold for tag in tags if tag != "O"})
    rng = random.Random(2016)
    return gold, [corrupt(tags, types, rng, labeling.get_entities) for tags in gold]


def test_corrupted_predictions_hold_the_cases_seqeval_reads_leniently(wnut_dev_with_predictions):
    gold, pred = wnut_dev_with_predictions
    messages = [m for tags in pred for _, m in bio_problems(tags)]
    assert sum(" follows O:" in m or " starts the sentence:" in m for m in messages) >= 20
    assert sum(" follows B-" in m or " follows I-" in m for m in messages) >= 3


def test_entity_spans_equal_seqeval_get_entities_on_every_wnut_sentence(wnut_dev_with_predictions):
    from seqeval.metrics.sequence_labeling import get_entities
    gold, pred = wnut_dev_with_predictions
    for tags in gold + pred:
        assert entity_spans(tags) == get_entities(tags), tags


def test_entity_scores_equal_seqeval_micro_and_per_type_on_corrupted_wnut_dev(wnut_dev_with_predictions):
    seqeval = pytest.importorskip("seqeval.metrics")
    gold, pred = wnut_dev_with_predictions
    ours = entity_scores(gold, pred)
    assert 0.3 < ours["f1"] < 0.9                                  # the corruption leaves something to score
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=TOL)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=TOL)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=TOL)
    report = seqeval.classification_report(gold, pred, output_dict=True)
    reference = {t: row for t, row in report.items() if not t.endswith(" avg")}
    assert list(ours["per_type"]) == list(reference) and len(reference) == 10
    for t, row in reference.items():
        mine = ours["per_type"][t]
        assert mine["support"] == row["support"], t
        for ours_key, their_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert mine[ours_key] == pytest.approx(row[their_key], abs=TOL), (t, ours_key)


def test_entity_spans_and_scores_equal_seqeval_on_iobes_and_malformed_tags():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities
    alphabet = ["O", "O", "O", "B-a", "I-a", "E-a", "S-a", "B-b", "I-b", "E-b", "S-b", "B-a-b", "I-a-b",
                "B", "I", "E", "S", "B-", "I-", "Ba", "Ia", ".", "X-a", "X"]
    rng = random.Random(7)
    gold = [[rng.choice(alphabet) for _ in range(rng.randint(1, 12))] for _ in range(400)]
    pred = [[tag if rng.random() < 0.6 else rng.choice(alphabet) for tag in tags] for tags in gold]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                           # seqeval warns on every malformed tag
        for tags in gold + pred:
            assert entity_spans(tags) == get_entities(tags), tags
        ours = entity_scores(gold, pred)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=TOL)
        assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=TOL)
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=TOL)
        report = seqeval.classification_report(gold, pred, output_dict=True)
    assert sorted(ours["per_type"]) == sorted(t for t in report if not t.endswith(" avg"))
    for t, mine in ours["per_type"].items():
        assert (mine["precision"], mine["recall"], mine["f1"], mine["support"]) == pytest.approx(
            (report[t]["precision"], report[t]["recall"], report[t]["f1-score"], report[t]["support"]), abs=TOL)


def test_entity_spans_start_an_entity_at_an_i_tag_after_o_or_another_type():
    tags = ["O", "I-person", "I-person", "B-geo-loc", "I-person", "O", "B-company", "B-company"]
    assert entity_spans(tags) == [("person", 1, 2), ("geo-loc", 3, 3), ("person", 4, 4),
                                  ("company", 6, 6), ("company", 7, 7)]


def test_entity_scores_count_a_boundary_or_type_error_as_one_miss_and_one_false_entity():
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["B-company", "O"]]
    pred = [["B-person", "O", "O", "B-company"], ["B-company", "O"]]
    scores = entity_scores(gold, pred)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1 / 3, 1 / 3, pytest.approx(1 / 3))
    assert scores["per_type"] == {
        "company": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "geo-loc": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "person": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}}


def test_entity_scores_name_the_sentence_whose_lengths_differ():
    with pytest.raises(ValueError, match="sentence 1: 3 gold tags but 2 predicted"):
        entity_scores([["O"], ["O", "B-x", "I-x"]], [["O"], ["O", "B-x"]])


# ---- strict IOB2 check ----

def test_bio_problems_find_every_invalid_tag_in_a_hand_written_sentence():
    tags = ["I-person", "O", "I-person", "B-geo-loc", "I-person", "I-person", "B-", "E-person", "o",
            "B-company", "I-company", "person", "I-company"]
    problems = bio_problems(tags)
    assert [i for i, _ in problems] == [0, 2, 4, 6, 7, 8, 11, 12]
    messages = dict(problems)
    assert messages[0] == "I-person starts the sentence: an I- tag must continue a B-person or I-person (IOB2)"
    assert messages[2] == "I-person follows O: an I- tag must continue a B-person or I-person (IOB2)"
    assert messages[4] == "I-person follows B-geo-loc: an I- tag must continue a B-person or I-person (IOB2)"
    assert messages[6].startswith("'B-' is not an IOB2 tag: expected O, B-TYPE or I-TYPE")
    assert "IOBES" in messages[7] and "'o' is not an IOB2 tag" in messages[8]
    assert messages[12] == "I-company follows person: an I- tag must continue a B-company or I-company (IOB2)"


@pytest.mark.parametrize("split, sentences", [("train", 1794), ("dev", 300)])
def test_bio_problems_find_nothing_in_the_real_wnut16_files(split, sentences):
    corpus = wnut_tags(split)
    assert len(corpus) == sentences
    assert [(n, bio_problems(tags)) for n, tags in enumerate(corpus) if bio_problems(tags)] == []


# ---- classification, regression, multi-label ----

def test_classification_scores_on_a_hand_worked_example_with_an_absent_class():
    scores = classification_scores([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2], num_labels=4)
    assert scores["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert scores["accuracy"] == 4 / 6
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3 + 0.0) / 4, abs=TOL)   # class 3 scores 0


def test_classification_scores_equal_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    gold = [rng.randrange(5) for _ in range(300)]
    pred = [g if g < 4 and rng.random() < 0.6 else rng.randrange(4) for g in gold]   # class 4 never predicted
    scores = classification_scores(gold, pred, num_labels=6)                    # class 5 never occurs
    assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(gold, pred), abs=TOL)
    assert scores["macro_f1"] == pytest.approx(
        metrics.f1_score(gold, pred, average="macro", labels=range(6), zero_division=0), abs=TOL)
    assert scores["confusion"] == metrics.confusion_matrix(gold, pred, labels=range(6)).tolist()


def test_regression_scores_on_hand_worked_examples_with_and_without_ties():
    scores = regression_scores([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert scores["mse"] == 0.5
    assert scores["pearson"] == pytest.approx(0.8, abs=TOL)
    assert scores["spearman"] == pytest.approx(0.8, abs=TOL)
    tied = regression_scores([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])       # gold ranks 1, 2.5, 2.5, 4
    assert tied["spearman"] == pytest.approx(3 / math.sqrt(10), abs=TOL)
    assert tied["pearson"] == pytest.approx(3 / math.sqrt(10), abs=TOL)


def test_regression_correlations_are_nan_for_constant_input_as_scipy():
    scores = regression_scores([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
    assert math.isnan(scores["pearson"]) and math.isnan(scores["spearman"])
    assert scores["mse"] == pytest.approx((0.9 ** 2 + 1.9 ** 2 + 2.9 ** 2) / 3, abs=TOL)


def test_regression_scores_equal_scipy_with_many_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(5)
    gold = [round(rng.uniform(0, 5), 1) for _ in range(500)]                  # STS-B-like scores, many ties
    pred = [round(g + rng.gauss(0, 1.2), 0) for g in gold]
    scores = regression_scores(gold, pred)
    assert scores["pearson"] == pytest.approx(float(stats.pearsonr(gold, pred)[0]), abs=TOL)
    assert scores["spearman"] == pytest.approx(float(stats.spearmanr(gold, pred)[0]), abs=TOL)
    assert scores["mse"] == pytest.approx(sum((g - p) ** 2 for g, p in zip(gold, pred)) / 500, abs=TOL)
    with pytest.warns(stats.ConstantInputWarning):                             # the nan rule is scipy's too
        assert math.isnan(float(stats.spearmanr([1, 1, 1], [1, 2, 3])[0]))


def test_multilabel_scores_on_a_hand_worked_example():
    gold = [{0, 1}, {2}, set(), {1}]
    pred = [{0}, {2, 3}, set(), {0}]
    scores = multilabel_scores(gold, pred, num_labels=5)
    assert (scores["micro_precision"], scores["micro_recall"], scores["micro_f1"]) == (0.5, 0.5, 0.5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0 + 1 + 0 + 0) / 5, abs=TOL)
    assert scores["subset_accuracy"] == 0.25


def test_multilabel_scores_equal_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(11)
    n = 7
    gold = [{c for c in range(n - 1) if rng.random() < 0.25} for _ in range(200)]   # label 6 never occurs
    pred = [{c for c in range(n - 2) if (c in g) != (rng.random() < 0.15)} for g in gold]
    scores = multilabel_scores(gold, pred, num_labels=n)
    y_true = [[int(c in g) for c in range(n)] for g in gold]
    y_pred = [[int(c in p) for c in range(n)] for p in pred]
    micro = dict(average="micro", zero_division=0)
    assert scores["micro_precision"] == pytest.approx(metrics.precision_score(y_true, y_pred, **micro), abs=TOL)
    assert scores["micro_recall"] == pytest.approx(metrics.recall_score(y_true, y_pred, **micro), abs=TOL)
    assert scores["micro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, **micro), abs=TOL)
    assert scores["macro_f1"] == pytest.approx(
        metrics.f1_score(y_true, y_pred, average="macro", labels=range(n), zero_division=0), abs=TOL)
    assert scores["subset_accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=TOL)


# ---- SQuAD ----

def test_squad_normalize_lowers_drops_ascii_punctuation_then_whole_word_articles():
    assert squad_normalize("The  Quick, brown fox!") == "quick brown fox"
    assert squad_normalize("An apple a day") == "apple day"
    assert squad_normalize("theater and anathema") == "theater and anathema"   # only whole words
    assert squad_normalize("Pont-l'Évêque") == "pontlévêque"                   # punctuation goes without a space
    assert squad_normalize("a.m. — the U.S.A.") == "am — usa"                   # non-ASCII dash stays
    assert squad_normalize("The!") == ""


def test_squad_exact_and_f1_on_hand_worked_answers():
    assert squad_exact("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert squad_exact("Eiffel", "Eiffel tower") == 0.0
    assert squad_f1("the Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)       # P 2/3, R 1
    assert squad_f1("x y y", "y y y z") == pytest.approx(4 / 7)                            # P 2/3, R 2/4
    assert squad_f1("Broncos", "Carolina Panthers") == 0.0


def test_squad_f1_v2_rule_for_empty_answers():
    assert squad_f1("", "") == 1.0
    assert squad_f1("The.", "") == 1.0                  # normalises to nothing, like the no-answer ""
    assert squad_f1("Paris", "") == 0.0
    assert squad_f1("", "Paris") == 0.0


def test_squad_scores_take_the_best_gold_answer_and_split_has_and_no_answer():
    answers = {"q1": ["Denver Broncos", "the Broncos"], "q2": [], "q3": ["1879"], "q4": ["blue"], "q5": []}
    predictions = {"q1": "Broncos", "q2": "", "q3": "in 1879", "q5": "Paris"}     # q4 has no prediction
    # exact: q1 1 (via "the Broncos"), q2 1, q3 0, q4 0, q5 0; f1: q1 1, q2 1, q3 2/3, q4 0, q5 0
    scores = squad_scores(predictions, answers)
    assert scores == {
        "exact": pytest.approx(40.0), "f1": pytest.approx(100 * (8 / 3) / 5), "total": 5,
        "HasAns_exact": pytest.approx(100 / 3), "HasAns_f1": pytest.approx(100 * (5 / 3) / 3), "HasAns_total": 3,
        "NoAns_exact": pytest.approx(50.0), "NoAns_f1": pytest.approx(50.0), "NoAns_total": 2}


def test_squad_scores_without_unanswerable_questions_give_only_the_totals():
    scores = squad_scores({"a": "the cat", "b": "dog"}, {"a": ["Cat", "a cat"], "b": ["dogs"]})
    assert scores == {"exact": 50.0, "f1": 50.0, "total": 2}


# ---- Chinese word segmentation ----

@pytest.fixture(scope="module")
def pfr_dev():
    sentences = read_columns(PFR / "dev.cws.conll")
    lines = (PFR / "dev.words.txt").read_text(encoding="utf-8").splitlines()
    words = [line.split(" ") for line in lines]
    assert len(sentences) == len(words) == 1500
    for n, (sentence, w) in enumerate(zip(sentences, words)):
        assert "".join(ch for ch, _ in sentence) == "".join(w), f"sentence {n}: the two files disagree"
    return sentences, words


def test_bmes_to_words_gives_the_gold_words_of_every_pfr_dev_sentence(pfr_dev):
    sentences, words = pfr_dev
    for n, (sentence, gold) in enumerate(zip(sentences, words)):
        chars, tags = zip(*sentence)
        assert bmes_to_words(list(chars), list(tags)) == gold, n


def test_cws_scores_of_the_gold_segmentation_against_itself_are_one(pfr_dev):
    _, words = pfr_dev
    assert cws_scores(words, words) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_bmes_to_words_is_lenient_about_broken_tag_sequences():
    # M at the start opens a word, B and S close an open word, E with no word open is a word of its own
    assert bmes_to_words(list("ABCDEFG"), ["M", "E", "B", "B", "M", "S", "E"]) == ["AB", "C", "DE", "F", "G"]
    assert bmes_to_words(list("ABC"), ["B", "M", "M"]) == ["ABC"]
    with pytest.raises(ValueError, match="tag 1 .* is 'I'"):
        bmes_to_words(list("AB"), ["B", "I"])


def test_cws_scores_on_a_hand_worked_segmentation():
    gold = [["中国", "人民", "站", "起来", "了"], ["我", "爱", "北京"]]
    pred = [["中国人民", "站起来", "了"], ["我", "爱", "北", "京"]]
    # sentence 0: only 了 matches (1 of 3 predicted, 1 of 5 gold); sentence 1: 我 and 爱 (2 of 4, 2 of 3)
    scores = cws_scores(gold, pred)
    assert scores["precision"] == pytest.approx(3 / 7, abs=TOL)
    assert scores["recall"] == pytest.approx(3 / 8, abs=TOL)
    assert scores["f1"] == pytest.approx(2 * (3 / 7) * (3 / 8) / (3 / 7 + 3 / 8), abs=TOL)


def test_cws_scores_name_the_sentence_whose_characters_differ():
    with pytest.raises(ValueError, match="sentence 1: .* from character 2"):
        cws_scores([["我"], ["北京", "人"]], [["我"], ["北京", "大"]])
