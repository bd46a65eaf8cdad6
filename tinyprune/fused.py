"""The eval-mode fast path: a model compiled into a short plan of fused steps.

The layers of :mod:`tinyprune.layers` each make one pass over the whole
batch: a convolution writes its output, BatchNorm reads and rewrites it, the
activation once more, and the next layer reads it again.  In eval mode most
of that is unnecessary:

1. BatchNorm is a fixed affine map, so it folds into the convolution before
   it (:func:`tinyprune.fold.folded_parameters`): conv + BatchNorm is one
   convolution with a bias.
2. The activation can be applied to each row of the convolution's output
   the moment it is written, while it is in the level-1 cache.
3. Images can go through the layers a *tile* at a time: the tile's
   activations stay in the level-2 cache from one layer to the next, where
   a whole batch would have to travel to memory and back.

So a model in eval mode is turned into a *plan*: a table of steps, each one
"convolution + bias + activation" (or a pooling), with all their weights
packed into one array, run by one compiled function per tile of images
(``run_tile`` below), with as many threads as Numba has
(``numba.set_num_threads``) taking turns at the tiles.  One call from
Python runs the whole network through a tile; at batch 1 that matters more
than anything else.  The loops themselves are in
:mod:`tinyprune.fused_kernels`.

When it is used.  ``model(x)`` on a Chain in eval mode takes the fast path
(``model.forward(x)`` always runs the plain layers, and keeps what backward
needs; after a fast-path call, ``backward`` first runs the plain forward
pass on the same input).  Set ``model.fast_eval = False`` to switch it off.
The plan covers the longest run of leading layers it knows (convs,
depthwise convs, BatchNorms, the four activations, pooling, flatten after
pooling, dense); any layer after that runs as a plain layer, and a model
that starts with anything else is run plainly altogether.

When it is rebuilt.  The plan is a copy of the weights, folded.  It is
built at the first eval-mode call after ``eval()``, ``train()``, a copy or a
load, and it is dropped by every ``eval()`` and ``train()`` call.  At every
call the plan also checks that the model still holds the very arrays it
was built from (parameters, statistics, masks), so replacing an array --
``load_state_dict``, ``to(dtype)``, a new mask, ``conv.weight = w`` -- is
seen at once.  Changing an array's *values in place* (``conv.weight[0] = 0``)
is not seen until you call ``model.eval()`` again: checking every value at
every call would cost as much as a layer.
"""

import concurrent.futures
import functools

import numba
import numpy as np

from . import fused_kernels as fk
from .barrier import can_yield, release_store, wait_for
from .fold import folded_parameters
from .layers import (BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool, HardTanh,
                     Identity, ReLU, SlopeHTanh)

__all__ = ["FusedPlan", "build_plan", "fused_call", "TILE_BYTES"]

# How much a step's input and output together may take for one tile: the
# level-2 cache of a core (1 MB on the machine the README's figures come
# from), so that a tile goes from step to step without leaving it.
TILE_BYTES = 1024 * 1024

_ACTIVATIONS = {Identity: fk.IDENTITY, ReLU: fk.RELU, HardTanh: fk.HARDTANH, SlopeHTanh: fk.SLOPEHTANH}

# Step kinds, and the columns of a step's row in the plan's table.  W_AT and
# WT_AT say where the step's weight starts in the packed array, arranged for
# the planes layout and for the pixels layout; B_AT, where its bias starts;
# REAL, how many of the C_OUT channels are real (the rest pad to 4: zeros).
CONV, DEPTHWISE, POINTWISE, POOL = 0, 1, 2, 3
KIND, C_IN, C_OUT, KH, KW, STRIDE, PAD, ACT, W_AT, WT_AT, B_AT, REAL = range(12)
FIELDS = 12
PLANES, PIXELS = 0, 1


# ---------------------------------------------------------------------------
# Building a plan from the layers
# ---------------------------------------------------------------------------

def _round4(n):
    return (n + 3) // 4 * 4


def _padded(array, shape):
    """``array`` (float64) zero-padded at the end of every axis to ``shape``."""
    out = np.zeros(shape)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


class _Builder:
    """Collects the steps of a plan and their packed weights while walking the layers."""

    def __init__(self):
        self.rows = []
        self.chunks = []
        self.size = 0
        self.channels = None     # the real channel count flowing out of the last step
        self.pooled = False      # True after pooling: one pixel per image
        self.flattened = False   # True after Flatten or Dense: (N, features) rather than NCHW

    def pack(self, array):
        """Append ``array`` to the packed weights; returns where it starts."""
        at = self.size
        self.chunks.append(np.ravel(array))
        self.size += array.size
        return at

    def add(self, kind, c_in, c_out, real, weights=(), bias=None, kernel=(1, 1), stride=1, pad=0):
        """Append a step (its activation is set afterwards); weights and bias already padded.

        ``weights``: the weight arranged for planes, then (if it differs) for pixels.
        """
        row = np.zeros(FIELDS, np.int64)
        row[[KIND, C_IN, C_OUT, REAL, KH, KW, STRIDE, PAD]] = (kind, c_in, c_out, real, kernel[0],
                                                               kernel[1], stride, pad)
        at = [self.pack(w) for w in weights]
        row[W_AT], row[WT_AT] = (at + at)[:2] if at else (0, 0)
        row[B_AT] = self.pack(bias) if bias is not None else 0
        self.rows.append(row)

    @property
    def c_in(self):
        """Channels of the tile layout going into the next step (a multiple of 4 after a step)."""
        return int(self.rows[-1][C_OUT]) if self.rows else None


def _conv_step(builder, conv, bn):
    """A Conv2d or DepthwiseConv2d (with the BatchNorm after it folded in, if any)."""
    if bn is not None:
        weight, bias = folded_parameters(conv, bn)
    else:
        weight = conv.effective("weight").astype(np.float64)
        bias = (conv.effective("bias").astype(np.float64) if conv.bias is not None
                else np.zeros(conv.c_out))
    kh, kw = conv.kernel
    if isinstance(conv, DepthwiseConv2d):
        C = builder.c_in or _round4(conv.c_out)
        filters = _padded(weight[:, 0], (C, kh, kw))
        builder.add(DEPTHWISE, C, C, conv.c_out, (filters, filters.transpose(1, 2, 0)),
                    _padded(bias, (C,)), (kh, kw), conv.stride, conv.pad)
    elif conv.pointwise:
        _matrix_step(builder, weight.reshape(conv.c_out, conv.c_in), bias)
    else:
        c_in = builder.c_in or conv.c_in          # the first step reads the images as they are
        O = _round4(conv.c_out)
        builder.add(CONV, c_in, O, conv.c_out, (_padded(weight, (O, c_in, kh, kw)),),
                    _padded(bias, (O,)), (kh, kw), conv.stride, conv.pad)
    builder.channels = conv.c_out


def _matrix_step(builder, weight, bias):
    """A product with weight (O, K): a 1x1 convolution or a dense layer."""
    O, K = _round4(weight.shape[0]), _round4(weight.shape[1])
    padded = _padded(weight, (O, K))
    builder.add(POINTWISE, K, O, weight.shape[0], (padded, padded.T), _padded(bias, (O,)))
    builder.channels = weight.shape[0]


def _affine_step(builder, scale, shift, channels):
    """A per-channel y = x * scale + shift on its own: a 1x1 depthwise step."""
    C = builder.c_in or _round4(channels)
    filters = _padded(scale.reshape(-1, 1, 1), (C, 1, 1))
    builder.add(DEPTHWISE, C, C, channels, (filters, filters.transpose(1, 2, 0)),
                _padded(shift, (C,)))
    builder.channels = channels


def _next_step(builder, leaves, i):
    """Add the step starting at ``leaves[i]``; returns the index after it, or None if unknown.

    An activation is attached to the step before it by ``build_plan``; one
    that has no step to join gets an identity step of its own (returns i).
    """
    layer = leaves[i]
    after = leaves[i + 1] if i + 1 < len(leaves) else None
    channels = builder.channels
    spatial = not builder.pooled
    if isinstance(layer, (Conv2d, DepthwiseConv2d)) and spatial and channels in (None, layer.c_in):
        bn = after if isinstance(after, BatchNorm2d) and after.channels == layer.c_out else None
        _conv_step(builder, layer, bn)
        return i + 1 + (bn is not None)
    if isinstance(layer, BatchNorm2d) and spatial and channels in (None, layer.channels):
        scale, shift = layer.eval_scale_shift()
        _affine_step(builder, scale, shift, layer.channels)
        return i + 1
    if not builder.rows:
        return None                              # the first step must say how many channels come in
    if isinstance(layer, Dense) and builder.flattened and layer.n_in == channels:
        bias = layer.effective("bias") if layer.bias is not None else np.zeros(layer.n_out)
        _matrix_step(builder, layer.effective("weight").astype(np.float64), bias.astype(np.float64))
        return i + 1
    if type(layer) in _ACTIVATIONS:
        _affine_step(builder, np.ones(channels), np.zeros(channels), channels)
        return i
    if isinstance(layer, GlobalMeanPool) and spatial:
        builder.add(POOL, builder.c_in, builder.c_in, channels)
        builder.pooled = True
        return i + 1
    if isinstance(layer, Flatten) and builder.pooled:
        builder.flattened = True                 # one pixel per image: nothing moves
        return i + 1
    return None


# ---------------------------------------------------------------------------
# The program: every step of the plan, tile by tile
# ---------------------------------------------------------------------------

def _step_shapes(steps, C, H, W):
    """(S + 1, 3) array: the (channels, H, W) of one image before each step and after the last."""
    S = steps.shape[0]
    shapes = np.empty((S + 1, 3), np.int64)
    shapes[0, 0], shapes[0, 1], shapes[0, 2] = C, H, W
    for s in range(S):
        if steps[s, KIND] == POOL:
            H, W = 1, 1
        elif steps[s, KIND] != POINTWISE:
            H = (H + 2 * steps[s, PAD] - steps[s, KH]) // steps[s, STRIDE] + 1
            W = (W + 2 * steps[s, PAD] - steps[s, KW]) // steps[s, STRIDE] + 1
        shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2] = steps[s, C_OUT], H, W
    return shapes


step_shapes = numba.njit(cache=True)(_step_shapes)


def _pixel_rows(pixels):
    """Rows of the pixels layout for that many pixels: a multiple of 8, the matrix product's block."""
    return (pixels + 7) // 8 * 8


pixel_rows = numba.njit(cache=True)(_pixel_rows)


def _layout(kind, C, T, H, W, current):
    """The layout a step runs in, given its input (C channels, T images of H x W) and the current one.

    What the kernels measure fastest: a 1x1 convolution on pixels when the
    tile has fewer pixels than channels (its rows are then the longer
    ones); a depthwise one on pixels when an image has at most 4 pixels per
    channel; a full convolution on planes; pooling where the tile already is.
    """
    if kind == POINTWISE:
        return PIXELS if T * H * W < C else PLANES
    if kind == DEPTHWISE:
        return PIXELS if H * W <= 4 * C else PLANES
    if kind == CONV:
        return PLANES
    return current


def _share(n, part, parts, block):
    """The range [lo, hi) of ``part`` when n items are shared out among ``parts``, in whole blocks."""
    blocks = (n + block - 1) // block
    lo = min(n, blocks * part // parts * block)
    hi = min(n, blocks * (part + 1) // parts * block)
    return lo, hi


share = numba.njit(cache=True)(_share)


def _run_step(step, params, layout, x, T, H, W, y, HO, WO, part, parts):
    """Run one step on a tile of T images: flat buffer x (its input) -> flat buffer y.

    Both buffers hold the ``layout`` form: planes (C, T, H, W) or pixels
    (P, C) with P = pixel_rows(T*H*W).  ``part`` of ``parts``: compute only
    that share of the output channels (of the pixel rows, for a product on
    pixels), so that several threads can share one step; (0, 1) is all of it.
    """
    kind, act, C, O = step[KIND], step[ACT], step[C_IN], step[C_OUT]
    b = params[step[B_AT]:step[B_AT] + O]
    kh, kw, stride, pad = step[KH], step[KW], step[STRIDE], step[PAD]
    P, PO = pixel_rows(T * H * W), pixel_rows(T * HO * WO)
    x4 = x[:C * T * H * W].reshape(C, T, H, W)
    y4 = y[:O * T * HO * WO].reshape(O, T, HO, WO)
    real = step[REAL]                      # channels real..O are padding: zeros, not computed
    lo, hi = share(real, part, parts, 1)
    if kind == CONV:
        w = params[step[W_AT]:step[W_AT] + O * C * kh * kw].reshape(O, C, kh, kw)
        fk.conv_planes(x4, w[lo:hi], b[lo:hi], stride, pad, act, y4[lo:hi])
        if part == parts - 1:
            y4[real:] = 0.0
    elif kind == DEPTHWISE and layout == PLANES:
        w = params[step[W_AT]:step[W_AT] + C * kh * kw].reshape(C, kh, kw)
        fk.depthwise_planes(x4[lo:hi], w[lo:hi], b[lo:hi], stride, pad, act, y4[lo:hi])
        if part == parts - 1:
            y4[real:] = 0.0
    elif kind == DEPTHWISE and part == 0:  # on pixels a channel is not a block of its own: one part
        w = params[step[WT_AT]:step[WT_AT] + C * kh * kw].reshape(kh, kw, C)
        out = y[:PO * O].reshape(PO, O)
        fk.depthwise_pixels(x[:T * H * W * C].reshape(T, H, W, C), w, b, stride, pad, act,
                            out[:T * HO * WO].reshape(T, HO, WO, O))
        out[T * HO * WO:] = 0.0
    elif kind == POINTWISE and layout == PLANES:
        lo, hi = share(O, part, parts, 8)
        w = params[step[W_AT]:step[W_AT] + O * C].reshape(O, C)
        fk.matmul_act(w[lo:hi], x[:C * T * H * W].reshape(C, T * H * W), b[lo:hi], True, act,
                      y[:O * T * H * W].reshape(O, T * H * W)[lo:hi])
    elif kind == POINTWISE:
        lo, hi = share(P, part, parts, 8)
        w = params[step[WT_AT]:step[WT_AT] + C * O].reshape(C, O)
        fk.matmul_act(x[:P * C].reshape(P, C)[lo:hi], w, b, False, act, y[:P * O].reshape(P, O)[lo:hi])
    elif kind == POOL and part == 0 and layout == PLANES:
        fk.mean_planes(x[:C * T * H * W].reshape(C, T, H * W), y[:C * T].reshape(C, T))
    elif kind == POOL and part == 0:
        fk.mean_pixels(x[:P * C].reshape(P, C), T, H * W, y[:PO * C].reshape(PO, C))


layout = numba.njit(cache=True)(_layout)
run_step = numba.njit(cache=True, nogil=True)(_run_step)




def _convert(x, C, T, H, W, to, y):
    """Copy the tile in flat buffer x into flat buffer y in layout ``to`` (from the other one)."""
    P = pixel_rows(T * H * W)
    if to == PIXELS:
        fk.to_pixels(x[:C * T * H * W].reshape(C, T, H, W), y[:P * C].reshape(P, C))
    else:
        fk.to_planes(x[:P * C].reshape(P, C), y[:C * T * H * W].reshape(C, T, H, W))


convert = numba.njit(cache=True)(_convert)


def _run_steps(first, last, steps, params, shapes, T, a, b, current):
    """Run steps ``first`` ... ``last - 1`` on a tile of T images held in flat buffer a.

    ``current``: the layout the tile is in.  Each step writes the other
    buffer, so the two swap roles; returns (a, b, layout) with the result in
    the returned a.
    """
    C, H, W = shapes[first, 0], shapes[first, 1], shapes[first, 2]
    for s in range(first, last):
        wanted = layout(steps[s, KIND], C, T, H, W, current)
        if wanted != current:
            convert(a, C, T, H, W, wanted, b)
            a, b, current = b, a, wanted
        O, HO, WO = shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2]
        run_step(steps[s], params, current, a, T, H, W, b, HO, WO, 0, 1)
        a, b = b, a
        C, H, W = O, HO, WO
    return a, b, current


run_steps = numba.njit(cache=True, nogil=True)(_run_steps)


def _place(part, current, C, t, H, W, t0, T, whole):
    """Copy a part tile of t images (flat buffer ``part``, layout ``current``) into images
    t0 ... t0 + t - 1 of the planes tile (C, T, H, W) in flat buffer ``whole``."""
    L = H * W
    dst = whole[:C * T * L].reshape(C, T * L)
    if current == PLANES:
        src = part[:C * t * L].reshape(C, t * L)
        for c in range(C):
            dst[c, t0 * L:(t0 + t) * L] = src[c]
        return
    rows = part[:pixel_rows(t * L) * C].reshape(pixel_rows(t * L), C)
    for m in range(t * L):
        row = rows[m]
        for c in range(C):
            dst[c, t0 * L + m] = row[c]


place = numba.njit(cache=True, nogil=True)(_place)


def _run_tile(x, n0, T, part, split, steps, params, shapes, a, b, c, d, out):
    """Run every step on the tile of images n0 ... n0 + T - 1 of x, into out.

    x (N, C, H, W) the input (C <= the first step's C_IN: gather pads);
    steps (S, FIELDS) int64 and params, the plan; shapes: ``step_shapes``.
    With ``split`` > 0 the tile is run in two levels: the steps before
    ``split`` (large activations) on parts of at most ``part`` images,
    each part's result placed into the whole tile, then the remaining steps
    (small activations) on the whole tile at once.  a, b: flat scratch
    buffers for a part, c, d: for the whole tile, each large enough for any
    activation it holds (each step's output goes to the other one of the
    pair).  out (N, O, HO, WO): images n0 ... n0 + T - 1 overwritten.
    """
    C0, H0, W0 = shapes[0, 0], shapes[0, 1], shapes[0, 2]
    S = steps.shape[0]
    if split == 0:
        fk.gather(x, n0, c[:C0 * T * H0 * W0].reshape(C0, T, H0, W0))
    else:
        C, H, W = shapes[split, 0], shapes[split, 1], shapes[split, 2]
        parts = (T + part - 1) // part
        size = (T + parts - 1) // parts               # parts of equal size, give or take one
        for t0 in range(0, T, size):
            t = min(size, T - t0)
            fk.gather(x, n0 + t0, a[:C0 * t * H0 * W0].reshape(C0, t, H0, W0))
            a, b, current = run_steps(0, split, steps, params, shapes, t, a, b, PLANES)
            place(a, current, C, t, H, W, t0, T, c)
    c, d, current = run_steps(split, S, steps, params, shapes, T, c, d, PLANES)
    C, H, W = shapes[S, 0], shapes[S, 1], shapes[S, 2]
    if current == PLANES:
        fk.scatter_planes(c[:C * T * H * W].reshape(C, T, H, W), n0, out)
    else:
        P = pixel_rows(T * H * W)
        fk.scatter_pixels(c[:P * C].reshape(P, C), n0, T, out)


run_tile = numba.njit(cache=True, nogil=True)(_run_tile)


def _finish(flags, part, parts, count):
    """Publish that this thread has done ``count`` pieces of work; wait for the others to catch up."""
    release_store(flags, part, count)
    return wait_for(flags, parts, count)


finish = numba.njit(cache=True, nogil=True)(_finish)


def _run_part(x, steps, params, shapes, a, b, out, part, parts, flags):
    """Thread ``part``'s share of every step, for the single image of x (N = 1).

    ``parts`` threads run this at once on the same scratch buffers a, b;
    each step's output channels are shared out among them
    (``run_step``'s part), and between steps the threads wait for each
    other at a barrier (:mod:`tinyprune.barrier`, counters ``flags``).  The
    copies in and out, and layout conversions, are thread 0's.
    """
    C, H, W = shapes[0, 0], shapes[0, 1], shapes[0, 2]
    if part == 0:
        fk.gather(x, 0, a[:C * H * W].reshape(C, 1, H, W))
    done = 1
    if not finish(flags, part, parts, done):
        return
    current = PLANES
    for s in range(steps.shape[0]):
        wanted = layout(steps[s, KIND], C, 1, H, W, current)
        if wanted != current:
            if part == 0:
                convert(a, C, 1, H, W, wanted, b)
            done += 1
            if not finish(flags, part, parts, done):
                return
            a, b, current = b, a, wanted
        O, HO, WO = shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2]
        run_step(steps[s], params, current, a, 1, H, W, b, HO, WO, part, parts)
        done += 1
        if not finish(flags, part, parts, done):
            return
        a, b = b, a
        C, H, W = O, HO, WO
    if part == 0 and current == PLANES:
        fk.scatter_planes(a[:C * H * W].reshape(C, 1, H, W), 0, out)
    elif part == 0:
        fk.scatter_pixels(a[:pixel_rows(H * W) * C].reshape(pixel_rows(H * W), C), 0, 1, out)


run_part = numba.njit(cache=True, nogil=True)(_run_part)


def run_shared(x, steps, params, shapes, out, workers):
    """Run the plan on a batch of one image with ``workers`` threads sharing every step."""
    size = _scratch(shapes, 0, steps.shape[0], 1)
    a, b = np.empty(size, x.dtype), np.empty(size, x.dtype)
    flags = np.zeros(workers + 1, np.int64)            # a counter per thread, and "stop"

    def part(p):
        try:
            run_part(x, steps, params, shapes, a, b, out, p, workers, flags)
        except BaseException:
            flags[workers] = 1                         # the others stop waiting for this one
            raise

    jobs = [_pool(workers).submit(part, p) for p in range(1, workers)]
    try:
        part(0)
    finally:
        for job in jobs:
            job.result()


def tiling(shapes, itemsize, tile_bytes=None):
    """How to cut a batch into tiles: (split, part, whole) -- see ``_run_tile``.

    A step's input and output for one tile should fit in ``tile_bytes``
    (default TILE_BYTES, a core's level-2 cache).  MobileNet's first layers
    hold ten times more numbers per image than its last ones, so one tile
    size for all would leave the last layers' loops short: they get tiles
    of their own, larger ones, when that allows at least twice the images.
    Returns (0, t, t) when one level is enough.
    """
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    per_image = shapes[:, 0] * shapes[:, 1] * shapes[:, 2]
    need = (per_image[:-1] + per_image[1:]) * itemsize          # a step's input + output, one image
    for split in range(1, len(need)):
        part = max(1, tile_bytes // int(need[:split].max()))
        whole = max(1, tile_bytes // int(need[split:].max()))
        if whole >= 2 * part:
            return split, part, whole
    one = max(1, tile_bytes // int(need.max()))
    return 0, one, one


def _scratch(shapes, first, last, T):
    """Numbers a scratch buffer needs for steps first ... last - 1 on T images, in either layout."""
    rows = shapes[first:last + 1]
    return int((rows[:, 0] * _pixel_rows(T * rows[:, 1] * rows[:, 2])).max())


@functools.cache
def _pool(workers):
    """A pool of ``workers`` threads, made once per process; run_tile releases the GIL."""
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tinyprune-fused")


def run_plan(x, steps, params, tiles, workers, out, shapes=None):
    """Run the plan on the batch x (N, C, H, W) into out (N, O, HO, WO).

    ``tiles``: (split, part, whole) from ``tiling``, or an int for one
    level of tiles of that many images.  The batch is cut into tiles of at
    most ``whole`` images, as many as a multiple of ``workers`` when there
    are enough images, so that the ``workers`` threads, each with its own
    scratch buffers, get equal shares.  ``shapes``: ``step_shapes`` for
    this input size, if known.  Threads share whole tiles, not steps:
    handing a step's halves to two threads and waiting for both costs more,
    at MobileNet's sizes, than the half.
    """
    N, S = x.shape[0], steps.shape[0]
    if shapes is None:
        shapes = step_shapes(steps, steps[0, C_IN], x.shape[2], x.shape[3])
    if N == 1 and workers > 1 and can_yield:
        run_shared(x, steps, params, shapes, out, workers)
        return
    split, part, whole = (0, tiles, tiles) if isinstance(tiles, int) else tiles
    count = -(-N // whole)
    count = min(N, -(-count // workers) * workers)     # a multiple of workers, if possible
    T = -(-N // count)
    if split and T <= part:
        split = 0                                      # a part is the whole tile: one level
    starts = list(range(0, N, T))
    part_size = _scratch(shapes, 0, split, min(part, T)) if split else 1
    whole_size = _scratch(shapes, split, S, T)

    def work(first):
        a, b = np.empty(part_size, x.dtype), np.empty(part_size, x.dtype)
        c, d = np.empty(whole_size, x.dtype), np.empty(whole_size, x.dtype)
        for n0 in starts[first::workers]:
            run_tile(x, n0, min(T, N - n0), part, split, steps, params, shapes, a, b, c, d, out)

    workers = min(workers, len(starts))
    if workers == 1:
        work(0)
        return
    for job in [_pool(workers).submit(work, first) for first in range(workers)]:
        job.result()


# ---------------------------------------------------------------------------
# The plan object and the hook
# ---------------------------------------------------------------------------

class FusedPlan:
    """A model's leading layers as fused steps, and the plain layers after them.

    ``steps`` (S, FIELDS) int64, one row per step (columns named at the top
    of this module); ``params`` the packed, folded, padded weights;
    ``tail`` the leaf layers the plan does not cover, run plainly after it;
    ``channels`` the real channel count of the plan's output; ``flattened``
    True if that output is (N, channels) rather than (N, channels, H, W).
    """

    def __init__(self, model, steps, params, tail, channels, flattened):
        self.steps = steps
        self.params = params
        self.tail = tail
        self.channels = channels
        self.flattened = flattened
        self.shapes = {}         # (H, W) of the input -> (step_shapes, tiling)
        self.checked = set()     # (shape, dtype) of inputs the model's own checks accepted
        # What is_current compares: (dict, key, value) that must still be there, the masks
        # dicts and how many masks each had, every chain's list of layers and a copy of it.
        self.same, self.mask_counts, self.lists = [], [], []
        for chain in _chains(model):
            self.lists.append((chain.layers, list(chain.layers)))
        for _, layer in model.named_layers():
            for name in tuple(layer.param_names) + tuple(layer.buffer_names) + ("masks",):
                self.same.append((layer.__dict__, name, getattr(layer, name)))
            self.same += [(layer.masks, name, mask) for name, mask in layer.masks.items()]
            self.mask_counts.append((layer.masks, len(layer.masks)))

    def is_current(self, model):
        """True if ``model`` still has its layers and holds every array this plan was built from."""
        return (all(d.get(key) is value for d, key, value in self.same)
                and all(len(masks) == n for masks, n in self.mask_counts)
                and all(now == then for now, then in self.lists))

    def accept(self, model, x):
        """``x`` cast for the plan, after the model's checks (run once per input shape and dtype)."""
        key = (x.shape, x.dtype) if isinstance(x, np.ndarray) else None
        if key is None or key not in self.checked:
            x = model.prepare_input(x)          # raises naming the layer that does not fit
            if key is not None:
                self.checked.add(key)
            return x
        return np.ascontiguousarray(x, dtype=self.params.dtype)

    def sizes(self, H, W):
        """``step_shapes`` and the tiling (``tiling``) for H x W inputs (remembered)."""
        if (H, W) not in self.shapes:
            shapes = step_shapes(self.steps, self.steps[0, C_IN], H, W)
            self.shapes[H, W] = (shapes, tiling(shapes, self.params.itemsize))
        return self.shapes[H, W]

    def __call__(self, x):
        """The model's output for ``x`` (N, C, H, W), already checked and in the plan's dtype."""
        N = x.shape[0]
        shapes, tiles = self.sizes(x.shape[2], x.shape[3])
        out = np.empty((N, self.channels, shapes[-1, 1], shapes[-1, 2]), x.dtype)
        run_plan(x, self.steps, self.params, tiles, numba.get_num_threads(), out, shapes)
        y = out.reshape(N, self.channels) if self.flattened else out
        for layer in self.tail:
            y = layer.forward(y)
        return y


def _chains(layer):
    """``layer`` and every chain nested in it."""
    if not hasattr(layer, "layers"):
        return []
    return [layer] + [c for child in layer.layers for c in _chains(child)]


def build_plan(model):
    """The :class:`FusedPlan` of ``model`` (a Chain), or None if its first layer is not fusable."""
    leaves = [layer for _, layer in model.named_layers()]
    if model.dtype is None:
        return None
    builder = _Builder()
    i = 0
    while i < len(leaves):
        following = _next_step(builder, leaves, i)
        if following is None:
            break
        i = following
        last = builder.rows[-1]
        if i < len(leaves) and type(leaves[i]) in _ACTIVATIONS and last[KIND] != POOL:
            if last[ACT] == fk.IDENTITY:
                last[ACT] = _ACTIVATIONS[type(leaves[i])]
                i += 1
    if not builder.rows:
        return None
    params = np.concatenate(builder.chunks).astype(model.dtype)
    return FusedPlan(model, np.array(builder.rows), params, leaves[i:], builder.channels,
                     builder.flattened)


def fused_call(chain, x):
    """``chain(x)`` in eval mode through its plan (built if missing or stale), or None if it has none.

    The plan lives in ``chain._fused``: False means "no plan possible",
    None "not built yet".  The input is kept in ``chain._fused_input`` for
    a backward pass (see the module docstring).
    """
    plan = chain._fused
    if plan is None or (plan is not False and not plan.is_current(chain)):
        plan = chain._fused = build_plan(chain) or False
    if plan is False:
        return None
    x = plan.accept(chain, x)
    chain._fused_input = x
    return plan(x)
