"""Tokenizing by letters: every character of the corpus is one token.

A tiny vocabulary and long sequences. Lossy on characters never seen in training: they all
become the one `<unk>` id, and decode gives `<unk>`'s text back, not the original character.
"""

from __future__ import annotations

from typing import Any, Iterable

from lanterne.errors import TokenizerError
from lanterne.tokenization.base import Token, Tokenizer

UNKNOWN = "<unk>"


class CharTokenizer(Tokenizer):
    """One id per character seen in training (sorted), plus `<unk>` as the last id."""

    kind = "char"

    def __init__(self, characters: Iterable[str], unknown: str = UNKNOWN) -> None:
        self.characters = sorted(set(characters))
        if any(len(char) != 1 for char in self.characters):
            raise TokenizerError("a character vocabulary holds single characters only")
        self.unknown = unknown
        self.id_of = {char: index for index, char in enumerate(self.characters)}
        self.unknown_id = len(self.characters)

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        """The vocabulary of `text`'s distinct characters."""
        if not text:
            raise TokenizerError("cannot train a character tokenizer on empty text")
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.characters) + 1

    def encode(self, text: str) -> list[int]:
        id_of, unknown_id = self.id_of, self.unknown_id
        return [id_of.get(char, unknown_id) for char in text]

    def decode(self, ids: Iterable[int]) -> str:
        ids = self.check_ids(ids)
        return "".join(self.characters[i] if i != self.unknown_id else self.unknown for i in ids)

    def tokens(self, text: str) -> list[Token]:
        return [
            Token(token_id, char if token_id != self.unknown_id else self.unknown, index, index + 1)
            for index, (char, token_id) in enumerate(zip(text, self.encode(text)))
        ]

    def unknown_rate(self, text: str) -> float:
        """Fraction of the characters of `text` that are not in the vocabulary (0.0 for empty text)."""
        return sum(char not in self.id_of for char in text) / len(text) if text else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"characters": "".join(self.characters), "unknown": self.unknown}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        return cls(data["characters"], data.get("unknown", UNKNOWN))
