"""The GPT: embeddings, a stack of Transformer blocks, and logits over the vocabulary for the next token.

Each block is pre-norm: x + attention(norm(x)), then x + feed-forward(norm(x)). The last vector
of each position, normalised and multiplied by the (tied) embedding matrix, scores every token.
One model for GPT-2, Llama and Gemma 3: their differences are options of `GPTConfig`.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from lanterne.model.attention import AttentionDetails, CausalSelfAttention
from lanterne.model.config import GPTConfig
from lanterne.model.embedding import Embeddings
from lanterne.errors import ModelInputError
from lanterne.model.feedforward import FeedForward
from lanterne.model.layer_norm import make_norm
from lanterne.model.linear import Linear
from lanterne.model.output import GPTOutput
from lanterne.model.positions import RotaryEmbedding
from lanterne.model.pretrained import load_pretrained

if TYPE_CHECKING:
    from lanterne.generation.cache import KVCache
    from lanterne.tokenization import Tokenizer


class Block(nn.Module):
    """One Transformer block: attention mixes tokens, feed-forward refines each; both with residuals.

    With config.post_norms (Gemma), each sub-block's output is normalised again before it is added.
    """

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.norm_attention = make_norm(config)
        self.attention = CausalSelfAttention(config, layer)
        self.norm_feedforward = make_norm(config)
        self.feedforward = FeedForward(config)
        self.post_norm_attention = make_norm(config) if config.post_norms else None
        self.post_norm_feedforward = make_norm(config) if config.post_norms else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
        explain: bool = False,
    ) -> tuple[torch.Tensor, AttentionDetails | None]:
        """x: (batch, time, d_model) -> same shape."""
        mixed, details = self.attention(
            self.norm_attention(x), rotary=rotary, cache=cache, layer=layer, key_mask=key_mask, explain=explain
        )
        if self.post_norm_attention is not None:
            mixed = self.post_norm_attention(mixed)
        x = x + mixed
        refined = self.feedforward(self.norm_feedforward(x))
        if self.post_norm_feedforward is not None:
            refined = self.post_norm_feedforward(refined)
        return x + refined, details


class GPT(nn.Module):
    """A decoder-only Transformer language model (GPT-2 architecture)."""

    # Set by `quantized_linear.quantize_model`: the layout ('int8', 'int4', 'auto') of its quantised
    # layers. Such a model is for inference: inspection and training need full-precision weights.
    quantized: str | None = None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.final_norm = make_norm(config)
        if config.positions == "rope":
            self.rotary = RotaryEmbedding(config.head_dim, config.rope_base)
            # Gemma 3's sliding-window layers turn at their own base.
            self.rotary_local = RotaryEmbedding(config.head_dim, config.rope_local_base) if config.rope_local_base else None
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.token.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: residual projections shrink with depth so the sum stays of unit size.
        for name, parameter in self.named_parameters():
            if name.endswith("attention.output.weight") or name.endswith("feedforward.project.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- the forward pass ---------------------------------------------------------------------------

    def check_ids(self, ids: torch.Tensor, past_length: int = 0) -> None:
        """Raise ModelInputError for ids the model cannot read: wrong shape, out of vocabulary, too long."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ModelInputError("token ids must be a 2-D tensor of shape (batch, time); use ids.unsqueeze(0) for one sequence")
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ModelInputError(f"token ids must be integers, not {ids.dtype}")
        if ids.shape[1] == 0:
            raise ModelInputError("the sequence is empty; give at least one token")
        length = past_length + ids.shape[1]
        if length > self.config.context_length:
            raise ModelInputError(
                f"sequence of {length} tokens is longer than the model's context of {self.config.context_length}; "
                "keep the last tokens only (generation does this for you)"
            )
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = high if high >= self.config.vocab_size else low
            raise ModelInputError(
                f"token id {bad} is outside the vocabulary (0..{self.config.vocab_size - 1}); "
                "was the text encoded with this model's tokenizer?"
            )

    def forward(
        self,
        ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        inspect: bool = False,
        last_only: bool = False,
        check: bool = True,
    ) -> GPTOutput:
        """Scores for the next token at every position.

        ids: (batch, time). targets: (batch, time) next-token ids for the cross-entropy loss (-100 is
        ignored). cache: past keys/values (for generation). key_mask: (batch, past + time) booleans,
        False on padding. positions: (batch, time) position ids (default: past_length + 0..time-1).
        inspect: also return attention weights, Q/K/V and hidden states (same logits, slower path).
        last_only: logits for the last position only, (batch, 1, vocab_size): all generation needs.
        """
        past_length = cache.length if cache is not None else 0
        if self.quantized and (inspect or torch.is_grad_enabled() and targets is not None and self.training):
            raise ModelInputError(
                f"this model holds quantised weights ({self.quantized}), for generation only; inspection and training "
                "read full-precision weights: load it with weights='fp32' (--weights fp32)"
            )
        if check:
            self.check_ids(ids, past_length)
        time = ids.shape[1]
        if positions is None:
            positions = torch.arange(past_length, past_length + time, device=ids.device)
        x = self.embeddings(ids.long(), positions)  # (batch, time, d_model)
        rotary = rotary_local = None
        if self.config.positions == "rope":
            rotary = self.rotary(positions)
            rotary_local = self.rotary_local(positions) if self.rotary_local is not None else rotary
        hidden_states = [x] if inspect else None
        attentions = [] if inspect else None
        for layer, block in enumerate(self.blocks):
            turn = rotary_local if self.config.is_sliding(layer) else rotary
            x, details = block(x, rotary=turn, cache=cache, layer=layer, key_mask=key_mask, explain=inspect)
            if inspect:
                hidden_states.append(x)
                attentions.append(details)
        x = self.final_norm(x)
        if inspect:
            hidden_states[-1] = x
        if cache is not None:
            cache.advance(time)
        if last_only:
            x = x[:, -1:]  # the vocabulary projection is the largest matrix: skip it where unused
        logits = self.lm_head(x)  # (batch, time, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-100)
        return GPTOutput(
            logits=logits,
            loss=loss,
            attentions=tuple(attentions) if inspect else None,
            hidden_states=tuple(hidden_states) if inspect else None,
        )

    def new_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        """An empty key/value cache on this model's device and dtype."""
        from lanterne.generation.cache import KVCache

        parameter = next(self.parameters())
        return KVCache(self.config, batch_size, max_length, device=parameter.device, dtype=parameter.dtype)

    # -- size and cost ------------------------------------------------------------------------------

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied matrices counted once); `non_embedding` leaves out position embeddings, as nanoGPT."""
        total = sum(parameter.numel() for parameter in self.parameters())
        if non_embedding and self.embeddings.position is not None:
            total -= self.embeddings.position.weight.numel()
        return total

    def flops_per_token(self, sequence_length: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N + 12 · layers · d_model · time (PaLM appendix B)."""
        time = sequence_length or self.config.context_length
        return 6 * self.num_parameters(non_embedding=True) + 12 * self.config.n_layers * self.config.d_model * time

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, sequence_length: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak FLOP/s."""
        return self.flops_per_token(sequence_length) * tokens_per_second / peak_flops

    # -- files --------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, tokenizer: "Tokenizer | None" = None) -> None:
        """Write config.json, model.safetensors (and the tokenizer) to `folder`; see `checkpoints`."""
        from lanterne.weights import save_model

        save_model(self, folder, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_folder: str | os.PathLike, *, device: str | torch.device | None = None) -> "GPT":
        """A model from a Lanterne or HuggingFace folder, or a Hub name such as 'hf:gpt2'; see `checkpoints.load_model`.

        The loader imports the model, so the model reaches it through `model.pretrained` (no import back).
        """
        return load_pretrained(name_or_folder, device=device)
