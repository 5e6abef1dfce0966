"""The context-length slide: words per token measured, the slide's table recomputed, what is cut, the cost measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import assert_drawn
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import ModelInputError
from lanterne.inspect import cost
from lanterne.inspect.context import (
    RULE_OF_THUMB_WORDS_PER_TOKEN,
    SLIDE_CONTEXTS,
    WORDS_PER_PAGE,
    context_view,
    count_words,
    default_cost_lengths,
    draw_context_cost,
    draw_context_table,
    installed_context_lengths,
    measure_forward_costs,
)
from lanterne.tokenization import CharTokenizer, train
from lanterne.model.transformer import GPT

CORPUS = "le petit chat dort sur le tapis. the little cat sleeps on the mat! " * 6
CONTEXT = 64


@pytest.fixture(scope="module")
def letters():
    return CharTokenizer.train(CORPUS)


@pytest.fixture(scope="module")
def model(letters):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=letters.vocab_size, context_length=CONTEXT, d_model=32, n_heads=2, n_layers=2)).eval()


def test_words_are_counted_as_a_reader_counts_them():
    assert count_words("l'homme est là : il rit !") == 5  # ':' and '!' alone are not words
    assert count_words("  ") == 0
    assert count_words("deux\nlignes\tet 3 mots") == 5


def test_words_per_token_is_measured_and_pages_follow(model, letters):
    text = "le chat dort sur le tapis."  # 6 words, 26 characters = 26 letter tokens
    view = context_view(model, letters, text, installed_models=False)
    assert (view.text_words, view.text_tokens) == (6, 26)
    assert view.words_per_token == pytest.approx(6 / 26)
    slide = {row.name: row for row in view.rows if row.source == "slide"}
    assert [(name, row.context_tokens) for name, row in slide.items()] == list(SLIDE_CONTEXTS)
    gpt35 = slide["GPT-3.5"]
    assert gpt35.pages_rule_of_thumb == pytest.approx(4096 * RULE_OF_THUMB_WORDS_PER_TOKEN / WORDS_PER_PAGE)  # the slide's ~6 pages
    assert gpt35.pages_measured == pytest.approx(4096 * 6 / 26 / WORDS_PER_PAGE)
    [own] = [row for row in view.rows if row.source == "model"]
    assert (own.name, own.context_tokens) == ("this model", CONTEXT)


def test_sub_words_hold_more_words_per_token_than_letters(model, letters):
    text = "le petit chat dort sur le tapis. " * 3
    sub_words = train("bpe", CORPUS, 300)
    by_letters = context_view(model, letters, text, installed_models=False)
    by_sub_words = context_view(model, sub_words, text, installed_models=False)
    assert by_sub_words.words_per_token == pytest.approx(count_words(text) / len(sub_words.encode(text)))
    assert by_sub_words.words_per_token > by_letters.words_per_token


def test_a_text_that_fits(model, letters):
    view = context_view(model, letters, "le chat", installed_models=False)
    assert view.fits and view.dropped_tokens == 0 and view.dropped_text == ""


def test_a_text_longer_than_the_context_loses_its_first_tokens(model, letters):
    text = "le petit chat dort sur le tapis. the little cat sleeps on the mat! le chien"  # 75 letters
    view = context_view(model, letters, text, installed_models=False)
    assert not view.fits
    assert view.dropped_tokens == len(text) - CONTEXT == 11
    assert view.dropped_text == text[:11] and view.dropped_characters == 11


def test_a_long_cut_is_shown_by_its_ends(model, letters):
    text = "le petit chat dort sur le tapis. " * 40
    view = context_view(model, letters, text, installed_models=False)
    assert view.dropped_characters == len(text) - CONTEXT
    assert view.dropped_text.startswith(text[:100]) and " […] " in view.dropped_text
    assert len(view.dropped_text) < 500


def test_empty_text_is_refused(model, letters):
    with pytest.raises(ModelInputError, match="empty"):
        context_view(model, letters, " ", installed_models=False)


@pytest.mark.slow
def test_the_listed_context_lengths_are_the_files_own(tmp_path):
    """The named models' context lengths, kept in their listing, against their files (GGUF header or config.json)."""
    from lanterne.interop.gguf import open_gguf, read_metadata
    from lanterne.models import NAMED_MODELS, is_installed, model_file

    checked = 0
    for name, listing in NAMED_MODELS.items():
        if not is_installed(name):
            continue
        path = model_file(name, tmp_path)
        if path.is_dir():  # the bundled model: a Lanterne folder, whose config.json says its context
            file_says = json.loads((path / "config.json").read_text())["context_length"]
        else:
            metadata = read_metadata(open_gguf(path))
            file_says = metadata[f"{metadata['general.architecture']}.context_length"]
        assert file_says == listing.context_length
        assert installed_context_lengths()[name] == listing.context_length
        checked += 1
    if not checked:
        pytest.skip("no named model is installed (lanterne models lists the install commands)")


def test_default_cost_lengths():
    assert default_cost_lengths(64) == [16, 32, 64]
    assert default_cost_lengths(100) == [16, 32, 64, 100]
    assert default_cost_lengths(32_768) == [16, 32, 64, 128, 256, 512, 1024, 2048]
    assert default_cost_lengths(8) == [8]


def test_cost_is_measured_at_growing_lengths(model, letters):
    view = context_view(model, letters, "le chat", measure_cost=True, cost_lengths=[32, 8, 16], installed_models=False)
    assert [row.length for row in view.cost] == [8, 16, 32]
    assert all(row.ms > 0 for row in view.cost)
    assert all(row.peak_added_bytes is None or row.peak_added_bytes >= 0 for row in view.cost)
    data = json.loads(json.dumps(view.as_dict()))
    assert data["cost"][0] == {"length": 8, "ms": view.cost[0].ms, "peak_added_bytes": view.cost[0].peak_added_bytes}
    with pytest.raises(ModelInputError, match="1 to 64"):
        measure_forward_costs(model, [CONTEXT + 1])


def test_the_cost_curve_stops_before_a_pass_too_long(model):
    # No budget: only the first length is timed (any pass takes some time); no limit: every length is.
    no_budget = measure_forward_costs(model, [8, 16, 32], max_seconds=0.0)
    no_limit = measure_forward_costs(model, [8, 16, 32], max_seconds=float("inf"))
    assert [row.length for row in no_budget] == [8]
    assert [row.length for row in no_limit] == [8, 16, 32]


def test_the_benchmark_shares_the_measuring_code():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generation.py"
    spec = importlib.util.spec_from_file_location("benchmark_generation", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.forward_cost_at is cost.forward_cost_at
    assert benchmark.PeakMemory is cost.PeakMemory and benchmark.best_of is cost.best_of


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_figures_render_in_both_languages(model, letters, tmp_path, lang):
    text = "le petit chat dort sur le tapis. " * 3  # longer than the context: the cut is written
    view = context_view(model, letters, text, measure_cost=True, cost_lengths=[8, 16, 32, 64], installed_models=False)
    table = draw_context_table(view, lang)
    [axis] = table.axes
    labels = [label.get_text() for label in axis.get_yticklabels()]
    assert labels[0] == "GPT-3.5" and ("ce modèle" in labels) == (lang == "fr")
    assert any(("coupés" if lang == "fr" else "are cut") in text.get_text() for text in axis.texts)
    assert_drawn(table, tmp_path / f"table-{lang}")
    assert_drawn(draw_context_cost(view, lang), tmp_path / f"cost-{lang}")


def test_no_cost_figure_without_a_measure(model, letters):
    view = context_view(model, letters, "le chat", installed_models=False)
    with pytest.raises(ModelInputError, match="measure_cost=True"):
        draw_context_cost(view)
