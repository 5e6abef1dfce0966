"""Reading a GGUF file's header: its key/value metadata, and where and how each tensor's bytes are stored.

A GGUF file is a header (magic "GGUF", version, counts, key/value pairs, tensor infos) followed by the
aligned tensor data. The header is read in one pass with `struct`, a vocabulary's strings by walking
their length prefixes (Gemma 3's 262,144 tokens in about 0.1 s; `gguf.GGUFReader` makes a numpy view
of each string and takes 10 s); the tensor data is memory-mapped, never copied. What the format's
numbers mean (value types, quantisation types, block sizes) stays the `gguf` library's knowledge.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lanterne.errors import CheckpointError

VERSIONS = (2, 3)  # those gguf.GGUFReader reads (version 1 counted in 32 bits)


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file, as `gguf.GGUFReader` gives it (`gguf.quants.dequantize(data, tensor_type)` reads it)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first (numpy's order reversed)
    data_offset: int  # bytes from the start of the file
    # A read-only view of the file: F16, F32, F64 and I8..I64 as those numbers, in numpy's shape; every
    # other type (quantised blocks, BF16) as uint8, (..., rows, bytes per row).
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF file's header, read, and its tensors, mapped."""

    path: Path
    version: int
    metadata: dict[str, Any]  # key -> str, int, float, bool or list (of lists, for an array of arrays)
    tensors: list[GGUFTensor]
    alignment: int  # of each tensor's data, in bytes
    data_offset: int  # where the tensor data begins, in bytes
    byte_order: str  # "<" little-endian (nearly every file), ">" big-endian


def read_gguf_header(path: str | os.PathLike) -> GGUFFile:
    """The header and mapped tensors of the GGUF file at `path`; CheckpointError naming the file if it is
    missing, not GGUF, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    try:
        return _read(path)
    except (ValueError, OSError, OverflowError, MemoryError) as error:
        raise CheckpointError(f"{path} is not a readable GGUF file ({error}); it is truncated or corrupt: download it again") from None


def _read(path: Path) -> GGUFFile:
    from gguf import GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

    with open(path, "rb") as stream:  # the map outlives the stream; ValueError for an empty file
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    file = np.frombuffer(mapped, dtype=np.uint8)  # read-only: every tensor is a view of it
    if mapped[:4] != b"GGUF":
        raise ValueError("it does not start with GGUF's magic bytes")
    header = _HeaderCursor(mapped, file)
    version, tensor_count, kv_count = header.counts()
    metadata, infos, where = {}, [], "the key/value pairs"
    try:
        for index in range(kv_count):
            where = f"key/value pair {index + 1} of {kv_count}"
            key = header.string()
            where = f"the value of {key!r}"
            kind = header.number("I")
            if key in metadata:
                raise ValueError(f"the key {key!r} appears twice")
            metadata[key] = header.value(kind)
            if key == "general.alignment" and kind != GGUFValueType.UINT32:
                raise ValueError("general.alignment is not a uint32")
        for index in range(tensor_count):
            where = f"tensor info {index + 1} of {tensor_count}"
            name = header.string()
            where = f"the info of tensor {name!r}"
            dims = tuple(header.numbers("Q", header.number("I")).tolist())
            infos.append((name, dims, header.number("I"), header.number("Q")))
    except struct.error:
        raise ValueError(f"the file ends at byte {len(mapped):,}, in {where}") from None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment is {alignment}, not a power of two")
    data_offset = -(-header.offset // alignment) * alignment  # the header's end, rounded up to the alignment
    tensors, names = [], set()
    for name, dims, raw_type, offset in infos:
        if name in names:
            raise ValueError(f"the tensor {name!r} appears twice")
        names.add(name)
        try:
            tensor_type = GGMLQuantizationType(raw_type)
        except ValueError:
            raise ValueError(f"tensor {name!r} has type {raw_type}, which gguf does not know") from None
        tensors.append(_tensor(file, name, dims, tensor_type, data_offset + offset, header.order))
    return GGUFFile(path, version, metadata, tensors, alignment, data_offset, header.order)


def _tensor(file: np.ndarray, name: str, dims: tuple[int, ...], tensor_type, start: int, order: str) -> GGUFTensor:
    """The tensor whose data begins `start` bytes into `file`, viewed as gguf.GGUFReader views it."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import quant_shape_to_byte_shape

    block_size, type_size = GGML_QUANT_SIZES[tensor_type]
    n_bytes = math.prod(dims) * type_size // block_size
    if start + n_bytes > len(file):
        raise ValueError(f"tensor {name!r} ends at byte {start + n_bytes:,}, past the end of the file at {len(file):,}")
    shape = dims[::-1]  # numpy's order: the slowest-varying dimension first
    dtype = _numpy_types().get(tensor_type)
    if dtype is None:  # blocks, as bytes: (..., rows, blocks per row x bytes per block)
        try:
            dtype, shape = np.uint8, quant_shape_to_byte_shape(shape, tensor_type)
        except ValueError as error:
            raise ValueError(f"tensor {name!r}: {error}") from None
    data = file[start : start + n_bytes].view(np.dtype(dtype).newbyteorder(order)).reshape(shape)
    return GGUFTensor(name, tensor_type, dims, start, data)


@functools.cache
def _numpy_types() -> dict:
    """The tensor types gguf.GGUFReader gives as numbers (every other one as its raw bytes) -> numpy type."""
    from gguf import GGMLQuantizationType as Type

    return {Type.F16: np.float16, Type.F32: np.float32, Type.F64: np.float64, Type.I8: np.int8, Type.I16: np.int16,
            Type.I32: np.int32, Type.I64: np.int64}


@functools.cache
def _value_formats() -> dict:
    """GGUF value type -> struct format of one value, also a numpy dtype code (less the byte order)."""
    from gguf import GGUFValueType as Value

    return {Value.UINT8: "B", Value.INT8: "b", Value.UINT16: "H", Value.INT16: "h", Value.UINT32: "I", Value.INT32: "i",
            Value.UINT64: "Q", Value.INT64: "q", Value.FLOAT32: "f", Value.FLOAT64: "d", Value.BOOL: "?"}


class _HeaderCursor:
    """Reads the header's values one after another; struct.error where the file ends too soon."""

    def __init__(self, buffer: mmap.mmap, file: np.ndarray):
        from gguf import GGUFValueType

        self.buffer, self.file = buffer, file  # the same bytes: sliced as bytes, and as a numpy array
        self.offset, self.order = 4, "<"
        self.formats, self.kinds = _value_formats(), GGUFValueType

    def counts(self) -> tuple[int, int, int]:
        """Version, tensor count, key/value count; the byte order found from the version."""
        try:
            (version,) = struct.unpack_from("<I", self.buffer, 4)
            if version & 0xFFFF == 0:  # a file written big-endian (as gguf.GGUFReader tells them apart)
                self.order = ">"
                (version,) = struct.unpack_from(">I", self.buffer, 4)
            if version not in VERSIONS:
                raise ValueError(f"it is GGUF version {version}; versions {' and '.join(map(str, VERSIONS))} are read")
            self.offset = 8
            return version, self.number("Q"), self.number("Q")
        except struct.error:
            raise ValueError(f"the file ends at byte {len(self.buffer):,}, inside the first 24 bytes") from None

    def number(self, code: str) -> int | float | bool:
        (value,) = struct.unpack_from(self.order + code, self.buffer, self.offset)
        self.offset += struct.calcsize(self.order + code)
        return value

    def numbers(self, code: str, count: int) -> np.ndarray:
        size = count * struct.calcsize(self.order + code)
        if self.offset + size > len(self.buffer):
            raise struct.error("the file ends too soon")
        values = self.file[self.offset : self.offset + size].view(np.dtype(self.order + code))
        self.offset += size
        return values

    def string(self) -> str:
        length = self.number("Q")
        if self.offset + length > len(self.buffer):
            raise struct.error("the file ends too soon")
        self.offset += length
        return self.buffer[self.offset - length : self.offset].decode("utf-8")

    def value(self, kind: int) -> Any:
        """One value of GGUF value type `kind` (an array: a list, of lists for an array of arrays)."""
        if kind in self.formats:
            return self.number(self.formats[kind])
        if kind == self.kinds.STRING:
            return self.string()
        if kind != self.kinds.ARRAY:
            raise ValueError(f"unknown value type {kind}")
        item_kind, count = self.number("I"), self.number("Q")
        if item_kind in self.formats:
            return self.numbers(self.formats[item_kind], count).tolist()
        if item_kind == self.kinds.STRING:
            return self.strings(count)
        return [self.value(item_kind) for _ in range(count)]

    def strings(self, count: int) -> list[str]:
        """`count` strings, each a uint64 length and its UTF-8 bytes: a vocabulary's hot loop."""
        buffer, offset, strings = self.buffer, self.offset, []
        length_at, append = struct.Struct(self.order + "Q").unpack_from, strings.append
        for _ in range(count):
            (length,) = length_at(buffer, offset)  # struct.error past the end
            offset += 8
            append(buffer[offset : offset + length].decode("utf-8"))  # one cut short ends the file: caught below
            offset += length
        if offset > len(buffer):
            raise struct.error("the file ends too soon")
        self.offset = offset
        return strings
