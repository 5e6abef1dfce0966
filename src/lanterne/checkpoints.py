"""Saving and loading models: a folder with config.json, model.safetensors and the tokenizer.

The layout is HuggingFace's, so the usual tools find their way; weights are read from
safetensors only (never unpickled), and a file that does not match its config is refused by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch

from lanterne.config import MODEL_TYPE, GPTConfig
from lanterne.errors import CheckpointError, ConfigError, DownloadError, LanterneError
from lanterne.files import atomic_path, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class Pretrained(NamedTuple):
    """A model with its tokenizer (None when the folder has none): `model, tokenizer = lanterne.load(...)`."""

    model: "GPT"  # noqa: F821
    tokenizer: object | None


def save_model(model, folder: str | os.PathLike, tokenizer=None, state_dict: dict | None = None) -> None:
    """Write `model` (and `tokenizer`) to `folder`, each file atomically; the folder is created if needed.

    `state_dict` replaces `model.state_dict()` (a sharded model's weights gathered into full tensors).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create the model folder {folder} ({error.strerror}); choose another") from None
    tensors = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in (state_dict if state_dict is not None else model.state_dict()).items()
        if not (model.config.tie_embeddings and name == "lm_head.weight")  # stored once, as the token embedding
    }
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt", "model_type": MODEL_TYPE})
    atomic_write_text(folder / CONFIG_FILE, model.config.to_json())
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or CheckpointError if it is missing, truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"weights file is corrupt or truncated: {path} ({error}); save or download it again") from None


def read_pickled_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.bin`/`.pt` file, through torch.load(weights_only=True): data only, no code runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad pickle; none may escape as a traceback
        raise CheckpointError(f"cannot read {path} as plain tensors ({type(error).__name__}); convert it to safetensors") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return state


def load_state(model, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `model`, refusing missing, unexpected or mis-shaped ones by name."""
    expected = model.state_dict()
    if model.config.tie_embeddings:
        expected.pop("lm_head.weight")
        tensors = {name: tensor for name, tensor in tensors.items() if name != "lm_head.weight"}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = "; ".join(
            part for part in [f"missing {', '.join(missing[:3])}" if missing else "", f"unexpected {', '.join(unexpected[:3])}" if unexpected else ""] if part
        )
        raise CheckpointError(f"{source}: the weights do not match the config ({detail})")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)} but the config asks for {tuple(expected[name].shape)}; "
                "the config does not match the weights"
            )
    with torch.no_grad():
        for name, parameter in model.state_dict().items():
            if name in tensors:
                parameter.copy_(tensors[name])


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}; is it a model folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt or truncated ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def load_model(name_or_folder: str | os.PathLike, *, device: str | torch.device | None = None):
    """A GPT from a Lanterne folder, a HuggingFace GPT-2 folder, or a Hub name ('gpt2')."""
    from lanterne.transformer import GPT

    folder = resolve_folder(name_or_folder)
    data = _read_config(folder)
    if data.get("model_type") == "gpt2":
        from lanterne.interop.huggingface import load_huggingface_gpt2

        model = load_huggingface_gpt2(folder, data)
    else:
        try:
            config = GPTConfig.from_dict(data)
        except ConfigError as error:
            raise CheckpointError(f"{folder / CONFIG_FILE}: {error}") from None
        model = GPT(config)
        load_state(model, read_safetensors(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE))
    model.eval()
    return model.to(device) if device is not None else model


def load_tokenizer_of(folder: Path):
    """The tokenizer stored in a model folder, or None."""
    from lanterne.tokenization import load as load_tokenizer

    path = folder / TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else None


def load(name_or_folder: str | os.PathLike, *, device: str | torch.device | None = None) -> Pretrained:
    """A model and its tokenizer from a folder or a Hub name: `model, tokenizer = lanterne.load("gpt2")`."""
    folder = resolve_folder(name_or_folder)
    return Pretrained(load_model(folder, device=device), load_tokenizer_of(folder))


def resolve_folder(name_or_folder: str | os.PathLike) -> Path:
    """The local folder for a path, or for a Hub name once fetched."""
    folder = Path(name_or_folder)
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file():
            from lanterne.training.checkpointing import resolve_run_folder

            return resolve_run_folder(folder) or folder  # a training run: its latest checkpoint
        return folder
    if folder.exists():
        raise CheckpointError(f"{folder} is a file; pass the model folder that holds config.json and model.safetensors")
    return download_from_hub(str(name_or_folder))


def download_from_hub(name: str) -> Path:
    """Fetch config, weights and tokenizer of a HuggingFace Hub model into the local cache; return the folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"'{name}' is not a folder, and fetching it from the HuggingFace Hub needs huggingface_hub: pip install huggingface_hub"
        ) from None
    try:
        return Path(
            snapshot_download(repo_id=name, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE])
        )
    except LanterneError:
        raise
    except Exception as error:  # the hub raises HTTP, offline and validation errors of many types
        raise DownloadError(
            f"'{name}' is not a local folder and could not be fetched from the HuggingFace Hub ({type(error).__name__}); "
            "offline? pass a local folder holding config.json and model.safetensors"
        ) from None
