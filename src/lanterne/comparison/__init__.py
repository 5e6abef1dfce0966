"""Why attention: the recap's recurrent models beside the Transformer, measured (`lanterne compare`).

`recall.py` is the synthetic long-range task (associative recall at a distance); the text
experiment and the figures build on the same trainer and models as everything else.
"""
