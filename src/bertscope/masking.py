"""Pretraining examples as BERT, RoBERTa and ALBERT built them: documents -> segments that fill max_length,
NSP / SOP sentence pairs, and masked-LM corruption (15% of the non-special tokens; of those 80% [MASK],
10% a random token, 10% unchanged; whole-word masking optional; static or dynamic masks).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


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


def tokenize_documents(tok, documents: list[list[str]]) -> list[list[Sentence]]:
    """Each document's sentences as token ids without special tokens, with the word starts."""
    flat = [s for doc in documents for s in doc]
    encodings = tok.backend.encode_batch(flat, add_special_tokens=False) if flat else []
    out, k = [], 0
    for doc in documents:
        sents = []
        for _ in doc:
            e = encodings[k]
            k += 1
            if not e.ids:
                continue
            words = e.word_ids
            starts = [i == 0 or words[i] != words[i - 1] for i in range(len(e.ids))]
            sents.append(Sentence(e.ids, starts))
        if sents:
            out.append(sents)
    return out


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
    """Segments that fill max_length. objective: "mlm" (one segment, RoBERTa), "mlm+nsp" (A, then 50% the true
    next segment / 50% a segment of another document), "mlm+sop" (50% A B in order / 50% swapped)."""
    rng = random.Random(seed)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    one_segment = not tok.family.segments              # RoBERTa: <s> A </s></s> B </s>
    instances = []
    pairs = objective != "mlm"
    budget = max_length - (3 if pairs else 2) - (1 if pairs and one_segment else 0)
    for d, doc in enumerate(docs):
        target = budget if rng.random() > short_seq_prob else rng.randint(2, budget)
        chunk, size, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            size += len(doc[i].ids)
            if i == len(doc) - 1 or size >= target:
                if not pairs:
                    ids, st = _concat(chunk)
                    ids, st = ids[:budget], st[:budget]
                    instances.append(_single(ids, st, cls, sep, d))
                else:
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


def mask_tokens(inst: Instance, tok, probability: float, whole_word: bool, g: torch.Generator):
    """(input ids, labels) with BERT's corruption. The number of corrupted tokens is round(n * p) (at least 1) of
    the n non-special tokens; whole-word mode picks whole words until that budget is met."""
    ids = torch.tensor(inst.ids)
    labels = torch.full_like(ids, -100)
    candidates = [i for i, s in enumerate(inst.special) if not s]
    if not candidates:
        return ids, labels
    budget = max(1, round(len(candidates) * probability))
    if whole_word:
        words, current = [], []
        for i in candidates:
            if current and (inst.word_start[i] or i != current[-1] + 1):   # specials also end a word
                words.append(current)
                current = []
            current.append(i)
        words.append(current)
        order = torch.randperm(len(words), generator=g).tolist()
        chosen = []
        for w in order:
            if len(chosen) >= budget:
                break
            if len(chosen) + len(words[w]) > budget and chosen:
                continue                        # as BERT: skip a word that would overshoot the budget
            chosen += words[w]
    else:
        perm = torch.randperm(len(candidates), generator=g)[:budget].tolist()
        chosen = [candidates[k] for k in perm]
    chosen = torch.tensor(sorted(chosen), dtype=torch.long)
    labels[chosen] = ids[chosen]
    roll = torch.rand(len(chosen), generator=g)
    mask_at = chosen[roll < 0.8]
    random_at = chosen[(roll >= 0.8) & (roll < 0.9)]
    ids[mask_at] = tok.mask_token_id
    ids[random_at] = torch.randint(0, tok.vocab_size, (len(random_at),), generator=g)
    return ids, labels
