"""Chapter 1's classic mistakes, planted one at a time: each must make its exercise's tests fail.

Every test below puts one small wrong version of an exercise in place of
the real one (a layer's method, or a kernel's module attribute, compiled
name and plain twin alike: ``kernels.depthwise_backward`` and
``kernels._depthwise_backward``); the exercise's tests then run in this
process, selected by its marker, and at least one must fail
(``assert_caught`` in tests/helpers.py).

The mistakes wrap the real code and break its result or its input the way
the classic mistake would (a flipped filter, the first image's gradient
only, dx shifted by the padding) instead of editing its text: so no piece
of a solution is written here, and in a course copy, where the real code
is a stub, the wrapped stub fails the tests all the same.
"""

import numpy as np
import pytest

from tinyprune import BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, kernels

from helpers import assert_caught

pytestmark = pytest.mark.layers

# The files holding the layers chapter's exercise tests.
EXERCISE_TESTS = ("test_layers.py", "test_kernels.py", "test_hostile_model.py")

# The real code, taken before any test plants a mistake in its place.
DENSE_BACKWARD = Dense.backward
BATCHNORM_BACKWARD = BatchNorm2d.backward
CONV_BACKWARD = Conv2d.backward
DEPTHWISE_BACKWARD = DepthwiseConv2d.backward
KERNELS = {name: getattr(kernels, name) for name in
           ("slopehtanh_backward", "batchnorm_train_backward", "depthwise_backward")}


def plant(monkeypatch, place, mistake):
    """Put ``mistake`` where ``place`` says: ("kernel", name) or (class, method name)."""
    owner, name = place
    if owner == "kernel":
        monkeypatch.setattr(kernels, name, mistake)          # what the layers call
        monkeypatch.setattr(kernels, "_" + name, mistake)    # the plain twin, which the kernel tests run too
    else:
        monkeypatch.setattr(owner, name, mistake)


def shifted_by(image, pad):
    """``image`` (N, C, H, W) moved down and right by ``pad`` pixels, zeros coming in.

    What a backward pass gives when it copies dL/dx out of the padded plane
    at [r, q] instead of [r + pad, q + pad] (the zeros stand for the
    gradient that fell on the padding).
    """
    out = np.zeros_like(image)
    out[:, :, pad:, pad:] = image[:, :, :image.shape[2] - pad, :image.shape[3] - pad]
    return out


def only_the_first_image(dy):
    """dy with every image but the first set to 0: its gradients are those of image 0 alone."""
    first = np.zeros_like(dy)
    first[0] = dy[0]
    return first


# ---------------------------------------------------------------------------
# layers.1: Dense
# ---------------------------------------------------------------------------

def dense_bias_gradient_left_at_zero(self, dy):
    """Leaves the bias gradient at zero."""
    dx = DENSE_BACKWARD(self, dy)
    if self.bias is not None:
        self.grads["bias"] = np.zeros_like(self.bias)
    return dx


def dense_weight_gradient_transposed(self, dy):
    """Computes dW as x^T dy instead of dy^T x: shape (in, out), the transpose of W's."""
    dx = DENSE_BACKWARD(self, dy)
    self.grads["weight"] = self.grads["weight"].T.copy()
    return dx


def dense_input_gradient_through_the_unmasked_weight(self, dy):
    """Takes dL/dx through the stored weight, where a pruned entry may hold NaN, not effective("weight")."""
    DENSE_BACKWARD(self, dy)
    return np.matmul(dy, self.weight).astype(self.weight.dtype)


# ---------------------------------------------------------------------------
# layers.2: slopehtanh
# ---------------------------------------------------------------------------

def slopehtanh_flat_beyond_one(x, dy, dx):
    """Gives slope 0 outside [-1, 1] (hardtanh's) instead of -1/4."""
    KERNELS["slopehtanh_backward"](x, dy, dx)
    dx[np.abs(x) > 1] = 0


def slopehtanh_slope_plus_a_quarter_beyond_one(x, dy, dx):
    """Loses the sign of the outside slope: +1/4 instead of -1/4."""
    KERNELS["slopehtanh_backward"](x, dy, dx)
    outside = np.abs(x) > 1
    dx[outside] = -dx[outside]


def slopehtanh_outside_slope_at_the_kinks(x, dy, dx):
    """Tests |x| < 1 for the inside, so the kinks x = -1 and x = 1 get -1/4 instead of 1."""
    KERNELS["slopehtanh_backward"](x, dy, dx)
    kink = np.abs(x) == 1
    dx[kink] = -0.25 * dy[kink]


# ---------------------------------------------------------------------------
# layers.3: BatchNorm in train mode
# ---------------------------------------------------------------------------

def batchnorm_without_the_mean_terms(x, dy, gamma, mean, var, eps, dx, dgamma, dbeta):
    """Leaves out the mean terms: dx = gamma * dy / sqrt(var + eps), as if mu and var did not move with x."""
    KERNELS["batchnorm_train_backward"](x, dy, gamma, mean, var, eps, dx, dgamma, dbeta)
    dx[...] = (gamma / np.sqrt(var + eps))[None, :, None] * dy


def batchnorm_train_mode_with_the_running_statistics(self, dy):
    """Normalises train mode's backward pass by the running statistics, as eval mode does."""
    x3, mean, var = self._cache
    self._cache = (x3, None, None)                # the eval-mode cache: no batch statistics
    try:
        return BATCHNORM_BACKWARD(self, dy)
    finally:
        self._cache = (x3, mean, var)


# ---------------------------------------------------------------------------
# layers.4: Conv2d
# ---------------------------------------------------------------------------

def conv_weight_gradient_transposed(self, dy):
    """Pours dWm transposed, (C_in*KH*KW, C_out), into the (C_out, C_in, KH, KW) weight's gradient."""
    dx = CONV_BACKWARD(self, dy)
    g = self.grads["weight"]
    self.grads["weight"] = g.reshape(g.shape[0], -1).T.reshape(g.shape)
    return dx


def conv_weight_gradient_of_the_first_image_only(self, dy):
    """Sums dW over the pixels of the first image only, not over the batch."""
    dx = CONV_BACKWARD(self, dy)
    bias = self.grads.get("bias")
    CONV_BACKWARD(self, only_the_first_image(dy))
    if bias is not None:
        self.grads["bias"] = bias
    return dx


def conv_bias_gradient_left_at_zero(self, dy):
    """Leaves the bias gradient at zero."""
    dx = CONV_BACKWARD(self, dy)
    if self.bias is not None:
        self.grads["bias"] = np.zeros_like(self.bias)
    return dx


# ---------------------------------------------------------------------------
# layers.5: DepthwiseConv2d
# ---------------------------------------------------------------------------

def depthwise_without_flipping_the_filter(x, w, dy, stride, pad, dx, dw):
    """Gathers dx from the outputs with the filter as it is instead of flipped.

    (Gathering with the filter unflipped is scattering with it flipped.)
    """
    KERNELS["depthwise_backward"](x, np.ascontiguousarray(w[:, ::-1, ::-1]), dy, stride, pad, dx, dw)


def depthwise_without_the_padding_offset(x, w, dy, stride, pad, dx, dw):
    """Copies dx out of the padded plane at [r, q] instead of [r + pad, q + pad]."""
    KERNELS["depthwise_backward"](x, w, dy, stride, pad, dx, dw)
    dx[...] = shifted_by(dx, pad)


def depthwise_bias_gradient_left_at_zero(self, dy):
    """Leaves the (optional) bias gradient at zero."""
    dx = DEPTHWISE_BACKWARD(self, dy)
    if self.bias is not None:
        self.grads["bias"] = np.zeros_like(self.bias)
    return dx


def depthwise_weight_gradient_of_the_first_image_only(x, w, dy, stride, pad, dx, dw):
    """Sums dw over the first image only, not over the batch."""
    KERNELS["depthwise_backward"](x, w, only_the_first_image(dy), stride, pad, np.empty_like(dx), dw)
    KERNELS["depthwise_backward"](x, w, dy, stride, pad, dx, np.empty_like(dw))


MISTAKES = [   # (exercise, where the mistake goes, the mistake)
    ("layers.1", (Dense, "backward"), dense_bias_gradient_left_at_zero),
    ("layers.1", (Dense, "backward"), dense_weight_gradient_transposed),
    ("layers.1", (Dense, "backward"), dense_input_gradient_through_the_unmasked_weight),
    ("layers.2", ("kernel", "slopehtanh_backward"), slopehtanh_flat_beyond_one),
    ("layers.2", ("kernel", "slopehtanh_backward"), slopehtanh_slope_plus_a_quarter_beyond_one),
    ("layers.2", ("kernel", "slopehtanh_backward"), slopehtanh_outside_slope_at_the_kinks),
    ("layers.3", ("kernel", "batchnorm_train_backward"), batchnorm_without_the_mean_terms),
    ("layers.3", (BatchNorm2d, "backward"), batchnorm_train_mode_with_the_running_statistics),
    ("layers.4", (Conv2d, "backward"), conv_weight_gradient_transposed),
    ("layers.4", (Conv2d, "backward"), conv_weight_gradient_of_the_first_image_only),
    ("layers.4", (Conv2d, "backward"), conv_bias_gradient_left_at_zero),
    ("layers.5", ("kernel", "depthwise_backward"), depthwise_without_flipping_the_filter),
    ("layers.5", ("kernel", "depthwise_backward"), depthwise_without_the_padding_offset),
    ("layers.5", ("kernel", "depthwise_backward"), depthwise_weight_gradient_of_the_first_image_only),
    ("layers.5", (DepthwiseConv2d, "backward"), depthwise_bias_gradient_left_at_zero),
]


@pytest.mark.parametrize("exercise, place, mistake", MISTAKES, ids=[f"{e} {m.__name__}" for e, _, m in MISTAKES])
def test_the_exercises_tests_catch_the_planted_mistake(monkeypatch, exercise, place, mistake):
    plant(monkeypatch, place, mistake)
    assert_caught(exercise, EXERCISE_TESTS, f"{mistake.__name__}: {mistake.__doc__}")
