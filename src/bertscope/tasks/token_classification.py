"""Token classification (NER, POS, Chinese word segmentation): one tag per word.

Files are CoNLL (`token<TAB>tag`, a blank line between sentences) or JSONL with "tokens" and "tags". The words of a
sentence are joined with spaces and tokenized once; a word's tag goes to its first piece and the other pieces are
left out of the loss (`label_all_pieces` gives every piece the word's tag). Tags in the BIO/IOB2 scheme (`B-PER`,
`I-PER`, `O`) are checked (an `I-` that continues nothing is an error naming the line) and scored per entity as
seqeval does; B/M/E/S segmentation tags are scored per word as the SIGHAN scorer does; any other tag set per token.
A sentence longer than the model is cut (and counted) or, with windows, split into overlapping windows, each word
taking its tag from the window where it sits most centrally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import infer, scoring
from ..data import TokenExamples, is_conll, iter_rows, read_conll, source_name
from ..errors import DataError
from .base import Batch, Task


BMES = frozenset("BMES")                     # word segmentation: begins, middle, ends, a one-character word


def scheme_of(tags) -> str:
    """"bio" for B-/I-/O tags, "bmes" for B/M/E/S segmentation tags, else "tags"."""
    unique = set(tags)
    if unique and all(t == "O" or t[:2] in ("B-", "I-") for t in unique) and unique != {"O"}:
        return "bio"
    if unique and unique <= BMES:
        return "bmes"
    return "tags"


def tag_order(tags) -> list[str]:
    """A new head's tags: O first, then by entity type and B before I (so B-X, I-X sit together)."""
    unique = set(tags)
    return sorted(unique, key=lambda t: (t != "O", t[2:] if t[:2] in ("B-", "I-") else t, t[:2]))


def word_spans(tok, text: str, encoding) -> list[tuple[int, int]]:
    """The words of a raw text as the reference token-classification pipeline groups pieces (aggregation "first"):
    with a word-piece vocabulary a piece continues a word when its token is longer than its characters ("##ing")
    and is not the unknown token (a rare character or an emoji, a word of its own), otherwise when no space
    separates it from the character before."""
    prefix = getattr(tok.backend.model, "continuing_subword_prefix", None)
    unknown = tok.specials.get("unk")
    spans: list[list[int]] = []
    for token, (a, b) in zip(encoding.tokens, encoding.offsets):
        if a == b:
            continue                                                         # a special token
        if prefix:
            continues = len(token) != len(text[a:b]) and token != unknown
        else:
            continues = a > 0 and " " not in text[a - 1:a + 1]
        if continues and spans:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return [tuple(x) for x in spans]


class TokenClassification(Task):
    name = "token-classification"
    head = "token-classification"
    metric = "f1"

    def __init__(self, labels: list[str] | None = None, max_length: int = 128, label_all_pieces: bool = False,
                 windows: int | None = None, text_column: str | None = None, **_):
        self.labels, self.text_column = labels, text_column
        self.max_length, self.label_all_pieces, self.windows = max_length, label_all_pieces, windows

    # ---- reading ------------------------------------------------------------------------------------------------
    def read(self, path, skip_bad_rows: bool = False, labelled: bool = True) -> TokenExamples:
        """CoNLL / JSONL sentences; for prediction also plain text, one sentence a line, or the text column of a
        .tsv / .csv (--text-column), split at spaces."""
        sheet = str(path).lower().endswith((".tsv", ".csv"))
        if labelled and sheet:
            raise DataError(f"{source_name(path)}: word tags are read from CoNLL files (.conll, .bio, .iob, .iob2, "
                            ".ner or .txt: a word and its tag on each line, a blank line between sentences) or .jsonl "
                            "with tokens and tags; a .tsv or .csv holds sentence labels (--task classification)")
        if not labelled and not (is_conll(path) or str(path).endswith(".jsonl")):
            return self._plain(path)
        ex = read_conll(path, labelled)
        if labelled:
            self._check_tags(ex)
        return ex

    def chunks(self, source, size: int, skip_bad_rows: bool = False, labelled: bool = True):
        ex = self.read(source, skip_bad_rows, labelled)
        for a in range(0, len(ex), size):
            yield TokenExamples(ex.path, ex.words[a:a + size], ex.tags[a:a + size] if ex.tags is not None else None,
                                ex.lines[a:a + size], ex.texts[a:a + size] if ex.texts is not None else None)

    def _plain(self, path) -> TokenExamples:
        """Plain text, one sentence a line; its words are found by the tokenizer at encoding time."""
        ex = TokenExamples(source_name(path), [], None, [], [])
        hint = ", or words and their tags as a CoNLL file (.conll: a word and its tag a line)"
        for n, text, _, _ in iter_rows(path, self.text_column, stdin_hint=hint):    # a table's text column, or lines
            ex.words.append(None)
            ex.lines.append(n)
            ex.texts.append(text)
        if not ex.words:
            raise DataError(f"{ex.path}: no text found")
        return ex

    def _check_tags(self, ex: TokenExamples):
        """IOB2 files are checked tag by tag. A file of B-/I- tags with a few others (a typo such as 0 for O, IOBES's
        E- and S-) is one too: without this, one odd tag would make it plain tags, unchecked and scored per token."""
        counts: dict = {}
        for tags in ex.tags:
            for t in tags:
                counts[t] = counts.get(t, 0) + 1
        odd = {t for t in counts if t not in BMES}
        if len(BMES & set(counts)) >= 3 and odd and all("-" not in t for t in odd) and \
                sum(counts[t] for t in odd) < 0.01 * sum(counts.values()):
            # a file of word-segmentation tags with a stray one (a typo): it would make a head that can predict
            # it, and no word could be read from that prediction
            i, k = next((i, k) for i, tags in enumerate(ex.tags) for k, t in enumerate(tags) if t in odd)
            line = ex.lines[i] + k if not str(ex.path).endswith(".jsonl") else ex.lines[i]
            raise DataError(f"{ex.path} line {line}: tag {ex.tags[i][k]!r} of {ex.words[i][k]!r} in a file of B/M/E/S "
                            "word-segmentation tags: expected B, M, E or S")
        if not any(t[:2] in ("B-", "I-") for tags in ex.tags for t in tags):
            return
        for words, tags, first in zip(ex.words, ex.tags, ex.lines):
            for k, message in scoring.bio_problems(tags):
                line = first + k if not str(ex.path).endswith(".jsonl") else first
                raise DataError(f"{ex.path} line {line}: tag {tags[k]!r} of {words[k]!r}: {message}")

    # ---- the head -------------------------------------------------------------------------------------------
    def fit_head(self, config, saved_head, train: TokenExamples, new_head: bool) -> bool:
        found = tag_order(t for tags in train.tags for t in tags)
        if len(found) < 2:
            raise DataError(f"{train.path}: every token has tag {found[0]!r}; a tagger needs at least two tags")
        keep = saved_head == self.head and not new_head
        if keep:
            unknown = sorted(set(found) - set(config.labels))
            if unknown:
                i = next(i for i, tags in enumerate(train.tags) if unknown[0] in tags)
                raise DataError(f"{train.where(i)}: tag {unknown[0]!r} is not one of this tagger's tags "
                                f"({', '.join(config.labels)}). Pass --new-head to train a new head for the file's "
                                f"tags; the saved head is then discarded")
            self.labels = list(config.labels)
        else:
            self.labels = found
        return keep

    def configure(self, config):
        return config.with_labels(self.labels)

    def use_model_labels(self, config):
        self.labels = list(config.labels)

    @property
    def scheme(self) -> str:
        return scheme_of(self.labels)

    # ---- encoding and batches ---------------------------------------------------------------------------------
    def encode(self, ex: TokenExamples, tok, max_length: int | None = None, labelled: bool = True) -> infer.Encoded:
        """Each sentence's words joined with spaces; the pieces' word numbers from their character offsets."""
        texts, spans = [], []
        raw = tok.encode_batch(ex.texts, truncation=False) if ex.texts is not None else None
        for i, words in enumerate(ex.words):
            if ex.texts is not None:                      # plain text: words as the reference pipeline finds them
                text = ex.texts[i]
                row = word_spans(tok, text, raw[i])
                ex.words[i] = [text[a:b] for a, b in row]
            else:
                start, row = 0, []
                for w in words:
                    row.append((start, start + len(w)))
                    start += len(w) + 1
                text = " ".join(words)
            texts.append(text)
            spans.append(row)
        enc = infer.tokenize(tok, texts, max_length=max_length or self.max_length, word_ids=True,
                             windows=self.windows)
        sentence = enc.extra.get("text") or list(range(len(texts)))
        enc.word_ids = [self._words(enc.offsets[k], enc.word_ids[k], spans[s]) for k, s in enumerate(sentence)]
        enc.extra.update(sentence=sentence, spans=spans, texts=texts, words=ex.words,
                         pieceless=self._pieceless(enc, sentence, ex))
        if labelled and ex.tags is not None:
            index = {t: i for i, t in enumerate(self.labels)}
            for i, tags in enumerate(ex.tags):
                for t in tags:
                    if t not in index:
                        raise DataError(f"{ex.where(i)}: tag {t!r} is not one the model knows "
                                        f"({', '.join(self.labels)})")
            enc.extra["tags"] = ex.tags
            enc.extra["labels"] = [self._labels(enc.word_ids[k], [index[t] for t in ex.tags[s]])
                                   for k, s in enumerate(sentence)]
        return enc

    @staticmethod
    def _pieceless(enc, sentence, ex) -> list[tuple[str, int]]:
        """(word, line) of every word the tokenizer makes no piece of (a zero-width space, a lone control
        character): the model never sees it, so it is tagged 'O' (the first tag where there is none) with score 0.
        Words after a cut are not among them (the cut is counted as such)."""
        seen, cut = [set() for _ in ex.words], [False] * len(ex.words)
        for k, s in enumerate(sentence):
            seen[s].update(w for w in enc.word_ids[k] if w >= 0)
            cut[s] = cut[s] or bool(enc.cut[k])
        out = []
        for s, words in enumerate(ex.words):
            last = max(seen[s], default=-1) if cut[s] else len(words)
            out += [(words[w], ex.lines[s] + (w if ex.texts is None and not str(ex.path).lower().endswith(".jsonl")
                                              else 0))
                    for w in range(len(words)) if w not in seen[s] and w < last]
        return out

    def pieceless_notice(self, found: list[tuple[str, int]], name: str, training: bool = False) -> str:
        fallback = "O" if "O" in (self.labels or []) else (self.labels or ["the first tag"])[0]
        word, line = found[0]
        them = "them" if len(found) > 1 else "it"
        return (f"{name}: {len(found)} word{'s' if len(found) > 1 else ''} became no token at all (first: {word!r}, "
                f"line {line}; the tokenizer drops such characters), so the model cannot see {them}: "
                + (f"no tag is learnt from {them}" if training else f"tagged {fallback!r} with score 0"))

    @staticmethod
    def _words(offsets, pieces, spans) -> list[int]:
        """The word number of every piece (-1 for special tokens), from where its characters start."""
        out, w = [], 0
        for (a, b), piece in zip(offsets, pieces):
            if piece < 0 or a == b:
                out.append(-1)
                continue
            while w + 1 < len(spans) and spans[w][1] <= a:
                w += 1
            while w > 0 and spans[w][0] > a:
                w -= 1
            out.append(w)
        return out

    def _labels(self, word_ids, tags) -> list[int]:
        out, previous = [], -1
        for w in word_ids:
            first = w >= 0 and w != previous
            out.append(tags[w] if w >= 0 and (first or self.label_all_pieces) else -100)
            previous = w
        return out

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs = infer.packed_batch(data, index)
        labels = torch.tensor([x for i in index for x in data.extra["labels"][i]], dtype=torch.long)
        scored = (labels != -100).nonzero().squeeze(-1)                       # (R,) the labelled pieces
        inputs["last_rows"] = scored                                           # the last layer computes these alone
        return Batch(inputs, {"labels": labels[scored]}, {"loss": int(scored.numel())}, len(index),
                     int(inputs["input_ids"].numel()))

    def loss(self, model, batch: Batch):
        logits = model(**batch.inputs).logits                                  # (R, C) at the labelled pieces
        return {"loss": F.cross_entropy(logits.float(), batch.targets["labels"], reduction="sum")}, {}

    # ---- predictions ----------------------------------------------------------------------------------------
    def predictions(self, model, data, batch_size: int = 64) -> list[dict]:
        """Per sentence: every word's tag and its probability, from its first piece in the window where the word
        sits most centrally (a word the model never saw, past the length limit, gets 'O' or the first tag, score 0)."""
        firsts = [[pos for pos, w in enumerate(words) if w >= 0 and (pos == 0 or words[pos - 1] != w)]
                  for words in data.word_ids]                                 # each word's first piece
        per_window = infer.run(model, data, batch_size, rows=firsts.__getitem__, fn=lambda out, b, index: list(
            out.logits.float().softmax(-1).cpu().split([len(firsts[i]) for i in index])))  # (R, C) by window
        best: dict = {}                                                       # (sentence, word) -> (centrality, p)
        for k, probs in enumerate(per_window):
            s = data.extra["sentence"][k]
            words = data.word_ids[k]
            n = len(words)
            for pos, p in zip(firsts[k], probs):
                w = words[pos]
                centrality = min(pos, n - 1 - pos)
                if (s, w) not in best or centrality > best[(s, w)][0]:
                    best[(s, w)] = (centrality, p)
        fallback = self.labels.index("O") if "O" in self.labels else 0
        out = []
        for s, words in enumerate(data.extra["words"]):
            tags, scores, seen = [], [], 0
            for w in range(len(words)):
                if (s, w) in best:
                    p = best[(s, w)][1]
                    tags.append(self.labels[int(p.argmax())])
                    scores.append(float(p.max()))
                    seen += 1
                else:
                    tags.append(self.labels[fallback])
                    scores.append(0.0)
            out.append({"tags": tags, "scores": scores, "unseen": len(words) - seen})
        return out

    def gold(self, data) -> list[tuple]:
        return list(zip(data.extra["tags"], data.extra["words"]))


    def score(self, preds: list[dict], gold: list[tuple]) -> dict:
        """gold: (tags, words) of every sentence."""
        words = [w for _, w in gold]
        gold = [t for t, _ in gold]
        pred = [p["tags"] for p in preds]
        scheme = scheme_of(t for tags in gold for t in tags)
        flat_gold = [t for tags in gold for t in tags]
        flat_pred = [t for tags in pred for t in tags]
        m = {"token_accuracy": sum(a == b for a, b in zip(flat_gold, flat_pred)) / max(1, len(flat_gold)),
             "sentences": len(gold), "unseen_words": sum(p["unseen"] for p in preds)}
        if scheme == "bio":
            m.update(scoring.entity_scores(gold, pred))
        elif scheme == "bmes":
            chars = [[c for w in ws for c in w] for ws in words]
            pred = [[t if t in BMES else "S" for t in tags] for tags in pred]   # a head's other tag: a word alone
            m.update(scoring.cws_scores([scoring.bmes_to_words(c, t) for c, t in zip(chars, gold)],
                                        [scoring.bmes_to_words(c, t) for c, t in zip(chars, pred)]))
        else:
            index = {t: i for i, t in enumerate(self.labels)}
            c = scoring.classification_scores([index.get(t, 0) for t in flat_gold], [index[t] for t in flat_pred],
                                              len(self.labels))
            m.update(f1=c["macro_f1"], accuracy=c["accuracy"])
        return m

    def decode(self, preds: list[dict], data) -> list[dict]:
        """Words with their tags, and the entities merged from BIO tags: text, type, start/end characters (end
        exclusive) in the sentence as given, and the mean of its words' scores."""
        out = []
        for s, p in enumerate(preds):
            words, spans = data.extra["words"][s], data.extra["spans"][s]
            text = data.extra["texts"][s]
            rec = {"text": text, "words": words, "tags": p["tags"]}
            if self.scheme == "bio":
                rec["entities"] = [{"text": text[spans[a][0]:spans[b][1]], "type": kind, "start": spans[a][0],
                                    "end": spans[b][1], "score": sum(p["scores"][a:b + 1]) / (b - a + 1)}
                                   for kind, a, b in scoring.entity_spans(p["tags"])]
            out.append(rec)
        return out

    def state(self) -> dict:
        return {"task": self.name, "labels": self.labels, "max_length": self.max_length,
                "label_all_pieces": self.label_all_pieces, "windows": self.windows}
