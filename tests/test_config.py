"""config.json <-> Config: the reference's keys, unknown keys kept, clear errors."""

import json

import pytest
from conftest import FIXTURES, MINILM, TINY, need_shared

from bertscope.config import NAMED, Config, ConfigError, named_config
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
    assert name in NAMED


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
