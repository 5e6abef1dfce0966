"""lanterne.inspect: each slide's numbers checked on their definition against the model's own forward pass.

Run on GPT-2-, Llama- and Gemma-shaped models (small, random, seeded) with a BPE tokenizer trained here.
"""

from __future__ import annotations

import pytest
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import ModelInputError
from lanterne.inspect import attention, drawing, embeddings, feedforward, logit_lens, next_word
from lanterne.inspect.recording import record
from lanterne.tokenization import train
from lanterne.model.transformer import GPT

TEXT = (
    "Le soleil se lève à l'est et se couche à l'ouest. Le roi et la reine, l'homme et la femme. "
    "The sun rises in the east and sets in the west. The king and the queen, the man and the woman. "
) * 20
SENTENCE = "Le soleil se lève à l'est et se couche à"
SMALL = dict(vocab_size=320, context_length=64, d_model=32, n_layers=2)
FAMILIES = {
    "gpt2": dict(n_heads=4),
    "llama": dict(GPTConfig.preset("llama").to_dict(), **SMALL, n_heads=4, n_kv_heads=2, d_ff=48),
    "gemma3": dict(
        GPTConfig.preset("gemma3").to_dict(), **SMALL, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
        sliding_window=4, global_every=2,
    ),
}


@pytest.fixture(scope="module")
def tokenizer():
    return train("bpe", TEXT, 300)


def tiny_model(family: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    options = {key: value for key, value in {**SMALL, **FAMILIES[family]}.items() if key != "model_type"}
    model = GPT(GPTConfig(**options)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_weights_times_values_rebuild_the_layer_output(family, tokenizer):
    model = tiny_model(family)
    recording = record(model, tokenizer, SENTENCE)
    time = len(recording.ids)
    for layer in range(model.config.n_layers):
        rebuilt = attention.attention_output_from_weights(model, recording, layer)
        torch.testing.assert_close(rebuilt, recording.attention_outputs[layer], atol=1e-5, rtol=1e-4)
        for head in range(model.config.n_heads):
            view = attention.attention_view(model, recording, layer, head)
            torch.testing.assert_close(view.weights.sum(dim=-1), torch.ones(time))
            assert torch.all(view.weights.triu(1) == 0)  # nothing above the diagonal: no look at the future
            if view.window:  # a sliding-window layer sees only its last `window` tokens
                assert torch.all(view.weights.tril(-view.window) == 0)
            assert view.key_value_head == head // model.config.query_groups
            assert view.top_attended[-1][0].weight == pytest.approx(float(view.weights[-1].max()), abs=1e-4)
    windows = [attention.attention_view(model, recording, layer).window for layer in range(2)]
    assert windows == ([4, None] if family == "gemma3" else [None, None])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_logit_lens_at_the_last_layer_is_the_model_output(family, tokenizer):
    model = tiny_model(family)
    recording = record(model, tokenizer, SENTENCE)
    with torch.no_grad():
        logits = model(torch.tensor([recording.ids])).logits[0].float()
    torch.testing.assert_close(recording.logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit_lens.lens_logits(model, recording, model.config.n_layers), logits, atol=1e-5, rtol=1e-5)
    lens = logit_lens.logit_lens(model, recording, tokenizer)
    assert len(lens.readings) == model.config.n_layers + 1 and len(lens.readings[0]) == len(recording.ids)
    assert [reading.id for reading in lens.readings[-1]] == logits[:, : tokenizer.vocab_size].argmax(dim=-1).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_residual_stream_adds_up(family, tokenizer):
    model = tiny_model(family)
    recording = record(model, tokenizer, SENTENCE)
    for layer in range(model.config.n_layers):
        after = recording.block_inputs[layer] + recording.attention_outputs[layer] + recording.feedforward_outputs[layer]
        expected = recording.block_inputs[layer + 1] if layer + 1 < model.config.n_layers else None
        if expected is not None:
            torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
        assert recording.feedforward_hidden[layer].shape == (len(recording.ids), model.config.d_ff)
    view = feedforward.feedforward_view(model, recording, layer=0)
    assert view.shape.expansion == pytest.approx(model.config.d_ff / model.config.d_model, abs=1e-3)
    assert view.shape.gated == (family != "gpt2")
    norms = recording.feedforward_outputs[1].norm(dim=-1)
    assert view.feedforward_norms[1] == pytest.approx(norms.tolist(), abs=1e-3)
    hidden = recording.feedforward_hidden[0]
    assert view.top_units[2][0].unit == int(hidden[2].abs().argmax())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_temperature_1_distribution_is_the_softmax_of_the_logits(family, tokenizer):
    model = tiny_model(family)
    recording = record(model, tokenizer, SENTENCE)
    table = next_word.next_word_view(recording, tokenizer, top=5, temperatures=(0.5, 1.0, 2.0))
    softmax = torch.softmax(recording.logits[-1][: tokenizer.vocab_size], dim=-1)
    for candidate in table.candidates:
        assert candidate.probabilities[1.0] == pytest.approx(float(softmax[candidate.id]), rel=1e-5)
    assert [candidate.id for candidate in table.candidates] == torch.topk(softmax, 5).indices.tolist()
    assert table.entropy_bits[0.5] < table.entropy_bits[1.0] < table.entropy_bits[2.0]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tokens_nearest_neighbour_is_itself(family, tokenizer):
    model = tiny_model(family)
    view = embeddings.embedding_view(model, tokenizer, "soleil", neighbours=5)
    if not view.word.averaged:
        assert view.neighbours[0].id == view.word.ids[0] and view.neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)
    token_id = tokenizer.encode(" the")[0]
    vector = embeddings.embedding_matrix(model)[token_id]
    assert embeddings.nearest_tokens(model, tokenizer, vector, 3)[0].id == token_id
    multi = embeddings.embedding_view(model, tokenizer, "couchezvous", neighbours=3)  # not one token: averaged, and said so
    assert multi.word.averaged and len(multi.word.ids) > 1
    mapped = embeddings.embedding_map(model, tokenizer, ["roi", "reine", "homme", "femme"])
    assert len(mapped.x) == 4 and 0 < sum(mapped.explained) <= 1.0 + 1e-6
    result = embeddings.analogy(model, tokenizer, "roi", "homme", "femme", count=3)
    excluded = {token_id for word in ("roi", "homme", "femme") for token_id in embeddings.word_ids(tokenizer, word)}
    assert len(result.neighbours) == 3 and not {neighbour.id for neighbour in result.neighbours} & excluded


def test_bad_requests_are_one_line_errors(tokenizer):
    model = tiny_model("gpt2")
    with pytest.raises(ModelInputError, match="empty"):
        record(model, tokenizer, "   ")
    recording = record(model, tokenizer, SENTENCE)
    with pytest.raises(ModelInputError, match="layer 5 does not exist: this model has layers 0 to 1"):
        attention.attention_view(model, recording, 5, 0)
    with pytest.raises(ModelInputError, match="head 9 does not exist"):
        attention.attention_view(model, recording, 0, 9)
    word_tokenizer = train("word", TEXT)
    word_model = GPT(GPTConfig(**{**SMALL, "vocab_size": word_tokenizer.vocab_size, "n_heads": 4})).eval()
    with pytest.raises(ModelInputError, match="not in this model's vocabulary"):
        embeddings.embedding_view(word_model, word_tokenizer, "anticonstitutionnellement")


def test_a_prompt_longer_than_the_context_keeps_its_end_and_figures_stay_readable(tokenizer, tmp_path):
    import matplotlib.image

    model = tiny_model("llama")
    long_text = TEXT * 3
    recording = record(model, tokenizer, long_text)
    assert len(recording.ids) == model.config.context_length and recording.dropped > 0
    assert recording.ids == tokenizer.encode(long_text)[-model.config.context_length :]
    figures = {
        "attention": attention.draw_attention(attention.attention_view(model, recording, 1, 0), "fr"),
        "looks": attention.draw_who_looks_where(attention.attention_view(model, recording, 1), lang="en"),
        "contributions": feedforward.draw_contributions(feedforward.feedforward_view(model, recording), "fr"),
        "lens": logit_lens.draw_logit_lens(logit_lens.logit_lens(model, recording, tokenizer), "en"),
        "next": next_word.draw_next_word(next_word.next_word_view(recording, tokenizer), "fr"),
        "neighbours": embeddings.draw_neighbours(embeddings.embedding_view(model, tokenizer, "roi"), "fr"),
        "map": embeddings.draw_map(embeddings.embedding_map(model, tokenizer, ["roi", "reine", "homme", "femme"]), "en"),
    }
    for name, figure in figures.items():
        for axis in figure.axes:
            assert len(axis.get_xticklabels()) <= drawing.MAX_TICKS and len(axis.get_yticklabels()) <= drawing.MAX_TICKS
        width, height = figure.get_size_inches()
        assert width <= 16 and height <= 16, name
        png, svg = drawing.save_figure(figure, tmp_path / name)
        image = matplotlib.image.imread(png)
        assert image.std() > 0.05, f"{name} is blank"
        assert svg.stat().st_size > 5_000


def test_unwritable_output_is_a_one_line_error(tmp_path):
    from lanterne.errors import InputFileError

    figure, axis = drawing.new_figure()
    axis.plot([0, 1], [1, 0])
    with pytest.raises(InputFileError, match="does not exist"):
        drawing.save_as(figure, tmp_path / "missing" / "figure.png")
    with pytest.raises(InputFileError, match=r"\.png or \.svg"):
        drawing.save_as(figure, tmp_path / "figure.jpg")
    assert drawing.tick_positions(10) == list(range(10))
    many = drawing.tick_positions(1000)
    assert len(many) <= drawing.MAX_TICKS and many[0] == 0


def test_a_long_title_is_wrapped_inside_its_figure_and_fallback_fonts_are_used_where_installed(tokenizer, tmp_path):
    model = tiny_model("gemma3")
    recording = record(model, tokenizer, attention.MURDER_MYSTERY["fr"])
    view = attention.attention_view(model, recording, 0, 1)
    for figure in (attention.draw_attention(view, "fr"), attention.draw_who_looks_where(view, -1, "fr")):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        title = figure.axes[0].title
        assert title.get_window_extent(renderer).x1 <= figure.bbox.x1 + 1, "the title is cut at the right edge"
    assert drawing.font_families()[0] == "DejaVu Sans"
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    present = [name for name in drawing.FALLBACK_FONTS if name in installed]
    assert drawing.font_families()[1:] == present  # fonts-noto-cjk, where Debian installed it
