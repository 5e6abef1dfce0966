"""The GGUF header reader (`interop/gguf_reader.py`) against `gguf.GGUFReader`, the format's own reader, as the
oracle: the same metadata (every key, value and Python type) and the same tensors (names, types, shapes,
dtypes, bytes), on files written here by `gguf.GGUFWriter` and on the packaged models; and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from lanterne.errors import CheckpointError
from lanterne.interop.gguf_reader import read_gguf_header
from lanterne.models import is_installed, model_file

gguf = pytest.importorskip("gguf")
Value = gguf.GGUFValueType


def read_with_gguf(path):
    """(metadata, reader) as gguf.GGUFReader reads the file."""
    reader = gguf.GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}, reader


def flattened(value):
    """An array of arrays as gguf.GGUFReader gives it: flattened into one list (its FIXME); ours keeps the nesting."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [item for inner in value for item in flattened(inner)]
    return value


def assert_same_value(ours, theirs, key):
    assert type(ours) is type(theirs), f"{key}: {type(ours).__name__} against gguf's {type(theirs).__name__}"
    if isinstance(ours, list):
        assert len(ours) == len(theirs), key
        for mine, its in zip(ours, theirs):
            assert type(mine) is type(its) and mine == its, f"{key}: {mine!r} against gguf's {its!r}"
    else:
        assert ours == theirs, key


def assert_reads_as_gguf_does(path):
    ours = read_gguf_header(path)
    metadata, theirs = read_with_gguf(path)
    assert list(ours.metadata) == list(metadata)  # the same keys, in the file's order
    for key, value in metadata.items():
        assert_same_value(flattened(ours.metadata[key]), value, key)
    assert ours.version == int(theirs.fields["GGUF.version"].contents())
    assert (ours.alignment, ours.data_offset) == (int(theirs.alignment), theirs.data_offset)
    assert len(ours.tensors) == len(theirs.tensors)
    for mine, its in zip(ours.tensors, theirs.tensors):
        assert (mine.name, mine.tensor_type, mine.data_offset) == (its.name, its.tensor_type, its.data_offset)
        assert mine.shape == tuple(int(size) for size in its.shape), mine.name  # GGUF order
        assert (mine.data.dtype, mine.data.shape) == (its.data.dtype, its.data.shape), mine.name
        assert not mine.data.flags.writeable
        assert np.array_equal(mine.data.view(np.uint8), its.data.view(np.uint8)), mine.name
    return ours


# -- files written here --------------------------------------------------------------------------


def write_sample(path, endianess=None, alignment: int | None = None):
    """A GGUF file with a value of every type, arrays of them (nested too), and F32, F16, BF16, I32 and
    quantised (Q8_0, Q4_0, Q4_K) tensors."""
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess or gguf.GGUFEndian.LITTLE)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for kind, value in [
        (Value.UINT8, 200), (Value.INT8, -100), (Value.UINT16, 60_000), (Value.INT16, -30_000),
        (Value.UINT32, 4_000_000_000), (Value.INT32, -2_000_000_000), (Value.UINT64, 2**64 - 1), (Value.INT64, -(2**63)),
        (Value.FLOAT32, 0.1), (Value.FLOAT64, 0.1), (Value.BOOL, True), (Value.STRING, "naïve 東京 😀"),
    ]:
        writer.add_key_value(f"sample.{kind.name.lower()}", value, kind)
    writer.add_key_value("sample.empty_string", "", Value.STRING)
    writer.add_bool("sample.false", False)
    writer.add_array("tokenizer.ggml.tokens", ["<unk>", "", "▁the", "é", "\n", "😀", "a" * 300])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 1e-8, -3.0, 0.5, 7.0])
    writer.add_array("tokenizer.ggml.token_type", [2, 1, 1, 1, 6, 1, 1])
    writer.add_array("sample.bools", [True, False, True])
    writer.add_key_value("sample.uint64s", [0, 2**64 - 1], Value.ARRAY, sub_type=Value.UINT64)
    writer.add_key_value("sample.float64s", [0.1, -2.5], Value.ARRAY, sub_type=Value.FLOAT64)
    writer.add_key_value("sample.int8s", [-128, 127], Value.ARRAY, sub_type=Value.INT8)
    writer.add_array("sample.nested", [[1, 2, 3], [4], [5, 6]])
    writer.add_array("sample.nested_strings", [["a", "bc"], ["déf"]])
    generator = np.random.default_rng(0)
    weights = generator.standard_normal((8, 256)).astype(np.float32)  # (rows, columns)
    writer.add_tensor("f32", weights)
    writer.add_tensor("f32_3d", generator.standard_normal((2, 3, 4)).astype(np.float32))
    writer.add_tensor("f16", generator.standard_normal(5).astype(np.float16))
    writer.add_tensor("i32", np.arange(6, dtype=np.int32).reshape(2, 3))
    for kind in ("BF16", "Q8_0", "Q4_0"):
        quantization = gguf.GGMLQuantizationType[kind]
        writer.add_tensor(kind.lower(), gguf.quants.quantize(weights, quantization), raw_dtype=quantization)
    q4_k = generator.integers(0, 256, (8, 144), dtype=np.uint8)  # gguf cannot quantise to Q4_K: random blocks
    q4_k[:, 0:4] = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)  # of finite scales d and dmin
    writer.add_tensor("q4_k", q4_k, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("endianess", ["LITTLE", "BIG"])
@pytest.mark.parametrize("alignment", [None, 64])
def test_a_written_file_reads_as_gguf_reads_it(endianess, alignment, tmp_path):
    ours = assert_reads_as_gguf_does(write_sample(tmp_path / "sample.gguf", gguf.GGUFEndian[endianess], alignment))
    assert ours.byte_order == {"LITTLE": "<", "BIG": ">"}[endianess]
    assert ours.metadata["sample.nested"] == [[1, 2, 3], [4], [5, 6]]
    assert ours.metadata["sample.nested_strings"] == [["a", "bc"], ["déf"]]
    assert ours.metadata["sample.string"] == "naïve 東京 😀" and ours.metadata["sample.empty_string"] == ""
    assert ours.alignment == (alignment or 32)
    tensors = {tensor.name: tensor for tensor in ours.tensors}
    assert tensors["f32"].shape == (256, 8) and tensors["f32"].data.shape == (8, 256)
    assert tensors["q8_0"].data.shape == (8, 256 // 32 * 34)  # (rows, bytes per row of blocks)
    if endianess == "LITTLE":  # gguf dequantises only little-endian blocks
        theirs = {tensor.name: tensor for tensor in read_with_gguf(ours.path)[1].tensors}
        for name in ("f32", "bf16", "q8_0", "q4_0", "q4_k"):
            kind = tensors[name].tensor_type
            assert np.array_equal(gguf.quants.dequantize(tensors[name].data, kind), gguf.quants.dequantize(theirs[name].data, kind)), name


def test_a_file_of_no_tensors_and_one_key(tmp_path):
    path = tmp_path / "empty.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ours = assert_reads_as_gguf_does(path)
    assert ours.metadata == {"general.architecture": "llama"} and ours.tensors == []


# -- the packaged models -------------------------------------------------------------------------


def installed_file(name: str, tmp_path_factory):
    if not is_installed(name):
        pytest.skip(f"{name} is not installed (see `lanterne models` for the command)")
    return model_file(name, tmp_path_factory.mktemp("models"))


def test_smollm2_reads_as_gguf_reads_it(tmp_path_factory):
    ours = assert_reads_as_gguf_does(installed_file("smollm2-135m-instruct", tmp_path_factory))
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49_152 and len(ours.metadata["tokenizer.ggml.merges"]) > 40_000


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return installed_file("gemma-3-270m", tmp_path_factory)


def test_gemmas_tensors_tile_its_data(gemma):
    """Quick (gguf.GGUFReader takes 10 s on this file: the slow test below compares them): the vocabulary's
    262,144 strings, scores and types line up, and the tensors follow each other, aligned, to the file's end."""
    ours = read_gguf_header(gemma)
    tokens = ours.metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == len(ours.metadata["tokenizer.ggml.scores"]) == len(ours.metadata["tokenizer.ggml.token_type"]) == 262_144
    assert all(type(token) is str for token in tokens) and len(set(tokens)) == len(tokens)
    embedding = next(tensor for tensor in ours.tensors if tensor.name == "token_embd.weight")
    assert embedding.shape == (640, 262_144)
    end = ours.data_offset
    for tensor in sorted(ours.tensors, key=lambda tensor: tensor.data_offset):
        assert tensor.data_offset == -(-end // ours.alignment) * ours.alignment, tensor.name
        end = tensor.data_offset + tensor.data.nbytes
    assert end == gemma.stat().st_size


@pytest.mark.slow
def test_gemma_reads_as_gguf_reads_it(gemma):
    assert_reads_as_gguf_does(gemma)


# -- bad files -----------------------------------------------------------------------------------


def assert_refused(path, match: str = "truncated or corrupt"):
    with pytest.raises(CheckpointError, match=match) as error:
        read_gguf_header(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a readable GGUF file (") and "\n" not in message
    return message


def test_every_cut_in_the_header_and_the_data_is_refused(tmp_path):
    """A copy cut at every byte of the header, and inside every tensor's data, names where it ends."""
    whole = write_sample(tmp_path / "whole.gguf").read_bytes()
    ours = read_gguf_header(tmp_path / "whole.gguf")
    fields = [tensor.field for tensor in read_with_gguf(tmp_path / "whole.gguf")[1].tensors]
    infos_start = fields[0].offset  # where gguf.GGUFReader found the tensor infos
    infos_end = fields[-1].offset + sum(int(part.nbytes) for part in fields[-1].parts)
    data_cuts = [cut for tensor in ours.tensors for cut in (tensor.data_offset + 1, tensor.data_offset + tensor.data.nbytes - 1)]
    cut = tmp_path / "cut.gguf"
    for length in [*range(ours.data_offset), *data_cuts]:
        cut.write_bytes(whole[:length])
        message = assert_refused(cut)
        if 24 <= length < infos_start:
            assert "key/value pair" in message or "the value of" in message, message
        elif infos_start <= length < infos_end:
            assert "tensor info" in message or "the info of tensor" in message, message
        elif length >= infos_end:
            assert "past the end of the file" in message, message


def rewritten(path, old: bytes, new: bytes):
    """The file at `path` with its one occurrence of `old` replaced by `new` (of the same length)."""
    content = path.read_bytes()
    assert content.count(old) == 1 and len(old) == len(new)
    path.write_bytes(content.replace(old, new))
    return path


def test_corrupt_headers_are_named(tmp_path):
    sample = write_sample(tmp_path / "sample.gguf").read_bytes()
    path = tmp_path / "bad.gguf"
    for content, reason in [
        (b"", "cannot mmap an empty file"),
        (b"GGML" + sample[4:], "does not start with GGUF's magic bytes"),
        (sample[:4] + (1).to_bytes(4, "little") + sample[8:], "GGUF version 1; versions 2 and 3 are read"),
        (sample[:4] + (4).to_bytes(4, "little") + sample[8:], "GGUF version 4"),
    ]:
        path.write_bytes(content)
        assert_refused(path, reason)

    def string(text: str) -> bytes:  # as GGUF stores it: a uint64 length, then UTF-8
        return len(text.encode()).to_bytes(8, "little") + text.encode()

    def number(value: int, size: int = 4) -> bytes:
        return value.to_bytes(size, "little")

    i32_info = string("i32") + number(2) + number(3, 8) + number(2, 8)  # name, dimensions, sizes; its type follows
    for old, new, reason in [
        (string("sample.uint32") + number(Value.UINT32), string("sample.uint32") + number(99),
         "the value of 'sample.uint32': unknown value type 99"),
        (string("é"), number(2, 8) + b"\xff\xfe", "the value of 'tokenizer.ggml.tokens': 'utf-8' codec can't decode"),
        (string("sample.bools"), string("sample.false"), "the key 'sample.false' appears twice"),
        (string("f16"), string("f32"), "the tensor 'f32' appears twice"),
        (i32_info + number(gguf.GGMLQuantizationType.I32), i32_info + number(200), "tensor 'i32' has type 200, which gguf does not know"),
    ]:
        path.write_bytes(sample)
        assert_refused(rewritten(path, old, new), reason)


def test_a_bad_alignment_or_tensor_type_is_named(tmp_path):
    path = tmp_path / "bad.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("general.alignment", 48)
    writer.add_tensor("f32", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_refused(path, "general.alignment is 48, not a power of two")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint64("general.alignment", 32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_refused(path, "general.alignment is not a uint32")
