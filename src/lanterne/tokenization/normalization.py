"""Normalization and pre-tokenization, as BERT does them before WordPiece, keeping track of offsets.

Text is cleaned, lower-cased, stripped of accents and given spaces around CJK ideographs, one
character at a time, remembering where each character came from; then it is cut into words at
whitespace and punctuation. Characters are classified as HuggingFace's tokenizers classify them.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Sequence

import regex

from lanterne.errors import TokenizerError

# -- normalization ------------------------------------------------------------------------------

# Unicode's White_Space property, which Rust's char::is_whitespace (used by HuggingFace) follows;
# Python's str.isspace() differs (it also counts U+001C..U+001F).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# The "Chinese characters" of BERT: the CJK Unified Ideographs blocks (not Japanese kana, not Hangul).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def bert_normalization(
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    clean_text: bool = True,
    handle_chinese_chars: bool = True,
) -> tuple[str, ...]:
    """The normalization steps of BERT's normalizer. `strip_accents=None` follows `lowercase`, as in BERT."""
    if strip_accents is None:
        strip_accents = lowercase
    steps = []
    if clean_text:
        steps.append("clean_text")
    if handle_chinese_chars:
        steps.append("handle_chinese_chars")
    if strip_accents:
        steps += ["nfd", "strip_accents"]
    if lowercase:
        steps.append("lowercase")
    return tuple(steps)


def is_whitespace(char: str) -> bool:
    return char in _WHITESPACE


def is_control(char: str) -> bool:
    """Control, format and private-use characters (tab, newline and return count as whitespace instead)."""
    if char in "\t\n\r" or char in _CHANGED_SINCE_UNICODE_8["control"][0]:
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Co")


def is_accent_mark(char: str) -> bool:
    """The nonspacing marks (Mn) that BERT's strip_accents drops after NFD: the accent of 'é' = 'e' + U+0301."""
    not_marks, marks = _CHANGED_SINCE_UNICODE_8["accent"]
    return char in marks or (char not in not_marks and unicodedata.category(char) == "Mn")


def is_punctuation(char: str) -> bool:
    """BERT's punctuation: every ASCII symbol (so '$', '+', '^' too) and every Unicode P* character."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    not_punctuation, punctuation = _CHANGED_SINCE_UNICODE_8["punctuation"]
    return char in punctuation or (char not in not_punctuation and unicodedata.category(char).startswith("P"))


def is_chinese_char(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _code_points(ranges: str) -> frozenset[str]:
    """The characters of '0890-0891 08E2 ...' (hexadecimal code points and inclusive ranges)."""
    chars = set()
    for item in ranges.split():
        low, _, high = item.partition("-")
        chars.update(chr(code) for code in range(int(low, 16), int(high or low, 16) + 1))
    return frozenset(chars)


# HuggingFace's BERT normalizer and pre-tokenizer classify characters with Unicode 8.0 tables
# (2015); Python's are newer. These characters changed class since (nearly all belong to scripts
# added later): for each class, (not in the class for HuggingFace, in it only for HuggingFace).
# Still different: characters Python's database does not know yet (category Cn), which the newer
# tables of Rust's standard library, used by HuggingFace to lower-case and for \w, may know.
_CHANGED_SINCE_UNICODE_8 = {
    "control": (_code_points("0890-0891 08E2 110CD 13430-13438"), frozenset()),
    "accent": (
        _code_points(
            "07FD 0898-089F 08CA-08E1 09FE 0AFA-0AFF 0B55 0C04 0C3C 0D00 0D3B-0D3C 0D81 0EBA 180F 1885-1886 "
            "1ABF-1ACE 1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 "
            "11073-11074 110C2 111C9 111CF 1123E 1133B 11438-1143F 11442-11444 11446 1145E 1182F-11837 "
            "11839-1183A 1193B-1193C 1193E 11943 119D4-119D7 119DA-119DB 119E0 11A01-11A0A 11A33-11A38 "
            "11A3B-11A3E 11A47 11A51-11A56 11A59-11A5B 11A8A-11A96 11A98-11A99 11C30-11C36 11C38-11C3D 11C3F "
            "11C92-11CA7 11CAA-11CB0 11CB2-11CB3 11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47 "
            "11D90-11D91 11D95 11D97 11EF3-11EF4 16F4F 16FE4 1CF00-1CF2D 1CF30-1CF46 1E000-1E006 1E008-1E018 "
            "1E01B-1E021 1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A"
        ),
        _code_points("1734"),
    ),
    "punctuation": (
        _code_points(
            "061D 09FD 0A76 0C77 0C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89 1144B-1144F "
            "1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46 11A9A-11A9C 11A9E-11AA2 "
            "11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2 16E97-16E9A 16FE2 1E95E-1E95F"
        ),
        _code_points("166D 111C9"),
    ),
}
# Decomposed by Python's NFD but unknown to HuggingFace's (Dives Akuru, Unicode 13).
_NOT_DECOMPOSED_BY_HUGGINGFACE = _code_points("11938")


def normalize_with_origins(text: str, steps: Sequence[str]) -> tuple[str, list[int]]:
    """Apply normalization `steps` to `text`; also return, for each output character, the index of
    the input character it came from (so tokens can point back into the original text).

    Every step rewrites one character at a time, like HuggingFace's ('Σ' always becomes 'σ',
    never a final 'ς'); 'nfd' also puts combining marks in canonical order, so it equals
    unicodedata.normalize('NFD').
    """
    chars = list(text)
    origins = list(range(len(text)))
    for step in steps:
        rewrite = _REWRITES.get(step)
        if rewrite is None:
            raise TokenizerError(f"unknown normalization step {step!r}; use some of {', '.join(NORMALIZATION_STEPS)}")
        new_chars: list[str] = []
        new_origins: list[int] = []
        for char, origin in zip(chars, origins):
            for new_char in rewrite(char):
                new_chars.append(new_char)
                new_origins.append(origin)
        chars, origins = new_chars, new_origins
        if step == "nfd":
            _order_combining_marks(chars, origins)
    return "".join(chars), origins


def _clean(char: str) -> str:
    if char in "\x00\ufffd" or is_control(char):
        return ""
    return " " if is_whitespace(char) else char


def _decompose(char: str) -> str:
    return char if char in _NOT_DECOMPOSED_BY_HUGGINGFACE else unicodedata.normalize("NFD", char)


def _order_combining_marks(chars: list[str], origins: list[int]) -> None:
    """Canonical ordering (in place): sort each run of combining marks by combining class, stably."""
    classes = [unicodedata.combining(char) for char in chars]
    start = 0
    while start < len(chars):
        if classes[start] == 0:
            start += 1
            continue
        end = start
        while end < len(chars) and classes[end] != 0:
            end += 1
        run = sorted(range(start, end), key=lambda i: classes[i])
        chars[start:end] = [chars[i] for i in run]
        origins[start:end] = [origins[i] for i in run]
        start = end


# Each step rewrites one character into zero, one or more characters. 'strip_accents' is BERT's
# (nonspacing marks only); 'strip_all_marks' is HuggingFace's StripAccents normalizer, which drops
# every combining mark (Mn, Mc, Me), Hindi's vowel signs too.
_REWRITES: dict[str, Callable[[str], str]] = {
    "clean_text": _clean,
    "handle_chinese_chars": lambda char: f" {char} " if is_chinese_char(char) else char,
    "nfd": _decompose,
    "strip_accents": lambda char: "" if is_accent_mark(char) else char,
    "strip_all_marks": lambda char: "" if unicodedata.category(char).startswith("M") else char,
    "lowercase": str.lower,
}
NORMALIZATION_STEPS = tuple(_REWRITES)


# -- pre-tokenization ---------------------------------------------------------------------------

PRE_TOKENIZERS = ("bert", "whitespace", "whitespace_split")
_WORD_OR_SYMBOLS = regex.compile(r"\w+|[^\w\s]+")


def split_words(text: str, pre_tokenizer: str = "bert") -> list[tuple[int, int]]:
    """Spans [start, end) of the words of (normalized) `text`; whitespace is dropped.

    'bert': every punctuation character is a word of its own; 'whitespace': runs of word
    characters or of other symbols; 'whitespace_split': only whitespace separates words.
    """
    if pre_tokenizer == "whitespace":
        return [match.span() for match in _WORD_OR_SYMBOLS.finditer(text)]
    if pre_tokenizer not in PRE_TOKENIZERS:
        raise TokenizerError(f"unknown pre-tokenizer {pre_tokenizer!r}; use one of {', '.join(PRE_TOKENIZERS)}")
    isolate_punctuation = pre_tokenizer == "bert"
    spans: list[tuple[int, int]] = []
    start = None
    for index, char in enumerate(text):
        if is_whitespace(char) or (isolate_punctuation and is_punctuation(char)):
            if start is not None:
                spans.append((start, index))
                start = None
            if not is_whitespace(char):
                spans.append((index, index + 1))
        elif start is None:
            start = index
    if start is not None:
        spans.append((start, len(text)))
    return spans
