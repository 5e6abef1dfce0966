"""Training checkpoints: a model folder plus everything needed to continue exactly where it stopped.

Each checkpoint is built in a temporary folder, flushed to disk, then renamed into place: a kill at
any moment leaves the previous checkpoints intact. The last K are kept, and the best one always.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from lanterne.checkpoints import CHECKPOINTS, LATEST, PROGRESS_FILE, checkpoint_folders, save_model
from lanterne.errors import CheckpointError, LanterneError
from lanterne.files import atomic_write_text

STATE_FILE = "trainer_state.pt"  # optimizer and random generators: tensors only, read with weights_only=True


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open folders; the rename is still atomic
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def save_checkpoint(
    run_folder: Path,
    step: int,
    model,
    tokenizer,
    state: dict[str, Any],
    progress: dict[str, Any],
    *,
    keep: int,
    best_step: int | None,
    model_state: dict | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point latest.json at it, and prune all but the last `keep` and the best.

    A failed write (a full disk, say) raises CheckpointError and leaves the earlier checkpoints as they were.
    """
    root = Path(run_folder) / CHECKPOINTS
    final = root / f"step-{step:07d}"
    temporary = root / f".step-{step:07d}.{os.getpid()}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
        save_model(model, temporary, tokenizer, model_state)
        torch.save(state, temporary / STATE_FILE)
        _fsync_file(temporary / STATE_FILE)
        atomic_write_text(temporary / PROGRESS_FILE, json.dumps(progress, indent=2))
        _fsync_folder(temporary)
        if final.exists():  # the same step saved again (e.g. a resumed run that ends where it started)
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_folder(root)
        atomic_write_text(root / LATEST, json.dumps({"step": step, "folder": final.name, "best": f"step-{best_step:07d}" if best_step is not None else None}))
    except (OSError, RuntimeError, SafetensorError, LanterneError) as error:  # a full disk (torch.save says RuntimeError), a read-only folder...
        disk_full = _free_bytes(root) < 2**20  # measured before the half-written checkpoint is deleted
        shutil.rmtree(temporary, ignore_errors=True)
        kept = checkpoint_folders(run_folder)
        where = f"the last good one, {kept[-1][1].name}, is intact: free some space, then --resume" if kept else (
            "no earlier checkpoint exists: free some space, then run again with --overwrite")
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip().splitlines()[0]
        if disk_full:
            reason = "the disk is full"
        raise CheckpointError(f"cannot write checkpoint step {step} in {root} ({reason}); {where}") from None
    _prune(root, keep, best_step)
    return final


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 2**63


def _prune(root: Path, keep: int, best_step: int | None) -> None:
    complete = checkpoint_folders(root.parent)
    protected = {step for step, _ in complete[-max(1, keep):]}
    if best_step is not None:
        protected.add(best_step)
    for step, folder in complete:
        if step not in protected:
            shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(run_folder: Path) -> None:
    """Delete the temporaries (`.NAME.*.tmp`) a run killed mid-write left in the run and checkpoints folders.

    Called once, before a resumed or overwritten run writes anything: only one process writes a run,
    so every temporary found then is dead.
    """
    for folder in (Path(run_folder), Path(run_folder) / CHECKPOINTS):
        for leftover in folder.glob(".*.tmp"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def load_latest(run_folder: Path) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """The newest complete checkpoint of a run: (folder, progress, state), or None if there is none."""
    found = checkpoint_folders(run_folder)
    if not found:
        return None
    _, folder = found[-1]
    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file: name it rather than show a traceback
        raise CheckpointError(f"checkpoint {folder} cannot be read ({type(error).__name__}: {error}); delete it to resume from the one before") from None
    return folder, progress, state
