"""Generation: the model writes, one token at a time: predict, choose (sampling), append, predict again.

`loop.py` is the readable loop (prompt, KV cache, sliding window), `sampling.py` turns scores into a
choice, `streaming.py` and `incremental_text.py` hand out the text as it comes.
"""

from lanterne.generation.loop import (
    END_OF_TEXT,
    ContextWarning,
    GeneratedRow,
    context_limit,
    encode_prompt,
    end_of_text_id,
    fit_prompt,
    generate,
    generate_ids,
)
from lanterne.generation.streaming import stream
from lanterne.generation.sampling import SamplingSettings
from lanterne.generation.timings import Timings

__all__ = [
    "END_OF_TEXT", "ContextWarning", "GeneratedRow", "SamplingSettings", "Timings", "context_limit", "encode_prompt",
    "end_of_text_id", "fit_prompt", "generate", "generate_ids", "stream",
]
