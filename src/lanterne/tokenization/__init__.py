"""Tokenization: cutting text into tokens (letters, words or sub-words) and numbering them.

`load(name_or_path)` returns any tokenizer: a published vocabulary ('o200k_base', 'gpt2'), a
HuggingFace model ('hf:bert-base-uncased'), or a file. `train(kind, text, ...)` makes a new one.
"""

from __future__ import annotations

import os
from pathlib import Path

from lanterne.errors import TokenizerError, UnknownTokenizerError, VocabularyFileError
from lanterne.tokenization.base import Token, Tokenizer, check_lanterne_document, read_json_document
from lanterne.tokenization.bpe import Backend, ByteLevelBPE
from lanterne.tokenization.bpe_training import train_bpe
from lanterne.tokenization.char import CharTokenizer
from lanterne.tokenization.tiktoken_files import NAMED_VOCABULARIES, ALIASES, canonical_name, load_named, load_tiktoken_path
from lanterne.tokenization.word import WordTokenizer

__all__ = [
    "ByteLevelBPE",
    "CharTokenizer",
    "Token",
    "Tokenizer",
    "WordTokenizer",
    "KINDS",
    "load",
    "train",
    "train_bpe",
]

KINDS = ("char", "word", "bpe")


def _kind_classes() -> dict[str, type[Tokenizer]]:
    from lanterne.tokenization.sentencepiece import SentencePieceBPE
    from lanterne.tokenization.wordpiece import WordPieceTokenizer

    return {
        "char": CharTokenizer,
        "word": WordTokenizer,
        "bpe": ByteLevelBPE,
        "wordpiece": WordPieceTokenizer,
        "sentencepiece": SentencePieceBPE,
    }


def known_names() -> list[str]:
    """Every name `load` accepts besides paths and 'hf:NAME'."""
    return sorted(NAMED_VOCABULARIES) + sorted(ALIASES)


def load(name_or_path: str | os.PathLike, *, pattern: str | None = None, backend: Backend = "auto") -> Tokenizer:
    """Any tokenizer, by published name, 'hf:NAME', or path to a Lanterne, HuggingFace or .tiktoken file.

    `pattern` names the pre-tokenization of a `.tiktoken` file that is not a published one.
    """
    text = str(name_or_path)
    if canonical_name(text) is not None and not Path(text).exists():
        return load_named(text, backend=backend)
    if text.startswith("hf:"):
        from lanterne.tokenization.huggingface import load_from_hub

        return load_from_hub(text[3:], backend=backend)
    path = Path(text)
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise UnknownTokenizerError(f"folder {name_or_path} has no tokenizer.json; pass the tokenizer file itself")
    if not path.is_file():
        if text in KINDS:
            raise UnknownTokenizerError(
                f"'{text}' tokenizers are trained on your text first: lanterne tokenizers train --kind {text} --data FILE --out PATH"
            )
        raise UnknownTokenizerError(
            f"unknown tokenizer '{text}': not a file, and not one of {', '.join(known_names())} or hf:NAME"
        )
    return load_file(path, pattern=pattern, backend=backend)


def load_file(path: Path, *, pattern: str | None = None, backend: Backend = "auto") -> Tokenizer:
    """A tokenizer from a file, recognised by its content: Lanterne JSON, HuggingFace JSON or .tiktoken."""
    with open(path, "rb") as stream:
        head = stream.read(64).lstrip()
    if not head.startswith(b"{"):
        return load_tiktoken_path(path, pattern, backend=backend)
    document = read_json_document(path)  # parsed once, whichever format it turns out to be
    if isinstance(document, dict) and "model" in document and "format" not in document:
        from lanterne.tokenization.huggingface import load_tokenizer_json

        return load_tokenizer_json(path, backend=backend, document=document)
    document = check_lanterne_document(document, path)
    kind_class = _kind_classes().get(document.get("kind"))
    if kind_class is None:
        raise VocabularyFileError(f"{path}: unknown tokenizer kind {document.get('kind')!r}")
    try:
        tokenizer = ByteLevelBPE.from_dict(document, backend=backend) if kind_class is ByteLevelBPE else kind_class.from_dict(document)
        tokenizer.chat_template = document.get("chat_template")
        return tokenizer
    except (KeyError, TypeError) as error:
        raise VocabularyFileError(f"{path}: the {document.get('kind')} tokenizer file lacks {error}; train it again") from None


def train(kind: str, text: str, vocab_size: int | None = None, **options) -> Tokenizer:
    """Train a tokenizer of `kind` ('char', 'word' or 'bpe') on `text`.

    For 'word', `vocab_size` is the maximum vocabulary (with `<unk>`); for 'bpe' it is required.
    Options: `min_count` (word); `pattern`, `special_tokens` (bpe).
    """
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "word":
        return WordTokenizer.train(text, max_size=vocab_size, min_count=options.get("min_count", 1))
    if kind == "bpe":
        if vocab_size is None:
            raise TokenizerError("a BPE tokenizer needs a vocabulary size (--vocab-size, at least 256)")
        return train_bpe(text, vocab_size, **options)
    raise UnknownTokenizerError(f"unknown tokenizer kind '{kind}'; choose one of {', '.join(KINDS)}")
