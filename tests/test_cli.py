"""The `bertscope` command as a user runs it (the README's commands)."""

import pytest
from conftest import DATA, MINILM, TINY, need_shared
from typer.testing import CliRunner

from bertscope.cli import app

runner = CliRunner()


def test_encode_sst2_sentences_with_minilm():
    need_shared()
    r = runner.invoke(app, ["encode", str(MINILM), "--file", str(DATA / "sst2" / "dev.tsv"), "--limit", "40"])
    assert r.exit_code == 0, r.output
    assert "input_ids (32, " in r.output and "last_hidden_state (32, " in r.output
    assert "mean-pooled, L2-normalised (40, 384)" in r.output
    assert "most similar pair" in r.output


def test_encode_built_in_shape_with_random_ids():
    r = runner.invoke(app, ["encode", "albert-base-v2", "--batch", "2", "--length", "8"])
    assert r.exit_code == 0, r.output
    assert "hidden_states[0] (2, 8, 768)" in r.output and "pooler_output (2, 768)" in r.output


def test_too_long_input_is_a_message_not_a_traceback():
    need_shared()
    r = runner.invoke(app, ["encode", str(TINY / "roberta"), "--length", "200"])
    assert r.exit_code == 2
    assert "takes at most 128 tokens a sequence (130 position embeddings, of which RoBERTa reserves the first 2); " \
        "use --length 128 or less" in r.output
    assert "Traceback" not in r.output


def test_missing_column_names_the_file_and_line(tmp_path):
    need_shared()
    f = tmp_path / "x.tsv"
    f.write_text("text\tlabel\nhello\t1\n")
    r = runner.invoke(app, ["encode", str(MINILM), "--file", str(f), "--column", "sentence"])
    assert r.exit_code == 2 and "x.tsv line 1: no text column 'sentence'" in r.output


def test_unknown_model_name():
    r = runner.invoke(app, ["encode", "bert-huge"])
    assert r.exit_code == 2 and "neither a checkpoint folder nor a built-in shape" in r.output


def test_device_that_is_not_there_is_a_message():
    import torch
    r = runner.invoke(app, ["encode", "bert-base", "--device", "gpu0"])
    assert r.exit_code == 2 and "'gpu0' is not a device name" in r.output
    if not torch.cuda.is_available():
        r = runner.invoke(app, ["encode", "bert-base", "--device", "cuda"])
        assert r.exit_code == 2 and "no CUDA GPU" in r.output and "Traceback" not in r.output


@pytest.mark.slow
@pytest.mark.kernels
def test_embed_bf16_and_compiled_agree_with_fp32(tmp_path):
    need_shared()
    import numpy as np
    f = tmp_path / "t.tsv"
    f.write_text("".join((DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines(True)[:25]))
    runs = {"fp32": [], "bf16": ["--bf16"], "compiled": ["--compile"]}
    out = {}
    for name, flags in runs.items():
        r = runner.invoke(app, ["embed", str(MINILM), str(f), "--out", str(tmp_path / f"{name}.npy"), *flags])
        assert r.exit_code == 0, r.output
        out[name] = np.load(tmp_path / f"{name}.npy")
    assert out["fp32"].shape == (24, 384) and out["bf16"].dtype == np.float32
    assert np.abs(out["compiled"] - out["fp32"]).max() < 1e-5
    assert (out["bf16"] * out["fp32"]).sum(1).min() > 0.999
