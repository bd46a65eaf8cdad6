"""Chapter 2's classic mistakes, planted one at a time: each must make its exercise's tests fail.

As in test_mistakes_layers.py: each test puts a wrong version of a kernel
in place of the real one (``kernels.im2col`` and its plain twin
``kernels._im2col``), runs that exercise's tests in this process, selected
by its marker, and at least one must fail (``assert_caught`` in
tests/helpers.py).  The mistakes wrap the real kernels and break their
result or input as the classic mistake would, so no piece of a solution is
written here.
"""

import numpy as np
import pytest

from tinyprune import kernels

from helpers import assert_caught

pytestmark = pytest.mark.kernels

# The files holding tests of the two kernels: their own, and the convolution's (which runs both).
EXERCISE_TESTS = ("test_kernels.py", "test_layers.py", "test_hostile_model.py")
IM2COL, COL2IM = kernels.im2col, kernels.col2im          # the real kernels, taken before any planting


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


# ---------------------------------------------------------------------------
# kernels.1: im2col
# ---------------------------------------------------------------------------

def im2col_filter_rows_and_columns_swapped(x, KH, KW, stride, pad, cols):
    """Swaps a field's rows and columns: tap (a, b) into row (c*KW + b)*KH + a, not (c*KH + a)*KW + b."""
    IM2COL(x, KH, KW, stride, pad, cols)
    N, C = x.shape[:2]
    cols[...] = cols.reshape(N, C, KH, KW, -1).transpose(0, 1, 3, 2, 4).reshape(cols.shape)


def im2col_output_rows_and_columns_swapped(x, KH, KW, stride, pad, cols):
    """Puts output pixel (i, j) in column j*HO + i instead of i*WO + j: the output's rows and columns swapped."""
    IM2COL(x, KH, KW, stride, pad, cols)
    N, R = cols.shape[:2]
    HO, WO = output_size(x.shape[2], KH, stride, pad), output_size(x.shape[3], KW, stride, pad)
    cols[...] = cols.reshape(N, R, HO, WO).transpose(0, 1, 3, 2).reshape(cols.shape)


def im2col_padding_with_the_edge_pixels(x, KH, KW, stride, pad, cols):
    """Pads with copies of the edge pixels instead of zeros."""
    edge = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    IM2COL(np.ascontiguousarray(edge), KH, KW, stride, 0, cols)


def im2col_forgetting_the_padding(x, KH, KW, stride, pad, cols):
    """Forgets the padding: reads the fields from the corner of the unpadded image."""
    cols[...] = 0.0
    N, C, H, W = x.shape
    HO, WO = output_size(H, KH, stride, 0), output_size(W, KW, stride, 0)
    unpadded = np.empty(cols.shape[:2] + (HO * WO,), cols.dtype)
    IM2COL(x, KH, KW, stride, 0, unpadded)
    cols[:, :, :HO * WO] = unpadded


# ---------------------------------------------------------------------------
# kernels.2: col2im
# ---------------------------------------------------------------------------

def col2im_overwriting_instead_of_adding(cols, KH, KW, stride, pad, dx):
    """Overwrites instead of adding: a pixel in several fields keeps only one copy's gradient."""
    N, C, H, W = dx.shape
    HP, WP = H + 2 * pad, W + 2 * pad
    source = np.empty((1,) + cols.shape[1:])              # which padded pixel each entry was copied from
    IM2COL(np.arange(C * HP * WP, dtype=np.float64).reshape(1, C, HP, WP), KH, KW, stride, 0, source)
    plane = np.zeros((N, C * HP * WP), dx.dtype)
    plane[:, source[0].astype(np.int64).ravel()] = cols.reshape(N, -1)   # repeated indices: one value wins
    dx[...] = plane.reshape(N, C, HP, WP)[:, :, pad:, pad:][:, :, :H, :W]


def col2im_dropping_the_border(cols, KH, KW, stride, pad, dx):
    """Drops the border: the outermost ring of pixels left at 0, as loops from 1 to H - 2 would."""
    COL2IM(cols, KH, KW, stride, pad, dx)
    dx[:, :, [0, -1], :] = 0
    dx[:, :, :, [0, -1]] = 0


def col2im_without_the_padding_offset(cols, KH, KW, stride, pad, dx):
    """Copies dx out of the padded plane at [r, q] instead of [r + pad, q + pad]."""
    COL2IM(cols, KH, KW, stride, pad, dx)
    shifted = np.zeros_like(dx)
    shifted[:, :, pad:, pad:] = dx[:, :, :dx.shape[2] - pad, :dx.shape[3] - pad]
    dx[...] = shifted


MISTAKES = [   # (exercise, the kernel, the mistake)
    ("kernels.1", "im2col", im2col_filter_rows_and_columns_swapped),
    ("kernels.1", "im2col", im2col_output_rows_and_columns_swapped),
    ("kernels.1", "im2col", im2col_padding_with_the_edge_pixels),
    ("kernels.1", "im2col", im2col_forgetting_the_padding),
    ("kernels.2", "col2im", col2im_overwriting_instead_of_adding),
    ("kernels.2", "col2im", col2im_dropping_the_border),
    ("kernels.2", "col2im", col2im_without_the_padding_offset),
    # The convolution's gradients catch a fold that does not add up, too.
    ("layers.4", "col2im", col2im_overwriting_instead_of_adding),
]


@pytest.mark.parametrize("exercise, kernel, mistake", MISTAKES, ids=[f"{e} {m.__name__}" for e, _, m in MISTAKES])
def test_the_exercises_tests_catch_the_planted_mistake(monkeypatch, exercise, kernel, mistake):
    monkeypatch.setattr(kernels, kernel, mistake)           # what Conv2d calls
    monkeypatch.setattr(kernels, "_" + kernel, mistake)     # the plain twin, which the kernel tests run too
    assert_caught(exercise, EXERCISE_TESTS, f"{mistake.__name__}: {mistake.__doc__}")
