"""Embeddings: each token id becomes a vector, and each position adds a vector of its own.

The model never sees ids, only these learned vectors: token embedding + position embedding.
Rotary models (Llama, Gemma) add no position vector here: attention turns queries and keys
instead (`positions.py`). Gemma multiplies the token vectors by √d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from lanterne.model.config import GPTConfig


class Embeddings(nn.Module):
    """Token embedding (vocab_size x d_model), plus a learned position embedding (context_length x d_model)
    when config.positions == 'learned'."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.context_length, config.d_model) if config.positions == "learned" else None
        self.scale = config.d_model**0.5 if config.embedding_scale else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids: (batch, time) token ids; positions: (time,) or (batch, time). Returns (batch, time, d_model)."""
        x = self.token(ids)
        if self.scale is not None:
            x = x * torch.tensor(self.scale, dtype=x.dtype)  # rounded to the weights' dtype first, as Gemma does
        if self.position is not None:
            x = x + self.position(positions)
        return self.dropout(x)
