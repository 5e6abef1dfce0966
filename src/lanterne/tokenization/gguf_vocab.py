"""The tokenizer stored in a GGUF file's header: its tokens, merges, special tokens and pre-tokenizer.

`tokenizer.ggml.model = "gpt2"` is a byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen2): the tokens
are written in GPT-2's byte alphabet, the merges say which pairs join, and `tokenizer.ggml.pre`
names the regex that cuts the text first. It becomes a `ByteLevelBPE`, so `explain`, `tokens` and
tiktoken's exact merge rule apply to it unchanged.

`tokenizer.ggml.model = "llama"` is a SentencePiece BPE (Gemma, Llama 2, Mistral): pieces with '▁'
for spaces, scores instead of merges, '<0xNN>' byte pieces. It becomes a `SentencePieceBPE` that
reads the file as transformers does, so ids match `AutoTokenizer.from_pretrained(..., gguf_file=...)`.
"""

from __future__ import annotations

from typing import Any

from lanterne.errors import VocabularyFileError
from lanterne.tokenization.bpe import Backend, ByteLevelBPE
from lanterne.tokenization.huggingface import check_merges_follow_ids
from lanterne.tokenization.patterns import CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN
from lanterne.tokenization.sentencepiece import SPACE, SentencePieceBPE
from lanterne.tokenization.utf8 import bytes_to_unicode

# tokenizer.ggml.pre -> the pattern llama.cpp cuts text with, as one regex.
PRE_TOKENIZERS = {
    "default": GPT2_PATTERN,
    "gpt-2": GPT2_PATTERN,
    # SmolLM: every digit alone, then GPT-2's pattern.
    "smollm": r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    # Llama 3: GPT-4's pattern (cl100k).
    "llama-bpe": CL100K_PATTERN,
    "llama3": CL100K_PATTERN,
    # GPT-4o's pattern (o200k).
    "gpt-4o": O200K_PATTERN,
    # Qwen2: GPT-4's pattern, digits one by one.
    "qwen2": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
}

# tokenizer.ggml.token_type values.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_from_gguf(
    metadata: dict[str, Any], source: str, *, backend: Backend = "auto"
) -> ByteLevelBPE | SentencePieceBPE:
    """The tokenizer of a GGUF header (see `interop.gguf.read_metadata`). `backend` applies to byte-level BPE."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind == "gpt2":
        return _byte_level_bpe(metadata, source, backend)
    if kind == "llama":
        return _sentencepiece_bpe(metadata, source)
    if kind is None:
        raise VocabularyFileError(f"{source} holds no tokenizer (no tokenizer.ggml.model); pass one with --tokenizer")
    raise VocabularyFileError(
        f"{source}: tokenizer kind {kind!r} is not supported yet; Lanterne reads GGUF tokenizers of kind "
        "'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
    )


def _byte_level_bpe(metadata: dict[str, Any], source: str, backend: Backend) -> ByteLevelBPE:
    tokens: list[str] = list(metadata.get("tokenizer.ggml.tokens") or [])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    merges: list[str] = list(metadata.get("tokenizer.ggml.merges") or [])
    if not tokens or len(types) != len(tokens):
        raise VocabularyFileError(f"{source}: the tokenizer's tokens and token types are missing or of different lengths")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise VocabularyFileError(
            f"{source}: pre-tokenizer {pre!r} is not known to Lanterne; it knows {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for token_id, (token, token_type) in enumerate(zip(tokens, types)):
        if token_type == UNUSED:
            continue  # padding rows ('[PAD123]'): no text becomes them
        if token_type in (CONTROL, USER_DEFINED):
            specials[token] = token_id  # matched in the text (when allowed), never built by merges
        elif all(char in byte_of for char in token):
            ranks[bytes(byte_of[char] for char in token)] = token_id
        else:
            raise VocabularyFileError(f"{source}: token {token_id} ({token!r}) is not in GPT-2's byte alphabet; this BPE is not byte-level")
    used = {token: token_id for token_id, (token, token_type) in enumerate(zip(tokens, types)) if token_type != UNUSED}
    check_merges_follow_ids(merges, used, specials, source)
    eos_id = metadata.get("tokenizer.ggml.eos_token_id")
    eos_token = tokens[eos_id] if eos_id is not None and 0 <= eos_id < len(tokens) and tokens[eos_id] in specials else None
    name = metadata.get("general.name")
    return ByteLevelBPE(
        ranks, PRE_TOKENIZERS[pre], specials, name=name, backend=backend, eos_token=eos_token, unknown_bytes="drop"
    )


# Architectures whose SentencePiece GGUF transformers reads as Gemma: no space prefix, merges in file order.
_GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")


def _sentencepiece_bpe(metadata: dict[str, Any], source: str) -> SentencePieceBPE:
    """A SentencePiece BPE, read as transformers reads it (its GGUF tokenizer builders).

    Gemma: tokens of two or more spaces are stored with real spaces ('  '); transformers spells them
    '▁▁', as the text is spelled once its spaces become '▁'. And the file's scores are not Gemma's merge
    order (they put control tokens at -1000), so merges go in file order: lower id first.
    Other architectures (Llama 2, Mistral): merges by score, a '▁' before the text (Metaspace's 'first');
    Phi-3: a '▁' before every text between special tokens ('prepend').
    """
    tokens: list[str] = list(metadata.get("tokenizer.ggml.tokens") or [])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    scores = metadata.get("tokenizer.ggml.scores")
    if not tokens or len(types) != len(tokens) or (scores is not None and len(scores) != len(tokens)):
        raise VocabularyFileError(f"{source}: the tokenizer's tokens, scores and token types are missing or of different lengths")
    architecture = metadata.get("general.architecture", "llama")
    gemma = architecture in _GEMMA_ARCHITECTURES
    if gemma:
        tokens = [SPACE * len(token) if " " in token and not token.strip() else token for token in tokens]
    elif scores is None and "tokenizer.ggml.merges" not in metadata:
        raise VocabularyFileError(f"{source}: this SentencePiece tokenizer has no scores (tokenizer.ggml.scores)")
    piece_id = {token: token_id for token_id, token in enumerate(tokens)}  # the last of two equal tokens, as transformers
    named = [metadata.get(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos", "unknown", "padding")]
    bos_id, eos_id, unk_id, pad_id = [
        token_id if token_id is not None and 0 <= token_id < len(tokens) else None for token_id in named
    ]
    special = {token_id for token_id, token_type in enumerate(types) if token_type == CONTROL}
    special |= {token_id for token_id in (bos_id, eos_id, unk_id, pad_id) if token_id is not None}
    # transformers adds a user-defined token only when its text is a piece (not Gemma's respelled spaces).
    user_defined = {
        piece_id[token] for token, token_type in zip(metadata["tokenizer.ggml.tokens"], types)
        if token_type == USER_DEFINED and token in piece_id
    } - special
    if architecture == "phi3":
        space_prefix = "prepend"
    else:
        space_prefix = "never" if gemma or not metadata.get("tokenizer.ggml.add_space_prefix", True) else "first"
    merges = [tuple(merge.split(" ")) for merge in metadata.get("tokenizer.ggml.merges") or []]  # rare; then they rule
    try:
        return SentencePieceBPE(
            tokens,
            scores=None if gemma or merges else scores,
            merges=merges or None,
            special_tokens=special,
            user_defined_tokens=user_defined,
            space_prefix=space_prefix,
            bos_id=bos_id,
            eos_id=eos_id,
            unk_id=unk_id,
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", True)),
            name=metadata.get("general.name"),
        )
    except VocabularyFileError as error:
        raise VocabularyFileError(f"{source}: {error}") from None
