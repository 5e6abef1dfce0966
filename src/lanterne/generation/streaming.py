"""Streaming: the text one prompt's generation writes, piece by piece, and then why it stopped.

`generation.stream` returns a TextStream. Besides the pieces it keeps what an API reports: why
generation ended, every generated id and, when asked, each token's log-probability with its likeliest
alternatives. Another thread can stop it (a server whose client hung up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from lanterne.errors import GenerationError
from lanterne.generation.loop import generate_ids, prepare
from lanterne.generation.incremental_text import IncrementalText, StopStrings

if TYPE_CHECKING:
    from lanterne.generation.timings import Timings


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, as the model saw it.

    logprob: the token's natural-log probability in the model's own distribution (temperature 1,
    before top-k/top-p and the repetition penalty); top: the likeliest tokens [(id, logprob)], most
    likely first; offset: where the token's text starts in the generated text, in characters (a
    token that finishes a character begun by the one before starts where that character does).
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    offset: int


class TextWriter:
    """Tokens in, text out: the pieces a stream may send, then why it ended.

    add(token, logprobs) returns the text now safe to send ('' if none): text that may be the start of a
    stop string, or half of a UTF-8 character, waits for the next token. It sets `finish_reason` to "eos"
    (the end-of-text token) or "stop" (a stop string, cut off) when that token ends the text; `end(reason)`
    gives what is still held back. new_ids: every id added, the end-of-text one included; logprobs: a
    TokenLogprob per token but the end-of-text one, when made with top_logprobs (k alternatives each).
    """

    def __init__(self, tokenizer, stop=(), eos_id: int | None = None, top_logprobs: int | None = None) -> None:
        self.text, self.stops = IncrementalText(tokenizer), StopStrings(stop)
        self.eos_id, self.top_logprobs = eos_id, top_logprobs
        self.new_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None
        self.sent = 0  # characters handed out

    def add(self, token: int, logprobs: torch.Tensor | None = None) -> str:
        """Append a token (logprobs: its step's log-softmax (vocab,), when recorded); the new text safe to send."""
        self.new_ids.append(token)
        if token == self.eos_id:
            self.finish_reason = "eos"
            return ""
        if logprobs is not None and self.top_logprobs is not None:
            self.logprobs.append(_token_logprob(token, logprobs, self.top_logprobs, self.text.settled_length))
        self.text.append(token)
        cut = self.stops.find(self.text)
        if cut is not None:
            self.finish_reason = "stop"
            piece = self.text.tail(self.sent)[: cut - self.sent] if cut > self.sent else ""
            self.sent = max(self.sent, cut)
            return piece
        safe = len(self.text) - self.stops.held_back(self.text)
        if safe <= self.sent:
            return ""
        piece = self.text.tail(self.sent)[: safe - self.sent]
        self.sent = safe
        return piece

    def end(self, reason: str) -> str:
        """The text still held back, now that generation ended for `reason` (kept if a token ended it
        already); nothing after a stop string or a cancellation."""
        self.finish_reason = self.finish_reason or reason
        if self.finish_reason in ("stop", "cancelled"):
            return ""
        rest = self.text.tail(self.sent)
        self.sent = len(self.text)
        return rest


class TextStream:
    """The pieces of text of one generation (iterate it), then `finish_reason`.

    finish_reason: "eos" (the end-of-text token), "stop" (a stop string), "length" (max_new_tokens),
    "time" (max_seconds, counted from the first piece asked) or "cancelled" (`cancel`/`close`).
    new_ids: every generated id, the end-of-text token included. logprobs: one TokenLogprob per
    generated token but the end-of-text one, when made with top_logprobs (k alternatives each).
    Made by `generation.stream`, which checks the settings first.
    """

    def __init__(self, model, tokenizer, request, max_new_tokens: int, seed: int | None, *, strict: bool = False,
                 top_logprobs: int | None = None, max_seconds: float | None = None) -> None:
        if top_logprobs is not None and (isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 0):
            raise GenerationError(f"top_logprobs must be a whole number >= 0 (alternatives per token), not {top_logprobs!r}")
        if max_seconds is not None and not max_seconds > 0:
            raise GenerationError(f"max_seconds must be a positive number of seconds, not {max_seconds!r}")
        self.prompt_ids: list[int] = request.prompt_ids[0]
        self.writer = TextWriter(tokenizer, request.stop, request.eos_id, top_logprobs)
        self._cancelled = False
        self._pieces = self._generate(model, request, max_new_tokens, seed, strict, top_logprobs, max_seconds)

    @property
    def new_ids(self) -> list[int]:
        return self.writer.new_ids

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return self.writer.logprobs

    @property
    def finish_reason(self) -> str | None:
        return self.writer.finish_reason

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """Stop after the token being computed; safe to call from another thread."""
        self._cancelled = True

    def close(self) -> None:
        """Stop now (from another thread, while a piece is being computed: after its current token)."""
        self.cancel()
        try:
            self._pieces.close()
        except ValueError:  # "generator already executing" in another thread: it sees `cancel` after its token
            pass

    def _generate(self, model, request, max_new_tokens, seed, strict, top_logprobs, max_seconds):
        writer = self.writer
        scores: list[torch.Tensor] = []  # the last step's log-probabilities (vocab,), when recorded

        def record_scores(step_scores: torch.Tensor) -> None:
            scores[:] = [torch.log_softmax(step_scores[0].float(), dim=-1)]

        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        steps = generate_ids(
            model, request.prompt_ids, max_new_tokens, request.settings, eos_id=request.eos_id, seed=seed, strict=strict,
            vocab_limit=request.vocab_limit, on_scores=None if top_logprobs is None else record_scores, **request.decoding,
        )
        reason = "length"
        try:
            for step in steps:
                token = step[0]
                if token is None:
                    break
                piece = writer.add(token, scores[0] if scores else None)
                if piece:
                    yield piece
                if writer.finish_reason is not None:
                    break
                if self._cancelled:
                    reason = "cancelled"
                    break
                if deadline is not None and time.monotonic() > deadline:
                    reason = "time"
                    break
        finally:
            steps.close()
        rest = writer.end(reason)
        if rest:
            yield rest


def _token_logprob(token: int, logprobs: torch.Tensor, k: int, offset: int) -> TokenLogprob:
    top = torch.topk(logprobs, min(k, logprobs.numel())) if k else None
    alternatives = [] if top is None else [(int(i), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]
    return TokenLogprob(token, float(logprobs[token]), alternatives, offset)


def stream(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: str | Sequence[str] = (),
    seed: int | None = None,
    *,
    strict: bool = False,
    eos_id: int | None = None,
    allow_special: bool = False,
    top_logprobs: int | None = None,
    max_seconds: float | None = None,
    fast: bool = False,
    compile: bool | None = None,
    timings: Timings | None = None,
    progress=None,
) -> TextStream:
    """Like `generate` for one prompt, yielding text as it comes; the pieces join to `generate`'s result.

    Text that may be the start of a stop string, or half of a UTF-8 character, waits for the next token.
    Returns a `streaming.TextStream`: iterate it for the pieces; afterwards its `finish_reason` says why
    it stopped. top_logprobs=k records each token's log-probability and the k likeliest alternatives;
    max_seconds ends generation after that long (finish_reason "time"). The sampling settings and the
    prompt are checked at once (GenerationError), before any piece is asked.
    """
    decoding = dict(fast=fast, compile=compile, timings=timings, progress=progress)
    request = prepare(model, tokenizer, [prompt], temperature, top_k, top_p, min_p, repetition_penalty, stop, strict, eos_id, allow_special, decoding)
    return TextStream(model, tokenizer, request, max_new_tokens, seed, strict=strict, top_logprobs=top_logprobs, max_seconds=max_seconds)
