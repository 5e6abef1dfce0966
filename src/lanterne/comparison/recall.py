"""Associative recall at a distance: can the model find, far back in its input, the value it needs?

Each example lists `pairs` key–value pairs (distinct keys, random values), then a separator, then asks
every key again in a shuffled order, each followed by its value. Listed values are random, so only the
asked values can be predicted: the loss is taken there. The distance of an answer is how many tokens
back its value was listed. A Transformer looks back at any position directly; a recurrent model must
have carried every value in its state of fixed size the whole way — the lecture's "RNNs often forget
distant words", measured. (The multi-query form of Zoology's MQAR: one answer per pair, not per example.)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

IGNORED = -100  # cross-entropy's "no target here"


@dataclass(frozen=True)
class RecallTask:
    """ids 0..keys-1 are keys, the next `values` ids are values, the last id separates list and questions."""

    keys: int = 64
    values: int = 64
    pairs: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.pairs <= self.keys or self.values < 2:
            raise ValueError(f"recall needs 1 <= pairs <= keys and at least 2 values, not {self}")

    @property
    def vocab_size(self) -> int:
        return self.keys + self.values + 1

    @property
    def length(self) -> int:
        """Tokens per example: the listed pairs, the separator, the asked pairs."""
        return 4 * self.pairs + 1

    @property
    def separator(self) -> int:
        return self.keys + self.values

    @property
    def largest_distance(self) -> int:
        return 4 * self.pairs - 2

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (size, length); targets (size, length): the value at each asked key, IGNORED elsewhere;
        distances (size, length): at each target, how many positions back its value was listed, else 0."""
        P = self.pairs
        keys = torch.argsort(torch.rand(size, self.keys, generator=generator), dim=1)[:, :P]  # (size, P) distinct per row
        values = self.keys + torch.randint(0, self.values, (size, P), generator=generator)  # (size, P)
        order = torch.argsort(torch.rand(size, P, generator=generator), dim=1)  # (size, P): which pair each question asks
        ids = torch.empty(size, self.length, dtype=torch.long)
        ids[:, 0 : 2 * P : 2], ids[:, 1 : 2 * P : 2] = keys, values
        ids[:, 2 * P] = self.separator
        ids[:, 2 * P + 1 :: 2] = keys.gather(1, order)
        ids[:, 2 * P + 2 :: 2] = values.gather(1, order)
        targets = torch.full_like(ids, IGNORED)
        distances = torch.zeros_like(ids)
        asked_at = 2 * P + 1 + 2 * torch.arange(P)  # (P,) positions of the asked keys: each predicts the next token
        targets[:, asked_at] = values.gather(1, order)
        distances[:, asked_at] = asked_at - (2 * order + 1)  # back to where that value was listed
        return ids, targets, distances


@dataclass
class RecallResult:
    """One model trained on the task: its accuracy by distance, and what the training cost."""

    name: str
    parameters: int
    steps: int
    seconds: float
    distances: list[int]
    accuracy: list[float]  # at each distance
    final_loss: float
    loss_curve: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def train_on_recall(
    name: str, model, task: RecallTask, *, steps: int = 1500, batch_size: int = 64, learning_rate: float = 3e-3,
    seconds: float | None = None, seed: int = 0, evaluation_examples: int = 2000,
) -> RecallResult:
    """Train `model` (a GPT or a recurrent model over task.vocab_size ids) with AdamW, then measure it.

    Stops after `steps`, or after `seconds` when given (equal wall-clock for every model).
    """
    from lanterne.training.schedule import learning_rate_at

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    curve, start, step = [], time.perf_counter(), 0
    while step < steps and (seconds is None or time.perf_counter() - start < seconds):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, peak=learning_rate, minimum=learning_rate / 10, warmup_steps=min(100, steps // 10), decay_steps=steps)
        ids, targets, _ = task.batch(batch_size, generator)
        loss = model(ids, targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            curve.append(round(float(loss.detach()), 4))
    elapsed = time.perf_counter() - start
    distances, accuracy, final_loss = recall_accuracy(model, task, evaluation_examples, seed=seed + 1)
    return RecallResult(name, sum(p.numel() for p in model.parameters()), step, elapsed, distances, accuracy, final_loss, curve)


@torch.inference_mode()
def recall_accuracy(model, task: RecallTask, examples: int = 2000, seed: int = 1, bins: int = 8) -> tuple[list[int], list[float], float]:
    """Accuracy of the answers (greedy: the most likely value) in `bins` ranges of distance, on fresh examples.

    Returns the largest distance of each range, the accuracy in it, and the mean loss over all answers.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids, targets, distances = task.batch(examples, generator)
    logits = torch.cat([model(part).logits for part in ids.split(250)]).float()  # (examples, length, vocab)
    asked = targets != IGNORED
    logits, targets, distances = logits[asked], targets[asked], distances[asked]  # (answers, vocab), (answers,), (answers,)
    correct = (logits.argmax(dim=-1) == targets).float()
    loss = float(F.cross_entropy(logits, targets))
    edges = torch.linspace(0, task.largest_distance, bins + 1).round().long().tolist()
    ends, accuracy = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (distances > low) & (distances <= high)
        if inside.any():
            ends.append(high)
            accuracy.append(round(float(correct[inside].mean()), 4))
    return ends, accuracy, loss
