"""The comparison's figures, in French and English: loss by position in the window, recall by distance.

`save_comparison` writes compare.json and, for each language, compare-position-{fr,en} and
compare-recall-{fr,en} as PNG and SVG; the tour's "Why attention" section shows them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lanterne.files import atomic_write_text
from lanterne.inspect.drawing import LANGUAGES, new_figure, save_figure, say

NAMES = {"gpt": "Transformer (GPT)", "lstm": "LSTM", "gru": "GRU", "rnn": "RNN (Elman)", "mlp": "MLP (Bengio 2003)"}


def draw_loss_by_position(report, lang: str = "en"):
    """Loss at each position of the window, one line per model: a curve that keeps falling uses distant tokens."""
    figure, axes = new_figure(8, 4.5)
    for model in report.models:
        axes.plot(range(1, len(model.loss_by_position) + 1), model.loss_by_position,
                  label=f"{NAMES.get(model.arch, model.arch)} — {model.parameters / 1e3:.0f}k")
    axes.set_xscale("log")
    _label(axes, say(lang, "position dans la fenêtre (tokens déjà lus)", "position in the window (tokens already read)"),
           say(lang, "perte (nats par token)", "loss (nats per token)"),
           say(lang, "Qui se sert des tokens lointains ? La perte selon la position", "Who uses distant tokens? Loss by position in the window"))
    return figure


def draw_recall(report, lang: str = "en"):
    """Recall accuracy against the distance of the needed value, one line per model."""
    figure, axes = new_figure(8, 4.5)
    for model in report.models:
        if model.recall_distances:
            axes.plot(model.recall_distances, [100 * a for a in model.recall_accuracy], marker="o",
                      label=f"{NAMES.get(model.arch, model.arch)} — {model.recall_parameters / 1e3:.0f}k")
    symbols = report.settings["recall"]["symbols"]
    axes.axhline(100 / symbols, color="grey", linestyle=":", label=say(lang, "hasard", "chance"))
    axes.set_ylim(0, 105)
    _label(axes, say(lang, "distance du mot à redonner (tokens en arrière)", "distance of the word to give back (tokens back)"),
           say(lang, "réponses justes (%)", "correct answers (%)"),
           say(lang, "Redonner une liste à l'envers : retrouver un mot lu loin en arrière",
               "Giving a list back, last first: finding a word read far back"))
    return figure


def _label(axes, x_label: str, y_label: str, title: str) -> None:
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()


def save_comparison(report, out: Path) -> list[Path]:
    """compare.json and every figure in `out` (created if needed); returns the figure paths."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    paths = []
    for lang in LANGUAGES:
        paths += save_figure(draw_loss_by_position(report, lang), out / f"compare-position-{lang}")
        if any(model.recall_distances for model in report.models):
            paths += save_figure(draw_recall(report, lang), out / f"compare-recall-{lang}")
    return paths
