"""Every mistake a user can make, run through the CLI as they would run it: exit code 2, one line naming the file,
line, field or option and what was expected, no traceback, and nothing of theirs changed."""

import json
import re
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from conftest import DATA, MINILM, TINY, listing, need_shared, refused, run, write
from typer.testing import CliRunner

import bertscope
from bertscope import api  # noqa: F401  (bertscope.api below)
from bertscope.cli import app


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return tiny_folder


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sst(tmp_path):
    need_shared()
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    p = tmp_path / "train.tsv"
    p.write_text("".join(lines[:97]), encoding="utf-8")
    return p




# ---- nothing of the user's is lost ---------------------------------------------------------------------------------


def test_out_onto_a_model_folder_is_refused_and_the_folder_is_untouched(tiny, sst, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "pytorch_model.bin").write_bytes(b"old weights")
    before = snapshot(other)
    refused(run("finetune", tiny, "--train", sst, "--out", other), "already holds a model", "--overwrite")
    assert snapshot(other) == before


def test_out_onto_the_source_model_is_refused(tiny, sst):
    before = snapshot(tiny)
    refused(run("finetune", tiny, "--train", sst, "--out", tiny), "is the folder of the model this run starts from")
    assert snapshot(tiny) == before


def test_out_that_is_a_file_is_refused(tiny, sst, tmp_path):
    f = write(tmp_path, "notes.txt", "mine")
    refused(run("finetune", tiny, "--train", sst, "--out", f), "is a file")
    assert f.read_text() == "mine"


def test_a_second_run_on_the_same_out_refuses_while_the_first_holds_it(tiny, sst, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".bertscope.lock").write_text(f"{os.getpid()} {os.uname().nodename}\n")   # a live process holds it
    refused(run("finetune", tiny, "--train", sst, "--out", out, "--epochs", "1"), "in use by another bertscope")
    (out / ".bertscope.lock").write_text(f"999999999 {os.uname().nodename}\n")       # a dead one does not
    r = run("finetune", tiny, "--train", sst, "--out", out, "--epochs", "1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / ".bertscope.lock").exists()


def test_files_get_the_users_umask_and_no_checkpoint_is_left(tiny, sst, tmp_path):
    old = os.umask(0o022)
    try:
        r = run("finetune", tiny, "--train", sst, "--out", tmp_path / "o", "--epochs", "1")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert not (tmp_path / "o" / "checkpoint").exists()
    r = run("finetune", tiny, "--train", sst, "--out", tmp_path / "k", "--epochs", "1", "--keep-checkpoint")
    assert r.exit_code == 0 and (tmp_path / "k" / "checkpoint" / "trainer_state.pt").exists()


def test_a_write_that_fails_leaves_the_previous_file_and_no_half_file(tmp_path):
    import errno

    from bertscope.errors import OutputError
    from bertscope.io import StreamFile, atomic_write
    target = write(tmp_path, "emb.jsonl", "previous\n")

    def full_disk(p):
        open(p, "w").write("half of it")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutputError, match="the disk is full"):
        atomic_write(target, full_disk)
    f = StreamFile(target)
    f.write("half")
    f.discard()
    assert target.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["emb.jsonl"]


def test_embed_checks_the_output_path_before_any_work(tiny, tmp_path):
    blocker = write(tmp_path, "file", "x")
    texts = write(tmp_path, "t.txt", "hello\n")
    refused(run("embed", tiny, texts, "--out", blocker / "e.npy"), "is a file, so no folder can be made there")
    refused(run("embed", tiny, texts, "--out", tmp_path / "e.xml"), "--out", ".npy or .jsonl")


# ---- nothing is silently wrong -------------------------------------------------------------------------------------


def test_labels_1_and_1_point_0_are_one_class(tiny, tmp_path):
    p = write(tmp_path, "t.jsonl", "".join(json.dumps({"text": f"text {i}", "label": x}) + "\n"
                                           for i, x in enumerate([1, 1.0, "1", 0, "0.0", 0] * 6)))
    r = run("finetune", tiny, "--train", p, "--out", tmp_path / "o", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert bertscope.Config.from_json(tmp_path / "o").labels == ["0", "1"]


def test_a_real_number_label_is_refused_as_a_class_and_guessed_as_regression(tiny, tmp_path):
    p = write(tmp_path, "t.tsv", "text\tlabel\na\t0.37\nb\t1\n")
    refused(run("finetune", tiny, "--train", p, "--out", tmp_path / "o", "--task", "classification"),
            "t.tsv line 2", "--task regression")
    r = run("finetune", tiny, "--train", p, "--out", tmp_path / "r", "--epochs", "1")
    assert r.exit_code == 0 and "--task regression (the 'label' column holds real numbers" in r.output
    assert bertscope.Config.from_json(tmp_path / "r").problem_type == "regression"


def test_a_single_class_training_file_is_refused(tiny, tmp_path):
    p = write(tmp_path, "t.tsv", "text\tlabel\na\tpos\nb\tpos\n")
    refused(run("finetune", tiny, "--train", p, "--out", tmp_path / "o"), "every row has label 'pos'",
            "at least two classes")
    assert not (tmp_path / "o").exists()


def test_refinetuning_keeps_the_heads_label_order_and_refuses_new_labels(tiny, tmp_path):
    first = write(tmp_path, "a.tsv", "text\tlabel\n" + "good\tpos\nbad\tneg\n" * 8)
    assert run("finetune", tiny, "--train", first, "--out", tmp_path / "a", "--epochs", "1").exit_code == 0
    assert bertscope.Config.from_json(tmp_path / "a").labels == ["neg", "pos"]
    # a file whose labels would sort differently on their own keeps the head's order
    second = write(tmp_path, "b.tsv", "text\tlabel\n" + "fine\tpos\n" * 8 + "awful\tneg\n")
    assert run("finetune", tmp_path / "a", "--train", second, "--out", tmp_path / "b", "--epochs", "1").exit_code == 0
    assert bertscope.Config.from_json(tmp_path / "b").labels == ["neg", "pos"]
    third = write(tmp_path, "c.tsv", "text\tlabel\n" + "meh\tneutral\nok\tpos\n" * 4)
    refused(run("finetune", tmp_path / "a", "--train", third, "--out", tmp_path / "c"), "c.tsv line 2",
            "'neutral' is not one of this classifier's classes", "--new-head")
    r = run("finetune", tmp_path / "a", "--train", third, "--out", tmp_path / "c", "--new-head", "--epochs", "1")
    assert r.exit_code == 0 and bertscope.Config.from_json(tmp_path / "c").labels == ["neutral", "pos"]


@pytest.mark.parametrize("option,value", [("--batch-size", "0"), ("--batch-size", "-4"), ("--epochs", "0"),
                                          ("--max-steps", "0"), ("--lr", "0"), ("--lr", "-1"), ("--warmup", "-1"),
                                          ("--save-every", "-5"), ("--bucket", "0"), ("--threads", "-1"),
                                          ("--max-length", "0"), ("--max-length", "-5"), ("--max-length", "1000")])
def test_finetune_option_out_of_range(tiny, sst, tmp_path, option, value):
    text = refused(run("finetune", tiny, "--train", sst, "--out", tmp_path / "o", option, value), option)
    assert value in text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command,option,value", [("predict", "--chunk", "0"), ("embed", "--chunk", "0"),
                                                  ("predict", "--batch-size", "0"), ("embed", "--max-length", "0"),
                                                  ("predict", "--format", "xml"), ("evaluate", "--format", "xml")])
def test_run_option_out_of_range(tiny, tmp_path, command, option, value):
    texts = write(tmp_path, "t.tsv", "text\tlabel\nhello\t1\nbye\t0\n")
    model = tmp_path / "cls"
    assert run("finetune", tiny, "--train", texts, "--out", model, "--epochs", "1").exit_code == 0
    extra = ["--out", tmp_path / "e.npy"] if command == "embed" else []
    refused(run(command, model, texts, option, value, *extra), option, value)
    assert not (tmp_path / "e.npy").exists()


def test_texts_longer_than_the_limit_are_counted(tiny, tmp_path):
    p = write(tmp_path, "t.tsv", "text\tlabel\n" + "word " * 300 + "\t1\n" + "short\t0\n" * 3)
    r = run("finetune", tiny, "--train", p, "--out", tmp_path / "o", "--epochs", "1", "--max-length", "32")
    assert r.exit_code == 0 and "1 of 4 texts are longer than 32 tokens and were cut (by up to 270 tokens)" \
        in r.output, r.output


def test_a_quoted_newline_in_csv_is_one_field(tiny, tmp_path):
    from bertscope.data import read_examples
    p = write(tmp_path, "t.csv", 'text,label\n"first line\nsecond line, with a comma",pos\nplain,neg\n"unclosed,neg\n')
    with pytest.raises(bertscope.DataError, match="t.csv line 5: unexpected end of data; a field that opens a quote"):
        read_examples(p, skip_bad_rows=True)                     # the rest of the file cannot be read: no guessing
    ex = read_examples(write(tmp_path, "u.csv", 'text,label\n"first line\nsecond line, with a comma",pos\n'
                                                 'plain,neg\nonly one field\n"quoted ""word""",pos\n'),
                       skip_bad_rows=True)
    assert ex.texts == ["first line\nsecond line, with a comma", "plain", 'quoted "word"'] and ex.lines == [2, 4, 6]
    assert ex.skipped == [(5, "expected 2 comma-separated fields (text, label), found 1")]


def test_a_tokenizer_larger_than_the_vocabulary_is_caught_when_loaded(tmp_path):
    need_shared()
    folder = tmp_path / "m"
    for f in (TINY / "bert-cls").iterdir():
        (folder / f.name).parent.mkdir(exist_ok=True)
        (folder / f.name).write_bytes(f.read_bytes())
    bertscope.load_tokenizer(MINILM).save(folder)                 # 30522 tokens for a 1000-row vocabulary
    texts = write(tmp_path, "t.txt", "hello\n")
    refused(run("predict", folder, texts), "30522 tokens", "1000 rows")


def test_resume_refuses_new_settings_and_a_changed_file(tiny, sst, tmp_path, monkeypatch):
    import bertscope.kernels                           # a CPU where bf16 pays (where it does not, --bf16 is noted)
    monkeypatch.setattr(bertscope.kernels, "bf16_on_cpu", lambda: (True, ""))
    out = tmp_path / "o"
    r = bertscope.api.finetune(tiny, sst, out, epochs=2, save_every=2, stop_after=2, device="cpu")
    assert not r.finished
    refused(run("finetune", "--resume", out, "--lr", "1e-3", "--epochs", "5"), "--lr 0.001 (the run has 5e-05)",
            "--epochs 5 (the run has 2)", "may change only")
    refused(run("finetune", "--resume", out, "--bf16"), "--bf16 on (the run has off)")
    sst.write_text(sst.read_text() + "one more\t1\n")
    refused(run("finetune", "--resume", out), "changed since the run started")


def test_an_all_zero_attention_mask_row_is_refused():
    model = bertscope.from_config("bert-base", num_hidden_layers=1)
    with pytest.raises(bertscope.InputError, match="attention_mask row 1 is all zeros"):
        model(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    square = torch.ones(2, 4, 4)
    square[0, 2:] = 0                                                  # padding queries of a (B, L, L) mask: fine
    assert torch.isfinite(model(torch.ones(2, 4, dtype=torch.long), attention_mask=square).last_hidden_state).all()
    square[1] = 0                                                      # a whole sequence of them is not
    with pytest.raises(bertscope.InputError, match="attention_mask row 1 is all zeros"):
        model(torch.ones(2, 4, dtype=torch.long), attention_mask=square)


# ---- no traceback for a user mistake -------------------------------------------------------------------------------


def test_a_one_megabyte_field_and_a_byte_order_mark_are_read(tmp_path):
    from bertscope.data import read_examples
    big = "x" * 1_100_000
    ex = read_examples(write(tmp_path, "t.csv", b"\xef\xbb\xbftext,label\n" + f'"{big}",a\nb,c\n'.encode()))
    assert ex.texts == [big, "b"] and ex.labels == ["a", "c"]


def test_non_utf8_input_names_the_line_from_a_file_and_from_stdin(tiny, tmp_path):
    p = write(tmp_path, "t.txt", b"fine\ncaf\xe9\n")
    refused(run("embed", tiny, p, "--out", tmp_path / "e.npy"), "t.txt line 2: not valid UTF-8")
    r = CliRunner().invoke(app, ["embed", str(tiny), "-", "--out", str(tmp_path / "e.npy")], input=b"ok\n\xff\xfe\n")
    refused(r, "<stdin> line 2: not valid UTF-8")
    assert not (tmp_path / "e.npy").exists()


def test_a_folder_where_a_file_is_expected(tiny, tmp_path):
    refused(run("finetune", tiny, "--train", tmp_path, "--out", tmp_path / "o"), "is a folder; expected a file")


@pytest.mark.parametrize("key,value,words", [("layer_norm_eps", "abc", "layer_norm_eps must be a positive number"),
                                             ("hidden_dropout_prob", [0.1], "hidden_dropout_prob must be a number"),
                                             ("id2label", ["a", "b"], "id2label must be a mapping")])
def test_config_json_with_wrong_types(tmp_path, key, value, words):
    need_shared()
    folder = tmp_path / "m"
    folder.mkdir()
    cfg = json.loads((TINY / "bert-cls" / "config.json").read_text())
    cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes((TINY / "bert-cls" / "model.safetensors").read_bytes())
    refused(run("explain", folder), "config.json", words)


def test_finetune_of_a_folder_that_is_not_a_checkpoint(tmp_path, sst):
    (tmp_path / "empty").mkdir()
    refused(run("finetune", tmp_path / "empty", "--train", sst, "--out", tmp_path / "o"), "not a checkpoint folder")


def test_pretrain_with_an_absurd_size_or_an_unknown_family(tmp_path):
    need_shared()
    tok = tmp_path / "tok"
    assert run("tokenizer", "train", DATA / "wikitext2" / "valid.txt", "--family", "bert", "--vocab-size", "500",
               "--out", tok).exit_code == 0
    huge = json.loads((TINY / "bert" / "config.json").read_text())
    huge.update(hidden_size=65536, num_attention_heads=64, intermediate_size=262144, num_hidden_layers=96)
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    common = ["--corpus", DATA / "wikitext2" / "valid.txt", "--tokenizer", tok, "--out", tmp_path / "o"]
    refused(run("pretrain", "--family", "bert", "--config", tmp_path / "huge.json", *common), "GiB",
            "smaller --config")
    refused(run("pretrain", "--family", "bort", *common), "--family 'bort'", "bert, roberta, albert")
    assert not (tmp_path / "o").exists()


def test_export_without_the_extra_names_the_install_command(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    refused(run("export", "bert-base", tmp_path / "m.onnx"), "pip install 'bertscope[export]'")


@pytest.mark.kernels
def test_bf16_on_a_cpu_without_bf16_kernels_says_so_and_runs_fp32(tiny, tmp_path, monkeypatch):
    import bertscope.kernels as kernels
    monkeypatch.setattr(kernels, "_FACTS", {**kernels.cpu_facts(), "onednn_bf16": None})
    texts = write(tmp_path, "t.txt", "hello world\n")
    r = run("embed", tiny, texts, "--out", tmp_path / "e.npy", "--bf16")
    assert r.exit_code == 0 and "this CPU has no bf16 kernels" in r.output and "running in fp32" in r.output


def test_resume_of_a_run_stopped_before_its_first_checkpoint_says_to_start_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"kind": "finetune"}', encoding="utf-8")      # Ctrl-C while loading the model
    refused(run("finetune", "--resume", out), "stopped before its first checkpoint", "--overwrite")
    (out / "config.json").write_text("{}", encoding="utf-8")                   # a run that finished
    refused(run("finetune", "--resume", out), "this run finished")


# ---- found by a bad-input hunt (2026-12-04) ------------------------------------------------------------------------


def test_export_refuses_the_models_own_files_another_suffix_and_an_existing_file(tiny, tmp_path):
    before = snapshot(tiny)
    refused(run("export", tiny, tiny / "model.safetensors"), "OUT", ".onnx")
    assert snapshot(tiny) == before
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    (model / "earlier.onnx").write_text("an export kept with the model")
    refused(run("export", model, model / "earlier.onnx", "--overwrite"), "a file of", "a folder this command reads")
    assert (model / "earlier.onnx").read_text() == "an export kept with the model"
    mine = write(tmp_path, "mine.onnx", "my earlier export")
    refused(run("export", tiny, mine), "already exists", "--overwrite")
    assert mine.read_text() == "my earlier export"


def test_embed_and_masks_refuse_to_write_over_their_input(tiny, tmp_path):
    texts = write(tmp_path, "in.jsonl", '{"text": "a great film"}\n{"text": "bad"}\n')
    refused(run("embed", tiny, texts, "--out", texts), "which this command reads")
    link = tmp_path / "link.jsonl"
    link.symlink_to(texts)
    refused(run("embed", tiny, texts, "--out", link), "which this command reads")
    corpus = write(tmp_path, "corpus.txt", "a line of text\n")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", corpus), "which this command reads")
    refused(run("masks", corpus, "--tokenizer", tiny, "--out", tiny / "tokenizer.json"), "a file of")
    assert texts.read_text() == '{"text": "a great film"}\n{"text": "bad"}\n' and corpus.read_text() == \
        "a line of text\n"


def test_masks_at_the_shortest_length_allowed(tiny, tmp_path):
    corpus = write(tmp_path, "corpus.txt", "a line of several words that is longer than one token\n")
    r = run("masks", corpus, "--tokenizer", tiny, "--out", tmp_path / "m.jsonl", "--max-length", "3")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows and all(len(row["tokens"]) <= 3 for row in rows)


def test_a_loss_that_is_not_a_number_stops_training_before_the_weights(tiny, sst, tmp_path):
    out = tmp_path / "o"
    text = refused(run("finetune", tiny, "--train", sst, "--eval", sst, "--out", out, "--lr", "1e30",
                       "--epochs", "2", "--batch-size", "8"), "not a finite number", "--lr")
    assert "step " in text
    if (out / "model.safetensors").exists():                        # whatever was saved is from before it
        from safetensors.torch import load_file
        assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values())


@pytest.mark.parametrize("option", [("--text-column", "label"), ("--pair-column", "label"),
                                    ("--label-column", "sentence"), ("--pair-column", "sentence")])
def test_the_text_pair_and_label_columns_must_differ(tiny, sst, tmp_path, option):
    refused(run("finetune", tiny, "--train", sst, "--out", tmp_path / "o", *option), "columns must differ")


def test_json_lines_take_the_text_field_of_their_first_record(tiny, tmp_path):
    mixed = write(tmp_path, "mixed.jsonl", '{"sentence": "a great film"}\n{"text": "bad"}\n')
    refused(run("embed", tiny, mixed, "--out", tmp_path / "e.npy"), "line 2", "'sentence'")
    from bertscope.data import read_examples                         # a bad first record decides nothing
    rows = write(tmp_path, "rows.jsonl", '{"label": "a"}\n{"text": "hello", "label": "b"}\n{"text": "x", "label": "a"}\n')
    assert read_examples(rows, skip_bad_rows=True).texts == ["hello", "x"]


def test_word_tags_are_not_read_from_a_table(tiny, sst, tmp_path):
    refused(run("finetune", tiny, "--train", sst, "--task", "token-classification", "--out", tmp_path / "o"),
            "word tags are read from CoNLL")


def test_one_odd_tag_among_iob2_tags_is_named(tiny, tmp_path):
    conll = write(tmp_path, "t.conll", "John\tI-person\nlives\tO\n\nShe\tO\nsaw\t0\nNew\tB-loc\nYork\tI-loc\n")
    refused(run("finetune", tiny, "--train", conll, "--out", tmp_path / "o"), "line 1", "I-person")
    iobes = write(tmp_path, "e.conll", "John\tS-person\nlives\tO\n\nNew\tB-loc\nYork\tE-loc\n")
    refused(run("finetune", tiny, "--train", iobes, "--out", tmp_path / "o"), "IOBES")


def test_a_task_the_head_was_not_trained_for_is_refused(tiny, tmp_path):
    reg = write(tmp_path, "reg.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i / 3:.2f}\n" for i in range(8)))
    out = tmp_path / "reg"
    assert run("finetune", tiny, "--train", reg, "--out", out, "--max-steps", "1").exit_code == 0
    texts = write(tmp_path, "t.txt", "a great film\n")
    refused(run("predict", out, texts, "--task", "classification"), "fine-tuned for regression")
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "cls", "--max-steps", "1").exit_code == 0
    refused(run("evaluate", tmp_path / "cls", reg, "--task", "regression"), "fine-tuned for classification")


def test_tsv_predictions_keep_their_columns(tiny, tmp_path):
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "cls", "--max-steps", "1").exit_code == 0
    tabs = write(tmp_path, "tabs.jsonl", json.dumps({"text": "a\tgreat\nfilm \\ here"}) + "\n")
    r = run("predict", tmp_path / "cls", tabs)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.count("\t") >= 2]
    assert rows[-1].split("\t")[-1] == "a\\tgreat\\nfilm \\\\ here" and rows[-1].count("\t") == rows[0].count("\t")


def test_metrics_that_are_not_numbers_are_json_null(tiny, tmp_path):
    reg = write(tmp_path, "reg.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i / 3:.2f}\n" for i in range(8)))
    const = write(tmp_path, "const.tsv", "sentence\tlabel\ntext a\t1.0\ntext b\t1.0\n")
    out = tmp_path / "reg"
    r = run("finetune", tiny, "--train", reg, "--eval", const, "--out", out, "--epochs", "2")
    assert r.exit_code == 0, r.output
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))
    r = run("evaluate", out, const, "--format", "json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.output[r.output.index("{"):], parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert m["pearson"] is None


def test_resume_of_the_other_kind_of_run_and_of_a_cut_off_state(tiny, sst, tmp_path):
    out = tmp_path / "o"
    r = bertscope.api.finetune(tiny, sst, out, epochs=2, save_every=2, stop_after=2, device="cpu")
    assert not r.finished
    refused(run("pretrain", "--resume", out), "this is a finetune run", "bertscope finetune --resume")
    state = out / "checkpoint" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    refused(run("finetune", "--resume", out), "truncated or corrupt")


def test_a_corrupt_tokenizer_is_named_not_called_missing(tiny, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    (folder / "tokenizer.json").write_text('{"x":', encoding="utf-8")
    texts = write(tmp_path, "t.txt", "hello\n")
    refused(run("embed", folder, texts, "--out", tmp_path / "e.npy"), "tokenizer.json", "cannot be read")


def test_question_answering_defaults_fit_a_model_of_128_positions(tmp_path):
    need_shared()
    folder = tmp_path / "short"
    torch.manual_seed(0)
    bertscope.save_pretrained(bertscope.Model(bertscope.Config(
        family="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128)), folder)
    bertscope.load_tokenizer(MINILM).save(folder)
    context = "The Eiffel Tower is in Paris. It was built in 1889 by Gustave Eiffel. " * 12    # 2-4 windows
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Where is the tower?", "answers": [{"text": "Paris", "answer_start": 23}]}]}]}]}
    data = write(tmp_path, "squad.json", json.dumps(squad))
    r = run("finetune", folder, "--train", data, "--out", tmp_path / "qa", "--max-steps", "1")
    assert r.exit_code == 0, r.output                               # max length 128 and a stride of 42 by default
    refused(run("predict", tmp_path / "qa", data, "--doc-stride", "127"), "--doc-stride 127", "special tokens")


def test_check_data_says_what_finetune_will_refuse_and_nothing_else(tiny, tmp_path):
    need_shared()
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    r = run("check", TINY / "bert-cls", "--data", data)                 # a saved classifier of LABEL_0..2
    assert r.exit_code == 1 and "not among the model's classes" in r.output, r.output
    r = run("check", TINY / "bert", "--data", data)                     # any other head: a new classifier is made
    assert r.exit_code == 0 and "ok" in r.output, r.output
    r = run("check", TINY / "bert", "--data", data, "--num-labels", "1")   # a planned width: said as planned
    assert r.exit_code == 1 and "the data has 2 classes (neg, pos) but --num-labels 1 plans a classifier of 1 " \
        "output, and it needs one per class: plan --num-labels 2" in r.output and "--new-head" not in r.output, r.output
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "named", "--max-steps", "1").exit_code == 0
    # (a classifier with classes a and b)
    ints = write(tmp_path, "ints.tsv", "sentence\tlabel\nx\t0\ny\t1\n")
    r = run("check", tmp_path / "named", "--data", ints)
    assert r.exit_code == 1 and "not among the model's classes" in r.output, r.output
    assert run("finetune", tmp_path / "named", "--train", ints, "--out", tmp_path / "n2").exit_code == 2
    lists = write(tmp_path, "lists.jsonl", '{"sentence": "a b", "label": ["x", "y"]}\n')
    refused(run("evaluate", tmp_path / "named", lists), "lists.jsonl line 1: the label is a list ['x', 'y'], but "
            "classification reads one class a row", "a model fine-tuned with --task multi-label")


def test_a_refused_predict_leaves_no_header_behind(tiny, tmp_path):
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "cls", "--max-steps", "1").exit_code == 0
    r = refused(run("predict", tmp_path / "cls", cls, "--max-length", "0"), "--max-length 0")
    assert "label\tp_a" not in r
    r = run("predict", tmp_path / "cls", cls)
    assert r.exit_code == 0 and r.output.count("label\tp_a\tp_b\ttext") == 1, r.output


def test_options_that_would_do_nothing_are_refused(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "a great film\n")
    refused(run("embed", tiny, texts, "--out", tmp_path / "w.jsonl", "--level", "word", "--pooling", "cls"),
            "--pooling cls", "--level word")
    squad = write(tmp_path, "s.json", json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "The tower is in Paris.", "qas": [{"id": "q", "question": "Where?", "answers": [
            {"text": "Paris", "answer_start": 16}]}]}]}]}))
    assert run("finetune", tiny, "--train", squad, "--out", tmp_path / "qa", "--max-steps", "1").exit_code == 0
    refused(run("predict", tmp_path / "qa", squad, "--windows", "64"), "--windows", "--doc-stride")


# ---- found by a hunt through the Python API (2026-12-04) -----------------------------------------------------------


def test_finetune_of_a_model_object_whose_head_does_not_fit_is_refused_before_out(tiny, sst, tmp_path):
    tok = bertscope.load_tokenizer(tiny)
    model = bertscope.from_pretrained(tiny)                             # the base head
    out = tmp_path / "o"
    with pytest.raises(bertscope.UsageError, match="trains head 'classification'"):
        api.finetune(model, sst, out, tokenizer=tok, max_steps=1, device="cpu")
    assert not out.exists()


def test_errors_found_before_the_output_folder_is_made(tiny, sst, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(bertscope.UsageError, match="--freeze nope"):
        api.finetune(tiny, sst, out, max_steps=1, device="cpu", freeze=("nope",))
    corpus = write(tmp_path, "c.txt", "".join(f"line {i} of a small corpus with a few words\n\n" for i in range(40)))
    with pytest.raises(bertscope.UsageError, match="does not fill one batch"):
        api.pretrain(corpus, out, tokenizer=tiny, family="bert", batch_size=100000, max_steps=1, device="cpu")
    with pytest.raises(bertscope.UsageError, match="needs at least 5 tokens"):
        api.pretrain(corpus, out, tokenizer=tiny, family="bert", max_length=3, max_steps=1, device="cpu")
    assert not out.exists()


def test_a_tokenizer_length_below_its_special_tokens_is_refused(tiny):
    tok = bertscope.load_tokenizer(tiny)
    with pytest.raises(bertscope.InputError, match="max_length 1: expected an integer of at least 3"):
        tok(["word " * 100], max_length=1)
    with pytest.raises(bertscope.InputError, match="at least 3"):
        tok(["word " * 100], max_length=2)                  # the special tokens alone: no text left
    with pytest.raises(bertscope.InputError, match="at least 5 .*each of its two texts"):
        tok(["word " * 10], ["other " * 10], max_length=4)
    assert tok(["word " * 100], max_length=5)["input_ids"].shape == (1, 5)
    with pytest.raises(bertscope.InputError, match="expected str"):
        tok([None])


@pytest.mark.parametrize("given,words", [
    ({"labels": torch.tensor([0, 1], dtype=torch.int32)}, "labels.long()"),
    ({"labels": torch.tensor(1)}, "expected one label per sequence"),
    ({"labels": [0, 1]}, "must be a torch tensor"),
    ({"labels": torch.ones(2, 5)}, "multi-label targets are (2, 3)"),
    ({"input_ids": torch.ones(2, 6, dtype=torch.uint8)}, "input_ids.long()"),
])
def test_loss_targets_and_ids_of_a_dtype_or_shape_the_loss_cannot_take(given, words):
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert-cls")
    with pytest.raises(bertscope.InputError) as e:
        model(**{"input_ids": torch.randint(5, 900, (2, 6)), **given})
    assert words in str(e.value)
    regression = bertscope.from_pretrained(TINY / "bert-cls", num_labels=1, reinit_head=True)
    assert torch.isfinite(regression(input_ids=torch.randint(5, 900, (2, 6)), labels=torch.tensor([3, 7])).loss)


def test_a_misspelt_option_to_evaluate_or_predict_is_refused(tiny, tmp_path):
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "cls", "--max-steps", "1").exit_code == 0
    loaded = api.load(tmp_path / "cls")
    with pytest.raises(bertscope.UsageError, match="unknown option 'max_lenght'"):
        list(api.predict(loaded, cls, max_lenght=5))
    with pytest.raises(bertscope.UsageError, match="unknown option 'treshold'"):
        api.evaluate(loaded, cls, treshold=0.5)


def test_mlm_positions_inputs_embeds_dtype_and_embedding_size_are_checked():
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert", head="mlm")
    ids = torch.randint(5, 900, (2, 6))
    with pytest.raises(bertscope.InputError, match="mlm_positions: expected a 1-D long tensor"):
        model(input_ids=ids, mlm_positions=torch.tensor([0, 50]))
    with pytest.raises(bertscope.InputError, match="inputs_embeds has dtype torch.float64"):
        model(inputs_embeds=torch.randn(2, 6, model.config.hidden_size, dtype=torch.float64))
    with pytest.raises(bertscope.ConfigError, match="only ALBERT factorises"):
        bertscope.Config(family="bert", vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, embedding_size=16)


def test_a_mask_not_a_tensor_a_prune_list_and_a_dtype_name_are_refused():
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert")
    ids = torch.randint(5, 900, (1, 4))
    with pytest.raises(bertscope.InputError, match=r"attention_mask must be a torch tensor \(1, 4\).*got list"):
        model(input_ids=ids, attention_mask=[[1, 1, 1, 1]])
    with pytest.raises(bertscope.InputError, match=r"prune_heads takes \{layer: \[head, ...\]\}"):
        model.prune_heads([0, 1])
    with pytest.raises(bertscope.InputError, match="prune_heads takes"):
        model.prune_heads({0: 1})
    with pytest.raises(bertscope.UsageError, match="expected a floating torch dtype, e.g. torch.bfloat16"):
        bertscope.from_pretrained(TINY / "bert", dtype="bfloat16")
    assert bertscope.from_pretrained(TINY / "bert", dtype=torch.bfloat16).embeddings.word.weight.dtype == \
        torch.bfloat16


def test_api_functions_given_a_folder_or_an_empty_batch_say_what_they_take():
    need_shared()
    with pytest.raises(bertscope.UsageError, match=r"api.predict takes a model from api.load .*api.predict\(api.load"
                                                   r"\(FOLDER\), ...\); got PosixPath"):
        list(bertscope.api.predict(MINILM, [str(DATA / "sst2" / "dev.tsv")]))
    with pytest.raises(bertscope.UsageError, match="api.evaluate takes a model from api.load"):
        bertscope.api.evaluate(str(MINILM), DATA / "sst2" / "dev.tsv")
    loaded = bertscope.api.load(TINY / "bert")
    with pytest.raises(bertscope.UsageError, match="batch_size=0: expected a whole number of texts, at least 1"):
        bertscope.api.bench(loaded, loaded.model, ["a b", "c"], batch_size=0)
    with pytest.raises(bertscope.UsageError, match="--batch -1: expected a whole number, at least 1"):
        bertscope.api.trace(loaded, batch=-1)


def test_span_positions_are_checked():
    need_shared()
    ref_qa = [p for p in TINY.iterdir() if "qa" in p.name]
    model = bertscope.from_pretrained(ref_qa[0]) if ref_qa else bertscope.from_pretrained(
        TINY / "bert", head="question-answering", reinit_head=True)
    ids = torch.randint(5, 900, (2, 6))
    with pytest.raises(bertscope.InputError, match="together"):
        model(input_ids=ids, start_positions=torch.tensor([1, 2]))
    with pytest.raises(bertscope.InputError, match="expected a long tensor of 2 token positions"):
        model(input_ids=ids, start_positions=torch.tensor([1.0, 2.0]), end_positions=torch.tensor([2, 3]))
    with pytest.raises(bertscope.InputError, match="padded batch"):
        model(input_ids=ids.reshape(-1), cu_seqlens=torch.tensor([0, 6, 12]), start_positions=torch.tensor([1, 2]),
              end_positions=torch.tensor([2, 3]))
    assert torch.isfinite(model(input_ids=ids, start_positions=torch.tensor([1, 9]), end_positions=torch.tensor(
        [2, 9])).loss)                                                  # past the end: ignored, as the reference


def test_arguments_the_head_does_not_read_and_quantizing_twice_are_refused():
    need_shared()
    from bertscope import quantize
    model = bertscope.from_pretrained(TINY / "bert")                   # no MLM head read, no span head
    ids = torch.randint(5, 900, (2, 6))
    with pytest.raises(bertscope.InputError, match="start_positions was given"):
        model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([2, 3]))
    cls = bertscope.from_pretrained(TINY / "bert-cls")
    with pytest.raises(bertscope.InputError, match="mlm_positions was given"):
        cls(input_ids=ids, mlm_positions=torch.tensor([0, 1]))
    with pytest.raises(bertscope.UsageError, match="alpha"):
        quantize.quantize(cls, None, alpha=float("nan"))
    quantize.apply(cls, {"encoder.layers.0.attention.qkv": torch.ones(cls.config.hidden_size)})
    with pytest.raises(bertscope.UsageError, match="int8 already"):
        quantize.quantize(cls, None)


def test_init_with_config_is_refused_and_a_warmup_past_the_run_is_said(tiny, sst, tmp_path):
    corpus = write(tmp_path, "c.txt", "".join(f"line {i} of a small corpus with a few words\n" for i in range(40)))
    refused(run("pretrain", "--init", tiny, "--config", "base", "--tokenizer", tiny, "--corpus", corpus, "--out",
                tmp_path / "p", "--steps", "1"), "--config base", "--init")
    r = run("finetune", tiny, "--train", sst, "--out", tmp_path / "w", "--max-steps", "1", "--warmup", "5000")
    assert r.exit_code == 0 and "never reaches --lr" in r.output, r.output


def test_an_output_folder_may_not_replace_the_tokenizer_it_reads_an_input_or_a_users_file(tiny, sst, tmp_path):
    import shutil
    tok = tmp_path / "tok"
    tok.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, tok / name)
    before = snapshot(tok)
    refused(run("finetune", tiny, "--tokenizer", tok, "--train", sst, "--out", tok, "--max-steps", "1"),
            f"--out {tok} is the --tokenizer folder", "--overwrite")
    assert snapshot(tok) == before
    corpus_in_out = tmp_path / "tv"
    corpus_in_out.mkdir()
    (corpus_in_out / "vocab.txt").write_text("a corpus the user named vocab.txt\n" * 50, encoding="utf-8")
    refused(run("tokenizer", "train", corpus_in_out / "vocab.txt", "--family", "bert", "--vocab-size", "300",
                "--out", corpus_in_out, "--overwrite"), "would replace", "which this command reads")
    assert (corpus_in_out / "vocab.txt").read_text(encoding="utf-8").startswith("a corpus the user")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "curves.png").write_text("my own picture", encoding="utf-8")
    refused(run("finetune", tiny, "--train", sst, "--out", mine, "--max-steps", "1"),
            "already holds curves.png, which this command writes", "--overwrite")
    assert (mine / "curves.png").read_text(encoding="utf-8") == "my own picture"


def test_labels_that_are_not_numbers_classes_or_anything_are_named(tiny, tmp_path):
    cases = [("c_nan.tsv", "sentence\tlabel\na\t0\nb\t1\nc\tnan\n", [], "label 'nan' is not a class"),
             ("j_inf.jsonl", '{"text":"a","label":0}\n{"text":"b","label":1}\n{"text":"c","label":Infinity}\n',
              ["--task", "classification"], "label inf is not a finite number"),
             ("m_none.jsonl", '{"text":"a","label":[]}\n{"text":"b","label":[]}\n', ["--task", "multi-label"],
              "no row has a label; multi-label needs at least two"),
             ("m_nested.jsonl", '{"text":"a","label":[["x"]]}\n{"text":"b","label":["y"]}\n',
              ["--task", "multi-label"], "is not a label name"),
             ("r_huge.tsv", "sentence\tlabel\na\t0.5\nb\t1.5\nc\t1e308\n", ["--task", "regression"],
              "is too large to train on in float32")]
    for name, text, extra, words in cases:
        path = write(tmp_path, name, text)
        refused(run("finetune", tiny, "--train", path, "--out", tmp_path / ("o-" + name), "--max-steps", "1",
                    *extra), words, name)
        assert not (tmp_path / ("o-" + name)).exists()
    corpus = write(tmp_path, "c.txt", "some text to train on\n" * 30)
    refused(run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "2147483648", "--out",
                tmp_path / "t"), "--vocab-size 2,147,483,648: expected at most 1,000,000")


def test_skip_bad_rows_skips_a_row_whose_label_is_not_one(tiny, tmp_path):
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "good\t1\nbad\t0\n" * 4 + "odd\tnan\n")
    r = run("finetune", tiny, "--train", train, "--out", tmp_path / "o", "--max-steps", "1", "--skip-bad-rows")
    assert r.exit_code == 0, r.output
    assert "skipped 1 bad rows of" in r.output and "line 10: label 'nan' is not a class" in r.output
    r = run("evaluate", tmp_path / "o", train, "--skip-bad-rows", "--format", "json")   # evaluate reads in chunks
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["examples"] == 8
    refused(run("evaluate", tmp_path / "o", train), "line 10: label 'nan' is not a class")
    only_bad = write(tmp_path, "b.tsv", "sentence\tlabel\nodd\tnan\n")
    refused(run("finetune", tiny, "--train", only_bad, "--out", tmp_path / "p", "--skip-bad-rows"),
            "b.tsv: no examples (1 bad rows skipped)")
    blank = write(tmp_path, "blank.txt", "\n  \n")                # an input with no text: predict as embed
    refused(run("predict", tmp_path / "o", blank), "blank.txt: no texts found")
    refused(run("embed", tmp_path / "o", blank, "--out", tmp_path / "e.npy"), "blank.txt: no texts found")
    refused(run("predict", tmp_path / "o", "-", input=""), "<stdin>: no texts found")
    assert not (tmp_path / "e.npy").exists()


def test_resume_refuses_options_other_than_the_runs_and_takes_its_own_again(tiny, sst, tmp_path):
    out = tmp_path / "o"
    bertscope.api.finetune(tiny, sst, out, epochs=1, save_every=1, stop_after=1, device="cpu", max_length=32)
    other = write(tmp_path, "other.tsv", sst.read_text(encoding="utf-8"))        # the same rows, another file
    refused(run("finetune", "--resume", out, "--train", other), f"--train {other}: the run in {out} trains on "
            f"{sst.absolute()}", "start a new run from its model")
    refused(run("finetune", "--resume", out, "--eval", other), f"--eval {other}: the run in {out} has no --eval file")
    refused(run("finetune", "--resume", out, "--max-length", "64", "--task", "regression"),
            f"--resume {out} continues the run as it was set up: --task regression (the run has classification); "
            "--max-length 64 (the run has 32)")
    refused(run("finetune", "--resume", out, "--out", tmp_path / "elsewhere"), f"--out {tmp_path / 'elsewhere'} "
            f"(the run has {out})")
    refused(run("finetune", "--resume", out, "--threshold", "0.3"),      # one the run's task does not read: said so
            "--threshold applies to multi-label; this is classification")
    refused(run("finetune", "--resume", out, "--new-head"), "--new-head on (the run has off)")
    named = tmp_path / "n"                                            # a typed default is compared too
    rows = write(tmp_path, "n.tsv", "sentence\tsentiment\na great film\tpos\na dull mess\tneg\n")
    bertscope.api.finetune(tiny, rows, named, label_column="sentiment", save_every=1, stop_after=1, max_steps=2,
                           batch_size=1, device="cpu")
    refused(run("finetune", "--resume", named, "--label-column", "label"), "--label-column label (the run has "
            "sentiment)")
    link = tmp_path / "link.tsv"
    link.symlink_to(sst)
    spelt = Path(os.path.relpath(sst, tmp_path / "o"))                # ../ from inside the run's folder
    r = run("finetune", tiny, "--resume", out, "--train", link, "--out", out, "--max-length", "32", "--task",
            "classification", "--tokenizer", tiny, "--overwrite")    # the first command again, with --resume
    assert r.exit_code == 0, r.output
    assert "--tokenizer" not in r.output and "MODEL" not in r.output   # the run's own vocabulary: nothing to say
    assert "--overwrite is not read by --resume" in r.output
    with_head = tmp_path / "h"                                          # a run started with --new-head
    bertscope.api.finetune(tiny, sst, with_head, new_head=True, save_every=1, stop_after=1, max_steps=2,
                           batch_size=2, device="cpu")
    cwd = os.getcwd()
    try:
        os.chdir(out)
        r = run("finetune", tiny, "--train", spelt, "--out", with_head, "--new-head", "--max-steps", "2",
                "--batch-size", "2", "--resume", with_head)
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0 and "done: 2 steps" in r.output, r.output


def test_pretrain_resume_compares_the_options_typed_again_defaults_included(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "a great film with a fine cast\na dull mess of a film\n" * 4)
    out = tmp_path / "p"
    assert not bertscope.api.pretrain(corpus, out, tokenizer=tiny, family="bert", objective="mlm", max_length=32,
                                      static_masks=True, max_steps=2, batch_size=2, save_every=1, stop_after=1,
                                      device="cpu").finished
    refused(run("pretrain", "--resume", out, "--dynamic-masks"), "--static-masks off (the run has on)")
    refused(run("pretrain", "--resume", out, "--max-length", "128"), "--max-length 128 (the run has 32)")
    refused(run("pretrain", "--resume", out, "--mlm-probability", "0.15", "--start", "local"),
            "--start local (the run has standard)")
    refused(run("pretrain", "--resume", out, "--objective", "mlm+nsp"), "--objective mlm+nsp (the run has mlm)")
    refused(run("pretrain", "--resume", out, "--config", "small"), "--config small (the run has a BERT model of "
            "hidden_size 128, num_hidden_layers 2, num_attention_heads 2, intermediate_size 512)")
    other = bertscope.Config.from_json(tiny)                          # a config.json of another shape
    refused(run("pretrain", "--resume", out, "--config", tiny / "config.json"), "hidden_size 128",
            f"--config {tiny / 'config.json'}")
    assert other.hidden_size != 128
    r = run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", corpus, "--out", out, "--objective",
            "mlm", "--max-length", "32", "--static-masks", "--mlm-probability", "0.15", "--config", "tiny",
            "--resume", out)
    assert r.exit_code == 0 and "done: 2 steps" in r.output, r.output


def test_pair_objectives_say_how_much_of_a_long_lined_corpus_they_use(tiny, tmp_path):
    corpus = write(tmp_path, "long.txt", "\n\n".join(" ".join(f"word{i}" for i in range(300)) for _ in range(8)) + "\n")
    r = run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", corpus, "--out", tmp_path / "p",
            "--steps", "1", "--batch-size", "2", "--max-length", "32")
    assert r.exit_code == 0, r.output
    assert "mlm+nsp: the training pairs hold" in r.output and "--objective mlm uses every token" in r.output
    r = run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", corpus, "--out", tmp_path / "q",
            "--steps", "1", "--batch-size", "2", "--max-length", "32", "--objective", "mlm")
    assert r.exit_code == 0 and "the training pairs hold" not in r.output, r.output


def test_shards_take_a_size_as_hugging_face_writes_it(tmp_path):
    model = bertscope.from_config("bert-base", num_hidden_layers=1)
    bertscope.save_pretrained(model, tmp_path / "m", max_shard_size="20MB")
    assert (tmp_path / "m" / "model.safetensors.index.json").exists()
    again = bertscope.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(bertscope.UsageError, match="max_shard_size='lots'"):
        bertscope.save_pretrained(model, tmp_path / "n", max_shard_size="lots")
    with pytest.raises(bertscope.errors.OutputError, match="already holds a model .* pass overwrite=True"):
        bertscope.save_pretrained(model, tmp_path / "m")                 # another model's folder is not replaced
    bertscope.save_pretrained(model, tmp_path / "m", overwrite=True)    # one file again: the shards go
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_pretraining_options_a_user_gets_wrong_or_leaves_out(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "".join(f"sentence number {i} of the corpus . and another one here .\n\n"
                                              for i in range(60)))          # 60 documents (NSP draws across them)
    r = run("pretrain", "--init", tiny, "--corpus", corpus, "--out", tmp_path / "i", "--steps", "1", "--batch-size",
            "2", "--max-length", "32")                                    # --init brings its family and tokenizer
    assert r.exit_code == 0, r.output
    refused(run("pretrain", "--family", "bert", "--corpus", corpus, "--steps", "1"), "missing --tokenizer, --out")
    config = json.loads((tiny / "config.json").read_text())
    write(tmp_path, "cfg1.json", json.dumps({**config, "type_vocab_size": 1}))
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--config", tmp_path / "cfg1.json", "--corpus",
                corpus, "--out", tmp_path / "t1", "--steps", "1"), "type_vocab_size 1", "--objective mlm")
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", "-", "--out", tmp_path / "s",
                "--steps", "1", input="some text\n"), "'-' (standard input) is not read here")
    refused(run("tokenizer", "train", "-", "--family", "bert", "--out", tmp_path / "t2", input="some text\n"),
            "'-' (standard input) is not read here")
    refused(run("tokenizer", "train", corpus, "--family", "albert", "--vocab-size", "12", "--out", tmp_path / "t3"),
            "raise --vocab-size above the number of distinct characters")
    r = run("tokenizer", "train", corpus, "--family", "albert", "--vocab-size", "100", "--out", tmp_path / "t4")
    assert r.exit_code == 0 and "trained an ALBERT tokenizer" in r.output, r.output


def test_a_literal_unk_in_the_corpus_is_not_counted_as_unknown(tmp_path):
    # WikiText writes rare words as "<unk>": the special token spelled out, which the vocabulary does represent
    corpus = write(tmp_path, "c.txt", "".join(f"the <unk> of line {i} went to the <unk> river .\n" for i in range(80)))
    r = run("tokenizer", "train", corpus, "--family", "roberta", "--vocab-size", "300", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert "held-out [UNK] rate: 0.00%" in r.output and "warning" not in r.output.lower(), r.output


def test_a_utf16_file_and_a_family_against_its_config_are_named(tiny, tmp_path):
    from bertscope.data import lines
    path = tmp_path / "u16.txt"
    path.write_bytes("some text\nmore\n".encode("utf-16"))
    with pytest.raises(bertscope.DataError, match="UTF-16 byte-order mark, so it is UTF-16"):
        list(lines(path))
    path.write_bytes("some text\nmore\n".encode("utf-16-le"))        # no mark: valid UTF-8, half NUL bytes
    with pytest.raises(bertscope.DataError, match="line 1: holds NUL bytes.* likely UTF-16 without a byte-order mark"):
        list(lines(path))
    binary = write(tmp_path, "c.bin", b"fine first line\nELF\x02\x01\x01\x00\x00\x00 more\n")
    refused(run("tokenizer", "train", binary, "--family", "bert", "--out", tmp_path / "t"),
            "c.bin line 2: holds NUL bytes", "binary or compressed")
    import gzip
    packed = write(tmp_path, "c.txt.gz", gzip.compress(b"some text to train on\n" * 50))
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", packed, "--out", tmp_path / "p",
                "--steps", "1"), "c.txt.gz line 1: not valid UTF-8", "starts as gzip data does); decompress it")
    need_shared()
    corpus = write(tmp_path, "c.txt", "a line of text .\n" * 20)
    refused(run("pretrain", "--family", "bert", "--config", TINY / "albert" / "config.json", "--tokenizer", tiny,
                "--corpus", corpus, "--out", tmp_path / "p", "--steps", "1"),
            "--family bert, but --config", "is an ALBERT config")


# ---- found by the bad-input hunt of 2026-12-05 -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(tiny_folder, tmp_path_factory):
    """The tiny BERT fine-tuned for 1 step on 8 rows: a two-class classifier with its run.json."""
    where = tmp_path_factory.mktemp("cls")
    train = write(where, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'pos' if i % 2 else 'neg'}\n"
                                                                  for i in range(8)))
    r = run("finetune", tiny_folder, "--train", train, "--out", where / "cls", "--max-steps", "1")
    assert r.exit_code == 0, r.output
    return where / "cls"


def test_int8_and_bf16_together_are_refused_and_a_quantized_folder_gives_way_to_bf16(classifier, tmp_path):
    from bertscope.kernels import bf16_on_cpu, int8_on_cpu
    texts = write(tmp_path, "two.txt", "a great film\nbad\n")
    # refused on every CPU, before the model is loaded (where bf16 does not pay, --bf16 alone would run fp32)
    refused(run("predict", classifier, texts, "--int8", "--bf16"), "--int8 and --bf16", "do not combine")
    refused(run("evaluate", classifier, texts, "--int8", "--bf16"), "--int8 and --bf16", "do not combine")
    refused(run("embed", classifier, texts, "--out", tmp_path / "e.npy", "--int8", "--bf16"), "do not combine")
    refused(run("predict", tmp_path / "no-such-model", texts, "--int8", "--bf16"), "do not combine")
    assert not (tmp_path / "e.npy").exists()
    if not bf16_on_cpu()[0]:
        pytest.skip("bf16 does not pay on this CPU: --bf16 on a quantized folder runs fp32, and int8 with it")
    calibration = write(tmp_path, "cal.txt", "".join(f"a line of text number {i}\n" for i in range(20)))
    r = run("quantize", classifier, "--calibrate", calibration, "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    r = run("predict", tmp_path / "q", texts, "--bf16", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    assert len([line for line in r.output.splitlines() if line.startswith("{")]) == 2
    if int8_on_cpu()[0]:
        assert "this folder's int8 calibration is not used" in r.output


def test_more_threads_than_cpus_are_refused(classifier, tmp_path):
    from bertscope.machine import usable_cpus
    texts = write(tmp_path, "two.txt", "a great film\nbad\n")
    refused(run("predict", classifier, texts, "--threads", str(usable_cpus() + 1)),
            f"--threads {usable_cpus() + 1}: this process may use {usable_cpus()} CPUs")
    refused(run("encode", classifier, "hi", "--threads", "100000"), "--threads 100000")


def test_a_special_token_missing_from_the_vocabulary_is_named_with_its_file(tiny, tmp_path):
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["pad_token"] = "<pad>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for args in (("encode", folder, "hello"), ("embed", folder, write(tmp_path, "t.txt", "hi\n"), "--out",
                                                tmp_path / "e.npy")):
        refused(run(*args), "the vocabulary has no <pad> token", "tokenizer_config.json's pad_token")
    config["pad_token"], config["mask_token"] = "[PAD]", "<mask>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    model = bertscope.from_pretrained(tiny, head="mlm", reinit_head=True)
    bertscope.save_pretrained(model, folder, overwrite=True)
    refused(run("fill-mask", folder, "hello [MASK]"), "mask token '<mask>' is not in its vocabulary")


def test_a_roberta_config_whose_pad_id_is_not_the_tokenizers_is_refused(tmp_path):
    need_shared()
    import shutil
    corpus = write(tmp_path, "c.txt", "".join(f"some words of line {i} for the tokenizer\n" for i in range(200)))
    assert run("tokenizer", "train", corpus, "--family", "roberta", "--vocab-size", "400",
               "--out", tmp_path / "tok").exit_code == 0
    folder = tmp_path / "rb"
    shutil.copytree(TINY / "roberta", folder)
    for f in (tmp_path / "tok").iterdir():
        shutil.copy(f, folder / f.name)
    texts = write(tmp_path, "t.txt", "some words\n")
    r = run("embed", folder, texts, "--out", tmp_path / "ok.npy")
    assert r.exit_code == 0, r.output                             # the same pad id: fine
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["pad_token_id"] = 5
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    refused(run("embed", folder, texts, "--out", tmp_path / "shifted.npy"),
            "pads with id 1", "pad_token_id 5", "every position would shift")


def test_a_pair_model_reads_its_pairs_and_a_table_names_its_text_column(tiny, tmp_path):
    rows = "".join(f"question {i}\tpassage {i} {'yes' * (i % 2)}\t{'yes' if i % 2 else 'no'}\n" for i in range(8))
    pairs = write(tmp_path, "pairs.tsv", "q\tp\tlabel\n" + rows)
    r = run("finetune", tiny, "--train", pairs, "--text-column", "q", "--pair-column", "p", "--out", tmp_path / "pm",
            "--max-steps", "1")
    assert r.exit_code == 0, r.output
    loaded = bertscope.api.load(tmp_path / "pm")
    by_default = list(bertscope.api.predict(loaded, pairs))
    named = list(bertscope.api.predict(loaded, pairs, text_column="q", pair_column="p"))
    import dataclasses
    alone = list(bertscope.api.predict(dataclasses.replace(loaded, folder=None), pairs, text_column="q"))  # no run
    assert by_default == named                                    # the run's columns, pair included
    assert [d["probabilities"] for d in by_default] != [d["probabilities"] for d in alone]
    refused(run("predict", tmp_path / "pm", write(tmp_path, "t.txt", "question 1\n")),
            "t.txt: this model was fine-tuned on sentence pairs, columns 'q' and 'p' (its "
            f"{tmp_path / 'pm' / 'run.json'}), so it reads pairs", "--pair-column")
    refused(run("evaluate", tmp_path / "pm", "-", input="question 1\n"), "<stdin>: this model was fine-tuned on "
                                                                         "sentence pairs")
    id_first = write(tmp_path, "ids.tsv", "id\treview\n17\ta great film\n")
    two = write(tmp_path, "two.tsv", "title\treview\nA\ta great film\n")
    refused(run("embed", tiny, two, "--out", tmp_path / "e.npy"),
            "no 'text' or 'sentence' column, and 2 columns could hold the text ('title', 'review')", "--text-column")
    from bertscope.data import read_texts
    assert read_texts(id_first) == ["a great film"]
    assert read_texts(write(tmp_path, "lab.tsv", "label\treview\npos\tfine\n")) == ["fine"]


def test_old_mac_line_ends_are_named(tmp_path):
    from bertscope.data import read_texts
    with pytest.raises(bertscope.DataError, match=r"cr.txt line 1: holds carriage returns .* CR alone"):
        read_texts(write(tmp_path, "cr.txt", b"one\rtwo\rthree\r"))
    assert read_texts(write(tmp_path, "crlf.txt", b"one\r\ntwo\r\n")) == ["one", "two"]
    assert read_texts(write(tmp_path, "stray.txt", b"one\rmore\ntwo\n")) == ["one\rmore", "two"]   # one stray \r


def test_quantize_warns_when_calibrated_on_few_texts(classifier, tmp_path):
    r = run("quantize", classifier, "--calibrate", write(tmp_path, "two.txt", "a great film\nbad\n"),
            "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    assert "calibrated on only 2 texts" in r.output and "at least 16" in r.output


def test_weight_and_config_files_that_are_folders_or_damaged_are_named(tmp_path):
    need_shared()
    for name, make, words in (
            ("w1", lambda f: (f / "model.safetensors").mkdir(), "model.safetensors: is a folder"),
            ("w2", lambda f: (f / "pytorch_model.bin").write_bytes(bytes(range(256)) * 2),
             "pytorch_model.bin: neither the zip archive nor the pickle torch.save writes (512 bytes): truncated or corrupt"),
            ("w3", lambda f: ((f / "config.json").unlink(), (f / "config.json").mkdir()), "config.json: is a folder")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((TINY / "bert" / "config.json").read_text(encoding="utf-8"),
                                            encoding="utf-8")
        make(folder)
        refused(run("explain", folder), words)
    refused(run("bench", "bert-base", write(tmp_path, "t.txt", "hi\n")), "bert-base is a built-in shape",
            "no tokenizer")
    legacy = tmp_path / "legacy"                                       # torch.save before 1.6: a pickle, not damaged
    legacy.mkdir()
    (legacy / "config.json").write_text((TINY / "bert" / "config.json").read_text(encoding="utf-8"), encoding="utf-8")
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "meta": __import__("numpy").float64(1)},
               legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    refused(run("explain", legacy), "cannot be read as a weights-only PyTorch checkpoint")


def test_tables_on_standard_input_and_files_that_hold_no_texts_are_named(classifier, tmp_path):
    refused(run("predict", classifier, "-", input="sentence\tlabel\na fine film\t1\n"),
            "<stdin> line 1 looks like a .tsv header (sentence, label)", "give the table as a file")
    refused(run("predict", classifier, "-", input="a fine film\tpositive\nbad\t0\n"),
            "<stdin> line 1 looks like a .tsv row, a text and its label ('positive' after the last tab)")
    r = run("predict", classifier, "-", "--format", "jsonl", input="a fine film\tand a fine cast too\n")
    assert r.exit_code == 0 and r.output.count("\"text\"") == 1, r.output    # a tab inside a text is text
    r = run("predict", classifier, "-", "--format", "jsonl", input="今天天气很好\t我们去公园\n")
    assert r.exit_code == 0 and r.output.count("\"text\"") == 1, r.output    # so in a script without spaces
    refused(run("predict", classifier, "-", input="\n\ntext\tlabel\n"), "<stdin> line 3 looks like a .tsv header")
    for first in ("news text\tSci/Tech", "a film\tpos|neg", "phrase\tétiquette", "文本\t标签"):
        refused(run("predict", classifier, "-", input=first + "\n"), "<stdin> line 1 looks like a .tsv")
    refused(run("predict", classifier, "-", input='{"text": "a fine film", "label": 1}\n'),
            "<stdin> line 1 is a JSON object")
    r = run("predict", classifier, "-", input="\n{curly braces} and plain words\n")
    assert r.exit_code == 0, r.output                                # text that merely starts with a brace
    refused(run("predict", classifier, write(tmp_path, "q.json", '[{"text": "a"}]')),
            "q.json: a .json file is SQuAD-style questions")
    refused(run("embed", classifier, write(tmp_path, "w.conll", "John\tB-person\n"), "--out", tmp_path / "e.npy"),
            "w.conll: a CoNLL file holds a word and its tag a line")


def test_encode_says_which_of_its_inputs_it_would_drop(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "one text\n")
    refused(run("encode", tiny, "-f", texts, "hello"), "texts and --file", "one or the other")
    refused(run("encode", tiny, "hello", "--limit", "3"), "--limit reads at most that many texts from --file")
    refused(run("encode", tiny, "fine", ""), "text 2 is empty")


def test_options_that_would_do_nothing_for_the_task_are_refused(classifier, tmp_path):
    texts = write(tmp_path, "two.txt", "a great film\nbad\n")
    for command in (["predict", classifier, texts], ["evaluate", classifier, texts],
                    ["embed", classifier, texts, "--out", tmp_path / "e.npy"],
                    ["tokenizer", "train", texts, "--family", "bert", "--vocab-size", "200", "--out", tmp_path / "t"]):
        refused(run(*command, "--text-column", "review"), "--text-column review: names a column of .tsv, .csv or "
                                                          ".jsonl files", f"{texts} has no columns")
    assert listing(tmp_path) == ["two.txt"]
    refused(run("predict", classifier, texts, "--pool", "max"), "--pool max combines the windows", "without --windows")
    refused(run("predict", classifier, texts, "--doc-stride", "16"), "--doc-stride applies to question answering")
    refused(run("predict", classifier, texts, "--max-answer-length", "5"), "--max-answer-length applies")
    r = run("predict", classifier, texts, "--pool", "max", "--windows", "8", "--max-length", "16")
    assert r.exit_code == 0, r.output
    from bertscope.api.common import task_for
    with pytest.raises(bertscope.UsageError, match="--pool max combines the windows of a long text's label scores; "
                                                   "question answering takes the best answer span"):
        task_for(bertscope.api.load(TINY / "bert"), "question-answering", pool="max")


def test_the_text_column_rule_leaves_labels_pairs_and_check_alone(tiny, tmp_path):
    rows = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(8))
    reviews = write(tmp_path, "rev.tsv", "review\tsentiment\n" + rows)
    r = run("finetune", tiny, "--train", reviews, "--label-column", "sentiment", "--out", tmp_path / "o",
            "--max-steps", "1")
    assert r.exit_code == 0, r.output
    r = run("predict", tmp_path / "o", reviews, "--format", "jsonl")   # the label column is not a text candidate
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["text"] for x in r.output.splitlines() if x.startswith("{")][:2] == ["bad film 0",
                                                                                              "good film 1"]
    from bertscope.tasks import guess
    pairs = write(tmp_path, "sts.tsv", "sentence1\tsentence2\tlabel\n" + "".join(f"a {i}\tb {i}\t{i}.5\n"
                                                                                for i in range(6)))
    assert guess(pairs, "label", "sentence1", "sentence2")[0] == "regression"
    three = write(tmp_path, "three.tsv", "title\treview\tlabel\nA\tfine\t1\nB\tbad\t0\n")
    r = run("check", TINY / "bert-cls", "--data", three)               # check reads the labels alone
    assert r.exit_code == 0 and "ok" in r.output, r.output


def test_an_unknown_training_option_is_named_with_a_near_one_and_stop_after_is_checked_before_out(tiny, tmp_path):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    with pytest.raises(bertscope.UsageError, match="unknown option 'epoch' \\(did you mean 'epochs'\\?\\); the "
                                                   "training settings are epochs, max_steps, lr"):
        bertscope.api.finetune(tiny, data, tmp_path / "o", epoch=2)
    with pytest.raises(bertscope.UsageError, match="unknown option 'max_lenght' \\(did you mean 'max_length'"):
        bertscope.api.finetune(tiny, data, tmp_path / "o", max_lenght=16)
    with pytest.raises(bertscope.UsageError, match="stop_after 0: expected a number of steps, at least 1"):
        bertscope.api.finetune(tiny, data, tmp_path / "o", stop_after=0)
    corpus = write(tmp_path, "c.txt", "some text here\n" * 20)
    with pytest.raises(bertscope.UsageError, match="unknown option 'step' \\(did you mean 'max_steps'\\?\\)"):
        bertscope.api.pretrain(corpus, tmp_path / "p", tokenizer=tiny, family="bert", step=3)
    with pytest.raises(bertscope.UsageError, match="stop_after -1"):
        bertscope.api.pretrain(corpus, tmp_path / "p", tokenizer=tiny, family="bert", stop_after=-1)
    assert listing(tmp_path) == ["c.txt", "t.tsv"]


def test_finetune_refuses_options_its_task_would_not_read(tiny, tmp_path):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    conll = write(tmp_path, "w.conll", "John\tB-person\nlives\tO\n\nMary\tB-person\nsings\tO\n")
    common = ["--out", tmp_path / "o", "--max-steps", "1", "--batch-size", "2"]
    for extra, words in ((["--doc-stride", "10"], "--doc-stride applies to question answering; this is classification"),
                         (["--threshold", "0.3"], "--threshold applies to multi-label; this is classification"),
                         (["--label-all-pieces"], "--label-all-pieces applies to token classification")):
        refused(run("finetune", tiny, "--train", data, *common, *extra), words)
    refused(run("finetune", tiny, "--train", conll, *common, "--text-column", "word"),
            f"--text-column word: names a column of .tsv, .csv or .jsonl files, but {conll} has no columns (a CoNLL "
            "file of words and tags)")
    refused(run("finetune", tiny, "--train", conll, *common, "--skip-bad-rows"), "--skip-bad-rows skips rows of")
    assert run("finetune", tiny, "--train", conll, "--out", tmp_path / "ner", "--max-steps", "1").exit_code == 0
    for command, option in (("predict", "--pair-column"), ("evaluate", "--pair-column"),
                            ("evaluate", "--label-column")):   # the column options of tables, on a CoNLL file
        refused(run(command, tmp_path / "ner", conll, option, "tag"), f"{option} tag: names a column of .tsv")
    assert run("evaluate", tmp_path / "ner", conll, "--label-column", "label").exit_code == 0   # the default
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", data, "--out", tmp_path / "p",
                "--steps", "1", "--eval-every", "5"), "--eval-every 5: evaluations read --eval FILE")
    assert listing(tmp_path) == ["ner", "t.tsv", "w.conll"]


def test_a_conll_file_whose_lines_have_different_columns_is_refused(tiny, tmp_path):
    ragged = write(tmp_path, "r.conll", "John\tB-person\tX\nlives\tO\n\nMary\tB-person\nsings\tO\n")
    refused(run("finetune", tiny, "--train", ragged, "--out", tmp_path / "o", "--max-steps", "1"),
            "r.conll line 2: 2 columns, but line 1 has 3; the tag is read from the last column")
    from bertscope.data import read_conll                       # CoNLL-2003's four columns throughout: read
    ok = read_conll(write(tmp_path, "c3.conll", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"))
    assert ok.tags == [["B-ORG", "O"], ["B-PER"]]


def test_a_last_update_that_breaks_the_model_stops_the_run_and_broken_weights_are_refused(tiny, tmp_path):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    refused(run("finetune", tiny, "--train", data, "--out", tmp_path / "o", "--max-steps", "1", "--batch-size", "2",
                "--lr", "1e10"), "step 1: after the last update, the loss on the last batch is nan",
            f"start again with a lower --lr (the same command runs again: {tmp_path / 'o'}, made for this run, is removed)")
    assert not (tmp_path / "o").exists()                            # nothing written from it: the folder it made goes
    assert run("finetune", tiny, "--train", data, "--out", tmp_path / "ok", "--max-steps", "1").exit_code == 0
    from safetensors.torch import load_file, save_file
    weights = load_file(tmp_path / "ok" / "model.safetensors")
    name = next(k for k in weights if k.endswith("intermediate.dense.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, tmp_path / "ok" / "model.safetensors", metadata={"format": "pt"})
    refused(run("predict", tmp_path / "ok", data), "outputs for texts 1, 2 are not numbers",
            "encoder.layers.0.intermediate.weight holds nan")
    refused(run("evaluate", tmp_path / "ok", data), "are not numbers")


def test_a_run_stopped_before_it_saved_anything_leaves_no_folder_and_the_same_command_runs(tiny, tmp_path,
                                                                                        monkeypatch):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    import bertscope.train

    def ctrl_c(*args, **kwargs):                                  # Ctrl-C while the engine sets up, before a step
        raise KeyboardInterrupt
    monkeypatch.setattr(bertscope.train, "train", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        bertscope.api.finetune(tiny, data, tmp_path / "o", max_steps=1)
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()                                   # a folder that was there before: left as it is
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        bertscope.api.finetune(tiny, data, tmp_path / "mine", max_steps=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    monkeypatch.undo()
    assert bertscope.api.finetune(tiny, data, tmp_path / "o", max_steps=1).finished
    refused(run("finetune", tiny, "--train", data, "--out", tmp_path / "o"), "already holds a finished training run; "
            "choose another folder")                                # no checkpoint: no --resume offered
    assert not bertscope.api.finetune(tiny, data, tmp_path / "s", epochs=2, stop_after=1).finished
    refused(run("finetune", tiny, "--train", data, "--out", tmp_path / "s"), "already holds a training run; continue "
            f"it with --resume {tmp_path / 's'}")


def test_jsonl_rows_without_the_fields_asked_for_name_the_fields_they_have(tiny, tmp_path):
    common = ["--out", tmp_path / "o", "--max-steps", "1"]
    refused(run("finetune", tiny, "--train", write(tmp_path, "n.jsonl", '{"text": "a"}\n{"text": "b"}\n'), *common),
            "n.jsonl line 1: no field 'label' (the label); the line has 'text'; --label-column names another")
    r = run("finetune", tiny, "--train", write(tmp_path, "hf.jsonl", '{"words": ["John"], "ner_tags": [1]}\n'),
            *common)
    assert "--task token-classification (hf.jsonl holds lists of tokens" in r.output
    refused(r, "hf.jsonl line 1: expected \"tags\": a list of tag names (strings), one per token; the line has "
               "'ner_tags' (integer ids, as Hugging Face's ner_tags: write the tag names)")


def test_training_messages_point_at_the_real_problem(tiny, tmp_path):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    refused(run("pretrain", "--init", tmp_path / "nope", "--corpus", data, "--out", tmp_path / "p", "--steps", "1"),
            f"--init {tmp_path / 'nope'}: no such folder")
    refused(run("pretrain", "--family", "bert", "--config", tmp_path / "nope.json", "--corpus", data, "--tokenizer",
                tiny, "--out", tmp_path / "p", "--steps", "1"), f"{tmp_path / 'nope.json'}: no such file")
    refused(run("finetune", "--resume", tmp_path / "nope"), f"{tmp_path / 'nope'}: no such folder")
    refused(run("finetune", "--resume", data), f"{data}: is a file; --resume takes the folder of a training run")
    need_shared()
    four = write(tmp_path, "four.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i}\n" for i in range(4)))
    cls = tmp_path / "cls"                               # a LABEL_0..2 head of 3 classes, with a tokenizer
    bertscope.save_pretrained(bertscope.from_pretrained(tiny, head="classification", num_labels=3, reinit_head=True),
                              cls)
    bertscope.load_tokenizer(tiny).save(cls)
    refused(run("finetune", cls, "--train", four, "--out", tmp_path / "o", "--max-steps", "1"),
            "four.tsv line 5: class 3, but this classifier has 3 classes (0..2, named LABEL_0..LABEL_2) and the file "
            "4 (0, 1, 2, 3)", "--new-head")
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((TINY / "bert" / f).read_bytes())
    refused(run("finetune", notok, "--train", data, "--out", tmp_path / "o", "--max-steps", "1"),
            "has no tokenizer", "or name one with --tokenizer FOLDER")


def test_a_resume_removes_what_a_killed_process_left_half_written(tiny, sst, tmp_path):
    out = tmp_path / "o"
    bertscope.api.finetune(tiny, sst, out, epochs=2, save_every=1, stop_after=1, device="cpu")
    (out / ".curves.png.k1ll3d_x.tmp").write_bytes(b"half a png")          # kill -9 during an atomic write
    (out / "checkpoint" / ".model.safetensors.abcd1234.tmp").write_bytes(b"half")
    (out / "notes.tmp").write_text("mine")                                   # not one of bertscope's: kept
    assert bertscope.api.resume(out, stop_after=2).steps == 2
    assert sorted(p.name for p in out.rglob("*.tmp")) == ["notes.tmp"]


def test_a_held_out_file_that_is_also_trained_on_is_said(tmp_path):
    corpus = write(tmp_path, "c.txt", "some words of text here\n" * 40)
    r = run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "200", "--out", tmp_path / "t",
            "--held-out", corpus)
    assert r.exit_code == 0 and "is also a training file" in r.output, r.output


def test_a_fine_tuned_head_that_another_task_does_not_use_is_said(tiny, tmp_path):
    cls = write(tmp_path, "cls.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(8)))
    assert run("finetune", tiny, "--train", cls, "--out", tmp_path / "cls", "--max-steps", "1").exit_code == 0
    reg = write(tmp_path, "reg.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i / 3}\n" for i in range(8)))
    r = run("finetune", tmp_path / "cls", "--train", reg, "--out", tmp_path / "reg", "--max-steps", "1")
    assert r.exit_code == 0 and "has a fine-tuned classification head, which regression does not use: a new head " \
        "for regression starts from scratch" in r.output, r.output


def test_training_api_arguments_of_the_wrong_type_are_named(tiny, tmp_path):
    data = write(tmp_path, "t.tsv", "sentence\tlabel\na great film\tpos\na dull mess\tneg\n")
    api = bertscope.api
    for call, words in (
            (lambda: api.finetune(tiny, [data], tmp_path / "o"), "got a list; give one file"),
            (lambda: api.finetune(tiny, data, None), "out=None: expected a path"),
            (lambda: api.finetune(tiny, data, tmp_path / "o", tokenizer=5), "tokenizer=5: expected a path"),
            (lambda: api.pretrain(data, tmp_path / "p", tokenizer=tiny, family="bert", max_length="32"),
             "max_length='32': expected a whole number, got a str"),
            (lambda: api.pretrain(data, tmp_path / "p", init=bertscope.from_pretrained(tiny)),
             "init=<a Model>: expected a path (str or pathlib.Path), got a Model; give its checkpoint folder"),
            (lambda: api.train_tokenizer(None, tmp_path / "t", family="bert"),
             "corpus: expected a path or a list of paths; got a NoneType"),
            (lambda: api.pretrain({data}, tmp_path / "p", tokenizer=tiny, family="bert"),
             "corpus: expected a path or a list of paths; a set has no order"),
            (lambda: api.train_tokenizer(data, tmp_path / "t", family="bert", min_frequency=0),
             "--min-frequency 0: expected at least 1"),
            (lambda: api.resume(tmp_path / "o", foo=1), "unknown option 'foo'; a resume may change"),
            (lambda: api.resume(tmp_path / "o", kind="foo"), "kind='foo': expected 'finetune', 'pretrain' or None")):
        with pytest.raises(bertscope.UsageError) as e:
            call()
        assert words in str(e.value), str(e.value)
    assert listing(tmp_path) == ["t.tsv"]


def test_training_api_takes_a_generator_of_files_and_numpy_numbers(tiny, tmp_path):
    import numpy as np
    data = write(tmp_path, "c.txt", "a great film with a fine cast\na dull mess of a film\n" * 4)
    out = tmp_path / "p"
    r = bertscope.api.pretrain((f for f in [data]), out, tokenizer=tiny, family="bert", objective="mlm",
                               max_length=np.int64(32), mlm_probability=np.float32(0.15), max_steps=np.int64(1),
                               batch_size=np.int32(2), device="cpu")
    assert r.finished and r.steps == 1
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))   # written as plain numbers
    assert run["task"]["max_length"] == 32 and run["task"]["mlm_probability"] == 0.15
    assert run["settings"]["batch_size"] == 2 and [f["path"] for f in run["data"]["train"]] == [str(data)]


def test_a_resume_that_starts_at_the_last_step_finishes_the_run(tiny, sst, tmp_path):
    out = tmp_path / "o"                                          # stopped right at its last step (Ctrl-C there)
    assert not bertscope.api.finetune(tiny, sst, out, max_steps=2, batch_size=2, stop_after=2, device="cpu").finished
    r = bertscope.api.resume(out)
    assert r.finished and r.steps == 2 and (out / "model.safetensors").exists()


def test_first_commands_with_resume_added_run_for_bf16_starts_init_and_word_files(tiny, sst, tmp_path, monkeypatch):
    import bertscope.kernels
    monkeypatch.setattr(bertscope.kernels, "bf16_on_cpu", lambda: (False, "no bf16 here (a test)"))
    out = tmp_path / "b"                                   # --bf16 where it does not pay: the run records fp32
    bertscope.api.finetune(tiny, sst, out, bf16=True, save_every=1, stop_after=1, max_steps=2, batch_size=2,
                           device="cpu")
    r = run("finetune", tiny, "--train", sst, "--out", out, "--bf16", "--max-steps", "2", "--batch-size", "2",
            "--resume", out)
    assert r.exit_code == 0 and "done: 2 steps" in r.output, r.output
    corpus = write(tmp_path, "c.txt", "a great film with a fine cast\na dull mess of a film\n" * 4)
    words = write(tmp_path, "w.txt", "a great film with a fine cast\na dull mess of a film\n")
    base = ["pretrain", "--tokenizer", tiny, "--corpus", corpus, "--objective", "mlm", "--steps", "2",
            "--batch-size", "2", "--max-length", "32"]
    for name, api_args, typed in (
            ("local", dict(family="bert", start="local", freeze=("encoder.layers.0",)),
             ["--family", "bert", "--start", "local", "--freeze", "encoder.layers.0"]),
            ("init", dict(init=tiny, start="standard"), ["--init", tiny, "--start", "standard"]),
            ("words", dict(family="bert", whole_word=f"words:{words}"),
             ["--family", "bert", "--whole-word", f"words:{tmp_path / 'sub' / '..' / 'w.txt'}"])):
        (tmp_path / "sub").mkdir(exist_ok=True)
        p = tmp_path / name
        assert not bertscope.api.pretrain(corpus, p, tokenizer=tiny, objective="mlm", max_steps=2, batch_size=2,
                                          max_length=32, save_every=1, stop_after=1, device="cpu",
                                          **api_args).finished
        r = run(*base, *typed, "--out", p, "--resume", p)
        assert r.exit_code == 0 and "done: 2 steps" in r.output, (name, r.output)
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    refused(run("pretrain", "--init", other, "--resume", tmp_path / "init"), "--init")


def test_a_diverged_run_says_what_its_folder_holds_and_what_to_run_next(tiny, sst, tmp_path):
    out = tmp_path / "o"
    assert run("finetune", tiny, "--train", sst, "--out", out, "--max-steps", "1").exit_code == 0
    refused(run("finetune", tiny, "--train", sst, "--out", out, "--overwrite", "--max-steps", "2", "--lr", "1e10"),
            f"({out} holds this run's run.json and what it saved: add --overwrite, or choose another --out)")
    p = tmp_path / "p"
    rows = write(tmp_path, "r.tsv", "sentence\tlabel\n" + "a great film\tpos\na dull mess\tneg\n" * 4)
    bertscope.api.finetune(tiny, rows, p, save_every=1, stop_after=1, max_steps=3, batch_size=2, lr=1e9,
                           device="cpu")                   # step 1 saved; step 2 diverges, on the resume
    refused(run("finetune", "--resume", p), "step 2: the gradient's norm is nan",
            "(a resumed run keeps its --lr: start the run again with --overwrite, or choose another --out)")



def test_a_multi_output_regression_head_is_named_not_a_traceback(tiny, tmp_path):
    folder = tmp_path / "reg3"
    model = bertscope.from_pretrained(tiny, head="classification", num_labels=3, reinit_head=True)
    model.config = model.config.replace(problem_type="regression")
    bertscope.save_pretrained(model, folder)
    bertscope.load_tokenizer(tiny).save(folder)
    rows = write(tmp_path, "r.tsv", "sentence\tlabel\na great film\t0.5\na dull mess\t-1.5\n")
    for command in ("evaluate", "predict"):
        refused(run(command, folder, rows), "problem_type 'regression' with 3 outputs; bertscope's regression reads "
                "one number a row")


def test_pair_labels_of_the_other_objective_are_refused():
    need_shared()
    for name, right, wrong in (("bert", "next_sentence_label", "sentence_order_label"),
                               ("albert", "sentence_order_label", "next_sentence_label")):
        model = bertscope.from_pretrained(TINY / name, head="pretraining")
        ids, pairs = torch.randint(5, 90, (2, 6)), torch.tensor([0, 1])
        assert torch.isfinite(model(input_ids=ids, **{right: pairs}).pair_loss)
        for given in ({wrong: pairs}, {right: pairs, wrong: pairs}):
            with pytest.raises(bertscope.InputError, match=f"{wrong}: this .* pretraining head is trained with {right}"):
                model(input_ids=ids, **given)


def test_encode_and_explain_refuse_options_their_input_does_not_read(tiny, tmp_path):
    texts = write(tmp_path, "t.txt", "a great film\n")
    refused(run("encode", tiny, "a great film", "--length", "5"), "--length 5 sizes the random ids")
    refused(run("encode", tiny, "-f", texts, "--batch", "3"), "--batch 3 sizes the random ids")
    refused(run("encode", tiny, "-f", texts, "--column", "text"), "--column text: names a column of .tsv")
    refused(run("encode", tiny, "a great film", "--column", "text"), "--column text names a column of --file")
    refused(run("explain", tiny, "--text", "a great film", "--batch", "5"), "--batch 5 sizes the random input")
    refused(run("explain", tiny, "--text", ""), "--text is empty")
    assert run("encode", tiny, "a great film").exit_code == 0
    assert run("explain", tiny, "--length", "8", "--batch", "3").exit_code == 0


# ---- the model-side hunt's open list ------------------------------------------------------------------------------

def test_model_side_api_arguments_of_the_wrong_type_are_named(tiny, tmp_path):
    loaded = bertscope.api.load(tiny)
    texts = write(tmp_path, "t.txt", "".join(f"a line of text number {i}\n" for i in range(20)))
    for call, words in ((lambda: bertscope.api.encode(loaded, loaded.model, batch="2"), "--batch '2'"),
                        (lambda: bertscope.api.encode(loaded, loaded.model, ["a"], batch_size=2.5), "--batch-size 2.5"),
                        (lambda: bertscope.api.check(str(tiny), length="5"), "--length '5'"),
                        (lambda: bertscope.api.check(str(tiny), length=5, batch="5"), "--batch '5'"),
                        (lambda: bertscope.api.fill_mask(loaded, "a [MASK] b", top_k="3"), "--top-k '3'"),
                        (lambda: bertscope.api.fill_mask(loaded, ["a [MASK] b"]), "one text (a str)"),
                        (lambda: bertscope.api.bench(loaded, loaded.model, {"a": 1}), "got a dict"),
                        (lambda: bertscope.api.quantize(loaded, texts, tmp_path / "q", alpha="0.5"), "alpha='0.5'"),
                        (lambda: bertscope.api.quantize(loaded, ["a text"], tmp_path / "q"), "calibration=['a text']"),
                        (lambda: loaded.model.prune_heads({"a": [1]}), "prune_heads takes {layer: [head, ...]}")):
        with pytest.raises(bertscope.BertscopeError) as e:
            call()
        assert words in str(e.value)
    assert not (tmp_path / "q").exists()
    refused(run("encode", ""), "MODEL: the path is empty")


def test_numpy_whole_numbers_are_taken_everywhere_and_strs_named(tiny, classifier, tmp_path):
    # a grid search's np.int64 was refused with 'expected at least 1' (which it is); each comes back as Python's int
    import numpy as np
    loaded = bertscope.api.load(tiny)
    texts = write(tmp_path, "t.txt", "a great film\na dull mess of a film that goes on and on and on\n")
    rows = list(bertscope.api.predict(bertscope.api.load(classifier), texts, max_length=np.int64(8),
                                      batch_size=np.int64(1), chunk=np.int32(1), windows=np.int64(2)))
    assert len(rows) == 2
    conll = write(tmp_path, "t.conll", "John\tB-PER\nruns\tO\n\nMary\tB-PER\nsat\tO\n")     # into run.json
    bertscope.api.finetune(tiny, conll, tmp_path / "w", max_steps=1, windows=np.int64(2), device="cpu")
    assert json.loads((tmp_path / "w" / "run.json").read_text())["task"]["windows"] == 2
    info = bertscope.api.embed(loaded, texts, tmp_path / "e.jsonl", batch_size=np.int64(2), chunk=np.int64(1),
                               max_length=np.int64(8), windows=np.int64(2))
    assert info["max_length"] == 8 and type(info["max_length"]) is int and json.dumps(info)
    threads = torch.get_num_threads()
    bertscope.api.common.set_threads(np.int64(1))
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    encodings = loaded.tokenizer.encode_batch(["a great film with a fine cast"], max_length=np.int64(4))
    assert len(encodings[0].ids) == 4
    loaded = bertscope.api.load(classifier)
    for call, words in ((lambda: list(bertscope.api.predict(loaded, texts, batch_size="2")), "--batch-size '2'"),
                        (lambda: list(bertscope.api.predict(loaded, texts, chunk=2.0)), "--chunk 2.0"),
                        (lambda: bertscope.api.common.set_threads("1"), "--threads '1'"),
                        (lambda: list(bertscope.api.predict(loaded, texts, max_length=np.float64(8))),
                         "expected a whole number, got a float64")):
        with pytest.raises(bertscope.UsageError) as e:
            call()
        assert words in str(e.value), str(e.value)


def test_check_refuses_options_of_a_check_not_asked_for_and_checks_conll_tags(tiny, tmp_path):
    need_shared()
    conll = DATA / "wnut16" / "dev.conll"
    refused(run("check", tiny, "--length", "16", "--num-labels", "3"), "--num-labels applies to the check of --data")
    refused(run("check", tiny, "--ids-file", write(tmp_path, "i.txt", "101 102\n"), "--pairs"),
            "--pairs applies to the check of --length")
    refused(run("check", tiny, "--data", conll, "--batch", "4"), "--batch applies to the check of --length")
    refused(run("check", tiny, "--length", "16", "--label-column", "y"), "--label-column applies")
    # a token model's tags are read from a CoNLL file (it used to be 'unsupported file type')
    folder = tmp_path / "tok3"
    model = bertscope.from_pretrained(tiny, head="token-classification", num_labels=3, reinit_head=True)
    bertscope.save_pretrained(model, folder)
    r = run("check", folder, "--data", conll)
    assert r.exit_code == 1 and "the data has 21 classes (B-company" in r.output and "the classifier has 3" in r.output
    assert run("check", folder, "--data", conll, "--num-labels", "21").exit_code == 0
    refused(run("check", folder, "--data", conll, "--label-column", "tag"), "holds a tag per word")
    bad = write(tmp_path, "bad.conll", "Zhang\tI-PER\nXiao\tI-PER\nin\tO\nJing\tB-LOC\n\n")   # an I- first
    r = run("check", folder, "--data", bad, "--num-labels", "3")
    assert r.exit_code == 1 and "bad.conll line 1: tag 'I-PER' of 'Zhang'" in r.output, r.output   # as finetune says
    cls = tmp_path / "cls3"
    bertscope.save_pretrained(bertscope.from_pretrained(tiny, head="classification", num_labels=3,
                                                        reinit_head=True), cls)
    refused(run("check", cls, "--data", conll), "holds a tag per word, and this model labels whole texts")
    table = write(tmp_path, "t.tsv", "text\tlabel\na good film\tpos\n")          # and the other way round
    refused(run("check", folder, "--data", table), "not word tags, and this model tags words")
    refused(run("check", folder, "--data", tmp_path / "typo.txt"), "typo.txt: no such file")
    qa = tmp_path / "qa"
    bertscope.save_pretrained(bertscope.from_pretrained(tiny, head="question-answering", reinit_head=True), qa)
    refused(run("check", qa, "--data", table), "a question-answering model has none")


def test_a_config_pruning_heads_it_does_not_have_names_the_file(tmp_path):
    need_shared()
    for pruned, words in (({"0": [7]}, "pruned_heads names heads [7] of layer 0; it has heads 0..3"),
                          ({"9": [1]}, "pruned_heads names layer 9; this model has layers 0..1"),
                          ({"0": [0, 1, 2, 3]}, "pruned_heads removes every head of layer 0")):
        folder = tmp_path / "p"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(TINY / "bert-cls", folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "pruned_heads": pruned}))
        refused(run("encode", folder), f"{folder / 'config.json'}: {words}")


def test_direct_calls_that_would_score_nothing_or_ignore_an_argument_are_refused():
    need_shared()
    mlm = bertscope.from_pretrained(TINY / "bert", head="mlm")
    cls = bertscope.from_pretrained(TINY / "bert-cls")
    ids = torch.randint(5, 100, (2, 6))
    with pytest.raises(bertscope.InputError, match="masked_only=True .* give the labels"):
        mlm(input_ids=ids, masked_only=True)
    with pytest.raises(bertscope.InputError, match="head 'classification', with no masked-LM head"):
        cls(input_ids=ids, masked_only=True)
    with pytest.raises(bertscope.InputError, match=r"every one of the labels is -100 .* \(it would be NaN\)"):
        mlm(input_ids=ids, labels=torch.full_like(ids, -100))
    labels = torch.full_like(ids, -100)
    labels[1, 2] = 7
    assert torch.isfinite(mlm(input_ids=ids, labels=labels, masked_only=True).mlm_loss)
    with pytest.raises(bertscope.InputError, match="the label of sequence 1 is 7"):
        cls(input_ids=ids, labels=torch.tensor([0, 7]))
    embeds = torch.randn(1, 200, cls.config.hidden_size)
    with pytest.raises(bertscope.InputError, match="^inputs_embeds has 200 tokens"):
        cls(inputs_embeds=embeds)


def test_length_messages_name_what_was_given(tiny):
    need_shared()
    r = run("check", TINY / "bert-cls", "--length", "600")
    assert r.exit_code == 1 and "a planned sequence has 600 tokens" in r.output and "input_ids" not in r.output
    refused(run("encode", TINY / "bert-cls", "--length", "600"), "--length 600: this BERT model takes at most 128")


def test_explain_and_draw_show_a_head_the_checkpoint_lacks_from_random_weights():
    need_shared()
    r = run("explain", TINY / "bert", "--head", "question-answering")
    assert r.exit_code == 0 and "head question-answering" in r.output and "qa_outputs" in r.output
    loaded = bertscope.api.load(TINY / "bert", head="question-answering", shapes_only=True)
    assert "not in the checkpoint: random weights, shapes only" in loaded.description
    with pytest.raises(bertscope.CheckpointError, match="missing from the checkpoint"):
        bertscope.api.load(TINY / "bert", head="question-answering")       # to run it, it is still refused


def test_damaged_tokenizer_and_weights_files_are_named(tmp_path):
    need_shared()
    folder = tmp_path / "bpe"
    shutil.copytree(TINY / "bert-cls", folder)
    (folder / "vocab.json").write_text('{"a": 0}')
    refused(run("encode", folder, "hello"), "has vocab.json but no merges.txt")
    (folder / "vocab.json").unlink()
    (folder / "pytorch_model.bin").symlink_to(tmp_path / "gone.bin")    # a leftover the safetensors come before
    assert run("encode", folder).exit_code == 0
    assert run("check", folder, "--length", "16").exit_code == 0
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    refused(run("encode", folder), "model.safetensors: a link to", "which does not exist")


def test_check_reads_a_shard_index_and_names_a_missing_shard(tmp_path):
    need_shared()
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(TINY / "bert-cls" / "config.json", folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"bert.embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors"}}))
    refused(run("check", folder, "--length", "16"), "lists shard model-00001-of-00002.safetensors, which is not in")


def test_the_cut_note_names_the_run_json_length_and_int8_notes_name_the_folder(classifier, tmp_path, monkeypatch):
    long = write(tmp_path, "long.txt", "word " * 300 + "\nshort\n")
    r = run("predict", classifier, long)
    assert r.exit_code == 0
    assert "1 texts were longer than the 128 tokens the model was fine-tuned at (its run.json" in r.output
    assert "1 texts were longer than --max-length 64" in run("predict", classifier, long, "--max-length", "64").output
    # a quantized folder runs int8 unasked: its notes do not speak of an --int8 the user did not give
    from bertscope import kernels
    calibration = write(tmp_path, "cal.txt", "".join(f"a line of text number {i}\n" for i in range(20)))
    assert run("quantize", classifier, "--calibrate", calibration, "--out", tmp_path / "q").exit_code == 0
    monkeypatch.setattr(kernels, "int8_on_cpu", lambda: (False, "this CPU has no VNNI"))
    r = run("predict", tmp_path / "q", long)
    assert r.exit_code == 0 and "this folder's int8 calibration (bertscope quantize): this CPU has no VNNI" in r.output
    assert "--int8" not in r.output
    assert "--int8: this CPU has no VNNI; running in fp32" in run("predict", classifier, long, "--int8").output


def test_int8_calibrated_on_a_few_texts_of_the_input_warns(classifier, tmp_path, monkeypatch):
    from bertscope import kernels
    monkeypatch.setattr(kernels, "int8_on_cpu", lambda: (True, ""))
    monkeypatch.setattr(kernels, "bf16_beats_int8", lambda: None)
    texts = write(tmp_path, "t.txt", "".join(f"text number {i}\n" for i in range(4)))
    r = run("predict", classifier, texts, "--int8", "--chunk", "1")
    assert r.exit_code == 0, r.output
    assert "warning: --int8: calibrated on the first 1 texts of the input" in r.output
    assert "a --chunk of at least 16" in r.output
    r = run("predict", classifier, write(tmp_path, "m.txt", "".join(f"text {i}\n" for i in range(20))), "--int8")
    assert "calibrated on the first 20 texts" in r.output and "warning" not in r.output


def test_a_reader_that_stops_early_ends_predict_quietly_with_status_141(classifier, tmp_path):
    import signal
    import subprocess
    import sys
    if not hasattr(signal, "SIGPIPE"):
        pytest.skip("no SIGPIPE on this platform")
    texts = write(tmp_path, "many.txt", "".join(f"line {i} is a text to label\n" for i in range(5000)))
    p = subprocess.Popen([sys.executable, "-m", "bertscope.cli", "predict", str(classifier), str(texts)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"label\t")      # `| head -1`: one line read, then the pipe closed
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err and "error" not in err, err


# ---- the task-side hunt (this stop) -------------------------------------------------------------------------------

def test_task_options_of_the_wrong_type_are_named_in_the_api(classifier, tiny, tmp_path):
    loaded = bertscope.api.load(classifier)
    texts = write(tmp_path, "t.txt", "a great film\n")
    for kwargs, words in ((dict(threshold="0.5"), "threshold='0.5': expected a number"),
                          (dict(windows="4"), "windows='4': expected a whole number"),
                          (dict(max_answer_length=2.5), "max_answer_length=2.5: expected a whole number"),
                          (dict(int8="no"), "int8='no': expected True or False"),
                          (dict(max_length="64"), "max_length='64': expected a whole number")):
        with pytest.raises(bertscope.UsageError, match=re.escape(words)):
            list(bertscope.api.predict(loaded, texts, **kwargs))
    refused(run("predict", classifier, texts, "--always-answer"), "--always-answer applies to question answering")
    with pytest.raises(bertscope.UsageError, match=re.escape("source=['x.tsv']: expected a path")):
        bertscope.api.evaluate(loaded, ["x.tsv"])
    with pytest.raises(bertscope.UsageError, match="skip_bad_rows='no': expected True or False"):
        bertscope.api.evaluate(loaded, texts, skip_bad_rows="no")
    conll = write(tmp_path, "t.conll", "John\tB-PER\nruns\tO\n")
    for kwargs, words in ((dict(label_all_pieces="false"), "label_all_pieces='false': expected True or False"),
                          (dict(doc_stride="16"), "doc_stride='16': expected a whole number")):
        with pytest.raises(bertscope.UsageError, match=re.escape(words)):
            bertscope.api.finetune(tiny, conll, tmp_path / "o", max_steps=1, device="cpu", **kwargs)
    assert not (tmp_path / "o").exists()


def test_pool_is_refused_for_word_tags_and_jsonl_tags_are_read_as_conll_tags(tiny, tmp_path):
    conll = write(tmp_path, "t.conll", "John\tB-PER\nruns\tO\n\nMary\tB-PER\nsat\tO\n")
    out = tmp_path / "ner"
    assert run("finetune", tiny, "--train", conll, "--out", out, "--max-steps", "1").exit_code == 0
    refused(run("predict", out, conll, "--windows", "4", "--pool", "max"), "--pool max", "most central")
    tagged = write(tmp_path, "t.jsonl", '{"tokens": ["John", "runs"], "tags": ["B-PER ", "O"]}\n')
    from bertscope.data import read_conll
    assert read_conll(tagged).tags == [["B-PER", "O"]]
    refused(run("finetune", tiny, "--train", write(tmp_path, "b.jsonl", '{"tokens": ["John", " "], "tags": '
                                                   '["B-PER", "O"]}\n'), "--out", tmp_path / "b"),
            "b.jsonl line 1", "a token is blank")


def test_a_multi_label_model_predicts_at_its_runs_threshold_and_tsv_cells_are_escaped(tiny, tmp_path):
    rows = write(tmp_path, "ml.tsv", "text\tlabels\n" + "".join(f"text number {i}\t{'a|b' if i % 2 else 'b'}\n"
                                                                for i in range(8)))
    out = tmp_path / "ml"
    r = run("finetune", tiny, "--train", rows, "--label-column", "labels", "--out", out, "--max-steps", "1",
            "--threshold", "0.99")
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in run("predict", out, rows, "--format", "jsonl").stdout.splitlines()]
    assert got and all(r["labels"] == [] for r in got)                   # no probability reaches 0.99
    got = [json.loads(line) for line in run("predict", out, rows, "--format", "jsonl", "--threshold",
                                            "0.01").stdout.splitlines()]
    assert all(set(r["labels"]) == {"a", "b"} for r in got)
    m = json.loads(run("evaluate", out, rows, "--format", "json").stdout)
    assert m["micro_f1"] == 0
    # words and labels holding a tab or a newline keep the TSV's columns
    from bertscope.cli.running import _tsv
    assert _tsv({"words": ["a\tb", "c"], "tags": ["O", "B-x\ny"]}, []) == "a\\tb\tO\nc\tB-x\\ny\n"
    assert _tsv({"label": "po\ts", "probabilities": {"po\ts": 0.5}, "text": "t"}, ["po\ts"]) == "po\\ts\t0.5000\tt"


def test_no_answer_is_the_files_or_the_runs_never_the_chunks(tiny, tmp_path):
    context = "The quick brown fox jumps over the lazy dog. Paris is the capital of France."
    qas = [{"id": "a", "question": "What jumps?", "answers": [{"text": "The quick brown fox", "answer_start": 0}]},
           {"id": "b", "question": "Who won?", "answers": [], "is_impossible": True}]
    v2 = write(tmp_path, "v2.json", json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    new = write(tmp_path, "new.json", json.dumps({"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "c", "question": "What is the capital?"}, {"id": "d", "question": "Who is there?"}]}]}]}))
    out = tmp_path / "qa"
    assert run("finetune", tiny, "--train", v2, "--out", out, "--max-steps", "1", "--max-length", "64").exit_code == 0
    assert json.loads((out / "run.json").read_text())["task"]["no_answer"] is True    # trained on SQuAD v2.0
    from bertscope.tasks.question_answering import QuestionAnswering
    t = QuestionAnswering(max_length=64)
    first = next(t.chunks(v2, 1, labelled=False))                     # a chunk holding only the answerable one
    assert [q.id for q in first] == ["a"] and t.file_no_answer is True
    def answers(*options):
        r = run("predict", out, new, "--format", "jsonl", *options)
        assert r.exit_code == 0, r.output
        return [json.loads(line) for line in r.stdout.splitlines()]
    assert answers() == answers("--chunk", "1") == answers("--no-answer")
    assert all(a["answer"] for a in answers("--always-answer"))


def test_json_lists_in_a_tsv_cell_are_guessed_as_multi_label(tmp_path):
    from bertscope.tasks import guess
    rows = write(tmp_path, "ml.tsv", 'text\tlabel\ngood fun film\t["good", "fun"]\nboring\t[]\nfun times\t["fun"]\n')
    assert guess(rows)[0] == "multi-label"
    plain = write(tmp_path, "c.tsv", "text\tlabel\ngood film\t[pos]\nbad\tneg\n")    # brackets, not a JSON list
    assert guess(plain)[0] == "classification"


# ---- the task-side hunt's open list -------------------------------------------------------------------------------

def test_word_tags_are_read_from_what_holds_them_and_words_without_pieces_are_said(tiny, tmp_path):
    # a word that becomes no token (a zero-width space) is neither learnt from nor seen: said, with its line
    conll = write(tmp_path, "t.conll", "John\tB-PER\n\u200b\tB-LOC\nruns\tO\n\nMary\tB-PER\nsat\tO\n")
    out = tmp_path / "ner"
    r = run("finetune", tiny, "--train", conll, "--out", out, "--max-steps", "1")
    assert r.exit_code == 0 and "1 word became no token at all (first: '\\u200b', line 2" in r.output, r.output
    assert "no tag is learnt from it" in r.output
    r = run("predict", out, conll, "--format", "jsonl")
    assert r.exit_code == 0 and "tagged 'O' with score 0" in r.output, r.output
    # a SQuAD .json or a CoNLL on standard input is not read as sentences, one a line
    squad = write(tmp_path, "q.json", '{"data": []}\n')
    refused(run("predict", out, squad), "q.json: a .json file is SQuAD-style questions")
    refused(run("predict", out, "-", input="John\tB-PER\nruns\tO\n"), "<stdin> line 1",
            "or words and their tags as a CoNLL file (.conll")
    # W-NUT's own files are .txt: a word, a tab and a tag a line is guessed as word tags and read as such
    txt = write(tmp_path, "wnut.txt", "John\tB-PER\nruns\tO\n\nMary\tB-PER\nsat\tO\n")
    r = run("finetune", tiny, "--train", txt, "--out", tmp_path / "t2", "--max-steps", "1")
    assert r.exit_code == 0 and "token-classification" in r.output and "a tab and a tag" in r.output, r.output
    got = [json.loads(x) for x in run("predict", out, txt, "--format", "jsonl").stdout.splitlines()]
    assert [g["words"] for g in got] == [["John", "runs"], ["Mary", "sat"]]
    from bertscope.data import is_conll
    assert not is_conll(write(tmp_path, "plain.txt", "a text\twith a tab in it\nand another line\n"))
    assert not is_conll(write(tmp_path, "lexicon.txt", "Paris\tFrance\nRome\tItaly\nthe\t52301\n"))  # no sentences
    assert is_conll(write(tmp_path, "pos.txt", "his\tPRP$\ndog\tNN\n\n``\t``\nevent\tevent-attack/battle/war\n"))


def test_a_one_column_table_without_a_header_is_not_read_a_text_short(classifier, tmp_path):
    headless = write(tmp_path, "h.tsv", "a great film with a fine cast and a plot\na dull mess\n")
    refused(run("predict", classifier, headless), "h.tsv line 1", "reads as a text", "name it with --text-column",
            "add a header line")
    named = write(tmp_path, "n.tsv", "review\na great film with a fine cast\na dull mess\n")
    assert len(run("predict", classifier, named, "--format", "jsonl").stdout.splitlines()) == 2


def test_a_question_without_an_id_is_named(tmp_path):
    from bertscope.answers import read_squad
    qa = write(tmp_path, "q.json", json.dumps({"data": [{"paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": " ", "question": "Where is Paris?"}]}]}]}))
    with pytest.raises(bertscope.DataError, match=r"\.id: only spaces; give each question an id of its own"):
        read_squad(qa)


def test_a_quantized_folder_off_the_cpu_says_it_runs_fp32(tiny):
    # no GPU here: a model on the meta device stands in for one placed off the CPU (nothing is run)
    from bertscope.api.common import Loaded
    from bertscope.api.running import _int8
    model = bertscope.from_pretrained(tiny).to("meta")
    events = []
    _int8(Loaded(model, None, "q", None), None, events.append, asked=None)
    assert model.int8 == [] and len(events) == 1
    assert "this folder's int8 calibration (bertscope quantize) is not used on the GPU (meta" in events[0]["message"]
    with pytest.raises(bertscope.UsageError, match="--int8 runs on the CPU"):
        _int8(Loaded(bertscope.from_pretrained(tiny).to("meta"), None, "q", None), None, events.append,
              asked=True)


# ---- the hunt through pretraining, the tokenizer and embed (2026-12-05, evening) -----------------------------------

def test_nsp_on_one_document_is_refused_and_blank_lines_make_documents(tiny, tmp_path):
    lines = "".join(f"sentence number {i} of the corpus . and another one here .\n" for i in range(40))
    one = write(tmp_path, "one.txt", lines)              # one sentence a line, no blank line: one document
    common = ("--family", "bert", "--config", "tiny", "--tokenizer", tiny, "--steps", "1", "--batch-size", "2",
              "--max-length", "32")
    refused(run("pretrain", *common, "--corpus", one, "--out", tmp_path / "a"), "one.txt: one document",
            "every pair would be a true one", "--objective mlm")
    assert not (tmp_path / "a").exists()
    assert run("pretrain", *common, "--corpus", one, "--out", tmp_path / "b", "--objective", "mlm").exit_code == 0
    docs = write(tmp_path, "docs.txt", lines.replace("number 20 ", "number 20 .\n\n"))
    r = run("pretrain", *common, "--corpus", docs, "--out", tmp_path / "c")
    assert r.exit_code == 0 and "2 documents" in r.output, r.output


def test_init_with_another_vocabulary_is_refused(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "".join(f"the cat number {i} sat on the mat\n\n" for i in range(30)))
    assert run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "100", "--out",
               tmp_path / "tok").exit_code == 0
    refused(run("pretrain", "--init", tiny, "--tokenizer", tmp_path / "tok", "--corpus", corpus, "--out",
                tmp_path / "p", "--steps", "1"), "is not the one of --init", "leave --tokenizer out")
    assert not (tmp_path / "p").exists()


def test_an_overwritten_run_stopped_early_leaves_no_earlier_model_and_says_how_to_go_on(tiny, sst, tmp_path):
    out = tmp_path / "o"
    assert bertscope.api.finetune(tiny, sst, out, max_steps=1, batch_size=2, device="cpu").finished
    write(out, "int8.safetensors", b"an earlier quantization")
    r = bertscope.api.finetune(tiny, sst, out, max_steps=4, batch_size=2, stop_after=1, save_every=1,
                               overwrite=True, device="cpu")
    assert not r.finished
    assert not any((out / f).exists() for f in ("model.safetensors", "config.json", "int8.safetensors"))
    assert json.loads((out / "run.json").read_text())["settings"]["max_steps"] == 4
    for args in (("embed", out, sst, "--out", tmp_path / "e.npy"), ("predict", out, sst)):
        refused(run(*args), "a training run that has not saved its model yet", f"{out / 'checkpoint'}",
                f"bertscope finetune --resume {out}")
    assert bertscope.api.resume(out).finished and (out / "model.safetensors").exists()


def test_predict_says_blank_lines_skipped(classifier, tmp_path):
    texts = write(tmp_path, "b.txt", "good film\n\n\nbad film\n")
    r = run("predict", classifier, texts, "--format", "jsonl")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2, r.output
    assert "b.txt: 2 blank lines skipped (first: line 2), so the predictions follow its non-blank lines" in r.output


def test_embed_says_blank_lines_and_quantize_refuses_a_column_of_plain_text(tiny, tmp_path):
    texts = write(tmp_path, "b.txt", "hello world\n\nthe cat sat\n")
    r = run("embed", tiny, texts, "--out", tmp_path / "e.npy")
    assert r.exit_code == 0 and "1 blank line skipped (first: line 2), so the rows of e.npy follow its non-blank " \
        "line" in r.output, r.output
    refused(run("quantize", tiny, "--calibrate", texts, "--column", "nope", "--out", tmp_path / "q"),
            "--column nope: names a column", "b.txt is read as plain text")


def test_an_output_folder_that_cannot_be_made_is_said_before_the_work(tmp_path, monkeypatch):
    import errno

    import bertscope.io
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(bertscope.io.tempfile, "mkdtemp", read_only)
    with pytest.raises(bertscope.errors.OutputError, match="cannot write there"):
        bertscope.io.check_output_folder(tmp_path / "new")


def test_pretrain_takes_the_family_its_tokenizer_was_trained_for(tmp_path):
    need_shared()
    corpus = write(tmp_path, "c.txt", "".join(f"the cat number {i} sat on the mat . it was a good cat .\n\n"
                                              for i in range(30)))
    assert run("tokenizer", "train", corpus, "--family", "albert", "--vocab-size", "120", "--out",
               tmp_path / "tok").exit_code == 0
    r = run("pretrain", "--tokenizer", tmp_path / "tok", "--corpus", corpus, "--out", tmp_path / "p", "--steps", "1",
            "--batch-size", "2", "--max-length", "32")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p" / "config.json").read_text())["model_type"] == "albert"
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(MINILM / "vocab.txt", bare / "vocab.txt")                  # names no family
    refused(run("pretrain", "--tokenizer", bare, "--corpus", corpus, "--out", tmp_path / "q", "--steps", "1"),
            "--family: say which model family", "the tokenizer folder names none")


def test_fill_mask_keeps_the_other_masks_and_names_only_tokens_the_tokenizer_has(tmp_path):
    need_shared()
    corpus = write(tmp_path, "c.txt", "".join((DATA / "wikitext2" / "valid.txt").read_text().splitlines(True)[:300]))
    assert run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "900", "--out",
               tmp_path / "tok").exit_code == 0
    m = tmp_path / "m"                               # 1000 embedding rows, a tokenizer of 900 tokens
    shutil.copytree(tmp_path / "tok", m)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(TINY / "bert" / f, m / f)
    loaded = bertscope.api.load(m)
    masks = bertscope.api.fill_mask(loaded, "[MASK] hello [MASK] world", top_k=1000)
    assert [len(x["candidates"]) for x in masks] == [loaded.tokenizer.vocab_size] * 2
    first = masks[0]["candidates"][0]
    assert first["text"] == f"{first['token']} hello [MASK] world"
    assert all(c["text"].startswith("[MASK] hello") for c in masks[1]["candidates"])


def test_a_table_is_not_a_pretraining_corpus(tiny, tmp_path):
    table = write(tmp_path, "s.tsv", "sentence\tlabel\nhello world\t1\n")
    refused(run("masks", table, "--tokenizer", tiny, "--out", tmp_path / "x.jsonl"), "s.tsv: a .tsv file is a table",
            "a corpus is plain text")
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", table, "--out", tmp_path / "p",
                "--steps", "1"), "s.tsv: a .tsv file is a table")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "p").exists()


# ---- the hunt through explain, check, windows, regression, multi-label and QA ---------------------------------

def test_a_decoder_config_is_refused_not_read_as_an_encoder(tmp_path):
    need_shared()
    for key in ("is_decoder", "add_cross_attention"):
        folder = tmp_path / key
        shutil.copytree(TINY / "bert", folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, key: True}))
        refused(run("explain", folder), f"{key} is true", "describes a decoder", "two-way encoder")
        with pytest.raises(bertscope.ConfigError, match="causal attention"):
            bertscope.from_pretrained(folder)


def test_yes_no_arguments_of_the_api_refuse_strings(tiny, tmp_path):
    loaded = bertscope.api.load(tiny)
    texts = write(tmp_path, "t.txt", "a line\nanother line\n")
    for call, name in ((lambda: bertscope.api.embed(loaded, texts, tmp_path / "e.npy", normalize="no"), "normalize"),
                       (lambda: bertscope.api.place(loaded, "cpu", bf16="no"), "bf16"),
                       (lambda: bertscope.api.place(loaded, "cpu", compile="no"), "compile"),
                       (lambda: bertscope.api.trace(loaded, unfold="no"), "unfold"),
                       (lambda: bertscope.api.check(str(tiny), length=8, pairs="no"), "pairs"),
                       (lambda: bertscope.api.load(tiny, need_tokenizer="no"), "need_tokenizer"),
                       (lambda: bertscope.api.train_tokenizer(texts, tmp_path / "tok", family="bert", vocab_size=200,
                                                              lowercase="no"), "lowercase")):
        with pytest.raises(bertscope.UsageError, match=f"{name}='no': expected True or False"):
            call()
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert listing(tmp_path) == ["t.txt"]


def test_api_texts_and_paths_of_the_wrong_kind_are_named(tiny, tmp_path):
    import numpy as np
    loaded = bertscope.api.load(tiny)
    texts = write(tmp_path, "t.txt", "a line\nanother line\n")
    by_list = bertscope.api.encode(loaded, loaded.model, ["a line", "another"]).embeddings
    assert torch.equal(bertscope.api.encode(loaded, loaded.model, np.array(["a line", "another"])).embeddings, by_list)
    for call, words in ((lambda: bertscope.api.encode(loaded, loaded.model, {"a": 1}), "got a dict"),
                        (lambda: bertscope.api.trace(loaded, ["a", 3]), "texts[1]: expected a text (str), got a int"),
                        (lambda: bertscope.api.embed(loaded, ["a b"], tmp_path / "v.npy"), "source=['a b']: expected a path"),
                        (lambda: bertscope.api.embed(loaded, texts, None), "out=None"),
                        (lambda: bertscope.api.quantize(loaded, texts, None), "out=None"),
                        (lambda: bertscope.api.pick_device(None), "--device None"),
                        (lambda: bertscope.api.masks(texts, tmp_path / "m.jsonl", tokenizer=tiny, seed="1"),
                         "--seed '1': expected a whole number"),
                        (lambda: bertscope.api.masks(texts, tmp_path / "m.jsonl", tokenizer=tiny, seed=1.5),
                         "--seed 1.5")):
        with pytest.raises(bertscope.BertscopeError, match=re.escape(words)):
            call()
    assert listing(tmp_path) == ["t.txt"]                    # no temporary file left behind


@pytest.fixture(scope="module")
def label_runs(tiny_folder, tmp_path_factory):
    """One-step runs of each sentence task on tiny tables: classification, multi-label, regression, pairs."""
    d = tmp_path_factory.mktemp("label_runs")
    tables = {"cls": "text\tlabel\n" + "".join(f"text number {i}\t{i % 2}\n" for i in range(8)),
              "ml": "text\tlabel\n" + "".join(f"text number {i}\t{['fun', 'sad', 'fun|long'][i % 3]}\n"
                                               for i in range(9)),
              "reg": "text\tlabel\n" + "".join(f"text number {i}\t{i / 4}\n" for i in range(8)),
              "pair": "premise\thypothesis\tlabel\n" + "".join(f"a premise {i}\tits hypothesis\t{i % 2}\n"
                                                               for i in range(8))}
    runs = {}
    for name, table in tables.items():
        data = write(d, f"{name}.tsv", table)
        extra = ("--text-column", "premise", "--pair-column", "hypothesis") if name == "pair" else ()
        extra += ("--windows", "2", "--max-length", "8") if name == "cls" else ()
        r = run("finetune", tiny_folder, "--train", data, "--out", d / name, "--max-steps", "1", "--batch-size", "4",
                *extra)
        assert r.exit_code == 0, r.output
        runs[name] = (d / name, data)
    return runs


def test_check_reads_labels_as_the_models_task_does(label_runs, tmp_path):
    for name in ("ml", "reg", "cls"):
        folder, data = label_runs[name]
        r = run("check", folder, "--data", data)
        assert r.exit_code == 0 and "ok: the planned input fits" in r.output, r.output
    numbers = write(tmp_path, "n.tsv", "text\tlabel\na\t0\nb\t1.0\n")            # 1.0 is class 1, as finetune reads it
    assert run("check", label_runs["cls"][0], "--data", numbers).exit_code == 0
    r = run("check", label_runs["reg"][0], "--data", label_runs["ml"][1])
    assert r.exit_code == 1 and "ml.tsv line 2: a regression target must be a number" in r.output, r.output
    r = run("check", label_runs["ml"][0], "--data", write(tmp_path, "u.tsv", "text\tlabel\na\tfun|other\n"))
    assert r.exit_code == 1 and "other" in r.output and "fun|other" not in r.output, r.output


def test_evaluate_and_predict_use_the_windows_the_run_was_trained_with(label_runs, tmp_path):
    folder, _ = label_runs["cls"]
    long = write(tmp_path, "long.tsv", "text\tlabel\n" + "".join(f"{'many words here ' * 5}{i}\t{i % 2}\n"
                                                                 for i in range(4)))
    m = bertscope.api.evaluate(bertscope.api.load(folder), long)
    assert m["truncated"] == 0 and not m["windows_would_keep"]
    r = run("evaluate", folder, long)
    assert r.exit_code == 0 and "were cut" not in r.output, r.output


def test_a_pair_length_that_keeps_no_text_is_refused_and_windows_are_not_offered_for_pairs(label_runs, tmp_path):
    folder, data = label_runs["pair"]
    for command in (("predict", folder, data), ("evaluate", folder, data)):
        refused(run(*command, "--max-length", "4"), "--max-length 4: expected a whole number of tokens, at least 5",
                "each of its two texts")
    long = write(tmp_path, "p.tsv", "premise\thypothesis\tlabel\n" + f"{'word ' * 30}\t{'other ' * 30}\t1\n")
    r = run("evaluate", folder, long, "--max-length", "16")
    assert r.exit_code == 0 and "were cut" in r.output and "--windows" not in r.output, r.output


def test_multi_label_rows_without_labels_are_read_as_predict_writes_them(label_runs, tmp_path):
    folder, _ = label_runs["ml"]
    out = tmp_path / "none.tsv"
    r = run("predict", folder, write(tmp_path, "t.txt", "a text\n"), "--threshold", "0.999")
    assert r.exit_code == 0, r.output
    row = r.stdout.splitlines()[1].split("\t")
    assert row[0] == "" and row[-1] == "a text"                  # no label passes 0.999: an empty cell
    out.write_text("text\tlabel\na text\t\nfun stuff\tfun\n")
    m = bertscope.api.evaluate(bertscope.api.load(folder), out)
    assert m["examples"] == 2
    refused(run("evaluate", label_runs["cls"][0], out), "line 2: empty label")


def test_constant_regression_targets_say_why_the_correlations_are_nan(label_runs, tiny, tmp_path):
    folder, data = label_runs["reg"]
    same = write(tmp_path, "same.tsv", "text\tlabel\na\t2.5\nb\t2.5\nc\t2.5\n")
    r = run("evaluate", folder, same)
    assert r.exit_code == 0 and "every target is 2.5" in r.output and "pearson nan" in r.output, r.output
    r = run("finetune", tiny, "--train", data, "--eval", same, "--out", tmp_path / "r", "--max-steps", "1")
    assert r.exit_code == 0 and "none can be chosen as the best: the last model is kept" in r.output, r.output
    for target in ("1_000", "３"):
        refused(run("evaluate", folder, write(tmp_path, "b.tsv", f"text\tlabel\na\t{target}\nb\t2\n")),
                "b.tsv line 2: a regression target must be a number written with the digits 0-9")


def test_texts_that_become_no_token_are_said(label_runs, tmp_path):
    folder, _ = label_runs["ml"]
    data = write(tmp_path, "z.tsv", "text\tlabel\ngood\tfun\n\u200b\tsad\n\u0301\u0301\tfun\nbad\tsad\n")
    r = run("evaluate", folder, data)
    assert r.exit_code == 0 and "2 texts became no token at all (first: '\\u200b', line 3" in r.output, r.output
    r = run("predict", folder, data)
    assert r.exit_code == 0 and "became no token" in r.output, r.output


def test_encode_and_explain_say_when_a_text_is_cut(tiny):
    long = "word " * 600
    r = run("encode", tiny, long)
    assert r.exit_code == 0 and "1 of 1 texts are longer than 512 tokens and were cut" in r.output, r.output
    r = run("explain", tiny, "--text", long)
    assert r.exit_code == 0 and "--text: 1 of 1 texts are longer than 512 tokens" in r.output, r.output
    refused(run("explain", tiny, "--format", "json", "--depth", "1"), "--depth 1", "--format json writes the whole")


def test_question_answering_reads_standard_input_and_says_what_a_short_length_lacks(tiny, tmp_path):
    squad = {"version": "v2.0", "data": [{"paragraphs": [{"context": "Paris is the capital of France.", "qas": [
        {"id": "q1", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
    data = write(tmp_path, "qa.json", json.dumps(squad))
    folder = tmp_path / "qa"
    assert run("finetune", tiny, "--train", data, "--out", folder, "--max-steps", "1",
               "--max-length", "32").exit_code == 0
    r = run("predict", folder, "-", "--task", "question-answering", input=data.read_text())
    assert r.exit_code == 0 and '"id": "q1"' in r.stdout or "q1\t" in r.stdout, r.output
    r = run("evaluate", folder, "-", input=data.read_text())
    assert r.exit_code == 0 and r.output.startswith("<stdin>: 1 examples · question-answering"), r.output
    refused(run("predict", folder, data, "--max-length", "3"), "--max-length 3: a window holds the special tokens")
    refused(run("predict", folder, data, "--max-length", "32", "--doc-stride", "31"),
            "--doc-stride 31 must be smaller than --max-length 32 less 2")
    lines = write(tmp_path, "qa.jsonl", json.dumps({"id": "q1", "question": "q", "context": "c"}) + "\n" +
                  json.dumps({"id": "q2", "question": "q", "context": "c"}) + "\n")
    refused(run("predict", folder, lines, "--task", "question-answering"), "JSON lines, an object a line?")


def test_check_names_a_folder_without_readable_weights_and_a_pair_too_short(tmp_path):
    need_shared()
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(TINY / "bert" / "config.json", folder / "config.json")
    r = run("check", folder, "--length", "8")
    assert r.exit_code == 1 and "has no weights" in r.output, r.output
    (folder / "model.safetensors").write_bytes(b"")
    r = run("check", folder, "--length", "8")
    assert r.exit_code == 1 and "not a readable safetensors file" in r.output, r.output
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"junk, not weights")
    r = run("check", folder, "--length", "8")
    assert r.exit_code == 1 and "not a file torch.save wrote" in r.output, r.output
    shutil.copy(TINY / "bert" / "model.safetensors", folder / "model.safetensors")   # 128 position rows
    config = json.loads((folder / "config.json").read_text())
    del config["max_position_embeddings"]
    (folder / "config.json").write_text(json.dumps(config))
    r = run("check", folder, "--length", "8")
    assert r.exit_code == 1 and "has no max_position_embeddings, so 512 (the default)" in r.output, r.output
    r = run("check", TINY / "roberta", "--length", "5", "--pairs")
    assert r.exit_code == 1 and "a pair needs 4 special tokens and a token of each text, at least 6" in r.output


def test_predict_checks_its_arguments_when_called(label_runs):
    loaded = bertscope.api.load(label_runs["cls"][0])
    with pytest.raises(bertscope.DataError, match="no such file"):
        bertscope.api.predict(loaded, "/nonexistent/file.txt")          # raised here, not at the first next()
    with pytest.raises(bertscope.UsageError, match="int8='no'"):
        bertscope.api.predict(loaded, label_runs["cls"][1], int8="no")


# ---- the hunt through the training commands --------------------------------------------------------------------

def test_finetune_refuses_a_tokenizer_other_than_the_models_own(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "".join((DATA / "wikitext2" / "valid.txt").read_text().splitlines(True)[:300]))
    assert run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "900", "--out",
               tmp_path / "tok").exit_code == 0
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)))
    refused(run("finetune", tiny, "--tokenizer", tmp_path / "tok", "--train", train, "--out", tmp_path / "o",
                "--max-steps", "1"), "is not the one of the model", "leave --tokenizer out")
    assert not (tmp_path / "o").exists()


def test_training_never_writes_into_the_model_it_starts_from(tiny, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny, model)
    before = snapshot(model)
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)))
    refused(run("finetune", model, "--train", train, "--out", model, "--overwrite", "--max-steps", "1"),
            "is the folder of the model this run starts from (MODEL)")
    assert snapshot(model) == before


def test_eval_reads_the_training_files_text_column_and_notices_are_given(tiny, tmp_path):
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)))
    both = write(tmp_path, "e.tsv", "text\tsentence\tlabel\n" + "".join(f"zzz\ttext {i}\t{i % 2}\n" for i in range(4)))
    events = []
    r = bertscope.api.finetune(tiny, train, tmp_path / "o", eval=both, max_steps=1, batch_size=100, grad_accum=4,
                               device="cpu", on_event=events.append)
    said = " ".join(e["message"] for e in events if e["event"] == "notice")
    assert "its texts are read from its 'sentence' column, as the training file's" in said
    assert "--batch-size 100: the training data has 8 sequences" in said
    assert "--grad-accum 4: an epoch has 1 batches" in said
    assert r.finished
    events.clear()
    bertscope.api.finetune(tiny, train, tmp_path / "o2", eval=train, max_steps=1, device="cpu",
                           on_event=events.append)
    assert any("is the training file" in e["message"] for e in events)
    with pytest.raises(bertscope.UsageError, match="--eval-every 2: evaluations read --eval FILE"):
        bertscope.api.finetune(tiny, train, tmp_path / "o3", eval_every=2, max_steps=1, device="cpu")
    corpus = write(tmp_path, "c.txt", "a line of text\n" * 30)
    refused(run("pretrain", "--family", "bert", "--tokenizer", tiny, "--corpus", corpus, "--corpus",
                tmp_path / "." / "c.txt", "--out", tmp_path / "p", "--steps", "1"), "given twice")


def test_a_resume_reads_the_eval_file_as_the_run_did(tiny, tmp_path):
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(16)))
    bad = write(tmp_path, "e.tsv", "sentence\tlabel\na\t0\nb\t1\nbroken row\n")
    first = bertscope.api.finetune(tiny, train, tmp_path / "o", eval=bad, skip_bad_rows=True, batch_size=4,
                                   save_every=1, stop_after=2, device="cpu")
    assert not first.finished
    assert bertscope.api.resume(tmp_path / "o", device="cpu").finished


def test_a_tokenizer_past_its_vocab_size_says_so(tmp_path):
    corpus = write(tmp_path, "c.txt", "".join((DATA / "wikitext2" / "valid.txt").read_text().splitlines(True)[:300]))
    r = run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "50", "--out", tmp_path / "tok")
    assert r.exit_code == 0 and "more than --vocab-size 50" in r.output, r.output


def test_a_run_json_edited_or_lost_is_written_again_from_the_checkpoint(tiny, tmp_path):
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(16)))
    out = tmp_path / "o"
    bertscope.api.finetune(tiny, train, out, batch_size=4, save_every=1, stop_after=2, device="cpu")
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "settings": {**record["settings"], "lr": 1.0}}))
    events = []
    assert not bertscope.api.resume(out, device="cpu", stop_after=1, on_event=events.append).finished
    assert any("settings.lr: 1.0 in run.json, 5e-05 in the checkpoint" in e["message"] for e in events)
    assert json.loads((out / "run.json").read_text()) == record
    (out / "run.json").unlink()
    r = run("finetune", "--resume", out)                 # the checkpoint keeps the record: the run goes on
    assert r.exit_code == 0 and "is missing or not JSON" in r.output, r.output
    assert json.loads((out / "run.json").read_text())["settings"] == record["settings"]


def test_a_resume_refuses_a_tokenizer_of_another_vocabulary(tiny, tmp_path):
    corpus = write(tmp_path, "c.txt", "".join((DATA / "wikitext2" / "valid.txt").read_text().splitlines(True)[:300]))
    assert run("tokenizer", "train", corpus, "--family", "bert", "--vocab-size", "900", "--out",
               tmp_path / "tok").exit_code == 0
    train = write(tmp_path, "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(16)))
    bertscope.api.finetune(tiny, train, tmp_path / "o", batch_size=4, save_every=1, stop_after=2, device="cpu")
    refused(run("finetune", "--resume", tmp_path / "o", "--tokenizer", tmp_path / "tok"),
            "its vocabulary", "is not the run's")



def test_fill_mask_refuses_a_mask_past_the_cut_and_says_when_a_text_is_cut(tmp_path):
    need_shared()
    torch.manual_seed(0)
    model = bertscope.Model(bertscope.Config(family="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=64), head="mlm")
    bertscope.save_pretrained(model, tmp_path / "m")
    bertscope.load_tokenizer(MINILM).save(tmp_path / "m")
    long = " word" * 100
    refused(run("fill-mask", tmp_path / "m", f"[MASK]{long} [MASK]"), "1 of the 2 mask tokens is past the first 64",
            "(104 tokens)")
    r = run("fill-mask", tmp_path / "m", f"[MASK]{long}", "--top-k", "1")
    assert r.exit_code == 0 and "mask 1 of 1" in r.stdout
    assert "the text is 103 tokens, longer than 64: the last 39 were cut" in r.stderr
    assert "cut" not in run("fill-mask", tmp_path / "m", "a [MASK] b").stderr


def test_a_path_the_system_refuses_is_named_in_one_line(tiny, tmp_path):
    long = tmp_path / ("a" * 300)                                    # longer than a file name may be (255 bytes)
    for args in (("encode", long), ("export", tiny, f"{long}.onnx"), ("fill-mask", long, "a [MASK]"),
                 ("bench", tiny, f"{long}.txt")):
        refused(run(*args), "aaaa", "File name too long")


def test_bench_refuses_a_column_of_a_plain_text_file_before_loading(tiny, tmp_path):
    texts = write(tmp_path, "two.txt", "hello world\nsecond line\n")
    refused(run("bench", tiny, texts, "--column", "x"), "--column x", "has no columns")
    refused(run("bench", tmp_path / "no-model", tmp_path / "none.txt"), "none.txt: no such file")


def test_api_encode_and_bench_name_a_model_argument_of_the_wrong_kind(tiny):
    loaded = bertscope.api.load(tiny)
    with pytest.raises(bertscope.UsageError, match=r"api.encode\(loaded, model, ...\): model is what api.place"):
        bertscope.api.encode(loaded, str(tiny), ["hi"])
    with pytest.raises(bertscope.UsageError, match="got NoneType"):
        bertscope.api.bench(loaded, None, ["hi"])
    shape = bertscope.api.load("bert-base")
    with pytest.raises(bertscope.TokenizerError, match="no tokenizer"):
        bertscope.api.bench(shape, bertscope.api.place(shape), ["hi"])


def test_a_trained_albert_tokenizer_gives_the_mask_the_space_before_it(tmp_path):
    need_shared()
    corpus = write(tmp_path, "c.txt", "".join((DATA / "wikitext2" / "valid.txt").read_text().splitlines(True)[:300]))
    assert run("tokenizer", "train", corpus, "--family", "albert", "--vocab-size", "900", "--out",
               tmp_path / "tok").exit_code == 0
    tok = bertscope.load_tokenizer(tmp_path / "tok")
    pieces = [tok.backend.id_to_token(i) for i in tok.encode("the [MASK] of", add_special_tokens=False)]
    assert pieces == ["▁the", "[MASK]", "▁of"]                          # no lone "▁" before the mask


def test_a_resume_on_other_threads_says_the_weights_end_close_not_equal(tiny, sst, tmp_path):
    stopped = bertscope.api.finetune(tiny, sst, tmp_path / "r", max_length=32, batch_size=16, threads=1,
                                     stop_after=2)
    assert not stopped.finished
    said = []
    bertscope.api.resume(tmp_path / "r", threads=2, on_event=said.append, stop_after=3)
    assert any("2 CPU threads where the run had 1" in e.get("message", "") for e in said)
    said.clear()
    bertscope.api.resume(tmp_path / "r", on_event=said.append, stop_after=4)          # the run's own: nothing said
    assert not any("CPU threads" in e.get("message", "") for e in said)


def test_encode_reads_standard_input_for_a_lone_dash(tiny):
    r = run("encode", tiny, "-", input="hello world\nthe cat sat\n")
    assert r.exit_code == 0 and "(first batch of 2 texts)" in r.stdout, r.stdout + r.stderr


def test_a_stray_tag_in_a_word_segmentation_file_is_named_with_its_line(tiny, tmp_path):
    need_shared()
    sentences = (DATA / "pfr1998" / "dev.cws.conll").read_text(encoding="utf-8").split("\n\n")[:150]
    lines = "\n\n".join(sentences).split("\n")
    k = next(i for i, line in enumerate(lines) if i > 20 and line.endswith("\tS"))
    lines[k] = lines[k][:-1] + "X"                                       # one typo among ~10,000 B/M/E/S tags
    bad = write(tmp_path, "cws.conll", "\n".join(lines) + "\n")
    refused(run("finetune", tiny, "--train", bad, "--out", tmp_path / "o", "--max-steps", "1"),
            f"cws.conll line {k + 1}: tag 'X'", "B/M/E/S word-segmentation tags: expected B, M, E or S")
    assert not (tmp_path / "o").exists()
