"""config.json <-> Config: the reference's keys, unknown keys kept, clear errors."""

import json

import pytest
from conftest import FIXTURES, MINILM, TINY, need_shared

from bertscope.config import Config, ConfigError, named_config
from bertscope.model import Model


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_keeps_every_key(name):
    need_shared()
    original = json.loads((TINY / name / "config.json").read_text())
    c = Config.from_json(TINY / name)
    again = Config.from_dict(json.loads(c.to_json_string()))
    assert again == c
    written = json.loads(c.to_json_string())
    for key, value in original.items():
        assert written[key] == value, key


def test_old_config_with_extra_keys_round_trips():
    need_shared()
    original = json.loads((MINILM / "config.json").read_text())  # written by transformers 4.8.2
    c = Config.from_json(MINILM)
    assert c.extra["gradient_checkpointing"] == original["gradient_checkpointing"]
    assert json.loads(c.to_json_string())["gradient_checkpointing"] == original["gradient_checkpointing"]


def test_family_defaults_follow_the_reference():
    c = Config.from_dict({"model_type": "albert", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "intermediate_size": 128})
    assert (c.embedding_dim, c.hidden_act, c.hidden_dropout_prob) == (128, "gelu_new", 0.0)
    r = Config.from_dict({"model_type": "roberta", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 514})
    assert (r.pad_token_id, r.position_offset, r.max_tokens) == (1, 2, 512)


def test_missing_keys_are_listed():
    with pytest.raises(ConfigError, match="missing required key\\(s\\) hidden_size, intermediate_size"):
        Config.from_dict({"model_type": "bert", "vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 1})


def test_wrong_value_type():
    with pytest.raises(ConfigError, match="num_hidden_layers must be a positive integer, got '12'"):
        Config.from_dict({"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": "12",
                          "num_attention_heads": 2, "intermediate_size": 16})


def test_albert_groups_cannot_exceed_layers():
    with pytest.raises(ConfigError, match="num_hidden_groups 5 exceeds num_hidden_layers 4"):
        Config(family="albert", vocab_size=10, hidden_size=8, num_hidden_layers=4, num_attention_heads=2,
               intermediate_size=16, num_hidden_groups=5)


@pytest.mark.parametrize("name,params", [("bert-base", 109_482_240), ("roberta-base", 124_645_632),
                                         ("albert-base-v2", 11_683_584)])
def test_named_configs_have_the_public_checkpoints_sizes(name, params):
    import torch
    with torch.device("meta"):
        model = Model(named_config(name))
    assert model.num_parameters == params  # BertModel / RobertaModel / AlbertModel parameter counts


def test_model_imports_and_runs_with_torch_alone():
    import subprocess
    import sys
    code = ("import sys\n"
            "for m in ('safetensors', 'tokenizers', 'transformers', 'numpy', 'typer', 'rich'): sys.modules[m] = None\n"
            "import torch, bertscope\n"
            "m = bertscope.from_config(bertscope.Config(family='albert', vocab_size=50, hidden_size=16, "
            "num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, embedding_size=8), head='pretraining')\n"
            "print(tuple(m(torch.ones(2, 5, dtype=torch.long)).logits.shape))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 5, 50)"


def test_a_config_is_a_value_two_models_built_from_it_stay_independent(tmp_path):
    import bertscope
    c = Config(family="bert", vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=32)
    a, b = Model(c), Model(c)
    a.prune_heads({0: [1, 3]})
    assert c.pruned_heads == {} and b.config.pruned_heads == {} and a.config.pruned_heads == {0: (1, 3)}
    with pytest.raises(TypeError, match="Config, which is a value"):
        c.id2label[0] = "x"
    with pytest.raises(AttributeError):
        c.hidden_size = 32
    for name, model in (("a", a), ("b", b)):
        bertscope.save_pretrained(model, tmp_path / name)
        again = bertscope.from_pretrained(tmp_path / name)
        assert again.config.pruned_heads == model.config.pruned_heads
        assert all(again.state_dict()[k].shape == v.shape for k, v in model.state_dict().items())
    assert bertscope.from_pretrained(tmp_path / "b").encoder.layers[0].attention.heads == 4


def test_label_names_given_as_label2id_alone_are_read_and_a_family_contradiction_is_named(tmp_path):
    need_shared()
    config = json.loads((TINY / "bert-cls" / "config.json").read_text())
    config.pop("id2label")
    config["label2id"] = {"neg": 0, "pos": 1, "mid": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    c = Config.from_json(tmp_path)
    assert list(c.labels) == ["neg", "pos", "mid"] and c.num_labels == 3
    for extra in ({"label2id": {"neg": 0, "pos": 5}}, {"label2id": {"neg": "0", "pos": "1"}},
                  {"label2id": {"neg": 0, "pos": 1}, "num_labels": 3}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **extra}))
        c = Config.from_json(tmp_path)          # not class names 0..num_labels-1: ignored, as the reference does
        n = extra.get("num_labels", 2)
        assert c.num_labels == n and list(c.labels) == [f"LABEL_{i}" for i in range(n)]
    roberta = json.loads((TINY / "roberta-cls" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**roberta, "model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type 'bert', but architectures names "
                                          "RobertaForSequenceClassification, a RoBERTa class"):
        Config.from_json(tmp_path)
