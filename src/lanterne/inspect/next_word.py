"""The next-word slide: one score (logit) per token of the vocabulary, turned into probabilities.

The slide's column "0.01 0.67 0.2 … 0.001", computed: the most likely next tokens after the
student's text, with their logits and their probabilities at several temperatures, and how spread
each distribution is (its entropy, in bits).
"""

from __future__ import annotations

from typing import Sequence

import torch

from lanterne.inspect.drawing import new_figure, say
from lanterne.inspect.recording import Recording
from lanterne.inspect.temperature import tokenizer_logits
from lanterne.prediction import NextTokenTable, table_from_logits

SLIDER_TEMPERATURES = tuple(round(0.01 * step, 2) for step in range(1, 201))  # 0.01, 0.02, ..., 2.00


def next_word_view(recording: Recording, tokenizer, top: int = 10, temperatures: Sequence[float] = (0.5, 1.0, 2.0)) -> NextTokenTable:
    """The next-token table after the recorded text (its last position's logits)."""
    return table_from_logits(recording.logits[-1], tokenizer, recording.text, top, temperatures)


def draw_next_word(table: NextTokenTable, lang: str = "en"):
    """Grouped bars: each candidate's probability at each temperature."""
    import numpy as np

    candidates = table.candidates
    figure, axis = new_figure(max(7.0, 1.2 + 0.8 * len(candidates)), 5)
    width = 0.8 / max(1, len(table.temperatures))
    positions = np.arange(len(candidates))
    for index, temperature in enumerate(table.temperatures):
        values = [candidate.probabilities[temperature] for candidate in candidates]
        label = f"T = {temperature:g} (H = {table.entropy_bits[temperature]:.2f} bits)"
        axis.bar(positions + (index - (len(table.temperatures) - 1) / 2) * width, values, width, label=label)
    axis.set_xticks(positions, [repr(candidate.text) for candidate in candidates], rotation=45, ha="right")
    axis.set_ylabel(say(lang, "probabilité", "probability"))
    axis.set_ylim(0, 1)
    axis.legend(title=say(lang, "température (entropie)", "temperature (entropy)"))
    prompt = table.prompt if len(table.prompt) <= 60 else "…" + table.prompt[-59:]
    axis.set_title(say(lang, f"Mot suivant après « {prompt} »", f"Next word after “{prompt}”"))
    return figure


def slider_distribution(logits: torch.Tensor, tokenizer, top: int) -> dict:
    """What the page needs to compute softmax(logits / T) exactly at every slider temperature, with no new request.

    The `top` highest logits are sent as they are; the other tokens are summed up, at each T of
    SLIDER_TEMPERATURES, by their log-sum-exp of logits / T and the mean of their logits weighted by
    softmax(logits / T). Then p(token) = exp(logit / T - Z) with Z = logsumexp(top / T, rest_lse[T]),
    the rest's probability is exp(rest_lse[T] - Z), and the entropy (nats) is Z - E[logit] / T.
    """
    logits = tokenizer_logits(logits, tokenizer).double()  # (vocab,)
    best = torch.topk(logits, min(top, logits.shape[0]))
    rest = torch.ones_like(logits, dtype=torch.bool)
    rest[best.indices] = False
    rest_logits = logits[rest].float()  # (vocab - top,)
    rest_lse, rest_mean = [], []
    if rest_logits.numel():
        # In float32 (the model's own logits), one exponential per token and temperature: 200 temperatures
        # over Gemma's 262,144 tokens in 0.1 s where float64 softmax and logsumexp took 0.6 s (a class
        # waits on this view); the sums are exact to about 1e-7.
        for start in range(0, len(SLIDER_TEMPERATURES), 25):
            temperatures = torch.tensor(SLIDER_TEMPERATURES[start : start + 25], dtype=torch.float32).unsqueeze(1)
            scaled = rest_logits.unsqueeze(0) / temperatures  # (temperatures, vocab - top)
            peak = scaled.max(dim=1, keepdim=True).values
            weights = torch.exp(scaled - peak)
            total = weights.sum(dim=1).double()
            rest_lse += (peak.squeeze(1).double() + total.log()).tolist()
            rest_mean += ((weights * rest_logits).sum(dim=1).double() / total).tolist()
    return {
        "vocab_size": logits.shape[0],
        "ids": best.indices.tolist(),
        "tokens": [tokenizer.decode([int(token_id)]) for token_id in best.indices],
        "logits": best.values.tolist(),
        "rest_count": int(rest_logits.numel()),
        "temperatures": list(SLIDER_TEMPERATURES),
        "rest_lse": rest_lse or None,
        "rest_mean_logit": rest_mean or None,
    }
