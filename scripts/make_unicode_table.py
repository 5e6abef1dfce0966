"""Write the Unicode general-category table that pins Lanterne's pre-tokenization to one Unicode version.

tiktoken's regex engine (Rust `regex-syntax`) answers `\\p{L}`, `\\p{N}`, ... from Unicode 16.0; the
`regex` package answers from whatever version it was built with (17.0 in 2026). To cut text exactly
as tiktoken does, `lanterne.tokenization.unicode_classes` corrects `regex`'s classes with this table.

    pip install unicodedata2==16.0.0        # the Unicode Character Database of that version
    python scripts/make_unicode_table.py    # writes src/lanterne/tokenization/data/unicode-categories-16.0.0.txt

The file lists each code point where the general category changes: "<first code point, hex> <category>".
"""

from __future__ import annotations

import gzip
from pathlib import Path

import unicodedata2

OUT = Path(__file__).resolve().parents[1] / "src/lanterne/tokenization/data"


def category_runs() -> list[tuple[int, str]]:
    """(first code point, category) for every run of code points that share a general category."""
    runs: list[tuple[int, str]] = []
    for code_point in range(0x110000):
        category = unicodedata2.category(chr(code_point))
        if not runs or runs[-1][1] != category:
            runs.append((code_point, category))
    return runs


def main() -> None:
    version = unicodedata2.unidata_version
    lines = [f"# Unicode {version} general categories (from unicodedata2 {version}): first code point of each run, category"]
    lines += [f"{code_point:x} {category}" for code_point, category in category_runs()]
    target = OUT / f"unicode-categories-{version}.txt.gz"
    target.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("ascii"), mtime=0))
    print(f"wrote {target} ({len(lines) - 1} runs)")


if __name__ == "__main__":
    main()
