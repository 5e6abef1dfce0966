"""Fast decoding gives the numbers of the plain path (it compiles kernels: slow)."""

from __future__ import annotations

import pytest
import torch

from lanterne.generation import fast_decoding
from lanterne.model.config import GPTConfig
from lanterne.generation.fast_decoding import DecodingLinear, disable_fast_decoding, enable_fast_decoding
from lanterne.generation import generate_ids
from lanterne.generation.sampling import SamplingSettings
from lanterne.model.transformer import GPT


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_decoding_matches_the_plain_path(dtype, monkeypatch):
    # The compiled kernel on every shape (the timed choice may keep PyTorch's own for some).
    monkeypatch.setattr(fast_decoding, "_faster_kernel", lambda shape, dtype, *tensors: fast_decoding._compiled_row_dot(shape, dtype))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=301, context_length=64, d_model=48, n_heads=4, n_layers=2)).eval().to(dtype)
    prompt = list(range(1, 11))
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        plain_logits = model(ids[:, -1:], last_only=True).logits
        plain = [step[0] for step in generate_ids(model, [prompt], 20, SamplingSettings(temperature=0))]
        enable_fast_decoding(model)
        assert all(type(m) is DecodingLinear for m in model.modules() if isinstance(m, torch.nn.Linear))
        fast_logits = model(ids[:, -1:], last_only=True).logits
        fast = [step[0] for step in generate_ids(model, [prompt], 20, SamplingSettings(temperature=0))]
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(plain_logits.float(), fast_logits.float(), atol=tolerance, rtol=tolerance)
    if dtype == torch.float32:
        assert fast == plain
    assert sorted(model.state_dict()) == sorted(GPT(model.config).state_dict())
    disable_fast_decoding(model)
    assert not any(type(m) is DecodingLinear for m in model.modules())


@pytest.mark.slow
def test_the_timed_choice_keeps_one_kernel_per_shape():
    weight, x, bias = torch.randn(64, 32), torch.randn(32), torch.zeros(64)
    first = fast_decoding._faster_kernel((64, 32), torch.float32, x, weight, bias)
    assert first is None or first is fast_decoding._compiled_row_dot((64, 32), torch.float32)
    assert fast_decoding._faster_kernel((64, 32), torch.float32, x, weight, bias) is first  # timed once
