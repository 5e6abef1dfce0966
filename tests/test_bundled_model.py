"""lanterne-mini, the model inside the package: always installed, the last fallback of every command."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

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


def test_the_tour_runs_on_it(nothing_else_installed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tour", "Le soleil se lève à l'est et se couche à", "--no-cost", "--json"]) == 0
    tour = json.loads(capsys.readouterr().out)
    assert tour["model"] == models.BUNDLED and tour["lang"] == "fr"
    keys = [section["key"] for section in tour["sections"]]
    assert keys[:8] == ["tokenization", "embeddings", "next_word", "attention", "feedforward", "logit_lens", "context", "temperature"]
    assert (tmp_path / "lanterne-tour" / "index.html").is_file()


@pytest.mark.slow
def test_the_model_cards_held_out_figures_come_from_lanterne_evaluate(capsys):
    from conftest import SHARED_DATA, shared_text

    for name in ("miserables_fr.txt", "tinyshakespeare.txt"):
        shared_text(name)
    root = Path(__file__).resolve().parents[1]
    recorded = json.loads((root / "benchmarks" / "results" / "lanterne-mini-evaluation.json").read_text(encoding="utf-8"))
    assert main(["evaluate", "--model", models.BUNDLED, "--data", str(SHARED_DATA), "--validation-fraction", "0.05", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    card = (root / "MODEL_CARD.md").read_text(encoding="utf-8")
    for now, then in zip(measured["documents"] + [measured["total"]], recorded["documents"] + [recorded["total"]], strict=True):
        assert now["name"] == then["name"] and now["tokens"] == then["tokens"]
        assert now["loss"] == pytest.approx(then["loss"], abs=2e-3)
        assert f"{then['loss']:.3f}" in card and f"{then['bits_per_byte']:.3f}" in card


def test_it_continues_french_in_french_and_english_in_english():
    from lanterne.inspect.language import detect_language
    from lanterne.prediction import next_token_table

    model, tokenizer = lanterne.load(models.BUNDLED)
    for prompt, language in [("Le soleil se lève à l'est et se couche à", "fr"), ("My lord, I will", "en")]:
        table = next_token_table(model, tokenizer, prompt, top=10, temperatures=[1.0])
        words = " ".join(candidate.text for candidate in table.candidates)
        assert detect_language(words) == language, (prompt, words)
    table = next_token_table(model, tokenizer, "Le soleil se lève à l'est et se couche à", top=2, temperatures=[1.0])
    assert {candidate.text for candidate in table.candidates} == {" la", " l"}
