"""Letter, digit and mark classes pinned to Unicode 16.0: every code point cut as tiktoken cuts it."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.tokenization import load, patterns
from lanterne.tokenization.patterns import CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN, PreTokenizer
from lanterne.tokenization.unicode_classes import (
    UNICODE_VERSION,
    WHITE_SPACE,
    _table_ranges,
    category,
    pin_unicode,
    pinned_class,
    specialise,
)

VOCABULARIES = ["o200k_base", "cl100k_base"]
# Each code point c is tried alone and beside letters, digits, blanks, an apostrophe (contractions), itself.
CONTEXTS = ["{c}", "a{c}", "{c}'S", " {c}x", "1{c}2", "A{c}b", "\n{c} ", "{c}{c}", "é{c}'ll", "a'{c}"]
ALL_CODE_POINTS = [point for point in range(0x110000) if not 0xD800 <= point < 0xE000]
GENERAL_CATEGORIES = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "N", "P", "S", "Z", "C"]


def disagreeing_code_points() -> list[int]:
    """Code points that the installed `regex` classes otherwise than Unicode 16.0 does."""
    return sorted({ord(char) for name in GENERAL_CATEGORIES for char in pinned_class(name).disagreements})


def assert_ids_equal_tiktoken(code_points, tokenizers, oracle, chunk):
    """Encode every code point in every context, `chunk` code points a text, on each tokenizer."""
    for start in range(0, len(code_points), chunk):
        part = code_points[start : start + chunk]
        for context in CONTEXTS:
            text = "\n".join(context.format(c=chr(point)) for point in part)
            expected = oracle.encode_ordinary(text)
            for label, tokenizer in tokenizers.items():
                if tokenizer.encode_ordinary(text) != expected:
                    wrong = next(p for p in part if tokenizer.encode_ordinary(context.format(c=chr(p))) != oracle.encode_ordinary(context.format(c=chr(p))))
                    pytest.fail(f"{label}: {context.format(c=chr(wrong))!r} (U+{wrong:04X}) gives other ids than tiktoken")


def sweep(name, code_points, tiktoken_oracle, monkeypatch):
    """Lanterne's three pre-tokenizer compilations and the tiktoken backend, against tiktoken."""
    oracle = tiktoken_oracle(name)
    python = load(name, backend="python")
    fast = load(name, backend="tiktoken")
    # Short texts: the `regex` package's classes, pinned where they disagree with 16.0.
    monkeypatch.setattr(patterns, "ALPHABET_MIN_CHARS", 10**9)
    assert_ids_equal_tiktoken(code_points, {"python (regex)": python, "tiktoken backend": fast}, oracle, 4096)
    # Long texts: Python's `re` with every class spelled out for the text's alphabet.
    monkeypatch.setattr(patterns, "ALPHABET_MIN_CHARS", 0)
    python = load(name, backend="python")
    assert_ids_equal_tiktoken(code_points, {"python (re, by alphabet)": python}, oracle, 480)


def test_the_table_is_unicode_16():
    assert UNICODE_VERSION == "16.0.0"
    assert category("a") == "Ll" and category("A") == "Lu" and category("1") == "Nd" and category(" ") == "Zs"
    assert category("\u0295") == "Ll"  # Lo from Unicode 17.0 on
    assert category("\U000323b0") == "Cn"  # CJK Extension J: Unicode 17.0
    assert category("\u1c89") == "Lu"  # new in 16.0
    assert category("\U0010ffff") == "Cn"


def test_pinned_classes_equal_the_table():
    """Each pinned class, compiled by `regex`, matches exactly the code points of that category in the table."""
    every = "".join(map(chr, range(0x110000)))
    for name in GENERAL_CATEGORIES:
        pinned = pinned_class(name)
        runs = regex.finditer(("(?V1-f)" if pinned.disagreements else "") + f"(?:{pinned.pattern})+", every)
        matched = [(run.start(), run.end() - 1) for run in runs]
        assert matched == _table_ranges(name), name
        for first, last in matched[:: max(1, len(matched) // 50)]:  # the ranges read the table as category() does
            assert category(chr(first)).startswith(name) and category(chr(last)).startswith(name)


def test_a_character_new_in_unicode_17_is_cut_as_tiktoken_cuts_it(tiktoken_oracle):
    """The issue's example: U+0558 is a letter for `regex` (Unicode 17) and unassigned for tiktoken."""
    cl100k = load("cl100k_base", backend="python")
    assert cl100k.encode("\u0558'S") == tiktoken_oracle("cl100k_base").encode("\u0558'S") == [145, 246, 6, 50]


@pytest.mark.parametrize("name", VOCABULARIES)
def test_disagreeing_code_points_and_a_sample_of_all_give_tiktoken_ids(name, tiktoken_oracle, monkeypatch):
    code_points = sorted(set(disagreeing_code_points()[::5]) | set(ALL_CODE_POINTS[::499]))
    sweep(name, code_points, tiktoken_oracle, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", VOCABULARIES)
def test_every_code_point_gives_tiktoken_ids(name, tiktoken_oracle, monkeypatch):
    sweep(name, ALL_CODE_POINTS, tiktoken_oracle, monkeypatch)


@pytest.mark.parametrize("pattern", [O200K_PATTERN, CL100K_PATTERN, GPT2_PATTERN])
@settings(max_examples=80, deadline=None, derandomize=True)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_the_three_compilations_cut_alike(pattern, text):
    pre_tokenizer = PreTokenizer(pattern)
    by_alphabet = pre_tokenizer._specialised(frozenset(text))
    pinned = regex.compile(pin_unicode(pattern).pattern)
    assert by_alphabet is not None
    assert by_alphabet.findall(text) == pinned.findall(text) == pre_tokenizer.split(text)
    assert "".join(pre_tokenizer.split(text)) == text


def test_spelled_out_classes():
    alphabet = frozenset("aB1 \x1c")
    assert specialise(r"\p{L}+|\s", alphabet) == "[Ba]+|[\\ ]"  # \x1c is no White_Space, although str.isspace says so
    assert specialise(r"[^\s\p{L}]", alphabet) == "[^\\ Ba]"
    assert specialise(r"\p{Lt}|x", alphabet) == "(?!)|x"  # no title-case letter in this text
    assert "\x1c".isspace() and "\x1c" not in WHITE_SPACE


@pytest.mark.parametrize("pattern", [r"(?i:\p{Lu})", r"(?i)\p{L}", r"\p{Han}", r"\w+", r"[[a]\p{L}]"])
def test_patterns_re_cannot_reproduce_are_left_to_regex(pattern):
    assert specialise(pattern, frozenset("aB")) is None
