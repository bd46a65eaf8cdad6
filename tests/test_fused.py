"""The eval-mode fast path: the same outputs as the plain layers, however it computes them.

First the kernels of ``fused_kernels``, each run compiled and as the plain
Python function it was compiled from, against the plain layers (float64,
odd sizes, strides 1 to 3, paddings 0 to 2).  Then whole models: random
chains and MobileNets (every activation; pruned, propagated and resized)
in float64 to 1e-10 relative, and the shipped checkpoint in float32 to
1e-5, at batch sizes that fill tiles unevenly.  Last, when the plan is
used, rebuilt and bypassed.
"""

import numba
import numpy as np
import pytest

from helpers import assert_twins_agree, give_statistics, pixels, plain, planes, relative_error, twins
from tinyprune import (Activation, BatchNorm2d, ChannelPrune, Chain, Conv2d, Dense, DepthwiseConv2d,
                       Flatten, GlobalMeanPool, HardTanh, Identity, MobileNet, ReLU, SlopeHTanh,
                       keepprune, pretrained, prune, prune_propagate, resize)
from tinyprune import activations, fused, products
from tinyprune import fused_depthwise as fd
from tinyprune import fused_kernels as fk
from tinyprune.fused import FusedPlan

pytestmark = [pytest.mark.inference, pytest.mark.integration]   # on pruned, propagated and resized models

ACTIVATIONS = {fk.IDENTITY: activations.identity, fk.RELU: activations.relu,
               fk.HARDTANH: activations.hardtanh, fk.SLOPEHTANH: activations.slopehtanh}
# (kernel, stride, pad), including combinations MobileNet never uses
CONV_CASES = [((3, 3), 1, 1), ((3, 3), 2, 1), ((3, 3), 2, 0), ((2, 3), 1, 2), ((3, 2), 3, 1),
              ((1, 1), 1, 0), ((3, 3), 2, 2)]


def both(name, module=fk):
    """The compiled kernel and the plain function it was compiled from."""
    return twins(module, name)


def random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def fast(model, x):
    """``model``'s eval-mode output through the fast path (which must have a plan)."""
    model = model.copy().eval()
    y = model(x)
    assert isinstance(model._fused, FusedPlan)
    return y


# ---------------------------------------------------------------------------
# Kernels, compiled and plain
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-15), (np.float32, 1e-6)])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("activate", both("activate"))
def test_activate_applies_the_numbered_activation_in_place(activate, act, dtype, atol):
    x = np.linspace(-3, 3, 61).astype(dtype)
    y = x.copy()
    activate(y, act)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ACTIVATIONS[act](x.astype(np.float64)), rtol=0, atol=atol)


@pytest.mark.parametrize("to_pixels, to_planes, scatter_pixels", list(zip(
    both("to_pixels"), both("to_planes"), both("scatter_pixels"))))
def test_a_tile_goes_to_pixels_and_back_unchanged(to_pixels, to_planes, scatter_pixels):
    x = random((3, 5, 4, 2), 0)                     # 3 images: P = 24 pixel rows, no padding
    tile = planes(x)
    rows = np.full((28, 5), np.nan)                 # 4 rows more than the pixels
    to_pixels(tile, rows)
    np.testing.assert_array_equal(rows[:24], pixels(x).reshape(24, 5))
    assert np.all(rows[24:] == 0)                   # the extra rows are zeroed
    back = np.empty_like(tile)
    to_planes(rows, back)
    np.testing.assert_array_equal(back, tile)
    out = np.zeros((5, 5, 4, 2))
    scatter_pixels(rows, 1, 3, out)                 # into images 1..3 of a batch of 5
    np.testing.assert_array_equal(out[1:4], x)
    assert np.all(out[[0, 4]] == 0)


@pytest.mark.parametrize("gather, scatter_planes", list(zip(both("gather"), both("scatter_planes"))))
def test_gather_pads_channels_and_scatter_drops_them(gather, scatter_planes):
    x = random((6, 3, 5, 4), 1)
    tile = np.full((4, 2, 5, 4), np.nan)            # 3 channels padded to 4, images 2 and 3
    gather(x, 2, tile)
    np.testing.assert_array_equal(tile[:3], planes(x[2:4]))
    assert np.all(tile[3] == 0)
    out = np.zeros_like(x)
    scatter_planes(tile, 2, out)
    np.testing.assert_array_equal(out[2:4], x[2:4])


def conv_output(layer, x):
    return layer.eval().forward(x)


def depthwise_layer(channels, kernel, stride, pad, seed):
    """A float64 DepthwiseConv2d with random weights and a random bias."""
    layer = DepthwiseConv2d(channels, kernel, stride=stride, pad=pad, bias=True, dtype=np.float64,
                            rng=np.random.default_rng(seed))
    layer.bias[:] = random(channels, seed + 1)
    return layer


@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
@pytest.mark.parametrize("depthwise_planes", both("depthwise_planes", fd))
def test_depthwise_on_planes_matches_the_layer(depthwise_planes, kernel, stride, pad):
    layer = depthwise_layer(4, kernel, stride, pad, seed=2)
    x = random((3, 4, 7, 6), 4)
    expected = conv_output(layer, x)
    y = np.empty(planes(expected).shape)
    depthwise_planes(planes(x), layer.weight[:, 0].copy(), layer.bias, stride, pad, fk.IDENTITY, y)
    np.testing.assert_allclose(y, planes(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride", [((3, 3), 1), ((3, 3), 2), ((2, 3), 1)])
@pytest.mark.parametrize("depthwise_planes", both("depthwise_planes", fd))
def test_depthwise_on_planes_in_groups_of_images_that_split_channels(depthwise_planes, kernel, stride):
    """5 images of 3 channels, 40x38: a group holds 2 or 4 images, so groups start inside a channel."""
    layer = depthwise_layer(3, kernel, stride, 1, seed=3)
    x = random((5, 3, 40, 38), 5)
    expected = activations.hardtanh(conv_output(layer, x))
    y = np.empty(planes(expected).shape)
    assert fd.GROUP // (stride * ((42 + stride - 1) // stride) * 40) in (2, 4)
    depthwise_planes(planes(x), layer.weight[:, 0].copy(), layer.bias, stride, 1, fk.HARDTANH, y)
    np.testing.assert_allclose(y, planes(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
@pytest.mark.parametrize("depthwise_pixels", both("depthwise_pixels", fd))
def test_depthwise_on_pixels_matches_the_layer(depthwise_pixels, kernel, stride, pad):
    layer = depthwise_layer(5, kernel, stride, pad, seed=5)
    x = random((2, 5, 6, 7), 7)
    expected = np.maximum(conv_output(layer, x), 0)
    y = np.empty(pixels(expected).shape)
    w = np.ascontiguousarray(layer.weight[:, 0].transpose(1, 2, 0))
    depthwise_pixels(pixels(x), w, layer.bias, stride, pad, fk.RELU, y, 0, y.shape[1])
    np.testing.assert_allclose(y, pixels(expected), rtol=1e-12, atol=1e-12)
    rows = np.full_like(y, np.nan)                  # in two shares of the rows, as two threads do
    middle = y.shape[1] // 2
    depthwise_pixels(pixels(x), w, layer.bias, stride, pad, fk.RELU, rows, middle, y.shape[1])
    assert np.all(np.isnan(rows[:, :middle]))
    depthwise_pixels(pixels(x), w, layer.bias, stride, pad, fk.RELU, rows, 0, middle)
    np.testing.assert_array_equal(rows, y)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("depthwise", ["planes", "pixels"])
def test_depthwise_in_float32_matches_the_layer(depthwise, stride):
    """MobileNet's case: 3x3, pad 1, 16 channels, float32 (images of odd and even width)."""
    layer = DepthwiseConv2d(16, (3, 3), stride=stride, pad=1, bias=True, dtype=np.float32,
                            rng=np.random.default_rng(6))
    layer.bias[:] = random(16, 7)
    x = np.random.default_rng(8).standard_normal((3, 16, 9, 10)).astype(np.float32)
    expected = activations.slopehtanh(conv_output(layer, x))
    w = layer.weight[:, 0]
    if depthwise == "planes":
        y = np.empty(planes(expected).shape, np.float32)
        fd.depthwise_planes(planes(x), w.copy(), layer.bias, stride, 1, fk.SLOPEHTANH, y)
        y = y.transpose(1, 0, 2, 3)
    else:
        y = np.empty(pixels(expected).shape, np.float32)
        fd.depthwise_pixels(pixels(x), np.ascontiguousarray(w.transpose(1, 2, 0)), layer.bias, stride, 1,
                            fk.SLOPEHTANH, y, 0, y.shape[1])
        y = y.transpose(0, 3, 1, 2)
    assert relative_error(y, expected) < 1e-5


def fd_masks(T, H, W):
    """fused_depthwise.neighbours for T stacked H x W images."""
    masks = np.zeros(T * H * W, np.uint8)
    fd.neighbours(T, H, W, masks)
    return masks


def test_neighbours_marks_each_pixel_with_the_sides_it_has_a_neighbour_on():
    up, down, left, right = fd.UP, fd.DOWN, fd.LEFT, fd.RIGHT
    top = [down | right, down | left | right, down | left]             # 2 stacked 3x3 images: rows of 3
    middle = [up | down | right, up | down | left | right, up | down | left]
    bottom = [up | right, up | left | right, up | left]
    np.testing.assert_array_equal(fd_masks(2, 3, 3), (top + middle + bottom) * 2)
    np.testing.assert_array_equal(fd_masks(1, 1, 2), [right, left])    # one row: no neighbour up or down


def test_a_window_reads_zeros_outside_the_array():
    flat, out = np.arange(1.0, 7.0), np.full(5, np.nan)
    fd.window(flat, -2, 3, out)
    np.testing.assert_array_equal(out, [0, 0, 1, 2, 3])
    fd.window(flat, 4, 9, out)
    np.testing.assert_array_equal(out, [5, 6, 0, 0, 0])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 1, 2, 2), (3, 2, 1, 5), (2, 3, 4, 1),
                                   (5, 2, 3, 3), (1, 4, 6, 5)])
@pytest.mark.parametrize("depthwise_shifts", both("depthwise_shifts", fd))
def test_depthwise_by_shifts_at_the_ends_of_the_tile(depthwise_shifts, shape):
    """Tiny tiles: the first and last channel's ends are read through the spare copy."""
    C, T, H, W = shape
    layer = depthwise_layer(C, (3, 3), 1, 1, seed=9)
    x = random((T, C, H, W), 10)
    expected = np.maximum(conv_output(layer, x), 0)
    y = np.full((C, T, H, W), np.nan)
    depthwise_shifts(planes(x), layer.weight[:, 0].copy(), layer.bias, fk.RELU, y)
    np.testing.assert_allclose(y, planes(expected), rtol=1e-12, atol=1e-12)


def test_depthwise_by_shifts_keeps_an_infinity_in_its_own_image():
    """A shifted read may land in the next image or channel; that value must not be used, even infinite."""
    layer = depthwise_layer(3, (3, 3), 1, 1, seed=11)
    x = random((4, 3, 5, 6), 12)
    x[1, 0, 4, 5] = np.inf                  # last pixel of image 1, channel 0: next to image 2 and channel 1
    x[2, 2, 0, 0] = -np.inf
    y = np.empty((3, 4, 5, 6))
    fd.depthwise_shifts(planes(x), layer.weight[:, 0].copy(), layer.bias, fk.IDENTITY, y)
    for n in (0, 3):                        # images without an infinity: exactly finite, as alone
        alone = conv_output(layer, x[n:n + 1])
        np.testing.assert_allclose(y[:, n], alone[0], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(y[1:, 1])) and np.all(np.isfinite(y[:2, 2]))


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 4, 6), (2, 5, 6, 2), (4, 3, 8, 8)])
@pytest.mark.parametrize("depthwise_stride2", both("depthwise_stride2", fd))
def test_depthwise_at_stride_2_on_even_images_matches_the_layer(depthwise_stride2, shape):
    """Split into even and odd columns: the first row and column of each image read the padding."""
    C, T, H, W = shape
    layer = depthwise_layer(C, (3, 3), 2, 1, seed=13)
    x = random((T, C, H, W), 14)
    expected = np.clip(conv_output(layer, x), -1, 1)
    y = np.full((C, T, H // 2, W // 2), np.nan)
    depthwise_stride2(planes(x), layer.weight[:, 0].copy(), layer.bias, fk.HARDTANH, y)
    np.testing.assert_allclose(y, planes(expected), rtol=1e-12, atol=1e-12)


def test_depthwise_planes_takes_even_images_at_stride_2_to_the_column_split():
    layer = depthwise_layer(3, (3, 3), 2, 1, seed=15)
    x = random((5, 3, 6, 8), 16)
    y = np.empty((3, 5, 3, 4))
    fd.depthwise_planes(planes(x), layer.weight[:, 0].copy(), layer.bias, 2, 1, fk.IDENTITY, y)
    np.testing.assert_allclose(y, planes(conv_output(layer, x)), rtol=1e-12, atol=1e-12)


def test_depthwise_at_stride_2_keeps_an_infinity_in_its_own_image():
    """Image 1's last row and column are next to image 2 and channel 1 in memory, never in their sums."""
    layer = depthwise_layer(2, (3, 3), 2, 1, seed=17)
    x = random((3, 2, 4, 6), 18)
    x[1, 0, 3, 5] = np.inf
    y = np.empty((2, 3, 2, 3))
    fd.depthwise_stride2(planes(x), layer.weight[:, 0].copy(), layer.bias, fk.IDENTITY, y)
    for n in (0, 2):
        np.testing.assert_allclose(y[:, n], conv_output(layer, x[n:n + 1])[0], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(y[1, 1]))


def helper_cases():
    """(module, helper name, its arguments): each helper of the convolutions on a small input."""
    x = random((2, 3, 7, 6), 40)
    R, WP = (7 + 2 * 1 + 1) // 2, 6 + 2 * 1             # 7x6 images, stride 2, pad 1
    G = ((3 - 1) * R + 4 - 1) * WP + 2 * (3 - 1) + 1      # grid up to the last of 3 images' 4x3 outputs
    phases = random((2, 3 * R, WP), 41)
    starts = fd.tap_starts(3, 3, 2, 3 * R, WP)
    return [(products, "eight_rows", (random((12, 8), 48), random((8, 30), 49), 4, 3, 29, random((12, 30), 50))),
            (products, "four_rows", (random((12, 8), 48), random((8, 30), 49), 8, 3, 29, random((12, 30), 50))),
            (products, "block_of_rows", (random((12, 7), 48), random((7, 30), 49), 2, 6, 3, 29, random((12, 30), 50))),
            (fk, "copy_row", (random(7, 44), np.zeros(7))),
            (products, "one_row", (random((12, 8), 48), random((8, 30), 49), 9, 0, 0, 30, random((12, 30), 50))),
            (products, "one_row", (random((12, 7), 48), random((7, 30), 49), 9, 1, 2, 29, random((12, 30), 50))),
            (fk, "start_with_bias", (np.full(7, np.nan), random(9, 51), 4, 0)),
            (fk, "start_with_bias", (np.full(7, np.nan), random(9, 51), -1, 2)),
            (fd, "deal_rows", (x[1], 2, 1, R, np.zeros((2, 3 * R, WP)))),
            (fd, "deal_rows", (x[0], 3, 2, 4, np.zeros((3, 3 * 4, 10)))),
            (fd, "tap_starts", (3, 2, 2, 3 * R, WP)),
            (fd, "nine_taps", (phases.ravel(), starts, random((3, 3), 42), 0.5, WP, random(G - WP, 43))),
            (fd, "some_taps", (phases.ravel(), fd.tap_starts(3, 2, 2, 3 * R, WP), random((3, 2), 42), 0.5,
                               0, random(G, 43))),
            (fd, "copy_rows", (random(G + 1, 44), R, WP, 2, np.zeros((3, 4, 3)), np.zeros(3))),
            (fd, "copy_rows", (random(G, 44), R, WP, 1, np.zeros((2, 4, 6)), np.zeros(6))),
            (fd, "copy_rows", (random(G, 44), R, WP, 3, np.zeros((2, 4, 2)), np.zeros(2))),
            (fd, "neighbours", (2, 3, 4, np.zeros(24, np.uint8))),
            (fd, "neighbours", (3, 1, 2, np.zeros(6, np.uint8))),
            (fd, "window", (random(10, 56), -3, 4, np.full(7, np.nan))),       # zeros before the start
            (fd, "window", (random(10, 57), 6, 13, np.full(7, np.nan))),       # and after the end
            (fd, "split_columns", (random(24, 55), np.zeros(12), np.zeros(12))),
            (fd, "stride2_rows", (random(3 + 2 * 4 * 3, 56), random(3 + 2 * 4 * 3, 57), 2, 3, random((3, 3), 58),
                                  0.5, np.zeros(2 * 2 * 3))),
            (fd, "nine_masked", (random(40, 53), 6, 5, random((3, 3), 54), 0.5, fd_masks(2, 3, 5), 1,
                                 np.zeros(26))),
            (fd, "pad_pixels", (random((2, 5, 4, 3), 47), 1, 1, np.zeros((7, 18)))),
            (fd, "pixel_row_3x3", (random((7, 18), 45), random((9, 3), 46), random(3, 47), 2, 1,
                                   np.zeros((3, 3)))),
            (fd, "pixel_row_3x3", (random((7, 18), 45), random((9, 3), 46), random(3, 47), 1, 2,
                                   np.zeros((2, 3)))),
            (fd, "pixel_row_taps", (random((7, 18), 45), random((6, 3), 46), 3, 1, 2, 1, random((4, 3), 47)))]


@pytest.mark.parametrize("module, name, args", helper_cases())
def test_each_helper_gives_the_same_numbers_compiled_and_plain(module, name, args):
    assert_twins_agree(module, name, args)


@pytest.mark.parametrize("start_with_bias", both("start_with_bias"))
def test_a_row_starts_with_one_bias_or_a_run_of_them(start_with_bias):
    bias, row = random(9, 52), np.full(5, np.nan)
    start_with_bias(row, bias, 4, 0)
    assert np.all(row == bias[4])
    start_with_bias(row, bias, -1, 3)
    np.testing.assert_array_equal(row, bias[3:8])


@pytest.mark.parametrize("rows", [8, 12, 5])          # blocks of 8 rows, then rows one at a time
@pytest.mark.parametrize("matmul_act", both("matmul_act"))
def test_matmul_adds_the_bias_down_the_rows_or_along_them(matmul_act, rows):
    a, b = random((rows, 12), 11), random((12, 1030), 12)   # long rows: vector blocks and a rest
    y = np.empty((rows, 1030))
    matmul_act(a, b, random(rows, 13), True, fk.HARDTANH, y)
    np.testing.assert_allclose(y, np.clip(a @ b + random(rows, 13)[:, None], -1, 1), rtol=1e-12, atol=1e-12)
    y = np.empty((rows, 1030))
    matmul_act(a, b, random(1030, 14), False, fk.IDENTITY, y)
    np.testing.assert_allclose(y, a @ b + random(1030, 14), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mean_planes, mean_pixels", list(zip(both("mean_planes"), both("mean_pixels"))))
def test_mean_pooling_in_both_layouts(mean_planes, mean_pixels):
    x = random((3, 4, 5, 2), 15)                   # 3 images, 4 channels, 10 pixels each
    expected = x.mean(axis=(2, 3))                  # (3, 4)
    y = np.empty((4, 3))
    mean_planes(planes(x).reshape(4, 3, 10), y)
    np.testing.assert_allclose(y, expected.T, rtol=1e-14)
    rows = np.zeros((32, 4))
    rows[:30] = pixels(x).reshape(30, 4)
    y = np.full((4, 4), np.nan)                     # the 4th row is padding: zeroed
    mean_pixels(rows, 3, 10, y)
    np.testing.assert_allclose(y[:3], expected, rtol=1e-14)
    assert np.all(y[3] == 0)


# ---------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------

def odd_chain(dtype=np.float64):
    """Strides 3 and 2, padding 2, a (3, 2) kernel, a lone BatchNorm and two activations in a row."""
    rng = np.random.default_rng(18)
    chain = Chain(Conv2d(3, 5, 3, stride=3, pad=2, bias=True, rng=rng, dtype=dtype),
                  BatchNorm2d(5, dtype=dtype), ReLU(), HardTanh(),
                  DepthwiseConv2d(5, (3, 2), stride=2, pad=1, bias=True, rng=rng, dtype=dtype),
                  SlopeHTanh(), BatchNorm2d(5, dtype=dtype),
                  Conv2d(5, 7, 1, rng=rng, dtype=dtype), Identity(),
                  Chain(GlobalMeanPool(), SlopeHTanh(), Flatten(), Dense(7, 3, rng=rng, dtype=dtype)))
    return give_statistics(chain, rng, rng.random((4, 3, 23, 19)))


def small_mobilenet(activation, dtype=np.float64):
    rng = np.random.default_rng(19)
    model = MobileNet(activation, 0.25, fcsize=16, nclasses=2, seed=20, dtype=dtype)
    return give_statistics(model, rng, rng.random((4, 3, 32, 32)))


def pipeline(model, stage):
    """``model`` after ChannelPrune(0.5), then propagation, then resizing (up to ``stage``)."""
    if stage == "full":
        return model
    model = prune(ChannelPrune(0.5), model)
    if stage == "pruned":
        return model
    model = prune_propagate(model)
    return model if stage == "propagated" else resize(model)


@pytest.mark.parametrize("batch", [1, 5])
def test_fast_path_on_an_odd_chain_float64(batch):
    x = random((batch, 3, 23, 19), 21)
    assert relative_error(fast(odd_chain(), x), plain(odd_chain(), x)) < 1e-10


@pytest.mark.parametrize("stage", ["full", "pruned", "propagated", "resized"])
@pytest.mark.parametrize("activation", ["relu", "slopehtanh", "hardtanh", "identity"])
def test_fast_path_on_mobilenets_float64(activation, stage):
    model = pipeline(small_mobilenet(activation), stage)
    x = np.random.default_rng(22).random((6, 3, 32, 32))
    assert relative_error(fast(model, x), plain(model, x)) < 1e-10


@pytest.mark.parametrize("tile_bytes", [1, 20_000, 10**9])
def test_any_tile_size_gives_the_same_output(monkeypatch, tile_bytes):
    # 1 byte: one image per tile; 10**9: the whole batch in one tile (one thread)
    monkeypatch.setattr(fused, "TILE_BYTES", tile_bytes)
    model = small_mobilenet("relu")
    x = np.random.default_rng(23).random((13, 3, 32, 32))
    assert relative_error(fast(model, x), plain(model, x)) < 1e-10


def test_one_thread_or_two_give_the_same_bits():
    model = small_mobilenet("slopehtanh").eval()
    x = np.random.default_rng(24).random((9, 3, 32, 32))
    two = model(x)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = model(x)
        single = model(x[:1])
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(single, model(x[:1]))    # one image: every step shared by two threads


@pytest.fixture(scope="module")
def checkpoint():
    return pretrained()


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("stage", ["full", "resized"])
def test_fast_path_on_the_checkpoint_float32(checkpoint, stage, batch):
    model = keepprune(pipeline(checkpoint, stage)) if stage != "full" else checkpoint
    x = np.random.default_rng(25).random((batch, 3, 96, 96), dtype=np.float32)
    y = fast(model, x)
    assert y.dtype == np.float32 and relative_error(y, plain(model, x)) < 1e-5


def test_fast_path_on_a_small_chain_float32():
    model = odd_chain(np.float32)
    x = np.random.default_rng(26).random((3, 3, 23, 19), dtype=np.float32)
    assert relative_error(fast(model, x), plain(model, x)) < 1e-5


# ---------------------------------------------------------------------------
# When the plan is used, rebuilt and bypassed
# ---------------------------------------------------------------------------

def test_only_eval_mode_calls_use_a_plan():
    model = small_mobilenet("relu")
    x = np.random.default_rng(27).random((2, 3, 32, 32))
    model.train()(x)
    assert model._fused is None
    model.eval()(x)
    assert isinstance(model._fused, FusedPlan) and model._fused.tail == []
    model.train()
    assert model._fused is None


def test_a_value_changed_in_place_is_used_after_eval_again():
    model = small_mobilenet("relu").eval()
    x = np.random.default_rng(28).random((2, 3, 32, 32))
    before = model(x)
    model[0][3].weight *= 2                         # a pointwise conv, changed in place
    model.eval()
    after = model(x)
    assert relative_error(after, plain(model, x)) < 1e-10 and relative_error(after, before) > 1e-3


@pytest.mark.parametrize("change", ["setattr", "load_state_dict", "mask"])
def test_a_replaced_array_is_used_at_once(change):
    model = small_mobilenet("relu").eval()
    x = np.random.default_rng(29).random((2, 3, 32, 32))
    before = model(x)
    if change == "setattr":
        model[0][3].weight = model[0][3].weight * 2
    elif change == "load_state_dict":
        state = model.state_dict()
        state["0.1.running_mean"] += 0.5
        model.load_state_dict(state)
    else:
        model[0][3].masks["weight"] = np.random.default_rng(30).random(model[0][3].weight.shape) > 0.5
    after = model(x)
    assert relative_error(after, plain(model, x)) < 1e-10 and relative_error(after, before) > 1e-3


def test_backward_after_a_fast_call_gives_the_plain_gradients():
    x = np.random.default_rng(31).random((2, 3, 32, 32))
    dy = np.random.default_rng(32).standard_normal((2, 2))
    grads = []
    for fast_eval in (True, False):
        model = small_mobilenet("slopehtanh").eval()
        model.fast_eval = fast_eval
        model(x)
        dx = model.backward(dy)
        grads.append((dx, model.grad_dict()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    assert all(np.array_equal(grads[0][1][k], grads[1][1][k]) for k in grads[1][1])


def test_layers_after_an_unknown_one_run_plainly():
    tanh = Activation(np.tanh, lambda x: 1 - np.tanh(x) ** 2)
    model = small_mobilenet("relu")
    model.layers[0].layers.insert(10, tanh)         # after the first separable group
    x = np.random.default_rng(33).random((3, 3, 32, 32))
    y = fast(model, x)
    evaluated = model.copy().eval()
    evaluated(x)
    assert evaluated._fused.tail[0] is evaluated[0][10]
    assert relative_error(y, plain(model, x)) < 1e-10


def test_a_model_that_starts_with_an_unknown_layer_runs_plainly():
    model = Chain(Flatten(), Dense(12, 2, dtype=np.float64)).eval()
    x = random((3, 3, 2, 2), 34)
    np.testing.assert_array_equal(model(x), plain(model, x))
    assert model._fused is False


def test_fast_eval_false_and_forward_bypass_the_plan():
    model = small_mobilenet("relu").eval()
    x = np.random.default_rng(35).random((2, 3, 32, 32))
    model.forward(x)
    assert model._fused is None
    model.fast_eval = False
    model(x)
    assert model._fused is None


def test_a_copy_does_not_share_the_plan():
    model = small_mobilenet("relu").eval()
    x = np.random.default_rng(36).random((2, 3, 32, 32))
    model(x)
    twin = model.copy()
    assert twin._fused is None
    twin[0][3].weight[:] = 0                        # in place, but on the copy's own arrays
    assert relative_error(twin(x), plain(twin, x)) < 1e-10
    assert relative_error(model(x), plain(model, x)) < 1e-10


def test_input_errors_name_the_layer_on_the_fast_path_too():
    model = small_mobilenet("relu").eval()
    model(np.zeros((1, 3, 32, 32)))                 # the plan is built and has seen this shape
    with pytest.raises(ValueError, match=r"model\[0\]\[0\]: Conv2d expects 3 input channels, got 4"):
        model(np.zeros((1, 4, 32, 32)))
    with pytest.raises(ValueError, match="expected floating-point input, got int64"):
        model(np.zeros((1, 3, 32, 32), dtype=np.int64))
