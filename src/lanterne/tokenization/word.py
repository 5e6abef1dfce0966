"""Tokenizing by words: each word or punctuation mark is one token.

A large vocabulary (one id per word kept), short sequences, and words never seen in training
all become `<unk>`. Spaces are not tokens, so decode puts them back by a simple rule.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import regex

from lanterne.errors import TokenizerError
from lanterne.tokenization.base import Token, Tokenizer

UNKNOWN = "<unk>"
# A word is a run of letters, marks and digits (Unicode-aware: "été", "naïve", "東京");
# any other visible character stands alone ("l'homme" -> "l", "'", "homme").
WORD_PATTERN = r"[\p{L}\p{M}\p{N}_]+|[^\s\p{L}\p{M}\p{N}_]"
# Punctuation that is written against the previous word when decoding.
_NO_SPACE_BEFORE = set(".,;:!?)]}»'’%")
_NO_SPACE_AFTER = set("([{«'’")


class WordTokenizer(Tokenizer):
    """One id per vocabulary word (most frequent first), `<unk>` (id 0) for the rest."""

    kind = "word"

    def __init__(self, words: Iterable[str], unknown: str = UNKNOWN) -> None:
        self.unknown = unknown
        self.words = [unknown] + [word for word in words if word != unknown]
        self.id_of = {word: index for index, word in enumerate(self.words)}
        self.unknown_id = 0
        if len(self.id_of) != len(self.words):
            raise TokenizerError("a word vocabulary lists each word once")
        self._regex = regex.compile(WORD_PATTERN)

    @classmethod
    def train(cls, text: str, max_size: int | None = None, min_count: int = 1) -> "WordTokenizer":
        """Keep the words of `text` seen at least `min_count` times, the `max_size - 1` most frequent.

        Ties in frequency are broken alphabetically, so training is deterministic.
        """
        if max_size is not None and max_size < 2:
            raise TokenizerError(f"max_size {max_size} leaves no room for words besides <unk>; use at least 2")
        if min_count < 1:
            raise TokenizerError(f"min_count must be at least 1, not {min_count}")
        counts = Counter(regex.findall(WORD_PATTERN, text))
        if not counts:
            raise TokenizerError("cannot train a word tokenizer: the text has no words")
        ranked = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max_size - 1]
        return cls(ranked)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def split(self, text: str) -> list[str]:
        """The words and punctuation marks of `text`, before looking them up."""
        return self._regex.findall(text)

    def encode(self, text: str) -> list[int]:
        id_of = self.id_of
        return [id_of.get(word, 0) for word in self._regex.findall(text)]

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self.words[i] for i in self.check_ids(ids)]
        text = ""
        for piece in pieces:
            if text and piece[0] not in _NO_SPACE_BEFORE and text[-1] not in _NO_SPACE_AFTER:
                text += " "
            text += piece
        return text

    def tokens(self, text: str) -> list[Token]:
        result = []
        for match in self._regex.finditer(text):
            token_id = self.id_of.get(match.group(), 0)
            result.append(Token(token_id, self.words[token_id], match.start(), match.end()))
        return result

    def unknown_rate(self, text: str) -> float:
        """Out-of-vocabulary rate: the fraction of the words of `text` that become `<unk>`."""
        words = self.split(text)
        return sum(word not in self.id_of for word in words) / len(words) if words else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"unknown": self.unknown, "words": self.words[1:]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordTokenizer":
        return cls(data["words"], data.get("unknown", UNKNOWN))
