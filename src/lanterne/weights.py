"""Weights files: the tensors of a model, read by name into its parameters.

safetensors is the format (a header and raw arrays: nothing runs when it is read); `.bin`/`.pt`
files go through torch.load(weights_only=True), which refuses code. Every format reader
(`interop/`) and the loader (`checkpoints.py`) share these, and none imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lanterne.errors import CheckpointError

# A model folder, as HuggingFace lays it out.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


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


def stored_tensors(model, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The tensors a model folder stores, on the CPU: a tied output matrix once, as the token embedding.

    `state_dict` replaces `model.state_dict()` (a sharded model's weights gathered into full tensors).
    """
    return {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in (state_dict if state_dict is not None else model.state_dict()).items()
        if not (model.config.tie_embeddings and name == "lm_head.weight")
    }


def write_model_folder(folder: Path, tensors: dict[str, torch.Tensor], config_json: str, metadata: dict[str, str]) -> None:
    """model.safetensors and config.json in `folder` (created if needed), each written atomically."""
    from safetensors.torch import save_file

    from lanterne.files import atomic_path, atomic_write_text

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create the model folder {folder} ({error.strerror}); choose another") from None
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temporary), metadata=metadata)
    atomic_write_text(folder / CONFIG_FILE, config_json)


def save_model(model, folder: str | os.PathLike, tokenizer=None, state_dict: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write `model` (and `tokenizer`) to `folder`, each file atomically; the folder is created if needed.

    `state_dict` replaces `model.state_dict()` (a sharded model's weights gathered into full tensors).
    `dtype` stores the floating-point weights in that type (torch.bfloat16 halves the file); loading
    gives the model back in float32 either way.
    """
    folder = Path(folder)
    config = model.config.to_dict()
    tensors = stored_tensors(model, state_dict)
    if dtype is not None:
        tensors = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in tensors.items()}
    write_model_folder(folder, tensors, model.config.to_json(), {"format": "pt", "model_type": config["model_type"]})
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)
