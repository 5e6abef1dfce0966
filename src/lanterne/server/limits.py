"""What one request may ask of the server, and how many generations run at once.

Every request is bounded: prompt length (tokens and bytes), new tokens, completions per request,
body size, time. Generations take a slot; when every slot is busy, up to `max_queue` requests wait,
and past that the answer is 429 with Retry-After. A slot is freed as soon as its request ends,
the client hanging up included.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import HTTPException


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int = 4096
    max_prompt_bytes: int = 64 * 1024
    max_new_tokens: int = 512
    max_completions: int = 4  # `n`
    max_body_bytes: int = 256 * 1024
    seconds_per_request: float = 120.0
    concurrent_generations: int = 1  # two cores: one at a time is fastest overall
    max_queue: int = 8
    queue_seconds: float = 60.0  # longest wait for a slot before 429
    retry_after_seconds: int = 5


class Slots:
    """At most `concurrent` holders at once, `max_queue` waiting; anyone else is told to come back later (429)."""

    def __init__(self, concurrent: int, max_queue: int, retry_after: int, queue_seconds: float = 60.0) -> None:
        self._semaphore = asyncio.Semaphore(concurrent)
        self._max_queue = max_queue
        self._retry_after = retry_after
        self._queue_seconds = queue_seconds
        self.waiting = 0
        self.busy = 0

    @asynccontextmanager
    async def hold(self):
        if self._semaphore.locked() and self.waiting >= self._max_queue:
            raise self._busy()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._queue_seconds)
        except asyncio.TimeoutError:
            raise self._busy() from None
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._semaphore.release()

    def _busy(self) -> HTTPException:
        return HTTPException(
            status_code=429,
            detail=f"the server is busy ({self.busy} generating, {self.waiting} waiting); retry in {self._retry_after} s",
            headers={"Retry-After": str(self._retry_after)},
        )
