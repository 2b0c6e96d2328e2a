"""The per-machine choices of kernels.py: which CPU product runs, and where torch.compile keeps its code."""

import os

import pytest
import torch

from bertscope import kernels


@pytest.mark.parametrize("onednn, torch_, expected", [(3.0, 7.0, True),     # the AMD EPYC: oneDNN twice as fast
                                                      (6.7, 7.6, False),    # the Intel Xeon: close, torch's wins
                                                      (8.0, 7.0, False)])
def test_onednn_only_where_it_clearly_wins(monkeypatch, onednn, torch_, expected):
    if not kernels.ONEDNN:
        pytest.skip("this torch build has no oneDNN product")
    monkeypatch.delenv("BERTSCOPE_ONEDNN", raising=False)
    monkeypatch.setattr(kernels, "cpu_facts", lambda: {"torch_fp32": torch_, "onednn_fp32": onednn})
    assert kernels.use_onednn_cpu() is expected
    monkeypatch.setenv("BERTSCOPE_ONEDNN", "0" if expected else "1")       # the user's choice wins
    assert kernels.use_onednn_cpu() is (not expected)


def test_compile_cache_is_kept_apart_per_instruction_cap(monkeypatch):
    # torch.compile code cached under ATEN_CPU_CAPABILITY=avx2 corrupts the heap of a later uncapped run
    from bertscope.kernels import separate_compile_cache
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    separate_compile_cache()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ             # uncapped: torch's own default folder
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    separate_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith("-aten_cpu_capability_avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/mine")
    separate_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/mine"


def test_the_cache_keeps_one_measurement_per_machine_key(monkeypatch, tmp_path):
    # a resumed run must find the measurement of the run it continues, even after a run under an ISA cap
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path))
    measured = iter([{"torch_fp32": 1.0, "onednn_fp32": 0.5}, {"torch_fp32": 1.0, "onednn_fp32": 2.0}])
    monkeypatch.setattr(kernels, "_measure", lambda: next(measured))
    for key in ("native", "avx2-capped", "native"):
        monkeypatch.setattr(kernels, "_FACTS", None)
        monkeypatch.setattr(kernels, "_machine_key", lambda key=key: key)
        facts = kernels.cpu_facts()
        if key == "native":
            assert facts == {"torch_fp32": 1.0, "onednn_fp32": 0.5}      # measured once, then read back
    import json
    assert set(json.loads((tmp_path / "cpu.json").read_text())["facts_by_key"]) == {"native", "avx2-capped"}


@pytest.mark.kernels
def test_the_trial_times_every_candidate_in_turns():
    # every product a choice depends on is timed (the same rounds for all), or marked missing with None
    facts = kernels._measure()
    assert facts["torch_fp32"] > 0
    assert "int8_dynamic" in facts and (facts["int8_dynamic"] is None or facts["int8_dynamic"] > 0)
    if kernels.ONEDNN:
        assert facts["onednn_fp32"] > 0
        assert facts["onednn_bf16"] is None or facts["onednn_bf16"] > 0


@pytest.mark.parametrize("flags, said", [({"avx2", "avx512_vnni"}, "cpu.json to measure again"),
                                         ({"avx2"}, "without VNNI instructions")])
def test_int8_refusal_gives_the_reason_this_cpu_has(monkeypatch, flags, said):
    monkeypatch.setattr(kernels, "cpu_facts", lambda: {"torch_fp32": 1.0, "onednn_fp32": 1.2, "int8_dynamic": 0.9})
    monkeypatch.setattr(kernels, "cpu_flags", lambda: flags)
    pays, why = kernels.int8_on_cpu()
    assert not pays and said in why and "1.1×" in why
    monkeypatch.setattr(kernels, "cpu_facts", lambda: {"torch_fp32": 1.0, "onednn_fp32": 1.2, "int8_dynamic": 0.4})
    assert kernels.int8_on_cpu() == (True, "")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_dropout_keeps_1_minus_p_and_rescales(dtype):
    """kernels.dropout (the CPU's mask from torch.rand): each element kept with probability 1 - p, kept ones scaled
    by 1 / (1 - p), gradients through the same mask; off outside training."""
    from bertscope.kernels import dropout
    torch.manual_seed(0)
    x = torch.ones(400, 500, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.1, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003             # 200,000 draws: sd 0.0007
    assert torch.allclose(y[kept].float(), torch.full_like(y[kept].float(), 1 / 0.9), rtol=1e-2)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.equal(dropout(x, 0.1, False), x)
