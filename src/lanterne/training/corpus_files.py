"""Reading a training corpus: a text file, a folder of text files or a JSONL file, checked and streamed.

Every file is checked (missing, empty, binary, not UTF-8) and hashed in one pass; then the text flows
in pieces of about CHUNK_BYTES, so a corpus larger than memory can be tokenized.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lanterne.errors import TrainingDataError

# Text is read, tokenized and written about this many bytes at a time (a chunk ends at a line end).
CHUNK_BYTES = 4 * 2**20
FOLDER_SUFFIXES = (".txt", ".md")
# As in lanterne.files.read_text_file: a text file has no NUL byte near its start.
_BINARY_PROBE_BYTES = 8192
DOCUMENT_BREAK = None  # in a stream of text parts, the boundary between two documents


@dataclass(frozen=True)
class CorpusSource:
    """What `prepare_corpus` reads: the files in order, their kind, and a hash of their content."""

    path: Path
    kind: str  # "text", "folder" or "jsonl"
    files: tuple[Path, ...]  # files with some text, in reading order
    text_field: str
    size_bytes: int
    content_hash: str


def open_source(path: Path, text_field: str) -> CorpusSource:
    """Check every file of `path` (missing, empty, binary, not UTF-8) and hash their bytes, in one pass."""
    if not path.exists():
        raise TrainingDataError(f"corpus file not found: {path} (check the path)")
    if path.is_dir():
        kind = "folder"
        candidates = sorted(
            (file for file in path.rglob("*") if file.suffix.lower() in FOLDER_SUFFIXES and file.is_file()
             and not any(part.startswith(".") for part in file.relative_to(path).parts)),
            key=lambda file: file.relative_to(path).as_posix(),
        )
        if not candidates:
            raise TrainingDataError(f"corpus folder has no .txt or .md file: {path} (put your text files in it)")
    else:
        kind = "jsonl" if path.suffix.lower() == ".jsonl" else "text"
        candidates = [path]
    digest = hashlib.sha256(f"{kind}\0{text_field if kind == 'jsonl' else ''}\0".encode("utf-8"))
    files, size = [], 0
    for file in candidates:
        if kind == "folder":
            digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0".encode("utf-8"))
        if _check_and_hash(file, digest):
            files.append(file)
            size += file.stat().st_size
    if not files:
        what = "holds only empty files" if kind == "folder" else "is empty"
        raise TrainingDataError(f"corpus {'folder' if kind == 'folder' else 'file'} {what}: {path} (give a file with some text)")
    return CorpusSource(path.resolve(), kind, tuple(files), text_field, size, digest.hexdigest())


def _check_and_hash(path: Path, digest: Any) -> bool:
    """Feed the bytes of `path` to `digest`; True if it holds some text. Raise if binary or not UTF-8."""
    with open(path, "rb") as stream:
        if b"\x00" in stream.read(_BINARY_PROBE_BYTES):
            raise TrainingDataError(f"corpus file looks binary, not text: {path} (give a UTF-8 text file)")
        stream.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        has_text, offset = False, 0
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
            has_text = has_text or bool(block.strip())
            _decode(decoder, block, offset, path)
            offset += len(block)
        _decode(decoder, b"", offset, path, final=True)
    return has_text


def _decode(decoder: Any, block: bytes, offset: int, path: Path, final: bool = False) -> str:
    """Text of `block` (which starts at byte `offset` of `path`); a character may span two blocks."""
    pending = len(decoder.getstate()[0])  # bytes of a character begun in the previous block
    try:
        return decoder.decode(block, final)
    except UnicodeDecodeError as error:
        raise TrainingDataError(
            f"corpus file is not valid UTF-8: {path} (byte {offset - pending + error.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        ) from None


def _file_pieces(path: Path) -> Iterator[str]:
    """The text of `path`, in pieces of about CHUNK_BYTES that end at a line end when the block has one."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, offset = "", 0
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            text = carry + _decode(decoder, block, offset, path)
            offset += len(block)
            cut = text.rfind("\n") + 1 or len(text)
            if cut:
                yield text[:cut]
            carry = text[cut:]
    carry += _decode(decoder, b"", offset, path, final=True)
    if carry:
        yield carry


def _jsonl_texts(path: Path, text_field: str) -> Iterator[str]:
    """The `text_field` of every line of a .jsonl file; a bad line is an error naming its number."""
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TrainingDataError(
                    f"{path} line {number} is not JSON ({error.msg}); write one object per line, like {{\"{text_field}\": \"...\"}}"
                ) from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise TrainingDataError(
                    f"{path} line {number} has no text field \"{text_field}\"; add it, or name the field holding the text (text_field)"
                )
            if text:
                yield text


def text_parts(source: CorpusSource) -> Iterator[str | None]:
    """The corpus as a stream of text pieces, with DOCUMENT_BREAK between two documents."""
    if source.kind == "jsonl":
        documents: Iterable[Iterable[str]] = ([text] for text in _jsonl_texts(source.files[0], source.text_field))
    else:
        documents = (_file_pieces(file) for file in source.files)
    for index, pieces in enumerate(documents):
        if index:
            yield DOCUMENT_BREAK
        yield from pieces


def chunks(parts: Iterable[str | None], separator: str | None) -> Iterator[tuple[list[str | None], int]]:
    """Group parts into chunks of at least CHUNK_BYTES: (parts, UTF-8 bytes of their text).

    With a `separator` text, document breaks become that text; otherwise they stay DOCUMENT_BREAK.
    """
    chunk: list[str | None] = []
    size = 0
    for part in parts:
        if part is DOCUMENT_BREAK and separator is not None:
            part = separator
        chunk.append(part)
        size += 0 if part is DOCUMENT_BREAK else len(part.encode("utf-8"))
        if size >= CHUNK_BYTES:
            yield chunk, size
            chunk, size = [], 0
    if chunk:
        yield chunk, size
