"""Normalisation: each token vector is rescaled to a standard size before a sub-block reads it.

GPT-2 uses LayerNorm (subtract the mean, divide by the standard deviation, then scale and shift);
Llama and Gemma use RMSNorm (divide by the root mean square, then scale), cheaper and as good.
Gemma stores its scale as an offset from 1: it multiplies by (1 + weight).
"""

from __future__ import annotations

import torch
from torch import nn

from lanterne.model.config import GPTConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, or * (1 + weight) with `plus_one` (Gemma); computed in fp32."""

    def __init__(self, size: int, eps: float, *, plus_one: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.plus_one = plus_one
        self.weight = nn.Parameter(torch.zeros(size) if plus_one else torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        scale = 1.0 + self.weight.float() if self.plus_one else self.weight.float()
        if self.plus_one:  # Gemma scales in fp32, then casts
            return (normalised * scale).to(x.dtype)
        return self.weight * normalised.to(x.dtype)  # Llama casts first, then scales (as HuggingFace does)


def make_norm(config: GPTConfig, size: int | None = None) -> nn.Module:
    """The normalisation layer `config.norm` asks for, over `size` features (default d_model)."""
    size = size or config.d_model
    if config.norm == "layernorm":
        return nn.LayerNorm(size, eps=config.layer_norm_epsilon, bias=config.bias)
    return RMSNorm(size, config.layer_norm_epsilon, plus_one=config.norm == "rmsnorm_plus_one")
