"""Byte-level BPE: exact against tiktoken, lossless, and the incremental trainer against its plain definition."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanterne.errors import SpecialTokenError, TokenizerError
from lanterne.tokenization import ByteLevelBPE, load, train_bpe
from lanterne.tokenization.bpe_merges import byte_pair_merge, explain_merges
from lanterne.tokenization.bpe_training import count_pretokens
from lanterne.tokenization.patterns import O200K_PATTERN

from conftest import CORPORA, shared_text

LECTURE_SENTENCE = "hello world! this is a tokenization example"
LECTURE_IDS = [24912, 2375, 0, 495, 382, 261, 6602, 2860, 4994]

# Text that stresses pre-tokenization: scripts, marks, emoji, line endings, runs of blanks, digits.
TRICKY_PIECES = [
    "hello", " world", "Été", "l'été", "naïve", "ÉCOLE", "don't", "WE'LL", "它们", "東京タワー", "مرحبا بالعالم",
    "e\u0301", "a\u0308\u0301", "😀", "👩‍👩‍👧", "🇫🇷", "\r\n", "\n\n", "\r", "\t\t", "   ", " ", "12345", "3.14159",
    "1,000,000", "x²", "...", "?!", "—", "«", "»", "\u00a0", "\u200b", "'s", "'S", "//", "\\", "<|endoftext|>",
]
tricky_text = st.lists(
    st.one_of(st.sampled_from(TRICKY_PIECES), st.text(max_size=8)), max_size=40
).map("".join)


@pytest.fixture(scope="module")
def o200k_python():
    return load("o200k_base", backend="python")


@pytest.fixture(scope="module")
def cl100k_python():
    return load("cl100k_base", backend="python")


@pytest.fixture(scope="module")
def small_bpe():
    text = "\n".join(["le petit chat dort sur le tapis", "the cat sat on the mat", "l'été à Paris 🌞 東京 12345"] * 20)
    return train_bpe(text, 400, "o200k")


def test_lecture_sentence_gives_the_slide_ids(o200k_python):
    assert o200k_python.encode(LECTURE_SENTENCE) == LECTURE_IDS
    assert o200k_python.decode(LECTURE_IDS) == LECTURE_SENTENCE


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_ids_equal_tiktoken_on_the_course_corpora(name, corpus, tiktoken_oracle):
    text = shared_text(corpus)
    ours = load(name, backend="python")
    assert ours.encode_ordinary(text) == tiktoken_oracle(name).encode_ordinary(text)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text)
def test_ids_equal_tiktoken_on_generated_text(name, text, tiktoken_oracle, o200k_python, cl100k_python):
    ours = o200k_python if name == "o200k_base" else cl100k_python
    expected = tiktoken_oracle(name).encode(text, disallowed_special=())
    assert ours.encode(text, disallowed_special=()) == expected
    assert ours.decode(expected) == text


@pytest.fixture(scope="module")
def bpe_per_pattern():
    """A small BPE for each standard pattern, trained on text where merges cross every kind of boundary."""
    text = "".join(TRICKY_PIECES) * 5 + "le petit chat dort sur le tapis. THE CAT'S MAT, 2024-11-26\r\n  \t x" * 20
    return {name: train_bpe(text, 600, name) for name in ["gpt2", "cl100k", "o200k"]}


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text)
def test_python_backend_equals_tiktoken_for_every_pattern(pattern, text, bpe_per_pattern):
    """tiktoken cuts with Rust's fancy-regex, we cut with Python's `regex`: same ranks must give same ids."""
    pytest.importorskip("tiktoken")
    trained = bpe_per_pattern[pattern]
    python = ByteLevelBPE(trained.ranks, trained.pattern, trained.special_tokens, backend="python")
    fast = ByteLevelBPE(trained.ranks, trained.pattern, trained.special_tokens, backend="tiktoken")
    assert python.encode(text, disallowed_special=()) == fast.encode(text, disallowed_special=())


def test_backends_give_identical_ids(small_bpe):
    pytest.importorskip("tiktoken")
    python = ByteLevelBPE(small_bpe.ranks, small_bpe.pattern, small_bpe.special_tokens, backend="python")
    fast = ByteLevelBPE(small_bpe.ranks, small_bpe.pattern, small_bpe.special_tokens, backend="tiktoken")
    assert fast.backend == "tiktoken" and python.backend == "python"
    for text in TRICKY_PIECES + ["le chat 🌞<|endoftext|>東京", "Paris\r\n\r\n  12345678  "]:
        assert python.encode(text, disallowed_special=()) == fast.encode(text, disallowed_special=())
        assert python.encode(text, allowed_special="all") == fast.encode(text, allowed_special="all")


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
def test_decode_encode_round_trips_any_string(text, small_bpe):
    assert small_bpe.decode(small_bpe.encode(text, disallowed_special=())) == text


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text)
def test_token_spans_cover_the_text(text, small_bpe):
    tokens = small_bpe.tokens(text, disallowed_special=())
    assert [token.id for token in tokens] == small_bpe.encode(text, disallowed_special=())
    assert all(0 <= token.start < token.end <= len(text) for token in tokens)
    assert all(a.start <= b.start for a, b in zip(tokens, tokens[1:]))
    covered = set()
    for token in tokens:
        covered.update(range(token.start, token.end))
    assert covered == set(range(len(text)))


def test_exported_tiktoken_file_gives_identical_ids_in_tiktoken(tmp_path, small_bpe):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    path = tmp_path / "small.tiktoken"
    small_bpe.save_tiktoken(path)
    encoding = tiktoken.Encoding("small", pat_str=O200K_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(path)), special_tokens={})
    for text in TRICKY_PIECES + ["le petit chat dort sur le tapis"]:
        assert encoding.encode_ordinary(text) == small_bpe.encode_ordinary(text)
    assert load(path, pattern="o200k", backend="python").ranks == small_bpe.ranks


def test_save_and_load_keep_every_id(tmp_path, small_bpe):
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    again = load(path)
    assert again.ranks == small_bpe.ranks and again.special_tokens == small_bpe.special_tokens
    assert again.encode("l'été à Paris") == small_bpe.encode("l'été à Paris")


# -- special tokens, with tiktoken's rules -------------------------------------------------------


def test_special_token_text_is_refused_by_default(o200k_python, tiktoken_oracle):
    text = "fin<|endoftext|>début"
    with pytest.raises(SpecialTokenError, match="allowed_special"):
        o200k_python.encode(text)
    oracle = tiktoken_oracle("o200k_base")
    assert o200k_python.encode(text, allowed_special={"<|endoftext|>"}) == oracle.encode(text, allowed_special={"<|endoftext|>"})
    assert o200k_python.encode(text, disallowed_special=()) == oracle.encode(text, disallowed_special=())
    assert 199999 in o200k_python.encode(text, allowed_special="all")
    assert 199999 not in o200k_python.encode(text, disallowed_special=())


def test_unknown_special_token_is_an_error(o200k_python):
    with pytest.raises(SpecialTokenError, match="not a special token"):
        o200k_python.encode("x", allowed_special={"<|nope|>"})


# -- decoding ids that split a character ----------------------------------------------------------


def test_decoding_half_a_character_replaces_or_raises(o200k_python):
    ids = o200k_python.encode("🌞")
    assert len(ids) > 1, "the emoji should take several byte-level tokens"
    assert o200k_python.decode(ids[:1]) == "\ufffd"
    with pytest.raises(TokenizerError, match="split a UTF-8 character"):
        o200k_python.decode(ids[:1], errors="strict")


def test_unknown_id_is_an_error(o200k_python):
    with pytest.raises(TokenizerError, match="not in this bpe vocabulary"):
        o200k_python.decode([10**9])


# -- the merge algorithm and the trainer, against their plain definitions -------------------------


def test_byte_pair_merge_matches_its_explanation(o200k_python):
    for word in ["tokenization", " anticonstitutionnellement", "東京"]:
        steps = explain_merges(word.encode(), o200k_python.ranks)
        assert steps[-1] == byte_pair_merge(word.encode(), o200k_python.ranks)
    assert o200k_python.explain("tokenization")[-1] == ["token", "ization"]


def naive_train(text: str, vocab_size: int, pattern: str) -> dict[bytes, int]:
    """minbpe's plain definition: recount every pair before each merge; most frequent, then smallest pair."""
    counts = count_pretokens(text, pattern)
    words = {tuple(piece.encode()): count for piece, count in counts.items()}
    vocab = [bytes([b]) for b in range(256)]
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merged = vocab[best[0]] + vocab[best[1]]
        new_id = vocab.index(merged) if merged in vocab else len(vocab)
        if new_id == len(vocab):
            vocab.append(merged)
        new_words = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + count
        words = new_words
    return {token: index for index, token in enumerate(vocab)}


@pytest.mark.parametrize("pattern", ["gpt2", "o200k"])
def test_incremental_trainer_equals_the_naive_definition(pattern):
    text = (
        "Le petit prince demanda: « S'il vous plaît... dessine-moi un mouton! » "
        "aaaa aaa aa abab ababab the theme thermal 1234 12 123 東京東京 🌞🌞 \n\n\t  "
    ) * 3 + "hello world! this is a tokenization example"
    from lanterne.tokenization.patterns import resolve_pattern

    trained = train_bpe(text, 330, pattern, special_tokens=())
    assert trained.ranks == naive_train(text, 330, resolve_pattern(pattern))


def test_training_is_deterministic_and_respects_the_size():
    text = "abc abd abe bcd bce " * 50 + "zz" * 3
    first, second = train_bpe(text, 270, "gpt2"), train_bpe(text, 270, "gpt2")
    assert first.ranks == second.ranks
    assert first.vocab_size <= 270
    assert first.special_tokens == {"<|endoftext|>": first.vocab_size - 1}


def test_training_stops_early_when_nothing_repeats():
    tokenizer = train_bpe("ab", 1000, "gpt2", special_tokens=())
    assert tokenizer.vocab_size == 256


def test_vocab_size_below_256_is_refused():
    with pytest.raises(TokenizerError, match="at least 257"):
        train_bpe("some text", 200, "gpt2")
    with pytest.raises(TokenizerError, match="at least 256"):
        train_bpe("some text", 255, "gpt2", special_tokens=())


def test_special_tokens_in_the_corpus_are_not_learned():
    text = "<|endoftext|>" * 100 + "ab"
    tokenizer = train_bpe(text, 300, "gpt2")
    assert b"endoftext" not in tokenizer.ranks


# -- the edges: long words, surrogates, raw bytes -------------------------------------------------


@pytest.mark.parametrize("word", ["x" * 200_000, "".join(__import__("random").Random(3).choices("abcdefghij", k=50_000))])
def test_a_long_word_gives_tiktoken_ids(word, o200k_python, tiktoken_oracle):
    assert o200k_python.encode(word) == tiktoken_oracle("o200k_base").encode(word)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=st.binary(min_size=1, max_size=300))
def test_heap_merge_equals_the_step_by_step_merge(word, o200k_python):
    """Past LONG_PIECE_BYTES the merges come from a heap; they must be the explained ones."""
    from lanterne.tokenization import bpe_merges

    ids, starts = bpe_merges._byte_pair_encode_heap(word, o200k_python.ranks, o200k_python._byte_ranks)
    parts = [word[start:end] for start, end in zip(starts, starts[1:])]
    assert parts == explain_merges(word, o200k_python.ranks)[-1]
    assert ids == [o200k_python.ranks[part] for part in parts]


@pytest.mark.parametrize("backend", ["python", "tiktoken"])
def test_surrogates_are_read_as_tiktoken_reads_them(backend, tiktoken_oracle):
    cl100k = load("cl100k_base", backend=backend)
    assert cl100k.encode("\ud83d\udc4d") == [9468, 239, 235] == cl100k.encode("👍")  # a pair: the character it encodes
    assert cl100k.encode("\ud83d") == cl100k.encode("\ufffd") == [5809]  # alone: U+FFFD
    for text in ["a\udce9b", "x\udc4d\ud83d", "\ud83d\udc4d<|endoftext|>"]:
        assert cl100k.encode(text, disallowed_special=()) == tiktoken_oracle("cl100k_base").encode(text, disallowed_special=())
    tokens = cl100k.tokens("ok \ud83d\udc4d!")
    assert [(token.start, token.end) for token in tokens][-1] == (5, 6)  # spans index the text as given
    assert [token.id for token in tokens] == cl100k.encode("ok \ud83d\udc4d!")


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=40) | st.text(max_size=20).map(lambda text: text.encode("utf-8", "replace")[:-1]))
def test_raw_bytes_encode_as_in_tiktoken(data, cl100k_python, tiktoken_oracle):
    assert cl100k_python.encode_bytes(data) == tiktoken_oracle("cl100k_base")._encode_bytes(data)
    assert cl100k_python.decode_bytes(cl100k_python.encode_bytes(data)) == data


# -- tiktoken's API ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text)
def test_offsets_equal_tiktoken(text, cl100k_python, tiktoken_oracle):
    ids = cl100k_python.encode(text, disallowed_special=())
    assert cl100k_python.decode_with_offsets(ids) == tiktoken_oracle("cl100k_base").decode_with_offsets(ids)


@pytest.mark.parametrize("backend", ["python", "tiktoken"])
def test_batches_equal_one_by_one(backend):
    o200k = load("o200k_base", backend=backend)
    texts = ["hello world", "l'été <|endoftext|>", "", "👍" * 3]
    encoded = o200k.encode_batch(texts, allowed_special="all")
    assert encoded == [o200k.encode(text, allowed_special="all") for text in texts]
    assert o200k.encode_ordinary_batch(texts) == [o200k.encode_ordinary(text) for text in texts]
    assert o200k.decode_batch(encoded) == texts
    assert o200k.decode_bytes_batch(encoded) == [text.encode() for text in texts]
    with pytest.raises(SpecialTokenError):
        o200k.encode_batch(texts)


def test_single_tokens_and_the_vocabulary_as_tiktoken_names_it(cl100k_python, tiktoken_oracle):
    oracle = tiktoken_oracle("cl100k_base")
    assert (cl100k_python.n_vocab, cl100k_python.max_token_value, cl100k_python.eot_token) == (
        oracle.n_vocab, oracle.max_token_value, oracle.eot_token
    )
    assert cl100k_python.special_tokens_set == oracle.special_tokens_set
    for token_id in [0, 15339, 100256 - 1, 100257, 100276]:
        assert cl100k_python.encode_single_token(cl100k_python.decode_single_token_bytes(token_id)) == token_id
    assert cl100k_python.encode_single_token("<|fim_prefix|>") == 100258
    with pytest.raises(TokenizerError, match="not a single token"):
        cl100k_python.encode_single_token("hello world")
    with pytest.raises(TokenizerError, match="unused"):  # cl100k has no token 100256
        cl100k_python.decode_single_token_bytes(100256)


def test_encoding_for_model():
    from lanterne.tokenization.tiktoken_files import encoding_for_model, vocabulary_for_model

    assert vocabulary_for_model("gpt-4o") == "o200k_base" and vocabulary_for_model("gpt-4o-2024-05-13") == "o200k_base"
    assert vocabulary_for_model("gpt-3.5-turbo-0301") == "cl100k_base" and vocabulary_for_model("text-davinci-003") == "p50k_base"
    assert encoding_for_model("gpt-oss-120b").name == "o200k_harmony"
    assert encoding_for_model("gpt-oss-120b").encode("<|start|>", allowed_special="all") == [200006]
    with pytest.raises(TokenizerError, match="no known vocabulary"):
        vocabulary_for_model("llama-3")


def test_a_tokenizer_pickles(o200k_python):
    import pickle

    copy = pickle.loads(pickle.dumps(o200k_python))
    assert copy.encode(LECTURE_SENTENCE) == LECTURE_IDS
