"""Chapter 6's classic mistakes, planted one at a time: each must make the exercise's tests fail.

A planted mistake is the real ``_slice_segment`` with a few characters
changed (``plant`` in ``tests/helpers.py``); the exercise's tests then run in
this process, selected by its marker, and at least one of them must fail
(``assert_caught``).  In a course copy, where the function is a stub,
these tests are skipped.
"""

import pytest

from tinyprune.resize import _slice_segment

from helpers import assert_caught, plant, planted

pytestmark = pytest.mark.resize

MISTAKES = [
    ("resize.1", _slice_segment, [("consumer_index))", "channel_index(0, channels)))")],
     "slices the consumer along its output axis instead of its input axis"),
    ("resize.1", _slice_segment, [("seg.channel_arrays()", "seg.channel_arrays(parameters_only=True)")],
     "forgets the BatchNorms' running statistics"),
    ("resize.1", _slice_segment, [("if name in layer.masks:", "if False:")],
     "forgets to slice the masks"),
]


@pytest.mark.parametrize("exercise, function, edits, mistake", planted(MISTAKES))
def test_the_exercises_tests_catch_the_planted_mistake(monkeypatch, exercise, function, edits, mistake):
    plant(monkeypatch, function, *edits)
    assert_caught(exercise, ("test_resize.py",), f"a {function.__qualname__} that {mistake}")
