"""What the comparison measures on text, for any model with the GPT's interface.

- `loss_by_position`: the mean loss at each position of a window read from its start. Position 0
  sees one token; the last position sees the whole window. A model that uses distant tokens keeps
  improving along the window; one that forgets them flattens out early.
- bits per byte (`lanterne.evaluation.bits_per_byte`): the loss per token turned into bits per byte of UTF-8
  text, so that models with different tokenizers compare.
- `matched_hidden_size`: the recurrent model whose parameter count is closest to a budget.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lanterne.recurrent import RecurrentConfig, RecurrentLM


@torch.inference_mode()
def loss_by_position(model, tokens: torch.Tensor, window: int, windows: int = 64, seed: int = 0) -> list[float]:
    """Mean cross-entropy (nats) at each of the `window` positions, over `windows` windows of `tokens` drawn with `seed`."""
    if tokens.numel() <= window:
        raise ValueError(f"need more than {window} tokens to draw windows of {window}")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - window - 1, (windows,), generator=generator)
    totals = torch.zeros(window, dtype=torch.float64)
    for batch in starts.split(16):
        inputs = torch.stack([tokens[start : start + window] for start in batch]).long()
        targets = torch.stack([tokens[start + 1 : start + window + 1] for start in batch]).long()
        logits = model(inputs).logits.float()  # (batch, window, vocab)
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (batch, window)
        totals += losses.sum(dim=0).double()
    return (totals / windows).tolist()


def matched_hidden_size(arch: str, parameters: int, vocab_size: int, d_model: int, n_layers: int = 1, context_length: int = 64) -> int:
    """The hidden size whose recurrent model has the parameter count closest to `parameters`."""

    def count(hidden: int) -> int:
        config = RecurrentConfig(arch=arch, vocab_size=vocab_size, context_length=context_length, d_model=d_model,
                                 hidden_size=hidden, n_layers=n_layers)
        with torch.device("meta"):
            return RecurrentLM(config).num_parameters()

    low, high = 1, 1
    while count(high) < parameters:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < parameters else (low, middle)
    return min((low, high), key=lambda hidden: abs(count(hidden) - parameters))
