"""tiktoken's public names over Lanterne's pure-Python byte-level BPE, so tiktoken's own tests run on it.

Names, arguments and exception types are mapped here, nothing more: every answer comes from
`lanterne.tokenization` with backend="python". tests/test_tiktoken_suite.py puts this folder first
on PYTHONPATH, so `import tiktoken` in tiktoken's tests finds this module, never the real one.
"""

from __future__ import annotations

import contextlib
import functools
from typing import AbstractSet, Callable, Collection, Iterator, Literal, Sequence

import pytest

from lanterne.errors import DownloadError, SpecialTokenError, TokenizerError, UnknownTokenizerError
from lanterne.tokenization.bpe import ByteLevelBPE
from lanterne.tokenization.tiktoken_files import NAMED_VOCABULARIES, find_local_copy, load_named, vocabulary_for_model

__all__ = ["Encoding", "encoding_for_model", "encoding_name_for_model", "get_encoding", "list_encoding_names"]


@contextlib.contextmanager
def _raised_as(lanterne_error: type[Exception], tiktoken_error: Callable[[str], Exception]) -> Iterator[None]:
    """Re-raise `lanterne_error` as the exception tiktoken raises in its place, with Lanterne's message."""
    try:
        yield
    except lanterne_error as error:
        raise tiktoken_error(str(error)) from error


def _unicode_decode_error(message: str) -> UnicodeDecodeError:
    # tiktoken's decode(errors="strict") raises Python's own UnicodeDecodeError, which needs these fields.
    return UnicodeDecodeError("utf-8", b"", 0, 0, message)


@contextlib.contextmanager
def _skipped_when_offline(name: str) -> Iterator[None]:
    """A vocabulary with no local copy skips the test: this machine cannot download it."""
    try:
        yield
    except DownloadError as error:
        pytest.skip(f"{name} file not available offline ({error}); the test runs once its .tiktoken file is in LANTERNE_CACHE")


class Encoding:
    """tiktoken.Encoding, answered by a Lanterne ByteLevelBPE (backend="python")."""

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
    ) -> None:
        self._bpe = ByteLevelBPE(mergeable_ranks, pat_str, special_tokens, name=name, backend="python")

    @classmethod
    def _of(cls, bpe: ByteLevelBPE) -> "Encoding":
        encoding = cls.__new__(cls)
        encoding._bpe = bpe
        return encoding

    def __repr__(self) -> str:
        return f"<Encoding {self.name!r}>"

    # -- the vocabulary: tiktoken's attribute names -----------------------------------------------

    @property
    def name(self) -> str | None:
        return self._bpe.name

    @property
    def _pat_str(self) -> str:
        return self._bpe.pattern

    @property
    def _mergeable_ranks(self) -> dict[bytes, int]:
        return self._bpe.ranks

    @property
    def _special_tokens(self) -> dict[str, int]:
        return self._bpe.special_tokens

    @property
    def n_vocab(self) -> int:
        return self._bpe.n_vocab

    @property
    def max_token_value(self) -> int:
        return self._bpe.max_token_value

    @property
    def eot_token(self) -> int | None:
        return self._bpe.eot_token

    @property
    def special_tokens_set(self) -> set[str]:
        return self._bpe.special_tokens_set

    # -- encoding: a special token the caller did not allow is a ValueError in tiktoken ------------

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        with _raised_as(SpecialTokenError, ValueError):
            return self._bpe.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._bpe.encode_ordinary(text)

    def encode_batch(
        self,
        text: list[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        with _raised_as(SpecialTokenError, ValueError):
            return self._bpe.encode_batch(
                text, num_threads=num_threads, allowed_special=allowed_special, disallowed_special=disallowed_special
            )

    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = 8) -> list[list[int]]:
        return self._bpe.encode_ordinary_batch(text, num_threads=num_threads)

    def _encode_bytes(self, text: bytes) -> list[int]:
        return self._bpe.encode_bytes(text)

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.encode_single_token(text_or_bytes)

    # -- decoding: an id that is no token is a KeyError in tiktoken --------------------------------

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        with _raised_as(TokenizerError, KeyError):
            self._bpe.check_ids(tokens)
        with _raised_as(TokenizerError, _unicode_decode_error):  # errors="strict", ids that split a character
            return self._bpe.decode(tokens, errors=errors)

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.decode_bytes(tokens)

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.decode_tokens_bytes(tokens)

    def decode_single_token_bytes(self, token: int) -> bytes:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.decode_single_token_bytes(token)

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        with _raised_as(TokenizerError, _unicode_decode_error):
            return self._bpe.decode_with_offsets(tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8) -> list[str]:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.decode_batch(batch, errors=errors, num_threads=num_threads)

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        with _raised_as(TokenizerError, KeyError):
            return self._bpe.decode_bytes_batch(batch, num_threads=num_threads)


# -- the registry: tiktoken's module functions -------------------------------------------------------


@functools.cache  # tiktoken's get_encoding also returns one shared Encoding per name
def get_encoding(encoding_name: str) -> Encoding:
    with _skipped_when_offline(encoding_name), _raised_as(KeyError, ValueError):
        return Encoding._of(load_named(encoding_name, backend="python", download=False))


def list_encoding_names() -> list[str]:
    """The published names whose vocabulary file is on this machine (the others cannot be loaded offline)."""
    return [name for name in NAMED_VOCABULARIES if find_local_copy(name) is not None]


def encoding_name_for_model(model_name: str) -> str:
    with _raised_as(UnknownTokenizerError, KeyError):
        return vocabulary_for_model(model_name)


def encoding_for_model(model_name: str) -> Encoding:
    return get_encoding(encoding_name_for_model(model_name))
