"""Llama and Gemma 3 as options of the one GPT: their shapes, against HuggingFace's own models."""

from __future__ import annotations

import pytest
import torch

import lanterne
from lanterne import GPT, GPTConfig
from lanterne.errors import CheckpointError
from lanterne.generation import SamplingSettings, generate_ids

# Unusual shapes: an odd vocabulary, 3 query heads per key/value head, a window shorter than the prompt.
LLAMA = dict(
    vocab_size=1001, context_length=64, d_model=48, n_heads=6, n_kv_heads=2, n_layers=3, d_ff=100,
    activation="silu", feedforward="gated", norm="rmsnorm", positions="rope", rope_base=500.0, bias=False, tie_embeddings=False,
)
GEMMA = dict(
    vocab_size=1001, context_length=64, d_model=48, n_heads=6, n_kv_heads=2, head_dim=16, n_layers=4, d_ff=100,
    activation="gelu_tanh", feedforward="gated", norm="rmsnorm_plus_one", post_norms=True, positions="rope",
    rope_base=1000.0, rope_local_base=100.0, qk_norm=True, attention_scale=16**-0.5, sliding_window=5, global_every=2,
    embedding_scale=True, bias=False, layer_norm_epsilon=1e-6,
)
FAMILIES = {"llama": LLAMA, "gemma3": GEMMA}


def random_model(options: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**options)).eval()
    with torch.no_grad():  # norms away from their initial 1 (or 0), so a wrong form shows
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_the_explaining_path_equals_the_fast_one(family):
    model = random_model(FAMILIES[family])
    ids = torch.randint(0, 1001, (2, 13))
    with torch.no_grad():
        fast, explained = model(ids), model(ids, inspect=True)
    assert torch.allclose(fast.logits, explained.logits, atol=1e-5)
    weights = explained.attentions[0].weights  # layer 0 slides for Gemma: no weight beyond 5 tokens back
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    if family == "gemma3":
        assert weights[0, 0, 12, :8].abs().max() == 0 and weights[0, 0, 12, 8:].min() > 0
        assert explained.attentions[1].weights[0, 0, 12].min() > 0  # a global layer sees everything
    assert explained.attentions[0].keys.shape[1] == 2  # two key/value heads for six query heads


@pytest.mark.parametrize("family", FAMILIES)
def test_the_kv_cache_gives_the_full_forward_logits(family):
    model = random_model(FAMILIES[family])
    ids = torch.randint(0, 1001, (1, 12))
    cache = model.new_cache(1)
    with torch.no_grad():
        full = model(ids).logits
        steps = [model(ids[:, :7], cache=cache).logits[:, -1]]
        for position in range(7, 12):
            steps.append(model(ids[:, position : position + 1], cache=cache).logits[:, -1])
    assert torch.allclose(torch.stack(steps[1:], 1), full[:, 7:], atol=1e-5)
    assert torch.allclose(steps[0], full[:, 6], atol=1e-5)


def test_with_changes_derives_the_head_width_again():
    config = GPTConfig.preset("tiny")
    assert config.with_changes(d_model=256).head_dim == 64
    assert GPTConfig.preset("gemma3").with_changes(n_layers=2).head_dim == 256  # given, not derived: kept


# -- against HuggingFace's models -------------------------------------------------------------------


def huggingface_model(family: str, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=1001, hidden_size=48, intermediate_size=100, num_hidden_layers=3, num_attention_heads=6,
            num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Gemma3TextConfig(
            vocab_size=1001, hidden_size=48, intermediate_size=100, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=5,
            layer_types=["sliding_attention", "full_attention"] * 2, query_pre_attn_scalar=16,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
        )
        model = transformers.Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_huggingface_folder_loads_with_the_same_logits_and_greedy_tokens(family, tmp_path):
    theirs = huggingface_model(family)
    theirs.save_pretrained(tmp_path)
    ours = lanterne.GPT.from_pretrained(tmp_path)
    assert ours.config.n_kv_heads == 2 and ours.config.vocab_size == 1001
    ids = torch.randint(0, 1001, (2, 12))  # longer than Gemma's window of 5
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-4)
        expected = theirs.generate(ids[:1], max_new_tokens=16, do_sample=False, min_new_tokens=16)[0, 12:].tolist()
    produced = [step[0] for step in generate_ids(ours, [ids[0].tolist()], 16, SamplingSettings(temperature=0.0))]
    assert produced == expected


def test_an_unknown_layer_pattern_is_refused(tmp_path):
    from lanterne.interop.huggingface_llama import config_from_huggingface

    data = {"model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 3,
            "intermediate_size": 16, "max_position_embeddings": 16, "head_dim": 4, "sliding_window": 2,
            "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]}
    with pytest.raises(CheckpointError, match="no 'every k-th layer is global' pattern"):
        config_from_huggingface(data)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lanterne_model_saved_for_huggingface_loads_in_transformers(family, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lanterne.interop.huggingface_llama import save_huggingface_llama

    ours = random_model(FAMILIES[family])
    save_huggingface_llama(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 1001, (2, 12))
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-4)
    again = lanterne.GPT.from_pretrained(tmp_path)  # and back
    assert again.config == ours.config
