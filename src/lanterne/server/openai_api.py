"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions, as JSON or server-sent events.

Any OpenAI client talks to the loaded model: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")`.
The handlers are thin: `generation.stream` writes the text (`chat.chat_text` lays out a conversation);
here are the limits and the shapes of the answers. Every request is bounded (`limits.Limits`):

- the prompt: at most max_prompt_bytes of UTF-8 and max_prompt_tokens tokens, and within the model's
  context (400); max_tokens <= max_new_tokens and n <= max_completions (400);
- time: generation stops seconds_per_request after the request gets its slot (all its choices
  share that time); the text written so far is the answer, finish_reason "length". No 408/504:
  a client always gets what was written;
- generations take a slot (`app.state.slots`); past the queue, 429 with Retry-After. A client that
  hangs up frees its slot at once (its generation stops after the token being computed).

The "model" field is only compared with the loaded model's name (404 model_not_found otherwise):
nothing is ever loaded because of a request. Text that spells a special token (<|endoftext|>) is that
token, in prompts as in chat messages (as HuggingFace tokenizers read them). With n > 1 the choices
are generated one after the other, choice i with seed + i. Log-probabilities are the model's own
(temperature 1), with offsets in characters of the completion.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import AsyncExitStack, aclosing
from typing import AsyncIterator

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lanterne.chat import chat_text
from lanterne.errors import LanterneError
from lanterne.generation import context_limit, encode_prompt, stream
from lanterne.server.app import error_body
from lanterne.server.openai_schema import ChatRequest, CompletionRequest, SamplingRequest
from lanterne.generation.streaming import TextStream

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible API"])

COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the server's limit
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


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request):
    refusal = _unknown_model(request, body.model)
    if refusal is not None:
        return refusal
    run = await _start(request, body, lambda tokenizer: body.prompt, len(body.prompt.encode()), allow_special=True,
                       max_tokens=body.max_tokens if body.max_tokens is not None else COMPLETION_MAX_TOKENS, top_logprobs=body.logprobs)
    if body.stream:
        return _EventStream(_completion_events(run, body), run.slot)
    async with run.slot:  # freed when the choices are written, or when writing them fails
        choices = [await _collect(run, index) for index in range(run.n)]
    answer = [{"text": text, "index": index, "logprobs": _legacy_logprobs(run, stream, text), "finish_reason": _finish(stream)}
              for index, (text, stream) in enumerate(choices)]
    return {**run.header("text_completion"), "choices": answer, "usage": run.usage()}


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    refusal = _unknown_model(request, body.model)
    if refusal is not None:
        return refusal
    if body.logprobs:
        raise HTTPException(400, "chat log-probabilities are not implemented here; use /v1/completions with logprobs")
    messages = [message.as_dict() for message in body.messages]
    size = sum(len(message["content"].encode()) for message in messages)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    run = await _start(request, body, lambda tokenizer: chat_text(tokenizer, messages), size, allow_special=True,
                       max_tokens=requested if requested is not None else request.app.state.limits.max_new_tokens)
    if body.stream:
        return _EventStream(_chat_events(run, body), run.slot)
    async with run.slot:
        choices = [await _collect(run, index) for index in range(run.n)]
    answer = [{"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": _finish(stream)}
              for index, (text, stream) in enumerate(choices)]
    return {**run.header("chat.completion"), "choices": answer, "usage": run.usage()}


# -- one request's generation ---------------------------------------------------------------------


class _Run:
    """The choices of one request, generated one after the other while it holds a slot, within its time."""

    def __init__(self, request: Request, body: SamplingRequest, prompt: str, allow_special: bool, max_tokens: int,
                 top_logprobs: int | None, slot: AsyncExitStack) -> None:
        state = request.app.state
        self.request, self.slot, self.tokenizer = request, slot, state.tokenizer
        self.model_name, self.created, self.id = state.model_name, int(time.time()), uuid.uuid4().hex
        self.n, self.seed, self.top_logprobs = body.n or 1, body.seed, top_logprobs
        self.deadline = time.monotonic() + state.limits.seconds_per_request
        self.streams: list[TextStream] = []
        self._open = lambda seed, seconds: stream(
            state.model, state.tokenizer, prompt, max_tokens if seconds > 0 else 0, stop=body.stop, seed=seed,
            allow_special=allow_special, top_logprobs=top_logprobs, max_seconds=max(seconds, 1e-6), **body.sampling(),
        )
        self.prompt_tokens = len(self.choice(0).prompt_ids)  # checks the settings before anything is sent

    def choice(self, index: int) -> TextStream:
        """Choice `index`'s stream, made when first asked with the time left (none left: it writes nothing)."""
        if index == len(self.streams):
            seconds = self.deadline - time.monotonic()
            self.streams.append(self._open(None if self.seed is None else self.seed + index, seconds))
        return self.streams[index]

    def header(self, kind: str) -> dict:
        prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
        return {"id": f"{prefix}-{self.id}", "object": kind, "created": self.created, "model": self.model_name}

    def usage(self) -> dict:
        completion = sum(len(stream.new_ids) for stream in self.streams)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion}

    def count_tokens(self) -> None:
        self.request.state.tokens = sum(len(stream.new_ids) for stream in self.streams)  # for the request's log line


async def _start(request: Request, body: SamplingRequest, render, prompt_bytes: int, *, allow_special: bool,
                 max_tokens: int, top_logprobs: int | None = None) -> _Run:
    """Check what the request asks against the limits, take a slot, and open its first choice (400/429 before any answer)."""
    limits = request.app.state.limits
    unsupported = body.unsupported()
    if unsupported:
        raise HTTPException(400, f"'{unsupported}' is not implemented by this server; leave it out")
    if prompt_bytes > limits.max_prompt_bytes:
        raise HTTPException(400, f"the prompt has {prompt_bytes:,} bytes, over this server's limit of {limits.max_prompt_bytes:,}; shorten it")
    if max_tokens > limits.max_new_tokens:
        raise HTTPException(400, f"max_tokens is {max_tokens}, over this server's limit of {limits.max_new_tokens}; ask for fewer")
    if (body.n or 1) > limits.max_completions:
        raise HTTPException(400, f"n is {body.n}, over this server's limit of {limits.max_completions} completions; ask for fewer")
    slot = AsyncExitStack()
    await slot.enter_async_context(request.app.state.slots.hold())
    try:
        return await anyio.to_thread.run_sync(_open_run, request, body, render, allow_special, max_tokens, top_logprobs, slot)
    except BaseException:
        await slot.aclose()
        raise


def _open_run(request, body, render, allow_special, max_tokens, top_logprobs, slot) -> _Run:
    """In a worker thread: lay out and count the prompt (CPU work), then open the run."""
    state, limits = request.app.state, request.app.state.limits
    prompt = render(state.tokenizer)
    size = len(prompt.encode())
    if size > limits.max_prompt_bytes:
        raise HTTPException(400, f"the prompt has {size:,} bytes once laid out, over this server's limit of {limits.max_prompt_bytes:,}; shorten it")
    tokens = len(encode_prompt(state.tokenizer, prompt, allow_special))
    context = context_limit(state.model)
    if tokens > min(limits.max_prompt_tokens, context):
        which = "this server's limit" if limits.max_prompt_tokens < context else "the model's context"
        raise HTTPException(400, f"the prompt has {tokens:,} tokens, over {which} of {min(limits.max_prompt_tokens, context):,}; shorten it")
    return _Run(request, body, prompt, allow_special, max_tokens, top_logprobs, slot)


async def _pieces(run: _Run, index: int) -> AsyncIterator[str]:
    """Choice `index`'s pieces, each computed in a worker thread; stopped when the caller stops (a client gone)."""
    choice = await anyio.to_thread.run_sync(run.choice, index)  # encodes the prompt: CPU work, off the event loop
    try:
        while True:
            # abandon_on_cancel: a client that hangs up is let go at once; `close` stops the thread's work after its token.
            piece = await anyio.to_thread.run_sync(next, choice, None, abandon_on_cancel=True)
            run.count_tokens()
            if piece is None:
                return
            yield piece
            if await run.request.is_disconnected():
                return
    finally:
        choice.close()


async def _collect(run: _Run, index: int) -> tuple[str, TextStream]:
    async with aclosing(_pieces(run, index)) as pieces:
        text = "".join([piece async for piece in pieces])
    return text, run.choice(index)


def _finish(choice: TextStream) -> str:
    return FINISH_REASONS[choice.finish_reason or "cancelled"]


# -- server-sent events ---------------------------------------------------------------------------


class _EventStream(StreamingResponse):
    """Server-sent events that free the request's slot when they end, however they end (the client hanging up too)."""

    def __init__(self, events: AsyncIterator[dict], slot: AsyncExitStack) -> None:
        super().__init__(_sse(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.slot = slot

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # even while the request is being cancelled
                await self.slot.aclose()
                await self.body_iterator.aclose()  # a client gone midway leaves it suspended: stop its generation now


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
    for index in range(run.n):
        sent, logged = 0, 0  # characters sent, tokens whose log-probabilities were sent
        async with aclosing(_pieces(run, index)) as pieces:
            async for piece in pieces:
                sent += len(piece)
                logprobs, logged = _new_logprobs(run, run.choice(index), logged, sent)
                yield {**header, "choices": [{"text": piece, "index": index, "logprobs": logprobs, "finish_reason": None}]}
        logprobs, logged = _new_logprobs(run, run.choice(index), logged, sent)
        yield {**header, "choices": [{"text": "", "index": index, "logprobs": logprobs, "finish_reason": _finish(run.choice(index))}]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**header, "choices": [], "usage": run.usage()}


async def _chat_events(run: _Run, body: ChatRequest) -> AsyncIterator[dict]:
    header = run.header("chat.completion.chunk")
    for index in range(run.n):
        yield {**header, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
        async with aclosing(_pieces(run, index)) as pieces:
            async for piece in pieces:
                yield {**header, "choices": [{"index": index, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]}
        yield {**header, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": _finish(run.choice(index))}]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**header, "choices": [], "usage": run.usage()}


# -- log-probabilities, in OpenAI's legacy completions shape --------------------------------------


def _legacy_logprobs(run: _Run, choice: TextStream, text: str) -> dict | None:
    """The log-probabilities of the tokens whose text starts inside `text` (None when not asked)."""
    return _new_logprobs(run, choice, 0, len(text))[0]


def _new_logprobs(run: _Run, choice: TextStream, start: int, sent: int) -> tuple[dict | None, int]:
    """{tokens, token_logprobs, top_logprobs, text_offset} of the recorded tokens from `start` whose text starts
    before character `sent`, and the index after them; None when log-probabilities were not asked."""
    if run.top_logprobs is None:
        return None, start
    end = start
    while end < len(choice.logprobs) and choice.logprobs[end].offset < sent:
        end += 1
    records = choice.logprobs[start:end]
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
