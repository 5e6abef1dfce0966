"""Lanterne: build, train, run and look inside GPT-style language models.

Each idea of the lecture 'Introduction aux Transformers et LLMs' lives in its own module.
"""

from lanterne.errors import LanterneError
from lanterne.model import pretrained

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "LanterneError", "load", "__version__"]


def _load_model(name_or_folder, *, device=None):
    from lanterne.checkpoints import load_model

    return load_model(name_or_folder, device=device)


# The model sits below the loader and cannot import it: `GPT.from_pretrained` calls this (see model/pretrained.py).
pretrained.install_loader(_load_model)


def __getattr__(name: str):
    # PyTorch takes seconds to import: only the parts that need it pull it in.
    if name == "GPT":
        from lanterne.model.transformer import GPT

        return GPT
    if name == "GPTConfig":
        from lanterne.model.config import GPTConfig

        return GPTConfig
    if name == "load":
        from lanterne.checkpoints import load

        return load
    raise AttributeError(f"module 'lanterne' has no attribute {name!r}")
