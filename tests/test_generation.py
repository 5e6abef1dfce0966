"""Generation: greedy equal to HuggingFace, cache equal to no cache, batches equal to one by one, the context window."""

from __future__ import annotations

import warnings

import pytest
import torch

from lanterne.model.config import GPTConfig
from lanterne.errors import GenerationError
from lanterne.generation import ContextWarning, generate, generate_ids, stream
from lanterne.generation.sampling import SamplingSettings
from lanterne.tokenization import CharTokenizer, train_bpe
from lanterne.model.transformer import GPT

transformers = pytest.importorskip("transformers")
GREEDY = SamplingSettings(temperature=0)
TEXT = "le petit chat dort sur le tapis. the cat sleeps on the mat! " * 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXT, 300, "gpt2")


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    end = tokenizer.special_tokens["<|endoftext|>"]
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=96, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=end, eos_token_id=end,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # larger weights: sharper, less tie-prone next-token scores
        for parameter in hf.parameters():
            parameter.mul_(4.0)
    hf.save_pretrained(folder)
    return hf, GPT.from_pretrained(folder)


def greedy_ids(model, prompt, n):
    return [step[0] for step in generate_ids(model, [prompt], n, GREEDY)]


def test_greedy_equals_huggingface_for_64_tokens(hf_and_ours):
    hf, ours = hf_and_ours
    prompt = torch.randint(0, 250, (1, 12), generator=torch.Generator().manual_seed(1))
    expected = hf.generate(prompt, do_sample=False, max_new_tokens=64, min_new_tokens=64, pad_token_id=0)
    assert greedy_ids(ours, prompt[0].tolist(), 64) == expected[0, 12:].tolist()


def test_cache_gives_the_same_tokens_as_recomputing(hf_and_ours):
    _, ours = hf_and_ours
    prompt = [5, 17, 42, 8]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            ids.append(int(ours(torch.tensor([ids])).logits[0, -1].argmax()))
    assert greedy_ids(ours, prompt, 30) == ids[len(prompt):]


def test_a_batch_gives_the_same_tokens_as_one_by_one(hf_and_ours):
    _, ours = hf_and_ours
    prompts = [[3, 4, 5], [10, 11, 12, 13, 14, 15, 16, 17], [200], [7, 7, 7, 7, 7]]
    batch = list(generate_ids(ours, prompts, 25, GREEDY))
    for row, prompt in enumerate(prompts):
        assert [step[row] for step in batch] == greedy_ids(ours, prompt, 25)


def test_sliding_window_keeps_the_most_recent_tokens(hf_and_ours):
    _, ours = hf_and_ours
    context = ours.config.context_length
    prompt = list(range(1, 81))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        produced = greedy_ids(ours, prompt, 40)
    assert [w.category for w in caught] == [ContextWarning], "said once"
    assert "most recent 96 tokens" in str(caught[0].message)
    ids = prompt + produced
    with torch.no_grad():
        for index in range(context, len(ids)):
            window = torch.tensor([ids[index - context : index]])
            assert int(ours(window).logits[0, -1].argmax()) == ids[index]
    with pytest.raises(GenerationError, match="exceed the context"):
        list(generate_ids(ours, [prompt], 40, GREEDY, strict=True))


def test_a_prompt_longer_than_the_context_is_cut_from_the_left(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    prompt = TEXT * 3
    n = len(tokenizer.encode(prompt))
    with pytest.warns(ContextWarning, match=f"the first {n - 96} tokens were dropped"):
        with pytest.warns(ContextWarning, match="from now on the model sees only the most recent 96"):  # and it slides
            generate(ours, tokenizer, prompt, max_new_tokens=2, temperature=0)
    with pytest.raises(GenerationError, match="more than the context"):
        generate(ours, tokenizer, prompt, max_new_tokens=2, strict=True)


def test_stop_strings_are_matched_across_tokens(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    full = generate(ours, tokenizer, "le petit", max_new_tokens=40, temperature=0)
    ids = tokenizer.encode(full, disallowed_special=())
    pieces = [tokenizer.decode([i]) for i in ids]
    boundary = len(pieces[0]) + len(pieces[1])  # a stop string that straddles tokens 2 and 3
    stop = full[boundary - 1 : boundary + 1]
    assert stop and len(stop) == 2
    cut = generate(ours, tokenizer, "le petit", max_new_tokens=40, temperature=0, stop=[stop])
    assert cut == full[: full.find(stop)]


def test_end_of_text_ends_generation(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    prompt_ids = tokenizer.encode("le chat")
    produced = greedy_ids(ours, prompt_ids, 20)
    eos = produced[5]
    text = generate(ours, tokenizer, "le chat", max_new_tokens=20, temperature=0, eos_id=eos)
    assert text == tokenizer.decode(produced[: produced.index(eos)])


def test_streaming_pieces_join_to_the_generated_text(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    for options in [dict(temperature=0), dict(temperature=1.0, seed=3), dict(temperature=0, stop=["e "])]:
        pieces = list(stream(ours, tokenizer, "the cat", max_new_tokens=30, **options))
        assert "".join(pieces) == generate(ours, tokenizer, "the cat", max_new_tokens=30, **options)
        assert all(pieces)


def test_seeded_sampling_is_reproducible(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    run = lambda seed: generate(ours, tokenizer, "le", max_new_tokens=20, temperature=1.0, top_k=50, seed=seed)
    assert run(1) == run(1)
    assert len({run(seed) for seed in range(2, 6)}) > 1


def test_an_empty_prompt_starts_from_end_of_text(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    assert isinstance(generate(ours, tokenizer, "", max_new_tokens=5, temperature=0), str)
    with pytest.raises(GenerationError, match="no <\\|endoftext\\|> token"):
        generate(ours, CharTokenizer.train("abc"), "", max_new_tokens=5)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-3), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_settings_are_clear_errors(hf_and_ours, tokenizer, options, message):
    _, ours = hf_and_ours
    with pytest.raises(GenerationError, match=message):
        generate(ours, tokenizer, "le chat", **{"max_new_tokens": 5, **options})


def test_zero_new_tokens_gives_empty_text(hf_and_ours, tokenizer):
    _, ours = hf_and_ours
    assert generate(ours, tokenizer, "le chat", max_new_tokens=0) == ""


def test_a_vocabulary_padded_past_the_tokenizer_never_yields_padding_ids():
    """nanoGPT pads 50257 ids to 50304: the extra rows are no token, so sampling must never pick them."""
    tokenizer = CharTokenizer.train("abcdef ")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, context_length=32, d_model=32, n_heads=2, n_layers=1)).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.vocab_size:] += 5.0  # make the padding rows the likeliest
    free = [s[0] for s in generate_ids(model, [[0]], 20, SamplingSettings(temperature=1.0), seed=0)]
    assert max(free) >= tokenizer.vocab_size, "without a limit the padding ids win"
    limited = [s[0] for s in generate_ids(model, [[0]], 20, SamplingSettings(temperature=1.0), seed=0, vocab_limit=tokenizer.vocab_size)]
    assert max(limited) < tokenizer.vocab_size
    text = generate(model, tokenizer, "abc", max_new_tokens=20, temperature=1.0, seed=0)  # the tokenizer sets the limit
    letters = text.replace("<unk>", "?")  # the tokenizer's own unknown-character token is one of its ids
    assert len(letters) == 20 and set(letters) <= set("abcdef ?")
