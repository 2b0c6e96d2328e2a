"""What a task is: everything the training engine does not know about a batch.

A task reads and validates its files, turns them into encoded examples, makes packed batches, says which head the
model needs, computes its loss and metrics, and decodes predictions. The engine (train/loop.py) only ever calls the
methods below, so a new task is one module that implements them.

Losses are returned as sums with the number of items each sum runs over (`Batch.counts`), so that the engine can
average over a whole step (several micro-batches, several processes) exactly as one big batch would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..infer import Encoded


@dataclass
class Batch:
    """One micro-batch, ready for the model."""
    inputs: dict                        # model keyword arguments (cu_seqlens stays on the CPU)
    targets: dict                       # what the loss compares the outputs with
    counts: dict                        # loss term -> number of items its sum runs over (known on the CPU)
    size: int                           # sequences (weights the logged loss)
    tokens: int                         # real tokens (for tokens/s)

    def to(self, device) -> "Batch":
        move = lambda d: {k: (v if k == "cu_seqlens" or not isinstance(v, torch.Tensor)  # noqa: E731
                              else v.to(device, non_blocking=True)) for k, v in d.items()}
        return Batch(move(self.inputs), move(self.targets), self.counts, self.size, self.tokens)


def bucketed_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, bucket: int = 50) -> list[list[int]]:
    """This epoch's batches: a seeded shuffle, sorted by length inside windows of `bucket` batches (so a batch holds
    texts of similar length: less padding, less work), then the batches shuffled; bucket=1 gives plain random
    batches. The same (seed, epoch) always gives the same batches, which is what lets a resumed run skip exactly
    the batches it has done."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * max(1, bucket)
    batches = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


class Task:
    """The interface the engine and the library's commands use. Subclasses set `name`, `head`, and `metric` (the
    evaluation number that picks the best model, higher is better; None keeps the last model)."""

    name = ""
    head = "base"
    metric: str | None = None

    # ---- batches and loss (what the engine calls) -------------------------------------------------------------
    def batches(self, data: Encoded, epoch: int, batch_size: int, seed: int, bucket: int) -> list[list[int]]:
        return bucketed_batches(data.lengths, batch_size, seed, epoch, bucket)

    def collate(self, data: Encoded, index: list[int], epoch: int, seed: int) -> Batch:
        raise NotImplementedError

    def loss(self, model, batch: Batch) -> tuple[dict, dict]:
        """(loss terms {name: summed loss tensor}, statistics {name: (numerator tensor, denominator int)})."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model, data: Encoded, batch_size: int = 64, seed: int = 0) -> dict:
        """The task's metrics of the model on encoded, labelled data (in eval mode; the mode is restored)."""
        was = model.training
        model.eval()
        try:
            return self.score(self.predictions(model, data, batch_size), self.gold(data))
        finally:
            model.train(was)

    # ---- predictions (what evaluate / predict call) -----------------------------------------------------------
    def predictions(self, model, data: Encoded, batch_size: int = 64):
        raise NotImplementedError

    def gold(self, data: Encoded):
        raise NotImplementedError

    def score(self, predictions, gold) -> dict:
        raise NotImplementedError

    # ---- what a checkpoint keeps of the task ------------------------------------------------------------------
    def settle(self, train) -> None:
        """Settings the training data decides where the user did not (stored by state(), read by evaluate and
        predict): none for most tasks."""

    def state(self) -> dict:
        """JSON-able settings and label sets, stored with the run and compared on resume."""
        return {}
