"""A thin layer over the `tokenizers` library: load a checkpoint's tokenizer, add the family's special tokens and
pair template, pad and truncate, and return the tensors the model expects.

Sources, in order of preference: `tokenizer.json`; WordPiece `vocab.txt` (BERT); byte-level BPE `vocab.json` +
`merges.txt` (RoBERTa).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from .arguments import count_arg, path_arg, whole_number
from .errors import BertscopeError, InputError, TokenizerError, UsageError
from .families import FAMILIES, Family, family as family_record
from .io import atomic_write, write_json


# padding= as Hugging Face spells it -> how rows are padded
PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: False, "do_not_pad": False}


class Tokenizer:
    """Callable like the reference tokenizers: `tok(texts, pairs)` -> dict of (B, L) tensors.

    Pairs follow the family's template: `[CLS] a [SEP] b [SEP]` with segments 0 / 1 (BERT, ALBERT),
    `<s> a </s></s> b </s>` with segment 0 throughout (RoBERTa, whose model has one segment).
    """

    def __init__(self, backend: Backend, family: Family | str, max_length: int = 512, specials: dict | None = None,
                 settings: dict | None = None):
        self.backend = backend
        self.family = family = family_record(family)
        self.max_length = max_length
        self.specials = dict(specials or family.specials)
        # the folder's tokenizer_config.json, written back by save (for the reference: its model_max_length,
        # padding side, bos/eos and added special tokens), and the padding / truncation tokenizer.json bakes in:
        # we apply ours per call, and give theirs back to the saved file
        self.settings = dict(settings or {})
        self.folder: Path | None = None          # the folder it was read from (load_tokenizer), if any
        self._baked = backend.padding, backend.truncation
        backend.no_padding()
        backend.no_truncation()
        missing = [t for t in (self.specials["cls"], self.specials["sep"], self.specials["pad"])
                   if backend.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"the vocabulary has no {', '.join(missing)} token, which a {family.title} model "
                                 "needs")
        if backend.post_processor is None:
            backend.post_processor = _template(family, self.specials, backend)

    # ---- ids of special tokens -----------------------------------------------------------------------------------
    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def pad_token_id(self) -> int:
        return self.backend.token_to_id(self.specials["pad"])

    @property
    def cls_token_id(self) -> int:
        return self.backend.token_to_id(self.specials["cls"])

    @property
    def sep_token_id(self) -> int:
        return self.backend.token_to_id(self.specials["sep"])

    @property
    def mask_token(self) -> str:
        return self.specials["mask"]

    @property
    def mask_token_id(self) -> int | None:
        return self.backend.token_to_id(self.specials["mask"])

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # ---- encoding --------------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def encode_batch(self, texts, pairs=None, max_length: int | None = None, truncation: bool = True,
                     stride: int = 0):
        """The raw `tokenizers.Encoding`s (ids, type ids, word ids, offsets), truncated but not padded; with a
        stride, what truncation cuts off comes back as `.overflowing` windows overlapping by `stride` tokens."""
        if isinstance(texts, str):
            texts = [texts]
        if texts is None or not hasattr(texts, "__iter__"):
            raise InputError(f"texts: expected a string or a list of strings, got {type(texts).__name__}")
        texts = list(texts)
        if not texts:
            raise InputError("no texts to tokenize")
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise InputError(f"got {len(texts)} texts but {len(pairs)} pair texts; give one second segment per "
                                 "text")
            inputs = list(zip(texts, pairs))
        else:
            inputs = texts
        for i, t in enumerate(texts + (pairs or [])):
            if not isinstance(t, str):
                raise InputError(f"text {i % len(texts)} is a {type(t).__name__}; expected str")
        least = self.least_length(pairs is not None)
        if max_length is not None and (whole_number(max_length) is None or max_length < least):
            # (below the special tokens' count the tokenizers library silently stops truncating; at it, no text)
            raise InputError(f"max_length {max_length!r}: expected an integer of at least {least} ("
                             + self.room_needed(pairs is not None) + ")")
        max_length = None if max_length is None else int(max_length)
        if truncation:
            self.backend.enable_truncation(max_length or self.max_length, stride=stride, strategy="longest_first")
        try:
            return self.backend.encode_batch(inputs)
        finally:
            self.backend.no_truncation()

    def least_length(self, pairs: bool = False) -> int:
        """The shortest sequence that keeps some text: the special tokens, and a token of each text."""
        return self.backend.num_special_tokens_to_add(is_pair=pairs) + (2 if pairs else 1)

    def room_needed(self, pairs: bool = False) -> str:
        specials = self.backend.num_special_tokens_to_add(is_pair=pairs)
        return (f"the special tokens of a pair take {specials}, and each of its two texts needs at least one" if pairs
                else f"the special tokens take {specials}, and a text needs at least one")

    def __call__(self, texts, pairs=None, *, max_length: int | None = None, truncation: bool = True,
                 padding: bool | str = True, return_tensors: str | None = "pt", return_word_ids: bool = False):
        """Tokenize a text or a list of texts (optionally with second segments `pairs`).

        truncation: cut to max_length (default: the most the model's positions allow). padding: True/"longest"
        pads to the longest in the batch, "max_length" to max_length, False returns unpadded lists.
        Returns input_ids, attention_mask, token_type_ids (and word_ids, -1 on special and pad tokens)."""
        if not isinstance(padding, (bool, str)) or padding not in PADDING:
            raise UsageError(f"padding={padding!r}: use True or 'longest' (to the longest text), 'max_length' (to "
                             "max_length), or False / 'do_not_pad'")
        padding = PADDING[padding]
        if return_tensors not in ("pt", None):
            raise UsageError(f"return_tensors={return_tensors!r}: bertscope returns torch tensors ('pt') or, with "
                             "None, lists of ids")
        length = self.max_length if max_length is None else max_length
        encodings = self.encode_batch(texts, pairs, length, truncation)
        rows = {"input_ids": [e.ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings],
                "token_type_ids": [e.type_ids if self.family.segments else [0] * len(e.ids) for e in encodings]}
        if return_word_ids:
            rows["word_ids"] = [[-1 if w is None else w for w in e.word_ids] for e in encodings]
        if not padding:
            if return_tensors is None or len({len(r) for r in rows["input_ids"]}) == 1:
                return rows if return_tensors is None else {k: torch.tensor(v) for k, v in rows.items()}
            raise UsageError("sequences of different lengths cannot form one tensor without padding; "
                             "pass padding=True or return_tensors=None")
        longest = max(len(r) for r in rows["input_ids"])
        if padding == "max_length" and longest > length:     # truncation=False left a text longer than the width
            i = next(i for i, r in enumerate(rows["input_ids"]) if len(r) == longest)
            raise UsageError(f"text {i} has {longest} tokens, more than max_length={length} that padding='max_length' "
                             "pads to, and truncation=False keeps them all: allow truncation, raise max_length, or "
                             "pad to the longest (padding=True)")
        width = length if padding == "max_length" else longest
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "word_ids": -1}
        padded = {k: [r + [fill[k]] * (width - len(r)) for r in v] for k, v in rows.items()}
        if return_tensors is None:
            return padded
        return {k: torch.tensor(v, dtype=torch.long) for k, v in padded.items()}

    # ---- saving ----------------------------------------------------------------------------------------------------
    def save(self, folder, overwrite: bool = False) -> Path:
        """Write tokenizer.json and tokenizer_config.json (model_max_length, special tokens, and the class that makes
        transformers read tokenizer.json unchanged). A model's folder whose own tokenizer has another vocabulary is
        refused unless `overwrite`: its embeddings are rows of that tokenizer's ids."""
        folder = Path(folder)
        if not isinstance(overwrite, bool):
            raise UsageError(f"overwrite={overwrite!r}: expected True or False")
        if not overwrite and (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
            try:
                theirs = Backend.from_file(str(folder / "tokenizer.json")).get_vocab()
            except Exception:                            # unreadable: not a tokenizer to keep
                theirs = None
            if theirs is not None and theirs != self.backend.get_vocab():
                said = (f"{folder} holds a model whose tokenizer has another vocabulary ({len(theirs):,} tokens; this "
                        f"one {self.vocab_size:,}): its embeddings are rows of that one's ids. Save this tokenizer "
                        "elsewhere, or pass ")
                raise TokenizerError(said + "overwrite=True to replace it", cli=said + "--overwrite to replace it")
        atomic_write(folder / "tokenizer.json", self._save_backend)
        # tokenizer_class: transformers reads tokenizer.json as it is (its BertTokenizer would rebuild the
        # normaliser from do_lower_case and drop the NFKC step of a Chinese vocabulary); that class feeds the model
        # model_input_names alone, so they are named (token_type_ids where the family has segments).
        # do_lower_case: what tokenizer.json does, for readers of the vocabulary files alone (load_tokenizer's own).
        # The rest of the source folder's settings are kept; auto_map (a class of its own) and tokenizer_file (a
        # path of the source) would not describe what is written here.
        lowers = self.backend.normalizer is not None and self.backend.normalizer.normalize_str("A") == "a"
        kept = {k: v for k, v in self.settings.items() if k not in ("auto_map", "tokenizer_file")}
        length = kept.get("model_max_length")                      # the source's own limit, not a placeholder
        length = length if type(length) is int and 0 < length <= MAX_REAL_LENGTH else self.max_length
        names = kept.get("model_input_names")
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            names = ["input_ids", "attention_mask"]
        if self.family.segments and "token_type_ids" not in names:       # a pair's second segment reaches the model
            names = [names[0], "token_type_ids", *names[1:]]
        cfg = {**kept, "model_max_length": length, "bertscope_family": self.family.name,
               "tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": lowers, "model_input_names": names,
               "cls_token": self.specials["cls"], "sep_token": self.specials["sep"], "pad_token": self.specials["pad"],
               "unk_token": self.specials["unk"], "mask_token": self.specials["mask"]}
        write_json(folder / "tokenizer_config.json", cfg)
        own = self.folder is not None and self.folder.resolve() == folder.resolve()
        for name in () if own else OTHER_TOKENIZER_FILES:   # another tokenizer's, left by an --overwrite: readers
            with contextlib.suppress(FileNotFoundError):      # of the classic files would take them for this one's
                (folder / name).unlink()                      # (in its own folder they are its own: kept)
        return folder

    def _save_backend(self, path) -> None:
        """tokenizer.json with the padding and truncation it was read with (none for ours)."""
        padding, truncation = self._baked
        try:
            if padding:
                self.backend.enable_padding(**padding)
            if truncation:
                self.backend.enable_truncation(**truncation)
            self.backend.save(str(path))
        finally:
            self.backend.no_padding()
            self.backend.no_truncation()

    def check_fits(self, config, where: str = "the tokenizer") -> None:
        """A tokenizer whose ids reach past the model's vocabulary is refused when the two are put together."""
        if self.vocab_size > config.vocab_size:
            raise TokenizerError(
                f"{where} has {self.vocab_size} tokens (ids 0..{self.vocab_size - 1}) but the model's vocabulary "
                f"has {config.vocab_size} rows: ids {config.vocab_size} and above have no embedding. Use the "
                "tokenizer saved with this model, or a model whose vocab_size is at least the tokenizer's")
        if self.family is not config.family:
            raise TokenizerError(f"{where} is a {self.family.title} tokenizer but the model is {config.family.title}; "
                                 "their special tokens and pair templates differ: use the model's own tokenizer")
        if config.family.positions_after_padding and self.pad_token_id != config.pad_token_id:
            raise TokenizerError(f"{where} pads with id {self.pad_token_id} ({self.specials['pad']!r}) but the model's "
                                 f"config.json has pad_token_id {config.pad_token_id}: a {config.family.title} model "
                                 "numbers its positions from the pad id, so every position would shift. Make the two "
                                 "agree (the tokenizer the model was trained with has its pad id)")


def _template(family: Family, s: dict, backend: Backend):
    cls, sep = (s["cls"], backend.token_to_id(s["cls"])), (s["sep"], backend.token_to_id(s["sep"]))
    if not family.segments:                       # <s> A </s></s> B </s>, one segment
        return processors.RobertaProcessing(sep, cls, trim_offsets=True, add_prefix_space=False)
    return processors.TemplateProcessing(
        single=f"{cls[0]} $A {sep[0]}", pair=f"{cls[0]} $A {sep[0]} $B:1 {sep[0]}:1", special_tokens=[cls, sep])


# A model_max_length above this is a placeholder for "no limit" (the reference writes 1e30 for some tokenizers)
MAX_REAL_LENGTH = 100_000


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
    return d if isinstance(d, dict) else {}


def recorded_family(folder) -> str | None:
    """The family a tokenizer folder names (config.json's model_type, or what `bertscope tokenizer train` recorded
    in tokenizer_config.json), when it names one bertscope knows; None otherwise."""
    if not isinstance(folder, (str, os.PathLike)) or not Path(folder).is_dir():
        return None
    named = _read_json(Path(folder) / "config.json").get("model_type") or \
        _read_json(Path(folder) / "tokenizer_config.json").get("bertscope_family")
    return named if isinstance(named, str) and named in FAMILIES else None


def load_tokenizer(folder, family: str | None = None, max_length: int | None = None) -> Tokenizer:
    """The tokenizer of a checkpoint folder. The family (special tokens, pair template) comes from config.json's
    model_type, or from which vocabulary files are present; max_length defaults to what the model's position table
    allows (512 for BERT, 512 of RoBERTa's 514 rows)."""
    path_arg("folder", folder, what="a folder")
    max_length = None if max_length is None else count_arg("max_length", max_length, least=2, what="tokens")
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerError(f"{folder}: not a folder; expected a checkpoint folder with tokenizer.json, vocab.txt, "
                             "or vocab.json + merges.txt")
    tok_cfg = _read_json(folder / "tokenizer_config.json")
    model_cfg = _read_json(folder / "config.json")
    recorded = model_cfg.get("model_type") or tok_cfg.get("bertscope_family")
    if recorded is not None and not isinstance(recorded, str):
        raise TokenizerError(f"{folder}: model_type {recorded!r} (config.json or tokenizer_config.json) is not a "
                             f"family name; expected one of {', '.join(FAMILIES)}")
    if family is not None and recorded in FAMILIES and family_record(recorded) is not family_record(family):
        asked, own = family_record(family), family_record(recorded)
        a = "an" if asked.title[0] in "AEIOU" else "a"
        raise TokenizerError(f"{folder} holds a {own.title} tokenizer (its "
                             f"{'config.json' if model_cfg.get('model_type') else 'tokenizer_config.json'} says so), "
                             f"but {a} {asked.title} one was asked for: their special tokens and pair templates "
                             f"differ. Train {a} {asked.title} tokenizer (bertscope tokenizer train --family "
                             f"{asked.name}), or leave the family out")
    family = family or recorded
    if family is None:
        family = "roberta" if (folder / "vocab.json").exists() else "bert"
    if not isinstance(family, Family) and family not in FAMILIES:
        raise TokenizerError(f"{folder}: model_type {family!r} is not a BERT-family model; bertscope reads "
                             f"{', '.join(FAMILIES)}")
    family = family_record(family)
    specials = dict(family.specials)
    for key in specials:
        value = tok_cfg.get(f"{key}_token")
        if isinstance(value, dict):  # {"content": "[CLS]", ...} as some versions write it
            value = value.get("content")
        if isinstance(value, str):
            specials[key] = value

    if (folder / "tokenizer.json").exists():
        try:
            backend = Backend.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the Rust side reports parse errors as plain Exception
            raise TokenizerError(f"{folder / 'tokenizer.json'}: cannot be read by the tokenizers library ({e})") \
                from None
    elif (folder / "vocab.txt").exists():
        backend = _wordpiece(folder / "vocab.txt", specials, tok_cfg)
    elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        backend = _byte_level_bpe(folder / "vocab.json", folder / "merges.txt", specials,
                                  tok_cfg.get("do_lower_case") is True)
    elif (folder / "vocab.json").exists() or (folder / "merges.txt").exists():
        has, lacks = ("vocab.json", "merges.txt") if (folder / "vocab.json").exists() else ("merges.txt", "vocab.json")
        raise TokenizerError(f"{folder}: has {has} but no {lacks}; a byte-level BPE tokenizer needs both (copy "
                             f"{lacks} from the model it came from), or give tokenizer.json")
    elif piece := next((n for n in ("spiece.model", "sentencepiece.bpe.model") if (folder / n).exists()), None):
        raise TokenizerError(f"{folder}: has {piece} (SentencePiece) but no tokenizer.json; bertscope reads "
                             "tokenizer.json, vocab.txt or vocab.json + merges.txt. Write tokenizer.json from it once "
                             "with the reference (pip install transformers sentencepiece): python -c \"from "
                             f"transformers import AutoTokenizer as T; T.from_pretrained('{folder}')"
                             f".save_pretrained('{folder}')\"")
    else:
        raise TokenizerError(f"{folder}: no tokenizer found; expected tokenizer.json, vocab.txt (WordPiece) or "
                             "vocab.json + merges.txt (byte-level BPE)")

    if max_length is None:
        if isinstance(model_cfg.get("max_position_embeddings"), int):
            pad = model_cfg.get("pad_token_id", family.config_defaults.get("pad_token_id", 0))
            max_length = model_cfg["max_position_embeddings"] - family.position_offset(pad if isinstance(pad, int)
                                                                                      else 0)
        else:
            max_length = tok_cfg.get("model_max_length", 512)
            if type(max_length) is not int or not 0 < max_length <= MAX_REAL_LENGTH:  # "very large" placeholders
                max_length = 512
    else:                                            # asked for: what a saved tokenizer_config.json says too
        tok_cfg = {k: v for k, v in tok_cfg.items() if k != "model_max_length"}
    try:
        tok = Tokenizer(backend, family, max_length=max_length, specials=specials, settings=tok_cfg)
        tok.folder = folder
        return tok
    except TokenizerError as e:                      # a special token that is not in the vocabulary: say whose
        named = [f"{k}_token" for k, v in specials.items() if tok_cfg.get(f"{k}_token") is not None
                 and backend.token_to_id(v) is None]
        raise TokenizerError(f"{folder}: {e}" + (f" (its tokenizer_config.json's {', '.join(named)})" if named
                                                 else "")) from None


def _wordpiece(vocab_path: Path, s: dict, tok_cfg: dict) -> Backend:
    vocab = {}
    try:
        with open(vocab_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                token = line.rstrip("\n")
                if token in vocab:
                    continue
                vocab[token] = i
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{vocab_path}: not UTF-8 text (byte {e.start}); a WordPiece vocab.txt holds one token "
                             "a line, in UTF-8") from None
    except IsADirectoryError:
        raise TokenizerError(f"{vocab_path}: is a folder; expected the WordPiece vocabulary file") from None
    if s["unk"] not in vocab:
        raise TokenizerError(f"{vocab_path}: no {s['unk']} token in the vocabulary")
    backend = Backend(models.WordPiece(vocab, unk_token=s["unk"], max_input_chars_per_word=100))
    lowercase = tok_cfg.get("do_lower_case", True)
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=tok_cfg.get("strip_accents"), lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens([t for t in s.values() if t in vocab])
    return backend


def _byte_level_bpe(vocab_path: Path, merges_path: Path, s: dict, lowercase: bool = False) -> Backend:
    try:
        bpe = models.BPE.from_file(str(vocab_path), str(merges_path))
    except Exception as e:
        raise TokenizerError(f"{vocab_path} / {merges_path}: not a byte-level BPE vocabulary ({e})") from None
    backend = Backend(bpe)
    if lowercase:                               # (a RoBERTa vocabulary trained lower-cased: tokenizer_config.json)
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # As the reference: "<mask>" absorbs the space before it, so "The <mask> sat" masks the word " sat"'s slot.
    backend.add_special_tokens([AddedToken(t, lstrip=(t == s["mask"])) for t in s.values()
                                if backend.token_to_id(t) is not None])
    return backend


def train_tokenizer(files, family: Family | str, vocab_size: int, lowercase: bool | None = None, min_frequency: int = 2,
                    max_length: int = 512, text_column: str | None = None) -> Tokenizer:
    """Train the family's kind of tokenizer on files: plain text (a text a line), or the `text_column` of .tsv /
    .csv / .jsonl tables (default: "text", "sentence", or the one column that is not a
    label or an id). See train_tokenizer_on."""
    from .data import iter_rows
    files = [Path(f) for f in files]
    for f in files:
        if not f.is_file():
            raise TokenizerError(f"{f}: " + ("is a folder; expected a text file" if f.is_dir() else "no such file"))
    texts = (text for f in files for _, text, _, _ in iter_rows(f, text_column=text_column))
    return train_tokenizer_on(texts, family, vocab_size, lowercase, min_frequency, max_length,
                              what=", ".join(map(str, files)))


def train_tokenizer_on(texts, family: Family | str, vocab_size: int, lowercase: bool | None = None,
                       min_frequency: int = 2, max_length: int = 512, what: str = "the texts") -> Tokenizer:
    """Train the family's kind of tokenizer with the `tokenizers` library on an iterable of texts: WordPiece (BERT),
    byte-level BPE (RoBERTa) or Unigram with SentencePiece-style "▁" word marks (ALBERT), with the family's special
    tokens.

    WordPiece is BERT's, Chinese included: NFKC first (full-width digits, Latin letters and punctuation become
    their half-width forms, also when encoding, since the step is in tokenizer.json), then BERT's normaliser, which
    puts every CJK character apart, so that each is a token of its own. Every printable ASCII character is in the
    vocabulary, and every ASCII letter and digit also as a `##` continuation, as in BERT's Chinese vocabulary: no
    Latin word of held-out text becomes [UNK]. min_frequency applies to merges: every character seen is kept.
    lowercase: None is the family's own way (BERT and ALBERT lower-case, RoBERTa keeps case); True lower-cases a
    RoBERTa tokenizer too (a Lowercase step in its tokenizer.json)."""
    import string

    from tokenizers import trainers
    if not isinstance(family, Family) and family not in FAMILIES:
        raise TokenizerError(f"family {family!r}: use {', '.join(FAMILIES)}")
    family = family_record(family)
    if lowercase is None:
        lowercase = family.tokenizer != "bpe"
    s = family.specials
    ascii_chars = [c for c in string.printable if not c.isspace() and not (lowercase and c.isupper())]
    if family.tokenizer == "wordpiece":
        specials = [s["pad"], s["unk"], s["cls"], s["sep"], s["mask"]]
        backend = Backend(models.WordPiece(unk_token=s["unk"]))
        backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.BertNormalizer(lowercase=lowercase)])
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                            special_tokens=specials, initial_alphabet=ascii_chars)
    elif family.tokenizer == "bpe":
        specials = [s["cls"], s["pad"], s["sep"], s["unk"], s["mask"]]        # <s>=0 <pad>=1 </s>=2 as RoBERTa
        backend = Backend(models.BPE())
        if lowercase:
            backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:                                                                      # unigram, SentencePiece-style
        specials = [s["pad"], s["unk"], s["cls"], s["sep"], s["mask"]]        # <pad>=0 <unk>=1 [CLS]=2 ...
        backend = Backend(models.Unigram())
        steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
                 normalizers.StripAccents()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=s["unk"],
                                          show_progress=False)
    seen = [0]
    try:
        backend.train_from_iterator(_batches(texts, seen), trainer)
    except BertscopeError:     # a bad row of the files, raised while the trainer read them
        raise
    except Exception as e:     # the Rust side reports its failures as a plain Exception
        hint = ("; a Unigram vocabulary holds every character of the corpus: raise --vocab-size above the number "
                "of distinct characters" if "not large enough" in str(e) else "")
        raise TokenizerError(f"{what}: cannot train a tokenizer on this text ({e}){hint}") from None
    if family.tokenizer == "wordpiece":
        vocab = backend.get_vocab(with_added_tokens=False)
        more = [f"##{c}" for c in ascii_chars if c.isalnum() and f"##{c}" not in vocab]
        if more:
            vocab.update({t: len(vocab) + k for k, t in enumerate(more)})
            backend.model = models.WordPiece(vocab, unk_token=s["unk"], continuing_subword_prefix="##")
    if family.tokenizer != "wordpiece":   # the mask takes the space before it, as the reference's RoBERTa and ALBERT
        backend.add_special_tokens([AddedToken(s["mask"], lstrip=True)])   # tokenizers: "a <mask>" -> "▁a", "<mask>"
    if not seen[0]:
        raise TokenizerError(f"{what}: no text to train a tokenizer on")
    return Tokenizer(backend, family, max_length=max_length)


def _batches(texts, seen: list, size: int = 1000):
    """Texts in lists of `size` (the trainer reads each list in parallel), counted in seen[0]."""
    batch = []
    for t in texts:
        seen[0] += 1
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def unknown_tokens(tok: Tokenizer, texts, top: int = 10) -> dict:
    """How much of `texts` the vocabulary cannot represent: {"texts", "tokens", "unknown" (tokens that are the unk
    token), "rate", "top": [(the text an unknown token stands for, count), ...] most frequent first}."""
    from collections import Counter
    unk = tok.specials["unk"]
    texts = list(texts)
    n = unknown = 0
    where = Counter()
    for start in range(0, len(texts), 1000):
        chunk = texts[start:start + 1000]
        for text, e in zip(chunk, tok.backend.encode_batch(chunk, add_special_tokens=False)):
            n += len(e.ids)
            for token, (a, b) in zip(e.tokens, e.offsets):
                if token == unk and text[a:b].strip() != unk:     # a literal "<unk>" in the text (WikiText's) is
                    unknown += 1                                  # the special token written out, not unknown
                    where[text[a:b]] += 1
    return {"texts": len(texts), "tokens": n, "unknown": unknown, "rate": unknown / n if n else 0.0,
            "top": where.most_common(top)}


# Files a folder's earlier tokenizer may have left; Tokenizer.save removes them (save_vocab_files writes this one's)
OTHER_TOKENIZER_FILES = ("special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                         "sentencepiece.bpe.model")


def save_vocab_files(tok: Tokenizer, folder) -> None:
    """The classic vocabulary files beside tokenizer.json: vocab.txt (WordPiece) or vocab.json + merges.txt (BPE)."""
    import shutil
    import tempfile
    folder = Path(folder)
    if tok.family.tokenizer not in ("wordpiece", "bpe"):
        return
    scratch = tempfile.mkdtemp(prefix=".vocab.", dir=folder)
    try:
        for name in tok.backend.model.save(scratch):      # written aside, then each file renamed into place
            atomic_write(folder / Path(name).name, lambda p, src=name: shutil.copyfile(src, p))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
