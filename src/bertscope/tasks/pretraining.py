"""Pretraining: masked LM (80/10/10; whole words optional, see masking.py; static or dynamic masks) with the
family's pair objective (NSP for BERT, SOP for ALBERT, none for RoBERTa). The vocabulary projection runs only at
the masked positions.

The mask of sequence i depends only on (seed, mask epoch, i), so every process of a torchrun job and every resumed
run draws the same one; with static masks the mask epoch is always 0 (BERT), with dynamic ones it is the epoch
(RoBERTa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import infer
from ..errors import DataError, UsageError
from ..masking import Corrupted, Instance, build_instances, corrupt, segment_files, tokenize_documents, \
    whole_word_unit
from .base import Batch, Task

# Built-in sizes for a model trained from scratch (`--config tiny|small|base`).
SIZES = {"tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
         "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
         "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}


def new_config(family, size: str, tok, max_length: int):
    """A Config of a built-in size for this tokenizer, with the family's defaults (ALBERT's factorised E)."""
    from ..config import Config
    fam = family
    extra = dict(fam.new_model_defaults)
    if fam.factorised_embeddings:
        extra["embedding_size"] = 64 if size == "tiny" else 128
    return Config(family=fam, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                  max_position_embeddings=max(512, max_length) + fam.position_offset(tok.pad_token_id),
                  **SIZES[size], **extra)


class Pretraining(Task):
    name = "pretraining"
    metric = None                               # the last model is kept

    def __init__(self, tok, objective: str, whole_word: str | None = None, mlm_probability: float = 0.15,
                 dynamic: bool = True, max_length: int = 128):
        fam = tok.family
        if objective not in fam.objectives:
            raise UsageError(f"--objective {objective} does not fit {fam.title}; use {' or '.join(fam.objectives)}")
        if not 0 < mlm_probability < 1:
            raise UsageError(f"--mlm-probability {mlm_probability}: expected a fraction between 0 and 1 "
                             "(BERT's is 0.15)")
        self.tok, self.objective, self.whole_word = tok, objective, whole_word_unit(whole_word)
        self.mlm_probability, self.dynamic, self.max_length = mlm_probability, dynamic, max_length
        self.with_pairs = objective != "mlm"
        self.head = "pretraining" if self.with_pairs else "mlm"

    # ---- data -------------------------------------------------------------------------------------------------
    def read(self, paths, on_event=None, held_out: bool = False) -> list[list]:
        """Documents of plain-text files; with a segmenter's whole words, each line's words go with its sentences
        (segmented once per file and cached: masking.segment_files; held-out text may lack gold words)."""
        from ..data import read_documents
        paths = list(paths)
        docs = read_documents(paths, words=segment_files(paths, self.whole_word, on_event, held_out))
        if self.objective == "mlm+nsp" and len(docs) == 1:        # every "not next" B comes from another document
            raise DataError(f"{', '.join(map(str, paths))}: one document (documents are separated by blank lines, or "
                            "begin at a WikiText ' = Title = ' line), and NSP takes each 'not next' segment from "
                            "another document, so every pair would be a true one and its accuracy 1.0: put a blank "
                            "line between documents, or use --objective mlm")
        return docs

    def encode(self, documents: list[list], seed: int) -> infer.Encoded:
        docs = tokenize_documents(self.tok, documents)
        instances = build_instances(docs, self.tok, self.max_length, self.objective, seed=seed)
        # the pair objectives trim a pair that does not fit (BERT's recipe): how much of the text the inputs hold
        self.coverage = (sum(len(x.ids) - sum(x.special) for x in instances),
                         sum(len(sent.ids) for doc in docs for sent in doc))
        return infer.Encoded(ids=[x.ids for x in instances], types=[x.types for x in instances],
                             extra={"instances": instances})

    def batches(self, data, epoch, batch_size, seed, bucket) -> list[list[int]]:
        """A seeded random order each epoch, in batches of batch_size (the last, short one dropped)."""
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(data), generator=g).tolist()
        return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]

    def masked(self, instances: list[Instance], index: list[int], seed: int, mask_epoch: int):
        """A packed batch of the instances at `index`, masked reproducibly: (inputs, labels (T,), pair labels)."""
        ids, labels, types, lengths, pair = [], [], [], [], []
        for i in index:
            c = self.corrupted(instances, i, seed, mask_epoch)
            x, y = c.ids, c.labels
            ids.append(x), labels.append(y), types.append(torch.tensor(instances[i].types)), lengths.append(len(x))
            pair.append(instances[i].pair_label)
        inputs = {"input_ids": torch.cat(ids), "token_type_ids": torch.cat(types),
                  "cu_seqlens": torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(lengths).cumsum(0)])}
        return inputs, torch.cat(labels), torch.tensor(pair) if self.with_pairs else None

    def corrupted(self, instances: list[Instance], i: int, seed: int, mask_epoch: int) -> Corrupted:
        """Instance i masked as every batch masks it: its draw depends on (seed, mask epoch, i) only."""
        g = torch.Generator().manual_seed((seed * 1_000_003 + mask_epoch) * 10_000_019 + i)
        return corrupt(instances[i], self.tok, self.mlm_probability, self.whole_word, g)

    def collate(self, data, index, epoch, seed) -> Batch:
        inputs, labels, pairs = self.masked(data.extra["instances"], index, seed, epoch if self.dynamic else 0)
        scored = (labels != -100).nonzero().squeeze(-1)                      # on the CPU: no GPU round trip
        inputs["mlm_positions"] = scored
        inputs["last_rows"] = scored             # the last layer computes these alone (the same tensor: read once)
        targets = {"mlm": labels[scored]}
        counts = {"mlm": int(scored.numel())}
        if self.with_pairs:
            targets["pair"], counts["pair"] = pairs, len(index)
        return Batch(inputs, targets, counts, len(index), int(inputs["input_ids"].numel()))

    # ---- loss and evaluation ----------------------------------------------------------------------------------
    def loss(self, model, batch: Batch):
        out = model(**batch.inputs)
        y = batch.targets["mlm"]
        terms = {"mlm": F.cross_entropy(out.logits.float(), y, reduction="sum")}
        stats = {"mlm_accuracy": ((out.logits.argmax(-1) == y).sum(), len(y))}
        if self.with_pairs:
            pairs = batch.targets["pair"]
            terms["pair"] = F.cross_entropy(out.pair_logits.float(), pairs, reduction="sum")
            stats["pair_accuracy"] = ((out.pair_logits.argmax(-1) == pairs).sum(), len(pairs))
        return terms, stats

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int = 64, seed: int = 0) -> dict:
        """Held-out masked-LM loss and accuracy (and NSP/SOP accuracy), with one fixed set of masks."""
        was = model.training
        model.eval()
        instances = data.extra["instances"]
        device = next(model.parameters()).device
        loss_sum, hits, n, pair_hits = 0.0, 0, 0, 0
        for start in range(0, len(instances), batch_size):
            index = list(range(start, min(start + batch_size, len(instances))))
            inputs, labels, pairs = self.masked(instances, index, seed + 1, 0)
            inputs, labels = {k: v.to(device) for k, v in inputs.items()}, labels.to(device)
            scored = (labels.reshape(-1) != -100).nonzero().squeeze(-1)          # (M,)
            out = model(**inputs, mlm_positions=scored, last_rows=scored)
            y = labels.reshape(-1)[scored]
            loss_sum += float(F.cross_entropy(out.logits.float(), y, reduction="sum"))
            hits += int((out.logits.argmax(-1) == y).sum())
            n += len(y)
            if self.with_pairs:
                pair_hits += int((out.pair_logits.argmax(-1) == pairs.to(device)).sum())
        model.train(was)
        m = {"mlm_loss": loss_sum / max(n, 1), "mlm_accuracy": hits / max(n, 1)}
        if self.with_pairs:
            m["pair_accuracy"] = pair_hits / len(instances)
        return m

    def state(self) -> dict:
        return {"task": self.name, "objective": self.objective, "whole_word": self.whole_word,
                "mlm_probability": self.mlm_probability, "dynamic": self.dynamic, "max_length": self.max_length}
