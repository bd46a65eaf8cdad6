"""Chapter 4's classic mistakes, planted one at a time: each must make its exercise's tests fail.

A planted mistake is the real function with a few characters changed
(``plant`` in ``tests/helpers.py``); the exercise's tests then run in this
process, selected by its marker, and at least one of them must fail
(``assert_caught``).  In a course copy, where the function is a stub,
these tests are skipped.
"""

import pytest

from tinyprune.prune import _mask_channel_parameters, keepprune
from tinyprune.strategies import ChannelPrune, LevelPrune, ThresholdPrune

from helpers import assert_caught, plant, planted

pytestmark = pytest.mark.prune

MISTAKES = [
    # prune.1: LevelPrune
    ("prune.1", LevelPrune.__call__, [("np.abs(w).ravel()", "w.ravel()")],
     "ranks by signed value, pruning the most negative weights"),
    ("prune.1", LevelPrune.__call__, [("np.abs(w).ravel()", "-np.abs(w).ravel()")],
     "prunes the largest magnitudes"),
    ("prune.1", LevelPrune.__call__, [("_n_pruned(self.p, w.size)", "math.ceil(self.p * w.size)")],
     "rounds the count the other way: ceil(p n) pruned instead of n - ceil((1 - p) n)"),
    ("prune.1", LevelPrune.__call__, [("np.lexsort((magnitude, keep.ravel()))", 'np.argsort(magnitude, kind="stable")')],
     "ranks masked entries by their stored value, not first"),
    # prune.2: ThresholdPrune
    ("prune.2", ThresholdPrune.__call__, [(">= self.t", "> self.t")],
     "prunes a weight exactly at the threshold"),
    ("prune.2", ThresholdPrune.__call__, [("np.abs(w) >= self.t", "w >= self.t")],
     "compares the signed value"),
    # prune.3: ChannelPrune
    ("prune.3", ChannelPrune.__call__, [("self.magnitude(channels.copy())", "channels.sum(axis=1)")],
     "scores a channel by its signed sum"),
    ("prune.3", ChannelPrune.__call__, [("self.magnitude(channels.copy())", "l2(channels.copy())")],
     "scores by L2 when L1 (or another magnitude) is asked"),
    ("prune.3", ChannelPrune.__call__, [("np.where(keep, w, 0)", "w")],
     "scores masked entries by their stored values"),
    ("prune.3", ChannelPrune._keep_channels, [("np.lexsort((scores, alive))", 'np.argsort(scores, kind="stable")')],
     "does not rank dead channels first"),
    ("prune.3", ChannelPrune._keep_channels, [("np.lexsort((scores, alive))", "np.lexsort((-scores, alive))")],
     "prunes the highest scores"),
    # prune.4: masking a pruned channel's bias and BatchNorm
    ("prune.4", _mask_channel_parameters, [("if following is not None and", "if False and")],
     "forgets the BatchNorm after the conv"),
    ("prune.4", _mask_channel_parameters, [('if name != "weight"]', "if False]")],
     "forgets the conv's own bias"),
    ("prune.4", _mask_channel_parameters, [(" and not strategy.can_prune(following)", "")],
     "also masks a following layer the strategy prunes itself (a depthwise conv)"),
    # prune.5: keepprune
    ("prune.5", keepprune, [("masks = {}", "masks = dict(layer.masks)")],
     "keeps the masks"),
    ("prune.5", keepprune, [("= model.copy()", "= model")],
     "changes the model it was given"),
    ("prune.5", keepprune, [("[~keep] = 0", "[keep & ~keep] = 0")],
     "drops the masks without zeroing what they hid"),
]

FILES = {"prune.3": ("test_prune.py", "test_criteria.py")}


@pytest.mark.parametrize("exercise, function, edits, mistake", planted(MISTAKES))
def test_the_exercises_tests_catch_the_planted_mistake(monkeypatch, exercise, function, edits, mistake):
    plant(monkeypatch, function, *edits)
    assert_caught(exercise, FILES.get(exercise, ("test_prune.py",)), f"a {function.__qualname__} that {mistake}")
