"""The next-word slide: one score (logit) per token of the vocabulary, turned into probabilities.

The slide's column "0.01 0.67 0.2 … 0.001", computed: the most likely next tokens after the
student's text, with their logits and their probabilities at several temperatures, and how spread
each distribution is (its entropy, in bits).
"""

from __future__ import annotations

from typing import Sequence

from lanterne.inspect.drawing import new_figure, say
from lanterne.inspect.recording import Recording
from lanterne.prediction import NextTokenTable, table_from_logits


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
