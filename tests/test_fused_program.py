"""The program that runs a plan (``fused_program``): tiles, their start, scratch, shares.

How a batch is cut into tiles and shared among threads, how a tile starts
(from the caller's batch itself, or gathered), how a part tile is placed
into the whole one, and the scratch buffers kept from call to call; each
compiled function also run as the plain Python function it was compiled
from.  The outputs of whole models are in test_fused.py.
"""

import numba
import numpy as np
import pytest

from helpers import pixels, plain, planes, twins
from tinyprune import Chain, Conv2d, DepthwiseConv2d, MobileNet, fused
from tinyprune import fused_program as program

pytestmark = [pytest.mark.inference]


def random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def compiled_run_tile(x, n0, T, *rest):
    """run_tile compiled: inlined into run_tiles, its only compiled caller, so reached through it."""
    program.run_tiles(np.zeros(4, np.int64), 0, np.zeros(1, np.int64), x, np.array([n0, n0 + T]), *rest)


@pytest.mark.parametrize("split, part", [(0, 2), (5, 1)])      # one level; parts of one image up to step 5
@pytest.mark.parametrize("run_tile", [compiled_run_tile, program._run_tile])
def test_the_program_runs_a_tile_compiled_and_plain(run_tile, split, part):
    model = MobileNet("relu", 0.125, fcsize=8, nclasses=3, seed=16, dtype=np.float64).eval()
    plan = fused.build_plan(model)
    x = random((3, 3, 16, 16), 17)
    shapes = program.step_shapes(plan.steps, plan.steps[0, program.C_IN], 16, 16)
    size = program.scratch_size(shapes, 0, len(plan.steps), 2)
    scratch = [np.full(size, np.nan) for _ in range(4)]
    out = np.zeros((3, 3, 1, 1))
    run_tile(x, 1, 2, part, split, plan.steps, plan.params, shapes, *scratch, out)
    np.testing.assert_allclose(out[1:].reshape(2, 3), plain(model, x)[1:], rtol=1e-10)
    assert np.all(out[0] == 0)                      # the tile was images 1 and 2


@pytest.mark.parametrize("start_tile", twins(program, "start_tile"))
def test_a_tile_starts_from_the_batch_itself_when_its_first_step_is_a_full_conv(start_tile):
    conv = Chain(Conv2d(3, 4, 3, stride=2, pad=1, bias=True, dtype=np.float64, rng=np.random.default_rng(5)))
    depthwise = Chain(DepthwiseConv2d(3, 3, stride=1, pad=1, bias=True, dtype=np.float64,
                                      rng=np.random.default_rng(6)))
    x = random((3, 3, 6, 6), 18)
    for model, first in [(conv, 1), (depthwise, 0)]:
        plan = fused.build_plan(model.eval())
        shapes = program.step_shapes(plan.steps, 3, 6, 6)
        a, b = np.full(500, np.nan), np.full(500, np.nan)
        tile, other, step = start_tile(x, 1, 2, plan.steps, plan.params, shapes, a, b)
        assert step == first
        if first == 1:                              # step 0 ran straight from images 1 and 2 of x
            assert tile is b and other is a and np.all(np.isnan(a))
            expected = plain(model, x[1:])          # (2, 4, 3, 3)
            np.testing.assert_allclose(tile[:4 * 2 * 9].reshape(4, 2, 3, 3), planes(expected), rtol=1e-12)
        else:                                       # the images were copied in, as planes
            assert tile is a and np.all(np.isnan(b))
            np.testing.assert_array_equal(tile[:3 * 2 * 36].reshape(3, 2, 6, 6), planes(x[1:]))


def test_scratch_buffers_are_kept_from_call_to_call_and_grow_when_too_small():
    spare = []
    first = program.take_scratch(spare, 10, 20, np.float32)
    assert [a.size for a in first] == [10, 10, 20, 20] and all(a.dtype == np.float32 for a in first)
    spare.append(first)
    again = program.take_scratch(spare, 5, 20, np.float32)      # large enough: the same arrays
    assert all(a is b for a, b in zip(again, first)) and spare == []
    spare.append(again)
    larger = program.take_scratch(spare, 10, 30, np.float32)    # too small: dropped, new ones
    assert [a.size for a in larger] == [10, 10, 30, 30] and spare == []
    spare.append(larger)
    assert program.take_scratch(spare, 1, 1, np.float64)[0].dtype == np.float64
    assert program.take_scratch(None, 1, 2, np.float32)[3].size == 2


def test_a_model_reuses_its_scratch_buffers_and_gives_the_same_output():
    model = MobileNet("relu", 0.125, fcsize=8, nclasses=3, seed=16).eval()
    x = random((5, 3, 16, 16), 19).astype(np.float32)
    first = model(x).copy()
    spare = model._fused.spare                     # a set of buffers per thread that ran
    kept = sorted(id(a) for buffers in spare for a in buffers)
    assert 1 <= len(spare) <= numba.get_num_threads()
    np.testing.assert_array_equal(model(x), first)
    assert sorted(id(a) for buffers in spare for a in buffers) == kept


@pytest.mark.parametrize("place", twins(program, "place"))
@pytest.mark.parametrize("layout", [program.PLANES, program.PIXELS])
def test_a_part_is_placed_into_the_whole_tile_as_planes(place, layout):
    x = random((2, 3, 2, 2), 60)                    # 2 images of 3 channels, 2x2
    part = (planes(x) if layout == program.PLANES else pixels(x)).ravel()
    whole = np.full(3 * 5 * 4, np.nan)              # a tile of 5 images
    place(part, layout, 3, 2, 2, 2, 1, 5, whole)    # as images 1 and 2
    np.testing.assert_array_equal(whole.reshape(3, 5, 2, 2)[:, 1:3], planes(x))
    assert np.all(np.isnan(whole.reshape(3, 5, 4)[:, [0, 3, 4]]))


def test_tiling_gives_the_last_layers_larger_tiles():
    # (channels, H, W) before each of 3 steps and after the last: an image's input + output
    # numbers are 5000 + 1000, 1000 + 200 and 200 + 100 for the three steps.
    shapes = np.array([(50, 10, 10), (10, 10, 10), (2, 10, 10), (1, 10, 10)])
    assert fused.tiling(shapes, 4, tile_bytes=48_000) == (1, 2, 10)    # 24000 B, then 4800 B
    assert fused.tiling(shapes, 4, tile_bytes=12_000) == (1, 1, 2)
    assert fused.tiling(shapes, 4, tile_bytes=1) == (0, 1, 1)           # never less than one image
    flat = np.array([(1, 10, 10)] * 4)
    assert fused.tiling(flat, 8, tile_bytes=16_000) == (0, 10, 10)      # no step is smaller: one level


def test_a_first_conv_that_reads_the_batch_image_by_image_counts_its_output_only():
    # As above, but step 0's 5000 input numbers stay in the caller's batch: 1000, 1000 + 200, 200 + 100.
    shapes = np.array([(50, 10, 10), (10, 10, 10), (2, 10, 10), (1, 10, 10)])
    assert fused.tiling(shapes, 4, tile_bytes=48_000, by_image=True) == (2, 10, 40)   # 4800 B, then 1200 B


@pytest.mark.parametrize("N, whole, workers, count", [(64, 11, 2, 6), (64, 64, 2, 2), (7, 11, 2, 2),
                                                       (1, 11, 2, 1), (10, 3, 1, 4), (9, 2, 4, 8)])
def test_tiles_are_at_most_whole_and_shared_evenly(N, whole, workers, count):
    starts = program.tile_starts(N, whole, workers)
    sizes = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == N and len(sizes) == count
    assert sizes.max() <= whole and sizes.max() - sizes.min() <= 1
    shares = [sizes[first::workers].sum() for first in range(workers)]
    assert max(shares) - min(shares) <= 1                 # 64 in tiles of 11: 32 and 32, not 33 and 31


@pytest.mark.parametrize("n, parts, block", [(10, 2, 1), (128, 2, 8), (36, 3, 8), (5, 4, 8), (0, 2, 1)])
def test_shares_cover_everything_once_in_whole_blocks(n, parts, block):
    ranges = [program.share(n, p, parts, block) for p in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(ranges[p][1] == ranges[p + 1][0] for p in range(parts - 1))
    assert all(lo % block == 0 for lo, _ in ranges)
    assert ranges == [program._share(n, p, parts, block) for p in range(parts)]


@pytest.mark.parametrize("run_step", twins(program, "run_step"))
def test_a_product_on_pixels_computes_the_real_rows_only(run_step):
    # One image of 1x1 is 1 real row of the 8 its pixel block holds: the other 7 are left alone.
    C, O = 8, 4
    W, bias = random((O, C), 20), random(O, 21)
    step = np.zeros(program.FIELDS, np.int64)
    step[[program.KIND, program.C_IN, program.C_OUT, program.REAL, program.KH, program.KW]] = \
        (program.POINTWISE, C, O, O, 1, 1)
    step[program.WT_AT], step[program.B_AT] = 0, C * O
    params = np.concatenate([W.T.ravel(), bias])
    x = np.full(8 * C, np.nan)
    x[:C] = random(C, 22)
    y = np.full(8 * O, -7.0)
    run_step(step, params, program.PIXELS, x, 1, 1, 1, y, 1, 1, 0, 1)
    np.testing.assert_allclose(y[:O], W @ x[:C] + bias, rtol=1e-12)
    assert np.all(y[O:] == -7.0)                   # padding rows: not computed (their NaN inputs unread)


def test_a_full_conv_alone_before_the_split_runs_on_the_whole_tile():
    # tiling() would run step 0 on parts (its images are 4 times larger than step 1's), but a
    # full conv goes image by image anyway: one level, and the output is the same.
    model = Chain(Conv2d(3, 4, 3, stride=2, pad=1, bias=True, dtype=np.float64, rng=np.random.default_rng(7)),
                  Conv2d(4, 4, 1, bias=True, dtype=np.float64, rng=np.random.default_rng(8))).eval()
    plan = fused.build_plan(model)
    shapes = program.step_shapes(plan.steps, 3, 32, 32)
    assert fused.tiling(shapes, 8)[0] == 1
    whole = fused.tiling(shapes, 8)[2]
    assert fused.tiling(shapes, 8, by_image=True) == (0, whole, whole)
    assert plan.sizes(32, 32)[1][0] == 0
    x = random((5, 3, 32, 32), 23)
    np.testing.assert_allclose(model(x), plain(model, x), rtol=1e-10)


@pytest.mark.parametrize("run_step", twins(program, "run_step"))
def test_a_product_on_planes_zeroes_the_padding_channels_without_computing_them(run_step):
    C, O, real, P = 4, 12, 9, 5                    # 9 real outputs, padded to 12
    W, bias = np.zeros((O, C)), np.zeros(O)
    W[:real], bias[:real] = random((real, C), 24), random(real, 25)
    W[real:] = np.nan                              # would poison the padding rows if they were computed
    step = np.zeros(program.FIELDS, np.int64)
    step[[program.KIND, program.C_IN, program.C_OUT, program.REAL, program.KH, program.KW]] = \
        (program.POINTWISE, C, O, real, 1, 1)
    step[program.W_AT], step[program.B_AT] = 0, O * C
    params = np.concatenate([W.ravel(), bias])
    x = random(C * P, 26)
    y = np.full(O * P, -7.0)
    run_step(step, params, program.PLANES, x, 1, 1, P, y, 1, P, 0, 1)
    y = y.reshape(O, P)
    np.testing.assert_allclose(y[:real], W[:real] @ x.reshape(C, P) + bias[:real, None], rtol=1e-12)
    assert np.all(y[real:] == 0)


@pytest.mark.parametrize("layout", twins(program, "layout"))
def test_each_step_runs_in_the_layout_whose_rows_are_longer(layout):
    def step(kind, c_in, c_out, kernel=1, stride=1, pad=0):
        row = np.zeros(program.FIELDS, np.int64)
        row[[program.KIND, program.C_IN, program.C_OUT, program.KH, program.KW, program.STRIDE, program.PAD]] = \
            (kind, c_in, c_out, kernel, kernel, stride, pad)
        return row
    P, Q = program.PIXELS, program.PLANES
    one_by_one = step(program.POINTWISE, 128, 256)
    assert layout(one_by_one, 128, 17, 3, 3, Q) == P          # 153 pixels < 256 outputs
    assert layout(step(program.POINTWISE, 256, 64), 256, 17, 1, 1, P) == P
    assert layout(step(program.POINTWISE, 64, 4), 64, 17, 1, 1, P) == P         # 17 < 64 inputs
    assert layout(step(program.POINTWISE, 128, 128), 128, 17, 6, 6, P) == Q      # 612 pixels
    dw = step(program.DEPTHWISE, 64, 64, 3, 1, 1)
    assert layout(dw, 64, 17, 12, 12, P) == P and layout(dw, 64, 17, 12, 12, Q) == Q   # stays
    assert layout(step(program.DEPTHWISE, 64, 64, 3, 2, 1), 64, 17, 12, 12, P) == Q    # column split
    assert layout(step(program.DEPTHWISE, 36, 36, 3, 2, 1), 36, 21, 6, 6, P) == Q      # thin: planes
    assert layout(step(program.DEPTHWISE, 128, 128, 3, 2, 1), 128, 17, 6, 6, Q) == P   # wide: pixels
