"""Lanterne: build, train, run and look inside GPT-style language models.

Each idea of the lecture 'Introduction aux Transformers et LLMs' lives in its own module.
"""

from lanterne.errors import LanterneError

__version__ = "0.1.0"
__all__ = ["LanterneError", "__version__"]
