"""The real all-MiniLM-L6-v2 checkpoint: tokenizer ids, every hidden state, pooler and sentence embedding against
the reference outputs stored beside it (models/minilm-l6-h384/README.md)."""

import pytest
import torch
from conftest import MINILM, max_diff

import bertscope
from bertscope.model import mean_pool

pytestmark = pytest.mark.kernels

# README: 1e-5 at real positions and on pooled outputs. At padded positions the stored reference differs from the
# reference implementation itself re-run on this machine's CPU by up to 1.2e-4 (values reach ~10 there, nothing
# reads them), so padded positions are held to 5e-4 here; against a live reference run below they match to 1e-5
# when both use the same CPU products (MKL).
TOL, PAD_TOL = 1e-5, 5e-4


@pytest.fixture(scope="module")
def minilm():
    from conftest import need_shared
    need_shared()
    from safetensors.torch import load_file
    ref = load_file(str(MINILM / "reference.safetensors"))
    sentences = (MINILM / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return bertscope.from_pretrained(MINILM), bertscope.load_tokenizer(MINILM), ref, sentences


def test_tokenizer_gives_the_stored_ids(minilm):
    _, tok, ref, sentences = minilm
    batch = tok(sentences)
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[k], ref[k]), k


@pytest.mark.parametrize("attention", ["sdpa", "spelled-out", "with-probabilities"])
def test_hidden_states_pooler_and_sentence_embedding(minilm, attention, monkeypatch):
    """The three ways attention runs (one SDPA call; q·kᵀ, softmax, ·v, which the CPU uses for short texts; the
    same returning the probabilities) all give the stored reference outputs."""
    import bertscope.model as m
    model, tok, ref, sentences = minilm
    batch = tok(sentences)
    limit = {"sdpa": 0, "spelled-out": 10_000}.get(attention, m.CPU_SPELLED_OUT_UP_TO)
    monkeypatch.setattr(m, "CPU_SPELLED_OUT_UP_TO", limit)
    assert m.spelled_out_attention(torch.zeros(1, 1, batch["input_ids"].shape[1], 1), 0.0) == (attention != "sdpa")
    out = model(**batch, output_hidden_states=True, output_attentions=attention == "with-probabilities")
    real = batch["attention_mask"].bool()
    assert len(out.hidden_states) == 7
    for i, h in enumerate(out.hidden_states):
        assert max_diff(h[real], ref[f"hidden_states_{i}"][real]) <= TOL, f"hidden_states_{i}"
        assert max_diff(h[~real], ref[f"hidden_states_{i}"][~real]) <= PAD_TOL, f"hidden_states_{i} (pads)"
    assert max_diff(out.last_hidden_state[real], ref["last_hidden_state"][real]) <= TOL
    assert max_diff(out.pooler_output, ref["pooler_output"]) <= TOL
    emb = mean_pool(out.last_hidden_state, batch["attention_mask"])
    assert max_diff(emb, ref["sentence_embedding"]) <= TOL


@pytest.mark.parametrize("products", ["onednn", "torch-default"])
def test_matches_live_reference_everywhere_including_padding(minilm, products, monkeypatch):
    """With torch's default CPU products (MKL, as the reference uses) every position matches a live reference run to
    1e-5, padded rows included. With oneDNN's products (bertscope's default on the CPU) real positions still match
    to 1e-5; padded rows, whose values reach ~10 and which nothing reads, round differently (1.6e-4 seen), so they
    are held to the 5e-4 used against the stored file."""
    import bertscope.kernels as kernels
    transformers = pytest.importorskip("transformers")
    if not kernels.ONEDNN and products == "onednn":
        pytest.skip("oneDNN is not available in this torch build")
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", products == "onednn")   # force the product, whatever was measured
    model, tok, ref, sentences = minilm
    batch = tok(sentences)
    hf = transformers.BertModel.from_pretrained(MINILM, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf(**batch, output_hidden_states=True)
    ours = model(**batch, output_hidden_states=True, output_attentions=True)
    real = batch["attention_mask"].bool()
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert max_diff(a[real], b[real]) <= TOL
        assert max_diff(a[~real], b[~real]) <= (TOL if products == "torch-default" else PAD_TOL)


def test_packed_sentences_equal_padded(minilm):
    model, tok, ref, sentences = minilm
    batch = tok(sentences)
    mask = batch["attention_mask"].bool()
    cu = torch.cat([torch.zeros(1, dtype=torch.long), mask.sum(1).cumsum(0)])
    packed = model(input_ids=batch["input_ids"][mask], token_type_ids=batch["token_type_ids"][mask], cu_seqlens=cu)
    assert max_diff(packed.last_hidden_state, ref["last_hidden_state"][mask]) <= TOL
    assert max_diff(packed.pooler_output, ref["pooler_output"]) <= TOL


def test_similar_sentences_are_closer(minilm):
    model, tok, _, _ = minilm
    texts = ["a gripping, beautifully acted film", "a moving and wonderfully performed movie",
             "the quarterly tax filing deadline moved"]
    b = tok(texts)
    e = mean_pool(model(**b).last_hidden_state, b["attention_mask"])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


@pytest.mark.slow
def test_compiled_model_matches_reference_packed_and_padded(minilm):
    """torch.compile (dynamic shapes): packed batches of changing size and a padded batch, each compared with the
    stored reference at the same 1e-5; compiling changes neither parameters nor their names."""
    from bertscope import infer
    from bertscope.model import compile_model
    model, tok, ref, sentences = minilm
    fast = bertscope.from_pretrained(MINILM)
    names = list(fast.state_dict())
    compile_model(fast)
    assert list(fast.state_dict()) == names
    batch = tok(sentences)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        assert max_diff(fast(**batch).last_hidden_state[mask], ref["last_hidden_state"][mask]) <= TOL
        for n in (len(sentences), 3):     # two packed batches of different sizes: one compiled graph
            enc = infer.tokenize(tok, sentences[:n])
            got = torch.cat(infer.token_embeddings(fast, enc))
            assert max_diff(got, ref["last_hidden_state"][:n][mask[:n]]) <= TOL
        emb = infer.sentence_embeddings(fast, infer.tokenize(tok, sentences))
    assert max_diff(emb, ref["sentence_embedding"]) <= TOL


def test_bf16_model_stays_close_to_reference(minilm):
    """bfloat16 weights and activations (the --bf16 inference path): 8 bits of mantissa, so the tolerance is
    stated differently: sentence embeddings within cosine 0.999 of the reference, hidden states within 3% relative
    (norm of the difference over the norm)."""
    from bertscope import infer
    _, tok, ref, sentences = minilm
    model = bertscope.from_pretrained(MINILM).to(torch.bfloat16)
    batch = tok(sentences)
    mask = batch["attention_mask"].bool()
    enc = infer.tokenize(tok, sentences)
    emb = infer.sentence_embeddings(model, enc)
    assert emb.dtype == torch.float32
    assert (emb * ref["sentence_embedding"]).sum(-1).min() > 0.999
    got = torch.cat(infer.token_embeddings(model, enc))
    want = ref["last_hidden_state"][mask]
    assert float((got - want).norm() / want.norm()) < 0.03
