"""The convolutions: ``Conv2d`` (every output channel reads every input channel)
and ``DepthwiseConv2d`` (channel c reads channel c alone).

Both follow the contract of :class:`tinyprune.layers.Layer` and are imported
from there (``from tinyprune.layers import Conv2d`` works).  Their loops are
in :mod:`tinyprune.kernels`; here are the shapes, the choices between the
loops, and the backward passes derived from the forward ones.

Shapes: input (N, C_in, H, W), output (N, C_out, HO, WO) with
``HO = (H + 2*pad - KH) // stride + 1`` (likewise WO); weights OIHW.
"""

import numpy as np

from . import kernels, products
from .common import check_int
from .layers import Layer, check_shape, glorot_uniform
from .module import check_parameter_dtype

__all__ = ["Conv2d", "DepthwiseConv2d"]


def _kernel_size(kernel, layer):
    """``kernel`` (an int or a pair) as a pair ``(KH, KW)`` of positive ints."""
    if isinstance(kernel, (tuple, list)):
        if len(kernel) != 2:
            raise ValueError(f"{layer}: kernel must be an int or a pair (kh, kw), got {kernel!r}")
        return tuple(check_int(k, "kernel size", layer) for k in kernel)
    k = check_int(kernel, "kernel size", layer)
    return (k, k)


def _conv_output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _check_spatial(shape, kh, kw, stride, pad, where):
    """Output (HO, WO) of a convolution, or a ValueError if the image is too small."""
    H, W = shape[2], shape[3]
    HO = _conv_output_size(H, kh, stride, pad)
    WO = _conv_output_size(W, kw, stride, pad)
    if HO < 1 or WO < 1:
        raise ValueError(
            f"{where}: input of {H}x{W} pixels is too small for a {kh}x{kw} kernel "
            f"with padding {pad}; it needs at least {kh - 2 * pad}x{kw - 2 * pad}")
    return HO, WO


def _describe(conv, sizes):
    """The repr's arguments: channel ``sizes``, then kernel, stride, padding and bias."""
    kh, kw = conv.kernel
    return f"{sizes}, kernel=({kh}, {kw}), stride={conv.stride}, pad={conv.pad}, bias={conv.bias is not None}"


def _output_shape(conv, shape, where):
    """(N, C_out, HO, WO) of a convolution for an input of ``shape``, or a ValueError naming ``where``."""
    check_shape(shape, 4, where, conv.c_in, type(conv).__name__, "input channels")
    HO, WO = _check_spatial(shape, *conv.kernel, conv.stride, conv.pad, where)
    return (shape[0], conv.c_out, HO, WO)


class Conv2d(Layer):
    """Full 2-D convolution (cross-correlation, as in PyTorch and Flux's CrossCor).

    ``weight`` (C_out, C_in, KH, KW), optional ``bias`` (C_out,).
    Input (N, C_in, H, W) -> output (N, C_out, HO, WO) with
    HO = (H + 2*pad - KH) // stride + 1 (likewise WO).

    The forward pass unfolds receptive fields into columns (im2col) and does
    one matrix product per image; a 1x1, stride-1, unpadded convolution (a
    "pointwise" one) needs no unfolding: the image already is the columns.
    In eval mode, a convolution whose columns would be thin (at most
    ``DIRECT_MAX_ROWS`` = C_in*KH*KW rows, like MobileNet's first conv with
    27) is computed straight from the image (``kernels.conv_direct``): the
    backward pass will not need the columns, and writing thin columns out
    and reading them back costs more than the little arithmetic they feed.
    """

    DIRECT_MAX_ROWS = 32
    mixes_channels = True
    out_channel_arrays = {"weight": 0, "bias": 0}
    in_channel_arrays = {"weight": 1}

    def __init__(self, c_in, c_out, kernel, stride=1, pad=0, bias=False, rng=None, dtype=np.float32):
        super().__init__()
        name = "Conv2d"
        c_in = check_int(c_in, "c_in", name)
        c_out = check_int(c_out, "c_out", name)
        kh, kw = _kernel_size(kernel, name)
        self.stride = check_int(stride, "stride", name)
        self.pad = check_int(pad, "pad", name, minimum=0)
        dtype = check_parameter_dtype(dtype, "dtype", name)
        self.weight = glorot_uniform((c_out, c_in, kh, kw), c_in * kh * kw, c_out * kh * kw, rng, dtype)
        self.bias = np.zeros(c_out, dtype) if bias else None
        self.param_names = ("weight", "bias") if bias else ("weight",)

    # Sizes are read off the weight, so slicing the weight (resize) keeps them true.
    c_out = property(lambda self: self.weight.shape[0])
    c_in = property(lambda self: self.weight.shape[1])
    kernel = property(lambda self: self.weight.shape[2:])

    @property
    def pointwise(self):
        return self.kernel == (1, 1) and self.stride == 1 and self.pad == 0

    def extra_repr(self):
        return _describe(self, f"{self.c_in}, {self.c_out}")

    def output_shape(self, shape, where="Conv2d"):
        return _output_shape(self, shape, where)

    def forward(self, x):
        x = self.forward_input(x)
        N, C, H, W = x.shape
        kh, kw = self.kernel
        HO = _conv_output_size(H, kh, self.stride, self.pad)
        WO = _conv_output_size(W, kw, self.stride, self.pad)
        if not self.training and not self.pointwise and C * kh * kw <= self.DIRECT_MAX_ROWS:
            y = np.empty((N, self.c_out, HO, WO), x.dtype)
            kernels.conv_direct(x, np.ascontiguousarray(self.effective("weight")), self.stride, self.pad, y)
            if self.bias is not None:
                y += self.effective("bias")[:, None, None]
            return self.keep_for_backward((x, None), y)   # no columns: an eval-mode backward unfolds x
        cols = self._columns(x, HO, WO)
        w = self.effective("weight").reshape(self.c_out, -1)
        y = products.batched_matmul(w, cols)        # (N, C_out, HO*WO): y[n] = w @ cols[n]
        if self.bias is not None:
            y += self.effective("bias")[:, None]
        return self.keep_for_backward((x, cols), y.reshape(N, self.c_out, HO, WO))

    def _columns(self, x, HO, WO):
        """The receptive fields of ``x`` as columns, (N, C_in*KH*KW, HO*WO)."""
        N, C, H, W = x.shape
        if self.pointwise:
            return x.reshape(N, C, H * W)
        kh, kw = self.kernel
        cols = np.empty((N, C * kh * kw, HO * WO), x.dtype)
        kernels.im2col(x, kh, kw, self.stride, self.pad, cols)
        return cols

    def backward(self, dy):
        """Exercise layers.4: the convolution's gradients, through its columns.

        ``dy`` (N, C_out, HO, WO) is dL/dy.  Set up for you below: ``g``, dy as
        (N, C_out, P) with P = HO*WO pixels; ``w``, the weight as forward used
        it (pruned entries 0) reshaped to Wm (C_out, R), R = C_in*KH*KW;
        ``cols`` (N, R, P), the receptive fields of the input unfolded by
        im2col (for a pointwise conv, the input itself), and ``x`` (N, C_in, H, W).

        Forward computed, image by image, y[n] = Wm @ cols[n] + b: a dense
        layer whose inputs are columns.  The chain rule, as for Dense:

            dL/dWm[o, r]      = sum over n and p of dy[n, o, p] * cols[n, r, p]
            dL/db[o]          = sum over n and p of dy[n, o, p]     (only with a bias)
            dL/dcols[n, r, p] = sum over o of Wm[o, r] * dy[n, o, p]

        and then dL/dx: every pixel was copied into the columns once per
        receptive field it lies in, so its gradient is the sum of the
        gradients of all those copies.  ``kernels.col2im`` adds them up (it is
        the adjoint of the unfolding; exercise kernels.2), writing dL/dx into
        an (N, C_in, H, W) array you give it; a pointwise conv's columns are
        the image, so there dL/dcols already is dL/dx, reshaped.

        Store dL/dW (reshaped to the weight's OIHW shape) and dL/db with
        ``self.set_grad``, and return dL/dx.  ``np.matmul`` multiplies
        stacks of matrices image by image.
        """
        dy = self.backward_input(dy)
        x, cols = self._cache
        if cols is None:                            # the forward pass went direct: unfold now
            cols = self._columns(x, dy.shape[2], dy.shape[3])
        N = dy.shape[0]
        g = dy.reshape(N, self.c_out, -1)
        w = self.effective("weight").reshape(self.c_out, -1)
        ### BEGIN SOLUTION
        # The products of np.matmul, image by image, on all threads (tinyprune/products.py):
        dwm = products.batched_sum_outer(g, cols)   # sum over n of g[n] @ cols[n].T
        self.set_grad("weight", dwm.reshape(self.weight.shape))
        if self.bias is not None:
            self.set_grad("bias", g.sum(axis=(0, 2)))
        dcols = products.batched_matmul(w.T, g)     # (N, C_in*KH*KW, HO*WO): w.T @ g[n]
        if self.pointwise:
            return dcols.reshape(x.shape)
        dx = np.empty(x.shape, dy.dtype)
        kernels.col2im(dcols, *self.kernel, self.stride, self.pad, dx)
        return dx
        ### END SOLUTION


class DepthwiseConv2d(Layer):
    """Depthwise convolution: channel c of the output sees only channel c of the input.

    ``weight`` (C, 1, KH, KW) (PyTorch's layout for ``groups=C``), optional
    ``bias`` (C,) (MobileNet has none; ``fold_batchnorm`` gives one).
    Input (N, C, H, W) -> output (N, C, HO, WO).
    """

    mixes_channels = False
    out_channel_arrays = {"weight": 0, "bias": 0}

    def __init__(self, channels, kernel, stride=1, pad=0, bias=False, rng=None, dtype=np.float32):
        super().__init__()
        name = "DepthwiseConv2d"
        channels = check_int(channels, "channels", name)
        kh, kw = _kernel_size(kernel, name)
        self.stride = check_int(stride, "stride", name)
        self.pad = check_int(pad, "pad", name, minimum=0)
        dtype = check_parameter_dtype(dtype, "dtype", name)
        # Flux counts a grouped conv's fans per group: fan_in = KH*KW*1, fan_out = KH*KW*C.
        self.weight = glorot_uniform((channels, 1, kh, kw), kh * kw, channels * kh * kw, rng, dtype)
        self.bias = np.zeros(channels, dtype) if bias else None
        self.param_names = ("weight", "bias") if bias else ("weight",)

    channels = property(lambda self: self.weight.shape[0])
    c_in = channels
    c_out = channels
    kernel = property(lambda self: self.weight.shape[2:])

    def extra_repr(self):
        return _describe(self, f"{self.channels}")

    def output_shape(self, shape, where="DepthwiseConv2d"):
        return _output_shape(self, shape, where)

    def _filters(self):
        kh, kw = self.kernel
        return np.ascontiguousarray(self.effective("weight").reshape(self.channels, kh, kw))

    def forward(self, x):
        x = self.forward_input(x)
        N, C, H, W = x.shape
        kh, kw = self.kernel
        out = np.empty((N, C, _conv_output_size(H, kh, self.stride, self.pad),
                        _conv_output_size(W, kw, self.stride, self.pad)), x.dtype)
        kernels.depthwise_forward(x, self._filters(), self.stride, self.pad, out)
        if self.bias is not None:
            out += self.effective("bias")[:, None, None]
        return self.keep_for_backward(x, out)

    def backward(self, dy):
        """Exercise layers.5: the depthwise convolution's gradients.

        ``dy`` (N, C, HO, WO) is dL/dy; forward's input ``x`` (N, C, H, W) is
        ``self._cache``; the filters, ``self._filters()``, are the weight as
        forward used it, (C, KH, KW).  With xp the input padded by ``pad``
        zeros on every side and s the stride, forward computed

            y[n, c, i, j] = sum over a, b of w[c, a, b] * xp[n, c, i*s + a, j*s + b]  (+ b[c])

        Each term touches one tap and one padded pixel, so the chain rule sends
        dy[n, c, i, j] back along every term (and, with a bias, to b[c]):

            dL/dw[c, a, b]                  = sum over n, i, j of dy[n, c, i, j] * xp[n, c, i*s + a, j*s + b]
            dL/dxp[n, c, i*s + a, j*s + b] += w[c, a, b] * dy[n, c, i, j]    for every i, j, a, b

        and dL/dx is dL/dxp without its border (the padding is no input);
        dL/db[c] (the optional ``bias``, (C,)) sums dy over n, i and j.

        Write the loops in the kernel ``kernels._depthwise_backward`` (its
        docstring gives its arguments); here, call it as
        ``kernels.depthwise_backward`` (Numba's compiled copy of it; in a
        student copy, your plain function itself) to fill the ``dx`` and
        ``dw`` (C, KH, KW) allocated for you, store dL/dw in the weight's shape
        (C, 1, KH, KW) and dL/db with ``self.set_grad``, and return dL/dx.
        """
        dy = self.backward_input(dy)
        x = self._cache
        dx = np.empty_like(x)
        dw = np.empty((self.channels,) + tuple(self.kernel), x.dtype)
        ### BEGIN SOLUTION
        # Both sums are in the kernel, one channel per thread; see its comment for the loops.
        kernels.depthwise_backward(x, self._filters(), dy, self.stride, self.pad, dx, dw)
        self.set_grad("weight", dw.reshape(self.weight.shape))
        if self.bias is not None:                   # y += b[c] at every pixel: db = sum of dy
            self.set_grad("bias", dy.sum(axis=(0, 2, 3)))
        return dx
        ### END SOLUTION
