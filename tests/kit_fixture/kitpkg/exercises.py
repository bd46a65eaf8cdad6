"""The exercise table of the miniature course (the format of tinyprune/tools/exercises.py)."""

from tinyprune.tools.exercises import CHAPTERS, Exercise

FENCED_FOLDERS = ("kitpkg", "tutorials")

EXERCISES = (
    Exercise("layers.1", "softsign, elementwise", ("kitpkg/ops.py:softsign",)),
    Exercise("layers.2", "the doubling layer's backward pass", ("kitpkg/ops.py:Doubler.backward",),
             depends=("layers.1",)),
    Exercise("kernels.1", "the sum of each row, as a kernel", ("kitpkg/kernels.py:_row_sums",)),
)

__all__ = ["CHAPTERS", "EXERCISES", "FENCED_FOLDERS"]
