"""Byte-level BPE, as GPT-2, GPT-4 and GPT-4o tokenize: sub-words built by merging bytes.

Text is cut into pieces by a regex (see `patterns`), each piece becomes UTF-8 bytes, and the
adjacent pair whose concatenation has the lowest rank is merged until no pair is in the
vocabulary. The token id is the rank. This is tiktoken's algorithm, so ids match it exactly.
"""

from __future__ import annotations

import base64
from itertools import chain
from typing import Any, Collection, Iterable, Literal, Sequence

import regex

from lanterne.errors import SpecialTokenError, TokenizerError, VocabularyFileError
from lanterne.files import atomic_write_bytes
from lanterne.tokenization.base import Token, Tokenizer
from lanterne.tokenization.bpe_merges import byte_pair_encode, explain_merges
from lanterne.tokenization.patterns import PreTokenizer, pattern_name
from lanterne.tokenization.utf8 import bytes_to_unicode, char_of_byte, is_blank, repair_surrogates, repair_surrogates_with_origin

Backend = Literal["auto", "python", "tiktoken"]

# Pieces already encoded are remembered; natural text repeats a few tens of thousands of words.
_CACHE_LIMIT = 200_000


class ByteLevelBPE(Tokenizer):
    """A byte-level BPE tokenizer: ranks (token bytes -> id), a pre-tokenization regex, special tokens.

    Lossless: `decode(encode(s)) == s` for every string. Special tokens such as `<|endoftext|>`
    follow tiktoken's rules: text that spells one raises SpecialTokenError unless it is listed in
    `allowed_special` (then it becomes the special id) or in neither list (then it is plain text).
    `backend="auto"` encodes with tiktoken when it is installed, from the same ranks and pattern;
    `"python"` always uses the readable code here. Both give identical ids.
    """

    kind = "bpe"

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        *,
        name: str | None = None,
        backend: Backend = "auto",
        eos_token: str | None = None,
        unknown_bytes: Literal["error", "drop"] = "error",
    ) -> None:
        missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
        if missing_bytes and unknown_bytes == "error":
            raise VocabularyFileError(
                f"byte-level BPE vocabulary lacks {len(missing_bytes)} of the 256 single bytes "
                f"(first: {missing_bytes[0]}); the file is incomplete or not byte-level"
            )
        # HuggingFace's BPE skips a byte that has no token (SmolLM2 lacks 21, control bytes among them).
        self._missing_bytes = bytes(missing_bytes)
        self.ranks = dict(ranks)
        self._pre_tokenizer = PreTokenizer(pattern)
        self.pattern = self._pre_tokenizer.pattern
        self.special_tokens = dict(special_tokens or {})
        self.name = name
        if eos_token is not None and eos_token not in self.special_tokens:
            raise VocabularyFileError(f"the end-of-sequence token {eos_token!r} is not one of the special tokens")
        self.eos_token = eos_token
        self.decoder: dict[int, bytes] = {rank: token for token, rank in self.ranks.items()}
        if len(self.decoder) != len(self.ranks):
            raise VocabularyFileError("byte-level BPE vocabulary gives the same id to two tokens; the file is corrupt")
        normal_ids = set(self.decoder)  # before the special tokens join it
        for text, token_id in self.special_tokens.items():
            if token_id in normal_ids:
                raise VocabularyFileError(f"special token {text!r} reuses id {token_id}, already a normal token")
            self.decoder[token_id] = text.encode("utf-8")  # two special names for one id: the last decodes, as in tiktoken
        self._size = max(self.decoder) + 1
        self._byte_ranks = [self.ranks.get(bytes([b]), -1) for b in range(256)]
        self._cache: dict[str, tuple[int, ...]] = {}
        if backend not in ("auto", "python", "tiktoken"):
            raise TokenizerError(f"unknown BPE backend {backend!r}; use 'auto', 'python' or 'tiktoken'")
        self.backend_request = backend
        self._fast: Any = None
        self._fast_checked = False

    # -- the vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def lossless(self) -> bool:
        return not self._missing_bytes

    @property
    def n_vocab(self) -> int:
        """tiktoken's name for `vocab_size`: one more than the largest id."""
        return self._size

    @property
    def max_token_value(self) -> int:
        return self._size - 1

    @property
    def eot_token(self) -> int | None:
        """The id of `<|endoftext|>`, or None if this vocabulary has no such token."""
        return self.special_tokens.get("<|endoftext|>")

    @property
    def eos_id(self) -> int | None:
        """The id that ends a sequence (the model's own, else `<|endoftext|>`), or None."""
        return self.special_tokens.get(self.eos_token or "<|endoftext|>")

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for."""
        self.check_ids([token_id])
        return self.decoder[token_id]

    # -- backends -------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """'tiktoken' when the fast backend is in use, else 'python'."""
        return "tiktoken" if self._fast_encoding() is not None else "python"

    def _fast_encoding(self) -> Any:
        if self._fast_checked:
            return self._fast
        self._fast_checked = True
        if self.backend_request == "python":
            return None
        if self._missing_bytes:  # tiktoken needs a token for every byte
            if self.backend_request == "tiktoken":
                raise TokenizerError("the tiktoken backend needs a token for each of the 256 bytes; this vocabulary lacks some")
            return None
        try:
            import tiktoken
        except ImportError:
            if self.backend_request == "tiktoken":
                raise TokenizerError("the tiktoken backend needs tiktoken: pip install tiktoken") from None
            return None
        try:
            self._fast = tiktoken.Encoding(
                name=self.name or "lanterne-bpe",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=self.special_tokens,
            )
        except Exception as error:  # e.g. a custom pattern tiktoken's regex engine rejects
            if self.backend_request == "tiktoken":
                raise TokenizerError(f"tiktoken cannot use this vocabulary: {error}") from None
            self._fast = None
        return self._fast

    # -- pre-tokenization -----------------------------------------------------------------------

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces the pattern cuts `text` into; BPE never merges across two pieces."""
        return self._pre_tokenizer.split(text)

    # -- encoding -------------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special-token text as plain text."""
        fast = self._fast_encoding()
        if fast is not None:
            return fast.encode_ordinary(text)
        try:
            return self._encode_ordinary_python(text)
        except UnicodeEncodeError:
            return self._encode_ordinary_python(repair_surrogates(text))

    def _encode_ordinary_python(self, text: str) -> list[int]:
        pieces = self._pre_tokenizer.split(text)
        distinct = set(pieces)
        cache = self._cache
        # Encode each distinct new piece once; the rest is dictionary look-ups done in C.
        new_pieces = distinct.difference(cache)
        if len(cache) + len(new_pieces) > _CACHE_LIMIT:
            cache.clear()
            new_pieces = distinct
        # The loop of `_encode_piece`, inlined: a cold cache runs it for tens of thousands of pieces.
        rank_of, ranks, byte_ranks, missing = self.ranks.get, self.ranks, self._byte_ranks, self._missing_bytes
        for piece in new_pieces:
            data = piece.encode("utf-8")
            if missing:
                data = data.translate(None, missing)
            rank = rank_of(data)
            cache[piece] = (rank,) if rank is not None else tuple(byte_pair_encode(data, ranks, byte_ranks)[0])
        return list(chain.from_iterable(map(cache.__getitem__, pieces)))

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """Token ids of one pre-token (not cached here)."""
        return self._encode_piece_bytes(piece.encode("utf-8"))

    def _encode_piece_bytes(self, data: bytes) -> tuple[int, ...]:
        if self._missing_bytes:
            data = data.translate(None, self._missing_bytes)
        rank = self.ranks.get(data)
        if rank is not None:
            return (rank,)
        return tuple(byte_pair_encode(data, self.ranks, self._byte_ranks)[0])

    def encode(
        self,
        text: str,
        *,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Token ids of `text`; special tokens as in tiktoken (see the class docstring)."""
        allowed = self._allowed(allowed_special, disallowed_special, text)
        if not allowed:
            return self.encode_ordinary(text)
        fast = self._fast_encoding()
        if fast is not None:
            return fast.encode(text, allowed_special=allowed, disallowed_special=())
        ids: list[int] = []
        for segment, special in self._split_special(text, allowed):
            ids += [self.special_tokens[segment]] if special else self.encode_ordinary(segment)
        return ids

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes, UTF-8 or not (tiktoken's `_encode_bytes`); `decode_bytes` gives them back.

        Valid UTF-8 is encoded as text. Otherwise the valid part is, and the bytes from the first
        invalid one on are merged by BPE with the last piece before them (and any all-blank tokens
        just before it, since a blank run can join the next piece), as if the text had been cut there.
        """
        try:
            return self.encode_ordinary(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            valid = error.start
        piece_ids = [self._encode_piece(piece) for piece in self.pre_tokenize(data[:valid].decode("utf-8"))]
        ids = list(chain.from_iterable(piece_ids))
        unstable = len(piece_ids[-1]) if piece_ids else 0
        if unstable and is_blank(self.decoder[ids[-unstable]]):
            while unstable < len(ids) and is_blank(self.decoder[ids[-unstable - 1]]):
                unstable += 1
        tail = self.decode_bytes(ids[len(ids) - unstable :]) + data[valid:]
        return ids[: len(ids) - unstable] + list(self._encode_piece_bytes(tail))

    def encode_single_token(self, token: str | bytes) -> int:
        """The id of `token`, which must be exactly one token (normal or special) of this vocabulary."""
        data = token.encode("utf-8") if isinstance(token, str) else bytes(token)
        rank = self.ranks.get(data)
        if rank is None:
            rank = self.special_tokens.get(data.decode("utf-8", errors="replace"))
        if rank is None:
            raise TokenizerError(f"{token!r} is not a single token of this vocabulary; use encode() to cut it into tokens")
        return rank

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[list[int]]:
        """`encode` of each text. The tiktoken backend spreads the texts over `num_threads` threads;
        the Python path runs them one after the other, since threads cannot run Python code in parallel."""
        fast = self._fast_encoding()
        if fast is not None:
            for text in texts:  # our error message, before tiktoken's threads see the text
                self._allowed(allowed_special, disallowed_special, text)
            allowed = self._allowed(allowed_special, (), "")
            return fast.encode_batch(list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=())
        return [self.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special) for text in texts]

    def encode_ordinary_batch(self, texts: Sequence[str], *, num_threads: int = 8) -> list[list[int]]:
        """`encode_ordinary` of each text (threads as in `encode_batch`)."""
        fast = self._fast_encoding()
        if fast is not None:
            return fast.encode_ordinary_batch(list(texts), num_threads=num_threads)
        return [self.encode_ordinary(text) for text in texts]

    def _allowed(
        self,
        allowed_special: Collection[str] | Literal["all"],
        disallowed_special: Collection[str] | Literal["all"],
        text: str,
    ) -> set[str]:
        specials = set(self.special_tokens)
        allowed = specials if allowed_special == "all" else set(allowed_special)
        unknown = allowed - specials
        if unknown:
            raise SpecialTokenError(
                f"{sorted(unknown)[0]!r} is not a special token of this tokenizer (it has: {sorted(specials) or 'none'})"
            )
        disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
        for special in sorted(disallowed, key=len, reverse=True):
            if special in text:
                raise SpecialTokenError(
                    f"the text contains the special token {special!r}; pass allowed_special={{{special!r}}} "
                    "to encode it as one special id, or disallowed_special=() to encode it as plain text"
                )
        return allowed

    @staticmethod
    def _split_special(text: str, allowed: set[str]) -> list[tuple[str, bool]]:
        """Cut `text` at allowed special tokens: [(segment, is_special), ...]."""
        splitter = regex.compile("|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)))
        segments: list[tuple[str, bool]] = []
        position = 0
        for match in splitter.finditer(text):
            if match.start() > position:
                segments.append((text[position : match.start()], False))
            segments.append((match.group(), True))
            position = match.end()
        if position < len(text):
            segments.append((text[position:], False))
        return segments

    def tokens(
        self,
        text: str,
        *,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[Token]:
        """The tokens of `text` with their spans. Surrogates (not UTF-8) are read as `encode` reads them,
        and the spans still index `text`."""
        allowed = self._allowed(allowed_special, disallowed_special, text)
        repaired, origin = repair_surrogates_with_origin(text)
        segments = self._split_special(repaired, allowed) if allowed else [(repaired, False)]
        result: list[Token] = []
        offset = 0
        for segment, special in segments:
            if special:
                result.append(Token(self.special_tokens[segment], segment, offset, offset + len(segment)))
            else:
                for match in self._pre_tokenizer.finditer(segment):
                    piece_ids = self._cache.get(match.group()) or self._encode_piece(match.group())
                    result += _piece_tokens(match.group(), piece_ids, self.decoder, offset + match.start(), self._missing_bytes)
            offset += len(segment)
        if origin is None:
            return result
        return [Token(token.id, token.text, origin[token.start], origin[token.end]) for token in result]

    def explain(self, word: str) -> list[list[str]]:
        """The merges that turn `word` (one pre-token) into tokens, step by step, as readable text."""
        return [[part.decode("utf-8", errors="replace") for part in step] for step in explain_merges(word.encode("utf-8"), self.ranks)]

    # -- decoding -------------------------------------------------------------------------------

    def check_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as a list, or TokenizerError naming the first id that is not a token (out of range, or a gap)."""
        ids = super().check_ids(ids)
        for token_id in ids:
            if token_id not in self.decoder:
                raise TokenizerError(f"token id {token_id} is unused in this vocabulary (its ids skip it); it stands for no text")
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of token ids (a token may hold part of a UTF-8 character)."""
        return b"".join(self.decode_tokens_bytes(ids))

    def decode_tokens_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes of each token id."""
        decoder = self.decoder
        ids = list(ids)
        try:
            return [decoder[token_id] for token_id in ids]
        except (KeyError, TypeError):
            self.check_ids(ids)
            raise

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token id (tiktoken's name for `token_bytes`)."""
        return self.token_bytes(token_id)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of token ids. Ids that split a UTF-8 character give U+FFFD ('replace'), are dropped
        ('ignore'), or raise TokenizerError ('strict')."""
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as error:
            raise TokenizerError(
                f"these ids split a UTF-8 character at byte {error.start}; decode with errors='replace' "
                "or add the ids that complete the character"
            ) from None

    def decode_with_offsets(self, ids: Sequence[int]) -> tuple[str, list[int]]:
        """The text of `ids`, and where each token starts in it (in characters), as tiktoken gives them.

        A token that starts inside a character (a byte-level token holds part of one) starts at
        that character. The ids must decode to valid UTF-8 (TokenizerError otherwise).
        """
        pieces = self.decode_tokens_bytes(ids)
        text = self.decode(ids, errors="strict")
        owner = char_of_byte(text)
        offsets = []
        position = 0
        for data in pieces:
            offsets.append(owner[position] if data else len(text))
            position += len(data)
        return text, offsets

    def decode_batch(self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8) -> list[str]:
        """`decode` of each list of ids (threads as in `encode_batch`)."""
        fast = self._fast_encoding()
        if fast is not None:
            for ids in batch:
                self.check_ids(ids)
            return fast.decode_batch(batch, errors=errors, num_threads=num_threads)
        return [self.decode(ids, errors=errors) for ids in batch]

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """`decode_bytes` of each list of ids."""
        return [self.decode_bytes(ids) for ids in batch]

    # -- files ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Vocabulary in GPT-2's readable byte alphabet ('Ġ' is a space), indexed by id."""
        alphabet = bytes_to_unicode()
        vocab: list[str | None] = [None] * (max(self.ranks.values()) + 1)
        for token, rank in self.ranks.items():
            vocab[rank] = "".join(alphabet[b] for b in token)
        name = pattern_name(self.pattern)
        return {
            "name": self.name,
            "pattern": name or self.pattern,
            "special_tokens": self.special_tokens,
            "eos_token": self.eos_token,
            "unknown_bytes": "drop" if self._missing_bytes else "error",
            "vocab": vocab,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, backend: Backend = "auto") -> "ByteLevelBPE":
        try:
            byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
            ranks = {
                bytes(byte_of[char] for char in token): rank
                for rank, token in enumerate(data["vocab"])
                if token is not None
            }
            return cls(
                ranks, data["pattern"], data.get("special_tokens") or {}, name=data.get("name"), backend=backend,
                eos_token=data.get("eos_token"), unknown_bytes=data.get("unknown_bytes", "error"),
            )
        except (KeyError, TypeError) as error:
            raise VocabularyFileError(f"BPE tokenizer file is missing or has a bad entry ({error})") from None

    def save_tiktoken(self, path: str) -> None:
        """Write the ranks as a `.tiktoken` file (base64 token, space, rank), in rank order, atomically; tiktoken loads it.

        Written here rather than in `tiktoken_files`, which reads such files into a ByteLevelBPE and so imports this module.
        """
        lines = [base64.b64encode(token) + b" " + str(rank).encode() for token, rank in sorted(self.ranks.items(), key=lambda item: item[1])]
        atomic_write_bytes(path, b"\n".join(lines) + b"\n")

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"ByteLevelBPE({label}vocab_size={self.vocab_size}, pattern={pattern_name(self.pattern) or 'custom'})"


def _piece_tokens(piece: str, piece_ids: Iterable[int], decoder: dict[int, bytes], start: int, skipped: bytes = b"") -> list[Token]:
    """Tokens of one pre-token with character spans; a token inside a character covers that character.

    `skipped`: bytes the vocabulary has no token for, left out of the tokens (as HuggingFace does).
    """
    owner = char_of_byte(piece)
    if skipped:
        owner = [index for index, byte in zip(owner, piece.encode("utf-8")) if byte not in skipped]
    tokens = []
    byte_position = 0
    for token_id in piece_ids:
        data = decoder[token_id]
        first = owner[byte_position]
        last = owner[byte_position + len(data) - 1]
        tokens.append(Token(token_id, data.decode("utf-8", errors="replace"), start + first, start + last + 1))
        byte_position += len(data)
    return tokens
