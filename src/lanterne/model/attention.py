"""Causal multi-head self-attention: every token weighs the tokens before it through queries, keys, values.

Each head computes softmax(Q Kᵀ / √d_head) V over the past only. Two paths, one truth: a fast one
(PyTorch's scaled_dot_product_attention) and an explaining one that returns the weights and Q, K, V.
Options for newer families: fewer key/value heads than query heads, each shared by a group
(grouped-query attention), rotary positions, normalised queries and keys, and a sliding window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.model.config import GPTConfig
from lanterne.model.linear import Linear
from lanterne.model.layer_norm import make_norm
from lanterne.model.positions import rotate

if TYPE_CHECKING:
    from lanterne.generation.cache import KVCache


@dataclass
class AttentionDetails:
    """What one attention layer computed, for inspection. Shapes: (batch, heads, time, ...)."""

    weights: torch.Tensor  # (batch, heads, query_time, key_time), rows sum to 1
    queries: torch.Tensor  # (batch, heads, query_time, head_dim), after rotary positions
    keys: torch.Tensor  # (batch, kv_heads, key_time, head_dim): query head h reads key head h // query_groups
    values: torch.Tensor  # (batch, kv_heads, key_time, head_dim)
    scores: torch.Tensor | None = None  # (batch, heads, query_time, key_time): scaled Q·K before the mask and softmax


def query_key_positions(query_length: int, key_length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the queries, (query_length, 1), and of the keys, (1, key_length).

    The queries are the last `query_length` of the `key_length` positions (the rest is cached past).
    """
    offset = key_length - query_length
    return torch.arange(query_length, device=device).unsqueeze(1) + offset, torch.arange(key_length, device=device).unsqueeze(0)


def causal_mask(query_length: int, key_length: int, device: torch.device, window: int = 0) -> torch.Tensor:
    """(query_length, key_length) booleans, True where a query may look: the past and itself
    (only the latest `window` positions, itself included, when window > 0)."""
    queries, keys = query_key_positions(query_length, key_length, device)
    mask = keys <= queries
    return mask & (keys > queries - window) if window else mask


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask: one Q/K/V projection, one output projection.

    With n_kv_heads < n_heads, each key/value head serves `query_groups` consecutive query heads.
    """

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.query_size = config.n_heads * config.head_dim
        self.key_value_size = config.n_kv_heads * config.head_dim
        self.qkv = Linear(config.d_model, self.query_size + 2 * self.key_value_size, bias=config.bias)
        self.output = Linear(self.query_size, config.d_model, bias=config.bias)
        # Gemma 3 normalises each head's query and key vector before turning them.
        self.query_norm = make_norm(config, config.head_dim) if config.qk_norm else None
        self.key_norm = make_norm(config, config.head_dim) if config.qk_norm else None
        self.scale = config.attention_scale or 1.0 / math.sqrt(config.head_dim)
        self.window = config.sliding_window if config.is_sliding(layer) else 0
        self.dropout = config.dropout
        self.output_dropout = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (batch, time, d_model) to queries (batch, heads, time, head_dim), keys and values (batch, kv_heads, time, head_dim)."""
        batch, time, _ = x.shape
        queries, keys, values = self.qkv(x).split([self.query_size, self.key_value_size, self.key_value_size], dim=2)
        queries = queries.view(batch, time, self.n_heads, self.head_dim).transpose(1, 2)  # (batch, heads, time, head_dim)
        keys = keys.view(batch, time, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (batch, kv_heads, time, head_dim)
        values = values.view(batch, time, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.query_norm is not None:
            queries, keys = self.query_norm(queries), self.key_norm(keys)
        return queries, keys, values

    def forward(
        self,
        x: torch.Tensor,
        *,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
        explain: bool = False,
    ) -> tuple[torch.Tensor, AttentionDetails | None]:
        """x: (batch, time, d_model) -> (batch, time, d_model), and the details when `explain`.

        rotary: cos and sin of this step's positions (rotary models). cache: past keys/values to
        attend to (and to extend). key_mask: (batch, key_time) booleans, False for padding positions
        no query may look at. explain: take the step-by-step path.
        """
        batch, time, _ = x.shape
        queries, keys, values = self.split_heads(x)
        if rotary is not None:
            queries, keys = rotate(queries, *rotary), rotate(keys, *rotary)
        if cache is not None:
            keys, values = cache.store(layer, keys, values)  # (batch, kv_heads, past + time, head_dim)
        key_time = keys.shape[2]
        mask = None  # None: plain causal (or, for one new token, every cached position)
        windowed = self.window and key_time > self.window
        if key_mask is not None or (key_time != time and time > 1) or windowed:
            mask = causal_mask(time, key_time, x.device, self.window)  # (time, key_time)
            if key_mask is not None:
                # A padding query would see no key at all (a NaN row); letting it see itself is
                # harmless, since no real query ever looks at a padding key.
                query_positions, key_positions = query_key_positions(time, key_time, x.device)
                mask = (mask & key_mask[:, None, None, :key_time]) | (key_positions == query_positions)  # (batch, 1, time, key_time)
        if explain:
            mixed, details = attention_step_by_step(queries, keys, values, mask, self.scale)
        else:
            dropout = self.dropout if self.training else 0.0
            options = dict(attn_mask=mask, dropout_p=dropout, is_causal=mask is None and time > 1, scale=self.scale)
            if self.n_kv_heads != self.n_heads:
                options["enable_gqa"] = True
            if cache is None and _cpu_bf16_short(queries):
                with torch.autocast("cpu", enabled=False):  # else autocast would cast the fp32 inputs back to bf16
                    mixed = F.scaled_dot_product_attention(queries.float(), keys.float(), values.float(), **options).to(queries.dtype)
            else:
                mixed = F.scaled_dot_product_attention(queries, keys, values, **options)  # (batch, heads, time, head_dim)
            details = None
        mixed = mixed.transpose(1, 2).contiguous().view(batch, time, self.query_size)  # heads side by side again
        return self.output_dropout(self.output(mixed)), details


# PyTorch's CPU flash attention is 2-3x slower in bf16 than in fp32 for short sequences, backward
# above all (measured on an AVX512-BF16 CPU, torch 2.13: batch 12, 4 heads of 32, 64 tokens: 5.1 ms
# against 1.5 ms forward + backward); from about 512 tokens on, bf16 is as fast or faster. So under
# bf16 autocast on a CPU, short sequences are attended in fp32 (the products around stay bf16).
_CPU_BF16_FP32_UP_TO = 256


def _cpu_bf16_short(queries: torch.Tensor) -> bool:
    return queries.device.type == "cpu" and queries.dtype == torch.bfloat16 and queries.shape[2] <= _CPU_BF16_FP32_UP_TO


def attention_step_by_step(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> tuple[torch.Tensor, AttentionDetails]:
    """softmax(Q Kᵀ · scale) V, written out: the explaining path. Returns the mix and what it saw.

    queries: (batch, heads, q_time, head_dim); keys, values: (batch, kv_heads, k_time, head_dim),
    each key/value head shared by heads / kv_heads consecutive query heads. scale: 1/√head_dim
    unless given. mask: booleans broadcastable to (batch, heads, q_time, k_time), True where a query
    may look; None means plain causal.
    """
    query_time, key_time = queries.shape[2], keys.shape[2]
    groups = queries.shape[1] // keys.shape[1]
    shared_keys = keys.repeat_interleave(groups, dim=1)  # (batch, heads, k_time, head_dim)
    shared_values = values.repeat_interleave(groups, dim=1)
    scale = scale if scale is not None else 1.0 / math.sqrt(queries.shape[-1])
    scores = queries @ shared_keys.transpose(-2, -1) * scale  # (batch, heads, q_time, k_time)
    if mask is None:
        mask = causal_mask(query_time, key_time, queries.device)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")).float(), dim=-1).to(values.dtype)  # the future (and padding) gets no weight
    mixed = weights @ shared_values  # (batch, heads, q_time, head_dim)
    return mixed, AttentionDetails(weights=weights, queries=queries, keys=keys, values=values, scores=scores)
