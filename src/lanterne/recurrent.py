"""The recap before the Transformer: language models that read a fixed window (MLP) or word by word (RNN).

- `mlp`: Bengio et al. (2003): the vectors of the `context_length` previous tokens side by side,
  one hidden layer (tanh), the scores of the next token. It sees nothing beyond its window.
- `rnn`, `gru`, `lstm`: PyTorch's own `nn.RNN` / `nn.GRU` / `nn.LSTM` over the token vectors. They
  read one token at a time and carry a state of fixed size: in principle the whole past, in
  practice it fades — the lecture's claim, measured by `lanterne compare`.

Same interface as the GPT: `model(ids, targets)` gives logits and loss, `generate`/`predict` work
(the state plays the role of the KV cache), `save_pretrained` and `lanterne.load` work.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.errors import ConfigError, ModelInputError
from lanterne.model.output import GPTOutput

ARCHITECTURES = ("mlp", "rnn", "gru", "lstm")
MODEL_TYPE = "lanterne-recurrent"
# A recurrent state has no length limit; generation's window never slides for it.
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class RecurrentConfig:
    """Shape of a recap model.

    arch: 'mlp', 'rnn', 'gru' or 'lstm'. vocab_size: token ids. d_model: width of each token vector.
    hidden_size: the MLP's hidden layer, or the recurrent state's size. n_layers: stacked recurrent
    layers (the MLP has one hidden layer). context_length: the MLP's window of previous tokens; for a
    recurrent model, the length of the training windows (backpropagation through time is cut there;
    the state itself carries on). dropout: between layers, during training.
    """

    arch: str = "lstm"
    vocab_size: int = 256
    context_length: int = 64
    d_model: int = 128
    hidden_size: int = 256
    n_layers: int = 1
    dropout: float = 0.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)} (or gpt)")
        for name in ("vocab_size", "context_length", "d_model", "hidden_size", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.tie_embeddings and self.hidden_size != self.d_model:
            raise ConfigError("tie_embeddings needs hidden_size == d_model (the output layer reuses the token vectors)")

    def with_changes(self, **changes: Any) -> "RecurrentConfig":
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecurrentConfig":
        known = {field.name for field in fields(cls)}
        unknown = set(data) - known - {"model_type"}
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return cls(**{key: value for key, value in data.items() if key in known})


class RecurrentState:
    """What a recap model remembers between calls: the recurrent state, or the MLP's last tokens.

    It stands where the GPT's KV cache stands (`length`, `advance`, `reset`), with no length limit.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.max_length = UNBOUNDED
        self.length = 0
        self.hidden: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None  # RNN/GRU: h; LSTM: (h, c)
        self.window: torch.Tensor | None = None  # MLP: (batch, context_length) last ids, -1 where none

    def advance(self, steps: int) -> None:
        self.length += steps

    def reset(self) -> None:
        self.length, self.hidden, self.window = 0, None, None


class RecurrentLM(nn.Module):
    """A language model of the recap: token vectors, then an MLP over a window or a recurrent layer, then scores."""

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        if config.arch == "mlp":
            self.hidden = nn.Linear(config.context_length * config.d_model, config.hidden_size)
            self.recurrent = None
        else:
            layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[config.arch]
            dropout = config.dropout if config.n_layers > 1 else 0.0
            self.recurrent = layer(config.d_model, config.hidden_size, config.n_layers, batch_first=True, dropout=dropout)
            self.hidden = None
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token.weight

    # -- the forward pass ---------------------------------------------------------------------------

    def check_ids(self, ids: torch.Tensor, past_length: int = 0) -> None:
        """Raise ModelInputError for ids the model cannot read (no length limit: the state carries on)."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] == 0:
            raise ModelInputError("token ids must be a non-empty 2-D tensor of shape (batch, time)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ModelInputError(
                f"a token id is outside the vocabulary (0..{self.config.vocab_size - 1}); was the text encoded with this model's tokenizer?"
            )

    def forward(
        self,
        ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: RecurrentState | None = None,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        inspect: bool = False,
        last_only: bool = False,
        check: bool = True,
    ) -> GPTOutput:
        """Scores for the next token at every position; ids (batch, time), as the GPT's.

        cache: the state carried from earlier calls (generation; training windows that follow each
        other). key_mask: (batch, past + time), False on left padding: padding leaves the state as it was.
        `positions` and `inspect` are accepted for the GPT's callers and change nothing here.
        """
        if check:
            self.check_ids(ids)
        ids = ids.long()
        time = ids.shape[1]
        past = cache.length if cache is not None else 0
        real = key_mask[:, past : past + time] if key_mask is not None else None  # the mask counts from the first position
        if self.config.arch == "mlp":
            features = self._windows(ids, cache, real)
        else:
            features = self._recurrent(ids, cache, real)
        if cache is not None:
            cache.advance(time)
        if last_only:
            features = features[:, -1:]
        logits = self.lm_head(self.dropout(features))  # (batch, time, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-100)
        return GPTOutput(logits=logits, loss=loss)

    def _windows(self, ids: torch.Tensor, cache: RecurrentState | None, real: torch.Tensor | None) -> torch.Tensor:
        """MLP features (batch, time, hidden): tanh(W · [vectors of the window ending at each token])."""
        batch, time = ids.shape
        window = self.config.context_length
        if real is not None:
            ids = ids.masked_fill(~real, -1)  # padding is "no token", as before the text starts
        past = cache.window if cache is not None and cache.window is not None else ids.new_full((batch, window), -1)
        history = torch.cat([past, ids], dim=1)  # (batch, window + time)
        if cache is not None:
            cache.window = history[:, -window:]
        windows = history.unfold(1, window, 1)[:, 1:]  # (batch, time, window): the window ends at each new token
        vectors = self.token(windows.clamp(min=0)) * (windows >= 0).unsqueeze(-1)  # no token: a zero vector
        return torch.tanh(self.hidden(self.dropout(vectors.flatten(2))))  # (batch, time, hidden)

    def _recurrent(self, ids: torch.Tensor, cache: RecurrentState | None, real: torch.Tensor | None) -> torch.Tensor:
        """RNN/GRU/LSTM features (batch, time, hidden), the state carried in and out through `cache`."""
        vectors = self.dropout(self.token(ids))  # (batch, time, d_model)
        state = cache.hidden if cache is not None else None
        if real is not None and not bool(real.all()):
            outputs, state = self._masked_steps(vectors, state, real)
        else:
            outputs, state = self.recurrent(vectors, state)
        if cache is not None:
            cache.hidden = state
        return outputs

    def _masked_steps(self, vectors: torch.Tensor, state, real: torch.Tensor):
        """One token at a time, keeping the old state where `real` is False (left padding)."""
        outputs = []
        for step in range(vectors.shape[1]):
            output, new_state = self.recurrent(vectors[:, step : step + 1], state)
            keep = real[:, step]
            if state is None:
                state = _zeros_like(new_state)
            state = _choose(keep, new_state, state)
            outputs.append(output * keep.view(-1, 1, 1))
        return torch.cat(outputs, dim=1), state

    @property
    def context_limit(self) -> int:
        """No limit: the state carries the whole past (how much of it survives is `lanterne compare`'s question)."""
        return UNBOUNDED

    def new_cache(self, batch_size: int, max_length: int | None = None) -> RecurrentState:
        """An empty state (a recurrent model has no length limit: `max_length` is ignored)."""
        return RecurrentState(batch_size)

    # -- size ---------------------------------------------------------------------------------------

    def num_parameters(self, non_embedding: bool = False) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def flops_per_token(self, sequence_length: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 per parameter used, as for the GPT."""
        return 6 * self.num_parameters()

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, sequence_length: int | None = None) -> float:
        return self.flops_per_token(sequence_length) * tokens_per_second / peak_flops

    # -- files --------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, tokenizer=None) -> None:
        from lanterne.weights import save_model

        save_model(self, folder, tokenizer)


def _zeros_like(state):
    if isinstance(state, tuple):
        return tuple(torch.zeros_like(part) for part in state)
    return torch.zeros_like(state)


def _choose(keep: torch.Tensor, new, old):
    """new where keep (batch,) is True, else old; states are (layers, batch, hidden) or LSTM's (h, c) pair."""
    if isinstance(new, tuple):
        return tuple(_choose(keep, n, o) for n, o in zip(new, old))
    return torch.where(keep.view(1, -1, 1), new, old)
