"""The key/value cache: what attention keeps of the tokens already read, so that a new token costs one step.

`KVCache` grows with the text, for the readable loop. `StaticCache` is allocated once for a batch of
slots, each slot a sequence at its own position, for the compiled decoding step: shapes never change.
Gemma's sliding-window layers keep only their window, in a ring buffer written at position % window.
"""

from __future__ import annotations

import torch

from lanterne.model.config import GPTConfig


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
        shape = (config.n_layers, batch_size, config.n_kv_heads, self.max_length, config.head_dim)
        # Never read past `length`, so left uninitialised: a cache sized for Gemma's 32k context costs
        # nothing until used, where zeroing it took half a second.
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values (batch, kv_heads, new, head_dim) after the stored ones; return all of them."""
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


class StaticCache:
    """Keys and values for `slots` sequences, each layer a fixed buffer (slots, kv_heads, size, head_dim).

    A global layer's buffer holds `max_length` positions; a sliding-window layer's holds its window,
    position p at index p % window (the ring overwrites what the window no longer sees). Index i of
    a slot is valid once the slot's position reached i: one rule for both kinds.
    """

    def __init__(self, config: GPTConfig, slots: int, max_length: int, *, device=None, dtype: torch.dtype = torch.float32) -> None:
        self.slots, self.max_length = slots, max_length
        self.sizes = [
            min(config.sliding_window, max_length) if config.is_sliding(layer) else max_length for layer in range(config.n_layers)
        ]
        shape = lambda size: (slots, config.n_kv_heads, size, config.head_dim)  # noqa: E731
        self.keys = [torch.zeros(shape(size), device=device, dtype=dtype) for size in self.sizes]
        self.values = [torch.zeros(shape(size), device=device, dtype=dtype) for size in self.sizes]

    def first(self, slots: int) -> "StaticCache":
        """The same buffers seen through their first `slots` slots (a smaller step over the busy ones)."""
        view = object.__new__(StaticCache)
        view.slots, view.max_length, view.sizes = slots, self.max_length, self.sizes
        view.keys = [keys[:slots] for keys in self.keys]
        view.values = [values[:slots] for values in self.values]
        return view

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        """Store one new key/value per slot (slots, kv_heads, 1, head_dim) at each slot's position."""
        index = positions % self.sizes[layer]  # (slots,)
        slots = torch.arange(self.slots, device=positions.device)
        self.keys[layer][slots, :, index] = keys[:, :, 0].to(self.keys[layer].dtype)
        self.values[layer][slots, :, index] = values[:, :, 0].to(self.values[layer].dtype)

    def visible(self, layer: int, positions: torch.Tensor) -> torch.Tensor:
        """(slots, 1, 1, size) booleans: the indices a query at `positions` may look at."""
        index = torch.arange(self.sizes[layer], device=positions.device)
        return (index[None, :] <= positions[:, None])[:, None, None, :]

    def fill(self, slot: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Put a prefilled prompt into `slot`: per layer, keys/values (kv_heads, length, head_dim) of
        positions 0..length-1 (a sliding layer keeps the last `window` of them, at their ring index)."""
        for layer, (layer_keys, layer_values) in enumerate(zip(keys, values)):
            length, size = layer_keys.shape[1], self.sizes[layer]
            kept = torch.arange(max(0, length - size), length, device=layer_keys.device)
            self.keys[layer][slot, :, kept % size] = layer_keys[:, kept].to(self.keys[layer].dtype)
            self.values[layer][slot, :, kept % size] = layer_values[:, kept].to(self.values[layer].dtype)
