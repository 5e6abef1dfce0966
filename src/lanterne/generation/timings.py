"""Where a generation's time goes: reading the prompt (prefill), then writing one token at a time (decode).

The numbers llama.cpp and `ollama run --verbose` print, measured in the process: the prompt's tokens
and seconds, the new tokens and seconds, and the speed of each. Loading the model is counted apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Timings:
    """Seconds and tokens of one generation; `generate(..., timings=Timings())` fills it in."""

    load_s: float = 0.0  # reading the model (set by whoever loaded it)
    prefill_tokens: int = 0  # prompt tokens read
    prefill_s: float = 0.0  # reading them, up to the first new token's scores
    decode_tokens: int = 0  # new tokens chosen
    decode_s: float = 0.0  # choosing them and reading each back, compilation excluded
    compile_s: float = 0.0  # compiling the decoding step (0 when cached in this process, or not compiled)

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}

    def line(self) -> str:
        """One line, as `ollama run --verbose` reports: load, prompt and decode, with speeds."""
        text = (
            f"load {self.load_s:.2f} s · prompt {self.prefill_tokens} tokens in {self.prefill_s:.3f} s "
            f"({self.prefill_tokens_per_second:.1f} tok/s) · decode {self.decode_tokens} tokens in {self.decode_s:.3f} s "
            f"({self.decode_tokens_per_second:.1f} tok/s)"
        )
        return text + (f" · compile {self.compile_s:.1f} s" if self.compile_s else "")
