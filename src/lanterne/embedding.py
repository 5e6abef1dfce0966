"""Embeddings: each token id becomes a vector, and each position adds a vector of its own.

The model never sees ids, only these learned vectors: token embedding + position embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from lanterne.config import GPTConfig


class Embeddings(nn.Module):
    """Token embedding (vocab_size x d_model) plus learned position embedding (context_length x d_model)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids: (batch, time) token ids; positions: (time,) or (batch, time). Returns (batch, time, d_model)."""
        return self.dropout(self.token(ids) + self.position(positions))
