"""Next-word prediction: one score (logit) per candidate token, turned into probabilities.

The lecture's table: for a prompt, the most likely next tokens with their logits and their
probabilities at several temperatures, and how uncertain each distribution is (its entropy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from lanterne.generation import context_limit, encode_prompt, fit_prompt
from lanterne.generation.sampling import entropy, next_token_distribution


@dataclass
class Candidate:
    """One possible next token."""

    id: int
    text: str
    logit: float
    probabilities: dict[float, float]  # temperature -> probability


@dataclass
class NextTokenTable:
    prompt: str
    temperatures: list[float]
    candidates: list[Candidate]
    entropy_bits: dict[float, float] = field(default_factory=dict)  # temperature -> entropy of the whole distribution

    def as_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "temperatures": self.temperatures,
            "entropy_bits": {str(t): e for t, e in self.entropy_bits.items()},
            "candidates": [
                {"id": c.id, "token": c.text, "logit": c.logit, "probabilities": {str(t): p for t, p in c.probabilities.items()}}
                for c in self.candidates
            ],
        }


@torch.inference_mode()
def next_token_table(model, tokenizer, prompt: str, top: int = 10, temperatures: Sequence[float] = (0.5, 1.0, 2.0)) -> NextTokenTable:
    """The `top` most likely next tokens after `prompt`, with logits and probabilities at each temperature."""
    ids = fit_prompt(encode_prompt(tokenizer, prompt), context_limit(model), strict=False)
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device), last_only=True).logits[0, -1]
    return table_from_logits(logits, tokenizer, prompt, top, temperatures)


def table_from_logits(
    logits: torch.Tensor, tokenizer, prompt: str, top: int = 10, temperatures: Sequence[float] = (0.5, 1.0, 2.0)
) -> NextTokenTable:
    """The table for next-token `logits` (vocab_size,) already computed."""
    logits = logits.float()
    logits = logits[: min(logits.shape[0], tokenizer.vocab_size)]  # a vocabulary padded past the tokenizer's: not tokens
    distributions = {t: next_token_distribution(logits, temperature=t) for t in temperatures}
    best = torch.topk(logits, min(top, logits.shape[0]))
    candidates = [
        Candidate(
            id=int(token_id),
            text=tokenizer.decode([int(token_id)]),
            logit=float(logit),
            probabilities={t: float(distributions[t][token_id]) for t in temperatures},
        )
        for logit, token_id in zip(best.values, best.indices)
    ]
    return NextTokenTable(prompt, list(temperatures), candidates, {t: float(entropy(p)) for t, p in distributions.items()})
