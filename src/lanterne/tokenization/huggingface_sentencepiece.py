"""Reading a HuggingFace tokenizer.json that holds a SentencePiece BPE (Gemma, Llama 2, Mistral).

Such a file is a BPE with byte fallback ('<0xNN>' pieces) whose spaces become '▁', by a
Replace normalizer (Gemma), a Metaspace pre-tokenizer (Llama, Mistral) or Prepend + Replace (Llama 2's
older files). It becomes a SentencePieceBPE with the same ids; any other pipeline is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lanterne.errors import VocabularyFileError
from lanterne.tokenization.sentencepiece import SPACE, SentencePieceBPE, SpacePrefix

_SUPPORTED = (
    "Lanterne reads SentencePiece BPE with the normalizer Replace(' ', '▁') (Gemma), the pre-tokenizer "
    "Metaspace(split=false) (Llama, Mistral), or the normalizer Sequence[Prepend('▁'), Replace(' ', '▁')] (Llama 2)"
)


def sentencepiece_bpe(document: dict[str, Any], path: Path, name: str | None = None) -> SentencePieceBPE:
    """The SentencePieceBPE a tokenizer.json describes (see `huggingface.load_tokenizer_json`)."""
    model = document["model"]
    for field in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"):
        if model.get(field):
            raise VocabularyFileError(f"{path}: SentencePiece BPE with {field}={model[field]!r} is not supported")
    if not model.get("byte_fallback"):
        raise VocabularyFileError(
            f"{path}: SentencePiece BPE without byte_fallback is not supported (unknown characters would differ)"
        )
    space_prefix = _space_prefix(document.get("normalizer"), document.get("pre_tokenizer"), path)
    by_id: dict[int, str] = {int(token_id): piece for piece, token_id in model["vocab"].items()}
    special, user_defined = set(), set()
    for added in document.get("added_tokens") or []:
        content, token_id = added["content"], int(added["id"])
        if any(added.get(flag) for flag in ("lstrip", "rstrip", "single_word")) or (
            added.get("normalized") and (" " in content or SPACE in content)
        ):
            raise VocabularyFileError(
                f"{path}: added token {content!r} is matched with lstrip/rstrip/single_word or after normalization; "
                "Lanterne matches added tokens as they are written"
            )
        if by_id.setdefault(token_id, content) != content:
            raise VocabularyFileError(
                f"{path}: added token {content!r} has id {token_id}, which is {by_id[token_id]!r} in the vocabulary"
            )
        (special if added.get("special") else user_defined).add(token_id)
    if sorted(by_id) != list(range(len(by_id))):
        raise VocabularyFileError(f"{path}: token ids are not 0..{len(by_id) - 1} without gaps; the file is corrupt")
    pieces = [by_id[token_id] for token_id in range(len(by_id))]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model.get("merges") or []]
    if any(len(merge) != 2 for merge in merges):
        raise VocabularyFileError(f"{path}: a merge is not two pieces; the file is corrupt")
    piece_id = {piece: token_id for token_id, piece in enumerate(pieces)}
    bos_id, add_bos = _beginning_token(document.get("post_processor"), piece_id)
    eos_id = next((piece_id[piece] for piece in ("<eos>", "</s>", "<|endoftext|>") if piece in piece_id), None)
    unk_token = model.get("unk_token")
    try:
        return SentencePieceBPE(
            pieces,
            merges=None if merges_follow_ids(pieces, merges) else merges,
            special_tokens=special,
            user_defined_tokens=user_defined - special,
            space_prefix=space_prefix,
            bos_id=bos_id,
            eos_id=eos_id,
            unk_id=piece_id.get(unk_token) if unk_token is not None else None,
            add_bos=add_bos,
            name=name,
        )
    except VocabularyFileError as error:
        raise VocabularyFileError(f"{path}: {error}") from None


def merges_follow_ids(pieces: list[str], merges: list[tuple[str, ...]]) -> bool:
    """True when `merges` is exactly every split of every piece into two pieces, by the joined piece's id,
    then the longer left part first: transformers' list for Gemma. Then the merge order is the ids, and
    the file's half-million merges need not be kept."""
    piece_id = {piece: token_id for token_id, piece in enumerate(pieces)}
    expected: list[tuple[str, ...]] = []
    for token_id, piece in enumerate(pieces):
        if len(piece) > 1 and piece_id[piece] == token_id:  # a repeated piece merges under its last id
            cuts = range(len(piece) - 1, 0, -1)
            expected += [
                (piece[:cut], piece[cut:]) for cut in cuts if piece[:cut] in piece_id and piece[cut:] in piece_id
            ]
    return expected == merges


def _space_prefix(normalizer: dict[str, Any] | None, pre_tokenizer: dict[str, Any] | None, path: Path) -> SpacePrefix:
    """How spaces become '▁' and whether a '▁' goes before the text, from the normalizer and pre-tokenizer."""
    steps = normalizer["normalizers"] if normalizer and normalizer.get("type") == "Sequence" else [normalizer] if normalizer else []
    kinds = [step.get("type") for step in steps]
    if kinds in (["Replace"], ["Prepend", "Replace"]) and _replaces_spaces(steps[-1]):
        if pre_tokenizer is None or _splits_on_space(pre_tokenizer):  # nothing is left to split once spaces are '▁'
            if kinds == ["Replace"]:
                return "never"
            if steps[0].get("prepend") == SPACE:
                return "prepend"
    if not steps and pre_tokenizer and pre_tokenizer.get("type") == "Metaspace":
        if pre_tokenizer.get("replacement", SPACE) == SPACE and pre_tokenizer.get("split") is False:
            scheme = pre_tokenizer.get("prepend_scheme")
            if scheme is None:  # files older than prepend_scheme
                scheme = "always" if pre_tokenizer.get("add_prefix_space", True) else "never"
            if scheme in ("never", "first", "always"):
                return scheme
    found = f"normalizer {kinds or None}, pre-tokenizer {(pre_tokenizer or {}).get('type')}"
    raise VocabularyFileError(f"{path}: this SentencePiece pipeline ({found}) is not supported; {_SUPPORTED}")


def _replaces_spaces(step: dict[str, Any]) -> bool:
    return (step.get("pattern") or {}).get("String") == " " and step.get("content") == SPACE


def _splits_on_space(pre_tokenizer: dict[str, Any]) -> bool:
    return pre_tokenizer.get("type") == "Split" and (pre_tokenizer.get("pattern") or {}).get("String") == " "


def _beginning_token(post_processor: dict[str, Any] | None, piece_id: dict[str, int]) -> tuple[int | None, bool]:
    """(BOS id, whether the post-processor puts it before every text)."""
    single = (post_processor or {}).get("single") or []
    if post_processor and post_processor.get("type") == "TemplateProcessing" and single and "SpecialToken" in single[0]:
        token = single[0]["SpecialToken"]["id"]
        if token in piece_id:
            return piece_id[token], True
    return next((piece_id[piece] for piece in ("<bos>", "<s>") if piece in piece_id), None), False
