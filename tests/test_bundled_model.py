"""lanterne-mini, the model inside the package: always installed, the last fallback of every command."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
from safetensors import safe_open

import lanterne
from lanterne import models
from lanterne.cli import main

pytestmark = pytest.mark.skipif(not models.is_installed(models.BUNDLED), reason="this checkout has no bundled model yet")


@pytest.fixture
def nothing_else_installed(monkeypatch):
    """As on a fresh `pip install lanterne`: no model package."""
    real = importlib.metadata.distribution

    def distribution(name):
        if name in {model.distribution for model in models.NAMED_MODELS.values() if model.name != models.BUNDLED}:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def test_it_is_the_default_when_no_model_package_is_installed(nothing_else_installed):
    assert models.default_model() == models.BUNDLED
    assert [m["name"] for m in models.list_models() if m["installed"]] == [models.BUNDLED]


def test_it_ships_small_in_bf16_and_loads_in_float32():
    folder = models.model_file(models.BUNDLED, cache_folder=None)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 15_000_000
    with safe_open(weights, "pt") as stored:
        assert {stored.get_slice(name).get_dtype() for name in stored.keys()} == {"BF16"}
    model, tokenizer = lanterne.load(models.BUNDLED)
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.vocab_size == model.config.vocab_size == 8192
    assert model.config.context_length == models.NAMED_MODELS[models.BUNDLED].context_length


def test_generate_and_predict_work_with_no_model_named(nothing_else_installed, capsys):
    assert main(["generate", "Jean Valjean", "--max-new-tokens", "8", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["predict", "Le soleil se lève à l'", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table["candidates"]) >= 5
