"""Chapter 1, planted mistakes: each backward-pass exercise's tests catch its classic mistakes.

Every test below puts one small wrong version of an exercise in place of
the real one (a layer's method, or a kernel module attribute, compiled and
plain, as ``kernels.depthwise_backward`` and ``kernels._depthwise_backward``),
runs that exercise's tests in this process with pytest's ``pytester``
(``-m ex_layers_<n>``, stopping at the first failure) and asserts that at
least one fails.  Each run takes about a second.

The mistakes are built from the real code, by wrapping it and breaking its
result or its input the way the classic mistake would (a flipped filter, a
gradient of the first image only, dx shifted by the padding), not written
out afresh: so this file holds no near-solution, and a student copy, where
the real code is a stub, still runs it (the stub fails the tests anyway).
"""

from pathlib import Path

import numpy as np
import pytest

from tinyprune import BatchNorm2d, Conv2d, Dense, kernels

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.layers

TESTS = Path(__file__).resolve().parent
# The files holding the layers chapter's exercise tests.
EXERCISE_TESTS = ["test_layers.py", "test_kernels.py", "test_hostile_model.py"]

# The real code, taken before any test plants a mistake in its place.
DENSE_BACKWARD = Dense.backward
BATCHNORM_BACKWARD = BatchNorm2d.backward
CONV_BACKWARD = Conv2d.backward
KERNELS = {name: getattr(kernels, name) for name in
           ("slopehtanh_backward", "batchnorm_train_backward", "depthwise_backward")}


def failed_tests(pytester, marker, files=EXERCISE_TESTS):
    """Run the tests of ``files`` that carry ``marker`` in this process; the ids of those that failed."""
    result = pytester.inline_run(*[str(TESTS / name) for name in files], "-m", marker, "-x",
                                 "-p", "no:cacheprovider", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    passed, _, failed = result.listoutcomes()
    assert passed or failed, f"no test carries the marker {marker}"
    return [report.nodeid for report in failed]


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
    dx = DENSE_BACKWARD(self, dy)
    if self.bias is not None:
        self.grads["bias"] = np.zeros_like(self.bias)
    return dx


def dense_weight_gradient_transposed(self, dy):
    # x^T dy instead of dy^T x: (in, out), the transpose of W's shape
    dx = DENSE_BACKWARD(self, dy)
    self.grads["weight"] = self.grads["weight"].T.copy()
    return dx


def dense_input_gradient_through_the_unmasked_weight(self, dy):
    # dL/dx through the stored weight, where a pruned entry may hold NaN, not through effective("weight")
    DENSE_BACKWARD(self, dy)
    return np.matmul(dy, self.weight).astype(self.weight.dtype)


# ---------------------------------------------------------------------------
# layers.2: slopehtanh
# ---------------------------------------------------------------------------

def slopehtanh_flat_beyond_one(x, dy, dx):
    # hardtanh's slope, 0, outside [-1, 1] instead of -1/4
    KERNELS["slopehtanh_backward"](x, dy, dx)
    dx[np.abs(x) > 1] = 0


def slopehtanh_slope_plus_a_quarter_beyond_one(x, dy, dx):
    # the sign of the outside slope lost: +1/4
    KERNELS["slopehtanh_backward"](x, dy, dx)
    outside = np.abs(x) > 1
    dx[outside] = -dx[outside]


def slopehtanh_outside_slope_at_the_kinks(x, dy, dx):
    # |x| < 1 for the inside, so x = -1 and x = 1 get -1/4 instead of 1
    KERNELS["slopehtanh_backward"](x, dy, dx)
    kink = np.abs(x) == 1
    dx[kink] = -0.25 * dy[kink]


# ---------------------------------------------------------------------------
# layers.3: BatchNorm in train mode
# ---------------------------------------------------------------------------

def batchnorm_without_the_mean_terms(x, dy, gamma, mean, var, eps, dx, dgamma, dbeta):
    # dx = gamma * dy / sqrt(var + eps), as if mu and var did not move with x
    KERNELS["batchnorm_train_backward"](x, dy, gamma, mean, var, eps, dx, dgamma, dbeta)
    dx[...] = (gamma / np.sqrt(var + eps))[None, :, None] * dy


def batchnorm_train_mode_with_the_running_statistics(self, dy):
    # train mode's backward pass normalising by the running statistics, as eval mode does
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
    # dWm^T, (C_in*KH*KW, C_out), poured into the (C_out, C_in, KH, KW) weight
    dx = CONV_BACKWARD(self, dy)
    g = self.grads["weight"]
    self.grads["weight"] = g.reshape(g.shape[0], -1).T.reshape(g.shape)
    return dx


def conv_weight_gradient_of_the_first_image_only(self, dy):
    dx = CONV_BACKWARD(self, dy)
    bias = self.grads.get("bias")
    CONV_BACKWARD(self, only_the_first_image(dy))
    if bias is not None:
        self.grads["bias"] = bias
    return dx


def conv_bias_gradient_left_at_zero(self, dy):
    dx = CONV_BACKWARD(self, dy)
    if self.bias is not None:
        self.grads["bias"] = np.zeros_like(self.bias)
    return dx


# ---------------------------------------------------------------------------
# layers.5: DepthwiseConv2d
# ---------------------------------------------------------------------------

def depthwise_without_flipping_the_filter(x, w, dy, stride, pad, dx, dw):
    # Gathering dx[p] from the outputs that read p needs the filter flipped; gathering
    # with it as it is equals scattering with it flipped.
    KERNELS["depthwise_backward"](x, np.ascontiguousarray(w[:, ::-1, ::-1]), dy, stride, pad, dx, dw)


def depthwise_without_the_padding_offset(x, w, dy, stride, pad, dx, dw):
    KERNELS["depthwise_backward"](x, w, dy, stride, pad, dx, dw)
    dx[...] = shifted_by(dx, pad)


def depthwise_weight_gradient_of_the_first_image_only(x, w, dy, stride, pad, dx, dw):
    KERNELS["depthwise_backward"](x, w, only_the_first_image(dy), stride, pad, np.empty_like(dx), dw)
    KERNELS["depthwise_backward"](x, w, dy, stride, pad, dx, np.empty_like(dw))


MISTAKES = [   # (the exercise's marker, where the mistake goes, the mistake)
    ("ex_layers_1", (Dense, "backward"), dense_bias_gradient_left_at_zero),
    ("ex_layers_1", (Dense, "backward"), dense_weight_gradient_transposed),
    ("ex_layers_1", (Dense, "backward"), dense_input_gradient_through_the_unmasked_weight),
    ("ex_layers_2", ("kernel", "slopehtanh_backward"), slopehtanh_flat_beyond_one),
    ("ex_layers_2", ("kernel", "slopehtanh_backward"), slopehtanh_slope_plus_a_quarter_beyond_one),
    ("ex_layers_2", ("kernel", "slopehtanh_backward"), slopehtanh_outside_slope_at_the_kinks),
    ("ex_layers_3", ("kernel", "batchnorm_train_backward"), batchnorm_without_the_mean_terms),
    ("ex_layers_3", (BatchNorm2d, "backward"), batchnorm_train_mode_with_the_running_statistics),
    ("ex_layers_4", (Conv2d, "backward"), conv_weight_gradient_transposed),
    ("ex_layers_4", (Conv2d, "backward"), conv_weight_gradient_of_the_first_image_only),
    ("ex_layers_4", (Conv2d, "backward"), conv_bias_gradient_left_at_zero),
    ("ex_layers_5", ("kernel", "depthwise_backward"), depthwise_without_flipping_the_filter),
    ("ex_layers_5", ("kernel", "depthwise_backward"), depthwise_without_the_padding_offset),
    ("ex_layers_5", ("kernel", "depthwise_backward"), depthwise_weight_gradient_of_the_first_image_only),
]


@pytest.mark.parametrize("marker,place,mistake", MISTAKES, ids=[m.__name__ for _, _, m in MISTAKES])
def test_a_planted_mistake_fails_its_exercises_tests(pytester, monkeypatch, marker, place, mistake):
    plant(monkeypatch, place, mistake)
    failed = failed_tests(pytester, marker)
    assert failed, f"with the mistake {mistake.__name__} planted, every test marked {marker} still passes"

