"""The feed-forward slide: after attention mixes tokens, each token's vector goes alone through a wider layer.

Measured per token and per layer: how much the block changes the vector (the length of what it adds
to the residual stream, beside what attention adds), its most active hidden units, and this model's
real width and activation (the slide says 4× with ReLU/GELU; GPT-2 is 4× GELU, Gemma 3 270M is 3.2×
gated GELU, SmolLM2 2.7× gated SiLU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lanterne.inspect.drawing import new_figure, say, set_token_ticks
from lanterne.inspect.recording import Recording, check_layer_head

TOP_UNITS = 5
FIGURE_TOKENS = 48

_ACTIVATION_NAMES = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU", "silu": "SiLU"}


@dataclass
class FeedForwardShape:
    d_model: int
    d_ff: int
    expansion: float  # d_ff / d_model (the slide's 4×)
    activation: str
    gated: bool  # activation(gate(x)) × expand(x): SwiGLU (Llama), GeGLU (Gemma)
    description: str


@dataclass
class ActiveUnit:
    unit: int
    activation: float


@dataclass
class FeedForwardView:
    shape: FeedForwardShape
    tokens: list[str]
    feedforward_norms: list[list[float]]  # (layers, time): length of what the block adds to each token's vector
    attention_norms: list[list[float]]  # (layers, time): the same for attention
    residual_norms: list[list[float]]  # (layers, time): length of the vector entering each block
    layer: int  # the layer whose hidden units are listed
    top_units: list[list[ActiveUnit]]  # per token, that layer's most active hidden units

    def as_dict(self) -> dict:
        return asdict(self)


def feedforward_shape(config) -> FeedForwardShape:
    expansion = config.d_ff / config.d_model
    activation = _ACTIVATION_NAMES.get(config.activation, config.activation)
    gated = config.feedforward == "gated"
    description = f"{config.d_model} → {config.d_ff} ({expansion:.2g}×), {'gated ' if gated else ''}{activation} → {config.d_model}"
    return FeedForwardShape(config.d_model, config.d_ff, round(expansion, 3), activation, gated, description)


def feedforward_view(model, recording: Recording, layer: int | None = None) -> FeedForwardView:
    """Per layer and token, the size of the feed-forward and attention contributions; `layer`'s top hidden units."""
    layer, _ = check_layer_head(model, layer)
    norms = lambda tensors: [[round(float(value), 4) for value in tensor.norm(dim=-1)] for tensor in tensors]  # noqa: E731
    hidden = recording.feedforward_hidden[layer]  # (time, d_ff)
    best = torch.topk(hidden.abs(), min(TOP_UNITS, hidden.shape[-1]), dim=-1)
    top_units = [
        [ActiveUnit(int(unit), round(float(hidden[token, unit]), 4)) for unit in units]
        for token, units in enumerate(best.indices)
    ]
    return FeedForwardView(
        shape=feedforward_shape(model.config), tokens=recording.tokens,
        feedforward_norms=norms(recording.feedforward_outputs), attention_norms=norms(recording.attention_outputs),
        residual_norms=norms(recording.block_inputs), layer=layer, top_units=top_units,
    )


def draw_contributions(view: FeedForwardView, lang: str = "en", last: int = FIGURE_TOKENS):
    """Two heatmaps (layers × tokens): how much attention and the feed-forward block change each token."""
    import numpy as np

    start = max(0, len(view.tokens) - last)
    tokens = view.tokens[start:]
    figure, _ = new_figure(min(14.0, 4.0 + 0.25 * len(tokens)), 7.5)
    figure.clear()
    axes = figure.subplots(2, 1, sharex=True)
    for axis, norms, title in (
        (axes[0], view.attention_norms, say(lang, "Ce qu'ajoute l'attention", "What attention adds")),
        (axes[1], view.feedforward_norms, say(lang, "Ce qu'ajoute le bloc feed-forward", "What the feed-forward block adds")),
    ):
        image = axis.imshow(np.array(norms)[:, start:], aspect="auto", cmap="viridis")
        axis.set_ylabel(say(lang, "couche", "layer"))
        axis.set_title(f"{title} ({say(lang, 'norme du vecteur', 'vector length')})")
        figure.colorbar(image, ax=axis)
    set_token_ticks(axes[1], tokens, "x")
    figure.suptitle(say(lang, "Feed-forward : ", "Feed-forward: ") + view.shape.description)
    return figure
