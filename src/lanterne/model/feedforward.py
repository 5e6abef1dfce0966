"""The feed-forward block: each token's vector, on its own, goes 4x wider, through ReLU/GELU, and back.

Attention mixes tokens; this block refines each position independently with the same weights.
Llama and Gemma use a gated variant: a second projection of the same width multiplies the
activated one element by element (SwiGLU with SiLU, GeGLU with GELU), at about 2.7-3.2x the width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.model.config import GPTConfig
from lanterne.model.linear import Linear


def activation_function(name: str):
    """The non-linearity by name: 'gelu' (exact, with erf), 'gelu_tanh' (GPT-2's approximation), 'relu', 'silu' (x·sigmoid(x))."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unknown activation {name!r}")


class FeedForward(nn.Module):
    """Linear d_model -> d_ff, activation, linear d_ff -> d_model, dropout.

    Gated (config.feedforward == 'gated'): activation(gate(x)) * expand(x) before the projection back.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.expand = Linear(config.d_model, config.d_ff, bias=config.bias)
        self.gate = Linear(config.d_model, config.d_ff, bias=config.bias) if config.feedforward == "gated" else None
        self.activation = activation_function(config.activation)
        self.project = Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The d_ff-wide activations for x (batch, time, d_model): what the projection back reads."""
        if self.gate is None:
            return self.activation(self.expand(x))  # (batch, time, d_ff)
        return self.activation(self.gate(x)) * self.expand(x)  # (batch, time, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, time, d_model) -> (batch, time, d_model), each position on its own."""
        return self.dropout(self.project(self.hidden(x)))
