"""Interoperability: moving models between Lanterne and other libraries (HuggingFace transformers).

Conversions are name-mapping tables over the same tensors, never a second model definition.
Formats are readers and writers that the loader (`checkpoints.py`) picks; they never import it back.
"""
