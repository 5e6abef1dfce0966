"""Quantised linear layers: weights kept as 8-bit or 4-bit integers with scales, for fast decoding.

Decoding one token reads every weight once, so its speed is the number of bytes per weight. An int8
layer stores one byte per weight and a scale per row; an int4 layer half a byte per weight, with a
scale and a zero for each group of 32 along a row, as llama.cpp's Q4 blocks do. PyTorch's CPU
weight-only kernels multiply by them directly; `dequantized()` gives the plain twin (the same
numbers as fp32 weights), and elsewhere than a CPU the layer computes with that twin.

The kernels are fast with bf16 activations only (measured on an AVX-512 CPU, torch 2.13: a
1,536 × 576 int4 product of one row takes 0.037 ms from bf16, 0.75 ms from fp32, their reference
loop), so on a CPU each layer rounds its input to bf16 and hands back its result in the input's dtype.
"""

from __future__ import annotations

import itertools
import warnings
import weakref

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.errors import ConfigError
from lanterne.model import cpu_kernels

# From this many rows (sequences decoded together), a layer that keeps a full-precision twin multiplies
# with it: a bf16 product costs hardly more for many rows than for one, but reads 2-4x the bytes of the
# integer kernels, whose arithmetic grows with the rows. Measured (AVX-512 CPU with VNNI, 2 threads,
# torch 2.13, aggregate tok/s): 16 slots, integer kernels against twin, SmolLM2 509 against 384, Gemma 3
# 266 against 267; 32 slots 436 against 571 and 274 against 294.
BATCH_ROWS = 17
# From this many rows (a prompt being read), dequantising the whole matrix for one full-precision product
# beats the weight-only kernels even without a twin: 512 rows × (2,048 × 640) take 7.8 ms in the int4
# kernel, 3.1 ms dequantised to bf16 and multiplied (int8: 8.2 against 1.3 ms), on the CPU above.
DEQUANTIZE_ROWS = 256
GROUP_SIZE = 32  # weights per int4 group: llama.cpp's block size, so Q4 blocks map to groups one for one
WEIGHT_CHOICES = ("auto", "fp32", "bf16", "int8", "int4")


@torch.library.custom_op("lanterne::int8_weight_mm", mutates_args=())
def int8_weight_mm(rows: torch.Tensor, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """torch._weight_int8pack_mm as an opaque call: torch.compile's own lowering of it fails on an input
    computed in the same graph (torch 2.13: "AssertionError: Pointwise")."""
    return torch._weight_int8pack_mm(rows, values, scales)


@int8_weight_mm.register_fake
def _(rows: torch.Tensor, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], values.shape[0])


# fbgemm's packed int8 matrices, by key (a custom op takes numbers, not packed objects).
_PACKED_ROWS: dict[int, object] = {}
_PACKED_KEYS = itertools.count()


@torch.library.custom_op("lanterne::int8_dynamic_row", mutates_args=())
def int8_dynamic_row(row: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    """One fp32 row (1, in) times the int8 matrix packed under `key`, the row rounded to 8 bits on the
    fly (PyTorch's dynamic quantized linear: fbgemm, with VNNI where the CPU has it)."""
    return torch.ops.quantized.linear_dynamic(row, _PACKED_ROWS[key])


@int8_dynamic_row.register_fake
def _(row: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return row.new_empty(row.shape[0], out_features)


def rounded_row(row: torch.Tensor) -> torch.Tensor:
    """What `int8_dynamic_row` multiplies: the row on 256 levels between its smallest and largest value
    (and 0), exactly as the dynamic kernel rounds it. Its twin is this times the dequantised weights."""
    scale, zero = torch._choose_qparams_per_tensor(row, False)
    return torch.fake_quantize_per_tensor_affine(row, scale, zero, 0, 255)


def can_pack_rows() -> bool:
    """Whether PyTorch's CPU dynamic quantized linear is here (x86 or fbgemm engine)."""
    return torch.backends.quantized.engine in ("x86", "fbgemm")


def quantize_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: weight (out, in) ≈ values * scales[:, None]. Returns values (out, in) int8, scales (out,) fp32."""
    weight = weight.float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    values = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return values, scales


def quantize_int4_groups(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of `group_size` along each row: weight ≈ (q - 8) * scale + zero.

    Returns q (out, in) uint8 in 0..15, scales and zeros (out, in / group_size) fp32: the group's
    smallest weight maps to q = 0 and its largest to q = 15.
    """
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)  # (out, groups, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scales = ((high - low) / 15.0).clamp(min=1e-12)
    q = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    zeros = low + 8.0 * scales
    return q.reshape(out_features, in_features), scales, zeros


def dequantize_int4_groups(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """(q - 8) * scale + zero, group by group: (out, in) fp32."""
    out_features, in_features = q.shape
    groups = q.float().reshape(out_features, scales.shape[1], -1) - 8.0  # (out, groups, group_size)
    return (groups * scales[..., None] + zeros[..., None]).reshape(out_features, in_features)


class QuantizedLinear(nn.Module):
    """What the int8 and int4 layers share: sizes, an optional bias, and the plain path."""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("batch_weight", None, persistent=False)  # see `keep_batch_twin`

    def dequantized(self) -> torch.Tensor:
        """The weights these integers stand for, (out, in) fp32."""
        raise NotImplementedError

    def few_rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """A faster path for fewer than `BATCH_ROWS` rows (decoding), where the layer has one (None: the kernel)."""
        return None

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The readable twin: dequantise, then an ordinary product (any device, any dtype)."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized().to(x.dtype), bias)

    def keep_batch_twin(self) -> None:
        """Also keep the weights in full precision (bf16 where the CPU multiplies bf16, else fp32), for
        products of `BATCH_ROWS` rows or more: several sequences decoded at once (`decoder.Decoder`).
        Costs that much memory; the integers stay, and a single row still reads them."""
        dtype = full_precision_dtype()
        if self.batch_weight is None or self.batch_weight.dtype != dtype:
            self.batch_weight = self.dequantized().to(dtype)

    # The activations' dtype the CPU kernels compute from (fp32 gives the same numbers, 20-30x slower).
    compute_dtype = torch.bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.requires_grad:
            return self.plain(x)
        rows = x.reshape(-1, self.in_features)  # the kernels take a matrix
        if self.batch_weight is not None and rows.shape[0] >= BATCH_ROWS:
            out = F.linear(rows.to(self.batch_weight.dtype), self.batch_weight).to(x.dtype)
        elif rows.shape[0] >= DEQUANTIZE_ROWS:
            dtype = full_precision_dtype()
            out = F.linear(rows.to(dtype), self.dequantized().to(dtype)).to(x.dtype)
        elif rows.shape[0] < BATCH_ROWS and (few := self.few_rows(rows)) is not None:
            out = few.to(x.dtype)
        else:
            out = self.kernel(rows.to(self.compute_dtype)).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(QuantizedLinear):
    """int8 weights, one scale per output row.

    A few rows (decoding) go through the C kernel `cpu_kernels.int8_rows` where it could be built
    (2-5x faster than PyTorch's for one row; float32 activations, or 16-bit steps with AVX512-VNNI:
    see `cpu_kernels.sixteen_bit_rows`), else and for more rows
    through torch._weight_int8pack_mm. Without the C kernel, with `rounds_single_rows` (the output
    layer), a single row goes through PyTorch's dynamic quantized linear instead, which rounds the row
    itself to 8 bits as llama.cpp does (Gemma's 262,144 × 640 output layer: 5.5 ms against 13.5 ms in
    the weight-only kernel; the C kernel's decoding step is faster still); `pack`
    prepares it. Two rows or more keep full-precision activations, so that sequences decoded together
    never round each other's numbers.
    """

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(values.shape[1], values.shape[0], bias)
        self.register_buffer("values", values.to(torch.int8).contiguous())  # (out, in)
        self.register_buffer("scales", scales.float().contiguous())  # (out,)
        self.row_key: int | None = None  # set by `pack`: the packed matrix for single rows
        self.rounds_single_rows = False  # `quantize_model` sets it for the output layer
        self.native = values.device.type == "cpu" and cpu_kernels.library() is not None  # asked once, not in a graph

    def pack(self, dtype: torch.dtype = torch.bfloat16) -> None:
        """Pack the matrix for single rows (once; a copy of the int8 values in fbgemm's layout, made in
        1.4 s for Gemma's output layer: worth it for a long text, not for eight tokens)."""
        if self.row_key is not None or not self.rounds_single_rows or self.native or not can_pack_rows() or self.values.device.type != "cpu":
            return
        try:
            with warnings.catch_warnings():
                # PyTorch marks its quantized tensor types deprecated; where they are gone, the kernel serves.
                warnings.simplefilter("ignore", UserWarning)
                weights = torch._make_per_channel_quantized_tensor(  # the same integers, no float copy
                    self.values, self.scales.double(), torch.zeros(self.out_features, dtype=torch.long), 0
                )
                packed = torch.ops.quantized.linear_prepack(weights, None)
        except (AttributeError, RuntimeError, NotImplementedError):
            self.rounds_single_rows = False
            return
        key = next(_PACKED_KEYS)
        _PACKED_ROWS[key] = packed
        weakref.finalize(self, _PACKED_ROWS.pop, key, None)
        self.row_key = key

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        return cls(*quantize_int8_rows(weight), bias)

    def dequantized(self) -> torch.Tensor:
        return self.values.float() * self.scales[:, None]

    def kernel(self, rows: torch.Tensor) -> torch.Tensor:
        return int8_weight_mm(rows, self.values, self.scales.to(rows.dtype))

    def few_rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """(m, in) -> (m, out) through the C kernel, else one row through the packed matrix where packed, or None."""
        if self.native:
            return cpu_kernels.int8_rows(rows.float(), self.values, self.scales)
        if rows.shape[0] == 1 and self.row_key is not None:  # packed (1.4 s for Gemma: the decoder does it for long texts)
            return int8_dynamic_row(rows.float(), self.row_key, self.out_features)
        return None


class Int4Linear(QuantizedLinear):
    """int4 weights in groups of 32 along each row, a scale and a zero per group: PyTorch's CPU int4 kernel.

    The kernel wants the integers in its own packed order (`_convert_weight_to_int4pack_for_cpu`);
    `q` keeps them plainly, for the twin and for saving.
    """

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        out_features, in_features = q.shape
        if in_features % GROUP_SIZE:
            raise ConfigError(f"an int4 layer needs rows of a multiple of {GROUP_SIZE} weights, not {in_features}; use int8")
        super().__init__(in_features, out_features, bias)
        self.group_size = in_features // scales.shape[1]
        self.register_buffer("q", q.to(torch.uint8).contiguous())  # (out, in), 0..15
        self.register_buffer("scales", scales.float().contiguous())  # (out, groups)
        self.register_buffer("zeros", zeros.float().contiguous())  # (out, groups)
        # The kernel's own layout, made by `pack` (not saved: it depends on the CPU kernel).
        self.register_buffer("packed", None, persistent=False)
        self.register_buffer("scales_and_zeros", None, persistent=False)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int4Linear":
        return cls(*quantize_int4_groups(weight), bias)

    def dequantized(self) -> torch.Tensor:
        return dequantize_int4_groups(self.q, self.scales, self.zeros)

    def pack(self, dtype: torch.dtype = torch.bfloat16) -> None:
        """Lay the integers out for the kernel, with scales and zeros in the activations' dtype (once:
        the decoder packs every layer before compiling, so the graph sees plain buffers)."""
        if self.packed is None:
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.q.int(), 2)  # (out, in / 2) uint8
        if self.scales_and_zeros is None or self.scales_and_zeros.dtype != dtype:
            self.scales_and_zeros = torch.stack([self.scales.t(), self.zeros.t()], dim=-1).to(dtype).contiguous()  # (groups, out, 2)

    def kernel(self, rows: torch.Tensor) -> torch.Tensor:
        if self.packed is None or self.scales_and_zeros.dtype != rows.dtype:
            self.pack(rows.dtype)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)


def full_precision_dtype() -> torch.dtype:
    """The dtype a quantised layer's many-row products use: bf16 where the CPU multiplies bf16, else fp32."""
    from lanterne.model.linear import cpu_has_bf16_arithmetic

    return torch.bfloat16 if cpu_has_bf16_arithmetic() else torch.float32


def check_weights_choice(weights: str) -> str:
    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHT_CHOICES)}")
    return weights


def quantize_model(
    model: nn.Module, weights: str, int4_blocks: dict | None = None, output: str | None = None, only: set[str] | None = None
) -> nn.Module:
    """Swap every linear layer of a GPT for a quantised one, in place; returns the model (for inference only).

    weights: 'int8' or 'int4' everywhere, or 'auto': int4 where the file already stored 4-bit groups
    (`int4_blocks`: name -> (q, scales, zeros), taken as they are, exactly), int8 elsewhere. output:
    the layout of the output layer ('int8' or 'int4'; default: as `weights`, int8 for 'auto').
    A tied output layer is untied: the token embedding keeps its full-precision rows. only: the
    weights to quantise ('blocks.0.attention.qkv.weight', ...; a tied output layer is
    'embeddings.token.weight'), the others kept as they are; None: every linear layer.
    """
    check_weights_choice(weights)
    if weights not in ("int8", "int4", "auto"):
        raise ConfigError(f"quantize_model takes int8, int4 or auto, not {weights!r}")
    int4_blocks = int4_blocks or {}
    swapped = False
    if weights == "int4":
        narrow = [name for name, child in model.named_modules() if isinstance(child, nn.Linear) and child.in_features % GROUP_SIZE]
        if narrow:
            raise ConfigError(
                f"int4 needs rows of a multiple of {GROUP_SIZE} weights; {narrow[0]} has {model.get_submodule(narrow[0]).in_features}: "
                f"choose one of {', '.join(choice for choice in WEIGHT_CHOICES if choice != 'int4')}"
            )
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            full = f"{name}.{child_name}" if name else child_name
            weight_name = f"{full}.weight"
            if full == "lm_head" and getattr(getattr(model, "config", None), "tie_embeddings", False):
                weight_name = "embeddings.token.weight"
            if only is not None and weight_name not in only:
                continue
            layout = weights
            if full == "lm_head":
                layout = output or ("int8" if weights == "auto" else weights)
            elif weights == "auto":
                layout = "int4" if f"{full}.weight" in int4_blocks else "int8"
            if layout == "int4" and (child.in_features % GROUP_SIZE or child.out_features % 16):
                layout = "int8"  # rows that do not split into groups of 32, or a row count the kernel cannot pack
            bias = child.bias
            if layout == "int4" and f"{full}.weight" in int4_blocks:
                quantized = Int4Linear(*int4_blocks[f"{full}.weight"], bias)
            elif layout == "int4":
                quantized = Int4Linear.from_weight(child.weight.detach(), bias)
            else:
                quantized = Int8Linear.from_weight(child.weight.detach(), bias)
                # The output layer is the largest matrix: its single rows are rounded to 8 bits, for
                # speed; elsewhere that rounding cost more agreement than it saved time (Gemma 3).
                quantized.rounds_single_rows = full == "lm_head"
            setattr(module, child_name, quantized)
            swapped = True
    if swapped:
        model.quantized = weights
    return model
