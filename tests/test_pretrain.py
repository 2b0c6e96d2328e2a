"""Pretraining on real WikiText-2: tokenizer training, masking statistics, NSP/SOP pairs, a tiny model that learns,
multi-process training under torchrun, exact resume, and checkpoints the reference implementation loads."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA, need_shared

import bertscope
from bertscope import infer
from bertscope.data import read_documents
from bertscope.masking import build_instances, mask_tokens, tokenize_documents
from bertscope.tasks.pretraining import Pretraining
from bertscope.tokenize import load_tokenizer, save_vocab_files, train_tokenizer
from bertscope.train import Settings, train
from bertscope.train.state import read_state


def pretrain(model, tok, train_docs, eval_docs, out, objective, max_length=64, whole_word=None, resume=None,
             stop_after=None, held_out=None, **settings):
    """The one engine with the pretraining task, on documents already read (seeds as the CLI uses them)."""
    task = Pretraining(tok, objective, whole_word=whole_word, max_length=max_length)
    s = Settings(epochs=None, **settings)
    data = task.encode(train_docs, s.seed)
    held = task.encode(eval_docs, s.seed + 1) if eval_docs else None
    if held is not None and held_out:
        held = infer.Encoded(held.ids[:held_out], held.types[:held_out],
                             extra={"instances": held.extra["instances"][:held_out]})
    return train(model, task, data, held, out, s, tokenizer=tok, resume=resume, stop_after=stop_after)

VALID, TEST = DATA / "wikitext2" / "valid.txt", DATA / "wikitext2" / "test.txt"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    need_shared()
    out = {}
    for family in ("bert", "roberta", "albert"):
        folder = tmp_path_factory.mktemp(f"tok-{family}")
        tok = train_tokenizer([VALID], family, 3000)
        tok.save(folder)
        save_vocab_files(tok, folder)
        out[family] = folder
    return out


@pytest.fixture(scope="module")
def wiki_docs():
    need_shared()
    return read_documents([VALID])


def test_trained_tokenizers_have_the_family_specials(tokenizers):
    bert, roberta, albert = (load_tokenizer(tokenizers[f]) for f in ("bert", "roberta", "albert"))
    assert (bert.pad_token_id, bert.mask_token) == (0, "[MASK]") and (tokenizers["bert"] / "vocab.txt").exists()
    assert (roberta.pad_token_id, roberta.cls_token_id, roberta.mask_token) == (1, 0, "<mask>")
    assert (tokenizers["roberta"] / "merges.txt").exists()
    assert albert.tokenize("Lobsters")[0].startswith("▁") and albert.mask_token == "[MASK]"
    assert bert.tokenize("crustaceans")[-1].startswith("##")


def test_wikitext_headings_start_documents(wiki_docs):
    titles = sum(1 for line in VALID.read_text(encoding="utf-8").splitlines()
                 if line.startswith(" = ") and not line.startswith(" = = "))
    assert len(wiki_docs) == titles
    assert not any(s.startswith("= ") for doc in wiki_docs for s in doc)


@pytest.mark.parametrize("whole_word", [None, "pieces"])
def test_masking_selects_15_percent_split_80_10_10(tokenizers, wiki_docs, whole_word):
    tok = load_tokenizer(tokenizers["bert"])
    instances = build_instances(tokenize_documents(tok, wiki_docs), tok, 128, "mlm+nsp", seed=0)
    chosen = candidates = masked = random_ = kept = 0
    g = torch.Generator().manual_seed(0)
    for inst in instances:
        ids, labels = mask_tokens(inst, tok, 0.15, whole_word, g)
        original = torch.tensor(inst.ids)
        special = torch.tensor(inst.special)
        assert (labels[special] == -100).all()                                    # never a special token
        sel = labels != -100
        assert torch.equal(labels[sel], original[sel])
        chosen += int(sel.sum())
        candidates += int((~special).sum())
        masked += int((ids[sel] == tok.mask_token_id).sum())
        kept += int((ids[sel] == original[sel]).sum())
        random_ += int(((ids[sel] != original[sel]) & (ids[sel] != tok.mask_token_id)).sum())
        if whole_word:   # every word is selected whole or not at all
            word, members = -1, {}
            for i, (st, sp) in enumerate(zip(inst.word_start, inst.special)):
                if sp:
                    word += 1
                    continue
                if st:
                    word += 1
                members.setdefault(word, []).append(bool(sel[i]))
            assert all(len(set(v)) == 1 for v in members.values())
    assert abs(chosen / candidates - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02 and abs(random_ / chosen - 0.1) < 0.02 and abs(kept / chosen - 0.1) < 0.02


@pytest.mark.parametrize("family,objective", [("bert", "mlm+nsp"), ("albert", "mlm+sop"), ("roberta", "mlm")])
def test_pairs_are_balanced_and_come_from_the_right_documents(tokenizers, wiki_docs, family, objective):
    tok = load_tokenizer(tokenizers[family])
    instances = build_instances(tokenize_documents(tok, wiki_docs), tok, 128, objective, seed=0)
    assert all(len(i.ids) <= 128 for i in instances)
    if objective == "mlm":
        assert all(i.pair_label == -1 and i.ids[0] == tok.cls_token_id and i.ids[-1] == tok.sep_token_id
                   for i in instances)
        return
    share = sum(i.pair_label == 1 for i in instances) / len(instances)
    assert 0.45 < share < 0.55
    for inst in instances:
        if objective == "mlm+nsp":
            assert (inst.doc_b != inst.doc) == (inst.pair_label == 1)               # random B: another document
        else:
            assert inst.doc_b == inst.doc                                           # SOP: both from one document
        seps = [k for k, t in enumerate(inst.ids) if t == tok.sep_token_id]
        assert inst.types[:seps[0] + 1] == [0] * (seps[0] + 1) and set(inst.types[seps[0] + 1:]) == {1}


def test_mlm_segments_keep_every_token_in_order(tokenizers, wiki_docs):
    """MLM alone (RoBERTa's full sentences): the segments, read one after another, are each document's text with no
    token left out, and they fill max_length (a segment that stopped at a sentence and dropped the rest lost 38%
    of People's Daily's tokens)."""
    tok = load_tokenizer(tokenizers["roberta"])
    docs = tokenize_documents(tok, wiki_docs)
    instances = build_instances(docs, tok, 128, "mlm", seed=0)
    for d, doc in enumerate(docs):
        assert [t for i in instances if i.doc == d for t in i.ids[1:-1]] == [t for s in doc for t in s.ids]
    full = [i for i in instances if len(i.ids) == 128]
    assert len(full) / len(instances) > 0.8
    # a segment that starts inside a word starts a word (whole-word masking never joins it to the last segment)
    assert all(i.word_start[1] for i in instances)


def tiny_model(tok, family, head, dropout=0.1):
    c = bertscope.Config(family=family, vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=256, pad_token_id=tok.pad_token_id,
                         max_position_embeddings=64 + (tok.pad_token_id + 1 if family == "roberta" else 0),
                         type_vocab_size=1 if family == "roberta" else 2, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, **({"embedding_size": 32} if family == "albert" else {}))
    return bertscope.Model(c, head=head)


@pytest.fixture(scope="module")
def pretrained(tokenizers, wiki_docs, tmp_path_factory):
    """A tiny model of each family pretrained 300 steps on wikitext2/valid.txt, evaluated on test.txt."""
    test_docs = read_documents([TEST])
    runs = {}
    for family, objective in (("bert", "mlm+nsp"), ("roberta", "mlm"), ("albert", "mlm+sop")):
        tok = load_tokenizer(tokenizers[family])
        torch.manual_seed(0)
        model = tiny_model(tok, family, "mlm" if objective == "mlm" else "pretraining")
        out = tmp_path_factory.mktemp(f"pt-{family}")
        r = pretrain(model, tok, wiki_docs, test_docs, out, objective, max_steps=300, batch_size=16, lr=2e-3,
                     eval_every=150, seed=1, held_out=256)
        runs[family] = (out, tok, r)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_tiny_model_learns_well_below_uniform_guess(pretrained, family):
    out, tok, r = pretrained[family]
    evals = [h for h in r.history if "eval_mlm_loss" in h]
    uniform = math.log(tok.vocab_size)
    assert evals[-1]["eval_mlm_loss"] < uniform - 1.5
    assert evals[-1]["eval_mlm_loss"] < evals[0]["eval_mlm_loss"]
    train_losses = [h["loss"] for h in r.history if "loss" in h]
    assert train_losses[-1] < train_losses[0] - 1.0
    assert (out / "curves.png").exists() and (out / "tokenizer.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family,arch", [("bert", "BertForPreTraining"), ("roberta", "RobertaForMaskedLM"),
                                         ("albert", "AlbertForPreTraining")])
def test_pretrained_checkpoint_loads_in_reference_implementation(pretrained, family, arch):
    transformers = pytest.importorskip("transformers")
    out, tok, _ = pretrained[family]
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]
    ours = bertscope.from_pretrained(out)
    theirs = getattr(transformers, arch).from_pretrained(out, attn_implementation="eager").eval()
    b = tok(["The lobster is a species of crustacean .", "It lives in the Atlantic Ocean ."])
    with torch.no_grad():
        ref = theirs(**b)
    logits = ref.prediction_logits if hasattr(ref, "prediction_logits") else ref.logits
    assert (ours(**b).logits - logits).abs().max() < 1e-4


def test_resume_reproduces_the_uninterrupted_loss_curve(tokenizers, wiki_docs, tmp_path):
    tok = load_tokenizer(tokenizers["albert"])
    args = dict(max_steps=24, batch_size=8, lr=1e-3, log_every=2, save_every=5, whole_word="pieces", seed=42)
    torch.manual_seed(0)
    whole = pretrain(tiny_model(tok, "albert", "pretraining"), tok, wiki_docs[:20], None, tmp_path / "a", "mlm+sop",
                     **args)
    torch.manual_seed(0)
    part = pretrain(tiny_model(tok, "albert", "pretraining"), tok, wiki_docs[:20], None, tmp_path / "b", "mlm+sop",
                    **args, stop_after=11)
    assert (part.steps, part.total_steps, part.finished) == (11, 24, False)
    model = bertscope.from_pretrained(tmp_path / "b" / "checkpoint").train()
    resumed = pretrain(model, tok, wiki_docs[:20], None, tmp_path / "b", "mlm+sop", **args,
                       resume=read_state(tmp_path / "b"))
    assert resumed.history == whole.history
    a, b = (bertscope.from_pretrained(tmp_path / d).state_dict() for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one_process_with_the_same_global_batch(tokenizers, tmp_path):
    tok = load_tokenizer(tokenizers["bert"])
    config = tiny_model(tok, "bert", "pretraining", dropout=0.0).config   # no dropout: the same arithmetic
    (tmp_path / "config.json").write_text(config.to_json_string())
    common = ["pretrain", "--family", "bert", "--config", str(tmp_path / "config.json"), "--corpus", str(VALID),
              "--tokenizer", str(tokenizers["bert"]), "--steps", "8", "--max-length", "64", "--lr", "1e-3",
              "--save-every", "0", "--threads", "1", "--eval", str(TEST), "--eval-every", "4", "--keep-checkpoint"]
    # (the last step evaluates, and the run keeps its checkpoint: every process must agree on both)
    cli = [sys.executable, "-m", "bertscope.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(cli + common + ["--out", str(tmp_path / "one"), "--batch-size", "8"], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "bertscope.cli"] + common + ["--out", str(tmp_path / "two"), "--batch-size", "4"],
                         env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "global batch 8 = 4 × 2 process(es)" in two.stdout
    a = bertscope.from_pretrained(tmp_path / "one").state_dict()
    b = bertscope.from_pretrained(tmp_path / "two").state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    h1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    h2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(h1) == len(h2) and all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(h1, h2) if "loss" in x)
    assert [x["step"] for x in h2 if "eval_mlm_loss" in x] == [4, 8] and (tmp_path / "two" / "checkpoint").is_dir()


@pytest.mark.slow
def test_finetune_under_torchrun_equals_one_process_adding_up_as_many_batches(tmp_path):
    """Two processes of batch 4 train as one process of batch 4 with --grad-accum 2 (each step adds up the same two
    batches); a run resumes only under as many processes as it ran in."""
    need_shared()
    from conftest import MINILM
    torch.manual_seed(0)
    model = bertscope.Model(bertscope.Config(family="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    bertscope.save_pretrained(model, tmp_path / "m")
    load_tokenizer(MINILM).save(tmp_path / "m")
    rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.tsv").write_text("".join(rows[:161]), encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("".join((DATA / "sst2" / "dev.tsv").read_text().splitlines(True)[:41]))
    common = ["finetune", str(tmp_path / "m"), "--train", str(tmp_path / "train.tsv"), "--eval",
              str(tmp_path / "dev.tsv"), "--epochs", "2", "--max-length", "64", "--lr", "1e-3", "--threads", "1",
              "--batch-size", "4"]
    cli = [sys.executable, "-m", "bertscope.cli"]
    two_processes = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "-m", "bertscope.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(cli + common + ["--out", str(tmp_path / "one"), "--grad-accum", "2"], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(two_processes + common + ["--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("fine-tuning ") == 1 and two.stdout.count("done: 40 steps") == 1    # said once
    a = bertscope.from_pretrained(tmp_path / "one").state_dict()
    b = bertscope.from_pretrained(tmp_path / "two").state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    h1, h2 = ([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two"))
    assert [x["step"] for x in h1] == [x["step"] for x in h2]
    assert all(abs(x.get("loss", 0) - y.get("loss", 0)) < 1e-5 for x, y in zip(h1, h2))
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
    # a run of one process, stopped, is not resumed by two (their batches would differ), nor one of two by one
    stopped = bertscope.api.finetune(tmp_path / "m", tmp_path / "train.tsv", tmp_path / "alone",
                                     eval=tmp_path / "dev.tsv", epochs=2, max_length=64, batch_size=4,
                                     stop_after=5)
    assert not stopped.finished
    again = subprocess.run(two_processes + ["finetune", "--resume", str(tmp_path / "alone")], env=env,
                           capture_output=True, text=True)
    assert again.returncode != 0 and "ran in 1 process and this is 2" in again.stderr, again.stderr[-2000:]
    assert "exitcode  : 2" in again.stderr and "[rank" not in again.stderr       # no process's own traceback
    assert again.stderr.count("error:") == 1                                      # said by the first process alone
    # a mistake only the first process checks (it writes --out): it says so, the other stops quietly
    into = subprocess.run(two_processes + common + ["--out", str(tmp_path / "m")], env=env, capture_output=True,
                          text=True)
    assert into.returncode != 0 and into.stderr.count("error:") == 1, into.stderr[-2000:]
    assert "terminate called" not in into.stderr and "[rank" not in into.stderr, into.stderr[-2000:]


def test_fill_mask_needs_a_mask_token(tokenizers, tmp_path):
    from typer.testing import CliRunner

    from bertscope.cli import app
    tok = load_tokenizer(tokenizers["roberta"])
    out = tmp_path / "roberta-mlm"
    bertscope.save_pretrained(tiny_model(tok, "roberta", "mlm"), out)
    tok.save(out)
    r = CliRunner().invoke(app, ["fill-mask", str(out), "The lobster lives in the sea."])
    assert r.exit_code == 2 and "mask token is '<mask>'" in r.output
    r = CliRunner().invoke(app, ["fill-mask", str(out), "The lobster lives in the <mask>.", "--top-k", "3"])
    assert r.exit_code == 0 and "mask 1 of 1" in r.output and r.output.count("│ 3 ") == 1


def test_continued_mlm_from_a_checkpoint_without_mlm_head_says_the_head_starts_random(tiny_folder, tmp_path):
    # all-MiniLM-L6-v2 ships its encoder only: the notice says how to train the fresh head alone first
    import bertscope
    from bertscope import api
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the film was a delight from start to finish .\nnothing in it works .\n" * 20, encoding="utf-8")
    with_head = tmp_path / "with-head"
    bertscope.save_pretrained(bertscope.from_pretrained(tiny_folder, head="mlm", reinit_head=True), with_head)
    bertscope.load_tokenizer(tiny_folder).save(with_head)
    said = {}
    for name, init in (("no head", tiny_folder), ("head", with_head)):
        notes = []
        api.pretrain([corpus], tmp_path / name, tokenizer=init, init=init, objective="mlm", max_steps=1,
                     batch_size=2, save_every=0, eval_every=None, device="cpu",
                     on_event=lambda e, notes=notes: notes.append(e["message"]) if e["event"] == "notice" else None)
        said[name] = [n for n in notes if "no trained MLM head" in n]
    assert len(said["no head"]) == 1 and "cls.predictions" in said["no head"][0]
    assert "--freeze embeddings --freeze encoder" in said["no head"][0]
    assert said["head"] == []
