"""Chapter 3: channel criteria, each against a computation of its own.

Run this chapter alone with ``python -m pytest -m prune``.  The tests that
prune by a criterion check ChannelPrune's ranking of given scores
(exercise prune.3); the masking of the BatchNorm after each conv, which
``prune`` runs on the way (prune.4), is awaited with ``waits_for``.
"""

import numpy as np
import pytest

from tinyprune import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                       GlobalMeanPool, ReLU, bce_with_logits)
from tinyprune.criteria import batchnorm_scores, magnitude_scores, random_scores, taylor_scores
from tinyprune.prune import ChannelPrune, l2, prune

from helpers import TRAINING, assert_same_snapshot, snapshot, trained_looking_mobilenet, waits_for

pytestmark = pytest.mark.prune

# MobileNet's backbone: the full conv at [0][0], then a depthwise conv every 6 layers from [0][3]
# and a pointwise conv every 6 from [0][6]; each is followed by its BatchNorm.
CONV_INDICES = [0] + [i for g in range(13) for i in (3 + 6 * g, 6 + 6 * g)]


@pytest.fixture(scope="module")
def mobilenet():
    return trained_looking_mobilenet(4, statistics=False)      # the criteria read weights and gammas


def kept_channels(pruned, path):
    layer = dict(pruned.named_layers())[path]
    return layer.masks["weight"].reshape(layer.weight.shape[0], -1).all(axis=1)


# ---------------------------------------------------------------------------
# Magnitude, BatchNorm scale, random
# ---------------------------------------------------------------------------

def test_l1_scores_are_the_sums_of_absolute_weights(mobilenet):
    scores = magnitude_scores(mobilenet)
    assert sorted(scores) == sorted(f"[0][{i}]" for i in CONV_INDICES)
    for i in CONV_INDICES:
        w = mobilenet[0][i].weight
        by_hand = [sum(abs(float(v)) for v in w[c].ravel()) for c in range(w.shape[0])]
        np.testing.assert_allclose(scores[f"[0][{i}]"], by_hand, rtol=1e-12)


def test_l2_scores_are_the_root_sums_of_squares(mobilenet):
    scores = magnitude_scores(mobilenet, l2)
    assert scores.name == "l2"
    for i in CONV_INDICES:
        w = mobilenet[0][i].weight
        by_hand = [sum(float(v) ** 2 for v in w[c].ravel()) ** 0.5 for c in range(w.shape[0])]
        np.testing.assert_allclose(scores[f"[0][{i}]"], by_hand, rtol=1e-12)


@pytest.mark.ex_prune_3
@pytest.mark.parametrize("magnitude", [None, l2], ids=["l1", "l2"])
def test_channel_prune_with_magnitude_scores_prunes_what_the_magnitude_prunes(mobilenet, magnitude):
    given = ChannelPrune(0.4) if magnitude is None else ChannelPrune(0.4, magnitude)
    scored = ChannelPrune(0.4, scores=magnitude_scores(mobilenet, *([magnitude] if magnitude else [])))
    with waits_for("prune.4"):
        assert_same_snapshot(snapshot(prune(given, mobilenet)), snapshot(prune(scored, mobilenet)))


def test_batchnorm_scores_are_the_absolute_gammas_of_the_next_layer(mobilenet):
    scores = batchnorm_scores(mobilenet)
    assert sorted(scores) == sorted(f"[0][{i}]" for i in CONV_INDICES)
    for i in CONV_INDICES:
        np.testing.assert_array_equal(scores[f"[0][{i}]"], np.abs(mobilenet[0][i + 1].weight))


@pytest.mark.ex_prune_3
def test_channel_prune_by_batchnorm_scores_prunes_the_smallest_gammas(mobilenet):
    with waits_for("prune.4"):
        pruned = prune(ChannelPrune(0.5, scores=batchnorm_scores(mobilenet)), mobilenet)
    for i in CONV_INDICES:
        kept = kept_channels(pruned, f"[0][{i}]")
        gamma = np.abs(mobilenet[0][i + 1].weight)
        assert np.count_nonzero(~kept) == len(gamma) // 2, \
            f"model[0][{i}]: ChannelPrune(0.5) by |gamma| pruned {np.count_nonzero(~kept)} of {len(gamma)}"
        assert gamma[~kept].max() <= gamma[kept].min(), \
            f"model[0][{i}]: pruned a channel of |gamma| {gamma[~kept].max()}, kept one of {gamma[kept].min()}"


def test_a_conv_without_a_batchnorm_after_it_gets_no_batchnorm_score():
    rng = np.random.default_rng(0)
    model = Chain(Conv2d(3, 4, 3, rng=rng), BatchNorm2d(4), ReLU(), Conv2d(4, 6, 1, rng=rng), ReLU())
    scores = batchnorm_scores(model)
    assert list(scores) == ["[0]"]
    with pytest.raises(ValueError, match=r"model\[3\]: ChannelPrune\(0.5, scores=batchnorm\): scores has "
                                         r"no entry for this layer"), waits_for("prune"):
        prune(ChannelPrune(0.5, scores=scores), model)      # model[0] is ranked (and masked) first


def test_random_scores_are_seeded_draws_in_layer_order(mobilenet):
    scores = random_scores(mobilenet, seed=3)
    rng = np.random.default_rng(3)
    for i in CONV_INDICES:                       # named_layers order is the backbone's order
        np.testing.assert_array_equal(scores[f"[0][{i}]"], rng.random(mobilenet[0][i].weight.shape[0]))
    other = random_scores(mobilenet, seed=4)
    assert not np.array_equal(scores["[0][78]"], other["[0][78]"])


@pytest.mark.ex_prune_3
def test_channel_prune_by_random_scores_prunes_the_lowest_draws(mobilenet):
    scores = random_scores(mobilenet, seed=0)
    with waits_for("prune.4"):
        pruned = prune(ChannelPrune(0.3, scores=scores), mobilenet)
    for path, drawn in scores.items():
        kept = kept_channels(pruned, path)
        assert np.count_nonzero(~kept) == len(drawn) - int(np.ceil(0.7 * len(drawn))), \
            f"model{path}: ChannelPrune(0.3) by random scores pruned {np.count_nonzero(~kept)} of {len(drawn)}"
        assert drawn[~kept].max() < drawn[kept].min(), f"model{path}: pruned a higher draw than one it kept"


# ---------------------------------------------------------------------------
# First-order Taylor
# ---------------------------------------------------------------------------

def tanh_layer():
    return Activation(np.tanh, lambda x: 1 - np.tanh(x) ** 2, "tanh")


def small_net(seed):
    """A float64 conv -> BN -> tanh -> depthwise -> BN -> tanh -> pool -> dense net, smooth everywhere."""
    rng = np.random.default_rng(seed)
    model = Chain(Conv2d(2, 3, 3, pad=1, rng=rng), BatchNorm2d(3), tanh_layer(),
                  DepthwiseConv2d(3, 3, pad=1, rng=rng), BatchNorm2d(3), tanh_layer(),
                  GlobalMeanPool(), Flatten(), Dense(3, 1, rng=rng)).to(np.float64)
    for bn in (model[1], model[4]):
        bn.weight[:] = rng.uniform(0.5, 1.5, 3)
        bn.bias[:] = rng.normal(0, 0.3, 3)
        bn.running_mean[:] = rng.normal(0, 0.2, 3)
        bn.running_var[:] = rng.uniform(0.5, 1.5, 3)
    return model.eval()


def mean_loss(model, batches):
    """The mean over ``batches`` of each batch's mean binary cross-entropy, in eval mode.

    ``forward``, the plain layers: the eval-mode fast path of ``model(x)``
    sees weights changed in place only after ``eval()``, and the finite
    differences below change them in place.
    """
    return np.mean([bce_with_logits(model.forward(x), y)[0] for x, y in batches])


def finite_difference_gradient(model, layer, batches, h=1e-5):
    """d(mean loss)/d(layer.weight) by central differences, entry by entry."""
    grad = np.zeros_like(layer.weight)
    for index in np.ndindex(layer.weight.shape):
        saved = layer.weight[index]
        layer.weight[index] = saved + h
        up = mean_loss(model, batches)
        layer.weight[index] = saved - h
        down = mean_loss(model, batches)
        layer.weight[index] = saved
        grad[index] = (up - down) / (2 * h)
    return grad


def test_taylor_scores_match_finite_difference_gradients():
    model = small_net(0)
    rng = np.random.default_rng(1)
    images, labels = rng.uniform(0, 1, (8, 2, 5, 5)), np.array([0, 1, 1, 0, 1, 0, 0, 1])
    x = images.astype(np.float32).astype(np.float64)      # what the data loader feeds the model
    batches = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    with waits_for(*TRAINING):                          # the gradients come from backward passes
        scores = taylor_scores(model, (images, labels), batches=2, batch_size=4)
    assert sorted(scores) == ["[0]", "[3]"]
    for path, layer in (("[0]", model[0]), ("[3]", model[3])):
        grad = finite_difference_gradient(model, layer, batches)
        channels = layer.weight.shape[0]
        by_hand = np.abs((layer.weight * grad).reshape(channels, -1).sum(axis=1))
        np.testing.assert_allclose(scores[path], by_hand, rtol=1e-6, atol=1e-10)


def test_taylor_scores_use_only_the_batches_asked_for():
    model = small_net(2)
    rng = np.random.default_rng(3)
    images, labels = rng.uniform(0, 1, (12, 2, 5, 5)), rng.integers(0, 2, 12)
    with waits_for(*TRAINING):
        first_two = taylor_scores(model, (images[:8], labels[:8]), batches=2, batch_size=4)
        of_all = taylor_scores(model, (images, labels), batches=2, batch_size=4)
        three = taylor_scores(model, (images, labels), batches=3, batch_size=4)
    for path in first_two:
        np.testing.assert_array_equal(first_two[path], of_all[path])
    assert not np.array_equal(three["[0]"], of_all["[0]"])


def test_taylor_scores_leave_the_model_as_it_was():
    model = small_net(4).train()                     # in train mode, whose BatchNorm would update
    before = snapshot(model)
    images, labels = np.random.default_rng(5).uniform(0, 1, (4, 2, 5, 5)), np.array([0, 1, 0, 1])
    with waits_for(*TRAINING):
        taylor_scores(model, (images, labels), batches=1, batch_size=4)
    assert_same_snapshot(before, snapshot(model))
    assert model.training


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def test_channel_prune_with_scores_is_used_through_prune_only(mobilenet):
    scores = random_scores(mobilenet)
    with pytest.raises(TypeError, match=r"ChannelPrune\(0.5, scores=random\) takes its scores by layer path"):
        ChannelPrune(0.5, scores=scores)(mobilenet[0][0].weight)
    with pytest.raises(ValueError, match="give magnitude or scores, not both"):
        ChannelPrune(0.5, l2, scores=scores)
    with pytest.raises(TypeError, match="scores must be a dict"):
        ChannelPrune(0.5, scores=[1.0, 2.0])


def test_scores_of_the_wrong_shape_name_the_layer(mobilenet):
    scores = dict(random_scores(mobilenet))
    scores["[0][6]"] = np.ones(3)
    before = snapshot(mobilenet)
    with pytest.raises(ValueError, match=r"model\[0\]\[6\]: .*scores\['\[0\]\[6\]'\] holds shape \(3,\) "
                                         r"for 16 channels"), waits_for("prune"):
        prune(ChannelPrune(0.5, scores=scores), mobilenet)  # the layers before [0][6] are pruned first
    assert_same_snapshot(before, snapshot(mobilenet))


@pytest.mark.parametrize("call, error, words", [
    (lambda m, d: taylor_scores(m, d, batches=0), ValueError, "batches"),
    (lambda m, d: taylor_scores(m, (d[0][:0], d[1][:0])), ValueError, "holds no images"),
    (lambda m, d: taylor_scores(m, "images"), TypeError, "taylor_scores: data"),
    (lambda m, d: taylor_scores(Chain(Flatten(), Dense(50, 1)), d), ValueError, "no Conv2d"),
    (lambda m, d: random_scores(m, seed=-1), ValueError, "seed"),
    (lambda m, d: magnitude_scores(None), TypeError, "expected a model"),
], ids=["batches 0", "no images", "not data", "no convs", "negative seed", "not a model"])
def test_bad_criterion_arguments_are_refused(call, error, words):
    data = (np.random.default_rng(6).uniform(0, 1, (4, 2, 5, 5)), np.array([0, 1, 0, 1]))
    with pytest.raises(error, match=words):
        call(small_net(6), data)
