"""Training data: your text as one long array of token ids, cut into windows for next-word prediction.

`prepare_corpus` streams a file, a folder or a .jsonl file through a tokenizer on every core and caches
the ids on disk; `sample_windows` draws the (input, target) batches: the target is the input shifted by one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import sys
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from lanterne.errors import TrainingDataError, UnknownTokenizerError
from lanterne.tokenization import CharTokenizer, Tokenizer, known_names, load, train as train_tokenizer
from lanterne.tokenization.tiktoken_files import ENDOFTEXT, cache_folder
from lanterne.training import corpus_files
from lanterne.training.corpus_files import DOCUMENT_BREAK, CorpusSource, chunks, open_source, text_parts
from lanterne.training.held_out import split_each_document

# Bumped whenever tokens.bin or meta.json change meaning; it is part of the cache key.
FORMAT_VERSION = 2  # 2: a folder's files are each split into train and validation
# Below this, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 8 * 2**20
# "bpe:N" learns its merges from the start of the corpus only: training time and memory grow with the text.
BPE_TRAINING_BYTES = 64 * 2**20
# Between documents when the tokenizer has no <|endoftext|> id: a blank line, as between paragraphs.
TEXT_SEPARATOR = "\n\n"


@dataclass
class TokenizedCorpus:
    """A corpus as token ids cached in `folder` (tokens.bin, meta.json, tokenizer.json).

    `train` is the first (1 - validation_fraction) of the ids and `validation` the rest: both are
    memory-mapped slices of tokens.bin (uint16 or uint32, shape (tokens,)), so a corpus larger than RAM is fine.
    """

    folder: Path
    tokenizer: Tokenizer
    train: np.ndarray  # (train_tokens,) ids, memory-mapped
    validation: np.ndarray  # (validation_tokens,) ids, memory-mapped
    meta: dict[str, Any]

    @property
    def validation_bytes_per_token(self) -> float:
        """UTF-8 bytes of validation text per validation token: bits per byte = bits per token / this."""
        return self.meta["validation_bytes"] / self.meta["validation_tokens"]


def prepare_corpus(
    source: str | os.PathLike,
    tokenizer: str = "char",
    *,
    text_field: str = "text",
    validation_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    known_tokenizer: Tokenizer | None = None,
) -> TokenizedCorpus:
    """Tokenize `source` once and cache the ids; a second call with the same inputs reads the cache.

    `source`: a UTF-8 text file; a folder (every .txt and .md file inside, recursively, in path order,
    hidden folders skipped); or a .jsonl file whose lines are objects holding the text in `text_field`.
    Each file of a folder and each JSONL line is a document; documents are separated by the
    tokenizer's <|endoftext|> id, or by a blank line when it has none.

    `tokenizer`: 'char' (the characters of the whole corpus), 'bpe:N' (a byte-level BPE of N ids
    trained on the first 64 MB of the corpus), a published name ('gpt2', 'o200k_base', ...) or the
    path of a tokenizer file. Special-token text inside the corpus is read as plain text.

    The text streams in chunks of about CHUNK_BYTES (ending at line ends), encoded separately, so
    the whole corpus never sits in memory; chunks are encoded by `workers` processes (default: one
    per core) when the corpus passes PARALLEL_MIN_BYTES, in order, so the ids do not depend on `workers`.
    The cache lives in `cache_dir` (default: $LANTERNE_CACHE/datasets) under a key made of the
    content, the tokenizer, `validation_fraction` and the format; it is built under a temporary
    name and renamed into place, so an interrupted run never leaves a cache that would be reused.

    `known_tokenizer`: the tokenizer `tokenizer` gave this corpus before (a resumed run's own, read from
    its checkpoint). It is used as it is, never trained or loaded again, and the cache is keyed as on the
    first run ('char' and 'bpe:N' by that spec, others by their content), so a resume finds that cache.
    """
    if not 0 < validation_fraction <= 0.5:
        raise TrainingDataError(
            f"validation_fraction {validation_fraction} is outside (0, 0.5]; use e.g. 0.1 (a tenth of the tokens for validation)"
        )
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise TrainingDataError(f"workers must be at least 1, not {workers}; leave it unset to use every core")
    if known_tokenizer is None:
        trained_spec, loaded = _resolve_tokenizer(tokenizer)
    else:
        trained_spec = _trained_spec(tokenizer)
        loaded = None if trained_spec else known_tokenizer
    corpus_source = open_source(Path(source).expanduser(), text_field)
    root = Path(cache_dir) if cache_dir is not None else cache_folder() / "datasets"
    key = _cache_key(corpus_source, trained_spec or _tokenizer_hash(loaded), validation_fraction)
    if (root / key).is_dir():
        corpus = _open_cache(root / key, loaded)
        if known_tokenizer is not None and _tokenizer_hash(corpus.tokenizer) != _tokenizer_hash(known_tokenizer):
            # The spec has trained another tokenizer since (another version's trainer): these ids are not the run's.
            trained_spec, loaded = None, known_tokenizer
            key = _cache_key(corpus_source, _tokenizer_hash(loaded), validation_fraction)
            corpus = _open_cache(root / key, loaded) if (root / key).is_dir() else None
        if corpus is not None:
            corpus.meta["content_hash"] = corpus_source.content_hash  # caches made before it was recorded lack it
            return corpus
    folder = root / key
    tokenizer_object = loaded or known_tokenizer or _train_tokenizer(trained_spec, corpus_source)
    meta = {
        "format": "lanterne-tokens", "version": FORMAT_VERSION, "key": key, "source": str(corpus_source.path),
        "source_kind": corpus_source.kind, "content_hash": corpus_source.content_hash, "text_field": text_field if corpus_source.kind == "jsonl" else None,
        "tokenizer": str(tokenizer), "tokenizer_kind": tokenizer_object.kind, "vocab_size": tokenizer_object.vocab_size,
        "dtype": "uint16" if tokenizer_object.vocab_size <= 2**16 else "uint32",
        "validation_fraction": validation_fraction,
    }
    _build_cache(folder, corpus_source, tokenizer_object, meta, workers, show_progress)
    return _open_cache(folder, tokenizer_object)


def sample_windows(
    tokens: np.ndarray, batch_size: int, context_length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of `tokens`: inputs x and targets y, int64, each (batch_size, context_length).

    y[b, t] = x[b, t + 1]: the token that follows x[b, t]. Window starts come only from `generator`,
    so the same seed gives the same batches. Windows are drawn with replacement.
    """
    if batch_size < 1 or context_length < 1:
        raise TrainingDataError(f"batch_size {batch_size} and context_length {context_length} must both be at least 1")
    if len(tokens) < context_length + 1:
        raise TrainingDataError(
            f"{len(tokens)} tokens hold no window of {context_length + 1}; give more text or lower context_length"
        )
    starts = torch.randint(len(tokens) - context_length, (batch_size,), generator=generator).numpy()
    windows = np.asarray(tokens[starts[:, None] + np.arange(context_length + 1)])  # (batch, context_length + 1)
    windows = torch.from_numpy(windows.astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def check_enough_tokens(corpus: TokenizedCorpus, context_length: int, batch_size: int) -> None:
    """Raise TrainingDataError unless both splits hold at least one window of context_length + 1 tokens.

    `batch_size` only has to be positive: windows are drawn with replacement, so one window can fill a batch.
    """
    if batch_size < 1:
        raise TrainingDataError(f"batch_size must be at least 1, not {batch_size}")
    needed = context_length + 1
    if len(corpus.train) < needed:
        raise TrainingDataError(
            f"corpus smaller than one window/batch: {len(corpus.train)} training tokens, need at least {needed}; "
            "give more text or lower context_length"
        )
    if len(corpus.validation) < needed:
        raise TrainingDataError(
            f"validation split has no full window: {len(corpus.validation)} tokens, need at least {needed}; "
            "raise validation_fraction or give more text"
        )


# -- the tokenizer ------------------------------------------------------------------------------


def _cache_key(source: CorpusSource, tokenizer_identity: str, validation_fraction: float) -> str:
    """The cache folder's name: a hash of the content, the tokenizer ('char', 'bpe:N' or a content hash), the split and the format."""
    key_document = [FORMAT_VERSION, source.content_hash, tokenizer_identity, validation_fraction, corpus_files.CHUNK_BYTES]
    return hashlib.sha256(json.dumps(key_document).encode("utf-8")).hexdigest()[:16]


def _trained_spec(spec: str) -> str | None:
    """'char' or 'bpe:N' (normalised) for a tokenizer trained on the corpus; None for one to load."""
    text = str(spec).strip()
    if text == "char":
        return "char"
    match = re.fullmatch(r"bpe:(\d+)", text)
    return f"bpe:{int(match.group(1))}" if match else None


def _resolve_tokenizer(spec: str) -> tuple[str | None, Tokenizer | None]:
    """('char' or 'bpe:N', None) for a tokenizer to train on the corpus, or (None, tokenizer) for one to load."""
    text = str(spec).strip()
    trained = _trained_spec(text)
    if trained:
        return trained, None
    forms = (
        "use 'char', 'bpe:N' (a BPE of N ids trained on your text, e.g. bpe:4096), "
        f"a published name ({', '.join(known_names())}) or the path of a tokenizer file"
    )
    if text in ("bpe", "word", "wordpiece") or text.startswith("bpe:"):
        raise UnknownTokenizerError(f"tokenizer '{text}' cannot be used for training data; {forms}")
    try:
        return None, load(text)
    except UnknownTokenizerError:
        raise UnknownTokenizerError(f"unknown tokenizer '{text}' (and no such file); {forms}") from None


def _tokenizer_hash(tokenizer: Tokenizer) -> str:
    """A loaded tokenizer's identity: the hash of what `save` would write."""
    document = json.dumps([tokenizer.kind, tokenizer.to_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _train_tokenizer(spec: str, source: CorpusSource) -> Tokenizer:
    """Train 'char' on the whole corpus (one streaming pass) or 'bpe:N' on its first BPE_TRAINING_BYTES."""
    if spec == "char":
        characters: set[str] = set()
        for parts, _ in chunks(text_parts(source), TEXT_SEPARATOR):
            for part in parts:
                characters.update(part)
        return CharTokenizer(characters)
    pieces, size = [], 0
    for part in text_parts(source):
        # The trainer cuts its text at <|endoftext|>, so no merge learns across two documents.
        pieces.append(ENDOFTEXT if part is DOCUMENT_BREAK else part)
        size += 0 if part is DOCUMENT_BREAK else len(part.encode("utf-8"))
        if size >= BPE_TRAINING_BYTES:
            break
    return train_tokenizer("bpe", "".join(pieces), int(spec.split(":")[1]))


def _plain_encoder(tokenizer: Tokenizer) -> Callable[[str], list[int]]:
    """encode_ordinary where the tokenizer has one: corpus text that spells <|endoftext|> stays text."""
    return getattr(tokenizer, "encode_ordinary", tokenizer.encode)


# -- encoding, in worker processes --------------------------------------------------------------


def _encode_chunk(
    tokenizer: Tokenizer, break_id: int | None, dtype: np.dtype, parts: list[str | None]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Ids of one chunk, shape (tokens,), and where its document breaks lie: (start, end) offsets in it.

    A break is `break_id`, or TEXT_SEPARATOR's ids when the tokenizer has no <|endoftext|>.
    """
    encode = _plain_encoder(tokenizer)
    ids: list[int] = []
    breaks = []
    for part in parts:
        start = len(ids)
        if part is DOCUMENT_BREAK:
            ids += [break_id] if break_id is not None else encode(TEXT_SEPARATOR)
            breaks.append((start, len(ids)))
        else:
            ids += encode(part)
    return np.array(ids, dtype=dtype), breaks


_worker_settings: tuple[Tokenizer, int | None, np.dtype] | None = None


def _start_worker(tokenizer: Tokenizer, break_id: int | None, dtype: np.dtype) -> None:
    global _worker_settings
    _worker_settings = (tokenizer, break_id, dtype)


def _encode_in_worker(parts: list[str | None]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _encode_chunk(*_worker_settings, parts)


def _in_order(pool: Executor, function: Callable, items: Iterable, lookahead: int) -> Iterator:
    """`map(function, items)` on `pool`, in order, with at most `lookahead` items in flight (bounded memory)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- the cache ----------------------------------------------------------------------------------


def _build_cache(folder: Path, source: CorpusSource, tokenizer: Tokenizer, meta: dict, workers: int, show_progress: bool) -> None:
    """Write tokens.bin, tokenizer.json and meta.json in a temporary folder, then rename it to `folder`."""
    building = folder.parent / f".{folder.name}.{os.getpid()}-{secrets.token_hex(4)}.building"
    try:
        building.mkdir(parents=True)
    except OSError as error:
        raise TrainingDataError(
            f"cannot create the cache folder {folder.parent} ({error.strerror}); pass cache_dir or set LANTERNE_CACHE"
        ) from None
    try:
        break_id = getattr(tokenizer, "special_tokens", {}).get(ENDOFTEXT)
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        sizes, breaks = _write_tokens(building / "tokens.bin", source, tokenizer, break_id, dtype, workers, show_progress)
        if source.kind == "folder" and breaks:
            names = [Path(os.path.relpath(file.resolve(), source.path)).as_posix() for file in source.files]
            meta.update(split_each_document(building / "tokens.bin", breaks, names, tokenizer, break_id, dtype, meta["validation_fraction"]))
            meta["document_separator"] = ENDOFTEXT if break_id is not None else TEXT_SEPARATOR
        else:
            meta.update(_split(building / "tokens.bin", sizes, tokenizer, break_id, dtype, meta["validation_fraction"]))
        tokenizer.save(building / "tokenizer.json")
        (building / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        try:
            os.rename(building, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise TrainingDataError(f"cannot create the cache folder {folder}; check its permissions or pass cache_dir") from None
            shutil.rmtree(building, ignore_errors=True)  # another process built the same cache first
    except OSError as error:  # a full disk, most often: the ids of a large corpus take room
        shutil.rmtree(building, ignore_errors=True)
        raise TrainingDataError(
            f"cannot write the token cache in {folder.parent} ({error.strerror or error}); free some space there, "
            "or point LANTERNE_CACHE (or cache_dir) at another disk"
        ) from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _write_tokens(
    path: Path, source: CorpusSource, tokenizer: Tokenizer, break_id: int | None, dtype: np.dtype, workers: int, show_progress: bool
) -> list[tuple[int, int]]:
    """Encode the corpus chunk by chunk into `path` (raw ids).

    Return (tokens, text bytes) of each chunk, and the (start, end) ids of every document break in the file.
    """
    chunk_bytes: list[int] = []  # filled as chunks are read, ahead of the encoded ones
    chunk_tokens: list[int] = []
    breaks: list[tuple[int, int]] = []
    separator_bytes = len(TEXT_SEPARATOR.encode("utf-8")) if break_id is None else 0

    def chunk_parts() -> Iterator[list[str | None]]:
        for parts, byte_count in chunks(text_parts(source), None):
            chunk_bytes.append(byte_count + separator_bytes * sum(part is DOCUMENT_BREAK for part in parts))
            yield parts

    pool = None
    if workers > 1 and source.size_bytes >= PARALLEL_MIN_BYTES:
        _plain_encoder(tokenizer)("warm up")  # build lazy state (tiktoken's tables) once, before the fork shares it
        start = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = ProcessPoolExecutor(workers, multiprocessing.get_context(start), _start_worker, (tokenizer, break_id, dtype))
    try:
        if pool is None:
            encoded = (_encode_chunk(tokenizer, break_id, dtype, parts) for parts in chunk_parts())
        else:
            encoded = _in_order(pool, _encode_in_worker, chunk_parts(), lookahead=2 * workers)
        with open(path, "wb") as out, _progress_bar(show_progress, source.size_bytes, source.path.name) as advance:
            for ids, chunk_breaks in encoded:
                offset = sum(chunk_tokens)
                breaks += [(offset + start, offset + end) for start, end in chunk_breaks]
                out.write(ids.tobytes())
                chunk_tokens.append(len(ids))
                advance(chunk_bytes[len(chunk_tokens) - 1])
            out.flush()
            os.fsync(out.fileno())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return list(zip(chunk_tokens, chunk_bytes)), breaks


def _split(path: Path, sizes: list[tuple[int, int]], tokenizer: Tokenizer, break_id: int | None, dtype: np.dtype, fraction: float) -> dict:
    """Where train ends and validation begins, and the UTF-8 bytes of the validation text."""
    total = sum(tokens for tokens, _ in sizes)
    validation = round(total * fraction)
    if validation < 2 or total - validation < 2:
        raise TrainingDataError(
            f"corpus too small to split: {total} tokens give {validation} for validation and {total - validation} "
            "for training (need at least 2 each); give more text or raise validation_fraction"
        )
    split = total - validation
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(total,))
    # Whole chunks after the split are counted from their text; the chunk holding the split is decoded.
    validation_bytes, chunk_start = 0, 0
    for tokens, byte_count in sizes:
        chunk_end = chunk_start + tokens
        if chunk_start >= split:
            validation_bytes += byte_count
        elif chunk_end > split:
            tail = np.asarray(ids[split:chunk_end])
            tail = tail[tail != break_id].tolist() if break_id is not None else tail.tolist()  # a break stands for no text
            decode_bytes = getattr(tokenizer, "decode_bytes", None)
            validation_bytes += len(decode_bytes(tail)) if decode_bytes else len(tokenizer.decode(tail).encode("utf-8"))
        chunk_start = chunk_end
    del ids
    return {"total_tokens": total, "train_tokens": split, "validation_tokens": validation, "validation_bytes": validation_bytes,
            "document_separator": ENDOFTEXT if break_id is not None else TEXT_SEPARATOR}


def _open_cache(folder: Path, tokenizer: Tokenizer | None) -> TokenizedCorpus:
    """The corpus cached in `folder`, its ids memory-mapped; `tokenizer` saves re-reading tokenizer.json."""
    damaged = f"the cached corpus {folder} is damaged; delete that folder and run again"
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        total, split = meta["total_tokens"], meta["train_tokens"]
        if (folder / "tokens.bin").stat().st_size != total * dtype.itemsize:
            raise TrainingDataError(damaged)
        ids = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r", shape=(total,))
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainingDataError(damaged) from None
    tokenizer = tokenizer or load(folder / "tokenizer.json")
    return TokenizedCorpus(folder, tokenizer, ids[:split], ids[split:], meta)


@contextmanager
def _progress_bar(enabled: bool, total_bytes: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(bytes)`; it moves a rich progress bar on a terminal's stderr, or does nothing."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("tokenizing {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(label, total=total_bytes)
        yield lambda done: progress.advance(task, done)
        progress.update(task, completed=total_bytes)  # JSONL: the text is fewer bytes than the file
