"""Held-out scores (`lanterne evaluate`): the part of the text training set aside, scored per file."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from lanterne.cli import main
from lanterne.model.config import GPTConfig
from lanterne.evaluation import evaluate_held_out
from lanterne.recurrent import RecurrentConfig, RecurrentLM
from lanterne.tokenization import CharTokenizer
from lanterne.training.data import prepare_corpus
from lanterne.model.transformer import GPT

FRENCH = "Le soleil se lève à l'est et se couche à l'ouest. " * 30
ENGLISH = "The sun rises in the east and sets in the west. " * 40


def books(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "en.txt").write_text(ENGLISH, encoding="utf-8")
    (folder / "fr.txt").write_text(FRENCH, encoding="utf-8")
    return folder


def by_hand(model, ids: list[int], context: int) -> tuple[float, int]:
    """Summed cross-entropy of predicting ids[1:], one window of `context` after another, each from scratch."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, context):
        window = torch.tensor(ids[start:start + context + 1])
        with torch.no_grad():
            logits = model(window[None, :-1]).logits[0]
        total += float(F.cross_entropy(logits, window[1:], reduction="sum"))
        count += len(window) - 1
    return total, count


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_each_file_is_scored_on_its_own_end_as_by_hand(tmp_path, kind):
    folder = books(tmp_path)
    tokenizer = CharTokenizer(set(FRENCH + ENGLISH))
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig.from_dict(dict(vocab_size=tokenizer.vocab_size, context_length=16, d_model=16, n_heads=2, n_layers=1)))
    else:
        model = RecurrentLM(RecurrentConfig(arch="lstm", vocab_size=tokenizer.vocab_size, context_length=16, d_model=8, hidden_size=8))
    report = evaluate_held_out(model, tokenizer, folder, validation_fraction=0.2)
    assert [score.name for score in report.documents] == ["en.txt", "fr.txt"]
    for score, text in zip(report.documents, [ENGLISH, FRENCH]):
        tail = text[len(text) - round(0.2 * len(text)):]  # characters are tokens here
        total, count = by_hand(model, tokenizer.encode(tail), 16)
        assert score.tokens == count == len(tail) - 1 and score.bytes == len(tail.encode("utf-8"))
        assert score.loss == pytest.approx(total / count, abs=1e-4)
        assert score.perplexity == pytest.approx(math.exp(total / count), rel=1e-3)
        assert score.bits_per_byte == pytest.approx(total / math.log(2) / score.bytes, abs=1e-4)
    assert report.total.tokens == sum(score.tokens for score in report.documents)


def test_the_held_out_text_is_the_one_training_set_aside(tmp_path):
    folder = books(tmp_path)
    tokenizer = CharTokenizer(set(FRENCH + ENGLISH))
    corpus = prepare_corpus(folder, "given", validation_fraction=0.2, known_tokenizer=tokenizer, show_progress=False)
    seen_in_training = tokenizer.decode([int(i) for i in corpus.train])
    for document in corpus.meta["documents"]:
        held = corpus.validation[document["start"]:document["start"] + document["tokens"]]
        assert tokenizer.decode([int(i) for i in held]) not in seen_in_training.split("\n\n")


def test_lanterne_evaluate_prints_json_and_refuses_a_missing_file(tmp_path, capsys):
    folder = books(tmp_path)
    tokenizer = CharTokenizer(set(FRENCH + ENGLISH))
    model = GPT(GPTConfig.from_dict(dict(vocab_size=tokenizer.vocab_size, context_length=16, d_model=16, n_heads=2, n_layers=1)))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save(tmp_path / "model" / "tokenizer.json")
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(folder), "--validation-fraction", "0.2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in report["documents"]] == ["en.txt", "fr.txt"] and report["total"]["tokens"] > 0
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "absent.txt")]) == 1
    assert "not found" in capsys.readouterr().err
