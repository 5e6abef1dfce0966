"""The feed-forward block: each token's vector, on its own, goes 4x wider, through ReLU/GELU, and back.

Attention mixes tokens; this block refines each position independently with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.config import GPTConfig


def activation_function(name: str):
    """The non-linearity by name: 'gelu' (exact, with erf), 'gelu_tanh' (GPT-2's approximation), 'relu'."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown activation {name!r}")


class FeedForward(nn.Module):
    """Linear d_model -> d_ff (4 x d_model), activation, linear d_ff -> d_model, dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.expand = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.activation = activation_function(config.activation)
        self.project = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, time, d_model) -> (batch, time, d_model), each position on its own."""
        hidden = self.activation(self.expand(x))  # (batch, time, d_ff)
        return self.dropout(self.project(hidden))
