"""Writing GGUF files, so a model trained with Lanterne runs in llama.cpp, Ollama or LM Studio.

One file holds the architecture (GPT-2 or Llama, as llama.cpp names them), the weights in the
chosen type (f32, f16, bf16 or q8_0, quantised by `gguf`, the format's own library) and the
tokenizer: a byte-level BPE written as tokens, merges and the name of its pre-tokenizer regex.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError
from lanterne.files import atomic_path
from lanterne.interop.gguf import gguf_name
from lanterne.weights import stored_tensors

TYPES = ("f32", "f16", "bf16", "q8_0")

# Lanterne's standard patterns -> the `tokenizer.ggml.pre` name llama.cpp and transformers cut text with.
PRE_TOKENIZER_NAMES = {"gpt2": "gpt-2", "cl100k": "llama-bpe", "o200k": "gpt-4o"}


def architecture_of(config: GPTConfig) -> str:
    """'gpt2' or 'llama': the llama.cpp architecture that computes exactly what `config` describes.

    Raises CheckpointError naming the option that neither holds (Gemma 3 files are read, not written).
    """
    if config.positions == "learned" and config.norm == "layernorm" and config.feedforward == "plain":
        if config.activation not in ("gelu_tanh", "gelu"):
            raise CheckpointError(f"GGUF's gpt2 architecture computes GELU; this model uses {config.activation}")
        if config.n_kv_heads != config.n_heads or config.head_dim * config.n_heads != config.d_model:
            raise CheckpointError("GGUF's gpt2 architecture has no grouped-query attention nor a separate head_dim")
        return "gpt2"
    llama = dict(positions="rope", norm="rmsnorm", feedforward="gated", activation="silu", post_norms=False,
                 qk_norm=False, sliding_window=0, embedding_scale=False, bias=False)
    different = [f"{name}={getattr(config, name)!r}" for name, wanted in llama.items() if getattr(config, name) != wanted]
    if config.attention_scale and abs(config.attention_scale - config.head_dim**-0.5) > 1e-9:
        different.append(f"attention_scale={config.attention_scale}")
    if different:
        raise CheckpointError(
            f"GGUF export writes GPT-2- and Llama-shaped models; this one has {', '.join(different)} "
            "(Llama needs rope, rmsnorm, a gated silu feed-forward and no biases)"
        )
    return "llama"


def permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order for a Llama query/key matrix: the inverse of `gguf.unpermute_rotary`."""
    out, inner = weight.shape
    return weight.reshape(heads, 2, out // heads // 2, inner).transpose(1, 2).reshape(out, inner)


def save_gguf(model, tokenizer, path: str | os.PathLike, *, dtype: str = "f32", name: str | None = None) -> Path:
    """Write `model` and its byte-level BPE `tokenizer` as one GGUF file at `path` (atomically).

    dtype: 'f32', 'f16', 'bf16' or 'q8_0' for the matrices; norms and biases stay f32 as llama.cpp
    keeps them. Returns the path written.
    """
    import gguf

    if dtype not in TYPES:
        raise CheckpointError(f"unknown GGUF type {dtype!r}; choose one of {', '.join(TYPES)}")
    config: GPTConfig = model.config
    architecture = architecture_of(config)
    if config.activation == "gelu":
        warnings.warn("this model uses exact GELU; llama.cpp computes the tanh approximation, so its outputs differ by about 1e-3")
    tokens, token_types, merges, pre = _tokenizer_fields(tokenizer, config.vocab_size)
    path = Path(path)
    with atomic_path(path) as temporary:
        writer = gguf.GGUFWriter(str(temporary), architecture)
        writer.add_name(name or getattr(tokenizer, "name", None) or path.stem)
        writer.add_file_type(_FILE_TYPES[dtype](gguf))
        if dtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(config.context_length)
        writer.add_embedding_length(config.d_model)
        writer.add_block_count(config.n_layers)
        writer.add_feed_forward_length(config.d_ff)
        writer.add_head_count(config.n_heads)
        if architecture == "gpt2":
            writer.add_layer_norm_eps(config.layer_norm_epsilon)
        else:
            writer.add_head_count_kv(config.n_kv_heads)
            writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
            writer.add_rope_freq_base(config.rope_base)
            writer.add_rope_dimension_count(config.head_dim)
            writer.add_key_length(config.head_dim)
            writer.add_value_length(config.head_dim)
            writer.add_vocab_size(config.vocab_size)
        _add_tokenizer(writer, tokenizer, tokens, token_types, merges, pre)
        for tensor_name, tensor in _gguf_tensors(model, config, architecture).items():
            array = tensor.detach().to(torch.float32).cpu().numpy()
            stored = _stored_type(array, dtype, gguf)
            writer.add_tensor(tensor_name, gguf.quants.quantize(array, stored), raw_dtype=stored)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


_FILE_TYPES = {
    "f32": lambda gguf: gguf.LlamaFileType.ALL_F32,
    "f16": lambda gguf: gguf.LlamaFileType.MOSTLY_F16,
    "bf16": lambda gguf: gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": lambda gguf: gguf.LlamaFileType.MOSTLY_Q8_0,
}


def _stored_type(array: np.ndarray, dtype: str, gguf):
    """The type one tensor is stored in: vectors stay f32; q8_0 needs rows of a multiple of 32 (else f16)."""
    kinds = gguf.GGMLQuantizationType
    if array.ndim < 2 or dtype == "f32":
        return kinds.F32
    if dtype == "q8_0":
        return kinds.Q8_0 if array.shape[-1] % 32 == 0 else kinds.F16
    return {"f16": kinds.F16, "bf16": kinds.BF16}[dtype]


def _gguf_tensors(model, config: GPTConfig, architecture: str) -> dict[str, torch.Tensor]:
    """The model's tensors under GGUF names, in llama.cpp's layout."""
    state = stored_tensors(model)
    tensors: dict[str, torch.Tensor] = {}
    sizes = [config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.n_kv_heads * config.head_dim]
    for name, tensor in state.items():
        if architecture == "llama" and name.endswith("attention.qkv.weight"):
            block = name.split(".")[1]
            query, key, value = tensor.split(sizes)
            tensors[f"blk.{block}.attn_q.weight"] = permute_rotary(query, config.n_heads)
            tensors[f"blk.{block}.attn_k.weight"] = permute_rotary(key, config.n_kv_heads)
            tensors[f"blk.{block}.attn_v.weight"] = value
            continue
        tensors[gguf_name(name)] = tensor
    if architecture == "gpt2":
        if not config.bias:  # llama.cpp's gpt2 needs every bias: zeros compute the same thing
            for name, tensor in list(tensors.items()):
                if name.endswith(".weight") and not name.startswith(("token_embd", "position_embd", "output.")):
                    tensors.setdefault(name.removesuffix(".weight") + ".bias", torch.zeros(tensor.shape[0]))
        # llama.cpp's own converter writes GPT-2's tied output layer out in full; so do we.
        tensors.setdefault("output.weight", state["embeddings.token.weight"])
    return tensors


def _tokenizer_fields(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str], str]:
    """tokens (GPT-2's byte alphabet), token types, merges ('a b'), and the pre-tokenizer name."""
    from lanterne.tokenization.bpe import ByteLevelBPE
    from lanterne.tokenization.bpe_merges import merges_from_ranks
    from lanterne.tokenization.gguf_vocab import CONTROL, NORMAL, UNUSED
    from lanterne.tokenization.patterns import pattern_name
    from lanterne.tokenization.utf8 import bytes_to_unicode

    if not isinstance(tokenizer, ByteLevelBPE):
        kind = getattr(tokenizer, "kind", type(tokenizer).__name__)
        raise CheckpointError(
            f"GGUF export needs a byte-level BPE tokenizer, and this model's is {kind!r}; "
            "train one with `lanterne train --tokenizer bpe:8192` (or pass --tokenizer)"
        )
    pattern = pattern_name(tokenizer.pattern)
    if pattern not in PRE_TOKENIZER_NAMES:
        raise CheckpointError(
            "GGUF names the pre-tokenizer regex, and this tokenizer's pattern is a custom one; "
            f"train the tokenizer with one of {', '.join(PRE_TOKENIZER_NAMES)}"
        )
    largest = max([*tokenizer.ranks.values(), *tokenizer.special_tokens.values()])
    if largest >= vocab_size:
        raise CheckpointError(f"the tokenizer has ids up to {largest}, but the model only {vocab_size} rows; they do not belong together")
    alphabet = bytes_to_unicode()
    spell = lambda token: "".join(alphabet[byte] for byte in token)  # noqa: E731
    tokens = [f"[PAD{index}]" for index in range(vocab_size)]  # ids the tokenizer never gives, as llama.cpp pads
    token_types = [UNUSED] * vocab_size
    for token, token_id in tokenizer.ranks.items():
        tokens[token_id], token_types[token_id] = spell(token), NORMAL
    for text, token_id in tokenizer.special_tokens.items():
        tokens[token_id], token_types[token_id] = text, CONTROL
    try:
        merges = [f"{spell(left)} {spell(right)}" for left, right in merges_from_ranks(tokenizer.ranks)]
    except ValueError as error:
        raise CheckpointError(f"the tokenizer cannot be written as merges ({error})") from None
    return tokens, token_types, merges, PRE_TOKENIZER_NAMES[pattern]


def _add_tokenizer(writer, tokenizer, tokens, token_types, merges, pre) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    eos_id = tokenizer.eos_id
    if eos_id is not None:
        writer.add_eos_token_id(eos_id)
        writer.add_bos_token_id(eos_id)  # GPT-2's convention: <|endoftext|> both starts and ends
    writer.add_add_bos_token(False)
    template = getattr(tokenizer, "chat_template", None)
    if template:
        writer.add_chat_template(template)
