"""Chapter 5: propagating pruning through the network without changing what it computes.

Run this chapter alone with ``python -m pytest -m propagate``.

Exactness is checked in float64, where the propagated model must agree with
the pruned one to far better than 1e-5; the float32 test shows that
propagation costs no more than float32 rounding itself.

The exercises: ``pytest -m ex_propagate_1`` (the forward sweep, ``_forward``)
and ``-m ex_propagate_2`` (the backward sweep, ``_backward``).  Each sweep
has tests of its own, on one segment; the tests of ``prune_propagate`` run
both, and carry both markers unless they check one sweep only, in which
case the other waits (``waits_for``).  The channel-pruned models come from
``tests/helpers.py`` (``channel_pruned``), not from the prune chapter, so
that these tests run in a copy where pruning is an exercise.
"""

import numpy as np
import pytest

from tinyprune import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, Layer,
                       MobileNet, ReLU, SlopeHTanh, compute_dot_prods, slopehtanh)
from tinyprune.propagate import _backward, _forward, channel_constants, prune_propagate, segments

from helpers import (ChannelScale, assert_float32_costs_no_more_than_rounding,
                     assert_returns_a_new_model_and_leaves_its_argument_alone, assert_same_function,
                     assert_same_snapshot, channel_pruned, dead_channel_mobilenet, relative_error, run,
                     snapshot, trained_looking_mobilenet, waits_for)

pytestmark = pytest.mark.propagate

EPS = 1e-5   # BatchNorm2d's default eps


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def pruned_channels(layer):
    """Output channels whose whole weight row is masked (what ChannelPrune pruned)."""
    mask = layer.masks["weight"]
    return set(np.flatnonzero(~mask.reshape(mask.shape[0], -1).any(axis=1)).tolist())


def zero_rows(layer):
    w = layer.weight
    return set(np.flatnonzero(~w.reshape(w.shape[0], -1).any(axis=1)).tolist())


def set_statistics(bn, gamma, beta, mean, var):
    bn.weight[:] = gamma
    bn.bias[:] = beta
    bn.running_mean[:] = mean
    bn.running_var[:] = var


def f64(*layers):
    return Chain(*layers).to(np.float64)


# ---------------------------------------------------------------------------
# The tutorial's model, channel-pruned, with non-trivial statistics
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(11).uniform(0, 1, (4, 3, 32, 32))


@pytest.fixture(scope="module")
def masked():
    """ChannelPrune(0.2) of a float64 tutorial MobileNet with trained-looking statistics (masks kept)."""
    return channel_pruned(trained_looking_mobilenet(1), 0.2)


@pytest.fixture(scope="module")
def pruned():
    """The same, after keepprune: plain zeros, no masks."""
    return channel_pruned(trained_looking_mobilenet(1), 0.2, masks=False)


@pytest.fixture(scope="module")
def propagated(pruned):
    return prune_propagate(pruned)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_returns_a_new_model_and_leaves_its_argument_unchanged(pruned):
    assert_returns_a_new_model_and_leaves_its_argument_alone(prune_propagate, pruned)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_propagation_zeroes_more_weights_than_pruning(pruned, propagated):
    def zeros(model):
        return sum(int(np.count_nonzero(v == 0)) for v in model.state_dict().values())
    assert zeros(propagated) > zeros(pruned) + 1000


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_mobilenet_output_is_unchanged(pruned, propagated, batch, training):
    expected = run(pruned, batch, training)
    assert relative_error(run(propagated, batch, training), expected) < 1e-9


@pytest.mark.ex_propagate_1
def test_folds_are_needed_in_eval_mode(pruned, batch):
    # Undo the folds into running means: the eval output must then move, or
    # the test above would not have tested them.
    with waits_for("propagate.2"):
        unfolded = prune_propagate(pruned)
    moved = 0
    for (_, a), (_, b) in zip(unfolded.named_layers(), pruned.named_layers()):
        if isinstance(a, BatchNorm2d) and not np.array_equal(a.running_mean, b.running_mean):
            a.running_mean = b.running_mean.copy()
            moved += 1
    assert moved >= 10
    assert relative_error(run(unfolded, batch, False), run(pruned, batch, False)) > 1e-3


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_float32_propagation_costs_no_more_than_float32_rounding(pruned, batch):
    assert_float32_costs_no_more_than_rounding(prune_propagate, pruned, batch)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_dead_channels_are_the_union_of_producer_and_depthwise_pruning(masked, propagated):
    # Group g's channels are made by conv [0][0] (g = 0) or pointwise [0][6g]
    # and filtered by depthwise [0][6g+3]; the last pointwise [0][78] feeds
    # the dense head.  A channel dies if pruned in either.
    backbone = masked[0]
    producers = [0] + [6 * g for g in range(1, 14)]
    for g, p in enumerate(producers):
        expected = pruned_channels(backbone[p])
        if g < 13:
            expected |= pruned_channels(backbone[p + 3])
            assert zero_rows(propagated[0][p + 3]) == expected, f"depthwise [0][{p + 3}]"
        assert zero_rows(propagated[0][p]) == expected, f"producer [0][{p}]"
        consumer = propagated[0][p + 6] if g < 13 else propagated[1][2]
        w = consumer.weight
        unread = set(np.flatnonzero(~np.swapaxes(w, 0, 1).reshape(w.shape[1], -1).any(axis=1)).tolist())
        assert unread == expected, f"consumer of group {g}"


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_propagation_is_idempotent(propagated):
    assert_same_snapshot(snapshot(prune_propagate(propagated)), snapshot(propagated))


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_masks_only_lose_entries_and_lose_every_zeroed_one(masked, batch):
    result = prune_propagate(masked)
    assert result.mask_dict().keys() == masked.mask_dict().keys()
    old_state, new_state = masked.state_dict(), result.state_dict()
    lost = 0
    for key, old in masked.mask_dict().items():
        new = result.mask_dict()[key]
        assert not np.any(new & ~old), key                          # nothing comes back
        zeroed = (old_state[key] != 0) & (new_state[key] == 0)
        assert not np.any(new & zeroed), key                        # zeroed => masked
        lost += int(np.count_nonzero(old & ~new))
    assert lost > 100
    assert_same_function(result, masked, batch, 1e-9)


# ---------------------------------------------------------------------------
# Counting after propagation (the tutorial's second-to-last number)
# ---------------------------------------------------------------------------

# Channels of the 14 channel groups at width 0.25, and the side of the
# feature map each group's depthwise (and pointwise) conv outputs at 96x96.
GROUP_CHANNELS = (8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256)
GROUP_SIDES = (48, 24, 24, 12, 12, 6, 6, 6, 6, 6, 6, 3, 3)


def union_prediction(masked):
    """Reference-rule (mults, adds) at (1, 3, 96, 96) from the pruned masks alone.

    dead[g] = channels of group g pruned in its producer or in the depthwise
    conv after it.  Per layer (P patches, K terms, C outputs, Z dead outputs,
    U scattered zeros): mults P*K*C - U - Z*P*K, adds P*(K-1)*(C-Z).
    """
    backbone = masked[0]
    dead = [len(pruned_channels(backbone[0]) | pruned_channels(backbone[3]))]
    for g in range(1, 14):
        producer = pruned_channels(backbone[6 * g])
        depthwise = pruned_channels(backbone[6 * g + 3]) if g < 13 else set()
        dead.append(len(producer | depthwise))
    P = 48 * 48
    mults = P * 27 * (8 - dead[0])              # first conv: K = 3*3*3, no dead inputs
    adds = P * 26 * (8 - dead[0])
    for g in range(13):
        P = GROUP_SIDES[g] ** 2
        C_in, C_out = GROUP_CHANNELS[g], GROUP_CHANNELS[g + 1]
        live_in = C_in - dead[g]
        mults += P * 9 * live_in                # depthwise: K = 9, dead filters all zero
        adds += P * 8 * live_in
        Z = dead[g + 1]                          # pointwise: K = C_in
        U = (C_out - Z) * dead[g]                # dead input columns of live rows
        mults += P * C_in * C_out - U - Z * P * C_in
        adds += P * (C_in - 1) * (C_out - Z)
    mults += 256 * 64 - 64 * dead[13]           # Dense(256, 64): dead input columns
    adds += 255 * 64
    mults += 64                                  # Dense(64, 1)
    adds += 63
    return mults, adds


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
@pytest.mark.parametrize("seed", [0, 1])
def test_propagated_count_is_the_union_of_pruned_channels(seed):
    base = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed)
    masked = channel_pruned(base, 0.2)
    propagated = prune_propagate(channel_pruned(base, 0.2, masks=False))
    with waits_for("count"):
        mults, adds, _ = compute_dot_prods(propagated, (1, 3, 96, 96), "reference")
    assert (mults, adds) == union_prediction(masked)
    # The seed's draw printed 5,002,864 / 4,899,018; draws spread by about 45 k.
    assert abs(mults - 5_002_864) < 250_000 and abs(adds - 4_899_018) < 250_000


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_propagation_leaves_the_zeros_the_resize_tests_build_without_it(pruned, propagated):
    # test_resize.py starts from dead_channel_mobilenet (tests/helpers.py), so that
    # it runs in a copy where this chapter is an exercise: the same zeros, no folds.
    built = dead_channel_mobilenet(trained_looking_mobilenet(1), 0.2).state_dict()
    for key, value in propagated.state_dict().items():
        if "running" not in key:
            np.testing.assert_array_equal(value == 0, built[key] == 0, err_msg=f"where {key} is zero")


# ---------------------------------------------------------------------------
# Small chains with hand-computed results
# ---------------------------------------------------------------------------

def fold_chain():
    """Conv 1x1 (row 1 zero) -> BN -> slopehtanh -> Conv 1x1 -> BN -> slopehtanh, float64."""
    rng = np.random.default_rng(3)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), SlopeHTanh(),
                Conv2d(3, 4, 1, rng=rng), BatchNorm2d(4), SlopeHTanh())
    model[0].weight[1] = 0
    set_statistics(model[1], [1.2, 0.8, 1.1], [0.1, 1.3, -0.3], [0.3, -0.4, 0.2], [0.5, 2.0, 1.5])
    set_statistics(model[4], [0.9, 1.1, 1.0, 0.7], [0.2, -0.1, 0.0, 0.4],
                   [0.5, -0.2, 0.1, 0.3], [0.8, 1.2, 0.6, 1.4])
    return model


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_constant_channel_is_folded_into_the_next_batchnorm():
    model = fold_chain()
    result = prune_propagate(model)
    # Channel 1 is 0 after the conv; BN makes it beta = 1.3 in train mode and
    # 1.3 - 0.8 * (-0.4) / sqrt(2 + eps) in eval mode; slopehtanh follows.
    c_eval = slopehtanh(np.array(1.3 + 0.8 * 0.4 / np.sqrt(2.0 + EPS)))
    w = model[3].weight[:, 1, 0, 0]
    np.testing.assert_allclose(result[4].running_mean, model[4].running_mean - w * c_eval, rtol=1e-12)
    assert not result[3].weight[:, 1].any()                    # the slice is gone
    assert result[1].weight[1] == 0 and result[1].bias[1] == 0  # and, read by nobody, its BN
    x = np.random.default_rng(0).normal(size=(3, 2, 5, 5))
    assert_same_function(result, model, x, 1e-12)


@pytest.mark.ex_propagate_1
def test_running_mean_after_a_fold_tracks_the_shifted_batch_mean():
    # After a fold, a train-mode batch moves the running mean of the folded
    # model by momentum * (its batch mean), which is lower by o_train; so the
    # gap to the unfolded model becomes (1 - m) * o_eval + m * o_train.
    model = fold_chain()
    with waits_for("propagate.2"):
        result = prune_propagate(model)
    w = model[3].weight[:, 1, 0, 0]
    o_train = w * slopehtanh(np.array(1.3))
    o_eval = w * slopehtanh(np.array(1.3 + 0.8 * 0.4 / np.sqrt(2.0 + EPS)))
    x = np.random.default_rng(1).normal(size=(3, 2, 5, 5))
    a, b = model.copy().train(), result.copy().train()
    np.testing.assert_allclose(b(x), a(x), rtol=1e-12, atol=1e-12)
    gap = a[4].running_mean - b[4].running_mean
    np.testing.assert_allclose(gap, 0.9 * o_eval + 0.1 * o_train, rtol=1e-10)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_depthwise_without_padding_passes_a_constant_on():
    rng = np.random.default_rng(4)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), ReLU(),
                DepthwiseConv2d(3, 3, pad=0, rng=rng), Conv2d(3, 2, 1, rng=rng), BatchNorm2d(2))
    model[0].weight[2] = 0
    set_statistics(model[1], [1.0, 1.0, 0.5], [0.0, 0.0, 0.7], [0.0, 0.0, 0.4], [1.0, 1.0, 0.25])
    result = prune_propagate(model)
    # Eval constant relu(0.7 - 0.5 * 0.4 / sqrt(0.25 + eps)), times the filter's sum.
    c_eval = max(0.7 - 0.5 * 0.4 / np.sqrt(0.25 + EPS), 0.0) * model[3].weight[2].sum()
    expected = model[5].running_mean - model[4].weight[:, 2, 0, 0] * c_eval
    np.testing.assert_allclose(result[5].running_mean, expected, rtol=1e-12)
    assert not result[3].weight[2].any() and not result[4].weight[:, 2].any()
    x = rng.normal(size=(2, 2, 6, 6))
    assert_same_function(result, model, x, 1e-12)


def dense_chain(seed):
    """Dense(4, 3) -> ReLU -> Dense(3, 2), float64, row 2 zero with bias 0.7; and the generator it used.

    Channel 2 is then the constant 0.7 in both modes.
    """
    rng = np.random.default_rng(seed)
    model = f64(Dense(4, 3, rng=rng), ReLU(), Dense(3, 2, rng=rng))
    model[0].weight[2] = 0
    model[0].bias[:] = [0.1, -0.2, 0.7]
    return model, rng


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_equal_constants_are_folded_into_a_dense_bias():
    model, rng = dense_chain(5)
    model[2].bias[:] = [0.05, -0.05]
    result = prune_propagate(model)
    np.testing.assert_allclose(result[2].bias, model[2].bias + 0.7 * model[2].weight[:, 2], rtol=1e-12)
    assert not result[2].weight[:, 2].any()
    assert result[0].bias[2] == 0              # read by nobody now
    x = rng.normal(size=(5, 4))
    assert relative_error(result(x), model(x)) < 1e-12


@pytest.mark.ex_propagate_1
def test_flatten_without_pooling_folds_a_block_of_columns():
    rng = np.random.default_rng(6)
    model = f64(Conv2d(2, 3, 1, bias=True, rng=rng), ReLU(), Flatten(), Dense(3 * 16, 2, rng=rng))
    model[0].weight[1] = 0
    model[0].bias[:] = [0.0, 0.5, 0.0]          # channel 1 is the constant 0.5 at all 16 pixels
    with waits_for("propagate.2"):
        result = prune_propagate(model)
    block = slice(16, 32)                        # Flatten is channel-major
    np.testing.assert_allclose(result[3].bias, model[3].bias + 0.5 * model[3].weight[:, block].sum(axis=1),
                               rtol=1e-12)
    assert not result[3].weight[:, block].any()
    assert result[3].weight[:, :16].all() and result[3].weight[:, 32:].all()
    x = rng.normal(size=(2, 2, 4, 4))
    assert relative_error(result(x), model(x)) < 1e-12


def padded_chain():
    """Conv 1x1 (row 1 zero) -> BN -> slopehtanh -> Conv 3x3 pad 1 -> BN, float64."""
    rng = np.random.default_rng(7)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), SlopeHTanh(),
                Conv2d(3, 4, 3, pad=1, rng=rng), BatchNorm2d(4))
    model[0].weight[1] = 0
    set_statistics(model[1], [1.0, 0.9, 1.0], [0.2, 0.6, -0.1], [0.1, 0.8, 0.0], [1.0, 0.5, 1.0])
    return model


@pytest.mark.ex_propagate_1
def test_a_padded_consumer_keeps_a_constant_channel():
    model = padded_chain()
    with waits_for("propagate.2"):
        result = prune_propagate(model)
    np.testing.assert_array_equal(result[3].weight, model[3].weight)
    np.testing.assert_array_equal(result[4].running_mean, model[4].running_mean)
    x = np.random.default_rng(0).normal(size=(3, 2, 5, 5))
    assert_same_function(result, model, x, 1e-12)
    # What the original does -- zero the slice anyway -- changes the output in
    # both modes: the border pixels see the padding, so no constant absorbs it.
    naive = model.copy()
    naive[3].weight[:, 1] = 0
    for training in (False, True):
        assert relative_error(run(naive, x, training), run(model, x, training)) > 1e-2


@pytest.mark.ex_propagate_1
def test_different_train_and_eval_constants_are_not_folded_into_a_bias():
    rng = np.random.default_rng(8)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), SlopeHTanh(),
                Conv2d(3, 4, 1, bias=True, rng=rng), SlopeHTanh())
    model[0].weight[1] = 0
    set_statistics(model[1], [1.0, 0.9, 1.0], [0.2, 0.6, -0.1], [0.1, 0.8, 0.0], [1.0, 0.5, 1.0])
    with waits_for("propagate.2"):
        result = prune_propagate(model)
    np.testing.assert_array_equal(result[3].weight, model[3].weight)
    np.testing.assert_array_equal(result[3].bias, model[3].bias)


def test_the_two_constants_of_a_channel():
    model = padded_chain()
    constant, c_train, c_eval = channel_constants(segments(model)[0])
    assert constant.tolist() == [False, True, False]
    assert c_train[1] == pytest.approx(0.6)                               # beta
    assert c_eval[1] == pytest.approx(0.6 - 0.9 * 0.8 / np.sqrt(0.5 + EPS))  # inside [-1, 1]


def unread_chain():
    """Conv 1x1 -> BN -> ReLU -> depthwise 3x3 -> BN -> ReLU -> Conv 1x1 -> BN, float64; channel 2 unread."""
    rng = np.random.default_rng(9)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), ReLU(), DepthwiseConv2d(3, 3, pad=1, rng=rng),
                BatchNorm2d(3), ReLU(), Conv2d(3, 4, 1, rng=rng), BatchNorm2d(4))
    model[6].weight[:, 2] = 0
    return model, rng


@pytest.mark.ex_propagate_2
def test_an_unread_channel_is_zeroed_back_to_its_producer():
    model, rng = unread_chain()
    with waits_for("propagate.1"):
        result = prune_propagate(model)
    assert not result[0].weight[2].any() and not result[3].weight[2].any()
    for bn in (result[1], result[4]):
        assert bn.weight[2] == 0 and bn.bias[2] == 0
    assert result[0].weight[:2].all() and result[3].weight[:2].all()
    x = rng.normal(size=(2, 2, 5, 5))
    assert_same_function(result, model, x, 1e-12)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_a_batchnorm_with_zero_gamma_outputs_its_beta_whatever_it_is_fed():
    rng = np.random.default_rng(10)
    model = f64(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), ReLU(), Conv2d(3, 2, 1, rng=rng), BatchNorm2d(2))
    set_statistics(model[1], [1.0, 0.0, 0.0], [0.1, 0.4, 0.0], [0.2, 0.3, 0.1], [1.0, 0.7, 0.9])
    result = prune_propagate(model)
    # Channel 1 is the constant 0.4 in both modes, channel 2 is zero: both
    # vanish from the consumer, and only channel 1 moves the running mean.
    np.testing.assert_allclose(result[4].running_mean,
                               model[4].running_mean - 0.4 * model[3].weight[:, 1, 0, 0], rtol=1e-12)
    assert not result[3].weight[:, 1:].any() and result[3].weight[:, 0].all()
    assert not result[0].weight[1:].any()
    x = rng.normal(size=(2, 2, 4, 4))
    assert_same_function(result, model, x, 1e-12)


@pytest.mark.ex_propagate_1
def test_no_fold_into_a_masked_bias_entry_that_would_need_it():
    model, _ = dense_chain(12)
    model[2].masks["bias"] = np.array([True, False])   # bias 1 is pruned: o[1] has nowhere to go
    model[2].bias[1] = 0
    with waits_for("propagate.2"):
        result = prune_propagate(model)
    np.testing.assert_array_equal(result[2].weight, model[2].weight)
    np.testing.assert_array_equal(result[2].bias, model[2].bias)


@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_the_model_outputs_are_never_zeroed():
    model = f64(Conv2d(2, 3, 1), BatchNorm2d(3))
    model[1].weight[1] = 0                       # output channel 1 is the constant beta
    model[1].bias[1] = 0.5
    assert_same_snapshot(snapshot(prune_propagate(model)), snapshot(model))


# ---------------------------------------------------------------------------
# Each sweep on one segment
# ---------------------------------------------------------------------------

def changed_arrays(before, after):
    """The state_dict keys whose arrays differ between two models of the same shapes."""
    a, b = before.state_dict(), after.state_dict()
    return sorted(key for key in a if not np.array_equal(a[key], b[key]))


@pytest.mark.ex_propagate_1
def test_forward_sweep_folds_a_constant_channel_into_the_batchnorm_after_the_consumer():
    model = fold_chain()                  # channel 1: 1.3 in train mode, c_eval (below) in eval mode
    result = model.copy()
    changed = _forward(segments(result)[0])
    w = model[3].weight[:, 1, 0, 0]
    c_eval = float(slopehtanh(np.array(1.3 + 0.8 * 0.4 / np.sqrt(2.0 + EPS))))
    assert changed is True, "_forward zeroed a slice but returned " + repr(changed)
    assert changed_arrays(model, result) == ["3.weight", "4.running_mean"], \
        f"_forward on Conv(3 -> 4) reading a constant channel 1 changed {changed_arrays(model, result)}"
    assert not result[3].weight[:, 1].any(), f"the consumer still reads channel 1: {result[3].weight[:, 1].ravel()}"
    np.testing.assert_allclose(result[4].running_mean, model[4].running_mean - w * c_eval, rtol=1e-12,
                               err_msg=f"the running mean must drop by W[:, 1] * c_eval = {w * c_eval}")
    assert _forward(segments(result)[0]) is False, "a second forward sweep changed something"


@pytest.mark.ex_propagate_1
def test_forward_sweep_zeroes_a_zero_channel_without_a_fold():
    model = fold_chain()
    set_statistics(model[1], [1.2, 0.0, 1.1], [0.1, 0.0, -0.3], [0.3, -0.4, 0.2], [0.5, 2.0, 1.5])   # channel 1: 0
    result = model.copy()
    assert _forward(segments(result)[0]) is True
    assert changed_arrays(model, result) == ["3.weight"], \
        f"_forward on a channel that is 0 in both modes changed {changed_arrays(model, result)}, expected 3.weight"
    assert not result[3].weight[:, 1].any() and result[3].weight[:, [0, 2]].all()


@pytest.mark.ex_propagate_1
def test_forward_sweep_folds_equal_constants_into_the_consumers_bias():
    model, _ = dense_chain(5)             # channel 2 is 0.7 in both modes; no BatchNorm after the consumer
    model[2].bias[:] = [0.05, -0.05]
    result = model.copy()
    assert _forward(segments(result)[0]) is True
    want = model[2].bias + 0.7 * model[2].weight[:, 2]
    np.testing.assert_allclose(result[2].bias, want, rtol=1e-12,
                               err_msg=f"Dense bias [0.05, -0.05] must rise by 0.7 * W[:, 2]: to {want}")
    assert not result[2].weight[:, 2].any() and changed_arrays(model, result) == ["2.bias", "2.weight"]


@pytest.mark.ex_propagate_1
def test_forward_sweep_leaves_what_it_cannot_fold_alone():
    for model in (padded_chain(), dense_chain(12)[0]):
        if isinstance(model[2], Dense):
            model[2].masks["bias"] = np.array([True, False])
        result = model.copy()
        assert _forward(segments(result)[0]) is False, f"_forward changed {changed_arrays(model, result)}"
        assert changed_arrays(model, result) == [], \
            f"_forward changed {changed_arrays(model, result)} of {type(model[3]).__name__}, which cannot take the fold"


@pytest.mark.ex_propagate_2
def test_backward_sweep_zeroes_the_producer_batchnorms_and_depthwise_filter_of_an_unread_channel():
    model, _ = unread_chain()
    for bn in (model[1], model[4]):
        set_statistics(bn, [1.2, 0.8, 1.1], [0.1, 1.3, -0.3], [0.3, -0.4, 0.2], [0.5, 2.0, 1.5])
    model[0].masks["weight"] = np.ones(model[0].weight.shape, dtype=bool)
    result = model.copy()
    changed = _backward(segments(result)[0])
    assert changed is True, "_backward zeroed channel 2 but returned " + repr(changed)
    made = ["0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias"]
    assert changed_arrays(model, result) == sorted(made), \
        (f"channel 2 is read by nobody: _backward changed {changed_arrays(model, result)}, expected {sorted(made)} "
         "(conv row, both BatchNorms' gamma and beta, the depthwise filter; not the running statistics)")
    for key in made:
        value = result.state_dict()[key]
        assert not value[2].any() and value[:2].all(), f"{key}: channel 2 must be zero, channels 0 and 1 kept"
    assert not result[0].masks["weight"][2].any(), "the conv's mask must lose row 2"
    assert _backward(segments(result)[0]) is False, "a second backward sweep changed something"


@pytest.mark.ex_propagate_2
def test_backward_sweep_follows_a_new_per_channel_layer_through_its_declaration():
    model = Chain(Conv2d(2, 4, 1, rng=np.random.default_rng(13)), BatchNorm2d(4), ChannelScale(4), ReLU(),
                  Conv2d(4, 3, 1, rng=np.random.default_rng(14))).to(np.float64)
    model[4].weight[:, 1] = 0
    result = model.copy()
    assert _backward(segments(result)[0]) is True
    assert result[2].scale[1] == 0 and result[2].scale[[0, 2, 3]].all(), \
        f"ChannelScale declares scale's channels on axis 0: expected scale[1] zeroed, got {result[2].scale}"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class Doubler(Layer):
    """A layer propagation does not know."""

    def forward(self, x):
        return 2 * x


def test_an_unknown_layer_is_named_and_nothing_changes():
    model = Chain(Chain(Conv2d(2, 3, 1), Doubler()), Conv2d(3, 2, 1))
    model[1].weight[:, 0] = 0
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\[0\]\[1\].*Doubler"):
        prune_propagate(model)
    assert_same_snapshot(before, snapshot(model))


def test_channel_counts_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match=r"model\[1\].*4 channels.*makes 3"):
        prune_propagate(Chain(Conv2d(2, 3, 1), BatchNorm2d(4), Conv2d(4, 2, 1)))
    with pytest.raises(ValueError, match=r"model\[1\].*no Flatten"):
        prune_propagate(Chain(Conv2d(2, 3, 1), Dense(3, 2)))
    with pytest.raises(ValueError, match=r"model\[2\].*10 features"):
        prune_propagate(Chain(Conv2d(2, 3, 1), Flatten(), Dense(10, 2)))


def test_a_non_model_is_refused():
    with pytest.raises(TypeError, match="prune_propagate.*list"):
        prune_propagate([Conv2d(2, 3, 1)])
