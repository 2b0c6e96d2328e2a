"""One module per task; each supplies reading, batches, loss, metrics and decoding to the one training engine.

    classification        one label per text (or text pair)
    pretraining           masked LM with the family's pair objective (NSP / SOP)
"""

from __future__ import annotations

from ..errors import UsageError

TASKS = ("classification",)


def make(name: str, **kwargs):
    """The task object for a --task name (text_column, label_column, ... as keyword arguments)."""
    if name == "classification":
        from .classification import SequenceClassification
        return SequenceClassification(**kwargs)
    raise UsageError(f"--task {name!r} is not one of {', '.join(TASKS)}")


def restore(state: dict, tok):
    """A task as a run stored it (run.json / the checkpoint), for resume."""
    name = state["task"]
    args = {k: v for k, v in state.items() if k != "task"}
    if name == "pretraining":
        from .pretraining import Pretraining
        return Pretraining(tok, **args)
    return make(name, **args)
