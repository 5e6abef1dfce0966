"""Which characters are letters, digits or marks: the pre-tokenizer's Unicode classes, pinned to one version.

`\\p{L}` (letters) or `\\p{N}` (digits) depend on the Unicode version: each new version names
thousands of new characters. tiktoken's regex engine answers from Unicode 16.0, the `regex`
package from the version it was built with. A character that is a letter for one and unassigned
for the other is cut differently, so its ids differ. `pin_unicode` rewrites a pattern so that
`regex` answers as Unicode 16.0 does, from the table in `data/` (made by
`scripts/make_unicode_table.py`): each class becomes "`regex`'s class, minus what it has too
many, plus what it lacks" — usually a few dozen ranges — so matching stays as fast as before.
"""

from __future__ import annotations

import gzip
import re
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import regex

# The version tiktoken 0.14's regex engine (regex-syntax) follows; the table in data/ is of this version.
UNICODE_VERSION = "16.0.0"
_TABLE = f"unicode-categories-{UNICODE_VERSION}.txt.gz"

_ESCAPE = regex.compile(r"\\(?:([pP])\{(\w+)\}|.)", regex.DOTALL)

Ranges = list[tuple[int, int]]  # inclusive (first, last) code points


@lru_cache(maxsize=None)
def _category_runs() -> tuple[list[int], list[str]]:
    """The table: the first code point of each run of one general category, and that category."""
    data = gzip.decompress(resources.files("lanterne.tokenization").joinpath("data", _TABLE).read_bytes())
    starts: list[int] = []
    categories: list[str] = []
    for line in data.decode("ascii").splitlines():
        if line and not line.startswith("#"):
            start, category = line.split()
            starts.append(int(start, 16))
            categories.append(category)
    return starts, categories


def category(char: str) -> str:
    """The general category of `char` in Unicode 16.0 ('Lu', 'Nd', 'Cn' for unassigned, ...)."""
    starts, categories = _category_runs()
    return categories[bisect_right(starts, ord(char)) - 1]


@lru_cache(maxsize=None)
def _table_ranges(name: str) -> Ranges:
    """Ranges of the code points in general category `name` ('Lu') or group ('L') in Unicode 16.0."""
    starts, categories = _category_runs()
    ends = starts[1:] + [0x110000]
    ranges: Ranges = []
    for start, end, run_category in zip(starts, ends, categories):
        if run_category.startswith(name):
            if ranges and ranges[-1][1] == start - 1:
                ranges[-1] = (ranges[-1][0], end - 1)
            else:
                ranges.append((start, end - 1))
    return ranges


@lru_cache(maxsize=1)
def _all_code_points() -> str:
    """Every code point but the surrogates, in order (one string, for asking `regex` about all at once)."""
    points = array("I", range(0xD800)) + array("I", range(0xE000, 0x110000))
    return points.tobytes().decode(f"utf-32-{sys.byteorder[0]}e")


@lru_cache(maxsize=None)
def _regex_ranges(name: str) -> Ranges:
    """Ranges of the code points that the installed `regex` puts in `\\p{name}`."""
    return [(ord(match.group()[0]), ord(match.group()[-1])) for match in regex.finditer(rf"\p{{{name}}}+", _all_code_points())]


def _subtract(ranges: Ranges, minus: Ranges) -> Ranges:
    """The code points of `ranges` that are not in `minus` (both sorted, disjoint)."""
    result: Ranges = []
    index = 0
    for first, last in ranges:
        while index < len(minus) and minus[index][1] < first:
            index += 1
        cursor, scan = first, index
        while scan < len(minus) and minus[scan][0] <= last:
            if minus[scan][0] > cursor:
                result.append((cursor, minus[scan][0] - 1))
            cursor = max(cursor, minus[scan][1] + 1)
            scan += 1
        if cursor <= last:
            result.append((cursor, last))
    return result


def _set_items(ranges: Ranges) -> str:
    return "".join(f"\\U{first:08x}" if first == last else f"\\U{first:08x}-\\U{last:08x}" for first, last in ranges)


@dataclass(frozen=True)
class PinnedClass:
    """Unicode 16.0's `\\p{name}` for the installed `regex`, and the characters on which the two disagree."""

    name: str
    pattern: str  # a version-1 set, or "\\p{name}" itself when `regex` already agrees
    disagreements: frozenset[str]


@lru_cache(maxsize=None)
def pinned_class(name: str) -> PinnedClass:
    """Unicode 16.0's general category `name` ('L', 'Lu', 'N', ...) written for the installed `regex`."""
    wanted, have = _table_ranges(name), _regex_ranges(name)
    extra, lacking = _subtract(have, wanted), _subtract(wanted, have)
    disagreements = frozenset(chr(point) for first, last in extra + lacking for point in range(first, last + 1))
    if not disagreements:
        return PinnedClass(name, f"\\p{{{name}}}", disagreements)
    core = f"[\\p{{{name}}}--[{_set_items(extra)}]]" if extra else f"\\p{{{name}}}"
    return PinnedClass(name, f"[{core}{_set_items(lacking)}]", disagreements)


def _is_general_category(name: str) -> bool:
    """True for 'L', 'Lu', 'N', 'Nd', ...; False for scripts ('Latin') and other properties."""
    return len(name) <= 2 and bool(_table_ranges(name))


@dataclass(frozen=True)
class PinnedPattern:
    """A pre-tokenization regex whose classes follow Unicode 16.0 under the installed `regex`.

    `pattern` is exact for every text, but set operations make it slower. Text that holds none of
    `disagreements` is cut the same by the original pattern, which is the fast path.
    """

    pattern: str
    disagreements: frozenset[str]


def pin_unicode(pattern: str) -> PinnedPattern:
    """`pattern` with each `\\p{X}` / `\\P{X}` general category (L, Lu, N, M, ...) answered as Unicode 16.0 does.

    Other escapes and properties (scripts, `\\s`) are left as they are. The result uses `regex`'s
    version-1 set syntax (nested sets, `--`) where a class needed correcting.
    """
    disagreements: set[str] = set()

    def replace(match: regex.Match) -> str:
        sign, name = match.group(1), match.group(2)
        if sign is None or not _is_general_category(name):
            return match.group()
        pinned = pinned_class(name)
        if not pinned.disagreements:
            return match.group()
        disagreements.update(pinned.disagreements)
        return pinned.pattern if sign == "p" else f"[^{pinned.pattern}]"

    rewritten = _ESCAPE.sub(replace, pattern)
    if not disagreements:
        return PinnedPattern(pattern, frozenset())
    # V1 turns full case-folding on for (?i); (?-f) keeps the simple folding that tiktoken and V0 use.
    return PinnedPattern(f"(?V1-f){rewritten}", frozenset(disagreements))


# Unicode's White_Space property: what `\s` means for tiktoken's engine and for `regex`. It has not
# changed since Unicode 6.3. Python's `re` would also count U+001C..U+001F, hence the spelling out.
WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

_PATTERN_TOKEN = regex.compile(r"\\[pP]\{\w+\}|\\.|\[\^?|\]|.", regex.DOTALL)
_GROUP_FLAGS = regex.compile(r"\?([a-zA-Z-]*)([:)])")
_UNICODE_ESCAPES = set("wWdDbB")  # their meaning in `re` follows Python's own Unicode tables


def _members(escape: str, alphabet: frozenset[str]) -> set[str] | None:
    """The characters of `alphabet` that the class `escape` matches, None if it is no class (e.g. `\\n`).

    Raises ValueError for an escape whose meaning `re` would not reproduce.
    """
    if escape in ("\\s", "\\S"):
        spaces = alphabet & WHITE_SPACE
        return set(spaces) if escape == "\\s" else set(alphabet - spaces)
    match = _ESCAPE.fullmatch(escape)
    if match and match.group(1):
        name = match.group(2)
        if not _is_general_category(name):
            raise ValueError(f"property {name} is not a general category")
        inside = {char for char in alphabet if category(char).startswith(name)}
        return inside if match.group(1) == "p" else set(alphabet - inside)
    if escape[1] in _UNICODE_ESCAPES:
        raise ValueError(f"escape {escape} is not spelled out")
    return None


def specialise(pattern: str, alphabet: frozenset[str]) -> str | None:
    """`pattern` for Python's `re`, exact on any text made only of `alphabet`, or None if it cannot be.

    Each class (`\\p{L}`, `\\P{N}`, `\\s`, ...) is spelled out as the characters of `alphabet` it
    contains, by Unicode 16.0's categories: `re` matches a short list of characters faster than
    `regex` looks up a property, and the text's other characters never need an answer.
    """
    out: list[str] = []
    content: list[str] | None = None  # inside a [...] set: its items so far
    negated = False
    ignore_case = [False]  # per open group: does (?i) apply inside it
    for match in _PATTERN_TOKEN.finditer(pattern):
        token = match.group()
        if content is None and token == "(":
            flags = _GROUP_FLAGS.match(pattern, match.end())
            if flags and flags.group(2) == ")" and "i" in flags.group(1):
                return None  # (?i) for the rest of the pattern
            ignore_case.append(ignore_case[-1] or bool(flags and "i" in flags.group(1).split("-")[0]))
        elif content is None and token == ")" and len(ignore_case) > 1:
            ignore_case.pop()
        if token.startswith("\\"):
            try:
                members = _members(token, alphabet)
            except ValueError:
                return None
            if members is not None and ignore_case[-1]:
                return None  # a spelled-out class would also match the other case of its letters
            items = token if members is None else "".join(re.escape(char) for char in sorted(members))
            if content is not None:
                content.append(items)
            elif members is None:
                out.append(token)
            else:
                out.append(f"[{items}]" if items else "(?!)")
        elif token in ("[", "[^"):
            if content is not None:
                return None  # a nested set: `regex` syntax that `re` reads otherwise
            content, negated = [], token == "[^"
        elif token == "]" and content is not None:
            if not content:
                return None  # "[]...]": a literal ']' first, read differently by the two engines
            items = "".join(content)
            if items:
                out.append(f"[{'^' if negated else ''}{items}]")
            else:  # every item was a class with no member in this alphabet
                out.append("(?s:.)" if negated else "(?!)")
            content = None
        elif content is not None:
            content.append(token)
        else:
            out.append(token)
    return "".join(out) if content is None else None
