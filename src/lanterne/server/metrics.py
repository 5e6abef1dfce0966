"""The load, for the teacher: GET /metrics in Prometheus' text format, GET /api/status as one JSON object.

running: generations being decoded; waiting: generations waiting for a slot; tokens/s: written over
the last 10 seconds; views: slides computed, and how many identical requests were answered from them.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

router = APIRouter()

METRICS = {  # name: (type, help, how to read it from the status)
    "lanterne_generations_running": ("gauge", "Generations being decoded now.", lambda status, cache: status.running),
    "lanterne_generations_waiting": ("gauge", "Generations waiting for a slot.", lambda status, cache: status.waiting),
    "lanterne_slots": ("gauge", "Generations the engine decodes together (its lanes' slots).", lambda status, cache: status.slots),
    "lanterne_tokens_per_second": ("gauge", "Tokens written per second over the last 10 seconds.", lambda status, cache: status.tokens_per_second),
    "lanterne_generated_tokens_total": ("counter", "Tokens written since the server started.", lambda status, cache: status.generated_tokens),
    "lanterne_generations_total": ("counter", "Generations admitted since the server started.", lambda status, cache: status.generations),
    "lanterne_views_total": ("counter", "Views (slides) computed since the server started.", lambda status, cache: cache.misses),
    "lanterne_view_cache_hits_total": ("counter", "Views answered by an identical request's computation.", lambda status, cache: cache.hits),
}


def status(request: Request) -> dict:
    state = request.app.state
    cache = state.view_cache
    return {**asdict(state.engine.status()), "views": cache.misses, "view_cache_hits": cache.hits}


@router.get("/api/status", tags=["explorer"])
def status_endpoint(request: Request) -> dict:
    """The load: generations running and waiting, slots, tokens/s over the last 10 s, views computed and shared."""
    return status(request)


@router.get("/metrics", tags=["explorer"], response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus' text format"}})
def metrics(request: Request) -> PlainTextResponse:
    """The same figures as /api/status, in Prometheus' text exposition format."""
    state = request.app.state
    engine_status, cache = state.engine.status(), state.view_cache
    lines = []
    for name, (kind, text, read) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {read(engine_status, cache)}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
