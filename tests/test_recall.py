"""The synthetic long-range task of `lanterne compare`: associative recall at a distance."""

from __future__ import annotations

import pytest
import torch

from lanterne.comparison.recall import IGNORED, RecallTask, recall_accuracy, train_on_recall
from lanterne.recurrent import RecurrentConfig, RecurrentLM


def test_each_example_lists_symbols_then_asks_for_them_last_first():
    task = RecallTask(items=6, symbols=5)
    ids, targets, distances = task.batch(200, torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == distances.shape == (200, task.length) and task.length == 12
    for row in range(200):
        listed = ids[row, :6].tolist()
        assert all(0 <= symbol < 5 for symbol in listed) and ids[row, 6] == task.separator
        recalled = ids[row, 7:].tolist() + [int(targets[row, -1])]
        assert recalled == listed[::-1]
        for position in range(6, 12):  # the separator and the recall predict the listed symbols, last first
            back = 6 - 1 - (position - 6)
            assert targets[row, position] == listed[back] and distances[row, position] == position - back
        assert bool((targets[row, :6] == IGNORED).all()) and bool((distances[row, :6] == 0).all())
    assert sorted(set(distances[0, 6:].tolist())) == [1, 3, 5, 7, 9, 11] and task.largest_distance == 11


def test_the_same_seed_gives_the_same_examples_and_an_untrained_model_is_near_chance():
    task = RecallTask(items=6, symbols=5)
    first, second = task.batch(8, torch.Generator().manual_seed(3)), task.batch(8, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch="gru", vocab_size=task.vocab_size, context_length=task.length, d_model=8, hidden_size=8))
    distances, accuracy, loss = recall_accuracy(model, task, examples=3000, bins=3)
    assert distances == [4, 7, 11] and distances[-1] == task.largest_distance
    assert max(accuracy) < 0.4 and loss > 1.4  # no better than guessing among the 5 symbols


def test_a_small_gpt_learns_to_recall_at_every_distance():
    from lanterne.model.config import GPTConfig
    from lanterne.model.transformer import GPT

    task = RecallTask(items=8, symbols=8)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_dict(dict(vocab_size=task.vocab_size, context_length=task.length, d_model=32, n_heads=2,
                                         n_layers=1, dropout=0.0, positions="learned")))
    result = train_on_recall("gpt", model, task, steps=300, batch_size=32, learning_rate=3e-3, evaluation_examples=500)
    assert result.steps == 300 and min(result.accuracy) > 0.9


def test_training_reports_its_cost_and_stops_on_time():
    task = RecallTask(items=4, symbols=5)
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch="lstm", vocab_size=task.vocab_size, context_length=task.length, d_model=8, hidden_size=8))
    result = train_on_recall("lstm", model, task, steps=10_000, seconds=0.5, batch_size=16, evaluation_examples=500)
    assert 0 < result.steps < 10_000  # stopped by the clock, not by the steps
    assert result.parameters == sum(p.numel() for p in model.parameters()) and len(result.accuracy) == len(result.distances)


def test_loss_by_position_averages_the_windows_cross_entropy():
    from lanterne.comparison.measures import loss_by_position

    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch="gru", vocab_size=20, context_length=8, d_model=8, hidden_size=8)).eval()
    tokens = torch.randint(0, 20, (500,))
    curve = loss_by_position(model, tokens, window=8, windows=32)
    assert len(curve) == 8
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 500 - 8 - 1, (32,), generator=generator)
    inputs = torch.stack([tokens[s : s + 8] for s in starts])
    targets = torch.stack([tokens[s + 1 : s + 9] for s in starts])
    with torch.no_grad():
        logits = model(inputs).logits
    by_hand = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(dim=0)
    assert curve == pytest.approx(by_hand.tolist(), rel=1e-5)


def test_bits_per_byte_and_matched_sizes():
    import math

    from lanterne.comparison.measures import matched_hidden_size
    from lanterne.evaluation import bits_per_byte

    assert bits_per_byte(math.log(2), tokens=100, text_bytes=100) == pytest.approx(1.0)
    assert bits_per_byte(math.log(256), tokens=1, text_bytes=1) == pytest.approx(8.0)
    hidden = matched_hidden_size("lstm", 100_000, vocab_size=65, d_model=64)
    sizes = [RecurrentLM(RecurrentConfig(arch="lstm", vocab_size=65, d_model=64, hidden_size=h)).num_parameters() for h in (hidden - 1, hidden, hidden + 1)]
    assert abs(sizes[1] - 100_000) <= min(abs(sizes[0] - 100_000), abs(sizes[2] - 100_000))
