"""One interface, every tokenizer: letters, words and sub-words share encode/decode/tokens/save/load."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.errors import InputFileError, TokenizerError, UnknownTokenizerError, VocabularyFileError
from lanterne.files import atomic_write_text, read_text_file
from lanterne.tokenization import CharTokenizer, WordTokenizer, load, train
from lanterne.tokenization.compare import compare_tokenizers, split_corpus

CORPUS = (
    "Le petit chat dort. The cat sleeps!\n"
    "« Aujourd'hui, l'été est chaud », dit-il; 42 ans, 3,14 €.\n"
    "東京 is Tokyo; مرحبا means hello. 🌞\n"
) * 30


def make(kind: str):
    if kind == "bpe":
        return train("bpe", CORPUS, 320, pattern="o200k")
    if kind == "word":
        return train("word", CORPUS, 200)
    return train(kind, CORPUS)


KINDS = ["char", "word", "bpe"]


@pytest.fixture(scope="module", params=KINDS)
def tokenizer(request):
    return make(request.param)


def test_ids_are_in_the_vocabulary(tokenizer):
    ids = tokenizer.encode(CORPUS[:200])
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)


def test_seen_text_round_trips(tokenizer):
    # Every kind gets this sentence back: its characters and words were all seen, and the
    # word tokenizer's spacing rule restores its spaces.
    text = "Le petit chat dort. The cat sleeps!"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_tokens_agree_with_encode_and_point_into_the_text(tokenizer):
    text = "« L'été », dit-il. 🌞 東京"
    tokens = tokenizer.tokens(text)
    assert [token.id for token in tokens] == tokenizer.encode(text)
    for token in tokens:
        assert 0 <= token.start < token.end <= len(text)


def test_save_load_gives_the_same_ids(tokenizer, tmp_path):
    path = tmp_path / f"{tokenizer.kind}.json"
    tokenizer.save(path)
    again = load(path)
    assert type(again) is type(tokenizer) and again.vocab_size == tokenizer.vocab_size
    text = "Un texte jamais vu: zèbre, 🐙, 東京!"
    assert again.encode(text) == tokenizer.encode(text)


def test_out_of_range_ids_are_refused(tokenizer):
    with pytest.raises(TokenizerError, match="not in this"):
        tokenizer.decode([tokenizer.vocab_size])
    with pytest.raises(TokenizerError):
        tokenizer.decode([-1])


# -- letters ------------------------------------------------------------------------------------


def test_characters_unseen_in_training_become_unk():
    tokenizer = CharTokenizer.train("abc")
    assert tokenizer.vocab_size == 4
    assert tokenizer.encode("abz") == [0, 1, 3]
    assert tokenizer.decode(tokenizer.encode("abz")) == "ab<unk>"
    assert tokenizer.unknown_rate("abzz") == 0.5


@settings(max_examples=100, deadline=None, derandomize=True)
@given(text=st.text(min_size=1))
def test_characters_round_trip_on_their_own_corpus(text):
    tokenizer = CharTokenizer.train(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text)


# -- words --------------------------------------------------------------------------------------


def test_words_split_unicode_and_punctuation():
    tokenizer = WordTokenizer.train("x")
    assert tokenizer.split("L'été, à Tōkyō: naïve东京!") == ["L", "'", "été", ",", "à", "Tōkyō", ":", "naïve东京", "!"]


def test_word_vocabulary_by_frequency_with_limits():
    text = "le le le chat chat chien oiseau"
    assert WordTokenizer.train(text).words == ["<unk>", "le", "chat", "chien", "oiseau"]
    assert WordTokenizer.train(text, max_size=3).words == ["<unk>", "le", "chat"]
    assert WordTokenizer.train(text, min_count=2).words == ["<unk>", "le", "chat"]
    tokenizer = WordTokenizer.train(text, max_size=3)
    assert tokenizer.encode("le chien") == [1, 0]
    assert tokenizer.unknown_rate("le chien dort") == pytest.approx(2 / 3)


def test_word_settings_are_checked():
    with pytest.raises(TokenizerError, match="max_size"):
        WordTokenizer.train("a b", max_size=1)
    with pytest.raises(TokenizerError, match="no words"):
        WordTokenizer.train("   ")


# -- the comparison table -------------------------------------------------------------------------


def test_compare_reports_the_lecture_table():
    text = "\n".join(f"Ligne {i}: le chat numéro {i % 17} dort sur le tapis {i % 5}." for i in range(600))
    reports = {report.name: report for report in compare_tokenizers(text, 300, named=False)}
    char, word, bpe = reports["characters"], reports["words"], reports["bpe-300"]
    assert char.tokens_per_1000_chars == 1000 and char.round_trip
    assert bpe.round_trip and bpe.unknown_rate == 0 and bpe.vocab_size <= 300
    assert word.tokens_per_1000_chars < bpe.tokens_per_1000_chars < char.tokens_per_1000_chars
    assert word.vocab_size > char.vocab_size


def test_split_holds_out_the_last_tenth():
    text = "".join(f"line {i}\n" for i in range(1000))
    training, held_out = split_corpus(text)
    assert training + held_out == text
    assert 0.08 < len(held_out) / len(text) < 0.12


def test_too_short_corpus_is_refused():
    with pytest.raises(InputFileError, match="too short"):
        split_corpus("abc")


# -- loading by name or path ----------------------------------------------------------------------


def test_unknown_name_is_refused():
    with pytest.raises(UnknownTokenizerError, match="unknown tokenizer 'klingon'"):
        load("klingon")
    with pytest.raises(UnknownTokenizerError, match="trained on your text first"):
        load("bpe")


def test_corrupt_tokenizer_files_are_refused(tmp_path):
    make("bpe").save(tmp_path / "good.json")
    data = (tmp_path / "good.json").read_text()
    (tmp_path / "truncated.json").write_text(data[: len(data) // 2])
    with pytest.raises(VocabularyFileError, match="corrupt or truncated"):
        load(tmp_path / "truncated.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(VocabularyFileError, match="not a Lanterne tokenizer"):
        load(tmp_path / "other.json")
    (tmp_path / "bad.tiktoken").write_bytes(b"aGVsbG8= 0\nnot base64 at all\n")
    with pytest.raises(VocabularyFileError, match="line 2"):
        load(tmp_path / "bad.tiktoken", pattern="gpt2")
    (tmp_path / "custom.tiktoken").write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(VocabularyFileError, match="pattern"):
        load(tmp_path / "custom.tiktoken")


# -- reading corpora and writing files -------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"  \n\t", "empty"),
        (b"PK\x03\x04\x00\x00binary", "binary"),
        ("été".encode("latin-1"), "not valid UTF-8"),
    ],
)
def test_bad_corpora_are_named(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=message):
        read_text_file(path)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    path.write_text("old content")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new content")
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"], "no temporary file left behind"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_atomic_write_gives_files_the_mode_open_would(tmp_path):
    umask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
        existing = tmp_path / "shared.json"
        existing.write_text("old")
        existing.chmod(0o664)
        atomic_write_text(existing, "new")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640, "not mkstemp's private 0600"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o664, "an overwritten file keeps its mode"


def test_a_write_that_fails_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "bpe.json"
    path.write_text("old content")

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", disk_full)
    with pytest.raises(InputFileError, match=r"cannot write .*bpe.json: No space left on device \(free some space"):
        atomic_write_text(path, "new content")
    monkeypatch.undo()
    assert path.read_text() == "old content" and [p.name for p in tmp_path.iterdir()] == ["bpe.json"]
