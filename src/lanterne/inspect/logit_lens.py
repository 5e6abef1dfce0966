"""The logit lens: what would the model say next if it stopped after layer k?

Each layer's hidden state goes through the final norm and the output layer, as the last one does:
the next token read early. Early layers often just echo the input; the answer forms in later layers.
At the last layer the lens gives exactly the model's own logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lanterne.inspect.drawing import new_figure, say, set_token_ticks, token_label
from lanterne.inspect.recording import Recording

FIGURE_TOKENS = 24


@dataclass
class LensReading:
    token: str
    id: int
    probability: float


@dataclass
class LogitLens:
    tokens: list[str]
    layers: list[str]  # 'embeddings', 'layer 0', ..., the last being the model's output
    readings: list[list[LensReading]]  # (layers + 1, time): the most likely next token at each position

    def as_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def lens_logits(model, recording: Recording, index: int) -> torch.Tensor:
    """Logits (time, vocab_size) read from hidden state `index` (0: embeddings; n_layers: the model's output)."""
    state = recording.hidden_states[index]
    parameter = model.lm_head.weight
    if index != len(recording.hidden_states) - 1:  # the last one is already normalised
        state = model.final_norm(state.to(parameter.dtype))
    return model.lm_head(state.to(parameter.dtype)).float()


@torch.inference_mode()
def logit_lens(model, recording: Recording, tokenizer) -> LogitLens:
    """The top next token at every position, read after the embeddings and after each block."""
    limit = min(tokenizer.vocab_size, model.config.vocab_size)
    parameter = model.lm_head.weight
    early = model.final_norm(torch.stack(recording.hidden_states[:-1]).to(parameter.dtype))  # (layers, time, d_model)
    states = torch.cat([early, recording.hidden_states[-1].to(parameter.dtype).unsqueeze(0)])  # the last is already normalised
    best = torch.softmax(model.lm_head(states).float()[..., :limit], dim=-1).max(dim=-1)  # one pass over the output layer
    readings = [
        [LensReading(tokenizer.decode([int(token_id)]), int(token_id), round(float(probability), 4)) for probability, token_id in zip(values, indices)]
        for values, indices in zip(best.values, best.indices)
    ]
    names = ["embeddings"] + [f"layer {layer}" for layer in range(recording.n_layers)]
    return LogitLens(recording.tokens, names, readings)


def draw_logit_lens(lens: LogitLens, lang: str = "en", last: int = FIGURE_TOKENS):
    """A grid (layers × positions) of the top next token, coloured by its probability."""
    import numpy as np

    start = max(0, len(lens.tokens) - last)
    tokens = lens.tokens[start:]
    layers = len(lens.layers)
    probabilities = np.array([[reading.probability for reading in row[start:]] for row in lens.readings])
    figure, axis = new_figure(min(16.0, 3.0 + 0.75 * len(tokens)), min(14.0, 1.5 + 0.38 * layers))
    image = axis.imshow(probabilities, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower")
    size = 8 if len(tokens) <= 16 else 6
    if layers * len(tokens) <= 1200:  # the words themselves, while they fit
        for row in range(layers):
            for column in range(len(tokens)):
                reading = lens.readings[row][start + column]
                axis.text(column, row, token_label(reading.token, 8), ha="center", va="center", fontsize=size,
                          color="white" if reading.probability > 0.6 else "black")
    set_token_ticks(axis, tokens, "x")
    names = [name if name == "embeddings" else name.split()[1] for name in lens.layers]
    names[0] = say(lang, "plong.", "emb.")
    axis.set_yticks(range(layers), names, fontsize=7 if layers > 20 else 9)
    axis.set_ylabel(say(lang, "lu après la couche", "read after layer"))
    axis.set_xlabel(say(lang, "position (token lu)", "position (token read)"))
    axis.set_title(say(lang, "Logit lens : le prochain token le plus probable, couche par couche",
                       "Logit lens: the most likely next token, layer by layer"))
    figure.colorbar(image, ax=axis, label=say(lang, "probabilité", "probability"))
    return figure
