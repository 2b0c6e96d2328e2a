"""Fine-tuning, evaluation, prediction and embeddings on slices of the real SST-2 and AG News files."""

import json

import pytest
import torch
from conftest import DATA, MINILM, need_shared

import bertscope
from bertscope import api, infer
from bertscope.data import read_examples
from bertscope.errors import DataError, OutputError
from bertscope.tasks.classification import SequenceClassification
from bertscope.train.state import checkpoint_dir, read_state, write_checkpoint


def finetune(folder, train, dev, out, **settings):
    return api.finetune(folder, train, out, eval=dev, device="cpu", **settings)


def evaluate(model, tok, path):
    task = SequenceClassification()
    task.use_model_labels(model.config)
    return task.evaluate(model, task.encode(task.read(path), tok))




@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return tiny_folder, bertscope.load_tokenizer(tiny_folder)


def head_slice(src, dst, n):
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.write_text("".join(lines[:n + 1]), encoding="utf-8")
    return dst


def test_sst2_loss_goes_down_and_accuracy_beats_chance(tiny, tmp_path):
    folder, tok = tiny
    train = head_slice(DATA / "sst2" / "train.tsv", tmp_path / "train.tsv", 3000)
    dev = head_slice(DATA / "sst2" / "dev.tsv", tmp_path / "dev.tsv", 500)
    r = finetune(folder, train, dev, tmp_path / "out", epochs=3, lr=1e-3, log_every=10)
    losses = [h["loss"] for h in r.history if "loss" in h]
    assert r.steps == 3 * 94 and len(losses) > 20 and r.finished
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:3]) / 3
    assert r.best > 0.70                                  # chance is ~0.5 on this slice
    # the kept folder is the best epoch's model and predicts exactly what was measured
    reloaded = bertscope.from_pretrained(tmp_path / "out")
    assert evaluate(reloaded, tok, dev)["accuracy"] == r.best
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(r.history))
    assert not (tmp_path / "out" / "checkpoint").exists()  # a finished run keeps no resumable state by default


def test_agnews_string_labels_come_back_as_names(tiny, tmp_path):
    folder, tok = tiny
    train_file = head_slice(DATA / "agnews" / "train.tsv", tmp_path / "train.tsv", 1200)
    test_file = head_slice(DATA / "agnews" / "test.tsv", tmp_path / "test.tsv", 400)
    test = read_examples(test_file)
    r = finetune(folder, train_file, test_file, tmp_path / "out", epochs=3, lr=2e-3)
    assert r.best > 0.5                                  # four balanced classes: chance is 0.25
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "Business", "1": "Sci/Tech", "2": "Sports", "3": "World"}
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    from typer.testing import CliRunner

    from bertscope.cli import app
    out = CliRunner().invoke(app, ["predict", str(tmp_path / "out"), str(tmp_path / "test.tsv"), "--format", "jsonl"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 400 and {r["label"] for r in rows} <= set(r_ for r_ in cfg["id2label"].values())
    assert rows[0]["text"] == test.texts[0]                # input order
    acc = sum(r["label"] == gold for r, gold in zip(rows, test.labels)) / 400
    assert abs(acc - max(h.get("eval_accuracy", 0) for h in json.loads(json.dumps(
        [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()])))) < 1e-6


def test_saved_classifier_loads_in_reference_implementation(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder, tok = tiny
    train = read_examples(head_slice(DATA / "agnews" / "train.tsv", tmp_path / "train.tsv", 200))
    finetune(folder, tmp_path / "train.tsv", None, tmp_path / "out", epochs=1, lr=1e-3)
    ours = bertscope.from_pretrained(tmp_path / "out")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    texts = train.texts[:8]
    b = tok(texts)
    assert torch.equal(hf_tok(texts, padding=True, return_tensors="pt")["input_ids"], b["input_ids"])
    with torch.no_grad():
        assert (hf(**b).logits - ours(**b).logits).abs().max() < 1e-5
    assert hf.config.id2label[0] == "Business"


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny, tmp_path):
    folder, tok = tiny
    train = head_slice(DATA / "sst2" / "train.tsv", tmp_path / "train.tsv", 600)
    dev = head_slice(DATA / "sst2" / "dev.tsv", tmp_path / "dev.tsv", 200)
    args = dict(epochs=2, lr=5e-4, batch_size=32, log_every=3, save_every=7, seed=3, keep_checkpoint=True)
    whole = finetune(folder, train, dev, tmp_path / "a", **args)
    part = finetune(folder, train, dev, tmp_path / "b", **args, stop_after=13)
    assert (part.steps, part.total_steps, part.finished) == (13, 38, False)
    partial = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert partial == whole.history[:len(partial)]
    resumed = api.resume(tmp_path / "b", device="cpu")
    assert resumed.history == whole.history                 # every logged loss and every evaluation, exactly
    a, b = (bertscope.from_pretrained(tmp_path / d / "checkpoint").state_dict() for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_not_overwritten(tiny, tmp_path):
    folder, tok = tiny
    train = head_slice(DATA / "sst2" / "train.tsv", tmp_path / "train.tsv", 64)
    finetune(folder, train, None, tmp_path / "out", epochs=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    with pytest.raises(OutputError, match="already holds a finished training run; choose another folder"):
        finetune(folder, train, None, tmp_path / "out", epochs=1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before


def test_embed_matches_sentence_transformers_reference(tmp_path):
    need_shared()
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from bertscope.cli import app
    ref = load_file(str(MINILM / "reference.safetensors"))
    r = CliRunner().invoke(app, ["embed", str(MINILM), str(MINILM / "sentences.txt"), "--out",
                                 str(tmp_path / "e.npy")])
    assert r.exit_code == 0, r.output
    import numpy as np
    emb = torch.from_numpy(np.load(tmp_path / "e.npy"))
    assert emb.shape == (16, 384) and (emb - ref["sentence_embedding"]).abs().max() <= 1e-5


def test_word_vectors_average_the_pieces_of_each_word():
    need_shared()
    model, tok = bertscope.from_pretrained(MINILM), bertscope.load_tokenizer(MINILM)
    text = ["unbelievably good tokenization"]
    enc = infer.tokenize(tok, text, word_ids=True)
    words = infer.word_embeddings(model, enc)[0]
    tokens = infer.token_embeddings(model, enc)[0]
    w = torch.tensor(enc.word_ids[0])
    assert words.shape == (3, 384) and (w == 2).sum() > 1      # "tokenization" is split into pieces
    assert torch.allclose(words[2], tokens[w == 2].mean(0), atol=1e-6)



def test_token_and_word_vectors_are_written_raw_unless_normalize_is_asked(tiny_folder, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("a great film\nnot good at all\n", encoding="utf-8")
    loaded = api.load(tiny_folder)
    written = {}
    for level in ("token", "word"):
        for normalize in (None, True):
            out = tmp_path / f"{level}{normalize}.jsonl"
            api.embed(loaded, texts, out, level=level, normalize=normalize)
            written[level, normalize] = [torch.tensor(json.loads(line)["vectors"])
                                         for line in out.read_text(encoding="utf-8").splitlines()]
    for level in ("token", "word"):
        for raw, unit in zip(written[level, None], written[level, True]):
            norms = raw.norm(dim=-1)
            assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-2)   # the last layer's vectors ...
            assert torch.allclose(unit.norm(dim=-1), torch.ones_like(norms), atol=1e-5)   # ... and of length 1
            assert torch.allclose(unit, raw / norms[:, None], atol=1e-5)


# ---- bad input: each names the file, the line and the field -------------------------------------------------------

def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_missing_column(tmp_path):
    p = write(tmp_path, "t.tsv", "sentence\tstars\ngood\t1\n")
    with pytest.raises(DataError, match=r"t.tsv line 1: no label column 'label'; the header has 'sentence', 'stars'"):
        read_examples(p)


def test_row_with_too_few_fields(tmp_path):
    p = write(tmp_path, "t.tsv", "sentence\tlabel\ngood\t1\nno label here\nbad\t0\n")
    with pytest.raises(DataError, match=r"t.tsv line 3: expected 2 tab-separated fields \(sentence, label\), found 1"):
        read_examples(p)
    ex = read_examples(p, skip_bad_rows=True)
    assert ex.texts == ["good", "bad"] and [line for line, _ in ex.skipped] == [3]


def test_empty_label(tmp_path):
    p = write(tmp_path, "t.csv", 'text,label\n"fine, really",pos\nnothing,\n')
    with pytest.raises(DataError, match=r"t.csv line 3: empty label in field 'label'"):
        read_examples(p)
    assert read_examples(p, skip_bad_rows=True).texts == ["fine, really"]


def test_label_in_eval_that_training_never_saw(tiny, tmp_path):
    folder, tok = tiny
    train = write(tmp_path, "train.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    dev = write(tmp_path, "dev.jsonl", '{"text": "meh", "label": "neutral"}\n')
    with pytest.raises(DataError, match=r"dev.jsonl line 1: label 'neutral' is not one the model knows \(neg, pos\)"):
        finetune(folder, train, dev, tmp_path / "out")
    assert not (tmp_path / "out").exists()                  # nothing written before the data is known good


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="t.tsv: the file is empty"):
        read_examples(write(tmp_path, "t.tsv", ""))
    with pytest.raises(DataError, match="h.tsv: no examples"):
        read_examples(write(tmp_path, "h.tsv", "sentence\tlabel\n"))


def test_non_utf8_line(tmp_path):
    p = write(tmp_path, "t.tsv", b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")
    with pytest.raises(DataError, match=r"t.tsv line 3: not valid UTF-8"):
        read_examples(p)


def test_jsonl_row_that_is_not_json(tmp_path):
    p = write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n')
    with pytest.raises(DataError, match=r"t.jsonl line 2: not valid JSON"):
        read_examples(p)


def test_cli_reports_bad_input_without_a_traceback(tiny, tmp_path):
    folder, _ = tiny
    from typer.testing import CliRunner

    from bertscope.cli import app
    p = write(tmp_path, "t.tsv", "sentence\tlabel\ngood\t1\nbad\n")
    r = CliRunner().invoke(app, ["finetune", str(folder), "--train", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "t.tsv line 3: expected 2 tab-separated fields" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_sentence_pairs_get_two_segments_and_train(tiny, tmp_path):
    """A pair task built from real SST-2 sentences: do two phrases carry the same sentiment?"""
    folder, tok = tiny
    rows = [line.split("\t") for line in (DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:201]]
    lines = ["first\tsecond\tsame"] + [f"{a[0].strip()}\t{b[0].strip()}\t{'yes' if a[1] == b[1] else 'no'}"
                                       for a, b in zip(rows[::2], rows[1::2])]
    p = write(tmp_path, "pairs.tsv", "\n".join(lines) + "\n")
    ex = read_examples(p, text_column="first", label_column="same", pair_column="second")
    assert len(ex) == 100 and ex.pairs[0] == rows[1][0].strip()
    enc = infer.tokenize(tok, ex.texts, ex.pairs)
    assert set(enc.types[0]) == {0, 1} and enc.types[0][-1] == 1
    r = api.finetune(folder, p, tmp_path / "out", eval=p, text_column="first", label_column="same",
                     pair_column="second", epochs=1, batch_size=16, device="cpu")
    assert bertscope.Config.from_json(tmp_path / "out").labels == ["no", "yes"] and r.steps == 7


def test_a_save_cut_off_by_ctrl_c_leaves_a_resumable_folder(tmp_path):
    """Ctrl-C can land inside a checkpoint write; the next write and the next resume must still work."""
    model = bertscope.Model(bertscope.Config(family="bert", vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=16))
    save = lambda folder: bertscope.save_pretrained(model, folder)  # noqa: E731

    def state(step):
        return {"history": [], "run": {}, "position": {"step": step}}

    write_checkpoint(tmp_path, save, state(1))
    (tmp_path / ".checkpoint.old").mkdir()                      # a half-deleted previous checkpoint
    (tmp_path / ".checkpoint.old" / "config.json").write_text("{}")
    (tmp_path / ".checkpoint.tmp").mkdir()                      # a half-written new one
    write_checkpoint(tmp_path, save, state(2))
    assert read_state(tmp_path)["position"]["step"] == 2
    assert not (tmp_path / ".checkpoint.old").exists() and not (tmp_path / ".checkpoint.tmp").exists()
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")   # cut off between the two renames
    assert checkpoint_dir(tmp_path).name == ".checkpoint.old" and read_state(tmp_path)["position"]["step"] == 2
    write_checkpoint(tmp_path, save, state(3))
    assert read_state(tmp_path)["position"]["step"] == 3 and checkpoint_dir(tmp_path).name == "checkpoint"


def test_length_buckets_narrow_each_batch_and_bucket_1_does_not():
    """Real SST-2 lengths: windows of 50 batches sorted by length give batches of near-equal length (little
    padding in attention); --bucket 1 gives plain random batches. Both cover every example once per epoch."""
    need_shared()
    from bertscope.tasks.base import bucketed_batches as epoch_batches
    tok = bertscope.load_tokenizer(MINILM)
    texts = read_examples(DATA / "sst2" / "dev.tsv").texts
    lengths = [len(x) for x in infer.tokenize(tok, texts).ids]

    def spread(batches):    # mean (longest - shortest) inside a batch
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    bucketed, plain = epoch_batches(lengths, 32, 42, 0), epoch_batches(lengths, 32, 42, 0, bucket=1)
    for batches in (bucketed, plain):
        assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    assert spread(bucketed) < 3 and spread(plain) > 20
    assert epoch_batches(lengths, 32, 42, 1) != bucketed          # a new order every epoch


def test_bench_counts_the_real_tokens_of_the_users_texts():
    """bench times the user's own texts: the real-token count it reports is the tokenizer's count on those texts,
    and the packed path does the same work as the padded one in less time per real token."""
    need_shared()
    from bertscope import api
    loaded = api.load(MINILM, need_tokenizer=True)
    texts = read_examples(DATA / "sst2" / "dev.tsv").texts[:64]
    r = api.bench(loaded, loaded.model, texts, batch_size=16)
    assert r["texts"] == 64 and r["real_tokens"] == sum(len(loaded.tokenizer.encode(t)) for t in texts)
    assert r["longest"] == max(len(loaded.tokenizer.encode(t)) for t in texts)
    assert set(r["tokens_per_s"]) == {"padded", "packed"} and all(v > 0 for v in r["tokens_per_s"].values())
    assert 0 < r["gflops"] < 2 * r["peak_gflops"]


def test_kept_rows_train_exactly_as_dense_word_gradients(tiny, tmp_path, monkeypatch):
    """The word table's sparse gradients, written into a kept buffer (optim.KeptRows), give the parameters dense
    gradients give, step after step (rows the last step wrote are cleared, not carried over)."""
    from bertscope.train import optim
    folder, tok = tiny
    train = head_slice(DATA / "sst2" / "train.tsv", tmp_path / "train.tsv", 200)
    args = dict(epochs=1, lr=1e-3, batch_size=16, save_every=0, seed=5)
    seen = []

    class Watched(optim.KeptRows):
        def densify(self):
            super().densify()
            seen.append(len(self.tables))
    monkeypatch.setattr(optim, "KeptRows", Watched)
    kept = finetune(folder, train, None, tmp_path / "kept", **args)
    assert seen and set(seen) == {1}                      # the 30,522-row word table took the sparse route
    monkeypatch.setattr(optim, "KeptRows", lambda model: None)
    dense = finetune(folder, train, None, tmp_path / "dense", **args)
    assert kept.steps == dense.steps == 13
    a, b = (bertscope.from_pretrained(tmp_path / d).state_dict() for d in ("kept", "dense"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert not any(m.sparse for m in bertscope.from_pretrained(tmp_path / "kept").modules()
                   if isinstance(m, torch.nn.Embedding))


def test_kept_rows_leave_tied_and_small_tables_dense():
    from bertscope.train.optim import KeptRows
    c = bertscope.Config(family="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)
    mlm, classifier = bertscope.Model(c, head="mlm"), bertscope.Model(c, head="classification")
    assert KeptRows(mlm).tables == []                     # word table tied to the MLM decoder: dense
    rows = KeptRows(classifier)
    assert rows.tables == [classifier.embeddings.word]    # positions (512) and segments (2) stay dense
    rows.close()
    assert not classifier.embeddings.word.sparse


@pytest.mark.parametrize("max_norm", [0.05, 1e6])                 # clipped, and not clipped
def test_kept_word_rows_and_clipping_give_torchs_gradients_and_steps(max_norm):
    """The engine's CPU step (optim.KeptRows: sparse word-table gradients into a kept dense buffer; optim.clip_grad_norm:
    the table's norm from the rows written, no multiply when nothing is clipped) against torch's own (dense
    gradients, torch.nn.utils.clip_grad_norm_): the same norm, gradients and weights over three AdamW steps whose
    batches touch different rows."""
    from bertscope.train import optim
    torch.manual_seed(0)
    config = bertscope.Config(family="bert", vocab_size=12_000, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0, id2label={0: "O", 1: "B-x", 2: "I-x"})
    ours, theirs = (bertscope.Model(config, head="token-classification") for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    rows = optim.KeptRows(ours)
    assert rows.tables == [ours.embeddings.word]
    opts = [optim.optimizer(m, 1e-3, 0.01) for m in (ours, theirs)]   # weights agree to 1e-4 of a step
    for step in range(3):
        ids = torch.randint(step * 4000, step * 4000 + 500, (4, 9))   # new rows each step: old ones must be cleared
        labels = torch.randint(0, 3, (4, 9))
        for m in (ours, theirs):
            logits = m(input_ids=ids).logits
            torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1)).backward()
        rows.densify()
        norm = optim.clip_grad_norm(ours.parameters(), max_norm, rows)
        expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
        assert norm.item() == pytest.approx(expected.item(), rel=1e-5)
        assert (norm.item() > max_norm) == (max_norm < 1)
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-9), name
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (name, step, (a - b).abs().max().item())
    rows.close()


def test_resume_keeps_the_cpu_product_its_run_chose(tiny, tmp_path, monkeypatch):
    # a trial taken again after a busy first use may choose the other product: the resume keeps the run's own
    import shutil

    from bertscope import kernels
    if not kernels.ONEDNN:
        pytest.skip("this torch build has no oneDNN product")
    monkeypatch.delenv("BERTSCOPE_ONEDNN", raising=False)
    folder, tok = tiny
    train = head_slice(DATA / "sst2" / "train.tsv", tmp_path / "train.tsv", 320)
    args = dict(epochs=1, lr=5e-4, batch_size=32, log_every=2, save_every=4, seed=3, keep_checkpoint=True)
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", True)                        # the run's process chose oneDNN
    whole = finetune(folder, train, None, tmp_path / "a", **args)
    finetune(folder, train, None, tmp_path / "b", **args, stop_after=4)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["products"]["onednn"] is True
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    monkeypatch.setattr(kernels, "use_onednn_cpu", lambda: False)             # a new trial now picks torch's
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", None)                         # in a new process
    resumed = api.resume(tmp_path / "b", device="cpu")
    assert kernels._ONEDNN_CPU is True and resumed.history == whole.history
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", None)
    monkeypatch.setattr(kernels, "pin_products", lambda record: None)        # without the record: torch's product
    unpinned = api.resume(tmp_path / "c", device="cpu")
    assert kernels._ONEDNN_CPU is False and unpinned.history != whole.history


def test_each_logged_step_carries_the_rate_it_was_taken_at(tiny_folder, tmp_path):
    data = tmp_path / "t.tsv"
    data.write_text("sentence\tlabel\n" + "a great film\tpos\na dull mess\tneg\n" * 4, encoding="utf-8")
    r = api.finetune(tiny_folder, data, tmp_path / "o", max_steps=4, warmup=2, lr=1e-3, log_every=1,
                     batch_size=2, device="cpu")
    logged = [h for h in r.history if "loss" in h and "eval_loss" not in h]
    assert [h["step"] for h in logged] == [1, 2, 3, 4]                 # warm-up over 2 steps, then linear decay to 0
    assert [h["lr"] for h in logged] == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_a_config_bigger_than_the_memory_left_is_refused_before_anything_is_made(tiny_folder, tmp_path, monkeypatch):
    import bertscope.api.training as training
    corpus = tmp_path / "c.txt"
    corpus.write_text("a great film\n" * 8, encoding="utf-8")
    monkeypatch.setattr(training, "available_memory", lambda: (2**20, "available under a test's limit"))
    with pytest.raises(bertscope.UsageError, match=r"need about 0\.\d\d GiB to train .* but this machine has 0\.00 "
                                                   "GiB available under a test's limit; choose a smaller --config"):
        api.pretrain(corpus, tmp_path / "p", tokenizer=tiny_folder, family="bert", config="tiny", max_steps=1)
    assert not (tmp_path / "p").exists()
    monkeypatch.setattr(training, "available_memory", lambda: (2**40, "available"))
    assert api.pretrain(corpus, tmp_path / "p", tokenizer=tiny_folder, family="bert", config="tiny", max_steps=1,
                        batch_size=2, objective="mlm", max_length=16, device="cpu").finished

