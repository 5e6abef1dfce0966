"""Looking inside: every slide of the lecture computed on the student's own sentence.

One module per slide. Each computes plain data (dataclasses with `as_dict()`, JSON-serialisable)
from one model and one text; a separate `draw_*` function in the same module turns that data into
a matplotlib figure, labelled in French or English. `lanterne.inspect.tour` walks them all.
"""
