"""Ctrl-C at a random moment of a real fine-tuning run, then --resume from another working directory, ends with the
same weights and the same metrics as the run that was never interrupted."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import DATA, need_shared

import bertscope

pytestmark = pytest.mark.slow          # three real training runs in subprocesses: CI runs these with -m slow

@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_folder):
    need_shared()
    root = tmp_path_factory.mktemp("interrupt")
    shutil.copytree(tiny_folder, root / "tiny")                 # the suite's small BERT with MiniLM's tokenizer
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "train.tsv").write_text("".join(lines[:1201]), encoding="utf-8")
    return root


def command(out: str, *extra):
    return [sys.executable, "-m", "bertscope.cli", "finetune", "tiny", "--train", "train.tsv", "--out", out,
            "--epochs", "2", "--batch-size", "8", "--save-every", "25", "--seed", "5", "--threads", "1",
            "--device", "cpu", *extra]


def weights(folder):
    return bertscope.from_pretrained(folder).state_dict()


def wait_for(path, proc, seconds=600):
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    r = subprocess.run(command("whole"), cwd=setup, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return weights(setup / "whole"), (setup / "whole" / "metrics.jsonl").read_text()


def resume_elsewhere(setup, out):
    elsewhere = setup / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "bertscope.cli", "finetune", "--resume", str(setup / out)],
                       cwd=elsewhere, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_ctrl_c_at_a_random_step_then_resume_gives_the_same_weights(setup, uninterrupted):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command("cut"), cwd=setup, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    wait_for(setup / "cut" / "metrics.jsonl", proc)       # the first steps are logged: the loop is running
    time.sleep(random.Random().uniform(0.5, 3.0))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-2000:]
    assert "stopping after this step" in stderr and "interrupted: stopped at step" in stderr
    assert "Traceback" not in stderr
    resume_elsewhere(setup, "cut")
    want, history = uninterrupted
    got = weights(setup / "cut")
    assert max(float((want[k] - got[k]).abs().max()) for k in want) <= 1e-6
    assert (setup / "cut" / "metrics.jsonl").read_text() == history


def test_a_second_ctrl_c_stops_at_once_and_resume_is_still_exact(setup, uninterrupted):
    proc = subprocess.Popen(command("twice"), cwd=setup, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(setup / "twice" / "checkpoint" / "trainer_state.pt", proc)
    time.sleep(random.Random().uniform(0.0, 1.0))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    resume_elsewhere(setup, "twice")
    want, history = uninterrupted
    got = weights(setup / "twice")
    assert max(float((want[k] - got[k]).abs().max()) for k in want) <= 1e-6
    assert (setup / "twice" / "metrics.jsonl").read_text() == history
