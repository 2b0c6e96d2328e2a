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
