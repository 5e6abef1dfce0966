"""HuggingFace Llama and Gemma 3 folders: `LlamaForCausalLM` / `Gemma3ForCausalLM` read into Lanterne's one GPT.

Not a second model: the config's fields map onto GPTConfig's family options, and a table maps
the parameter names; q, k and v projections are joined into Lanterne's single qkv matrix.
Sharded weights (model.safetensors.index.json) are read shard by shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, ConfigError
from lanterne.weights import CONFIG_FILE, WEIGHTS_FILE, read_safetensors, stored_tensors, write_model_folder

MODEL_TYPES = ("llama", "gemma3_text", "gemma3")
INDEX_FILE = "model.safetensors.index.json"

# HuggingFace name (after "model.") -> Lanterne name, for both families; "{i}" is the block number.
NAME_MAP = {
    "embed_tokens.weight": "embeddings.token.weight",
    "norm.weight": "final_norm.weight",
    "layers.{i}.input_layernorm.weight": "blocks.{i}.norm_attention.weight",
    "layers.{i}.self_attn.o_proj.weight": "blocks.{i}.attention.output.weight",
    "layers.{i}.self_attn.q_norm.weight": "blocks.{i}.attention.query_norm.weight",
    "layers.{i}.self_attn.k_norm.weight": "blocks.{i}.attention.key_norm.weight",
    "layers.{i}.mlp.gate_proj.weight": "blocks.{i}.feedforward.gate.weight",
    "layers.{i}.mlp.up_proj.weight": "blocks.{i}.feedforward.expand.weight",
    "layers.{i}.mlp.down_proj.weight": "blocks.{i}.feedforward.project.weight",
}
# Llama normalises before the feed-forward under the name Gemma uses after attention.
LLAMA_NAMES = {"layers.{i}.post_attention_layernorm.weight": "blocks.{i}.norm_feedforward.weight"}
GEMMA_NAMES = {
    "layers.{i}.post_attention_layernorm.weight": "blocks.{i}.post_norm_attention.weight",
    "layers.{i}.pre_feedforward_layernorm.weight": "blocks.{i}.norm_feedforward.weight",
    "layers.{i}.post_feedforward_layernorm.weight": "blocks.{i}.post_norm_feedforward.weight",
}


def _rope_bases(data: dict) -> tuple[float, float]:
    """(global base, sliding-window base) from either spelling of the rotary settings."""
    parameters = data.get("rope_parameters") or {}
    if "full_attention" in parameters:  # transformers 5: one entry per layer type
        full = parameters["full_attention"]
        local = parameters.get("sliding_attention", full)
        scaling = (full.get("rope_type", "default"), local.get("rope_type", "default"))
        base, local_base = full["rope_theta"], local["rope_theta"]
    else:
        scaling = ((parameters or data.get("rope_scaling") or {}).get("rope_type", "default"),)
        base = parameters.get("rope_theta", data.get("rope_theta", 10_000.0))
        local_base = data.get("rope_local_base_freq", 0.0)
    if any(kind != "default" for kind in scaling):
        raise CheckpointError(f"rotary scaling {scaling} is not implemented; Lanterne's rotary positions are unscaled")
    return float(base), float(local_base)


def config_from_huggingface(data: dict) -> GPTConfig:
    """A GPTConfig from a HuggingFace Llama or Gemma 3 config.json dict."""
    model_type = data.get("model_type")
    if model_type == "gemma3":  # the multimodal wrapper: its text model
        data = data.get("text_config") or {}
    try:
        n_heads = data["num_attention_heads"]
        common = dict(
            vocab_size=data["vocab_size"],
            context_length=data["max_position_embeddings"],
            d_model=data["hidden_size"],
            n_heads=n_heads,
            n_kv_heads=data.get("num_key_value_heads") or n_heads,
            head_dim=data.get("head_dim") or data["hidden_size"] // n_heads,
            n_layers=data["num_hidden_layers"],
            d_ff=data["intermediate_size"],
            positions="rope",
            feedforward="gated",
            bias=bool(data.get("attention_bias", False)),
            tie_embeddings=data.get("tie_word_embeddings", model_type != "llama"),
            layer_norm_epsilon=data.get("rms_norm_eps", 1e-6),
        )
        base, local_base = _rope_bases(data)
        if model_type == "llama":
            if data.get("hidden_act", "silu") != "silu" or data.get("mlp_bias"):
                raise CheckpointError("this Llama config uses another activation or feed-forward biases; Lanterne reads SiLU without biases")
            return GPTConfig(**common, activation="silu", norm="rmsnorm", rope_base=base)
        window = data.get("sliding_window") or 0
        types = data.get("layer_types") or []
        config = GPTConfig(
            **common,
            activation="gelu_tanh",
            norm="rmsnorm_plus_one",
            post_norms=True,
            qk_norm=True,
            rope_base=base,
            rope_local_base=local_base,
            attention_scale=data.get("query_pre_attn_scalar", common["head_dim"]) ** -0.5,
            sliding_window=window,
            global_every=data.get("sliding_window_pattern", 6),
            embedding_scale=True,
        )
        if types and [config.is_sliding(layer) for layer in range(config.n_layers)] != [kind == "sliding_attention" for kind in types]:
            # Any pattern of layer types: find the period that reproduces it.
            period = next((k for k in range(1, config.n_layers + 2) if all((kind == "full_attention") == ((i + 1) % k == 0) for i, kind in enumerate(types))), None)
            if period is None:
                raise CheckpointError(f"the layer types {types} follow no 'every k-th layer is global' pattern; Lanterne cannot place them")
            config = config.with_changes(global_every=period if period <= config.n_layers else 0)
        return config
    except KeyError as error:
        raise CheckpointError(f"HuggingFace {model_type} config lacks {error}") from None
    except ConfigError as error:
        raise CheckpointError(f"HuggingFace {model_type} config: {error}") from None


def read_folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's model.safetensors, or of the shards its index lists."""
    if (folder / WEIGHTS_FILE).is_file():
        return read_safetensors(folder / WEIGHTS_FILE)
    index = folder / INDEX_FILE
    if not index.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE} (nor {INDEX_FILE})")
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{index} is corrupt ({error})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(read_safetensors(folder / shard))
    return tensors


def tensors_from_huggingface(tensors: dict[str, torch.Tensor], config: GPTConfig, gemma: bool, source: str) -> dict[str, torch.Tensor]:
    """Rename HuggingFace Llama / Gemma 3 tensors into Lanterne's, joining q, k and v."""
    table = {**NAME_MAP, **(GEMMA_NAMES if gemma else LLAMA_NAMES)}
    converted: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name == "lm_head.weight":
            converted[name] = tensor
            continue
        short = name.removeprefix("model.language_model.").removeprefix("model.")
        parts = short.split(".")
        block = parts[1] if parts[0] == "layers" and len(parts) > 2 else None
        pattern = ".".join(["layers", "{i}", *parts[2:]]) if block is not None else short
        projection = parts[-2] if block is not None and parts[-1] == "weight" else ""
        if projection in ("q_proj", "k_proj", "v_proj") and parts[2] == "self_attn":
            pending.setdefault(block, {})[projection] = tensor
            continue
        if pattern not in table:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} in a HuggingFace {'Gemma 3' if gemma else 'Llama'} file")
        converted[table[pattern].replace("{i}", block or "")] = tensor
    for block, projections in pending.items():
        if len(projections) != 3:
            raise CheckpointError(f"{source}: block {block} lacks one of its q, k, v projections")
        converted[f"blocks.{block}.attention.qkv.weight"] = torch.cat([projections[key] for key in ("q_proj", "k_proj", "v_proj")])
    return converted


def read_huggingface_llama(folder: str | os.PathLike, config_data: dict | None = None) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The GPTConfig and the tensors, in Lanterne's names, of a HuggingFace Llama or Gemma 3 folder;
    the loader (`checkpoints`) builds the model."""
    folder = Path(folder)
    if config_data is None:
        config_data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config = config_from_huggingface(config_data)
    gemma = config_data.get("model_type") != "llama"
    return config, tensors_from_huggingface(read_folder_tensors(folder), config, gemma, str(folder))


# -- writing -------------------------------------------------------------------------------------------


def config_to_huggingface(config: GPTConfig) -> dict:
    """A HuggingFace config.json dict (LlamaForCausalLM or Gemma3ForCausalLM) for a Lanterne config of either family."""
    if config.positions != "rope" or config.feedforward != "gated" or config.norm == "layernorm":
        raise CheckpointError("only Llama- and Gemma-shaped models (rotary, gated, RMSNorm) export as HuggingFace Llama/Gemma 3")
    common = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.layer_norm_epsilon,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": config.bias,
    }
    if config.norm == "rmsnorm":
        if config.post_norms or config.qk_norm or config.sliding_window or config.embedding_scale or config.activation != "silu":
            raise CheckpointError("this model mixes Llama and Gemma options; HuggingFace's Llama cannot hold it")
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common, "hidden_act": "silu",
                "rope_theta": config.rope_base, "mlp_bias": False}
    sliding = [config.is_sliding(layer) for layer in range(config.n_layers)]
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **common,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": _whole_if_close((config.attention_scale or config.head_dim**-0.5) ** -2),
        "sliding_window": config.sliding_window or config.context_length,
        "layer_types": ["sliding_attention" if slides else "full_attention" for slides in sliding],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": config.rope_base},
            "sliding_attention": {"rope_type": "default", "rope_theta": config.rope_local_base or config.rope_base},
        },
    }


def _whole_if_close(value: float) -> int | float:
    """transformers wants an int where the value is whole (query_pre_attn_scalar = 256)."""
    return round(value) if abs(value - round(value)) < 1e-6 else value


def tensors_to_huggingface(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Lanterne tensors renamed into HuggingFace Llama / Gemma 3 names, qkv split into q, k, v."""
    gemma = config.norm == "rmsnorm_plus_one"
    reverse = {ours: theirs for theirs, ours in {**NAME_MAP, **(GEMMA_NAMES if gemma else LLAMA_NAMES)}.items()}
    sizes = [config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.n_kv_heads * config.head_dim]
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            converted[name] = tensor.contiguous()
            continue
        parts = name.split(".")
        block = parts[1] if parts[0] == "blocks" else None
        if block is not None and parts[2:] == ["attention", "qkv", "weight"]:
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), tensor.split(sizes)):
                converted[f"model.layers.{block}.self_attn.{projection}.weight"] = part.contiguous()
            continue
        pattern = ".".join(["blocks", "{i}", *parts[2:]]) if block is not None else name
        converted["model." + reverse[pattern].replace("{i}", block or "")] = tensor.contiguous()
    return converted


def save_huggingface_llama(model, folder: str | os.PathLike) -> None:
    """Write a Llama- or Gemma-shaped Lanterne model as a HuggingFace folder that transformers loads."""
    hf_config = config_to_huggingface(model.config)
    tensors = tensors_to_huggingface(stored_tensors(model), model.config)
    write_model_folder(Path(folder), tensors, json.dumps(hf_config, indent=2), {"format": "pt"})
