"""The explorer: its page (one tab per slide of the lecture) and one JSON endpoint per slide, with its figures.

Every number comes from `lanterne.inspect`; this module only checks the request against the
server's limits, runs the view off the event loop in a generation slot, and answers its `as_dict()`
or its `draw_*` figure as PNG or SVG. The page and its scripts are files of `static/`: no network.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import typing
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Callable, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lanterne.errors import ModelInputError
from lanterne.generation import encode_prompt
from lanterne.inspect import attention, context, embeddings, feedforward, logit_lens, next_word, temperature, tokens
from lanterne.inspect.drawing import save_figure
from lanterne.inspect.recording import Recording, check_layer_head, record
from lanterne.inspect.tour import ANALOGY, MAP_WORDS
from lanterne.server.limits import busy
from lanterne.server.openai_schema import Whole, whole
from lanterne.server.view_cache import ViewCache

router = APIRouter()

STATIC = resources.files("lanterne.server") / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SHOWN_TOKENS = 64  # the attention matrix, the logit lens and the feed-forward norms: the last this many tokens
# The next-word slider's temperatures: the page recomputes softmax(logits / T) at each of them exactly.
Language = Literal["fr", "en"]


# -- requests -------------------------------------------------------------------------------------


# The text of a slide holds a character that is not white space, as JSON Schema reads a pattern (found anywhere
# in the text). White space: ECMAScript's and Python's together (Python's also counts \x1c-\x1f and \x85).
NOT_SPACE = "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
TEXT_PATTERN = NOT_SPACE


class ViewRequest(BaseModel):
    """What every slide reads: a text (checked against the server's limits in bytes and tokens) and the figures' language."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(json_schema_extra={"minLength": 1, "pattern": TEXT_PATTERN},
                      description="the student's text: not only white space, at most the server's max_text_characters")
    lang: Language = Field("en", description="language of the figure's labels")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, text: str) -> str:
        if re.search("[\ud800-\udfff]", text):
            raise ValueError("the text holds a lone surrogate (\\ud800-\\udfff), which is no character; send valid Unicode")
        if not re.search(NOT_SPACE, text):
            raise ValueError("the text is empty; type a sentence to look at")
        return text


class TokenizeRequest(ViewRequest):
    named: list[str] = Field(["o200k_base"], max_length=5, description="published vocabularies to compare (those on this machine)")
    max_tokens: whole(ge=1, le=5000) = Field(500, description="tokens listed per tokenizer (the counts cover the whole text)")

    @field_validator("named")
    @classmethod
    def known_vocabularies(cls, names: list[str]) -> list[str]:
        from lanterne.tokenization.tiktoken_files import NAMED_VOCABULARIES, canonical_name

        for name in names:
            if name not in vocabulary_names() or canonical_name(name) is None:
                raise ValueError(f"unknown vocabulary {name!r}; choose among {', '.join(NAMED_VOCABULARIES)}")
        return names


def vocabulary_names() -> list[str]:
    """The names `named` takes, exactly as written: the published vocabularies and their aliases ('gpt2')."""
    from lanterne.tokenization.tiktoken_files import ALIASES, NAMED_VOCABULARIES

    return [*NAMED_VOCABULARIES, *ALIASES]


Word = Annotated[str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": TEXT_PATTERN})]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    word: Word = Field(description="the word whose vector and neighbours are shown")
    neighbours: whole(ge=1, le=100) = Field(10)
    map_words: list[Word] = Field(
        [], max_length=40, json_schema_extra={"anyOf": [{"maxItems": 0}, {"minItems": 3}]},
        description="words to place on a 2-D map: none, or at least 3")
    analogy: list[Word] | None = Field(None, min_length=3, max_length=3, description="a, b, c: the tokens nearest to a - b + c")
    lang: Language = "en"

    @field_validator("word")
    @classmethod
    def _a_word(cls, word: str) -> str:
        return ViewRequest._not_empty(word)

    @field_validator("map_words", "analogy")
    @classmethod
    def _words(cls, words: list[str] | None, info) -> list[str] | None:
        for word in words or []:
            ViewRequest._not_empty(word)
        if info.field_name == "map_words" and 0 < len(words) < 3:
            raise ValueError(f"a map needs no words or at least 3, not {len(words)}; e.g. roi reine homme femme")
        return words


class NextWordRequest(ViewRequest):
    top: whole(ge=1, le=200) = Field(50, description="candidates sent with their exact logits (the slider's top-k goes up to it)")


class AttentionRequest(ViewRequest):
    layer: Whole | None = Field(None, description="the layer (negative counts from the end); none: the last, or the most focused head's")
    head: Whole | None = Field(None, description="the head (none: the heads' average; with no layer either, the most focused head)")
    average: bool = Field(False, description="the average over the layer's heads instead of one head")
    position: Whole = Field(-1, description="the token whose looks are listed (the 'who looks where' figure; negative counts from "
                                           "the end; past either end of the text, its first or last token)")


class LensRequest(ViewRequest):
    layer: Whole | None = Field(None, description="the layer whose most active feed-forward units are listed (none: the last)")


class ContextRequest(ViewRequest):
    measure_cost: bool = Field(True, description="time forward passes of growing length (seconds of work)")
    cost_tokens: whole(ge=16, le=context.MAX_COST_TOKENS) = Field(512, description="the longest pass timed, in tokens")


class TemperatureRequest(ViewRequest):
    top: whole(ge=1, le=20) = Field(6, description="candidates whose curves are drawn")
    samples: bool = Field(False, description="also sample continuations at a few temperatures")
    max_new_tokens: whole(ge=1, le=64) = Field(20)
    seed: whole(ge=0, le=2**31 - 1) = Field(0)


# -- running a view -------------------------------------------------------------------------------


def check_text(state, text: str) -> None:
    """Check that `text` is not empty and within the server's limit in characters (a text longer than the
    model's context is read by its last tokens: each slide says how many it dropped)."""
    if not re.search(NOT_SPACE, text):
        raise ModelInputError("the text is empty; type a sentence to look at")
    limit = state.limits.max_text_characters
    if len(text) > limit:
        raise ModelInputError(f"the text is {len(text):,} characters; this server reads at most {limit:,}: shorten it")


def counted_text(state, request: Request, text: str) -> None:
    """`check_text`, then the text's tokens counted for the request's log line (slides that read the text themselves)."""
    check_text(state, text)
    request.state.tokens = len(encode_prompt(state.tokenizer, text))


def recorded(state, request: Request, text: str) -> Recording:
    check_text(state, text)
    recording = record(state.model, state.tokenizer, text)
    request.state.tokens = len(recording.ids)
    return recording


async def computed(request: Request, endpoint: str, body: BaseModel, work: Callable, answer: Callable = lambda data: data):
    """The endpoint's answer, `answer(work(state, request, body))`, computed by the engine between two decoding
    steps (never behind a whole answer, never on the event loop), and shared by identical requests."""
    state = request.app.state

    async def compute():
        if state.engine.jobs_waiting >= state.limits.max_views_waiting:
            raise busy(state.limits, f"{state.engine.jobs_waiting} views waiting")
        return await asyncio.wrap_future(state.engine.call(lambda: answer(work(state, request, body))))

    return await state.view_cache.get(ViewCache.key(endpoint, body), compute)


def last_tokens(rows: list[list], count: int) -> list[list]:
    """Each row (one per layer) cut to its last `count` positions."""
    return [row[-count:] for row in rows]


# -- the slides: data for the JSON endpoints, figures from the same data ---------------------------


def tokenization_slide(state, request, body: TokenizeRequest):
    check_text(state, body.text)
    return tokens.tokenization_view(body.text, state.tokenizer, named=body.named)


def embedding_slide(state, request, body: EmbeddingRequest) -> dict:
    model, tokenizer = state.model, state.tokenizer
    words = [word for word in body.map_words if word.strip()]
    return {
        "word": embeddings.embedding_view(model, tokenizer, body.word, body.neighbours),
        "map": embeddings.embedding_map(model, tokenizer, words) if words else None,
        "analogy": embeddings.analogy(model, tokenizer, *body.analogy) if body.analogy else None,
    }


def next_word_slide(state, request, body: NextWordRequest) -> dict:
    recording = recorded(state, request, body.text)
    table = next_word.next_word_view(recording, state.tokenizer, top=min(body.top, 20))
    return {"table": table, "slider": next_word.slider_distribution(recording.logits[-1], state.tokenizer, body.top), "dropped": recording.dropped}


def attention_slide(state, request, body: AttentionRequest) -> dict:
    model = state.model
    check_layer_head(model, body.layer, body.head)  # before the forward pass: a wrong layer costs nothing
    recording = recorded(state, request, body.text)
    focused = attention.most_focused_head(model, recording)
    layer, head = body.layer, body.head
    if body.average:
        head = None
    elif layer is None and head is None:
        layer, head = focused  # as `lanterne attention`: with neither given, the head that shows something
    view = attention.attention_view(model, recording, layer, head)
    count = len(view.tokens)
    position = min(max(body.position, -count), count - 1)  # past either end: the first or the last token
    looks = attention.where_token_looks(view, position, 8)
    return {"view": view, "most_focused": list(focused), "looks": looks, "position": position, "dropped": recording.dropped}


def lens_slide(state, request, body: LensRequest) -> dict:
    check_layer_head(state.model, body.layer)
    recording = recorded(state, request, body.text)
    return {
        "lens": logit_lens.logit_lens(state.model, recording, state.tokenizer),
        "feedforward": feedforward.feedforward_view(state.model, recording, body.layer),
        "dropped": recording.dropped,
    }


def context_slide(state, request, body: ContextRequest):
    counted_text(state, request, body.text)
    lengths = context.default_cost_lengths(state.model.config.context_length, cap=body.cost_tokens)
    return context.context_view(state.model, state.tokenizer, body.text, model_name=state.model_name,
                                measure_cost=body.measure_cost, cost_lengths=lengths)


def temperature_slide(state, request, body: TemperatureRequest):
    counted_text(state, request, body.text)
    return temperature.temperature_view(state.model, state.tokenizer, body.text, top=body.top, samples=body.samples,
                                        count=1, max_new_tokens=min(body.max_new_tokens, state.limits.max_new_tokens), seed=body.seed)


# Each figure: the request it reads, the slide that computes its data, and the `draw_*` that draws it.
FIGURES: dict[str, tuple[type[BaseModel], Callable, Callable]] = {
    "tokenization": (TokenizeRequest, tokenization_slide, lambda view, body: tokens.draw_tokenization(view, body.lang)),
    "embedding-neighbours": (EmbeddingRequest, embedding_slide, lambda data, body: embeddings.draw_neighbours(data["word"], body.lang)),
    "embedding-map": (EmbeddingRequest, embedding_slide, lambda data, body: embeddings.draw_map(_need(data["map"], "map_words (3 words or more)"), body.lang)),
    "next-word": (NextWordRequest, next_word_slide, lambda data, body: next_word.draw_next_word(data["table"], body.lang)),
    "attention": (AttentionRequest, attention_slide, lambda data, body: attention.draw_attention(data["view"], body.lang)),
    "attention-looks": (AttentionRequest, attention_slide,
                        lambda data, body: attention.draw_who_looks_where(data["view"], data["position"], body.lang)),
    "lens": (LensRequest, lens_slide, lambda data, body: logit_lens.draw_logit_lens(data["lens"], body.lang)),
    "feedforward": (LensRequest, lens_slide, lambda data, body: feedforward.draw_contributions(data["feedforward"], body.lang)),
    "context": (ContextRequest, context_slide, lambda view, body: context.draw_context_table(view, body.lang)),
    "context-cost": (ContextRequest, context_slide, lambda view, body: context.draw_context_cost(view, body.lang)),
    "temperature": (TemperatureRequest, temperature_slide, lambda view, body: temperature.draw_temperature_curves(view.curves, body.lang)),
    "filters": (TemperatureRequest, temperature_slide, lambda view, body: temperature.draw_filters(view.filters, body.lang)),
}


def _need(value, what: str):
    if value is None:
        raise ModelInputError(f"this figure needs {what}")
    return value


# -- the JSON endpoints ---------------------------------------------------------------------------


@router.get("/api/info", tags=["explorer"])
def info(request: Request) -> dict:
    """The model's name and shape, the languages, whether it can chat, the limits, and the examples the page offers."""
    from lanterne.tokenization.tiktoken_files import NAMED_VOCABULARIES, find_local_copy

    state = request.app.state
    config = state.model.config
    return {
        "model_name": state.model_name,
        "config": asdict(config),
        "parameters": sum(parameter.numel() for parameter in state.model.parameters()),
        "tokenizer": {"kind": state.tokenizer.kind, "vocab_size": state.tokenizer.vocab_size},
        "chat": bool(getattr(state.tokenizer, "chat_template", None)),
        "languages": ["fr", "en"],
        "limits": asdict(state.limits),
        "vocabularies": [name for name in NAMED_VOCABULARIES if find_local_copy(name) is not None],
        "examples": {"murder_mystery": attention.MURDER_MYSTERY, "map_words": MAP_WORDS, "analogy": ANALOGY},
        "slider_temperatures": [next_word.SLIDER_TEMPERATURES[0], next_word.SLIDER_TEMPERATURES[-1]],
        "figures": list(FIGURES),
    }


@router.post("/api/tokenize", tags=["explorer"])
async def tokenize(body: TokenizeRequest, request: Request) -> dict:
    """Slide 1: the text cut by characters, words, the model's tokenizer and published vocabularies (tokens, ids, spans, counts)."""
    return await computed(request, "tokenize", body, tokenization_slide, lambda view: view.as_dict(max_tokens=body.max_tokens))


@router.post("/api/embeddings", tags=["explorer"])
async def embedding(body: EmbeddingRequest, request: Request) -> dict:
    """Slide 2: a word's vector and nearest tokens; optionally a 2-D map (PCA) of words and an analogy a − b + c."""
    return await computed(request, "embeddings", body, embedding_slide,
                          lambda data: {name: None if value is None else value.as_dict() for name, value in data.items()})


@router.post("/api/next-word", tags=["explorer"])
async def next_word_endpoint(body: NextWordRequest, request: Request) -> dict:
    """Slide 3: the next-token table, and `slider`: the top logits and the rest's summary at every slider temperature."""
    return await computed(request, "next-word", body, next_word_slide,
                          lambda data: {"table": data["table"].as_dict(), "slider": data["slider"], "dropped": data["dropped"]})


@router.post("/api/attention", tags=["explorer"])
async def attention_endpoint(body: AttentionRequest, request: Request) -> dict:
    """Slide 4: one head's (or the heads' average) weights over the last 64 tokens, each token's top links, where one token looks."""
    config = request.app.state.model.config
    return await computed(request, "attention", body, attention_slide, lambda data: {
        **data["view"].as_dict(last=SHOWN_TOKENS), "most_focused": data["most_focused"], "looks": [vars(link) for link in data["looks"]],
        "n_layers": config.n_layers, "n_heads": config.n_heads, "dropped": data["dropped"],
    })


@router.post("/api/lens", tags=["explorer"])
async def lens(body: LensRequest, request: Request) -> dict:
    """Slide 5: the logit lens (top next token after each layer) and the feed-forward contribution per token, last 64 tokens."""
    return await computed(request, "lens", body, lens_slide, lens_answer)


def lens_answer(data: dict) -> dict:
    lens_data, ff = data["lens"].as_dict(), data["feedforward"].as_dict()
    lens_data.update(tokens=lens_data["tokens"][-SHOWN_TOKENS:], readings=last_tokens(lens_data["readings"], SHOWN_TOKENS))
    ff.update(tokens=ff["tokens"][-SHOWN_TOKENS:], top_units=ff["top_units"][-SHOWN_TOKENS:],
              **{name: last_tokens(ff[name], SHOWN_TOKENS) for name in ("feedforward_norms", "attention_norms", "residual_norms")})
    shown_from = max(0, len(data["lens"].tokens) - SHOWN_TOKENS)
    return {"lens": lens_data, "feedforward": ff, "shown_from": shown_from, "dropped": data["dropped"]}


@router.post("/api/context", tags=["explorer"])
async def context_endpoint(body: ContextRequest, request: Request) -> dict:
    """Slide 6: the text against the model's context (what is cut), the slide's table recomputed, the measured cost."""
    return await computed(request, "context", body, context_slide, lambda view: view.as_dict())


@router.post("/api/temperature", tags=["explorer"])
async def temperature_endpoint(body: TemperatureRequest, request: Request) -> dict:
    """The temperature slide: the candidates' curves from T = 0.05 to 2, what top-k, top-p and min-p keep, samples."""
    return await computed(request, "temperature", body, temperature_slide, lambda view: view.as_dict())


# -- figures --------------------------------------------------------------------------------------

FIGURE_DESCRIPTION = (
    "The slide's figure as PNG or SVG, drawn by its `draw_*` function. The body (POST) or the query (GET, list fields "
    "repeated) is the JSON endpoint's request, plus `lang`. Views: " + ", ".join(FIGURES) + "."
)


@router.post("/api/figure/{name}", tags=["figures"], description=FIGURE_DESCRIPTION,
             responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})
async def figure_post(name: str, request: Request) -> Response:
    try:
        payload = json.loads(await request.body())
    except ValueError as error:  # answered as every other endpoint's broken body: 400, with where it breaks
        where = getattr(error, "pos", "?")
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", where), "msg": "JSON decode error"}]) from None
    return await _figure(name, payload, request)


@router.get("/api/figure/{name}", tags=["figures"], description=FIGURE_DESCRIPTION,
            responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}})
async def figure_get(name: str, request: Request) -> Response:
    view, _ = _figure_name(name)
    fields = FIGURES[view][0].model_fields
    payload = {key: request.query_params.getlist(key) if _is_list(fields.get(key)) else request.query_params[key]
               for key in request.query_params}
    return await _figure(name, payload, request, from_query=True)


def _is_list(field) -> bool:
    if field is None:
        return False
    annotation = field.annotation
    return any(typing.get_origin(part) is list for part in (annotation, *typing.get_args(annotation)))


def _figure_name(name: str) -> tuple[str, str]:
    view, dot, extension = name.rpartition(".")
    if not dot or extension not in ("png", "svg"):
        raise HTTPException(status_code=404, detail=f"figure {name!r}: ask for NAME.png or NAME.svg")
    if view not in FIGURES:
        raise HTTPException(status_code=404, detail=f"no figure {view!r}; the figures are {', '.join(FIGURES)}")
    return view, extension


async def _figure(name: str, payload, request: Request, from_query: bool = False) -> Response:
    view, extension = _figure_name(name)
    model_class, slide, draw = FIGURES[view]
    if not isinstance(payload, dict):
        raise HTTPException(status_code=422, detail="the request body must be a JSON object")
    try:
        body = model_class.model_validate(payload, strict=not from_query)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None  # answered as every other endpoint's

    def work(state, request, body):
        data = slide(state, request, body)
        with tempfile.TemporaryDirectory() as folder:
            path = save_figure(draw(data, body), Path(folder) / view, (extension,))[0]
            return path.read_bytes()

    content = await computed(request, f"figure/{name}", body, work)
    media = "image/png" if extension == "png" else "image/svg+xml"
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="lanterne-{view}.{extension}"'})


# -- the page -------------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """The API's documentation drawn from /openapi.json by a script of the package (FastAPI's own loads Swagger UI from a CDN)."""
    return HTMLResponse((STATIC / "docs.html").read_text(encoding="utf-8"))


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    suffix = Path(name).suffix
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in MEDIA_TYPES or not (STATIC / name).is_file():
        raise HTTPException(status_code=404, detail=f"no file {name!r} in the explorer")
    return Response((STATIC / name).read_bytes(), media_type=MEDIA_TYPES[suffix], headers={"Cache-Control": "no-cache"})
