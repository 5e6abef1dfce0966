"""Saving and loading models: a folder with config.json, model.safetensors and the tokenizer.

The layout is HuggingFace's, so the usual tools find their way; weights are read from
safetensors only (never unpickled), and a file that does not match its config is refused by name.

This module is the loader. Imports go one way, down, and `tests/test_layout.py` checks that none closes a circle:
- the loader picks the format by the file, builds the model and loads its weights;
- the formats (`interop/`) read a file into a GPTConfig and tensors in Lanterne's names, and write
  them back; they may use the model's parts, never the loader. (`interop.gguf.load_gguf` builds its
  GPT itself: it checks the tensors against the header before it caches them.)
- `model/` (config, layers, `transformer.GPT`, `output.GPTOutput`) and `recurrent.py` at the bottom:
  they import neither the loader nor a format. `GPT.from_pretrained` reaches the loader through
  `model/pretrained.py`, a slot that the package (`lanterne/__init__.py`) fills, not by an import.
- `weights.py` (the safetensors files, state loading) is shared by all three and imports none of them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, ConfigError, DownloadError, LanterneError

from lanterne.weights import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, load_state, read_safetensors, save_model  # noqa: F401 (save_model: re-exported)

# A training run folder: checkpoints/step-NNNNNNN/ (each a model folder plus the trainer's files), latest.json.
CHECKPOINTS = "checkpoints"
PROGRESS_FILE = "trainer.json"  # step, best validation loss, the training settings
LATEST = "latest.json"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{7,})$")


class Pretrained(NamedTuple):
    """A model with its tokenizer (None when the folder has none): `model, tokenizer = lanterne.load(...)`."""

    model: "GPT"  # noqa: F821
    tokenizer: object | None


def save_huggingface(model, folder: str | os.PathLike, tokenizer=None) -> None:
    """Write `model` as a HuggingFace folder that transformers loads: GPT2LMHeadModel for GPT-2-shaped
    models, LlamaForCausalLM or Gemma3ForCausalLM for the others, with a HuggingFace tokenizer.json
    when `tokenizer` is a byte-level BPE (CheckpointError for another kind: transformers could not read it).
    """
    from lanterne.tokenization.bpe import ByteLevelBPE

    if tokenizer is not None and not isinstance(tokenizer, ByteLevelBPE):
        raise CheckpointError(
            f"a HuggingFace folder needs a byte-level BPE tokenizer, and this model's is {tokenizer.kind!r}; "
            "train one with --tokenizer bpe:8192, or export with --gguf"
        )
    if model.config.positions == "learned":
        from lanterne.interop.huggingface import save_huggingface_gpt2

        save_huggingface_gpt2(model, folder)
    else:
        from lanterne.interop.huggingface_llama import save_huggingface_llama

        save_huggingface_llama(model, folder)
    if tokenizer is not None:
        from lanterne.files import atomic_write_text
        from lanterne.tokenization.huggingface import byte_level_bpe_document

        atomic_write_text(Path(folder) / TOKENIZER_FILE, json.dumps(byte_level_bpe_document(tokenizer), ensure_ascii=False))
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.config.context_length,
                    "eos_token": tokenizer.eos_token, "bos_token": tokenizer.eos_token, "add_bos_token": False}
        if getattr(tokenizer, "chat_template", None):
            settings["chat_template"] = tokenizer.chat_template
        atomic_write_text(Path(folder) / "tokenizer_config.json", json.dumps(settings, ensure_ascii=False, indent=2))


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
    """A model from a Lanterne folder (a GPT or a recurrent model), a HuggingFace GPT-2, Llama or
    Gemma 3 folder, or a Hub name ('hf:gpt2'). What `GPT.from_pretrained` calls."""
    from lanterne.model.transformer import GPT

    folder = resolve_folder(name_or_folder)
    data = _read_config(folder)
    if data.get("model_type") == "gpt2":
        from lanterne.interop.huggingface import read_huggingface_gpt2

        config, tensors = read_huggingface_gpt2(folder, data)
        model = GPT(config)
        load_state(model, tensors, str(folder))
    elif data.get("model_type") in ("llama", "gemma3_text", "gemma3"):
        from lanterne.interop.huggingface_llama import read_huggingface_llama

        config, tensors = read_huggingface_llama(folder, data)
        model = GPT(config)
        load_state(model, tensors, str(folder))
    elif data.get("model_type") == "lanterne-recurrent":
        from lanterne.recurrent import RecurrentConfig, RecurrentLM

        try:
            model = RecurrentLM(RecurrentConfig.from_dict(data))
        except ConfigError as error:
            raise CheckpointError(f"{folder / CONFIG_FILE}: {error}") from None
        load_state(model, read_safetensors(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE))
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


def load(name_or_folder: str | os.PathLike, *, device: str | torch.device | None = None, weights: str = "auto", progress=None) -> Pretrained:
    """A model and its tokenizer: `model, tokenizer = lanterne.load("gemma-3-270m")`.

    Accepts a named model (`lanterne models`), a `.gguf` file, a Lanterne or HuggingFace model
    folder, a training run folder (its latest checkpoint), or a HuggingFace Hub name ("hf:gpt2").
    weights: how the weights are held in memory (`model.quantized_linear`): 'fp32' (the dequantised
    reference), 'bf16', 'int8' or 'int4' (quantised layers, for inference only), or 'auto': a GGUF
    file's weights stay quantised (its 4-bit blocks as they are), a folder's as they are stored.
    progress(message): told when a slow first load begins (a GGUF file read and cached once).
    """
    from lanterne.model.quantized_linear import check_weights_choice
    from lanterne.models import NAMED_MODELS, model_file
    from lanterne.tokenization.tiktoken_files import cache_folder

    check_weights_choice(weights)
    text = str(name_or_folder)
    path = model_file(text, cache_folder()) if text in NAMED_MODELS else Path(text)
    if path.is_dir() and text in NAMED_MODELS:  # the bundled model's folder
        name_or_folder = path
    elif path.is_file() and (is_gguf(path) or path.suffix.lower() == ".gguf"):
        from lanterne.interop.gguf import load_gguf

        if not is_gguf(path):
            raise CheckpointError(f"{path} is not a GGUF file (it does not start with GGUF's magic bytes); the file is damaged or of another kind")
        sha256 = NAMED_MODELS[text].sha256 if text in NAMED_MODELS else None
        model, tokenizer = load_gguf(path, cache_folder(), sha256=sha256, weights=weights, progress=progress)
        return Pretrained(model.to(device) if device is not None else model, tokenizer)
    folder = resolve_folder(name_or_folder)
    return Pretrained(with_weights(load_model(folder, device=device), weights), load_tokenizer_of(folder))


def with_weights(model, weights: str):
    """`model` with its weights held as `weights` says (a folder's model: 'auto' keeps them as stored)."""
    from lanterne.model.quantized_linear import quantize_model

    if not hasattr(model, "blocks") and weights in ("int8", "int4"):
        raise ConfigError(f"a recurrent model has no {weights} path; choose one of auto, fp32, bf16")
    if weights == "auto" or not hasattr(model, "blocks"):
        return model
    if weights == "fp32":
        return model.float()
    if weights == "bf16":
        return model.to(torch.bfloat16)
    return quantize_model(model, weights)


def is_gguf(path: Path) -> bool:
    """True when the file starts with GGUF's magic bytes."""
    with open(path, "rb") as stream:
        return stream.read(4) == b"GGUF"


def resolve_folder(name_or_folder: str | os.PathLike) -> Path:
    """The local folder for a path, or for a Hub name once fetched."""
    folder = Path(name_or_folder)
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file():
            return resolve_run_folder(folder) or folder  # a training run: its latest checkpoint
        return folder
    if folder.exists():
        raise CheckpointError(f"{folder} is a file; pass the model folder that holds config.json and model.safetensors")
    text = str(name_or_folder)
    if text.startswith("hf:"):  # a download only when asked for by name
        return download_from_hub(text[3:])
    from lanterne.errors import UnknownModelError
    from lanterne.models import NAMED_MODELS

    raise UnknownModelError(
        f"unknown model {text!r}: not a file or folder, nor one of {', '.join(NAMED_MODELS)}; "
        f"for the HuggingFace Hub, write hf:{text}"
    )


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


# -- training runs ------------------------------------------------------------------------------


def checkpoint_folders(run_folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, folder)."""
    root = Path(run_folder) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and (child / PROGRESS_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_run_folder(folder: Path) -> Path | None:
    """For `lanterne.load(run_folder)`: the checkpoint latest.json points at, or None if `folder` is not a run."""
    pointer = Path(folder) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    try:
        target = Path(folder) / CHECKPOINTS / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
    except (ValueError, KeyError):
        target = None
    if target is not None and target.is_dir():
        return target
    found = checkpoint_folders(folder)
    return found[-1][1] if found else None
