"""Output files of embed, masks and draw: a file the user already has is replaced only with --overwrite (a link to
one too), masks writes JSON lines to a .jsonl name only, and an input without text writes nothing."""

import json

import numpy as np
import pytest
from conftest import listing, refused, run, write

from bertscope import api
from bertscope.errors import DataError, OutputError


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return tiny_folder




# ---- embed ---------------------------------------------------------------------------------------------------------


def test_embed_refuses_an_existing_file_and_overwrite_replaces_it(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "hello world\nsecond text\n")
    mine = write(tmp_path, "mine.npy", "my earlier embeddings")
    refused(run("embed", tiny, texts, "--out", mine), "--out", "mine.npy", "already exists", "--overwrite")
    assert mine.read_text() == "my earlier embeddings"
    r = run("embed", tiny, texts, "--out", mine, "--overwrite")
    assert r.exit_code == 0, r.output
    assert np.load(mine).shape == (2, 64)
    assert listing(tmp_path) == ["mine.npy", "t.txt"]


def test_embed_refuses_an_existing_file_before_loading_the_model(tmp_path):
    texts = write(tmp_path, "t.txt", "hello\n")
    mine = write(tmp_path, "mine.jsonl", "mine\n")
    refused(run("embed", tmp_path / "no-such-model", texts, "--out", mine), "already exists", "--overwrite")
    assert mine.read_text() == "mine\n"


def test_embed_does_not_replace_a_link_without_overwrite(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "hello world\n")
    target = write(tmp_path, "target.jsonl", "kept\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target.name)
    refused(run("embed", tiny, texts, "--out", link), "link.jsonl", "already exists", "--overwrite")
    assert link.is_symlink() and target.read_text() == "kept\n"
    r = run("embed", tiny, texts, "--out", link, "--overwrite")       # through the link or in its place: both fine
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in link.read_text().splitlines()]
    assert [row["text"] for row in rows] == ["hello world"] and len(rows[0]["embedding"]) == 64
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to("nowhere.jsonl")                               # a link to nothing is the user's too
    refused(run("embed", tiny, texts, "--out", dangling), "dangling.jsonl", "already exists")
    assert dangling.is_symlink()


def test_api_embed_refuses_an_existing_file_unless_overwrite(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "hello world\n")
    mine = write(tmp_path, "e.jsonl", "mine\n")
    loaded = api.load(tiny, head="base")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        api.embed(loaded, texts, mine)
    assert mine.read_text() == "mine\n"
    r = api.embed(loaded, texts, mine, overwrite=True)
    assert r["texts"] == 1 and json.loads(mine.read_text())["text"] == "hello world"


# ---- masks ---------------------------------------------------------------------------------------------------------


def test_masks_run_twice_refuses_and_overwrite_replaces(tiny, tmp_path):
    corpus = write(tmp_path, "corpus.txt", "a line of text\nanother line\n")
    out = tmp_path / "m.jsonl"
    assert run("masks", corpus, "--tokenizer", tiny, "--out", out).exit_code == 0
    out.write_text("my own masks\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", out), "--out", "m.jsonl", "already exists",
            "--overwrite")
    assert out.read_text() == "my own masks\n"
    r = run("masks", corpus, "--tokenizer", tiny, "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 2]


def test_api_masks_refuses_an_existing_file_unless_overwrite(tiny, tmp_path):
    corpus = write(tmp_path, "corpus.txt", "a line of text\n")
    out = write(tmp_path, "m.jsonl", "mine\n")
    with pytest.raises(OutputError, match="already exists"):
        api.masks(corpus, out, tokenizer=tiny)
    assert out.read_text() == "mine\n"
    assert api.masks(corpus, out, tokenizer=tiny, overwrite=True)["lines"] == 1
    assert json.loads(out.read_text())["line"] == 1


@pytest.mark.parametrize("name", ["mkx.npy", "m.json", "masks"])
def test_masks_writes_json_lines_to_a_jsonl_name_only(tiny, tmp_path, name):
    corpus = write(tmp_path, "corpus.txt", "a line of text\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", tmp_path / name), f"--out {tmp_path / name}",
            "JSON lines", ".jsonl")
    assert listing(tmp_path) == ["corpus.txt"]
    existing = write(tmp_path, name, "mine")                              # not even with --overwrite
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", existing, "--overwrite"), "JSON lines")
    assert existing.read_text() == "mine"


def test_a_refused_run_leaves_no_folder_it_would_have_made(tiny, tmp_path):
    corpus = write(tmp_path, "corpus.txt", "a line of text\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", tmp_path / "new" / "deeper" / "m.npy"), "JSON lines")
    empty = write(tmp_path, "empty.txt", "")                               # refused after the output check
    refused(run("masks", empty, "--tokenizer", tiny, "--out", tmp_path / "new" / "m.jsonl"), "no texts found")
    refused(run("embed", tiny, empty, "--out", tmp_path / "new" / "e.npy"), "empty.txt")
    assert listing(tmp_path) == ["corpus.txt", "empty.txt"]
    assert run("masks", corpus, "--tokenizer", tiny, "--out", tmp_path / "new" / "deeper" / "m.jsonl").exit_code == 0
    assert (tmp_path / "new" / "deeper" / "m.jsonl").read_text().count("\n") == 1     # made when it is written


@pytest.mark.parametrize("text,why", [("", "it is empty"), ("\n  \n\t\n", "only blank lines"),
                                      ("\x01\u200b\n", "no line gives a token")])
def test_masks_of_an_input_without_text_is_refused_and_writes_nothing(tiny, tmp_path, text, why):
    corpus = write(tmp_path, "corpus.txt", text)
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", tmp_path / "m.jsonl"), "corpus.txt: no texts found",
            why)
    assert listing(tmp_path) == ["corpus.txt"]                            # no output, no temporary file
    mine = write(tmp_path, "mine.jsonl", "mine\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", mine, "--overwrite"), "no texts found")
    assert mine.read_text() == "mine\n"


def test_masks_of_empty_standard_input_is_refused(tiny, tmp_path):
    out = tmp_path / "m.jsonl"
    refused(run("masks", "-", "--tokenizer", tiny, "--out", out, input=""), "<stdin>: no texts found")
    assert listing(tmp_path) == []
    with pytest.raises(DataError, match="corpus.txt: no texts found"):
        api.masks(write(tmp_path, "corpus.txt", "\n"), out, tokenizer=tiny)
    assert listing(tmp_path) == ["corpus.txt"]


# ---- draw ----------------------------------------------------------------------------------------------------------


def test_draw_refuses_an_existing_file_and_overwrite_replaces_it(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    mine = write(tmp_path, "mine.svg", "my own drawing")
    refused(run("draw", tiny, mine), "OUT", "mine.svg", "already exists", "--overwrite")
    assert mine.read_text() == "my own drawing"
    r = run("draw", tiny, mine, "--overwrite", "--length", "8")
    assert r.exit_code == 0, r.output
    assert mine.read_text().startswith("<?xml") and listing(tmp_path) == ["mine.svg"]
