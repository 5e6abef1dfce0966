"""The FastAPI application: the explorer page, the JSON views, the OpenAI-compatible API, and their bounds.

`create_app(model, tokenizer, model_name)` needs no global state: tests build one over a small
model. Errors are JSON in OpenAI's shape ({"error": {"message", "type", "code"}}), 4xx for anything
the request got wrong, never a 500 for bad input. Each request is logged in one line.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager

import anyio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lanterne import __version__
from lanterne.errors import LanterneError
from lanterne.server.errors import ERROR_RESPONSES, error_body
from lanterne.server.limits import Limits
from lanterne.server.view_cache import ViewCache

log = logging.getLogger("lanterne.server")


def create_app(model, tokenizer, model_name: str, limits: Limits | None = None, *, generation_model=None, compile: bool = False,
               progress=None) -> FastAPI:
    """The server over `model` (the slides read it: full precision). generation_model: the weights answers
    are decoded with, if not `model`'s (the same model in another layout). compile: compile the
    engine's decoding step now (seconds, once per machine), as `lanterne serve` does."""
    from lanterne.generation.continuous_batching import Engine
    from lanterne.server import metrics, openai_api, views

    limits = limits or Limits()
    generation_model = (generation_model or model).eval()
    engine = Engine(generation_model, longest=limits.max_prompt_tokens + limits.max_new_tokens, max_slots=limits.slots,
                    max_waiting=limits.max_waiting, queue_seconds=limits.queue_seconds, compile=compile, progress=progress)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await anyio.to_thread.run_sync(engine.close)

    # docs_url=None: FastAPI's own /docs loads Swagger UI from a CDN; views.py serves an offline one.
    app = FastAPI(title="Lanterne", version=__version__, description="The lecture's slides on a real model, and an OpenAI-compatible API.",
                  docs_url=None, redoc_url=None, lifespan=lifespan, responses=ERROR_RESPONSES)
    model.eval()
    app.state.model, app.state.tokenizer, app.state.model_name, app.state.limits = model, tokenizer, model_name, limits
    app.state.engine, app.state.view_cache = engine.start(), ViewCache()

    @app.exception_handler(LanterneError)
    async def lanterne_error(request: Request, error: LanterneError):
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        errors = error.errors()
        broken = next((problem for problem in errors if problem.get("type") == "json_invalid"), None)
        if broken is not None:  # not JSON at all: 400, as OpenAI answers
            where = broken["loc"][-1] if broken.get("loc") else "?"
            return JSONResponse(error_body(f"the request body is not valid JSON (at character {where}); send a JSON object"), status_code=400)
        problems = "; ".join(f"{'.'.join(str(part) for part in problem['loc'] if part != 'body')}: {problem['msg']}" for problem in errors)
        return JSONResponse(error_body(problems or "the request body is not valid JSON"), status_code=422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (404, 405, a body it cannot parse)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse(error_body(str(error.detail), code=str(error.status_code)), status_code=error.status_code, headers=error.headers)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(AllowEveryMethod)

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        start = time.perf_counter()
        request.state.tokens = 0
        response = await call_next(request)
        body = response.body_iterator

        async def logged_body():  # logged once the body is sent: a stream's tokens and time are known only then
            try:
                async for chunk in body:
                    yield chunk
            finally:
                milliseconds = 1000 * (time.perf_counter() - start)
                log.info("%s %s %d tokens=%d %.0fms", request.method, request.url.path, response.status_code, request.state.tokens, milliseconds)

        response.body_iterator = logged_body()
        return response

    app.include_router(openai_api.router)
    app.include_router(views.router)
    app.include_router(metrics.router)
    app.openapi = lambda: app.openapi_schema or with_limits(app, FastAPI.openapi(app), limits, model)
    return app


def with_limits(app: FastAPI, schema: dict, limits: Limits, model) -> dict:
    """The OpenAPI schema with what this server accepts: its limits (n, max_tokens) and its model's layers and heads."""
    from lanterne.server.views import vocabulary_names

    components = schema.get("components", {}).get("schemas", {})

    def bound(model_name: str, field: str, **bounds) -> None:
        prop = components.get(model_name, {}).get("properties", {}).get(field)
        if prop is None:
            return
        for option in prop.get("anyOf", [prop]):
            if option.get("type") in ("integer", "number"):
                option.update(bounds)

    config = model.config
    for request in ("CompletionRequest", "ChatRequest"):
        bound(request, "n", maximum=limits.max_completions)
        bound(request, "max_tokens", maximum=limits.max_new_tokens)
    bound("ChatRequest", "max_completion_tokens", maximum=limits.max_new_tokens)
    for request, field in (("CompletionRequest", "prompt"), ("TextPart", "text"), ("ChatMessage", "content")):
        prop = components.get(request, {}).get("properties", {}).get(field)
        for option in [] if prop is None else prop.get("anyOf", [prop]):
            if option.get("type") == "string":
                option["maxLength"] = limits.max_text_characters
            if option.get("type") == "array" and option.get("items", {}).get("type") == "string":
                option["items"]["maxLength"] = limits.max_text_characters
    for request in components:
        text = components[request].get("properties", {}).get("text")
        if text is not None and "pattern" in text:  # the slides' texts
            text["maxLength"] = limits.max_text_characters
    for request in ("AttentionRequest", "LensRequest"):
        bound(request, "layer", minimum=-config.n_layers, maximum=config.n_layers - 1)
    bound("AttentionRequest", "head", minimum=0, maximum=config.n_heads - 1)
    named = components.get("TokenizeRequest", {}).get("properties", {}).get("named")
    if named is not None:
        named["items"] = {"type": "string", "enum": vocabulary_names()}
    app.openapi_schema = schema
    return schema


class AllowEveryMethod:
    """A 405 names every method of its path in Allow (Starlette names only the first route's, where a path
    has one route for GET and another for POST)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_allow(message):
            if message["type"] == "http.response.start" and message["status"] == 405:
                from starlette.routing import Match

                methods = set()
                for route in every_route(scope["app"].routes):
                    if getattr(route, "methods", None) and route.matches({**scope, "method": next(iter(route.methods))})[0] == Match.FULL:
                        methods |= route.methods
                if methods:
                    headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"allow"]
                    message = {**message, "headers": headers + [(b"allow", ", ".join(sorted(methods)).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_allow)


def every_route(routes):
    """The routes, those of included routers too."""
    for route in routes:
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and hasattr(inner, "routes"):
            yield from every_route(inner.routes)
        else:
            yield route


class BodyLimit:
    """Refuse a request body over `max_bytes` with 413, whether it declares its length or streams it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(f"the request body is over {self.max_bytes:,} bytes; send less", code="413")).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
