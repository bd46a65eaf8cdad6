"""Helpers shared by the prune, propagate and resize chapters' tests."""

import numpy as np

from tinyprune import BatchNorm2d


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
