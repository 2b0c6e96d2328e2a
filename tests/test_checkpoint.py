"""Checkpoint folders: round trips with ourselves and with the reference implementation, sharded and .bin files,
head mismatches, and the errors a broken folder gives."""

import json
import re
import shutil

import pytest
import torch
from conftest import FIXTURES, TINY, TOL, load_reference, max_diff, model_inputs, need_shared

import bertscope
from bertscope.checkpoint import CheckpointError, atomic_write, read_weights
from bertscope.config import ConfigError


def copy_fixture(name, tmp_path):
    need_shared()
    dst = tmp_path / name
    shutil.copytree(TINY / name, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    (dst / "reference.safetensors").unlink()
    return dst


@pytest.mark.parametrize("name", FIXTURES)
def test_load_save_load_gives_identical_tensors_and_config(name, tmp_path):
    load_reference(name)
    a = bertscope.from_pretrained(TINY / name)
    bertscope.save_pretrained(a, tmp_path / "saved")
    b = bertscope.from_pretrained(tmp_path / "saved")
    assert a.head == b.head and a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the file holds the reference's names and nothing else: same keys as the reference wrote
    from safetensors import safe_open
    with safe_open(str(TINY / name / "model.safetensors"), "pt") as f1, \
            safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f2:
        assert set(f1.keys()) == set(f2.keys())
    # config.json as the reference wrote it: keys we do not model kept, and none of ours added (num_labels,
    # two generic labels, problem_type null and absolute positions are the reference's defaults, left out)
    original = json.loads((TINY / name / "config.json").read_text())
    written = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert written == original


@pytest.mark.parametrize("name", FIXTURES)
def test_saved_folder_loads_in_reference_implementation_with_identical_outputs(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    ref = load_reference(name)
    ours = bertscope.from_pretrained(TINY / name)
    bertscope.save_pretrained(ours, tmp_path / "saved")
    arch = json.loads((tmp_path / "saved" / "config.json").read_text())["architectures"][0]
    hf = getattr(transformers, arch).from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    kw = model_inputs(ref)
    with torch.no_grad():
        theirs = hf(**kw, output_hidden_states=True)
    logits = theirs.prediction_logits if hasattr(theirs, "prediction_logits") else theirs.logits
    ref_logits = ref["prediction_logits"] if "prediction_logits" in ref else ref["logits"]
    assert max_diff(logits, ref_logits) <= TOL
    assert max_diff(theirs.loss, ref["loss"]) <= TOL
    for i, h in enumerate(theirs.hidden_states):
        assert max_diff(h, ref[f"hidden_states_{i}"]) <= TOL


def test_base_model_saves_without_prefix_and_loads_in_reference(tmp_path, shared):
    transformers = pytest.importorskip("transformers")
    model = bertscope.from_pretrained(TINY / "bert", head="base")
    assert model.head == "base" and model.mlm is None and model.pair is None
    bertscope.save_pretrained(model, tmp_path / "base")
    keys = read_weights(tmp_path / "base")[0].keys()
    assert all(not k.startswith("bert.") for k in keys) and "pooler.dense.weight" in keys
    hf = transformers.BertModel.from_pretrained(tmp_path / "base", attn_implementation="eager").eval()
    ref = load_reference("bert")
    with torch.no_grad():
        theirs = hf(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                    token_type_ids=ref["token_type_ids"])
    assert max_diff(theirs.pooler_output, ref["pooler_output"]) <= TOL


def test_sharded_checkpoint_written_by_reference_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    ref = load_reference("bert")
    hf = transformers.BertForPreTraining.from_pretrained(TINY / "bert")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    model = bertscope.from_pretrained(tmp_path / "sharded")
    assert max_diff(model(**model_inputs(ref)).logits, ref["prediction_logits"]) <= TOL


def test_sharded_save_reloads(tmp_path):
    ref = load_reference("albert")
    model = bertscope.from_pretrained(TINY / "albert")
    bertscope.save_pretrained(model, tmp_path / "s", max_shard_size=100_000)
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (tmp_path / "s" / "model.safetensors").exists()
    again = bertscope.from_pretrained(tmp_path / "s")
    assert max_diff(again(**model_inputs(ref)).logits, ref["prediction_logits"]) <= TOL


def test_a_sharded_checkpoint_reads_each_tensor_from_the_shard_its_index_names(tmp_path):
    from safetensors.torch import load_file, save_file
    ref = load_reference("albert")
    folder = tmp_path / "s"
    bertscope.save_pretrained(bertscope.from_pretrained(TINY / "albert"), folder, max_shard_size=100_000)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name, home = next(iter(index["weight_map"].items()))
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != home)
    tensors = load_file(folder / other)
    tensors[name] = torch.zeros_like(load_file(folder / home)[name])     # a stray zeroed copy in another shard
    save_file(tensors, folder / other, metadata={"format": "pt"})
    again = bertscope.from_pretrained(folder)
    assert max_diff(again(**model_inputs(ref)).logits, ref["prediction_logits"]) <= TOL
    for bad in ([1, 2], {"weight_map": ["a"]}, {"weight_map": {name: None}}, {"weight_map": {name: "../x"}}):
        index_path.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
            bertscope.from_pretrained(folder)


def test_pytorch_model_bin_is_read_weights_only(tmp_path):
    ref = load_reference("roberta")
    folder = copy_fixture("roberta", tmp_path)
    state = read_weights(folder)[0]
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    model = bertscope.from_pretrained(folder)
    assert max_diff(model(**model_inputs(ref)).logits, ref["logits"]) <= TOL


def test_pytorch_model_bin_with_code_in_it_is_refused(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        bertscope.from_pretrained(folder)


def test_legacy_position_ids_buffer_is_ignored(shared):
    from conftest import MINILM
    model = bertscope.from_pretrained(MINILM)
    assert "embeddings.position_ids" in model.load_report.ignored


@pytest.mark.parametrize("cut", [0, 7, 1000, -100])
def test_corrupt_or_truncated_safetensors_names_the_file(tmp_path, cut):
    folder = copy_fixture("bert", tmp_path)
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file .*truncated or corrupt"):
        bertscope.from_pretrained(folder)


def test_garbage_safetensors_header(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        bertscope.from_pretrained(folder)


def test_config_missing_a_required_key(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["num_attention_heads"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: missing required key\(s\) num_attention_heads"):
        bertscope.from_pretrained(folder)


def test_config_that_is_not_json(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    (folder / "config.json").write_text("{'model_type': 'bert'")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        bertscope.from_pretrained(folder)


def test_weights_of_another_family(tmp_path):
    folder = copy_fixture("roberta", tmp_path)
    shutil.copy(TINY / "bert" / "config.json", folder / "config.json")
    with pytest.raises(CheckpointError, match="holds roberta tensors .* model_type 'bert'"):
        bertscope.from_pretrained(folder)


def test_unsupported_model_type(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        bertscope.from_pretrained(folder)


def test_classifier_of_another_width_says_which_tensors_and_offers_reinit():
    load_reference("bert-cls")
    with pytest.raises(CheckpointError) as e:
        bertscope.from_pretrained(TINY / "bert-cls", num_labels=5)
    msg = str(e.value)
    assert "classifier.weight: checkpoint (3, 64) vs model (5, 64)" in msg
    assert "classifier.bias: checkpoint (3,) vs model (5,)" in msg and "reinit_head=True" in msg
    model = bertscope.from_pretrained(TINY / "bert-cls", num_labels=5, reinit_head=True)
    assert model.classifier.linear.weight.shape == (5, 64)
    assert sorted(model.load_report.reinitialised) == ["classifier.bias", "classifier.weight"]
    kept = bertscope.from_pretrained(TINY / "bert-cls")
    assert torch.equal(model.pooler.dense.weight, kept.pooler.dense.weight)  # the encoder is still loaded


def test_mlm_head_missing_from_checkpoint(shared):
    from conftest import MINILM
    with pytest.raises(CheckpointError) as e:
        bertscope.from_pretrained(MINILM, head="mlm")
    assert "missing from the checkpoint (5): cls.predictions.transform.dense.weight" in str(e.value)
    assert "cls.predictions.bias" in str(e.value) and "reinit_head=True" in str(e.value)
    model = bertscope.from_pretrained(MINILM, head="mlm", reinit_head=True)
    assert model.mlm.decoder.weight is model.embeddings.word.weight   # tied
    # the new head starts fresh, and the word table it is tied to stays the checkpoint's (starting the decoder as a
    # whole once re-drew it: continued MLM of all-MiniLM-L6-v2 then began from random word vectors)
    encoder = bertscope.from_pretrained(MINILM)
    loaded = encoder.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items() if k in loaded)
    assert torch.equal(model.mlm.norm.weight, torch.ones(384)) and not model.mlm.decoder.bias.any()
    assert 0.015 < float(model.mlm.dense.weight.detach().std()) < 0.025            # normal(0, 0.02)


def test_other_heads_are_dropped_when_loading_the_encoder():
    ref = load_reference("bert")
    model = bertscope.from_pretrained(TINY / "bert", head="classification", num_labels=3, reinit_head=True)
    assert set(model.load_report.ignored) >= {"cls.seq_relationship.weight", "cls.predictions.bias"}
    base = bertscope.from_pretrained(TINY / "bert", head="base")
    out = base(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], token_type_ids=ref["token_type_ids"])
    assert out.logits is None and out.loss is None
    assert max_diff(out.pooler_output, ref["pooler_output"]) <= TOL


def test_mlm_decoder_is_tied_to_word_embeddings():
    need_shared()
    model = bertscope.from_pretrained(TINY / "albert")
    assert model.mlm.decoder.weight is model.embeddings.word.weight
    with torch.no_grad():
        model.embeddings.word.weight[5].add_(1.0)
    assert torch.equal(model.mlm.decoder.weight[5], model.embeddings.word.weight[5])


def test_an_untied_mlm_head_computes_with_the_decoder_bias_both_ways(tmp_path):
    """Untied from the word embeddings, the reference (5.x) computes with cls.predictions.decoder.bias and leaves
    cls.predictions.bias unused: that bias is read, and a saved folder holds it under both names."""
    transformers = pytest.importorskip("transformers")
    need_shared()
    config = transformers.BertConfig.from_pretrained(TINY / "bert", tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        hf.cls.predictions.decoder.bias.normal_()             # trained: not the head's bias (zeros) any more
    assert not torch.equal(hf.cls.predictions.decoder.bias, hf.cls.predictions.bias)
    hf.save_pretrained(tmp_path / "hf")
    ids = torch.tensor([[2, 17, 99, 301, 3]])
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    ours = bertscope.from_pretrained(tmp_path / "hf")
    assert max_diff(ours(input_ids=ids).logits, expected) <= TOL
    bertscope.save_pretrained(ours, tmp_path / "ours")
    again, info = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert max_diff(again.eval()(input_ids=ids).logits, expected) <= TOL


def test_layer_norm_weights_under_their_old_names_gamma_and_beta_load(tmp_path):
    from safetensors.torch import load_file, save_file
    folder = copy_fixture("bert", tmp_path)
    state = {re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", k)): v
             for k, v in load_file(folder / "model.safetensors").items()}
    assert sum(k.endswith((".gamma", ".beta")) for k in state) == 12
    save_file(state, folder / "model.safetensors")
    ref = load_reference("bert")
    out = bertscope.from_pretrained(folder)(**model_inputs(ref))
    assert max_diff(out.logits, ref["prediction_logits"]) <= TOL


def test_the_dtype_config_json_records_is_the_one_saved(tmp_path):
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert", dtype=torch.bfloat16)
    bertscope.save_pretrained(model, tmp_path / "bf16")
    assert json.loads((TINY / "bert" / "config.json").read_text())["dtype"] == "float32"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    state, _ = read_weights(tmp_path / "bf16")
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    assert bertscope.from_pretrained(tmp_path / "bf16").embeddings.word.weight.dtype == torch.float32  # read as fp32


def test_saved_pruned_model_reloads_pruned(tmp_path):
    ref = load_reference("bert", "reference_pruned.safetensors")
    model = bertscope.from_pretrained(TINY / "bert")
    model.prune_heads({0: [1, 3], 1: [2]})
    bertscope.save_pretrained(model, tmp_path / "pruned")
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["pruned_heads"] == {"0": [1, 3], "1": [2]}
    again = bertscope.from_pretrained(tmp_path / "pruned")
    assert [layer.attention.heads for layer in again.encoder.layers] == [2, 3]
    out = again(**model_inputs(ref), output_attentions=True)
    assert max_diff(out.logits, ref["prediction_logits"]) <= TOL
    assert out.attentions[0].shape == (3, 2, 17, 17)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def fails(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind


def test_no_weights_in_folder(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        bertscope.from_pretrained(folder)


def test_a_classifier_from_an_mlm_only_checkpoint_starts_its_pooler_fresh(tmp_path):
    # `pretrain --objective mlm` saves no pooler (as BertForMaskedLM); fine-tuning a classifier on it must work
    import bertscope
    c = bertscope.Config(family="bert", vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
    bertscope.save_pretrained(bertscope.Model(c, head="mlm"), tmp_path / "mlm")
    from safetensors.torch import load_file
    if any("pooler" in k for k in load_file(tmp_path / "mlm" / "model.safetensors")):
        pytest.skip("this MLM checkpoint keeps a pooler")
    m = bertscope.from_pretrained(tmp_path / "mlm", head="classification", num_labels=2, reinit_head=True)
    assert any("pooler" in n for n in m.load_report.reinitialised)
    with pytest.raises(Exception, match="pooler"):
        bertscope.from_pretrained(tmp_path / "mlm", head="classification", num_labels=2)


def test_from_pretrained_names_a_keyword_it_does_not_take():
    need_shared()
    for kw, words in (({"num_label": 3}, "unknown keyword num_label=3; did you mean num_labels?"),
                      ({"torch_dtype": torch.bfloat16}, "bertscope's spelling is dtype="),
                      ({"trust_remote_code": True}, "reads a local folder as it is"),
                      ({"colour": "red"}, "expected head, num_labels, reinit_head or dtype")):
        with pytest.raises(bertscope.UsageError, match=re.escape(words)):
            bertscope.from_pretrained(TINY / "bert", **kw)



def test_a_config_too_big_for_this_machine_is_named_before_anything_is_allocated(tmp_path):
    folder = copy_fixture("bert", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 10 ** 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: a model of these sizes .* num_hidden_layers 10000000.* "
                                              r"but this machine has"):
        bertscope.from_pretrained(folder)


def test_loading_functions_name_arguments_of_the_wrong_kind():
    need_shared()
    model = bertscope.from_pretrained(TINY / "bert")
    for call, words in ((lambda: bertscope.from_pretrained(None), "expected a checkpoint folder"),
                        (lambda: bertscope.from_pretrained(model), "a Model is loaded already"),
                        (lambda: bertscope.from_pretrained(TINY / "bert", reinit_head="no"),
                         "reinit_head='no': expected True or False"),
                        (lambda: bertscope.from_pretrained(TINY / "bert", head="base", num_labels=7),
                         "num_labels=7: head 'base' has no labels"),
                        (lambda: bertscope.load_tokenizer(None), "folder=None: expected a folder"),
                        (lambda: bertscope.load_tokenizer(TINY / "bert", max_length="64"),
                         "max_length='64': expected a whole number"),
                        (lambda: bertscope.api.load(model), "a Model is loaded already")):
        with pytest.raises(bertscope.UsageError, match=re.escape(words)):
            call()
