"""Shared fixtures: the reference checkpoints and outputs in ../shared (see its READMEs)."""

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("BERTSCOPE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TINY = SHARED / "fixtures" / "hf-tiny"
MINILM = SHARED / "models" / "minilm-l6-h384"
DATA = SHARED / "data"
FIXTURES = ["bert", "bert-cls", "roberta", "roberta-cls", "albert", "albert-cls"]
TOL = 1e-5  # fixtures/README.md: max abs diff on every float tensor, fp32

torch.set_num_threads(min(2, torch.get_num_threads()))


def need_shared():
    if not SHARED.exists():
        if os.environ.get("BERTSCOPE_REQUIRE_SHARED"):
            pytest.fail(f"{SHARED} is missing but BERTSCOPE_REQUIRE_SHARED is set")
        pytest.skip(f"reference data not found at {SHARED} (set BERTSCOPE_SHARED)")


@pytest.fixture
def shared():
    need_shared()
    return SHARED


def load_reference(name: str, file: str = "reference.safetensors") -> dict:
    need_shared()
    from safetensors.torch import load_file
    return load_file(str(TINY / name / file))


def model_inputs(ref: dict) -> dict:
    kw = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in ref}
    for k in ("next_sentence_label", "sentence_order_label"):
        if k in ref:
            kw[k] = ref[k]
    return kw


def max_diff(a, b) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A small random BERT (2 layers × 64) saved with the real uncased WordPiece tokenizer of MiniLM: quick to
    fine-tune, real tokenization."""
    need_shared()
    import bertscope
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = bertscope.Model(bertscope.Config(family="bert", vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128,
                                             max_position_embeddings=512))
    bertscope.save_pretrained(model, folder)
    bertscope.load_tokenizer(MINILM).save(folder)
    return folder


# ---- the command line as a user runs it (tests of bad input and output files) -----------------------------------

def run(*args, input=None):
    from typer.testing import CliRunner

    from bertscope.cli import app
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def refused(r, *words, code=2):
    """The run failed as a user mistake: the code, one error line with these words, no traceback."""
    text = r.output
    assert r.exit_code == code, text
    assert "Traceback" not in text and r.exception is None or isinstance(r.exception, SystemExit), text
    errors = [line for line in text.splitlines() if line.startswith("error:") or line.startswith("Error:")]
    assert len(errors) == 1 or "Usage:" in text, text
    for w in words:
        assert w in text, f"{w!r} not in:\n{text}"
    return text


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text, encoding="utf-8")
    return p


def listing(folder):
    """The names in a folder, sorted: what a command left there."""
    return sorted(p.name for p in folder.iterdir())
