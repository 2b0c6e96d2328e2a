"""Reading users' files with errors that name the file, the line and the field.

Formats: plain text (one text a line), .tsv (tab-separated, a header row, no quoting: GLUE's convention), .csv
(comma-separated with the csv module's quoting rules, so a quoted field may hold commas and newlines), .jsonl (one
object a line), CoNLL (`token<TAB>tag`, a blank line between sentences) and plain-text corpora of documents. Input
may start with a byte-order mark (Excel writes one) and must be UTF-8; standard input is read the same way.
Everything is read lazily where it can be, so a long file streams.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import DataError, UsageError

TABLES = (".tsv", ".csv", ".jsonl")
STDIN = "-"
csv.field_size_limit(1 << 30)                  # a long document is one field: allow up to 1 GiB


def source_name(source) -> str:
    return "<stdin>" if str(source) == STDIN else str(source)


def _check_file(path: Path):
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a file")


def _binary(source):
    if str(source) == STDIN:
        return sys.stdin.buffer
    path = Path(source)
    _check_file(path)
    return open(path, "rb")


# the first bytes of compressed files, named when such a file is given as text
PACKED = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))


def lines(source, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line of a file (or "-" for standard input), decoded as UTF-8 with a leading
    byte-order mark dropped. A line that is not UTF-8, or that holds a NUL byte, is an error naming it."""
    name = source_name(source)
    f = _binary(source)
    try:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                utf16 = n == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")     # UTF-16's byte-order marks
                packed = next((kind for magic, kind in PACKED if raw.startswith(magic)), None) if n == 1 else None
                raise DataError(f"{name} line {n}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}"
                                + ("; the file starts with a UTF-16 byte-order mark, so it is UTF-16" if utf16 else "")
                                + (f"; the file starts as {packed} data does" if packed else "")
                                + ("); decompress it" if packed else "); convert the file to UTF-8")) from None
            if "\x00" in text:                 # valid UTF-8, but no text holds NUL: UTF-16 without a mark, or binary
                utf16 = text.count("\x00") * 3 >= len(text)
                raise DataError(f"{name} line {n}: holds NUL bytes, which no UTF-8 text does" + (
                    "; every other byte is NUL, so it is likely UTF-16 without a byte-order mark: convert the file to "
                    "UTF-8" if utf16 else "; is it a binary or compressed file? Expected UTF-8 text"))
            if n == 1 and not raw.endswith(b"\n") and "\r" in text.rstrip("\r\n"):
                # old Mac line ends: no \n anywhere, so the whole file is this one line (a stray \r is not that)
                raise DataError(f"{name} line 1: holds carriage returns (\\r) inside it, so the file's lines end in CR "
                                "alone (old Mac style); convert them to \\n (e.g. tr '\\r' '\\n')")
            yield n, (text if keep_ends else text.rstrip("\r\n"))
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def is_table(source) -> bool:
    return str(source) != STDIN and Path(source).suffix.lower() in TABLES


def check_columns_apply(sources, **columns) -> None:
    """A column option (text_column="review") names a column of .tsv / .csv / .jsonl files; where every source is
    plain text (or SQuAD, CoNLL) it would do nothing, so it is refused."""
    given = {k: v for k, v in columns.items() if v is not None}
    if given and not any(is_table(s) for s in sources):
        option, value = next(iter(given.items()))
        first = sources[0]
        kind = ("a CoNLL file of words and tags" if is_conll(first) else "SQuAD-style JSON"
                if str(first).lower().endswith(".json") else "plain text, one text a line")
        raise DataError(f"--{option.replace('_', '-')} {value}: names a column of .tsv, .csv or .jsonl files, but "
                        f"{', '.join(source_name(s) for s in sources)} has no columns ({kind}): leave it out, or "
                        "give a table")


# ---- tables: .tsv / .csv / .jsonl ---------------------------------------------------------------------------------

def _records(source) -> Iterator[tuple[int, object]]:
    """(line number, {column: value}) for every data row of a table; (1, header list) first for .tsv / .csv; a
    DataError in place of a row that cannot be read (so that the caller can skip it or raise it)."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for n, line in lines(path):
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
            yield n, obj
        return
    if suffix not in (".tsv", ".csv"):
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .tsv, .csv or .jsonl with a "
                        "header row / keys naming the columns")
    tsv = suffix == ".tsv"
    reader = csv.reader((text for _, text in lines(path, keep_ends=True)), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=not tsv)
    sep = "tab" if tsv else "comma"
    header, start = None, 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path} line {start}: {e}; a field that opens a quote (\") must close it, and a quote "
                            "inside a quoted field is written twice (\"\")") from None
        n, start = start, reader.line_num + 1
        if header is None:
            if not fields or not any(x.strip() for x in fields):
                raise DataError(f"{path} line {n}: expected a header row naming the columns, found a blank line")
            header = [x.strip() for x in fields]
            dupes = sorted({x for x in header if header.count(x) > 1})
            if dupes:
                raise DataError(f"{path} line {n}: the header names column {dupes[0]!r} twice")
            yield n, header
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue                                                 # a blank line
        if len(fields) != len(header):
            yield n, DataError(f"{path} line {n}: expected {len(header)} {sep}-separated fields "
                               f"({', '.join(header)}), found {len(fields)}")
            continue
        yield n, dict(zip(header, fields))
    if header is None:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns, then the rows")


@dataclass
class Examples:
    """Rows of a labelled (or unlabelled) file: texts, optional second segments, optional labels (strings, or the
    JSON values of a .jsonl file: lists for multi-label rows, numbers for regression)."""
    path: str
    texts: list[str]
    pairs: list[str] | None
    labels: list | None
    lines: list[int]                                  # the file line of every example, for messages
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (line, why) with skip_bad_rows

    def __len__(self):
        return len(self.texts)

    def where(self, i: int) -> str:
        return f"{self.path} line {self.lines[i]}"


def _distinct(text_column, label_column, pair_column, chosen: bool):
    """The text, label and pair columns must be three different ones: a model fed its own label learns nothing."""
    roles = [("text", text_column), ("label", label_column), ("pair", pair_column)]
    for i, (role, col) in enumerate(roles):
        for other, same in roles[i + 1:]:
            if col and col == same:
                default = "" if chosen or role != "text" else (" (the text column by default; name another with "
                                                              "--text-column)")
                raise UsageError(f"--{other}-column {same!r} is also the {role} column{default}; the text, pair "
                                 "and label columns must differ")


# columns a table's text is not guessed from (the last two: the index column pandas' to_csv writes)
NOT_TEXT = ("label", "labels", "id", "idx", "index", "", "unnamed: 0")


NAMED_TEXT = ("text", "sentence")     # the columns texts are read from by name, in this order, when none is given


def table_columns(path) -> list:
    """A table's column names: a .tsv / .csv header, the keys of a .jsonl file's first object ([] for a file that
    cannot be read: its reading says what is wrong)."""
    try:
        for _, rec in _records(path):
            return list(rec) if isinstance(rec, (list, dict)) else []
    except (DataError, OSError):
        return []
    return []


def named_text_column(path) -> str | None:
    """"text" or "sentence", the column a table's texts are read from by name when none is given, or None."""
    return next((c for c in NAMED_TEXT if c in table_columns(path)), None)


def _columns(path, header, text_column, label_column, pair_column, not_text=()):
    chosen = text_column is not None
    if text_column is None:                 # "text", "sentence", else the one column left that can hold text
        text_column = next((c for c in NAMED_TEXT if c in header), None)
    if text_column is None:
        left = [c for c in header if c not in (label_column, pair_column, *not_text)
                and c.strip().lower() not in NOT_TEXT]
        if len(left) > 1:
            raise DataError(f"{path} line 1: no 'text' or 'sentence' column, and {len(left)} columns could hold the "
                            f"text ({', '.join(map(repr, left))}): name it with --text-column (--column in encode, "
                            "bench and quantize)")
        text_column = left[0] if left else header[0]
        if len(header) == 1 and (len(text_column.split()) > 5 or len(text_column) > 60):
            raise DataError(f"{path} line 1: {text_column[:40] + ('...' if len(text_column) > 40 else '')!r} would "
                            "name the file's only column, but it reads as a text, and a table's first line is its "
                            "header, not data: if it is the column's name, name it with --text-column (--column in "
                            "encode, bench and quantize); if it is a text, add a header line such as 'text' above "
                            "it, or give the texts one a line as a .txt file")
    _distinct(text_column, label_column, pair_column, chosen)
    for role, col in (("text", text_column), ("label", label_column), ("pair", pair_column)):
        if col and col not in header:
            raise DataError(f"{path} line 1: no {role} column {col!r}; the header has "
                            f"{', '.join(map(repr, header))}")
    return text_column


# files that are not texts a line, named when given as texts
NOT_TEXTS = {".json": "a .json file is SQuAD-style questions, read by --task question-answering",
             **{s: f"a {s} file is not text" for s in (".parquet", ".arrow", ".feather", ".xlsx", ".xls", ".pkl",
                                                       ".pickle", ".npy", ".npz", ".pt", ".safetensors")}}


_NAME = re.compile("[A-Za-z_\u00C0-\u024F][A-Za-z0-9_.\u00C0-\u024F-]{0,39}")   # a column name (Latin letters)
_LABEL = re.compile(r"[A-Za-z0-9_.+/|,:-]{1,24}")            # a label: 1, pos, B-PER, 0.75, Sci/Tech, pos|neg
_SHORT = re.compile(r"[^\W\d_][\w/|-]{0,3}")                   # a name or label in another script: 标签, étiq


def _plain_stdin(n: int, line: str, hint: str = "") -> None:
    """Standard input is read as one text a line; a first line that is a table row or a JSON object would be read
    as text, column names and labels included. Only what tables spell (ASCII names, short labels) is taken for
    one: a text in another script holding a tab is a text."""
    kind = None
    if "\t" in line:                  # a text may hold a tab; a header, or a text and its label, is a table's row
        fields = [f.strip() for f in line.split("\t")]
        if all(_NAME.fullmatch(f) or _SHORT.fullmatch(f) for f in fields):
            kind = "looks like a .tsv header (" + ", ".join(fields[:4]) + ("..." if len(fields) > 4 else "") + ")"
        elif _LABEL.fullmatch(fields[-1]) or _SHORT.fullmatch(fields[-1]):
            kind = f"looks like a .tsv row, a text and its label ({fields[-1]!r} after the last tab)"
    if kind is None and line.lstrip().startswith("{"):
        try:
            kind = "is a JSON object (a .jsonl row?)" if isinstance(json.loads(line), dict) else None
        except ValueError:
            pass
    if kind:
        raise DataError(f"<stdin> line {n} {kind}, but standard input is read as one text a line, so its columns and "
                        f"labels would be read as text: give the table as a file (.tsv, .csv or .jsonl){hint}")


def iter_rows(source, text_column: str | None = None, label_column: str | None = None,
              pair_column: str | None = None, skip_bad_rows: bool = False, skipped: list | None = None,
              not_text=(), stdin_hint: str = "", empty_label: bool = False):
    """(line, text, pair, label) for every row, lazily. A .tsv / .csv / .jsonl reads the named columns (text by
    default "text", "sentence", or the only column that is not the label's, the pair's, one of `not_text` (a
    label column not read, as in predict) or an id); any other file, or "-" for standard input, is one text a line
    (blank lines skipped). Bad rows raise DataError, or with skip_bad_rows are appended to `skipped` as (line, why).
    stdin_hint ends the message for a table given on standard input (what else the caller reads). empty_label:
    an empty label cell is read as "" (multi-label: a row with none of the labels), not refused."""
    name = source_name(source)
    if str(source) != STDIN:
        _check_file(Path(source))
    if not is_table(source):
        if label_column or pair_column:
            kind = ("; it is a CoNLL file of word tags, read by --task token-classification" if is_conll(source) else
                    "; a .json file is SQuAD-style questions, read by --task question-answering"
                    if str(source).lower().endswith(".json") else "; this is read as plain text, one text a line")
            raise DataError(f"{name}: labels and sentence pairs are read from .tsv, .csv or .jsonl files with "
                            f"named columns{kind}")
        suffix = Path(str(source)).suffix.lower() if str(source) != STDIN else ""
        if suffix in NOT_TEXTS or is_conll(source):
            why = NOT_TEXTS.get(suffix) or "a CoNLL file holds a word and its tag a line, read by --task " \
                                           "token-classification" + (
                " (this .txt is read as one: its lines are a word, a tab and a tag, with blank lines between "
                "sentences; texts holding tabs go in a .tsv with a header)" if suffix == ".txt" else "")
            raise DataError(f"{name}: {why}; texts are read from .txt (one a line), .tsv, .csv or .jsonl")
        first = True
        for n, line in lines(source):
            if line.strip():
                if first and str(source) == STDIN:
                    _plain_stdin(n, line, stdin_hint)
                first = False
                yield n, line.strip(), None, None
        return
    text_col = None
    for n, rec in _records(source):
        if isinstance(rec, list):
            text_col = _columns(name, rec, text_column, label_column, pair_column, not_text)
            continue
        try:
            if isinstance(rec, DataError):
                raise rec
            col = text_col or text_column or next((c for c in NAMED_TEXT if c in rec), NAMED_TEXT[-1])
            if text_col is None and (text_column or col in rec):   # JSON lines: the text field is chosen once, by
                _distinct(col, label_column, pair_column, text_column is not None)   # the first record that has one
                text_col = col
            values = {}
            for role, c in (("text", col), ("label", label_column), ("pair", pair_column)):
                if not c:
                    continue
                if c not in rec:
                    wanted = "'text' or 'sentence'" if role == "text" and not text_column else repr(c)
                    raise DataError(f"{name} line {n}: no field {wanted} (the {role}); the line has "
                                    f"{', '.join(map(repr, rec)) or 'no fields'}" + (
                                        f"; --{role}-column names another" if rec else ""))
                value = rec[c]
                if role != "label" or isinstance(value, str) or value is None:
                    if value is not None and not isinstance(value, str):
                        raise DataError(f"{name} line {n}: field {c!r} (the {role}) is a {type(value).__name__}; "
                                        "expected a string")
                    value = (value or "").strip()
                    if not value and not (role == "label" and empty_label):
                        raise DataError(f"{name} line {n}: empty {role} in field {c!r}")
                values[role] = value
        except DataError as e:
            if not skip_bad_rows:
                raise
            if skipped is not None:
                skipped.append((n, str(e).split(": ", 1)[-1]))
            continue
        yield n, values["text"], values.get("pair"), values.get("label")


def read_ids(source) -> list[list[int]]:
    """Token ids, one sequence per line of a file (or "-" for standard input), separated by whitespace; a blank line
    is an empty sequence, so that sequence n is line n. A file without a single id is refused."""
    name, ids = source_name(source), []
    for n, line in lines(source):
        try:
            ids.append([int(x) for x in line.split()])
        except ValueError:
            raise DataError(f"{name} line {n}: expected whitespace-separated integer ids") from None
    if not any(ids):
        raise DataError(f"{name}: no ids found ({'an empty file' if not ids else 'only blank lines'}); expected "
                        "token ids, one sequence per line, separated by spaces")
    return ids


def read_labels(path, label_column: str = "label") -> list[tuple[int, object]]:
    """The label column of a table alone, with each row's line (check --data: which text column holds the texts
    does not matter)."""
    name, labels = source_name(path), []
    _check_file(Path(path))
    for n, rec in _records(path):
        if isinstance(rec, list):
            if label_column not in rec:
                raise DataError(f"{name} line 1: no label column {label_column!r}; the header has "
                                f"{', '.join(map(repr, rec))}")
            continue
        if isinstance(rec, DataError):
            raise rec
        if label_column not in rec:
            raise DataError(f"{name} line {n}: no field {label_column!r} (the label)")
        labels.append((n, rec[label_column].strip() if isinstance(rec[label_column], str) else rec[label_column]))
    if not labels:
        raise DataError(f"{name}: no examples")
    return labels


def read_examples(path, text_column: str | None = None, label_column: str | None = "label",
                  pair_column: str | None = None, skip_bad_rows: bool = False, not_text=(),
                  empty_label: bool = False) -> Examples:
    """A labelled (label_column given) or unlabelled file, all rows in memory."""
    name = source_name(path)
    ex = Examples(name, [], [] if pair_column else None, [] if label_column else None, [])
    for n, text, pair, label in iter_rows(path, text_column, label_column, pair_column, skip_bad_rows, ex.skipped,
                                          not_text, empty_label=empty_label):
        ex.texts.append(text)
        ex.lines.append(n)
        if label_column:
            ex.labels.append(label)
        if pair_column:
            ex.pairs.append(pair)
    if not ex.texts:
        raise DataError(f"{name}: no examples" + (f" ({len(ex.skipped)} bad rows skipped)" if ex.skipped else ""))
    return ex


def read_texts(path, column: str | None = None, limit: int | None = None) -> list[str]:
    """Texts of a file: the named column of a table, else one text a line. Blank lines are skipped."""
    texts = []
    for _, text, _, _ in iter_rows(path, text_column=column):
        texts.append(text)
        if limit and len(texts) >= limit:
            break
    if not texts:
        raise DataError(f"{source_name(path)}: no texts found")
    return texts


def count_rows(source) -> int | None:
    """How many rows a file holds (a quick pass over its bytes), for a progress bar; None for standard input."""
    if str(source) == STDIN:
        return None
    try:
        with open(source, "rb") as f:
            n = sum(1 for line in f if line.strip())
    except OSError:
        return None
    return max(0, n - (1 if Path(source).suffix.lower() in (".tsv", ".csv") else 0))


# ---- token-labelled sentences: CoNLL / JSONL ------------------------------------------------------------------------

@dataclass
class TokenExamples:
    """Sentences of words with one tag per word (tags None for unlabelled input)."""
    path: str
    words: list[list[str]]
    tags: list[list[str]] | None
    lines: list[int]                                  # the first line of every sentence
    texts: list[str] | None = None                    # the raw lines, for plain text split at spaces

    def __len__(self):
        return len(self.words)

    def where(self, i: int) -> str:
        return f"{self.path} line {self.lines[i]}"


def read_conll(path, labelled: bool = True) -> TokenExamples:
    """CoNLL: one token a line, its tag in the last column (tab- or space-separated), a blank line between
    sentences; `-DOCSTART-` lines are skipped. Also .jsonl with "tokens" (or "words") and "tags" lists."""
    name = source_name(path)
    if str(path) != STDIN and Path(path).suffix.lower() == ".jsonl":
        return _read_token_jsonl(path, labelled)
    ex = TokenExamples(name, [], [] if labelled else None, [])
    words, tags, first, columns = [], [], None, None
    for n, line in lines(path):
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if words:
                ex.words.append(words), ex.lines.append(first)
                if labelled:
                    ex.tags.append(tags)
            words, tags, first = [], [], None
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if labelled and len(parts) < 2:
            raise DataError(f"{name} line {n}: expected a token and its tag separated by a tab, found "
                            f"{line.strip()!r}")
        if labelled:                      # the tag is the last column: every line must have the same columns
            columns = columns or (len(parts), n)
            if len(parts) != columns[0]:
                raise DataError(f"{name} line {n}: {len(parts)} columns, but line {columns[1]} has {columns[0]}; "
                                f"the tag is read from the last column, so every token line needs the same columns "
                                f"(found {line.strip()!r})")
        word, tag = parts[0].strip(), parts[-1].strip()
        if not word or (labelled and not tag):
            raise DataError(f"{name} line {n}: empty {'token' if not word else 'tag'}")
        if first is None:
            first = n
        words.append(word)
        tags.append(tag)
    if words:
        ex.words.append(words), ex.lines.append(first)
        if labelled:
            ex.tags.append(tags)
    if not ex.words:
        raise DataError(f"{name}: no sentences found (expected token<TAB>tag lines, a blank line between "
                        "sentences)")
    return ex


def _read_token_jsonl(path, labelled: bool) -> TokenExamples:
    ex = TokenExamples(str(path), [], [] if labelled else None, [])
    for n, rec in _records(path):
        if isinstance(rec, DataError):
            raise rec
        words = rec.get("tokens", rec.get("words"))
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            blank = isinstance(words, list) and any(isinstance(w, str) and not w.strip() for w in words)
            raise DataError(f"{path} line {n}: expected \"tokens\": a non-empty list of strings"
                            + ("; a token is blank (spaces only), and a blank word has no pieces to tag" if blank
                               else ""))
        ex.words.append(words), ex.lines.append(n)
        if labelled:
            tags = rec.get("tags", rec.get("labels"))
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                other = [k for k in rec if k not in ("tokens", "words", "tags", "labels")]
                raise DataError(f"{path} line {n}: expected \"tags\": a list of tag names (strings), one per token"
                                + (f"; the line has {', '.join(map(repr, other))}" if "tags" not in rec and other
                                   else "") + (" (integer ids, as Hugging Face's ner_tags: write the tag names)"
                                               if any(isinstance(t, int) for t in (tags or rec.get("ner_tags") or []))
                                               else ""))
            if len(tags) != len(words):
                raise DataError(f"{path} line {n}: {len(words)} tokens but {len(tags)} tags; give one tag per "
                                "token")
            tags = [t.strip() for t in tags]                  # as a CoNLL file's: "B-LOC " is B-LOC
            if not all(tags):
                raise DataError(f"{path} line {n}: tag {tags.index('') + 1} is blank; give a tag name")
            ex.tags.append(tags)
    if not ex.words:
        raise DataError(f"{path}: no sentences found")
    return ex


def is_conll(source) -> bool:
    """A CoNLL file by its name, or a .txt whose first lines are each a word, a tab and a tag with blank lines
    between sentences (W-NUT's own files are named .txt): such lines read as texts would tag nothing and label
    nothing. Space-separated columns are not taken for CoNLL in a .txt (a text has spaces)."""
    if str(source) == STDIN:
        return False
    suffix = Path(source).suffix.lower()
    return suffix in (".conll", ".bio", ".iob", ".iob2", ".ner") or (suffix == ".txt" and _tab_tagged(Path(source)))


_TAG = re.compile(r"\S{1,64}")


def _tab_tagged(path: Path, lines: int = 400) -> bool:
    """Within the first `lines` lines: every non-blank one `word<TAB>...<TAB>tag` (a word and a tag without spaces;
    -DOCSTART- aside), and a blank line between two sentences of them, as CoNLL separates sentences. A lexicon or a
    frequency list (`Paris<TAB>France`, `the<TAB>52301`) has no blank lines, and a file of texts has spaces."""
    seen, sentences, blank = 0, 0, False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _ in range(lines):
                line = f.readline(4096)                # bounded: a file without newlines is not read whole
                if not line:
                    break
                line = line.strip("\r\n")
                if not line.strip() or line.startswith("-DOCSTART-"):
                    blank = blank or seen > 0
                    continue
                parts = line.split("\t")
                if len(parts) < 2 or not _TAG.fullmatch(parts[0].strip()) or not _TAG.fullmatch(parts[-1].strip()):
                    return False
                if blank:
                    sentences, blank = sentences + 1, False
                seen += 1
                if sentences >= 1 and seen >= 4:
                    break
    except OSError:
        return False
    return sentences >= 1 and seen >= 2


# ---- plain-text corpora for pretraining ---------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WIKI_TITLE = re.compile(r"^ ?= [^=].* = ?$")


@dataclass(frozen=True)
class Segmented:
    """A sentence with its words marked: `starts` holds the character offsets in `text` where a word begins (from a
    segmenter, or from gold words), so that whole-word masking can group the tokens of one word."""
    text: str
    starts: tuple[int, ...]


def word_starts(text: str, words: list[str]) -> tuple[int, ...] | None:
    """Where each of `words` begins in `text`, when the words, joined, spell `text` with its whitespace left out
    (gold words are separated by spaces; the text may or may not have spaces); None when they do not."""
    starts, i = [], 0
    for word in words:
        while i < len(text) and text[i].isspace():
            i += 1
        if not word or text[i:i + len(word)] != word:
            return None
        starts.append(i)
        i += len(word)
    return tuple(starts) if not text[i:].strip() else None


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset in text, sentence) for each sentence of a paragraph: a split after . ! or ? and whitespace."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append((start, text[start:m.start()]))
        start = m.end()
    out.append((start, text[start:]))
    return [(k, sent) for k, sent in out if sent.strip()]


def check_corpus_file(source) -> None:
    """A pretraining corpus is plain text: a table's header and labels, JSON's punctuation or CoNLL's tags would be
    read as text (and masked) without a word of warning."""
    if str(source) == STDIN:
        return
    suffix = Path(source).suffix.lower()
    if suffix in TABLES or suffix in NOT_TEXTS or is_conll(source):
        kind = f"a {suffix} file is a table" if suffix in TABLES else "a CoNLL file holds word tags" \
            if is_conll(source) else NOT_TEXTS[suffix]
        raise DataError(f"{source}: {kind}, and a corpus is plain text (a paragraph a line, blank lines between "
                        "documents): write its text to a .txt")


def read_documents(paths, limit: int | None = None, words: list | None = None) -> list[list]:
    """Documents as lists of sentences from plain text files: one paragraph per line, blank lines between
    documents; a WikiText ` = Title = ` heading also starts a new document (` = = Section = = ` does not).

    words: for each of `paths`, the words of each of its lines (a list indexed by line number - 1; None for a line
    without them), as a segmenter gives them. A sentence of a line with words comes back as a Segmented, with the
    words that start inside it; the other sentences are strings."""
    docs: list[list] = []
    current: list = []
    for k, path in enumerate(map(Path, paths)):
        _check_file(path)
        check_corpus_file(path)
        wiki = False
        line_words = words[k] if words is not None else None
        for n, line in lines(path):
            text = line.strip()
            if _WIKI_TITLE.match(line):
                wiki = True
                if current:
                    docs.append(current)
                current = []
                continue
            if not text:
                if not wiki and current:     # plain text: a blank line ends a document
                    docs.append(current)
                    current = []
                continue
            if text.startswith("= ") and text.endswith(" ="):
                continue                      # a WikiText section heading inside the document
            given = line_words[n - 1] if line_words is not None and n <= len(line_words) else None
            starts = word_starts(text, given) if given else None
            for offset, sent in _sentences(text):
                if starts is None:
                    current.append(sent)
                else:                          # the words that start in this sentence, and the sentence's start
                    inside = {s - offset for s in starts if offset <= s < offset + len(sent)}
                    current.append(Segmented(sent, tuple(sorted(inside | {0}))))
            if limit and len(docs) >= limit:
                break
        if current:
            docs.append(current)
            current = []
    if not docs:
        raise DataError(f"{', '.join(map(str, paths))}: no text found")
    return docs


def sha256_of(paths) -> str:
    """One content hash over files, so that a resumed run can tell that its data changed."""
    import hashlib
    h = hashlib.sha256()
    for p in paths:
        h.update(str(Path(p).name).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()

