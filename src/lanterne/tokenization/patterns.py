"""Pre-tokenization: the regular expressions that cut text into words before BPE merges bytes.

GPT-2, GPT-4 (cl100k) and GPT-4o (o200k) each split text with one pattern; BPE then never
merges across two pieces. The `regex` module supplies the Unicode classes (\\p{L}, \\p{N}, ...).
"""

from __future__ import annotations

import regex

from lanterne.errors import TokenizerError

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
