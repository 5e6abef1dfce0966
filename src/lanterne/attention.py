"""Causal multi-head self-attention: every token weighs the tokens before it through queries, keys, values.

Each head computes softmax(Q Kᵀ / √d_head) V over the past only. Two paths, one truth: a fast one
(PyTorch's scaled_dot_product_attention) and an explaining one that returns the weights and Q, K, V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.config import GPTConfig


@dataclass
class AttentionDetails:
    """What one attention layer computed, for inspection. Shapes: (batch, heads, time, ...)."""

    weights: torch.Tensor  # (batch, heads, query_time, key_time), rows sum to 1
    queries: torch.Tensor  # (batch, heads, query_time, head_dim)
    keys: torch.Tensor  # (batch, heads, key_time, head_dim)
    values: torch.Tensor  # (batch, heads, key_time, head_dim)


class KVCache:
    """Keys and values of the tokens already seen, for every layer, so a new token costs one step.

    Buffers are allocated once for `max_length` positions; `length` counts the positions filled.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_length: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.max_length = max_length or config.context_length
        shape = (config.n_layers, batch_size, config.n_heads, self.max_length, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values (batch, heads, new, head_dim) after the stored ones; return all of them."""
        start, end = self.length, self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {end} were asked")
        self.keys[layer, :, :, start:end] = keys
        self.values[layer, :, :, start:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        """Count `steps` new positions as stored (called once per forward pass, after every layer)."""
        self.length += steps

    def reset(self) -> None:
        self.length = 0


def query_key_positions(query_length: int, key_length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the queries, (query_length, 1), and of the keys, (1, key_length).

    The queries are the last `query_length` of the `key_length` positions (the rest is cached past).
    """
    offset = key_length - query_length
    return torch.arange(query_length, device=device).unsqueeze(1) + offset, torch.arange(key_length, device=device).unsqueeze(0)


def causal_mask(query_length: int, key_length: int, device: torch.device) -> torch.Tensor:
    """(query_length, key_length) booleans, True where a query may look: the past and itself."""
    queries, keys = query_key_positions(query_length, key_length, device)
    return keys <= queries


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask, GPT-2 layout: one Q/K/V projection, one output projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.d_model = config.d_model
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.output = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.output_dropout = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (batch, time, d_model) to queries, keys, values, each (batch, heads, time, head_dim)."""
        batch, time, _ = x.shape
        queries, keys, values = self.qkv(x).split(self.d_model, dim=2)
        return tuple(
            t.view(batch, time, self.n_heads, self.head_dim).transpose(1, 2)  # (batch, heads, time, head_dim)
            for t in (queries, keys, values)
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
        explain: bool = False,
    ) -> tuple[torch.Tensor, AttentionDetails | None]:
        """x: (batch, time, d_model) -> (batch, time, d_model), and the details when `explain`.

        cache: past keys/values to attend to (and to extend). key_mask: (batch, key_time) booleans,
        False for padding positions no query may look at. explain: take the step-by-step path.
        """
        batch, time, _ = x.shape
        queries, keys, values = self.split_heads(x)
        if cache is not None:
            keys, values = cache.store(layer, keys, values)  # (batch, heads, past + time, head_dim)
        key_time = keys.shape[2]
        mask = None  # None: plain causal (or, for one new token, every cached position)
        if key_mask is not None or (key_time != time and time > 1):
            query_positions, key_positions = query_key_positions(time, key_time, x.device)
            mask = key_positions <= query_positions  # (time, key_time): causal
            if key_mask is not None:
                # A padding query would see no key at all (a NaN row); letting it see itself is
                # harmless, since no real query ever looks at a padding key.
                mask = (mask & key_mask[:, None, None, :key_time]) | (key_positions == query_positions)  # (batch, 1, time, key_time)
        if explain:
            mixed, details = attention_step_by_step(queries, keys, values, mask)
        else:
            dropout = self.dropout if self.training else 0.0
            causal = mask is None and time > 1
            if cache is None and _cpu_bf16_short(queries):
                with torch.autocast("cpu", enabled=False):  # else autocast would cast the fp32 inputs back to bf16
                    mixed = F.scaled_dot_product_attention(
                        queries.float(), keys.float(), values.float(), attn_mask=mask, dropout_p=dropout, is_causal=causal
                    ).to(queries.dtype)
            else:
                mixed = F.scaled_dot_product_attention(
                    queries, keys, values, attn_mask=mask, dropout_p=dropout, is_causal=causal
                )  # (batch, heads, time, head_dim)
            details = None
        mixed = mixed.transpose(1, 2).contiguous().view(batch, time, self.d_model)  # heads side by side again
        return self.output_dropout(self.output(mixed)), details


# PyTorch's CPU flash attention is 2-3x slower in bf16 than in fp32 for short sequences, backward
# above all (measured on an AVX512-BF16 CPU, torch 2.13: batch 12, 4 heads of 32, 64 tokens: 5.1 ms
# against 1.5 ms forward + backward); from about 512 tokens on, bf16 is as fast or faster. So under
# bf16 autocast on a CPU, short sequences are attended in fp32 (the products around stay bf16).
_CPU_BF16_FP32_UP_TO = 256


def _cpu_bf16_short(queries: torch.Tensor) -> bool:
    return queries.device.type == "cpu" and queries.dtype == torch.bfloat16 and queries.shape[2] <= _CPU_BF16_FP32_UP_TO


def attention_step_by_step(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, AttentionDetails]:
    """softmax(Q Kᵀ / √d_head) V, written out: the explaining path. Returns the mix and what it saw.

    mask: booleans broadcastable to (batch, heads, query_time, key_time), True where a query may
    look; None means plain causal.
    """
    query_time, key_time = queries.shape[2], keys.shape[2]
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])  # (batch, heads, q_time, k_time)
    if mask is None:
        mask = causal_mask(query_time, key_time, queries.device)
    scores = scores.masked_fill(~mask, float("-inf"))  # the future (and padding) gets no weight
    weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
    mixed = weights @ values  # (batch, heads, q_time, head_dim)
    return mixed, AttentionDetails(weights=weights, queries=queries, keys=keys, values=values)
