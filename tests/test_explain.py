"""explain / check / export / draw: shapes against the real tensors of a forward pass, parameter totals against
the model, the module structure against the reference implementation's, FLOPs against torch's counter."""

import pytest
import torch
from conftest import DATA, MINILM, TINY, load_reference, need_shared
from torch.utils.flop_counter import FlopCounterMode

import bertscope
from bertscope.explain import estimate_flops, explain, preflight, render_text


def leaf_shapes(model, ids, types=None):
    """Output shapes of every leaf module, seen by our own hooks (independent of explain's)."""
    seen, hooks = {}, []

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, tuple(out.shape))
        return hook

    for name, m in model.named_modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(record(name)))
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    for h in hooks:
        h.remove()
    return seen, out


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_explained_shapes_are_the_shapes_of_the_real_tensors(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    ids, types = ref["input_ids"], ref["token_type_ids"]
    e = explain(model, ids, token_type_ids=types, unfold=True)
    nodes = {n.name: n for n in e.tree.walk()}
    seen, out = leaf_shapes(model, ids, types)
    for leaf, shape in seen.items():
        assert nodes[leaf].outputs == [shape], leaf
    assert nodes["embeddings"].outputs == [tuple(out.hidden_states[0].shape)]
    for step, i in enumerate(model.encoder.plan[:len(model.encoder.layers)]):
        layer = nodes[f"encoder.layers.{i}"]
        assert layer.outputs[0] == tuple(out.hidden_states[step + 1].shape)
        scores = nodes[f"encoder.layers.{i}.attention.(scores)"]
        assert scores.outputs == [tuple(out.attentions[step].shape)]           # (B, nh, L, L)
        q = nodes[f"encoder.layers.{i}.attention.(q, k, v)"].outputs[0]
        B, nh, L, _ = out.attentions[step].shape
        assert q == (B, nh, L, model.config.hidden_size // nh)
    assert nodes[""].outputs[0] == tuple(out.last_hidden_state.shape)


@pytest.mark.parametrize("name", ["bert", "roberta-cls", "albert", "albert-cls"])
def test_parameter_totals_equal_the_model(name):
    load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    e = explain(model)
    assert e.totals["total"] == sum(p.numel() for p in model.parameters())  # tied weights counted once
    for component, n in e.totals.items():
        if component != "total":
            module = getattr(model, component)
            owned = {id(p) for p in module.parameters()} - (
                {id(model.embeddings.word.weight)} if component == "mlm" else set())
            assert n == sum(p.numel() for p in module.parameters() if id(p) in owned), component
    assert sum(v for k, v in e.totals.items() if k != "total") == e.totals["total"]


def test_albert_saving_against_an_unshared_unfactorised_twin():
    load_reference("albert")
    model = bertscope.from_pretrained(TINY / "albert")
    s = explain(model).sharing
    c = model.config
    unshared = bertscope.Model(c.replace(num_hidden_groups=c.num_hidden_layers, inner_group_num=1))
    assert s["encoder_unshared"] == sum(p.numel() for p in unshared.encoder.parameters())
    bert_twin = bertscope.Model(bertscope.Config(family="bert", vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                                 num_hidden_layers=1, num_attention_heads=c.num_attention_heads,
                                                 intermediate_size=c.intermediate_size,
                                                 max_position_embeddings=c.max_position_embeddings,
                                                 type_vocab_size=c.type_vocab_size))
    assert s["embeddings_unfactorised"] == sum(p.numel() for p in bert_twin.embeddings.parameters())
    assert s["saved"] == s["twin_total"] - s["total"] > 0
    assert "ALBERT" in render_text(explain(model))


def hf_leaves(hf_model):
    return {name: repr(m) for name, m in hf_model.named_modules()
            if not list(m.children()) and list(m.parameters(recurse=False))}


def our_reference_leaves(model):
    e = explain(model, batch=1, length=8, unfold=True)
    out = {}
    for n in e.tree.walk():
        for ref, kind in zip(n.reference, n.reference_kind):
            out[ref] = kind
    return out, render_text(e)


def test_minilm_tree_matches_the_reference_module_structure():
    transformers = pytest.importorskip("transformers")
    need_shared()
    hf = transformers.BertModel.from_pretrained(MINILM)
    ours, text = our_reference_leaves(bertscope.from_pretrained(MINILM))
    assert ours == hf_leaves(hf)   # same names, same constructor dims, for every module with weights
    assert "encoder.layer.5.attention.self.{query,key,value}" in text


def test_roberta_base_tree_matches_the_reference_module_structure():
    transformers = pytest.importorskip("transformers")
    model = bertscope.from_config("roberta-base")
    c = model.config
    hf_config = transformers.RobertaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                           num_hidden_layers=c.num_hidden_layers,
                                           num_attention_heads=c.num_attention_heads,
                                           intermediate_size=c.intermediate_size,
                                           max_position_embeddings=c.max_position_embeddings,
                                           type_vocab_size=c.type_vocab_size, pad_token_id=c.pad_token_id,
                                           layer_norm_eps=c.layer_norm_eps)
    with torch.device("meta"):
        hf = transformers.RobertaModel(hf_config)
    ours, text = our_reference_leaves(model)
    assert ours == hf_leaves(hf)
    assert "Embedding(514, 768, padding_idx=1)" in text


@pytest.mark.parametrize("name", ["bert", "albert", "roberta-cls"])
def test_flop_estimate_agrees_with_torch_flop_counter(name):
    load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    ids = torch.randint(5, 1000, (2, 12))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, output_attentions=True)
    assert estimate_flops(model, 2, 12)["total"] == counter.get_total_flops()


def test_check_catches_the_640_token_roberta_input_and_passes_512():
    c = bertscope.named_config("roberta-base")
    problems = preflight(c, length=640)
    assert len(problems) == 1 and problems[0].what == "length"
    msg = problems[0].message
    assert "514 position embeddings" in msg and "first 2 are reserved (padding_idx=1" in msg
    assert "Truncate to 512 tokens" in msg
    assert preflight(c, length=512) == []
    assert preflight(c, length=512, pairs=True) == []   # pairs use </s></s>, not segments


def test_check_reports_every_violation():
    need_shared()
    c = bertscope.Config.from_json(TINY / "bert-cls")
    problems = preflight(c, length=200, ids=[[5, 6, 7], [5, 1000, 7]], labels=["World", "Sports", "Business",
                                                                               "Sci/Tech"], head="classification")
    kinds = [p.what for p in problems]
    assert kinds == ["length", "vocab", "labels"]
    assert "sequence 2: input_ids position 1 holds id 1000" in problems[1].message
    assert "4 classes" in problems[2].message and "new 4-class head" in problems[2].message
    one_segment = c.replace(type_vocab_size=1)
    assert [p.what for p in preflight(one_segment, length=10, pairs=True)] == ["segments"]


def test_check_command_exit_codes(tmp_path):
    need_shared()
    from typer.testing import CliRunner

    from bertscope.cli import app
    runner = CliRunner()
    bad = runner.invoke(app, ["check", "roberta-base", "--length", "640"])
    assert bad.exit_code == 1 and "514" in bad.output and "Truncate to 512" in bad.output
    good = runner.invoke(app, ["check", "roberta-base", "--length", "512"])
    assert good.exit_code == 0 and "fits" in good.output
    labels = runner.invoke(app, ["check", str(TINY / "bert-cls"), "--data", str(DATA / "agnews" / "test.tsv")])
    assert labels.exit_code == 1 and "but the classifier has 3" in labels.output and "--new-head" in labels.output
    ids = tmp_path / "ids.txt"
    ids.write_text("101 2000 102\n101 30522 102\n")
    r = runner.invoke(app, ["check", str(MINILM), "--ids-file", str(ids)])
    assert r.exit_code == 1 and "sequence 2" in r.output and "30522" in r.output


def test_explain_command_renders_text_markdown_and_json():
    need_shared()
    import json

    from typer.testing import CliRunner

    from bertscope.cli import app
    runner = CliRunner()
    r = runner.invoke(app, ["explain", str(MINILM), "--batch", "2", "--length", "10"])
    assert r.exit_code == 0, r.output
    assert "layers 0-5: 6 × EncoderLayer" in r.output and "[2, 10, 384] → [2, 10, 1536]" in r.output
    assert "[2, 12, 10, 10]" in r.output and "total 22,713,216" in r.output
    md = runner.invoke(app, ["explain", str(MINILM), "--format", "markdown", "--depth", "1"])
    assert sum(line.startswith("|---") for line in md.output.splitlines()) == 1 and "| ├─ encoder |" in md.output
    js = json.loads(runner.invoke(app, ["explain", str(MINILM), "--format", "json"]).output)
    assert js["totals"]["total"] == 22_713_216
    texts = runner.invoke(app, ["explain", str(MINILM), "--text", "a short one", "--text", "a slightly longer text"])
    width = bertscope.load_tokenizer(MINILM)(["a short one", "a slightly longer text"])["input_ids"].shape[1]
    assert f"input [2, {width}]" in texts.output


@pytest.mark.slow
def test_onnx_export_of_minilm_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    need_shared()
    from bertscope.export import export_onnx
    model = bertscope.from_pretrained(MINILM)
    r = export_onnx(model, tmp_path / "minilm.onnx", dynamic=True)
    assert r["outputs"] == ["last_hidden_state", "pooler_output"]
    assert r["checked_shape"] == (3, 23)                 # another batch and length than the traced (2, 16)
    assert max(r["max_diff"].values()) <= 1e-4
    import onnx
    graph = onnx.load(str(tmp_path / "minilm.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims)          # symbolic batch and sequence axes


def test_draw_puts_the_real_dims_on_the_picture(tmp_path):
    """The picture carries the shapes of this model: ALBERT's factorised embedding and its shared groups, RoBERTa's
    first-token classifier, at the batch and length asked for."""
    need_shared()
    pytest.importorskip("matplotlib")
    from bertscope.export import draw
    svg = draw(bertscope.from_pretrained(TINY / "albert"), tmp_path / "albert.svg", batch=3, length=40).read_text()
    for text in ("[3, 40, 32]", "Projection E → H", "Linear 32→64", "× 4, 2 shared weight sets", "Pooler + SOP",
                 "[3, 40, 1000]"):
        assert text in svg, text
    svg = draw(bertscope.from_pretrained(TINY / "roberta-cls"), tmp_path / "roberta.svg").read_text()
    assert "Linear 64→2" in svg and "[2, 2]" in svg and "shared" not in svg
    png = draw(bertscope.from_pretrained(TINY / "bert"), tmp_path / "bert.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pruned = bertscope.from_pretrained(TINY / "bert")
    pruned.prune_heads({0: [1, 3]})
    svg = draw(pruned, tmp_path / "pruned.svg").read_text()
    assert "nh by layer: 2, 4" in svg and "4 heads" not in svg
    # ALBERT with groups of two inner layers: the drawn block runs 2 × 2 times
    c = bertscope.Config(family="albert", vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, inner_group_num=2)
    svg = draw(bertscope.Model(c), tmp_path / "inner.svg", length=8).read_text()
    assert "× 4 (2 layers × 2 inner), one shared group of 2 weight sets" in svg
