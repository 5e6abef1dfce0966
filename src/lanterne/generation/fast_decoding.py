"""Fast decoding: one new token makes every linear layer a matrix-vector product, bound by memory speed.

Decoding reads every weight once per token. PyTorch's CPU matrix-vector kernel reaches about a
third of the memory bandwidth on some machines; a compiled row-by-row dot product reaches most of it.
On others (and for small matrices) PyTorch's own kernel is as fast: so the first step times both on
each weight shape and keeps the faster. `enable_fast_decoding(model)` uses this for single-token
steps only; every other call is unchanged.
"""

from __future__ import annotations

import functools
import time
import types

import torch
from torch import nn
from torch.nn import functional as F
from lanterne.model.linear import Linear


def _row_dot(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """out[i] = sum_k weight[i, k] * x[k] + bias[i], accumulated in fp32."""
    out = (weight.float() * x.float()).sum(dim=-1) + bias.float()  # (out_features,): fused, never materialised
    return out.to(x.dtype)


@functools.cache
def _compiled_row_dot(shape: tuple[int, int], dtype: torch.dtype):
    """The kernel compiled for one weight shape and dtype (symbolic sizes run slower here).

    Compiled code is cached per code object, with a limit of a few versions; a GPT has about five
    shapes per dtype. So each shape gets its own copy of the code, holding exactly one kernel.
    """
    code = _row_dot.__code__.replace(co_name=f"_row_dot_{shape[0]}x{shape[1]}_{str(dtype).removeprefix('torch.')}")
    return torch.compile(types.FunctionType(code, _row_dot.__globals__, code.co_name), dynamic=False)


@functools.cache
def _zeros(size: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(size, dtype=dtype)


_choices: dict[tuple[tuple[int, int], torch.dtype], object] = {}


def _faster_kernel(shape: tuple[int, int], dtype: torch.dtype, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """The compiled kernel for this weight shape, or None where PyTorch's own is faster (timed once, best of 5)."""
    key = (shape, dtype)
    if key not in _choices:
        compiled = _compiled_row_dot(shape, dtype)
        compiled(x, weight, bias)  # compiles

        def best(run) -> float:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            return min(times)

        own = best(lambda: F.linear(x, weight, bias))
        _choices[key] = compiled if best(lambda: compiled(x, weight, bias)) < own else None
    return _choices[key]


class DecodingLinear(Linear):
    """A Linear layer that takes the compiled path for a single input row outside autograd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1] or torch.is_grad_enabled() or x.device.type != "cpu":
            return super().forward(x)
        bias = self.bias if self.bias is not None else _zeros(self.out_features, self.weight.dtype)
        kernel = _faster_kernel(tuple(self.weight.shape), self.weight.dtype, x.reshape(-1), self.weight, bias)
        if kernel is None:
            return super().forward(x)
        out = kernel(x.reshape(-1), self.weight, bias)  # (out_features,)
        return out.view(*x.shape[:-1], -1)


def enable_fast_decoding(model: nn.Module) -> nn.Module:
    """Switch every Linear of `model` to `DecodingLinear` (same parameters, same names); returns `model`.

    The first steps compile one kernel per weight shape (seconds). CPU only; elsewhere a no-op path.
    """
    for module in model.modules():
        if type(module) in (nn.Linear, Linear):
            module.__class__ = DecodingLinear
    return model


def disable_fast_decoding(model: nn.Module) -> nn.Module:
    """Undo `enable_fast_decoding`."""
    for module in model.modules():
        if type(module) is DecodingLinear:
            module.__class__ = Linear
    return model
