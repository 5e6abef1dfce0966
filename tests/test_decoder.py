"""The fast decoder: a static cache and one step for every slot give the plain model's numbers."""

from __future__ import annotations

import pytest
import torch

from lanterne import GPT, GPTConfig
from lanterne.errors import GenerationError
from lanterne.generation import SamplingSettings, Timings, generate_ids
from lanterne.generation.cache import StaticCache
from lanterne.generation.decoder import Decoder, decode_step, length_bucket

GPT2 = dict(vocab_size=320, context_length=128, d_model=64, n_heads=4, n_layers=2, d_ff=128)
LLAMA = dict(
    vocab_size=320, context_length=128, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=96,
    activation="silu", feedforward="gated", norm="rmsnorm", positions="rope", rope_base=500.0, bias=False, tie_embeddings=False,
)
# A window of 5: the ring buffer wraps several times over a 30-token text.
GEMMA = dict(
    vocab_size=320, context_length=128, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, n_layers=4, d_ff=96,
    activation="gelu_tanh", feedforward="gated", norm="rmsnorm_plus_one", post_norms=True, positions="rope",
    rope_base=1000.0, rope_local_base=100.0, qk_norm=True, attention_scale=16**-0.5, sliding_window=5, global_every=2,
    embedding_scale=True, bias=False, layer_norm_epsilon=1e-6,
)
FAMILIES = {"gpt2": GPT2, "llama": LLAMA, "gemma3": GEMMA}


def random_model(options: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**options)).eval()
    with torch.no_grad():  # norms away from 1, so a wrong form shows
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_step_gives_the_plain_models_logits(family):
    """Token by token, past Gemma's sliding window: the step's scores are those of a full forward pass."""
    model = random_model(FAMILIES[family])
    text = torch.randint(0, 320, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    decoder = Decoder(model, slots=1, max_length=64, compile=False)
    slot = decoder.add(text[:4], SamplingSettings(temperature=0), seed=0)
    with torch.inference_mode():
        assert torch.allclose(decoder.slots[slot].logits, model(torch.tensor([text[:4]])).logits[0, -1], atol=1e-4)
        for length in range(5, len(text) + 1):
            decoder.slots[slot].ids.append(text[length - 1])  # the text's own next token, not a chosen one
            decoder.slots[slot].fed = False
            decoder.step()
            decoder.slots[slot].ids.pop()
            expected = model(torch.tensor([text[:length]])).logits[0, -1]
            assert torch.allclose(decoder.slots[slot].logits, expected, atol=1e-4), length


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_generation_writes_the_plain_loops_tokens(family):
    model = random_model(FAMILIES[family])
    prompt = list(range(3, 15))
    for settings in (SamplingSettings(temperature=0), SamplingSettings(temperature=0.9, top_k=40, repetition_penalty=1.2)):
        plain = [step[0] for step in generate_ids(model, [prompt], 24, settings, seed=7)]
        fast = [step[0] for step in generate_ids(model, [prompt], 24, settings, seed=7, fast=True, compile=False)]
        assert fast == plain


def test_slots_give_each_sequence_what_it_gets_alone():
    """Three sequences, sampled with their own settings and seeds, joining and leaving at different steps."""
    model = random_model(LLAMA)
    requests = [
        ([5, 6, 7], SamplingSettings(temperature=0.8), 1),
        (list(range(20, 41)), SamplingSettings(temperature=1.2, top_p=0.9), 2),
        ([9], SamplingSettings(temperature=0), 3),
    ]

    def alone(prompt, settings, seed, steps):
        decoder = Decoder(model, slots=1, max_length=64, compile=False)
        slot = decoder.add(prompt, settings, seed)
        return [decoder.step()[slot] for _ in range(steps)]

    together = Decoder(model, slots=3, max_length=64, compile=False)
    written: dict[int, list[int]] = {}
    slots = {}
    for step in range(20):
        if step in (0, 3, 6):  # each joins a few steps after the one before
            prompt, settings, seed = requests[step // 3]
            slots[together.add(prompt, settings, seed)] = step // 3
        if step == 12:  # the first leaves early; the others go on as if it never was
            first = next(slot for slot, request in slots.items() if request == 0)
            together.remove(first)
            del slots[first]
        for slot, token in together.step().items():
            written.setdefault(slots[slot], []).append(token)
    assert written[0] == alone(*requests[0], 12)
    assert written[1] == alone(*requests[1], 17)
    assert written[2] == alone(*requests[2], 14)


def test_a_freed_slot_is_reused_and_busy_slots_are_named():
    model = random_model(GPT2)
    decoder = Decoder(model, slots=1, max_length=64, compile=False)
    slot = decoder.add([1, 2, 3])
    with pytest.raises(GenerationError, match="slots are busy"):
        decoder.add([4])
    decoder.remove(slot)
    assert decoder.add([4]) == slot
    with pytest.raises(GenerationError, match="prompt has 70 tokens"):
        Decoder(model, slots=1, max_length=64, compile=False).add(list(range(70)))


def test_ring_buffer_keeps_the_window():
    config = GPTConfig(**GEMMA)
    cache = StaticCache(config, slots=2, max_length=64)
    assert cache.sizes == [5, 64, 5, 64]  # sliding layers hold their window only
    visible = cache.visible(0, torch.tensor([2, 40]))
    assert visible[0, 0, 0].tolist() == [True, True, True, False, False]
    assert visible[1, 0, 0].tolist() == [True] * 5
    assert length_bucket(65, 4096) == 128 and length_bucket(3000, 2048) == 2048


def test_timings_count_the_prompt_and_the_new_tokens():
    model = random_model(GPT2)
    for fast in (False, True):
        timings = Timings()
        steps = list(generate_ids(model, [list(range(10))], 6, SamplingSettings(temperature=0), fast=fast, compile=False, timings=timings))
        assert len(steps) == 6
        assert (timings.prefill_tokens, timings.decode_tokens) == (10, 6)
        assert timings.prefill_s > 0 and timings.decode_s > 0 and timings.compile_s == 0
        assert "prompt 10 tokens" in timings.line() and "decode 6 tokens" in timings.line()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_the_compiled_step_writes_the_eager_steps_tokens(family, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = random_model(FAMILIES[family])
    prompt = list(range(3, 15))
    eager = [step[0] for step in generate_ids(model, [prompt], 20, SamplingSettings(temperature=0), fast=True, compile=False)]
    compiled = [step[0] for step in generate_ids(model, [prompt], 20, SamplingSettings(temperature=0), fast=True, compile=True)]
    assert compiled == eager
    decoder = next(decoder for key, decoder in model._decoders.items() if key[2])
    assert decoder._compiled, "the step fell back to eager"
    tokens, positions = torch.tensor([4]), torch.tensor([12])
    with torch.inference_mode():
        assert torch.allclose(decoder._steps[1].run(tokens, positions)[0], decode_step(model, decoder.cache, tokens, positions), atol=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("error:compiling the decoding step failed")
def test_compiled_steps_of_two_models_of_one_shape_never_mix(tmp_path, monkeypatch):
    # Each step checks only its inputs before running (decoder.compile_step): a graph built for one
    # model and cache must never serve another decoder of the same shapes.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    from lanterne.model.quantized_linear import quantize_model

    first, second = random_model(LLAMA, seed=0), quantize_model(random_model(LLAMA, seed=1), "int8")  # other weights, other layers
    prompt, greedy = list(range(3, 15)), SamplingSettings(temperature=0)
    expected = {id(model): [step[0] for step in generate_ids(model, [prompt], 12, greedy, fast=True, compile=False)]
                for model in (first, second)}
    assert expected[id(first)] != expected[id(second)], "pick seeds whose models write different texts"
    for model in (first, second, first):
        assert [step[0] for step in generate_ids(model, [prompt], 12, greedy, fast=True, compile=True)] == expected[id(model)]
    decoders = [Decoder(first, slots=1, max_length=64), Decoder(first, slots=1, max_length=64)]
    for decoder, other_prompt in zip(decoders, (prompt, prompt[::-1])):
        decoder.add(other_prompt, greedy)
    texts = [[], []]
    for _ in range(8):
        for decoder, text in zip(decoders, texts):
            text.extend(decoder.step().values())
    alone = Decoder(first, slots=1, max_length=64, compile=False)
    alone.add(prompt[::-1], greedy)
    assert texts[1] == [next(iter(alone.step().values())) for _ in range(8)]


def test_a_quantised_sequence_writes_the_same_tokens_with_or_without_neighbours():
    """Enough slots that the layers multiply from their full-precision twins: a sequence's tokens do not depend on the others."""
    from lanterne.model.quantized_linear import BATCH_ROWS, quantize_model

    model = quantize_model(random_model(LLAMA), "int4")
    alone = Decoder(model, slots=BATCH_ROWS, max_length=64, compile=False)
    slot = alone.add([5, 6, 7], SamplingSettings(temperature=0.9), seed=4)
    expected = [alone.step()[slot] for _ in range(15)]
    crowded = Decoder(model, slots=BATCH_ROWS, max_length=64, compile=False)
    others = [crowded.add(list(range(10 + n, 30 + n)), SamplingSettings(temperature=1.1), seed=n) for n in range(3)]
    slot = crowded.add([5, 6, 7], SamplingSettings(temperature=0.9), seed=4)
    assert others and [crowded.step()[slot] for _ in range(15)] == expected


def test_quantised_model_decodes_through_the_static_cache():
    from lanterne.model.quantized_linear import quantize_model

    model = quantize_model(random_model(LLAMA), "int8")
    prompt = list(range(3, 15))
    plain = [step[0] for step in generate_ids(model, [prompt], 12, SamplingSettings(temperature=0))]
    fast = [step[0] for step in generate_ids(model, [prompt], 12, SamplingSettings(temperature=0), fast=True, compile=False)]
    assert fast == plain
