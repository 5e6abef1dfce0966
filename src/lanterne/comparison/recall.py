"""Associative recall at a distance: can the model find, far back in its input, the value it needs?

Each example lists `pairs` key–value pairs (distinct keys, random values), then a query mark and one
of the keys: the answer is that key's value. Nothing else in the sequence can be predicted, so the
loss is taken at the answer only. The distance is how many tokens separate the value from the end.
A Transformer looks back at any position directly; a recurrent model must have carried the value in
its state of fixed size the whole way — the lecture's "RNNs often forget distant words", measured.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

IGNORED = -100  # cross-entropy's "no target here"


@dataclass(frozen=True)
class RecallTask:
    """ids 0..keys-1 are keys, the next `values` ids are values, the last id is the query mark."""

    keys: int = 40
    values: int = 16
    pairs: int = 30

    @property
    def vocab_size(self) -> int:
        return self.keys + self.values + 1

    @property
    def length(self) -> int:
        """Tokens per example: the pairs, the query mark, the queried key."""
        return 2 * self.pairs + 2

    @property
    def query_mark(self) -> int:
        return self.keys + self.values

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (size, length), targets (size, length) with the answer at the last position only, and distances (size,)."""
        keys = torch.argsort(torch.rand(size, self.keys, generator=generator), dim=1)[:, : self.pairs]  # distinct keys per row
        values = self.keys + torch.randint(0, self.values, (size, self.pairs), generator=generator)
        asked = torch.randint(0, self.pairs, (size,), generator=generator)
        rows = torch.arange(size)
        ids = torch.empty(size, self.length, dtype=torch.long)
        ids[:, 0 : 2 * self.pairs : 2] = keys
        ids[:, 1 : 2 * self.pairs : 2] = values
        ids[:, -2] = self.query_mark
        ids[:, -1] = keys[rows, asked]
        targets = torch.full_like(ids, IGNORED)
        targets[:, -1] = values[rows, asked]
        distances = 2 * (self.pairs - asked)  # from the value's position to the last one
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
    seconds: float | None = None, seed: int = 0, evaluation_examples: int = 4000,
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
def recall_accuracy(model, task: RecallTask, examples: int = 4000, seed: int = 1) -> tuple[list[int], list[float], float]:
    """Accuracy of the answer at each distance, on fresh examples (greedy: the most likely value), and the mean loss."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids, targets, distances = task.batch(examples, generator)
    logits = torch.cat([model(part).logits[:, -1] for part in ids.split(500)]).float()  # (examples, vocab)
    correct = (logits.argmax(dim=-1) == targets[:, -1]).float()
    loss = float(F.cross_entropy(logits, targets[:, -1]))
    by_distance = sorted(set(distances.tolist()))
    return by_distance, [round(float(correct[distances == d].mean()), 4) for d in by_distance], loss
