"""Chinese text: a WordPiece vocabulary trained on People's Daily (pfr1998/raw.txt) and the reviews (zh_reviews),
its [UNK] rate on held-out reviews, full-width forms, transformers reading it unchanged; whole-word masking with
gold words (pfr1998/*.words.txt) and with jieba, per-word 80/10/10, and `bertscope masks` agreeing with the
pretraining batches."""

import json
import os
import re
import sys
import unicodedata

import pytest
import torch
from conftest import DATA, need_shared
from typer.testing import CliRunner

import bertscope
from bertscope import api
from bertscope.api.corpus import MAX_UNK_RATE
from bertscope.cli import app
from bertscope.errors import CapabilityError, DataError, UsageError
from bertscope.masking import whole_word_unit
from bertscope.tasks.pretraining import Pretraining

RAW, TRAIN_WORDS, DEV_WORDS = (DATA / "pfr1998" / f for f in ("raw.txt", "train.words.txt", "dev.words.txt"))
REVIEWS, HELD_REVIEWS = DATA / "zh_reviews" / "train.tsv", DATA / "zh_reviews" / "dev.tsv"
ACTIONS = {None, "mask", "random", "keep"}


def review_texts(path, limit=None):
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [r.split("\t")[0] for r in rows][:limit]


@pytest.fixture(scope="module")
def zh(tmp_path_factory):
    """The vocabulary of the issue: raw.txt plus the reviews' text column, measured on the held-out reviews."""
    need_shared()
    out = tmp_path_factory.mktemp("zh-tok")
    return api.train_tokenizer([RAW, REVIEWS], out, family="bert", held_out=HELD_REVIEWS)


@pytest.fixture(scope="module")
def dev_corpus(tmp_path_factory):
    """pfr1998's dev sentences unsegmented (the gold words joined), as a user's corpus file."""
    need_shared()
    folder = tmp_path_factory.mktemp("dev-corpus")
    lines = ["".join(line.split()) for line in DEV_WORDS.read_text(encoding="utf-8").splitlines()]
    (folder / "dev.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "dev.txt", lines


def read_masks(path, tok):
    """The masks file, each line checked against the documented shape."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for r in rows:
        assert set(r) == {"line", "tokens", "words", "actions"} and isinstance(r["line"], int) and r["line"] >= 1
        n = len(r["tokens"])
        assert len(r["words"]) == n and len(r["actions"]) == n and all(isinstance(w, int) for w in r["words"])
        assert r["tokens"][0] == "[CLS]" and r["tokens"][-1] == "[SEP]"
        assert [i for i, w in enumerate(r["words"]) if w == -1] == [0, n - 1]
        assert set(r["actions"]) <= ACTIONS and r["actions"][0] is None and r["actions"][-1] is None
    return rows


def char_spans(line, words):
    """(start, end) of each word in the line (the words spell it, whitespace left out)."""
    spans, i = [], 0
    for w in words:
        while line[i].isspace():
            i += 1
        assert line[i:i + len(w)] == w
        spans.append((i, i + len(w)))
        i += len(w)
    return spans


def by_line(rows):
    """The masks rows of each line joined into one (a line longer than --max-length comes in segments): tokens and
    actions in order, units numbered on, and "cuts": the positions where a segment after the first begins."""
    out = {}
    for r in rows:
        if r["line"] not in out:
            out[r["line"]] = dict(r, cuts=set())
            continue
        m = out[r["line"]]
        shift = max(m["words"]) + 1
        m["cuts"].add(len(m["tokens"]) - 1)
        m["tokens"] = m["tokens"][:-1] + r["tokens"][1:]
        m["actions"] = m["actions"][:-1] + r["actions"][1:]
        m["words"] = m["words"][:-1] + [w + shift if w >= 0 else w for w in r["words"][1:]]
    return [out[n] for n in sorted(out)]


def at_cut(row, positions):
    """Whether a unit begins or ends where the line was cut into segments (a word the cut splits)."""
    return positions[0] in row["cuts"] or positions[-1] + 1 in row["cuts"]


def units(row):
    """{unit: [token positions]} of one masks row."""
    out = {}
    for i, u in enumerate(row["words"]):
        if u >= 0:
            out.setdefault(u, []).append(i)
    return out


# ---- the vocabulary ------------------------------------------------------------------------------------------------

def test_vocabulary_of_news_and_reviews_has_few_unknowns_on_held_out_reviews(zh):
    h = zh.held_out
    assert h["texts"] == len(review_texts(HELD_REVIEWS)) and h["tokens"] > 100_000
    assert h["rate"] < MAX_UNK_RATE / 2 and not zh.warnings
    vocab = zh.tokenizer.backend.get_vocab()
    cjk = [t for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    latin = [t for t in vocab if re.fullmatch(r"(##)?[a-z]{2,}", t)]
    assert len(cjk) > 4000 and len(latin) > 200                 # the characters, and Latin word pieces
    assert not [t for t in vocab if len(t) > 1 and any("\u4e00" <= c <= "\u9fff" for c in t.lstrip("#"))
                and not t.startswith("##")]                      # no multi-character Chinese tokens
    assert zh.tokenizer.vocab_size < 30000                       # not padded out with pieces seen once
    assert all(c in vocab and f"##{c}" in vocab for c in "abcdefghijklmnopqrstuvwxyz0123456789")
    assert zh.example["text"] in review_texts(HELD_REVIEWS)      # the example is the user's own text
    assert "[UNK]" not in zh.example["tokens"] and len(zh.example["tokens"]) > 5


def test_news_only_vocabulary_is_warned_about_on_reviews(tmp_path):
    need_shared()
    r = CliRunner().invoke(app, ["tokenizer", "train", str(RAW), "--family", "bert", "--out", str(tmp_path / "t"),
                                 "--held-out", str(HELD_REVIEWS)])
    assert r.exit_code == 0, r.output
    rate = float(re.search(r"held-out \[UNK\] rate: ([\d.]+)%", r.output).group(1)) / 100
    assert rate > MAX_UNK_RATE
    assert "warning:" in r.output and "are [UNK], above" in r.output and "add text like the held-out" in r.output
    example = re.search(r"example \((.*?) line (\d+)\)", r.output)
    assert example.group(1) == str(HELD_REVIEWS)                 # a line of the user's text, not an English fox


def test_full_width_digits_letters_and_punctuation_encode_as_half_width(zh):
    tok = zh.tokenizer
    news = RAW.read_text(encoding="utf-8").splitlines()[:3000]
    lines = [line for line in news if re.search("[０-９Ａ-Ｚａ-ｚ，：（]", line)]
    assert len(lines) > 300
    for line in lines:
        assert tok.encode(line) == tok.encode(unicodedata.normalize("NFKC", line))
    pieces = tok.tokenize("１９９８年ＡＢＣ（新华社）")
    assert pieces == tok.tokenize("1998年ABC(新华社)") and pieces[:2] == ["1998", "年"] and "[UNK]" not in pieces
    saved = json.loads((zh.folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert [n["type"] for n in saved["normalizer"]["normalizers"]] == ["NFKC", "BertNormalizer"]


def test_saved_vocabulary_loads_in_bertscope_and_transformers_with_the_same_ids(zh, tmp_path):
    transformers = pytest.importorskip("transformers")
    texts = review_texts(HELD_REVIEWS, 300) + [l for l in RAW.read_text(encoding="utf-8").splitlines()[:100]]
    ours = bertscope.load_tokenizer(zh.folder)
    expected = zh.tokenizer(texts, max_length=512)["input_ids"]
    assert torch.equal(ours(texts, max_length=512)["input_ids"], expected)
    theirs = transformers.AutoTokenizer.from_pretrained(zh.folder)
    b = theirs(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    assert torch.equal(b["input_ids"], expected)
    # A model folder names model_type bert; transformers must still read tokenizer.json as it is (NFKC kept).
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / f).write_bytes((zh.folder / f).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert torch.equal(theirs(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")["input_ids"],
                       expected)


# ---- whole words ---------------------------------------------------------------------------------------------------

def test_gold_words_are_masked_whole(zh, dev_corpus, tmp_path):
    corpus, lines = dev_corpus
    gold = [line.split() for line in DEV_WORDS.read_text(encoding="utf-8").splitlines()]
    counts = api.masks(corpus, tmp_path / "m.jsonl", tokenizer=zh.folder, whole_word=f"words:{DEV_WORDS}", seed=3,
                       max_length=256)
    rows = by_line(read_masks(tmp_path / "m.jsonl", zh.tokenizer))
    assert len(rows) == len(lines) == counts["lines"] and counts["sequences"] > counts["lines"] and counts["cut"]
    masked_words = split_words = cut_words = 0
    for line, words, row in zip(lines, gold, rows):
        e = zh.tokenizer.backend.encode(line, add_special_tokens=False)
        assert row["tokens"][1:-1] == e.tokens                # every token of the line, in order
        offsets = e.offsets
        token_at = [-1] * len(line)                           # the token (row position) of each character
        for k, (s, t) in enumerate(offsets):
            for c in range(s, t):
                token_at[c] = k + 1
        for a, b in char_spans(line, words):
            inside = {token_at[c] for c in range(a, b)} - {-1}                         # the word's tokens
            if any(i in row["cuts"] for i in inside - {min(inside, default=0)}):
                cut_words += 1                                  # a word the cut into segments splits: two draws
                continue
            acts = {row["actions"][i] for i in inside}
            assert len(acts) <= 1, (line, line[a:b], acts)                              # never partly masked
            assert len({row["words"][i] for i in inside}) <= 1                          # one unit
            masked_words += bool(acts - {None})
        spans = char_spans(line, words)
        starts, ends = {a for a, _ in spans}, {b for _, b in spans}
        for positions in units(row).values():               # a unit is whole gold words: it starts and ends on
            if at_cut(row, positions):                          # word boundaries
                continue
            s, t = offsets[positions[0] - 1][0], offsets[positions[-1] - 1][1]
            split_words += not (s in starts and t in ends)
    assert split_words == 0 and masked_words > 5000 and cut_words <= counts["sequences"] - counts["lines"]


def test_masking_rate_and_80_10_10_are_per_word(zh, tmp_path):
    need_shared()
    corpus = tmp_path / "news.txt"
    corpus.write_text("\n".join(RAW.read_text(encoding="utf-8").splitlines()[:3000]) + "\n", encoding="utf-8")
    api.masks(corpus, tmp_path / "m.jsonl", tokenizer=zh.folder, whole_word=f"words:{TRAIN_WORDS}", seed=11)
    rows = read_masks(tmp_path / "m.jsonl", zh.tokenizer)
    tokens = sum(len(r["tokens"]) - 2 for r in rows)
    chosen = {a: sum(r["actions"].count(a) for r in rows) for a in ("mask", "random", "keep")}
    total = sum(chosen.values())
    assert abs(total / tokens - 0.15) < 0.01
    for a, share in (("mask", 0.8), ("random", 0.1), ("keep", 0.1)):
        assert abs(chosen[a] / total - share) < 0.02, (a, chosen[a] / total)
    long_words = 0
    for r in rows:
        for positions in units(r).values():
            assert len({r["actions"][i] for i in positions}) == 1          # one draw per word
            long_words += len(positions) > 1 and r["actions"][positions[0]] is not None
    assert long_words > 0.3 * sum(len({r["words"][i] for i, a in enumerate(r["actions"]) if a}) for r in rows)


def test_jieba_words_are_jiebas_own_and_segmented_once(zh, dev_corpus, tmp_path, monkeypatch):
    jieba = pytest.importorskip("jieba")
    corpus, lines = dev_corpus
    beside = corpus.with_name(corpus.name + ".jieba.words")
    beside.write_text("my own notes\n", encoding="utf-8")                   # a file of the user's, by that name
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    api.masks(corpus, tmp_path / "m.jsonl", tokenizer=zh.folder, whole_word="jieba", seed=5, max_length=512)
    assert beside.read_text(encoding="utf-8") == "my own notes\n"            # left as it was
    assert len(list((tmp_path / "cache" / "segmented").glob("*.jieba.words"))) == 1
    rows = by_line(read_masks(tmp_path / "m.jsonl", zh.tokenizer))
    exact = merged = 0
    for line, row in zip(lines[:400], rows):
        spans = char_spans(line, [w for w in jieba.lcut(line) if not w.isspace()])
        starts, ends = {a for a, _ in spans}, {b for _, b in spans}
        offsets = zh.tokenizer.backend.encode(line, add_special_tokens=False).offsets
        for positions in units(row).values():
            s, t = offsets[positions[0] - 1][0], offsets[positions[-1] - 1][1]
            if at_cut(row, positions):
                continue                                                   # a word the cut into segments splits
            assert s in starts and t in ends                               # whole jieba words
            if (s, t) in set(spans):
                exact += 1
            else:                                   # several words: only where a token reaches across a boundary
                assert any(any(a < b < c for b in starts) for a, c in (offsets[i - 1] for i in positions))
                merged += 1
    assert exact > 0.95 * (exact + merged) and merged      # full-width digits: jieba splits them, a token does not
    monkeypatch.setattr(jieba, "lcut", lambda *a, **k: pytest.fail("segmented again"))
    again = api.masks(corpus, tmp_path / "again.jsonl", tokenizer=zh.folder, whole_word="jieba", seed=5,
                      max_length=512)
    assert again["lines"] == len(lines) and (tmp_path / "again.jsonl").read_bytes() == \
        (tmp_path / "m.jsonl").read_bytes()


def test_jieba_words_of_a_read_only_corpus_are_cached_by_content(zh, tmp_path, monkeypatch):
    jieba = pytest.importorskip("jieba")
    need_shared()
    folder = tmp_path / "ro"
    folder.mkdir()
    texts = review_texts(HELD_REVIEWS, 200)
    (folder / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    folder.chmod(0o555)
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    try:
        api.masks(folder / "reviews.txt", tmp_path / "m.jsonl", tokenizer=zh.folder, whole_word="jieba")
        assert sorted(os.listdir(folder)) == ["reviews.txt"]
        cached = list((tmp_path / "cache" / "segmented").glob("*.jieba.words"))
        assert len(cached) == 1
        assert [l.split() for l in cached[0].read_text(encoding="utf-8").splitlines()] == \
            [[w for w in jieba.lcut(t) if not w.isspace()] for t in texts]
        monkeypatch.setattr(jieba, "lcut", lambda *a, **k: pytest.fail("segmented again"))
        api.masks(folder / "reviews.txt", tmp_path / "m2.jsonl", tokenizer=zh.folder, whole_word="jieba")
    finally:
        folder.chmod(0o755)


def test_masks_file_is_what_the_pretraining_batches_draw(zh, dev_corpus, tmp_path):
    corpus, lines = dev_corpus
    one = [l for l in lines if not re.search(r"[.!?]\s", l)][:300]    # one sentence a line
    (tmp_path / "lines.txt").write_text("\n\n".join(one) + "\n", encoding="utf-8")   # each its own document
    unit = f"words:{DEV_WORDS}"
    r = CliRunner().invoke(app, ["masks", str(tmp_path / "lines.txt"), "--tokenizer", str(zh.folder), "--whole-word",
                                 unit, "--seed", "7", "--out", str(tmp_path / "m.jsonl"), "--max-length", "96"])
    assert r.exit_code == 0, r.output
    rows = read_masks(tmp_path / "m.jsonl", zh.tokenizer)                # the blank lines give no sequence
    task = Pretraining(zh.tokenizer, "mlm", whole_word=unit, max_length=96)
    data = task.encode(task.read([tmp_path / "lines.txt"]), 7)
    instances = data.extra["instances"]
    assert len(instances) == len(rows) > len(one)                       # long lines come in several segments
    numbers = [row["line"] for row in rows]                              # each line, in order, blank ones skipped
    assert numbers == sorted(numbers)
    assert set(numbers) == set(range(1, 2 * len(one), 2))
    batch = task.collate(data, list(range(len(instances))), 0, 7)
    ids, bounds = batch.inputs["input_ids"], batch.inputs["cu_seqlens"].tolist()
    labelled = torch.zeros_like(ids, dtype=torch.bool)
    labelled[batch.inputs["mlm_positions"]] = True
    mask_id, odd = zh.tokenizer.mask_token_id, 0
    for k, (row, inst) in enumerate(zip(rows, instances)):
        assert row["tokens"] == [zh.tokenizer.backend.id_to_token(t) for t in inst.ids]
        x, lab = ids[bounds[k]:bounds[k + 1]].tolist(), labelled[bounds[k]:bounds[k + 1]].tolist()
        for i, a in enumerate(row["actions"]):
            assert lab[i] == (a is not None)
            if a == "mask":
                assert x[i] == mask_id
            elif a in ("keep", None):
                assert x[i] == inst.ids[i]
            else:
                odd += x[i] in (mask_id, inst.ids[i])                  # a random draw that hit either: rare
    assert sum(a is not None for row in rows for a in row["actions"]) > 2000 and odd <= 2
    cut = sum(numbers.count(n) > 1 for n in set(numbers))
    assert f"{len(one)} lines ({len(one) - 1} blank lines skipped) in {len(rows)} sequences ({cut} lines" in r.output
    chosen = [a for row in rows for a in row["actions"] if a]
    assert f"(mask {chosen.count('mask') / len(chosen):.1%}, random {chosen.count('random') / len(chosen):.1%}" \
        in r.output and cut > 0


def test_pretraining_with_gold_words_says_which_lines_had_none(zh, tmp_path):
    corpus = tmp_path / "mixed.txt"
    news = RAW.read_text(encoding="utf-8").splitlines()[:150]
    corpus.write_text("\n".join(news + review_texts(HELD_REVIEWS, 3)) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["pretrain", "--family", "bert", "--corpus", str(corpus), "--tokenizer",
                                 str(zh.folder), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4",
                                 "--max-length", "64", "--whole-word", f"words:{TRAIN_WORDS}", "--save-every", "0",
                                 "--threads", "1", "--objective", "mlm"])      # (one document: NSP would refuse it)
    assert r.exit_code == 0, r.output
    assert "3 of 153 lines" in r.output and "no gold segmentation" in r.output and "line 151" in r.output
    assert f"(whole words: words:{TRAIN_WORDS})" in r.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["task"]["whole_word"] == f"words:{TRAIN_WORDS}" and run["data"]["words"][0]["path"] == str(TRAIN_WORDS)
    # held-out text that the gold words do not spell at all (reviews) is evaluated with the tokenizer's words
    held = tmp_path / "held.txt"
    held.write_text("\n".join(review_texts(HELD_REVIEWS, 20)) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["pretrain", "--family", "bert", "--corpus", str(corpus), "--tokenizer",
                                 str(zh.folder), "--out", str(tmp_path / "run2"), "--steps", "2", "--batch-size", "4",
                                 "--max-length", "64", "--whole-word", f"words:{TRAIN_WORDS}", "--save-every", "0",
                                 "--threads", "1", "--objective", "mlm", "--eval", str(held)])
    assert r.exit_code == 0, r.output
    assert f"20 of 20 lines of --eval {held} have no gold segmentation" in r.output


# ---- mistakes ------------------------------------------------------------------------------------------------------

def test_whole_word_mistakes_are_refused_with_the_fix(zh, tmp_path, monkeypatch):
    common = ["--tokenizer", str(zh.folder), "--out", str(tmp_path / "m.jsonl")]
    corpus = tmp_path / "c.txt"
    corpus.write_text("今天天气很好。\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["masks", str(corpus), "--whole-word", "words", *common])
    assert r.exit_code == 2 and "--whole-word 'words'" in r.output and "words:FILE" in r.output
    r = CliRunner().invoke(app, ["masks", str(corpus), "--whole-word", f"words:{tmp_path / 'gone.txt'}", *common])
    assert r.exit_code == 2 and "gone.txt: no such file" in r.output and "one sentence a line" in r.output
    r = CliRunner().invoke(app, ["masks", str(corpus), "--whole-word", f"words:{TRAIN_WORDS}", *common])
    assert r.exit_code == 2 and f"no line of {corpus} (1 with text) is spelled by a line of it" in r.output, r.output
    r = CliRunner().invoke(app, ["masks", str(corpus), "--whole-word", "none", "--tokenizer", str(zh.folder),
                                 "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output
    with pytest.raises(UsageError, match="use none"):
        whole_word_unit(True)                      # the old boolean: the words must be named now
    with pytest.raises(DataError, match="no text column .review."):
        api.train_tokenizer([REVIEWS], tmp_path / "t", family="bert", text_column="review")
    monkeypatch.setitem(sys.modules, "jieba", None)  # jieba not installed
    with pytest.raises(CapabilityError, match=r"pip install 'bertscope\[zh\]'"):
        whole_word_unit("jieba")
    r = CliRunner().invoke(app, ["masks", str(corpus), "--whole-word", "jieba", *common])
    assert r.exit_code == 2 and "pip install 'bertscope[zh]'" in r.output
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("family", ["albert", "roberta"])
def test_pieces_of_chinese_text_are_characters_in_every_family(family, tmp_path):
    """An ALBERT (Unigram) or RoBERTa (byte-level BPE) tokenizer keeps a run of Chinese characters as one word of
    its pre-tokenizer; whole-word masking by pieces takes each character as a word, as BERT's WordPiece does, so
    that 15% of the tokens are chosen (not whole lines), and no budget is overshot by more than one word's tokens."""
    need_shared()
    corpus = tmp_path / "news.txt"
    corpus.write_text("\n".join(RAW.read_text(encoding="utf-8").splitlines()[:300]) + "\n", encoding="utf-8")
    api.train_tokenizer([corpus], tmp_path / "tok", family=family, vocab_size=2000)
    counts = api.masks(corpus, tmp_path / "m.jsonl", tokenizer=tmp_path / "tok", whole_word="pieces", seed=5)
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()]
    tokens = sum(len(r["tokens"]) - 2 for r in rows)
    chosen = sum(a is not None for r in rows for a in r["actions"])
    assert abs(chosen / tokens - 0.15) < 0.01 and counts["sequences"] >= 300
    longest = 0
    for r in rows:       # one token of Chinese text a unit at most (with a "▁" before it); RoBERTa: its bytes
        for positions in units(r).values():
            pieces = [r["tokens"][i] for i in positions]
            assert sum(any("\u4e00" <= c <= "\u9fff" for c in p) for p in pieces) <= 1, pieces
            longest = max(longest, len(positions))
    assert longest <= 9            # a full-width Latin word in bytes (before: whole runs of characters, up to 126)


def test_a_whole_word_longer_than_the_budget_is_skipped_for_shorter_ones(zh, tmp_path):
    """BERT's rule: a word that would overshoot the 15% budget is passed over while shorter ones fill it."""
    need_shared()
    corpus = tmp_path / "c.txt"
    corpus.write_text("中华人民共和国的人\n", encoding="utf-8")               # 9 characters: a budget of 1
    words = tmp_path / "w.txt"
    words.write_text("中华人民共和国 的 人\n", encoding="utf-8")
    for seed in range(20):
        api.masks(corpus, tmp_path / f"m{seed}.jsonl", tokenizer=zh.folder, whole_word=f"words:{words}", seed=seed)
        row = read_masks(tmp_path / f"m{seed}.jsonl", zh.tokenizer)[0]
        assert sum(a is not None for a in row["actions"]) == 1, row["actions"]
