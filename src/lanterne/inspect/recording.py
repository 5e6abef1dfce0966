"""One forward pass, recorded: everything the other slides read, under stable names.

As TransformerLens's `run_with_cache`, but over Lanterne's own model, with no second copy: forward
hooks note each block's input, what attention and the feed-forward block add to the residual
stream, and the feed-forward block's hidden units; `inspect=True` gives the attention weights,
Q, K, V and the hidden states.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from lanterne.errors import ModelInputError

# The longest text a view records, in tokens, beyond the model's own context.
MAX_RECORDED_TOKENS = 4096


@dataclass
class Recording:
    """What one forward pass over a text computed. Shapes drop the batch: (time, ...)."""

    text: str
    ids: list[int]  # the tokens the model read (the first `dropped` were cut to fit the context)
    tokens: list[str]  # the text of each token
    dropped: int  # tokens cut from the left: the text was longer than the context
    logits: torch.Tensor  # (time, vocab_size), fp32
    hidden_states: list[torch.Tensor]  # n_layers + 1 of (time, d_model): embeddings, each block's output (the last after the final norm)
    block_inputs: list[torch.Tensor]  # n_layers of (time, d_model): the residual stream entering each block
    attention_outputs: list[torch.Tensor]  # n_layers of (time, d_model): what attention adds to the residual stream
    feedforward_outputs: list[torch.Tensor]  # n_layers of (time, d_model): what the feed-forward block adds
    feedforward_hidden: list[torch.Tensor]  # n_layers of (time, d_ff): its hidden units, after the activation
    attentions: list  # n_layers of AttentionDetails (batch dimension kept: (1, heads, time, ...))

    @property
    def n_layers(self) -> int:
        return len(self.block_inputs)


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each id's own text (a piece of a multi-byte character shows as '�')."""
    return [tokenizer.decode([token_id]) for token_id in ids]


def encode_text(model, tokenizer, text: str) -> tuple[list[int], int]:
    """The ids of `text` that fit the model's context, and how many were cut from the left.

    Empty text is a ModelInputError; a text longer than the context keeps its last tokens.
    """
    from lanterne.generation import encode_prompt

    if not isinstance(text, str) or not text.strip():
        raise ModelInputError("the text is empty; give a sentence to look at")
    ids = encode_prompt(tokenizer, text)
    limit = min(model.config.context_length, MAX_RECORDED_TOKENS)
    dropped = max(0, len(ids) - limit)
    return ids[dropped:], dropped


@torch.inference_mode()
def record(model, tokenizer, text: str) -> Recording:
    """Run `model` once over `text` and keep every intermediate value the slides show."""
    ids, dropped = encode_text(model, tokenizer, text)
    device = next(model.parameters()).device
    block_inputs: list[torch.Tensor] = []
    middles: list[torch.Tensor] = []  # residual stream after attention, before the feed-forward block
    outputs: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    handles = []
    for block in model.blocks:
        handles.append(block.register_forward_pre_hook(lambda module, args: block_inputs.append(args[0][0].float())))
        handles.append(block.norm_feedforward.register_forward_pre_hook(lambda module, args: middles.append(args[0][0].float())))
        handles.append(block.register_forward_hook(lambda module, args, output: outputs.append(output[0][0].float())))
        handles.append(block.feedforward.project.register_forward_pre_hook(lambda module, args: hidden.append(args[0][0].float())))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the explaining path's notes about speed
            result = model(torch.tensor([ids], device=device), inspect=True)
    finally:
        for handle in handles:
            handle.remove()
    return Recording(
        text=text,
        ids=ids,
        tokens=token_texts(tokenizer, ids),
        dropped=dropped,
        logits=result.logits[0].float(),
        hidden_states=[state[0].float() for state in result.hidden_states],
        block_inputs=block_inputs,
        attention_outputs=[middle - start for start, middle in zip(block_inputs, middles)],
        feedforward_outputs=[end - middle for middle, end in zip(middles, outputs)],
        feedforward_hidden=hidden,
        attentions=list(result.attentions),
    )


def check_layer_head(model, layer: int | None, head: int | None = None) -> tuple[int, int | None]:
    """`layer` (negative counts from the end; None: the last) and `head`, checked against the model."""
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    layer = n_layers - 1 if layer is None else layer
    if not -n_layers <= layer < n_layers:
        raise ModelInputError(f"layer {layer} does not exist: this model has layers 0 to {n_layers - 1}")
    if head is not None and not 0 <= head < n_heads:
        raise ModelInputError(f"head {head} does not exist: this model has heads 0 to {n_heads - 1} in each layer")
    return layer % n_layers, head
