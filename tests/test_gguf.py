"""GGUF files: the packaged SmolLM2 and Gemma 3 against `transformers` reading the same file, and bad files."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import lanterne
from lanterne.errors import CheckpointError, LanterneError
from lanterne.generation import SamplingSettings, generate_ids
from lanterne.interop.gguf import load_gguf, read_gguf
from lanterne.models import is_installed, model_file

from conftest import shared_text

ENGLISH = (
    "The sun rises in the east and sets in the west. Every morning the baker opens his shop before dawn, "
    "and the smell of fresh bread fills the narrow street. Children walk to school, dogs bark at the postman, "
    "and the old clock in the square strikes eight. In the afternoon the market is busy: farmers sell apples, "
    "cheese and honey, while tourists take pictures of the cathedral. When night falls, the lamps are lit one by one, "
    "the cafés fill with music, and the river reflects a thousand lights. It is an ordinary day in a small town, "
    "and yet, for those who live there, every detail matters: the weather, the harvest, the news from the capital."
)
FRENCH = (
    "Le soleil se lève à l'est et se couche à l'ouest. Chaque matin, le boulanger ouvre sa boutique avant l'aube, "
    "et l'odeur du pain frais remplit la rue étroite. Les enfants vont à l'école, les chiens aboient après le facteur, "
    "et la vieille horloge de la place sonne huit heures. L'après-midi, le marché est animé : les paysans vendent des "
    "pommes, du fromage et du miel, pendant que les touristes photographient la cathédrale. Quand la nuit tombe, les "
    "lampes s'allument une à une, les cafés se remplissent de musique, et la rivière reflète mille lumières."
)


def installed_file(name: str, tmp_path_factory):
    if not is_installed(name):
        pytest.skip(f"{name} is not installed (see `lanterne models` for the command)")
    return model_file(name, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return installed_file("smollm2-135m-instruct", tmp_path_factory)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return installed_file("gemma-3-270m", tmp_path_factory)


def transformers_pair(path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_logits_and_greedy_tokens_equal_transformers(name, request, tmp_path):
    path = request.getfixturevalue(name)
    theirs, their_tokenizer = transformers_pair(path)
    ours, _ = load_gguf(path, tmp_path)
    for text in (ENGLISH, FRENCH):
        ids = their_tokenizer(text, return_tensors="pt").input_ids
        assert ids.shape[1] >= 100
        with torch.no_grad():
            difference = (ours(ids).logits - theirs(ids).logits).abs().max().item()
        assert difference < 1e-3, f"{name}: logits differ by {difference}"
    prompt = their_tokenizer(FRENCH[:120], return_tensors="pt").input_ids
    with torch.no_grad():
        expected = theirs.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False)[0, prompt.shape[1]:].tolist()
    produced = [step[0] for step in generate_ids(ours, [prompt[0].tolist()], 64, SamplingSettings(temperature=0.0))]
    assert produced == expected


@pytest.mark.slow
def test_smollm2_tokenizer_equals_transformers(smollm2, tmp_path):
    _, theirs = transformers_pair(smollm2)
    _, ours = load_gguf(smollm2, tmp_path)
    texts = [ENGLISH, FRENCH, "def f(x):\r\n    return x ** 2  # 12345\n\n\t\tend", "😀👩‍👩‍👧 東京タワー e\u0301 naïve     spaces   \n\n"]
    for name in ("tinyshakespeare.txt", "miserables_fr.txt"):
        texts.append(shared_text(name)[-100_000:])
    for text in texts:
        ids = ours.encode(text, disallowed_special=())
        assert ids == theirs(text, add_special_tokens=False).input_ids
        assert ours.decode(ids) == text


@pytest.mark.slow
def test_the_slides_examples(smollm2, gemma, tmp_path, monkeypatch):
    """SmolLM2 ranks " west" first; Gemma 3 continues the French sentence with " l'ouest"."""
    monkeypatch.setenv("LANTERNE_CACHE", str(tmp_path))
    model, tokenizer = lanterne.load("smollm2-135m-instruct")
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode("The sun rises in the east and sets in the")])).logits[0, -1]
    assert tokenizer.decode([int(logits.argmax())]) == " west"
    assert logits.softmax(-1).max() > 0.9


def test_a_truncated_or_foreign_file_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 5)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        read_gguf(broken)
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        read_gguf(tmp_path / "missing.gguf")


def test_an_unknown_architecture_is_named(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'mamba' is not one Lanterne runs"):
        read_gguf(path)


def test_a_truncated_copy_of_a_real_file_caches_nothing(smollm2, tmp_path):
    truncated = tmp_path / "smollm2.gguf"
    with open(smollm2, "rb") as source, open(truncated, "wb") as target:
        target.write(source.read(20_000_000))
    cache = tmp_path / "cache"
    with pytest.raises(LanterneError) as error:
        load_gguf(truncated, cache)
    assert str(truncated) in str(error.value) and "\n" not in str(error.value)
    assert not any(cache.rglob("config.json"))


def test_unknown_model_name_is_one_line(tmp_path, monkeypatch):
    from lanterne.cli import main

    monkeypatch.setenv("LANTERNE_CACHE", str(tmp_path))
    assert main(["predict", "x", "--model", "gpt-17"]) == 1


def write_gguf(path, architecture: str, header: dict, tensors: dict) -> None:
    """A GGUF file with these header keys (under the architecture's prefix) and tensors."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in header.items():
        add = writer.add_float32 if isinstance(value, float) else writer.add_uint32
        add(f"{architecture}.{key}", value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


LLAMA_HEADER = {"context_length": 32, "embedding_length": 8, "block_count": 1, "feed_forward_length": 16,
                "attention.head_count": 2, "attention.layer_norm_rms_epsilon": 1e-5, "vocab_size": 4}


def test_a_quantisation_type_gguf_cannot_read_is_named(tmp_path):
    path = tmp_path / "int.gguf"
    write_gguf(path, "llama", LLAMA_HEADER, {"token_embd.weight": np.zeros((4, 8), dtype=np.int32)})
    with pytest.raises(CheckpointError, match=r"token_embd.weight is stored as I32, which gguf .* cannot dequantise"):
        read_gguf(path)


def test_a_header_that_does_not_match_the_tensors_caches_nothing(tmp_path):
    path = tmp_path / "mismatch.gguf"
    tensors = {
        "token_embd.weight": np.zeros((4, 8), dtype=np.float32),
        "output_norm.weight": np.ones(8, dtype=np.float32),
        "blk.0.attn_norm.weight": np.ones(8, dtype=np.float32),
        "blk.0.ffn_norm.weight": np.ones(8, dtype=np.float32),
        **{f"blk.0.attn_{part}.weight": np.zeros((8, 8), dtype=np.float32) for part in ("q", "k", "v", "output")},
        "blk.0.ffn_gate.weight": np.zeros((12, 8), dtype=np.float32),  # the header says 16
        "blk.0.ffn_up.weight": np.zeros((12, 8), dtype=np.float32),
        "blk.0.ffn_down.weight": np.zeros((8, 12), dtype=np.float32),
    }
    write_gguf(path, "llama", LLAMA_HEADER, tensors)
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"mismatch.gguf: .*feedforward.gate.weight has shape \(12, 8\) but the config asks for \(16, 8\)"):
        load_gguf(path, cache)
    assert not any(cache.rglob("*.safetensors"))
