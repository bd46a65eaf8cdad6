"""Chapter 5's classic mistakes, planted one at a time: each must make its exercise's tests fail.

A planted mistake is the real sweep with a few characters changed (``plant``
in ``tests/helpers.py``); the exercise's tests then run in this process,
selected by its marker, and at least one of them must fail
(``assert_caught``).  In a course copy, where the sweep is a stub,
these tests are skipped.
"""

import pytest

from tinyprune.propagate import _backward, _forward

from helpers import assert_caught, plant, planted

pytestmark = pytest.mark.propagate

MISTAKES = [
    # propagate.1: the forward sweep
    ("propagate.1", _forward, [("+= sums * c_eval[j]", "+= 0 * c_eval[j]"),
                               ("+= sums * c_train[j]", "+= 0 * c_train[j]")],
     "zeroes the slices of non-zero constant channels without folding them"),
    ("propagate.1", _forward, [("bn.running_mean - running_mean_shift", "bn.running_mean + running_mean_shift"),
                               ("consumer.bias + bias_shift", "consumer.bias - bias_shift")],
     "folds with the wrong sign"),
    ("propagate.1", _forward, [("if padded:", "if False:")],
     "folds a constant into a padded consumer, whose borders also read zeros"),
    ("propagate.1", _forward, [("c_train[j] == c_eval[j]", "True")],
     "folds a channel whose train and eval constants differ into a bias"),
    # propagate.2: the backward sweep
    ("propagate.2", _backward, [("seg.channel_arrays(parameters_only=True)",
                                 "[(l, n, a) for l, n, a in seg.channel_arrays(parameters_only=True) "
                                 "if not isinstance(l, BatchNorm2d)]")],
     "forgets the BatchNorms"),
    ("propagate.2", _backward, [("seg.channel_arrays(parameters_only=True)",
                                 "[(l, n, a) for l, n, a in seg.channel_arrays(parameters_only=True) "
                                 "if not isinstance(l, DepthwiseConv2d)]")],
     "forgets the depthwise filter"),
    ("propagate.2", _backward, [("parameters_only=True", "parameters_only=False")],
     "zeroes the BatchNorms' running statistics too"),
]


@pytest.mark.parametrize("exercise, function, edits, mistake", planted(MISTAKES))
def test_the_exercises_tests_catch_the_planted_mistake(monkeypatch, exercise, function, edits, mistake):
    plant(monkeypatch, function, *edits)
    assert_caught(exercise, ("test_propagate.py", "test_resize.py"), f"a {function.__qualname__} that {mistake}")
