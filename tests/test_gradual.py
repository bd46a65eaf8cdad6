"""Chapter 3: gradual pruning while training (Zhu & Gupta), and pruning in place.

Run this chapter alone with ``python -m pytest -m prune``.  Gradual pruning
runs the strategies, which are exercises of the chapter (prune.1, prune.3,
prune.4); while they are stubs these tests wait for them (``waits_for``):
they are skipped, not failed.
"""

import math

import numpy as np
import pytest

from tinyprune import MobileNet, slopehtanh, trainer
from tinyprune.gradual import GradualPrune
from tinyprune.prune import (ChannelPrune, GlobalLevelPrune, LevelPrune, prune, prune_in_place,
                             sparsity)
from tinyprune.train import Adam

from helpers import TRAINING, assert_same_snapshot, snapshot, waits_for

pytestmark = pytest.mark.prune

def small_mobilenet():
    return MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0)


def small_data(n, seed):
    """``n`` random 32 x 32 images in [0, 1] with 0/1 labels: enough to take training steps."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 3, 32, 32)).astype(np.float32), rng.integers(0, 2, n)


def train_with(schedule, model, steps, watch=None):
    """``steps`` training steps (batches of 4, one epoch) with the schedule attached.

    ``watch(step)`` runs after the schedule's callback at every step, on the model as trained.
    """
    callback = schedule.attach(model)

    def both(epoch, batch, loss):
        callback(epoch, batch, loss)
        if watch is not None:
            watch(callback.step)

    with waits_for(*TRAINING):
        trainer(model, 1, data=(small_data(4 * steps, 1), small_data(8, 2)), batch_size=4, augment=False,
                progress=False, callback=both)
    return callback


def zhu_gupta(t, s0, sf, t0, n, dt):
    """The paper's formula, written out: the level at a pruning step t."""
    return sf + (s0 - sf) * (1 - (t - t0) / (n * dt)) ** 3


def last_pruning_step(t, t0, n, dt):
    """The latest of t0, t0 + dt, ..., t0 + n dt that is <= t (None before t0)."""
    steps = [t0 + i * dt for i in range(n + 1) if t0 + i * dt <= t]
    return steps[-1] if steps else None


def pruned_counts(model, strategy):
    """What a strategy's level shows in the model: zeros per layer, in total, or dead channels per conv."""
    rows = sparsity(model)
    if strategy is LevelPrune:
        return [row.zeros for row in rows]
    if strategy is GlobalLevelPrune:
        return rows.zeros
    return [row.zero_channels for row in rows if row.channels is not None]


def expected_counts(model, strategy, s):
    """The counts ``pruned_counts`` must show at level s: n - ceil((1 - s) n) of every n."""
    rows = sparsity(model)
    if strategy is LevelPrune:
        return [row.weights - math.ceil((1 - s) * row.weights) for row in rows]
    if strategy is GlobalLevelPrune:
        return rows.weights - math.ceil((1 - s) * rows.weights)
    return [row.channels - math.ceil((1 - s) * row.channels) for row in rows if row.channels is not None]


# ---------------------------------------------------------------------------
# The schedule's levels
# ---------------------------------------------------------------------------

def test_levels_worked_out_by_hand():
    # s_0 = 0, s_f = 0.5, t_0 = 10, Δt = 10, n = 4: pruning at t = 10, 20, 30, 40, 50, and
    #   s_t = 0.5 - 0.5 * (1 - (t - 10) / 40)^3
    #   t = 10: 0.5 - 0.5 * 1^3       = 0
    #   t = 20: 0.5 - 0.5 * (3/4)^3   = 0.5 - 0.5 * 27/64 = 0.5 - 0.2109375 = 0.2890625
    #   t = 30: 0.5 - 0.5 * (1/2)^3   = 0.5 - 0.0625                        = 0.4375
    #   t = 40: 0.5 - 0.5 * (1/4)^3   = 0.5 - 0.5 / 64 = 0.5 - 0.0078125    = 0.4921875
    #   t = 50: 0.5 - 0.5 * 0^3       = 0.5
    # Every number is a short binary fraction, so the float results are exact.
    schedule = GradualPrune(LevelPrune, final=0.5, initial=0.0, start=10, interval=10, n=4)
    assert schedule.pruning_steps() == [10, 20, 30, 40, 50]
    assert [schedule.level(t) for t in (10, 20, 30, 40, 50)] == [0.0, 0.2890625, 0.4375, 0.4921875, 0.5]
    assert [schedule.level(t) for t in (0, 9, 19, 25, 49, 51, 1000)] == [None, None, 0.0, 0.2890625,
                                                                         0.4921875, 0.5, 0.5]


@pytest.mark.parametrize("s0, sf, t0, n, dt", [(0.0, 0.8, 0, 5, 3), (0.1, 0.9, 4, 7, 2), (0.3, 0.3, 1, 2, 1)])
def test_level_at_every_step_equals_the_formula(s0, sf, t0, n, dt):
    schedule = GradualPrune(LevelPrune, final=sf, initial=s0, start=t0, interval=dt, n=n)
    for t in range(t0 + n * dt + 10):
        last = last_pruning_step(t, t0, n, dt)
        expected = None if last is None else zhu_gupta(last, s0, sf, t0, n, dt)
        assert schedule.level(t) == pytest.approx(expected, abs=1e-15), t
    assert schedule.level(t0 + n * dt) == sf               # exactly, not up to rounding


@pytest.mark.parametrize("strategy", [LevelPrune, GlobalLevelPrune, ChannelPrune], ids=lambda s: s.__name__)
def test_while_training_the_model_holds_the_formulas_level_at_every_step(strategy):
    s0, sf, t0, n, dt = 0.1, 0.6, 2, 4, 2
    schedule = GradualPrune(strategy, final=sf, initial=s0, start=t0, interval=dt, n=n)
    model = small_mobilenet()
    seen = []

    def watch(step):
        last = last_pruning_step(step, t0, n, dt)
        if last is not None:
            level = zhu_gupta(last, s0, sf, t0, n, dt)
            seen.append(step)
            assert pruned_counts(model, strategy) == expected_counts(model, strategy, level), step

    with waits_for("prune"):
        callback = train_with(schedule, model, steps=t0 + n * dt + 2, watch=watch)
    assert seen == list(range(t0, t0 + n * dt + 3))
    assert [step for step, _ in callback.levels] == [2, 4, 6, 8, 10] and callback.finished


@pytest.mark.parametrize("strategy", [LevelPrune, GlobalLevelPrune, ChannelPrune], ids=lambda s: s.__name__)
def test_the_final_level_is_exact(strategy):
    model = small_mobilenet()
    with waits_for("prune"):
        train_with(GradualPrune(strategy, final=0.7, start=1, interval=1, n=3), model, steps=6)
    assert pruned_counts(model, strategy) == expected_counts(model, strategy, 0.7)


@pytest.mark.parametrize("strategy", [LevelPrune, GlobalLevelPrune, ChannelPrune], ids=lambda s: s.__name__)
def test_masks_only_grow_and_pruned_weights_stay_zero_through_training(strategy):
    model = small_mobilenet()
    history = []

    def watch(step):
        history.append({key: mask.copy() for key, mask in model.mask_dict().items()})
        for key, keep in history[-1].items():
            assert np.all(model.state_dict()[key][~keep] == 0.0), f"step {step}: {key} moved"

    start = model.state_dict()
    with waits_for("prune"):
        train_with(GradualPrune(strategy, final=0.8, start=0, interval=2, n=4), model, steps=10, watch=watch)
    for before, after in zip(history, history[1:]):
        assert before.keys() <= after.keys()
        for key in before:
            assert not np.any(after[key] & ~before[key]), f"{key}: a pruned entry came back"
    kept = history[-1]["0.6.weight"]
    assert not np.array_equal(model[0][6].weight[kept], start["0.6.weight"][kept]), "no training happened"


def test_start_0_prunes_when_attached_before_the_first_step():
    model = small_mobilenet()
    with waits_for("prune"):
        callback = GradualPrune(LevelPrune, final=0.5, initial=0.25, start=0, interval=5, n=2).attach(model)
    assert callback.step == 0 and callback.levels == [(0, 0.25)]
    assert pruned_counts(model, LevelPrune) == expected_counts(model, LevelPrune, 0.25)


def test_a_factory_gives_the_strategy_its_level():
    model = small_mobilenet()
    with waits_for("prune"):
        callback = GradualPrune(lambda p: {"[0][6]": ChannelPrune(p)}, final=0.5, start=0, n=1).attach(model)
        callback()
    assert [path for path, layer in model.named_layers() if layer.masks] == ["[0][6]", "[0][7]"]
    assert np.count_nonzero(~model[0][7].masks["weight"]) == 8         # 16 - ceil(0.5 * 16)


@pytest.mark.parametrize("make, error, words", [
    (lambda: GradualPrune(LevelPrune, final=0.2, initial=0.5), ValueError, "levels only rise"),
    (lambda: GradualPrune("LevelPrune", final=0.5), TypeError, "function from a level"),
    (lambda: GradualPrune(LevelPrune, final=1.5), ValueError, "final"),
    (lambda: GradualPrune(LevelPrune, final=0.5, interval=0), ValueError, "interval"),
    (lambda: GradualPrune(LevelPrune, final=0.5, n=0), ValueError, "n must be"),
    (lambda: GradualPrune(LevelPrune, final=0.5, start=-1), ValueError, "start"),
    (lambda: GradualPrune(LevelPrune, 0.5, start=3, interval=2).level_at_pruning_step(4), ValueError,
     "step 4 is not a pruning step"),
], ids=["falling", "not callable", "final > 1", "interval 0", "n 0", "start < 0", "not a pruning step"])
def test_bad_schedules_are_refused(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_attach_checks_the_strategy_against_the_model_before_training():
    model = small_mobilenet()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\[0\]\[1\] is a BatchNorm2d"):
        GradualPrune(lambda p: {"[0][1]": LevelPrune(p)}, final=0.5).attach(model)
    with pytest.raises(TypeError, match="expected a model"):
        GradualPrune(LevelPrune, final=0.5).attach("model")
    assert_same_snapshot(before, snapshot(model))


# ---------------------------------------------------------------------------
# prune_in_place
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", [LevelPrune(0.4), GlobalLevelPrune(0.4), ChannelPrune(0.4)], ids=repr)
def test_prune_in_place_gives_what_prune_gives(strategy):
    with waits_for("prune"):
        model = prune(LevelPrune(0.2), small_mobilenet())          # already masked once
        expected = prune(strategy, model)
    assert prune_in_place(strategy, model) is model
    assert_same_snapshot(snapshot(expected), snapshot(model))


def test_prune_in_place_keeps_the_arrays_an_optimiser_holds():
    model = small_mobilenet()
    optimiser = Adam(model, lr=1e-2)
    arrays = {key: getattr(layer, name) for key, layer, name in model.named_parameters()}
    with waits_for("prune"):
        prune_in_place(ChannelPrune(0.5), model)
    assert all(getattr(layer, name) is arrays[key] for key, layer, name in model.named_parameters())
    with waits_for(*TRAINING):
        y = model.forward(model.prepare_input(small_data(4, 3)[0]))
        model.backward(np.ones_like(y))
        optimiser.step()
    assert len(model.mask_dict()) == 3 * 27       # every conv weight, its BatchNorm's gamma and beta
    for key, keep in model.mask_dict().items():
        assert np.all(model.state_dict()[key][~keep] == 0.0), key


def test_a_refused_prune_in_place_leaves_the_model_as_it_was():
    model = small_mobilenet()
    model[0][30].weight[3, 2] = np.nan                    # a layer late in the model
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\[0\]\[30\]: the weights are not finite"):
        prune_in_place(ChannelPrune(0.5), model)
    assert_same_snapshot(before, snapshot(model))
