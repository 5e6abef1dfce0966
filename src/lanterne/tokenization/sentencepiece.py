"""SentencePiece BPE, as Gemma, Llama 2 and Mistral tokenize: sub-words built by merging characters.

Spaces become '▁' and stay inside the pieces ('▁world'); a text's characters are joined two by two,
best-ranked pair first, into the vocabulary's pieces. A character the vocabulary lacks falls back to
its UTF-8 bytes, one '<0xNN>' token each, so no text is unknown. Ids match HuggingFace `transformers`.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Iterable, Literal, Sequence

from lanterne.errors import SpecialTokenError, TokenizerError, VocabularyFileError
from lanterne.tokenization.base import Token, Tokenizer
from lanterne.tokenization.bpe_merges import explain_pieces
from lanterne.tokenization.sentencepiece_merges import merge_pieces, ranks_from_merges, ranks_from_scores
from lanterne.tokenization.utf8 import repair_surrogates_with_origin

SPACE = "\u2581"  # '▁', SentencePiece's visible space
SpacePrefix = Literal["never", "first", "always", "prepend"]
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CACHE_LIMIT = 100_000  # texts between added tokens already encoded, remembered


class SentencePieceBPE(Tokenizer):
    """A SentencePiece BPE tokenizer: pieces (text -> id), a merge order, special and user-defined tokens.

    Merge order: the pair whose joined piece has the highest `scores` entry merges first; with
    `scores=None`, the lowest id (Gemma, as transformers reads it); with `merges` (a tokenizer.json's
    list of pairs), the earliest pair. Ties go as in transformers: the longer left part, then the
    leftmost pair. `space_prefix` puts a '▁' before the text unless it starts with one ('first': at
    the start of the text only; 'always': after each added token too), as HuggingFace's Metaspace does;
    'prepend' puts one before every text between added tokens, even one starting with a space.

    Special tokens (`<bos>`, `<start_of_turn>`) follow tiktoken's rules, as in ByteLevelBPE: text
    that spells one raises SpecialTokenError unless it is in `allowed_special` (then it is the
    special id) or in neither list (then it is plain text). User-defined tokens (Gemma's '<table>',
    '\\n\\n', '\\t\\t') are always read whole, as transformers and llama.cpp read them.
    Not lossless: a '▁' in the text decodes as a space.
    """

    kind = "sentencepiece"

    def __init__(
        self,
        pieces: Sequence[str],
        *,
        scores: Sequence[float] | None = None,
        merges: Sequence[tuple[str, str]] | None = None,
        special_tokens: Iterable[int] = (),
        user_defined_tokens: Iterable[int] = (),
        space_prefix: SpacePrefix = "never",
        bos_id: int | None = None,
        eos_id: int | None = None,
        unk_id: int | None = None,
        add_bos: bool = False,
        name: str | None = None,
    ) -> None:
        self.pieces = list(pieces)
        size = len(self.pieces)
        if scores is not None and merges is not None:
            raise TokenizerError("give the merge order as scores or as merges, not both")
        if scores is not None and len(scores) != size:
            raise VocabularyFileError(f"SentencePiece vocabulary has {size} pieces but {len(scores)} scores")
        if space_prefix not in ("never", "first", "always", "prepend"):
            raise TokenizerError(f"unknown space_prefix {space_prefix!r}; use 'never', 'first', 'always' or 'prepend'")
        for label, token_id in (("beginning", bos_id), ("end", eos_id), ("unknown", unk_id)):
            if token_id is not None and not 0 <= token_id < size:
                raise VocabularyFileError(f"the {label}-of-sequence token id {token_id} is not in this vocabulary of {size}")
        self.scores = None if scores is None else [float(score) for score in scores]
        self.merges = None if merges is None else [(left, right) for left, right in merges]
        self.space_prefix = space_prefix
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        self.add_bos = add_bos
        self.name = name
        # Two pieces may share a text (HuggingFace keeps the last id, and so do we); both decode to it.
        self.piece_id = {piece: token_id for token_id, piece in enumerate(self.pieces)}
        special_tokens, user_defined_tokens = sorted(special_tokens), sorted(user_defined_tokens)
        for token_id in special_tokens + user_defined_tokens:
            if not 0 <= token_id < size:
                raise VocabularyFileError(f"special or user-defined token id {token_id} is not in this vocabulary of {size}")
        self.special_tokens = {self.pieces[token_id]: token_id for token_id in special_tokens}
        self.user_defined_tokens = {self.pieces[token_id]: token_id for token_id in user_defined_tokens}
        # The '<0xNN>' piece of each byte (None where the vocabulary lacks it), and the byte of each such id.
        self._byte_pieces = [piece if (piece := f"<0x{byte:02X}>") in self.piece_id else None for byte in range(256)]
        self._byte_of_id = {self.piece_id[piece]: int(piece[3:5], 16) for piece in self.piece_id if _BYTE_PIECE.fullmatch(piece)}
        if self.merges is not None:
            self._rank_of = ranks_from_merges(self.pieces, self.merges)
        else:
            self._rank_of = ranks_from_scores(self.pieces, self.scores)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._matchers: dict[frozenset[str], _AddedTokenMatcher] = {}

    # -- the vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @property
    def lossless(self) -> bool:
        """False: a '▁' in the text comes back as a space (and a space prefix is not given back)."""
        return False

    @property
    def byte_fallback(self) -> bool:
        """True when every byte has its '<0xNN>' piece, so no character is unknown."""
        return None not in self._byte_pieces

    # -- encoding -------------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        add_bos: bool = False,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Token ids of `text`, with the BOS id first if `add_bos`; special tokens as in the class docstring."""
        ids = [self._bos()] if add_bos else []
        text = repair_surrogates_with_origin(text)[0]  # lone surrogates are no UTF-8: read as U+FFFD
        for segment, token_id, _, _ in self._segments(text, allowed_special, disallowed_special):
            if token_id is not None:
                ids.append(token_id)
            else:
                ids += self._encode_segment(segment)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special-token text as plain text (user-defined tokens stay whole)."""
        return self.encode(text, disallowed_special=())

    def _bos(self) -> int:
        if self.bos_id is None:
            raise TokenizerError("this SentencePiece vocabulary has no beginning-of-sequence token; encode without add_bos")
        return self.bos_id

    def _segments(self, text, allowed_special, disallowed_special) -> list[tuple[str, int | None, int, int]]:
        """`text` cut at added tokens: (normalized text, None, start, end) or (token, id, start, end),
        start and end in characters of `text`."""
        allowed = self._allowed(allowed_special, disallowed_special, text)
        matchable = frozenset(self.user_defined_tokens) | allowed
        segments = []
        for segment, is_token, start in self._matcher(matchable).split(text):
            end = start + len(segment)
            if is_token:
                token_id = self.user_defined_tokens.get(segment, self.special_tokens.get(segment))
                segments.append((segment, token_id, start, end))
            else:
                segments.append((self._normalize(segment, start == 0), None, start, end))
        return segments

    def _normalize(self, segment: str, at_start: bool) -> str:
        """Spaces as '▁', and the space prefix where this tokenizer adds one (not when one is there already)."""
        normalized = segment.replace(" ", SPACE)
        if self.space_prefix == "prepend":
            return SPACE + normalized
        prefix = self.space_prefix == "always" or (self.space_prefix == "first" and at_start)
        return SPACE + normalized if prefix and not normalized.startswith(SPACE) else normalized

    def _encode_segment(self, normalized: str) -> tuple[int, ...]:
        cached = self._cache.get(normalized)
        if cached is not None:
            return cached
        parts, _ = self._initial_parts(normalized)
        pieces, _ = merge_pieces(parts, self._rank_of)
        piece_id = self.piece_id
        ids = tuple(piece_id[piece] for piece in pieces)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[normalized] = ids
        return ids

    def _initial_parts(self, normalized: str) -> tuple[list[str], list[tuple[int, int]]]:
        """The parts merging starts from, and the characters [start, end) of `normalized` each comes from:
        the characters that are pieces, the '<0xNN>' pieces of the UTF-8 bytes of the others, and one
        unknown piece for a run of characters neither covers (HuggingFace's byte fallback and fused unknown)."""
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        piece_id, byte_pieces = self.piece_id, self._byte_pieces
        previous_unknown = False
        for index, char in enumerate(normalized):
            if char in piece_id:
                parts.append(char)
                spans.append((index, index + 1))
                previous_unknown = False
                continue
            fallback = [byte_pieces[byte] for byte in char.encode("utf-8")]
            if None not in fallback:
                parts += fallback
                spans += [(index, index + 1)] * len(fallback)
                previous_unknown = False
            elif self.unk_id is None:
                raise TokenizerError(f"{char!r} is not in this vocabulary, which has no unknown token nor byte pieces")
            elif previous_unknown:
                spans[-1] = (spans[-1][0], index + 1)  # fused: one unknown token for the whole run
            else:
                parts.append(self.pieces[self.unk_id])
                spans.append((index, index + 1))
                previous_unknown = True
        return parts, spans

    def _allowed(self, allowed_special, disallowed_special, text: str) -> frozenset[str]:
        specials = set(self.special_tokens)
        allowed = specials if allowed_special == "all" else set(allowed_special)
        unknown = allowed - specials
        if unknown:
            names = ", ".join(sorted(specials)[:8]) + (", ..." if len(specials) > 8 else "")
            raise SpecialTokenError(f"{sorted(unknown)[0]!r} is not a special token of this tokenizer (it has: {names or 'none'})")
        disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
        found = self._matcher(frozenset(disallowed)).first(text) if disallowed else None
        if found is not None:
            raise SpecialTokenError(
                f"the text contains the special token {found!r}; pass allowed_special={{{found!r}}} "
                "to encode it as one special id, or disallowed_special=() to encode it as plain text"
            )
        return frozenset(allowed)

    def _matcher(self, tokens: frozenset[str]) -> "_AddedTokenMatcher":
        matcher = self._matchers.get(tokens)
        if matcher is None:
            if len(self._matchers) > 16:
                self._matchers.clear()
            matcher = self._matchers[tokens] = _AddedTokenMatcher(tokens)
        return matcher

    def tokens(
        self,
        text: str,
        *,
        add_bos: bool = False,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[Token]:
        """The tokens of `text` with their spans in characters of `text`. A byte piece covers its whole
        character; the BOS and a space prefix cover no character (an empty span)."""
        repaired, origin = repair_surrogates_with_origin(text)
        result = [Token(self._bos(), self.token_text(self._bos()), 0, 0)] if add_bos else []
        for segment, token_id, start, end in self._segments(repaired, allowed_special, disallowed_special):
            if token_id is not None:
                result.append(Token(token_id, self.token_text(token_id), start, end))
                continue
            offset = start - (len(segment) - (end - start))  # the space prefix, if any, is character start - 1
            parts, spans = self._initial_parts(segment)
            pieces, starts = merge_pieces(parts, self._rank_of)
            for piece, first, stop in zip(pieces, starts, starts[1:] + [len(parts)]):
                token_id = self.piece_id[piece]
                begin = max(offset + spans[first][0], start)
                result.append(Token(token_id, self.token_text(token_id), begin, offset + spans[stop - 1][1]))
        if origin is None:
            return result
        return [Token(token.id, token.text, origin[token.start], origin[token.end]) for token in result]

    def token_text(self, token_id: int) -> str:
        """What one token stands for: its piece with spaces, a byte piece's character (U+FFFD for part of one)."""
        byte = self._byte_of_id.get(token_id)
        if byte is not None:
            return chr(byte) if byte < 0x80 else "\ufffd"
        return self.pieces[token_id].replace(SPACE, " ")

    def explain(self, word: str) -> list[list[str]]:
        """The merges that turn `word` (a text without special tokens) into pieces, step by step.

        Each step lists the pieces as the vocabulary spells them ('▁' for a space, '<0xE2>' for a byte).
        """
        parts, _ = self._initial_parts(self._normalize(word, True))
        return explain_pieces(parts, self._rank_of)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, as transformers decodes them: '▁' is a space, runs of byte pieces are
        UTF-8 (one U+FFFD per byte piece when they are not), special tokens are their text, and the
        space prefix (if this tokenizer adds one) is removed."""
        ids = self.check_ids(ids)
        texts: list[str] = []
        pending = bytearray()
        byte_of = self._byte_of_id
        for token_id in ids:
            byte = byte_of.get(token_id)
            if byte is not None:
                pending.append(byte)
                continue
            if pending:
                texts.append(_bytes_text(pending))
                pending.clear()
            texts.append(self.pieces[token_id].replace(SPACE, " "))
        if pending:
            texts.append(_bytes_text(pending))
        text = "".join(texts)
        return text[1:] if self.space_prefix != "never" and text.startswith(" ") else text

    # -- files ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The pieces by id, the merge order (scores, merges, or none: by id), special and user-defined ids."""
        return {
            "name": self.name,
            "pieces": self.pieces,
            "scores": self.scores,
            "merges": None if self.merges is None else [list(pair) for pair in self.merges],
            "special_tokens": sorted(self.special_tokens.values()),
            "user_defined_tokens": sorted(self.user_defined_tokens.values()),
            "space_prefix": self.space_prefix,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "unk_id": self.unk_id,
            "add_bos": self.add_bos,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SentencePieceBPE":
        try:
            merges = data.get("merges")
            return cls(
                data["pieces"],
                scores=data.get("scores"),
                merges=None if merges is None else [tuple(pair) for pair in merges],
                special_tokens=data.get("special_tokens") or (),
                user_defined_tokens=data.get("user_defined_tokens") or (),
                space_prefix=data.get("space_prefix", "never"),
                bos_id=data.get("bos_id"),
                eos_id=data.get("eos_id"),
                unk_id=data.get("unk_id"),
                add_bos=bool(data.get("add_bos", False)),
                name=data.get("name"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise VocabularyFileError(f"SentencePiece tokenizer file is missing or has a bad entry ({error!r})") from None

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"SentencePieceBPE({label}vocab_size={self.vocab_size})"


def _bytes_text(data: bytes) -> str:
    """A run of byte pieces as text: its UTF-8, or one U+FFFD per byte if it is not valid UTF-8 (HuggingFace's ByteFallback)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(data)


class _AddedTokenMatcher:
    """Finds added tokens in a text, the longest at the leftmost place first, as HuggingFace matches them."""

    def __init__(self, tokens: Collection[str]) -> None:
        self.tokens = frozenset(token for token in tokens if token)
        lengths: dict[str, set[int]] = {}
        for token in self.tokens:
            lengths.setdefault(token[0], set()).add(len(token))
        self._lengths = {first: sorted(sizes, reverse=True) for first, sizes in lengths.items()}
        # Only the first characters of tokens are worth a look; a regex finds them fast.
        self._candidates = re.compile("[" + "".join(re.escape(first) for first in sorted(lengths)) + "]") if lengths else None

    def _match_at(self, text: str, position: int) -> str | None:
        tokens = self.tokens
        for length in self._lengths[text[position]]:
            candidate = text[position : position + length]
            if len(candidate) == length and candidate in tokens:
                return candidate
        return None

    def split(self, text: str) -> list[tuple[str, bool, int]]:
        """`text` cut at tokens: [(segment, is_token, start in characters), ...], no empty segment."""
        segments: list[tuple[str, bool, int]] = []
        position = done = 0
        while self._candidates is not None:
            found = self._candidates.search(text, position)
            if found is None:
                break
            position = found.start()
            token = self._match_at(text, position)
            if token is None:
                position += 1
                continue
            if position > done:
                segments.append((text[done:position], False, done))
            segments.append((token, True, position))
            position = done = position + len(token)
        if done < len(text):
            segments.append((text[done:], False, done))
        return segments

    def first(self, text: str) -> str | None:
        """The first token that occurs anywhere in `text` (overlaps included), or None."""
        position = 0
        while self._candidates is not None:
            found = self._candidates.search(text, position)
            if found is None:
                return None
            token = self._match_at(text, found.start())
            if token is not None:
                return token
            position = found.start() + 1
        return None
