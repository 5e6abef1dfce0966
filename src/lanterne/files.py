"""Reading users' text safely and writing files atomically.

A corpus is checked before use (missing, empty, binary, not UTF-8), and every file Lanterne
writes goes to a temporary file first, so an interruption never leaves half a file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lanterne.errors import InputFileError

# A text file has no NUL bytes; a binary one (image, zip, model weights) nearly always does.
_BINARY_PROBE_BYTES = 8192


def read_text_file(path: str | os.PathLike, *, what: str = "corpus") -> str:
    """Return the UTF-8 text of `path`, or raise InputFileError saying what is wrong with it.

    `what` names the file in messages ("corpus", "vocabulary", ...).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} file not found: {path} (check the path)")
    if path.is_dir():
        raise InputFileError(f"{what} path is a folder, not a file: {path} (pass a text file)")
    data = path.read_bytes()
    if not data.strip():
        raise InputFileError(f"{what} file is empty: {path} (give a file with some text)")
    if b"\x00" in data[:_BINARY_PROBE_BYTES]:
        raise InputFileError(f"{what} file looks binary, not text: {path} (give a UTF-8 text file)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFileError(
            f"{what} file is not valid UTF-8: {path} (byte {error.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        ) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: all or nothing."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    """This process's umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, fsync it and rename it to `path`.

    For libraries that write files themselves (safetensors, matplotlib): all or nothing, like `atomic_write_bytes`.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise InputFileError(f"output folder does not exist: {folder} (create it first)")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise InputFileError(f"cannot write in {folder}: {error.strerror} (choose another folder)") from None
    os.close(handle)
    try:
        # mkstemp makes the file private (0600); give it the mode `open()` would have given, or the old file's.
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        yield Path(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a folder gone read-only: the old file (if any) is untouched
        Path(temporary).unlink(missing_ok=True)
        raise InputFileError(f"cannot write {path}: {error.strerror or error} (free some space or choose another folder)") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def writable_folder(folder: str | os.PathLike) -> Path:
    """`folder`, created if needed and checked writable (a file is written and removed), or InputFileError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".lanterne-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise InputFileError(f"cannot write in {folder} ({error.strerror or error}); choose another --out") from None
    return folder
