"""The lecture's table, measured: letters vs words vs sub-words on the same text.

Each tokenizer is trained on the first 90% of a corpus and judged on the last 10%: vocabulary
size, tokens per 1,000 characters, bytes per token, unknown-token rate, and exact round trip.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from lanterne.errors import DownloadError, InputFileError
from lanterne.tokenization.base import Tokenizer
from lanterne.tokenization.bpe_training import train_bpe
from lanterne.tokenization.char import CharTokenizer
from lanterne.tokenization.tiktoken_files import NAMED_VOCABULARIES, load_named
from lanterne.tokenization.word import WordTokenizer

TRAIN_FRACTION = 0.9
# Fewer held-out characters than this make the figures noise.
MIN_HELD_OUT_CHARS = 100


@dataclass
class TokenizerReport:
    """How one tokenizer does on held-out text."""

    name: str
    kind: str
    vocab_size: int
    tokens_per_1000_chars: float
    bytes_per_token: float
    unknown_rate: float  # fraction of held-out tokens that are <unk> (characters for char, words for word)
    round_trip: bool  # decode(encode(held_out)) == held_out
    train_seconds: float | None  # None for published vocabularies

    def as_dict(self) -> dict:
        return asdict(self)


def split_corpus(text: str, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """The first `train_fraction` of `text` for training, the rest held out (cut at a line break when one is near)."""
    cut = int(len(text) * train_fraction)
    newline = text.rfind("\n", 0, cut)
    if newline > cut - 1000 and newline > 0:
        cut = newline + 1
    training, held_out = text[:cut], text[cut:]
    if not training.strip() or len(held_out.strip()) < MIN_HELD_OUT_CHARS:
        raise InputFileError(
            f"the corpus is too short: its last 10% must hold at least {MIN_HELD_OUT_CHARS} characters to measure; give a longer text"
        )
    return training, held_out


def measure(name: str, tokenizer: Tokenizer, held_out: str, train_seconds: float | None) -> TokenizerReport:
    """Score `tokenizer` on `held_out` text."""
    ids = tokenizer.encode(held_out)
    if isinstance(tokenizer, (CharTokenizer, WordTokenizer)):
        unknown_rate = tokenizer.unknown_rate(held_out)
    else:
        unknown_rate = 0.0  # byte-level BPE can spell any text
    return TokenizerReport(
        name=name,
        kind=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        tokens_per_1000_chars=1000 * len(ids) / len(held_out),
        bytes_per_token=len(held_out.encode("utf-8")) / len(ids),
        unknown_rate=unknown_rate,
        round_trip=tokenizer.decode(ids) == held_out,
        train_seconds=train_seconds,
    )


def compare_tokenizers(text: str, vocab_size: int = 8192, *, named: bool = True, pattern: str = "o200k") -> list[TokenizerReport]:
    """Train char, word (every word seen) and BPE (`vocab_size` ids) tokenizers and score each.

    `named=True` also scores the published vocabularies available on this machine (no download).
    """
    training, held_out = split_corpus(text)
    reports = []
    for name, make in [
        ("characters", lambda: CharTokenizer.train(training)),
        ("words", lambda: WordTokenizer.train(training)),
        (f"bpe-{vocab_size}", lambda: train_bpe(training, vocab_size, pattern, special_tokens=())),
    ]:
        start = time.perf_counter()
        tokenizer = make()
        reports.append(measure(name, tokenizer, held_out, time.perf_counter() - start))
    if named:
        for vocabulary in NAMED_VOCABULARIES:
            try:
                tokenizer = load_named(vocabulary, download=False)
            except DownloadError:
                continue  # not on this machine: the table lists what is here
            reports.append(measure(vocabulary, tokenizer, held_out, None))
    return reports
