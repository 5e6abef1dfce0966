"""Truncated backpropagation through time: the training text read as `batch_size` contiguous streams.

A recurrent model (and the MLP's window of previous tokens) carries its state from one window to the
next of the same stream; gradients stop at the window's start (the state is detached), and a stream
that wraps around to its beginning starts again from an empty state.
"""

from __future__ import annotations

import numpy as np
import torch

from lanterne.errors import CheckpointError, TrainingDataError
from lanterne.recurrent import RecurrentState


class TokenStreams:
    """The training ids cut into `batch_size` equal streams, read window after window.

    Row b owns the ids [b * stream_length, (b + 1) * stream_length] (its last id is only a target) and
    reads them `context_length` at a time, in order: each batch continues where the previous one
    stopped. When a row's next window would run past its stream, the row starts its stream again
    (the rows are equal, so they wrap together; the last `stream_length % context_length` ids of a
    stream are never read). No randomness: the position of every row is the whole state.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, context_length: int) -> None:
        if batch_size < 1 or context_length < 1:
            raise TrainingDataError(f"batch_size {batch_size} and context_length {context_length} must both be at least 1")
        self.tokens = tokens
        self.batch_size = batch_size
        self.context_length = context_length
        self.stream_length = (len(tokens) - 1) // batch_size  # ids each row reads inputs from
        if self.stream_length < context_length:
            raise TrainingDataError(
                f"the training split's {len(tokens)} tokens cannot be cut into {batch_size} streams of at least "
                f"{context_length + 1} tokens; lower batch_size or context_length, or give more text"
            )
        self.starts = np.arange(batch_size, dtype=np.int64) * self.stream_length  # (batch,) where each stream begins
        self.offsets = np.zeros(batch_size, dtype=np.int64)  # (batch,) where each row's next window begins in its stream

    def next_windows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next window of every row: inputs and targets, int64 (batch, context_length), as `sample_windows`;
        and `fresh`, bool (batch,): True where the row starts its stream (its carried state must be emptied).
        """
        fresh = torch.from_numpy(self.offsets == 0)
        first = self.starts + self.offsets  # (batch,)
        windows = np.asarray(self.tokens[first[:, None] + np.arange(self.context_length + 1)])  # (batch, context + 1)
        windows = torch.from_numpy(windows.astype(np.int64))
        self.offsets += self.context_length
        self.offsets[self.offsets + self.context_length > self.stream_length] = 0  # no whole window left: wrap around
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous(), fresh

    def state_dict(self) -> dict:
        """Plain values (saved in the trainer state, read back with weights_only=True)."""
        return {"batch_size": self.batch_size, "context_length": self.context_length,
                "stream_length": self.stream_length, "offsets": self.offsets.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict` stopped; CheckpointError if the streams were cut differently."""
        saved = (state["batch_size"], state["context_length"], state["stream_length"])
        if saved != (self.batch_size, self.context_length, self.stream_length):
            raise CheckpointError(
                f"the run read its text as {saved[0]} streams of {saved[2]} tokens (windows of {saved[1]}), not "
                f"{self.batch_size} of {self.stream_length}; resume with batch_size={saved[0]}, or train into a new --out"
            )
        self.offsets = np.array(state["offsets"], dtype=np.int64)


def carry_over(state: RecurrentState, fresh: torch.Tensor) -> None:
    """Prepare `state` for the next window: detach it (backpropagation stops at the window's start) and
    empty the rows where `fresh` (batch,) is True (a zero state, and no previous ids for the MLP).
    """
    keep = ~fresh
    if isinstance(state.hidden, tuple):  # LSTM: (h, c), each (layers, batch, hidden)
        state.hidden = tuple(torch.where(keep.view(1, -1, 1), part.detach(), 0.0) for part in state.hidden)
    elif state.hidden is not None:  # RNN, GRU: (layers, batch, hidden)
        state.hidden = torch.where(keep.view(1, -1, 1), state.hidden.detach(), 0.0)
    if state.window is not None:  # MLP: (batch, context_length) previous ids, -1 for none
        state.window = torch.where(keep.view(-1, 1), state.window, -1)


# The carried state as named tensors, and the dimension that counts the rows (streams) in each.
ROW_DIMENSIONS = {"hidden": 1, "cell": 1, "window": 0}


def state_tensors(state: RecurrentState) -> dict[str, torch.Tensor]:
    """The carried state as named tensors for a checkpoint: hidden (and cell, LSTM), or window (MLP)."""
    tensors = {}
    if isinstance(state.hidden, tuple):
        tensors["hidden"], tensors["cell"] = state.hidden
    elif state.hidden is not None:
        tensors["hidden"] = state.hidden
    if state.window is not None:
        tensors["window"] = state.window
    return {name: tensor.detach() for name, tensor in tensors.items()}


def restore_state(state: RecurrentState, tensors: dict[str, torch.Tensor], rows: slice, device: torch.device) -> None:
    """Put `state_tensors`' output (every stream) back into `state`, keeping this process's `rows`."""
    mine = {name: tensor.narrow(ROW_DIMENSIONS[name], rows.start, rows.stop - rows.start).to(device) for name, tensor in tensors.items()}
    if "cell" in mine:
        state.hidden = (mine["hidden"], mine["cell"])
    elif "hidden" in mine:
        state.hidden = mine["hidden"]
    state.window = mine.get("window")
