"""Fast decoding: the whole step for one new token, every block at once, compiled into one graph.

Decoding one token touches every weight once and runs a few dozen small operations per block. Run
one by one, those operations cost more than the arithmetic; compiled together (torch.compile,
fixed shapes, a `StaticCache`) they cost almost nothing. The step decodes several sequences at
once, each in its own slot, at its own position, with its own sampling settings and seed: a
sequence can join (`add`) or leave (`remove`) between steps without disturbing the others.
`decode_step` is the step, readable; the plain `model(ids, cache=...)` loop is its twin.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import types
import warnings
from dataclasses import dataclass
from functools import partial

import torch

from lanterne.errors import GenerationError
from lanterne.generation.cache import StaticCache
from lanterne.generation.sampling import SamplingSettings, choose_next_token, distribution, draw_each
from lanterne.model import cpu_kernels
from lanterne.model.positions import rotate
from lanterne.model.quantized_linear import BATCH_ROWS


def decode_step(model, cache: StaticCache, tokens: torch.Tensor, positions: torch.Tensor, kernels: bool = False) -> torch.Tensor:
    """One new token per slot: tokens, positions (slots,) -> next-token logits (slots, vocab) fp32.

    The model's own modules, in the order `GPT.forward` calls them, with attention written for a
    single query per slot against that slot's cache (written at `positions` first). kernels: attend
    with the C kernel (`cpu_kernels.attend_one`: `attend_one`'s numbers; see `attention_kernel_pays`).
    """
    config = model.config
    x = model.embeddings(tokens[:, None], positions[:, None])  # (slots, 1, d_model)
    if config.positions == "rope":
        rotary = model.rotary(positions[:, None])  # cos, sin (slots, 1, 1, head_dim)
        rotary_local = model.rotary_local(positions[:, None]) if model.rotary_local is not None else rotary
    for layer, block in enumerate(model.blocks):
        attention = block.attention
        queries, keys, values = attention.split_heads(block.norm_attention(x))  # (slots, heads or kv_heads, 1, head_dim)
        if config.positions == "rope":
            cos, sin = rotary_local if config.is_sliding(layer) else rotary
            queries, keys = rotate(queries, cos, sin), rotate(keys, cos, sin)
        cache.write(layer, keys, values, positions)
        if kernels:
            mixed = cpu_kernels.attend_one(queries, cache.keys[layer], cache.values[layer], positions, attention.scale).to(x.dtype)
        else:
            mixed = attend_one(queries, cache.keys[layer], cache.values[layer], cache.visible(layer, positions), attention.scale)
        mixed = attention.output(mixed.reshape(x.shape[0], 1, attention.query_size))  # heads side by side, projected
        if block.post_norm_attention is not None:
            mixed = block.post_norm_attention(mixed)
        x = x + mixed
        refined = block.feedforward(block.norm_feedforward(x))
        if block.post_norm_feedforward is not None:
            refined = block.post_norm_feedforward(refined)
        x = x + refined
    return model.lm_head(model.final_norm(x))[:, 0].float()  # (slots, vocab)


def decode_and_pick(model, cache: StaticCache, tokens: torch.Tensor, positions: torch.Tensor, kernels: bool = False):
    """`decode_step`, and each slot's highest-scoring token (slots,): greedy decoding's choice, found inside
    the compiled graph (a parallel pass over the vocabulary: 0.45 ms a token for Gemma's 262,144 outside it)."""
    logits = decode_step(model, cache, tokens, positions, kernels)
    return logits, logits.argmax(dim=-1)


def attend_one(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·K · scale) V for one query per slot; each key/value head serves its group of query heads.

    queries: (slots, heads, 1, head_dim); keys, values: (slots, kv_heads, size, head_dim); visible:
    (slots, 1, 1, size) booleans. Returns (slots, heads, head_dim).
    """
    slots, heads, _, head_dim = queries.shape
    kv_heads = keys.shape[1]
    grouped = queries.reshape(slots, kv_heads, heads // kv_heads, head_dim)  # (slots, kv_heads, groups, head_dim)
    scores = (grouped.to(keys.dtype) @ keys.transpose(-2, -1)).float() * scale  # (slots, kv_heads, groups, size)
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1).to(values.dtype)
    return (weights @ values).to(queries.dtype).reshape(slots, heads, head_dim)


def compiled_cache_folder() -> str:
    """Where compiled kernels are kept between runs: $LANTERNE_CACHE/compiled (compiling is paid once per machine)."""
    from lanterne.tokenization.tiktoken_files import cache_folder

    return str(cache_folder() / "compiled")


def use_compiled_cache_folder() -> None:
    """Point PyTorch's compiler cache at $LANTERNE_CACHE/compiled, unless the user chose a folder for it.

    PyTorch writes its default (/tmp/torchinductor_<user>, lost at reboot) into TORCHINDUCTOR_CACHE_DIR
    the first time it looks, so that default is replaced too.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compiled_cache_folder()


def length_bucket(length: int, context_length: int) -> int:
    """The cache size a sequence of `length` tokens gets: the next power of two from 64, capped at the context.

    A few sizes, each compiled once, rather than one graph per length.
    """
    size = 64
    while size < length:
        size *= 2
    return min(size, context_length)


@dataclass
class Slot:
    """One sequence being decoded: its tokens so far, its next position, how it chooses."""

    ids: list[int]
    settings: SamplingSettings
    generator: torch.Generator
    vocab_limit: int | None = None
    logits: torch.Tensor | None = None  # (vocab,): scores for the next token, waiting to be sampled
    fed: bool = True  # False once a token is chosen and not yet read by the model
    on_scores: object = None  # called with the scores (1, vocab) before each choice

    @property
    def position(self) -> int:
        """Where the next token read goes: the last chosen token's position."""
        return len(self.ids) - 1


class Decoder:
    """Decodes up to `slots` sequences together, one compiled step for all; inference only.

    add(prompt_ids, ...) -> slot number (the prompt is read, its scores kept); step() -> {slot: token}
    for every sequence; remove(slot) frees it. Sequences never see each other. compile=False runs the
    same step without compiling (the readable path); a compiler that fails falls back to it with one warning.
    pack=False skips laying the weights out for the single-row kernels (seconds for a large output layer:
    not worth it for a few tokens); those layers then use their other kernel.
    kernels=False attends with PyTorch's operations rather than the C kernel (`cpu_kernels`).
    sizes: smaller steps to take when only the first slots are busy (each compiled once): a step reads
    the weights once, but its arithmetic grows with its rows, so one sequence alone should not pay for
    thirty-two. `move` packs the busy slots at the front (a server does, as sequences come and go).
    """

    def __init__(self, model, slots: int = 1, max_length: int | None = None, *, compile: bool = True, progress=None,
                 pack: bool = True, sizes=(), kernels: bool = True) -> None:
        self.model = model
        context = model.config.context_length
        self.max_length = length_bucket(max_length or context, context)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, activation_dtype(model)
        self.cache = StaticCache(model.config, slots, self.max_length, device=self.device, dtype=cache_dtype(model, slots, self.dtype))
        self.slots: list[Slot | None] = [None] * slots
        self.sizes = sorted({size for size in sizes if 0 < size < slots} | {slots})
        self.progress = progress
        for module in model.modules():
            if pack and hasattr(module, "pack"):
                module.pack(module.compute_dtype)  # kernels' own layouts (int4 groups, int8 single rows) before any graph sees them
            if slots >= BATCH_ROWS and hasattr(module, "keep_batch_twin"):
                module.keep_batch_twin()  # many rows at once: full-precision products are cheaper (quantized_linear.py)
        self._compiled = compile and can_compile(self.device)
        self.kernels = kernels and cpu_kernels.available(self.device) and attention_kernel_pays(model.config, self.max_length)
        if self._compiled:
            use_compiled_cache_folder()
            allow_graphs(RECOMPILE_LIMIT)
        self._steps: dict[int, _Step] = {}
        self.compile_seconds = 0.0

    # -- sequences in and out -----------------------------------------------------------------------

    @torch.inference_mode()
    def add(self, prompt_ids, settings: SamplingSettings = SamplingSettings(), seed: int | None = None, *,
            vocab_limit: int | None = None, on_scores=None) -> int:
        """Read a prompt into a free slot (one plain forward pass over it); returns the slot number."""
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise GenerationError("every prompt needs at least one token")
        if len(prompt_ids) >= self.max_length:
            raise GenerationError(f"the prompt has {len(prompt_ids)} tokens; this decoder holds {self.max_length - 1} and one new one")
        free = [index for index, slot in enumerate(self.slots) if slot is None]
        if not free:
            raise GenerationError(f"all {len(self.slots)} slots are busy; remove a sequence first")
        generator = torch.Generator(device=self.device)
        generator.seed() if seed is None else generator.manual_seed(seed)
        prefill = self.model.new_cache(1, len(prompt_ids))
        ids = torch.tensor([prompt_ids], device=self.device)
        logits = self.model(ids, cache=prefill, last_only=True).logits[0, -1].float()
        length = len(prompt_ids)
        self.cache.fill(free[0], [prefill.keys[layer, 0, :, :length] for layer in range(self.model.config.n_layers)],
                        [prefill.values[layer, 0, :, :length] for layer in range(self.model.config.n_layers)])
        self.slots[free[0]] = Slot(prompt_ids, settings, generator, vocab_limit, logits, True, on_scores)
        return free[0]

    def remove(self, slot: int) -> None:
        """Free a slot (a finished or cancelled sequence); the others go on as if it never was."""
        self.slots[slot] = None

    @torch.inference_mode()
    def move(self, source: int, target: int) -> None:
        """Move the sequence in slot `source` to the free slot `target`, its keys and values with it."""
        if self.slots[target] is not None or self.slots[source] is None:
            raise GenerationError(f"cannot move slot {source} to slot {target}: the first must be busy, the second free")
        for layer in range(len(self.cache.keys)):
            self.cache.keys[layer][target] = self.cache.keys[layer][source]
            self.cache.values[layer][target] = self.cache.values[layer][source]
        self.slots[target], self.slots[source] = self.slots[source], None

    @property
    def active(self) -> list[int]:
        return [index for index, slot in enumerate(self.slots) if slot is not None]

    def room(self, slot: int) -> int:
        """How many more tokens `slot` can take before its cache is full."""
        return self.max_length - len(self.slots[slot].ids)

    def size_for(self, rows: int) -> int:
        """The step that covers the first `rows` slots: the smallest of `sizes` that holds them."""
        return next(size for size in self.sizes if size >= rows)

    # -- one step -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> dict[int, int]:
        """Feed each sequence its last chosen token (one step for all), then choose each one's next token."""
        waiting = [index for index in self.active if not self.slots[index].fed]
        if waiting:
            if any(self.room(index) <= 0 for index in waiting):
                raise GenerationError(f"a sequence reached this decoder's {self.max_length} positions; remove it")
            # The step covers the first `size` slots. One that is not reading a token writes a throwaway
            # key/value at the next position it will fill, which its own next token overwrites before anyone
            # reads it (in a ring buffer, that index holds a position the window no longer sees); a free slot at 0.
            size = self.size_for(max(self.active) + 1)
            tokens = torch.zeros(size, dtype=torch.long, device=self.device)
            positions = torch.zeros(size, dtype=torch.long, device=self.device)
            for index in self.active:
                positions[index] = min(len(self.slots[index].ids), self.max_length - 1)
            for index in waiting:
                tokens[index], positions[index] = self.slots[index].ids[-1], self.slots[index].position
            logits, best = self._run(size, tokens, positions)
            for index in waiting:
                self.slots[index].logits, self.slots[index].fed = logits[index], True
        chosen = {}
        # Greedy slots that just read a token take their argmax together: one pass over (slots, vocab).
        plain_greedy = [index for index in waiting if self._plain_greedy(self.slots[index])]
        if plain_greedy:
            best = best.tolist()
            chosen.update((index, best[index]) for index in plain_greedy)
        # Sampled slots with the same settings draw together, each from its own generator.
        groups: dict[tuple, list[int]] = {}
        for index in self.active:
            slot = self.slots[index]
            if index not in chosen and self._plain_sampled(slot):
                groups.setdefault((slot.settings, slot.vocab_limit), []).append(index)
        for (settings, vocab_limit), indexes in groups.items():
            scores = torch.stack([self.slots[index].logits for index in indexes])[:, :vocab_limit]
            drawn = draw_each(distribution(scores, settings), [self.slots[index].generator for index in indexes])
            chosen.update(zip(indexes, drawn.tolist()))
        for index in self.active:
            slot = self.slots[index]
            if index not in chosen:
                scores = slot.logits if slot.vocab_limit is None else slot.logits[: slot.vocab_limit]
                if slot.on_scores is not None:
                    slot.on_scores(scores[None])
                history = torch.tensor([slot.ids], device=self.device) if slot.settings.repetition_penalty != 1.0 else None
                chosen[index] = int(choose_next_token(scores[None], slot.settings, history, slot.generator)[0])
            slot.ids.append(chosen[index])
            slot.fed = False
        return {index: chosen[index] for index in self.active}

    @staticmethod
    def _plain_greedy(slot: Slot) -> bool:
        """Greedy with nothing else to apply: the argmax of the whole row is the choice."""
        settings = slot.settings
        return settings.greedy and settings.repetition_penalty == 1.0 and slot.vocab_limit is None and slot.on_scores is None

    @staticmethod
    def _plain_sampled(slot: Slot) -> bool:
        """Sampled with nothing that needs the slot alone (its history, its scores handed out)."""
        return not slot.settings.greedy and slot.settings.repetition_penalty == 1.0 and slot.on_scores is None

    def warm_up(self) -> None:
        """Build every step size now (compiling them, once per machine), not when the first sequences come.
        Only while no slot is busy: each size writes a throwaway position 0 in its slots."""
        if self.active:
            raise GenerationError("warm the decoder up before adding sequences")
        for size in self.sizes:
            # Two tensors made inside inference mode, as `step` makes them: the graph is specialised on both.
            with torch.inference_mode():
                tokens, positions = (torch.zeros(size, dtype=torch.long, device=self.device) for _ in range(2))
                self._run(size, tokens, positions)

    def _run(self, size: int, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step of `size` slots: logits (size, vocab) and each row's highest-scoring token (size,)."""
        # Each call returns a new tensor (no buffer reused across calls on a CPU), so no copy is taken.
        step = self._steps.get(size)
        if step is None:
            cache = self.cache if size == self.cache.slots else self.cache.first(size)
            eager = partial(decode_and_pick, self.model, cache, kernels=self.kernels)
            step = self._steps[size] = _Step(compile_step(self.model, cache, self.kernels) if self._compiled else eager, eager)
        if step.warmed or step.run is step.eager:
            step.warmed = True
            return step.run(tokens, positions)
        start = time.perf_counter()
        if self.progress is not None:
            self.progress(f"compiling the decoding step ({size} slot(s), {self.max_length} positions; once per machine)")
        try:
            logits = step.run(tokens, positions)
        except Exception as error:  # the compiler's failures come in many types; decoding must go on
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            warnings.warn(f"compiling the decoding step failed ({type(error).__name__}: {first_line}); decoding uncompiled", stacklevel=3)
            step.run = step.eager
            logits = step.run(tokens, positions)
        self.compile_seconds += time.perf_counter() - start
        step.warmed = True
        return logits


def attention_kernel_pays(config, max_length: int) -> bool:
    """Whether the C attention (`cpu_kernels.attend_one`) beats PyTorch's in the compiled step.

    The C kernel reads only the positions each slot has reached; PyTorch's reads the whole buffer, but
    as one matrix product per key head. Measured on the benchmark's CPU, 2 threads, a token at position
    ~100: SmolLM2 (3 query heads of 64 per key head) 7.8 against 8.4 ms at 256 positions; Gemma 3
    (4 heads of 256 per key head) 16.2 against 15.7 ms at 256, 16.0 against 16.6 at 512, 16.7 against
    17.7 at 1,024.
    """
    return max_length >= 512 or config.head_dim <= 64


_STEP_NUMBERS = itertools.count()


def compile_step(model, cache: StaticCache, kernels: bool = False):
    """`decode_and_pick` on this model and cache, compiled; (tokens, positions) -> logits, greedy choices.

    Before each call, PyTorch checks that what the graph was built from is unchanged (its guards):
    every weight's type, shape and dtype, a thousand checks, 1.2 ms a token for SmolLM2. A decoder's
    model and cache never change, so only the two inputs are checked. That is safe because each step
    gets a function of its own (a new code object: compiled graphs are kept per code object), so no
    other decoder's graph can ever be taken for this one.
    """

    def step(tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_and_pick(model, cache, tokens, positions, kernels)

    code = step.__code__.replace(co_name=f"decode_step_{next(_STEP_NUMBERS)}")
    unique = types.FunctionType(code, step.__globals__, code.co_name, None, step.__closure__)
    # size_asserts: the compiled code checks every extern call's result shape, 750 checks a token for SmolLM2.
    return torch.compile(unique, fullgraph=True, dynamic=False, options={"guard_filter_fn": inputs_only, "size_asserts": False})


def inputs_only(guards) -> list[bool]:
    """Keep the checks on the step's own inputs (tokens and positions: shape, dtype, device) and on
    the global state (grad mode, autocast); drop those on the model and cache (see `compile_step`)."""
    return [guard.guard_type == "GLOBAL_STATE" or guard.name.startswith(("L['tokens']", "L['positions']")) for guard in guards]


@dataclass
class _Step:
    """One step size's function (compiled, or the eager one it falls back to) and whether it ran once."""

    run: object
    eager: object
    warmed: bool = False


def activation_dtype(model) -> torch.dtype:
    """The dtype the step computes in: the model's floating-point weights' (fp32 for quantised layers)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


BF16_CACHE_FROM_SLOTS = 4


def cache_dtype(model, slots: int, activations: torch.dtype) -> torch.dtype:
    """The keys and values a quantised model keeps in `BF16_CACHE_FROM_SLOTS` slots or more: bf16 where the CPU
    multiplies bf16 (llama.cpp keeps them in f16), half the bytes each step reads (16 slots of SmolLM2:
    344 → 403 tok/s). Else the activations' dtype: one slot's step is faster in fp32 (9.4 against 10.6 ms
    for SmolLM2), and a full-precision model decodes exactly as its plain loop does."""
    from lanterne.model.linear import cpu_has_bf16_arithmetic

    parameter = next(model.parameters())
    if slots >= BF16_CACHE_FROM_SLOTS and getattr(model, "quantized", None) and parameter.device.type == "cpu" and cpu_has_bf16_arithmetic():
        return torch.bfloat16
    return activations


# PyTorch compiles a function for at most 8 kinds of input, then runs it uncompiled. Every decoder is
# one kind (its slots, length, cache dtype): a server holds one per lane, a process may make a few.
RECOMPILE_LIMIT = 64


def allow_graphs(count: int) -> None:
    """Let the decoding step be compiled for up to `count` kinds of input (never lowers the user's setting)."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), count))


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: a C++ compiler on a CPU; LANTERNE_COMPILE=0 turns it off."""
    if os.environ.get("LANTERNE_COMPILE", "1") == "0" or sys.platform == "win32" and device.type == "cpu":
        return False
    if device.type == "cpu":
        import shutil

        return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    return True


# -- generation through the decoder ---------------------------------------------------------------

# Compiling the step costs seconds (fewer once cached on disk); a short answer is written sooner
# without it. From this many new tokens on, `compile=None` compiles.
COMPILE_FROM_TOKENS = 32


def decoder_for(model, slots: int, length: int, *, compile: bool = True, progress=None, pack: bool = True) -> Decoder:
    """The model's decoder for `slots` sequences of up to `length` tokens, made once and kept on the model.

    Sizes are rounded up (`length_bucket`), so a few decoders, each compiled once, serve every request.
    """
    key = (slots, length_bucket(length, model.config.context_length), compile, activation_dtype(model), next(model.parameters()).device, pack)
    decoders = model.__dict__.setdefault("_decoders", {})
    if key not in decoders:
        decoders[key] = Decoder(model, slots, key[1], compile=compile, progress=progress, pack=pack)
    decoder = decoders[key]
    decoder.progress = progress
    return decoder


def decoder_rows(model, prompts, max_new_tokens: int, settings: SamplingSettings, *, eos_id=None, seed=None, stop_check=None,
                 vocab_limit=None, on_scores=None, compile: bool | None = None, timings=None, progress=None):
    """`loop.generate_ids`'s rows, written by a `Decoder`: each prompt in its own slot (prompt i samples
    with seed + i), one step for all; a row that ends leaves its slot at once. Yields, per step, each
    row's new token (None once finished)."""
    long_text = max_new_tokens >= COMPILE_FROM_TOKENS  # worth compiling the step and packing the kernels
    if compile is None:
        compile = long_text
    longest = max(len(prompt) for prompt in prompts)
    decoder = decoder_for(model, len(prompts), longest + max_new_tokens, compile=compile, progress=progress, pack=long_text or compile)
    clock = time.perf_counter
    start = clock()
    slots = []
    try:
        for row, prompt in enumerate(prompts):
            slots.append(decoder.add(prompt, settings, None if seed is None else seed + row, vocab_limit=vocab_limit, on_scores=on_scores))
        if timings is not None:
            timings.prefill_tokens += sum(len(prompt) for prompt in prompts)
            timings.prefill_s += clock() - start
        finished = [False] * len(prompts)
        new_ids: list[list[int]] = [[] for _ in prompts]
        for step in range(max_new_tokens):
            start, compiled_before = clock(), decoder.compile_seconds
            chosen = decoder.step()
            emitted: list[int | None] = []
            for row, slot in enumerate(slots):
                if finished[row]:
                    emitted.append(None)
                    continue
                token = chosen[slot]
                emitted.append(token)
                new_ids[row].append(token)
                if (eos_id is not None and token == eos_id) or (stop_check is not None and stop_check(row, new_ids[row])):
                    finished[row] = True
                    decoder.remove(slot)
            if timings is not None:
                compiling = decoder.compile_seconds - compiled_before
                timings.compile_s += compiling
                timings.decode_s += clock() - start - compiling
                timings.decode_tokens += sum(token is not None for token in emitted)
            yield emitted
            if all(finished):
                return
    finally:
        for slot in slots:
            if decoder.slots[slot] is not None:
                decoder.remove(slot)
