"""HuggingFace `tokenizer.json` files: reading BERT's WordPiece, GPT-2-style byte-level BPE, SentencePiece BPE; writing byte-level BPE.

A tokenizer.json describes a pipeline (normalizer -> pre-tokenizer -> model -> decoder); the
pipelines Lanterne implements become a WordPieceTokenizer, a ByteLevelBPE or a SentencePieceBPE
with the same ids, and any other says which part Lanterne cannot read. `load_from_hub` fetches one
from the Hub.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from lanterne.errors import DownloadError, InputFileError, LanterneError, TokenizerError, UnknownTokenizerError, VocabularyFileError
from lanterne.files import atomic_write_bytes
from lanterne.tokenization.base import Tokenizer
from lanterne.tokenization.bpe import Backend, ByteLevelBPE
from lanterne.tokenization.utf8 import bytes_to_unicode
from lanterne.tokenization.normalization import bert_normalization
from lanterne.tokenization.patterns import GPT2_PATTERN
from lanterne.tokenization.wordpiece import WordPieceTokenizer

# HuggingFace's simple normalizers and the Lanterne normalization steps doing the same.
_NORMALIZER_STEPS = {"NFD": ["nfd"], "Lowercase": ["lowercase"], "StripAccents": ["strip_all_marks"]}
_PRE_TOKENIZERS = {"BertPreTokenizer": "bert", "Whitespace": "whitespace", "WhitespaceSplit": "whitespace_split"}


def load_tokenizer_json(
    path: str | os.PathLike, backend: Backend = "auto", *, name: str | None = None, document: dict[str, Any] | None = None
) -> Tokenizer:
    """A WordPieceTokenizer (BERT), ByteLevelBPE (GPT-2 style) or SentencePieceBPE (Gemma, Llama 2) from a
    HuggingFace tokenizer.json.

    `backend` applies to byte-level BPE ('python', 'tiktoken' or 'auto'). Special tokens keep
    their ids; a BPE then treats them as tiktoken does (text spelling one must be allowed).
    Post-processors are not applied: ids never gain a BOS/[CLS] unless asked for.
    `document`: the file's JSON when the caller has parsed it already.
    """
    path = Path(path)
    if document is None:
        document = _read_json(path)
    model = document.get("model")
    if not isinstance(model, dict):
        raise VocabularyFileError(f"{path} has no \"model\" section; it is not a HuggingFace tokenizer.json")
    model_type = model.get("type") or _guess_model_type(model)
    try:
        if model_type == "WordPiece":
            return _wordpiece(document, path)
        if model_type == "BPE" and _is_sentencepiece(document):
            from lanterne.tokenization.huggingface_sentencepiece import sentencepiece_bpe

            return sentencepiece_bpe(document, path, name)
        if model_type == "BPE":
            return _byte_level_bpe(document, path, backend, name)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise VocabularyFileError(
            f"{path}: a {model_type} entry is missing or malformed ({error!r}); download the file again"
        ) from None
    raise VocabularyFileError(
        f"{path}: model type {model_type!r} is not supported; "
        "Lanterne reads WordPiece (BERT), byte-level BPE (GPT-2) and SentencePiece BPE (Gemma, Llama 2) tokenizers"
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputFileError(f"tokenizer file not found: {path} (check the path)")
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VocabularyFileError(f"{path} is not UTF-8 text; it is not a tokenizer.json, or it is corrupt") from None
    except json.JSONDecodeError as error:
        raise VocabularyFileError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno}); "
            "the file is truncated or corrupt: download it again"
        ) from None
    if not isinstance(document, dict):
        raise VocabularyFileError(f"{path} holds JSON but not a tokenizer.json (expected an object with a \"model\")")
    return document


def _is_sentencepiece(document: dict[str, Any]) -> bool:
    """A BPE that falls back to '<0xNN>' pieces, or writes spaces as '▁': SentencePiece's, not byte-level."""
    if document["model"].get("byte_fallback"):
        return True
    steps = json.dumps([document.get("normalizer"), document.get("pre_tokenizer")], ensure_ascii=False)
    return "Metaspace" in steps or "▁" in steps


def _guess_model_type(model: dict[str, Any]) -> str | None:
    """Files written by old versions of `tokenizers` omit the model's type; its fields tell it."""
    if "merges" in model:
        return "BPE"
    if "max_input_chars_per_word" in model or "continuing_subword_prefix" in model:
        return "WordPiece"
    return None


def _added_tokens(document: dict[str, Any], path: Path) -> dict[str, int]:
    """The special added tokens (text -> id); other added tokens are not supported."""
    specials = {}
    for added in document.get("added_tokens") or []:
        if not added.get("special"):
            raise VocabularyFileError(
                f"{path}: added token {added['content']!r} is not special; Lanterne reads only special added tokens"
            )
        specials[added["content"]] = int(added["id"])
    return specials


# -- WordPiece ----------------------------------------------------------------------------------


def _wordpiece(document: dict[str, Any], path: Path) -> WordPieceTokenizer:
    model = document["model"]
    by_id = {int(token_id): piece for piece, token_id in model["vocab"].items()}
    if len(by_id) != len(model["vocab"]):
        raise VocabularyFileError(f"{path}: two WordPiece tokens share an id; the file is corrupt")
    specials = _added_tokens(document, path)
    for piece, token_id in specials.items():
        if by_id.setdefault(token_id, piece) != piece:
            raise VocabularyFileError(
                f"{path}: special token {piece!r} has id {token_id}, which is {by_id[token_id]!r} in the vocabulary"
            )
    if sorted(by_id) != list(range(len(by_id))):
        raise VocabularyFileError(
            f"{path}: WordPiece ids are not 0..{len(by_id) - 1} without gaps; the file is corrupt"
        )
    cls_token, sep_token = _wrapping_tokens(document.get("post_processor"))
    prefix = model.get("continuing_subword_prefix")
    # Lanterne always decodes as BERT's WordPiece decoder; the file only says whether to clean up spaces.
    decoder = document.get("decoder") or {}
    return WordPieceTokenizer(
        [by_id[token_id] for token_id in range(len(by_id))],
        unk_token=model.get("unk_token", "[UNK]"),
        continuing_subword_prefix="##" if prefix is None else prefix,
        max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
        normalization=_normalization_steps(document.get("normalizer"), path),
        pre_tokenizer=_pre_tokenizer(document.get("pre_tokenizer"), path),
        special_tokens=list(specials),
        cls_token=cls_token,
        sep_token=sep_token,
        decode_cleanup=bool(decoder.get("cleanup", True)),
    )


def _normalization_steps(normalizer: dict[str, Any] | None, path: Path) -> list[str]:
    if normalizer is None:
        return []
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        return list(
            bert_normalization(
                lowercase=normalizer.get("lowercase", True),
                strip_accents=normalizer.get("strip_accents"),
                clean_text=normalizer.get("clean_text", True),
                handle_chinese_chars=normalizer.get("handle_chinese_chars", True),
            )
        )
    if kind == "Sequence":
        return [step for part in normalizer["normalizers"] for step in _normalization_steps(part, path)]
    if kind in _NORMALIZER_STEPS:
        return _NORMALIZER_STEPS[kind]
    raise VocabularyFileError(
        f"{path}: normalizer {kind!r} is not supported; Lanterne reads BertNormalizer, NFD, Lowercase, StripAccents"
    )


def _pre_tokenizer(pre_tokenizer: dict[str, Any] | None, path: Path) -> str:
    kind = (pre_tokenizer or {}).get("type")
    if kind not in _PRE_TOKENIZERS:
        raise VocabularyFileError(
            f"{path}: pre-tokenizer {kind!r} is not supported for WordPiece; "
            f"Lanterne reads {', '.join(_PRE_TOKENIZERS)}"
        )
    return _PRE_TOKENIZERS[kind]


def _wrapping_tokens(post_processor: dict[str, Any] | None) -> tuple[str, str]:
    """The tokens put before and after a single text ([CLS], [SEP] for BERT)."""
    post_processor = post_processor or {}
    if post_processor.get("type") == "BertProcessing":
        return post_processor["cls"][0], post_processor["sep"][0]
    if post_processor.get("type") == "TemplateProcessing":
        single = post_processor.get("single") or []
        if len(single) == 3 and "SpecialToken" in single[0] and "Sequence" in single[1] and "SpecialToken" in single[2]:
            return single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
    return "[CLS]", "[SEP]"


# -- byte-level BPE -----------------------------------------------------------------------------


def _byte_level_bpe(document: dict[str, Any], path: Path, backend: Backend, name: str | None) -> ByteLevelBPE:
    model = document["model"]
    for field in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field):
            raise VocabularyFileError(
                f"{path}: BPE with {field}={model[field]!r} is not supported; Lanterne reads byte-level BPE"
            )
    if document.get("normalizer") is not None:
        raise VocabularyFileError(
            f"{path}: normalizer {document['normalizer'].get('type')!r} before BPE is not supported; "
            "Lanterne's byte-level BPE reads the text as it is"
        )
    pattern = _byte_level_pattern(document.get("pre_tokenizer"), path)
    specials = _added_tokens(document, path)
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    ranks: dict[bytes, int] = {}
    for token, token_id in model["vocab"].items():
        if token in specials:
            continue  # special tokens are matched in the text, never built by merges
        if any(char not in byte_of for char in token):
            raise VocabularyFileError(
                f"{path}: vocabulary token {token!r} is not in GPT-2's byte alphabet; this BPE is not byte-level"
            )
        ranks[bytes(byte_of[char] for char in token)] = int(token_id)
    check_merges_follow_ids(model["merges"], model["vocab"], specials, path)
    return ByteLevelBPE(ranks, pattern, specials, name=name, backend=backend)


def _byte_level_pattern(pre_tokenizer: dict[str, Any] | None, path: Path) -> str:
    """The regex that cuts text before merging: GPT-2's for ByteLevel, or a Split's own regex."""
    pre_tokenizer = pre_tokenizer or {}
    steps = pre_tokenizer["pretokenizers"] if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    byte_level = steps[-1] if steps else {}
    if byte_level.get("type") != "ByteLevel":
        raise VocabularyFileError(
            f"{path}: BPE without a ByteLevel pre-tokenizer is not supported (found {pre_tokenizer.get('type')!r})"
        )
    if byte_level.get("add_prefix_space"):
        raise VocabularyFileError(
            f"{path}: ByteLevel with add_prefix_space=true is not supported (it adds a space before the text); "
            "set \"add_prefix_space\": false in the file if the model allows it"
        )
    if len(steps) == 1 and byte_level.get("use_regex", True):
        return GPT2_PATTERN
    if len(steps) == 2 and not byte_level.get("use_regex", True):
        split = steps[0]
        if (
            split.get("type") == "Split"
            and "Regex" in (split.get("pattern") or {})
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
        ):
            return split["pattern"]["Regex"]
    raise VocabularyFileError(
        f"{path}: this pre-tokenizer is not supported; Lanterne reads ByteLevel(use_regex=true) "
        "or Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)]"
    )


def byte_level_bpe_document(tokenizer: ByteLevelBPE) -> dict[str, Any]:
    """A HuggingFace tokenizer.json document for `tokenizer`, with the same ids (tokenizers and transformers load it).

    HuggingFace stores merges where Lanterne stores ranks; `merges_from_ranks` recovers them.
    """
    from lanterne.tokenization.bpe_merges import merges_from_ranks

    alphabet = bytes_to_unicode()
    spell = lambda token: "".join(alphabet[byte] for byte in token)  # noqa: E731
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if tokenizer.pattern == GPT2_PATTERN:
        pre_tokenizer = byte_level
    else:
        split = {"type": "Split", "pattern": {"Regex": tokenizer.pattern}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": token_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for text, token_id in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])
        ],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            # Special tokens are in the vocabulary too: else `tokenizers` gives them new ids past its end.
            "vocab": dict(
                sorted([*((spell(token), token_id) for token, token_id in tokenizer.ranks.items()), *tokenizer.special_tokens.items()],
                       key=lambda item: item[1])
            ),
            "merges": [[spell(left), spell(right)] for left, right in merges_from_ranks(tokenizer.ranks)],
        },
    }


def check_merges_follow_ids(merges: list[Any], vocab: dict[str, int], specials: dict[str, int], path: Path | str) -> None:
    """Raise unless merge order and id order agree, so that merging by id (tiktoken) gives HuggingFace's result.

    HuggingFace applies merges by their place in the merge list; Lanterne and tiktoken merge the
    pair whose joined token has the lowest id. They agree when the ids the merges make never go
    down along the list, and every multi-byte token is made by a merge: true for GPT-2, for any
    BPE trained by HuggingFace's BpeTrainer, and for files converted from tiktoken (which list
    every way to make each token, so one id may follow several merges).
    """
    previous_id = -1
    made = set()
    for position, merge in enumerate(merges):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        if left not in vocab or right not in vocab or left + right not in vocab:
            raise VocabularyFileError(
                f"{path}: merge {position} ({left!r} + {right!r}) uses a token not in the vocabulary; the file is corrupt"
            )
        token_id = vocab[left + right]
        if token_id < previous_id:
            raise VocabularyFileError(
                f"{path}: merge {position} ({left!r} + {right!r}) makes id {token_id}, below the id of the merge "
                f"before ({previous_id}); Lanterne applies merges in id order, so this BPE's merge order "
                "cannot be reproduced"
            )
        previous_id = token_id
        made.add(left + right)
    unmade = [token for token in vocab if len(token) > 1 and token not in made and token not in specials]
    if unmade:
        raise VocabularyFileError(
            f"{path}: token {unmade[0]!r} (and {len(unmade) - 1} more) is made by no merge; Lanterne would build it "
            "where HuggingFace cannot, so this BPE cannot be reproduced"
        )


# -- the Hub ------------------------------------------------------------------------------------


def load_from_hub(name: str, revision: str | None = None, *, backend: Backend = "auto") -> Tokenizer:
    """The tokenizer.json of HuggingFace Hub repository `name` ('bert-base-uncased'), downloaded or cached."""
    try:
        import huggingface_hub
        from huggingface_hub import utils as hub  # the errors live here in every version since 0.23
    except ImportError:
        raise TokenizerError(f"loading 'hf:{name}' needs the HuggingFace Hub client: pip install huggingface_hub") from None
    packaged = packaged_tokenizer(name) if revision is None else None
    if packaged is not None:
        return load_tokenizer_json(packaged, backend, name=name)
    where = f"{name}@{revision}" if revision else name
    local = "download tokenizer.json elsewhere and pass its path instead"
    try:
        # Offline, the Hub client retries for ~20 s; a 1.5 s probe sends it straight to its own cache.
        offline = not _hub_reachable()
        path = huggingface_hub.hf_hub_download(repo_id=name, filename="tokenizer.json", revision=revision, local_files_only=offline)
    except hub.HFValidationError:
        message = f"{name!r} is not a HuggingFace Hub repository name (like 'google-bert/bert-base-uncased')"
        raise UnknownTokenizerError(message) from None
    except hub.LocalEntryNotFoundError:
        message = f"cannot reach the HuggingFace Hub for {where} (offline, or HF_HUB_OFFLINE=1) and it is not cached"
        raise DownloadError(f"{message}; {local}") from None
    except hub.GatedRepoError:
        message = f"{where} is gated on the HuggingFace Hub: accept its terms and log in (`hf auth login`)"
        raise DownloadError(f"{message}, or {local}") from None
    except hub.RepositoryNotFoundError:
        raise DownloadError(f"no HuggingFace Hub repository {name!r} (or it is private); check the name, or {local}") from None
    except hub.RevisionNotFoundError:
        raise DownloadError(f"{name} has no revision {revision!r} on the HuggingFace Hub; check it, or {local}") from None
    except hub.EntryNotFoundError:
        raise DownloadError(f"{where} has no tokenizer.json (older models ship only vocab.txt); {local}") from None
    except (hub.HfHubHTTPError, OSError, *_transport_errors()) as error:
        message = f"cannot download tokenizer.json of {where} ({type(error).__name__}: {error})"
        raise DownloadError(f"{message}; {local}") from None
    return load_tokenizer_json(path, backend, name=name)


# Hub tokenizers that an installed package ships: name -> (package, archive in it, file in the archive).
# all-MiniLM-L6-v2 was trained from bert-base-uncased and keeps its vocabulary and normalisation.
PACKAGED_TOKENIZERS = {
    "bert-base-uncased": ("all_minilm_l6_v2", "model.zip", "tokenizer.json"),
    "google-bert/bert-base-uncased": ("all_minilm_l6_v2", "model.zip", "tokenizer.json"),
}
# Ids of bert-base-uncased that a packaged copy must give before it stands in for it.
_BERT_CHECK = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "hello": 7592, "world": 2088, "##ization": 3989}


def packaged_tokenizer(name: str) -> Path | None:
    """The tokenizer.json of Hub model `name` from an installed package, copied into the cache; None if none is installed."""
    import zipfile

    from lanterne.tokenization.tiktoken_files import cache_folder

    if name not in PACKAGED_TOKENIZERS:
        return None
    package, archive, member = PACKAGED_TOKENIZERS[name]
    spec = importlib.util.find_spec(package)  # found without importing the package (and its dependencies)
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with zipfile.ZipFile(Path(list(spec.submodule_search_locations)[0]) / archive) as bundle:
            data = bundle.read(member)
        vocab = json.loads(data)["model"]["vocab"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # a damaged copy: the Hub (or its cache) decides
    if len(vocab) != 30522 or any(vocab.get(token) != token_id for token, token_id in _BERT_CHECK.items()):
        return None
    target = cache_folder() / "tokenizers" / f"{name.replace('/', '--')}.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    except (OSError, LanterneError):
        return None
    return target


def _hub_reachable(timeout: float = 1.5) -> bool:
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The network errors of the HTTP client under huggingface_hub (httpx or its fork), which it lets through."""
    errors = []
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)
