"""Chapter 6: cutting dead channels out of the architecture.

Run this chapter alone with ``python -m pytest -m resize``, its exercise
with ``python -m pytest -m ex_resize_1`` (``_slice_segment``, which
``sort_channels`` uses too).  The random-chain tests of propagation also
live here (chapter 5, ``-m propagate``), next to the chains they share.

Resize starts from a propagated model.  Its tests build one themselves
(``dead_channel_mobilenet`` in ``tests/helpers.py``: the zeros that
ChannelPrune and prune_propagate leave), so that they run in a copy where
propagation is an exercise; the few that check resize after the library's
own propagation wait for it (``waits_for("propagate")``).
"""

import io

import numpy as np
import pytest

from tinyprune import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool,
                       HardTanh, Identity, Layer, MobileNet, ReLU, SlopeHTanh, compute_dot_prods,
                       gradcheck, slopehtanh)
from tinyprune.propagate import channel_constants, prune_propagate, segments
from tinyprune.criteria import magnitude_scores
from tinyprune.resize import channel_counts, resize, sort_channels

from helpers import (ChannelScale, assert_float32_costs_no_more_than_rounding,
                     assert_returns_a_new_model_and_leaves_its_argument_alone, assert_same_function,
                     assert_same_snapshot, channel_pruned, dead_channel_mobilenet, give_statistics,
                     kill_channels, relative_error, run, snapshot, trained_looking_mobilenet, waits_for,
                     TRAINING)

pytestmark = pytest.mark.resize

TUTORIAL_INPUT = (1, 3, 96, 96)
WEIGHTED = (Conv2d, DepthwiseConv2d, Dense)


def live_rows(layer):
    """Output channels with a non-zero weight (as the forward pass uses them)."""
    w = layer.effective("weight")
    return np.flatnonzero(w.reshape(w.shape[0], -1).any(axis=1))


def pipeline(seed, p=0.2):
    """The zeros of the tutorial's ChannelPrune(p) -> keepprune -> prune_propagate on a fresh MobileNet."""
    return dead_channel_mobilenet(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed), p)


# ---------------------------------------------------------------------------
# The tutorial's model
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(21).uniform(0, 1, (4, 3, 32, 32))


@pytest.fixture(scope="module")
def pruned():
    """ChannelPrune(0.2) of a float64 tutorial MobileNet with trained-looking statistics, masks baked in."""
    return channel_pruned(trained_looking_mobilenet(2), 0.2, masks=False)


@pytest.fixture(scope="module")
def propagated():
    """The same model with the zeros propagation leaves: every dead channel zero from producer to consumer."""
    return dead_channel_mobilenet(trained_looking_mobilenet(2), 0.2)


@pytest.fixture(scope="module")
def resized(propagated):
    return resize(propagated)


@pytest.mark.ex_resize_1
def test_returns_a_new_model_and_leaves_its_argument_unchanged(propagated):
    assert_returns_a_new_model_and_leaves_its_argument_alone(resize, propagated)


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_mobilenet_output_is_unchanged(propagated, resized, batch, training):
    expected = run(propagated, batch, training)
    assert relative_error(run(resized, batch, training), expected) < 1e-9


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_propagated_and_resized_mobilenet_computes_what_the_pruned_one_does(pruned, batch, training):
    with waits_for("propagate"):
        propagated = prune_propagate(pruned)
    expected = run(pruned, batch, training)
    assert relative_error(run(resize(propagated), batch, training), expected) < 1e-9


@pytest.mark.ex_resize_1
def test_float32_resize_costs_no_more_than_float32_rounding(pruned, propagated, batch):
    # Removing channels reorders the float32 sums; that must cost no more than float32 itself.
    assert_float32_costs_no_more_than_rounding(resize, propagated, batch)
    with waits_for("propagate"):
        assert_float32_costs_no_more_than_rounding(lambda m: resize(prune_propagate(m)), pruned, batch)


@pytest.mark.ex_resize_1
def test_every_group_loses_its_dead_channels(propagated, resized):
    # Producers: the first conv, the 13 pointwise convs; each channel group is
    # cut from its producer, its depthwise conv and its consumer, including
    # the first group (conv [0][0]) and the last (into the Dense [1][2]).
    producers = [0] + [6 * g for g in range(1, 14)]
    for g, p in enumerate(producers):
        live = len(live_rows(propagated[0][p]))
        assert live < propagated[0][p].c_out, f"group {g} had nothing to remove"
        assert resized[0][p].c_out == live and resized[0][p + 1].channels == live
        if g < 13:
            assert resized[0][p + 3].channels == live and resized[0][p + 4].channels == live
            assert resized[0][p + 6].c_in == live
        else:
            assert resized[1][2].n_in == live
    assert resized[0][0].c_in == 3 and resized[1][4].n_out == 1   # the model's input and output


@pytest.mark.ex_resize_1
def test_running_statistics_of_surviving_channels_are_unchanged(propagated, resized):
    producers = [(propagated[0][0], "[0][1]")] + [
        (propagated[0][6 * g], f"[0][{6 * g + 1}]") for g in range(1, 14)]
    depthwise_bns = [f"[0][{6 * g + 4}]" for g in range(13)]
    old = dict(propagated.named_layers())
    new = dict(resized.named_layers())
    for g, (producer, bn_path) in enumerate(producers):
        keep = live_rows(producer)
        paths = [bn_path] + ([depthwise_bns[g]] if g < 13 else [])
        for path in paths:
            for name in ("running_mean", "running_var", "weight", "bias"):
                np.testing.assert_array_equal(getattr(new[path], name),
                                              getattr(old[path], name)[keep], err_msg=path + name)
            assert new[path].num_batches_tracked == old[path].num_batches_tracked


@pytest.mark.ex_resize_1
def test_no_all_zero_channel_is_left(resized):
    for path, layer in resized.named_layers():
        if isinstance(layer, WEIGHTED):
            w = layer.weight.reshape(layer.weight.shape[0], layer.weight.shape[1], -1)
            assert w.any(axis=(1, 2)).all(), f"model{path} has an all-zero output channel"
            assert w.any(axis=(0, 2)).all(), f"model{path} has an all-zero input slice"


@pytest.mark.ex_resize_1
def test_resize_is_idempotent(resized):
    assert_same_snapshot(snapshot(resize(resized)), snapshot(resized))


@pytest.mark.ex_resize_1
def test_masks_are_sliced_with_their_weights():
    # Masked dead channels, and scattered masked entries in every surviving
    # row (as level pruning on top of channel pruning leaves them);
    # "mask == (weight != 0)" holds before resize and must still hold after
    # it, which a mis-sliced mask would break.
    rng = np.random.default_rng(3)
    base = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=3)
    give_statistics(base, rng, rng.uniform(0, 1, (2, 3, 32, 32)).astype(np.float32))  # no zero beta
    propagated = dead_channel_mobilenet(base, 0.2, masks=True)
    for _, layer in propagated.named_layers():
        if isinstance(layer, WEIGHTED):
            scattered = rng.random(layer.weight.shape) < 0.3
            layer.weight[scattered] = 0
            layer.masks["weight"] = layer.masks.get("weight", np.ones(layer.weight.shape, bool)) & ~scattered
    for model in (propagated, resize(propagated)):
        state = model.state_dict()
        for key, mask in model.mask_dict().items():
            assert mask.shape == state[key].shape, key
            np.testing.assert_array_equal(mask, state[key] != 0, err_msg=key)
    assert resize(propagated)[0][0].masks["weight"].shape[0] < 8


@pytest.mark.ex_resize_1
def test_record_of_channel_counts_before_and_after(propagated, resized):
    result, rows = resize(propagated, return_record=True)
    before, after = channel_counts(propagated), channel_counts(resized)
    assert [r.path for r in rows] == [c.path for c in before] == [c.path for c in after]
    assert [(r.c_in_before, r.c_out_before) for r in rows] == [(c.c_in, c.c_out) for c in before]
    assert [(r.c_in_after, r.c_out_after) for r in rows] == [(c.c_in, c.c_out) for c in after]
    first = rows[0]
    assert (first.path, first.type, first.c_in_before, first.c_out_before) == ("[0][0]", "Conv2d", 3, 8)
    assert first.c_out_after == resized[0][0].c_out
    assert rows[-1] == ("[1][4]", "Dense", 64, 1, 64, 1)
    # 27 convolutions, 27 BatchNorms and 2 dense layers.
    assert len(rows) == 56 and sum(r.type == "BatchNorm2d" for r in rows) == 27


def surviving_entries(propagated):
    """For each layer path of the propagated MobileNet, the (rows, columns) resize keeps.

    Rows index a weight's axis 0 (output channels), columns its axis 1
    (input channels; [0] for a depthwise filter).  Channel group g is kept
    where its producer's row is not all zero.
    """
    backbone = propagated[0]
    producers = [0] + [6 * g for g in range(1, 14)]
    keep = [live_rows(backbone[p]) for p in producers]
    entries = {"[0][0]": (keep[0], np.arange(3)), "[0][1]": (keep[0], None)}
    for g in range(13):
        p = producers[g]
        entries[f"[0][{p + 3}]"] = (keep[g], np.arange(1))                  # depthwise
        entries[f"[0][{p + 4}]"] = (keep[g], None)
        entries[f"[0][{p + 6}]"] = (keep[g + 1], keep[g])                    # pointwise
        entries[f"[0][{p + 7}]"] = (keep[g + 1], None)
    entries["[1][2]"] = (np.arange(64), keep[13])                           # Dense(256, 64)
    entries["[1][4]"] = (np.arange(1), np.arange(64))
    return entries


def kept_part(array, rows, columns):
    if array.ndim == 1:
        return array[rows]
    return array[np.ix_(rows, columns)]


@pytest.mark.ex_resize_1
def test_resized_model_takes_the_same_training_step(propagated, resized, batch):
    # The resized model computes the same function of its surviving weights,
    # so a training step -- forward, backward, plain SGD -- gives it exactly
    # the gradients and updates of those weights in the propagated model.
    entries = surviving_entries(propagated)
    target = np.random.default_rng(0).normal(size=(4, 1))
    stepped = []
    for model in (propagated.copy().train(), resized.copy().train()):
        with waits_for(*TRAINING):
            y = model(batch)
            model.backward(y - target)         # dL/dy of L = 0.5 * sum((y - target)^2)
        for _, layer, name in model.named_parameters():
            assert layer.grads[name].shape == getattr(layer, name).shape
            setattr(layer, name, getattr(layer, name) - 1e-3 * layer.grads[name])
        stepped.append(model)
    big, small = stepped
    paths = {id(layer): path for path, layer in big.named_layers()}
    compared = 0
    for (key, layer, name), (_, small_layer, _) in zip(big.named_parameters(), small.named_parameters()):
        rows, columns = entries[paths[id(layer)]]
        for a, b in ((layer.grads[name], small_layer.grads[name]),
                     (getattr(layer, name), getattr(small_layer, name))):
            np.testing.assert_allclose(b, kept_part(a, rows, columns), rtol=1e-7,
                                       atol=1e-9 * np.abs(a).max(), err_msg=key)
        compared += 1
    assert compared == len(list(big.named_parameters())) == 27 + 27 * 2 + 4


@pytest.mark.ex_resize_1
def test_gradients_of_a_resized_chain_pass_gradcheck():
    rng = np.random.default_rng(6)
    model = Chain(Conv2d(3, 6, 3, pad=1, rng=rng), BatchNorm2d(6), HardTanh(),
                  DepthwiseConv2d(6, 3, pad=1, rng=rng), BatchNorm2d(6), HardTanh(),
                  Conv2d(6, 5, 1, rng=rng), BatchNorm2d(5), HardTanh(),
                  GlobalMeanPool(), Flatten(), Dense(5, 2, rng=rng))
    kill_channels(model, ("[0]", "[3]", "[6]"), np.array([1, 4]))       # what ChannelPrune(0.5) and
    kill_channels(model, ("[6]", None, "[11]"), np.array([0, 2]))        # propagation might leave
    resized = resize(model)
    assert resized[0].c_out < 6 and resized[6].c_out < 5
    x = rng.normal(size=(2, 3, 4, 4))
    with waits_for(*TRAINING):
        report = gradcheck(resized.copy().train(), x, max_entries=6)
    assert len(report) == 1 + 11 and report.worst < 1e-6, str(report)


@pytest.mark.ex_resize_1
def test_state_dict_round_trips_through_an_npz_file(resized, batch):
    buffer = io.BytesIO()
    np.savez(buffer, **resized.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = {key: saved[key] for key in saved.files}
    other = resized.copy()
    for _, layer, name in other.named_parameters():
        setattr(layer, name, np.zeros_like(getattr(layer, name)))
    other.load_state_dict(state)
    assert_same_snapshot(snapshot(other), snapshot(resized))
    np.testing.assert_array_equal(run(other, batch, False), run(resized, batch, False))


# ---------------------------------------------------------------------------
# Counting after resize (the tutorial's last number)
# ---------------------------------------------------------------------------

@pytest.mark.ex_resize_1
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_resized_count_is_at_most_the_seeds_plus_6_percent(seed):
    resized = resize(pipeline(seed))
    with waits_for("count"):
        mults, adds, shape = compute_dot_prods(resized, TUTORIAL_INPUT, "reference")
    assert shape == (1, 1)
    assert mults <= 3_680_115 * 1.06
    assert mults > 3_000_000             # 20% pruning cannot remove half the work


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dense_count_after_resize_is_the_sparse_count_before(p):
    propagated = pipeline(5, p)
    resized = resize(propagated)
    with waits_for("count"):
        sparse = compute_dot_prods(propagated, TUTORIAL_INPUT, "sparse")
        dense = compute_dot_prods(resized, TUTORIAL_INPUT, "dense")
    assert dense == sparse


# ---------------------------------------------------------------------------
# Random small chains: propagation and resize never change the function
# ---------------------------------------------------------------------------

ACTIVATIONS = (SlopeHTanh, ReLU, HardTanh, Identity)


def random_activation(rng):
    return ACTIVATIONS[rng.integers(len(ACTIVATIONS))]()


# The blocks a random chain is built from.  Each takes the random generator,
# the channels in and out, the image side and a drawn stride and padding
# (which a block may ignore), and returns its layers.

def conv_bn_act(rng, c_in, c_out, side, stride, pad):
    """A full conv (3x3 if the image allows, with or without bias), BatchNorm, activation."""
    k = 3 if side + 2 * pad >= 3 else 1
    return [Conv2d(c_in, c_out, k, stride, pad, bias=bool(rng.integers(2)), rng=rng),
            BatchNorm2d(c_out), random_activation(rng)]


def depthwise_separable(rng, c_in, c_out, side, stride, pad):
    """MobileNet's group: depthwise conv, BatchNorm, activation, 1x1 conv, BatchNorm, activation."""
    k = 3 if side + 2 * pad >= 3 else 1
    return [DepthwiseConv2d(c_in, k, stride, pad, rng=rng), BatchNorm2d(c_in), random_activation(rng),
            Conv2d(c_in, c_out, 1, rng=rng), BatchNorm2d(c_out), random_activation(rng)]


def pointwise_with_bias(rng, c_in, c_out, side, stride, pad):
    """A 1x1 conv with a bias and no BatchNorm, so that constants fold into the bias."""
    return [Conv2d(c_in, c_out, 1, bias=True, rng=rng), random_activation(rng)]


def unpadded_depthwise_into_pointwise(rng, c_in, c_out, side, stride, pad):
    """An unpadded stride-1 depthwise conv straight into a 1x1 conv: a constant passes the filter."""
    k = 3 if side >= 3 else 1
    return [DepthwiseConv2d(c_in, k, 1, 0, rng=rng), random_activation(rng),
            Conv2d(c_in, c_out, 1, bias=bool(rng.integers(2)), rng=rng), BatchNorm2d(c_out)]


BLOCKS = (conv_bn_act, depthwise_separable, pointwise_with_bias, unpadded_depthwise_into_pointwise)


# The heads: each takes the generator, the channels and the image side.

def pooled_dense_head(rng, channels, side):
    """Pool, flatten, two dense layers: channel j is column j of the first."""
    features = int(rng.integers(2, 6))
    return [GlobalMeanPool(), Flatten(), Dense(channels, features, rng=rng), random_activation(rng),
            Dense(features, 2, rng=rng)]


def flattened_dense_head(rng, channels, side):
    """Flatten and one dense layer: channel j is a block of side*side columns."""
    return [Flatten(), Dense(channels * side * side, 3, rng=rng)]


def no_head(rng, channels, side):
    """None: the last block's channels are the model's outputs."""
    return []


HEADS = (pooled_dense_head, flattened_dense_head, no_head)


def random_layers(rng, channels, side):
    """Two to four random blocks from ``BLOCKS`` and a random head, for (N, channels, side, side) input."""
    layers = []
    for _ in range(rng.integers(2, 5)):
        block = BLOCKS[rng.integers(len(BLOCKS))]
        c_out = int(rng.integers(2, 7))
        pad = int(rng.integers(2))
        stride = int(rng.integers(1, 3))
        new = block(rng, channels, c_out, side, stride, pad)
        _, channels, side, _ = Chain(*new).output_shape((1, channels, side, side))
        layers += new
    return layers + HEADS[rng.integers(len(HEADS))](rng, channels, side)


def zero_random_rows(model, rng):
    """Zero random output rows of every conv and dense layer, some biases, and some BatchNorms after.

    Half of the time the next BatchNorm's gamma and beta go too (as
    ChannelPrune does); otherwise the zero rows leave constants behind.
    """
    level = rng.choice([0.2, 0.5])
    leaves = [layer for _, layer in model.named_layers()]
    for layer, following in zip(leaves, leaves[1:] + [None]):
        if isinstance(layer, WEIGHTED):
            rows = rng.random(layer.weight.shape[0]) < level
            layer.weight[rows] = 0
            if getattr(layer, "bias", None) is not None and rng.integers(2):
                layer.bias[rows] = 0
            if isinstance(following, BatchNorm2d) and rng.integers(2):
                following.weight[rows] = 0
                following.bias[rows] = 0


def random_chain(seed):
    """A random float64 chain of the library's layers, channel-pruned, with statistics.

    Built from named blocks (``BLOCKS``) and a head (``HEADS``), split in two
    nested chains, with random biases and BatchNorm statistics, and random
    rows zeroed.  Returns (model, input batch).
    """
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(2, 5))
    side = int(rng.integers(5, 9))
    layers = random_layers(rng, channels, side)
    split = int(rng.integers(1, len(layers)))
    model = Chain(Chain(*layers[:split]), Chain(*layers[split:])).to(np.float64)
    for _, layer in model.named_layers():
        if getattr(layer, "bias", None) is not None and not isinstance(layer, BatchNorm2d):
            layer.bias[:] = rng.normal(0.0, 0.3, layer.bias.shape)
    give_statistics(model, rng, rng.normal(size=(4, channels, side, side)))
    zero_random_rows(model, rng)
    return model, rng.normal(size=(3, channels, side, side))


SEEDS = range(30)


@pytest.mark.propagate
@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
@pytest.mark.parametrize("seed", SEEDS)
def test_random_chain_keeps_its_function_through_propagation(seed):
    model, x = random_chain(seed)
    propagated = prune_propagate(model)
    assert_same_function(propagated, model, x, 1e-9)
    assert_same_snapshot(snapshot(prune_propagate(propagated)), snapshot(propagated))


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("seed", SEEDS)
def test_random_chain_keeps_its_function_through_propagation_and_resize(seed):
    model, x = random_chain(seed)
    with waits_for("propagate"):
        propagated = prune_propagate(model)
    resized = resize(propagated)
    assert_same_function(resized, model, x, 1e-9)
    for before, after in zip(channel_counts(model), channel_counts(resized)):
        assert after.c_in <= before.c_in and after.c_out <= before.c_out


def unread_random_chain(seed):
    """``random_chain(seed)`` with random channels of every segment read by nobody (input slices zeroed).

    Resize needs nothing else to cut a channel: no propagation.  Returns
    (model, input batch, the channels cut from each segment).
    """
    model, x = random_chain(seed)
    rng = np.random.default_rng(1000 + seed)
    unread = []
    for seg in segments(model):
        channels = np.flatnonzero(rng.random(seg.channels) < 0.4)
        getattr(seg.consumer, seg.reading_array)[seg.consumer_index(channels)] = 0
        unread.append(np.flatnonzero(seg.unread()))
    return model, x, unread


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("seed", SEEDS)
def test_random_chain_with_unread_channels_keeps_its_function_and_loses_them(seed):
    model, x, unread = unread_random_chain(seed)
    resized = resize(model)
    assert_same_function(resized, model, x, 1e-9)
    for seg, gone, new in zip(segments(model), unread, segments(resized)):
        want = max(seg.channels - len(gone), 1)           # a segment nobody reads keeps one channel
        assert new.channels == want, (f"{seg}: {len(gone)} of its channels are read by nobody, so "
                                      f"{want} should stay; resize left {new.channels}")


@pytest.mark.propagate
@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
def test_random_chains_cover_every_case():
    """The seeds above fold into BatchNorms and biases, keep unfoldable constants, and resize."""
    seen = {"batchnorm fold": 0, "bias fold": 0, "kept constant": 0, "flatten block cut": 0,
            "channels removed": 0}
    for seed in SEEDS:
        model, _ = random_chain(seed)
        propagated = prune_propagate(model)
        old, new = dict(model.named_layers()), dict(propagated.named_layers())
        for path, layer in old.items():
            if isinstance(layer, BatchNorm2d) and not np.array_equal(layer.running_mean,
                                                                      new[path].running_mean):
                seen["batchnorm fold"] += 1
            if (isinstance(layer, WEIGHTED) and getattr(layer, "bias", None) is not None
                    and np.any(new[path].bias != layer.bias) and np.any(new[path].bias != 0)):
                seen["bias fold"] += 1
        for seg in segments(propagated):
            constant, c_train, c_eval = channel_constants(seg)
            nonzero = constant & ((c_train != 0) | (c_eval != 0))
            seen["kept constant"] += int(np.count_nonzero(nonzero & ~seg.unread()))
            if isinstance(seg.consumer, Dense) and seg.block > 1 and seg.unread().any():
                seen["flatten block cut"] += 1
        with waits_for("resize"):
            if sum(r.c_out for r in channel_counts(resize(propagated))) < sum(
                    r.c_out for r in channel_counts(model)):
                seen["channels removed"] += 1
    assert all(count >= 2 for count in seen.values()), seen


# ---------------------------------------------------------------------------
# Corner cases and errors
# ---------------------------------------------------------------------------

@pytest.mark.ex_resize_1
def test_a_new_per_channel_layer_is_followed_through_its_declaration_alone():
    rng = np.random.default_rng(13)
    model = Chain(Conv2d(2, 4, 1, rng=rng), BatchNorm2d(4), ChannelScale(4), ReLU(),
                  Conv2d(4, 3, 1, rng=rng)).to(np.float64)
    model[4].weight[:, 1] = 0                     # channel 1 is read by nobody
    result = resize(model)
    np.testing.assert_array_equal(result[2].scale, model[2].scale[[0, 2, 3]])
    assert result[0].c_out == result[1].channels == result[4].c_in == 3
    assert ("[2]", "ChannelScale", 4, 4) in channel_counts(model)
    assert_same_function(result, model, rng.normal(size=(2, 2, 3, 3)), 1e-12)


@pytest.mark.ex_resize_1
def test_a_segment_nobody_reads_keeps_one_channel():
    rng = np.random.default_rng(4)
    model = Chain(Conv2d(2, 3, 1, rng=rng), BatchNorm2d(3), ReLU(),
                  Conv2d(3, 2, 1, bias=True, rng=rng)).to(np.float64)
    model[3].weight[:] = 0
    model[3].bias[:] = [0.3, -0.2]
    result = resize(model)
    assert result[0].c_out == 1 and result[1].channels == 1 and result[3].c_in == 1
    x = rng.normal(size=(2, 2, 3, 3))
    for training in (False, True):
        np.testing.assert_array_equal(run(result, x, training), run(model, x, training))


@pytest.mark.ex_resize_1
def test_resize_without_propagation_cuts_only_unread_channels():
    # A zero producer row that its consumer still reads is not removed:
    # resize alone never decides that a channel is dead.
    rng = np.random.default_rng(5)
    model = Chain(Conv2d(2, 4, 1, rng=rng), BatchNorm2d(4), ReLU(), Conv2d(4, 2, 1, rng=rng))
    model[0].weight[1] = 0               # read, but zero after conv; BN makes it beta
    model[3].weight[:, 3] = 0            # unread
    result = resize(model)
    assert result[0].c_out == 3 and result[3].c_in == 3
    np.testing.assert_array_equal(result[0].weight, model[0].weight[[0, 1, 2]])


class Doubler(Layer):
    """A layer resize does not know."""

    def forward(self, x):
        return 2 * x


def test_an_unknown_layer_is_named_and_nothing_changes():
    model = Chain(Conv2d(2, 3, 1), Chain(ReLU(), Doubler()), Conv2d(3, 2, 1))
    model[2].weight[:, 0] = 0
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\[1\]\[1\].*Doubler"):
        resize(model)
    assert_same_snapshot(before, snapshot(model))


def test_a_non_model_is_refused():
    with pytest.raises(TypeError, match="resize.*dict"):
        resize({"weight": np.zeros(3)})


@pytest.mark.propagate
@pytest.mark.ex_propagate_1
@pytest.mark.ex_propagate_2
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pretrained_float32_output_is_unchanged_to_1e_5(mode):
    # The bar in the model's own precision: on the trained (hence not
    # chaotic) checkpoint, float32 rounding alone stays far below 1e-5, so
    # propagation and resize must too.
    from tinyprune import pretrained
    from tinyprune.data import SyntheticVWW, to_float

    m = channel_pruned(pretrained(), 0.2, masks=False)      # ChannelPrune(0.2), then keepprune
    x = to_float(SyntheticVWW("val", seed=7, size=16).images)
    q = prune_propagate(m)
    with waits_for("resize"):
        r = resize(q)
    outs = [model.train(mode == "train")(x).astype(np.float64) for model in (m, q, r)]
    scale = np.abs(outs[0]).max()
    assert np.abs(outs[1] - outs[0]).max() / scale < 1e-5
    assert np.abs(outs[2] - outs[0]).max() / scale < 1e-5
    assert r[0][6].c_out < m[0][6].c_out   # resize really removed channels


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pretrained_float32_output_is_unchanged_by_resize_to_1e_5(mode):
    from tinyprune import pretrained
    from tinyprune.data import SyntheticVWW, to_float

    q = dead_channel_mobilenet(pretrained(), 0.2)
    x = to_float(SyntheticVWW("val", seed=7, size=16).images)
    r = resize(q)
    outs = [model.train(mode == "train")(x).astype(np.float64) for model in (q, r)]
    error = np.abs(outs[1] - outs[0]).max() / np.abs(outs[0]).max()
    assert error < 1e-5, f"{mode} mode: the resized pretrained model's output moved by {error:.1e} of its size"
    assert r[0][6].c_out < q[0][6].c_out   # resize really removed channels


# ---------------------------------------------------------------------------
# Sorting channels by importance
# ---------------------------------------------------------------------------

def consumer_slice_norms(seg):
    """(C,) L2 norm of everything the segment's consumer reads from each channel."""
    return np.sqrt((seg.reading_weights() ** 2).sum(axis=(0, 2)))


@pytest.mark.ex_resize_1
@pytest.mark.parametrize("seed", SEEDS)
def test_sorted_random_chains_compute_the_same_function_to_1e_12(seed):
    model, x = random_chain(seed)
    assert_same_function(sort_channels(model), model, x, 1e-12)


@pytest.mark.ex_resize_1
def test_sort_channels_orders_every_segment_by_what_its_consumer_reads(propagated, batch):
    ordered = sort_channels(propagated)
    for seg in segments(ordered):
        norms = consumer_slice_norms(seg)
        assert np.all(np.diff(norms) <= 0), seg
    assert_same_function(ordered, propagated, batch, 1e-12)
    assert_returns_a_new_model_and_leaves_its_argument_alone(sort_channels, propagated)


@pytest.mark.ex_resize_1
def test_sort_channels_by_scores_moves_every_array_of_a_channel_together(pruned):
    scores = magnitude_scores(pruned)
    ordered = sort_channels(pruned, scores)
    # Group 2: pointwise [0][12] -> BatchNorm [0][13] -> depthwise [0][15] -> BatchNorm [0][16] -> [0][18].
    # [0][12] also reads group 1, whose order permutes its inputs.
    order = np.argsort(-scores["[0][12]"], kind="stable")
    before = np.argsort(-scores["[0][6]"], kind="stable")
    np.testing.assert_array_equal(magnitude_scores(ordered)["[0][12]"], scores["[0][12]"][order])
    np.testing.assert_array_equal(ordered[0][12].weight, pruned[0][12].weight[order][:, before])
    for path, name in (("[0][13]", "running_mean"), ("[0][13]", "weight"), ("[0][15]", "weight"),
                       ("[0][16]", "bias"), ("[0][16]", "running_var")):
        old, new = dict(pruned.named_layers())[path], dict(ordered.named_layers())[path]
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name)[order], err_msg=path + name)
        if name in old.masks:
            np.testing.assert_array_equal(new.masks[name], old.masks[name][order], err_msg=path)
    after = np.argsort(-scores["[0][18]"], kind="stable")          # [0][18] makes group 3
    np.testing.assert_array_equal(ordered[0][18].weight, pruned[0][18].weight[after][:, order])


@pytest.mark.ex_resize_1
def test_resize_after_sorting_keeps_the_surviving_channels_in_importance_order(propagated, batch):
    scores = magnitude_scores(propagated)
    resized = resize(sort_channels(propagated, scores))
    producers = [f"[0][{i}]" for i in [0] + [6 * g for g in range(1, 14)]]
    for path in producers:
        kept = magnitude_scores(resized)[path]
        assert np.all(np.diff(kept) <= 0), path
        assert len(kept) < len(scores[path]), path
    assert_same_function(resized, propagated, batch, 1e-9)


def test_sort_channels_refuses_scores_for_layers_it_does_not_have():
    model = Chain(Conv2d(2, 3, 1, rng=np.random.default_rng(0)), ReLU(), Conv2d(3, 1, 1))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"name no layer of the model: \['\[7\]'\]"):
        sort_channels(model, {"[7]": np.ones(3)})
    with pytest.raises(ValueError, match=r"scores for model\[0\] must be 3 finite numbers"):
        sort_channels(model, {"[0]": np.ones(4)})
    with pytest.raises(TypeError, match="scores must be a dict"):
        sort_channels(model, [1.0, 2.0, 3.0])
    assert_same_snapshot(before, snapshot(model))
