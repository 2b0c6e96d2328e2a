"""Getting a corpus ready for pretraining: a tokenizer trained on it and checked on held-out text, and the masks
pretraining will draw on it, line by line, to check a recipe before the long run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, UsageError

HOLD_OUT_EVERY = 20          # without --held-out, every 20th text of the corpus is held out (5%) ...
MOST_HELD_OUT = 20_000       # ... up to this many; the rest all trains
MAX_UNK_RATE = 0.002         # a held-out [UNK] rate above this is warned about
MAX_VOCAB = 1_000_000        # a --vocab-size beyond this is a slip (the tokenizers library aborts on 2**31)


@dataclass
class TrainedTokenizer:
    tokenizer: object
    folder: Path
    files: list[str]                  # what was written in the folder
    texts: int                        # texts trained on
    seconds: float
    held_out: dict | None             # tokenize.unknown_tokens on the held-out texts, with "source"; None: no texts
    example: dict | None              # {"where": "file line n", "text", "tokens"}: a line of the user's corpus
    warnings: list[str] = field(default_factory=list)


def train_tokenizer(corpus, out, *, family: str, vocab_size: int = 30000, lowercase: bool | None = None,
                    min_frequency: int = 2, text_column: str | None = None, held_out=None,
                    max_unk_rate: float = MAX_UNK_RATE, overwrite: bool = False, on_event=None) -> TrainedTokenizer:
    """Train the family's tokenizer on `corpus` (plain-text files, or the `text_column` of .tsv / .csv / .jsonl
    tables) and save it to the folder `out`. The share of [UNK] tokens is measured on `held_out` (a file read the
    same way) or, without one, on every 20th text of the corpus, which is then not trained on; a rate above
    `max_unk_rate` comes back as a warning (also sent as a "warning" event) naming the most frequent unknowns.
    Two trainings on the same corpus may differ in a few tokens: the `tokenizers` library breaks ties between
    equally frequent merges in hash-map order (huggingface/tokenizers#1794); keep the folder it writes."""
    from ..arguments import check_flag, number_arg, path_arg, paths_arg, whole_number
    from ..data import check_columns_apply, iter_rows
    from ..errors import OutputError
    from ..io import TOKENIZER_FILES, FolderLock, check_output_folder, create_output_folder, holds_model, model_files
    from ..tokenize import save_vocab_files, train_tokenizer_on, unknown_tokens
    corpus = [Path(p) for p in paths_arg("corpus", corpus)]
    if lowercase is not None:
        check_flag("lowercase", lowercase)
    check_flag("overwrite", overwrite)
    path_arg("out", out), path_arg("held_out", held_out, optional=True)
    min_frequency = number_arg("min_frequency", min_frequency, whole=True)
    if min_frequency < 1:
        raise UsageError(f"--min-frequency {min_frequency}: expected at least 1 (how often a merge must be seen)")
    if not corpus:
        raise UsageError("give at least one corpus file to train the tokenizer on")
    if not 0 <= number_arg("max_unk_rate", max_unk_rate) < 1:
        raise UsageError(f"--max-unk-rate {max_unk_rate}: expected a fraction of the tokens, such as 0.002")
    if whole_number(vocab_size) is None or vocab_size < 1:
        raise UsageError(f"--vocab-size {vocab_size!r}: expected a number of tokens, such as 30000 (the special "
                         "tokens and the characters of the corpus are kept whatever it is)")
    if vocab_size > MAX_VOCAB:
        raise UsageError(f"--vocab-size {vocab_size:,}: expected at most {MAX_VOCAB:,} tokens (BERT's is 30,522, "
                         "multilingual vocabularies 120,000-250,000)")
    vocab_size, max_unk_rate = int(vocab_size), float(max_unk_rate)
    out = Path(out)
    check_output_folder(out, overwrite, resumable=False,
                        inputs=corpus + ([Path(held_out)] if held_out is not None else []), writes=TOKENIZER_FILES)
    if holds_model(out):                             # --overwrite or not: the model's embeddings are its own ids'
        raise OutputError(f"--out {out} holds a model ({', '.join(model_files(out))}), whose embeddings are rows of "
                          "its own tokenizer's ids: a new tokenizer there would make it read every text through the "
                          "wrong rows. Write the tokenizer to a folder of its own")
    for p in corpus + ([Path(held_out)] if held_out is not None else []):
        if str(p) == "-":
            raise UsageError("'-' (standard input) is not read here: the corpus is read more than once, so give it "
                             "as a file")
        if not p.is_file():
            raise DataError(f"{p}: " + ("is a folder; expected a text file" if p.is_dir() else "no such file"))
    check_columns_apply(corpus + ([held_out] if held_out is not None else []), text_column=text_column)
    if held_out is not None and on_event and any(Path(held_out).resolve() == p.resolve() for p in corpus):
        on_event({"event": "notice", "message": f"--held-out {held_out} is also a training file, so its [UNK] rate "
                                                "is measured on text the tokenizer learnt from (it says little about "
                                                "new text); leave --held-out out to hold back every 20th text"})
    held, first, count = [], [], [0]

    def training_texts():                            # every 20th text held out unless a held-out file is given
        k = 0
        for path in corpus:
            for n, text, _, _ in iter_rows(path, text_column=text_column):
                k += 1
                if not first:
                    first.append((f"{path} line {n}", text))
                if held_out is None and k % HOLD_OUT_EVERY == 0 and len(held) < MOST_HELD_OUT:
                    held.append((f"{path} line {n}", text))
                    continue
                count[0] += 1
                yield text

    if held_out is not None:
        held = [(f"{held_out} line {n}", text) for n, text, _, _ in iter_rows(held_out, text_column=text_column)]
        if not held:
            raise DataError(f"--held-out {held_out}: no text in it to measure the tokenizer on")
    start = time.perf_counter()
    tok = train_tokenizer_on(training_texts(), family, vocab_size, lowercase, min_frequency,
                             what=", ".join(map(str, corpus)))
    seconds = time.perf_counter() - start
    source = str(held_out) if held_out is not None else f"every {HOLD_OUT_EVERY}th text of the corpus"
    stats = dict(unknown_tokens(tok, [t for _, t in held]), source=source) if held else None
    warnings = []
    if stats is not None and stats["rate"] > max_unk_rate:
        top = ", ".join(f"{t!r} ×{n}" for t, n in stats["top"][:8])
        warnings.append(f"{stats['rate']:.2%} of the held-out tokens ({stats['unknown']:,} of {stats['tokens']:,}, "
                        f"{source}) are {tok.specials['unk']}, above {max_unk_rate:.2%}; most frequent unknown: "
                        f"{top}. The corpus never has them: add text like the held-out text to it")
    elif stats is None and on_event:
        on_event({"event": "notice", "message": f"the corpus has fewer than {HOLD_OUT_EVERY} texts, so none was "
                                                "held out; pass --held-out FILE to measure the [UNK] rate"})
    if tok.vocab_size > vocab_size and on_event:    # the trainer keeps every character (and its ## form) regardless
        on_event({"event": "notice", "message": f"{tok.vocab_size:,} tokens, more than --vocab-size {vocab_size:,}: "
                                                "the trainer keeps every character of the corpus (WordPiece also each "
                                                "one's ## form) and the special tokens whatever the size asked; a "
                                                f"model needs at least {tok.vocab_size:,} embedding rows for it"})
    for w in warnings:
        if on_event:
            on_event({"event": "warning", "message": w})
    create_output_folder(out)
    with FolderLock(out, "tokenizer training"):     # two trainings into one folder: the second is refused
        tok.save(out, overwrite=True)        # (--out was checked above: a model's folder is refused)
        save_vocab_files(tok, out)
    files = sorted(p.name for p in out.iterdir() if p.name in TOKENIZER_FILES)      # what was written
    shown = next((x for x in held if 8 <= len(x[1]) <= 80), held[0] if held else first[0])
    example = {"where": shown[0], "text": shown[1][:80], "tokens": tok.tokenize(shown[1][:80])}
    return TrainedTokenizer(tok, out, files, count[0], seconds, stats, example, warnings)


def masks(file, out, *, tokenizer, whole_word: str | None = None, seed: int = 42, mlm_probability: float = 0.15,
          max_length: int = 128, family: str | None = None, overwrite: bool = False, on_event=None) -> dict:
    """Write to `out` (JSON lines) the masks pretraining draws on each line of `file` taken as a document of its
    own: the sequence [CLS] line [SEP], or, for a line longer than max_length, the segments MLM pretraining cuts
    its text into (tasks.pretraining.Pretraining.encode with the same seed), masked by the pretraining task's own
    code and seeds (Pretraining.corrupted, mask epoch 0: static masks, or the first epoch of dynamic ones). Blank
    lines give no sequence, as in pretraining, so the n-th object is the n-th sequence. Each line of `out` is
        {"line": line number in file, "tokens": [...], "words": [masking unit of each token, -1 for special tokens],
         "actions": [null | "mask" | "random" | "keep", one per token]}
    where a unit is a word in whole-word mode, else the token itself. Returns counts: lines (with tokens),
    sequences, cut (lines longer than max_length), tokens (non-special), chosen, mask, random, keep (in tokens),
    words (chosen units) and skipped (lines without a token). Refused, with nothing written: an `out` not named
    .jsonl, an existing `out` unless `overwrite`, and a `file` without a line of text."""
    from ..arguments import check_flag, whole_number
    from ..data import Segmented, check_corpus_file, lines, source_name, word_starts
    from ..io import StreamFile, check_writable_file
    from ..masking import line_instances, segment_files
    from ..tasks.pretraining import Pretraining
    from ..tokenize import load_tokenizer
    check_flag("overwrite", overwrite)
    if whole_number(seed) is None:
        raise UsageError(f"--seed {seed!r}: expected a whole number")
    seed = int(seed)
    words_file = whole_word[len("words:"):] if isinstance(whole_word, str) and whole_word.startswith("words:") \
        else None
    check_writable_file(out, "--out", inputs=(file, tokenizer, *([words_file] if words_file else [])),
                        overwrite=overwrite)                                    # an input is named first
    if Path(out).suffix.lower() != ".jsonl":
        raise UsageError(f"--out {out}: masks writes JSON lines; name the file with .jsonl at the end")
    if max_length < 3:
        raise UsageError(f"--max-length {max_length}: a sequence needs room for [CLS], a token and [SEP]")
    tok = load_tokenizer(tokenizer, family=family)
    task = Pretraining(tok, "mlm", whole_word, mlm_probability, dynamic=False, max_length=max_length)
    check_corpus_file(file)                          # what pretraining would refuse to read
    numbered = [(n, line.strip()) for n, line in lines(file)]
    texts = [t for _, t in numbered]
    if not any(texts):                               # as embed and predict: an empty input is a mistake, said
        raise DataError(f"{source_name(file)}: no texts found ({'it is empty' if not numbered else 'only blank lines'})"
                        "; expected plain text, a line a sequence")
    words = segment_files([file], task.whole_word, on_event)
    sentences = []
    for k, text in enumerate(texts):
        starts = word_starts(text, words[0][k]) if words and words[0][k] else None
        sentences.append(Segmented(text, starts) if starts else text)
    instances = line_instances(tok, sentences, max_length, seed)
    if not instances:                                # text, but only characters the tokenizer drops
        raise DataError(f"{source_name(file)}: no texts found (no line gives a token with --tokenizer {tokenizer})"
                        "; expected plain text, a line a sequence")
    per_line = {}
    for inst in instances:
        per_line[inst.doc] = per_line.get(inst.doc, 0) + 1
    counts = dict(lines=len(per_line), sequences=len(instances), cut=sum(c > 1 for c in per_line.values()), tokens=0,
                  chosen=0, mask=0, random=0, keep=0, words=0, skipped=len(texts) - len(per_line))
    with StreamFile(out) as f:
        for i, inst in enumerate(instances):
            c = task.corrupted(instances, i, seed, 0)
            counts["tokens"] += sum(not s for s in inst.special)
            for a in c.actions:
                if a:
                    counts[a] += 1
                    counts["chosen"] += 1
            counts["words"] += len({u for u, a in zip(c.units, c.actions) if a})
            f.write(json.dumps({"line": numbered[inst.doc][0], "tokens": [tok.backend.id_to_token(t) for t in inst.ids],
                                "words": c.units, "actions": c.actions}, ensure_ascii=False) + "\n")
    return counts
