"""A run's folder on disk, and the one resume contract.

    OUT/config.json, model.safetensors, tokenizer.json   the kept model (best evaluation, or the last)
    OUT/run.json                                         what was run: task, settings, data files and their hashes
    OUT/metrics.jsonl                                    one line per logged step and per evaluation
    OUT/curves.png                                       loss and evaluation curves (with bertscope[plot])
    OUT/checkpoint/                                      the last training state, while the run is unfinished
                                                         (kept after success only with keep_checkpoint)

checkpoint/ holds the model folder, its tokenizer and trainer_state.pt: optimizer, schedule, RNG, history, the
position in the data, the open logging window and the run record. It is written to a temporary folder and swapped
in, so an interruption at any moment leaves the previous checkpoint whole. Resuming from it reproduces the
uninterrupted run exactly: same batches, same dropout draws, same updates.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError, DataError, OutputError
from ..io import CHECKPOINT_STATE, failed_writing, json_safe, write_json, write_text
from .plot import plot_curves

STATE = CHECKPOINT_STATE


def checkpoint_dir(out) -> Path:
    """out/checkpoint, or the previous one if a save was cut off between swapping the two."""
    for folder in (Path(out) / "checkpoint", Path(out) / ".checkpoint.old"):
        if (folder / STATE).exists():
            return folder
    if (Path(out) / "run.json").exists() and (Path(out) / "config.json").exists():
        raise DataError(f"{out}: this run finished, so there is nothing to resume (its checkpoint is removed after "
                        "success unless --keep-checkpoint); start a new run with another --out")
    if (Path(out) / "run.json").exists():
        raise DataError(f"{out}: this run stopped before its first checkpoint, so there is nothing to resume; start "
                        "it again: the same command with --overwrite")
    raise DataError(f"{out}: no checkpoint to resume (expected {Path(out) / 'checkpoint' / STATE})")


def read_state(out) -> dict:
    path = checkpoint_dir(out) / STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("history", "run", "position"):
            state[key] = json.loads(state[key])
    except Exception as e:                 # a cut-off or overwritten file: torch, pickle or json says so its own way
        raise CheckpointError(f"{path}: truncated or corrupt ({type(e).__name__}), so this run cannot be resumed "
                              "from it; start the run again (the same command with --overwrite)") from None
    return state


def write_checkpoint(out: Path, save_model, state: dict) -> None:
    """out/checkpoint/ from save_model(folder) and the trainer state, swapped in whole."""
    ckpt, tmp, old = out / "checkpoint", out / ".checkpoint.tmp", out / ".checkpoint.old"
    for stale in (tmp, old):          # left by a save that was itself interrupted
        if stale.exists() and (stale != old or (ckpt / STATE).exists()):
            shutil.rmtree(stale)
    packed = {k: (json.dumps(v) if k in ("history", "run", "position") else v) for k, v in state.items()}
    try:
        save_model(tmp)
        torch.save(packed, tmp / STATE)
    except BaseException as e:        # (a full disk): the last whole checkpoint stays, this one goes
        shutil.rmtree(tmp, ignore_errors=True)
        if failed_writing(e) or isinstance(e, OSError):
            why = e.strerror if isinstance(e, OSError) and e.strerror else \
                f"{str(e).splitlines()[0]}; a full disk, or a file size limit"
            raise OutputError(f"{ckpt}: this checkpoint could not be written ({why}); the last one written is "
                              "kept") from None
        raise
    if ckpt.exists():
        if old.exists():              # ckpt is incomplete and old is the last whole one: this one replaces both
            shutil.rmtree(ckpt)
        else:
            ckpt.rename(old)
    tmp.rename(ckpt)
    if old.exists():
        shutil.rmtree(old)


def remove_checkpoint(out: Path) -> None:
    for name in ("checkpoint", ".checkpoint.old", ".checkpoint.tmp"):
        if (out / name).exists():
            shutil.rmtree(out / name)


def write_metrics(out: Path, history: list[dict], title: str) -> bool:
    """metrics.jsonl (atomically) and curves.png; False when the picture could not be drawn (no matplotlib)."""
    write_text(out / "metrics.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in history))
    return plot_curves(history, out / "curves.png", title) if history else True


def write_run(out: Path, run: dict) -> None:
    write_json(out / "run.json", run)


def remove_stale_temporaries(out) -> list[str]:
    """Files a process killed mid-write left in a run's folder (io's atomic writes: `.NAME.XXXXXXXX.tmp`, renamed
    into place only when complete): removed when the run is resumed. Returns their names."""
    import re
    gone = []
    for folder in (Path(out), checkpoint_dir(out)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and re.fullmatch(r"\..+\.[a-z0-9_]{8}\.tmp", p.name):
                p.unlink(missing_ok=True)
                gone.append(p.name)
    return gone


def read_run(out) -> dict:
    if not Path(out).is_dir():
        raise DataError(f"{out}: " + ("is a file; --resume takes the folder of a training run (its --out)"
                                      if Path(out).exists() else "no such folder"))
    path = Path(out) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            return read_state(out)["run"]          # run.json lost or broken: the checkpoint keeps the run's record
        except DataError:                          # (no checkpoint either)
            pass
        raise DataError(f"{out}: no run.json; not a folder written by bertscope finetune / pretrain") from None


def restore_run_record(out, run: dict) -> str | None:
    """Write run.json again from the checkpoint's record `run` where it differs (edited, broken or removed); returns
    what differed first, for a notice (None if nothing did). The run continues as its checkpoint says."""
    path = Path(out) / "run.json"
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        on_disk = None
    kept = json.loads(json.dumps(json_safe(run)))
    if on_disk == kept:
        return None
    said = "it is missing or not JSON" if on_disk is None else _first_difference(on_disk, kept)
    write_run(Path(out), run)
    return said


def _first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
    return f"{where or 'the record'}: {json.dumps(a)} in run.json, {json.dumps(b)} in the checkpoint"
