"""The shape of a GPT: vocabulary, context length, width, heads, layers, feed-forward size, and family options.

`GPTConfig` holds every number that decides a model's architecture, checks them, names the usual
presets ('tiny' for a laptop, 'gpt2' for the 124M model), and reads and writes `config.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lanterne.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm", "rmsnorm_plus_one")
FEEDFORWARDS = ("plain", "gated")
MODEL_TYPE = "lanterne-gpt"


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a decoder-only Transformer. The defaults are GPT-2's; the options cover Llama and Gemma 3.

    vocab_size: number of token ids. context_length: most tokens the model sees at once.
    d_model: width of every token vector. n_heads: attention heads. n_layers: Transformer blocks.
    d_ff: feed-forward width, 4 x d_model unless given (Llama and Gemma use 2.7x and 3.2x).
    activation: 'gelu' (exact), 'gelu_tanh' (GPT-2's and Gemma's approximation), 'relu' or 'silu' (Llama).
    dropout: probability during training. bias: biases in linear layers and norms.
    tie_embeddings: the output layer reuses the token embedding matrix (as GPT-2).

    The family options, each local to the module it changes:
    positions: 'learned' vectors added to the embeddings (GPT-2), or 'rope', rotary embeddings that
      turn queries and keys by an angle per position (`positions.py`); rope_base sets the angles'
      wavelengths, rope_local_base those of sliding-window layers (Gemma 3; 0: the same).
    norm: 'layernorm' (GPT-2), 'rmsnorm' (Llama), or 'rmsnorm_plus_one', Gemma's RMSNorm that scales
      by (1 + weight). post_norms: also normalise each sub-block's output before it joins the residual (Gemma).
    feedforward: 'plain' (expand, activation, project) or 'gated': activation(gate(x)) * expand(x),
      SwiGLU with 'silu' (Llama), GeGLU with 'gelu_tanh' (Gemma).
    n_kv_heads: key/value heads, shared by groups of query heads (grouped-query attention; 0: n_heads).
    head_dim: width of each head (0: d_model / n_heads). qk_norm: normalise queries and keys per head (Gemma 3).
    attention_scale: the factor on Q·K (0: 1/√head_dim). sliding_window: a layer attends to at most
      this many latest tokens (0: no window); with global_every = k, every k-th layer sees everything (Gemma 3: 6).
    embedding_scale: multiply the token vectors by √d_model (Gemma).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 0  # 0 means 4 * d_model
    activation: str = "gelu_tanh"
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    positions: str = "learned"
    rope_base: float = 10_000.0
    rope_local_base: float = 0.0
    norm: str = "layernorm"
    post_norms: bool = False
    feedforward: str = "plain"
    n_kv_heads: int = 0
    head_dim: int = 0
    qk_norm: bool = False
    attention_scale: float = 0.0
    sliding_window: int = 0
    global_every: int = 0
    embedding_scale: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        for name in ("d_ff", "n_kv_heads", "head_dim", "sliding_window", "global_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a positive whole number (or 0 for the default), not {value!r}")
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.head_dim == 0:
            if self.d_model % self.n_heads:
                raise ConfigError(
                    f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}: each head gets d_model / n_heads "
                    "dimensions; change one of them, or set head_dim"
                )
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}: each key/value head serves "
                "a group of query heads of equal size"
            )
        for name, allowed in (("activation", ACTIVATIONS), ("positions", POSITIONS), ("norm", NORMS), ("feedforward", FEEDFORWARDS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"rotary positions turn pairs of dimensions: head_dim must be even, not {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        for name in ("layer_norm_epsilon", "rope_base"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.rope_local_base < 0 or self.attention_scale < 0:
            raise ConfigError("rope_local_base and attention_scale must be positive (or 0 for the default)")

    @property
    def query_groups(self) -> int:
        """Query heads per key/value head (1: plain multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    def is_sliding(self, layer: int) -> bool:
        """True when `layer` attends only within the sliding window."""
        return self.sliding_window > 0 and not (self.global_every and (layer + 1) % self.global_every == 0)

    # -- presets ------------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        """A named configuration ('tiny', 'small', 'gpt2', 'gpt2-medium', ...), with fields overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def with_changes(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (and checked again). Sizes that were derived from a changed
        one (d_ff = 4 x d_model, head_dim = d_model / n_heads, n_kv_heads = n_heads) are derived again."""
        derived = {
            "d_ff": (self.d_ff == 4 * self.d_model, ("d_model",)),
            "head_dim": (self.head_dim * self.n_heads == self.d_model, ("d_model", "n_heads")),
            "n_kv_heads": (self.n_kv_heads == self.n_heads, ("n_heads",)),
        }
        for name, (was_derived, sources) in derived.items():
            if was_derived and name not in changes and any(source in changes for source in sources):
                changes[name] = 0
        return replace(self, **changes)

    # -- files --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        known = {field.name for field in fields(cls)}
        unknown = set(data) - known - {"model_type"}
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ConfigError(f"config is for a {data['model_type']!r} model, not {MODEL_TYPE!r}")
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "GPTConfig":
        """From JSON text, or from a path to a config.json file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config is not valid JSON ({error}); the file is corrupt or truncated") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of fields")
        return cls.from_dict(data)


# nanoGPT's shakespeare_char CPU settings for 'tiny'; OpenAI's GPT-2 family for the rest.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=256, context_length=64, d_model=128, n_heads=4, n_layers=4, dropout=0.0, bias=False, activation="gelu"),
    "small": dict(vocab_size=8192, context_length=256, d_model=384, n_heads=6, n_layers=6, dropout=0.1),
    "gpt2": dict(vocab_size=50257, context_length=1024, d_model=768, n_heads=12, n_layers=12),
    "gpt2-medium": dict(vocab_size=50257, context_length=1024, d_model=1024, n_heads=16, n_layers=24),
    "gpt2-large": dict(vocab_size=50257, context_length=1024, d_model=1280, n_heads=20, n_layers=36),
    "gpt2-xl": dict(vocab_size=50257, context_length=1024, d_model=1600, n_heads=25, n_layers=48),
    # The Llama family, in SmolLM2-135M's shape: rotary positions, RMSNorm, SwiGLU, 3 query heads per key/value head.
    "llama": dict(
        vocab_size=49152, context_length=8192, d_model=576, n_heads=9, n_kv_heads=3, n_layers=30, d_ff=1536,
        activation="silu", feedforward="gated", norm="rmsnorm", positions="rope", rope_base=100_000.0, bias=False,
    ),
    # Gemma 3, in the 270M model's shape: 5 sliding-window layers of 512 tokens for each global one.
    "gemma3": dict(
        vocab_size=262144, context_length=32768, d_model=640, n_heads=4, n_kv_heads=1, head_dim=256, n_layers=18,
        d_ff=2048, activation="gelu_tanh", feedforward="gated", norm="rmsnorm_plus_one", post_norms=True,
        positions="rope", rope_base=1_000_000.0, rope_local_base=10_000.0, qk_norm=True, attention_scale=256**-0.5,
        sliding_window=512, global_every=6, embedding_scale=True, bias=False, layer_norm_epsilon=1e-6,
    ),
}
