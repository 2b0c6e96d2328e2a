"""Input checks at the model's boundary, before any embedding lookup.

Every check raises `InputError` (a `ValueError`) that names the tensor, the offending value and where it is, the
model's limit, and the fix, so that a wrong input never surfaces as an `IndexError` from inside torch. The model calls
`check_inputs` once at the top of `forward`; the layers below trust what they get.
"""

from __future__ import annotations

import torch

from .config import Config
from .errors import InputError


def _where(mask: torch.Tensor, one: str = "token") -> str:
    """'row 1, position 7' for the first True entry of a (B, L) / (T,) bool tensor ('token 7' for (T,), or
    'sequence 7' where one entry stands for a sequence)."""
    idx = mask.nonzero()[0].tolist()
    if len(idx) == 1:
        return f"{one} {idx[0]}"
    return f"row {idx[0]}, position {idx[1]}" + (f", key {idx[2]}" if len(idx) > 2 else "")


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _check_int(name: str, t: torch.Tensor, labels: bool = False):
    """A tensor of integer ids: torch.long, or int32 for ids (the embeddings take both); a loss's labels long."""
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor of integer ids, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InputError(f"{name} has dtype {t.dtype}; ids must be integers (torch.long)")
    if t.dtype != torch.long and (labels or t.dtype != torch.int32):
        raise InputError(f"{name} has dtype {t.dtype}; expected torch.long" + ("" if labels else " (or torch.int32)")
                         + f": {name}.long() converts it")


def default_position_ids(config: Config, input_ids: torch.Tensor) -> torch.Tensor:
    """The positions the reference gives a padded (B, L) batch (the family's rule)."""
    return config.family.position_ids(input_ids, config.pad_token_id)


def _too_long_message(config: Config, tokens: int, row: int | None, name: str = "input_ids") -> str:
    where = f"row {row} of {name}" if row is not None else name
    P, limit = config.max_position_embeddings, config.max_tokens
    if config.position_offset:
        first_bad, last_bad = limit, tokens - 1
        return (f"{where} has {tokens} tokens; this {config.family.title} model has {P} position embeddings, of which "
                f"the first {config.position_offset} are reserved (padding_idx={config.pad_token_id}, positions start "
                f"at {config.position_offset}), so at most {limit} tokens fit: tokens {first_bad}..{last_bad} would "
                f"need positions {first_bad + config.position_offset}..{last_bad + config.position_offset}, beyond "
                f"position_embeddings ({P} rows, {config.family.title} reserves {config.position_offset}). "
                f"Truncate to {limit} tokens (tokenizer max_length={limit}) or split the text into windows "
                "(--windows STRIDE in bertscope's commands).")
    return (f"{where} has {tokens} tokens; this {config.family.title} model has {P} position embeddings, so at most "
            f"{limit} tokens fit (positions {P}..{tokens - 1} do not exist). Truncate to {limit} tokens "
            f"(tokenizer max_length={limit}) or split the text into windows (--windows STRIDE in bertscope's "
            "commands).")


def check_inputs(config: Config, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 cu_seqlens=None, inputs_embeds=None) -> None:
    """Raise InputError if these inputs would not run through a model with this config."""
    problems = input_problems(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens,
                              inputs_embeds)
    if problems:
        raise InputError("\n".join(message for _, message in problems))


def input_problems(config: Config, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                   cu_seqlens=None, inputs_embeds=None) -> list[tuple[str, str]]:
    """Every way these inputs do not fit the model, as (what, message): what is "input" (kind or shape), "vocab",
    "embeddings", "mask", "segments" or "length". Empty when they fit."""
    try:
        _check_structure(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds)
    except InputError as e:  # values cannot be read sensibly from tensors of the wrong kind or shape
        return [("input", str(e))]
    problems = []
    for what, check in (("vocab", _check_ids), ("embeddings", _check_embeds), ("mask", _check_mask_values),
                        ("segments", _check_types), ("length", _check_positions)):
        try:
            check(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds)
        except InputError as e:
            problems.append((what, str(e)))
    return problems


def _check_structure(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds):
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("give input_ids (token ids) or inputs_embeds (your own (B, L, E) embeddings), exactly one "
                         "of the two" + (" (both were given)" if input_ids is not None else ""))
    packed = cu_seqlens is not None
    if input_ids is not None:
        _check_int("input_ids", input_ids)
        name, shape = "input_ids", tuple(input_ids.shape)
    else:
        name, shape = "inputs_embeds", _check_embeds_structure(config, inputs_embeds, packed)
    if packed:
        if len(shape) != 1:
            raise InputError(f"{name} has shape {_shape(input_ids if input_ids is not None else inputs_embeds)}; "
                             "a packed batch (cu_seqlens given) holds the tokens of all sequences in one "
                             + ("1-D tensor (T,)" if input_ids is not None else "(T, E) tensor"))
        _check_cu_seqlens(cu_seqlens, shape[0])
        if attention_mask is not None:
            raise InputError("attention_mask is not used with a packed batch: cu_seqlens already says where each "
                             "sequence starts and ends; pass one or the other")
    elif len(shape) != 2:
        raise InputError(f"{name} has shape {_shape(input_ids if input_ids is not None else inputs_embeds)}; "
                         + ("expected (batch, length), e.g. a tokenizer's output, or (1, length) for one sequence"
                            if input_ids is not None else
                            f"expected (batch, length, {config.embedding_dim})"))
    if 0 in shape:
        raise InputError(f"{name} has shape {_shape(input_ids if input_ids is not None else inputs_embeds)}: "
                         "there are no tokens to encode")
    if attention_mask is not None:
        B, L = shape
        if not isinstance(attention_mask, torch.Tensor):
            raise InputError(f"attention_mask must be a torch tensor ({B}, {L}) of 1 (real token) and 0 (padding), "
                             f"got {type(attention_mask).__name__}: torch.tensor(mask) makes one")
        if tuple(attention_mask.shape) not in ((B, L), (B, L, L)):
            raise InputError(
                f"attention_mask has shape {_shape(attention_mask)} but {name} has shape ({B}, {L}); "
                f"expected ({B}, {L}) (1 = real token, 0 = padding) or a per-example ({B}, {L}, {L}) mask "
                "(entry [b, i, j] = 1 where token i may attend to token j). Pass the mask the tokenizer returned "
                "with these ids.")
    if token_type_ids is not None:
        _check_int("token_type_ids", token_type_ids)
        if tuple(token_type_ids.shape) != shape:
            raise InputError(f"token_type_ids has shape {_shape(token_type_ids)} but {name} has shape {shape}; they "
                             "must match (one segment id per token)")
    if position_ids is not None:
        _check_int("position_ids", position_ids)
        ok_shapes = [shape] + ([(1, shape[1])] if not packed else [])
        if tuple(position_ids.shape) not in ok_shapes:
            raise InputError(f"position_ids has shape {_shape(position_ids)} but {name} has shape {shape}; expected "
                             f"{' or '.join(map(str, ok_shapes))}")


def _check_embeds_structure(config, embeds, packed) -> tuple:
    """The (B, L) (or (T,)) token shape of inputs_embeds, after checking its kind and width."""
    if not isinstance(embeds, torch.Tensor):
        raise InputError(f"inputs_embeds must be a float tensor, got {type(embeds).__name__}")
    if not embeds.dtype.is_floating_point:
        raise InputError(f"inputs_embeds has dtype {embeds.dtype}; embeddings are floating point (e.g. rows of "
                         "model.embeddings.word.weight, or averages of them); token ids go in input_ids")
    E = config.embedding_dim
    want = "(T, E)" if packed else "(B, L, E)"
    if embeds.dim() != (2 if packed else 3) or embeds.shape[-1] != E:
        raise InputError(f"inputs_embeds has shape {_shape(embeds)}; expected {want} with E = {E}, the width of "
                         f"this model's word embeddings" + (" (ALBERT's factorised embedding_size)"
                                                            if config.family.factorised_embeddings else ""))
    return tuple(embeds.shape[:-1])


def _check_ids(config, input_ids, *_):
    if input_ids is None:
        return
    V = config.vocab_size
    bad = (input_ids < 0) | (input_ids >= V)
    if bad.any():
        value = input_ids[bad][0].item()
        raise InputError(
            f"input_ids {_where(bad)} holds id {value}, outside this model's vocabulary of {V} ids (0..{V - 1}). "
            "The ids come from another tokenizer or vocabulary: tokenize with the tokenizer saved with this "
            "checkpoint (bertscope.load_tokenizer(folder)), or resize the model's embeddings to the new vocabulary.")


def _check_embeds(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds):
    if inputs_embeds is not None and not torch.isfinite(inputs_embeds).all():
        bad = ~torch.isfinite(inputs_embeds).all(-1)
        raise InputError(f"inputs_embeds {_where(bad)} holds a NaN or infinite value")


def _check_mask_values(config, input_ids, attention_mask, *_):
    if attention_mask is None:
        return
    if attention_mask.dtype != torch.bool:
        values = attention_mask.float()
        odd = ~((values == 0) | (values == 1))
        if odd.any():
            raise InputError(f"attention_mask {_where(odd)} is {values[odd][0].item()}; expected 0/1 values "
                             "(1 = attend, 0 = ignore). An additive mask of 0 / -inf is built inside the model.")
    # (B, L, L) masks may hold all-zero rows for padding queries, but not a whole sequence of them
    empty = ~attention_mask.bool().flatten(1).any(-1)                     # (B,)
    if empty.any():
        row = int(empty.nonzero()[0])
        raise InputError(f"attention_mask row {row} is all zeros: that sequence has no token to attend to, so "
                         "its outputs would mean nothing. Drop the row, or mark its real tokens with 1.")


def _check_types(config, input_ids, attention_mask, token_type_ids, *_):
    if token_type_ids is None:
        return
    T = config.type_vocab_size
    bad = (token_type_ids < 0) | (token_type_ids >= T)
    if bad.any():
        value = token_type_ids[bad][0].item()
        if T == 1:
            fix = (f"this {config.family.title} model has type_vocab_size 1 (segment 0 only): pass token_type_ids "
                   "of zeros or leave them out" + (f"; {config.family.title} marks a pair with "
                                                  f"{config.family.specials['sep'] * 2}, not segment ids"
                                                  if not config.family.segments else ""))
        else:
            fix = f"this model has type_vocab_size {T} (segments 0..{T - 1}): use segment ids below {T}"
        raise InputError(f"token_type_ids {_where(bad)} is {value}; {fix}.")


def _check_positions(config, input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, inputs_embeds):
    if position_ids is not None:
        P = config.max_position_embeddings
        bad = (position_ids < 0) | (position_ids >= P)
        if bad.any():
            value = position_ids[bad][0].item()
            raise InputError(
                f"position_ids {_where(bad)} is {value}; this {config.family.title} model has {P} position "
                f"embeddings (ids 0..{P - 1}"
                + (f", real tokens start at {config.position_offset}" if config.position_offset else "")
                + f"), so at most {config.max_tokens} tokens fit. Truncate the sequence to {config.max_tokens} tokens "
                "or restart positions for each window.")
    elif cu_seqlens is not None:
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1])
        longest = int(lengths.max())
        if longest > config.max_tokens:
            raise InputError(_too_long_message(config, longest, int(lengths.argmax()),
                                               "input_ids" if input_ids is not None else "inputs_embeds"))
    else:
        if input_ids is not None and config.family.positions_after_padding:
            real = (input_ids != config.pad_token_id).sum(-1)     # positions skip padding
            longest, row = int(real.max()), int(real.argmax())
        else:
            longest, row = (input_ids if input_ids is not None else inputs_embeds).shape[1], None
        if longest > config.max_tokens:
            raise InputError(_too_long_message(config, longest, row,
                                               "input_ids" if input_ids is not None else "inputs_embeds"))


def _check_cu_seqlens(cu: torch.Tensor, total: int):
    _check_int("cu_seqlens", cu)
    if cu.dim() != 1 or cu.numel() < 2:
        raise InputError(f"cu_seqlens has shape {_shape(cu)}; expected (N + 1,) cumulative lengths starting at 0, "
                         "e.g. [0, 5, 12] for two sequences of 5 and 7 tokens")
    if cu[0].item() != 0 or cu[-1].item() != total:
        raise InputError(f"cu_seqlens runs from {cu[0].item()} to {cu[-1].item()} but the packed batch has "
                         f"{total} tokens; it must start at 0 and end at {total}")
    lengths = cu[1:] - cu[:-1]
    if (lengths <= 0).any():
        i = int((lengths <= 0).nonzero()[0])
        raise InputError(f"cu_seqlens is not increasing at sequence {i} ({cu[i].item()} -> {cu[i + 1].item()}); "
                         "every packed sequence needs at least one token")


def check_flat_indices(name: str, t, n: int) -> None:
    """Flat token indices (last_rows, mlm_positions): a 1-D long tensor within the n tokens of the batch."""
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.long or (
            t.numel() and not (0 <= int(t.min()) and int(t.max()) < n)):
        raise InputError(f"{name}: expected a 1-D long tensor of flat token indices in 0..{n - 1}")


def check_labels(config: Config, head: str, labels, tokens_shape: tuple, num_seqs: int) -> None:
    """Labels for the head's loss: MLM and token labels one per token (-100 = not scored); class labels one per
    sequence, below num_labels (or floats for regression / multi-label)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise InputError(f"labels must be a torch tensor, got {type(labels).__name__}")
    if head in ("mlm", "pretraining", "token-classification"):
        _check_int("labels", labels, labels=True)
        if tuple(labels.shape) != tuple(tokens_shape):
            raise InputError(f"labels has shape {_shape(labels)} but the batch has {tuple(tokens_shape)} tokens; "
                             "these labels hold one id per token (-100 where no prediction is scored)")
        limit, kind, what = (config.vocab_size, "masked-LM", "a token id") if head != "token-classification" \
            else (config.num_labels, "token-classification", "a tag id")
        bad = (labels != -100) & ((labels < 0) | (labels >= limit))
        if bad.any():
            raise InputError(f"labels {_where(bad)} is {labels[bad][0].item()}; {kind} labels must be -100 "
                             f"(ignored) or {what} in 0..{limit - 1}")
        if labels.numel() and (labels == -100).all():             # the loss would divide by no scored token: NaN
            raise InputError(f"every one of the labels is -100 (not scored), so the {kind} loss has nothing to "
                             f"score (it would be NaN); give {what} at the positions to predict")
    elif head == "classification":
        if labels.dim() == 0 or labels.shape[0] != num_seqs:
            raise InputError(f"labels has shape {_shape(labels)} for a batch of {num_seqs} sequences; expected one "
                             "label per sequence")
        multi = config.problem_type == "multi_label_classification" or (
            config.problem_type is None and config.num_labels > 1 and labels.dtype.is_floating_point)
        if multi and tuple(labels.shape) != (num_seqs, config.num_labels):
            raise InputError(f"labels has shape {_shape(labels)}; multi-label targets are ({num_seqs}, "
                             f"{config.num_labels}), a 0/1 float for every class of every sequence")
        if not multi and labels.numel() != num_seqs:
            raise InputError(f"labels has shape {_shape(labels)}; expected ({num_seqs},), one label per sequence")
        if not labels.dtype.is_floating_point and config.problem_type != "regression" and config.num_labels > 1:
            _check_int("labels", labels, labels=True)                 # classes: long ids below num_labels
            bad = (labels < 0) | (labels >= config.num_labels)
            if bad.any():
                where = "the label of " + _where(bad.reshape(-1), "sequence")
                raise InputError(
                    f"{where} is {labels[bad][0].item()} but this classifier has num_labels "
                    f"{config.num_labels} (classes 0..{config.num_labels - 1}). Load it with "
                    f"num_labels=<number of classes in your data> and reinit_head=True, or map the labels.",
                    cli=f"{where} is {labels[bad][0].item()} but this classifier has "
                        f"{config.num_labels} classes; train a new head with --new-head, or map the labels.")
    else:
        raise InputError(f"labels were given but this model has head {head!r}, which computes no loss from them; "
                         "load it with head='mlm', 'pretraining', 'classification' or 'token-classification'")


def check_pair_labels(name: str, labels, n: int) -> None:
    if labels is None:
        return
    _check_int(name, labels, labels=True)
    if labels.shape != (n,):
        raise InputError(f"{name} has shape {_shape(labels)}; expected ({n},), one 0/1 label per sequence pair")
    bad = (labels < 0) | (labels > 1)
    if bad.any():
        raise InputError(f"{name} {_where(bad)} is {labels[bad][0].item()}; expected 0 or 1")
