"""The kinds of error bertscope raises for a user's mistake. The CLI prints any of them as one line (exit code 2);
anything else is a bug and keeps its traceback.

Every message names the thing that is wrong (file and line, tensor, option or field), the value, what was expected
and, where there is one, the fix. Where the fix differs between Python and the command line (`reinit_head=True` vs
`--new-head`), the error carries both and the CLI prints its own (`BertscopeError.for_cli`).
"""

from __future__ import annotations


class BertscopeError(Exception):
    """A mistake in what the user gave bertscope (not a bug in bertscope)."""

    exit_code = 2

    def __init__(self, message: str, *, cli: str | None = None):
        super().__init__(message)
        self.cli = cli              # the same message in command-line words, where they differ

    def for_cli(self) -> str:
        return self.cli or str(self)


class UsageError(BertscopeError, ValueError):
    """An option or argument outside its allowed range, or options that do not go together."""


class ConfigError(BertscopeError, ValueError):
    """A config.json (or a Config built in code) that cannot describe a model."""


class CheckpointError(BertscopeError, ValueError):
    """A checkpoint folder or file that cannot be read into (or written from) the model asked for."""


class TokenizerError(BertscopeError, ValueError):
    """A tokenizer folder or file that cannot be read, or that does not fit the model."""


class DataError(BertscopeError, ValueError):
    """A data file that cannot be read as asked (missing column, bad encoding, empty file, bad label, ...)."""


class InputError(BertscopeError, ValueError):
    """A model input that does not fit the model (ids, segments, positions, masks, labels, packing)."""


class OutputError(BertscopeError, OSError):
    """An output path that cannot be written, or that holds something bertscope must not overwrite."""


class CapabilityError(BertscopeError, RuntimeError):
    """This machine lacks what was asked for (bf16 instructions, a C++ compiler, an optional package)."""


class ExportError(BertscopeError, RuntimeError):
    """An export that could not be written or did not reproduce the PyTorch outputs."""


class TrainingDiverged(BertscopeError, RuntimeError):
    """A loss or gradient that is no longer a finite number: training stops before it reaches the weights."""


class TrainingInterrupted(BertscopeError):
    """Training stopped on Ctrl-C (or after the steps asked for) with a resumable checkpoint written."""

    exit_code = 130


def missing_extra(package: str, extra: str, what: str) -> CapabilityError:
    """The error for an optional package that is not installed."""
    return CapabilityError(f"{what} needs the optional package {package!r}: pip install 'bertscope[{extra}]'")


class SaidElsewhere(BertscopeError):
    """Under torchrun: a check only the first process makes (of the output folder, which only it writes) failed
    there. The other processes stop with this error too, and the CLI prints nothing for it: the first one says why."""

    quiet = True
