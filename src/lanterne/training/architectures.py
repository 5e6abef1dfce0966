"""Which model a run trains: the GPT (a preset and settings), or a model of the lecture's recap (`--arch`).

The trainer builds either from the same settings; what differs is listed here: the model's fields,
the options a recap model refuses, its configuration for a new run and for a resumed one.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, ConfigError
from lanterne.recurrent import ARCHITECTURES, RecurrentConfig, RecurrentLM
from lanterne.model.transformer import GPT

GPT_ARCH = "gpt"
ARCHES = (GPT_ARCH, *ARCHITECTURES)


def check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")


def is_recurrent(arch: str) -> bool:
    """True for the recap's models, which read the text as streams and carry a state (see `streams`)."""
    return arch != GPT_ARCH


def model_fields(arch: str) -> set[str]:
    """The model settings `--set` accepts for `arch` (the recap's `arch` itself is a training setting)."""
    if is_recurrent(arch):
        return {field.name for field in fields(RecurrentConfig)} - {"arch"}
    return {field.name for field in fields(GPTConfig)}


def check_arch_settings(arch: str, preset: str | None, fsdp: bool) -> None:
    """Refuse what only the GPT has: presets and FSDP sharding (of its blocks)."""
    check_arch(arch)
    if not is_recurrent(arch):
        return
    if preset is not None:
        raise ConfigError(
            f"--preset names a GPT's shape and --arch {arch} has its own: drop --preset and set the shape with --set "
            "(d_model, hidden_size, n_layers, context_length)"
        )
    if fsdp:
        raise ConfigError(f"fsdp shards a GPT's blocks and --arch {arch} has none: drop fsdp (DDP over torchrun works)")


def model_config(arch: str, vocab_size: int, requested: dict[str, Any], preset: str | None,
                 resumed_folder: Path | None) -> GPTConfig | RecurrentConfig:
    """The configuration of a new run (the preset, or the recap's defaults, then `requested`), or the
    saved one of a resumed run, which `requested` must agree with (CheckpointError naming the first difference).
    """
    if resumed_folder is None:
        if is_recurrent(arch):
            unknown = set(requested) - model_fields(arch)
            if unknown:
                raise ConfigError(f"unknown model setting(s) {', '.join(sorted(unknown))} for --arch {arch}; "
                                  f"known: {', '.join(sorted(model_fields(arch)))}")
            chosen = RecurrentConfig(arch=arch, **{"vocab_size": vocab_size, **requested})
        else:
            chosen = GPTConfig.preset(preset or "tiny", **{"vocab_size": vocab_size, **requested})
        if chosen.vocab_size < vocab_size:
            raise ConfigError(
                f"vocab_size={chosen.vocab_size} is smaller than the tokenizer's {vocab_size} ids; drop that setting "
                "(a larger one pads the vocabulary, as nanoGPT pads 50257 to 50304)"
            )
        return chosen
    if is_recurrent(arch):
        try:
            saved = RecurrentConfig.from_dict(json.loads((resumed_folder / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, ConfigError) as error:
            raise CheckpointError(f"cannot read {resumed_folder / 'config.json'} ({error}); delete that checkpoint to resume from the one before") from None
        wanted = {**saved.to_dict(), **requested}
    else:
        saved = GPTConfig.from_json(resumed_folder / "config.json")
        wanted = GPTConfig.preset(preset, vocab_size=saved.vocab_size, **requested).to_dict() if preset else {**saved.to_dict(), **requested}
    for key, value in wanted.items():
        if saved.to_dict().get(key) != value:
            raise CheckpointError(
                f"the checkpoint in {resumed_folder} has {key}={saved.to_dict().get(key)!r} but the settings ask for {value!r}; "
                "drop that setting to resume, or train into a new --out"
            )
    return saved


def build_model(config: GPTConfig | RecurrentConfig) -> nn.Module:
    """A freshly initialised model for `config` (seed torch first for the same weights)."""
    return RecurrentLM(config) if isinstance(config, RecurrentConfig) else GPT(config)
