"""The attention slide: for one layer and head, how much each token looks at each earlier token.

Each row of the weights is a softmax over the past (it sums to 1; nothing above the diagonal), built
from the scaled Q·K scores. A sliding-window layer (Gemma 3) only sees its last `window` tokens.
With grouped-query attention several query heads share one key/value head, and the view says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lanterne.errors import ModelInputError
from lanterne.inspect.drawing import new_figure, say, set_token_ticks, wrapped_title
from lanterne.inspect.recording import Recording, check_layer_head

TOP_ATTENDED = 3
FIGURE_TOKENS = 48  # a heatmap shows at most the last this many tokens

# The slide's example: who did it? The last word, "was" / "était", has to look back at the suspects.
MURDER_MYSTERY = {
    "en": (
        "In the library, the detective gathered the butler, the gardener and the cook. The butler had an alibi, "
        "the gardener had muddy boots, and the knife belonged to the cook. After a long silence, the detective "
        "said that the murderer was"
    ),
    "fr": (
        "Dans la bibliothèque, le détective réunit le majordome, le jardinier et la cuisinière. Le majordome avait "
        "un alibi, le jardinier avait des bottes boueuses, et le couteau appartenait à la cuisinière. Après un long "
        "silence, le détective déclara que le meurtrier était"
    ),
}


@dataclass
class Attended:
    """A token a query looks at."""

    position: int
    token: str
    weight: float


@dataclass
class AttentionView:
    """One head's (or the heads' average) attention over a text."""

    layer: int
    head: int | None  # None: the average over the layer's heads
    key_value_head: int | None  # the key/value head this query head reads (grouped-query attention)
    query_groups: int  # query heads per key/value head
    window: int | None  # a sliding-window layer's width, None for a global layer
    tokens: list[str]
    weights: torch.Tensor  # (time, time): rows sum to 1, zero above the diagonal
    scores: torch.Tensor | None  # (time, time): scaled Q·K before the mask and softmax (None for the average)
    top_attended: list[list[Attended]] = field(default_factory=list)  # per query token, the tokens it weighs most

    def as_dict(self, last: int = 64) -> dict:
        """JSON: the weights (and scores) of the last `last` tokens, rounded; every token's top links."""
        start = max(0, len(self.tokens) - last)
        matrix = lambda tensor: [[round(float(value), 5) for value in row[start:]] for row in tensor[start:]]  # noqa: E731
        return {
            "layer": self.layer, "head": self.head, "key_value_head": self.key_value_head, "query_groups": self.query_groups,
            "window": self.window, "tokens": self.tokens, "shown_from": start, "weights": matrix(self.weights),
            "scores": matrix(torch.where(torch.isfinite(self.scores), self.scores, 0.0)) if self.scores is not None else None,
            "top_attended": [[vars(link) for link in links] for links in self.top_attended],
        }


def attention_view(model, recording: Recording, layer: int | None = None, head: int | None = None) -> AttentionView:
    """The weights of `head` in `layer` (None: the last layer; head None: the average over heads)."""
    layer, head = check_layer_head(model, layer, head)
    details = recording.attentions[layer]
    config = model.config
    if head is None:
        weights, scores = details.weights[0].float().mean(dim=0), None  # (time, time)
    else:
        weights = details.weights[0, head].float()
        scores = details.scores[0, head].float() if details.scores is not None else None
    window = config.sliding_window if config.is_sliding(layer) else None
    return AttentionView(
        layer=layer, head=head, key_value_head=None if head is None else head // config.query_groups,
        query_groups=config.query_groups, window=window, tokens=recording.tokens, weights=weights, scores=scores,
        top_attended=[_top_attended(row[: query + 1], recording.tokens) for query, row in enumerate(weights)],
    )


def _top_attended(row: torch.Tensor, tokens: list[str], count: int = TOP_ATTENDED) -> list[Attended]:
    best = torch.topk(row, min(count, row.shape[0]))
    return [Attended(int(position), tokens[int(position)], round(float(weight), 4)) for weight, position in zip(best.values, best.indices)]


def where_token_looks(view: AttentionView, position: int = -1, count: int = 5) -> list[Attended]:
    """The `count` tokens the token at `position` (default: the last) weighs most."""
    if not -len(view.tokens) <= position < len(view.tokens):
        raise ModelInputError(f"position {position} is outside the text's {len(view.tokens)} tokens")
    position %= len(view.tokens)
    return _top_attended(view.weights[position, : position + 1], view.tokens, count)


def attention_output_from_weights(model, recording: Recording, layer: int) -> torch.Tensor:
    """What the layer's attention adds to the residual stream, rebuilt by hand from the recorded
    weights and values: weights · V per head, heads side by side, the output projection (and Gemma's
    post-norm). Equals `recording.attention_outputs[layer]`: the weights are the whole story."""
    details = recording.attentions[layer]
    block = model.blocks[layer]
    values = details.values[0].float().repeat_interleave(model.config.query_groups, dim=0)  # (heads, time, head_dim)
    mixed = details.weights[0].float() @ values  # (heads, time, head_dim)
    mixed = mixed.transpose(0, 1).reshape(mixed.shape[1], -1)  # (time, heads * head_dim)
    parameter = block.attention.output.weight
    with torch.no_grad():
        out = block.attention.output(mixed.to(parameter.dtype))
        if block.post_norm_attention is not None:
            out = block.post_norm_attention(out)
    return out.float()


# -- figures --------------------------------------------------------------------------------------


def _title(view: AttentionView, lang: str) -> str:
    who = say(lang, "moyenne des têtes", "average of the heads") if view.head is None else say(lang, f"tête {view.head}", f"head {view.head}")
    title = say(lang, f"Attention — couche {view.layer}, {who}", f"Attention — layer {view.layer}, {who}")
    if view.head is not None and view.query_groups > 1:
        title += say(lang, f" (clés/valeurs de la tête {view.key_value_head})", f" (keys/values of head {view.key_value_head})")
    if view.window:
        title += say(lang, f" — fenêtre glissante de {view.window}", f" — sliding window of {view.window}")
    return title


def draw_attention(view: AttentionView, lang: str = "en", last: int = FIGURE_TOKENS):
    """Heatmap of the weights over the last `last` tokens: rows are queries, columns the tokens they look at."""
    start = max(0, len(view.tokens) - last)
    tokens = view.tokens[start:]
    size = min(12.0, 3.0 + 0.22 * len(tokens))
    figure, axis = new_figure(size + 1.5, size)
    image = axis.imshow(view.weights[start:, start:].numpy(), cmap="magma", vmin=0.0, aspect="auto")
    set_token_ticks(axis, tokens, "x")
    set_token_ticks(axis, tokens, "y")
    axis.set_xlabel(say(lang, "token regardé (clé)", "token looked at (key)"))
    axis.set_ylabel(say(lang, "token qui regarde (requête)", "token looking (query)"))
    title = _title(view, lang)
    if start:
        title += say(lang, f"\n(les {len(tokens)} derniers tokens sur {len(view.tokens)})", f"\n(last {len(tokens)} of {len(view.tokens)} tokens)")
    axis.set_title(wrapped_title(title, size))
    figure.colorbar(image, ax=axis, label=say(lang, "poids d'attention", "attention weight"))
    return figure


def draw_who_looks_where(view: AttentionView, position: int = -1, lang: str = "en", count: int = 8):
    """Bars: the tokens one token (default: the last) weighs most."""
    position %= len(view.tokens)
    links = where_token_looks(view, position, count)
    figure, axis = new_figure(7, 0.8 + 0.4 * len(links))
    axis.barh(range(len(links)), [link.weight for link in links][::-1], color="#5b3f8c")
    axis.set_yticks(range(len(links)), [f"{link.token!r} (#{link.position})" for link in links][::-1])
    axis.set_xlabel(say(lang, "poids d'attention", "attention weight"))
    token = view.tokens[position]
    axis.set_title(wrapped_title(say(lang, f"Où regarde {token!r} — ", f"Where {token!r} looks — ") + _title(view, lang).split("— ", 1)[1], 7))
    return figure


def most_focused_head(model, recording: Recording, position: int = -1) -> tuple[int, int]:
    """(layer, head) where the token at `position` puts the most weight on one earlier token other than
    the first (which many heads use as a resting place, an "attention sink") and itself."""
    position %= len(recording.ids)
    best, where = -1.0, (model.config.n_layers - 1, 0)
    if position < 2:
        return where
    for layer, details in enumerate(recording.attentions):
        weights = details.weights[0, :, position, 1:position].float()  # (heads, earlier tokens but the first)
        value, index = weights.max(dim=-1).values.max(dim=0)
        if float(value) > best:
            best, where = float(value), (layer, int(index))
    return where
