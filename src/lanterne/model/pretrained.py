"""Where `GPT.from_pretrained` finds the loader: a slot the package fills, so the model never imports it.

The loader (`checkpoints.py`) reads a folder in whichever format it is written (through `interop/`)
and builds the model, so it imports the model; the model may not import it back. `lanterne/__init__.py`,
which Python runs before any module of the package, installs here a function that imports the loader
when it is first called. No PyTorch here: `import lanterne` stays fast.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from lanterne.errors import LanterneError

_load_model: Callable[..., Any] | None = None


def install_loader(load_model: Callable[..., Any]) -> None:
    """Make `load_model(name_or_folder, device=...)` the function behind `GPT.from_pretrained`."""
    global _load_model
    _load_model = load_model


def load_pretrained(name_or_folder: str | os.PathLike, *, device: Any = None) -> Any:
    """The model a folder or Hub name holds, read by the installed loader (`checkpoints.load_model`)."""
    if _load_model is None:  # only when this module is run outside its package
        raise LanterneError("no model loader is installed; import the `lanterne` package, which installs it")
    return _load_model(name_or_folder, device=device)
