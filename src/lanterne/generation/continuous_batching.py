"""Continuous batching: many generations decoded together, each joining and leaving between steps.

A class asks at once. One decoding step reads every weight once, whether it writes the next token of
one sequence or of thirty-two, so the sequences are decoded *together*, as vLLM and llama.cpp's
server do. One thread, the engine's, owns the model and turns round:

1. admit: waiting generations take the free slots; each one's prompt is read (the prefill);
2. jobs: other forward passes asked meanwhile (the explorer's slides) run, for a bounded slice of time;
3. step: one decoding step for every running sequence; each is handed its token; one that is finished
   or cancelled leaves at once, and its slot is free at the next turn.

Nobody waits for another's answer to end, only for a free slot. The slots are set by memory: the keys
and values a slot keeps for its length (`kv_bytes`). Generations are sorted into lanes by their length
(prompt and new tokens): a short one never pays attention over a long one's positions, and it always
takes the same lane, alone or not. Within a lane every row is computed alike whatever the others do,
so a seeded generation writes the same tokens alone or among thirty (see `Engine`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from lanterne.errors import GenerationError
from lanterne.generation.decoder import Decoder, length_bucket
from lanterne.generation.sampling import SamplingSettings

# The most slots a lane holds. A step's arithmetic grows with its rows: on 2 cores, Gemma 3 270M in bf16
# writes 25 tok/s alone, 92 with 4 slots, 138 with 8, 193 with 16, 246 with 32; past that a step costs
# each row as much as it would alone, and more slots only make every answer slower.
MAX_SLOTS = 32
# The step sizes each lane compiles: the busy slots are kept at the front, and a step covers the
# smallest size that holds them. From 4: fp32 products of 1 or 2 rows round differently from more.
STEP_SIZES = (4, 8, 16, 32)
SHORTEST_LANE = 128  # positions (prompt + new tokens) of the first lane (a sentence and its 60-token answer); each next lane 4 times more
MEMORY_SHARE = 0.25  # of the memory free at start, for the lanes' keys and values
# Per turn, when sequences are running: how long admitting prompts, and running other jobs, may delay their next token.
ADMIT_SECONDS = 0.5
JOB_SECONDS = 0.3


@dataclass(eq=False)
class Generation:
    """One sequence asked of the engine. Its callbacks run in the engine's thread: `on_start()` once its
    prompt is read, `on_token(token, logprobs)` for each token (logprobs: the log-softmax of its scores,
    when asked), then `on_end(reason, error)` once: "eos", "length", "time", "cancelled", "busy" (not
    admitted within `queue_seconds`) or "error" (with the exception)."""

    prompt_ids: list[int]
    max_new_tokens: int
    settings: SamplingSettings = SamplingSettings()
    seed: int | None = None
    eos_id: int | None = None
    vocab_limit: int | None = None
    logprobs: bool = False
    deadline: float | None = None  # time.monotonic() past which it ends ("time")
    on_start: Callable[[], None] = lambda: None
    on_token: Callable[[int, "torch.Tensor | None"], None] = lambda token, logprobs: None
    on_end: Callable[[str, "Exception | None"], None] = lambda reason, error: None
    new_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    _scores: torch.Tensor | None = None

    def cancel(self) -> None:
        """Stop at the engine's next turn (safe from any thread)."""
        self.cancelled = True

    @property
    def length(self) -> int:
        """The positions it may fill: its prompt and its new tokens."""
        return len(self.prompt_ids) + self.max_new_tokens


class Busy(Exception):
    """Every slot and the whole queue are taken: come back later."""


@dataclass
class EngineStatus:
    """What a teacher sees of the load."""

    running: int
    waiting: int
    slots: int
    tokens_per_second: float  # over the last 10 seconds
    generated_tokens: int
    generations: int
    jobs: int
    turns: int


def kv_bytes(config, length: int, dtype: torch.dtype) -> int:
    """The bytes of keys and values one slot keeps for `length` positions (a sliding layer: its window)."""
    size = torch.empty((), dtype=dtype).element_size()
    positions = sum(min(config.sliding_window, length) if config.is_sliding(layer) else length for layer in range(config.n_layers))
    return 2 * positions * config.n_kv_heads * config.head_dim * size


def free_memory(device: torch.device) -> int:
    """Bytes free now: the GPU's, or the machine's available memory (Linux), else 4 GiB as a guess."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def plan_lanes(config, longest: int, dtype: torch.dtype, memory: int, max_slots: int = MAX_SLOTS) -> dict[int, int]:
    """{lane length: slots}. Lanes of 128, 512, 2,048... positions up to `longest` (within the context);
    each gets an equal share of `memory`, as many slots as fit, at most `max_slots` (a quarter as many
    as the lane before it: long answers are rarer, and each costs a longer step). At least one slot each."""
    longest = min(longest, config.context_length)
    lengths, length = [], SHORTEST_LANE
    while True:
        lengths.append(length_bucket(length, config.context_length))
        if length >= longest:
            break
        length *= 4
    lengths = sorted(set(lengths))
    plan = {}
    for index, length in enumerate(lengths):
        fits = memory // len(lengths) // kv_bytes(config, length, dtype)
        plan[length] = max(1, min(max_slots // 4**index, fits))
    return plan


def scores_keeper(generation: Generation):
    """The callback that keeps each step's log-probabilities on `generation`, when it asked for them (else None)."""
    if not generation.logprobs:
        return None

    def keep_scores(scores: torch.Tensor) -> None:
        generation._scores = torch.log_softmax(scores[0].float(), dim=-1)

    return keep_scores


class _Slots:
    """The generations in a lane's slots (None: free)."""

    def __init__(self, slots: int) -> None:
        self.owners: list[Generation | None] = [None] * slots

    @property
    def busy(self) -> int:
        return sum(owner is not None for owner in self.owners)


class _Lane(_Slots):
    """One decoder and the generations in its slots; busy slots are kept at the front."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__(len(decoder.slots))
        self.decoder = decoder

    def admit(self, generation: Generation) -> None:
        slot = self.decoder.add(generation.prompt_ids, generation.settings, generation.seed, vocab_limit=generation.vocab_limit,
                                on_scores=scores_keeper(generation))
        self.owners[slot] = generation

    def leave(self, slot: int) -> None:
        """Free `slot`, and move the last busy slot into it, so that the busy ones stay at the front."""
        self.decoder.remove(slot)
        self.owners[slot] = None
        last = max((index for index, owner in enumerate(self.owners) if owner is not None), default=-1)
        if last > slot:
            self.decoder.move(last, slot)
            self.owners[slot], self.owners[last] = self.owners[last], None


class _PlainLane(_Slots):
    """For a model without the decoder's step (a recurrent one): each generation runs the plain loop,
    one token per turn, side by side."""

    def __init__(self, model, slots: int) -> None:
        super().__init__(slots)
        self.model = model
        self._steps: list = [None] * slots
        self.decoder = self

    def admit(self, generation: Generation) -> None:
        from lanterne.generation.loop import generate_ids

        slot = self.owners.index(None)
        self._steps[slot] = generate_ids(self.model, [generation.prompt_ids], generation.max_new_tokens, generation.settings,
                                         eos_id=generation.eos_id, seed=generation.seed, vocab_limit=generation.vocab_limit,
                                         on_scores=scores_keeper(generation))
        self.owners[slot] = generation

    def step(self) -> dict[int, int]:
        chosen = {}
        for slot, steps in enumerate(self._steps):
            if self.owners[slot] is not None:
                token = next(steps, [None])[0]
                chosen[slot] = token if token is not None else generation_end_token(self.owners[slot])
        return chosen

    def room(self, slot: int) -> int:
        return 1  # the plain loop slides past the context

    def leave(self, slot: int) -> None:
        self._steps[slot].close()
        self.owners[slot], self._steps[slot] = None, None


def generation_end_token(generation: Generation) -> int:
    """A plain loop that stopped early stopped at its end-of-text token."""
    return generation.eos_id if generation.eos_id is not None else 0


class Engine:
    """Decodes every generation submitted, together, in one thread; runs other jobs between its steps.

    model: inference only, owned by the engine's thread once started. lanes: {length: slots}, from
    `plan_lanes` by default (longest: the longest generation served). The first lane is compiled at
    `start` (once per machine: its step sizes, with a progress line each); the others run uncompiled,
    so that a long request never stalls the class while a graph compiles. max_waiting: generations
    that may wait for a slot, past which `submit` raises Busy; queue_seconds: how long one may wait
    before it ends with "busy".

    The same seed writes the same tokens alone or among others when each row's numbers do not depend
    on the rest of the batch: true of bf16 and fp32 products on a CPU (measured, 4 rows and up), not of
    quantised layers, whose kernels change with the number of rows; serve bf16 or fp32 weights for that.
    """

    def __init__(self, model, *, longest: int = 4096, lanes: dict[int, int] | None = None, max_slots: int | None = None,
                 max_waiting: int | None = None, queue_seconds: float = 60.0, compile: bool = True, progress=None) -> None:
        self.model = model
        parameter = next(model.parameters())
        self.device = parameter.device
        dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
        self.stepped = hasattr(model, "blocks")  # a Transformer: the decoder's step; else the plain loop
        if lanes is None and not self.stepped:
            lanes = {longest: max_slots or 4}
        self.plan = lanes or plan_lanes(model.config, longest, dtype, int(MEMORY_SHARE * free_memory(self.device)), max_slots or MAX_SLOTS)
        self.max_waiting = max_waiting if max_waiting is not None else 4 * sum(self.plan.values())
        self.queue_seconds = queue_seconds
        self.compile, self.progress = compile, progress
        self.lanes: dict[int, _Lane] = {}
        self._waiting: deque[Generation] = deque()
        self._jobs: deque[tuple[Callable, Future]] = deque()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._recent: deque[tuple[float, int]] = deque(maxlen=1000)  # (time, tokens) of the last steps
        self.generated_tokens = self.generations = self.jobs_run = self.turns = 0

    # -- from any thread ----------------------------------------------------------------------------

    def start(self) -> "Engine":
        """Build the first lane (compiling its steps now, not when the class arrives), then start turning."""
        if self.stepped:
            self._lane(min(self.plan)).decoder.warm_up()
        self._thread = threading.Thread(target=self._loop, name="lanterne-engine", daemon=True)
        self._thread.start()
        return self

    def submit(self, generation: Generation) -> Generation:
        """Queue a generation (its callbacks say what becomes of it); Busy when the queue is full."""
        if not generation.prompt_ids:
            raise GenerationError("every prompt needs at least one token")
        if generation.max_new_tokens <= 0:
            self._end(generation, "length")
            return generation
        with self._condition:
            if self._closed:
                raise GenerationError("the engine is closed")
            free = max(0, sum(self.plan.values()) - self.running)  # those waiting for the next turn's free slots do not queue
            if len(self._waiting) >= self.max_waiting + free:
                raise Busy(f"{self.running} generating, {len(self._waiting)} waiting")
            self._waiting.append(generation)
            self._condition.notify()
        return generation

    def call(self, work: Callable[[], object]) -> Future:
        """Run `work()` in the engine's thread between two steps; its result (or error) comes in the Future."""
        future: Future = Future()
        with self._condition:
            if self._closed:
                raise GenerationError("the engine is closed")
            self._jobs.append((work, future))
            self._condition.notify()
        return future

    def close(self) -> None:
        """Stop turning; every generation still here ends "cancelled"."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def jobs_waiting(self) -> int:
        return len(self._jobs)

    @property
    def running(self) -> int:
        return sum(lane.busy for lane in self.lanes.values())

    def status(self) -> EngineStatus:
        now = time.monotonic()
        recent = [(moment, tokens) for moment, tokens in list(self._recent) if now - moment <= 10]
        rate = sum(tokens for _, tokens in recent) / 10 if recent else 0.0
        return EngineStatus(self.running, len(self._waiting), sum(len(lane.owners) for lane in self.lanes.values()) or sum(self.plan.values()),
                            round(rate, 1), self.generated_tokens, self.generations, self.jobs_run, self.turns)

    # -- the engine's thread ------------------------------------------------------------------------

    def _lane(self, length: int) -> _Lane:
        if length not in self.lanes and not self.stepped:
            self.lanes[length] = _PlainLane(self.model, self.plan[length])
        if length not in self.lanes:
            slots = self.plan[length]
            compile = self.compile and length == min(self.plan)
            decoder = Decoder(self.model, slots, length, compile=compile, progress=self.progress, pack=False,
                              sizes=[size for size in STEP_SIZES if size < slots])
            self.lanes[length] = _Lane(decoder)
        return self.lanes[length]

    def lane_for(self, generation: Generation) -> int:
        """Its lane: the shortest that holds its prompt and new tokens (the longest, if none does: it ends when full)."""
        return next((length for length in sorted(self.plan) if length >= generation.length), max(self.plan))

    def _loop(self) -> None:
        try:
            while True:
                with self._condition:
                    while not (self._closed or self._waiting or self._jobs or self.running):
                        self._condition.wait()
                    if self._closed:
                        break
                self.turns += 1
                self._admit()
                self._run_jobs()
                self._step()
        finally:
            self._end_all()

    def _admit(self) -> None:
        start = time.monotonic()
        with self._condition:
            waiting = list(self._waiting)
        for generation in waiting:
            if self.running and time.monotonic() - start > ADMIT_SECONDS:
                break
            now = time.monotonic()
            if generation.cancelled:
                self._dequeue(generation, "cancelled")
                continue
            if now - generation.submitted > self.queue_seconds:
                self._dequeue(generation, "busy")
                continue
            if self.stepped and len(generation.prompt_ids) >= max(self.plan):
                self._dequeue(generation, "error", GenerationError(
                    f"the prompt has {len(generation.prompt_ids)} tokens; this server's engine holds {max(self.plan) - 1}"))
                continue
            lane = self._lane(self.lane_for(generation))
            if lane.busy == len(lane.owners):
                continue  # its lane is full: it waits for a slot there, alone or not
            with self._condition:
                self._waiting.remove(generation)
            try:
                lane.admit(generation)
            except Exception as error:  # a prompt the model refuses: that generation ends, the others go on
                self._end(generation, "error", error)
                continue
            self.generations += 1
            generation.on_start()

    def _dequeue(self, generation: Generation, reason: str, error: Exception | None = None) -> None:
        with self._condition:
            self._waiting.remove(generation)
        self._end(generation, reason, error)

    def _run_jobs(self) -> None:
        start = time.monotonic()
        while True:
            with self._condition:
                if not self._jobs or (self.running and time.monotonic() - start > JOB_SECONDS):
                    return
                work, future = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as error:  # handed to whoever waits for it
                future.set_exception(error)
            self.jobs_run += 1

    def _step(self) -> None:
        for lane in self.lanes.values():
            for generation in list(lane.owners):
                if generation is not None and generation.cancelled:
                    self._leave(lane, generation, "cancelled")
            if not lane.busy:
                continue
            chosen = lane.decoder.step()
            self._recent.append((time.monotonic(), len(chosen)))
            ended = []
            for slot, token in chosen.items():
                generation = lane.owners[slot]
                generation.new_tokens += 1
                self.generated_tokens += 1
                logprobs, generation._scores = generation._scores, None
                generation.on_token(token, logprobs)
                reason = None
                if generation.eos_id is not None and token == generation.eos_id:
                    reason = "eos"
                elif generation.new_tokens >= generation.max_new_tokens or lane.decoder.room(slot) <= 0:
                    reason = "length"
                elif generation.cancelled:
                    reason = "cancelled"
                elif generation.deadline is not None and time.monotonic() > generation.deadline:
                    reason = "time"
                if reason is not None:
                    ended.append((generation, reason))
            for generation, reason in ended:  # after every token is handed out: leaving moves slots
                self._leave(lane, generation, reason)

    def _leave(self, lane: _Lane, generation: Generation, reason: str) -> None:
        lane.leave(lane.owners.index(generation))
        self._end(generation, reason)

    def _end(self, generation: Generation, reason: str, error: Exception | None = None) -> None:
        generation.finish_reason = reason
        generation.on_end(reason, error)

    def _end_all(self) -> None:
        for lane in self.lanes.values():
            for generation in list(lane.owners):
                if generation is not None:
                    self._leave(lane, generation, "cancelled")
        with self._condition:
            waiting, self._waiting = list(self._waiting), deque()
            jobs, self._jobs = list(self._jobs), deque()
        for generation in waiting:
            self._end(generation, "cancelled")
        for _, future in jobs:
            future.cancel()
