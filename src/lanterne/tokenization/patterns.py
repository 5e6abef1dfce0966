"""Pre-tokenization: the regular expressions that cut text into words before BPE merges bytes.

GPT-2, GPT-4 (cl100k) and GPT-4o (o200k) each split text with one pattern; BPE then never
merges across two pieces. Their classes (\\p{L} letters, \\p{N} digits, ...) follow Unicode 16.0,
the version tiktoken's regex engine knows: `PreTokenizer` cuts text exactly as tiktoken does.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from functools import cached_property
from typing import Any, Iterable, Iterator

import regex

from lanterne.errors import TokenizerError
from lanterne.tokenization.unicode_classes import pin_unicode, specialise

# GPT-2 (r50k_base / p50k_base): contractions, letters, digits, other symbols, whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# GPT-4 (cl100k_base): case-insensitive contractions, digits in groups of at most three.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# GPT-4o (o200k_base): words split at case changes, contractions attached, as tiktoken defines it.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

PATTERNS = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN, "o200k": O200K_PATTERN}


def resolve_pattern(pattern: str) -> str:
    """The regex for a pattern name ('gpt2', 'cl100k', 'o200k') or a regex given as is."""
    pattern = PATTERNS.get(pattern, pattern)
    try:
        regex.compile(pattern)
    except regex.error as error:
        raise TokenizerError(
            f"pre-tokenization pattern does not compile ({error}); use one of {', '.join(PATTERNS)} or a valid regex"
        ) from None
    return pattern


def pattern_name(pattern: str) -> str | None:
    """The short name of a standard pattern, or None for a custom one."""
    for name, known in PATTERNS.items():
        if known == pattern:
            return name
    return None


# -- cutting text: three regexes for one pattern, always the same pieces ---------------------------

# Text this long is cut by a regex compiled for its own alphabet (see `PreTokenizer`); shorter text
# does not repay the compilation.
ALPHABET_MIN_CHARS = 50_000
# Beyond this many distinct characters, spelled-out classes stop being faster than \p{..}.
ALPHABET_MAX_CHARS = 1_000
_ALPHABET_CACHE = 16


class PreTokenizer:
    """Cuts text into pieces with one pattern, exactly as tiktoken does (Unicode 16.0 classes), fast.

    Three compilations of the same pattern, one truth:
    - the `regex` package's, as written: its classes follow the Unicode version `regex` was built
      with, so it is used only on text where that version and 16.0 agree;
    - the same with its classes pinned to Unicode 16.0 (`unicode_classes.pin_unicode`): exact on
      any text, but set operations make it slower;
    - for long text, Python's `re` with every class spelled out as the characters of that text's
      own alphabet that belong to it (`unicode_classes.specialise`): about twice as fast.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = resolve_pattern(pattern)
        self._plain = regex.compile(self.pattern)
        self._by_alphabet: OrderedDict[frozenset[str], Any] = OrderedDict()

    @cached_property
    def _pinned(self) -> tuple[Any, frozenset[str]]:
        pinned = pin_unicode(self.pattern)
        return regex.compile(pinned.pattern), pinned.disagreements

    def _exact_regex(self, characters: Iterable[str]) -> Any:
        """The `regex` compilation that cuts text made of `characters` exactly."""
        pinned, disagreements = self._pinned
        if disagreements and not disagreements.isdisjoint(characters):
            return pinned
        return self._plain

    def _compiled_for(self, text: str) -> Any:
        if len(text) < ALPHABET_MIN_CHARS:
            return self._exact_regex(text)
        alphabet = frozenset(text)
        compiled = self._by_alphabet.pop(alphabet, None)
        if compiled is None:
            compiled = self._specialised(alphabet) or self._exact_regex(alphabet)
            if len(self._by_alphabet) >= _ALPHABET_CACHE:
                self._by_alphabet.popitem(last=False)
        self._by_alphabet[alphabet] = compiled
        return compiled

    def _specialised(self, alphabet: frozenset[str]) -> Any:
        """`re`'s compilation for text of this alphabet, or None where `re` cannot say the same."""
        if len(alphabet) > ALPHABET_MAX_CHARS:
            return None
        specialised = specialise(self.pattern, alphabet)
        try:
            return re.compile(specialised) if specialised is not None else None
        except re.error:  # `regex` syntax that `re` lacks (e.g. possessive quantifiers before Python 3.11)
            return None

    def split(self, text: str) -> list[str]:
        """The pieces of `text`, in order; they join back to `text`."""
        if len(text) >= ALPHABET_MIN_CHARS:
            return self._compiled_for(text).findall(text)
        pieces = self._plain.findall(text)
        # Checking the distinct pieces is cheaper than scanning the text first.
        compiled = self._exact_regex("".join(set(pieces)))
        return pieces if compiled is self._plain else compiled.findall(text)

    def finditer(self, text: str) -> Iterator[Any]:
        """The pieces of `text` as match objects (`.group()`, `.start()`, `.end()`)."""
        return self._compiled_for(text).finditer(text)

    def __getstate__(self) -> dict[str, Any]:
        return {"pattern": self.pattern}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pattern"])
