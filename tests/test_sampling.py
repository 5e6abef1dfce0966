"""Sampling on its definition: probabilities sum to 1, temperature, top-k, top-p boundaries, min-p, penalties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.errors import GenerationError
from lanterne.generation.sampling import SamplingSettings, apply_repetition_penalty, choose_next_token, entropy, next_token_distribution

LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])


def test_temperature_one_is_the_softmax():
    assert torch.allclose(next_token_distribution(LOGITS), torch.softmax(LOGITS, dim=-1))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    logits=st.lists(st.floats(-20, 20), min_size=2, max_size=30),
    temperature=st.floats(0.05, 5.0),
    top_k=st.integers(0, 40),
    top_p=st.floats(0.01, 1.0),
    min_p=st.floats(0.0, 1.0),
)
def test_probabilities_always_sum_to_one(logits, temperature, top_k, top_p, min_p):
    probabilities = next_token_distribution(torch.tensor(logits), temperature, top_k, top_p, min_p)
    assert abs(probabilities.sum().item() - 1) < 1e-5
    assert probabilities[torch.tensor(logits).argmax()] > 0, "the most likely token is never removed"


def test_low_temperature_sharpens_high_temperature_flattens():
    cold, warm, hot = (next_token_distribution(LOGITS, t) for t in (0.5, 1.0, 2.0))
    assert cold[0] > warm[0] > hot[0]
    assert entropy(cold) < entropy(warm) < entropy(hot)


def test_temperature_towards_zero_converges_to_argmax():
    greedy = next_token_distribution(LOGITS, temperature=0)
    assert greedy.tolist() == [1.0, 0, 0, 0, 0]
    assert torch.allclose(next_token_distribution(LOGITS, temperature=1e-3), greedy, atol=1e-6)


def test_greedy_picks_the_first_of_tied_maxima():
    assert next_token_distribution(torch.tensor([1.0, 3.0, 3.0]), temperature=0).tolist() == [0, 1.0, 0]


def test_top_k_keeps_the_k_most_likely():
    probabilities = next_token_distribution(LOGITS, top_k=2)
    assert (probabilities > 0).tolist() == [True, True, False, False, False]
    assert torch.allclose(probabilities[:2], torch.softmax(LOGITS[:2], dim=-1))


@pytest.mark.parametrize(
    "p, kept",
    [
        (0.5, 1),  # the top token alone reaches exactly 0.5
        (0.501, 2),
        (0.8, 2),  # 0.5 + 0.3 reaches 0.8 exactly: the third is not needed
        (0.81, 3),
        (1.0, 4),  # every token with mass
        (0.01, 1),  # at least one token always stays
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2 - 1e-9, 1e-9]))
    probabilities = next_token_distribution(logits, top_p=p)
    assert int((probabilities > 0).sum()) == kept


def test_min_p_drops_tokens_far_below_the_top():
    probabilities = next_token_distribution(torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05])), min_p=0.2)
    assert (probabilities > 0).tolist() == [True, True, False, False]  # 0.05 < 0.2 x 0.6


def test_repetition_penalty_follows_ctrl():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    penalised = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert penalised.tolist() == [[1.0, -4.0, 1.0]]


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    draw = lambda seed: choose_next_token(logits, SamplingSettings(), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(7), draw(7))
    assert any(not torch.equal(draw(7), draw(s)) for s in range(8, 12))


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    draws = choose_next_token(logits, SamplingSettings(), generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=3) / 20000
    assert torch.allclose(frequencies, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)


def test_entropy_in_bits():
    assert entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
    assert entropy(torch.tensor([1.0, 0.0])).item() == 0.0


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_bad_settings_are_clear_errors(fields, message):
    with pytest.raises(GenerationError, match=message):
        SamplingSettings(**fields)
