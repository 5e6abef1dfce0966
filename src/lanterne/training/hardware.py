"""The machine a model trains on: which device, which number format, and how fast it multiplies.

`pick_device` chooses CUDA when present, `pick_dtype` bf16 where the hardware computes it natively,
and `matmul_peak_flops` measures the FLOP/s that model FLOPs utilisation (MFU) is compared against.
"""

from __future__ import annotations

import time

import torch

from lanterne.errors import HardwareError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HardwareError("--device cuda was asked but no CUDA GPU is visible; use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise HardwareError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 where the hardware computes it natively (a recent GPU, a CPU with AVX512-BF16 or AMX), else fp32;
    or 'float32' / 'bfloat16' as asked. bf16 here means autocast: weights and optimizer stay fp32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return torch.float32
    if name in ("float32", "fp32"):
        return torch.float32
    if name in ("bfloat16", "bf16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise HardwareError("this GPU has no bf16; use dtype=float32")
        if device.type == "cpu" and not cpu_has_bf16():
            raise HardwareError("this CPU has no native bf16 (AVX512-BF16/AMX); use dtype=float32")
        return torch.bfloat16
    raise HardwareError(f"unknown dtype {name!r}; use auto, float32 or bfloat16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 4096), seconds: float = 0.3) -> float:
    """Measured FLOP/s of square matrix products, the best over a few sizes: the practical peak MFU is quoted against."""
    generator = torch.Generator(device=device).manual_seed(0)  # never the global one: training's dropout draws from it
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
        b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
        a @ b
        synchronize(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(sizes) or count < 2:
            a @ b
            count += 1
            synchronize(device)
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best
