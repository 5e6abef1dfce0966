"""The held-out text of a corpus of several files: the end of each file, so every file is measured.

With one French and one English file, the last tenth of the whole corpus would be English only; the last
tenth of each file gives a validation loss for each language (`documents` in the corpus's meta.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lanterne.errors import TrainingDataError
from lanterne.tokenization import Tokenizer


def split_each_document(
    path: Path, breaks: list[tuple[int, int]], names: list[str], tokenizer: Tokenizer,
    break_id: int | None, dtype: np.dtype, fraction: float,
) -> dict:
    """Rewrite the ids in `path` as [train part of every document][validation part of every document].

    `breaks`: the (start, end) ids of the separator between two documents, in order; `names`: one per
    document. Each document keeps its first (1 - fraction) ids for training and gives the rest to
    validation; in both parts, documents stay apart by their separator ids (so the file holds them twice). Returns the meta.json fields:
    the sizes of the two parts, the validation bytes, and each document's place in the validation part.
    """
    ids = np.memmap(path, dtype=dtype, mode="r")
    total = len(ids)
    bounds = [0] + [edge for pair in breaks for edge in pair] + [total]
    documents = list(zip(bounds[0::2], bounds[1::2]))  # (start, end) of each document's own ids
    if len(documents) != len(names):
        raise TrainingDataError(f"the corpus has {len(documents)} documents but {len(names)} names; delete its cache and run again")
    held = [round((end - start) * fraction) for start, end in documents]
    separator_tokens = sum(end - start for start, end in breaks)
    train_tokens = total - sum(held)  # the separators stay in the train part, and are repeated between the tails
    validation_tokens = sum(held) + separator_tokens
    if sum(held) < 2 or train_tokens - separator_tokens < 2:
        raise TrainingDataError(
            f"corpus too small to split: its {len(documents)} files give {sum(held)} tokens for validation "
            "(need at least 2 each way); give more text or raise validation_fraction"
        )
    decode_bytes = getattr(tokenizer, "decode_bytes", None)

    def text_bytes(part: slice, ids: np.ndarray = ids) -> int:
        piece = np.asarray(ids[part])
        if break_id is not None:
            piece = piece[piece != break_id]  # a break id stands for no text, as in a single file's split
        return len(decode_bytes(piece.tolist()) if decode_bytes else tokenizer.decode(piece.tolist()).encode("utf-8"))

    reordered = path.with_name(path.name + ".split")
    train_parts, validation_parts, where, offset = [], [], [], 0
    for index, ((start, end), count) in enumerate(zip(documents, held)):
        separator = [slice(*breaks[index])] if index < len(breaks) else []
        train_parts += [slice(start, end - count)] + separator
        where.append({"name": names[index], "start": offset, "tokens": count, "bytes": text_bytes(slice(end - count, end))})
        validation_parts += [slice(end - count, end)] + separator
        offset += sum(part.stop - part.start for part in validation_parts[-1 - len(separator):])
    # The tails' bytes are counted above; only the separators between them are left (none for a break id).
    validation_bytes = sum(document["bytes"] for document in where) + sum(text_bytes(slice(*pair)) for pair in breaks)
    with open(reordered, "wb") as out:
        for part in train_parts + validation_parts:
            out.write(np.asarray(ids[part]).tobytes())
        out.flush()
        os.fsync(out.fileno())
    del ids
    os.replace(reordered, path)
    return {"total_tokens": train_tokens + validation_tokens, "train_tokens": train_tokens, "validation_tokens": validation_tokens,
            "validation_bytes": validation_bytes, "documents": where}
