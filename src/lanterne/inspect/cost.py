"""What a forward pass costs: its measured time and peak memory as the sequence grows.

Shared by the context slide (`inspect.context`) and `benchmarks/generation.py`: one way to time
and to measure memory, on a CPU (the process's peak resident memory) or a GPU (CUDA's allocator).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lanterne.training.hardware import synchronize


class PeakMemory:
    """Peak memory of a block, in bytes: CUDA's allocator on a GPU; the process's peak RSS (VmHWM, reset first) on Linux.

    On a CPU, memory freed earlier is first handed back to the system (glibc's `malloc_trim`): else the
    block would reuse it without the resident size growing, and measure nothing. `peak` and `added`
    stay None where neither can be read (a CPU outside Linux).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.baseline: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        elif _can_reset_rss():
            _return_freed_memory()
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.baseline = _rss_field("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        elif self.baseline is not None:
            self.peak = _rss_field("VmHWM")

    @property
    def added(self) -> int | None:
        """Bytes above what was in use when the block started."""
        return None if self.peak is None or self.baseline is None else max(0, self.peak - self.baseline)


def _rss_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def _return_freed_memory() -> None:
    """Give the heap's free memory back to the system where the C library can (glibc); else do nothing."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _can_reset_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _rss_field("VmHWM")
        return True
    except OSError:
        return False


def timed(run, device: torch.device) -> float:
    """Seconds one call of `run()` takes, the GPU's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def best_of(run, repeat: int, device: torch.device) -> float:
    """The shortest of `repeat` timed calls of `run()`, in seconds, after one untimed warm-up call."""
    run()
    return min(timed(run, device) for _ in range(repeat))


@dataclass
class ForwardCost:
    """One forward pass over `length` tokens: milliseconds, and peak bytes above what was in use before (None: not measurable)."""

    length: int
    ms: float
    peak_added_bytes: int | None

    def as_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def forward_cost_at(model, length: int, device: torch.device, *, last_only: bool = False, repeat: int = 1) -> ForwardCost:
    """Time and memory of a forward pass over `length` random tokens (no cache): the best of `repeat` passes, after a warm-up one.

    last_only=True scores only the last position, as when a prompt is read before generating; False
    scores every position (and holds a (length, vocab_size) block of logits, as in training).
    """
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=device)

    def run() -> None:
        model(ids, last_only=last_only)

    run()  # first-call allocations stay out of the measure
    with PeakMemory(device) as memory:
        seconds = min(timed(run, device) for _ in range(repeat))
    return ForwardCost(length=length, ms=1000 * seconds, peak_added_bytes=memory.added)
