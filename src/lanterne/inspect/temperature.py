"""The temperature slide on the student's prompt: how temperature, top-k, top-p and min-p reshape the next-token odds.

Low temperature sharpens the distribution toward the most likely token, high temperature flattens
it; the filters cut its tail. Curves of the top candidates' probabilities as temperature grows, the
entropy along the way, what each filter keeps, and continuations sampled at a few temperatures.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from lanterne.generation import ContextWarning, generate
from lanterne.inspect.context import number_text
from lanterne.inspect.drawing import check_language, new_figure, say, token_label
from lanterne.inspect.recording import encode_text
from lanterne.generation.sampling import SamplingSettings, entropy, filter_logits, next_token_distribution

CURVE_TEMPERATURES = tuple(round(0.05 * step, 2) for step in range(1, 41))  # 0.05, 0.10, ..., 2.00
SAMPLE_TEMPERATURES = (0.2, 0.8, 1.5)
TOP_K = (1, 5, 20, 50)
TOP_P = (0.5, 0.9, 0.95)
MIN_P = (0.2, 0.1, 0.05)


@dataclass
class CandidateCurve:
    """One candidate next token and its probability at each temperature of the curve."""

    id: int
    text: str
    logit: float
    probabilities: list[float]


@dataclass
class TemperatureCurves:
    """The top candidates' probabilities, the rest's, and the entropy (bits), at each temperature."""

    temperatures: list[float]
    candidates: list[CandidateCurve]  # most likely first (the order is the same at every temperature)
    other_mass: list[float]  # probability of every other token, at each temperature
    entropy_bits: list[float]  # of the whole distribution, at each temperature
    vocab_size: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FilterEffect:
    """What one filter keeps of the temperature-1 distribution."""

    filter: str  # "top-k", "top-p" or "min-p"
    value: float
    survivors: int  # tokens that can still be drawn
    kept_mass: float  # their probability before the filter (the rest is cut, and they share it)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FilterEffects:
    """Top-k, top-p and min-p at several settings, on the same temperature-1 distribution."""

    vocab_size: int
    entropy_bits: float  # of the unfiltered temperature-1 distribution
    effects: list[FilterEffect]

    def as_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "entropy_bits": self.entropy_bits, "effects": [e.as_dict() for e in self.effects]}


@dataclass
class TemperatureSamples:
    """Continuations of one prompt sampled at each temperature, with one seed: the same call gives the same texts."""

    prompt: str
    seed: int
    max_new_tokens: int
    temperatures: list[float]
    texts: list[list[str]]  # texts[i]: the continuations at temperatures[i]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TemperatureView:
    """The whole slide for one prompt."""

    prompt: str
    dropped: int  # prompt tokens cut from the left to fit the context
    curves: TemperatureCurves
    filters: FilterEffects
    samples: TemperatureSamples | None = field(default=None)

    def as_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "dropped": self.dropped,
            "curves": self.curves.as_dict(),
            "filters": self.filters.as_dict(),
            "samples": None if self.samples is None else self.samples.as_dict(),
        }


def tokenizer_logits(logits: torch.Tensor, tokenizer) -> torch.Tensor:
    """The fp32 logits (vocab,) of the ids the tokenizer has: a model's vocabulary padded past its tokenizer's loses its padding."""
    logits = logits.detach().float().cpu()
    return logits[: tokenizer.vocab_size] if tokenizer.vocab_size < logits.shape[-1] else logits


def temperature_curves(
    logits: torch.Tensor, tokenizer, *, top: int = 6, temperatures: Sequence[float] = CURVE_TEMPERATURES
) -> TemperatureCurves:
    """The `top` most likely next tokens' probabilities at each temperature (> 0), for next-token `logits` (vocab,).

    Each probability is softmax(logits / T), as `sampling.next_token_distribution` computes it; at
    every temperature the candidates' and `other_mass` add up to 1.
    """
    logits = tokenizer_logits(logits, tokenizer)
    top_ids = torch.topk(logits, min(top, logits.shape[-1])).indices.tolist()
    rows = torch.stack([next_token_distribution(logits, temperature=t) for t in temperatures])  # (temperatures, vocab)
    chosen = rows[:, top_ids]  # (temperatures, top)
    return TemperatureCurves(
        temperatures=[float(t) for t in temperatures],
        candidates=[
            CandidateCurve(token_id, tokenizer.decode([token_id]), float(logits[token_id]), chosen[:, column].tolist())
            for column, token_id in enumerate(top_ids)
        ],
        other_mass=(1 - chosen.sum(dim=1)).clamp(min=0).tolist(),
        entropy_bits=entropy(rows).tolist(),
        vocab_size=logits.shape[-1],
    )


def filter_effects(
    logits: torch.Tensor, *, top_k: Sequence[int] = TOP_K, top_p: Sequence[float] = TOP_P, min_p: Sequence[float] = MIN_P
) -> FilterEffects:
    """How many tokens each top-k, top-p and min-p setting keeps at temperature 1, and their probability mass.

    Uses `sampling.filter_logits`, the code generation samples with.
    """
    logits = logits.detach().float().cpu()
    probabilities = torch.softmax(logits, dim=-1)
    settings = [("top-k", k, SamplingSettings(top_k=k)) for k in top_k]
    settings += [("top-p", p, SamplingSettings(top_p=p)) for p in top_p]
    settings += [("min-p", p, SamplingSettings(min_p=p)) for p in min_p]
    effects = []
    for name, value, setting in settings:
        kept = torch.isfinite(filter_logits(logits.unsqueeze(0), setting)[0])  # (vocab,)
        effects.append(FilterEffect(name, float(value), int(kept.sum()), float(probabilities[kept].sum())))
    return FilterEffects(vocab_size=logits.shape[-1], entropy_bits=float(entropy(probabilities)), effects=effects)


def temperature_samples(
    model,
    tokenizer,
    prompt: str,
    *,
    temperatures: Sequence[float] = SAMPLE_TEMPERATURES,
    count: int = 3,
    max_new_tokens: int = 20,
    seed: int = 0,
) -> TemperatureSamples:
    """`count` continuations of `prompt` (at most `max_new_tokens` tokens each) at each temperature, drawn with `seed`.

    Each temperature's continuations are one batch from `generation.generate`, seeded the same way.
    A prompt longer than the context keeps its last tokens, without a warning (the view reports the cut).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextWarning)
        texts = [
            generate(model, tokenizer, [prompt] * count, max_new_tokens=max_new_tokens, temperature=t, seed=seed)
            for t in temperatures
        ]
    return TemperatureSamples(prompt, seed, max_new_tokens, [float(t) for t in temperatures], texts)


@torch.inference_mode()
def temperature_view(
    model, tokenizer, prompt: str, *, top: int = 6, samples: bool = True, count: int = 3, max_new_tokens: int = 20, seed: int = 0
) -> TemperatureView:
    """The slide for `prompt`: the curves and the filters on its next-token logits, and (samples) sampled continuations.

    A prompt longer than the context keeps its last tokens; an empty prompt is a ModelInputError.
    """
    ids, dropped = encode_text(model, tokenizer, prompt)
    device = next(model.parameters()).device
    logits = tokenizer_logits(model(torch.tensor([ids], device=device), last_only=True).logits[0, -1], tokenizer)
    return TemperatureView(
        prompt=prompt,
        dropped=dropped,
        curves=temperature_curves(logits, tokenizer, top=top),
        filters=filter_effects(logits),
        samples=temperature_samples(model, tokenizer, prompt, count=count, max_new_tokens=max_new_tokens, seed=seed) if samples else None,
    )


# -- the figures ------------------------------------------------------------------------------------


def draw_temperature_curves(curves: TemperatureCurves, lang: str = "en"):
    """Each candidate's probability against temperature, the rest's, and the entropy (bits, right axis)."""
    check_language(lang)
    figure, axis = new_figure(9.0, 5.0)
    for candidate in curves.candidates:
        shown = token_label(candidate.text)
        axis.plot(curves.temperatures, candidate.probabilities, linewidth=2, label=say(lang, f"« {shown} »", f"“{shown}”"))
    axis.plot(curves.temperatures, curves.other_mass, color="grey", linestyle="--", label=say(lang, "tous les autres", "all the others"))
    axis.plot([], [], color="black", linestyle=":", label=say(lang, "entropie (axe de droite)", "entropy (right axis)"))
    axis.set_ylim(0, 1.02)
    axis.set_xlim(0, max(curves.temperatures) * 1.02)
    axis.set_xlabel(say(lang, "température", "temperature"))
    axis.set_ylabel(say(lang, "probabilité", "probability"))
    if any(math.isclose(t, 1.0) for t in curves.temperatures) or min(curves.temperatures) < 1 < max(curves.temperatures):
        axis.axvline(1.0, color="black", linewidth=0.8, alpha=0.5)
    uncertainty = axis.twinx()
    uncertainty.plot(curves.temperatures, curves.entropy_bits, color="black", linestyle=":", linewidth=1.5)
    uncertainty.set_ylabel(say(lang, "entropie (bits)", "entropy (bits)"))
    uncertainty.set_ylim(0, max(max(curves.entropy_bits), 1e-3) * 1.1)
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="outside right upper")  # beside the curves, never over them
    axis.set_title(say(lang, "Basse température : précis et prévisible ; haute : varié et créatif",
                       "Low temperature: precise, predictable; high: varied, creative"))
    return figure


_FILTER_NAMES = ("top-k", "top-p", "min-p")


def _setting_label(effect: FilterEffect, lang: str) -> str:
    """"20" for top-k; "0,9" (fr) or "0.9" (en) for top-p and min-p."""
    if effect.filter == "top-k":
        return str(int(effect.value))
    return number_text(effect.value, lang, 2).rstrip("0").rstrip(",.")


def draw_filters(filters: FilterEffects, lang: str = "en"):
    """For each filter setting: the probability mass it keeps (bars) and how many tokens survive (labels)."""
    check_language(lang)
    figure, first = new_figure(11.0, 4.0)
    first.remove()
    panels = figure.subplots(1, len(_FILTER_NAMES), sharey=True)
    for axis, name in zip(panels, _FILTER_NAMES):
        effects = [effect for effect in filters.effects if effect.filter == name]
        labels = [_setting_label(effect, lang) for effect in effects]
        bars = axis.bar(range(len(effects)), [e.kept_mass for e in effects], color="#8e7cc3")
        for bar, effect in zip(bars, effects):
            plural = "s" if effect.survivors > 1 else ""
            axis.annotate(say(lang, f"{effect.survivors} jeton{plural}", f"{effect.survivors} token{plural}"),
                          (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        axis.set_xticks(range(len(effects)))
        axis.set_xticklabels(labels)
        axis.set_ylim(0, 1.12)
        axis.set_title(name)
    panels[0].set_ylabel(say(lang, "probabilité gardée (température 1)", "probability kept (temperature 1)"))
    figure.suptitle(say(lang, f"Ce que gardent les filtres, sur {number_text(filters.vocab_size, lang)} jetons "
                              f"(entropie {number_text(filters.entropy_bits, lang, 1)} bits)",
                        f"What the filters keep, of {number_text(filters.vocab_size, lang)} tokens (entropy {filters.entropy_bits:.1f} bits)"))
    return figure
