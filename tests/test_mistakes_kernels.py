"""Chapter 2, planted mistakes: the tests of im2col and col2im catch their classic mistakes.

As in test_mistakes_layers.py: each test puts a wrong version of a kernel
in place of the real one (``kernels.im2col`` and its plain twin
``kernels._im2col``), runs that exercise's tests in this process with
``pytester`` and asserts that at least one fails.  The mistakes wrap the
real kernels and break their result or input as the classic mistake would,
so no near-solution is written here.
"""

from pathlib import Path

import numpy as np
import pytest

from tinyprune import kernels

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.kernels

TESTS = Path(__file__).resolve().parent
# The files holding tests of the two kernels: their own, and the convolution's (which runs both).
EXERCISE_TESTS = ["test_kernels.py", "test_layers.py", "test_hostile_model.py"]
IM2COL, COL2IM = kernels.im2col, kernels.col2im          # the real kernels, taken before any planting


def failed_tests(pytester, marker):
    """Run the tests carrying ``marker`` in this process; the ids of those that failed."""
    result = pytester.inline_run(*[str(TESTS / name) for name in EXERCISE_TESTS], "-m", marker, "-x",
                                 "-p", "no:cacheprovider", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    passed, _, failed = result.listoutcomes()
    assert passed or failed, f"no test carries the marker {marker}"
    return [report.nodeid for report in failed]


def output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


# ---------------------------------------------------------------------------
# kernels.1: im2col
# ---------------------------------------------------------------------------

def im2col_filter_rows_and_columns_swapped(x, KH, KW, stride, pad, cols):
    # tap (a, b) written into row (c*KW + b)*KH + a instead of (c*KH + a)*KW + b
    IM2COL(x, KH, KW, stride, pad, cols)
    N, C = x.shape[:2]
    cols[...] = cols.reshape(N, C, KH, KW, -1).transpose(0, 1, 3, 2, 4).reshape(cols.shape)


def im2col_output_rows_and_columns_swapped(x, KH, KW, stride, pad, cols):
    # output pixel (i, j) in column j*HO + i instead of i*WO + j
    IM2COL(x, KH, KW, stride, pad, cols)
    N, R = cols.shape[:2]
    HO, WO = output_size(x.shape[2], KH, stride, pad), output_size(x.shape[3], KW, stride, pad)
    cols[...] = cols.reshape(N, R, HO, WO).transpose(0, 1, 3, 2).reshape(cols.shape)


def im2col_padding_with_the_edge_pixels(x, KH, KW, stride, pad, cols):
    # the border filled with copies of the edge instead of zeros
    edge = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    IM2COL(np.ascontiguousarray(edge), KH, KW, stride, 0, cols)


def im2col_forgetting_the_padding(x, KH, KW, stride, pad, cols):
    # fields read from the corner of the unpadded image (the columns a pad-0 unfolding writes first)
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
    # each copy overwrites its pixel, so a pixel in several fields keeps only one copy's gradient
    N, C, H, W = dx.shape
    HP, WP = H + 2 * pad, W + 2 * pad
    source = np.empty((1,) + cols.shape[1:])              # which padded pixel each entry was copied from
    IM2COL(np.arange(C * HP * WP, dtype=np.float64).reshape(1, C, HP, WP), KH, KW, stride, 0, source)
    plane = np.zeros((N, C * HP * WP), dx.dtype)
    plane[:, source[0].astype(np.int64).ravel()] = cols.reshape(N, -1)   # repeated indices: one value wins
    dx[...] = plane.reshape(N, C, HP, WP)[:, :, pad:, pad:][:, :, :H, :W]


def col2im_dropping_the_border(cols, KH, KW, stride, pad, dx):
    # the outermost ring of pixels left at 0, as loops running from 1 to H - 2 would
    COL2IM(cols, KH, KW, stride, pad, dx)
    dx[:, :, [0, -1], :] = 0
    dx[:, :, :, [0, -1]] = 0


def col2im_without_the_padding_offset(cols, KH, KW, stride, pad, dx):
    # dx copied out of the padded plane at [r, q] instead of [r + pad, q + pad]
    COL2IM(cols, KH, KW, stride, pad, dx)
    shifted = np.zeros_like(dx)
    shifted[:, :, pad:, pad:] = dx[:, :, :dx.shape[2] - pad, :dx.shape[3] - pad]
    dx[...] = shifted


MISTAKES = [   # (the exercise's marker, the kernel, the mistake)
    ("ex_kernels_1", "im2col", im2col_filter_rows_and_columns_swapped),
    ("ex_kernels_1", "im2col", im2col_output_rows_and_columns_swapped),
    ("ex_kernels_1", "im2col", im2col_padding_with_the_edge_pixels),
    ("ex_kernels_1", "im2col", im2col_forgetting_the_padding),
    ("ex_kernels_2", "col2im", col2im_overwriting_instead_of_adding),
    ("ex_kernels_2", "col2im", col2im_dropping_the_border),
    ("ex_kernels_2", "col2im", col2im_without_the_padding_offset),
    # The convolution's gradients catch a fold that does not add up, too.
    ("ex_layers_4", "col2im", col2im_overwriting_instead_of_adding),
]


@pytest.mark.parametrize("marker,kernel,mistake", MISTAKES,
                         ids=[f"{m.__name__}-{marker}" for marker, _, m in MISTAKES])
def test_a_planted_mistake_fails_its_exercises_tests(pytester, monkeypatch, marker, kernel, mistake):
    monkeypatch.setattr(kernels, kernel, mistake)           # what Conv2d calls
    monkeypatch.setattr(kernels, "_" + kernel, mistake)     # the plain twin, which the kernel tests run too
    failed = failed_tests(pytester, marker)
    assert failed, f"with {kernel} replaced by {mistake.__name__}, every test marked {marker} still passes"
