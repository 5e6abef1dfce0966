"""Recall at a distance: give back a list of words, the last first. How far back can the model reach?

Each example is `items` random symbols, a separator, then the same symbols in reverse order: after the
separator, the model must say the last symbol, then the one before it, and so on. Only that second half
can be predicted, so the loss is taken there. The answer at the k-th step back was read 2k - 1 tokens
earlier: its distance. A Transformer looks back at any position directly, whatever the distance; a
recurrent model must have carried every symbol in its state of fixed size — the lecture's "RNNs often
forget distant words", measured. (A copy task, as in "Repeat After Me", Jelassi et al. 2024. Zoology's
associative recall was tried first: a 2-layer GPT trained for this command's few minutes on a CPU does
not yet form the induction circuit it needs, and answers by elimination instead.)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

IGNORED = -100  # cross-entropy's "no target here"


@dataclass(frozen=True)
class RecallTask:
    """Ids 0..symbols-1 are the symbols; the id `symbols` separates the list from its recall."""

    items: int = 32
    symbols: int = 16

    def __post_init__(self) -> None:
        if self.items < 2 or self.symbols < 2:
            raise ValueError(f"recall needs at least 2 items and 2 symbols, not {self}")

    @property
    def vocab_size(self) -> int:
        return self.symbols + 1

    @property
    def separator(self) -> int:
        return self.symbols

    @property
    def length(self) -> int:
        """Input tokens per example: the list, the separator, the recall but its last symbol (nothing follows it)."""
        return 2 * self.items

    @property
    def largest_distance(self) -> int:
        return 2 * self.items - 1

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (size, length); targets (size, length): the next recalled symbol after the separator, IGNORED
        before it; distances (size, length): at each target, how many positions back it was listed, else 0."""
        n = self.items
        listed = torch.randint(0, self.symbols, (size, n), generator=generator)  # (size, n)
        whole = torch.cat([listed, torch.full((size, 1), self.separator), listed.flip(1)], dim=1)  # (size, 2n + 1)
        ids = whole[:, :-1]
        targets = torch.full_like(ids, IGNORED)
        targets[:, n:] = whole[:, n + 1:]
        distances = torch.zeros_like(ids)
        # Position n + i predicts listed[n - 1 - i], read at position n - 1 - i: 2i + 1 tokens back.
        distances[:, n:] = 2 * torch.arange(n) + 1
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
