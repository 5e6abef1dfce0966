"""The GPT against its plain definition: shapes, loss, causality, inspection, feed-forward, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lanterne.model.config import GPTConfig
from lanterne.model.embedding import Embeddings
from lanterne.errors import ModelInputError
from lanterne.model.feedforward import FeedForward
from lanterne.model.transformer import GPT

CONFIG = GPTConfig(vocab_size=97, context_length=24, d_model=32, n_heads=4, n_layers=2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def test_logits_have_one_score_per_vocabulary_entry(model):
    ids = torch.randint(0, 97, (3, 10))
    assert model(ids).logits.shape == (3, 10, 97)


def test_loss_is_the_cross_entropy_of_the_next_token(model):
    ids = torch.randint(0, 97, (2, 12))
    output = model(ids[:, :-1], targets=ids[:, 1:])
    expected = F.cross_entropy(output.logits.reshape(-1, 97), ids[:, 1:].reshape(-1))
    assert torch.allclose(output.loss, expected)
    # an untrained model guesses roughly uniformly: loss close to ln(vocab_size)
    assert abs(output.loss.item() - math.log(97)) < 0.5


def test_ignored_targets_do_not_count(model):
    ids = torch.randint(0, 97, (1, 8))
    targets = ids.clone()
    targets[0, :4] = -100
    loss = model(ids, targets=targets).loss
    expected = F.cross_entropy(model(ids).logits[0, 4:], ids[0, 4:])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_a_token_never_sees_the_future(model):
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 97
    assert torch.allclose(model(ids).logits[0, :10], model(changed).logits[0, :10], atol=1e-6)


def test_inspection_changes_no_number(model):
    ids = torch.randint(0, 97, (2, 9))
    plain = model(ids)
    inspected = model(ids, inspect=True)
    assert torch.allclose(plain.logits, inspected.logits, atol=1e-5)
    assert len(inspected.attentions) == CONFIG.n_layers
    assert len(inspected.hidden_states) == CONFIG.n_layers + 1
    assert inspected.attentions[0].weights.shape == (2, CONFIG.n_heads, 9, 9)
    assert torch.allclose(model.lm_head(inspected.hidden_states[-1]), plain.logits, atol=1e-5)


def test_cache_gives_the_same_logits(model):
    ids = torch.randint(0, 97, (2, 20))
    full = model(ids).logits
    cache = model.new_cache(2)
    steps = [model(ids[:, :8], cache=cache).logits] + [model(ids[:, t : t + 1], cache=cache).logits for t in range(8, 20)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache.length == 20


def test_head_is_tied_to_the_embedding(model):
    assert model.lm_head.weight.data_ptr() == model.embeddings.token.weight.data_ptr()
    untied = GPT(CONFIG.with_changes(tie_embeddings=False))
    assert untied.num_parameters() == model.num_parameters() + 97 * 32


def test_flops_and_mfu_follow_nanogpt():
    model = GPT(CONFIG)
    n = model.num_parameters(non_embedding=True)
    assert model.flops_per_token(24) == 6 * n + 12 * 2 * 32 * 24
    assert model.estimate_mfu(1000, 1e12, 24) == pytest.approx(model.flops_per_token(24) * 1000 / 1e12)


# -- the parts on their own -----------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_feedforward_is_4x_wide_and_per_position(activation):
    torch.manual_seed(0)
    config = CONFIG.with_changes(activation=activation)
    feedforward = FeedForward(config).eval()
    assert feedforward.expand.out_features == 4 * config.d_model
    x = torch.randn(2, 7, config.d_model)
    whole = feedforward(x)
    one_by_one = torch.stack([feedforward(x[:, t]) for t in range(7)], dim=1)
    assert torch.allclose(whole, one_by_one, atol=1e-6)
    if activation == "relu":
        expected = feedforward.project(torch.relu(feedforward.expand(x)))
        assert torch.allclose(whole, expected, atol=1e-6)


def test_embedding_is_token_plus_position():
    torch.manual_seed(0)
    embeddings = Embeddings(CONFIG)
    ids = torch.tensor([[5, 5, 7]])
    out = embeddings(ids, torch.arange(3))
    assert torch.allclose(out[0, 0], embeddings.token.weight[5] + embeddings.position.weight[0])
    assert not torch.allclose(out[0, 0], out[0, 1]), "same token, different position, different vector"


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, message",
    [
        (torch.tensor([[1, 2, 97]]), "token id 97 is outside the vocabulary"),
        (torch.tensor([[1, -1]]), "token id -1 is outside"),
        (torch.zeros(1, 25, dtype=torch.long), "longer than the model's context of 24"),
        (torch.tensor([1, 2, 3]), "2-D tensor"),
        (torch.tensor([[0.5, 1.0]]), "must be integers"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
    ],
)
def test_bad_ids_are_clear_errors(model, ids, message):
    with pytest.raises(ModelInputError, match=message):
        model(ids)


def test_cache_overflow_is_a_clear_error(model):
    cache = model.new_cache(1)
    model(torch.zeros(1, 20, dtype=torch.long), cache=cache)
    with pytest.raises(ModelInputError, match="longer than the model's context"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_products_of_many_rows_are_computed_in_fp32_where_the_cpu_lacks_bf16(has_bf16, monkeypatch):
    from lanterne.model import linear

    monkeypatch.setattr(linear, "cpu_has_bf16_arithmetic", lambda: has_bf16)
    torch.manual_seed(0)
    layer = linear.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(2, linear.UPCAST_MIN_ROWS, 64, dtype=torch.bfloat16)
    exact = torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
    out = layer(x)
    assert out.dtype == torch.bfloat16
    if not has_bf16:  # fp32 arithmetic, rounded once
        assert torch.equal(out, exact.to(torch.bfloat16))
    torch.testing.assert_close(out.float(), exact, atol=0.05, rtol=0.02)
    one_row = x[:, :1]
    assert torch.equal(layer(one_row), torch.nn.functional.linear(one_row, layer.weight, layer.bias))  # decoding stays bf16
