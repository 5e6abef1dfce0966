"""How well a model predicts text it never trained on: loss, perplexity and bits per byte.

`evaluate_held_out` reads the held-out part of a corpus exactly as `lanterne train` splits it (the
end of the file, or the end of each file of a folder), so a model card's figures can be checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from lanterne.errors import TrainingDataError

# Longer windows than this cost memory and change little: Gemma's 32k context is read 2,048 tokens at a time.
MAX_WINDOW = 2048


@dataclass
class HeldOutScore:
    """One document's held-out text, scored. `tokens`: predictions made; `bytes`: UTF-8 bytes of the text."""

    name: str
    tokens: int
    bytes: int
    loss: float  # mean cross-entropy, nats per token
    perplexity: float
    bits_per_byte: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeldOutReport:
    data: str
    validation_fraction: float
    context_length: int
    documents: list[HeldOutScore]
    total: HeldOutScore

    def as_dict(self) -> dict:
        return {"data": self.data, "validation_fraction": self.validation_fraction, "context_length": self.context_length,
                "documents": [score.as_dict() for score in self.documents], "total": self.total.as_dict()}


def evaluate_held_out(
    model, tokenizer, data: str | os.PathLike, *, validation_fraction: float = 0.1, batch_size: int = 8,
    show_progress: bool = False,
) -> HeldOutReport:
    """Score `model` on the held-out part of `data` (a file or a folder), cut as `lanterne train` cuts it.

    Each document's held-out text is read in windows of the model's context length (at most MAX_WINDOW
    tokens), one after the other, every window starting cold; every token but the first is predicted once.
    """
    from lanterne.training.data import prepare_corpus

    corpus = prepare_corpus(data, "given", validation_fraction=validation_fraction, show_progress=show_progress,
                            known_tokenizer=tokenizer)
    meta = corpus.meta
    places = meta.get("documents") or [{"name": os.path.basename(str(data)), "start": 0, "tokens": meta["validation_tokens"],
                                        "bytes": meta["validation_bytes"]}]
    context = min(model.config.context_length, MAX_WINDOW)  # a recurrent model's training window: the trainer's measure
    device = next(model.parameters()).device
    scores = []
    model.eval()
    for place in places:
        ids = torch.from_numpy(np.asarray(corpus.validation[place["start"]:place["start"] + place["tokens"]], dtype=np.int64))
        if len(ids) < 2:
            raise TrainingDataError(f"the held-out part of {place['name']} has {len(ids)} tokens; raise validation_fraction")
        total, count = _score(model, ids, context, batch_size, device)
        scores.append(_as_score(place["name"], total, count, place["bytes"]))
    total = sum(score.loss * score.tokens for score in scores)
    overall = _as_score("all", total, sum(s.tokens for s in scores), sum(s.bytes for s in scores))
    return HeldOutReport(str(data), validation_fraction, context, scores, overall)


@torch.inference_mode()
def _score(model, ids: torch.Tensor, context: int, batch_size: int, device) -> tuple[float, int]:
    """Summed cross-entropy (nats) and the number of predictions over `ids`, in windows of `context` + 1 ids."""
    starts = list(range(0, len(ids) - 1, context))
    total, count = 0.0, 0
    for first in range(0, len(starts), batch_size):
        group = starts[first:first + batch_size]
        # The last window may be shorter: score it alone rather than pad.
        for same_length in _by_length(group, context, len(ids)):
            inputs = torch.stack([ids[s:s + length] for s, length in same_length]).to(device)
            targets = torch.stack([ids[s + 1:s + 1 + length] for s, length in same_length]).to(device)
            logits = model(inputs).logits.float()  # (windows, length, vocab)
            total += float(F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum"))
            count += targets.numel()
    return total, count


def _by_length(starts: list[int], context: int, size: int) -> list[list[tuple[int, int]]]:
    """The windows starting at `starts`, as (start, length) grouped by length (at most two groups)."""
    windows = [(start, min(context, size - 1 - start)) for start in starts]
    return [[w for w in windows if w[1] == length] for length in sorted({w[1] for w in windows}, reverse=True)]


def bits_per_byte(loss_nats_per_token: float, tokens: int, text_bytes: int) -> float:
    """Bits needed per byte of text: the loss per token, times tokens per byte, in base 2 (compares tokenizers)."""
    return loss_nats_per_token * tokens / text_bytes / math.log(2)


def _as_score(name: str, total: float, count: int, text_bytes: int) -> HeldOutScore:
    loss = total / count
    return HeldOutScore(name, count, text_bytes, round(loss, 4), round(math.exp(min(loss, 50)), 3),
                        round(bits_per_byte(loss, count, text_bytes), 4))
