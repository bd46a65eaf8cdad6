"""The fast path's full convolution (fused_conv.py, MobileNet's first layer): the layer's numbers.

Each function is run compiled and as the plain Python function it was
compiled from.  The convolution is checked against the plain Conv2d
(float64, odd sizes, strides 1 to 3, paddings 0 to 2, output counts that
fill blocks of 8, 4 and 3 unevenly); the phases and the taps against the
layout the module's docstring describes.
"""

import numpy as np
import pytest

from helpers import assert_twins_agree, planes
from tinyprune import Conv2d, activations, fused_conv
from tinyprune import fused_kernels as fk

pytestmark = pytest.mark.inference

# (kernel, stride, pad), including combinations MobileNet never uses
CONV_CASES = [((3, 3), 1, 1), ((3, 3), 2, 1), ((3, 3), 2, 0), ((2, 3), 1, 2), ((3, 2), 3, 1),
              ((1, 1), 1, 0), ((3, 3), 2, 2)]


def both(name):
    """The compiled function and the plain one it was compiled from."""
    return [getattr(fused_conv, name), getattr(fused_conv, "_" + name)]


def random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("outputs", [4, 5, 11, 12, 2])     # 4 at once; 5: 8 padded; 8, then 3 or 4; 2: 4 padded
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
@pytest.mark.parametrize("conv_planes", both("conv_planes"))
def test_full_conv_on_planes_matches_the_layer(conv_planes, kernel, stride, pad, outputs):
    layer = Conv2d(3, outputs, kernel, stride=stride, pad=pad, bias=True, dtype=np.float64,
                   rng=np.random.default_rng(8))
    layer.bias[:] = random(outputs, 9)
    x = random((2, 3, 7, 6), 10)
    expected = activations.slopehtanh(layer.eval().forward(x))
    y = np.empty(planes(expected).shape)
    conv_planes(planes(x), layer.weight, layer.bias, stride, pad, fk.SLOPEHTANH, y, False)
    np.testing.assert_allclose(y, planes(expected), rtol=1e-12, atol=1e-12)
    straight = np.full_like(y, np.nan)
    conv_planes(x, layer.weight, layer.bias, stride, pad, fk.SLOPEHTANH, straight, True)  # the batch as it is
    np.testing.assert_array_equal(straight, y)


@pytest.mark.parametrize("width", [6, 5])
@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (2, 0), (2, 3), (3, 2)])
@pytest.mark.parametrize("split_phases", both("split_phases"))
def test_the_phases_hold_every_s_th_row_and_column_of_the_padded_image(split_phases, stride, pad, width):
    x = random((2, 3, 7, width), 51)                            # planes: 2 channels, 3 images
    RQ, WQ = fused_conv.phase_shape(7, width, stride, pad)
    padded = np.zeros((2, RQ * stride, WQ * stride))            # image 1, zero-padded and rounded up
    padded[:, pad:pad + 7, pad:pad + width] = x[:, 1]
    phases = np.zeros((2, stride, stride, RQ, WQ))
    split_phases(x, 1, pad, phases, False)
    for u in range(stride):
        for v in range(stride):
            np.testing.assert_array_equal(phases[:, u, v], padded[:, u::stride, v::stride])
    straight = np.zeros_like(phases)
    split_phases(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), 1, pad, straight, True)   # images first
    np.testing.assert_array_equal(straight, phases)


@pytest.mark.parametrize("tap_offsets, tap_weights", list(zip(both("tap_offsets"), both("tap_weights"))))
def test_taps_go_in_groups_of_4_the_extra_ones_zero_after_the_phases(tap_offsets, tap_weights):
    taps = tap_offsets(3, 3, 3, 2, 49, 49)             # MobileNet's first conv: 27 taps
    weights = tap_weights(random((5, 3, 3, 3), 61))
    assert taps.shape == (28,) and weights.shape == (8, 28)
    assert taps[27] == 3 * 2 * 2 * 49 * 49              # the first number after the phases
    assert taps[1 * 9 + 2 * 3 + 1] == ((1 * 2 + 0) * 2 + 1) * 49 * 49 + 1 * 49 + 0   # channel 1, tap (2, 1)
    assert np.all(weights[:, 27] == 0) and np.all(weights[5:] == 0)


def helper_cases():
    """(helper name, its arguments): each helper on a small input."""
    x = random((2, 3, 7, 6), 40)
    acc, taps = random((8, 40), 53), np.array([0, 3, 5, 9, 11, 2, 7, 4])
    taps12 = np.array([0, 3, 5, 9, 11, 2, 7, 4, 8, 1, 6, 10])     # 8 taps at a time, then 4
    return [("phase_shape", (7, 6, 2, 1)),
            ("tap_offsets", (2, 3, 2, 2, 5, 4)),
            ("tap_offsets", (3, 3, 3, 2, 6, 5)),
            ("tap_weights", (random((5, 2, 3, 2), 56),)),
            ("tap_weights", (random((9, 3, 3, 3), 57),)),
            ("split_phases", (x, 2, 1, np.zeros((2, 2, 2, 5, 4)), False)),
            ("split_phases", (x, 0, 2, np.zeros((2, 3, 3, 4, 4)), False)),
            ("split_phases", (x, 1, 0, np.zeros((3, 1, 1, 7, 6)), True)),
            ("start", (random((8, 9), 59), random(11, 60), 5)),
            ("eight_outputs", (random((9, 8), 54), 1, taps, random(60, 55), 37, acc)),
            ("four_outputs", (random((9, 8), 54), 5, taps, random(60, 55), 37, acc)),
            ("four_outputs", (random((9, 12), 54), 5, taps12, random(60, 55), 37, acc)),
            ("finish", (random(40, 58), 34, 7, fk.HARDTANH, np.zeros((2, 3, 5, 6)), 1, 2))]


@pytest.mark.parametrize("name, args", helper_cases())
def test_each_helper_gives_the_same_numbers_compiled_and_plain(name, args):
    assert_twins_agree(fused_conv, name, args)
