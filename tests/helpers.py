"""Helpers shared by the prune, propagate and resize chapters' tests."""

import numpy as np

from tinyprune import BatchNorm2d, Layer, MobileNet, slopehtanh


def give_statistics(model, rng, x):
    """Random gamma and beta, then running statistics of one train-mode batch ``x``.

    Momentum 1 for that batch makes the running statistics the batch's own,
    so eval mode is as well scaled as train mode and every running mean is
    non-zero: a zero channel then leaves a BatchNorm as a non-zero constant.
    """
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            C = layer.channels
            layer.weight[:] = rng.uniform(0.5, 1.5, C)
            layer.bias[:] = rng.normal(0.0, 0.5, C)
            layer.momentum = 1.0
    model.train()(x)
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.momentum = 0.1
    return model


def run(model, x, training):
    """The model's output in the given mode, on a copy (train mode updates running statistics)."""
    return model.copy().train(training)(x)


def relative_error(a, b):
    """max |a - b| over max |b|: the error relative to the size of the output."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def snapshot(model):
    """Copies of every parameter, buffer and mask."""
    masks = {key: mask.copy() for key, mask in model.mask_dict().items()}
    return model.state_dict(), masks


def assert_same_snapshot(a, b):
    (state_a, masks_a), (state_b, masks_b) = a, b
    assert state_a.keys() == state_b.keys() and masks_a.keys() == masks_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    for key in masks_a:
        np.testing.assert_array_equal(masks_a[key], masks_b[key], err_msg=key)


def trained_looking_mobilenet(seed):
    """The tutorial's MobileNet in float64, with random gamma, beta and running statistics.

    ``seed`` draws both the weights and the statistics.
    """
    rng = np.random.default_rng(seed)
    model = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed).to(np.float64)
    return give_statistics(model, rng, rng.uniform(0, 1, (4, 3, 32, 32)))


def assert_returns_a_new_model_and_leaves_its_argument_alone(function, model):
    before = snapshot(model)
    result = function(model)
    assert result is not model
    assert_same_snapshot(before, snapshot(model))


def assert_same_function(model, reference, x, tolerance):
    """``model`` computes what ``reference`` computes on ``x``, in eval and in train mode."""
    for training in (False, True):
        assert relative_error(run(model, x, training), run(reference, x, training)) < tolerance, \
            "train mode" if training else "eval mode"


def assert_float32_costs_no_more_than_rounding(transform, model, x):
    """``transform`` run in float32 adds no more error than float32 itself makes.

    ``model`` and ``x`` are float64.  A random network amplifies rounding,
    so its own float32 output is the bar: the transformed float32 model
    must stay within three times that error of the exact float64 output.
    """
    model32 = model.copy().to(np.float32)
    transformed32 = transform(model32)
    x32 = x.astype(np.float32)
    for training in (False, True):
        exact = run(model, x, training)
        own = relative_error(run(model32, x32, training), exact)
        assert relative_error(run(transformed32, x32, training), exact) < 3 * own + 1e-6


class ChannelScale(Layer):
    """A user's per-channel layer, y[:, j] = scale[j] * x[:, j]: it only declares its channels."""

    param_names = ("scale",)
    mixes_channels = False
    out_channel_arrays = {"scale": 0}

    def __init__(self, channels):
        super().__init__()
        self.scale = np.linspace(0.5, 1.5, channels)

    def forward(self, x):
        return x * self.effective("scale")[:, None, None]
