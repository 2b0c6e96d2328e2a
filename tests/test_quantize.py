"""int8 inference: a fine-tuned MiniLM keeps its SST-2 predictions, its embeddings stay within cosine 0.99 of fp32
on every text, and a folder written by `bertscope quantize` reloads int8. Nothing here times anything: whether
int8 pays on a CPU is a measurement of kernels.py, not of the tests."""

import json
import re

import pytest
import torch
from conftest import DATA, MINILM, need_shared
from typer.testing import CliRunner

import bertscope
from bertscope import api, infer, quantize
from bertscope.cli import app
from bertscope.data import read_texts

pytestmark = [pytest.mark.slow, pytest.mark.kernels]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """MiniLM fine-tuned for one epoch on 4,000 SST-2 training phrases (about 91% on dev)."""
    need_shared()
    root = tmp_path_factory.mktemp("q")
    rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "train.tsv").write_text("".join(rows[:4001]), encoding="utf-8")
    api.finetune(MINILM, root / "train.tsv", root / "sst2", epochs=1, lr=1e-4, save_every=0, device="cpu",
                 max_length=64)
    return root


def test_int8_keeps_predictions_and_embeddings_on_sst2_dev(classifier):
    loaded = api.load(classifier / "sst2")
    dev = read_texts(DATA / "sst2" / "dev.tsv", limit=2000)
    cal = read_texts(classifier / "train.tsv", limit=512)
    enc = infer.tokenize(loaded.tokenizer, dev)
    fp32 = loaded.model
    int8 = bertscope.from_pretrained(classifier / "sst2")
    report = quantize.quantize(int8, infer.tokenize(loaded.tokenizer, cal))
    assert report.layers == 12 and report.kept == 12                  # qkv, intermediate int8; out, output fp32
    assert sum(isinstance(m, quantize.Int8Linear) for m in int8.modules()) == 12
    agree = (infer.class_logits(fp32, enc).argmax(-1) == infer.class_logits(int8, enc).argmax(-1)).float().mean()
    assert agree >= 0.99
    base = api.load(MINILM).model
    q = bertscope.from_pretrained(MINILM)
    quantize.quantize(q, infer.tokenize(loaded.tokenizer, cal))
    cos = (infer.sentence_embeddings(base, enc) * infer.sentence_embeddings(q, enc)).sum(-1)
    assert cos.min() >= 0.99, f"min cosine {cos.min():.4f}"


def test_a_quantized_folder_reloads_int8_and_says_how_close_it_is(classifier, tmp_path):
    r = CliRunner().invoke(app, ["quantize", str(classifier / "sst2"), "--calibrate", str(classifier / "train.tsv"),
                                 "--out", str(tmp_path / "q"), "--limit", "256"])
    assert r.exit_code == 0, r.output
    layers = re.search(r"(\d+) Linear layers int8, (\d+) kept fp32", r.output)    # 12 and 12, or fewer int8 where
    int8_layers = int(layers[1])                                      # a calibration text fell under cosine 0.99
    assert int8_layers + int(layers[2]) == 24 and int8_layers >= 12 - quantize.MOST_RESTORED, r.output
    assert "mean-pooled cosine min 0.99" in r.output
    assert (tmp_path / "q" / "int8.safetensors").exists()
    plain = bertscope.from_pretrained(tmp_path / "q")                  # still an ordinary fp32 checkpoint
    assert not any(isinstance(m, quantize.Int8Linear) for m in plain.modules())
    quantize.load(plain, tmp_path / "q")
    assert sum(isinstance(m, quantize.Int8Linear) for m in plain.modules()) == int8_layers
    with torch.no_grad():                                               # the same int8 model as calibrated
        loaded = api.load(classifier / "sst2")
        again = bertscope.from_pretrained(classifier / "sst2")
        enc = infer.tokenize(loaded.tokenizer, read_texts(classifier / "train.tsv", limit=256))
        quantize.quantize(again, enc)
        again = quantize.restore_for_cosine(loaded.model, again, enc)[0]
        b = loaded.tokenizer(["a gripping, beautifully acted film", "a dull mess"])
        assert torch.allclose(plain(**b).logits, again(**b).logits, atol=1e-5)
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "q"), str(DATA / "sst2" / "dev.tsv"), "--format", "jsonl"])
    assert r.exit_code == 0 and r.output.count('"label"') == 6735


def test_a_quantized_fine_tuned_model_keeps_its_runs_columns_and_length(tiny_folder, tmp_path):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("premise\thypothesis\tlabel\n" + "a great film\tit is good\tyes\na dull mess\tit is good\tno\n" * 10,
                     encoding="utf-8")
    ft = tmp_path / "ft"
    api.finetune(tiny_folder, pairs, ft, text_column="premise", pair_column="hypothesis", max_length=24,
                 max_steps=2, batch_size=4, device="cpu")
    q = tmp_path / "q"
    api.quantize(api.load(ft), pairs, q, column="premise")
    run = json.loads((q / "run.json").read_text(encoding="utf-8"))
    assert run["kind"] == "quantized" and run["task"]["pair_column"] == "hypothesis" and run["task"]["max_length"] == 24
    r = CliRunner().invoke(app, ["predict", str(q), str(pairs), "--format", "jsonl"])   # pairs read as ft reads them
    assert r.exit_code == 0 and r.output.count('"label"') == 20, r.output
    api.quantize(api.load(tiny_folder), pairs, ft, column="premise", overwrite=True)    # over a run: its run.json goes
    assert not (ft / "run.json").exists()


def test_an_int8_file_of_another_model_or_damaged_is_named(tiny_folder, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    texts = tmp_path / "t.txt"
    texts.write_text("a great film\na dull mess\n" * 10, encoding="utf-8")
    q = tmp_path / "q"
    api.quantize(api.load(tiny_folder), texts, q)
    with safe_open(str(q / "int8.safetensors"), "pt") as f:
        smooth, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    name = sorted(smooth)[0]
    for damaged, words in (({**smooth, name: smooth[name][:3]}, "has shape (3,)"),
                           ({**smooth, name: smooth[name] * float("nan")}, "not positive finite numbers"),
                           ({"embeddings.norm": smooth[name]}, "embeddings.norm is not a Linear layer")):
        save_file(damaged, q / "int8.safetensors", metadata=meta)
        r = CliRunner().invoke(app, ["embed", str(q), str(texts), "--out", str(tmp_path / "e.npy")])
        assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output


def test_int8_layers_go_back_to_fp32_one_at_a_time_and_reload_so(classifier, tmp_path):
    loaded = api.load(classifier / "sst2")
    enc = infer.tokenize(loaded.tokenizer, read_texts(classifier / "train.tsv", limit=128))
    int8 = bertscope.from_pretrained(classifier / "sst2")
    quantize.quantize(int8, enc)
    same, cos, restored = quantize.restore_for_cosine(loaded.model, int8, enc, target=-1.0)
    assert same is int8 and restored == []                              # close enough already: nothing changes
    back, closer, restored = quantize.restore_for_cosine(loaded.model, int8, enc, target=1.01, most=2)  # unreachable
    assert len(restored) == 2 and set(restored) < set(int8.int8_smoothing)
    assert sum(isinstance(m, quantize.Int8Linear) for m in back.modules()) == 10
    assert float(closer.min()) >= float(cos.min()) - 1e-3             # the worst texts move closer, or stay
    quantize.save(back, tmp_path)
    plain = bertscope.from_pretrained(classifier / "sst2")
    quantize.load(plain, tmp_path)
    assert sorted(plain.int8) == sorted(set(int8.int8_smoothing) - set(restored))

