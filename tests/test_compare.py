"""`lanterne compare`: same size, same time, same text, then the same measures for every model."""

from __future__ import annotations

import json

import pytest

from lanterne.cli import main
from lanterne.comparison.experiment import CompareSettings, gpt_shape, parse_budget, read_comparison, recurrent_shape, run_comparison
from lanterne.comparison.recall import RecallTask
from lanterne.errors import ConfigError

ALPHABET = "abcdefghijklmnopqrstuvwxyzàâçéèêëîïôûùüœ ABCDEFGHIJKLMNOPQRSTUVWXYZ'.,;:!?\n"  # every word the tour looks up
TEXT = ALPHABET + "".join(f"Ligne {i}: le chat {'dort' if i % 3 else 'mange'} et the cat {'sleeps' if i % 2 else 'eats'}.\n" for i in range(400))


def test_budgets_read_as_minutes_or_parameters():
    assert parse_budget("5min") == {"minutes": 5.0} and parse_budget("5m") == {"minutes": 5.0}
    assert parse_budget("90s") == {"minutes": 1.5}
    assert parse_budget("2M") == {"parameters": 2_000_000} and parse_budget("500k") == {"parameters": 500_000}
    assert parse_budget("800000") == {"parameters": 800_000}
    with pytest.raises(ConfigError, match="cannot read the budget"):
        parse_budget("a lot")
    with pytest.raises(ConfigError, match="unknown architecture"):
        CompareSettings(data="x", archs=("gpt", "transformerxl"))


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn", "mlp"])
def test_the_recurrent_model_matches_the_gpts_size(arch):
    from lanterne.model.config import GPTConfig
    from lanterne.recurrent import RecurrentConfig, RecurrentLM
    from lanterne.model.transformer import GPT

    gpt = GPT(GPTConfig.from_dict(gpt_shape(800_000, 65, 128))).num_parameters()
    assert abs(gpt - 800_000) < 0.1 * 800_000
    other = RecurrentLM(RecurrentConfig(arch=arch, **recurrent_shape(arch, gpt, 65, 128))).num_parameters()
    assert abs(other - gpt) < 0.02 * gpt


def test_a_short_comparison_measures_both_models_and_draws_the_figures(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    settings = CompareSettings(data=str(data), parameters=60_000, minutes=0.05, recall_minutes=0.05, context_length=32,
                               out=str(tmp_path / "out"), recall=RecallTask(items=6, symbols=8))
    report = run_comparison(settings)
    assert [model.arch for model in report.models] == ["gpt", "lstm"]
    for model in report.models:
        assert model.steps >= 1 and model.parameters > 0
        assert len(model.loss_by_position) == 32 and model.validation_loss > 0 and model.bits_per_byte > 0
        assert model.train_tokens_per_second > 0 and model.generate_tokens_per_second > 0 and model.sample
        assert model.recall_distances == sorted(model.recall_distances) and len(model.recall_accuracy) == len(model.recall_distances)
        assert all(0 <= accuracy <= 1 for accuracy in model.recall_accuracy)
    gpt, lstm = report.models
    assert abs(lstm.parameters - gpt.parameters) < 0.05 * gpt.parameters
    saved = read_comparison(tmp_path / "out")
    assert saved is not None and saved.as_dict() == json.loads((tmp_path / "out" / "compare.json").read_text())
    for name in ("compare-position-fr", "compare-position-en", "compare-recall-fr", "compare-recall-en"):
        assert (tmp_path / "out" / f"{name}.svg").stat().st_size > 5_000
        assert_drawn_png(tmp_path / "out" / f"{name}.png")
    # The tour shows these results in its "Why attention" section.
    import lanterne
    from lanterne.inspect.tour import run_tour

    model, tokenizer = lanterne.load(tmp_path / "out" / "runs" / "gpt")
    tour = run_tour(model, tokenizer, "Le chat dort", out=tmp_path / "tour", measure_cost=False, comparison=tmp_path / "out")
    [section] = [section for section in tour.sections if section.key == "why_attention"]
    assert section.figures == ["why-attention-position.png", "why-attention-recall.png"]
    assert f"{gpt.validation_loss:.3f}" in section.lines[1] and f"{lstm.validation_loss:.3f}" in "\n".join(section.lines)
    for figure in section.figures:
        assert_drawn_png(tmp_path / "tour" / figure)


def assert_drawn_png(path) -> None:
    from matplotlib.image import imread

    pixels = imread(path)
    drawn = (pixels != pixels[0, 0]).any(axis=-1)
    assert 0.01 < drawn.mean() < 0.9


def test_lanterne_compare_refuses_bad_input(tmp_path, capsys):
    assert main(["compare", "--data", str(tmp_path / "absent.txt")]) == 1
    assert "not found" in capsys.readouterr().err
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    assert main(["compare", "--data", str(data), "--budget", "forever"]) == 1
    assert "cannot read the budget" in capsys.readouterr().err
    assert main(["compare", "--data", str(data), "--archs", "gpt,xl"]) == 1
    assert "unknown architecture" in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_comparison_on_shakespeare(tmp_path, capsys):
    """The issue's run: `lanterne compare --data tinyshakespeare.txt` at its default budget (about 11 minutes)."""
    from conftest import SHARED_DATA, shared_text

    shared_text("tinyshakespeare.txt")  # skips where ../shared/data is absent
    out = tmp_path / "compare"
    assert main(["compare", "--data", str(SHARED_DATA / "tinyshakespeare.txt"), "--out", str(out)]) == 0
    report = read_comparison(out)
    gpt, lstm = report.model("gpt"), report.model("lstm")
    assert abs(gpt.parameters - lstm.parameters) < 0.02 * gpt.parameters
    # The recap's claim: at the largest distance the Transformer still recalls, the LSTM forgets. Both train
    # for the same minutes, so how far the LSTM gets depends on the machine's speed (measured: 69% here,
    # 86% on CI, against 100% for the GPT both times); what holds everywhere is the shape: the GPT's
    # accuracy stays flat, the LSTM's falls with the distance and ends below the GPT's.
    gpt_near, gpt_far = gpt.recall_accuracy[0], gpt.recall_accuracy[-1]
    lstm_near, lstm_far = lstm.recall_accuracy[0], lstm.recall_accuracy[-1]
    assert gpt_far > 0.95 and gpt_far > lstm_far + 0.05
    assert lstm_near - lstm_far > (gpt_near - gpt_far) + 0.05
    for name in ("compare-position-fr", "compare-position-en", "compare-recall-fr", "compare-recall-en"):
        assert_drawn_png(out / f"{name}.png")
