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


# ---- nothing of the user's is lost (a hunt of output folders) ------------------------------------------------------

@pytest.fixture
def rows(tmp_path):
    from conftest import DATA, need_shared
    need_shared()
    lines = (DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    return write(tmp_path, "t.tsv", "".join(lines[:41]))


def test_a_run_refused_by_a_live_lock_removes_nothing_of_the_folder(tiny, rows, tmp_path):
    """Another run made the folder and holds its lock: the refused one leaves the folder as it is (it used to
    remove it when the other had made it a moment before)."""
    import os
    import socket
    out = tmp_path / "race"
    out.mkdir()
    (out / ".bertscope.lock").write_text(f"{os.getppid()} {socket.gethostname()}\n")       # alive
    (out / "run.json").write_text("{}")
    refused(run("finetune", tiny, "--train", rows, "--out", out, "--max-steps", "1", "--overwrite"), "is in use")
    assert listing(out) == [".bertscope.lock", "run.json"]
    # a folder that existed is left whole although this process found it empty of a run of its own
    (out / "run.json").unlink()
    refused(run("finetune", tiny, "--train", rows, "--out", out, "--max-steps", "1"), "is in use", "remove")
    assert listing(out) == [".bertscope.lock"]


def test_overwrite_never_clears_a_folder_holding_what_the_run_reads(tiny, rows, tmp_path):
    import shutil
    out = tmp_path / "k"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "trainer_state.pt").write_bytes(b"")                 # a run's checkpoint folder
    shutil.copytree(tiny, out / "checkpoint" / "start")                        # the model it starts from, in it
    refused(run("finetune", out / "checkpoint" / "start", "--train", rows, "--out", out, "--max-steps", "1",
                "--overwrite"), "holds the model this run starts from")
    inside = write(out / "checkpoint", "train.tsv", rows.read_text())           # its training file, in it
    refused(run("finetune", tiny, "--train", inside, "--out", out, "--max-steps", "1", "--overwrite"),
            "which this command reads, in the checkpoint folder a training run replaces")
    refused(run("finetune", tiny, "--train", rows, "--tokenizer", out / "checkpoint" / "start", "--out", out,
                "--max-steps", "1", "--overwrite"), "in the checkpoint folder a training run replaces")
    assert (out / "checkpoint" / "start" / "model.safetensors").exists() and inside.exists()
    # elsewhere in the folder nothing is cleared, so a model and data there are read as they are
    beside = tmp_path / "proj"
    shutil.copytree(tiny, beside / "base")
    data = write(beside, "data.tsv", rows.read_text())
    r = run("finetune", beside / "base", "--train", data, "--out", beside, "--max-steps", "1", "--batch-size", "8")
    assert r.exit_code == 0, r.output
    assert (beside / "base" / "model.safetensors").exists() and data.read_text() == rows.read_text()


def test_a_checkpoint_folder_bertscope_did_not_write_is_never_cleared(tiny, rows, tmp_path):
    out = tmp_path / "proj"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "important.db").write_text("data")
    for extra in ((), ("--overwrite",)):
        refused(run("finetune", tiny, "--train", rows, "--out", out, "--max-steps", "1", *extra),
                "which bertscope did not write")
    assert (out / "checkpoint" / "important.db").read_text() == "data"


def test_a_tokenizer_is_not_trained_into_a_models_folder_and_its_own_save_keeps_its_vocabulary(tiny, tmp_path):
    import shutil

    import bertscope
    corpus = write(tmp_path, "c.txt", "".join(f"the cat sat on mat number {i}\n" for i in range(60)))
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    before = (model / "tokenizer.json").read_bytes()
    refused(run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "200", "--out", model,
                "--overwrite"), "holds a model", "wrong rows")
    assert (model / "tokenizer.json").read_bytes() == before
    (model / "vocab.txt").write_text((model / "vocab.txt").read_text() if (model / "vocab.txt").exists() else
                                     "\n".join(bertscope.load_tokenizer(model).backend.get_vocab()))
    bertscope.load_tokenizer(model).save(model)                                  # into its own folder
    assert (model / "vocab.txt").exists()


def test_weight_shards_count_as_a_model_in_the_folder(tiny, tmp_path):
    import bertscope
    out = tmp_path / "sh"
    out.mkdir()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(OutputError, match="already holds a model .*model-00001-of-00002.safetensors"):
        bertscope.save_pretrained(bertscope.from_pretrained(tiny), out)
    assert (out / "model-00001-of-00002.safetensors").exists()


def test_masks_never_writes_over_its_words_file_or_an_input_behind_a_link(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "the cat sat\n")
    words = write(tmp_path, "w.jsonl", "the cat sat\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--whole-word", f"words:{words}", "--out", words,
                "--overwrite"), "w.jsonl")
    assert words.read_text() == "the cat sat\n"
    folder = tmp_path / "tk"
    folder.mkdir()
    vocab = write(folder, "vocab.txt", "".join(f"word{i} the cat\n" for i in range(30)))
    (tmp_path / "link.txt").symlink_to(vocab)
    refused(run("tokenizer", "train", tmp_path / "link.txt", "--family", "bert", "--vocab-size", "100", "--out",
                folder, "--overwrite"), "which this command reads")
    assert vocab.read_text().startswith("word0 the cat")


def test_a_write_the_system_refuses_midway_is_one_line_and_leaves_nothing(tiny, rows, tmp_path):
    """A file size limit (as a full disk) stops safetensors inside its write: one message naming the file."""
    import subprocess
    import sys
    out = tmp_path / "full"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000)); "
            "from bertscope.cli import main; sys.argv = ['bertscope'] + sys.argv[1:]; main()")
    r = subprocess.run([sys.executable, "-c", code, "finetune", str(tiny), "--train", str(rows), "--out", str(out),
                        "--max-steps", "1", "--batch-size", "8"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "model.safetensors: could not be written" in r.stderr and "file size limit" in r.stderr
    assert not out.exists()                                          # made for this run, nothing saved: removed


def test_a_dangling_link_as_out_is_named_before_anything_runs(tiny, rows, tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    refused(run("finetune", tiny, "--train", rows, "--out", tmp_path / "gone", "--max-steps", "1"),
            "is a link to", "which does not exist")


def test_api_tokenizer_save_refuses_a_models_folder_of_another_vocabulary(tiny, tmp_path):
    import shutil

    import bertscope
    from bertscope.errors import TokenizerError
    corpus = write(tmp_path, "c.txt", "".join(f"the cat sat on mat number {i}\n" for i in range(60)))
    other = bertscope.api.train_tokenizer([corpus], tmp_path / "tok", family="bert", vocab_size=200).tokenizer
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    before = (model / "tokenizer.json").read_bytes()
    with pytest.raises(TokenizerError, match="holds a model whose tokenizer has another vocabulary"):
        other.save(model)
    assert (model / "tokenizer.json").read_bytes() == before
    bertscope.load_tokenizer(tiny).save(model)                       # its own vocabulary: written again
    other.save(model, overwrite=True)                                # asked for
    assert bertscope.load_tokenizer(model).vocab_size == other.vocab_size


def test_overwrite_with_a_model_of_another_vocabulary_replaces_the_run_and_its_tokenizer(tiny, rows, tmp_path):
    import bertscope
    corpus = write(tmp_path, "c.txt", rows.read_text())
    tok = bertscope.api.train_tokenizer([corpus], tmp_path / "tok", family="bert", vocab_size=300).tokenizer
    other = tmp_path / "other"
    bertscope.save_pretrained(bertscope.Model(bertscope.Config(
        family="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128)), other)
    tok.save(other)
    out = tmp_path / "run"
    assert run("finetune", tiny, "--train", rows, "--out", out, "--max-steps", "1", "--batch-size", "8").exit_code == 0
    r = run("finetune", other, "--train", rows, "--out", out, "--max-steps", "1", "--batch-size", "8", "--overwrite")
    assert r.exit_code == 0, r.output
    assert bertscope.load_tokenizer(out).vocab_size == tok.vocab_size
    assert bertscope.api.load(out).model.config.vocab_size == tok.vocab_size
