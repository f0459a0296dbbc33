"""Text tokenizers with one interface: `encode(texts) -> (ids int64[B, L], mask bool[B, L])`.

Every prompt is padded to the SAME fixed length `max_length`. That costs a few wasted positions but makes a
sample's logits independent of which other prompts share its batch, so the log-probs recorded at rollout
time equal the ones recomputed for the RL loss, and the ONNX graph sees one shape.

- `ByteTokenizer`: UTF-8 bytes + 3 specials. Offline, no vocabulary file, used by the tiny preset.
- `WordTokenizer`: lower-cased words hashed into a fixed number of buckets. Offline and vocabulary-free like
  bytes, but a word is one token: a tiny network trained from scratch reads "blue cube" as two symbols
  instead of learning to spell, and the prompt is ~4x shorter (the text was 43 % of tiny96's tokens).
- `HFTokenizer`: the backbone's own tokenizer (transformers), loaded from a local directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class TextTokenizer(Protocol):
    max_length: int
    vocab_size: int

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def to_dict(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """ids: 0 = pad, 1 = bos, 2 = eos, 3 + b for byte b. Truncates (keeping BOS, dropping EOS) when too long."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    vocab_size = 256 + OFFSET

    def __init__(self, max_length: int) -> None:
        if max_length < 4:
            raise ValueError(f"ByteTokenizer max_length={max_length}: must be >= 4")
        self.max_length = max_length
        self._warned = False

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings; wrap a single prompt as [prompt]")
        ids = np.full((len(texts), self.max_length), self.PAD, dtype=np.int64)
        for i, text in enumerate(texts):
            seq = [self.BOS, *(b + self.OFFSET for b in text.encode("utf-8")), self.EOS]
            if len(seq) > self.max_length:
                if not self._warned:
                    log.warning(
                        "prompt of %d tokens truncated to max_text_len=%d: %r",
                        len(seq),
                        self.max_length,
                        text,
                    )
                    self._warned = True
                seq = seq[: self.max_length]
            ids[i, : len(seq)] = seq
        return ids, ids != self.PAD

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.OFFSET for i in ids if int(i) >= self.OFFSET)
        return data.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "byte", "max_length": self.max_length}


class WordTokenizer:
    """ids: 0 = pad, 1 = bos, 2 = eos, 3 + bucket for a word. Words are runs of letters/digits, lower-cased;
    punctuation marks are words of their own. The bucket is SHA-256 of the word modulo `buckets`, so ids are the
    same in every process and Python version (never the salted built-in `hash`). Collisions are possible but
    rare at 4096 buckets for an instruction vocabulary of a few hundred words."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    _WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, max_length: int, buckets: int = 4096) -> None:
        if max_length < 4:
            raise ValueError(f"WordTokenizer max_length={max_length}: must be >= 4")
        if buckets < 16:
            raise ValueError(f"WordTokenizer buckets={buckets}: must be >= 16")
        self.max_length = max_length
        self.buckets = buckets
        self.vocab_size = buckets + self.OFFSET
        self._warned = False

    def word_id(self, word: str) -> int:
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        return self.OFFSET + int.from_bytes(digest[:8], "little") % self.buckets

    def words(self, text: str) -> list[str]:
        return self._WORD.findall(text.lower())

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings; wrap a single prompt as [prompt]")
        ids = np.full((len(texts), self.max_length), self.PAD, dtype=np.int64)
        for i, text in enumerate(texts):
            seq = [self.BOS, *(self.word_id(w) for w in self.words(text)), self.EOS]
            if len(seq) > self.max_length:
                if not self._warned:
                    log.warning(
                        "prompt of %d words truncated to max_text_len=%d: %r", len(seq), self.max_length, text
                    )
                    self._warned = True
                seq = seq[: self.max_length]
            ids[i, : len(seq)] = seq
        return ids, ids != self.PAD

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "max_length": self.max_length, "buckets": self.buckets}


class HFTokenizer:
    """The backbone's tokenizer (e.g. Llama-2's SentencePiece for oft), right-padded to `max_length`.

    Loaded with `local_files_only` unless `allow_download` is set: nothing downloads at run time by accident.
    """

    def __init__(self, source: str | Path, max_length: int, *, allow_download: bool = False) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the 'hf' tokenizer needs transformers: pip install 'svrl[hf]'") from exc
        self.tok = AutoTokenizer.from_pretrained(str(source), local_files_only=not allow_download)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
        self.max_length = max_length
        self.vocab_size = len(self.tok)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings; wrap a single prompt as [prompt]")
        out = self.tok(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            padding_side="right",
        )
        return out["input_ids"].astype(np.int64), out["attention_mask"].astype(bool)

    def save(self, directory: Path) -> None:
        self.tok.save_pretrained(str(directory))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "hf", "max_length": self.max_length, "path": "tokenizer"}


def tokenizer_from_dict(data: dict[str, Any], ckpt_dir: Path | None = None) -> TextTokenizer:
    """Rebuild a tokenizer from `tokenizer.json` of a checkpoint (the hf files live in `ckpt/tokenizer/`)."""
    kind = data.get("type")
    if kind == "byte":
        return ByteTokenizer(int(data["max_length"]))
    if kind == "word":
        return WordTokenizer(int(data["max_length"]), int(data["buckets"]))
    if kind == "hf":
        if ckpt_dir is None:
            raise ValueError("an 'hf' tokenizer is stored as files: pass the checkpoint directory")
        return HFTokenizer(ckpt_dir / data["path"], int(data["max_length"]))
    raise ValueError(f"tokenizer.json: unknown type {kind!r} (expected 'byte', 'word' or 'hf')")


def tokenizer_to_json(tokenizer: TextTokenizer) -> str:
    return json.dumps(tokenizer.to_dict(), indent=2)
