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
    measured = iter([{"torch_fp32": 1.0, "onednn_fp32": 0.5, "quiet": True},
                     {"torch_fp32": 1.0, "onednn_fp32": 2.0, "quiet": True}])
    monkeypatch.setattr(kernels, "_measure", lambda: next(measured))
    for key in ("native", "avx2-capped", "native"):
        monkeypatch.setattr(kernels, "_FACTS", None)
        monkeypatch.setattr(kernels, "_machine_key", lambda key=key: key)
        facts = kernels.cpu_facts()
        if key == "native":
            assert facts == {"torch_fp32": 1.0, "onednn_fp32": 0.5, "quiet": True}   # measured once, read back
    import json
    assert set(json.loads((tmp_path / "cpu.json").read_text())["facts_by_key"]) == {"native", "avx2-capped"}


def test_a_busy_trial_is_taken_again_until_one_is_quiet(monkeypatch, tmp_path):
    # the older AMD EPYC's cached trial, taken beside another process, chose oneDNN (10.1 against 13.3 ms); quiet,
    # the two are 4.45 against 5.0 ms, where torch's product is chosen (and keeps 160 MB less in fine-tuning)
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("BERTSCOPE_ONEDNN", raising=False)
    monkeypatch.setattr(kernels, "_machine_key", lambda: "this")
    trials = iter([{"torch_fp32": 13.3, "onednn_fp32": 10.1, "onednn_bf16": None, "quiet": False, "trials": 1},
                   {"torch_fp32": 5.0, "onednn_fp32": 4.45, "onednn_bf16": None, "quiet": True, "trials": 1}])
    monkeypatch.setattr(kernels, "_measure", lambda: next(trials))
    chosen = []
    for process in range(3):
        monkeypatch.setattr(kernels, "_FACTS", None)
        chosen.append(kernels.use_onednn_cpu())
    assert chosen == [True, False, False]                   # the third process reads the quiet, merged trial back
    assert kernels.cpu_facts() == {"torch_fp32": 5.0, "onednn_fp32": 4.45, "onednn_bf16": None, "quiet": True,
                                   "trials": 2}


def test_a_machine_never_quiet_stops_measuring_after_a_few_trials(monkeypatch, tmp_path):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_machine_key", lambda: "busy")
    times = iter([9.0, 7.0, 8.0, 6.0, 5.0])
    monkeypatch.setattr(kernels, "_measure", lambda: {"torch_fp32": next(times), "onednn_fp32": 1.0,
                                                     "quiet": False, "trials": 1})
    for process in range(kernels.BUSY_TRIALS + 2):
        monkeypatch.setattr(kernels, "_FACTS", None)
        facts = kernels.cpu_facts()
    assert facts["trials"] == kernels.BUSY_TRIALS and facts["torch_fp32"] == 6.0     # the best of 4 trials, kept
    # an entry of an earlier version (no "quiet") counts as one busy trial
    (tmp_path / "cpu.json").write_text('{"facts_by_key": {"busy": {"torch_fp32": 9.0, "onednn_fp32": 1.0}}}')
    monkeypatch.setattr(kernels, "_FACTS", None)
    assert kernels.cpu_facts() == {"torch_fp32": 5.0, "onednn_fp32": 1.0, "quiet": False, "trials": 2}


@pytest.mark.kernels
def test_a_trial_beside_busy_processes_says_it_was_not_quiet():
    # the trial's threads and as many spinning processes share the same CPUs: about half a CPU each, on any machine
    import subprocess
    import sys
    import time
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity here")
    mine = os.sched_getaffinity(0)
    cpus = set(sorted(mine)[:torch.get_num_threads()])
    spin = "import time\nt = time.time()\nwhile time.time() - t < 20: pass"
    others = [subprocess.Popen([sys.executable, "-c", spin], preexec_fn=lambda: os.sched_setaffinity(0, cpus))
              for _ in cpus]
    def pin(mask):                                   # every thread of this process (torch's workers too)
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), mask)
    try:
        pin(cpus)
        time.sleep(0.3)
        assert kernels._measure()["quiet"] is False
    finally:
        pin(mine)
        for p in others:
            p.kill()
            p.wait()


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
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpu_dropout_keeps_1_minus_p_and_rescales(dtype, p):
    """kernels.dropout (the CPU's mask cut from 16-bit lanes of random words): each element kept with probability
    1 - p, kept ones scaled by 1 / (1 - p), gradients through the same mask; off outside training."""
    from bertscope.kernels import dropout
    torch.manual_seed(0)
    x = torch.ones(400, 501, dtype=dtype, requires_grad=True)        # 200,400 elements: not a multiple of 4
    y = dropout(x, p, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.004          # 200,400 draws: sd at most 0.0011
    assert torch.allclose(y[kept].float(), torch.full_like(y[kept].float(), 1 / (1 - p)), rtol=1e-2)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.equal(dropout(x, p, False), x)


def test_cpu_dropout_lanes_are_independent_and_follow_the_seed():
    """The four elements cut from one random word are drawn independently: neighbours (in every lane position) and
    the same element in two calls agree on 'kept' as often as chance says; the same seed gives the same mask; a p
    too small for a 16-bit lane still drops (torch.rand's path)."""
    from bertscope.kernels import dropout
    x = torch.ones(1_000_000)
    torch.manual_seed(1)
    a = dropout(x, 0.5, True) != 0
    b = dropout(x, 0.5, True) != 0
    for lane in range(4):                                           # element 4k + lane against 4k + lane + 1
        first, second = a[lane::4][:-1], a[lane + 1::4][:len(a[lane::4]) - 1]
        assert abs((first == second).float().mean().item() - 0.5) < 0.006    # 250,000 pairs: sd 0.001
    assert abs((a == b).float().mean().item() - 0.5) < 0.003
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5, True) != 0, a)
    torch.manual_seed(2)
    tiny = dropout(torch.ones(4_000_000), 5e-6, True)               # rounds to 0 lanes: must not keep everything
    assert 0 < (tiny == 0).sum().item() < 50                          # 20 expected


@pytest.mark.parametrize("bf16, said", [(0.3, 3.0), (0.95, None), (None, None)])
def test_int8_suggests_bf16_only_where_the_trial_shows_it_clearly_faster(monkeypatch, bf16, said):
    """AMX (Intel Xeon): the trial's bf16 product is faster than the int8 one, and --int8 / quantize say so;
    where bf16 is within 1.2× of int8 or has no kernels, nothing is suggested."""
    monkeypatch.setattr(kernels, "ONEDNN", True)
    monkeypatch.setattr(kernels, "cpu_facts", lambda: {"torch_fp32": 2.0, "onednn_fp32": 2.2, "int8_dynamic": 0.9,
                                                       "onednn_bf16": bf16})
    faster = kernels.bf16_beats_int8()
    assert (faster is None) if said is None else faster == pytest.approx(said)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("then", [None, "gelu"])
@pytest.mark.parametrize("mode", ["bf16-autocast", "onednn-fp32"])
def test_training_products_with_rounded_rows_give_the_same_output_and_gradients(monkeypatch, mode, then, bias):
    """In training through oneDNN the rows of each product are rounded up to a multiple of ROUND_ROWS (zero rows,
    sliced away), so that oneDNN's cache of products stays small: the output and every gradient are those of the
    plain product, and with `then` (GELU, run on the rounded rows too) those of GELU of the plain product. In fp32
    the gradients come from oneDNN's own backward products (with a bias or none), asked for all at once or for
    the input alone and the weight alone."""
    act = torch.nn.functional.gelu if then else None
    if mode == "onednn-fp32":
        if not kernels.ONEDNN:
            pytest.skip("no oneDNN in this build")
        monkeypatch.setattr(kernels, "_ONEDNN_CPU", True)
    torch.manual_seed(0)
    lin = kernels.Linear(24, 40, bias=bias)
    x = torch.randn(3, 29, 24, requires_grad=True)                   # 87 rows: rounded up to 128
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16-autocast" else torch.enable_grad()
    with ctx:
        assert kernels._round_rows(x, lin.weight)
        y = lin(x, then=act)
        ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
        ref = ref if act is None else act(ref)
    assert y.shape == ref.shape == (3, 29, 40) and y.dtype == ref.dtype
    g = torch.randn(y.shape)
    wrt = (x, lin.weight) + ((lin.bias,) if bias else ())
    got = torch.autograd.grad(y.float(), wrt, g, retain_graph=True)
    want = torch.autograd.grad(ref.float(), wrt, g, retain_graph=True)
    tol = dict(atol=3e-2, rtol=3e-2) if mode == "bf16-autocast" else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y.float(), ref.float(), **tol)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    for only in [(x,), (lin.weight,)]:                               # one gradient alone
        torch.testing.assert_close(torch.autograd.grad(y.float(), only, g, retain_graph=True)[0],
                                   torch.autograd.grad(ref.float(), only, g, retain_graph=True)[0], **tol)
    with torch.no_grad():                                             # inference: nothing rounded
        assert not kernels._round_rows(x, lin.weight)


def test_a_resume_keeps_what_its_run_ran(monkeypatch, tmp_path):
    # a run of an earlier version (no record): the cached trial as it chose then, not a new trial that may differ
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("BERTSCOPE_ONEDNN", raising=False)
    monkeypatch.setattr(kernels, "_machine_key", lambda: "this")
    (tmp_path / "cpu.json").write_text('{"facts_by_key": {"this": {"torch_fp32": 13.3, "onednn_fp32": 10.1}}}')
    monkeypatch.setattr(kernels, "_measure", lambda: pytest.fail("measured again"))
    for record, expected in [(None, True),                                             # 10.1 < 0.8 * 13.3
                             ({"machine": "this", "onednn": False}, False)]:
        monkeypatch.setattr(kernels, "_FACTS", None)
        monkeypatch.setattr(kernels, "_ONEDNN_CPU", None)
        kernels.pin_products(record)
        assert kernels._cpu_onednn() is (expected and kernels.ONEDNN)
    monkeypatch.setenv("BERTSCOPE_ONEDNN", "")                  # set but empty: forces nothing, so the pin holds
    monkeypatch.setattr(kernels, "_ONEDNN_CPU", None)
    kernels.pin_products({"machine": "this", "onednn": False})
    assert kernels._cpu_onednn() is False
