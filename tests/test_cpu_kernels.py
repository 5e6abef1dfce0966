"""The C kernels of decoding give the numbers of their plain PyTorch twins, on any CPU build."""

from __future__ import annotations

import shutil

import pytest
import torch

from lanterne.generation.decoder import attend_one as plain_attend_one
from lanterne.model import cpu_kernels
from lanterne.model.quantized_linear import Int8Linear

pytestmark = pytest.mark.skipif(cpu_kernels.compiler() is None, reason="no C compiler to build the kernels")


@pytest.fixture(scope="module", params=["native", "portable"])
def library(request, tmp_path_factory):
    """The kernels as this CPU gets them (AVX-512 where it has it), and built for any x86-64/ARM CPU (plain loops)."""
    flags = cpu_kernels.FLAGS if request.param == "native" else tuple(flag for flag in cpu_kernels.FLAGS if flag != "-march=native")
    return cpu_kernels.load(cpu_kernels.build(tmp_path_factory.mktemp(request.param), flags))


@pytest.mark.parametrize("rows, cols, m", [(64, 640, 1), (33, 100, 1), (48, 576, 3), (16, 2048, 11)])
def test_int8_rows_equal_the_dequantised_product(library, rows, cols, m):
    torch.manual_seed(rows + cols)
    layer = Int8Linear.from_weight(torch.randn(rows, cols))
    x = torch.randn(m, cols)
    got = cpu_kernels.int8_rows_with(library, x, layer.values, layer.scales)
    # The plain twin multiplies what the kernel does: x itself, or x on 16-bit steps (AVX512-VNNI).
    expected = (cpu_kernels.sixteen_bit_rows(x) if library.rounds_to_16_bits() else x) @ layer.dequantized().T
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_sixteen_bit_rows_keep_a_row_to_16_bits():
    x = torch.tensor([[3.0, -1.5, 1e-3, 0.0], [0.0, 0.0, 0.0, 0.0]])
    rounded = cpu_kernels.sixteen_bit_rows(x)
    assert torch.equal(rounded[1], x[1]) and rounded[0, 0] == 3.0
    assert (rounded[0] - x[0]).abs().max() <= 3.0 / 32767 / 2 * 1.0001


def test_int8_rows_give_a_row_the_same_numbers_alone_or_among_others(library):
    torch.manual_seed(1)
    layer = Int8Linear.from_weight(torch.randn(96, 320))
    together = torch.randn(5, 320)
    alone = cpu_kernels.int8_rows_with(library, together[2:3], layer.values, layer.scales)
    assert torch.equal(cpu_kernels.int8_rows_with(library, together, layer.values, layer.scales)[2:3], alone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads, kv_heads, head_dim", [(4, 1, 256), (9, 3, 64), (4, 4, 20)])
def test_attend_one_equals_the_plain_attention(library, dtype, heads, kv_heads, head_dim):
    torch.manual_seed(heads * head_dim)
    slots, size = 3, 40
    queries = torch.randn(slots, heads, 1, head_dim)
    keys, values = torch.randn(slots, kv_heads, size, head_dim, dtype=dtype), torch.randn(slots, kv_heads, size, head_dim, dtype=dtype)
    positions = torch.tensor([0, 17, 95])  # the first token, part of the buffer, a ring buffer gone round twice
    visible = (torch.arange(size)[None, :] <= positions[:, None])[:, None, None, :]
    expected = plain_attend_one(queries, keys.float(), values.float(), visible, head_dim**-0.5)
    got = cpu_kernels.attend_one_with(library, queries, keys, values, positions, head_dim**-0.5)
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_registered_operations_run_inside_a_compiled_function():
    if cpu_kernels.library() is None:
        pytest.skip("the kernels could not be built here")
    layer = Int8Linear.from_weight(torch.randn(32, 64))
    x = torch.randn(2, 64)

    def scaled(x):
        return cpu_kernels.int8_rows(x * 2, layer.values, layer.scales)

    with torch.inference_mode():
        expected = scaled(x)
        assert torch.allclose(torch.compile(scaled, fullgraph=True, backend="aot_eager")(x), expected)


def test_a_compiler_that_fails_names_itself_and_leaves_no_file(tmp_path):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` command")
    with pytest.raises(OSError, match="false failed"):
        cpu_kernels.build(tmp_path, cc=false)
    assert not any(path.suffix == ".so" for path in tmp_path.rglob("*"))


def test_the_library_is_built_once_per_source_compiler_and_cpu(tmp_path):
    first = cpu_kernels.build(tmp_path)
    built_at = first.stat().st_mtime_ns
    assert cpu_kernels.build(tmp_path) == first and first.stat().st_mtime_ns == built_at
    assert cpu_kernels.build(tmp_path, cpu_kernels.FLAGS + ("-DOTHER_FLAGS",)) != first
