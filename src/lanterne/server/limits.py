"""What one request may ask of the server, and how much the server takes on at once.

Every request is bounded: text length (characters), prompt tokens (a longer prompt keeps its last
tokens, as `generate` does without strict), new tokens, completions per request, body size, time. Generations are decoded together by the engine (`generation.continuous_batching`):
its slots come from memory (`slots` caps them), `max_waiting` more may wait for one, for at most
`queue_seconds`; past that the answer is 429 with Retry-After. Views (the explorer's slides) are
single forward passes run between decoding steps; at most `max_views_waiting` wait at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int = 4096  # a longer prompt keeps its last tokens (a slide: its last within the model's context)
    max_text_characters: int = 16 * 1024  # a slide's text, a prompt, each chat message (the schema says so: maxLength)
    max_new_tokens: int = 512
    max_completions: int = 4  # `n`
    max_body_bytes: int = 256 * 1024
    seconds_per_request: float = 120.0
    slots: int | None = None  # generations decoded together (None: as many as memory holds, at most 32)
    max_waiting: int | None = None  # generations waiting for a slot (None: 4 per slot)
    max_views_waiting: int = 256
    queue_seconds: float = 60.0  # longest wait for a slot before 429
    retry_after_seconds: int = 5


def busy(limits: Limits, detail: str) -> HTTPException:
    """429 with Retry-After: the server is full; `detail` says with what."""
    return HTTPException(status_code=429, detail=f"the server is busy ({detail}); retry in {limits.retry_after_seconds} s",
                         headers={"Retry-After": str(limits.retry_after_seconds)})
