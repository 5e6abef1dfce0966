"""Identical views share one computation: a class often sends the teacher's sentence thirty times.

A view's answer depends only on the server's model and the request's validated body, so that pair is
the key: the endpoint's name and the body with every field, defaults included, as canonical JSON.
A request that comes while the same one is being computed waits for that computation; one that comes
after finds the answer among the `size` most recent. Errors are never kept.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Awaitable, Callable

from pydantic import BaseModel


class ViewCache:
    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._done: OrderedDict[str, object] = OrderedDict()
        self._running: dict[str, asyncio.Future] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(endpoint: str, body: BaseModel) -> str:
        return json.dumps([endpoint, type(body).__name__, body.model_dump(mode="json")], sort_keys=True, ensure_ascii=False)

    async def get(self, key: str, compute: Callable[[], Awaitable[object]]) -> object:
        """The answer for `key`: kept, being computed (then awaited), or computed now by `compute()`."""
        while True:
            if key in self._done:
                self._done.move_to_end(key)
                self.hits += 1
                return self._done[key]
            running = self._running.get(key)
            if running is None:
                break
            try:
                answer = await asyncio.shield(running)
            except asyncio.CancelledError:
                if running.cancelled() and not asyncio.current_task().cancelling():
                    continue  # the request computing it went away: compute it here
                raise
            self.hits += 1
            return answer
        self.misses += 1
        future = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            answer = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._running[key]
        future.set_result(answer)
        self._done[key] = answer
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        return answer
