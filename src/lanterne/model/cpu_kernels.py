"""The C kernels of decoding (cpu_kernels.c): int8 layers and one-query attention, built for this CPU once.

Decoding multiplies one row (or a few: sequences decoded together) by every weight matrix. PyTorch's
weight-only int8 kernel does that slowly for so few rows: a 2,048 × 640 matrix, one row, 2 threads,
on the benchmark's CPU (AVX-512), 131 µs against 54 µs in `cpu_kernels.c` in float32, which only streams
the weights and multiply-adds, and 27 µs where the CPU has AVX512-VNNI, whose integer dot products take
the activations rounded to 16-bit steps (`sixteen_bit_rows`, 3e-5 from exact). Either way the plain
dequantise-then-multiply twin of what it multiplies gives the same numbers to float rounding.

The library is compiled with the machine's C compiler (the one torch.compile needs too) for this CPU
(-march=native), once: its file name holds a digest of the source, the compiler and the CPU's
features, so a change of any of them builds it anew. Where no compiler works, `library()` is None
(one warning) and the layers keep PyTorch's kernels. LANTERNE_KERNELS=0 turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# OpenMP shares PyTorch's own runtime (the same libgomp.so.1 is already loaded), so no second pool of threads.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (found := shutil.which(name)):
            return found
    return None


def cpu_features() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (Linux), else the processor's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def build(folder: Path, flags=FLAGS, cc: str | None = None) -> Path:
    """Compile cpu_kernels.c into `folder` (once for this source, compiler, flags and CPU); returns the library's path."""
    cc = cc or compiler()
    if cc is None:
        raise OSError("no C compiler found (install gcc or clang, or set CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    digest = hashlib.sha256(SOURCE.read_bytes() + "\0".join([version, *flags, cpu_features()]).encode()).hexdigest()[:16]
    target = folder / f"cpu_kernels-{digest}.so"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:  # built aside, then renamed: never half a file
            built = Path(scratch) / target.name
            result = subprocess.run([cc, *flags, str(SOURCE), "-o", str(built)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise OSError(f"{Path(cc).name} failed: {(result.stderr.strip().splitlines() or ['no message'])[0]}")
            os.replace(built, target)
    return target


def load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    library.int8_rows.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3 + [ctypes.c_int]
    library.int8_rows.restype = None
    library.rounds_to_16_bits.restype = ctypes.c_int
    library.attend_one.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_void_p] * 2 + [ctypes.c_long] * 5 + [ctypes.c_float, ctypes.c_int]
    library.attend_one.restype = None
    return library


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernels, or None where they cannot be built here (the layers then use PyTorch's)."""
    if os.environ.get("LANTERNE_KERNELS", "1") == "0" or sys.platform == "win32":
        return None
    from lanterne.tokenization.tiktoken_files import cache_folder

    try:
        return load(build(cache_folder() / "kernels"))
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(f"the C kernels for decoding could not be built ({error}); PyTorch's serve instead", stacklevel=2)
        return None


def sixteen_bit_rows(x: torch.Tensor) -> torch.Tensor:
    """What `int8_rows` multiplies where the CPU has AVX512-VNNI: each row on 16-bit integer steps of
    1/32,767 of its largest value (the plain twin of the kernel multiplies this)."""
    largest = x.abs().amax(dim=-1, keepdim=True)
    step = torch.where(largest > 0, largest / 32767.0, torch.ones_like(largest))
    return torch.round(x / step) * step


def int8_rows_with(library_: ctypes.CDLL, x: torch.Tensor, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (m, in) float32 times int8 `values` (out, in) with one float32 scale per row: (m, out) float32.
    Where `library_.rounds_to_16_bits()`, x is first rounded as `sixteen_bit_rows` does."""
    x = x.contiguous()
    out = x.new_empty(x.shape[0], values.shape[0])
    rows, cols = values.shape
    library_.int8_rows(values.data_ptr(), scales.data_ptr(), x.data_ptr(), out.data_ptr(), rows, cols, x.shape[0], torch.get_num_threads())
    return out


def attend_one_with(library_: ctypes.CDLL, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """softmax(q·K · scale) V for one query per slot, over the cache indices each slot's position has reached.

    queries: (slots, heads, 1, head_dim); keys, values: (slots, kv_heads, size, head_dim) float32 or
    bf16; positions: (slots,). Returns (slots, heads, head_dim) float32: `decoder.attend_one`'s numbers.
    """
    slots, heads, _, head_dim = queries.shape
    kv_heads, size = keys.shape[1], keys.shape[2]
    if keys.dtype not in (torch.float32, torch.bfloat16) or values.dtype != keys.dtype:
        raise TypeError(f"attend_one reads float32 or bf16 keys and values, not {keys.dtype} and {values.dtype}")
    queries = queries.float().contiguous()
    keys, values, positions = keys.contiguous(), values.contiguous(), positions.long().contiguous()
    out = queries.new_empty(slots, heads, head_dim)
    library_.attend_one(queries.data_ptr(), keys.data_ptr(), values.data_ptr(), int(keys.dtype == torch.bfloat16), positions.data_ptr(),
                        out.data_ptr(), slots, heads, kv_heads, size, head_dim, scale, torch.get_num_threads())
    return out


# The kernels as PyTorch operations, so that a compiled decoding step calls each as one opaque step:
# torch.ops.lanterne.int8_rows(x, values, scales) and torch.ops.lanterne.attend_one(queries, keys,
# values, positions, scale). Registered through torch.library.Library rather than `custom_op`, whose
# extra layer cost 3.7 µs a call (about 80 calls a token). The "Meta" functions give the result's shape.
_OPERATIONS = torch.library.Library("lanterne", "FRAGMENT")
_OPERATIONS.define("int8_rows(Tensor x, Tensor values, Tensor scales) -> Tensor")
_OPERATIONS.impl("int8_rows", lambda x, values, scales: int8_rows_with(library(), x, values, scales), "CPU")
_OPERATIONS.impl("int8_rows", lambda x, values, scales: x.new_empty(x.shape[0], values.shape[0]), "Meta")
_OPERATIONS.define("attend_one(Tensor queries, Tensor keys, Tensor values, Tensor positions, float scale) -> Tensor")
_OPERATIONS.impl("attend_one", lambda queries, keys, values, positions, scale: attend_one_with(library(), queries, keys, values, positions, scale), "CPU")
_OPERATIONS.impl("attend_one", lambda queries, keys, values, positions, scale: queries.new_empty(
    queries.shape[0], queries.shape[1], queries.shape[3], dtype=torch.float32), "Meta")
int8_rows = torch.ops.lanterne.int8_rows
attend_one = torch.ops.lanterne.attend_one


def available(device: torch.device | str) -> bool:
    """Whether the C kernels serve tensors on `device` (a CPU, and they could be built)."""
    return torch.device(device).type == "cpu" and library() is not None
