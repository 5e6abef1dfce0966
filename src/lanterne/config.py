"""The shape of a GPT: vocabulary, context length, width, heads, layers, feed-forward size.

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

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
MODEL_TYPE = "lanterne-gpt"


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a decoder-only Transformer (GPT-2 style: learned positions, pre-norm blocks).

    vocab_size: number of token ids. context_length: most tokens the model sees at once.
    d_model: width of every token vector. n_heads: attention heads (d_model must divide by it).
    n_layers: Transformer blocks. d_ff: feed-forward width, 4 x d_model unless given.
    activation: 'gelu' (exact), 'gelu_tanh' (GPT-2's approximation) or 'relu'.
    dropout: probability during training. bias: biases in linear layers and norms.
    tie_embeddings: the output layer reuses the token embedding matrix (as GPT-2).
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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        if not isinstance(self.d_ff, int) or self.d_ff < 0:
            raise ConfigError(f"d_ff must be a positive whole number (or 0 for 4 x d_model), not {self.d_ff!r}")
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}: each head gets d_model / n_heads "
                "dimensions; change one of them"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"layer_norm_epsilon must be positive, not {self.layer_norm_epsilon}")

    @property
    def head_dim(self) -> int:
        """Width of each attention head: d_model / n_heads."""
        return self.d_model // self.n_heads

    # -- presets ------------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        """A named configuration ('tiny', 'small', 'gpt2', 'gpt2-medium', ...), with fields overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def with_changes(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (and checked again)."""
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
}
