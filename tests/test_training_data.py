"""Training data: corpora become cached token ids that decode back to the text, and windows for next-word prediction."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lanterne.errors import InputFileError, TrainingDataError, UnknownTokenizerError
from lanterne.tokenization import load, train
from lanterne.training import corpus_files, data
from lanterne.training.data import TokenizedCorpus, check_enough_tokens, prepare_corpus, sample_windows

TEXT = (
    "Le petit chat dort. The cat sleeps!\n"
    "« Aujourd'hui, l'été est chaud », dit-il; 42 ans, 3,14 €.\n"
    "東京 is Tokyo; مرحبا means hello. 🌞\n"
) * 20


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def prepare(source, tokenizer="char", **options) -> TokenizedCorpus:
    options.setdefault("show_progress", False)
    options.setdefault("workers", 1)
    return prepare_corpus(source, tokenizer, **options)


def all_ids(corpus: TokenizedCorpus) -> list[int]:
    return np.concatenate([corpus.train, corpus.validation]).tolist()


def text_of(ids, tokenizer) -> str:
    return tokenizer.decode([int(i) for i in ids])


# -- what comes out -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["char", "bpe:300"])
def test_ids_decode_back_to_the_text_and_the_split_is_exact(tmp_path, spec):
    source = write(tmp_path / "corpus.txt", TEXT + "plain text that spells <|endoftext|> stays text\n")
    corpus = prepare(source, spec, validation_fraction=0.2)
    assert text_of(all_ids(corpus), corpus.tokenizer) == source.read_text(encoding="utf-8")
    meta = corpus.meta
    assert meta["total_tokens"] == len(corpus.train) + len(corpus.validation)
    assert meta["validation_tokens"] == len(corpus.validation) == round(0.2 * meta["total_tokens"])
    assert meta["train_tokens"] == len(corpus.train)
    assert isinstance(corpus.train, np.memmap) and isinstance(corpus.validation, np.memmap)
    assert corpus.train.dtype == np.uint16 and meta["dtype"] == "uint16"
    assert meta["validation_bytes"] == len(text_of(corpus.validation, corpus.tokenizer).encode("utf-8"))
    assert corpus.validation_bytes_per_token == meta["validation_bytes"] / meta["validation_tokens"]
    assert (corpus.folder / "tokens.bin").stat().st_size == meta["total_tokens"] * 2
    saved = load(corpus.folder / "tokenizer.json")
    assert saved.encode("Le petit chat") == corpus.tokenizer.encode("Le petit chat")
    assert json.loads((corpus.folder / "meta.json").read_text())["key"] == corpus.folder.name == meta["key"]


def test_cache_lives_under_lanterne_cache_by_default(tmp_path):
    corpus = prepare(write(tmp_path / "corpus.txt", TEXT))
    assert corpus.folder.parent == Path(os.environ["LANTERNE_CACHE"]) / "datasets"


def test_a_saved_tokenizer_file_gives_its_own_ids(tmp_path):
    tokenizer = train("bpe", TEXT, 290)
    tokenizer.save(tmp_path / "tokenizer.json")
    corpus = prepare(write(tmp_path / "corpus.txt", TEXT), str(tmp_path / "tokenizer.json"))
    assert all_ids(corpus) == tokenizer.encode(TEXT)


def test_o200k_needs_uint32_ids(tmp_path):
    corpus = prepare(write(tmp_path / "corpus.txt", TEXT), "o200k_base")
    assert corpus.tokenizer.vocab_size == 200019 and corpus.train.dtype == np.uint32 and corpus.meta["dtype"] == "uint32"
    assert all_ids(corpus) == load("o200k_base").encode_ordinary(TEXT)
    assert (corpus.folder / "tokens.bin").stat().st_size == corpus.meta["total_tokens"] * 4


@pytest.mark.parametrize("spec", ["nonsense", "word", "bpe", "bpe:many", str(Path("no") / "such" / "file.json")])
def test_an_unknown_tokenizer_lists_the_forms_accepted(tmp_path, spec):
    with pytest.raises(UnknownTokenizerError, match="'char', 'bpe:N'.*o200k_base.*tokenizer file"):
        prepare(write(tmp_path / "corpus.txt", TEXT), spec)


# -- folders and JSONL --------------------------------------------------------------------------


def make_folder(root: Path) -> list[str]:
    """A corpus folder; returns the texts of the documents in the order they must be read."""
    write(root / "b.txt", "Second document, with b.\n")
    write(root / "a" / "d.txt", "Première: été.\n")
    write(root / "a" / "c.md", "# First\nthe c document\n")
    write(root / "ignored.csv", "not,text,for,us\n")
    write(root / ".hidden" / "x.txt", "hidden files stay out\n")
    write(root / "empty.txt", " \n")
    return ["# First\nthe c document\n", "Première: été.\n", "Second document, with b.\n"]


def test_each_file_of_a_folder_gives_its_end_to_validation(tmp_path):
    documents = make_folder(tmp_path / "books")
    corpus = prepare(tmp_path / "books", validation_fraction=0.3)
    assert corpus.meta["source_kind"] == "folder" and corpus.meta["document_separator"] == "\n\n"
    cuts = [len(document) - round(0.3 * len(document)) for document in documents]  # characters are tokens here
    assert text_of(corpus.train, corpus.tokenizer) == "\n\n".join(d[:cut] for d, cut in zip(documents, cuts))
    assert text_of(corpus.validation, corpus.tokenizer) == "\n\n".join(d[cut:] for d, cut in zip(documents, cuts))
    for document, cut, where in zip(documents, cuts, corpus.meta["documents"]):
        assert text_of(corpus.validation[where["start"]:where["start"] + where["tokens"]], corpus.tokenizer) == document[cut:]
        assert where["bytes"] == len(document[cut:].encode("utf-8"))
    assert corpus.meta["validation_bytes"] == len(text_of(corpus.validation, corpus.tokenizer).encode("utf-8"))
    assert corpus.meta["total_tokens"] == len(corpus.train) + len(corpus.validation)


def test_a_bpe_tokenizer_separates_documents_with_endoftext(tmp_path):
    documents = make_folder(tmp_path / "books")
    corpus = prepare(tmp_path / "books", "bpe:300", validation_fraction=0.3)
    endoftext = corpus.tokenizer.special_tokens["<|endoftext|>"]
    heads = text_of(corpus.train, corpus.tokenizer).split("<|endoftext|>")
    tails = text_of(corpus.validation, corpus.tokenizer).split("<|endoftext|>")
    assert [head + tail for head, tail in zip(heads, tails, strict=True)] == documents
    assert all(tail for tail in tails) and corpus.meta["document_separator"] == "<|endoftext|>"
    # The separator stands for no text: validation bytes count only the documents' text.
    validation = [i for i in corpus.validation.tolist() if i != endoftext]
    assert corpus.meta["validation_bytes"] == len(corpus.tokenizer.decode_bytes(validation))
    assert [d["bytes"] for d in corpus.meta["documents"]] == [len(tail.encode("utf-8")) for tail in tails]


def test_jsonl_documents_come_from_the_text_field(tmp_path):
    records = [{"body": "Un premier document.", "id": 1}, {"body": "Le second, plus long: été 🌞."}]
    source = write(tmp_path / "docs.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n")
    corpus = prepare(source, text_field="body", validation_fraction=0.3)
    assert text_of(all_ids(corpus), corpus.tokenizer) == "\n\n".join(r["body"] for r in records)
    assert corpus.meta["source_kind"] == "jsonl" and corpus.meta["text_field"] == "body"


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "fine"}', "{not json"], r"docs.jsonl line 2 is not JSON.*\{\"text\": "),
        (['{"text": "fine"}', "", '{"title": "no text"}'], r"docs.jsonl line 3 has no text field \"text\""),
        (['["a", "list"]'], r"line 1 has no text field"),
    ],
)
def test_a_bad_jsonl_line_is_named(tmp_path, lines, message):
    source = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(TrainingDataError, match=message):
        prepare(source)
    assert not list((Path(os.environ["LANTERNE_CACHE"]) / "datasets").glob("*"))


# -- the cache ----------------------------------------------------------------------------------


def test_a_second_call_reuses_the_cache_without_tokenizing(tmp_path, monkeypatch):
    source = write(tmp_path / "corpus.txt", TEXT)
    first = prepare(source, "bpe:300")
    written = (first.folder / "tokens.bin").stat().st_mtime_ns

    def no_encoding(*args):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(data, "_encode_chunk", no_encoding)
    monkeypatch.setattr(data, "train_tokenizer", no_encoding)
    again = prepare(source, "bpe:300")
    assert again.folder == first.folder and again.meta == first.meta
    assert all_ids(again) == all_ids(first)
    assert (again.folder / "tokens.bin").stat().st_mtime_ns == written


def test_any_change_of_input_gives_another_key(tmp_path):
    source = write(tmp_path / "corpus.txt", TEXT)
    keys = {prepare(source).folder.name}
    keys.add(prepare(source, "bpe:300").folder.name)
    keys.add(prepare(source, validation_fraction=0.2).folder.name)
    write(source, TEXT + "one more line\n")
    keys.add(prepare(source).folder.name)
    jsonl = write(tmp_path / "docs.jsonl", json.dumps({"text": TEXT, "body": TEXT}) + "\n")
    keys.add(prepare(jsonl).folder.name)
    keys.add(prepare(jsonl, text_field="body").folder.name)
    make_folder(tmp_path / "books")
    keys.add(prepare(tmp_path / "books").folder.name)
    os.rename(tmp_path / "books" / "b.txt", tmp_path / "books" / "z.txt")  # same bytes, another name
    keys.add(prepare(tmp_path / "books").folder.name)
    tokenizer_file = tmp_path / "tokenizer.json"
    train("char", TEXT).save(tokenizer_file)
    keys.add(prepare(source, str(tokenizer_file)).folder.name)
    train("char", TEXT + "€$").save(tokenizer_file)  # same path, another vocabulary
    keys.add(prepare(source, str(tokenizer_file)).folder.name)
    assert len(keys) == 10


@pytest.mark.parametrize("failing", ["_encode_chunk", "_split"])
def test_an_interrupted_preparation_leaves_no_cache(tmp_path, monkeypatch, failing):
    monkeypatch.setattr(corpus_files, "CHUNK_BYTES", 64)  # several chunks: fail in the middle of tokens.bin
    source = write(tmp_path / "corpus.txt", TEXT)
    original = getattr(data, failing)
    calls = []

    def fail_on_third_call(*args):
        calls.append(1)
        if len(calls) == 3 or failing == "_split":
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(data, failing, fail_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(data, failing, original)
    corpus = prepare(source, cache_dir=tmp_path / "cache")
    assert text_of(all_ids(corpus), corpus.tokenizer) == TEXT
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [corpus.folder.name]


def test_a_damaged_cache_is_reported(tmp_path):
    source = write(tmp_path / "corpus.txt", TEXT)
    corpus = prepare(source)
    with open(corpus.folder / "tokens.bin", "r+b") as stream:
        stream.truncate(10)
    with pytest.raises(TrainingDataError, match="damaged; delete that folder"):
        prepare(source)


# -- streaming and parallel encoding ------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 3, 5, 8])
def test_characters_split_across_chunks_survive(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus_files, "CHUNK_BYTES", chunk_bytes)
    # 1-, 2-, 3- and 4-byte characters at every offset, with and without line ends nearby.
    text = "".join("a" * shift + "é東🌞" + ("\n" if shift % 2 else "") for shift in range(8)) * 3
    corpus = prepare(write(tmp_path / "corpus.txt", text), validation_fraction=0.25)
    assert all_ids(corpus) == corpus.tokenizer.encode(text)
    assert text_of(all_ids(corpus), corpus.tokenizer) == text
    assert corpus.meta["validation_bytes"] == len(text_of(corpus.validation, corpus.tokenizer).encode("utf-8"))


@pytest.mark.parametrize("spec", ["char", "bpe:300"])
def test_worker_processes_give_the_same_ids_as_one(tmp_path, monkeypatch, spec):
    monkeypatch.setattr(corpus_files, "CHUNK_BYTES", 512)
    monkeypatch.setattr(data, "PARALLEL_MIN_BYTES", 0)
    pools = []

    class CountedPool(data.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(data, "ProcessPoolExecutor", CountedPool)
    source = write(tmp_path / "corpus.txt", TEXT * 3)
    alone = prepare(source, spec, cache_dir=tmp_path / "one", workers=1)
    assert pools == []
    together = prepare(source, spec, cache_dir=tmp_path / "two", workers=2)
    assert pools == [1]
    assert all_ids(together) == all_ids(alone) and together.meta == alone.meta
    assert text_of(all_ids(together), together.tokenizer) == TEXT * 3


def test_a_bpe_tokenizer_pickles_for_worker_processes():
    tokenizer = train("bpe", TEXT, 290)
    tokenizer.encode_ordinary(TEXT)  # builds the lazy fast backend and the piece cache
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode_ordinary(TEXT) == tokenizer.encode_ordinary(TEXT)


def test_bpe_learns_from_the_start_of_a_large_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_files, "CHUNK_BYTES", 200)
    monkeypatch.setattr(data, "BPE_TRAINING_BYTES", 1000)
    seen = []

    def spy(kind, text, vocab_size):
        seen.append(text)
        return train(kind, text, vocab_size)

    monkeypatch.setattr(data, "train_tokenizer", spy)
    corpus = prepare(write(tmp_path / "corpus.txt", TEXT), "bpe:300")
    assert 1000 <= len(seen[0].encode("utf-8")) < 1400 < len(TEXT.encode("utf-8"))
    assert text_of(all_ids(corpus), corpus.tokenizer) == TEXT


def test_a_progress_bar_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    source = write(tmp_path / "corpus.txt", TEXT)
    prepare(source, show_progress=True, cache_dir=tmp_path / "quiet")
    assert "tokenizing" not in capsys.readouterr().err  # pytest's stderr is not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    corpus = prepare(source, show_progress=True)
    assert "tokenizing corpus.txt" in capsys.readouterr().err
    assert text_of(all_ids(corpus), corpus.tokenizer) == TEXT


# -- bad inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "corpus file not found"),
        (b" \n\n", "corpus file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        ("Un café crème.".encode("latin-1"), r"not valid UTF-8: .*corpus.txt \(byte 6\); convert it first"),
        (b"abcdefghij\xff", r"not valid UTF-8: .*\(byte 10\)"),
        ("x東".encode("utf-8")[:-1], r"not valid UTF-8: .*\(byte 1\)"),  # a character cut by the end of the file
    ],
)
def test_bad_files_are_named_with_the_fix(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(corpus_files, "CHUNK_BYTES", 4)  # the bad byte's offset counts across chunks
    source = tmp_path / "corpus.txt"
    if content is not None:
        write(source, content)
    with pytest.raises(TrainingDataError, match=message) as raised:
        prepare(source)
    assert isinstance(raised.value, InputFileError) and "\n" not in str(raised.value)


def test_a_folder_without_text_files_is_refused(tmp_path):
    write(tmp_path / "books" / "data.csv", "a,b\n")
    with pytest.raises(TrainingDataError, match="no .txt or .md file"):
        prepare(tmp_path / "books")
    write(tmp_path / "books" / "empty.txt", "")
    with pytest.raises(TrainingDataError, match="holds only empty files"):
        prepare(tmp_path / "books")


@pytest.mark.parametrize("fraction", [0, -0.1, 0.6, 1.0])
def test_validation_fraction_must_be_in_range(tmp_path, fraction):
    with pytest.raises(TrainingDataError, match=r"validation_fraction .* outside \(0, 0.5\]"):
        prepare(write(tmp_path / "corpus.txt", TEXT), validation_fraction=fraction)


def test_a_corpus_too_small_to_split_is_refused(tmp_path):
    with pytest.raises(TrainingDataError, match="too small to split: 5 tokens.*give more text or raise validation_fraction"):
        prepare(write(tmp_path / "corpus.txt", "hello"))
    with pytest.raises(TrainingDataError, match="workers must be at least 1"):
        prepare(write(tmp_path / "corpus.txt", TEXT), workers=0)


# -- windows ------------------------------------------------------------------------------------


def counting_tokens(tmp_path: Path, count: int) -> np.ndarray:
    """A memory-mapped array 0, 1, ..., count - 1, like a corpus split."""
    np.arange(count, dtype=np.uint16).tofile(tmp_path / "tokens.bin")
    return np.memmap(tmp_path / "tokens.bin", dtype=np.uint16, mode="r")


def test_windows_are_shifted_by_one_and_stay_in_bounds(tmp_path):
    tokens = counting_tokens(tmp_path, 12)
    x, y = sample_windows(tokens, 2000, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2000, 4) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # the tokens count up, so every window is consecutive
    starts = set(x[:, 0].tolist())
    assert starts == set(range(12 - 4))  # every start is drawn, the last window ends on the last token
    assert int(y.max()) == 11 and int(x.min()) == 0


def test_windows_depend_on_the_seed_only(tmp_path):
    tokens = counting_tokens(tmp_path, 1000)
    first = sample_windows(tokens, 8, 16, torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global seed plays no part
    again = sample_windows(tokens, 8, 16, torch.Generator().manual_seed(1))
    other = sample_windows(tokens, 8, 16, torch.Generator().manual_seed(2))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_too_few_tokens_for_a_window(tmp_path):
    with pytest.raises(TrainingDataError, match="5 tokens hold no window of 9; give more text or lower context_length"):
        sample_windows(counting_tokens(tmp_path, 5), 2, 8, torch.Generator().manual_seed(0))


def test_check_enough_tokens_names_the_split_that_is_short():
    corpus = TokenizedCorpus(Path("."), train("char", "ab"), np.zeros(20, np.uint16), np.zeros(6, np.uint16), {})
    check_enough_tokens(corpus, context_length=5, batch_size=64)
    with pytest.raises(TrainingDataError, match="validation split has no full window: 6 tokens, need at least 9; raise validation_fraction"):
        check_enough_tokens(corpus, context_length=8, batch_size=4)
    with pytest.raises(TrainingDataError, match="corpus smaller than one window/batch: 20 training tokens, need at least 33; give more text or lower context_length"):
        check_enough_tokens(corpus, context_length=32, batch_size=4)


def test_a_full_disk_while_caching_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def disk_full(path, *args):
        Path(path).write_bytes(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data, "_write_tokens", disk_full)
    with pytest.raises(TrainingDataError, match=r"cannot write the token cache in .* \(No space left on device\); free some space"):
        prepare(write(tmp_path / "corpus.txt", TEXT), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == [], "the half-built cache is removed"
