"""The linear layer of every block (y = x Wᵀ + b): PyTorch's, with one CPU fix for bf16.

CPUs without bf16 arithmetic (most laptops: AVX2, no AVX512-BF16 or AMX) multiply bf16 matrices
several times slower than fp32 ones. So for products of many rows (a prompt being read, training) a
bf16 layer there computes in fp32, from weights converted on the fly, and rounds the result back to
bf16: 4× faster on a 512-token prompt, and more exact. A single row (decoding one token) stays in
bf16, where reading half the bytes wins.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

# From this many rows, converting the weights to fp32 costs less than the slow bf16 product saves.
UPCAST_MIN_ROWS = 16


@functools.cache
def cpu_has_bf16_arithmetic() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as PyTorch sees it."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same names), computing bf16 products of many rows in fp32 on CPUs without bf16."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Asked once here, not in `forward`: a compiled graph cannot call the CPU check (PyTorch skips it).
        self.upcast_many_rows = not cpu_has_bf16_arithmetic()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and x.numel() >= UPCAST_MIN_ROWS * x.shape[-1]
            and self.upcast_many_rows
        ):
            bias = self.bias.float() if self.bias is not None else None
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return F.linear(x, self.weight, self.bias)
