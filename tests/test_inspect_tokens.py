"""The tokenization slide on the student's text: counts, spans, unknown rates measured, the figure readable."""

from __future__ import annotations

import json

import pytest
from conftest import assert_drawn

from lanterne.errors import InputTextError
from lanterne.inspect.drawing import MAX_TICKS
from lanterne.inspect.tokens import WINDOW_CHARACTERS, draw_tokenization, tokenization_view, window_tokens
from lanterne.tokenization import train
from lanterne.tokenization.tiktoken_files import find_local_copy, load_named
from lanterne.tokenization.word import WordTokenizer

CORPUS = "le petit chat dort sur le tapis. the little cat sleeps on the mat! " * 6
TEXT = "Le chat de Mme Dupont dort ; the cat sleeps, the dog barks. Été 東京 🙂"


@pytest.fixture(scope="module")
def tokenizer():
    return train("bpe", CORPUS, 300)


def test_counts_are_the_tokenizers_own(tokenizer):
    view = tokenization_view(TEXT, tokenizer, named=())
    assert [row.name for row in view.rows] == ["characters", "words", "model"]
    assert view.row("model").count == len(tokenizer.encode(TEXT))
    assert view.row("characters").count == len(TEXT)
    assert view.row("words").count == len(WordTokenizer([]).split(TEXT))
    assert view.row("model").vocab_size == tokenizer.vocab_size
    assert [row.family for row in view.rows] == ["characters", "words", "sub-words"]


def test_unknown_rates_by_hand():
    view = tokenization_view("le chien dort !", named=(), reference="le chat dort")
    words = view.row("words")
    # le, chien, dort, ! -> chien and ! were never seen in the reference
    assert (words.count, words.unknown) == (4, 2)
    assert words.unknown_rate == pytest.approx(0.5)
    assert [token.unknown for token in words.tokens] == [False, True, False, True]
    characters = view.row("characters")
    # "le chien dort !": i, n and ! are not in "le chat dort"
    assert (characters.count, characters.unknown) == (15, 3)
    assert characters.unknown_rate == pytest.approx(3 / 15)
    assert characters.vocab_size == len(set("le chat dort")) + 1  # + <unk>
    assert view.reference == "given"


def test_the_slides_point_on_new_words(tokenizer):
    """Words miss the new words, letters make long sequences, byte-level sub-words know every text."""
    view = tokenization_view(TEXT, tokenizer, named=())
    characters, words, model = view.row("characters"), view.row("words"), view.row("model")
    assert words.unknown > 0 and model.unknown == 0
    assert characters.count > model.count > words.count
    assert characters.vocab_size < words.vocab_size < model.vocab_size
    assert tokenizer.decode([token.id for token in model.tokens]) == TEXT  # byte-level: the text spelled back, exactly
    assert view.reference == "built-in"


def test_spans_point_into_the_text(tokenizer):
    view = tokenization_view(TEXT, tokenizer, named=())
    for row in view.rows:
        assert all(0 <= token.start < token.end <= len(TEXT) for token in row.tokens)
        for token in row.tokens:
            if row.name != "model" and not token.unknown:
                assert TEXT[token.start : token.end] == token.text


def test_published_vocabularies_found_here_are_added(tokenizer):
    view = tokenization_view(TEXT, tokenizer, named=("o200k_base", "r50k_base"))
    names = [row.name for row in view.rows]
    for name in ("o200k_base", "r50k_base"):
        if find_local_copy(name) is None:
            assert name not in names  # absent here and never downloaded: skipped
        else:
            row = view.row(name)
            assert row.count == len(load_named(name, download=False).encode(TEXT))
            assert row.unknown == 0 and row.source == "published"


@pytest.mark.parametrize("text", ["", "   \n", None])
def test_empty_text_is_refused(text):
    with pytest.raises(InputTextError) as error:
        tokenization_view(text, named=())
    assert "\n" not in str(error.value) and "empty" in str(error.value)


def test_as_dict_is_json_and_can_be_shortened(tokenizer):
    view = tokenization_view(TEXT * 5, tokenizer, named=())
    full = json.loads(json.dumps(view.as_dict()))
    assert full["rows"][0]["count"] == len(full["rows"][0]["tokens"]) == len(TEXT) * 5
    short = view.as_dict(max_tokens=10)
    assert all(len(row["tokens"]) <= 10 for row in short["rows"])
    assert short["rows"][0]["count"] == len(TEXT) * 5  # counts stay those of the whole text


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_figure_renders_in_both_languages(tokenizer, tmp_path, lang):
    figure = draw_tokenization(tokenization_view(TEXT, tokenizer, named=()), lang)
    labels = [label.get_text() for axis in figure.axes for label in axis.get_xticklabels() + axis.get_yticklabels()]
    assert ("caractères" in " ".join(labels)) == (lang == "fr")
    assert_drawn(figure, tmp_path / f"tokens-{lang}")


def test_long_text_is_windowed(tokenizer, tmp_path):
    long_text = (TEXT + "\n") * 60  # over 4,000 characters
    view = tokenization_view(long_text, tokenizer, named=())
    figure = draw_tokenization(view, "en")
    strips = figure.axes[0]
    shown = sum(len(window_tokens(row, WINDOW_CHARACTERS)) for row in view.rows)
    assert len(strips.texts) == shown <= len(view.rows) * WINDOW_CHARACTERS
    assert strips.get_xlim()[1] == WINDOW_CHARACTERS
    assert f"of {len(long_text)} characters" in strips.get_title()
    for axis in figure.axes:
        assert len(axis.get_xticklabels()) <= MAX_TICKS and len(axis.get_yticklabels()) <= MAX_TICKS
    assert_drawn(figure, tmp_path / "long")
