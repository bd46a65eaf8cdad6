"""The full convolution of the eval-mode fast path, on planes: MobileNet's first layer.

Written as :mod:`tinyprune.fused_kernels` writes its loops (read its
docstring first): every function plain Python with its shapes in the
docstring, compiled on the line after it, and both tested to give the same
numbers.

MobileNet's first layer reads the 3 colour channels of a 96x96 image and
writes 8 channels of 48x48 (3x3 kernel, stride 2, padding 1): 27 taps for
each of 8 outputs, on images far larger than any later layer's.  The
depthwise kernel on planes (:mod:`tinyprune.fused_depthwise`) deals the
padded rows out to phases and computes every column, wasting half of them
at stride 2: there every input channel serves one output, so splitting the
columns too would cost a copy as large as the work it saves.  Here every
input channel serves 8 outputs, so it pays to copy the input once into a
layout where no work is wasted:

* Rows AND columns are dealt out to s x s *phases*: pixel (r, q) of the
  zero-padded image goes to phase (r % s, q % s), at (r // s, q // s).  Tap
  (a, b) of output pixel (i, j) reads padded pixel (i*s + a, j*s + b), which
  is pixel (i + a // s, j + b // s) of phase (a % s, b % s): a plain shift
  within one phase.
* Each phase is RQ rows of WQ numbers, read as one long row.  Output pixel
  (i, j) is *grid* position g = i*WQ + j, and tap (a, b) of channel c reads
  position g + (its offset) of the phases read as one long row
  (``tap_offsets``).  A grid row has WQ >= WO positions; the last WQ - WO
  are computed for nothing (one column in 49 for MobileNet) and dropped
  when the rows are copied out.
* So the convolution is a matrix product with a twist: y (O, grid) = w
  (O, C*KH*KW) @ X (C*KH*KW, grid), where row k of X is not stored but is
  the phases from offset ``taps[k]`` on.  As in the 1x1 convolutions'
  product, 8 outputs meet 4 taps at a time: every number read from the
  phases is used by 8 outputs, every output number is loaded and stored
  once per 4 taps, and the 32 weights stay (mostly) in registers.  A
  last block of at most 4 outputs (a first layer pruned to half, or one
  thread's half of 8 at batch 1) takes 8 taps at a time instead, so that
  the sums are still loaded and stored once per 32 multiplies; one of 5
  to 7 goes 8 at a time.  Zero weights pad both.

One image of the tile at a time, so that its phases (3 x 4 x 49 x 49
numbers for MobileNet) and its 8 grid rows stay in the level-2 cache.
"""

import numba
import numpy as np

from .fused_kernels import _serial, activate

__all__ = ["conv_planes"]


def _phase_shape(H, W, s, pad):
    """(RQ, WQ): rows and columns of a phase, enough for every padded pixel (r < H + 2*pad)."""
    return (H + 2 * pad + s - 1) // s, (W + 2 * pad + s - 1) // s


def _tap_offsets(C, KH, KW, s, RQ, WQ):
    """(K,) int64: where tap (c, a, b) starts in phases (C, s, s, RQ, WQ) read as one row.

    Tap (a, b) of channel c reads phase (a % s, b % s) of channel c, from
    row a // s and column b // s on; taps are numbered as w (O, C, KH, KW)
    numbers them, so that row o of w.reshape(O, -1) holds their weights.
    K is C*KH*KW rounded up to a multiple of 4: the extra taps (with zero
    weights) start after the phases, where the caller keeps zeros, so
    that every tap goes in a group of 4 and 0 * 0 adds nothing.
    """
    taps = np.full((C * KH * KW + 3) // 4 * 4, C * s * s * RQ * WQ, np.int64)
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                phase = (c * s + a % s) * s + b % s
                taps[(c * KH + a) * KW + b] = (phase * RQ + a // s) * WQ + b // s
    return taps


def _split_phases(x, t, pad, phases, images_first):
    """phases[c, r % s, q % s, r // s, q // s] = image t of x at padded pixel (r, q), for every channel.

    x (C, T, H, W) planes, or (T, C, H, W) with ``images_first`` (the
    caller's own batch, read without a copy into planes first);  phases
    (C, s, s, RQ, WQ), whose padding (the rows and columns outside the
    image) the caller has zeroed: only the image's pixels are written.
    Image column k is padded column k + pad: phase (k + pad) % s, column
    (k + pad) // s.  At stride 2 one pass over a row deals its even and
    odd columns out at once.

    The ``max(..., 0)`` tell the compiler that a column offset is not
    negative: Numba's check for a negative index (see fused_kernels) then
    leaves the inner loop, which runs three times faster.
    """
    C, H, W = phases.shape[0], x.shape[2], x.shape[3]
    s = phases.shape[1]
    for c in range(C):
        image = x[t, c] if images_first else x[c, t]
        for r in range(H):
            u, row = (r + pad) % s, (r + pad) // s
            if s == 2:
                v0, v1 = pad % 2, (pad + 1) % 2                  # phases of columns 2q and 2q + 1
                q0, q1 = max(pad // 2, 0), max((pad + 1) // 2, 0)
                for q in range(W // 2):
                    phases[c, u, v0, row, q + q0] = image[r, 2 * q]
                    phases[c, u, v1, row, q + q1] = image[r, 2 * q + 1]
                if W % 2:
                    phases[c, u, v0, row, W // 2 + q0] = image[r, W - 1]
                continue
            for d in range(s):                                   # columns q*s + d
                v, first = (d + pad) % s, max((d + pad) // s, 0)
                for q in range((W - d + s - 1) // s):
                    phases[c, u, v, row, q + first] = image[r, q * s + d]


def _tap_weights(w):
    """(O8, K): w (O, C, KH, KW) one row per output, zero rows and columns around it.

    O8 is O rounded up to 8 and K is C*KH*KW rounded up to 4 (the extra
    taps of tap_offsets).  The zero rows let a last block of 5 to 7
    outputs go 8 at a time, and one of 1 to 3, 4 at a time; their sums
    are never copied out.
    """
    O, C, KH, KW = w.shape
    weights = np.zeros(((O + 7) // 8 * 8, (C * KH * KW + 3) // 4 * 4), w.dtype)
    for o in range(O):
        for c in range(C):
            for a in range(KH):
                for b in range(KW):
                    weights[o, (c * KH + a) * KW + b] = w[o, c, a, b]
    return weights


phase_shape = numba.njit(**_serial)(_phase_shape)
tap_weights = numba.njit(**_serial)(_tap_weights)
tap_offsets = numba.njit(**_serial)(_tap_offsets)
split_phases = numba.njit(**_serial)(_split_phases)


def _start(acc, b, o):
    """acc[r] = b[o + r], the bias of output o + r, or 0 for a row with no output (a padded block)."""
    for r in range(acc.shape[0]):
        row, value = acc[r], b[o + r] if o + r < b.size else 0.0
        for m in range(row.size):
            row[m] = value


def _eight_outputs(w, o, taps, plane, n, acc):
    """acc[r, :n] += sum over taps k of w[o + r, k] * plane[taps[k]:][:n], for r < 8.

    w (O, K) the weights of the K taps, K a multiple of 4;  taps (K,) from
    tap_offsets;  plane the phases as one row;  acc (8, >= n).  4 taps at
    a time, their 32 weights in registers: as in products._eight_rows,
    each number loaded is used 8 or 4 times.  Each sum starts from the
    accumulator (``a + w*v + ...``, not ``a += (w*v + ...)``): every
    product is then one fused multiply-add into it.
    """
    a0, a1, a2, a3 = acc[0, :n], acc[1, :n], acc[2, :n], acc[3, :n]
    a4, a5, a6, a7 = acc[4, :n], acc[5, :n], acc[6, :n], acc[7, :n]
    for k in range(0, taps.size, 4):
        x0, x1, x2, x3 = plane[taps[k]:], plane[taps[k + 1]:], plane[taps[k + 2]:], plane[taps[k + 3]:]
        w00, w01, w02, w03 = w[o, k], w[o, k + 1], w[o, k + 2], w[o, k + 3]
        w10, w11, w12, w13 = w[o + 1, k], w[o + 1, k + 1], w[o + 1, k + 2], w[o + 1, k + 3]
        w20, w21, w22, w23 = w[o + 2, k], w[o + 2, k + 1], w[o + 2, k + 2], w[o + 2, k + 3]
        w30, w31, w32, w33 = w[o + 3, k], w[o + 3, k + 1], w[o + 3, k + 2], w[o + 3, k + 3]
        w40, w41, w42, w43 = w[o + 4, k], w[o + 4, k + 1], w[o + 4, k + 2], w[o + 4, k + 3]
        w50, w51, w52, w53 = w[o + 5, k], w[o + 5, k + 1], w[o + 5, k + 2], w[o + 5, k + 3]
        w60, w61, w62, w63 = w[o + 6, k], w[o + 6, k + 1], w[o + 6, k + 2], w[o + 6, k + 3]
        w70, w71, w72, w73 = w[o + 7, k], w[o + 7, k + 1], w[o + 7, k + 2], w[o + 7, k + 3]
        for m in range(n):
            v0, v1, v2, v3 = x0[m], x1[m], x2[m], x3[m]
            a0[m] = a0[m] + w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            a1[m] = a1[m] + w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
            a2[m] = a2[m] + w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
            a3[m] = a3[m] + w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
            a4[m] = a4[m] + w40 * v0 + w41 * v1 + w42 * v2 + w43 * v3
            a5[m] = a5[m] + w50 * v0 + w51 * v1 + w52 * v2 + w53 * v3
            a6[m] = a6[m] + w60 * v0 + w61 * v1 + w62 * v2 + w63 * v3
            a7[m] = a7[m] + w70 * v0 + w71 * v1 + w72 * v2 + w73 * v3


def _four_outputs(w, o, taps, plane, n, acc):
    """acc[r, :n] += sum over taps k of w[o + r, k] * plane[taps[k]:][:n], for r < 4.

    As _eight_outputs, for a last block of at most 4 outputs (zero rows
    pad it): 8 taps at a time (and a last 4 if K is not a multiple of 8),
    so that each sum is loaded and stored once per 8 multiplies; with 4
    taps at a time, those loads and stores, not the multiplies, took the
    time.  Its 32 weights do not all fit in registers beside the sums and
    the 8 numbers read, so some are read from memory at every step; still,
    4 outputs this way took 0.7 of the time of 8 with 4 zero rows (the
    resized MobileNet's first layer: 7.6 against 10.5 us per 96x96
    image), and 3 outputs, for which a kernel of their own fitted the
    registers, only 1.07 times as long as with that kernel.  The weights
    are read one by one: unpacking a slice (``w00, ... = w[o, k:k + 8]``)
    cost Numba 0.3 us per call.
    """
    a0, a1, a2, a3 = acc[0, :n], acc[1, :n], acc[2, :n], acc[3, :n]
    K8 = taps.size // 8 * 8
    for k in range(0, K8, 8):
        x0, x1, x2, x3 = plane[taps[k]:], plane[taps[k + 1]:], plane[taps[k + 2]:], plane[taps[k + 3]:]
        x4, x5, x6, x7 = plane[taps[k + 4]:], plane[taps[k + 5]:], plane[taps[k + 6]:], plane[taps[k + 7]:]
        w00, w01, w02, w03 = w[o, k], w[o, k + 1], w[o, k + 2], w[o, k + 3]
        w04, w05, w06, w07 = w[o, k + 4], w[o, k + 5], w[o, k + 6], w[o, k + 7]
        w10, w11, w12, w13 = w[o + 1, k], w[o + 1, k + 1], w[o + 1, k + 2], w[o + 1, k + 3]
        w14, w15, w16, w17 = w[o + 1, k + 4], w[o + 1, k + 5], w[o + 1, k + 6], w[o + 1, k + 7]
        w20, w21, w22, w23 = w[o + 2, k], w[o + 2, k + 1], w[o + 2, k + 2], w[o + 2, k + 3]
        w24, w25, w26, w27 = w[o + 2, k + 4], w[o + 2, k + 5], w[o + 2, k + 6], w[o + 2, k + 7]
        w30, w31, w32, w33 = w[o + 3, k], w[o + 3, k + 1], w[o + 3, k + 2], w[o + 3, k + 3]
        w34, w35, w36, w37 = w[o + 3, k + 4], w[o + 3, k + 5], w[o + 3, k + 6], w[o + 3, k + 7]
        for m in range(n):
            v0, v1, v2, v3, v4, v5, v6, v7 = x0[m], x1[m], x2[m], x3[m], x4[m], x5[m], x6[m], x7[m]
            a0[m] = (a0[m] + w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
                     + w04 * v4 + w05 * v5 + w06 * v6 + w07 * v7)
            a1[m] = (a1[m] + w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
                     + w14 * v4 + w15 * v5 + w16 * v6 + w17 * v7)
            a2[m] = (a2[m] + w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
                     + w24 * v4 + w25 * v5 + w26 * v6 + w27 * v7)
            a3[m] = (a3[m] + w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
                     + w34 * v4 + w35 * v5 + w36 * v6 + w37 * v7)
    for k in range(K8, taps.size, 4):                   # the last 4 taps, if any
        x0, x1, x2, x3 = plane[taps[k]:], plane[taps[k + 1]:], plane[taps[k + 2]:], plane[taps[k + 3]:]
        w00, w01, w02, w03 = w[o, k], w[o, k + 1], w[o, k + 2], w[o, k + 3]
        w10, w11, w12, w13 = w[o + 1, k], w[o + 1, k + 1], w[o + 1, k + 2], w[o + 1, k + 3]
        w20, w21, w22, w23 = w[o + 2, k], w[o + 2, k + 1], w[o + 2, k + 2], w[o + 2, k + 3]
        w30, w31, w32, w33 = w[o + 3, k], w[o + 3, k + 1], w[o + 3, k + 2], w[o + 3, k + 3]
        for m in range(n):
            v0, v1, v2, v3 = x0[m], x1[m], x2[m], x3[m]
            a0[m] = a0[m] + w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            a1[m] = a1[m] + w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
            a2[m] = a2[m] + w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
            a3[m] = a3[m] + w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3


def _finish(acc, n, WQ, act, y, o, t):
    """y[o, t, i, j] = act(acc[i*WQ + j]): the grid's real columns, activated (acc too).

    acc (>= HO*WQ,) one output's grid, started with its bias;  y (O, T, HO, WO).
    """
    HO, WO = y.shape[2], y.shape[3]
    activate(acc[:n], act)
    grid = acc[:HO * WQ].reshape(HO, WQ)
    out = y[o, t]
    for i in range(HO):
        for j in range(WO):
            out[i, j] = grid[i, j]


start = numba.njit(**_serial)(_start)
eight_outputs = numba.njit(**_serial)(_eight_outputs)
four_outputs = numba.njit(**_serial)(_four_outputs)
finish = numba.njit(**_serial)(_finish)


def _conv_planes(x, w, b, stride, pad, act, y, images_first):
    """y[o, t] = act(sum_c conv(x[c, t], w[o, c]) + b[o]) on planes.

    x (C, T, H, W), or (T, C, H, W) with ``images_first``;  w (O, C, KH, KW);
    b (O,);  y (O, T, HO, WO) overwritten.
    Image by image: its phases, then 8 outputs at a time (a last block of
    at most 4 on its own), each started with its bias, summed
    over the whole grid, activated, and its real columns copied out.
    """
    C, T, H, W = w.shape[1], y.shape[1], x.shape[2], x.shape[3]
    O, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    HO, WO = y.shape[2], y.shape[3]
    RQ, WQ = phase_shape(H, W, stride, pad)
    n = (HO - 1) * WQ + WO                      # grid positions up to the last output
    size = C * stride * stride * RQ * WQ
    plane = np.zeros(size + n, x.dtype)         # the padding, and n zeros after, stay zero
    phases = plane[:size].reshape(C, stride, stride, RQ, WQ)
    taps = tap_offsets(C, KH, KW, stride, RQ, WQ)
    weights = tap_weights(w)
    acc = np.empty((8, HO * WQ), x.dtype)
    for t in range(T):
        split_phases(x, t, pad, phases, images_first)
        for o in range(0, O, 8):
            rows = 8 if O - o > 4 else 4                # the block's kernel (zero rows pad it)
            start(acc[:rows], b, o)
            if rows == 8:
                eight_outputs(weights, o, taps, plane, n, acc)
            else:
                four_outputs(weights, o, taps, plane, n, acc)
            for r in range(min(8, O - o)):
                finish(acc[r], n, WQ, act, y, o + r, t)


conv_planes = numba.njit(**_serial)(_conv_planes)
