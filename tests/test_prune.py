"""Chapter 4: pruning strategies, and masks that survive training.

Run this chapter alone with ``python -m pytest -m prune``, one exercise's
tests with ``python -m pytest -m ex_prune_1`` (the exercises are listed by
``tinyprune assignment --list``).  A test carries the markers of the
exercises it checks; the code of other exercises it only passes through
runs inside ``waits_for``, so that while that exercise is a stub the test
is skipped, not failed.
"""

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyprune import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool,
                       MobileNet, ReLU, SlopeHTanh, compute_dot_prods, identity, slopehtanh)
from tinyprune.prune import (ChannelPrune, GlobalLevelPrune, LevelPrune, PruningStrategy, ThresholdPrune,
                             iterativeprune, keepprune, l1, l2, prune, sparsity)
from tinyprune.train import Adam

from helpers import (TRAINING, ChannelScale, assert_same_snapshot, channel_pruned, level_pruned, snapshot,
                     trained_looking_mobilenet, waits_for)

pytestmark = pytest.mark.prune

TUTORIAL_INPUT = (1, 3, 96, 96)
SMALL_INPUT = (2, 3, 32, 32)
WEIGHTED = (Conv2d, DepthwiseConv2d, Dense)

# The tutorial model at 96x96, worked out by hand from the architecture: the
# first conv outputs 48x48, then each of the 13 groups (a depthwise conv at
# [0][3+6g], a pointwise one at [0][6+6g]) keeps or halves the side with its
# stride 1,2,1,2,1,2,1,1,1,1,1,2,1.
GROUP_SIDES = (48, 24, 24, 12, 12, 6, 6, 6, 6, 6, 6, 3, 3)
PATCHES = {"[0][0]": 48 * 48, "[1][2]": 1, "[1][4]": 1}
for _g, _side in enumerate(GROUP_SIDES):
    PATCHES[f"[0][{3 + 6 * _g}]"] = PATCHES[f"[0][{6 + 6 * _g}]"] = _side * _side


def tutorial_model(seed):
    return MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed)


@pytest.fixture(scope="module")
def small_model():
    """Width-0.25 MobileNet with a small head, run on 32x32 inputs."""
    return MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0)


def weighted_layers(model):
    return [(path, layer) for path, layer in model.named_layers() if isinstance(layer, WEIGHTED)]


# ---------------------------------------------------------------------------
# The tutorial's numbers
# ---------------------------------------------------------------------------

@pytest.mark.ex_prune_1
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_level_prune_0_2_gives_the_tutorial_counts(seed):
    pruned = prune(LevelPrune(0.2), tutorial_model(seed))
    with waits_for("count"):
        mults, adds, _ = compute_dot_prods(pruned, TUTORIAL_INPUT)
    assert (mults, adds) == (7_460_806, 7_273_983), \
        f"LevelPrune(0.2) of MobileNet(seed={seed}) counts {mults:,} multiplies and {adds:,} adds"


@pytest.mark.ex_prune_3
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_prune_0_2_gives_the_tutorial_counts(seed):
    with waits_for("prune.4"):
        pruned = prune(ChannelPrune(0.2), tutorial_model(seed))
    with waits_for("count"):
        mults, adds, _ = compute_dot_prods(pruned, TUTORIAL_INPUT)
    assert (mults, adds) == (6_105_200, 5_915_181), \
        f"ChannelPrune(0.2) of MobileNet(seed={seed}) counts {mults:,} multiplies and {adds:,} adds"


@pytest.mark.ex_prune_1
def test_level_prune_0_2_removes_44_794_weights_one_multiply_each():
    model = tutorial_model(0)
    pruned = prune(LevelPrune(0.2), model)
    by_hand = sum(w.size - math.ceil(0.8 * w.size) for _, w in
                  ((p, layer.weight) for p, layer in weighted_layers(model)))
    assert by_hand == 44_794
    zeros = sparsity(pruned).zeros
    assert zeros == 44_794, f"LevelPrune(0.2) of the tutorial's MobileNet zeroed {zeros:,} weights"
    with waits_for("count"):
        assert compute_dot_prods(pruned, TUTORIAL_INPUT)[0] == 7_505_600 - 44_794


@pytest.mark.parametrize("strategy", [pytest.param(LevelPrune(0.2), marks=pytest.mark.ex_prune_1),
                                      pytest.param(ChannelPrune(0.2), marks=pytest.mark.ex_prune_3)], ids=repr)
def test_sparse_and_dense_rules_follow_from_the_masks(strategy):
    with waits_for("prune.4"):
        pruned = prune(strategy, tutorial_model(0))
    # Ideal zero-skipping: every kept weight is one multiply in each of the
    # layer's P patches; a channel with k kept weights needs k - 1 adds per patch.
    sparse_mults = sparse_adds = 0
    for path, layer in weighted_layers(pruned):
        kept = layer.masks["weight"] if "weight" in layer.masks else np.ones(layer.weight.shape, bool)
        kept_per_channel = kept.reshape(kept.shape[0], -1).sum(axis=1)
        sparse_mults += PATCHES[path] * int(kept.sum())
        sparse_adds += PATCHES[path] * int(np.maximum(kept_per_channel - 1, 0).sum())
    if isinstance(strategy, ChannelPrune):
        # Whole channels only: the reference rule skips exactly what a sparse machine skips.
        assert (sparse_mults, sparse_adds) == (6_105_200, 5_915_181)
    with waits_for("count"):
        assert compute_dot_prods(pruned, TUTORIAL_INPUT, "sparse")[:2] == (sparse_mults, sparse_adds)
        # A dense kernel multiplies by zeros too: the unpruned baseline.
        assert compute_dot_prods(pruned, TUTORIAL_INPUT, "dense")[:2] == (7_505_600, 7_273_983)


# ---------------------------------------------------------------------------
# LevelPrune, ThresholdPrune, GlobalLevelPrune
# ---------------------------------------------------------------------------

HAND = np.array([0.3, -2.0, 0.1, -0.05, 1.0, -0.4], dtype=np.float32)


@pytest.mark.ex_prune_1
@pytest.mark.parametrize("p, keep, expected", [
    (0.5, None, [False, True, False, False, True, True]),     # 3 go: |w| = 0.05, 0.1, 0.3, whatever the sign
    (0.2, None, [True, True, True, False, True, True]),       # 6 - ceil(0.8 * 6) = 1 goes, not ceil(0.2 * 6) = 2
    (0.0, None, [True] * 6),
    (1.0, None, [False] * 6),
    (0.5, [True, True, True, True, False, True],              # the masked 1.0 goes first, then 0.05 and 0.1
     [True, True, False, False, False, True]),
], ids=["half", "a fifth", "none", "all", "masked first"])
def test_level_prune_by_hand(p, keep, expected):
    mask = LevelPrune(p)(HAND, None if keep is None else np.array(keep))
    assert mask.tolist() == expected, (f"LevelPrune({p}) on w = {HAND.tolist()} with keep = {keep}: "
                                       f"kept {mask.tolist()}, expected {expected}")


@pytest.mark.ex_prune_1
@pytest.mark.parametrize("w, p, expected", [
    ([0.5, -0.5, 0.5, 0.1], 0.5, [False, True, True, False]),     # equal |w|: the first one goes first
    ([1.0] * 10, 0.7, [False] * 6 + [True] * 4),                  # 10 - ceil(0.30000000000000004 * 10) = 6
    ([[1.0, -4.0], [3.0, -2.0]], 0.5, [[False, True], [True, False]]),   # ranked flat, in C order
], ids=["ties", "the tutorial's float count", "2-d"])
def test_level_prune_ties_counts_and_shapes_by_hand(w, p, expected):
    mask = LevelPrune(p)(np.array(w, dtype=np.float32))
    assert mask.tolist() == expected, f"LevelPrune({p}) on w = {w}: kept {mask.tolist()}, expected {expected}"


@pytest.mark.ex_prune_1
def test_level_prune_zeros_exactly_n_minus_ceil_of_the_smallest_magnitudes_per_layer():
    model = tutorial_model(3)
    pruned = prune(LevelPrune(0.2), model)
    for (path, before), (_, after) in zip(weighted_layers(model), weighted_layers(pruned)):
        n = before.weight.size
        keep = after.masks["weight"]
        assert np.count_nonzero(~keep) == n - math.ceil(0.8 * n), path
        assert np.abs(before.weight[~keep]).max() <= np.abs(before.weight[keep]).min(), path
        assert np.all(after.weight[~keep] == 0.0) and np.all(after.weight[keep] == before.weight[keep])


@pytest.mark.ex_prune_1
def test_level_prune_never_touches_biases_or_batchnorm():
    model = tutorial_model(0)
    pruned = prune(LevelPrune(0.9), model)
    for (path, before), (_, after) in zip(model.named_layers(), pruned.named_layers()):
        assert set(after.masks) <= {"weight"}, path
        if isinstance(after, WEIGHTED):
            assert "weight" in after.masks
        for name in after.param_names:
            if name != "weight" or not isinstance(after, WEIGHTED):
                np.testing.assert_array_equal(getattr(after, name), getattr(before, name))


@pytest.mark.ex_prune_1
@settings(max_examples=80, deadline=None)
@given(data=st.data(), p=st.floats(0, 1))
def test_level_prune_on_any_array_ranks_masked_first_then_magnitude_then_position(data, p):
    values = data.draw(st.lists(st.integers(-3, 3), min_size=1, max_size=40))
    w = np.array(values, dtype=np.float32)           # small integers: many ties, zeros among them
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=w.size, max_size=w.size)))
    mask = LevelPrune(p)(w, keep)                     # masked entries need not even be zero
    want = w.size - math.ceil((1 - p) * w.size)
    assert np.count_nonzero(~mask) == want, \
        f"LevelPrune({p}) on w = {w.tolist()}, keep = {keep.tolist()}: pruned {np.count_nonzero(~mask)}, expected {want}"
    # rank = (still kept?, |w|, index): everything pruned ranks below everything kept
    rank = [(bool(k), abs(v), i) for i, (k, v) in enumerate(zip(keep, w))]
    pruned_ranks = [r for r, m in zip(rank, mask) if not m]
    kept_ranks = [r for r, m in zip(rank, mask) if m]
    if pruned_ranks and kept_ranks:
        assert max(pruned_ranks) < min(kept_ranks), \
            (f"LevelPrune({p}) on w = {w.tolist()}, keep = {keep.tolist()}: pruned {max(pruned_ranks)} "
             f"(kept?, |w|, index) but kept {min(kept_ranks)}")


@pytest.mark.ex_prune_1
def test_level_prune_0_prunes_nothing_and_1_prunes_everything(small_model):
    nothing = prune(LevelPrune(0), small_model)
    everything = prune(LevelPrune(1), small_model)
    assert sparsity(nothing).zeros == 0
    assert sparsity(everything).zeros == sparsity(everything).weights == 224_048 - 256 * 64 - 64 + 256 * 16 + 16


@pytest.mark.ex_prune_2
def test_threshold_prune_zeros_exactly_the_weights_below_t(small_model):
    t = 0.1
    pruned = prune(ThresholdPrune(t), small_model)
    for (path, before), (_, after) in zip(weighted_layers(small_model), weighted_layers(pruned)):
        np.testing.assert_array_equal(after.masks["weight"], np.abs(before.weight) >= t, err_msg=path)
        assert np.all(after.weight[np.abs(before.weight) < t] == 0.0)


@pytest.mark.ex_prune_2
def test_threshold_prune_keeps_a_weight_exactly_at_the_threshold():
    w = np.array([[0.25, 0.5, -0.5], [0.75, -0.1, 0.0]], dtype=np.float32)
    expected = [[False, True, True], [True, False, False]]     # |w| >= 0.5, -0.5 included
    got = ThresholdPrune(0.5)(w).tolist()
    assert got == expected, f"ThresholdPrune(0.5) on w = {w.tolist()}: kept {got}, expected {expected}"
    assert ThresholdPrune(0)(w).all(), f"ThresholdPrune(0) on w = {w.tolist()} must keep everything"


@pytest.mark.ex_prune_1
def test_global_level_prune_uses_one_threshold_so_layers_end_at_different_sparsities(small_model):
    p = 0.6
    pruned = prune(GlobalLevelPrune(p), small_model)
    before = np.concatenate([layer.weight.ravel() for _, layer in weighted_layers(small_model)])
    keep = np.concatenate([layer.masks["weight"].ravel() for _, layer in weighted_layers(pruned)])
    assert np.count_nonzero(~keep) == before.size - math.ceil((1 - p) * before.size)
    assert np.abs(before[~keep]).max() <= np.abs(before[keep]).min()
    fractions = [row.fraction for row in sparsity(pruned)]
    assert max(fractions) - min(fractions) > 0.3     # Glorot scales differ from layer to layer


@pytest.mark.ex_prune_1
def test_repeated_level_prune_counts_from_the_original_size(small_model):
    once = prune(LevelPrune(0.2), small_model)
    twice = prune(LevelPrune(0.5), once)
    for (path, a), (_, b) in zip(weighted_layers(once), weighted_layers(twice)):
        n = a.weight.size
        assert np.count_nonzero(~b.masks["weight"]) == n - math.ceil(0.5 * n), path
        assert not np.any(b.masks["weight"] & ~a.masks["weight"]), "a mask regained an entry"


@pytest.mark.ex_prune_1
def test_a_milder_second_level_prune_keeps_the_first_masks(small_model):
    once = prune(LevelPrune(0.5), small_model)
    twice = prune(LevelPrune(0.2), once)
    for (path, a), (_, b) in zip(weighted_layers(once), weighted_layers(twice)):
        np.testing.assert_array_equal(a.masks["weight"], b.masks["weight"], err_msg=path)


# ---------------------------------------------------------------------------
# ChannelPrune
# ---------------------------------------------------------------------------

# Four output channels of two weights each, scored differently by every rule:
#   channel        L1    L2     signed sum
#   [3, -3]        6     4.24   0
#   [1, 4]         5     4.12   5
#   [4.5, 0]       4.5   4.5    4.5
#   [1, 1]         2     1.41   2
ROWS = [[3.0, -3.0], [1.0, 4.0], [4.5, 0.0], [1.0, 1.0]]


def kept_channels_of(mask):
    """(C,) bool: the output channels a keep-mask keeps (all of their weights)."""
    return mask.reshape(mask.shape[0], -1).all(axis=1).tolist()


@pytest.mark.ex_prune_3
@pytest.mark.parametrize("strategy, keep, expected", [
    (ChannelPrune(0.5), None, [True, True, False, False]),           # L1 6, 5 stay; 4.5 and 2 go
    (ChannelPrune(0.5, l2), None, [True, False, True, False]),       # L2 4.24, 4.5 stay
    (ChannelPrune(0.25), None, [True, True, True, False]),           # 4 - ceil(0.75 * 4) = 1 goes
    (ChannelPrune(0.5), [[False, True], [True, True], [True, True], [True, True]],
     [False, True, True, False]),                                    # the masked 3 reads as 0: L1 3 < 4.5
    (ChannelPrune(0.25, lambda rows: -l1(rows)), [[True, True], [False, False], [True, True], [True, True]],
     [True, False, True, True]),                                     # the dead channel goes first, score or not
], ids=["l1", "l2", "a quarter", "masked entries are zero", "dead first"])
def test_channel_prune_by_hand(strategy, keep, expected):
    w = np.array(ROWS, dtype=np.float32).reshape(4, 2, 1, 1)
    mask = strategy(w, None if keep is None else np.array(keep).reshape(4, 2, 1, 1))
    assert mask.shape == w.shape and mask.dtype == bool, \
        f"{strategy!r} returned a {mask.dtype} mask of shape {mask.shape}, expected bool {w.shape}"
    assert kept_channels_of(mask) == kept_channels_of(mask.reshape(4, -1).any(axis=1)), \
        f"{strategy!r} kept part of a channel: {mask.reshape(4, 2).tolist()}"
    assert kept_channels_of(mask) == expected, (f"{strategy!r} on channels {ROWS} with keep = {keep}: kept "
                                                f"channels {kept_channels_of(mask)}, expected {expected}")


@pytest.mark.ex_prune_3
def test_channel_prune_by_hand_breaks_ties_by_channel_index():
    w = np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32).reshape(4, 2, 1, 1)
    got = kept_channels_of(ChannelPrune(0.5)(w))    # L1 2, 2, 1, 2: channel 2, then channel 0
    assert got == [False, True, False, True], \
        f"ChannelPrune(0.5) on channels of L1 norm 2, 2, 1, 2: kept {got}, expected [False, True, False, True]"


@pytest.mark.ex_prune_1
@pytest.mark.parametrize("level", [0.2, 0.5])
def test_level_prune_of_a_fresh_model_is_what_the_tests_build_without_it(level):
    # The plots and counting chapters start from level_pruned (tests/helpers.py).
    model = trained_looking_mobilenet(1, statistics=False)
    assert_same_snapshot(snapshot(prune(LevelPrune(level), model)), snapshot(level_pruned(model, level)))


@pytest.mark.ex_prune_3
@pytest.mark.ex_prune_4
@pytest.mark.ex_prune_5
@pytest.mark.parametrize("level", [0.2, 0.5])
def test_channel_prune_of_a_fresh_model_is_what_the_tests_build_without_it(level):
    # The propagate and resize chapters start from channel_pruned (tests/helpers.py),
    # so that they run in a copy where this chapter is an exercise.
    model = trained_looking_mobilenet(1, statistics=False)
    pruned = prune(ChannelPrune(level), model)
    assert_same_snapshot(snapshot(pruned), snapshot(channel_pruned(model, level)))
    assert_same_snapshot(snapshot(keepprune(pruned)), snapshot(channel_pruned(model, level, masks=False)))


@pytest.mark.ex_prune_3
@pytest.mark.ex_prune_4
def test_channel_prune_zeros_the_lowest_l1_channels_and_masks_the_next_batchnorm(small_model):
    pruned = prune(ChannelPrune(0.3), small_model)
    leaves = list(pruned.named_layers())
    originals = dict(small_model.named_layers())
    for i, (path, layer) in enumerate(leaves):
        if isinstance(layer, Dense):
            assert layer.masks == {}, f"{path}: ChannelPrune must leave Dense layers alone"
        if not isinstance(layer, (Conv2d, DepthwiseConv2d)):
            continue
        C = layer.c_out
        kept = layer.masks["weight"].reshape(C, -1).all(axis=1)
        assert np.array_equal(kept, layer.masks["weight"].reshape(C, -1).any(axis=1)), "whole channels"
        assert np.count_nonzero(~kept) == C - math.ceil(0.7 * C), \
            f"model{path}: ChannelPrune(0.3) pruned {np.count_nonzero(~kept)} of {C} channels"
        scores = np.abs(originals[path].weight).reshape(C, -1).sum(axis=1)
        assert scores[~kept].max() <= scores[kept].min(), \
            f"model{path}: pruned a channel of L1 {scores[~kept].max()} and kept one of {scores[kept].min()}"
        bn_path, bn = leaves[i + 1]
        assert isinstance(bn, BatchNorm2d)
        for name in ("weight", "bias"):
            assert name in bn.masks, (f"model{bn_path}: the BatchNorm after the pruned conv model{path} "
                                      f"got no mask of its {name} (gamma, beta)")
            np.testing.assert_array_equal(bn.masks[name], kept, err_msg=f"model{bn_path}.{name}'s mask")
        assert np.all(bn.weight[~kept] == 0.0) and np.all(bn.bias[~kept] == 0.0)


@pytest.mark.ex_prune_3
def test_channel_prune_magnitude_receives_the_channel_matrix_and_decides():
    conv = Conv2d(2, 4, 3, rng=np.random.default_rng(0))
    seen = []

    def largest_first(channels):
        seen.append(channels.shape)
        return -l1(channels)                      # a perverse score: prune the *largest* channels

    with waits_for("prune.4"):
        pruned = prune(ChannelPrune(0.5, magnitude=largest_first), Chain(conv))
    assert seen == [(4, 2 * 3 * 3)]
    scores = l1(conv.weight.reshape(4, -1))
    kept = pruned[0].masks["weight"].reshape(4, -1).all(axis=1)
    np.testing.assert_array_equal(kept, scores <= np.sort(scores)[1])   # the two smallest survive


@pytest.mark.ex_prune_3
def test_repeated_channel_prune_ranks_dead_channels_lowest_whatever_the_magnitude():
    conv = Conv2d(2, 8, 3, rng=np.random.default_rng(3))
    with waits_for("prune.4"):
        once = prune(ChannelPrune(0.25), Chain(conv))
        dead_once = ~once[0].masks["weight"].reshape(8, -1).all(axis=1)
        # -l1 scores a dead channel (all zero) highest, yet it still counts as pruned first
        twice = prune(ChannelPrune(0.5, magnitude=lambda channels: -l1(channels)), once)
    dead_twice = ~twice[0].masks["weight"].reshape(8, -1).all(axis=1)
    assert np.count_nonzero(dead_once) == 2 and np.count_nonzero(dead_twice) == 4
    assert np.all(dead_twice[dead_once])


@pytest.mark.ex_prune_4
def test_channel_prune_masks_what_a_new_per_channel_layer_declares():
    model = Chain(Conv2d(2, 4, 1, rng=np.random.default_rng(4)), ChannelScale(4), ReLU())
    with waits_for("prune.3"):
        pruned = prune(ChannelPrune(0.5), model)
    kept = pruned[0].masks["weight"].reshape(4, -1).all(axis=1)
    assert np.count_nonzero(kept) == 2
    assert "scale" in pruned[1].masks, "a ChannelScale(4) after the pruned conv got no mask of its scale"
    np.testing.assert_array_equal(pruned[1].masks["scale"], kept)
    assert np.all(pruned[1].scale[~kept] == 0.0)


@pytest.mark.ex_prune_4
def test_channel_prune_also_masks_a_conv_bias_so_the_channel_outputs_zero():
    conv = Conv2d(2, 4, 1, bias=True, rng=np.random.default_rng(1))
    conv.bias[:] = [1.0, 2.0, 3.0, 4.0]
    with waits_for("prune.3"):
        pruned = prune(ChannelPrune(0.5), Chain(conv, ReLU()))
    kept = pruned[0].masks["weight"].reshape(4, -1).all(axis=1)
    assert "bias" in pruned[0].masks, "the pruned conv's bias [1, 2, 3, 4] got no mask"
    np.testing.assert_array_equal(pruned[0].masks["bias"], kept)
    y = pruned(np.random.default_rng(2).standard_normal((1, 2, 3, 3)))
    assert np.all(y[:, ~kept] == 0.0), f"pruned channels {np.flatnonzero(~kept).tolist()} do not output 0"


@pytest.mark.ex_prune_3
def test_repeated_channel_prune_counts_from_the_original_channel_count(small_model):
    with waits_for("prune.4"):
        twice = prune(ChannelPrune(0.5), prune(ChannelPrune(0.2), small_model))
    for path, layer in weighted_layers(twice):
        if isinstance(layer, Dense):
            continue
        C = layer.c_out
        assert np.count_nonzero(~layer.masks["weight"].reshape(C, -1).all(axis=1)) == C - math.ceil(C / 2)


@pytest.mark.ex_prune_4
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pruned_channels_output_exactly_zero_after_their_batchnorm(small_model, mode):
    model = small_model.copy()
    rng = np.random.default_rng(5)
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):      # non-trivial statistics and affine parameters
            layer.running_mean = rng.normal(0, 1, layer.channels).astype(np.float32)
            layer.running_var = rng.uniform(0.5, 2, layer.channels).astype(np.float32)
            layer.weight = rng.normal(1, 0.5, layer.channels).astype(np.float32)
            layer.bias = rng.normal(0, 1, layer.channels).astype(np.float32)
    with waits_for("prune.3"):
        pruned = prune(ChannelPrune(0.5), model)
    pruned.train(mode == "train")
    x = pruned.prepare_input(rng.standard_normal(SMALL_INPUT).astype(np.float32))
    checked = 0
    for path, layer in pruned.named_layers():   # the backbone and head, leaf by leaf
        with waits_for("kernels"):              # a train-mode 3x3 convolution unfolds with im2col
            x = layer.forward(x)
        if isinstance(layer, BatchNorm2d):
            kept = layer.masks["weight"]
            assert np.all(x[:, ~kept] == 0.0), f"model{path}: a pruned channel is not zero"
            assert np.all(np.any(x[:, kept] != 0.0, axis=(0, 2, 3))), f"model{path}: a kept channel died"
            checked += 1
    assert checked == 27


class FirstChannels(PruningStrategy):
    """A user's strategy for Conv2d: keep the first ``n`` output channels, or ``n`` entries of each row."""

    def __init__(self, n, structure):
        self.n = n
        self.structure = structure

    def __repr__(self):
        return f"{type(self).__name__}({self.n}, {self.structure!r})"

    def can_prune(self, layer):
        return isinstance(layer, Conv2d)

    def __call__(self, w, keep=None):
        rows = np.ones(w.shape, bool).reshape(w.shape[0], -1)
        if self.structure == "channels":
            rows[self.n:] = False
        else:
            rows[:, self.n:] = False
        return rows.reshape(w.shape)


def conv_bn_relu_with_statistics():
    """Conv 1x1 with a bias -> BatchNorm (running statistics that make a zero input non-zero) -> ReLU."""
    model = Chain(Conv2d(2, 4, 1, bias=True, rng=np.random.default_rng(8)), BatchNorm2d(4), ReLU())
    model[0].bias[:] = [0.5, -0.5, 1.0, 2.0]
    model[1].running_mean[:] = [-1.0, 1.0, -2.0, -3.0]
    model[1].bias[:] = [1.0, 2.0, 3.0, 4.0]
    return model


@pytest.mark.ex_prune_4
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_users_channel_strategy_masks_the_bias_and_the_next_batchnorm_too(mode):
    pruned = prune(FirstChannels(2, "channels"), conv_bn_relu_with_statistics())
    kept = np.array([True, True, False, False])
    np.testing.assert_array_equal(pruned[0].masks["weight"].reshape(4, -1).all(axis=1), kept)
    for i, name in ((0, "bias"), (1, "weight"), (1, "bias")):
        assert name in pruned[i].masks, (f"Conv2d(bias) -> BatchNorm2d -> ReLU, channels 2 and 3 pruned: "
                                         f"model[{i}].{name} got no mask")
        np.testing.assert_array_equal(pruned[i].masks[name], kept, err_msg=f"model[{i}].{name}'s mask")
    y = pruned.train(mode == "train")(np.random.default_rng(9).standard_normal((2, 2, 3, 3)))
    assert np.all(y[:, ~kept] == 0.0), f"{mode} mode: the pruned channels 2 and 3 do not output 0"
    assert np.all(np.any(y[:, kept] != 0.0, axis=(0, 2, 3))), f"{mode} mode: a kept channel outputs 0"


@pytest.mark.ex_prune_4
def test_the_next_per_channel_layer_is_masked_unless_the_strategy_prunes_it_itself():
    # Conv2d(2 -> 4) -> DepthwiseConv2d(4) -> BatchNorm2d(4), channels 2 and 3 of the conv pruned.
    # FirstChannels prunes only Conv2d, so the depthwise filters of those channels are masked
    # with the conv; ChannelPrune ranks a depthwise conv on its own, so there they are not.
    rng = np.random.default_rng(10)
    model = Chain(Conv2d(2, 4, 1, rng=rng), DepthwiseConv2d(4, 3, pad=1, rng=rng), BatchNorm2d(4))
    users = prune({"[0]": FirstChannels(2, "channels")}, model)
    assert "weight" in users[1].masks, "FirstChannels(2) of model[0]: the depthwise filters after it got no mask"
    got = kept_channels_of(users[1].masks["weight"])
    assert got == [True, True, False, False], f"FirstChannels(2) of model[0]: the depthwise conv kept {got}"
    with waits_for("prune.3"):
        channel = prune({"[0]": ChannelPrune(0.5)}, model)
    assert channel[1].masks == {}, (f"ChannelPrune(0.5) of model[0] alone masked {sorted(channel[1].masks)} "
                                    "of the depthwise conv after it, which ChannelPrune ranks on its own")
    assert users[2].masks == {} and channel[2].masks == {}, "the BatchNorm two layers on got a mask"


def test_a_users_entry_strategy_leaves_the_bias_and_batchnorm_alone():
    pruned = prune(FirstChannels(1, "entries"), conv_bn_relu_with_statistics())
    assert set(pruned[0].masks) == {"weight"} and pruned[1].masks == {}
    assert np.count_nonzero(pruned[0].masks["weight"]) == 4      # one entry of each row of 2


def test_a_channel_strategy_that_keeps_part_of_a_channel_is_refused():
    class HalfRows(FirstChannels):
        def __call__(self, w, keep=None):
            return super().__call__(w, keep) & (np.arange(w.shape[1]) == 0).reshape(1, -1, 1, 1)

    words = r"model\[0\]: HalfRows.*keeps only part of output channel\(s\) \[0, 1\]"
    with pytest.raises(ValueError, match=words):
        prune(HalfRows(2, "channels"), conv_bn_relu_with_statistics())
    with pytest.raises(ValueError, match=r"has structure 'rows', expected 'entries' or 'channels'"):
        prune(FirstChannels(2, "rows"), conv_bn_relu_with_statistics())


# ---------------------------------------------------------------------------
# Masks through training, keepprune
# ---------------------------------------------------------------------------

def adam_steps(model, x, steps, lr=1e-2):
    """``steps`` Adam steps on loss = sum of the outputs (so dL/dy = 1); they wait for the TRAINING chapters."""
    with waits_for(*TRAINING):
        optimiser = Adam(model, lr=lr)
        for _ in range(steps):
            y = model.forward(x)
            model.backward(np.ones_like(y))
            optimiser.step()


def separable_model(seed=0):
    """Every prunable layer type in 14 layers: conv, depthwise, pointwise, two dense; input (4, 3, 8, 8)."""
    rng = np.random.default_rng(seed)
    return Chain(Conv2d(3, 8, 3, stride=2, pad=1, rng=rng), BatchNorm2d(8), SlopeHTanh(),
                 DepthwiseConv2d(8, 3, stride=1, pad=1, rng=rng), BatchNorm2d(8), SlopeHTanh(),
                 Conv2d(8, 16, 1, rng=rng), BatchNorm2d(16), SlopeHTanh(),
                 GlobalMeanPool(), Flatten(), Dense(16, 8, rng=rng), SlopeHTanh(), Dense(8, 1, rng=rng))


SEPARABLE_INPUT = np.random.default_rng(7).standard_normal((4, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("strategy", [
    pytest.param(LevelPrune(0.5), marks=pytest.mark.ex_prune_1, id="level"),
    pytest.param(ChannelPrune(0.5), marks=[pytest.mark.ex_prune_3, pytest.mark.ex_prune_4], id="channel"),
    pytest.param([ChannelPrune(0.25), LevelPrune(0.5)],
                 marks=[pytest.mark.ex_prune_1, pytest.mark.ex_prune_3, pytest.mark.ex_prune_4],
                 id="channel then level")])
def test_masked_entries_stay_exactly_zero_through_20_adam_steps(strategy):
    pruned = separable_model()
    for s in strategy if isinstance(strategy, list) else [strategy]:
        pruned = prune(s, pruned)
    start = pruned.state_dict()
    adam_steps(pruned, SEPARABLE_INPUT, 20)
    masks = pruned.mask_dict()
    assert masks, "nothing was pruned"
    grads = pruned.grad_dict()
    for key, keep in masks.items():
        value = pruned.state_dict()[key]
        assert np.all(grads[key][~keep] == 0.0), f"{key}: a masked entry got a gradient"
        assert np.all(value[~keep] == 0.0), f"{key}: a masked entry moved"
        if keep.ndim > 1:                              # conv and dense weights: training moved the rest
            assert not np.array_equal(value[keep], start[key][keep]), f"{key}: training did not move it"


@pytest.mark.ex_prune_5
def test_after_keepprune_20_adam_steps_regrow_the_zeroed_weights():
    with waits_for("prune.1"):
        pruned = prune(LevelPrune(0.3), separable_model())
    adam_steps(pruned, SEPARABLE_INPUT, 20)
    masks = pruned.mask_dict()
    # A unit whose incoming weights are all pruned may end up with no gradient
    # on either side (a dead saddle), keepprune or not.  At 30% no unit of this
    # model loses all its weights, so every zeroed weight lies on a live path.
    for key, keep in masks.items():
        assert keep.reshape(keep.shape[0], -1).any(axis=1).all(), f"{key}: a whole unit was pruned"
    regrow = keepprune(pruned)
    adam_steps(regrow, SEPARABLE_INPUT, 20)
    after = regrow.state_dict()
    for key, keep in masks.items():
        assert np.all(after[key][~keep] != 0.0), f"{key}: a zeroed weight did not regrow"


@pytest.mark.ex_prune_5
def test_keepprune_bakes_the_zeros_in_and_drops_the_masks(small_model):
    with waits_for("prune.1"):
        pruned = prune(LevelPrune(0.5), small_model)
    baked = keepprune(pruned)
    assert baked.mask_dict() == {}, f"keepprune left masks on {sorted(baked.mask_dict())[:3]} ..."
    for (path, a), (_, b) in zip(weighted_layers(pruned), weighted_layers(baked)):
        np.testing.assert_array_equal(b.weight, a.effective("weight"), err_msg=path)
    assert pruned.mask_dict(), "keepprune changed its argument"
    assert sparsity(baked).zeros == sparsity(pruned).zeros


@pytest.mark.ex_prune_5
def test_keepprune_zeroes_what_a_mask_hid_and_leaves_its_argument_alone():
    # A mask may hide a stored non-zero (set directly, or by an older mask): the
    # forward pass read 0 there, so the baked array must hold 0.
    model = Chain(Conv2d(2, 3, 1, bias=True, rng=np.random.default_rng(0)), BatchNorm2d(3))
    model[0].bias[:] = [0.5, -1.0, 2.0]
    model[0].masks["bias"] = np.array([True, True, False])
    model[0].masks["weight"] = np.array([[True, False], [True, True], [False, True]]).reshape(3, 2, 1, 1)
    model[1].masks["weight"] = np.array([True, False, True])
    before = snapshot(model)
    baked = keepprune(model)
    assert baked is not model, "keepprune returned its argument, not a copy"
    assert baked.mask_dict() == {}, f"keepprune left the masks {sorted(baked.mask_dict())}"
    got = baked[0].bias.tolist()
    assert got == [0.5, -1.0, 0.0], \
        f"keepprune of the bias [0.5, -1.0, 2.0] masked [True, True, False]: got {got}, expected [0.5, -1.0, 0.0]"
    for i, name in ((0, "weight"), (1, "weight")):
        np.testing.assert_array_equal(getattr(baked[i], name), model[i].effective(name),
                                      err_msg=f"model[{i}].{name} after keepprune, against what the mask let through")
    np.testing.assert_array_equal(baked[1].bias, model[1].bias, err_msg="the unmasked BatchNorm beta")
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.ex_prune_1
@pytest.mark.ex_prune_3
@pytest.mark.ex_prune_4
def test_prune_returns_a_copy_and_leaves_its_argument_alone(small_model):
    before = snapshot(small_model)
    pruned = prune(ChannelPrune(0.5), prune(LevelPrune(0.5), small_model))
    assert pruned is not small_model and small_model.mask_dict() == {}
    assert_same_snapshot(before, snapshot(small_model))


# ---------------------------------------------------------------------------
# Per-layer control
# ---------------------------------------------------------------------------

def masked_paths(model):
    return {path for path, layer in model.named_layers() if layer.masks}


def test_a_list_mirrors_the_chain_and_a_strategy_for_a_subchain_prunes_all_inside(small_model):
    with waits_for("prune.1"):
        backbone_only = prune([LevelPrune(0.5), None], small_model)
    convs = {path for path, layer in weighted_layers(small_model) if path.startswith("[0]")}
    assert masked_paths(backbone_only) == convs


@pytest.mark.ex_prune_4
def test_a_nested_list_reaches_one_layer_and_identity_means_leave_alone(small_model):
    head = [identity, None, LevelPrune(0.5), None, None]
    with waits_for("prune.1", "prune.3"):
        pruned = prune([None, head], small_model)
        assert masked_paths(pruned) == {"[1][2]"}
        first_conv_only = [ChannelPrune(0.5)] + [None] * (len(small_model[0]) - 1)
        assert masked_paths(prune([first_conv_only, None], small_model)) == {"[0][0]", "[0][1]"}


@pytest.mark.ex_prune_4
def test_a_dict_prunes_by_path_in_any_spelling(small_model):
    with waits_for("prune.1", "prune.3"):
        pruned = prune({"model[0][3]": ChannelPrune(0.5), "[1][-1]": LevelPrune(0.5)}, small_model)
        assert masked_paths(pruned) == {"[0][3]", "[0][4]", "[1][4]"}    # [0][4] is the BatchNorm after
        assert masked_paths(prune({"[1]": LevelPrune(0.5)}, small_model)) == {"[1][2]", "[1][4]"}


# ---------------------------------------------------------------------------
# sparsity
# ---------------------------------------------------------------------------

def test_sparsity_counts_zeros_masks_and_zero_channels_per_layer_and_in_total():
    conv = Conv2d(2, 3, 1)
    conv.weight[:] = np.array([[1, 0], [0, 0], [2, 3]], np.float32).reshape(3, 2, 1, 1)
    dense = Dense(3, 2)
    dense.weight[:] = [[0, 1, 2], [3, 4, 5]]
    dense.masks["weight"] = np.array([[True, True, True], [True, False, True]])   # masked = zero
    table = sparsity(Chain(conv, ReLU(), GlobalMeanPool(), Flatten(), dense))
    assert [tuple(row) for row in table] == [
        ("[0]", "Conv2d", 6, 3, 0.5, 3, 1),
        ("[4]", "Dense", 6, 2, 2 / 6, None, None),
    ]
    assert (table.weights, table.zeros, table.channels, table.zero_channels) == (12, 5, 3, 1)
    assert table.fraction == 5 / 12
    text = str(table)
    assert "[0]" in text and "Conv2d" in text and "1/3" in text and "41.7%" in text
    assert text.splitlines()[-1].split() == ["total", "12", "5", "41.7%", "1/3"]


# ---------------------------------------------------------------------------
# iterativeprune
# ---------------------------------------------------------------------------

def tiny_model():
    rng = np.random.default_rng(0)
    return Chain(Conv2d(3, 4, 3, rng=rng), BatchNorm2d(4), ReLU(), GlobalMeanPool(), Flatten(),
                 Dense(4, 2, rng=rng))


@pytest.mark.ex_prune_1
def test_iterativeprune_returns_the_first_stage_when_the_second_never_recovers():
    model = tiny_model()
    before = snapshot(model)
    calls = []

    def finetune(m):
        calls.append(m)
        if sparsity(m).fraction < 0.3:         # stage 1: "train" in place and pass
            m[5].bias[:] += 1.0
            return True
        return False                            # stage 2 never recovers

    with pytest.warns(UserWarning, match="failed 3 times after stage 2"):
        result = iterativeprune(finetune, [LevelPrune(0.2), LevelPrune(0.5)], model, maxtries=3)
    assert len(calls) == 1 + 3
    assert result is calls[0]
    assert [row.zeros for row in sparsity(result)] == [108 - math.ceil(0.8 * 108), 8 - math.ceil(0.8 * 8)]
    np.testing.assert_array_equal(result[5].bias, [1.0, 1.0])   # stage 1's finetuning is kept
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.ex_prune_1
def test_iterativeprune_retries_on_the_same_candidate_without_re_pruning():
    answers = iter([False, True, True])
    calls = []

    def finetune(m):
        calls.append(m)
        return next(answers)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = iterativeprune(finetune, [LevelPrune(0.2), LevelPrune(0.5)], tiny_model())
    assert calls[0] is calls[1] and calls[2] is result
    assert sparsity(result).zeros == (108 - 54) + (8 - 4)


# ---------------------------------------------------------------------------
# Bad input: clear errors, and the model is left as it was
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda: LevelPrune(1.5), ValueError,
     "LevelPrune: the level (the fraction to prune) must be a finite number in [0.0, 1.0], got 1.5"),
    (lambda: LevelPrune(-0.1), ValueError, "in [0.0, 1.0], got -0.1"),
    (lambda: LevelPrune(float("nan")), ValueError, "in [0.0, 1.0], got nan"),
    (lambda: LevelPrune("0.2"), TypeError, "number"),
    (lambda: ChannelPrune(True), TypeError, "number"),
    (lambda: GlobalLevelPrune(2), ValueError, "GlobalLevelPrune"),
    (lambda: ThresholdPrune(-0.01), ValueError, ">= 0"),
    (lambda: ChannelPrune(0.2, magnitude="l1"), TypeError, "magnitude"),
], ids=["level>1", "level<0", "level nan", "level str", "level bool", "global", "threshold<0", "magnitude"])
def test_bad_strategy_arguments_are_refused(make, error, words):
    with pytest.raises(error, match=re.escape(words)):
        make()


def wrong_shape(channels):
    return channels.sum()                       # one number instead of one per channel


@pytest.mark.parametrize("strategy, error, words", [
    ([None], ValueError, "model is a Chain of 2 layers but the list of strategies has 1"),
    ([[None], None], ValueError, r"model\[0\] is a Chain of 81 layers"),
    ({"[0][99]": LevelPrune(0.2)}, ValueError, r"\[0\]\[99\]"),
    ({"[0][1]": LevelPrune(0.2)}, ValueError, r"model\[0\]\[1\] is a BatchNorm2d"),
    ({"[1][2]": ChannelPrune(0.2)}, ValueError, r"model\[1\]\[2\] is a Dense"),
    ([None, ChannelPrune(0.2)], ValueError, r"model\[1\] has no layer ChannelPrune\(0.2\) can prune"),
    pytest.param({"[1][2]": LevelPrune(0.5), "[0][0]": ChannelPrune(0.2, wrong_shape)}, ValueError,
                 r"model\[0\]\[0\].*returned shape \(\) .* expected \(8,\)",
                 marks=[pytest.mark.ex_prune_1, pytest.mark.ex_prune_3]),
    ([GlobalLevelPrune(0.5), None], ValueError, "on its own"),
    ({"[1]": LevelPrune(0.2), "[1][2]": LevelPrune(0.5)}, ValueError, r"model\[1\]\[2\] is given two"),
    ([None, "LevelPrune"], TypeError, r"model\[1\]: expected a pruning strategy"),
    (0.2, TypeError, "expected a pruning strategy"),
], ids=["list length", "nested length", "no such path", "level on batchnorm", "channel on dense",
        "nothing to prune", "magnitude shape", "global in list", "named twice", "not a strategy",
        "a bare number"])
def test_bad_prune_calls_name_the_layer_and_change_nothing(small_model, strategy, error, words):
    model = small_model.copy()
    model[0][6].masks["weight"] = np.random.default_rng(0).random(model[0][6].weight.shape) > 0.3
    model[0][6].weight[~model[0][6].masks["weight"]] = 0      # already carries a mask
    before = snapshot(model)
    with pytest.raises(error, match=words):
        prune(strategy, model)
    assert_same_snapshot(before, snapshot(model))


def test_channel_prune_on_a_model_without_convolutions_is_refused():
    model = Chain(Flatten(), Dense(4, 3), ReLU(), Dense(3, 1))
    before = snapshot(model)
    with pytest.raises(ValueError, match="the model has no layer ChannelPrune"):
        prune(ChannelPrune(0.2), model)
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.ex_prune_1
def test_iterativeprune_refuses_bad_arguments_and_a_finetune_without_a_verdict():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(TypeError, match="finetune must return True or False, got None"):
        iterativeprune(lambda m: None, [LevelPrune(0.2)], model)
    with pytest.raises(ValueError, match="maxtries"):
        iterativeprune(lambda m: True, [LevelPrune(0.2)], model, maxtries=0)
    with pytest.raises(TypeError, match="stages must be a list"):
        iterativeprune(lambda m: True, LevelPrune(0.2), model)
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.parametrize("strategy", [ChannelPrune(0.2), LevelPrune(0.2), GlobalLevelPrune(0.2)], ids=repr)
def test_non_finite_weights_are_named_by_layer_not_blamed_on_the_strategy(small_model, strategy):
    model = small_model.copy()
    model[0][6].weight[1, 2] = np.nan
    model[0][6].weight[3, 0] = np.inf
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"prune: model\[0\]\[6\]: the weights are not finite \(2 NaN or "
                                         r"infinite entries among 128\)"):
        prune(strategy, model)
    assert_same_snapshot(before, snapshot(model))


def test_sparsity_and_iterativeprune_say_what_they_expected():
    with pytest.raises(TypeError, match="sparsity: expected a model .*got NoneType"):
        sparsity(None)
    calls = []
    with pytest.raises(TypeError, match="stages must be a list of stages .*got 'abc'"):
        iterativeprune(calls.append, "abc", tiny_model())
    with pytest.raises(TypeError, match=r"stage 2 of 2: .*expected a pruning strategy.*got 'b'"):
        iterativeprune(calls.append, [LevelPrune(0.2), "b"], tiny_model())
    assert calls == [], "a stage was finetuned before the bad one was found"


def test_a_sparsity_table_shows_itself_at_a_prompt_and_in_jupyter():
    model = Chain(Dense(4, 2, bias=False))
    model[0].weight[:] = [[0, 1, 2, 3], [0, 0, 5, 6]]
    table = sparsity(model)
    assert repr(table) == str(table) and "total" in repr(table) and "37.5%" in repr(table)
    html_text = table._repr_html_()
    assert html_text.startswith("<table>") and "<tfoot>" in html_text
    assert '<td style="text-align:left">[0]</td>' in html_text and ">37.5%<" in html_text
