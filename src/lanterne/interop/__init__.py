"""Interoperability: moving models between Lanterne and other libraries (HuggingFace transformers).

Conversions are name-mapping tables over the same tensors, never a second model definition.
"""
