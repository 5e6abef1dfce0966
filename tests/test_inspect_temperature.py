"""The temperature slide: softmax at temperature 1, one-hot toward 0, the filters' survivors by hand, seeded samples."""

from __future__ import annotations

import json
import math

import pytest
from conftest import assert_drawn
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import ModelInputError
from lanterne.generation import generate
from lanterne.inspect.temperature import (
    CURVE_TEMPERATURES,
    draw_filters,
    draw_temperature_curves,
    filter_effects,
    temperature_curves,
    temperature_samples,
    temperature_view,
)
from lanterne.tokenization import CharTokenizer
from lanterne.model.transformer import GPT

LETTERS = CharTokenizer.train("abcdefghij")  # ids 0..9 are a..j, 10 is <unk>
LOGITS = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0])
CORPUS = "le petit chat dort sur le tapis. the little cat sleeps on the mat! "


@pytest.fixture(scope="module")
def letters():
    return CharTokenizer.train(CORPUS)


@pytest.fixture(scope="module")
def model(letters):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=letters.vocab_size, context_length=64, d_model=32, n_heads=2, n_layers=2)).eval()
    with torch.no_grad():  # larger weights: a less flat next-token distribution
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


def test_the_curve_spans_near_zero_to_two():
    assert len(CURVE_TEMPERATURES) == 40
    assert CURVE_TEMPERATURES[0] == 0.05 and CURVE_TEMPERATURES[-1] == 2.0 and 1.0 in CURVE_TEMPERATURES


def test_temperature_one_is_the_softmax():
    curves = temperature_curves(LOGITS, LETTERS, top=4)
    one = CURVE_TEMPERATURES.index(1.0)
    softmax = torch.softmax(LOGITS, dim=-1)
    assert [c.id for c in curves.candidates] == [0, 1, 2, 3]
    assert [c.text for c in curves.candidates] == ["a", "b", "c", "d"]
    for candidate in curves.candidates:
        assert candidate.probabilities[one] == pytest.approx(float(softmax[candidate.id]), abs=1e-6)
        assert candidate.logit == float(LOGITS[candidate.id])
    assert curves.entropy_bits[one] == pytest.approx(float(-(softmax * torch.log2(softmax)).sum()), abs=1e-5)


def test_curves_add_up_and_sharpen_toward_zero():
    curves = temperature_curves(LOGITS, LETTERS, top=3)
    for step in range(len(curves.temperatures)):
        shown = sum(c.probabilities[step] for c in curves.candidates)
        assert shown <= 1 + 1e-6
        assert shown + curves.other_mass[step] == pytest.approx(1.0, abs=1e-5)
    top = curves.candidates[0].probabilities
    assert top[0] > 0.999 and curves.entropy_bits[0] < 0.01  # T = 0.05: almost one-hot
    assert all(a >= b for a, b in zip(top, top[1:]))  # the favourite loses mass as T grows
    assert all(a <= b + 1e-6 for a, b in zip(curves.entropy_bits, curves.entropy_bits[1:]))
    assert curves.entropy_bits[-1] < math.log2(len(LOGITS))


def test_padded_vocabulary_is_cut_to_the_tokenizer():
    padded = torch.cat([LOGITS, torch.full((5,), 10.0)])  # padding ids a model never trained
    curves = temperature_curves(padded, LETTERS, top=2)
    assert curves.vocab_size == LETTERS.vocab_size
    assert [c.id for c in curves.candidates] == [0, 1]


def test_filters_keep_what_they_promise():
    effects = {(e.filter, e.value): e for e in filter_effects(LOGITS, top_k=(5,), top_p=(0.5, 0.9), min_p=(0.1,)).effects}
    softmax = torch.softmax(LOGITS, dim=-1)
    assert effects["top-k", 5].survivors == 5
    assert effects["top-k", 5].kept_mass == pytest.approx(float(softmax[:5].sum()), abs=1e-6)
    # top-p: the smallest set of most likely tokens whose probability reaches p
    for p in (0.5, 0.9):
        needed = int((torch.cumsum(softmax, 0) < p).sum()) + 1
        assert effects["top-p", p].survivors == needed
        assert effects["top-p", p].kept_mass >= p
    # min-p: tokens at least 0.1 x as likely as the favourite
    assert effects["min-p", 0.1].survivors == int((softmax >= 0.1 * softmax.max()).sum())


def test_samples_are_reproducible_with_the_seed(model, letters):
    first = temperature_samples(model, letters, "le chat", count=2, max_new_tokens=8, seed=3)
    again = temperature_samples(model, letters, "le chat", count=2, max_new_tokens=8, seed=3)
    other = temperature_samples(model, letters, "le chat", count=2, max_new_tokens=8, seed=4)
    assert first.texts == again.texts
    assert first.texts != other.texts
    assert first.temperatures == [0.2, 0.8, 1.5]
    assert [len(texts) for texts in first.texts] == [2, 2, 2]
    # each batch is generation's own, seeded the same way
    assert first.texts[1] == generate(model, letters, ["le chat"] * 2, max_new_tokens=8, temperature=0.8, seed=3)


def test_view_reads_the_prompts_logits(model, letters):
    prompt = "le petit chat"
    view = temperature_view(model, letters, prompt, samples=False)
    with torch.inference_mode():
        logits = model(torch.tensor([letters.encode(prompt)]), last_only=True).logits[0, -1]
    best = int(logits.argmax())
    assert view.curves.candidates[0].id == best
    assert view.curves.candidates[0].logit == pytest.approx(float(logits[best]), abs=1e-5)
    assert view.dropped == 0 and view.samples is None
    long_view = temperature_view(model, letters, "le chat dort. " * 10, count=1, max_new_tokens=4)
    assert long_view.dropped == 140 - 64
    data = json.loads(json.dumps(long_view.as_dict()))
    assert data["samples"]["seed"] == 0 and len(data["curves"]["temperatures"]) == 40


def test_empty_prompt_is_refused(model, letters):
    with pytest.raises(ModelInputError, match="empty"):
        temperature_view(model, letters, "")


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_figures_render_in_both_languages(tmp_path, lang):
    curves = draw_temperature_curves(temperature_curves(LOGITS, LETTERS), lang)
    assert curves.axes[0].get_xlabel() == ("température" if lang == "fr" else "temperature")
    [legend] = curves.legends
    assert len(legend.get_texts()) == 8  # six candidates, the rest, the entropy
    assert_drawn(curves, tmp_path / f"curves-{lang}")
    # Beside the curves, never over them.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(curves)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(curves.axes[0].get_window_extent(renderer))
    filters = draw_filters(filter_effects(LOGITS), lang)
    assert [axis.get_title() for axis in filters.axes] == ["top-k", "top-p", "min-p"]
    assert ("0,9" if lang == "fr" else "0.9") in [label.get_text() for label in filters.axes[1].get_xticklabels()]
    assert_drawn(filters, tmp_path / f"filters-{lang}")
