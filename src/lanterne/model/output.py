"""What a language model's forward pass returns: the scores of the next token, and what inspection recorded.

Its own module because every model returns it: the GPT (`transformer.py`) and the recap models
(`recurrent.py`) both import it, and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lanterne.model.attention import AttentionDetails


@dataclass
class GPTOutput:
    """What a forward pass returns. Shapes: logits (batch, time, vocab_size)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    # With inspect=True: per layer, the attention details (weights, Q, K, V)...
    attentions: tuple[AttentionDetails, ...] | None = None
    # ... and the hidden states: the embeddings, then each block's output; the last one after the
    # final norm (as HuggingFace reports them). n_layers + 1 tensors of (batch, time, d_model).
    hidden_states: tuple[torch.Tensor, ...] | None = None
