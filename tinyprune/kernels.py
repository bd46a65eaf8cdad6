"""The hot loops, each written twice: once to read, once to run.

Every kernel below is first a plain Python function over NumPy arrays, with
the shapes it expects in its docstring.  The line after it compiles the very
same function with Numba (``cache=True``, so the machine code is kept on disk
and later interpreter start-ups skip the compilation).  The plain function is
the textbook: you can step through it in a debugger, and the tests run it on
small inputs to check that the compiled one agrees.  ``NUMBA_DISABLE_JIT=1``
makes every compiled name run its plain function, so a debugger steps into
the kernels the layers call.

Five plain functions are course exercises (their docstrings say which):
a student copy cuts their bodies and leaves the name uncompiled, ``im2col =
_im2col``, so the layers run the student's Python, slowly but correctly.

Conventions shared by all kernels:

* activations are NCHW, conv weights OIHW, as everywhere in tinyprune;
* kernels write into output arrays they are given (``out``, ``dx``, ...)
  instead of allocating, so the layers decide what is allocated and when;
* kernels never check their arguments (a compiled loop does not check its
  indices either: a wrong shape would read out of bounds).  The layers'
  ``forward`` and ``backward`` check every shape first (``forward_input``,
  ``backward_input`` in tinyprune/module.py), so a user mistake is reported in
  Python, naming the layer, before any kernel runs; call a kernel yourself
  only with the shapes its docstring gives;
* every array a kernel gets is C-contiguous, so rows are contiguous runs of
  memory and the innermost loops walk them with unit steps, which is what
  lets the compiler turn a loop into vector instructions (8 float32 at once);
* convolutions copy each image plane into a zero-padded scratch array
  first, so no loop ever tests whether a filter tap hangs over the border:
  the padding simply holds the zeros the tap would read.

Matrix products (the 1x1 "pointwise" convolutions, and full convs after
im2col) are not here: tinyprune/products.py runs them, blocked as BLAS
blocks them, on Numba's threads.  The exception is a full conv over very
few input channels in eval mode, where the columns cost more than the
product they feed (``conv_direct``).

Sums over many values (BatchNorm statistics, weight gradients) accumulate in
float64 whatever the array type, so float32 statistics over 70 000 values per
channel do not drift.  They start from ``np.float64(0.0)`` rather than
``0.0``: Numba would make either a float64, but plain NumPy adds a Python
float and a float32 in float32.  Those kernels are compiled with one
fast-math flag, ``reassoc``: it allows the compiler to reorder the
additions, keeping several partial sums in one vector register instead of
adding one number at a time.  The result differs from the plain function
only by float64 rounding.  No other fast-math flag is used (NaN and
infinity keep their meaning).

``prange`` is Numba's parallel ``range``; in plain Python it *is* ``range``.
Each kernel is one parallel loop, so one call costs one start and one join
of the thread team, however many images are in the batch.
"""

import math

import numba
import numpy as np
from numba import prange

from .fused_depthwise import depthwise_shifts
from .fused_kernels import IDENTITY

# Compilation options.  ``_parallel`` kernels split their outer prange loop
# over Numba's threads; ``_parallel_sums`` kernels also accumulate sums and
# may reorder them (see the module docstring).
_parallel = dict(cache=True, nogil=True, parallel=True)
_parallel_sums = dict(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})


# ---------------------------------------------------------------------------
# Depthwise convolution: one 2-D filter per channel, channels never mix.
#
#   y[n, c, i, j] = sum_{a, b} w[c, a, b] * xp[n, c, i*s + a, j*s + b]
#
# where xp is the input with `pad` zeros added on every side.
#
# How the loops are laid out, and why.  Each image plane is first copied
# into a small zero-filled scratch array: afterwards no loop needs to test
# whether a filter tap hangs over the border.  Then read the padded plane,
# (HP, WP), as one long row (`xp_flat`) and give the output the same row
# length: output pixel (i, j) sits at t = i*WP + j of a "grid".  Tap (a, b)
# of output t reads
#       xp[i*s + a, j*s + b] = xp_flat[s*t + a*WP + b],
# so each tap is ONE long multiply-add over the whole plane instead of one
# short one per row; long unit-step loops are what the compiler turns into
# vector instructions, and MobileNet's small planes (6x6, 3x3) would
# otherwise spend their time starting and ending loops.  Grid columns
# j >= WO compute junk (they wrap into the next row) and are never copied
# out; they cost (WP - WO)/WP of the work: 2 columns in 8 for a 6x6 plane
# at stride 1, about half the grid at stride 2.
#
# The innermost loop is written three times, identical but for the step s:
# as the literals 1 and 2 (MobileNet's strides), which the compiler can
# vectorise, and as a variable, for any other stride.
# ---------------------------------------------------------------------------

def _depthwise_forward(x, w, stride, pad, out):
    """Depthwise convolution.

    x   (N, C, H, W)      input
    w   (C, KH, KW)       one filter per channel
    out (N, C, HO, WO)    overwritten with the result

    MobileNet's common case, 3x3 at stride 1 and padding 1, goes to
    ``depthwise_3x3`` instead.
    """
    N, C, H, W = x.shape
    KH, KW = w.shape[1], w.shape[2]
    if KH == 3 and KW == 3 and stride == 1 and pad == 1:
        depthwise_3x3(x, w, out)
        return
    HO, WO = out.shape[2], out.shape[3]
    HP, WP = H + 2 * pad, W + 2 * pad
    T = (HO - 1) * WP + WO                       # grid positions up to the last output pixel
    # A prange iteration does `per` planes (n, c) in a row, at most 256 iterations
    # in all: the scratch arrays are made once per iteration, not once per plane.
    per = (N * C + 255) // 256
    for first in prange((N * C + per - 1) // per):
        xp = np.zeros((HP, WP), x.dtype)         # the border stays 0, the inside is refilled
        xp_flat = xp.reshape(HP * WP)            # the padded plane, row after row
        grid = np.empty(T, x.dtype)
        for nc in range(first * per, min(N * C, first * per + per)):
            n = nc // C
            c = nc % C
            for r in range(H):
                for q in range(W):
                    xp[r + pad, q + pad] = x[n, c, r, q]
            for t in range(T):
                grid[t] = 0.0
            for a in range(KH):
                for b in range(KW):
                    w_ab = w[c, a, b]
                    start = a * WP + b           # where tap (a, b) of output t = 0 reads
                    if stride == 1:
                        for t in range(T):
                            grid[t] += w_ab * xp_flat[start + t]
                    elif stride == 2:
                        for t in range(T):
                            grid[t] += w_ab * xp_flat[start + 2 * t]
                    else:
                        for t in range(T):
                            grid[t] += w_ab * xp_flat[start + stride * t]
            for i in range(HO):
                for j in range(WO):
                    out[n, c, i, j] = grid[i * WP + j]


# The backward pass stacks small planes: the padded planes of up to STACK // (HP*WP)
# images of one channel lie one after another in one long row, so a tap is one loop
# along all of them (a 6x6 plane alone gives 46 positions, mostly leftovers after the vectors).
STACK = 4096    # values in one pass's stacked planes: 16 KB of float32, in the level-1 cache


def _depthwise_3x3(x, w, out):
    """Depthwise convolution with a 3x3 filter, stride 1, padding 1: x, w, out as in _depthwise_forward.

    The eval-mode fast path's kernel (``fused_depthwise.depthwise_shifts``,
    whose comment explains it) reads each tap as a shift along the planes
    laid one after another, with no padded copy.  It takes planes (C', T,
    H, W) with one filter per C'; here the channels lo ... hi - 1 of one
    image are C' = hi - lo planes of T = 1 image, with the filters
    w[lo:hi] as they are.  Blocks of about 16K numbers go to the threads.
    """
    N, C, H, W = x.shape
    per = max(1, min(C, 16384 // (H * W)))       # channels of one image in a block
    blocks = (C + per - 1) // per
    zeros = np.zeros(C, x.dtype)
    for job in prange(N * blocks):
        n, lo = job // blocks, job % blocks * per
        hi = min(C, lo + per)
        depthwise_shifts(x[n, lo:hi].reshape(hi - lo, 1, H, W), w[lo:hi], zeros[lo:hi], IDENTITY,
                         out[n, lo:hi].reshape(hi - lo, 1, H, W))


def _depthwise_backward(x, w, dy, stride, pad, dx, dw):
    """Exercise layers.5 (the kernel): the gradients of the depthwise convolution.

    x  (N, C, H, W), w (C, KH, KW), dy (N, C, HO, WO)
    dx (N, C, H, W)    overwritten with dL/dx
    dw (C, KH, KW)     overwritten with dL/dw

    The sums are in ``DepthwiseConv2d.backward``'s docstring (conv.py).  A
    prange iteration owns a channel; set up for it, for up to M images at a
    time stacked as the comment above says (image k's padded plane at k*B,
    B = HP*WP): ``xp``, the zero padded planes (fill their insides),
    ``dxp`` (not zeroed) for dL/dxp, ``grid`` (zeros) for dy spread out on
    the planes, dy[k, i, j] at k*B + i*s*WP + j*s, and ``dw_c`` for float64
    sums.  (Optional: plain loops over n, i, j, a, b are right too.)  The
    padding's gradient is dropped.
    """
    N, C, H, W = x.shape
    KH, KW = w.shape[1], w.shape[2]
    HO, WO = dy.shape[2], dy.shape[3]
    HP, WP = H + 2 * pad, W + 2 * pad
    B = HP * WP
    T = (HO - 1) * stride * WP + (WO - 1) * stride + 1   # one image's grid, up to its last output pixel
    M = max(1, min(N, STACK // B))               # images stacked in one pass
    for c in prange(C):                          # a thread owns a channel, so dw[c] has one writer
        xp = np.zeros(M * B, x.dtype)            # the borders stay 0, the insides are refilled
        dxp = np.empty(M * B, x.dtype)
        grid = np.zeros(M * B, x.dtype)          # what is never written stays 0
        dw_c = np.zeros((KH, KW))                # float64 sums over N*HO*WO terms
        ### BEGIN SOLUTION
        # Tap w[c, a, b] met xp[i*s + a, j*s + b] in output (i, j): send dy * w back to that pixel
        # and dy * xp to the tap.  With dy spread out on the planes' grid (zeros between, and in
        # the junk columns), tap (a, b) reads and writes the planes at start + u for EVERY grid
        # position u: one unit-step loop the compiler vectorises, whatever the stride.  At
        # stride 2 three grid entries in four are zeros, but a vectorised loop over them beats
        # a strided loop over the others.
        for n0 in range(0, N, M):
            m = min(M, N - n0)
            for k in range(m):
                for r in range(H):
                    row = k * B + (r + pad) * WP + pad
                    for q in range(W):
                        xp[row + q] = x[n0 + k, c, r, q]
                for i in range(HO):
                    for j in range(WO):
                        grid[k * B + (i * WP + j) * stride] = dy[n0 + k, c, i, j]
            for u in range(m * B):
                dxp[u] = 0.0
            U = (m - 1) * B + T                  # up to the last output pixel of the last image
            for a in range(KH):
                for b in range(KW):
                    w_ab = w[c, a, b]
                    x_tap = xp[a * WP + b:]      # what tap (a, b) read, from grid position u = 0 on
                    dx_tap = dxp[a * WP + b:]
                    tap_sum = np.float64(0.0)
                    for u in range(U):
                        dx_tap[u] += w_ab * grid[u]
                        tap_sum += grid[u] * x_tap[u]
                    dw_c[a, b] += tap_sum
            for k in range(m):                   # the gradient that fell on the padding is dropped
                for r in range(H):
                    row = k * B + (r + pad) * WP + pad
                    for q in range(W):
                        dx[n0 + k, c, r, q] = dxp[row + q]
        for a in range(KH):
            for b in range(KW):
                dw[c, a, b] = dw_c[a, b]
        ### END SOLUTION


depthwise_3x3 = numba.njit(**_parallel)(_depthwise_3x3)
depthwise_forward = numba.njit(**_parallel)(_depthwise_forward)
depthwise_backward = numba.njit(**_parallel_sums)(_depthwise_backward)


# ---------------------------------------------------------------------------
# Full convolution as a matrix product.
#
# im2col copies every receptive field of the input into a column, so that
#   y[n] = W.reshape(C_out, C_in*KH*KW) @ cols[n]
# is one BLAS call per image.  Rows of cols are ordered (c, a, b), the same
# order in which an OIHW weight is flattened; column i*WO + j is output
# pixel (i, j).  col2im is its adjoint: it adds every column entry back onto
# the pixel it was copied from, which is exactly the backward pass of the
# copy.  Both work on a zero-padded scratch copy of each plane, as the
# depthwise kernels do.
# ---------------------------------------------------------------------------

def _im2col(x, KH, KW, stride, pad, cols):
    """Exercise kernels.1: unfold receptive fields into columns.

    x    (N, C, H, W)
    cols (N, C*KH*KW, HO*WO)   overwritten: row (c*KH + a)*KW + b holds
                               xp[n, c, i*stride + a, j*stride + b] at column i*WO + j

    where xp is x with ``pad`` zeros added on every side, so an entry is 0
    where the receptive field hangs over the border, and HO, WO are the
    output's height and width (computed for you).  A prange iteration owns
    one (image, channel) pair, that is the KH*KW rows of cols that channel
    fills.  Copy each plane into a zero padded scratch plane first, as the
    depthwise kernels do, and no loop needs to test for the border.
    """
    N, C, H, W = x.shape
    HO, WO = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        ### BEGIN SOLUTION
        xp = np.zeros((H + 2 * pad, W + 2 * pad), x.dtype)
        xp[pad:pad + H, pad:pad + W] = x[n, c]
        for a in range(KH):
            for b in range(KW):
                col_row = cols[n, (c * KH + a) * KW + b]
                for i in range(HO):
                    x_row = xp[i * stride + a]
                    first = i * WO
                    # The same copy twice: with the step as the literal 2 (MobileNet's
                    # strided conv) the compiler turns it into vector instructions.
                    if stride == 2:
                        for j in range(WO):
                            col_row[first + j] = x_row[2 * j + b]
                    else:
                        for j in range(WO):
                            col_row[first + j] = x_row[j * stride + b]
        ### END SOLUTION


def _col2im(cols, KH, KW, stride, pad, dx):
    """Exercise kernels.2: fold columns back onto the image, adding overlapping entries.

    cols (N, C*KH*KW, HO*WO)   laid out as im2col writes them (see _im2col)
    dx   (N, C, H, W)          overwritten with the folded sum

    The adjoint of im2col: im2col copied pixel xp[n, c, i*stride + a, j*stride
    + b] of the padded image into row (c*KH + a)*KW + b, column i*WO + j of
    cols, so col2im adds that entry of cols back onto that pixel.  A pixel
    that lies in several receptive fields gets the sum of all its entries,
    and what lands on the padding belongs to no pixel of dx: it is dropped.
    A prange iteration owns one (image, channel) pair; sum into a zero
    padded scratch plane, then copy its inside into dx.
    """
    N, C, H, W = dx.shape
    HO, WO = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        ### BEGIN SOLUTION
        dxp = np.zeros((H + 2 * pad, W + 2 * pad), dx.dtype)
        for a in range(KH):
            for b in range(KW):
                row = (c * KH + a) * KW + b
                for i in range(HO):
                    for j in range(WO):
                        dxp[i * stride + a, j * stride + b] += cols[n, row, i * WO + j]
        dx[n, c] = dxp[pad:pad + H, pad:pad + W]
        ### END SOLUTION


im2col = numba.njit(**_parallel)(_im2col)
col2im = numba.njit(**_parallel)(_col2im)


# ---------------------------------------------------------------------------
# Full convolution computed directly, for inputs with few channels.
#
# The first conv of MobileNet reads 3 channels: its columns have only
# 3*3*3 = 27 rows, so the matrix product does little work per column, and
# its time goes into writing the columns out and reading them back, which
# costs the same whether the layer keeps 8 output channels or 4.  Computing
# the sum straight from the image avoids the columns.
#
# The loops reuse the depthwise kernel's flat grid (see above), with one
# more idea so that every tap is a unit-step loop even at stride s > 1:
# split the padded image into s*s "phase" planes, plane (u, v) holding the
# pixels xp[r*s + u, q*s + v].  Tap (a, b) of output (i, j) reads
#       xp[i*s + a, j*s + b] = phase[a % s, b % s][i + a // s, j + b // s],
# a plain shift of one phase plane.  Each phase plane has WS columns, and
# output (i, j) sits at t = i*WS + j of the grid.
#
# The taps are visited phase by phase (a = da*s + u, b = db*s + v), so that
# every index is built from loop counters by additions and multiplications
# only: with a % or // inside, Numba must allow for a negative index and
# the loop is no longer turned into vector instructions, which is what makes
# this kernel worth having.
# For the same reason each tap's input is taken as a slice, indexed by the
# bare counter t.
# ---------------------------------------------------------------------------

def _conv_direct(x, w, stride, pad, out):
    """Full convolution (cross-correlation) without columns.

    x   (N, C, H, W)          input
    w   (O, C, KH, KW)        weights
    out (N, O, HO, WO)        overwritten with the result
    """
    N, C, H, W = x.shape
    O, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    HO, WO = out.shape[2], out.shape[3]
    s = stride
    HS = (H + 2 * pad + s - 1) // s              # rows and columns of a phase plane
    WS = (W + 2 * pad + s - 1) // s
    P = HS * WS
    T = (HO - 1) * WS + WO                       # grid positions up to the last output pixel
    for n in prange(N):
        # phases[((c*s + u)*s + v)*P + r*WS + q] = xp[n, c, r*s + u, q*s + v]
        phases = np.zeros(C * s * s * P, x.dtype)
        for c in range(C):
            for u in range(s):
                for v in range(s):
                    plane = ((c * s + u) * s + v) * P
                    for r in range(HS):
                        row = r * s + u - pad    # the row of x, outside it: padding
                        if row < 0 or row >= H:
                            continue
                        for q in range(WS):
                            col = q * s + v - pad
                            if col >= 0 and col < W:
                                phases[plane + r * WS + q] = x[n, c, row, col]
        grid = np.empty(T, x.dtype)
        for o in range(O):
            grid[:] = 0.0
            for c in range(C):
                for u in range(s):
                    for v in range(s):
                        plane = ((c * s + u) * s + v) * P
                        for da in range((KH - u + s - 1) // s):
                            for db in range((KW - v + s - 1) // s):
                                w_ab = w[o, c, da * s + u, db * s + v]
                                first = plane + da * WS + db
                                tap = phases[first:first + T]
                                for t in range(T):
                                    grid[t] += w_ab * tap[t]
            for i in range(HO):
                for j in range(WO):
                    out[n, o, i, j] = grid[i * WS + j]


conv_direct = numba.njit(**_parallel)(_conv_direct)


# ---------------------------------------------------------------------------
# Batch normalisation over (N, H, W) for each channel.
#
# Forward (train):  mu = mean(x),  var = mean((x - mu)^2),
#                   xhat = (x - mu) / sqrt(var + eps),  y = gamma*xhat + beta.
# The train-mode backward pass is exercise layers.3 (BatchNorm2d.backward in
# layers.py says what it computes).
# Both directions end with one affine map per channel, x * scale + shift,
# whose two numbers are worked out once in float64.
# ---------------------------------------------------------------------------

def _batchnorm_train_forward(x, gamma, beta, eps, y, mean, var):
    """Normalise with the batch's own statistics.

    x, y        (N, C, L)   L = H*W (the layer passes a reshaped view)
    gamma, beta (C,)
    mean, var   (C,) float64, overwritten with the batch mean and the biased
                variance (the caller derives the unbiased one for the
                running estimate)
    """
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        # One pass for both sums, of deviations from K, the first image's mean: var = mean((x-K)^2)
        # - mean(x-K)^2 cancels only as far as the mean lies from K (K = 0 can lose every digit).
        K = np.float64(x[0, c].sum()) / L        # any value near the mean will do
        s = np.float64(0.0)
        ss = np.float64(0.0)
        for n in range(N):
            x_nc = x[n, c]
            for k in range(L):
                d = x_nc[k] - K
                s += d
                ss += d * d
        m = s / M
        mu = K + m
        v = ss / M - m * m
        if v < 0.0:                 # rounding; a NaN or inf (overflow) stays, for the layer to refuse
            v = 0.0
        scale = gamma[c] / math.sqrt(v + eps)
        shift = beta[c] - mu * scale
        for n in range(N):
            x_nc = x[n, c]
            y_nc = y[n, c]
            for k in range(L):
                y_nc[k] = x_nc[k] * scale + shift
        mean[c] = mu
        var[c] = v


def _batchnorm_train_backward(x, dy, gamma, mean, var, eps, dx, dgamma, dbeta):
    """Exercise layers.3 (the kernel): the gradients of train-mode batch normalisation.

    x, dy, dx     (N, C, L)   dx is overwritten with dL/dx
    gamma         (C,)
    mean, var     (C,) float64, the batch statistics the forward pass used
    dgamma, dbeta (C,) float64, overwritten with dL/dgamma and dL/dbeta

    What to compute, and why it is more than dy * gamma / sqrt(var + eps),
    is in ``BatchNorm2d.backward``'s docstring (tinyprune/layers.py).  A
    prange iteration owns one channel c.  Two passes over its M = N*L values
    are enough: one that takes the sums your formula needs, one that writes
    dx.  Sums in float64 (start them at ``np.float64(0.0)``; see this
    module's docstring); hint: sum(dy * xhat) = (sum(dy * x) - mu * sum(dy)) / sqrt(var + eps).
    """
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        ### BEGIN SOLUTION
        # With inv = 1/sqrt(var + eps) and xhat = (x - mu) * inv, the sums need only
        # sum(dy) and sum(dy * x): sum(dy * xhat) = (sum(dy * x) - mu * sum(dy)) * inv.
        # Expanding BatchNorm2d.backward's dx in x gives one affine map per channel:
        #   dx = (gamma*inv) * dy - (gamma*inv^2*dgamma/M) * x + (gamma*inv/M) * (mu*inv*dgamma - dbeta)
        mu = mean[c]
        inv = 1.0 / math.sqrt(var[c] + eps)
        sum_dy = np.float64(0.0)
        sum_dy_x = np.float64(0.0)
        for n in range(N):
            x_nc = x[n, c]
            g_nc = dy[n, c]
            for k in range(L):
                sum_dy += g_nc[k]
                sum_dy_x += g_nc[k] * x_nc[k]
        sum_dy_xhat = (sum_dy_x - mu * sum_dy) * inv
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        g_inv_M = gamma[c] * inv / M
        a_dy = g_inv_M * M
        a_x = g_inv_M * sum_dy_xhat * inv
        shift = g_inv_M * (mu * inv * sum_dy_xhat - sum_dy)
        for n in range(N):
            x_nc = x[n, c]
            g_nc = dy[n, c]
            dx_nc = dx[n, c]
            for k in range(L):
                dx_nc[k] = a_dy * g_nc[k] - a_x * x_nc[k] + shift
        ### END SOLUTION


def _batchnorm_eval_forward(x, gamma, beta, mean, var, eps, y):
    """Normalise with fixed statistics (eval mode): an affine map per channel.

    y[n, c, k] = x[n, c, k] * scale[c] + shift[c]   with
    scale = gamma / sqrt(var + eps),  shift = beta - mean * scale  (in float64)

    x, y                   (N, C, L)
    gamma, beta, mean, var (C,)   the layer's weight, bias and running statistics
    """
    N, C, L = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        scale = gamma[c] / math.sqrt(np.float64(var[c]) + eps)
        shift = beta[c] - mean[c] * scale
        x_nc = x[n, c]
        y_nc = y[n, c]
        for k in range(L):
            y_nc[k] = x_nc[k] * scale + shift


batchnorm_train_forward = numba.njit(**_parallel_sums)(_batchnorm_train_forward)
batchnorm_train_backward = numba.njit(**_parallel_sums)(_batchnorm_train_backward)
batchnorm_eval_forward = numba.njit(**_parallel)(_batchnorm_eval_forward)


# ---------------------------------------------------------------------------
# slopehtanh, elementwise on flat arrays:
#   f(x) = x                 for -1 <= x <= 1
#        = 1 - (x - 1)/4     for x > 1
#        = -1 - (x + 1)/4    for x < -1
# All three cases are  h - (x - h)/4  with h = x clamped to [-1, 1], which
# needs no branch (inside, x - h is exactly 0), so the loop vectorises.
# The backward pass is exercise layers.2 (SlopeHTanh.backward in activations.py).
# ---------------------------------------------------------------------------

def _slopehtanh_forward(x, y):
    """y = slopehtanh(x);  x, y flat (size,) arrays of one dtype (the constants too: no float64 detour)."""
    one, quarter = y.dtype.type(1.0), y.dtype.type(0.25)
    for k in prange(x.size):
        v = x[k]
        h = min(max(v, -one), one)
        y[k] = h - (v - h) * quarter


def _slopehtanh_backward(x, dy, dx):
    """Exercise layers.2 (the kernel): dx = dy * slopehtanh'(x);  flat (size,) arrays of one dtype.

    Entry k alone: dx[k] is dy[k] times the slope of slopehtanh at x[k]
    (``SlopeHTanh.backward``'s docstring has the function and the rule at its
    kinks).  Compute each entry without a branch on arrays; a conditional
    expression on one number is fine.
    """
    for k in prange(x.size):
        ### BEGIN SOLUTION
        slope = 1.0 if abs(x[k]) <= 1.0 else -0.25
        dx[k] = slope * dy[k]
        ### END SOLUTION


slopehtanh_forward = numba.njit(**_parallel)(_slopehtanh_forward)
slopehtanh_backward = numba.njit(**_parallel)(_slopehtanh_backward)
