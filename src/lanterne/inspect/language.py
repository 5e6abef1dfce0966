"""French or English? The tour speaks the language of the student's prompt unless told otherwise."""

from __future__ import annotations

import regex

_FRENCH = set("le la les un une des du de et est à au aux en se ce que qui ne pas il elle nous vous ils sur dans pour par avec son sa ses".split())
_ENGLISH = set("the a an and is are of to in on at it he she we you they that this with for by was were be his her its".split())


def detect_language(text: str) -> str:
    """'fr' when the text reads as French (its small words, its accents), else 'en'."""
    words = regex.findall(r"\p{L}+", text.lower())
    french = sum(word in _FRENCH for word in words) + 2 * len(regex.findall(r"[àâçéèêëîïôûùüÿœ]", text.lower()))
    english = sum(word in _ENGLISH for word in words)
    return "fr" if french > english else "en"
