"""Attention against its plain definition: two paths, one truth; causal; rows sum to 1; the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from lanterne.generation.cache import KVCache
from lanterne.model.attention import CausalSelfAttention, attention_step_by_step, causal_mask
from lanterne.model.config import GPTConfig

CONFIG = GPTConfig(vocab_size=50, context_length=32, d_model=48, n_heads=6, n_layers=2)


@pytest.fixture
def attention():
    torch.manual_seed(0)
    return CausalSelfAttention(CONFIG).eval()


def test_fast_and_explaining_paths_agree(attention):
    x = torch.randn(3, 17, CONFIG.d_model)
    fast, _ = attention(x)
    slow, details = attention(x, explain=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert details.weights.shape == (3, CONFIG.n_heads, 17, 17)
    assert details.queries.shape == (3, CONFIG.n_heads, 17, CONFIG.head_dim)


def test_weights_are_softmax_of_scaled_scores(attention):
    x = torch.randn(1, 5, CONFIG.d_model)
    _, details = attention(x, explain=True)
    q, k = details.queries[0, 2], details.keys[0, 2]  # head 2: (time, head_dim)
    scores = q @ k.T / math.sqrt(CONFIG.head_dim)
    scores = scores.masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf"))
    assert torch.allclose(details.weights[0, 2], torch.softmax(scores, dim=-1), atol=1e-6)
    assert torch.allclose(details.weights.sum(-1), torch.ones(1, CONFIG.n_heads, 5), atol=1e-6)


def test_the_future_gets_no_weight_and_changes_nothing(attention):
    x = torch.randn(2, 10, CONFIG.d_model)
    out, details = attention(x, explain=True)
    assert details.weights.triu(1).abs().max() == 0
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, CONFIG.d_model)
    out_changed, _ = attention(changed)
    assert torch.allclose(out[:, :6], out_changed[:, :6], atol=1e-6)
    assert not torch.allclose(out[:, 6:], out_changed[:, 6:], atol=1e-3)


def test_first_token_attends_only_to_itself(attention):
    _, details = attention(torch.randn(1, 4, CONFIG.d_model), explain=True)
    assert torch.allclose(details.weights[0, :, 0, 0], torch.ones(CONFIG.n_heads))


@pytest.mark.parametrize("explain", [False, True])
def test_cache_gives_the_same_output_step_by_step(attention, explain):
    x = torch.randn(2, 12, CONFIG.d_model)
    full, _ = attention(x, explain=explain)
    cache = KVCache(CONFIG, batch_size=2)
    pieces = []
    for start, end in [(0, 5), (5, 6), (6, 9), (9, 12)]:  # a prefill, then single steps and a chunk
        out, _ = attention(x[:, start:end], cache=cache, explain=explain)
        cache.advance(end - start)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_padding_keys_are_never_attended(attention):
    x = torch.randn(1, 6, CONFIG.d_model)
    key_mask = torch.tensor([[False, False, True, True, True, True]])  # two left-padding positions
    fast, _ = attention(x, key_mask=key_mask)
    slow, details = attention(x, key_mask=key_mask, explain=True)
    assert details.weights[0, :, 2:, :2].abs().max() == 0
    assert torch.allclose(fast[:, 2:], slow[:, 2:], atol=1e-5)
    # the real tokens see exactly what they would see without the padding in front
    alone, _ = attention(x[:, 2:])
    assert torch.allclose(alone, fast[:, 2:], atol=1e-5)


def test_causal_mask_with_a_cached_past():
    mask = causal_mask(2, 5, torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_step_by_step_rows_sum_to_one_in_bfloat16():
    q, k, v = (torch.randn(1, 2, 7, 8, dtype=torch.bfloat16) for _ in range(3))
    _, details = attention_step_by_step(q, k, v, None)
    assert torch.allclose(details.weights.float().sum(-1), torch.ones(1, 2, 7), atol=1e-2)


def test_cpu_bf16_autocast_attends_short_sequences_in_fp32(attention, monkeypatch):
    """Under CPU bf16 autocast the products stay bf16 but the softmax(QKᵀ)V of a short sequence is fp32 (it is faster)."""
    x = torch.randn(2, 9, CONFIG.d_model, requires_grad=True)
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda q, *a, **k: seen.append(q.dtype) or real(q, *a, **k))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = attention(x)
    mixed.float().sum().backward()  # the backward runs through the fp32 attention too
    assert seen == [torch.float32] and mixed.dtype == torch.bfloat16 and x.grad is not None
    reference, _ = attention(x)
    assert torch.allclose(mixed.float(), reference, atol=3e-2)
