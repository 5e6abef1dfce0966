"""GGUF and HuggingFace export (`interop/gguf_writer.py`, `checkpoints.save_huggingface`): transformers is the oracle.

A model trained with Lanterne is written out, transformers loads the file (`gguf_file=`, or the
folder), and its logits and token ids must equal Lanterne's.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import lanterne
from lanterne.cli import main
from lanterne.model.config import GPTConfig
from lanterne.errors import CheckpointError
from lanterne.interop.gguf_writer import save_gguf
from lanterne.tokenization import train
from lanterne.tokenization.bpe_merges import explain_merges, merges_from_ranks
from lanterne.model.transformer import GPT

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

CORPUS = (
    "Le soleil se lève à l'est et se couche à l'ouest. Les misérables, ça va? Oui, très bien.\n"
    "The sun rises in the east and sets in the west. To be, or not to be: that is the question.\n"
) * 40
# Held out from training: French, English, code, numbers, emoji, CJK, combining marks, \r\n, runs of spaces.
STRESS = "Où est l'hôtel?\r\n  def f(x):\n        return x**2  # 12345\n😀👍🏽 中文字 e\u0301 \t\t end <|endoftext|>"

SHAPES = {
    "gpt2": dict(vocab_size=384, context_length=1024, d_model=64, n_heads=4, n_layers=2, activation="gelu_tanh"),
    # GQA 2:1 and a d_ff that is no multiple of d_model.
    "llama": dict(
        vocab_size=384, context_length=128, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=96, activation="silu",
        feedforward="gated", norm="rmsnorm", positions="rope", rope_base=50_000.0, bias=False,
    ),
}


@pytest.fixture(scope="module")
def tokenizers():
    return {pattern: train("bpe", CORPUS, 380, pattern=pattern) for pattern in ("gpt2", "cl100k", "o200k")}


def random_model(shape: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SHAPES[shape])).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # larger than the initial 0.02, so every layer shows in the logits
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def transformers_gguf(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


@pytest.mark.parametrize(("shape", "pattern"), [("gpt2", "gpt2"), ("gpt2", "o200k"), ("llama", "cl100k"), ("llama", "o200k")])
def test_transformers_reads_the_exported_gguf_with_the_same_logits_and_ids(shape, pattern, tokenizers, tmp_path):
    model, tokenizer = random_model(shape), tokenizers[pattern]
    path = save_gguf(model, tokenizer, tmp_path / "model.gguf")
    theirs, their_tokenizer = transformers_gguf(path)

    ids = tokenizer.encode(STRESS, allowed_special="all")
    assert their_tokenizer(STRESS, add_special_tokens=False)["input_ids"] == ids
    assert their_tokenizer.decode(ids) == STRESS
    batch = torch.tensor([ids])
    with torch.no_grad():
        ours, reference = model(batch).logits, theirs(batch).logits
    assert ours.std() > 0.1
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)

    loaded, loaded_tokenizer = lanterne.load(path)  # and back into Lanterne, exactly
    assert loaded_tokenizer.encode(STRESS, allowed_special="all") == ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, ours, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_a_quantised_export_reads_the_same_in_transformers_and_lanterne(dtype, tokenizers, tmp_path):
    model, tokenizer = random_model("llama"), tokenizers["o200k"]
    full = save_gguf(model, tokenizer, tmp_path / "f32.gguf")
    path = save_gguf(model, tokenizer, tmp_path / f"model-{dtype}.gguf", dtype=dtype)
    assert path.stat().st_size < full.stat().st_size
    theirs, _ = transformers_gguf(path)
    loaded, _ = lanterne.load(path, weights="fp32")
    batch = torch.tensor([tokenizer.encode(STRESS, allowed_special="all")])
    with torch.no_grad():
        ours, reference, original = loaded(batch).logits, theirs(batch).logits, model(batch).logits
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)  # the same dequantised weights
    error = (ours - original).abs().max().item() / original.abs().max().item()
    assert 0 < error < {"f16": 0.01, "bf16": 0.05, "q8_0": 0.05}[dtype]


def test_a_model_trained_from_the_cli_exports_and_loads_back(tmp_path, tokenizers):
    data = tmp_path / "corpus.txt"
    data.write_text(CORPUS, encoding="utf-8")
    run = tmp_path / "run"
    settings = ["--set", "d_model=32", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "n_kv_heads=1",
                "--set", "d_ff=64", "--set", "context_length=32", "--set", "batch_size=4"]
    assert main(["train", "--data", str(data), "--tokenizer", "bpe:300", "--preset", "llama", *settings,
                 "--max-steps", "3", "--out", str(run), "--json"]) == 0
    out = tmp_path / "trained.gguf"
    assert main(["export", str(run), "--gguf", str(out), "--type", "q8_0"]) == 0
    assert main(["export", str(run), "--gguf", str(out)]) == 1  # exists: never overwritten without --overwrite
    hf_folder = tmp_path / "hf"
    assert main(["export", str(run), "--huggingface", str(hf_folder)]) == 0
    original, tokenizer = lanterne.load(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
        their_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_folder)
    ids = tokenizer.encode(STRESS, allowed_special="all")
    assert their_tokenizer(STRESS, add_special_tokens=False)["input_ids"] == ids
    batch = torch.tensor([ids[:32]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(batch).logits, original(batch).logits, atol=1e-4, rtol=0)
    exported, _ = lanterne.load(out, weights="fp32")
    assert exported.config.n_kv_heads == 1 and exported.config.vocab_size == original.config.vocab_size


def test_shapes_and_tokenizers_gguf_cannot_hold_are_refused_by_name(tokenizers, tmp_path, capsys):
    gemma = GPT(GPTConfig.preset("gemma3", vocab_size=384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, n_layers=1, d_ff=64))
    with pytest.raises(CheckpointError, match="rmsnorm_plus_one"):
        save_gguf(gemma, tokenizers["o200k"], tmp_path / "gemma.gguf")
    with pytest.raises(CheckpointError, match="byte-level BPE"):
        save_gguf(random_model("gpt2"), train("char", CORPUS), tmp_path / "char.gguf")
    with pytest.raises(CheckpointError, match="unknown GGUF type"):
        save_gguf(random_model("gpt2"), tokenizers["gpt2"], tmp_path / "x.gguf", dtype="q3_k")
    small = GPT(GPTConfig(**{**SHAPES["gpt2"], "vocab_size": 300}))
    with pytest.raises(CheckpointError, match="do not belong together"):
        save_gguf(small, tokenizers["gpt2"], tmp_path / "small.gguf")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written is left


def test_merges_recovered_from_ranks_rebuild_every_token(tokenizers):
    ranks = tokenizers["o200k"].ranks
    merges = merges_from_ranks(ranks)
    assert len(merges) == len(ranks) - 256
    for left, right in merges:
        joined = left + right
        assert ranks[left] < ranks[joined] and ranks[right] < ranks[joined]
        assert explain_merges(joined, ranks)[-1] == [joined]


@pytest.mark.slow
def test_o200k_written_as_huggingface_json_encodes_as_tiktoken(tiktoken_oracle, tmp_path):
    tokenizers_library = pytest.importorskip("tokenizers")
    from lanterne.tokenization import load
    from lanterne.tokenization.huggingface import byte_level_bpe_document

    ours = load("o200k_base")
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(byte_level_bpe_document(ours)), encoding="utf-8")
    theirs = tokenizers_library.Tokenizer.from_file(str(path))
    text = STRESS + CORPUS[:2000]
    assert theirs.encode(text, add_special_tokens=False).ids == tiktoken_oracle("o200k_base").encode(text, allowed_special="all")
