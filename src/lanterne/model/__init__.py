"""The model: a GPT built from the lecture's parts, one module each.

`config.py` (its shape), `embedding.py` and `positions.py` (token vectors, where they stand),
`attention.py` (Q, K, V, several heads), `feedforward.py` (4× wider and back), `layer_norm.py`,
`linear.py` (and its quantised twin), `transformer.py` (the blocks stacked into a GPT), `output.py`
(what a forward pass returns), `pretrained.py` (how `GPT.from_pretrained` reaches the loader without importing it).
"""
