"""The `lanterne` command: right answers, JSON output, one-line errors and non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lanterne.cli import main

LECTURE_IDS = [24912, 2375, 0, 495, 382, 261, 6602, 2860, 4994]


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tokenize_gives_the_lecture_ids(capsys):
    result = run_json(capsys, "tokenize", "--tokenizer", "o200k_base", "hello world! this is a tokenization example")
    assert result["ids"] == LECTURE_IDS
    assert result["tokens"][:3] == ["hello", " world", "!"]
    assert result["spans"][1] == [5, 11]


def test_tokenize_prints_coloured_tokens(capsys):
    assert main(["tokenize", "Bonjour le monde"]) == 0
    out = capsys.readouterr().out
    assert "3 tokens" in out and "o200k_base" in out


def test_special_tokens_need_a_flag(capsys):
    assert main(["tokenize", "a<|endoftext|>b"]) == 1
    assert "allowed_special" in capsys.readouterr().err
    result = run_json(capsys, "tokenize", "--allow-special", "a<|endoftext|>b")
    assert 199999 in result["ids"]


def test_train_then_tokenize_with_the_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("le chat dort sur le tapis\n" * 50, encoding="utf-8")
    out = tmp_path / "bpe.json"
    summary = run_json(capsys, "tokenizers", "train", "--data", str(corpus), "--kind", "bpe", "--vocab-size", "270", "--out", str(out))
    assert summary["vocab_size"] <= 270 and out.is_file()
    result = run_json(capsys, "tokenize", "--tokenizer", str(out), "le chat")
    assert len(result["ids"]) <= 3
    # The output exists now: training again must not replace it silently.
    before = out.read_bytes()
    assert main(["tokenizers", "train", "--data", str(corpus), "--vocab-size", "300", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_train_to_tiktoken_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc abd abe " * 30, encoding="utf-8")
    out = tmp_path / "mine.tiktoken"
    run_json(capsys, "tokenizers", "train", "--data", str(corpus), "--vocab-size", "260", "--pattern", "gpt2", "--out", str(out))
    result = run_json(capsys, "tokenize", "--tokenizer", str(out), "--pattern", "gpt2", "abc abd")
    assert result["tokens"] == ["ab", "c", " abd"]  # merges: "ab", " ab", " abd" (and " abe")
    assert result["ids"][0] == 256


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tokenize", "--tokenizer", "klingon", "x"], "unknown tokenizer"),
        (["tokenizers", "train", "--data", "/nonexistent/corpus.txt", "--vocab-size", "300", "--out", "OUT"], "not found"),
        (["tokenizers", "train", "--data", "CORPUS", "--vocab-size", "100", "--out", "OUT"], "at least 257"),
        (["tokenizers", "train", "--data", "LATIN1", "--vocab-size", "300", "--out", "OUT"], "not valid UTF-8"),
        (["tokenizers", "train", "--data", "CORPUS", "--vocab-size", "300", "--out", "/nonexistent/dir/out.json"], "does not exist"),
        (["tokenizers", "compare", "--data", "EMPTY"], "empty"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(tmp_path, capsys, argv, message):
    (tmp_path / "corpus.txt").write_text("le chat dort\n" * 20, encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("l'été".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    names = {"CORPUS": "corpus.txt", "LATIN1": "latin1.txt", "EMPTY": "empty.txt", "OUT": "out.json"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lanterne: error: ") and message in err
    assert not (tmp_path / "out.json").exists(), "nothing written after an error"


def test_console_script_exit_status():
    """The installed `lanterne` program itself: a user error is one line on stderr and status 1."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "lanterne.cli", "tokenize", "--tokenizer", "klingon", "x"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr


def test_an_argument_that_is_not_utf8_is_one_line():
    """`lanterne tokenize $'caf\\xe9'` from a Latin-1 terminal: the bytes reach Python as surrogate escapes."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"lanterne.cli", b"tokenize", b"caf\xe9"],
        capture_output=True, env=env, timeout=120,
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "not valid UTF-8 (byte 0xe9 at character 3)" in err and "Traceback" not in err


def test_generate_reports_its_timings(capsys):
    result = run_json(capsys, "generate", "Le soleil", "--model", "lanterne-mini", "--max-new-tokens", "5", "--temperature", "0",
                      "--no-compile", "--weights", "int8")
    timings = result["timings"]
    assert set(timings) >= {"load_s", "prefill_tokens", "prefill_s", "decode_tokens", "decode_s"}
    assert timings["prefill_tokens"] > 0 and 1 <= timings["decode_tokens"] <= 5 and timings["load_s"] > 0
    assert result["weights"] == "int8"
    assert main(["generate", "Le soleil", "--model", "lanterne-mini", "--max-new-tokens", "3", "--no-compile", "--verbose", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert "load " in err and "tok/s" in err and "decode " in err


def test_weights_are_chosen_on_every_model_command(capsys):
    plain = run_json(capsys, "generate", "Le soleil", "--model", "lanterne-mini", "--max-new-tokens", "6", "--temperature", "0", "--plain")
    fast = run_json(capsys, "generate", "Le soleil", "--model", "lanterne-mini", "--max-new-tokens", "6", "--temperature", "0",
                    "--weights", "fp32", "--no-compile")
    assert fast["text"] == plain["text"] and plain["weights"] == "float32"
    assert run_json(capsys, "generate", "Le soleil", "--model", "lanterne-mini", "--max-new-tokens", "3", "--weights", "int4",
                    "--no-compile", "--seed", "0")["weights"] == "int4"
    # Commands that look inside the model read full-precision weights, and say so.
    assert main(["predict", "Le soleil", "--model", "lanterne-mini", "--weights", "int8"]) == 1
    err = capsys.readouterr().err
    assert "full-precision" in err and "auto, fp32, bf16" in err and err.count("\n") == 1


@pytest.mark.parametrize("content", [b"", b"\x8a\x01 not a model at all " * 4])
def test_a_gguf_name_on_another_kind_of_file_is_named(content, tmp_path, capsys):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    assert main(["generate", "hi", "--model", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not a GGUF file (it does not start with GGUF's magic bytes)" in err and err.count("\n") == 1
    assert path.read_bytes() == content
