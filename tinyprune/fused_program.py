"""The eval-mode fast path's program: a plan's steps run on tiles of images, compiled.

:mod:`tinyprune.fused` turns a model into a *plan*: a table ``steps`` with
one row per fused step (its columns are named below) and one array
``params`` with every step's folded, padded weights.  This module runs a
plan:

* ``run_step``: one step on one tile, in either of the two layouts of a
  tile (planes or pixels, see :mod:`tinyprune.fused_kernels`), by calling
  the step's kernel;
* ``run_tile``: every step on one tile, converting the layout where the
  next step runs faster in the other one, in one or two levels of tiles;
* ``run_plan``: a whole batch, its tiles shared out among threads.

A batch of one image has no tiles to share out; :mod:`tinyprune.fused_share`
shares out its steps instead.

Every compiled function is a plain Python function compiled on the line
after it, as in the kernels' module.
"""

import functools

import numba
import numpy as np

from . import fused_conv
from . import fused_depthwise as fd
from . import fused_kernels as fk
from .barrier import fetch_add
from .crew import open_call, share_out

__all__ = ["run_plan", "run_tile", "run_step", "step_shapes", "scratch_size", "layout",
           "share", "pixel_rows", "CONV", "DEPTHWISE", "POINTWISE", "POOL", "PLANES", "PIXELS", "FIELDS"]

# Step kinds, and the columns of a step's row in the plan's table.  W_AT and
# WT_AT say where the step's weight starts in the packed array, arranged for
# the planes layout and for the pixels layout; B_AT, where its bias starts;
# REAL, how many of the C_OUT channels are real (the rest pad to 4: zeros).
CONV, DEPTHWISE, POINTWISE, POOL = 0, 1, 2, 3
KIND, C_IN, C_OUT, KH, KW, STRIDE, PAD, ACT, W_AT, WT_AT, B_AT, REAL = range(12)
FIELDS = 12
PLANES, PIXELS = 0, 1


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


def _layout(step, C, T, H, W, current):
    """The layout a step runs in, given its input (C channels, T images of H x W) and the current one.

    What the kernels measure fastest: a 1x1 convolution on pixels when the
    tile has fewer pixels than the step has inputs or outputs (its rows,
    along which the inner loops run, are then the longer ones: C and O
    numbers on pixels, T*H*W on planes; MobileNet's 128 -> 256 step on
    17 images of 3x3 took 63 us on pixels, 91 on planes); a 3x3
    depthwise one at stride 1 and padding 1 where the tile already is
    (both kernels are fast: a conversion would cost more);
    one at stride 2 and padding 1 on even images at least 12 wide, or of
    fewer than 64 channels, on planes (``depthwise_stride2``, faster than
    pixels and the two conversions; on 6x6 images with 64 channels and
    more, pixels won);
    another depthwise one on pixels when an image has at most 4 pixels per
    channel; a full convolution on planes; pooling where the tile already is.
    """
    kind = step[KIND]
    if kind == POINTWISE:
        return PIXELS if T * H * W < max(C, step[C_OUT]) else PLANES
    three = kind == DEPTHWISE and step[KH] == 3 and step[KW] == 3 and step[PAD] == 1
    if three and step[STRIDE] == 1:
        return current
    if three and step[STRIDE] == 2 and H % 2 == 0 and W % 2 == 0 and (W >= 12 or C < 64):
        return PLANES
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


def _conv_step(step, params, x, images_first, y, part, parts):
    """A full convolution step: x (C, T, H, W) planes, or (T, C, H, W) with ``images_first``
    (see ``fused_conv.conv_planes``), into y (O, T, HO, WO); ``part`` of ``parts`` as in run_step."""
    C, O, kh, kw = step[C_IN], step[C_OUT], step[KH], step[KW]
    w = params[step[W_AT]:step[W_AT] + O * C * kh * kw].reshape(O, C, kh, kw)
    b = params[step[B_AT]:step[B_AT] + O]
    real = step[REAL]                      # channels real..O are padding: zeros, not computed
    lo, hi = share(real, part, parts, 1)
    fused_conv.conv_planes(x, w[lo:hi], b[lo:hi], step[STRIDE], step[PAD], step[ACT], y[lo:hi], images_first)
    if part == parts - 1:
        y[real:] = 0.0


conv_step = numba.njit(cache=True, nogil=True, inline="always")(_conv_step)


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
        conv_step(step, params, x4, np.bool_(False), y4, part, parts)   # (np.bool_: see run_steps)
    elif kind == DEPTHWISE and layout == PLANES:
        w = params[step[W_AT]:step[W_AT] + C * kh * kw].reshape(C, kh, kw)
        fd.depthwise_planes(x4[lo:hi], w[lo:hi], b[lo:hi], stride, pad, act, y4[lo:hi])
        if part == parts - 1:
            y4[real:] = 0.0
    elif kind == DEPTHWISE:                # on pixels the parts share the output rows
        w = params[step[WT_AT]:step[WT_AT] + C * kh * kw].reshape(kh, kw, C)
        out = y[:PO * O].reshape(PO, O)
        first, last = share(HO, part, parts, 1)
        fd.depthwise_pixels(x[:T * H * W * C].reshape(T, H, W, C), w, b, stride, pad, act,
                            out[:T * HO * WO].reshape(T, HO, WO, O), first, last)
        if part == parts - 1:
            out[T * HO * WO:] = 0.0
    elif kind == POINTWISE and layout == PLANES:
        lo, hi = share(O, part, parts, 8)
        top = max(lo, min(hi, real))       # rows real..O: padding channels, zeros (act(0) = 0)
        w = params[step[W_AT]:step[W_AT] + O * C].reshape(O, C)
        out = y[:O * T * H * W].reshape(O, T * H * W)
        fk.matmul_act(w[lo:top], x[:C * T * H * W].reshape(C, T * H * W), b[lo:top], np.bool_(True), act,
                      out[lo:top])
        out[top:hi] = 0.0
    elif kind == POINTWISE:                # on pixels: the rows after the T*H*W real ones are left as they are
        lo, hi = share(P, part, parts, 8)
        hi = max(lo, min(hi, T * H * W))   # (one image at 1x1 is 1 real row of 8: the other 7 cost 7/8)
        w = params[step[WT_AT]:step[WT_AT] + C * O].reshape(C, O)
        fk.matmul_act(x[:P * C].reshape(P, C)[lo:hi], w, b, np.bool_(False), act, y[:P * O].reshape(P, O)[lo:hi])
    elif kind == POOL and part == 0 and layout == PLANES:
        fk.mean_planes(x[:C * T * H * W].reshape(C, T, H * W), y[:C * T].reshape(C, T))
    elif kind == POOL and part == 0:
        fk.mean_pixels(x[:P * C].reshape(P, C), T, H * W, y[:PO * C].reshape(PO, C))


layout = numba.njit(cache=True)(_layout)
run_step = numba.njit(cache=True, nogil=True)(_run_step)


def _convert(x, C, T, H, W, to, y, part, parts):
    """Copy the tile in flat buffer x into flat buffer y in layout ``to`` (from the other one).

    ``part`` of ``parts``: only that share of the channels; (0, 1) is all of them.
    """
    P = pixel_rows(T * H * W)
    lo, hi = share(C, part, parts, 1)
    if to == PIXELS:
        fk.to_pixels(x[:C * T * H * W].reshape(C, T, H, W)[lo:hi], y[:P * C].reshape(P, C)[:, lo:hi])
    else:
        fk.to_planes(x[:P * C].reshape(P, C)[:, lo:hi], y[:C * T * H * W].reshape(C, T, H, W)[lo:hi])


convert = numba.njit(cache=True)(_convert)


def _run_steps(first, last, steps, params, shapes, T, a, b, current):
    """Run steps ``first`` ... ``last - 1`` on a tile of T images held in flat buffer a.

    ``current``: the layout the tile is in.  Each step writes the other
    buffer, so the two swap roles; returns (a, b, layout) with the result in
    the returned a.
    """
    C, H, W = shapes[first, 0], shapes[first, 1], shapes[first, 2]
    # Part 0 of 1: the whole step.  As np.int64, not the constants 0 and 1, which
    # Numba would compile run_step for as such, and then once more for
    # fused_share.run_part's parts (4 s per dtype).  The flags passed to kernels
    # are np.bool_ for the same reason: one compilation for True and False.
    part, parts = np.int64(0), np.int64(1)
    for s in range(first, last):
        wanted = layout(steps[s], C, T, H, W, current)
        if wanted != current:
            convert(a, C, T, H, W, wanted, b, part, parts)
            a, b, current = b, a, wanted
        O, HO, WO = shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2]
        run_step(steps[s], params, current, a, T, H, W, b, HO, WO, part, parts)
        a, b = b, a
        C, H, W = O, HO, WO
    return a, b, current


# Inlined into run_tile, its only compiled caller: compiled on its own it
# would re-optimise every kernel under run_step once more (7 s per dtype).
run_steps = numba.njit(cache=True, nogil=True, inline="always")(_run_steps)


def _place(part, current, C, t, H, W, t0, T, whole):
    """Copy a part tile of t images (flat buffer ``part``, layout ``current``) into images
    t0 ... t0 + t - 1 of the planes tile (C, T, H, W) in flat buffer ``whole``."""
    L = H * W
    dst = whole[:C * T * L].reshape(C, T * L)
    if current == PLANES:
        src = part[:C * t * L].reshape(C, t * L)
        for c in range(C):
            fk.copy_row(src[c], dst[c, t0 * L:(t0 + t) * L])
        return
    rows = part[:pixel_rows(t * L) * C].reshape(pixel_rows(t * L), C)
    for m in range(t * L):
        row = rows[m]
        for c in range(C):
            dst[c, t0 * L + m] = row[c]


place = numba.njit(cache=True, nogil=True)(_place)


def _start_tile(x, n0, T, steps, params, shapes, a, b):
    """Bring images n0 ... n0 + T - 1 of the caller's batch x into a tile: returns (a, b, first).

    The tile (planes) ends up in the returned a, and ``first`` is the step
    to run next.  Usually the images are copied into a (``gather``) and
    first is 0.  When step 0 is a full convolution that reads all of x's
    channels (MobileNet's first layer), it reads the images straight from x
    instead and writes its output into b, which is returned as a, with
    first = 1: the convolution copies each image into its phases anyway,
    so copying it into planes before was a whole pass for nothing (about
    2 microseconds an image).
    """
    C0, H0, W0 = shapes[0, 0], shapes[0, 1], shapes[0, 2]
    if steps[0, KIND] == CONV and x.shape[1] == C0:
        O, HO, WO = shapes[1, 0], shapes[1, 1], shapes[1, 2]
        conv_step(steps[0], params, x[n0:n0 + T], np.bool_(True), b[:O * T * HO * WO].reshape(O, T, HO, WO),
                  np.int64(0), np.int64(1))
        return b, a, 1
    fk.gather(x, n0, a[:C0 * T * H0 * W0].reshape(C0, T, H0, W0))
    return a, b, 0


start_tile = numba.njit(cache=True, nogil=True, inline="always")(_start_tile)


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
    S = steps.shape[0]
    if split == 0:
        c, d, first = start_tile(x, n0, T, steps, params, shapes, c, d)
    else:
        C, H, W = shapes[split, 0], shapes[split, 1], shapes[split, 2]
        parts = (T + part - 1) // part
        size = (T + parts - 1) // parts               # parts of equal size, give or take one
        for t0 in range(0, T, size):
            t = min(size, T - t0)
            a, b, first = start_tile(x, n0 + t0, t, steps, params, shapes, a, b)
            a, b, current = run_steps(first, split, steps, params, shapes, t, a, b, PLANES)
            place(a, current, C, t, H, W, t0, T, c)
        first = split
    # (Each call of the inlined run_steps is one more copy of it to compile: two, not three.)
    c, d, current = run_steps(first, S, steps, params, shapes, T, c, d, PLANES)
    C, H, W = shapes[S, 0], shapes[S, 1], shapes[S, 2]
    if current == PLANES:
        fk.scatter_planes(c[:C * T * H * W].reshape(C, T, H, W), n0, out)
    else:
        P = pixel_rows(T * H * W)
        fk.scatter_pixels(c[:P * C].reshape(P, C), n0, T, out)


# Inlined into run_tiles, its only compiled caller: called from there as a
# function of its own, its whole program was optimised a second time as part
# of run_tiles, 3.5 s more to compile for every dtype.
run_tile = numba.njit(cache=True, nogil=True, inline="always")(_run_tile)


def _run_tiles(bell, call, claimed, x, starts, part, split, steps, params, shapes, a, b, c, d, out):
    """One thread's share of run_plan: claim the next tile (``claimed``), run it, until none is left.

    Tile k holds images starts[k] ... starts[k + 1] - 1; the other
    arguments are run_tile's.  ``call`` > 0: this is the calling thread,
    which first opens that call on ``bell`` for the helpers
    (:mod:`tinyprune.crew`), from here, where the GIL is already let go.
    """
    if call > 0:
        open_call(bell, call)
    k = fetch_add(claimed, 0, 1)
    while k < starts.size - 1:
        run_tile(x, starts[k], starts[k + 1] - starts[k], part, split, steps, params, shapes, a, b, c, d, out)
        k = fetch_add(claimed, 0, 1)


run_tiles = numba.njit(cache=True, nogil=True)(_run_tiles)


def scratch_size(shapes, first, last, T):
    """Numbers a scratch buffer needs for steps first ... last - 1 on T images, in either layout."""
    rows = shapes[first:last + 1]
    return int((rows[:, 0] * _pixel_rows(T * rows[:, 1] * rows[:, 2])).max())


def tile_starts(N, whole, workers):
    """Where the tiles of a batch of N images start, and N: tile k holds images starts[k] ... starts[k + 1] - 1.

    At most ``whole`` images a tile; as many tiles as a multiple of
    ``workers`` when there are enough images, and sizes that differ by one
    at most, so that threads claiming them in turn get equal shares (64
    images in tiles of 11, 11, 11, 11, 11 and 9 would leave one of two
    threads 33 images and the other 31; here each gets 32).
    """
    count = -(-N // whole)
    count = min(N, -(-count // workers) * workers)     # a multiple of workers, if possible
    return [N * k // count for k in range(count + 1)]


def take_scratch(spare, part_size, whole_size, dtype):
    """Scratch buffers (a, b, c, d) for one thread of ``run_plan``: a set from ``spare`` if
    one is large enough (a smaller one is dropped), or new ones.  Give them back with
    ``spare.append``.  ``spare`` may be None: always new ones.

    Kept between calls because fresh buffers of a few megabytes can come
    straight from the operating system, one page fault per 4 KB when first
    written: 850 faults and 0.9 ms a call on the resized MobileNet at
    batch 64, nearly doubling its time, until the allocator happened to
    keep such blocks for reuse.  (``list.pop`` and ``append`` are atomic,
    so threads calling the same plan each get a set of their own.)
    """
    while spare:
        try:
            kept = spare.pop()
        except IndexError:              # another thread took the last one
            break
        if kept[0].size >= part_size and kept[2].size >= whole_size and kept[0].dtype == dtype:
            return kept
    return (np.empty(part_size, dtype), np.empty(part_size, dtype),
            np.empty(whole_size, dtype), np.empty(whole_size, dtype))


@functools.lru_cache(maxsize=64)
def _schedule(N, tiles, workers, shapes):
    """run_plan's tiles for a batch of N: (starts, split, part, part_size, whole_size), remembered.

    ``shapes``: step_shapes as bytes (a key).  Tile k holds images
    starts[k] ... starts[k + 1] - 1; part_size and whole_size are the
    scratch buffers' sizes (``scratch_size``).  Worked out again at every
    call, this was 7 us of Python, 1% of the resized MobileNet's batch of 64.
    """
    shapes = np.frombuffer(shapes, np.int64).reshape(-1, 3)
    split, part, whole = tiles
    starts = np.array(tile_starts(N, whole, workers), np.int64)
    T = -(-N // (starts.size - 1))
    if split and T <= part:
        split = 0                                      # a part is the whole tile: one level
    part_size = scratch_size(shapes, 0, split, min(part, T)) if split else 1
    whole_size = scratch_size(shapes, split, shapes.shape[0] - 1, T)
    return starts, split, part, part_size, whole_size


def run_plan(x, steps, params, tiles, workers, out, shapes=None, spare=None):
    """Run the plan on the batch x (N, C, H, W) into out (N, O, HO, WO).

    ``tiles``: (split, part, whole) from ``tiling``, or an int for one
    level of tiles of that many images.  The batch is cut into tiles of at
    most ``whole`` images (``tile_starts``) that ``workers`` threads, each
    with its own scratch buffers, claim one at a time: the calling thread
    and the awake helpers of :mod:`tinyprune.crew`.  ``shapes``:
    ``step_shapes`` for this input size, if known.  ``spare``: a list that
    keeps scratch buffers from call to call (``take_scratch``), or None.
    Every tile comes out the same whichever thread runs it.
    """
    if shapes is None:
        shapes = step_shapes(steps, steps[0, C_IN], x.shape[2], x.shape[3])
    tiles = (0, tiles, tiles) if isinstance(tiles, int) else tuple(tiles)
    starts, split, part, part_size, whole_size = _schedule(x.shape[0], tiles, workers, shapes.tobytes())
    count = starts.size - 1
    claimed = np.zeros(1, np.int64)                    # how many tiles threads have claimed

    def work(bell, call):
        scratch = take_scratch(spare, part_size, whole_size, x.dtype)
        try:
            run_tiles(bell, call, claimed, x, starts, part, split, steps, params, shapes, *scratch, out)
        finally:
            if spare is not None:
                spare.append(scratch)

    share_out(work, min(workers, count))
