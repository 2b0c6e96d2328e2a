"""Reading users' text files with errors that name the file, the line and the field."""

from __future__ import annotations

import csv
import re
import json
from dataclasses import dataclass, field
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
    """Texts from a file: .tsv / .csv / .jsonl through `read_examples` (the named column; by default "text",
    "sentence" or the first), anything else one text per line. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in (".tsv", ".csv", ".jsonl"):
        texts = read_examples(path, text_column=column, label_column=None).texts
        return texts[:limit] if limit else texts
    texts: list[str] = []
    for n, line in _lines(path):
        if line.strip():
            texts.append(line.strip())
            if limit and len(texts) >= limit:
                break
    if not texts:
        raise DataError(f"{path}: no texts found")
    return texts


@dataclass
class Examples:
    """Rows of a labelled (or unlabelled) file: texts, optional second segments, optional label strings."""
    path: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None
    lines: list[int]                                  # the file line of every example, for messages
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (line, why) with skip_bad_rows

    def __len__(self):
        return len(self.texts)


def _records(path: Path):
    """(line number, {column: value}) for every data row of a .tsv / .csv / .jsonl file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, DataError(f"{path} line {n}: not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                yield n, DataError(f"{path} line {n}: expected a JSON object per line, found {type(obj).__name__}")
                continue
            yield n, {k: ("" if v is None else str(v)) for k, v in obj.items()}
        return
    if suffix not in (".tsv", ".csv"):
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .tsv, .csv or .jsonl with a "
                        "header row / keys naming the columns")
    delimiter = "\t" if suffix == ".tsv" else ","
    rows = iter(_lines(path))
    try:
        _, header_line = next(rows)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns, then the rows") \
            from None
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    header = next(csv.reader([header_line], delimiter=delimiter, quoting=quoting))
    sep = "tab" if delimiter == "\t" else "comma"
    yield 1, header
    for n, line in rows:
        if not line.strip():
            continue
        fields = next(csv.reader([line], delimiter=delimiter, quoting=quoting))
        if len(fields) != len(header):
            yield n, DataError(f"{path} line {n}: expected {len(header)} {sep}-separated fields "
                               f"({', '.join(header)}), found {len(fields)}")
            continue
        yield n, dict(zip(header, fields))


def read_examples(path, text_column: str | None = None, label_column: str | None = "label",
                  pair_column: str | None = None, skip_bad_rows: bool = False) -> Examples:
    """A labelled (label_column given) or unlabelled file. Every bad row is an error naming the file, line and
    field, unless skip_bad_rows, which skips it and counts it in `skipped`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    records = _records(path)
    header = None
    ex = Examples(str(path), [], [] if pair_column else None, [] if label_column else None, [])
    for n, rec in records:
        if isinstance(rec, list):                      # the header of a .tsv / .csv
            header = rec
            text_column = text_column or next((c for c in ("text", "sentence") if c in header), header[0])
            for role, col in (("text", text_column), ("label", label_column), ("pair", pair_column)):
                if col and col not in header:
                    raise DataError(f"{path} line 1: no {role} column {col!r}; the header has "
                                    f"{', '.join(map(repr, header))}")
            continue
        try:
            if isinstance(rec, DataError):
                raise rec
            if header is None:                          # .jsonl: columns are keys
                text_column = text_column or ("text" if "text" in rec else "sentence")
            values = {}
            for role, col in (("text", text_column), ("label", label_column), ("pair", pair_column)):
                if not col:
                    continue
                if col not in rec:
                    raise DataError(f"{path} line {n}: no field {col!r} (the {role})")
                value = rec[col].strip()
                if not value:
                    raise DataError(f"{path} line {n}: empty {role} in field {col!r}")
                values[role] = value
        except DataError as e:
            if not skip_bad_rows:
                raise
            ex.skipped.append((n, str(e).split(": ", 1)[-1]))
            continue
        ex.texts.append(values["text"])
        ex.lines.append(n)
        if label_column:
            ex.labels.append(values["label"])
        if pair_column:
            ex.pairs.append(values["pair"])
    if not ex.texts:
        raise DataError(f"{path}: no examples" + (f" ({len(ex.skipped)} bad rows skipped)" if ex.skipped else ""))
    return ex


def label_names(labels: list[str]) -> list[str]:
    """The label set in a stable order: numerically when every label is an integer, else alphabetically."""
    unique = set(labels)
    if all(x.lstrip("-").isdigit() for x in unique):
        return sorted(unique, key=int)
    return sorted(unique)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WIKI_TITLE = re.compile(r"^ ?= [^=].* = ?$")


def read_documents(paths, limit: int | None = None) -> list[list[str]]:
    """Documents as lists of sentences from plain text files: one paragraph per line, blank lines between
    documents; a WikiText ` = Title = ` heading also starts a new document (` = = Section = = ` does not)."""
    docs: list[list[str]] = []
    current: list[str] = []
    blank_run = 0
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path}: no such file")
        wiki = False
        for n, line in _lines(path):
            text = line.strip()
            if _WIKI_TITLE.match(line):
                wiki = True
                if current:
                    docs.append(current)
                current = []
                continue
            if not text:
                blank_run += 1
                if not wiki and current:     # plain text: a blank line ends a document
                    docs.append(current)
                    current = []
                continue
            blank_run = 0
            if text.startswith("= ") and text.endswith(" ="):
                continue                      # a WikiText section heading inside the document
            current += [s for s in _SENTENCE_END.split(text) if s.strip()]
            if limit and len(docs) >= limit:
                break
        if current:
            docs.append(current)
            current = []
    if not docs:
        raise DataError(f"{', '.join(map(str, paths))}: no text found")
    return docs
