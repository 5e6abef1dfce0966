"""HuggingFace GPT-2 both ways: read a `GPT2LMHeadModel` folder into Lanterne, and write one back.

Not a second model: a table maps HuggingFace's parameter names onto ours. GPT-2 stores its linear
layers as `Conv1D` with (in, out) weights, so those matrices are transposed on the way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lanterne.weights import CONFIG_FILE, WEIGHTS_FILE, read_pickled_weights, read_safetensors, stored_tensors, write_model_folder
from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, ConfigError

# HuggingFace GPT-2 name -> Lanterne name; "{i}" is the block number.
NAME_MAP = {
    "transformer.wte.weight": "embeddings.token.weight",
    "transformer.wpe.weight": "embeddings.position.weight",
    "transformer.h.{i}.ln_1.weight": "blocks.{i}.norm_attention.weight",
    "transformer.h.{i}.ln_1.bias": "blocks.{i}.norm_attention.bias",
    "transformer.h.{i}.attn.c_attn.weight": "blocks.{i}.attention.qkv.weight",
    "transformer.h.{i}.attn.c_attn.bias": "blocks.{i}.attention.qkv.bias",
    "transformer.h.{i}.attn.c_proj.weight": "blocks.{i}.attention.output.weight",
    "transformer.h.{i}.attn.c_proj.bias": "blocks.{i}.attention.output.bias",
    "transformer.h.{i}.ln_2.weight": "blocks.{i}.norm_feedforward.weight",
    "transformer.h.{i}.ln_2.bias": "blocks.{i}.norm_feedforward.bias",
    "transformer.h.{i}.mlp.c_fc.weight": "blocks.{i}.feedforward.expand.weight",
    "transformer.h.{i}.mlp.c_fc.bias": "blocks.{i}.feedforward.expand.bias",
    "transformer.h.{i}.mlp.c_proj.weight": "blocks.{i}.feedforward.project.weight",
    "transformer.h.{i}.mlp.c_proj.bias": "blocks.{i}.feedforward.project.bias",
    "transformer.ln_f.weight": "final_norm.weight",
    "transformer.ln_f.bias": "final_norm.bias",
    "lm_head.weight": "lm_head.weight",
}
# Conv1D layers: HuggingFace keeps (in, out), torch.nn.Linear keeps (out, in).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

ACTIVATION_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
ACTIVATION_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# GPT2Config options that change the computation in ways Lanterne's blocks do not.
_UNSUPPORTED_FLAGS = {"scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "scale_attn_weights": True, "add_cross_attention": False}


def config_from_huggingface(data: dict) -> GPTConfig:
    """A GPTConfig from a HuggingFace GPT-2 config.json dict."""
    for flag, supported in _UNSUPPORTED_FLAGS.items():
        if data.get(flag, supported) != supported:
            raise CheckpointError(f"HuggingFace config sets {flag}={data[flag]!r}, which Lanterne's GPT-2 does not implement")
    activation = data.get("activation_function", "gelu_new")
    if activation not in ACTIVATION_FROM_HF:
        raise CheckpointError(f"HuggingFace config uses activation {activation!r}; Lanterne knows {', '.join(ACTIVATION_FROM_HF)}")
    try:
        return GPTConfig(
            vocab_size=data["vocab_size"],
            context_length=data["n_positions"],
            d_model=data["n_embd"],
            n_heads=data["n_head"],
            n_layers=data["n_layer"],
            d_ff=data.get("n_inner") or 0,
            activation=ACTIVATION_FROM_HF[activation],
            dropout=0.0,
            bias=True,
            tie_embeddings=data.get("tie_word_embeddings", True),
            layer_norm_epsilon=data.get("layer_norm_epsilon", 1e-5),
        )
    except KeyError as error:
        raise CheckpointError(f"HuggingFace GPT-2 config lacks {error}") from None
    except ConfigError as error:
        raise CheckpointError(f"HuggingFace GPT-2 config: {error}") from None


def config_to_huggingface(config: GPTConfig) -> dict:
    """A HuggingFace GPT-2 config.json dict for `config`."""
    if not config.bias:
        raise CheckpointError("HuggingFace GPT-2 has biases everywhere; export a model trained with bias=True")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.d_model,
        "n_head": config.n_heads,
        "n_layer": config.n_layers,
        "n_inner": config.d_ff,
        "activation_function": ACTIVATION_TO_HF[config.activation],
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "tie_word_embeddings": config.tie_embeddings,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "bos_token_id": config.vocab_size - 1,
        "eos_token_id": config.vocab_size - 1,
    }


def _pattern_of(name: str) -> tuple[str, str | None]:
    """('transformer.h.{i}.ln_1.weight', '3') for 'transformer.h.3.ln_1.weight'."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "transformer" and parts[1] == "h" and parts[2].isdigit():
        return ".".join(parts[:2] + ["{i}"] + parts[3:]), parts[2]
    return name, None


def tensors_from_huggingface(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and transpose) HuggingFace GPT-2 tensors into Lanterne's names."""
    converted = {}
    for name, tensor in tensors.items():
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # GPT2Model files (no LM head) omit the prefix
        pattern, block = _pattern_of(name)
        if pattern.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old files store the causal mask as a buffer
        if pattern not in NAME_MAP:
            raise CheckpointError(f"unexpected tensor {name!r} in a HuggingFace GPT-2 file")
        ours = NAME_MAP[pattern].replace("{i}", block or "")
        converted[ours] = tensor.t().contiguous() if pattern.endswith(TRANSPOSED) else tensor
    return converted


def tensors_to_huggingface(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and transpose) Lanterne tensors into HuggingFace GPT-2's names."""
    reverse = {ours: theirs for theirs, ours in NAME_MAP.items()}
    converted = {}
    for name, tensor in state.items():
        parts = name.split(".")
        block = parts[1] if parts[0] == "blocks" else None
        pattern = ".".join(["blocks", "{i}"] + parts[2:]) if block is not None else name
        theirs = reverse[pattern].replace("{i}", block or "")
        converted[theirs] = tensor.t().contiguous() if theirs.endswith(TRANSPOSED) else tensor.contiguous()
    return converted


def read_huggingface_gpt2(folder: str | os.PathLike, config_data: dict | None = None) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The GPTConfig and the tensors, in Lanterne's names, of a HuggingFace GPT-2 folder
    (config.json + model.safetensors, or pytorch_model.bin); the loader (`checkpoints`) builds the model."""
    folder = Path(folder)
    if config_data is None:
        config_data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config = config_from_huggingface(config_data)
    if (folder / WEIGHTS_FILE).is_file():
        tensors = read_safetensors(folder / WEIGHTS_FILE)
    elif (folder / "pytorch_model.bin").is_file():
        tensors = read_pickled_weights(folder / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE} (nor pytorch_model.bin)")
    return config, tensors_from_huggingface(tensors)


def save_huggingface_gpt2(model, folder: str | os.PathLike) -> None:
    """Write `model` as a HuggingFace GPT-2 folder that `GPT2LMHeadModel.from_pretrained` loads."""
    tensors = tensors_to_huggingface(stored_tensors(model))
    write_model_folder(Path(folder), tensors, json.dumps(config_to_huggingface(model.config), indent=2), {"format": "pt"})
