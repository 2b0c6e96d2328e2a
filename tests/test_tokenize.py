"""Tokenizers from tokenizer.json, WordPiece vocab.txt and byte-level BPE vocab.json + merges.txt, with the
family's pair template, padding, truncation and word ids."""

import json
import shutil

import pytest
import torch
from conftest import DATA, MINILM

import bertscope
from bertscope.tokenize import TokenizerError


@pytest.fixture(scope="module")
def tok():
    from conftest import need_shared
    need_shared()
    return bertscope.load_tokenizer(MINILM)


def test_bert_pair_template_and_segments(tok):
    b = tok(["the cat sat"], ["on the mat"])
    ids = b["input_ids"][0].tolist()
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2 and ids[-1] == tok.sep_token_id
    first_sep = ids.index(tok.sep_token_id)
    assert b["token_type_ids"][0].tolist() == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert tok.decode(ids) == "the cat sat on the mat"


def test_padding_truncation_and_attention_mask(tok):
    b = tok(["short", "a much longer sentence with many more words in it"], max_length=6)
    assert b["input_ids"].shape == (2, 6)
    assert b["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert b["input_ids"][0, 3:].tolist() == [tok.pad_token_id] * 3
    assert b["input_ids"][1, -1] == tok.sep_token_id  # truncated, still closed by [SEP]
    fixed = tok(["short"], padding="max_length", max_length=10)
    assert fixed["input_ids"].shape == (1, 10)
    lists = tok(["short", "longer one"], padding=False, return_tensors=None)
    assert [len(r) for r in lists["input_ids"]] == [3, 4]


def test_padding_options_that_cannot_hold_are_named(tok):
    from bertscope.errors import UsageError
    long = "a much longer sentence with many more words in it"
    kept = tok([long, "short"], padding="max_length", max_length=20, truncation=False)
    assert kept["input_ids"].shape == (2, 20)               # fits: padded to max_length, nothing cut
    with pytest.raises(UsageError, match=r"text 0 has 12 tokens, more than max_length=6 .* truncation=False"):
        tok([long, "short"], padding="max_length", max_length=6, truncation=False)
    assert tok([long], padding="max_length", max_length=6)["input_ids"].shape == (1, 6)
    with pytest.raises(UsageError, match=r"padding='max-length': use True or 'longest'"):
        tok(["short"], padding="max-length")
    with pytest.raises(UsageError, match=r"return_tensors='np': bertscope returns torch tensors"):
        tok(["short"], return_tensors="np")
    assert tok(["short", long], padding="do_not_pad", return_tensors=None)["input_ids"][1][-1] == tok.sep_token_id


def test_default_max_length_is_the_model_position_limit(tok):
    assert tok.max_length == 512
    b = tok(["word " * 2000])
    assert b["input_ids"].shape == (1, 512)


def test_word_ids_group_subword_pieces(tok):
    b = tok(["unbelievably tokenization"], return_word_ids=True)
    pieces = tok.tokenize("unbelievably tokenization")
    assert len(pieces) > 2  # split into WordPiece continuations
    words = b["word_ids"][0].tolist()
    assert words[0] == -1 and words[-1] == -1
    assert sorted(set(words[1:-1])) == [0, 1]


def test_vocab_txt_alone_gives_the_same_ids(tok, tmp_path):
    shutil.copy(MINILM / "vocab.txt", tmp_path / "vocab.txt")
    wp = bertscope.load_tokenizer(tmp_path)
    lines = [l.split("\t")[0] for l in (DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:200]]
    lines.append("Café naïve RÉSUMÉ — 東京 emoji 🙂 and    spaces")
    a, b = tok(lines), wp(lines)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(wp(lines[:3], lines[3:6])["token_type_ids"], tok(lines[:3], lines[3:6])["token_type_ids"])


def test_saved_tokenizer_reloads_identically(tok, tmp_path):
    tok.save(tmp_path)
    again = bertscope.load_tokenizer(tmp_path, family="bert")
    texts = ["Hello there, General Kenobi!", "bertscope explains dimensions"]
    assert torch.equal(tok(texts)["input_ids"], again(texts)["input_ids"])


def test_a_saved_tokenizer_keeps_the_folders_settings_and_feeds_the_reference_segments(tmp_path):
    """The reference reads tokenizer_config.json: a saved tokenizer keeps what the source folder set there (its
    length, padding side, added special tokens), names token_type_ids among the model's inputs (without them a
    PreTrainedTokenizerFast feeds BERT pairs as one segment), and tokenizer.json keeps its baked-in padding."""
    transformers = pytest.importorskip("transformers")
    from conftest import need_shared
    need_shared()
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(MINILM / "tokenizer.json", source)
    settings = json.loads((MINILM / "tokenizer_config.json").read_text())
    settings.update(model_max_length=256, padding_side="left", additional_special_tokens=["[unused1]"],
                    auto_map={"AutoTokenizer": ["x.Y", None]})
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    bertscope.load_tokenizer(source, family="bert").save(tmp_path / "saved")
    before = transformers.AutoTokenizer.from_pretrained(MINILM)
    after = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    pair = ("a good film", "not bad at all")
    assert after(*pair)["token_type_ids"] == before(*pair)["token_type_ids"] == [0] * 5 + [1] * 5
    assert (after.model_max_length, after.padding_side) == (256, "left")
    assert "[unused1]" in after.all_special_tokens
    assert after(["a", "a b c"], padding=True)["input_ids"][0][:2] == [0, 0]          # padded on the left
    written = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert "auto_map" not in written and written["tokenizer_class"] == "PreTrainedTokenizerFast"
    baked = json.loads((MINILM / "tokenizer.json").read_text())
    saved = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    assert saved["padding"] == baked["padding"] and saved["truncation"]["max_length"] == 128


def test_a_folder_with_a_sentencepiece_model_alone_is_told_how_to_write_tokenizer_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "albert"}))
    (tmp_path / "spiece.model").write_bytes(b"")
    with pytest.raises(TokenizerError, match=r"spiece.model \(SentencePiece\).*save_pretrained"):
        bertscope.load_tokenizer(tmp_path)


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    """A byte-level BPE vocabulary trained on WikiText-2 and written as vocab.json + merges.txt, RoBERTa style."""
    from conftest import need_shared
    need_shared()
    from tokenizers import ByteLevelBPETokenizer
    folder = tmp_path_factory.mktemp("bpe")
    trainer = ByteLevelBPETokenizer()
    trainer.train([str(DATA / "wikitext2" / "valid.txt")], vocab_size=2000, min_frequency=2,
                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(folder))
    return folder


def test_byte_level_bpe_matches_reference_tokenizer(bpe_folder):
    transformers = pytest.importorskip("transformers")
    ours = bertscope.load_tokenizer(bpe_folder)
    assert ours.family.name == "roberta" and ours.pad_token_id == 1 and ours.mask_token == "<mask>"
    theirs = transformers.RobertaTokenizer(vocab=str(bpe_folder / "vocab.json"), merges=str(bpe_folder / "merges.txt"))
    texts = [l for l in (DATA / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines() if l.strip()][:100]
    a = ours(texts, max_length=128)
    b = theirs(texts, max_length=128, truncation=True, padding=True, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    pair_a = ours(texts[:4], texts[4:8])["input_ids"]
    pair_b = theirs(texts[:4], texts[4:8], padding=True, truncation=True, max_length=512,
                    return_tensors="pt")["input_ids"]
    assert torch.equal(pair_a, pair_b)  # <s> a </s></s> b </s>


def test_roberta_pairs_use_one_segment(bpe_folder):
    ours = bertscope.load_tokenizer(bpe_folder)
    b = ours(["first part"], ["second part"])
    ids = b["input_ids"][0].tolist()
    assert ids[0] == 0 and ids[-1] == 2 and [2, 2] == ids[ids.index(2):ids.index(2) + 2]
    assert b["token_type_ids"].eq(0).all()
    mask_id = ours.mask_token_id
    assert mask_id in ours.encode("The <mask> sat.")


def test_folder_without_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TokenizerError, match="no tokenizer found; expected tokenizer.json, vocab.txt"):
        bertscope.load_tokenizer(tmp_path)


def test_broken_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerError, match="tokenizer.json: cannot be read"):
        bertscope.load_tokenizer(tmp_path)


def test_a_roberta_tokenizer_keeps_case_unless_asked_to_lower_it(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Current Designs of the Old Town\nthe current design of a new town\n" * 30, encoding="utf-8")
    from bertscope import api
    kept = api.train_tokenizer([corpus], tmp_path / "kept", family="roberta", vocab_size=300).tokenizer
    lowered = api.train_tokenizer([corpus], tmp_path / "low", family="roberta", vocab_size=300,
                                  lowercase=True).tokenizer
    assert "".join(kept.tokenize("Current Town")).replace("Ġ", " ") == "Current Town"
    assert "".join(lowered.tokenize("Current Town")).replace("Ġ", " ") == "current town"
    again = bertscope.load_tokenizer(tmp_path / "low")                 # the step is in its tokenizer.json
    assert again.tokenize("Current Town") == lowered.tokenize("Current Town")
    for folder, tok in (("kept", kept), ("low", lowered)):              # and in tokenizer_config.json, for
        (tmp_path / folder / "tokenizer.json").unlink()                 # a reader of vocab.json + merges.txt alone
        files = bertscope.load_tokenizer(tmp_path / folder)
        assert files.tokenize("Current Town") == tok.tokenize("Current Town"), folder
    with pytest.raises(bertscope.TokenizerError, match="holds a RoBERTa tokenizer .* but a BERT one was asked for"):
        bertscope.load_tokenizer(tmp_path / "low", family="bert")


def test_a_tokenizer_trained_over_another_leaves_none_of_its_files(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Current Designs of the Old Town\nthe current design of a new town\n" * 30, encoding="utf-8")
    from bertscope import api
    out = tmp_path / "tok"
    api.train_tokenizer([corpus], out, family="bert", vocab_size=300)
    assert (out / "vocab.txt").exists()
    (out / "special_tokens_map.json").write_text('{"cls_token": "[CLS]"}', encoding="utf-8")   # as HF writes one
    api.train_tokenizer([corpus], out, family="roberta", vocab_size=300, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "tokenizer.json", "tokenizer_config.json",
                                                     "vocab.json"]
    (out / "tokenizer.json").unlink()                                  # the classic files are the RoBERTa ones
    assert bertscope.load_tokenizer(out).family.name == "roberta"



def test_a_vocab_txt_that_is_not_text_and_a_model_type_that_is_not_a_name_are_said(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\xfe token\n")
    with pytest.raises(TokenizerError, match="vocab.txt: not UTF-8 text"):
        bertscope.load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    (tmp_path / "vocab.txt").mkdir()
    with pytest.raises(TokenizerError, match="vocab.txt: is a folder"):
        bertscope.load_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": ["bert"]}', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"model_type \['bert'\] .* is not a family name"):
        bertscope.load_tokenizer(tmp_path)
    with pytest.raises(bertscope.ConfigError, match=r"model_type \['bert'\] is not supported"):
        bertscope.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "distilbert", "dim": 768}', encoding="utf-8")
    with pytest.raises(bertscope.ConfigError, match="model_type 'distilbert' is not supported"):
        bertscope.from_pretrained(tmp_path)


def test_a_saved_tokenizer_writes_a_real_length_and_the_segments_a_bert_pair_needs(tmp_path):
    """A placeholder model_max_length (1e30) is not written back, a length asked for is, and a source whose
    model_input_names leave token_type_ids out (or hold junk) still feeds BERT pairs their segments."""
    from conftest import need_shared
    need_shared()
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(MINILM / "tokenizer.json", source)
    (source / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 1000000000000000019884624838656, "model_input_names": ["input_ids", "attention_mask"]}))
    bertscope.load_tokenizer(source, family="bert").save(tmp_path / "a")
    written = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert written["model_max_length"] == 512
    assert written["model_input_names"] == ["input_ids", "token_type_ids", "attention_mask"]
    bertscope.load_tokenizer(source, family="bert", max_length=64).save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "tokenizer_config.json").read_text())["model_max_length"] == 64
    (source / "tokenizer_config.json").write_text(json.dumps({"model_input_names": ["input_ids", 3]}))
    bertscope.load_tokenizer(source, family="bert").save(tmp_path / "c")
    written = json.loads((tmp_path / "c" / "tokenizer_config.json").read_text())
    assert written["model_input_names"] == ["input_ids", "token_type_ids", "attention_mask"]
