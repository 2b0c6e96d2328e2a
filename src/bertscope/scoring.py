"""Evaluation metrics for bertscope's tasks, in plain Python (standard library only), each one scoring as a reference
tool does: sklearn (classification, multi-label), scipy (correlations), seqeval in its default conlleval-compatible
mode (entities), the official SQuAD v1.1/v2.0 scripts (question answering) and the SIGHAN bakeoff scorer (Chinese
word segmentation). tests/test_scoring.py checks each against its reference.

Wherever a ratio has a zero denominator it is 0.0, as sklearn and seqeval give with zero_division=0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts of true positives, predictions and gold items."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _check_pairs(gold: list, pred: list, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold {what} but {len(pred)} predicted; they must pair up one to one")
    if not gold:
        raise ValueError(f"no {what} to score")


# ---- classification, regression, multi-label ----

def classification_scores(gold: list[int], pred: list[int], num_labels: int) -> dict:
    """accuracy; macro_f1, the mean F1 over all num_labels classes, a class with no gold and no predicted examples
    scoring 0 (sklearn f1_score(average="macro", labels=range(num_labels), zero_division=0)); and confusion,
    confusion[true][predicted] counts."""
    _check_pairs(gold, pred, "labels")
    confusion = [[0] * num_labels for _ in range(num_labels)]
    for i, (g, p) in enumerate(zip(gold, pred)):
        if not (0 <= g < num_labels and 0 <= p < num_labels):
            raise ValueError(f"example {i}: gold label {g}, predicted {p}; labels must lie in 0..{num_labels - 1}")
        confusion[g][p] += 1
    f1 = [_prf(confusion[c][c], sum(row[c] for row in confusion), sum(confusion[c]))[2] for c in range(num_labels)]
    return {"accuracy": sum(confusion[c][c] for c in range(num_labels)) / len(gold),
            "macro_f1": sum(f1) / num_labels,
            "confusion": confusion}


def regression_scores(gold: list[float], pred: list[float]) -> dict:
    """mse; pearson r; spearman rho, the Pearson r of the ranks with tied values sharing their average rank
    (scipy.stats.spearmanr). A correlation is nan when either side is constant, as scipy returns."""
    _check_pairs(gold, pred, "values")
    return {"mse": math.fsum((g - p) ** 2 for g, p in zip(gold, pred)) / len(gold),
            "pearson": _pearson(gold, pred),
            "spearman": _pearson(_ranks(gold), _ranks(pred))}


def _pearson(x: list[float], y: list[float]) -> float:
    if len(set(x)) == 1 or len(set(y)) == 1:
        return float("nan")
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return max(-1.0, min(1.0, sxy / (math.sqrt(sxx) * math.sqrt(syy))))


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, a run of equal values all given the mean of the ranks it spans (scipy rankdata "average")."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    first = 0
    while first < len(order):
        last = first
        while last + 1 < len(order) and values[order[last + 1]] == values[order[first]]:
            last += 1
        for k in order[first:last + 1]:
            ranks[k] = (first + last) / 2 + 1
        first = last + 1
    return ranks


def multilabel_scores(gold: list[set[int]], pred: list[set[int]], num_labels: int) -> dict:
    """micro_precision, micro_recall, micro_f1 over all (example, label) decisions; macro_f1, the mean F1 over the
    num_labels labels (sklearn average="macro", zero_division=0); subset_accuracy, the share of examples whose
    predicted set equals the gold set."""
    _check_pairs(gold, pred, "label sets")
    tp, n_pred, n_gold = [0] * num_labels, [0] * num_labels, [0] * num_labels
    exact = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        g, p = set(g), set(p)
        outside = sorted(label for label in g | p if not 0 <= label < num_labels)
        if outside:
            raise ValueError(f"example {i}: labels {outside} lie outside 0..{num_labels - 1}")
        for label in g & p:
            tp[label] += 1
        for label in p:
            n_pred[label] += 1
        for label in g:
            n_gold[label] += 1
        exact += g == p
    micro_p, micro_r, micro_f = _prf(sum(tp), sum(n_pred), sum(n_gold))
    return {"micro_precision": micro_p, "micro_recall": micro_r, "micro_f1": micro_f,
            "macro_f1": sum(_prf(tp[c], n_pred[c], n_gold[c])[2] for c in range(num_labels)) / num_labels,
            "subset_accuracy": exact / len(gold)}


# ---- entities (seqeval, default mode) ----

def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities of one sentence as (type, start, end), end inclusive, exactly as seqeval's get_entities reads them
    (conlleval rules): the tag's first character is its chunk tag and what follows its first "-" the type ("_" if
    none). A chunk starts at B or S, at I or E after O, E or S, and wherever the type changes; it ends after E or S,
    before B, S or O, and wherever the type changes. So an I- after O or after another type starts a new entity.
    Malformed tags are read, not rejected: bio_problems is the strict check."""
    spans = []
    prev_tag, prev_type, start = "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):                 # the "O" closes an entity at the end
        if not tag:
            raise ValueError(f"tag {i} is an empty string; expected O, B-TYPE or I-TYPE")
        chunk, type_ = tag[0], tag[1:].split("-", 1)[-1] or "_"
        if _chunk_ends(prev_tag, chunk, prev_type, type_):
            spans.append((prev_type, start, i - 1))
        if _chunk_starts(prev_tag, chunk, prev_type, type_):
            start = i
        prev_tag, prev_type = chunk, type_
    return spans


# "." is the second outside tag of conlleval and seqeval: like O, it neither ends nor starts a chunk by its type.
def _chunk_ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev in ("E", "S")
            or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev not in ("O", ".") and prev_type != type_))


def _chunk_starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S")
            or (prev in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """precision, recall, f1: micro over entities, a predicted entity counting when its type, start and end equal a
    gold one's (seqeval precision_score/recall_score/f1_score, default mode); per_type: {type: {precision, recall,
    f1, support}} for every type in gold or pred, sorted, support the number of gold entities (seqeval
    classification_report(output_dict=True))."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted; they must pair up one to one")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted; every token needs one of each")
    gold_entities, pred_entities = _entities(gold), _entities(pred)
    found = gold_entities & pred_entities
    n_gold, n_pred, n_found = (Counter(t for t, _, _ in e) for e in (gold_entities, pred_entities, found))
    per_type = {}
    for t in sorted(n_gold.keys() | n_pred.keys()):
        p, r, f = _prf(n_found[t], n_pred[t], n_gold[t])
        per_type[t] = {"precision": p, "recall": r, "f1": f, "support": n_gold[t]}
    p, r, f = _prf(len(found), len(pred_entities), len(gold_entities))
    return {"precision": p, "recall": r, "f1": f, "per_type": per_type}


def _entities(sentences: list[list[str]]) -> set[tuple[str, int, int]]:
    """Every sentence's entities, read as seqeval reads a corpus: all sentences in one run, an "O" after each."""
    return set(entity_spans([tag for tags in sentences for tag in list(tags) + ["O"]]))


def bio_problems(tags: list[str]) -> list[tuple[int, str]]:
    """(token index, message) for every tag of one sentence that breaks strict IOB2: a tag other than O, B-TYPE or
    I-TYPE with a non-empty TYPE, and an I-TYPE that does not continue a B-TYPE or I-TYPE of the same TYPE. An
    empty list means the sentence is valid."""
    problems = []
    for i, tag in enumerate(tags):
        prefix, _, type_ = tag.partition("-")
        if tag == "O":
            continue
        if prefix not in ("B", "I") or not type_:
            hint = "; E- and S- tags belong to IOBES, convert them to B- and I-" if prefix in ("E", "S") else ""
            problems.append((i, f"{tag!r} is not an IOB2 tag: expected O, B-TYPE or I-TYPE (e.g. B-person){hint}"))
        elif prefix == "I" and (i == 0 or tags[i - 1] not in (f"B-{type_}", f"I-{type_}")):
            where = "starts the sentence" if i == 0 else f"follows {tags[i - 1]}"
            problems.append((i, f"{tag} {where}: an I- tag must continue a B-{type_} or I-{type_} (IOB2)"))
    return problems


# ---- SQuAD (official evaluate-v1.1.py / evaluate-v2.0.py) ----

_PUNCTUATION = frozenset(string.punctuation)                   # ASCII only, as the official scripts


def squad_normalize(text: str) -> str:
    """Lower-case, remove ASCII punctuation, remove the words a, an and the, and collapse whitespace, in the
    official scripts' order."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, truth: str) -> float:
    """1.0 when prediction and truth normalise to the same text, else 0.0."""
    return float(squad_normalize(prediction) == squad_normalize(truth))


def squad_f1(prediction: str, truth: str) -> float:
    """F1 of the normalised tokens, counted with multiplicity; when either side has no tokens, 1.0 if both have
    none and 0.0 otherwise (evaluate-v2.0.py)."""
    pred_tokens, truth_tokens = squad_normalize(prediction).split(), squad_normalize(truth).split()
    if not pred_tokens or not truth_tokens:
        return float(pred_tokens == truth_tokens)
    same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    return _prf(same, len(pred_tokens), len(truth_tokens))[2]


def squad_scores(predictions: dict[str, str], answers: dict[str, list[str]]) -> dict:
    """exact and f1 in percent, and total, over the questions of answers, as evaluate-v2.0.py: a question scores its
    best over its gold answers, gold answers that normalise to nothing are dropped, and a question left with none
    has "" as its only answer. A question missing from predictions scores 0 (as evaluate-v1.1.py; v2.0 leaves it
    out). With both answerable (a non-empty gold list) and unanswerable questions, also HasAns_exact, HasAns_f1,
    HasAns_total, NoAns_exact, NoAns_f1, NoAns_total."""
    if not answers:
        raise ValueError("no questions to score: answers is empty")
    exact, f1 = {}, {}
    for qid, golds in answers.items():
        golds = [a for a in golds if squad_normalize(a)] or [""]
        prediction = predictions.get(qid)
        exact[qid] = 0.0 if prediction is None else max(squad_exact(prediction, a) for a in golds)
        f1[qid] = 0.0 if prediction is None else max(squad_f1(prediction, a) for a in golds)

    def percent(qids: list[str]) -> dict:
        return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
                "f1": 100.0 * sum(f1[q] for q in qids) / len(qids), "total": len(qids)}

    scores = percent(list(answers))
    has_answer = [q for q, golds in answers.items() if golds]     # v2.0: by the gold list as given
    no_answer = [q for q, golds in answers.items() if not golds]
    if has_answer and no_answer:
        for name, qids in (("HasAns", has_answer), ("NoAns", no_answer)):
            scores.update({f"{name}_{key}": value for key, value in percent(qids).items()})
    return scores


# ---- Chinese word segmentation (SIGHAN bakeoff scorer) ----

def bmes_to_words(chars: list[str], tags: list[str]) -> list[str]:
    """Words from per-character tags B (begins a word), M (inside), E (ends), S (a one-character word). Lenient, as
    common decoders: a word ends after E or S and before B or S, so an M or E with no word open starts one, and a
    word still open at the end is kept."""
    if len(chars) != len(tags):
        raise ValueError(f"{len(chars)} characters but {len(tags)} tags; every character needs one tag")
    words, word = [], ""
    for i, (ch, tag) in enumerate(zip(chars, tags)):
        if tag not in ("B", "M", "E", "S"):
            raise ValueError(f"tag {i} ({ch!r}) is {tag!r}; expected B, M, E or S")
        if tag in ("B", "S") and word:
            words.append(word)
            word = ""
        word += ch
        if tag in ("E", "S"):
            words.append(word)
            word = ""
    if word:
        words.append(word)
    return words


def cws_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Word-level precision, recall and F1, as the SIGHAN bakeoff scorer: a predicted word is correct when its
    character span in the sentence equals a gold word's span. Gold and pred must segment the same characters."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted; they must pair up one to one")
    tp = n_gold = n_pred = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        g_text, p_text = "".join(g), "".join(p)
        if g_text != p_text:
            at = next((k for k, (a, b) in enumerate(zip(g_text, p_text)) if a != b), min(len(g_text), len(p_text)))
            raise ValueError(f"sentence {i}: gold and predicted words spell different text from character {at} "
                             f"(gold {g_text[at:at + 10]!r}, predicted {p_text[at:at + 10]!r}); both must "
                             f"segment the same characters")
        if "" in g or "" in p:
            raise ValueError(f"sentence {i} has an empty word; every word needs at least one character")
        tp += len(_word_spans(g) & _word_spans(p))
        n_gold, n_pred = n_gold + len(g), n_pred + len(p)
    precision, recall, f1 = _prf(tp, n_pred, n_gold)
    return {"precision": precision, "recall": recall, "f1": f1}


def _word_spans(words: list[str]) -> set[tuple[int, int]]:
    """(start, end) character offsets of each word, end exclusive."""
    spans, start = set(), 0
    for word in words:
        spans.add((start, start + len(word)))
        start += len(word)
    return spans
