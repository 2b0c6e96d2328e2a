"""Writing files so that nothing of the user's is lost: atomic writes with the user's umask, output paths checked
before long work, folders that already hold a model refused without `overwrite`, and a lock so that two runs never
write one folder at once.

Every write goes to a temporary file in the target's folder and is renamed over the target only when complete: a
crash, a full disk or Ctrl-C leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import tempfile
from pathlib import Path

from .arguments import check_flag
from .errors import OutputError, UsageError

MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json")
RUN_FILES = ("metrics.jsonl", "checkpoint", "run.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt")
# what each kind of command may write to its --out folder (check_output_folder's `writes`)
TRAINING_WRITES = MODEL_FILES + RUN_FILES + TOKENIZER_FILES + ("curves.png",)
QUANTIZE_WRITES = MODEL_FILES + TOKENIZER_FILES + ("int8.safetensors", "run.json")
LOCK = ".bertscope.lock"
CHECKPOINT, CHECKPOINT_STATE = "checkpoint", "trainer_state.pt"       # a run's checkpoint/ holds train.state's file


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()        # what open() would give a new file: 0644 under the usual umask 022


def _describe(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only folder or file system)"
    return e.strerror or str(e)


def atomic_write(path, write) -> Path:
    """Call write(temporary_path), then rename the temporary file to `path`. On any failure the temporary file is
    removed and `path` is left as it was; an OSError becomes an OutputError naming the path."""
    path, made = Path(path), []
    try:
        made = _make_parents(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        _unmake(made)
        raise OutputError(f"{path}: cannot write here: {_describe(e)}") from None
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        _unmake(made)
        raise OutputError(f"{path}: could not be written ({_describe(e)}); nothing was written there") from None
    except BaseException as e:
        _remove(tmp)
        _unmake(made)
        if failed_writing(e):
            raise OutputError(f"{path}: could not be written ({str(e).splitlines()[0]}; a full disk, or a file "
                              "size limit); nothing was written there") from None
        raise
    return path


def failed_writing(e: BaseException) -> bool:
    """A writer library's own error for a write the system refused (safetensors: "... (os error 28)"; torch.save:
    "PytorchStreamWriter failed writing file", "unexpected pos"): a full disk or a size limit, not a bug."""
    text = str(e)
    return (type(e).__name__ == "SafetensorError" and "os error" in text) or (
        isinstance(e, RuntimeError) and ("PytorchStreamWriter failed" in text or "unexpected pos" in text))


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def json_safe(obj):
    """obj with every float that is not finite (a Pearson of constant targets is NaN) as None, so that json.dumps
    writes null: NaN and Infinity are not JSON, and strict parsers reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _remove(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def _make_parents(path: Path) -> list[Path]:
    """Make the missing folders above `path`; the ones made, deepest first (for _unmake if nothing is written)."""
    made, folder = [], path.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def _unmake(made: list[Path]) -> None:
    """Remove folders _make_parents made, where they are still empty: a run that wrote nothing leaves nothing."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            return


def check_writable_file(path, option: str = "--out", inputs=(), overwrite: bool | None = None) -> Path:
    """Before any work: `path` can be created (its folder exists or can be made, and is writable) and is not a
    folder. Writes and removes a probe file in the nearest folder that exists, so a read-only or missing location
    fails now, not after hours; no folder is made (the writers make the missing ones when they write).
    Refused too: one of `inputs` (files or folders the command reads: the path itself, or a file already inside
    such a folder, through links too), and with overwrite=False a file that exists."""
    if overwrite is not None:
        check_flag("overwrite", overwrite)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; expected a file name")
    target = path.resolve()
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        read = Path(source).resolve()
        if read == target:
            raise OutputError(f"{option} {path} is {source}, which this command reads; writing there would replace "
                              "it. Choose another file")
        if read.is_dir() and read in target.parents and path.exists():
            raise OutputError(f"{option} {path} is a file of {source}, a folder this command reads; writing there "
                              "would replace it. Choose a path outside it")
    if overwrite is False and (path.exists() or path.is_symlink()):     # a link to nothing is the user's too
        raise OutputError(f"{option} {path} already exists; choose another name, or pass --overwrite to replace it")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, so no folder can be made there")
    try:                 # probed where the missing folders would be made: nothing is left behind if a later check
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=existing)    # refuses the run
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot write there: {_describe(e)}") from None
    return path


def cache_folder(*parts: str) -> Path:
    """bertscope's cache for what can be computed again (the CPU measurement, segmentations of corpora):
    $BERTSCOPE_CACHE, else $XDG_CACHE_HOME/bertscope, else ~/.cache/bertscope."""
    root = os.environ.get("BERTSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bertscope")
    return Path(root, *parts)


def model_files(folder) -> list[str]:
    """The model files (MODEL_FILES, and weight shards) a folder holds: what writing a model there would replace."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    shards = sorted(p.name for pattern in ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")
                    for p in folder.glob(pattern))
    return [f for f in MODEL_FILES if (folder / f).exists()] + shards


def holds_model(folder: Path) -> bool:
    return bool(model_files(folder))


def holds_run(folder: Path) -> bool:
    """run.json or metrics.jsonl, or a checkpoint/ that bertscope wrote (one of another tool is not a run's)."""
    return any((folder / f).exists() for f in RUN_FILES if f != CHECKPOINT) or is_run_checkpoint(folder / CHECKPOINT)


def is_run_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / CHECKPOINT_STATE).exists()


def check_output_folder(folder, overwrite: bool = False, sources=(), option: str = "--out",
                        resumable: bool = True, tokenizer=None, inputs=(), writes=TRAINING_WRITES) -> Path:
    """Check an output folder before long work, without creating it. Refused unless `overwrite`: a folder that
    already holds a model or a training run, or any of the files `writes` this command writes (a user's own
    curves.png or vocab.txt there would be replaced), and one of `sources` (the model being read; `tokenizer`, the
    tokenizer folder). Always refused: a folder holding one of `inputs` (files the command reads) under a name it
    writes, a file, and a place that cannot be written."""
    check_flag("overwrite", overwrite)              # "no" is true in Python: it must not replace a run
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: is a file; expected a folder (new, or one to --overwrite)")
    if folder.is_symlink() and not folder.exists():
        raise OutputError(f"{option} {folder}: is a link to {os.readlink(folder)}, which does not exist; make that "
                          "folder first, or choose another")
    resolved = folder.resolve()
    read = [*((s, "the folder of the model being read") for s in sources), (tokenizer, "the --tokenizer folder")]
    for source, what in read:
        if source is not None and Path(source).exists() and Path(source).resolve() == resolved and not overwrite:
            raise OutputError(f"{option} {folder} is {what}; writing there would replace its files. Choose "
                              "another folder, or pass --overwrite to replace them on purpose")
        if source is not None and CHECKPOINT in writes and Path(source).exists() and \
                inside(Path(source).resolve(), resolved / CHECKPOINT):
            raise OutputError(f"{option} {folder} holds {source}, {what}, in the checkpoint folder a training run "
                              "replaces; copy it elsewhere first, or choose another folder")
    for source in inputs:
        p = Path(source)
        if p.exists() and p.resolve().parent == resolved and (p.name in writes or p.resolve().name in writes):
            raise OutputError(f"{option} {folder}: the output would replace {p}, which this command reads; choose "
                              "another folder")
        if p.exists() and CHECKPOINT in writes and inside(p.resolve(), resolved / CHECKPOINT):
            raise OutputError(f"{option} {folder}: holds {p}, which this command reads, in the checkpoint folder a "
                              "training run replaces; choose another folder")
    if CHECKPOINT in writes and (folder / CHECKPOINT).exists() and not is_run_checkpoint(folder / CHECKPOINT):
        raise OutputError(f"{option} {folder} already holds {folder / CHECKPOINT}, which bertscope did not write and "
                          "a training run writes its checkpoints to (--overwrite or not); choose another folder")
    if folder.is_dir() and not overwrite:
        if holds_run(folder):
            # only a run with a checkpoint can be resumed: a finished one has none, one stopped early may have none
            can = resumable and is_run_checkpoint(folder / CHECKPOINT)
            how = f"continue it with --resume {folder}, " if can else ""
            kind = "a finished training run" if (folder / "config.json").exists() and not can else "a training run" \
                + ("" if can or not resumable else " that saved no checkpoint, so it cannot be resumed")
            raise OutputError(f"{option} {folder} already holds {kind}; {how}choose another folder, or pass "
                              "--overwrite to " + ("start again there" if resumable else "write there anyway"))
        if holds_model(folder):
            raise OutputError(f"{option} {folder} already holds a model ({', '.join(model_files(folder))}); choose "
                              "another folder or pass --overwrite to replace it")
        mine = [f for f in writes if (folder / f).exists()]
        if mine:
            raise OutputError(f"{option} {folder} already holds {', '.join(mine)}, which this command writes; choose "
                              "another folder or pass --overwrite to replace " + ("them" if len(mine) > 1 else "it"))
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {folder}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {folder}: cannot write there: permission denied in {existing}")
    try:                        # what permissions do not show (root under /proc, a read-only mount): tried, undone
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", dir=existing))
    except OSError as e:
        raise OutputError(f"{option} {folder}: cannot write there: {_describe(e)}") from None
    return folder


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies below it (both resolved)."""
    return path == folder or folder in path.parents


def create_output_folder(folder, option: str = "--out") -> bool:
    """Make the (checked) output folder and prove that a file can be written in it. True when this call made it
    (not another process at the same moment)."""
    folder = Path(folder)
    made = False
    try:
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir()
                made = True
            except FileExistsError:                   # another process made it first: it is that one's
                pass
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{option} {folder}: cannot write there: {_describe(e)}") from None
    return made


class FolderLock:
    """`with FolderLock(folder):` holds `folder/.bertscope.lock` (this process's id) for the block. A second run on
    the same folder is refused while the first is alive; a lock left by a process that died is taken over."""

    def __init__(self, folder, what: str = "run"):
        self.path = Path(folder) / LOCK
        self.what = what
        self.held = False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
            except FileExistsError:
                self.check_free()
                _remove(self.path)          # stale: its process is gone
                continue
            except OSError as e:
                raise OutputError(f"{self.path.parent}: cannot write there: {_describe(e)}") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise OutputError(f"{self.path}: could not take the lock")

    def check_free(self) -> None:
        """Refused while a live process holds the lock (also before taking it, so a resume says so before reading).
        A lock of another machine cannot be checked from here: it is taken over as stale (a job resumed on another
        node, a container with a new name)."""
        pid, host = self._owner() if self.path.exists() else (None, None)
        if pid is not None and host == socket.gethostname() and _alive(pid):
            raise OutputError(f"{self.path.parent} is in use by another bertscope {self.what} (process {pid}); "
                              f"wait for it to finish or choose another folder (if no run writes there, remove "
                              f"{self.path})")

    def _owner(self) -> tuple[int | None, str | None]:
        try:
            pid, host = self.path.read_text().split()[:2]
            return int(pid), host
        except (OSError, ValueError):
            return None, None

    def __exit__(self, *exc):
        if self.held:
            _remove(self.path)
            self.held = False
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Closing:
    """`with`: close() when the block ends normally, discard() when it ends by an exception."""

    def __enter__(self):
        return self

    def __exit__(self, kind, *rest):
        if kind is None:
            self.close()
        else:
            self.discard()
        return False


class StreamFile(_Closing):
    """A file written piece by piece to a temporary name and renamed into place by `close()`; `discard()` (or
    leaving a `with` block by an exception) removes it and leaves the target untouched."""

    def __init__(self, path, binary: bool = False):
        self.path, self.made = Path(path), []
        try:
            self.made = _make_parents(self.path)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            _unmake(self.made)
            raise OutputError(f"{self.path}: cannot write here: {_describe(e)}") from None
        self.file = os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"}))

    def write(self, data):
        try:
            self.file.write(data)
        except OSError as e:
            self.discard()
            raise OutputError(f"{self.path}: could not be written ({_describe(e)}); nothing was written there") \
                from None

    def close(self) -> Path:
        try:
            self.file.close()
            os.chmod(self.tmp, FILE_MODE)
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise OutputError(f"{self.path}: could not be written ({_describe(e)}); nothing was written there") \
                from None
        return self.path

    def discard(self):
        try:
            self.file.close()
        except OSError:
            pass
        _remove(self.tmp)
        _unmake(self.made)              # folders made for this file alone go with it



class NpyWriter(_Closing):
    """A float32 (N, D) .npy file written row block by row block, N unknown until the end: the header is reserved
    up front and filled in by `close()`, then the file is renamed into place (StreamFile)."""

    HEADER = 128                                    # bytes: magic, version, length, the dict, padding

    def __init__(self, path, width: int):
        self.out = StreamFile(path, binary=True)
        self.width, self.rows = width, 0
        self.out.write(b"\0" * self.HEADER)

    def write(self, block):                         # (n, D) float32 numpy array
        if block.shape[1:] != (self.width,):
            raise ValueError(f"rows of width {block.shape[1:]} written to a (N, {self.width}) file")
        self.out.write(block.astype("<f4", copy=False).tobytes())
        self.rows += block.shape[0]

    def close(self) -> Path:
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({self.rows}, {self.width}), }}"
        body = text.ljust(self.HEADER - 10 - 1) + "\n"
        header = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")
        try:
            self.out.file.flush()
            self.out.file.seek(0)
        except OSError:
            pass
        self.out.write(header)
        return self.out.close()

    def discard(self):
        self.out.discard()

