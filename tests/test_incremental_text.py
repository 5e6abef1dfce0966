"""Incremental decoding and stop strings: the same text and the same stops as decoding everything again, with bounded
work per token; and the TextStream that `generation.stream` returns (finish reasons, log-probabilities, time, cancel)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lanterne.model.config import GPTConfig
from lanterne.errors import GenerationError
from lanterne.generation import generate, stream
from lanterne.generation.loop import _cut_at_stop
from lanterne.generation.incremental_text import CONTEXT_TOKENS, MAX_UNSETTLED_TOKENS, IncrementalText, StopStrings
from lanterne.tokenization import CharTokenizer, WordTokenizer, train_bpe
from lanterne.tokenization.sentencepiece import SentencePieceBPE
from lanterne.tokenization.wordpiece import WordPieceTokenizer
from lanterne.model.transformer import GPT

TEXT = "le petit chat dort sur le tapis. the cat sleeps on the mat! déjà vu, naïve café 🙂 " * 4
BPE = train_bpe(TEXT, 300)
CHARS = CharTokenizer.train(TEXT)
WORDS = WordTokenizer.train(TEXT)
WORDPIECE = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "play", "##ing", "##s", "tennis", ".", ",", "'", "t", "n't"])
SENTENCEPIECE_PIECES = ["<unk>", "<s>", "</s>", *[f"<0x{byte:02X}>" for byte in range(256)], "▁", "▁le", "▁chat", "a", "b", "é", "▁▁", "s"]
SENTENCEPIECE = SentencePieceBPE(SENTENCEPIECE_PIECES, special_tokens=[1, 2], unk_id=0, bos_id=1, eos_id=2, space_prefix="first")


def incremental(tokenizer, ids, checkpoints=None):
    """The IncrementalText after each id (or after those counts of ids), checked against decoding every id again."""
    text = IncrementalText(tokenizer)
    for count, token in enumerate(ids, 1):
        text.append(token)
        if checkpoints is not None and count not in checkpoints:
            continue
        full = tokenizer.decode(ids[:count])
        assert str(text) == full, f"after {count} tokens"
        assert len(text) == len(full)
        for start in (0, len(full) // 2, len(full) - 1, len(full)):
            assert text.tail(start) == full[max(start, 0):]
    return text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, BPE.vocab_size - 1), max_size=40))
def test_byte_level_text_equals_decoding_everything_again(ids):
    """Any ids, half characters and invalid bytes included: the bytes are decoded exactly as a whole."""
    incremental(BPE, ids)


@settings(max_examples=40, deadline=None)
@given(st.data())
@pytest.mark.parametrize("tokenizer", [CHARS, WORDS, WORDPIECE], ids=["char", "word", "wordpiece"])
def test_windowed_text_equals_decoding_everything_again(tokenizer, data):
    incremental(tokenizer, data.draw(st.lists(st.integers(0, tokenizer.vocab_size - 1), max_size=40)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(range(259, len(SENTENCEPIECE_PIECES))), st.sampled_from("éà🙂"), st.just(1)), max_size=30))
def test_sentencepiece_text_equals_decoding_everything_again(units):
    """Pieces, whole characters spelled as byte pieces (byte fallback), special tokens; compared after each
    whole unit (decoding everything in the middle of a character turns the whole run of bytes into U+FFFD)."""
    ids, ends = [], set()
    for unit in units:
        ids += [3 + byte for byte in unit.encode()] if isinstance(unit, str) else [unit]
        ends.add(len(ids))
    assert "".join(incremental(SENTENCEPIECE, ids, ends).tail(0)) == SENTENCEPIECE.decode(ids)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, BPE.vocab_size - 1), max_size=60), st.lists(st.text("the ca.!\n", min_size=1, max_size=4), max_size=3))
def test_stop_strings_are_found_where_searching_everything_finds_them(ids, stop):
    text, stops = IncrementalText(BPE), StopStrings(stop)
    for count, token in enumerate(ids, 1):
        text.append(token)
        full = BPE.decode(ids[:count])
        cut, stopped = _cut_at_stop(full, tuple(stop))
        found = stops.find(text)
        assert (found is not None) == stopped
        if stopped:
            assert found == len(cut)
            return


def test_work_per_token_is_bounded_whatever_the_output_length():
    """Characters scanned for stop strings and ids decoded grow linearly: a few per token, not the text so far."""
    for tokenizer, per_token in ((BPE, 1), (CHARS, 2 * (CONTEXT_TOKENS + 1))):
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, tokenizer.vocab_size, (3000,), generator=generator).tolist()
        text, stops = IncrementalText(tokenizer), StopStrings(["never seen", "QZXJ"])
        for token in ids:
            text.append(token)
            assert stops.find(text) is None
        longest_new = max(len(tokenizer.decode([token])) for token in set(ids))
        assert text.decoded_ids <= per_token * len(ids)
        assert stops.scanned <= len(ids) * (longest_new + len("never seen") + 3)
        assert stops.scanned < len(text) * 20  # searching the whole text each time would be ~len(text) * 1500


class CountingDecoder:
    """A tokenizer that records how many ids each decode call is given."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, ids, *args, **options):
        ids = list(ids)
        self.calls.append(len(ids))
        return self.inner.decode(ids, *args, **options)


class CountingByteDecoder(CountingDecoder):
    def decode_bytes(self, ids):
        ids = list(ids)
        self.calls.append(len(ids))
        return self.inner.decode_bytes(ids)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=320, context_length=256, d_model=16, n_heads=2, n_layers=1)).eval()


@pytest.mark.parametrize("counting, bound", [(CountingByteDecoder, 1), (CountingDecoder, CONTEXT_TOKENS + 2 * MAX_UNSETTLED_TOKENS)])
def test_generation_with_stop_strings_decodes_a_bounded_window_per_token(model, counting, bound):
    """Before: every token decoded all the ids so far (120 tokens: 7,260 ids). Now: a window, and the result once."""
    tokenizer = counting(BPE if counting is CountingByteDecoder else CHARS)
    # eos_id=-1: no token ends the text early, so all 120 are written whatever the seed draws
    text = generate(model, tokenizer, "le", max_new_tokens=120, temperature=1.0, seed=0, stop=["never seen"], eos_id=-1)
    *steps, final = tokenizer.calls
    assert final >= 100 and len(steps) >= 100, "one call per token, one for the whole result"
    assert max(steps) <= bound
    tokenizer.calls.clear()
    assert "".join(stream(model, tokenizer, "le", max_new_tokens=120, temperature=1.0, seed=0, stop=["never seen"], eos_id=-1)) == text
    assert max(tokenizer.calls) <= bound


def test_a_text_stream_says_why_it_stopped(model):
    full = stream(model, BPE, "le", max_new_tokens=30, temperature=0)
    text = "".join(full)
    assert full.finish_reason == "length" and len(full.new_ids) == 30
    stop = text[5:8]
    stopped = stream(model, BPE, "le", max_new_tokens=30, temperature=0, stop=[stop])
    assert "".join(stopped) == text[: text.find(stop)] and stopped.finish_reason == "stop"
    first = full.new_ids.index(full.new_ids[-1])  # its first appearance: taken as the end-of-text token, it ends there
    end = stream(model, BPE, "le", max_new_tokens=30, temperature=0, eos_id=full.new_ids[-1])
    assert "".join(end) == BPE.decode(full.new_ids[:first]) and end.finish_reason == "eos" and len(end.new_ids) == first + 1
    timed = stream(model, BPE, "le", max_new_tokens=30, temperature=0, max_seconds=1e-9)
    assert "".join(timed) == BPE.decode(full.new_ids[:1]) and timed.finish_reason == "time"


def test_a_cancelled_stream_computes_no_further_token(model):
    pieces = stream(model, BPE, "le", max_new_tokens=30, temperature=1.0, seed=1)
    next(pieces)
    made = len(pieces.new_ids)
    pieces.cancel()
    assert list(pieces) == [] and pieces.finish_reason == "cancelled" and len(pieces.new_ids) == made


def test_log_probabilities_are_the_models_own(model):
    """Greedy: each chosen token is the likeliest; its log-probability is log_softmax of the model's scores."""
    pieces = stream(model, BPE, "le petit", max_new_tokens=8, temperature=0, top_logprobs=3)
    text = "".join(pieces)
    assert [record.token_id for record in pieces.logprobs] == pieces.new_ids
    ids = torch.tensor([pieces.prompt_ids + pieces.new_ids])
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits[0, len(pieces.prompt_ids) - 1 : -1, : BPE.vocab_size].float(), dim=-1)
    for step, record in enumerate(pieces.logprobs):
        assert len(record.top) == 3 and record.top[0][0] == record.token_id
        assert record.logprob == pytest.approx(float(expected[step, record.token_id]), abs=1e-4)
        assert [value for _, value in record.top] == sorted((value for _, value in record.top), reverse=True)
    offsets = [record.offset for record in pieces.logprobs]
    assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] < len(text)
    with pytest.raises(GenerationError, match="top_logprobs"):
        stream(model, BPE, "le", top_logprobs=-1)
