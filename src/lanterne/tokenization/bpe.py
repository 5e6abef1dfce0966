"""Byte-level BPE, as GPT-2, GPT-4 and GPT-4o tokenize: sub-words built by merging bytes.

Text is cut into pieces by a regex (see `patterns`), each piece becomes UTF-8 bytes, and the
adjacent pair whose concatenation has the lowest rank is merged until no pair is in the
vocabulary. The token id is the rank. This is tiktoken's algorithm, so ids match it exactly.
"""

from __future__ import annotations

import base64
from itertools import chain
from typing import Any, Collection, Iterable, Literal

import regex

from lanterne.errors import SpecialTokenError, TokenizerError, VocabularyFileError
from lanterne.tokenization.base import Token, Tokenizer
from lanterne.tokenization.patterns import pattern_name, resolve_pattern

Backend = Literal["auto", "python", "tiktoken"]

# Pieces already encoded are remembered; natural text repeats a few tens of thousands of words.
_CACHE_LIMIT = 200_000


def byte_pair_encode(piece: bytes, ranks: dict[bytes, int], byte_ranks: list[int]) -> tuple[list[int], list[int]]:
    """Merge the lowest-ranked adjacent pair of `piece` first, until no pair is a token.

    Returns (ids, starts): the token ids, and where each token starts in `piece` (plus its length).
    Ties go to the leftmost pair, as in tiktoken. `byte_ranks[b]` is the id of the single byte b.
    """
    missing = 1 << 62  # larger than any rank: "this pair is not a token"
    rank_of = ranks.get
    # Part k is piece[starts[k]:starts[k + 1]] with id ids[k]; pair_ranks[k] is the rank of parts k and k+1 joined.
    starts = list(range(len(piece) + 1))
    ids = [byte_ranks[byte] for byte in piece]
    pair_ranks = [rank_of(piece[i : i + 2], missing) for i in range(len(piece) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == missing:
            break
        i = pair_ranks.index(best)  # leftmost of the lowest rank
        ids[i] = best  # the joined part is the token of that rank
        del ids[i + 1], starts[i + 1], pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = rank_of(piece[starts[i - 1] : starts[i + 1]], missing)
        if i < len(pair_ranks):
            pair_ranks[i] = rank_of(piece[starts[i] : starts[i + 2]], missing)
    return ids, starts


def byte_pair_merge(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """The tokens of `piece` as bytes (see `byte_pair_encode`). Every single byte must be in `ranks`."""
    _, starts = byte_pair_encode(piece, ranks, [ranks[bytes([b])] for b in range(256)])
    return [piece[start:end] for start, end in zip(starts, starts[1:])]


def explain_merges(piece: bytes, ranks: dict[bytes, int]) -> list[list[bytes]]:
    """Every step of `byte_pair_merge` on `piece`: the list of parts before each merge and at the end.

    The slow, explaining path (for students); `byte_pair_merge` gives the same final parts.
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    steps = [list(parts)]
    while len(parts) > 1:
        candidates = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
        if not candidates:
            break
        _, i = min(candidates)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        steps.append(list(parts))
    return steps


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (space -> 'Ġ', newline -> 'Ċ'), as in tokenizer.json files."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shift)
            shift += 1
    return mapping


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
    ) -> None:
        missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
        if missing_bytes:
            raise VocabularyFileError(
                f"byte-level BPE vocabulary lacks {len(missing_bytes)} of the 256 single bytes "
                f"(first: {missing_bytes[0]}); the file is incomplete or not byte-level"
            )
        self.ranks = dict(ranks)
        self.pattern = resolve_pattern(pattern)
        self.special_tokens = dict(special_tokens or {})
        self.name = name
        self.decoder: dict[int, bytes] = {rank: token for token, rank in self.ranks.items()}
        if len(self.decoder) != len(self.ranks):
            raise VocabularyFileError("byte-level BPE vocabulary gives the same id to two tokens; the file is corrupt")
        for text, token_id in self.special_tokens.items():
            if token_id in self.decoder:
                raise VocabularyFileError(f"special token {text!r} reuses id {token_id}, already a normal token")
            self.decoder[token_id] = text.encode("utf-8")
        self._size = max(self.decoder) + 1
        self._regex = regex.compile(self.pattern)
        self._byte_ranks = [self.ranks[bytes([b])] for b in range(256)]
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
        return True

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

    # -- encoding -------------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special-token text as plain text."""
        fast = self._fast_encoding()
        if fast is not None:
            return fast.encode_ordinary(text)
        return self._encode_ordinary_python(text)

    def _encode_ordinary_python(self, text: str) -> list[int]:
        pieces = self._regex.findall(text)
        cache = self._cache
        # Encode each distinct new piece once; the rest is dictionary look-ups done in C.
        new_pieces = set(pieces).difference(cache)
        if len(cache) + len(new_pieces) > _CACHE_LIMIT:
            cache.clear()
            new_pieces = set(pieces)
        for piece in new_pieces:
            cache[piece] = self._encode_piece(piece)
        return list(chain.from_iterable(map(cache.__getitem__, pieces)))

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """Token ids of one pre-token (not cached here)."""
        data = piece.encode("utf-8")
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
            ids += [self.special_tokens[segment]] if special else self._encode_ordinary_python(segment)
        return ids

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
        allowed = self._allowed(allowed_special, disallowed_special, text)
        segments = self._split_special(text, allowed) if allowed else [(text, False)]
        result: list[Token] = []
        offset = 0
        for segment, special in segments:
            if special:
                result.append(Token(self.special_tokens[segment], segment, offset, offset + len(segment)))
            else:
                for match in self._regex.finditer(segment):
                    piece_ids = self._cache.get(match.group()) or self._encode_piece(match.group())
                    result += _piece_tokens(match.group(), piece_ids, self.decoder, offset + match.start())
            offset += len(segment)
        return result

    def explain(self, word: str) -> list[list[str]]:
        """The merges that turn `word` (one pre-token) into tokens, step by step, as readable text."""
        return [[part.decode("utf-8", errors="replace") for part in step] for step in explain_merges(word.encode("utf-8"), self.ranks)]

    # -- decoding -------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of token ids (a token may hold part of a UTF-8 character)."""
        decoder = self.decoder
        ids = list(ids)
        try:
            return b"".join([decoder[token_id] for token_id in ids])
        except (KeyError, TypeError):
            self.check_ids(ids)
            raise

    def decode(self, ids: Iterable[int], errors: Literal["replace", "strict"] = "replace") -> str:
        """Text of token ids. Ids that split a UTF-8 character give U+FFFD, or an error with errors='strict'."""
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as error:
            raise TokenizerError(
                f"these ids split a UTF-8 character at byte {error.start}; decode with errors='replace' "
                "or add the ids that complete the character"
            ) from None

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
            return cls(ranks, data["pattern"], data.get("special_tokens") or {}, name=data.get("name"), backend=backend)
        except (KeyError, TypeError) as error:
            raise VocabularyFileError(f"BPE tokenizer file is missing or has a bad entry ({error})") from None

    def save_tiktoken(self, path: str) -> None:
        """Write the ranks as a `.tiktoken` file (base64 token, space, rank), which tiktoken loads."""
        from lanterne.tokenization.tiktoken_files import write_tiktoken_file

        write_tiktoken_file(path, self.ranks)

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"ByteLevelBPE({label}vocab_size={self.vocab_size}, pattern={pattern_name(self.pattern) or 'custom'})"


def _piece_tokens(piece: str, piece_ids: Iterable[int], decoder: dict[int, bytes], start: int) -> list[Token]:
    """Tokens of one pre-token with character spans; a token inside a character covers that character."""
    # char_of_byte[k] = index of the character that holds byte k of the piece
    char_of_byte: list[int] = []
    for index, char in enumerate(piece):
        char_of_byte += [index] * len(char.encode("utf-8"))
    tokens = []
    byte_position = 0
    for token_id in piece_ids:
        data = decoder[token_id]
        first = char_of_byte[byte_position]
        last = char_of_byte[byte_position + len(data) - 1]
        tokens.append(Token(token_id, data.decode("utf-8", errors="replace"), start + first, start + last + 1))
        byte_position += len(data)
    return tokens


def ranks_from_base64_lines(lines: Iterable[bytes], source: str) -> dict[bytes, int]:
    """Parse `.tiktoken` lines ("<base64 token> <rank>") into ranks, naming the first bad line."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError("expected two fields")
            token = base64.b64decode(fields[0], validate=True)
            rank = int(fields[1])
        except (ValueError, base64.binascii.Error):
            raise VocabularyFileError(
                f"{source}: line {number} is not '<base64 token> <rank>'; the file is corrupt or truncated, fetch it again"
            ) from None
        if token in ranks:
            raise VocabularyFileError(f"{source}: line {number} repeats a token; the file is corrupt")
        ranks[token] = rank
    if not ranks:
        raise VocabularyFileError(f"{source}: no tokens in the file; it is empty or not a .tiktoken vocabulary")
    return ranks
