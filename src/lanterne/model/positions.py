"""Rotary position embeddings (RoPE): where a token is, told by turning its query and key vectors.

GPT-2 adds a learned vector per position to each token (`embedding.py`). Llama and Gemma instead
rotate each pair of dimensions of the queries and keys by an angle proportional to the position,
each pair at its own speed (a wavelength between 2π and about 2π · base). The dot product Q·K then
depends only on how far apart two tokens are, not on where they stand.
"""

from __future__ import annotations

import torch
from torch import nn


def rotary_frequencies(head_dim: int, base: float) -> torch.Tensor:
    """The angle per position of each of the head_dim / 2 pairs: base ** (-2i / head_dim), (head_dim / 2,).

    Computed in fp32 exactly as HuggingFace does, so that angles far into the context agree to the last bit.
    """
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


class RotaryEmbedding(nn.Module):
    """Cosines and sines of the angles for given positions, computed in fp32 (not learned, not saved)."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.register_buffer("frequencies", rotary_frequencies(head_dim, base), persistent=False)

    def reset(self) -> None:
        """Compute the frequencies again (after the model was built on the "meta" device, without data)."""
        self.frequencies = rotary_frequencies(self.head_dim, self.base).to(self.frequencies.device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: (time,) or (batch, time) -> cos, sin of shape (batch or 1, 1, time, head_dim)."""
        if positions.dim() == 1:
            positions = positions.unsqueeze(0)
        angles = positions.float().unsqueeze(-1) * self.frequencies.float()  # (batch, time, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)  # pair i is dimensions i and i + head_dim / 2
        return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)  # (batch, 1, time, head_dim): one for all heads


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair (x[i], x[i + half]) of x (batch, heads, time, head_dim) by its angle.

    (a, b) -> (a cos θ - b sin θ, b cos θ + a sin θ): a rotation in the plane of the pair.
    """
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    turned = torch.cat((-second, first), dim=-1)  # the pair turned by 90°
    return (x * cos + turned * sin).to(x.dtype)
