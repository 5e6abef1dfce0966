"""Training: teaching a GPT next-word prediction on your own text.

`data` turns a corpus into cached token ids and draws the (input, target) windows the model
learns from; `trainer` runs the optimisation loop, with checkpoints, metrics and evaluation.
"""
