"""GPTConfig: checked fields, presets, JSON round trip."""

from __future__ import annotations

import pytest

from lanterne.model.config import PRESETS, GPTConfig
from lanterne.errors import ConfigError
from lanterne.model.transformer import GPT


def test_feedforward_defaults_to_four_times_d_model():
    assert GPTConfig(d_model=64, n_heads=4).d_ff == 256
    assert GPTConfig(d_model=64, n_heads=4, d_ff=100).d_ff == 100


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(d_model=100, n_heads=3), "not divisible by n_heads"),
        (dict(n_layers=0), "n_layers must be a positive"),
        (dict(vocab_size=-5), "vocab_size must be a positive"),
        (dict(activation="swish"), "unknown activation"),
        (dict(dropout=1.0), "dropout"),
        (dict(context_length=2.5), "context_length"),
    ],
)
def test_bad_configs_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**fields)


def test_json_round_trip(tmp_path):
    config = GPTConfig.preset("tiny", vocab_size=65, activation="relu")
    assert GPTConfig.from_json(config.to_json()) == config
    (tmp_path / "config.json").write_text(config.to_json())
    assert GPTConfig.from_json(tmp_path / "config.json") == config


def test_unknown_fields_and_presets_are_named():
    with pytest.raises(ConfigError, match="unknown configuration field"):
        GPTConfig.from_dict({"d_modle": 3})
    with pytest.raises(ConfigError, match="unknown preset"):
        GPTConfig.preset("gpt5")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GPTConfig.from_json('{"d_model": ')


def test_gpt2_preset_has_124m_parameters():
    config = GPTConfig.preset("gpt2")
    assert set(PRESETS) >= {"tiny", "gpt2", "gpt2-medium"}
    with __import__("torch").device("meta"):
        model = GPT(config)
    assert model.num_parameters() == 124_439_808  # the published GPT-2 small count (tied head)
