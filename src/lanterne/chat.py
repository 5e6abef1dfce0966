"""Chat: a conversation turned into the one text a chat model was trained on, then continued.

An instruct model reads a conversation as plain text with markers between the turns
(`<|im_start|>user ... <|im_end|>` for SmolLM2, `<start_of_turn>user ...` for Gemma). The model's
file gives that layout as a Jinja template (`tokenizer.chat_template`); `render_chat` fills it in as
HuggingFace's `apply_chat_template` does, and `reply` generates the assistant's turn.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from lanterne.errors import GenerationError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def render_chat(template: str, messages: Sequence[Message], *, add_generation_prompt: bool = True, **specials: str) -> str:
    """The text of `messages` laid out by the Jinja `template`, ending with the assistant's header.

    specials: bos_token, eos_token, ... as the template names them. The template runs in Jinja's
    sandbox (it comes from a model file), with `raise_exception` and `tojson` as in transformers.
    """
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise GenerationError("chat templates need jinja2: pip install jinja2") from None

    def raise_exception(message: str):
        raise GenerationError(f"the chat template refuses these messages: {message}")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    environment.globals["raise_exception"] = raise_exception
    environment.filters["tojson"] = lambda value, indent=None: __import__("json").dumps(value, ensure_ascii=False, indent=indent)
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or message.get("role") not in ("system", "user", "assistant"):
            raise GenerationError(f"a chat message is {{'role': 'system'|'user'|'assistant', 'content': text}}, not {message!r}")
    try:
        return environment.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt, **specials)
    except TemplateError as error:
        raise GenerationError(f"the model's chat template cannot be rendered ({error})") from None


def chat_text(tokenizer, messages: Sequence[Message]) -> str:
    """The prompt text for `messages` with this tokenizer's chat template, or GenerationError if it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise GenerationError("this model has no chat template (a base model?); use `generate` with a plain prompt")
    specials = {}
    for name, attribute in (("bos_token", "bos_id"), ("eos_token", "eos_id")):
        token_id = getattr(tokenizer, attribute, None)
        if token_id is not None:
            specials[name] = tokenizer.decode([token_id])
    return render_chat(template, messages, **specials)


def reply(model, tokenizer, messages: Sequence[Message], **options) -> Iterator[str]:
    """The assistant's next turn, streamed as text (options: those of `generation.stream`)."""
    from lanterne.generation import stream

    return stream(model, tokenizer, chat_text(tokenizer, messages), allow_special=True, **options)
