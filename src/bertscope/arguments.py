"""Arguments of the Python API checked by kind, with one form of message for all: paths, numbers, counts and flags.

The loaders (checkpoint, tokenize), the training settings and the api layer take their arguments through these, so
that `from_pretrained(None)`, `embed(batch_size="32")` and `finetune(lr=np.float32(1e-4))` are each answered the
same way wherever they are given. Nothing here imports torch.
"""

from __future__ import annotations

import numbers
import os

from .errors import UsageError


def _said(name: str, value) -> str:
    """How a message names what was given: `--batch 2.5` for a command-line option, `batch_size=2.5` for an
    argument of the Python API (a long value by its kind)."""
    shown = repr(value) if len(repr(value)) <= 60 else f"<a {type(value).__name__}>"
    return f"{name} {shown}" if name.startswith("-") else f"{name}={shown}"


def path_arg(name: str, value, optional: bool = False, what: str = "a path"):
    """A file or folder argument: a str or a path (None where optional); anything else, such as a list or a Model
    object, is refused by name."""
    if (value is None and optional) or (isinstance(value, (str, os.PathLike)) and str(value)):
        return value
    if isinstance(value, (str, os.PathLike)):
        raise UsageError(f"{name}: the path is empty; give a file or folder")
    kind = type(value).__name__
    hint = "; give its checkpoint folder (a Model is loaded already; bertscope.save_pretrained(model, folder) " \
        "writes one)" \
        if kind == "Model" else "; give one file" if isinstance(value, (list, tuple)) else ""
    raise UsageError(f"{_said(name, value)}: expected {what} (str or pathlib.Path), got a {kind}{hint}")


def paths_arg(name: str, value) -> list:
    """One or more files: a path, or a list, tuple or other ordered iterable (a generator) of paths, returned as a
    list. A set is refused: its order is not the one written, and the order sets the data."""
    if isinstance(value, (str, os.PathLike)):
        return [path_arg(name, value)]
    if isinstance(value, (set, frozenset, dict)) or not hasattr(value, "__iter__"):
        kind = type(value).__name__
        why = ("a set has no order, and the files' order is the data's" if isinstance(value, (set, frozenset))
               else f"got a {kind}")
        raise UsageError(f"{name}: expected a path or a list of paths; {why}")
    return [path_arg(name, v) for v in value]


def texts_arg(name: str, value, optional: bool = False) -> list | None:
    """Texts given directly: a list or tuple of str (a numpy array of str too), or one str as one text; returned as
    a list. Anything else (a dict, a set, a list holding other things) is refused by name, not iterated."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        return [value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):      # np.array(["a", "b"]) of str
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{name}: expected a list of texts (str), got a {type(value).__name__}")
    bad = next((i for i, t in enumerate(value) if not isinstance(t, str)), None)
    if bad is not None:
        raise UsageError(f"{name}[{bad}]: expected a text (str), got a {type(value[bad]).__name__}")
    return list(value)


def check_flag(name: str, value) -> None:
    """A yes/no argument of the Python API is a bool: a string such as "no" (true in Python) is refused."""
    if not isinstance(value, bool):
        raise UsageError(f"{name}={value!r}: expected True or False")


def python_number(value):
    """A number as Python's own int or float (numpy's np.int64 or float32 from a grid search; run.json is written
    from it); a narrower float as it prints (float32 0.15 is 0.15, not 0.15000000596...)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(str(value)) if getattr(value, "itemsize", 8) < 8 else float(value)


def number_arg(name: str, value, whole: bool = False):
    """A number: an int (or, unless whole, a float), numpy's included, never a str or a bool; returned as Python's
    own."""
    ok = (isinstance(value, numbers.Integral) or (not whole and isinstance(value, numbers.Real))) \
        and not isinstance(value, bool)
    if not ok:
        raise UsageError(f"{_said(name, value)}: expected {'a whole number' if whole else 'a number'}, got a "
                         f"{type(value).__name__}")
    return python_number(value)


def whole_number(value) -> int | None:
    """value as Python's int where it is a whole number (numpy's np.int64 included, a bool not); None otherwise, for
    the caller's own message (a range said as `--chunk 0: expected at least 1`)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def count_arg(name: str, value, least: int = 1, what: str = "") -> int:
    """A whole number of something (a batch, a length, labels): an int at least `least`, never a str, float or
    bool; numpy's ints are taken as Python's."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise UsageError(f"{_said(name, value)}: expected a whole number{' of ' + what if what else ''}, at least "
                         f"{least}")
    return int(value)
