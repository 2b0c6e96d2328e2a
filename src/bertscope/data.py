"""Reading users' text files with errors that name the file, the line and the field."""

from __future__ import annotations

import csv
import json
from pathlib import Path


class DataError(ValueError):
    """A data file that cannot be read as asked (missing column, bad encoding, empty file, ...)."""


def _lines(path: Path):
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path} line {n}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                                "convert the file to UTF-8") from None


def read_texts(path, column: str | None = None, limit: int | None = None) -> list[str]:
    """Texts from a file: .tsv / .csv with a header row (the named column, default the first), .jsonl (the named
    key, default "text"), anything else one text per line. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    texts: list[str] = []
    if suffix in (".tsv", ".csv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        rows = iter(_lines(path))
        try:
            _, header_line = next(rows)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; expected a header row, then one text per row") from None
        header = next(csv.reader([header_line], delimiter=delimiter))
        name = column or header[0]
        if name not in header:
            raise DataError(f"{path} line 1: no column {name!r}; the header has {', '.join(map(repr, header))}")
        index = header.index(name)
        for n, line in rows:
            if not line.strip():
                continue
            fields = next(csv.reader([line], delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t"
                                     else csv.QUOTE_MINIMAL))
            if len(fields) <= index:
                raise DataError(f"{path} line {n}: expected {len(header)} {'tab' if delimiter == chr(9) else 'comma'}"
                                f"-separated fields ({', '.join(header)}), found {len(fields)}")
            texts.append(fields[index].strip())
            if limit and len(texts) >= limit:
                break
    elif suffix == ".jsonl":
        key = column or "text"
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or key not in obj:
                raise DataError(f"{path} line {n}: no field {key!r}")
            texts.append(str(obj[key]))
            if limit and len(texts) >= limit:
                break
    else:
        for n, line in _lines(path):
            if line.strip():
                texts.append(line.strip())
                if limit and len(texts) >= limit:
                    break
    if not texts:
        raise DataError(f"{path}: no texts found")
    return texts
