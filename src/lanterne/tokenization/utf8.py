"""Text as UTF-8 bytes, which is what a byte-level tokenizer really reads.

A character is 1 to 4 bytes, and a token may hold part of one: these helpers map bytes back to
characters (for spans and offsets), repair strings that UTF-8 cannot hold (lone surrogates), and
give GPT-2's printable stand-in for each byte, used in tokenizer files.
"""

from __future__ import annotations


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


def char_of_byte(text: str) -> list[int]:
    """For each byte of `text` in UTF-8, the index of the character that holds it."""
    owners: list[int] = []
    for index, char in enumerate(text):
        owners += [index] * len(char.encode("utf-8", errors="surrogatepass"))
    return owners


def is_blank(token: bytes) -> bool:
    return all(byte in b" \n\t" for byte in token)


def repair_surrogates(text: str) -> str:
    """`text` as UTF-8 can hold it, as tiktoken reads it: a high+low surrogate pair becomes the
    character it encodes, a lone surrogate becomes U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def repair_surrogates_with_origin(text: str) -> tuple[str, list[int] | None]:
    """`repair_surrogates(text)`, and where each of its characters (and its end) starts in `text`;
    (text, None) when `text` has no surrogate."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        pass
    repaired = repair_surrogates(text)
    origin = []
    position = 0
    for char in repaired:
        origin.append(position)
        position += 2 if ord(char) > 0xFFFF and text[position] != char else 1
    origin.append(position)
    return repaired, origin
