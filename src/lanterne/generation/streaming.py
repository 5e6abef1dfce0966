"""Streaming: the text one prompt's generation writes, piece by piece, and then why it stopped.

`generation.stream` returns a TextStream. Besides the pieces it keeps what an API reports: why
generation ended, every generated id and, when asked, each token's log-probability with its likeliest
alternatives. Another thread can stop it (a server whose client hung up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lanterne.errors import GenerationError
from lanterne.generation.loop import generate_ids
from lanterne.generation.incremental_text import IncrementalText, StopStrings


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
        self.new_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None
        self._cancelled = False
        self._pieces = self._generate(model, tokenizer, request, max_new_tokens, seed, strict, top_logprobs, max_seconds)

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

    def _generate(self, model, tokenizer, request, max_new_tokens, seed, strict, top_logprobs, max_seconds):
        text, stops = IncrementalText(tokenizer), StopStrings(request.stop)
        scores: list[torch.Tensor] = []  # the last step's log-probabilities (vocab,), when recorded

        def record_scores(step_scores: torch.Tensor) -> None:
            scores[:] = [torch.log_softmax(step_scores[0].float(), dim=-1)]

        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        steps = generate_ids(
            model, request.prompt_ids, max_new_tokens, request.settings, eos_id=request.eos_id, seed=seed, strict=strict,
            vocab_limit=request.vocab_limit, on_scores=None if top_logprobs is None else record_scores, **request.decoding,
        )
        self.finish_reason, sent = "length", 0
        try:
            for step in steps:
                token = step[0]
                if token is None:
                    break
                self.new_ids.append(token)
                if token == request.eos_id:
                    self.finish_reason = "eos"
                    break
                if scores:
                    self.logprobs.append(_token_logprob(token, scores[0], top_logprobs, text.settled_length))
                text.append(token)
                cut = stops.find(text)
                if cut is not None:
                    self.finish_reason = "stop"
                    if cut > sent:
                        yield text.tail(sent)[: cut - sent]
                    return
                safe = len(text) - stops.held_back(text)
                if safe > sent:
                    yield text.tail(sent)[: safe - sent]
                    sent = safe
                if self._cancelled:
                    self.finish_reason = "cancelled"
                    return
                if deadline is not None and time.monotonic() > deadline:
                    self.finish_reason = "time"
                    break
        finally:
            steps.close()
        rest = text.tail(sent)
        if rest:
            yield rest


def _token_logprob(token: int, logprobs: torch.Tensor, k: int, offset: int) -> TokenLogprob:
    top = torch.topk(logprobs, min(k, logprobs.numel())) if k else None
    alternatives = [] if top is None else [(int(i), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]
    return TokenLogprob(token, float(logprobs[token]), alternatives, offset)
