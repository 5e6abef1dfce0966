"""GGUF files (llama.cpp, Ollama, LM Studio): a model's configuration, weights and tokenizer in one file.

The header is read by `interop.gguf_reader` (a tenth of a second for Gemma 3's 262,144-token
vocabulary): the metadata becomes a GPTConfig; each tensor is dequantised by `gguf`, the format's own
library (F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, ...: whatever it knows), and renamed by a table.
Dequantising takes seconds, so the result is cached once as safetensors in LANTERNE_CACHE, keyed by
the file's SHA-256, and later loads memory-map it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, ConfigError, LanterneError
from lanterne.files import atomic_path, atomic_write_text
from lanterne.interop.gguf_reader import GGUFFile, read_gguf_header

# The families Lanterne runs, by GGUF's `general.architecture`.
ARCHITECTURES = ("gpt2", "llama", "gemma3")

# GGUF module name -> Lanterne module name ("{i}" is the block number); ".weight" or ".bias" follows.
# Llama and Gemma store q, k and v apart (joined into qkv on reading); GPT-2 stores them joined.
NAME_MAP = {
    "token_embd": "embeddings.token",
    "position_embd": "embeddings.position",
    "output": "lm_head",
    "output_norm": "final_norm",
    "blk.{i}.attn_norm": "blocks.{i}.norm_attention",
    "blk.{i}.attn_qkv": "blocks.{i}.attention.qkv",
    "blk.{i}.attn_output": "blocks.{i}.attention.output",
    "blk.{i}.attn_q_norm": "blocks.{i}.attention.query_norm",
    "blk.{i}.attn_k_norm": "blocks.{i}.attention.key_norm",
    "blk.{i}.post_attention_norm": "blocks.{i}.post_norm_attention",
    "blk.{i}.ffn_norm": "blocks.{i}.norm_feedforward",
    "blk.{i}.post_ffw_norm": "blocks.{i}.post_norm_feedforward",
    "blk.{i}.ffn_gate": "blocks.{i}.feedforward.gate",
    "blk.{i}.ffn_up": "blocks.{i}.feedforward.expand",
    "blk.{i}.ffn_down": "blocks.{i}.feedforward.project",
}
_QKV = ("attn_q", "attn_k", "attn_v")


@dataclass
class GGUFContents:
    """What a GGUF file holds, read into Lanterne's terms."""

    config: GPTConfig
    tensors: dict[str, torch.Tensor]  # Lanterne names, fp32
    metadata: dict[str, Any]  # every key/value of the header (tokenizer arrays included)
    # Weights the file stores in 4-bit blocks (Q4_0, Q4_1, Q4_K), as int4 groups of 32, exactly:
    # Lanterne name -> (q (out, in) uint8 0..15, scales, zeros (out, in / 32) fp32), w = (q - 8) * scale + zero.
    int4_groups: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
    # Lanterne names of the weights the file stores quantised (not F32, F16 or BF16): what 'auto' keeps quantised.
    quantized: set[str] = None


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """The header and memory-mapped tensors of the GGUF file at `path` (`gguf_reader.GGUFFile`), or
    CheckpointError naming the file if it is missing, truncated or not GGUF."""
    return read_gguf_header(path)


def read_metadata(reader: GGUFFile) -> dict[str, Any]:
    """The header's key/value pairs as Python values (strings, numbers, lists)."""
    return dict(reader.metadata)


def config_from_metadata(metadata: dict[str, Any], source: str) -> GPTConfig:
    """A GPTConfig from a GGUF header (llama or gemma3)."""
    architecture = metadata.get("general.architecture")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{source}: architecture {architecture!r} is not one Lanterne runs; it runs {', '.join(ARCHITECTURES)}"
        )

    def value(key: str, default: Any = None) -> Any:
        full = f"{architecture}.{key}"
        if full not in metadata and default is None:
            raise CheckpointError(f"{source}: the header lacks {full}; the file is incomplete")
        return metadata.get(full, default)

    n_heads = int(value("attention.head_count"))
    vocab_size = len(metadata.get("tokenizer.ggml.tokens") or []) or int(value("vocab_size"))
    if architecture == "gpt2":
        try:
            return GPTConfig(
                vocab_size=vocab_size, context_length=int(value("context_length")), d_model=int(value("embedding_length")),
                n_heads=n_heads, n_layers=int(value("block_count")), d_ff=int(value("feed_forward_length")),
                layer_norm_epsilon=float(value("attention.layer_norm_epsilon")), activation="gelu_tanh", bias=True,
            )
        except ConfigError as error:
            raise CheckpointError(f"{source}: the header describes no working model ({error})") from None
    common = dict(
        vocab_size=vocab_size,
        context_length=int(value("context_length")),
        d_model=int(value("embedding_length")),
        n_heads=n_heads,
        n_kv_heads=int(value("attention.head_count_kv", n_heads)),
        n_layers=int(value("block_count")),
        d_ff=int(value("feed_forward_length")),
        layer_norm_epsilon=float(value("attention.layer_norm_rms_epsilon")),
        positions="rope",
        feedforward="gated",
        bias=False,
    )
    try:
        if architecture == "llama":
            head_dim = int(value("rope.dimension_count", common["d_model"] // n_heads))
            return GPTConfig(
                **common, head_dim=head_dim, activation="silu", norm="rmsnorm", rope_base=float(value("rope.freq_base", 10_000.0))
            )
        head_dim = int(value("attention.key_length"))
        return GPTConfig(
            **common,
            head_dim=head_dim,
            activation="gelu_tanh",
            norm="rmsnorm_plus_one",
            post_norms=True,
            qk_norm=True,
            rope_base=float(value("rope.freq_base", 1_000_000.0)),
            rope_local_base=10_000.0,  # not in the header: Gemma 3's sliding layers always turn at 10,000
            attention_scale=head_dim**-0.5,  # query_pre_attn_scalar = head_dim for Gemma 3
            sliding_window=int(value("attention.sliding_window")),
            global_every=6,
            embedding_scale=True,
        )
    except ConfigError as error:
        raise CheckpointError(f"{source}: the header describes no working model ({error})") from None


def unpermute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a Llama query/key matrix (out, in).

    llama.cpp turns adjacent dimensions (0, 1), (2, 3), ... of each head; HuggingFace and Lanterne
    turn dimension i with i + head_dim / 2. The converter reorders the rows to match; this puts them back.
    """
    out, inner = weight.shape
    return weight.reshape(heads, out // heads // 2, 2, inner).transpose(1, 2).reshape(out, inner)


def int4_groups_of(tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A 4-bit GGUF tensor's blocks as int4 groups of 32, with no rounding: (q, scales, zeros), or None
    for other types. Q4_0: w = (q - 8) d; Q4_1: w = q d + m; Q4_K: eight groups of 32 per block of 256,
    each w = d·sc q - dmin·m with 6-bit sc and m."""
    from gguf import GGMLQuantizationType as Type
    from gguf.quants import Q4_K

    kind = tensor.tensor_type
    if kind not in (Type.Q4_0, Type.Q4_1, Type.Q4_K):
        return None
    rows = int(tensor.shape[1]) if len(tensor.shape) > 1 else 1
    blocks = np.asarray(tensor.data).reshape(-1).view(np.uint8)
    if kind == Type.Q4_K:
        blocks = blocks.reshape(-1, 144)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n, 1)
        dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())  # (n, 8) each
        scales = d * sc.astype(np.float32)  # (n, 8)
        zeros = 8.0 * scales - dmin * m.astype(np.float32)
        qs = blocks[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)  # (n, 4, 2, 32)
    else:
        size = 18 if kind == Type.Q4_0 else 20
        blocks = blocks.reshape(-1, size)
        scales = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n, 1)
        minimum = blocks[:, 2:4].copy().view(np.float16).astype(np.float32) if kind == Type.Q4_1 else 0.0
        zeros = minimum + 8.0 * scales
        qs = blocks[:, size - 16 :].reshape(-1, 1, 1, 16) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)  # (n, 1, 2, 16)
    q = (qs & np.uint8(0x0F)).reshape(rows, -1)  # (out, in): low nibbles first, then high, as llama.cpp orders them
    groups = q.shape[1] // 32
    as_tensor = lambda array: torch.from_numpy(np.array(array))  # noqa: E731 (a writable copy)
    return as_tensor(q), as_tensor(np.broadcast_to(scales, zeros.shape).reshape(rows, groups)), as_tensor(zeros.reshape(rows, groups))


def read_gguf(path: str | os.PathLike) -> GGUFContents:
    """Configuration, fp32 weights (Lanterne names) and metadata of a GGUF file."""
    from gguf import quants

    path = Path(path)
    reader = open_gguf(path)
    metadata = read_metadata(reader)
    config = config_from_metadata(metadata, str(path))
    architecture = metadata["general.architecture"]
    raw: dict[str, torch.Tensor] = {}
    raw_groups: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    stored_quantized = {tensor.name for tensor in reader.tensors if tensor.tensor_type.name not in ("F32", "F16", "BF16")}
    for tensor in reader.tensors:
        groups = int4_groups_of(tensor)
        if groups is not None:
            raw_groups[tensor.name] = groups
        try:
            array = quants.dequantize(tensor.data, tensor.tensor_type)
        except (NotImplementedError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{path}: tensor {tensor.name} is stored as {tensor.tensor_type.name}, which gguf {_gguf_version()} "
                f"cannot dequantise ({error}); convert the file to another type"
            ) from None
        array = np.ascontiguousarray(array, dtype=np.float32)
        raw[tensor.name] = torch.from_numpy(array if array.flags.writeable else array.copy())  # F32 data is the read-only file
    tensors: dict[str, torch.Tensor] = {}
    int4_groups: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    quantized: set[str] = set()
    for layer in range(config.n_layers if architecture != "gpt2" else 0):  # GPT-2 files keep qkv joined
        names = [f"blk.{layer}.{part}.weight" for part in _QKV]
        parts = [raw.pop(name, None) for name in names]
        if any(part is None for part in parts):
            raise CheckpointError(f"{path}: block {layer} lacks its query, key or value weights; the file is incomplete")
        blocks = [raw_groups.pop(name, None) for name in names]
        if architecture == "llama":
            for index, heads in ((0, config.n_heads), (1, config.n_kv_heads)):
                parts[index] = unpermute_rotary(parts[index], heads)
                if blocks[index] is not None:  # the same rows, in the same new order
                    blocks[index] = tuple(unpermute_rotary(part, heads) for part in blocks[index])
        tensors[f"blocks.{layer}.attention.qkv.weight"] = torch.cat(parts, dim=0)
        if any(name in stored_quantized for name in names):
            quantized.add(f"blocks.{layer}.attention.qkv.weight")
        if all(part is not None for part in blocks):  # one layout for the joined matrix
            int4_groups[f"blocks.{layer}.attention.qkv.weight"] = tuple(torch.cat(pieces, dim=0) for pieces in zip(*blocks))
    for name, tensor in raw.items():
        lanterne_name = _lanterne_name(name)
        if lanterne_name is None:
            raise CheckpointError(f"{path}: tensor {name!r} has no place in a {architecture} model; is the file of another kind?")
        if architecture == "gemma3" and name.endswith("norm.weight"):
            tensor = tensor - 1.0  # llama.cpp stores Gemma's (1 + weight); Lanterne keeps the weight
        tensors[lanterne_name] = tensor
        if name in raw_groups:
            int4_groups[lanterne_name] = raw_groups[name]
        if name in stored_quantized:
            quantized.add(lanterne_name)
    if "lm_head.weight" in tensors and not torch.equal(tensors["lm_head.weight"], tensors.get("embeddings.token.weight", torch.empty(0))):
        config = config.with_changes(tie_embeddings=False)
    else:
        tensors.pop("lm_head.weight", None)  # llama.cpp's GPT-2 files repeat the token embedding as the output layer
        int4_groups.pop("lm_head.weight", None)
        quantized.discard("lm_head.weight")
    return GGUFContents(config, tensors, metadata, int4_groups, quantized)


def _lanterne_name(gguf_name: str) -> str | None:
    module, _, kind = gguf_name.rpartition(".")
    parts = module.split(".")
    block = parts[1] if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit() else None
    template = ".".join(["blk", "{i}", *parts[2:]]) if block is not None else module
    target = NAME_MAP.get(template)
    return f"{target.format(i=block)}.{kind}" if target and kind in ("weight", "bias") else None


def gguf_name(lanterne_name: str) -> str:
    """The GGUF name of a Lanterne parameter (the inverse of the table; qkv stays joined)."""
    module, _, kind = lanterne_name.rpartition(".")
    parts = module.split(".")
    block = parts[1] if parts[0] == "blocks" else None
    template = ".".join(["blocks", "{i}", *parts[2:]]) if block is not None else module
    reverse = {ours: theirs for theirs, ours in NAME_MAP.items()}
    return f"{reverse[template].format(i=block)}.{kind}"


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


# -- the cache ------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


INT4_GROUPS_FILE = "int4-groups.safetensors"


def load_gguf(
    path: str | os.PathLike, cache_folder: Path | None, *, sha256: str | None = None, dtype: torch.dtype = torch.float32,
    weights: str = "fp32", progress=None,
):
    """A GPT and its tokenizer from a GGUF file.

    The first load dequantises and writes config.json, model.safetensors, the file's 4-bit groups and
    tokenizer.json to `cache_folder`/gguf/<sha256>/; later loads read (and memory-map) those. `sha256`:
    the file's, when already known (a named model), to skip hashing it. weights: 'fp32' (the
    dequantised reference, in `dtype`), 'bf16', or 'int8', 'int4', 'auto' (quantised layers,
    `model.quantized_linear.quantize_model`; 'auto' keeps quantised what the file stores quantised, its 4-bit
    blocks as they are). progress(message): told when the slow first load begins.
    """
    from lanterne.model.quantized_linear import check_weights_choice, quantize_model
    from lanterne.tokenization import load as load_tokenizer
    from lanterne.tokenization.gguf_vocab import tokenizer_from_gguf

    check_weights_choice(weights)
    path = Path(path)
    folder = cache_folder / "gguf" / (sha256 or file_sha256(path)) if cache_folder is not None else None
    int4_groups = quantized = None
    if folder is not None and all((folder / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json")):
        from safetensors.torch import load_file

        try:
            config = GPTConfig.from_json(folder / "config.json")
            tensors = load_file(str(folder / "model.safetensors"))
            tokenizer = load_tokenizer(folder / "tokenizer.json")
            if weights == "auto" and (folder / INT4_GROUPS_FILE).is_file():  # only 'auto' uses them
                int4_groups, quantized = _read_groups(folder / INT4_GROUPS_FILE)
        except (LanterneError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"the cached copy of {path.name} in {folder} is damaged ({error}); delete that folder") from None
        model = _build(config, tensors, str(path))
        if weights == "auto" and (int4_groups is None or quantized is None):  # a cache from before they were kept
            contents = read_gguf(path)
            int4_groups, quantized = contents.int4_groups, contents.quantized
            _write_groups(folder, int4_groups, quantized)
    else:
        if progress is not None:
            progress(f"reading {path.name} for the first time: dequantising and caching its weights (once per machine)")
        contents = read_gguf(path)
        model = _build(contents.config, contents.tensors, str(path))  # a header that does not match the tensors fails here...
        tokenizer = tokenizer_from_gguf(contents.metadata, str(path))  # ... and an unreadable tokenizer here: nothing cached
        tokenizer.chat_template = contents.metadata.get("tokenizer.chat_template")
        if folder is not None:
            _write_groups(folder, contents.int4_groups, contents.quantized)
            _write_cache(folder, contents.config, contents.tensors, tokenizer)
        int4_groups, quantized = contents.int4_groups, contents.quantized
    if weights == "bf16":
        return model.to(torch.bfloat16), tokenizer
    if weights == "fp32":
        return model.to(dtype), tokenizer
    if weights == "auto":  # what the file stores quantised stays so (its 4-bit blocks exactly); the rest as stored
        return quantize_model(model, "auto", int4_groups, only=quantized).to(dtype), tokenizer
    return quantize_model(model, weights), tokenizer


def _write_groups(folder: Path, groups: dict, quantized: set[str]) -> None:
    """The 4-bit groups, two integers a byte, in `folder`/int4-groups.safetensors (written before config.json),
    with the names of the weights the file stores quantised in its metadata."""
    from safetensors.torch import save_file

    packed = {}
    for name, (q, scales, zeros) in groups.items():
        packed[f"{name}.q"] = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()  # (out, in / 2)
        packed[f"{name}.scales"], packed[f"{name}.zeros"] = scales.contiguous(), zeros.contiguous()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / INT4_GROUPS_FILE) as temporary:
            save_file(packed, str(temporary), metadata={"quantized": json.dumps(sorted(quantized))})
    except OSError as error:
        warnings.warn(f"the 4-bit groups could not be cached in {folder} ({error}); the next load reads the file again")


def _read_groups(path: Path) -> tuple[dict, set[str] | None]:
    """The 4-bit groups and the quantised names `_write_groups` stored (None for a file written without them)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as stored:
        names = (stored.metadata() or {}).get("quantized")
    return _unpack_groups(load_file(str(path))), None if names is None else set(json.loads(names))


def _unpack_groups(packed: dict[str, torch.Tensor]) -> dict:
    groups = {}
    for key in packed:
        if key.endswith(".q"):
            name = key[: -len(".q")]
            pairs = packed[key]
            q = torch.stack([pairs & 0x0F, pairs >> 4], dim=-1).reshape(pairs.shape[0], -1)  # (out, in)
            groups[name] = (q, packed[f"{name}.scales"], packed[f"{name}.zeros"])
    return groups


def _build(config: GPTConfig, tensors: dict[str, torch.Tensor], source: str):
    from lanterne.model.transformer import GPT
    from lanterne.weights import load_state

    with without_initialisation():  # every weight comes from the file: memory taken, nothing drawn
        model = GPT(config)
    load_state(model, tensors, source)
    return model.eval()


@contextlib.contextmanager
def without_initialisation():
    """torch.nn.init's fills made no-ops, for a model whose weights are all read next: Gemma's 168M-weight
    embedding is not drawn at random only to be overwritten. (Built on PyTorch's meta device instead, the
    model cost 1.5 s, most of it importing PyTorch's compiler, which the meta device's arithmetic needs.)"""
    names = ("normal_", "uniform_", "zeros_", "ones_", "kaiming_uniform_", "trunc_normal_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _write_cache(folder: Path, config: GPTConfig, tensors: dict[str, torch.Tensor], tokenizer) -> None:
    """Write the dequantised model and its tokenizer; config.json comes last, so a cache without it is
    never read (the next load dequantises again)."""
    from safetensors.torch import save_file

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "model.safetensors") as temporary:
            save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temporary))
        tokenizer.save(folder / "tokenizer.json")
        atomic_write_text(folder / "config.json", config.to_json())
    except (OSError, LanterneError) as error:  # a full disk or a read-only cache: run without it
        warnings.warn(f"the dequantised model could not be cached in {folder} ({error}); the next load dequantises again")
