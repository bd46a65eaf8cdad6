"""Folding BatchNorm into convolutions: the same function in eval mode, fewer layers.

``fold_batchnorm`` is checked on MobileNets in float64 (to 1e-10 relative)
and on the shipped checkpoint in float32 (to 1e-5), unpruned, pruned,
propagated and resized; its counts against the unfolded model's under every
rule; and the rest of the pipeline (propagate, resize, count, save, load) on
a folded model.  The optional depthwise bias that folding needs is checked
here too.
"""

import numpy as np
import pytest

from helpers import give_statistics, relative_error
from tinyprune import (RULES, BatchNorm2d, ChannelPrune, Chain, Conv2d, DepthwiseConv2d, MobileNet,
                       ReLU, compute_dot_prods, gradcheck, load, pretrained, prune, prune_propagate,
                       resize, save)
from tinyprune.fold import fold_batchnorm

pytestmark = [pytest.mark.inference, pytest.mark.integration]   # on pruned, propagated and resized models

INPUT = (3, 3, 32, 32)


def batchnorms(model):
    return sum(isinstance(layer, BatchNorm2d) for _, layer in model.named_layers())


def eval_output(model, x):
    model = model.copy().eval()
    model.fast_eval = False          # the plain layers: this file tests folding, not the fast path
    return model(x)


@pytest.fixture(scope="module")
def mobilenet64():
    """A small float64 MobileNet with calibrated, non-trivial BatchNorm statistics."""
    rng = np.random.default_rng(0)
    model = MobileNet("relu", 0.25, fcsize=16, nclasses=3, seed=1, dtype=np.float64)
    return give_statistics(model, rng, rng.random(INPUT))


def pipeline(model):
    """The model, pruned, propagated and resized (ChannelPrune(0.5))."""
    pruned = prune(ChannelPrune(0.5), model)
    propagated = prune_propagate(pruned)
    return {"full": model, "pruned": pruned, "propagated": propagated, "resized": resize(propagated)}


def test_fold_removes_all_27_batchnorms_of_mobilenet(mobilenet64):
    folded = fold_batchnorm(mobilenet64)
    assert batchnorms(mobilenet64) == 27 and batchnorms(folded) == 0
    assert len(list(folded.named_layers())) == len(list(mobilenet64.named_layers())) - 27
    assert folded[0][1].__class__.__name__ == "ReLU"           # the first BatchNorm's place
    assert folded[0][0].bias is not None and folded[0][2].bias is not None


def test_fold_leaves_the_model_unchanged(mobilenet64):
    before = mobilenet64.state_dict()
    fold_batchnorm(mobilenet64)
    after = mobilenet64.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before) and before.keys() == after.keys()


@pytest.mark.parametrize("stage", ["full", "pruned", "propagated", "resized"])
def test_folded_float64_model_computes_the_same_in_eval_mode(mobilenet64, stage):
    model = pipeline(mobilenet64)[stage]
    x = np.random.default_rng(2).random(INPUT)
    assert relative_error(eval_output(fold_batchnorm(model), x), eval_output(model, x)) < 1e-10


@pytest.mark.parametrize("stage", ["full", "resized"])
def test_folded_checkpoint_computes_the_same_in_float32(stage):
    model = pipeline(pretrained())[stage]
    x = np.random.default_rng(3).random((4, 3, 96, 96), dtype=np.float32)
    assert relative_error(eval_output(fold_batchnorm(model), x), eval_output(model, x)) < 1e-5


@pytest.mark.parametrize("stage", ["full", "pruned", "propagated", "resized"])
@pytest.mark.parametrize("rule", RULES)
def test_folding_keeps_the_counts(mobilenet64, stage, rule):
    # ChannelPrune masks a conv's row together with the gamma after it, so folding (which
    # zeroes the rows of zero gammas) makes no new zeros for any rule to count.
    model = pipeline(mobilenet64)[stage]
    shape = (1,) + INPUT[1:]
    assert compute_dot_prods(fold_batchnorm(model), shape, rule) == compute_dot_prods(model, shape, rule)


def test_a_pruned_gamma_keeps_its_folded_row_and_bias_pruned(mobilenet64):
    model = prune(ChannelPrune(0.5), mobilenet64)
    folded = fold_batchnorm(model)
    gamma_kept = model[0][1].masks["weight"]
    conv = folded[0][0]
    assert np.array_equal(conv.masks["weight"].reshape(conv.c_out, -1).any(axis=1), gamma_kept)
    assert np.array_equal(conv.masks["bias"], gamma_kept)         # beta is pruned with gamma
    assert np.all(conv.weight[~gamma_kept] == 0) and np.all(conv.bias[~gamma_kept] == 0)


def test_a_batchnorm_that_follows_no_conv_stays():
    rng = np.random.default_rng(4)
    model = give_statistics(Chain(BatchNorm2d(3, dtype=np.float64), Conv2d(3, 4, 3, pad=1, dtype=np.float64),
                                  ReLU(), BatchNorm2d(4, dtype=np.float64)), rng, rng.random((2, 3, 8, 8)))
    folded = fold_batchnorm(model)
    assert [type(layer).__name__ for layer in folded] == ["BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d"]


def test_a_folded_model_goes_through_the_pipeline_and_a_checkpoint(mobilenet64, tmp_path):
    folded = fold_batchnorm(mobilenet64)
    resized = resize(prune_propagate(prune(ChannelPrune(0.5), folded)))
    assert resized[0][0].c_out < folded[0][0].c_out                 # channels were cut
    x = np.random.default_rng(5).random(INPUT)
    path = save(resized.eval(), tmp_path / "folded.npz")
    assert np.array_equal(eval_output(load(path), x), eval_output(resized, x))
    assert load(path)[0][2].bias is not None                         # the depthwise bias came back


def test_propagate_folds_a_depthwise_channel_that_is_only_its_bias(mobilenet64):
    # Depthwise filter 3 of the folded model reads nothing but still adds its bias: a constant
    # channel, which propagate may fold into the next conv's bias but must not drop.
    folded = fold_batchnorm(mobilenet64)
    depthwise = folded[0][2]
    assert isinstance(depthwise, DepthwiseConv2d) and depthwise.bias[3] != 0
    depthwise.weight[3] = 0
    propagated = prune_propagate(folded)
    consumer = propagated[0][4]
    assert np.all(consumer.weight[:, 3] == 0)                        # the constant moved to the bias
    x = np.random.default_rng(6).random(INPUT)
    for training in (False, True):
        assert relative_error(folded.copy().train(training).forward(x),
                              propagated.copy().train(training).forward(x)) < 1e-10


def test_depthwise_bias_is_added_to_every_pixel_of_its_channel():
    layer = DepthwiseConv2d(2, 3, pad=1, bias=True, dtype=np.float64)
    x = np.random.default_rng(7).random((1, 2, 5, 5))
    without = layer.forward(x)
    layer.bias[:] = (0.5, -2.0)
    assert np.allclose(layer.forward(x) - without, np.array([0.5, -2.0])[None, :, None, None])
    assert layer.param_names == ("weight", "bias") and "bias=True" in repr(layer)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_depthwise_bias_gradient_matches_finite_differences(mode):
    layer = DepthwiseConv2d(3, 3, stride=2, pad=1, bias=True, rng=np.random.default_rng(8))
    layer.bias[:] = (0.1, -0.2, 0.3)
    layer.train(mode == "train")
    report = gradcheck(layer, np.random.default_rng(9).random((2, 3, 7, 6)))
    assert set(report) == {"input", "weight", "bias"} and report.worst < 1e-6, str(report)
