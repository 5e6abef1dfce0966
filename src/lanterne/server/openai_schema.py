"""What an OpenAI client may send: the request bodies of /v1/completions and /v1/chat/completions, with their bounds.

Types are strict ("0.5" is not a number) and every number has its range, so a wrong request is a
422 that names the field, never a 500. Limits that depend on the server (max_tokens, n, prompt
length) are checked by `openai_api` against `app.state.limits`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARACTERS = 64  # each stop string; a stream holds back up to this many characters

# Fields of OpenAI's API this server does not implement: refused unless left at their neutral value
# (absent, null, false, 0, empty; best_of 1). Any other field (user, metadata, ...) is ignored.
UNSUPPORTED = ("echo", "suffix", "best_of", "logit_bias", "presence_penalty", "frequency_penalty", "tools", "tool_choice",
               "functions", "function_call", "response_format", "top_logprobs")


def _whole(value):
    """12.0 is the integer 12, as JSON Schema reads it; true and "12" stay refused (strict models)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Whole = Annotated[int, BeforeValidator(_whole)]  # an integer, written with or without ".0"


def whole(**bounds):
    """An integer within `bounds` (ge, le), written with or without ".0" (the bounds go in the schema as minimum/maximum)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_whole)]


def unicode_text(text: str) -> str:
    """`text` if it can be written as UTF-8 (JSON may spell a lone surrogate such as \\ud800, which cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text holds a lone surrogate (\\ud800-\\udfff), which is no character; send valid Unicode") from None
    return text


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """What both endpoints share: the model's name, how many tokens, how to sample, when to stop."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = None  # compared with the loaded model's name; never a path
    max_tokens: whole(ge=0) | None = None  # new tokens (tokens of the model's tokenizer)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: whole(ge=0) | None = None  # not OpenAI's: as vLLM, 0 keeps every token
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    stop: (Annotated[str, Field(max_length=MAX_STOP_CHARACTERS)]
           | Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARACTERS)]], Field(max_length=MAX_STOP_STRINGS)] | None) = None
    seed: whole(ge=0, le=2**53 - 1) | None = None  # integers JSON numbers hold exactly
    n: whole(ge=1) | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _few_short_stop_strings(cls, stop):
        strings = [stop] if isinstance(stop, str) else stop
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            return stop  # null, or not text: the type's own check answers
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(s) > MAX_STOP_CHARACTERS for s in strings):
            raise ValueError(f"a stop string has at most {MAX_STOP_CHARACTERS} characters")
        return [unicode_text(s) for s in strings]

    def unsupported(self) -> str | None:
        """The first field sent that this server does not implement, with a value that would change the answer."""
        extra = self.model_extra or {}
        for name in UNSUPPORTED:
            value = extra.get(name)
            neutral = value in (None, "", {}, []) or (isinstance(value, (int, float)) and value == (1 if name == "best_of" else 0))
            if not neutral:
                return name
        return None

    def sampling(self) -> dict:
        """The options of `generation.stream` this request sets (the others keep their defaults)."""
        chosen = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                      repetition_penalty=self.repetition_penalty)
        return {name: value for name, value in chosen.items() if value is not None}


class CompletionRequest(SamplingRequest):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(
        description="the prompt: a string, or a list of exactly one string")
    logprobs: whole(ge=0, le=5) | None = None  # alternatives per token, as OpenAI's legacy API

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt_only(cls, prompt):
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError(f"send one prompt per request (a string, or a list of one string), not {len(prompt)}")
        return prompt

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        return unicode_text(prompt[0] if isinstance(prompt, list) else prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _unicode(cls, text):
        return unicode_text(text)


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content")
    @classmethod
    def _unicode(cls, content):
        return unicode_text(content) if isinstance(content, str) else content

    def as_dict(self) -> dict:
        """{"role", "content"} as `chat.render_chat` takes it ("developer" is OpenAI's new name for "system")."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: whole(ge=0) | None = None  # OpenAI's newer name for max_tokens
    logprobs: Literal[False] | None = Field(None, description="chat log-probabilities are not implemented here (false or absent); "
                                           "use /v1/completions with logprobs")

    @field_validator("logprobs", mode="before")
    @classmethod
    def _no_logprobs(cls, logprobs):
        if logprobs is not None and logprobs is not False:
            raise ValueError("chat log-probabilities are not implemented here (send false or leave it out); use /v1/completions with logprobs")
        return logprobs
