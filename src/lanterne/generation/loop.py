"""The generation loop: predict a token, append it, predict again, within the model's context length.

A key/value cache makes each new token one step (the prompt is read once, the "prefill"). When the
text outgrows the context, only the most recent `context_length` tokens are kept: a sliding window.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from lanterne.errors import GenerationError
from lanterne.generation.incremental_text import IncrementalText, StopStrings
from lanterne.generation.sampling import SamplingSettings, choose_next_token
from lanterne.generation.timings import Timings

END_OF_TEXT = "<|endoftext|>"


class ContextWarning(UserWarning):
    """The text did not fit the model's context: tokens were dropped from the left."""


@dataclass
class GeneratedRow:
    """One prompt's result: the ids the model produced, and why it stopped."""

    prompt_ids: list[int]
    new_ids: list[int]
    finish_reason: str = "length"  # "length", "eos" or "stop"


# -- the prompt -----------------------------------------------------------------------------------


def end_of_text_id(tokenizer) -> int | None:
    """The tokenizer's end-of-text id (its own end of sequence, else GPT-2's <|endoftext|>), which also starts
    an empty prompt; None if it has none."""
    own = getattr(tokenizer, "eos_id", None)
    if own is not None:
        return own
    specials = getattr(tokenizer, "special_tokens", None) or {}
    return specials.get(END_OF_TEXT)


def encode_prompt(tokenizer, prompt: str, allow_special: bool = False) -> list[int]:
    """The prompt's ids; an empty prompt becomes the end-of-text token (GPT-2's way to start from nothing).

    A tokenizer whose model expects a beginning-of-sequence token first (Gemma: `add_bos`) gets it.
    allow_special: text that spells a special token (`<|im_start|>` in a chat) becomes that token.
    """
    if not isinstance(prompt, str):
        raise GenerationError(f"the prompt must be text, not {type(prompt).__name__}")
    options = {"allowed_special": "all"} if allow_special else {}
    if getattr(tokenizer, "add_bos", False) and not prompt.startswith(tokenizer.token_text(tokenizer.bos_id)):
        return list(tokenizer.encode(prompt, add_bos=True, **options))
    if prompt:
        return list(tokenizer.encode(prompt, **options))
    start = end_of_text_id(tokenizer)
    if start is None:
        raise GenerationError("the prompt is empty and this tokenizer has no <|endoftext|> token to start from; give a prompt")
    return [start]


def context_limit(model) -> int:
    """The most tokens `model` reads at once: its context length; unbounded for a recurrent model, whose state carries on."""
    return getattr(model, "context_limit", model.config.context_length)


def fit_prompt(ids: list[int], context_length: int, strict: bool) -> list[int]:
    """The prompt, cut from the left to the context length (with a warning saying how much), or an error if strict."""
    if len(ids) <= context_length:
        return ids
    dropped = len(ids) - context_length
    if strict:
        raise GenerationError(
            f"the prompt has {len(ids)} tokens, more than the context of {context_length}; shorten it or pass strict=False"
        )
    warnings.warn(
        f"the prompt has {len(ids)} tokens but the context holds {context_length}: the first {dropped} tokens were dropped",
        ContextWarning,
        stacklevel=3,
    )
    return ids[-context_length:]


# -- the engine: token ids in, token ids out ------------------------------------------------------


@torch.inference_mode()
def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    settings: SamplingSettings = SamplingSettings(),
    *,
    eos_id: int | None = None,
    seed: int | None = None,
    strict: bool = False,
    stop_check=None,
    vocab_limit: int | None = None,
    on_scores=None,
    fast: bool = False,
    compile: bool | None = None,
    timings: Timings | None = None,
    progress=None,
) -> Iterator[list[int | None]]:
    """Yield, at each step, the new token of every prompt (None for prompts already finished).

    prompts: token ids, already within the context. stop_check(row, new_ids) -> bool ends a row early
    (stop strings). vocab_limit: ids from this one up are never chosen (a model whose vocabulary is
    padded past its tokenizer's, as nanoGPT pads GPT-2's 50,257 ids to 50,304). Batched prompts are
    left-padded and masked; one that would outgrow the context is generated on its own with a sliding
    window (see `_sliding_rows`). on_scores(scores): called at each step with the scores (batch, vocab)
    the step's tokens are drawn from, before temperature, filters and the repetition penalty (several
    prompts that outgrow the context: each prompt in turn, batch 1).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be a whole number >= 0, not {max_new_tokens!r}")
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        raise GenerationError("every prompt needs at least one token")
    if max_new_tokens == 0:
        return
    context = context_limit(model)
    longest = max(len(prompt) for prompt in prompts)
    if strict and longest + max_new_tokens > context:
        raise GenerationError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceed the context of {context}; "
            "ask for fewer tokens or pass strict=False to slide the window"
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # a fresh random seed, without touching torch's global generator
    else:
        generator.manual_seed(seed)
    if fast and hasattr(model, "blocks") and longest + max_new_tokens <= context:
        from lanterne.generation.decoder import decoder_rows

        yield from decoder_rows(
            model, prompts, max_new_tokens, settings, eos_id=eos_id, seed=seed, stop_check=stop_check, vocab_limit=vocab_limit,
            on_scores=on_scores, compile=compile, timings=timings, progress=progress,
        )
    elif len(prompts) == 1 or longest + max_new_tokens <= context:
        yield from _batched_rows(
            model, prompts, max_new_tokens, settings, eos_id, generator, stop_check, device, vocab_limit, on_scores, timings
        )
    else:
        # Each prompt slides on its own: positions would differ across a padded batch.
        streams = [
            _batched_rows(
                model, [prompt], max_new_tokens, settings, eos_id, generator, _row_check(stop_check, index), device, vocab_limit, on_scores,
                timings,
            )
            for index, prompt in enumerate(prompts)
        ]
        finished = [False] * len(prompts)
        for _ in range(max_new_tokens):
            step: list[int | None] = []
            for index, rows in enumerate(streams):
                token = None if finished[index] else next(rows, [None])[0]
                finished[index] = finished[index] or token is None
                step.append(token)
            if all(token is None for token in step):
                return
            yield step


def _row_check(stop_check, index: int):
    if stop_check is None:
        return None
    return lambda row, new_ids: stop_check(index, new_ids)


def _batched_rows(model, prompts, max_new_tokens, settings, eos_id, generator, stop_check, device, vocab_limit=None, on_scores=None,
                  timings: Timings | None = None):
    """Left-padded batch with a KV cache; a single prompt slides past the context when it must."""
    timings = timings or Timings()  # filled in whether asked or not: a few clock readings per token
    clock = time.perf_counter
    start = clock()
    context = context_limit(model)
    batch = len(prompts)
    longest = max(len(prompt) for prompt in prompts)
    total = longest + max_new_tokens
    # history: prompt and new ids, left-padded with each row's first token (harmless for the
    # repetition penalty); real: True on real tokens, the key mask attention uses.
    history = torch.zeros(batch, total, dtype=torch.long, device=device)
    real = torch.zeros(batch, total, dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        pad = longest - len(prompt)
        history[row, :pad] = prompt[0]
        history[row, pad:longest] = torch.tensor(prompt, device=device)
        real[row, pad:] = True
    padded = not bool(real[:, :longest].all())
    positions = (real[:, :longest].long().cumsum(dim=1) - 1).clamp(min=0)  # each row counts from its first real token
    cache = model.new_cache(batch, min(total, context))
    key_mask = real if padded else None
    logits = model(
        history[:, :longest], cache=cache, key_mask=key_mask, positions=positions if padded else None, last_only=True
    ).logits[:, -1]
    timings.prefill_tokens += int(real[:, :longest].sum())
    timings.prefill_s += clock() - start
    start = clock()
    next_position = positions[:, -1] + 1
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    new_ids: list[list[int]] = [[] for _ in range(batch)]
    warned = False
    length = longest
    for step in range(max_new_tokens):
        if vocab_limit is not None and vocab_limit < logits.shape[-1]:
            logits = logits[:, :vocab_limit]  # padding ids: no token of the tokenizer
        if on_scores is not None:
            on_scores(logits)
        tokens = choose_next_token(logits, settings, history[:, :length], generator)
        history[:, length] = tokens
        length += 1
        emitted: list[int | None] = []
        for row, token in enumerate(tokens.tolist()):
            if finished[row]:
                emitted.append(None)
                continue
            emitted.append(token)
            new_ids[row].append(token)
            if (eos_id is not None and token == eos_id) or (stop_check is not None and stop_check(row, new_ids[row])):
                finished[row] = True
        timings.decode_s += clock() - start
        timings.decode_tokens += sum(token is not None for token in emitted)
        yield emitted
        start = clock()
        if bool(finished.all()) or step == max_new_tokens - 1:
            return
        if cache.length < cache.max_length:
            step_positions = next_position.unsqueeze(1) if padded else None
            logits = model(
                tokens.unsqueeze(1), cache=cache, key_mask=key_mask, positions=step_positions, last_only=True, check=False
            ).logits[:, -1]
            next_position = next_position + 1
        else:
            # The context is full: rebuild the cache from the most recent `context` tokens (positions restart at 0).
            if not warned:
                warnings.warn(
                    f"the text reached the context length ({context} tokens): from now on the model sees only the most "
                    f"recent {context} tokens",
                    ContextWarning,
                    stacklevel=4,
                )
                warned = True
            cache.reset()
            logits = model(history[:, length - context : length], cache=cache, last_only=True, check=False).logits[:, -1]


# -- text in, text out ----------------------------------------------------------------------------


@dataclass
class TextRequest:
    prompts: list[str]
    prompt_ids: list[list[int]]
    settings: SamplingSettings
    stop: tuple[str, ...]
    eos_id: int | None
    vocab_limit: int | None  # the tokenizer's size, when the model's vocabulary is padded past it
    decoding: dict = None  # how: fast, compile, timings, progress (`generate_ids`'s options)


def prepare(model, tokenizer, prompts, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, stop=(), strict=False,
            eos_id=None, allow_special=False, decoding: dict | None = None) -> TextRequest:
    """What `generate` and `stream` check and compute before generating: the prompts' ids (within the context),
    the sampling settings, the stop strings, the end-of-text id, the vocabulary limit (GenerationError if wrong)."""
    settings = SamplingSettings(temperature, top_k, top_p, min_p, repetition_penalty)
    if isinstance(stop, str):
        stop = (stop,)
    stop = tuple(s for s in (stop or ()) if s)
    ids = [fit_prompt(encode_prompt(tokenizer, prompt, allow_special), context_limit(model), strict) for prompt in prompts]
    for prompt_ids in ids:
        if max(prompt_ids) >= model.config.vocab_size:
            raise GenerationError(
                f"the tokenizer gave id {max(prompt_ids)} but the model has {model.config.vocab_size} ids; "
                "use the tokenizer the model was trained with"
            )
    limit = tokenizer.vocab_size if tokenizer.vocab_size < model.config.vocab_size else None
    eos = end_of_text_id(tokenizer) if eos_id is None else eos_id
    return TextRequest(list(prompts), ids, settings, stop, eos, limit, decoding or {})


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string (excluded), and whether one was found."""
    cuts = [text.find(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _visible_ids(new_ids: list[int], eos_id: int | None) -> list[int]:
    return new_ids[:-1] if new_ids and eos_id is not None and new_ids[-1] == eos_id else new_ids


def generate(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: str | Sequence[str] = (),
    seed: int | None = None,
    *,
    strict: bool = False,
    eos_id: int | None = None,
    allow_special: bool = False,
    fast: bool = False,
    compile: bool | None = None,
    timings: Timings | None = None,
    progress=None,
) -> str | list[str]:
    """The text the model writes after `prompt` (a list of prompts gives a list, generated as one batch).

    Generation ends after `max_new_tokens`, at the end-of-text token, or at a stop string (matched on
    the decoded text, across token boundaries; not included in the result). `seed` makes sampling
    reproducible. Temperature 0 is greedy. strict=True raises instead of sliding past the context.
    fast, compile, timings, progress: how to decode, and what it cost (see `generate_ids`).
    """
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    decoding = dict(fast=fast, compile=compile, timings=timings, progress=progress)
    request = prepare(model, tokenizer, prompts, temperature, top_k, top_p, min_p, repetition_penalty, stop, strict, eos_id, allow_special, decoding)
    new_ids: list[list[int]] = [[] for _ in prompts]
    # Each row's text grows one token at a time and only its new end is searched: linear, not quadratic.
    texts = [IncrementalText(tokenizer) for _ in prompts]
    stops = [StopStrings(request.stop) for _ in prompts]

    def stop_check(row: int, ids: list[int]) -> bool:
        for token in _visible_ids(ids, request.eos_id)[texts[row].token_count :]:
            texts[row].append(token)
        return stops[row].find(texts[row]) is not None

    for step in generate_ids(
        model, request.prompt_ids, max_new_tokens, request.settings, eos_id=request.eos_id, seed=seed, strict=strict,
        stop_check=stop_check if request.stop else None, vocab_limit=request.vocab_limit, **request.decoding,
    ):
        for row, token in enumerate(step):
            if token is not None:
                new_ids[row].append(token)
    texts = [_cut_at_stop(tokenizer.decode(_visible_ids(ids, request.eos_id)), request.stop)[0] for ids in new_ids]
    return texts[0] if single else texts
