"""Pretraining examples as BERT, RoBERTa and ALBERT built them: documents -> segments that fill max_length,
NSP / SOP sentence pairs, and masked-LM corruption (15% of the non-special tokens; of those 80% [MASK],
10% a random token, 10% unchanged; static or dynamic masks).

Whole-word masking (`whole_word`) masks the tokens of one word together, and decides 80/10/10 once per word. The
words come from:
    None            no words: every token is masked on its own
    "pieces"        the tokenizer's own words (WordPiece `##` pieces, BPE / Unigram word starts), as BERT's
                    whole-word masking for English; a CJK character is a word of its own (in every family)
    "jieba"         the jieba segmenter (pip install 'bertscope[zh]'), run once per corpus file and cached
    "words:FILE"    gold words: FILE holds one sentence a line, words separated by spaces (as pfr1998's
                    *.words.txt); a corpus line takes the words of the FILE line that spells it
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Segmented, lines, sha256_of
from .errors import DataError, OutputError, UsageError, missing_extra
from .io import StreamFile, cache_folder

WHOLE_WORD = ("none", "pieces", "jieba", "words:FILE")


@dataclass
class Sentence:
    ids: list[int]
    word_start: list[bool]      # True where a token begins a word (WordPiece: not "##"; BPE: leading space)


@dataclass
class Instance:
    """One model input before masking."""
    ids: list[int]
    types: list[int]
    special: list[bool]         # [CLS]/[SEP]/<s>/</s>: never masked
    word_start: list[bool]
    pair_label: int = -1        # NSP: 1 = B is random (as BERT: 0 = "is next"); SOP: 1 = swapped; -1 = no pair
    doc: int = -1               # the document A came from
    doc_b: int = -1             # the document B came from


# ---- words ---------------------------------------------------------------------------------------------------------

def whole_word_unit(value) -> str | None:
    """A --whole-word value checked: None (token by token), "pieces", "jieba" or "words:FILE" (FILE made absolute,
    so that a resumed run finds it)."""
    if value is None or value == "none":
        return None
    if value == "pieces":
        return value
    if value == "jieba":
        try:
            import jieba  # noqa: F401
        except ImportError:
            raise missing_extra("jieba", "zh", "--whole-word jieba (Chinese word segmentation)") from None
        return value
    if isinstance(value, str) and value.startswith("words:"):
        path = Path(value[len("words:"):])
        if not str(path) or not path.is_file():
            raise DataError(f"--whole-word {value}: {'no such file' if str(path) else 'no file named'}; after "
                            "words: name a file of gold words, one sentence a line, words separated by spaces (as "
                            "pfr1998/train.words.txt)")
        return f"words:{path.absolute()}"           # as given (symlinks kept), usable from elsewhere
    raise UsageError(f"--whole-word {value!r}: use none (mask token by token), pieces (the tokenizer's own words), "
                     "jieba (Chinese words from the jieba segmenter) or words:FILE (gold words, one sentence a line, "
                     "separated by spaces)")


def segment_files(paths, whole_word: str | None, on_event=None, held_out: bool = False) -> list | None:
    """What read_documents(words=...) takes for a segmenter's whole-word masking: for each file, the words of each
    of its lines (None for a line without them); None when the words come from the tokenizer (or there are none).
    Lines that the gold words do not spell are said in a notice; their tokens are grouped by the tokenizer's own
    words. A corpus of which no line is spelled is refused (another corpus's words); held-out text (--eval) may
    have none."""
    if whole_word is None or whole_word == "pieces":
        return None
    if whole_word == "jieba":
        return [_jieba_words(Path(p), on_event) for p in paths]
    gold_file = Path(whole_word[len("words:"):])
    gold = _gold_words(gold_file)
    out = []
    for path in map(Path, paths):
        per_line, texts, missing, first = [], 0, 0, None
        for n, line in lines(path):
            key = "".join(line.split())
            words = gold.get(key) if key else None
            per_line.append(words)
            texts += bool(key)
            if key and words is None:
                missing += 1
                first = first or n
        out.append(per_line)
        if texts and missing == texts and not held_out:   # not one line spelled: another corpus's words
            raise DataError(f"--whole-word words:{gold_file}: no line of {path} ({texts:,} with text) is spelled by "
                            f"a line of it (first: line {first}), so no word of the corpus would be masked whole; give "
                            "the segmentation of this corpus (its lines with spaces between the words)")
        if missing and on_event:
            on_event({"event": "notice", "message": f"--whole-word words:{gold_file}: {missing:,} of {texts:,} lines "
                      f"of {'--eval ' if held_out else ''}{path} have no gold segmentation there (no line of it "
                      f"spells them; first: line {first}); "
                      "their tokens are grouped by the tokenizer's own words instead (a Chinese character alone)"})
    return out


def _gold_words(path: Path) -> dict[str, list[str]]:
    """Each line of a gold-words file, keyed by what its words spell."""
    gold = {}
    for _, line in lines(path):
        words = line.split()
        if words:
            gold.setdefault("".join(words), words)
    if not gold:
        raise DataError(f"--whole-word words:{path}: the file holds no words; expected one sentence a line, words "
                        "separated by spaces")
    return gold


def _jieba_words(path: Path, on_event=None) -> list:
    """The jieba words of each line of `path`, segmented once and cached as a words file (a sentence a line, words
    separated by spaces) in bertscope's cache folder under the corpus's content hash. A `<corpus>.jieba.words`
    beside the corpus (where earlier versions kept it) is read when it spells the corpus, and never written: a
    file of that name there is the user's. A cache that no longer spells the corpus is redone."""
    texts = [line.strip() for _, line in lines(path)]
    beside = path.with_name(path.name + ".jieba.words")
    hashed = cache_folder("segmented", f"{sha256_of([path])[:16]}.jieba.words")
    for cached in (beside, hashed):
        words = _read_cache(cached, texts)
        if words is not None:
            if on_event:
                on_event({"event": "notice", "message": f"jieba words of {path}: read from {cached}"})
            return words
    import jieba
    import logging
    jieba.setLogLevel(logging.WARNING)
    target = hashed
    if on_event:
        on_event({"event": "notice", "message": f"segmenting {path} with jieba (once; the words are kept in "
                                                f"{target})"})
    words = [[w for w in jieba.lcut(t) if not w.isspace()] if t else None for t in texts]
    try:
        with StreamFile(target) as f:
            for w in words:
                f.write(" ".join(w or []) + "\n")
    except (OutputError, OSError) as e:    # the cache only saves time: the words are here either way
        if on_event:
            on_event({"event": "notice", "message": f"the jieba words of {path} could not be kept ({e}); they will "
                                                    "be segmented again next time"})
    return words


def _read_cache(path: Path, texts: list[str]) -> list | None:
    """A cached words file, if it exists and spells `texts` line by line; else None."""
    if not path.is_file():
        return None
    try:
        cached = [line.split() for _, line in lines(path)]
    except (DataError, OSError):
        return None
    if len(cached) != len(texts) or any("".join(w) != "".join(t.split()) for w, t in zip(cached, texts)):
        return None
    return [w or None for w in cached]


def tokenize_documents(tok, documents: list[list]) -> list[list[Sentence]]:
    """Each document's sentences as token ids without special tokens, with the word starts: the tokenizer's words
    for a string, the segmenter's for a Segmented (a token that reaches into the next word joins the two).
    Sentences without tokens, and documents without sentences, are left out."""
    encoded = iter(_encode(tok, [s for doc in documents for s in doc]))
    out = []
    for doc in documents:
        sents = [x for x in (next(encoded) for _ in doc) if x is not None]
        if sents:
            out.append(sents)
    return out


def _encode(tok, sentences: list) -> list[Sentence | None]:
    texts = [s.text if isinstance(s, Segmented) else s for s in sentences]
    encodings = tok.backend.encode_batch(texts, add_special_tokens=False) if texts else []
    out = []
    for s, e in zip(sentences, encodings):
        if not e.ids:
            out.append(None)
        elif isinstance(s, Segmented):
            out.append(Sentence(e.ids, _segment_starts(e.offsets, s.starts)))
        else:                # the tokenizer's words; a CJK character is a word of its own in every family
            words, at = e.word_ids, e.offsets
            cjk = [_has_cjk(s[a:b]) for a, b in at]
            out.append(Sentence(e.ids, [i == 0 or words[i] != words[i - 1] or
                                        ((cjk[i] or cjk[i - 1]) and at[i][0] >= at[i - 1][1])  # (bytes of one char:
                                        for i in range(len(e.ids))]))                         # the same span)
    return out


# CJK ideographs, as BERT's tokenizer puts each apart (its _is_chinese_char), and Extension G
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F), (0x30000, 0x3134F))


def _has_cjk(text: str) -> bool:
    return any(lo <= ord(c) <= hi for c in text for lo, hi in CJK_RANGES)


def _segment_starts(offsets, word_starts: tuple[int, ...]) -> list[bool]:
    """Token i begins a word when one of the words begins between the end of token i-1 and the start of token i."""
    starts, previous_end = [], 0
    for i, (begin, end) in enumerate(offsets):
        j = bisect.bisect_left(word_starts, previous_end)
        starts.append(i == 0 or (j < len(word_starts) and word_starts[j] <= begin))
        previous_end = end
    return starts


def _concat(sentences: list[Sentence]):
    ids = [t for s in sentences for t in s.ids]
    starts = [w for s in sentences for w in s.word_start]
    return ids, starts


def _truncate_pair(a, b, max_tokens, rng):
    """Trim the longer of the two from a random end until both fit (as BERT's truncate_seq_pair)."""
    (a_ids, a_st), (b_ids, b_st) = a, b
    while len(a_ids) + len(b_ids) > max_tokens:
        ids, st = (a_ids, a_st) if len(a_ids) > len(b_ids) else (b_ids, b_st)
        if rng.random() < 0.5:
            del ids[0], st[0]
            if st:
                st[0] = True   # a cut word's remaining pieces count as one word
        else:
            ids.pop(), st.pop()
    return (a_ids, a_st), (b_ids, b_st)


def build_instances(docs: list[list[Sentence]], tok, max_length: int, objective: str, seed: int,
                    short_seq_prob: float = 0.1) -> list[Instance]:
    """Segments that fill max_length. objective: "mlm" (one segment of contiguous text, RoBERTa), "mlm+nsp" (A,
    then 50% the true next segment / 50% a segment of another document), "mlm+sop" (50% A B in order / 50%
    swapped). The pair objectives trim a pair that does not fit, as BERT does; "mlm" loses no token."""
    rng = random.Random(seed)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    one_segment = not tok.family.segments              # RoBERTa: <s> A </s></s> B </s>
    instances = []
    pairs = objective != "mlm"
    budget = max_length - (3 if pairs else 2) - (1 if pairs and one_segment else 0)
    for d, doc in enumerate(docs):
        if not pairs:
            instances += _contiguous(doc, budget, short_seq_prob, rng, cls, sep, d)
            continue
        target = budget if rng.random() > short_seq_prob else rng.randint(2, budget)
        chunk, size, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            size += len(doc[i].ids)
            if i == len(doc) - 1 or size >= target:
                if len(chunk) == 1:        # one long sentence: its two halves are A and B
                    ids, st = _concat(chunk)
                    cut = rng.randint(1, max(1, len(ids) - 1))
                    a, rest = (ids[:cut], st[:cut]), (ids[cut:], st[cut:])
                    unused = 0
                else:
                    split = rng.randint(1, len(chunk) - 1)
                    a, rest = _concat(chunk[:split]), _concat(chunk[split:])
                    unused = len(chunk) - split
                label, doc_b = 0, d
                if objective == "mlm+nsp" and len(docs) > 1 and rng.random() < 0.5:
                    other = rng.randrange(len(docs) - 1)
                    other += other >= d                         # any document but this one
                    start = rng.randrange(len(docs[other]))
                    b_sents, n = [], 0
                    for sent in docs[other][start:]:
                        b_sents.append(sent)
                        n += len(sent.ids)
                        if n >= budget - len(a[0]):
                            break
                    b = _concat(b_sents)
                    label, doc_b = 1, other
                    i -= unused                                  # the unused sentences start the next chunk
                else:
                    b = rest
                    if objective == "mlm+sop" and rng.random() < 0.5:
                        a, b = b, a
                        label = 1
                a, b = _truncate_pair((list(a[0]), list(a[1])), (list(b[0]), list(b[1])), budget, rng)
                if a[0] and b[0]:
                    instances.append(_pair(a, b, cls, sep, one_segment, label, d, doc_b))
                chunk, size = [], 0
                target = budget if rng.random() > short_seq_prob else rng.randint(2, budget)
            i += 1
    return instances


def _contiguous(doc: list[Sentence], budget: int, short_seq_prob: float, rng, cls, sep, d) -> list[Instance]:
    """MLM alone: the document's text, sentence after sentence, cut into segments of `budget` tokens (a random
    shorter one with short_seq_prob, as BERT, while more than `budget` tokens are left), each cut where the last
    one ended, so that no token is left out (a segment that stops at a sentence and drops the rest lost 38% of
    People's Daily, whose paragraphs run to hundreds of characters). Text that fits is one segment: a line of its
    own is [CLS] line [SEP]. A segment that starts inside a word starts with a word of its own."""
    ids, starts = _concat(doc)
    out, at = [], 0
    while at < len(ids):
        left = len(ids) - at
        if left <= budget:
            size = left
        else:                                        # (a budget of 1, at --max-length 3: every segment 1 token)
            size = budget if rng.random() > short_seq_prob else rng.randint(min(2, budget), budget)
        out.append(_single(ids[at:at + size], [True] + starts[at + 1:at + size], cls, sep, d))
        at += size
    return out


def _single(ids, starts, cls, sep, d):
    return Instance([cls] + ids + [sep], [0] * (len(ids) + 2), [True] + [False] * len(ids) + [True],
                    [True] + starts + [True], -1, d, d)


def _pair(a, b, cls, sep, one_segment, label, d, doc_b):
    (a_ids, a_st), (b_ids, b_st) = a, b
    a_st, b_st = [True] + a_st[1:], [True] + b_st[1:]      # a segment cut inside a word starts a new one
    if one_segment:   # <s> A </s></s> B </s>, one segment
        ids = [cls] + a_ids + [sep, sep] + b_ids + [sep]
        types = [0] * len(ids)
        special = [True] + [False] * len(a_ids) + [True, True] + [False] * len(b_ids) + [True]
        starts = [True] + a_st + [True, True] + b_st + [True]
    else:         # [CLS] A [SEP] B [SEP], segments 0 / 1
        ids = [cls] + a_ids + [sep] + b_ids + [sep]
        types = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
        special = [True] + [False] * len(a_ids) + [True] + [False] * len(b_ids) + [True]
        starts = [True] + a_st + [True] + b_st + [True]
    return Instance(ids, types, special, starts, label, d, doc_b)


@dataclass
class Corrupted:
    """One instance after masked-LM corruption."""
    ids: torch.Tensor               # (L,) the model's input
    labels: torch.Tensor            # (L,) the original id where a token is to be predicted, else -100
    actions: list                   # per token: None, "mask", "random" or "keep"
    units: list[int]                # per token: the masking unit (word) it belongs to, -1 for special tokens


def units_of(inst: Instance, whole_word: str | None) -> list[list[int]]:
    """The positions of each masking unit: a word's tokens in whole-word mode (special tokens end a word), else
    every non-special token alone."""
    candidates = [i for i, s in enumerate(inst.special) if not s]
    if whole_word is None:
        return [[i] for i in candidates]
    words, current = [], []
    for i in candidates:
        if current and (inst.word_start[i] or i != current[-1] + 1):
            words.append(current)
            current = []
        current.append(i)
    if current:
        words.append(current)
    return words


def corrupt(inst: Instance, tok, probability: float, whole_word: str | None, g: torch.Generator) -> Corrupted:
    """BERT's corruption. round(n * p) (at least 1) of the n non-special tokens are chosen; in whole-word mode whole
    words are picked in random order until that budget is met (a word that would overshoot it is skipped, as BERT
    does). Each chosen unit (a word, or a token) then becomes [MASK] (80%), random tokens (10%) or stays (10%): one
    draw per unit, so all tokens of a word share it."""
    ids = torch.tensor(inst.ids)
    labels = torch.full_like(ids, -100)
    actions = [None] * len(inst.ids)
    units = units_of(inst, whole_word)
    unit_of = [-1] * len(inst.ids)
    for u, positions in enumerate(units):
        for i in positions:
            unit_of[i] = u
    if not units:
        return Corrupted(ids, labels, actions, unit_of)
    budget = max(1, round(sum(map(len, units)) * probability))
    if whole_word is None:
        chosen = torch.randperm(len(units), generator=g)[:budget].tolist()
    else:
        chosen, size = [], 0
        order = torch.randperm(len(units), generator=g).tolist()
        for u in order:
            if size >= budget:
                break
            if size + len(units[u]) > budget:              # would overshoot the budget: skipped, as BERT does
                continue
            chosen.append(u)
            size += len(units[u])
        if not chosen:                                     # every word longer than the budget: the shortest one
            chosen = [min(order, key=lambda u: len(units[u]))]
    chosen.sort()                                           # by position: units do not interleave
    roll = torch.rand(len(chosen), generator=g).tolist()
    at = {"mask": [], "random": [], "keep": []}
    for u, r in zip(chosen, roll):
        action = "mask" if r < 0.8 else "random" if r < 0.9 else "keep"
        at[action] += units[u]
        for i in units[u]:
            actions[i] = action
    picked = sorted(at["mask"] + at["random"] + at["keep"])
    labels[picked] = ids[picked]
    ids[at["mask"]] = tok.mask_token_id
    ids[at["random"]] = torch.randint(0, tok.vocab_size, (len(at["random"]),), generator=g)
    return Corrupted(ids, labels, actions, unit_of)


def mask_tokens(inst: Instance, tok, probability: float, whole_word: str | None, g: torch.Generator):
    """(input ids, labels) of `corrupt`."""
    c = corrupt(inst, tok, probability, whole_word, g)
    return c.ids, c.labels


def line_instances(tok, texts: list, max_length: int, seed: int) -> list[Instance]:
    """What MLM pretraining (seeded with `seed`) makes of each text (a string or a Segmented) as a document of its
    own: [CLS] text [SEP] when it fits in max_length, else its text cut into segments one after another. Texts
    without tokens give none; an instance's `doc` is the index of its text. The segments are those of
    build_instances on the texts with tokens, each a document (an empty one draws nothing from the generator)."""
    docs = [[s] if s is not None else [] for s in _encode(tok, texts)]
    return build_instances(docs, tok, max_length, "mlm", seed)
