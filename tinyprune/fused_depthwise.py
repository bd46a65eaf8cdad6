"""Depthwise convolutions of the eval-mode fast path, on planes and on pixels.

The layouts, the fused step (convolution + bias + activation) and the
twin idiom (plain function, compiled on the next line) are those of
:mod:`tinyprune.fused_kernels`; read its docstring first.

A depthwise convolution does few multiplies per number it reads (9 for a
3x3 filter), so what makes it fast is what makes a copy fast: every output
number is written once, every input number is read from the level-1 cache,
and the innermost loop is a long unit-step loop the compiler turns into
vector instructions.  In both layouts below the nine taps of a 3x3 filter
are summed in ONE loop (nine loads, nine multiply-adds, one store per
output), instead of one pass over the output per tap or per kernel row.
Other kernel sizes go a kernel row at a time, up to three taps per pass.
"""

import numba
import numpy as np

from .fused_kernels import _serial, activate        # the same compile options as the other kernels
from .products import unsigned

__all__ = ["depthwise_planes", "depthwise_shifts", "depthwise_stride2", "depthwise_pixels"]

# Scratch numbers (row phases of a group of images) worked on at a time on
# planes: 4096 float32 are 16 KB, and with the grid as large beside them
# both stay in the level-1 cache between the copy in, the taps and the copy
# out.  (Groups four times as large were neither faster nor slower.)
GROUP = 4096


# ---------------------------------------------------------------------------
# On planes, (C, T, H, W).  The idea is that of kernels._depthwise_forward
# (read its comment first): copy the input into a zero-bordered scratch
# plane, read it as one long row, and make each filter tap a shift along a
# "grid" of the scratch plane's row length WP.  Several images are stacked
# into one tall plane, so that a tap's loop runs over all of them at once;
# small images are then still long loops.
#
# A stride s > 1 is dealt with by rows only: the padded rows are dealt out
# to s "row phases" (row r*s + u of an image goes to row r of phase u), so
# that tap (a, b) of output row i reads row i + a // s of phase a % s -- a
# plain shift.  The grid keeps every column, and the copy out takes every
# s-th: at stride 2 half the columns are computed for nothing, which costs
# less than dealing the columns out too (a copy with a step is several
# times slower than one without, and here it would be one per input number
# instead of one per output number).
#
# Sizes: each image takes R = ceil((H + 2*pad) / s) rows of each phase;
# output pixel (t, i, j) is grid position g = (t*R + i)*WP + j*s, and tap
# (a, b) reads phase a % s at flat position g + (a // s)*WP + b.
# ---------------------------------------------------------------------------

def _deal_rows(x, s, pad, R, phases):
    """phases[u, t*R + r, pad + q] = x[t, r*s + u - pad, q]: the images' rows in their row phases.

    x (n, H, W) images;  phases (s, rows, WP), rows >= n*R.  Only the
    image pixels are written: the border keeps the zeros the caller put
    there once (the same positions are border for every image).
    """
    n, H, W = x.shape
    for t in range(n):
        u, row = pad % s, t * R + pad // s              # padded row r + pad is row `row` of phase u
        for r in range(H):
            src, dst = x[t, r], phases[u, row, pad:]
            for q in range(W):
                dst[q] = src[q]
            u += 1                                        # counted on, not divided: a division
            if u == s:                                    # costs as much as copying a short row
                u, row = 0, row + 1


def _tap_starts(KH, KW, s, rows, WP):
    """starts[a*KW + b]: where tap (a, b) of grid position 0 reads the flat phases (s, rows, WP)."""
    starts = np.empty(KH * KW, np.int64)
    for a in range(KH):
        for b in range(KW):
            starts[a * KW + b] = (a % s) * rows * WP + (a // s) * WP + b
    return starts


deal_rows = numba.njit(**_serial)(_deal_rows)
tap_starts = numba.njit(**_serial)(_tap_starts)


def _nine_taps(flat, starts, w, bias, g0, grid):
    """grid[g] = bias + sum over the taps k of the 3x3 filter w of w[k] * flat[starts[k] + g0 + g].

    flat: the phases, flattened;  starts (9,) from tap_starts;  w (3, 3).
    """
    x00, x01, x02 = flat[starts[0] + g0:], flat[starts[1] + g0:], flat[starts[2] + g0:]
    x10, x11, x12 = flat[starts[3] + g0:], flat[starts[4] + g0:], flat[starts[5] + g0:]
    x20, x21, x22 = flat[starts[6] + g0:], flat[starts[7] + g0:], flat[starts[8] + g0:]
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for g in range(grid.size):
        grid[g] = (bias + w00 * x00[g] + w01 * x01[g] + w02 * x02[g]
                   + w10 * x10[g] + w11 * x11[g] + w12 * x12[g]
                   + w20 * x20[g] + w21 * x21[g] + w22 * x22[g])


def _some_taps(flat, starts, w, bias, g0, grid):
    """As _nine_taps for a filter w (KH, KW) of any size: bias, then up to three taps per pass."""
    KW = w.shape[1]
    taps = w.reshape(w.size)
    grid[:] = bias
    k = 0
    while k < taps.size:
        n = min(3, KW - k % KW)                           # taps left in this kernel row, three at most
        x0, w0 = flat[starts[k] + g0:], taps[k]
        if n == 3:
            x1, x2, w1, w2 = flat[starts[k + 1] + g0:], flat[starts[k + 2] + g0:], taps[k + 1], taps[k + 2]
            for g in range(grid.size):
                grid[g] += w0 * x0[g] + w1 * x1[g] + w2 * x2[g]
        else:
            n = 1
            for g in range(grid.size):
                grid[g] += w0 * x0[g]
        k += n


def _copy_rows(grid, R, WP, s, y, odd):
    """y[t, i, j] = grid[(t*R + i)*WP + j*s]: the grid's real pixels.  y (n, HO, WO).

    At stride 2 the loop also copies the odd positions, to odd (WO,), which
    is thrown away: a loop that reads both numbers of each pair is turned
    into vector instructions, one that reads every second number is not
    (several times slower).  grid must then hold a number after the last pixel.
    """
    n, HO, WO = y.shape
    if s == 1:                          # loops of their own: one with a branch inside is not vectorized
        for t in range(n):
            for i in range(HO):
                src, dst = grid[(t * R + i) * WP:], y[t, i]
                for j in range(WO):
                    dst[j] = src[j]
    elif s == 2:
        for t in range(n):
            for i in range(HO):
                src, dst = grid[(t * R + i) * WP:], y[t, i]
                for j in range(WO):
                    dst[j] = src[2 * j]
                    odd[j] = src[2 * j + 1]
    else:
        for t in range(n):
            for i in range(HO):
                src, dst = grid[(t * R + i) * WP:], y[t, i]
                for j in range(WO):
                    dst[j] = src[j * s]


nine_taps = numba.njit(**_serial)(_nine_taps)
some_taps = numba.njit(**_serial)(_some_taps)
copy_rows = numba.njit(**_serial)(_copy_rows)


# ---------------------------------------------------------------------------
# On planes, the common case -- a 3x3 filter, stride 1, padding 1 -- without
# any copy.  The T images of a channel lie one after the other in memory,
# T*H*W numbers read as one long row, and the output has the same layout.
# Tap (a, b) of output pixel m is then the input at m + (a - 1)*W + (b - 1):
# a plain shift along the row, as on the grid above, except where the
# neighbour does not exist (the pixel is on an image's border).  There the
# padding would hold a zero, so the tap uses a zero: ``neighbours`` marks,
# for each pixel, whether it has a neighbour up, down, left and right, and
# the tap takes ``x if the neighbour exists else 0`` (a select, which the
# compiler turns into vector instructions; multiplying by a 0/1 mask instead
# would turn a neighbouring infinity into NaN).  No rows are dealt out or
# copied back, which for small images (12x12, 6x6) cost more than the taps.
#
# The taps are summed a kernel column at a time: the left column's three
# taps, the middle's, the right's.  Within a column only the top and bottom
# taps need a select (does the pixel have a row above, below?); a pixel
# with no left neighbour drops the whole left column's sum in one select,
# and the same on the right.  That is 8 selects on 4 plain conditions,
# where selecting each corner tap on two conditions cost 4 more "and"s per
# vector: this way is 1.25-1.4x faster.  The four conditions of a pixel
# are the four bits of one byte (``UP`` ... ``RIGHT``): one load instead
# of four.
#
# A shifted read can fall outside the channel's row, into the channel
# before or after it (its value is not used), but not outside the tile:
# the first W+1 pixels of the first channel and the last W+1 of the last
# are read through a copy of the tile's ends with zeros around them
# (``window``).
# ---------------------------------------------------------------------------

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8       # bits of a pixel's byte in ``neighbours``: it has that neighbour


def _neighbours(T, H, W, masks):
    """masks[m] = the bits UP | DOWN | LEFT | RIGHT of the neighbours pixel m of T stacked H x W images has.

    The first image's bits are worked out, the others copied from it
    (for a tile of 16 images of 48x48 that is 1 microsecond, not 5: a
    depthwise step computes them at every call).
    """
    L = H * W
    for i in range(H):
        for j in range(W):
            masks[i * W + j] = UP * (i > 0) + DOWN * (i < H - 1) + LEFT * (j > 0) + RIGHT * (j < W - 1)
    for t in range(1, T):
        image = masks[t * L:(t + 1) * L]
        for m in range(L):
            image[m] = masks[m]


def _window(flat, start, stop, out):
    """out[k] = flat[start + k] for k < stop - start, or 0 where start + k is outside flat."""
    for k in range(stop - start):
        at = start + k
        out[k] = flat[at] if 0 <= at < flat.size else 0.0


def _nine_masked(flat, at, W, w, bias, masks, m0, out):
    """out[m] = bias + the sum over the 3x3 taps of w[a, b] * (neighbour (a, b) of flat[at + m], or 0).

    Output pixel m is pixel m0 + m of the masks (from ``neighbours``);
    flat (1-D) must hold every position from at - W - 1 to
    at + out.size + W.  A kernel column at a time (see above).
    """
    zero = flat.dtype.type(0.0)
    x00, x01, x02 = flat[at - W - 1:], flat[at - W:], flat[at - W + 1:]
    x10, x11, x12 = flat[at - 1:], flat[at:], flat[at + 1:]
    x20, x21, x22 = flat[at + W - 1:], flat[at + W:], flat[at + W + 1:]
    bits = masks[m0:]
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for m in range(out.size):
        k = bits[m]
        u, d = (k & UP) != 0, (k & DOWN) != 0
        left = w00 * (x00[m] if u else zero) + w10 * x10[m] + w20 * (x20[m] if d else zero)
        middle = w01 * (x01[m] if u else zero) + w11 * x11[m] + w21 * (x21[m] if d else zero)
        right = w02 * (x02[m] if u else zero) + w12 * x12[m] + w22 * (x22[m] if d else zero)
        out[m] = (bias + middle + (left if (k & LEFT) != 0 else zero)
                  + (right if (k & RIGHT) != 0 else zero))


neighbours = numba.njit(**_serial)(_neighbours)
window = numba.njit(**_serial)(_window)
nine_masked = numba.njit(**_serial)(_nine_masked)


def _depthwise_shifts(x, w, b, act, y):
    """y[c] = act(3x3 depthwise(x[c], w[c]) + b[c]), stride 1, padding 1, on planes.

    x (C, T, H, W);  w (C, 3, 3);  b (C,);  y (C, T, H, W) overwritten.
    """
    C, T, H, W = x.shape
    L, e = T * H * W, W + 1                      # a channel's numbers; the reach of a tap
    flat, out = x.reshape(C * L), y.reshape(C * L)
    masks = np.empty(L, np.uint8)
    neighbours(T, H, W, masks)
    spare = np.empty(3 * e, x.dtype)             # either end's window: at most e pixels and e each side
    for c in range(C):
        lo = min(e, L) if c == 0 else 0                   # pixels lo ... hi - 1 are read in place
        hi = max(L - e, lo) if c == C - 1 else L
        if hi > lo:
            nine_masked(flat, c * L + lo, W, w[c], b[c], masks, lo, out[c * L + lo:c * L + hi])
        if lo > 0:                                        # the tile's first pixels: through a window
            window(flat, c * L - e, c * L + lo + e, spare)
            nine_masked(spare, e, W, w[c], b[c], masks, 0, out[c * L:c * L + lo])
        if hi < L:                                        # and its last ones
            window(flat, c * L + hi - e, c * L + L + e, spare)
            nine_masked(spare, e, W, w[c], b[c], masks, hi, out[c * L + hi:c * L + L])
        activate(out[c * L:c * L + L], act)


depthwise_shifts = numba.njit(**_serial)(_depthwise_shifts)


# ---------------------------------------------------------------------------
# On planes, a 3x3 filter at stride 2 and padding 1 on images of even size
# (MobileNet's downsampling steps), without dealing rows.  With W even, the
# parity of a flat index along a channel's T*H*W numbers is the parity of
# its column, so ONE long loop per channel splits it into its even columns
# E and odd columns O (``split_columns``): E[R*WO + j] = x[R, 2j] and
# O[R*WO + j] = x[R, 2j + 1], R a row of the stacked images.  Output pixel
# (i, j) then reads, in each of the input rows 2i - 1, 2i and 2i + 1, O at
# j - 1, E at j and O at j: unit-step reads, no column computed for nothing
# and no copy out.  Rows cannot be skipped by a shift, so the loop along
# the output columns runs once per output row; the row above an image's
# first is a zero row (the padding), and the column left of the first is
# left out of the sum (a separate first pixel, not a multiply by zero).
# ---------------------------------------------------------------------------

def _split_columns(x, even, odd):
    """even[k] = x[2k], odd[k] = x[2k + 1] for k < even.size.  x (1-D)."""
    for k in range(even.size):
        even[k] = x[2 * k]
        odd[k] = x[2 * k + 1]


def _stride2_rows(E, O, HO, WO, w, bias, out):
    """out[k*WO + j] = bias + the 3x3 taps w of output pixel j of output row k (stride 2, padding 1).

    E, O (WO + T*2*HO*WO,): a zero row of WO numbers, then the even and odd
    columns of T stacked 2HO x 2WO images (from split_columns);  out
    (T*HO*WO,).  Unsigned indices: Numba then leaves out its check for
    negative ones (see ``products.unsigned``).
    """
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    n, one, i = unsigned(WO), unsigned(1), 0
    for k in range(unsigned(out.size // WO)):
        mid = n + unsigned(2) * k * n                     # input row 2i of this image, after the zero row
        a = mid - n if i > 0 else unsigned(0)             # the row above it, or the zero row
        c, o = mid + n, k * n
        out[o] = bias + w01 * E[a] + w02 * O[a] + w11 * E[mid] + w12 * O[mid] + w21 * E[c] + w22 * O[c]
        for j in range(one, n):
            out[o + j] = (bias + w00 * O[a + j - one] + w01 * E[a + j] + w02 * O[a + j]
                          + w10 * O[mid + j - one] + w11 * E[mid + j] + w12 * O[mid + j]
                          + w20 * O[c + j - one] + w21 * E[c + j] + w22 * O[c + j])
        i += 1                                            # counted on, not divided
        if i == HO:
            i = 0


split_columns = numba.njit(**_serial)(_split_columns)
stride2_rows = numba.njit(**_serial)(_stride2_rows)


def _depthwise_stride2(x, w, b, act, y):
    """y[c] = act(3x3 depthwise(x[c], w[c]) + b[c]), stride 2, padding 1, on planes; H and W even.

    x (C, T, H, W);  w (C, 3, 3);  b (C,);  y (C, T, H // 2, W // 2) overwritten.
    """
    C, T, H, W = x.shape
    HO, WO = H // 2, W // 2
    L = T * H * W
    columns = np.zeros((2, WO + L // 2), x.dtype)     # even, odd: the first WO numbers stay zero
    flat, out = x.reshape(C, L), y.reshape(C, L // 4)
    for c in range(C):
        split_columns(flat[c], columns[0, WO:], columns[1, WO:])
        stride2_rows(columns[0], columns[1], HO, WO, w[c], b[c], out[c])
        activate(out[c], act)


depthwise_stride2 = numba.njit(**_serial)(_depthwise_stride2)


def _depthwise_planes(x, w, b, stride, pad, act, y):
    """y[c, t] = act(depthwise(x[c, t], w[c]) + b[c]) on planes.

    x (C, T, H, W);  w (C, KH, KW);  b (C,);  y (C, T, HO, WO) overwritten.
    A 3x3 filter at stride 1 and padding 1 goes to ``depthwise_shifts``,
    at stride 2 and padding 1 on even images to ``depthwise_stride2``.
    Otherwise the C*T images go n at a time, as many as fit in GROUP
    numbers (at least one), so that scratch rows and grid stay in the
    level-1 cache; the images of one channel among them make one stretch
    of the grid.
    """
    C, T, H, W = x.shape
    if w.shape[1] == 3 and w.shape[2] == 3 and stride == 1 and pad == 1:
        depthwise_shifts(x, w, b, act, y)
        return
    if w.shape[1] == 3 and w.shape[2] == 3 and stride == 2 and pad == 1 and H % 2 == 0 and W % 2 == 0:
        depthwise_stride2(x, w, b, act, y)
        return
    KH, KW = w.shape[1], w.shape[2]
    HO, WO = y.shape[2], y.shape[3]
    s = stride
    R, WP = (H + 2 * pad + s - 1) // s, W + 2 * pad
    n = max(1, min(C * T, GROUP // (s * R * WP)))
    phases = np.zeros((s, n * R, WP), x.dtype)
    flat, grid = phases.reshape(phases.size), np.empty(n * R * WP + WP, x.dtype)
    odd = np.empty(WO, x.dtype)
    starts = tap_starts(KH, KW, s, n * R, WP)
    images, out = x.reshape(C * T, H, W), y.reshape(C * T, HO, WO)
    for u0 in range(0, C * T, n):
        u1 = min(u0 + n, C * T)
        deal_rows(images[u0:u1], s, pad, R, phases)
        for c in range(u0 // T, (u1 - 1) // T + 1):       # the channels among images u0 ... u1 - 1
            first, last = max(u0, c * T) - u0, min(u1, c * T + T) - u0
            g0, g1 = first * R * WP, ((last - 1) * R + HO - 1) * WP + (WO - 1) * s + 1
            if KH == 3 and KW == 3:
                nine_taps(flat, starts, w[c], b[c], g0, grid[g0:g1])
            else:
                some_taps(flat, starts, w[c], b[c], g0, grid[g0:g1])
        part = grid[:((u1 - u0 - 1) * R + HO - 1) * WP + (WO - 1) * s + 1]
        activate(part, act)
        copy_rows(grid, R, WP, s, out[u0:u1], odd)


depthwise_planes = numba.njit(**_serial)(_depthwise_planes)


# ---------------------------------------------------------------------------
# On pixels, (T, H, W, C): all channels of a pixel are C contiguous numbers,
# and so are the C weights of a tap, w[a, b] (w is (KH, KW, C)).  Output
# pixel (t, i, j) is then a sum of vectors along the channels:
#
#     y[t, i, j] = b + sum over taps (a, b) of w[a, b] * xp[t, i*s + a, j*s + b]
#
# with xp the zero-padded image.  The innermost loop runs along the C
# channels (64 to 256 in MobileNet's pixel layers: long enough), and a
# stride only changes which pixel a tap starts at -- it costs nothing.
# ---------------------------------------------------------------------------

def _pad_pixels(x, t, pad, padded):
    """padded[r + pad, (q + pad)*C + c] = x[t, r, q, c]; the border keeps the caller's zeros.

    x (T, H, W, C);  padded (H + 2*pad, (W + 2*pad)*C).
    """
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    for r in range(H):
        src, dst = x[t, r].reshape(W * C), padded[r + pad, pad * C:]
        for k in range(W * C):
            dst[k] = src[k]


def _pixel_row_3x3(padded, taps, bias, r, s, out):
    """out[j] = bias + sum of the nine taps of rows r..r+2 of padded from column j*s, for each pixel j.

    padded (HP, WP*C);  taps (9, C), tap (a, b) in row a*3 + b;  out (WO, C).
    At stride 1 two pixels at a time: they share two of their three input
    columns, so each of the 12 input and 9 weight vectors loaded serves
    both (19 loads per output vector on its own, 11.5 in a pair; the loads,
    not the multiplies, are what a depthwise convolution waits for).  Three
    or four pixels at a time were measured no faster: their loop needs more
    registers than there are.
    """
    WO, C = out.shape
    w00, w01, w02, w10, w11, w12 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
    w20, w21, w22 = taps[6], taps[7], taps[8]
    row0, row1, row2 = padded[r], padded[r + 1], padded[r + 2]
    paired = WO - WO % 2 if s == 1 else 0
    for j in range(0, paired, 2):
        at = j * C
        a0, a1, a2, a3 = row0[at:], row0[at + C:], row0[at + 2 * C:], row0[at + 3 * C:]
        b0, b1, b2, b3 = row1[at:], row1[at + C:], row1[at + 2 * C:], row1[at + 3 * C:]
        d0, d1, d2, d3 = row2[at:], row2[at + C:], row2[at + 2 * C:], row2[at + 3 * C:]
        o0, o1 = out[j], out[j + 1]
        for c in range(C):
            u00, u01, u02, u10, u11, u12 = w00[c], w01[c], w02[c], w10[c], w11[c], w12[c]
            u20, u21, u22, v = w20[c], w21[c], w22[c], bias[c]
            e1, e2, f1, f2, g1, g2 = a1[c], a2[c], b1[c], b2[c], d1[c], d2[c]
            o0[c] = (v + u00 * a0[c] + u01 * e1 + u02 * e2 + u10 * b0[c] + u11 * f1 + u12 * f2
                     + u20 * d0[c] + u21 * g1 + u22 * g2)
            o1[c] = (v + u00 * e1 + u01 * e2 + u02 * a3[c] + u10 * f1 + u11 * f2 + u12 * b3[c]
                     + u20 * g1 + u21 * g2 + u22 * d3[c])
    for j in range(paired, WO):
        at = j * s * C
        x00, x01, x02 = row0[at:], row0[at + C:], row0[at + 2 * C:]
        x10, x11, x12 = row1[at:], row1[at + C:], row1[at + 2 * C:]
        x20, x21, x22 = row2[at:], row2[at + C:], row2[at + 2 * C:]
        o = out[j]
        for c in range(C):
            o[c] = (bias[c] + w00[c] * x00[c] + w01[c] * x01[c] + w02[c] * x02[c]
                    + w10[c] * x10[c] + w11[c] * x11[c] + w12[c] * x12[c]
                    + w20[c] * x20[c] + w21[c] * x21[c] + w22[c] * x22[c])


def _pixel_row_taps(padded, taps, KW, a, r, s, out):
    """out[j] += the taps of kernel row a at row r + a of padded, column j*s, for each pixel j.

    padded (HP, WP*C);  taps (KH*KW, C);  out (WO, C).
    """
    WO, C = out.shape
    row = padded[r + a]
    for b in range(KW):
        w0 = taps[a * KW + b]
        for j in range(WO):
            x0, o = row[(j * s + b) * C:], out[j]
            for c in range(C):
                o[c] += w0[c] * x0[c]


pad_pixels = numba.njit(**_serial)(_pad_pixels)
pixel_row_3x3 = numba.njit(**_serial)(_pixel_row_3x3)
pixel_row_taps = numba.njit(**_serial)(_pixel_row_taps)


def _depthwise_pixels(x, w, b, stride, pad, act, y, first, last):
    """y[t, i, j] = act(sum_ab w[a, b] * x[t, i*s + a - pad, j*s + b - pad] + b) on pixels.

    x (T, H, W, C);  w (KH, KW, C);  b (C,);  y (T, HO, WO, C): its output
    rows first ... last - 1 overwritten (all of them: 0, HO), so that
    threads can share the rows of one image.
    """
    T, H, W, C = x.shape
    KH, KW = w.shape[0], w.shape[1]
    WO = y.shape[2]
    padded = np.zeros((H + 2 * pad, (W + 2 * pad) * C), x.dtype)
    taps = w.reshape(KH * KW, C)
    for t in range(T):
        pad_pixels(x, t, pad, padded)
        for i in range(first, last):
            out = y[t, i]
            if KH == 3 and KW == 3:
                pixel_row_3x3(padded, taps, b, i * stride, stride, out)
            else:
                for j in range(WO):
                    out[j] = b
                for a in range(KH):
                    pixel_row_taps(padded, taps, KW, a, i * stride, stride, out)
            activate(out.reshape(WO * C), act)


depthwise_pixels = numba.njit(**_serial)(_depthwise_pixels)
