"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions, as JSON or server-sent events.

Any OpenAI client talks to the loaded model: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")`.
The handlers are thin: the engine (`generation.continuous_batching`) decodes every request's choices
together with everyone else's, `streaming.TextWriter` turns their tokens into text (`chat.chat_text`
lays out a conversation); here are the limits and the shapes of the answers. Every request is
bounded (`limits.Limits`):

- the prompt and each chat message: at most max_text_characters (400); a prompt over max_prompt_tokens
  (or the model's context) keeps its last tokens, as `generate` does; max_tokens <= max_new_tokens and
  n <= max_completions (400). The schema (/openapi.json) says each of these bounds;
- time: a choice stops seconds_per_request after it gets its slot; the text written so far is the
  answer, finish_reason "length". No 408/504: a client always gets what was written;
- each choice takes a slot in the engine; past its queue (or after queue_seconds waiting), 429 with
  Retry-After. A client that hangs up frees its slots at the engine's next step.

The "model" field is only compared with the loaded model's name (404 model_not_found otherwise):
nothing is ever loaded because of a request. Text that spells a special token (<|endoftext|>) is that
token, in prompts as in chat messages (as HuggingFace tokenizers read them). With n > 1 the choices
are generated together, choice i with seed + i, and sent in order. Log-probabilities are the model's own
(temperature 1), with offsets in characters of the completion.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from contextlib import aclosing
from typing import AsyncIterator

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lanterne.chat import chat_text
from lanterne.errors import LanterneError
from lanterne.generation import ContextWarning, context_limit
from lanterne.generation.continuous_batching import Busy, Generation
from lanterne.generation.loop import prepare
from lanterne.generation.streaming import TextWriter
from lanterne.server.errors import error_body
from lanterne.server.limits import busy
from lanterne.server.openai_schema import ChatRequest, CompletionRequest, SamplingRequest

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible API"])

COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the server's limit
EVENT = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}}, "required": ["data"]}
STREAMED = {200: {"description": "the answer as JSON, or with stream: true as server-sent events (data: {json} lines, then data: [DONE])",
                 "content": {"application/json": {}, "text/event-stream": {"schema": EVENT}}}}
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "time": "length", "cancelled": "length"}


# -- /v1/models -----------------------------------------------------------------------------------


@router.get("/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_model_card(request)]}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request):
    return _unknown_model(request, model_id) or _model_card(request)


def _model_card(request: Request) -> dict:
    state = request.app.state
    if getattr(state, "model_created", None) is None:
        state.model_created = int(time.time())  # when this server first showed it: the model has no date of its own
    return {"id": state.model_name, "object": "model", "created": state.model_created, "owned_by": "lanterne"}


def _unknown_model(request: Request, name: str | None) -> JSONResponse | None:
    loaded = request.app.state.model_name
    if name is None or name == loaded:
        return None
    message = f"the model '{name}' is not served here; this server has '{loaded}' (see /v1/models)"
    return JSONResponse(error_body(message, code="model_not_found"), status_code=404)


# -- /v1/completions and /v1/chat/completions -----------------------------------------------------


@router.post("/completions", responses=STREAMED)
async def completions(body: CompletionRequest, request: Request):
    refusal = _unknown_model(request, body.model)
    if refusal is not None:
        return refusal
    run = await _start(request, body, lambda tokenizer: body.prompt, [body.prompt], allow_special=True,
                       max_tokens=body.max_tokens if body.max_tokens is not None else COMPLETION_MAX_TOKENS, top_logprobs=body.logprobs)
    if body.stream:
        return _EventStream(_completion_events(run, body), run)
    try:
        texts = [await choice.collect() for choice in run.choices]
    finally:
        run.cancel()
    answer = [{"text": text, "index": index, "logprobs": _legacy_logprobs(run, choice, text), "finish_reason": choice.finish()}
              for index, (text, choice) in enumerate(zip(texts, run.choices))]
    return {**run.header("text_completion"), "choices": answer, "usage": run.usage()}


@router.post("/chat/completions", responses=STREAMED)
async def chat_completions(body: ChatRequest, request: Request):
    refusal = _unknown_model(request, body.model)
    if refusal is not None:
        return refusal
    messages = [message.as_dict() for message in body.messages]
    limit = request.app.state.limits.max_new_tokens
    for name, value in (("max_tokens", body.max_tokens), ("max_completion_tokens", body.max_completion_tokens)):
        if value is not None and value > limit:
            raise HTTPException(400, f"{name} is {value}, over this server's limit of {limit}; ask for fewer")
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    run = await _start(request, body, lambda tokenizer: chat_text(tokenizer, messages), _texts(body.messages), allow_special=True,
                       max_tokens=requested if requested is not None else request.app.state.limits.max_new_tokens)
    if body.stream:
        return _EventStream(_chat_events(run, body), run)
    try:
        texts = [await choice.collect() for choice in run.choices]
    finally:
        run.cancel()
    answer = [{"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": choice.finish()}
              for index, (text, choice) in enumerate(zip(texts, run.choices))]
    return {**run.header("chat.completion"), "choices": answer, "usage": run.usage()}


def _texts(messages) -> list[str]:
    """Every text of a conversation, as sent: each message, or each part of one."""
    return [part for message in messages for part in ([message.content] if isinstance(message.content, str) else
                                                      [piece.text for piece in message.content])]


# -- one request's generations, decoded by the engine among everyone else's -----------------------


class _Choice:
    """One choice: a generation in the engine, whose tokens come through a queue and become text here."""

    def __init__(self, run: "_Run", generation: Generation, writer: TextWriter) -> None:
        self.run, self.generation, self.writer = run, generation, writer
        self.events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        seconds = run.request.app.state.limits.seconds_per_request

        def started() -> None:  # in the engine's thread: its time runs from its slot
            generation.deadline = time.monotonic() + seconds
            loop.call_soon_threadsafe(self.events.put_nowait, ("start", None, None))

        generation.on_start = started
        generation.on_token = lambda token, logprobs: loop.call_soon_threadsafe(self.events.put_nowait, ("token", token, logprobs))
        generation.on_end = lambda reason, error: loop.call_soon_threadsafe(self.events.put_nowait, ("end", reason, error))
        self.ended: str | None = None

    async def admitted(self) -> None:
        """Wait for a slot: 429 when none came within the queue's time, 400 when the engine refused the prompt."""
        kind, reason, error = await self.events.get()
        if kind == "start":
            return
        self.ended = reason
        if reason == "busy":
            raise busy(self.run.request.app.state.limits, f"no slot came free in {self.run.request.app.state.limits.queue_seconds:g} s")
        if reason == "error":
            raise HTTPException(400, str(error))
        # ended before starting: no new token asked (max_tokens 0), or cancelled

    async def pieces(self) -> AsyncIterator[str]:
        """The choice's text, piece by piece; a stop string cancels the generation at the engine's next step."""
        while self.ended is None:
            kind, value, extra = await self.events.get()
            if kind == "token":
                piece = self.writer.add(value, extra)
                self.run.count_tokens()
                if piece:
                    yield piece
                if self.writer.finish_reason is not None:  # eos or a stop string: the engine may write one more
                    self.generation.cancel()
                    self.ended = self.writer.finish_reason
            elif kind == "end":
                self.ended = value
                if value == "error":
                    raise LanterneError(str(extra))
        rest = self.writer.end(self.ended)
        if rest:
            yield rest

    async def collect(self) -> str:
        parts = []
        async for piece in self.pieces():
            parts.append(piece)
            if await self.run.request.is_disconnected():
                self.generation.cancel()
                break
        return "".join(parts)

    def finish(self) -> str:
        return FINISH_REASONS[self.writer.finish_reason or self.ended or "cancelled"]


class _Run:
    """The choices of one request: `n` generations submitted together (choice i seeded seed + i)."""

    def __init__(self, request: Request, body: SamplingRequest, prepared, max_tokens: int, top_logprobs: int | None) -> None:
        state = request.app.state
        self.request, self.tokenizer = request, state.tokenizer
        self.model_name, self.created, self.id = state.model_name, int(time.time()), uuid.uuid4().hex
        self.n, self.top_logprobs = body.n or 1, top_logprobs
        self.prompt_tokens = len(prepared.prompt_ids[0])
        self.choices = []
        for index in range(self.n):
            generation = Generation(prepared.prompt_ids[0], max_tokens, prepared.settings, None if body.seed is None else body.seed + index,
                                    prepared.eos_id, prepared.vocab_limit, logprobs=top_logprobs is not None)
            self.choices.append(_Choice(self, generation, TextWriter(state.tokenizer, prepared.stop, prepared.eos_id, top_logprobs)))

    def header(self, kind: str) -> dict:
        prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
        return {"id": f"{prefix}-{self.id}", "object": kind, "created": self.created, "model": self.model_name}

    def usage(self) -> dict:
        completion = sum(len(choice.writer.new_ids) for choice in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion}

    def count_tokens(self) -> None:
        self.request.state.tokens = sum(len(choice.writer.new_ids) for choice in self.choices)  # for the request's log line

    def cancel(self) -> None:
        """Every choice stops at the engine's next step (a client gone, or the answer sent)."""
        for choice in self.choices:
            choice.generation.cancel()


async def _start(request: Request, body: SamplingRequest, render, texts: list[str], *, allow_special: bool,
                 max_tokens: int, top_logprobs: int | None = None) -> _Run:
    """Check what the request asks against the limits, submit its choices, and wait for their slots (400/429 before any answer)."""
    state, limits = request.app.state, request.app.state.limits
    unsupported = body.unsupported()
    if unsupported:
        raise HTTPException(400, f"'{unsupported}' is not implemented by this server; leave it out")
    longest = max((len(text) for text in texts), default=0)
    if longest > limits.max_text_characters:
        raise HTTPException(400, f"a prompt or message has {longest:,} characters, over this server's limit of "
                                 f"{limits.max_text_characters:,}; shorten it")
    if max_tokens > limits.max_new_tokens:
        raise HTTPException(400, f"max_tokens is {max_tokens}, over this server's limit of {limits.max_new_tokens}; ask for fewer")
    if (body.n or 1) > limits.max_completions:
        raise HTTPException(400, f"n is {body.n}, over this server's limit of {limits.max_completions} completions; ask for fewer")
    prepared = await anyio.to_thread.run_sync(_prepare, request, body, render, allow_special)
    run = _Run(request, body, prepared, max_tokens, top_logprobs)
    try:
        for choice in run.choices:
            state.engine.submit(choice.generation)
    except Busy as error:
        run.cancel()
        raise busy(limits, str(error)) from None
    try:
        for choice in run.choices:
            await choice.admitted()
    except BaseException:
        run.cancel()
        raise
    return run


def _prepare(request, body, render, allow_special):
    """In a worker thread: lay out and encode the prompt (CPU work) with the request's sampling settings. A prompt
    over this server's max_prompt_tokens (or the model's context, less one new token) keeps its last tokens."""
    state, limits = request.app.state, request.app.state.limits
    prompt = render(state.tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextWarning)  # cut below, to the server's own limit
        prepared = prepare(state.engine.model, state.tokenizer, [prompt], stop=body.stop, allow_special=allow_special, **body.sampling())
    keep = min(limits.max_prompt_tokens, context_limit(state.engine.model) - 1)
    prepared.prompt_ids = [prepared.prompt_ids[0][-keep:]]
    return prepared


# -- server-sent events ---------------------------------------------------------------------------


class _EventStream(StreamingResponse):
    """Server-sent events that cancel the request's generations when they end, however they end (the client hanging up too)."""

    def __init__(self, events: AsyncIterator[dict], run: _Run) -> None:
        super().__init__(_sse(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.cancel()  # a client gone midway: its slots are free at the engine's next step
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    """Each event as `data: {json}`, then `data: [DONE]`; a LanterneError midway is sent as an error event."""
    async with aclosing(events):
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        except LanterneError as error:
            yield f"data: {json.dumps(error_body(str(error)), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


async def _completion_events(run: _Run, body: CompletionRequest) -> AsyncIterator[dict]:
    header = run.header("text_completion")
    for index, choice in enumerate(run.choices):
        sent, logged = 0, 0  # characters sent, tokens whose log-probabilities were sent
        async with aclosing(choice.pieces()) as pieces:
            async for piece in pieces:
                sent += len(piece)
                logprobs, logged = _new_logprobs(run, choice, logged, sent)
                yield {**header, "choices": [{"text": piece, "index": index, "logprobs": logprobs, "finish_reason": None}]}
        logprobs, logged = _new_logprobs(run, choice, logged, sent)
        yield {**header, "choices": [{"text": "", "index": index, "logprobs": logprobs, "finish_reason": choice.finish()}]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**header, "choices": [], "usage": run.usage()}


async def _chat_events(run: _Run, body: ChatRequest) -> AsyncIterator[dict]:
    header = run.header("chat.completion.chunk")
    for index, choice in enumerate(run.choices):
        yield {**header, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
        async with aclosing(choice.pieces()) as pieces:
            async for piece in pieces:
                yield {**header, "choices": [{"index": index, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]}
        yield {**header, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.finish()}]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**header, "choices": [], "usage": run.usage()}


# -- log-probabilities, in OpenAI's legacy completions shape --------------------------------------


def _legacy_logprobs(run: _Run, choice: _Choice, text: str) -> dict | None:
    """The log-probabilities of the tokens whose text starts inside `text` (None when not asked)."""
    return _new_logprobs(run, choice, 0, len(text))[0]


def _new_logprobs(run: _Run, choice: _Choice, start: int, sent: int) -> tuple[dict | None, int]:
    """{tokens, token_logprobs, top_logprobs, text_offset} of the recorded tokens from `start` whose text starts
    before character `sent`, and the index after them; None when log-probabilities were not asked."""
    if run.top_logprobs is None:
        return None, start
    recorded = choice.writer.logprobs
    end = start
    while end < len(recorded) and recorded[end].offset < sent:
        end += 1
    records = recorded[start:end]
    label = lambda token_id: token_label(run.tokenizer, token_id)  # noqa: E731
    return {
        "tokens": [label(record.token_id) for record in records],
        "token_logprobs": [record.logprob for record in records],
        "top_logprobs": [{label(token_id): logprob for token_id, logprob in record.top} for record in records],
        "text_offset": [record.offset for record in records],
    }, end


def token_label(tokenizer, token_id: int) -> str:
    """A token as OpenAI names it: its text, or "bytes:\\xe2\\x80" for bytes that are not whole UTF-8 characters."""
    if not hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode([token_id])
    data = tokenizer.decode_bytes([token_id])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in data)
