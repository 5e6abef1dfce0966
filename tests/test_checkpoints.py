"""Model folders: save/load round trip, safetensors only, clear refusals of broken or mismatched files."""

from __future__ import annotations

import json

import pytest
import torch

import lanterne
from lanterne.checkpoints import load_model
from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError, DownloadError
from lanterne.tokenization import CharTokenizer
from lanterne.model.transformer import GPT

CONFIG = GPTConfig(vocab_size=40, context_length=16, d_model=24, n_heads=3, n_layers=2, activation="relu")


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,")
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)
    return model, tmp_path / "model"


def test_round_trip_keeps_every_number(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    again, tokenizer = lanterne.load(folder)
    ids = torch.randint(0, 40, (2, 16))
    assert torch.equal(model(ids).logits, again(ids).logits)
    assert again.config == CONFIG
    assert tokenizer.decode(tokenizer.encode("hello")) == "hello"
    assert GPT.from_pretrained(folder).config == CONFIG


def test_untied_model_round_trip(tmp_path):
    model = GPT(CONFIG.with_changes(tie_embeddings=False)).eval()
    model.save_pretrained(tmp_path)
    again = GPT.from_pretrained(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    assert again.lm_head.weight.data_ptr() != again.embeddings.token.weight.data_ptr()


def test_truncated_weights_are_refused(saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)


def test_garbage_weights_are_refused(saved):
    _, folder = saved
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)


def test_config_that_does_not_match_the_weights(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["d_model"] = 48
    config["d_ff"] = 0
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(folder)
    config["d_model"], config["n_layers"] = 24, 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing blocks.2"):
        load_model(folder)


def test_missing_pieces_are_named(tmp_path, saved):
    _, folder = saved
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    (folder / "config.json").write_text('{"d_model": 2')
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(folder / "model.safetensors")


def test_an_unknown_name_offline_names_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="pass a local folder"):
        load_model("hf:no-such-user/no-such-model")


def test_a_bare_unknown_name_is_never_downloaded():
    from lanterne.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="write hf:no-such-model"):
        load_model("no-such-model")


def test_pickles_are_read_as_data_only(tmp_path):
    from lanterne.weights import read_pickled_weights

    class Payload:
        def __reduce__(self):
            return (print, ("this code must never run",))

    torch.save({"weight": torch.ones(2)}, tmp_path / "good.bin")
    assert torch.equal(read_pickled_weights(tmp_path / "good.bin")["weight"], torch.ones(2))
    import pickle

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(Payload(), protocol=2))  # torch.load's own protocol
    with pytest.raises(CheckpointError, match="cannot read"):
        read_pickled_weights(tmp_path / "evil.bin")
