"""Shapes no machine can run and ids no tensor can hold, found by a bad-input hunt: explain, check and export refuse
them in one line (exit 2; check reports in its own ✗ list, exit 1) before a tensor of that size is made; export
checks its graph on lengths the model has positions for, and only a checked graph reaches the file named."""

import contextlib
import json
import resource
import time

import pytest
import torch
from conftest import MINILM, TINY, listing, need_shared, refused, run

import bertscope
from bertscope import explain as ex
from bertscope.explain import explain, preflight

HUGE = 10 ** 12          # 10^12 rows: even one int64 column of them is 8 TB, so a missed guard fails at once


def reported(r, *words):
    """check's way: exit 1 with a ✗ report, no exception."""
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    for w in words:
        assert w in r.output, f"{w!r} not in:\n{r.output}"
    return r.output


@contextlib.contextmanager
def little_address_space(room=4 * 1024 ** 3):
    """Allocations beyond `room` more than this process already maps fail at once (ENOMEM) instead of filling the
    machine: a guard that let a huge batch through fails the test loudly, without an OOM kill."""
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + room if hard == resource.RLIM_INFINITY else min(hard, mapped + room)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def bert():
    need_shared()
    return TINY / "bert"


def need_onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")


@pytest.fixture
def p16(tmp_path):
    """A BERT with 16 positions: fewer than the 23 tokens export used to check every graph on."""
    model = bertscope.Model(bertscope.Config(family="bert", vocab_size=1000, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=16))
    bertscope.save_pretrained(model, tmp_path / "p16")
    return tmp_path / "p16"


# ---- a batch no machine holds --------------------------------------------------------------------------------------

def test_explain_refuses_a_batch_larger_than_memory_before_making_it(bert):
    with little_address_space():
        r = run("explain", bert, "--batch", HUGE)
    text = refused(r, f"--batch {HUGE}", "--length 16", "GiB", "available", "smaller --batch")
    need = float(text.split("needs about ")[1].split(" GiB")[0].replace(",", ""))
    assert need > 8 * HUGE * 16 / 1024 ** 3          # at least the int64 ids alone


def test_explain_refuses_a_length_beyond_the_positions_before_making_the_ids(bert):
    with little_address_space():
        r = run("explain", bert, "--length", 10 ** 11)
    refused(r, f"--length {10 ** 11}: this BERT model takes at most 128 tokens a sequence (128 position "
               "embeddings)")
    r = run("explain", bert, "--length", 1000)                        # said as every command says it
    refused(r, "--length 1000: this BERT model takes at most 128 tokens", "use --length 128 or less")


def test_the_guard_compares_with_this_machines_available_memory(monkeypatch):
    need_shared()
    model = bertscope.from_pretrained(TINY / "roberta")
    explain(model, batch=4, length=32)                                  # fits: runs as before
    need = ex.estimate_memory(model, 4, 32, attentions=True)["total"]
    monkeypatch.setattr(ex, "available_memory", lambda: (need - 1, "available"))
    with pytest.raises(bertscope.errors.UsageError, match="batch=4, length=32: one forward pass of \\(4, 32\\)"):
        explain(model, batch=4, length=32)
    monkeypatch.setattr(ex, "available_memory", lambda: (need, "available"))
    explain(model, batch=4, length=32)
    room, what = ex.available_memory()
    assert 0 < room and what


def test_the_estimate_counts_the_attention_scores_in_the_models_dtype():
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert")
    c = model.config
    small = ex.estimate_memory(model, 8, 64, attentions=True)
    long = ex.estimate_memory(model, 8, 128, attentions=True)
    heads = c.num_attention_heads
    assert small["attentions"] == c.num_hidden_layers * 8 * heads * 64 * 64 * 4      # every layer's map, kept
    assert long["layer"] >= 2 * 8 * heads * 128 * 128 * 4                           # scores and probabilities
    assert long["total"] > 2 * small["total"]                                       # L² grows faster than L
    half = ex.estimate_memory(model.to(torch.bfloat16), 8, 128, attentions=True)
    assert half["attentions"] * 2 == long["attentions"]
    with torch.no_grad():
        out = model.float()(input_ids=torch.randint(5, 1000, (8, 64)), output_attentions=True)
    assert small["attentions"] == sum(a.numel() * a.element_size() for a in out.attentions)


def test_check_reports_the_memory_of_a_batch_without_building_it(bert):
    with little_address_space():
        start = time.perf_counter()
        r = run("check", bert, "--length", 100, "--batch", HUGE)
        seconds = time.perf_counter() - start
    out = reported(r, "✗ memory", f"--batch {HUGE} × --length 100", "GiB", "does not fit",
                   "memory: one forward pass")
    assert "✗ length" not in out and seconds < 30
    r = run("check", bert, "--length", 100, "--batch", 4)
    assert r.exit_code == 0 and "memory: one forward pass of (4, 100) takes about" in r.output, r.output


def test_preflight_never_builds_the_planned_batch_or_a_length_past_the_positions():
    need_shared()
    c = bertscope.Config.from_json(TINY / "roberta")
    with little_address_space():
        problems = preflight(c, length=10 ** 10, batch=HUGE, pairs=True)
    assert [p.what for p in problems] == ["length", "memory"]
    assert "a sequence of 10000000000 tokens" in problems[0].message
    assert "2 are reserved, so at most 128 tokens fit" in problems[0].message
    problems = preflight(c, length=1000, batch=HUGE)
    assert [p.what for p in problems] == ["length", "memory"]
    assert "a planned sequence has 1000 tokens" in problems[0].message and "positions 130..1001" in problems[0].message
    assert preflight(c, length=128, batch=8) == []


# ---- ids no tensor holds; files without ids ------------------------------------------------------------------------

def test_check_reports_an_id_too_large_for_any_tensor_as_outside_the_vocabulary(bert, tmp_path):
    ids = tmp_path / "ids.txt"                  # no int64 holds it: reported as any other id outside the vocabulary
    ids.write_text("5 6 7\n1 2 99999999999999999999999\n")
    reported(run("check", bert, "--ids-file", ids), "✗ vocab", "sequence 2", "position 2 holds id "
             "99999999999999999999999, outside this model's vocabulary of 1000 ids (0..999)")
    reported(run("check", bert, "--ids-file", "-", input="5 6 7\n\n-99999999999999999999999 2\n"), "✗ vocab",
             "sequence 3: input_ids position 0 holds id -99999999999999999999999")
    ids.write_text("5 6 7\n5 1000 7\n")                                 # an id of some other vocabulary: reported
    reported(run("check", bert, "--ids-file", ids), "✗ vocab", "sequence 2", "1000")
    problems = preflight(bertscope.Config.from_json(bert), ids=[[1, 10 ** 30], [1000, 2, -10 ** 30]])
    assert [p.what for p in problems] == ["vocab", "vocab"]
    assert "sequence 1: input_ids position 1 holds id " + str(10 ** 30) in problems[0].message
    assert "sequence 2: input_ids position 2 holds id " + str(-10 ** 30) in problems[1].message


@pytest.mark.parametrize("text, kind", [("", "an empty file"), ("\n  \n\t\n", "only blank lines")])
def test_check_refuses_an_ids_file_without_ids(bert, tmp_path, text, kind):
    ids = tmp_path / "ids.txt"
    ids.write_text(text)
    refused(run("check", bert, "--ids-file", ids), f"{ids}: no ids found ({kind})", "one sequence per line")
    refused(run("check", bert, "--ids-file", "-", input=text), "<stdin>: no ids found")


def test_check_reads_ids_from_standard_input(bert):
    r = run("check", bert, "--ids-file", "-", input="5 6 7\n8 9\n")
    assert r.exit_code == 0 and "fits" in r.output, r.output
    reported(run("check", bert, "--ids-file", "-", input="5 6 7\n8 1000\n"), "sequence 2", "1000")
    refused(run("check", bert, "--ids-file", "-", input="5 6 7\n8 x\n"), "<stdin> line 2: expected whitespace")


# ---- export --------------------------------------------------------------------------------------------------------

def test_export_checks_a_model_of_few_positions_on_lengths_it_has(p16, tmp_path, capfd):
    need_onnx()
    import warnings
    out = tmp_path / "p16.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run("export", p16, out)
    assert r.exit_code == 0, r.output
    # torch's exporter says nothing of its own (skipped torchvision ops, deprecations, merged axis names)
    assert not [w for w in caught if "torch" in w.filename], [str(w.message) for w in caught]
    assert "torchvision" not in capfd.readouterr().err + r.output
    assert "on a (3, 9) batch" in r.output and out.stat().st_size > 0     # 16 + 7 has no positions: 16 - 7
    from bertscope.export import check_shape
    c = bertscope.Config.from_json(p16)
    assert check_shape(c, 2, 16, True) == (3, 9) and check_shape(c, 2, 3, True) == (3, 10)
    assert check_shape(c, 2, 12, True) == (3, 5) and check_shape(c, 4, 16, False) == (4, 16)
    roberta = bertscope.Config(family="roberta", vocab_size=1000, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                               pad_token_id=1)
    assert roberta.max_tokens == 128 and check_shape(roberta, 2, 125, True) == (3, 118)   # 2 rows reserved


def test_a_failed_check_leaves_the_file_named_as_it_was(p16, tmp_path, monkeypatch):
    need_onnx()
    import bertscope.export as export
    monkeypatch.setattr(export, "check_shape", lambda c, batch, length, dynamic: (batch + 1, length + 7))
    folder = tmp_path / "out"
    folder.mkdir()
    earlier = folder / "m.onnx"
    earlier.write_text("my earlier export")
    refused(run("export", p16, earlier, "--overwrite"), "onnxruntime", "(3, 23)", "nothing was written")
    assert earlier.read_text() == "my earlier export" and listing(folder) == ["m.onnx"]
    refused(run("export", p16, folder / "new.onnx"), "onnxruntime", "nothing was written")
    assert listing(folder) == ["m.onnx"]


def test_a_failed_export_says_it_in_plain_words_and_writes_nothing(p16, tmp_path, monkeypatch):
    need_onnx()
    def fail(*args, **kwargs):
        raise RuntimeError("\x1b[1m\x1b[31mFailed to export\x1b[0m the model\nmore lines")
    monkeypatch.setattr(torch.onnx, "export", fail)
    text = refused(run("export", p16, tmp_path / "m.onnx"), "ONNX export failed: RuntimeError: Failed to export the "
                                                            "model")
    assert "\x1b" not in text and "more lines" not in text
    assert listing(tmp_path) == ["p16"]


def test_export_refuses_a_length_beyond_the_positions_before_exporting(tmp_path, monkeypatch):
    need_shared()
    def never(*args, **kwargs):
        raise AssertionError("exported although --length does not fit")
    monkeypatch.setattr(torch.onnx, "export", never)
    refused(run("export", TINY / "bert", tmp_path / "e.onnx", "--length", 1000), "--length 1000",
            "takes at most 128 tokens a sequence (128 position embeddings)", "--length 128 or less")
    refused(run("export", TINY / "roberta", tmp_path / "e.onnx", "--length", 129), "--length 129",
            "(130 position embeddings, of which RoBERTa reserves the first 2)")
    # every command says a length past the positions in these words, naming its own option
    refused(run("explain", TINY / "roberta", "--length", 129),
            "--length 129: this RoBERTa model takes at most 128 tokens a sequence")
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n")
    refused(run("embed", MINILM, texts, "--out", tmp_path / "e.npy", "--max-length", 600),
            "--max-length 600: this BERT model takes at most 512 tokens a sequence", "use --max-length 512 or less")
    config = json.loads((MINILM / "config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    refused(run("pretrain", "--config", tmp_path / "c.json", "--tokenizer", MINILM, "--corpus", texts, "--out",
                tmp_path / "p", "--max-length", 100, "--objective", "mlm"),
            "--max-length 100: this BERT model takes at most 64 tokens a sequence")
    assert not (tmp_path / "e.onnx").exists()


def test_export_refuses_a_batch_larger_than_memory(bert, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("exported although the batch does not fit in memory")
    monkeypatch.setattr(torch.onnx, "export", never)
    for mode in ("--static", "--dynamic"):
        with little_address_space():
            r = run("export", bert, tmp_path / "big.onnx", mode, "--batch", HUGE)
        refused(r, f"--batch {HUGE} --length 16", "GiB", "available", "PyTorch and in onnxruntime")
    assert listing(tmp_path) == []
