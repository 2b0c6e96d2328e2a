"""How a model pretrained from scratch starts (starts.py): the `local` start's first-layer heads read the token at
their offset on real text from step 0, its position table stays fixed through pretraining and an exact resume,
and what it cannot take is refused with the option named."""

import pytest
import torch
from conftest import DATA, MINILM, need_shared
from typer.testing import CliRunner

import bertscope
from bertscope import api
from bertscope.errors import UsageError
from bertscope.starts import OFFSETS, apply_start, position_table
from bertscope.train.state import read_state

WIKI = DATA / "wikitext2" / "valid.txt"


def config(vocab_size, hidden=256, heads=4, layers=2, family="bert", **extra):
    return bertscope.Config(family=family, vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)


def offset_attention(model, ids) -> dict[int, list[float]]:
    """The mean attention each first-layer head puts on the token at offsets -2..2 (B = 1)."""
    with torch.no_grad():
        probs = model.eval()(input_ids=ids, output_attentions=True).attentions[0][0]      # (nh, L, L)
    L = ids.shape[1]
    out = {}
    for d in (-2, -1, 0, 1, 2):
        i = torch.arange(max(0, -d), min(L, L - d))
        out[d] = [float(probs[h, i, i + d].mean()) for h in range(probs.shape[0])]
    return out


def wiki_ids(tok, tokens=120):
    need_shared()
    text = " ".join(line for line in WIKI.read_text(encoding="utf-8").splitlines()[3:40] if line.strip())
    return torch.tensor([tok.backend.encode(text).ids[:tokens]])


def test_local_start_heads_read_their_offsets_on_real_text():
    tok = bertscope.load_tokenizer(MINILM)
    ids = wiki_ids(tok)
    torch.manual_seed(0)
    bert = bertscope.Model(config(tok.vocab_size))
    torch.manual_seed(0)
    local = bertscope.Model(config(tok.vocab_size))
    assert apply_start(bert, "standard") == ()
    assert apply_start(local, "local") == ("embeddings.position",)
    at_bert, at_local = offset_attention(bert, ids), offset_attention(local, ids)
    for head, delta in enumerate(OFFSETS):
        share = at_local[delta][head]
        assert share > 0.4                                    # ~half the head's attention or more on its offset
        assert all(share > 3 * at_local[d][head] for d in at_local if d != delta)    # several times any other
        assert at_local[0][head] < 0.01                       # and next to none on the token itself
        assert at_bert[delta][head] < 0.02                    # BERT's start: ~1/L everywhere
    # every other weight is BERT's start, drawn from the same seed
    a, b = bert.state_dict(), local.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"embeddings.position.weight", "encoder.layers.0.attention.qkv.weight"}
    assert torch.equal(b["embeddings.position.weight"], position_table(512, 256, 0.03))


def test_local_start_reserves_robertas_padding_row():
    torch.manual_seed(0)
    model = bertscope.Model(config(100, hidden=64, heads=4, family="roberta", pad_token_id=1))
    apply_start(model, "local")
    table = model.embeddings.position.weight
    assert table[1].abs().max() == 0 and table[2].abs().max() > 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    need_shared()
    path = tmp_path_factory.mktemp("corpus") / "wiki.txt"
    path.write_text("\n".join(WIKI.read_text(encoding="utf-8").splitlines()[:400]) + "\n", encoding="utf-8")
    return path


def run(corpus, out, cfg, **kw):
    args = dict(tokenizer=MINILM, family="bert", config=str(cfg), objective="mlm", max_length=64, max_steps=8,
                batch_size=8, lr=1e-3, log_every=1, save_every=3, eval_every=None, seed=3, device="cpu",
                start="local")
    return api.pretrain([corpus], out, **{**args, **kw})


def test_local_start_keeps_the_position_table_fixed_through_pretraining_and_resume(corpus, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(config(30522, hidden=64, heads=4).to_json_string())
    whole = run(corpus, tmp_path / "whole", cfg)
    start = position_table(512, 64, 0.03)
    trained = bertscope.from_pretrained(tmp_path / "whole").state_dict()
    assert torch.equal(trained["embeddings.position.weight"], start)
    assert (trained["encoder.layers.0.attention.qkv.weight"] - bertscope.Model(config(30522, hidden=64, heads=4))
            .state_dict()["encoder.layers.0.attention.qkv.weight"]).abs().max() > 0    # the rest trains
    part = run(corpus, tmp_path / "part", cfg, stop_after=4)
    assert not part.finished
    assert read_state(tmp_path / "part")["run"]["settings"]["freeze"] == ["embeddings.position"]
    resumed = api.resume(tmp_path / "part", device="cpu")
    assert resumed.history == whole.history                    # the resumed run keeps the table fixed too
    a, b = (bertscope.from_pretrained(tmp_path / d).state_dict() for d in ("whole", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_what_the_local_start_cannot_take_is_refused(corpus, tmp_path):
    from bertscope.cli import app
    albert = bertscope.Model(config(30522, hidden=64, heads=4, family="albert", embedding_size=32))
    with pytest.raises(UsageError, match="--start local: ALBERT's position table is 32 wide"):
        apply_start(albert, "local")
    narrow = tmp_path / "narrow.json"
    narrow.write_text(config(30522, hidden=64, heads=32).to_json_string())
    with pytest.raises(UsageError, match="heads of 2 dimensions"):
        run(corpus, tmp_path / "narrow", narrow)
    r = CliRunner().invoke(app, ["pretrain", "--corpus", str(corpus), "--tokenizer", str(MINILM), "--out",
                                 str(tmp_path / "both"), "--init", str(MINILM), "--start", "local"])
    assert r.exit_code == 2 and "--start local" in r.output and "--init" in r.output
    r = CliRunner().invoke(app, ["pretrain", "--family", "bert", "--corpus", str(corpus), "--tokenizer", str(MINILM),
                                 "--out", str(tmp_path / "odd"), "--start", "sinusoid"])
    assert r.exit_code == 2 and "--start 'sinusoid': use standard or local" in r.output
    assert not (tmp_path / "both").exists() and not (tmp_path / "odd").exists()


def test_freezing_an_unknown_parameter_is_refused_with_the_names_shown(tmp_path):
    from bertscope.tasks.pretraining import Pretraining
    from bertscope.train import Settings, train
    tok = bertscope.load_tokenizer(MINILM)
    task = Pretraining(tok, "mlm", max_length=32)
    data = task.encode([["the film was a delight .", "nothing in it works ."]] * 4, 0)
    model = bertscope.Model(config(tok.vocab_size, hidden=64, heads=4), head="mlm")
    with pytest.raises(UsageError, match="--freeze embeddings.positions: this model has no parameter"):
        train(model, task, data, None, tmp_path / "out", Settings(epochs=None, max_steps=1, batch_size=2,
                                                                  freeze=("embeddings.positions",)))
    with pytest.raises(UsageError, match="keeps every parameter of the model fixed"):
        train(model, task, data, None, tmp_path / "out", Settings(epochs=None, max_steps=1, batch_size=2,
                                                                  freeze=("embeddings", "encoder", "mlm")))
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_on_the_command_line_trains_a_fresh_mlm_head_alone(tiny_folder, corpus, tmp_path):
    from bertscope.cli import app
    out = tmp_path / "head"
    r = CliRunner().invoke(app, ["pretrain", "--init", str(tiny_folder), "--tokenizer", str(tiny_folder), "--corpus",
                                 str(corpus), "--objective", "mlm", "--out", str(out), "--steps", "3",
                                 "--batch-size", "4", "--lr", "1e-2", "--freeze", "embeddings", "--freeze", "encoder",
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "kept fixed: embeddings, encoder" in r.output
    before = bertscope.from_pretrained(tiny_folder).state_dict()
    after = bertscope.from_pretrained(out).state_dict()
    body = [k for k in before if k.startswith(("embeddings.", "encoder."))]
    assert body and all(torch.equal(before[k], after[k]) for k in body)        # the encoder as it was
    assert (after["mlm.norm.weight"] - 1).abs().max() > 0 and after["mlm.decoder.bias"].abs().max() > 0  # trained


def test_a_wrong_freeze_is_refused_before_the_corpus_is_read(tiny_folder, tmp_path):
    from bertscope.cli import app
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["pretrain", "--init", str(tiny_folder), "--tokenizer", str(tiny_folder), "--corpus",
                                 str(tmp_path / "no-such-corpus.txt"), "--objective", "mlm", "--out", str(out),
                                 "--steps", "3", "--freeze", "encoderz"])
    assert r.exit_code == 2 and "--freeze encoderz: this model has no parameter" in r.output
    assert "reading" not in r.output and "no-such-corpus" not in r.output and not out.exists()
