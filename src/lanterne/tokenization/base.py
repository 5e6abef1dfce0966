"""What every tokenizer promises: text -> token ids -> text, and where each token came from.

Characters, words, byte-level BPE and WordPiece all share this small interface, so the
lecture's comparison (letters vs words vs sub-words) runs the same code on each.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

from lanterne.errors import TokenizerError, VocabularyFileError
from lanterne.files import atomic_write_text

FILE_FORMAT = "lanterne-tokenizer"
FILE_VERSION = 1


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, its text, and its span [start, end) in characters.

    `text` is what the token stands for; a byte-level token that holds only part of a
    UTF-8 character shows as U+FFFD. `start`/`end` index the original string, so
    `original[start:end]` is the text the token covers (for colouring).
    """

    id: int
    text: str
    start: int
    end: int


class Tokenizer(ABC):
    """Turns text into token ids and back. Subclasses set `kind` and implement the rest."""

    kind: ClassVar[str]
    chat_template: str | None = None  # a chat model's Jinja template for conversations, from its file

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids this tokenizer can produce (ids are 0 .. vocab_size - 1)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids."""

    @abstractmethod
    def tokens(self, text: str) -> list[Token]:
        """The tokens of `text` with their ids, texts and character spans."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, as JSON-ready data."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        """Rebuild a tokenizer from `to_dict()` output."""

    @property
    def lossless(self) -> bool:
        """True when decode(encode(text)) == text for every string."""
        return False

    def save(self, path: str | os.PathLike) -> None:
        """Write this tokenizer to one JSON file (atomically)."""
        document = {"format": FILE_FORMAT, "version": FILE_VERSION, "kind": self.kind, **self.to_dict()}
        if getattr(self, "chat_template", None):
            document["chat_template"] = self.chat_template  # how a chat model lays out a conversation (see chat.py)
        atomic_write_text(path, json.dumps(document, ensure_ascii=False, separators=(",", ":")))

    def check_ids(self, ids: Iterable[int]) -> list[int]:
        """Return `ids` as a list, or raise TokenizerError naming the first id out of range."""
        ids = list(ids)
        size = self.vocab_size
        for token_id in ids:
            if not isinstance(token_id, int) or not 0 <= token_id < size:
                raise TokenizerError(
                    f"token id {token_id!r} is not in this {self.kind} vocabulary (valid ids: 0..{size - 1})"
                )
        return ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def read_json_document(path: str | os.PathLike) -> Any:
    """The parsed JSON of a tokenizer file, or VocabularyFileError if it is corrupt or truncated."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VocabularyFileError(
            f"tokenizer file is corrupt or truncated: {path} ({error}); train or download it again"
        ) from None


def read_lanterne_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a Lanterne tokenizer JSON file, or raise VocabularyFileError saying why not."""
    return check_lanterne_document(read_json_document(path), path)


def check_lanterne_document(document: Any, path: str | os.PathLike) -> dict[str, Any]:
    """`document` (parsed JSON) if it is a Lanterne tokenizer file of a version this Lanterne reads."""
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise VocabularyFileError(f"not a Lanterne tokenizer file: {path} (expected \"format\": \"{FILE_FORMAT}\")")
    if document.get("version") != FILE_VERSION:
        raise VocabularyFileError(
            f"tokenizer file {path} has version {document.get('version')!r}; this Lanterne reads version {FILE_VERSION}"
        )
    return document
