"""Chinese text: a WordPiece vocabulary trained on People's Daily (pfr1998/raw.txt) and the reviews (zh_reviews),
its [UNK] rate on held-out reviews, full-width forms, transformers reading it unchanged."""

import json
import re
import unicodedata

import pytest
import torch
from conftest import DATA, need_shared
from typer.testing import CliRunner

import bertscope
from bertscope import api
from bertscope.api.corpus import MAX_UNK_RATE
from bertscope.cli import app

RAW = DATA / "pfr1998" / "raw.txt"
REVIEWS, HELD_REVIEWS = DATA / "zh_reviews" / "train.tsv", DATA / "zh_reviews" / "dev.tsv"


def review_texts(path, limit=None):
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [r.split("\t")[0] for r in rows][:limit]


@pytest.fixture(scope="module")
def zh(tmp_path_factory):
    """The vocabulary of the issue: raw.txt plus the reviews' text column, measured on the held-out reviews."""
    need_shared()
    out = tmp_path_factory.mktemp("zh-tok")
    return api.train_tokenizer([RAW, REVIEWS], out, family="bert", held_out=HELD_REVIEWS)


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
