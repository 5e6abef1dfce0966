"""HuggingFace GPT-2 both ways: logits within 1e-4 and identical attention weights, several shapes."""

from __future__ import annotations

import pytest
import torch

import lanterne
from lanterne.errors import CheckpointError
from lanterne.interop.huggingface import save_huggingface_gpt2
from lanterne.model.transformer import GPT

transformers = pytest.importorskip("transformers")

# (vocab, context, width, heads, layers, activation): odd vocabulary, 3 and 6 heads, ReLU, an n_inner.
SHAPES = [
    dict(vocab_size=1001, n_positions=64, n_embd=96, n_head=6, n_layer=3, activation_function="gelu_new"),
    dict(vocab_size=257, n_positions=32, n_embd=36, n_head=3, n_layer=2, activation_function="relu"),
    dict(vocab_size=5003, n_positions=128, n_embd=64, n_head=4, n_layer=4, activation_function="gelu", n_inner=96),
]


def make_hf_model(folder, shape, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    # Random init leaves biases at zero; give every tensor values so a mapping slip cannot hide.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("shape", SHAPES, ids=["odd-vocab-6-heads", "relu-3-heads", "gelu-n-inner"])
def test_hf_to_lanterne_logits_and_attention(tmp_path, shape):
    make_hf_model(tmp_path, shape)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()  # weights visible
    ours = GPT.from_pretrained(tmp_path)
    ids = torch.randint(0, shape["vocab_size"], (2, shape["n_positions"]))
    with torch.no_grad():
        expected = hf(ids, output_attentions=True)
        got = ours(ids, inspect=True)
    assert (expected.logits - got.logits).abs().max() <= 1e-4
    assert len(expected.attentions) == len(got.attentions)
    for theirs, mine in zip(expected.attentions, got.attentions):
        assert (theirs - mine.weights).abs().max() <= 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=["odd-vocab-6-heads", "relu-3-heads", "gelu-n-inner"])
def test_lanterne_to_hf_logits(tmp_path, shape):
    make_hf_model(tmp_path / "hf", shape, seed=1)
    ours = GPT.from_pretrained(tmp_path / "hf")
    save_huggingface_gpt2(ours, tmp_path / "exported")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    ids = torch.randint(0, shape["vocab_size"], (3, 20))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-4


def test_a_lanterne_trained_model_exports_to_hf(tmp_path):
    torch.manual_seed(3)
    ours = GPT(lanterne.GPTConfig(vocab_size=77, context_length=16, d_model=40, n_heads=5, n_layers=2)).eval()
    save_huggingface_gpt2(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 77, (2, 16))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-4


def test_pytorch_bin_files_load_through_weights_only(tmp_path):
    hf = make_hf_model(tmp_path, SHAPES[1])
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ours = GPT.from_pretrained(tmp_path)
    ids = torch.randint(0, 257, (1, 10))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-4


def test_unsupported_hf_options_are_refused(tmp_path):
    shape = dict(SHAPES[1], scale_attn_by_inverse_layer_idx=True)
    make_hf_model(tmp_path, shape)
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        GPT.from_pretrained(tmp_path)
