"""Outputs of every reference fixture, matched tensor by tensor (hidden states, attention probabilities,
pooler, logits, losses), padded rows included; then the alternative execution paths against the padded one."""

import json

import pytest
import torch
from conftest import FIXTURES, TINY, TOL, load_reference, max_diff, model_inputs, need_shared

import bertscope

pytestmark = pytest.mark.kernels


def head_logits(ref):
    return ref["prediction_logits"] if "prediction_logits" in ref else ref["logits"]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_output_matches_reference(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    out = model(**model_inputs(ref), output_hidden_states=True, output_attentions=True)

    n_layers = model.config.num_hidden_layers
    assert len(out.hidden_states) == n_layers + 1 and len(out.attentions) == n_layers
    for i, h in enumerate(out.hidden_states):
        assert max_diff(h, ref[f"hidden_states_{i}"]) <= TOL, f"hidden_states_{i}"
    for i, a in enumerate(out.attentions):
        assert max_diff(a, ref[f"attentions_{i}"]) <= TOL, f"attentions_{i}"
    assert max_diff(out.logits, head_logits(ref)) <= TOL
    assert max_diff(out.loss, ref["loss"]) <= TOL
    if "pooler_output" in ref:
        assert max_diff(out.pooler_output, ref["pooler_output"]) <= TOL
    else:
        assert out.pooler_output is None  # RoBERTa's MLM and classification models have no pooler
    if "mlm_loss" in ref:
        assert max_diff(out.mlm_loss, ref["mlm_loss"]) <= TOL
    for part in ("nsp_loss", "sop_loss"):
        if part in ref:
            assert max_diff(out.pair_loss, ref[part]) <= TOL
            assert max_diff(out.pair_logits, ref["seq_relationship_logits" if part == "nsp_loss" else "sop_logits"]) <= TOL


@pytest.mark.parametrize("name", FIXTURES)
def test_fast_attention_path_matches_reference(name):
    """Without output_attentions the model runs torch SDPA; same outputs at the same tolerance."""
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    out = model(**model_inputs(ref), output_hidden_states=True)
    assert out.attentions is None
    for i, h in enumerate(out.hidden_states):
        assert max_diff(h, ref[f"hidden_states_{i}"]) <= TOL
    assert max_diff(out.logits, head_logits(ref)) <= TOL


def test_roberta_positions_start_after_padding_idx():
    ref = load_reference("roberta")
    from bertscope.inputs import default_position_ids
    model = bertscope.from_pretrained(TINY / "roberta")
    assert torch.equal(default_position_ids(model.config, ref["input_ids"]), ref["position_ids"])
    assert ref["position_ids"][0, 0] == 2 and ref["position_ids"][2, -1] == 1  # first real token, a pad


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_explicit_position_ids_equal_the_default(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    kw = model_inputs(ref)
    implicit = model(**kw).logits
    explicit = model(**kw, position_ids=ref["position_ids"]).logits
    assert torch.equal(implicit, explicit)
    shifted = model(**kw, position_ids=ref["position_ids"].flip(-1)).logits
    assert max_diff(shifted, implicit) > 1e-3  # positions are really read


def test_albert_layers_share_weights_as_the_reference_groups_them():
    need_shared()
    model = bertscope.from_pretrained(TINY / "albert")        # 4 layers, 2 groups: 0,0,1,1
    assert len(model.encoder.layers) == 2 and model.encoder.plan == [0, 0, 1, 1]
    one_group = bertscope.from_pretrained(TINY / "albert-cls")  # 4 layers, 1 group
    assert len(one_group.encoder.layers) == 1 and one_group.encoder.plan == [0, 0, 0, 0]
    c = bertscope.Config(family="albert", vocab_size=10, hidden_size=8, num_hidden_layers=6, num_attention_heads=2,
                         intermediate_size=16, num_hidden_groups=3, inner_group_num=2)
    assert c.layer_plan() == [0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5]


def test_pruned_heads_match_reference():
    ref = load_reference("bert", "reference_pruned.safetensors")
    from safetensors import safe_open
    with safe_open(str(TINY / "bert" / "reference_pruned.safetensors"), "pt") as f:
        pruned = json.loads(f.metadata()["fixture"])["pruned_heads"]
    model = bertscope.from_pretrained(TINY / "bert")
    model.prune_heads({int(k): v for k, v in pruned.items()})
    assert [layer.attention.heads for layer in model.encoder.layers] == [2, 3]
    out = model(**model_inputs(ref), output_hidden_states=True, output_attentions=True)
    for i, h in enumerate(out.hidden_states):
        assert max_diff(h, ref[f"hidden_states_{i}"]) <= TOL
    for i, a in enumerate(out.attentions):
        assert a.shape == ref[f"attentions_{i}"].shape and max_diff(a, ref[f"attentions_{i}"]) <= TOL
    assert max_diff(out.logits, ref["prediction_logits"]) <= TOL
    assert max_diff(out.loss, ref["loss"]) <= TOL
    assert model.config.pruned_heads == {0: (1, 3), 1: (2,)}


def test_pruning_in_two_steps_counts_heads_in_the_original_numbering():
    ref = load_reference("bert", "reference_pruned.safetensors")
    model = bertscope.from_pretrained(TINY / "bert")
    model.prune_heads({0: torch.tensor([3])})                       # heads as a tensor, or numpy's ints, too
    model.prune_heads({0: [1, 3], 1: [__import__("numpy").int64(2)]})   # 3 again is a no-op; 1 is still head 1
    out = model(**model_inputs(ref))
    assert max_diff(out.logits, ref["prediction_logits"]) <= TOL
    with pytest.raises(ValueError, match="every head"):
        model.prune_heads({0: [0, 2]})
    for mask in (torch.tensor([True, False, True, False]), torch.tensor(2)):      # a head mask, a 0-d value
        with pytest.raises(ValueError, match="prune_heads takes"):
            model.prune_heads({1: mask})


def pack(ref):
    """The real tokens of a padded batch, concatenated, with cumulative lengths."""
    mask = ref["attention_mask"].bool()
    lengths = mask.sum(1)
    cu = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return ref["input_ids"][mask], ref["token_type_ids"][mask], cu, mask


@pytest.mark.parametrize("name", FIXTURES)
def test_packed_batch_equals_padded_batch(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    ids, types, cu, mask = pack(ref)
    padded = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                   token_type_ids=ref["token_type_ids"], output_hidden_states=True)
    packed = model(input_ids=ids, token_type_ids=types, cu_seqlens=cu, output_hidden_states=True)
    assert packed.last_hidden_state.shape == (int(mask.sum()), model.config.hidden_size)
    for hp, hq in zip(padded.hidden_states, packed.hidden_states):
        assert max_diff(hp[mask], hq) <= TOL
    if padded.pooler_output is not None:
        assert max_diff(padded.pooler_output, packed.pooler_output) <= TOL
    if model.head == "classification":
        assert max_diff(padded.logits, packed.logits) <= TOL
    else:
        assert max_diff(padded.logits[mask], packed.logits) <= TOL


def test_packed_attention_probabilities_equal_padded():
    ref = load_reference("bert")
    model = bertscope.from_pretrained(TINY / "bert")
    ids, types, cu, mask = pack(ref)
    padded = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                   token_type_ids=ref["token_type_ids"], output_attentions=True)
    packed = model(input_ids=ids, token_type_ids=types, cu_seqlens=cu, output_attentions=True)
    for a, b in zip(padded.attentions, packed.attentions):   # (B, nh, L, L), same grid: longest row is 17
        assert a.shape == b.shape
        assert max_diff(a.transpose(1, 2)[mask], b.transpose(1, 2)[mask]) <= TOL  # rows of real queries


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_square_mask_equal_to_padding_mask_gives_the_same_result(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    kw = model_inputs(ref)
    flat = model(**kw, output_hidden_states=True)
    m = ref["attention_mask"]
    kw["attention_mask"] = m[:, None, :].expand(-1, m.shape[1], -1).contiguous()  # (B, L, L): every query sees real keys
    square = model(**kw, output_hidden_states=True)
    for a, b in zip(flat.hidden_states, square.hidden_states):
        assert torch.equal(a, b)
    assert torch.equal(flat.logits, square.logits)


def graph_mask(ref, n_nodes=4):
    """A GraphCodeBERT-style (B, L, L) mask: the last real tokens of each row act as data-flow nodes that see only
    the code tokens they come from and each other; code tokens see code tokens and special tokens; pads see nothing."""
    B, L = ref["input_ids"].shape
    lengths = ref["attention_mask"].sum(1).tolist()
    m = torch.zeros(B, L, L, dtype=torch.long)
    g = torch.Generator().manual_seed(7)
    for b, n in enumerate(lengths):
        nodes = list(range(max(1, n - n_nodes), n))
        code = [i for i in range(n) if i not in nodes]
        for i in code:
            m[b, i, code] = 1
        for i in nodes:
            m[b, i, nodes] = 1
            m[b, i, 0] = 1
            src = torch.randint(1, max(2, len(code)), (2,), generator=g)
            m[b, i, src] = 1
            m[b, src, i] = 1
    return m


@pytest.mark.parametrize("name", ["bert", "roberta-cls", "albert"])
def test_graph_shaped_mask_matches_reference_implementation(name):
    transformers = pytest.importorskip("transformers")
    ref = load_reference(name)
    m3 = graph_mask(ref)
    ours = bertscope.from_pretrained(TINY / name)
    out = ours(input_ids=ref["input_ids"], attention_mask=m3, token_type_ids=ref["token_type_ids"],
               output_hidden_states=True, output_attentions=True)
    arch = json.loads((TINY / name / "config.json").read_text())["architectures"][0]
    hf = getattr(transformers, arch).from_pretrained(TINY / name, attn_implementation="eager").eval()
    additive = (1.0 - m3[:, None].float()) * torch.finfo(torch.float32).min  # how GraphCodeBERT feeds a 3-D mask
    with torch.no_grad():
        theirs = hf(input_ids=ref["input_ids"], attention_mask=additive, token_type_ids=ref["token_type_ids"],
                    output_hidden_states=True, output_attentions=True)
    real = ref["attention_mask"].bool()
    for a, b in zip(out.hidden_states, theirs.hidden_states):
        assert max_diff(a[real], b[real]) <= TOL
    for a, b in zip(out.attentions, theirs.attentions):
        assert max_diff(a, b) <= TOL
    logits = theirs.prediction_logits if hasattr(theirs, "prediction_logits") else theirs.logits
    assert max_diff(out.logits[real] if out.logits.dim() == 3 else out.logits,
                    logits[real] if logits.dim() == 3 else logits) <= TOL
    assert max_diff(out.logits, ours(**{k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits) > 1e-3


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_masked_only_mlm_head_gives_the_same_loss(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    kw = model_inputs(ref)
    out = model(**kw, masked_only=True)
    scored = ref["labels"] != -100
    assert out.logits.shape == (int(scored.sum()), 1000)
    assert max_diff(out.logits, head_logits(ref)[scored]) <= TOL
    assert max_diff(out.loss, ref["loss"]) <= TOL


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_packed_batch_of_equal_lengths_takes_the_reshape_path(name):
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    ids, types = ref["input_ids"][:, :5], ref["token_type_ids"][:, :5]   # three rows of 5 real tokens
    padded = model(input_ids=ids, token_type_ids=types, output_hidden_states=True)
    cu = torch.tensor([0, 5, 10, 15])
    packed = model(input_ids=ids.reshape(-1), token_type_ids=types.reshape(-1), cu_seqlens=cu,
                   output_hidden_states=True)
    from bertscope.model import Packing
    assert Packing(cu).uniform
    for a, b in zip(padded.hidden_states, packed.hidden_states):
        assert max_diff(a.reshape(15, -1), b) <= TOL


@pytest.mark.parametrize("name,lengths", [("bert", [7, 13, 5, 30, 11, 9]), ("roberta", [10] * 5),
                                          ("albert", [1, 1, 1]), ("bert", [64, 64])])
def test_spare_rows_of_a_training_pass_change_no_loss_and_no_gradient(monkeypatch, name, lengths):
    """Training on the CPU through oneDNN, a packed batch carries spare rows up to a multiple of ROUND_ROWS from its
    embeddings on (in the grid's padding slots, or in extra sequences below when there are too few: equal lengths):
    the loss and every gradient are those of the pass without them, and the outputs hold the T real tokens."""
    from bertscope import kernels, packing
    from bertscope import model as bm
    if not kernels.ONEDNN:
        pytest.skip("no oneDNN in this build")
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", True)
    made = []
    monkeypatch.setattr(packing, "packing_for", lambda *a: made.append(packing.Packing(*a)) or made[-1])
    g = torch.Generator().manual_seed(0)
    T = sum(lengths)
    results = []
    for spare in (True, False):
        monkeypatch.setattr(bm, "rows_multiple", kernels.rows_multiple if spare else lambda w: 1)
        torch.manual_seed(0)
        model = bertscope.from_pretrained(TINY / name, head="token-classification", num_labels=3, reinit_head=True)
        model.train()
        for m in model.modules():                                       # no dropout: both passes comparable
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(m, bm.SelfAttention):
                m.dropout = 0.0
        g.manual_seed(0)
        ids = torch.randint(5, model.config.vocab_size, (T,), generator=g)
        labels = torch.randint(0, 3, (T,), generator=g)
        cu = packing.cu_seqlens_of(lengths)
        full = model(input_ids=ids, cu_seqlens=cu, labels=labels)      # every token: (T, 3)
        assert full.logits.shape == (T, 3)
        rows = torch.arange(0, T, 3)
        part = model(input_ids=ids, cu_seqlens=cu, labels=labels, last_rows=rows)
        (full.loss + part.loss).backward()
        results.append((full.logits, part.logits, {k: p.grad for k, p in model.named_parameters()
                                                   if p.grad is not None}))
        assert (made[-1].spare > 0) == (spare and T % kernels.ROUND_ROWS > 0)
        assert (T + made[-1].spare) % (kernels.ROUND_ROWS if spare else 1) == 0
    (fa, pa, ga), (fb, pb, gb) = results
    assert max_diff(fa, fb) <= TOL and max_diff(pa, pb) <= TOL
    assert ga.keys() == gb.keys()
    for k in ga:
        assert max_diff(ga[k], gb[k]) <= TOL, k


def test_a_packing_moved_to_a_gpu_in_one_copy_keeps_every_field():
    """On a GPU the packing's index tensors travel as one copy (packing.one_copy); the same function, run here to the
    CPU, must give back every tensor with its values, shape and dtype (a bool grid included)."""
    from bertscope.packing import Packing, one_copy
    p = Packing(torch.tensor([0, 3, 7, 8]))
    fields = [p.positions, p.index, p.real, p.first, p.cu32]
    moved = one_copy(fields, "cpu")
    assert [m.dtype for m in moved] == [f.dtype for f in fields] == [torch.long, torch.long, torch.bool, torch.long,
                                                                       torch.int32]
    for m, f in zip(moved, fields):
        assert m.shape == f.shape and torch.equal(m, f)
    assert p.real.tolist() == [[True] * 3 + [False], [True] * 4, [True] + [False] * 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention runs on CUDA only")
def test_flash_varlen_equals_attention_of_each_sequence_alone():
    """On a GPU in bf16, packed sequences go through aten's flash kernels (packing.flash_varlen): its output and the
    gradients of q, k and v must equal fp32 attention over each sequence on its own."""
    from bertscope.packing import flash_varlen, use_varlen
    g = torch.Generator(device="cuda").manual_seed(0)
    lengths, nh, hd = [5, 17, 1, 64], 4, 32
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    q, k, v = (torch.randn(sum(lengths), nh, hd, device="cuda", generator=g).bfloat16().requires_grad_()
               for _ in range(3))
    assert use_varlen(q, need_weights=False, dropout=0.0)
    out = flash_varlen(q, k, v, cu, max(lengths))
    grad = torch.randn(out.shape, device="cuda", generator=g).bfloat16()
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    parts = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):               # (1, nh, len, hd) each
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q32, k32, v32))
        parts.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1))
    ref = torch.cat(parts)                                            # (T, nh, hd)
    rq, rk, rv = torch.autograd.grad(ref, (q32, k32, v32), grad.float())
    for got, want in ((out, ref), (dq, rq), (dk, rk), (dv, rv)):
        assert (got.float() - want).abs().max() < 0.03 * want.abs().max()


@pytest.mark.parametrize("name", ["bert-cls", "roberta-cls", "albert-cls", "bert"])
def test_first_only_last_layer_gives_the_reference_outputs(name):
    """first_only: the last layer runs the first token of each sequence alone. Logits (classifiers) and the pooled
    output (BERT's pretraining model) still match the reference, padded and packed, and a (B, L, L) mask is read
    at its first row."""
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    if model.head != "classification":
        model = bertscope.from_pretrained(TINY / name, head="base")
    kw = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = model(**kw, first_only=True)
    B = ref["input_ids"].shape[0]
    assert out.last_hidden_state.shape == (B, model.config.hidden_size)
    assert max_diff(out.last_hidden_state, ref["hidden_states_%d" % model.config.num_hidden_layers][:, 0]) <= TOL
    if model.head == "classification":
        assert max_diff(out.logits, ref["logits"]) <= TOL
    if "pooler_output" in ref:
        assert max_diff(out.pooler_output, ref["pooler_output"]) <= TOL
    ids, types, cu, mask = pack(ref)
    packed = model(input_ids=ids, token_type_ids=types, cu_seqlens=cu, first_only=True)
    assert max_diff(packed.last_hidden_state, out.last_hidden_state) <= TOL
    m3 = graph_mask(ref)
    full = model(input_ids=ref["input_ids"], attention_mask=m3, token_type_ids=ref["token_type_ids"])
    first = model(input_ids=ref["input_ids"], attention_mask=m3, token_type_ids=ref["token_type_ids"], first_only=True)
    assert max_diff(first.last_hidden_state, full.last_hidden_state[:, 0]) <= TOL


@pytest.mark.parametrize("name", ["bert-cls", "roberta-cls", "albert-cls"])
def test_first_only_last_layer_gives_the_same_gradients(name):
    ref = load_reference(name)
    ids, types, cu, _ = pack(ref)
    grads = []
    for first_only in (False, True):
        model = bertscope.from_pretrained(TINY / name).eval()            # no dropout: the two must agree exactly
        out = model(input_ids=ids, token_type_ids=types, cu_seqlens=cu, labels=ref["labels"], first_only=first_only)
        out.loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert max_diff(grads[0][n], grads[1][n]) <= TOL, n


def test_first_only_is_refused_where_a_head_reads_every_token():
    model = bertscope.from_pretrained(TINY / "bert")                  # MLM + NSP
    ref = load_reference("bert")
    with pytest.raises(bertscope.errors.InputError, match="every token"):
        model(input_ids=ref["input_ids"], first_only=True)


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_last_rows_at_the_masked_positions_give_the_reference_mlm_loss(name):
    """last_rows: the last layer runs the scored positions alone (and the first tokens, which NSP/SOP read)."""
    ref = load_reference(name)
    model = bertscope.from_pretrained(TINY / name)
    kw = model_inputs(ref)
    scored = (ref["labels"].reshape(-1) != -100).nonzero().squeeze(-1)
    out = model(**kw, mlm_positions=scored, last_rows=scored)
    assert max_diff(out.logits, head_logits(ref)[ref["labels"] != -100]) <= TOL
    assert max_diff(out.loss, ref["loss"]) <= TOL
    for key in ("seq_relationship_logits", "sop_logits"):
        if key in ref:
            assert max_diff(out.pair_logits, ref[key]) <= TOL


@pytest.mark.parametrize("packed", [False, True])
def test_last_rows_give_the_token_logits_and_gradients_of_the_full_pass(packed):
    """Token classification at some pieces (any order, a (B, L, L) mask too): the same logits, loss and gradients
    as the full pass read at those pieces."""
    ref = load_reference("bert")
    m3 = graph_mask(ref)
    ids, types, cu, mask = pack(ref)
    results = []
    for use_rows in (False, True):
        torch.manual_seed(0)
        model = bertscope.from_pretrained(TINY / "bert", head="token-classification", num_labels=5,
                                          reinit_head=True).eval()
        if packed:
            kw = {"input_ids": ids, "token_type_ids": types, "cu_seqlens": cu}
            n = ids.numel()
        else:
            kw = {"input_ids": ref["input_ids"], "token_type_ids": ref["token_type_ids"], "attention_mask": m3}
            n = ref["input_ids"].numel()
        rows = torch.tensor([7, 0, 3, 12, n - 1, 20])
        labels = torch.full((n,), -100)
        labels[rows] = torch.arange(len(rows)) % 5
        out = model(**kw, labels=labels.view(kw["input_ids"].shape), last_rows=rows if use_rows else None)
        logits = out.logits if use_rows else out.logits.reshape(n, -1)[rows]
        out.loss.backward()
        results.append((logits, out.loss, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    (la, lossa, ga), (lb, lossb, gb) = results
    assert lb.shape == (6, 5) and max_diff(la, lb) <= TOL and max_diff(lossa, lossb) <= TOL
    assert ga.keys() == gb.keys()
    for k in ga:
        assert max_diff(ga[k], gb[k]) <= TOL, k


@pytest.mark.slow
def test_compiled_model_works_out_last_rows_outside_the_graph():
    """Under torch.compile the rows a last layer computes are worked out eagerly (as the packing is): the same
    logits as the eager model, and the graph breaks only where it calls those eager functions."""
    import shutil
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    from torch._dynamo.utils import counters
    from bertscope.model import compile_model
    ref = load_reference("bert")
    ids, types, cu, _ = pack(ref)
    eager = bertscope.from_pretrained(TINY / "bert", head="token-classification", num_labels=5, reinit_head=True).eval()
    compiled = bertscope.from_pretrained(TINY / "bert", head="token-classification", num_labels=5, reinit_head=True).eval()
    compiled.load_state_dict(eager.state_dict())
    compile_model(compiled)
    compiled.check = False                                            # as the training loop runs it
    counters.clear()
    rows = torch.tensor([0, 3, 7, 12, 20])
    kw = {"input_ids": ids, "token_type_ids": types, "cu_seqlens": cu, "last_rows": rows}
    with torch.no_grad():
        assert max_diff(compiled(**kw).logits, eager(**kw).logits) <= TOL
    breaks = dict(counters["graph_break"])
    assert all(k.startswith("Skip calling `torch.compiler.disable()`d function") for k in breaks), breaks


def test_last_rows_that_do_not_fit_are_refused():
    ref = load_reference("bert")
    model = bertscope.from_pretrained(TINY / "bert")                  # MLM + NSP
    kw = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    n = ref["input_ids"].numel()
    with pytest.raises(bertscope.errors.InputError, match="0..%d" % (n - 1)):
        model(**kw, last_rows=torch.tensor([0, n]))
    with pytest.raises(bertscope.errors.InputError, match="among last_rows"):
        model(**kw, last_rows=torch.tensor([1, 2]), mlm_positions=torch.tensor([1, 3]))
    with pytest.raises(bertscope.errors.InputError, match="not both"):
        bertscope.from_pretrained(TINY / "bert-cls")(**kw, last_rows=torch.tensor([1]), first_only=True)


@pytest.mark.parametrize("grad", [False, True])
def test_int8_layers_run_packed_batches(grad):
    """An int8 model (its Q/K/V and first feed-forward products swapped for Int8Linear, which has no `weight`) runs
    a packed batch, with or without autograd on, and stays close to fp32: the packed path reads the first layer's
    product only to decide on spare rows."""
    from bertscope import quantize
    from bertscope.packing import cu_seqlens_of
    ref = load_reference("bert")
    fp32 = bertscope.from_pretrained(TINY / "bert").eval()
    int8 = quantize.apply(bertscope.from_pretrained(TINY / "bert"), {
        f"encoder.layers.{i}.{name}": torch.ones(fp32.config.hidden_size)
        for i in range(fp32.config.num_hidden_layers) for name in ("attention.qkv", "intermediate")})
    ids = ref["input_ids"][:, :5].reshape(-1)
    cu = cu_seqlens_of([5] * ref["input_ids"].shape[0])
    with torch.set_grad_enabled(grad):
        a, b = fp32(input_ids=ids, cu_seqlens=cu), int8(input_ids=ids, cu_seqlens=cu)
    assert a.last_hidden_state.shape == b.last_hidden_state.shape
    assert torch.nn.functional.cosine_similarity(a.last_hidden_state, b.last_hidden_state, dim=-1).min() > 0.95
