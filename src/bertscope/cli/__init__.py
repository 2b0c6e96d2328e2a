"""The `bertscope` command: argument parsing and printing only; every command calls one library function.

The command groups live in their own modules (models.py: look at a model; training.py: finetune, pretrain,
tokenizers; running.py: evaluate, predict, embed). Nothing here imports torch at module level, so `bertscope --help`
and a wrong option come back at once. A user's mistake (errors.BertscopeError, or what the system says of a path they
gave: a name too long, a full disk) prints as one line and exits with 2;
Ctrl-C outside training exits with 130, without a traceback; a reader of its output that goes away (`| head`)
ends it quietly with status 141, its cleanup done.
"""

from __future__ import annotations

import errno
import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="BERT, RoBERTa and ALBERT encoders: load Hugging Face checkpoints and see every dimension.")
# piped into a file or another program, tables keep their full width (rich would cut them to 80 columns)
console = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 4096)
err = Console(stderr=True, highlight=False)


def say(message: str):
    console.print(escape(message), soft_wrap=True)


def note(message: str):
    err.print(escape(message), soft_wrap=True)


def warn(message: str):
    err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def command(group=None, name: str | None = None):
    """Register a command whose user mistakes become one line on stderr (exit code 2), never a traceback."""
    def register(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            from ..errors import BertscopeError
            try:
                return fn(*args, **kwargs)
            except BertscopeError as e:
                if getattr(e, "quiet", False):           # said by torchrun's first process (errors.SaidElsewhere)
                    raise typer.Exit(e.exit_code)
                fail(e.for_cli(), e.exit_code)
            except KeyboardInterrupt:
                err.print("[yellow]interrupted[/]")
                raise typer.Exit(130)
            except BrokenPipeError:
                # the reader of the output went away (`| head`): the work's own cleanup has run on the way here
                # (a run's folder, its lock); stop quietly with the shell's status for it (not 1, check's "no")
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(141)
            except OSError as e:
                # what the system says of a path the user gave where no check of ours saw it coming (a name too
                # long, a full disk, a read-only or forbidden place): that path and the system's words, as one
                # line. Any other OSError is a bug, and keeps its traceback.
                if e.filename is None or not e.strerror or e.errno not in USER_PATH_ERRORS:
                    raise
                fail(f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") + f": {e.strerror}")
        return (group or app).command(name)(run)
    return register


USER_PATH_ERRORS = {errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                    errno.EISDIR, errno.ENOTDIR, errno.ELOOP}


def progress_bar(what: str, total: int | None):
    """A rich progress bar with ETA on a terminal (and nothing elsewhere), as (context manager, update(done))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    bar = Progress(TextColumn(f"[bold]{escape(what)}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                   disable=not err.is_terminal, transient=False)
    task = bar.add_task(what, total=total, info="")

    def update(done: int, info: str = ""):
        bar.update(task, completed=done, info=escape(info))
    return bar, update


DEVICE = typer.Option("auto", help="cpu, cuda, cuda:N, mps, or auto (CUDA where there is one, else the CPU)")
BF16 = typer.Option(False, help="run in bfloat16 (fast on GPUs and CPUs with bf16 instructions; elsewhere "
                                "bertscope says so and runs fp32)")
COMPILE = typer.Option(False, "--compile", help="torch.compile the model first (fuses element-wise work; the "
                                                "first batches pay for compiling)")
THREADS = typer.Option(None, help="torch CPU threads (at least 1)")


from . import models, running, training  # noqa: E402,F401  (the commands register themselves on `app`)


def main():
    app()


__all__ = ["app", "main"]
