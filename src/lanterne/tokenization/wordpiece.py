"""WordPiece, as BERT tokenizes: each word split into the longest known pieces, '##' marking the rest.

After normalization and cutting into words (see `normalization`), each word is split left to
right, taking the longest vocabulary entry at each step. Ids match HuggingFace's BERT tokenizers.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import regex

from lanterne.errors import TokenizerError, VocabularyFileError
from lanterne.tokenization.base import Token, Tokenizer
from lanterne.tokenization.normalization import (
    NORMALIZATION_STEPS,
    PRE_TOKENIZERS,
    bert_normalization,
    normalize_with_origins,
    split_words,
)

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# -- the WordPiece model ------------------------------------------------------------------------


def word_pieces(
    word: str, vocab: dict[str, int], prefix: str = "##", longest_piece: int | None = None
) -> list[tuple[str, int, int]] | None:
    """Split `word` greedily into the longest vocabulary pieces, left to right: [(piece, start, end), ...].

    Pieces after the first are looked up with `prefix` ('##ing'). None when some part of the word
    matches no piece: BERT then gives the whole word one [UNK], not a partial split.
    `longest_piece` (characters, prefix included) only saves time; it never changes the result.
    """
    pieces = []
    start = 0
    while start < len(word):
        end = len(word) if longest_piece is None else min(len(word), start + longest_piece)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                pieces.append((piece, start, end))
                break
            end -= 1
        else:
            return None
        start = end
    return pieces


def join_word_pieces(pieces: Sequence[str], prefix: str = "##", cleanup: bool = True) -> str:
    """Text of WordPiece tokens, as HuggingFace's WordPiece decoder writes it.

    Pieces are joined with spaces, a piece starting with `prefix` is glued to the one before, and
    with `cleanup` the space before . ? ! , is removed (one piece at a time, as HuggingFace does).
    """
    parts = []
    for index, piece in enumerate(pieces):
        if index > 0:
            piece = piece.replace(prefix, "", 1) if piece.startswith(prefix) else " " + piece
        if cleanup:
            piece = _cleanup_spaces(piece)
        parts.append(piece)
    return "".join(parts)


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _cleanup_spaces(piece: str) -> str:
    for dirty, clean in _CLEANUPS:
        piece = piece.replace(dirty, clean)
    return piece


# -- the tokenizer ------------------------------------------------------------------------------


class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer: normalize, cut into words, split each word into WordPiece tokens.

    Not lossless: lower-casing, accent stripping and [UNK] (for a word with no matching pieces,
    or longer than `max_input_chars_per_word` characters) lose information, so decode gives
    'i love playing tennis.' for 'I love  playing Tennis.'. Special tokens ([CLS], [SEP], ...)
    written in the text become their ids, as in BERT; `encode` adds [CLS] ... [SEP] only when
    asked (`add_special_tokens=True`).
    """

    kind = "wordpiece"

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        normalization: Sequence[str] = bert_normalization(),
        pre_tokenizer: str = "bert",
        special_tokens: Sequence[str] | None = None,
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        decode_cleanup: bool = True,
    ) -> None:
        self.vocab = list(vocab)
        self.ids = {piece: token_id for token_id, piece in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab) or not all(isinstance(piece, str) and piece for piece in self.vocab):
            raise VocabularyFileError("WordPiece vocabulary has an empty or repeated entry; the file is corrupt")
        unknown_steps = [step for step in normalization if step not in NORMALIZATION_STEPS]
        if unknown_steps:
            raise TokenizerError(
                f"unknown normalization step {unknown_steps[0]!r}; use some of {', '.join(NORMALIZATION_STEPS)}"
            )
        if pre_tokenizer not in PRE_TOKENIZERS:
            raise TokenizerError(f"unknown pre-tokenizer {pre_tokenizer!r}; use one of {', '.join(PRE_TOKENIZERS)}")
        if special_tokens is None:
            special_tokens = [token for token in BERT_SPECIAL_TOKENS if token in self.ids]
        for token in [unk_token, *special_tokens]:
            if token not in self.ids:
                raise VocabularyFileError(f"WordPiece vocabulary lacks the token {token!r} it is told to use")
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.normalization = tuple(normalization)
        self.pre_tokenizer = pre_tokenizer
        self.special_tokens = list(special_tokens)
        self.cls_token = cls_token
        self.sep_token = sep_token
        self.decode_cleanup = decode_cleanup
        self._longest_piece = max(len(piece) for piece in self.vocab)
        # Longest first: where one special token begins with another, the longer one wins.
        ordered = sorted(self.special_tokens, key=len, reverse=True)
        self._special_regex = regex.compile("|".join(regex.escape(token) for token in ordered)) if ordered else None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- encoding -------------------------------------------------------------------------------

    def tokens(self, text: str) -> list[Token]:
        """The tokens of `text`; each span [start, end) indexes `text` itself, before normalization."""
        result: list[Token] = []
        position = 0
        for match in self._special_regex.finditer(text) if self._special_regex else ():
            result += self._segment_tokens(text[position : match.start()], position)
            result.append(Token(self.ids[match.group()], match.group(), match.start(), match.end()))
            position = match.end()
        result += self._segment_tokens(text[position:], position)
        return result

    def _segment_tokens(self, segment: str, offset: int) -> list[Token]:
        normalized, origins = normalize_with_origins(segment, self.normalization)
        result = []
        for word_start, word_end in split_words(normalized, self.pre_tokenizer):
            word = normalized[word_start:word_end]
            pieces = None
            if len(word) <= self.max_input_chars_per_word:
                pieces = word_pieces(word, self.ids, self.continuing_subword_prefix, self._longest_piece)
            if pieces is None:
                pieces = [(self.unk_token, 0, len(word))]
            for piece, start, end in pieces:
                # Reordered or expanded characters may map back out of order: cover them all.
                covered = origins[word_start + start : word_start + end]
                result.append(Token(self.ids[piece], piece, offset + min(covered), offset + max(covered) + 1))
        return result

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; with `add_special_tokens`, wrapped as [CLS] ... [SEP] like BERT's input."""
        ids = [token.id for token in self.tokens(text)]
        if add_special_tokens:
            for token in (self.cls_token, self.sep_token):
                if token not in self.ids:
                    raise TokenizerError(
                        f"this vocabulary has no {token!r} token; encode with add_special_tokens=False"
                    )
            ids = [self.ids[self.cls_token], *ids, self.ids[self.sep_token]]
        return ids

    def tokenize(self, text: str) -> list[str]:
        """The token strings of `text`, like HuggingFace's `tokenizer.tokenize`: ['play', '##ing']."""
        return [token.text for token in self.tokens(text)]

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text of token ids: pieces joined as BERT's decoder does ('play', '##ing' -> 'playing')."""
        pieces = [self.vocab[token_id] for token_id in self.check_ids(ids)]
        if skip_special_tokens:
            pieces = [piece for piece in pieces if piece not in self.special_tokens]
        return join_word_pieces(pieces, self.continuing_subword_prefix, self.decode_cleanup)

    # -- files ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": self.vocab,
            "unk_token": self.unk_token,
            "continuing_subword_prefix": self.continuing_subword_prefix,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "normalization": list(self.normalization),
            "pre_tokenizer": self.pre_tokenizer,
            "special_tokens": self.special_tokens,
            "cls_token": self.cls_token,
            "sep_token": self.sep_token,
            "decode_cleanup": self.decode_cleanup,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordPieceTokenizer":
        try:
            return cls(
                data["vocab"],
                unk_token=data.get("unk_token", "[UNK]"),
                continuing_subword_prefix=data.get("continuing_subword_prefix", "##"),
                max_input_chars_per_word=int(data.get("max_input_chars_per_word", 100)),
                normalization=data.get("normalization", bert_normalization()),
                pre_tokenizer=data.get("pre_tokenizer", "bert"),
                special_tokens=data.get("special_tokens"),
                cls_token=data.get("cls_token", "[CLS]"),
                sep_token=data.get("sep_token", "[SEP]"),
                decode_cleanup=bool(data.get("decode_cleanup", True)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise VocabularyFileError(f"WordPiece tokenizer file is missing or has a bad entry ({error})") from None

    def __repr__(self) -> str:
        steps = "+".join(self.normalization) or "none"
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, normalization={steps})"
