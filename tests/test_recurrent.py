"""The recap's models (MLP, RNN, GRU, LSTM) pass the GPT's contract: shapes, loss, state, generation, files."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import lanterne
from lanterne.errors import ConfigError, ModelInputError
from lanterne.generation import generate, generate_ids
from lanterne.recurrent import ARCHITECTURES, RecurrentConfig, RecurrentLM
from lanterne.generation.sampling import SamplingSettings
from lanterne.tokenization import train

TEXT = "Le soleil se lève à l'est et se couche à l'ouest. The sun rises in the east and sets in the west. " * 10


def tiny(arch: str, seed: int = 0) -> RecurrentLM:
    torch.manual_seed(seed)
    config = RecurrentConfig(arch=arch, vocab_size=50, context_length=4, d_model=16, hidden_size=24, n_layers=2 if arch != "mlp" else 1)
    return RecurrentLM(config).eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_and_loss_are_the_cross_entropy_by_hand(arch):
    model = tiny(arch)
    ids = torch.randint(0, 50, (3, 11))
    targets = torch.randint(0, 50, (3, 11))
    out = model(ids, targets)
    assert out.logits.shape == (3, 11, 50)
    by_hand = -torch.log_softmax(out.logits, dim=-1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.view(-1, 50), targets.view(-1)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_state_carried_step_by_step_gives_the_whole_pass(arch):
    model = tiny(arch)
    ids = torch.randint(0, 50, (2, 9))
    whole = model(ids).logits
    state = model.new_cache(2)
    pieces = [model(ids[:, :5], cache=state).logits] + [model(ids[:, t : t + 1], cache=state).logits for t in range(5, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert state.length == 9


def test_the_mlp_sees_only_its_window():
    model = tiny("mlp")
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 50
    same, other = model(ids).logits, model(changed).logits
    torch.testing.assert_close(same[0, 4:], other[0, 4:])  # token 0 is out of every window from position 4 on
    assert not torch.allclose(same[0, :4], other[0, :4])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_generation_with_padding_equals_one_by_one(arch):
    model = tiny(arch)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8]]
    greedy = SamplingSettings(temperature=0)
    batched = list(generate_ids(model, prompts, 6, greedy))
    for row, prompt in enumerate(prompts):
        alone = [step[0] for step in generate_ids(model, [prompt], 6, greedy)]
        assert [step[row] for step in batched] == alone


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_and_text_generation(arch, tmp_path):
    tokenizer = train("char", TEXT)
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch=arch, vocab_size=tokenizer.vocab_size, context_length=12, d_model=16, hidden_size=16)).eval()
    model.save_pretrained(tmp_path / arch, tokenizer)
    loaded, loaded_tokenizer = lanterne.load(tmp_path / arch)
    assert isinstance(loaded, RecurrentLM) and loaded.config == model.config
    ids = torch.tensor([tokenizer.encode("Le soleil")])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    text = generate(loaded, loaded_tokenizer, "Le soleil", max_new_tokens=30, temperature=0.8, seed=1)
    assert text and text == generate(model, tokenizer, "Le soleil", max_new_tokens=30, temperature=0.8, seed=1)


def test_bad_configs_and_ids_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown architecture 'transformer'"):
        RecurrentConfig(arch="transformer")
    with pytest.raises(ConfigError, match="hidden_size must be a positive"):
        RecurrentConfig(hidden_size=0)
    with pytest.raises(ModelInputError, match="outside the vocabulary"):
        tiny("gru")(torch.tensor([[0, 50]]))


def test_a_prompt_longer_than_the_training_window_is_read_whole():
    tokenizer = train("char", TEXT)
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch="gru", vocab_size=tokenizer.vocab_size, context_length=8, d_model=16, hidden_size=16)).eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "the first tokens were dropped"
        text = generate(model, tokenizer, TEXT[:200], max_new_tokens=20, temperature=0)
    assert text
