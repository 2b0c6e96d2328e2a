"""One module per task; each supplies reading, batches, loss, metrics and decoding to the one training engine.

    classification         one label per text (or text pair)             classification.py
    regression             one number per text                           regression.py
    multi-label            any number of labels per text                 multi_label.py
    token-classification   one tag per word: NER, POS, segmentation      token_classification.py
    question-answering     an answer span in a context (SQuAD)           question_answering.py
    pretraining            masked LM with the family's NSP / SOP         pretraining.py
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from ..errors import UsageError

TASKS = ("classification", "regression", "multi-label", "token-classification", "question-answering")


def make(name: str, **options):
    """The task object for a --task name; options it does not use are ignored."""
    if name == "classification":
        from .classification import SequenceClassification as cls
    elif name == "regression":
        from .regression import Regression as cls
    elif name == "multi-label":
        from .multi_label import MultiLabel as cls
    elif name == "token-classification":
        from .token_classification import TokenClassification as cls
    elif name == "question-answering":
        from .question_answering import QuestionAnswering as cls
    else:
        raise UsageError(f"--task {name!r} is not one of {', '.join(TASKS)}")
    from ..arguments import python_number                # numpy's numbers as Python's: run.json is JSON
    return cls(**{k: python_number(v) if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)) else v
                  for k, v in options.items() if v is not None})


def check_options(name: str, options: dict) -> None:
    """Refuse a task option the task `name` would not read (make() drops them): each said with where it applies;
    and one of the wrong type (the Python API's threshold="0.5", no_answer="no")."""
    from ..arguments import check_flag, number_arg
    for flag in ("label_all_pieces", "no_answer"):
        if options.get(flag) is not None:
            check_flag(flag, options[flag])
    if options.get("threshold") is not None:
        number_arg("threshold", options["threshold"])
    for count in ("doc_stride", "max_answer_length", "windows"):     # their types (their ranges: the tasks', as
        if options.get(count) is not None:                            # the options say them)
            number_arg(count, options[count], whole=True)
    given = {k: v for k, v in options.items() if v is not None and (v is not False or k == "no_answer")}
    if "threshold" in given and name != "multi-label":
        raise UsageError(f"--threshold applies to multi-label; this is {name}")
    if "label_all_pieces" in given and name != "token-classification":
        raise UsageError(f"--label-all-pieces applies to token classification (word tags); this is {name}")
    qa_only = [k for k in ("doc_stride", "max_answer_length", "no_answer") if k in given]
    if qa_only and name != "question-answering":
        said = "always-answer" if given[qa_only[0]] is False else qa_only[0].replace('_', '-')
        raise UsageError(f"--{said} applies to question answering; this is {name}")
    if "pool" in given and name == "question-answering":
        raise UsageError(f"--pool {given['pool']} combines the windows of a long text's label scores; question "
                         "answering takes the best answer span over all of a context's windows (leave --pool out)")
    if "pool" in given and name == "token-classification":
        raise UsageError(f"--pool {given['pool']} combines the windows of a long text's label scores; token "
                         "classification takes each word's tags from the window where it is most central (leave "
                         "--pool out)")
    if "pool" in given and "windows" not in given:
        raise UsageError(f"--pool {given['pool']} combines the windows of a long text; without --windows there is "
                         "one window a text, so it would do nothing")
    if "windows" in given and name == "question-answering":
        raise UsageError("--windows: question answering cuts every context into windows itself; set their overlap "
                         "with --doc-stride")


def check_skip_bad_rows(name: str, skip_bad_rows: bool) -> None:
    """--skip-bad-rows skips rows of sentence tables; word tags and QA stop at their first bad item anyway."""
    if skip_bad_rows and name in ("token-classification", "question-answering"):
        raise UsageError(f"--skip-bad-rows skips rows of .tsv/.csv/.jsonl tables of sentences; {name} reads "
                         "sentences and questions that must all be right (the first bad one is named)")


def restore(state: dict, tok):
    """A task as a run stored it (run.json / the checkpoint), for resume."""
    name = state["task"]
    args = {k: v for k, v in state.items() if k != "task"}
    if name == "pretraining":
        from .pretraining import Pretraining
        if isinstance(args.get("whole_word"), bool):      # runs stored before whole_word named its words
            args["whole_word"] = "pieces" if args["whole_word"] else None
        return Pretraining(tok, **args)
    return make(name, **args)


def for_model(config, head: str) -> str:
    """The task a fine-tuned model was trained for, from its head and problem_type."""
    if head in ("token-classification", "question-answering"):
        return head
    if head == "classification":
        return {"regression": "regression", "multi_label_classification": "multi-label"}.get(config.problem_type,
                                                                                             "classification")
    raise UsageError(f"this model has head {head!r}, which predicts no task; fine-tune it first (bertscope finetune)")


def guess(path, label_column: str = "label", text_column: str | None = None,
          pair_column: str | None = None) -> tuple[str, str]:
    """(task, why) from a training file: CoNLL -> token-classification, SQuAD JSON -> question-answering, and for a
    table, its labels: lists or `a|b` -> multi-label, real numbers -> regression, else classification."""
    p = Path(str(path))
    suffix = p.suffix.lower()
    from ..data import is_conll
    if is_conll(p):
        return "token-classification", f"{p.name} is a CoNLL file" + (
            " (a word, a tab and a tag a line)" if suffix == ".txt" else "")
    if suffix == ".json":
        return "question-answering", f"{p.name} is a SQuAD-style JSON file"
    if not p.is_file() or suffix not in (".tsv", ".csv", ".jsonl"):
        return "classification", "the default"
    from ..data import iter_rows
    if suffix == ".jsonl":
        with open(p, encoding="utf-8", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        try:
            record = json.loads(first)
        except ValueError:
            record = {}
        if isinstance(record, dict) and ("tokens" in record or "words" in record) and isinstance(
                record.get("tokens", record.get("words")), list):
            return "token-classification", f"{p.name} holds lists of tokens"
    labels = []
    try:
        for n, (_, _, _, label) in enumerate(iter_rows(p, text_column, label_column, pair_column,
                                                       skip_bad_rows=True, skipped=[])):
            labels.append(label)
            if n >= 2000:
                break
    except Exception:   # the real reading, later, reports what is wrong with the file
        return "classification", "the default"
    if not labels:      # no row read (no such column): the real reading says what the rows hold
        return "classification", "the default"
    from .multi_label import json_list
    if any(isinstance(x, list) or (isinstance(x, str) and "|" in x) or json_list(x) is not None for x in labels):
        return "multi-label", f"the {label_column!r} column holds several labels per row"
    numbers = []
    for x in labels:
        try:
            numbers.append(float(x))
        except (TypeError, ValueError):
            return "classification", f"the {label_column!r} column holds class names"
    numbers = [v for v in numbers if math.isfinite(v)]   # nan / inf: the reading says what is wrong with them
    if numbers and any(v != int(v) for v in numbers):
        return "regression", f"the {label_column!r} column holds real numbers"
    return "classification", f"the {label_column!r} column holds classes"
