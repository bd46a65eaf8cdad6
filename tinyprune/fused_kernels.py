"""The loops of the eval-mode fast path (see :mod:`tinyprune.fused`), each written twice.

As in :mod:`tinyprune.kernels`: every kernel is a plain Python function
with its shapes in the docstring, compiled on the line after it by Numba
(``cache=True``); the plain function is there to be read and stepped
through, and the tests check that both give the same numbers.

The layout.  The fast path carries a *tile* of T images through all the
layers before it starts on the next tile, so a tile's activations stay in
the processor's cache instead of making a round trip to memory between
layers.  Inside a tile, an activation is stored channel-major:
``(C, T, H, W)``, channel c of every image of the tile in one contiguous
block.  A 1x1 convolution is then one matrix product over the whole tile,
``(O, C) @ (C, T*H*W)``, with long rows for the inner loop to run along even
when the images are small (6x6 pixels at MobileNet's end).

Every kernel computes a *fused step*: a convolution with its bias (the
folded BatchNorm) and then the activation, applied to each row while it is
still in the level-1 cache, instead of three passes over the whole tile.
Activations are numbered (``IDENTITY`` ... ``SLOPEHTANH``) so a step can be
described by integers.

Channel counts of the tile layout are multiples of 4 (``fused.py`` pads the
weights with zeros, so the extra channels hold zeros): the matrix product
then works on 4x4 blocks of the weight with no leftover rows or columns.
"""

import numba
import numpy as np
from numba import prange

__all__ = ["IDENTITY", "RELU", "HARDTANH", "SLOPEHTANH", "CONV", "DEPTHWISE", "POINTWISE", "POOL",
           "FIELDS", "COLUMNS"]

# Activation numbers, as a step stores them.
IDENTITY, RELU, HARDTANH, SLOPEHTANH = 0, 1, 2, 3
# Step kinds, and the columns of a step's row in the plan's table.
CONV, DEPTHWISE, POINTWISE, POOL = 0, 1, 2, 3
KIND, C_IN, C_OUT, KH, KW, STRIDE, PAD, ACT, W_AT, B_AT = range(10)
FIELDS = 10
# Columns of a matrix product done at a time: 4 input rows of 512 float32
# is 8 KB, so the rows being combined stay in the level-1 cache.
COLUMNS = 512

# Kernels run on one thread each (the program below splits the tiles over
# threads); "contract" lets the compiler fuse a*b + c into one instruction.
_serial = dict(cache=True, nogil=True, fastmath={"contract"})
_parallel = dict(cache=True, nogil=True, parallel=True)


# ---------------------------------------------------------------------------
# Activations, applied in place to a row that was just written.
# ---------------------------------------------------------------------------

def _activate(y, act):
    """y = act(y) in place; y a 1-D array.  The formulas are those of kernels.py."""
    if act == RELU:
        for k in range(y.size):
            y[k] = max(y[k], 0.0)
    elif act == HARDTANH:
        for k in range(y.size):
            y[k] = min(max(y[k], -1.0), 1.0)
    elif act == SLOPEHTANH:
        for k in range(y.size):
            v = y[k]
            h = min(max(v, -1.0), 1.0)
            y[k] = h - (v - h) * 0.25


activate = numba.njit(**_serial)(_activate)


# ---------------------------------------------------------------------------
# Moving images into and out of the tile layout.
# ---------------------------------------------------------------------------

def _gather(x, n0, tile):
    """tile[c, t] = x[n0 + t, c]; the rows c >= C (channel padding) are zeroed.

    x (N, C, H, W) the caller's images;  tile (CP, T, H, W), CP >= C.
    """
    C = x.shape[1]
    CP, T = tile.shape[0], tile.shape[1]
    for c in range(CP):
        for t in range(T):
            if c < C:
                tile[c, t] = x[n0 + t, c]
            else:
                tile[c, t] = 0.0


def _scatter(tile, n0, out):
    """out[n0 + t, o] = tile[o, t] for the O channels of out (padding rows dropped).

    tile (OP, T, HO, WO);  out (N, O, HO, WO), O <= OP.
    """
    O = out.shape[1]
    T = tile.shape[1]
    for o in range(O):
        for t in range(T):
            out[n0 + t, o] = tile[o, t]


gather = numba.njit(**_serial)(_gather)
scatter = numba.njit(**_serial)(_scatter)


# ---------------------------------------------------------------------------
# Convolutions that are not 1x1: depthwise ones, and full ones with few
# input channels (MobileNet's first), computed straight from the image.
#
# The ideas are those of kernels._depthwise_forward and kernels._conv_direct
# (read their comments first): copy the input into zero-bordered scratch
# planes, split by stride phase, and make every filter tap ONE long
# multiply-add along a "grid" of the scratch plane's row length, reading a
# unit-step slice of one phase plane.  Here the tile's T images are stacked
# into one tall plane, each with its own border rows, so that a tap's loop
# runs over all T images at once: on MobileNet's 6x6 planes a loop of 46
# steps per image becomes one of ~400 per tile, long enough for vector
# instructions to pay.
#
# Sizes, for stride s: each image takes HP = H + 2*pad rows of the tall
# plane, rounded up to a multiple of s, so a phase plane holds R = HP/s rows
# per image and WS = ceil((W + 2*pad)/s) columns.  Output pixel (t, i, j) is
# grid position (t*R + i)*WS + j, and tap (a, b) = (da*s + u, db*s + v) of
# grid position g reads phase plane (u, v) at g + da*WS + db.
# ---------------------------------------------------------------------------

def _split_phases(x, c, pad, s, phases):
    """phases[u, v, t*R + r, q] = the padded image t of channel c at row r*s + u, column q*s + v.

    x (C, T, H, W);  phases (s, s, T*R, WS), zero wherever the padding is
    (only the image pixels are written: the caller zeroes it once).
    """
    T, H, W = x.shape[1], x.shape[2], x.shape[3]
    R = phases.shape[2] // T
    for t in range(T):
        for r in range(H):
            u = (r + pad) % s
            row = t * R + (r + pad) // s
            for v in range(s):
                first = (v - pad) % s            # the first column q with (q + pad) % s == v
                src = x[c, t, r, first::s]
                dst = phases[u, v, row, (first + pad) // s:]
                for k in range(src.size):
                    dst[k] = src[k]


def _add_taps(phases, w, s, WS, grid):
    """grid[g] += sum over taps (a, b) of w[a, b] * (input pixel under tap (a, b) of position g).

    phases (s, s, rows, WS) from _split_phases;  w (KH, KW);  grid (G,).
    Taps next to each other in a phase plane row go three at a time (one
    pass over the grid instead of three), then one at a time.
    """
    KH, KW = w.shape
    G = grid.size
    for u in range(s):
        for v in range(s):
            plane = phases[u, v].reshape(phases.shape[2] * WS)
            for da in range((KH - u + s - 1) // s):
                taps = (KW - v + s - 1) // s     # taps of this row that fall in phase v
                db = 0
                while db + 3 <= taps:
                    w0, w1, w2 = w[da * s + u, db * s + v], w[da * s + u, (db + 1) * s + v], \
                        w[da * s + u, (db + 2) * s + v]
                    first = da * WS + db
                    t0, t1, t2 = plane[first:first + G], plane[first + 1:first + 1 + G], \
                        plane[first + 2:first + 2 + G]
                    for g in range(G):
                        grid[g] += w0 * t0[g] + w1 * t1[g] + w2 * t2[g]
                    db += 3
                while db < taps:
                    w0 = w[da * s + u, db * s + v]
                    t0 = plane[da * WS + db:da * WS + db + G]
                    for g in range(G):
                        grid[g] += w0 * t0[g]
                    db += 1


def _copy_out(grid, R, WS, y, o, act):
    """y[o, t, i, j] = act(grid[(t*R + i)*WS + j]): the grid's real pixels, activated."""
    T, HO, WO = y.shape[1], y.shape[2], y.shape[3]
    for t in range(T):
        for i in range(HO):
            at = (t * R + i) * WS
            for j in range(WO):
                y[o, t, i, j] = grid[at + j]
    activate(y[o].reshape(T * HO * WO), act)


split_phases = numba.njit(**_serial)(_split_phases)
add_taps = numba.njit(**_serial)(_add_taps)
copy_out = numba.njit(**_serial)(_copy_out)


def _phase_sizes(T, H, W, HO, WO, s, pad):
    """(R, WS, G): phase rows per image, phase columns, grid positions up to the last output."""
    R = (H + 2 * pad + s - 1) // s
    WS = (W + 2 * pad + s - 1) // s
    return R, WS, ((T - 1) * R + HO - 1) * WS + WO


phase_sizes = numba.njit(**_serial)(_phase_sizes)


def _depthwise_act(x, w, b, stride, pad, act, y):
    """y[c, t] = act(depthwise(x[c, t], w[c]) + b[c]).

    x (C, T, H, W);  w (C, KH, KW);  b (C,);  y (C, T, HO, WO) overwritten.
    """
    C, T, H, W = x.shape
    R, WS, G = phase_sizes(T, H, W, y.shape[2], y.shape[3], stride, pad)
    phases = np.zeros((stride, stride, T * R, WS), x.dtype)
    grid = np.empty(G, x.dtype)
    for c in range(C):
        split_phases(x, c, pad, stride, phases)
        grid[:] = b[c]
        add_taps(phases, w[c], stride, WS, grid)
        copy_out(grid, R, WS, y, c, act)


depthwise_act = numba.njit(**_serial)(_depthwise_act)


def _conv_act(x, w, b, stride, pad, act, y):
    """y[o, t] = act(sum_c conv(x[c, t], w[o, c]) + b[o]).

    x (C, T, H, W);  w (O, C, KH, KW);  b (O,);  y (O, T, HO, WO) overwritten.
    All C channels are split into phase planes first, then each output
    channel sums its taps over them.
    """
    C, T, H, W = x.shape
    O = w.shape[0]
    R, WS, G = phase_sizes(T, H, W, y.shape[2], y.shape[3], stride, pad)
    phases = np.zeros((C, stride, stride, T * R, WS), x.dtype)
    for c in range(C):
        split_phases(x, c, pad, stride, phases[c])
    grid = np.empty(G, x.dtype)
    for o in range(O):
        grid[:] = b[o]
        for c in range(C):
            add_taps(phases[c], w[o, c], stride, WS, grid)
        copy_out(grid, R, WS, y, o, act)


conv_act = numba.njit(**_serial)(_conv_act)


# ---------------------------------------------------------------------------
# 1x1 convolution (and Dense) + bias + activation: a blocked matrix product.
#
#   y (O, M) = act(W (O, K) @ x (K, M) + b),   M = T*H*W columns.
#
# The weight comes cut into 4x4 blocks, w4[i, j] = W[4i:4i+4, 4j:4j+4].
# Block (i, j) adds its 16 products to 4 output rows from 4 input rows, so
# each value loaded from x serves 4 outputs and each output row is loaded
# and stored once per 4 inputs: that keeps the processor's multiply-add
# units busy instead of waiting for memory.  The innermost loop runs along
# the columns, a unit-step loop the compiler turns into vector instructions.
# Columns go COLUMNS at a time, so the rows being combined stay in cache.
# ---------------------------------------------------------------------------

def _pointwise_act(x, w4, b, act, y):
    """y = act(W @ x + b), W given as 4x4 blocks.

    x (K, M);  w4 (O/4, K/4, 4, 4) with w4[i, j, r, q] = W[4i + r, 4j + q];
    b (O,);  y (O, M) overwritten.  O and K are multiples of 4.
    """
    M = x.shape[1]
    for m0 in range(0, M, COLUMNS):
        m1 = min(m0 + COLUMNS, M)
        for i in range(w4.shape[0]):
            o = 4 * i
            y0, y1, y2, y3 = y[o, m0:m1], y[o + 1, m0:m1], y[o + 2, m0:m1], y[o + 3, m0:m1]
            y0[:] = b[o]
            y1[:] = b[o + 1]
            y2[:] = b[o + 2]
            y3[:] = b[o + 3]
            for j in range(w4.shape[1]):
                k = 4 * j
                x0, x1, x2, x3 = x[k, m0:m1], x[k + 1, m0:m1], x[k + 2, m0:m1], x[k + 3, m0:m1]
                blk = w4[i, j]
                for m in range(m1 - m0):
                    v0, v1, v2, v3 = x0[m], x1[m], x2[m], x3[m]
                    y0[m] += blk[0, 0] * v0 + blk[0, 1] * v1 + blk[0, 2] * v2 + blk[0, 3] * v3
                    y1[m] += blk[1, 0] * v0 + blk[1, 1] * v1 + blk[1, 2] * v2 + blk[1, 3] * v3
                    y2[m] += blk[2, 0] * v0 + blk[2, 1] * v1 + blk[2, 2] * v2 + blk[2, 3] * v3
                    y3[m] += blk[3, 0] * v0 + blk[3, 1] * v1 + blk[3, 2] * v2 + blk[3, 3] * v3
            activate(y0, act)
            activate(y1, act)
            activate(y2, act)
            activate(y3, act)


pointwise_act = numba.njit(**_serial)(_pointwise_act)


# ---------------------------------------------------------------------------
# Global mean pooling on a tile.
# ---------------------------------------------------------------------------

def _mean_pool(x, y):
    """y[c, t] = mean of x[c, t] over its L pixels.  x (C, T, L);  y (C, T)."""
    C, T, L = x.shape
    for c in range(C):
        for t in range(T):
            s = np.float64(0.0)
            for k in range(L):
                s += x[c, t, k]
            y[c, t] = s / L


mean_pool = numba.njit(**_serial)(_mean_pool)


# ---------------------------------------------------------------------------
# The program: every step of the plan, tile by tile.
# ---------------------------------------------------------------------------

def _output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


output_size = numba.njit(**_serial)(_output_size)


def _step_shapes(steps, C, H, W):
    """(S + 1, 3) array: the (channels, H, W) of one image before each step and after the last."""
    S = steps.shape[0]
    shapes = np.empty((S + 1, 3), np.int64)
    shapes[0, 0], shapes[0, 1], shapes[0, 2] = C, H, W
    for s in range(S):
        kind = steps[s, KIND]
        if kind == POOL:
            H, W = 1, 1
        elif kind != POINTWISE:
            H = output_size(H, steps[s, KH], steps[s, STRIDE], steps[s, PAD])
            W = output_size(W, steps[s, KW], steps[s, STRIDE], steps[s, PAD])
        shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2] = steps[s, C_OUT], H, W
    return shapes


step_shapes = numba.njit(**_serial)(_step_shapes)


def _run_step(step, params, x, y):
    """Run one step of the plan: x (C, T, H, W) -> y (O, T, HO, WO), both in the tile layout."""
    kind, act = step[KIND], step[ACT]
    C, T, H, W = x.shape
    O = y.shape[0]
    b = params[step[B_AT]:step[B_AT] + O]
    if kind == POINTWISE:
        w4 = params[step[W_AT]:step[W_AT] + O * C].reshape(O // 4, C // 4, 4, 4)
        pointwise_act(x.reshape(C, T * H * W), w4, b, act, y.reshape(O, -1))
    elif kind == DEPTHWISE:
        w = params[step[W_AT]:step[W_AT] + C * step[KH] * step[KW]].reshape(C, step[KH], step[KW])
        depthwise_act(x, w, b, step[STRIDE], step[PAD], act, y)
    elif kind == CONV:
        size = O * C * step[KH] * step[KW]
        w = params[step[W_AT]:step[W_AT] + size].reshape(O, C, step[KH], step[KW])
        conv_act(x, w, b, step[STRIDE], step[PAD], act, y)
    else:
        mean_pool(x.reshape(C, T, H * W), y.reshape(O, T))


run_step = numba.njit(**_serial)(_run_step)


def _run_plan(x, steps, params, tile, workers, out):
    """Run every step on every tile of ``tile`` images, ``workers`` threads sharing the tiles.

    x (N, C, H, W) the input (C <= the first step's C_IN: gather pads);
    steps (S, FIELDS) int64, params the flat weights they point into;
    out (N, O, HO, WO) overwritten with the last step's first O channels.
    Each worker has two scratch tiles, sized for the largest activation,
    and passes each step's output to the next by swapping them.
    """
    N = x.shape[0]
    shapes = step_shapes(steps, steps[0, C_IN], x.shape[2], x.shape[3])
    largest = 0
    for s in range(shapes.shape[0]):
        largest = max(largest, shapes[s, 0] * shapes[s, 1] * shapes[s, 2])
    n_tiles = (N + tile - 1) // tile
    workers = min(workers, n_tiles)
    for worker in prange(workers):
        a = np.empty(tile * largest, x.dtype)
        b = np.empty(tile * largest, x.dtype)
        for t in range(worker, n_tiles, workers):
            n0 = t * tile
            T = min(tile, N - n0)
            C, H, W = shapes[0, 0], shapes[0, 1], shapes[0, 2]
            gather(x, n0, a[:C * T * H * W].reshape(C, T, H, W))
            for s in range(steps.shape[0]):
                O, HO, WO = shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2]
                run_step(steps[s], params, a[:C * T * H * W].reshape(C, T, H, W),
                         b[:O * T * HO * WO].reshape(O, T, HO, WO))
                a, b = b, a
                C, H, W = O, HO, WO
            scatter(a[:C * T * H * W].reshape(C, T, H, W), n0, out)


run_plan = numba.njit(**_parallel)(_run_plan)
