"""Continuous batching: generations join and leave a running batch, each writes what it writes alone, jobs run
between steps, and the slots and the queue are bounded."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from lanterne.generation.continuous_batching import Busy, Engine, Generation, kv_bytes, plan_lanes
from lanterne.generation.decoder import Decoder
from lanterne.generation.sampling import SamplingSettings
from lanterne.model.config import GPTConfig
from lanterne.model.transformer import GPT


def tiny_model(preset: str = "llama", **options) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(preset, vocab_size=96, context_length=128, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=64, **options)
    return GPT(config).eval()


class Collected:
    """A generation's tokens and its end, gathered from the engine's thread."""

    def __init__(self, prompt, max_new_tokens, settings=SamplingSettings(temperature=0.9), seed=None, **options) -> None:
        self.tokens: list[int] = []
        self.ended = threading.Event()
        self.reason = None
        self.generation = Generation(list(prompt), max_new_tokens, settings, seed, on_token=lambda token, logprobs: self.tokens.append(token),
                                     on_end=self._end, **options)

    def _end(self, reason, error) -> None:
        self.reason = reason
        self.ended.set()

    def wait(self, seconds: float = 30) -> "Collected":
        assert self.ended.wait(seconds), "the generation did not end"
        return self


def prompts(count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 96, (int(length),), generator=generator).tolist() for length in torch.randint(3, 20, (count,), generator=generator)]


@pytest.mark.parametrize("preset", ["llama", "gemma3"])
def test_a_seeded_generation_writes_the_same_tokens_alone_and_among_eight(preset):
    model = tiny_model(preset, **({"sliding_window": 8} if preset == "gemma3" else {}))
    engine = Engine(model, lanes={64: 8}, compile=False).start()
    try:
        texts = prompts(8)
        alone = [Collected(text, 20, seed=index) for index, text in enumerate(texts)]
        for one in alone:  # one after the other: each alone in the batch
            engine.submit(one.generation)
            one.wait()
        together = [Collected(text, 20, seed=index) for index, text in enumerate(texts)]
        for one in together:
            engine.submit(one.generation)
        for one, reference in zip(together, alone):
            assert one.wait().tokens == reference.tokens and len(one.tokens) == 20 and one.reason == "length"
    finally:
        engine.close()


def test_generations_join_and_leave_a_running_batch_without_disturbing_it():
    model = tiny_model()
    engine = Engine(model, lanes={64: 4}, compile=False).start()
    try:
        texts = prompts(6)
        alone = []
        for index, text in enumerate(texts):
            alone.append(Collected(text, 12 + 3 * index, seed=10 + index))
            engine.submit(alone[-1].generation)
            alone[-1].wait()
        staggered = []
        for index, text in enumerate(texts):  # more than the 4 slots; each joins while others run, and leaves when done
            staggered.append(Collected(text, 12 + 3 * index, seed=10 + index))
            engine.submit(staggered[-1].generation)
            time.sleep(0.003)
        assert [one.wait().tokens for one in staggered] == [one.tokens for one in alone]
        assert engine.running == 0 and engine.status().generations == 12
    finally:
        engine.close()


def test_a_cancelled_generation_leaves_at_the_next_step_and_jobs_run_between_steps():
    model = tiny_model()
    engine = Engine(model, lanes={64: 4}, compile=False).start()
    try:
        long = [Collected(text, 60) for text in prompts(3)]
        for one in long:
            engine.submit(one.generation)
        deadline = time.monotonic() + 10
        while engine.running < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        answer = engine.call(lambda: model.config.d_model).result(timeout=10)  # answered while three generations run
        assert answer == 32 and engine.running == 3
        long[0].generation.cancel()
        assert long[0].wait().reason == "cancelled" and len(long[0].tokens) < 60
        assert [one.wait().reason for one in long[1:]] == ["length", "length"]
    finally:
        engine.close()


def test_the_queue_is_bounded_and_a_long_wait_ends_busy():
    model = tiny_model()
    engine = Engine(model, lanes={64: 1}, max_waiting=1, queue_seconds=0.2, compile=False)
    first, second, third = (Collected([1, 2, 3], 50) for _ in range(3))
    engine.submit(first.generation)
    engine.submit(second.generation)  # a free slot at the next turn: not counted as waiting
    with pytest.raises(Busy):
        engine.submit(third.generation)
    engine.start()
    try:
        # One slot: the second waits behind the first's 50 tokens, longer than its 0.2 s.
        assert second.wait().reason in ("busy", "length")
        assert first.wait().reason == "length"
    finally:
        engine.close()


def test_lanes_hold_what_memory_allows():
    config = tiny_model("gemma3", sliding_window=8, global_every=2).config
    per_slot = kv_bytes(config, 256, torch.float32)
    assert per_slot == 2 * (8 + 256) * config.n_kv_heads * config.head_dim * 4  # a sliding layer keeps its window only
    plan = plan_lanes(config, 4096, torch.float32, memory=10**12)
    assert plan == {128: 32}  # the context (128) caps every lane
    big = GPTConfig.preset("llama", vocab_size=96, context_length=8192, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=64)
    assert plan_lanes(big, 4096, torch.float32, memory=10**12) == {128: 32, 512: 8, 2048: 2, 8192: 1}
    # Each of the 4 lanes gets a quarter of the memory: 5 slots of 128 positions fit in the first's share.
    assert plan_lanes(big, 4096, torch.float32, memory=4 * kv_bytes(big, 128, torch.float32) * 5)[128] == 5


def test_a_decoder_step_covers_only_the_busy_slots_and_a_move_keeps_a_sequence_whole():
    model = tiny_model()
    decoder = Decoder(model, 8, 64, compile=False, sizes=[2, 4])
    a = decoder.add([1, 2, 3], SamplingSettings(temperature=0))
    b = decoder.add([4, 5], SamplingSettings(temperature=0))
    c = decoder.add([6, 7, 8, 9], SamplingSettings(temperature=0))
    assert (a, b, c) == (0, 1, 2) and decoder.size_for(3) == 4
    reference = Decoder(model, 8, 64, compile=False, sizes=[2, 4])
    ref = reference.add([6, 7, 8, 9], SamplingSettings(temperature=0))
    mine, theirs = [], []
    for step in range(6):
        if step == 2:
            decoder.remove(a)
            decoder.move(c, a)  # the last busy slot fills the hole: two busy slots, a step of 2
            c = a
        mine.append(decoder.step()[c])
        theirs.append(reference.step()[ref])
    assert mine == theirs


def test_a_recurrent_model_is_served_by_the_plain_loop_side_by_side():
    from lanterne.generation.loop import generate_ids
    from lanterne.recurrent import RecurrentConfig, RecurrentLM

    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch="lstm", vocab_size=96, context_length=16, d_model=8, hidden_size=8)).eval()
    engine = Engine(model, longest=64, compile=False).start()
    try:
        runs = [Collected(text, 10, seed=index, logprobs=True) for index, text in enumerate(prompts(3))]
        for one in runs:
            engine.submit(one.generation)
        for index, one in enumerate(runs):
            alone = [step[0] for step in generate_ids(model, [one.generation.prompt_ids], 10, SamplingSettings(temperature=0.9), seed=index)]
            assert one.wait().tokens == alone and one.reason == "length"
    finally:
        engine.close()
