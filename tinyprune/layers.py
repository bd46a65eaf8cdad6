"""The layer library: every layer's forward and backward pass side by side.

A layer is a small object with

* ``forward(x)``: computes the output and keeps what the backward pass needs;
* ``backward(dy)``: given dL/d(output), returns dL/d(input) and stores the
  gradients of its parameters in ``layer.grads`` (overwriting, never adding);
* its parameters as plain NumPy attributes named in ``param_names``
  (``conv.weight``), statistics in ``buffer_names`` (``bn.running_mean``);
* ``masks``: a dict from parameter name to a boolean array (True = kept),
  set by pruning.  A masked entry is used as zero in the forward pass, gets
  zero gradient, and optimisers keep it at exactly zero.

Shapes: activations NCHW, conv weights OIHW ``(C_out, C_in, KH, KW)``,
depthwise weights ``(C, 1, KH, KW)``, dense weights ``(out, in)``.  All
layers run in float32 (the default) or float64 (``model.to(np.float64)``).

Calling a layer, ``layer(x)``, checks the input's shape against the whole
layer first (every error names the layer's position, e.g. ``model[0][7]``)
and then runs ``forward``; inside a chain, children are run by ``forward``
directly, so the check happens once per call.
"""

import copy

import numpy as np

from . import activations as act
from . import kernels

__all__ = [
    "Layer", "Conv2d", "DepthwiseConv2d", "Dense", "BatchNorm2d",
    "Activation", "SlopeHTanh", "ReLU", "HardTanh", "Identity",
    "GlobalMeanPool", "Flatten", "Chain", "activation_layer", "glorot_uniform", "layer_at",
    "parse_path",
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _rng(rng=None, seed=None):
    if rng is not None:
        return rng
    return np.random.default_rng(seed)


def glorot_uniform(shape, fan_in, fan_out, rng=None, dtype=np.float32):
    """Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out)), as Flux initialises."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return _rng(rng).uniform(-limit, limit, size=shape).astype(dtype)


def _positive_int(value, what, layer):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive integer, got {value!r}")
    return int(value)


def _kernel_size(kernel, layer):
    if isinstance(kernel, (tuple, list)):
        if len(kernel) != 2:
            raise ValueError(f"{layer}: kernel must be an int or a pair (kh, kw), got {kernel!r}")
        return tuple(_positive_int(k, "kernel size", layer) for k in kernel)
    k = _positive_int(kernel, "kernel size", layer)
    return (k, k)


def _non_negative_int(value, what, layer):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{layer}: {what} must be a non-negative integer, got {value!r}")
    return int(value)


def _conv_output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _check_rank(shape, rank, where, what):
    if len(shape) != rank:
        raise ValueError(f"{where}: expected a rank-{rank} input {what}, got shape {tuple(shape)}")


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


# ---------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------

class Layer:
    """Base class: mode switching, parameters, masks, state dicts, copies."""

    param_names = ()   # trainable arrays, in state_dict order
    buffer_names = ()  # saved with the model but not trained

    # Which arrays carry a channel, declared once per layer type and read by
    # prune, propagate, resize and the checkpoint reader:
    #
    # mixes_channels  True: every output channel reads every input channel
    #                 (Conv2d, Dense); False: channel j of the output is made
    #                 from channel j of the input alone (BatchNorm2d,
    #                 DepthwiseConv2d, activations, pooling, Flatten);
    #                 None: unknown, so channels cannot be followed through it.
    # out_channel_arrays  {array name: axis}: slice j along that axis belongs
    #                 to output channel j (for a per-channel layer, to channel j).
    # in_channel_arrays   {array name: axis}: slice j belongs to input channel
    #                 j (only for layers that mix channels).
    mixes_channels = None
    out_channel_arrays = {}
    in_channel_arrays = {}

    def __init__(self):
        self.training = True
        self.grads = {}
        self.masks = {}
        self._cache = None  # what forward keeps for backward

    # -- running -----------------------------------------------------------

    def __call__(self, x):
        return self.forward(self.prepare_input(x))

    def prepare_input(self, x, where=None):
        """Check ``x`` against this layer (or chain) and cast it to its dtype."""
        where = where or type(self).__name__
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{where}: expected a numeric array, got dtype {x.dtype}")
        if x.dtype.kind != "f":
            raise ValueError(
                f"{where}: expected floating-point input, got {x.dtype}; "
                "scale images to [0, 1] first (tinyprune.data.to_float)")
        self.check_input(x.shape, where)
        dtype = self.dtype or x.dtype
        return np.ascontiguousarray(x, dtype=dtype)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def output_shape(self, shape, where="model"):
        """Shape of the output for an input of ``shape``; ValueError if it does not fit.

        Depends on the architecture only, never on the mode, so counting works
        on a model in either mode.
        """
        return tuple(shape)

    def check_input(self, shape, where="model"):
        """``output_shape`` plus what only running the layer now requires (its mode)."""
        return self.output_shape(shape, where)

    # -- modes ---------------------------------------------------------------

    def train(self, mode=True):
        """Switch to training mode (batch statistics in BatchNorm); returns self."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        """Switch to evaluation mode (running statistics in BatchNorm); returns self."""
        return self.train(False)

    # -- structure -----------------------------------------------------------

    def children(self):
        return ()

    def named_layers(self, path=""):
        """Yield ``(path, layer)`` for every leaf layer, e.g. ``("[0][3]", bn)``."""
        yield path, self

    def named_parameters(self, prefix=""):
        """Yield ``(key, layer, name)`` for every trainable array (state_dict keys)."""
        for name in self.param_names:
            yield prefix + name, self, name

    def named_buffers(self, prefix=""):
        for name in self.buffer_names:
            yield prefix + name, self, name

    @property
    def dtype(self):
        """The floating-point type of the parameters (None for a parameter-free layer)."""
        for _, layer, name in self.named_parameters():
            return getattr(layer, name).dtype
        return None

    def effective(self, name):
        """Parameter ``name`` as the forward pass uses it: masked entries read as zero."""
        value = getattr(self, name)
        mask = self.masks.get(name)
        return value if mask is None else value * mask

    def set_grad(self, name, grad):
        mask = self.masks.get(name)
        self.grads[name] = grad if mask is None else grad * mask

    # -- state ---------------------------------------------------------------

    def state_dict(self):
        """Flat dict of copies of all parameters and buffers, keyed like PyTorch.

        The layouts match ``torch.nn.Conv2d/Linear/BatchNorm2d``, so an
        ``nn.Sequential`` of the same nesting loads it unchanged.  Masks are
        not included (see :meth:`mask_dict`).
        """
        out = {}
        for key, layer, name in self.named_parameters():
            out[key] = getattr(layer, name).copy()
        for key, layer, name in self.named_buffers():
            out[key] = np.array(getattr(layer, name), copy=True)
        return out

    def load_state_dict(self, state):
        """Inverse of :meth:`state_dict`: copies every array in; checks keys and shapes."""
        expected = {}
        for key, layer, name in self.named_parameters():
            expected[key] = (layer, name)
        for key, layer, name in self.named_buffers():
            expected[key] = (layer, name)
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing:
            raise ValueError(f"load_state_dict: missing key(s) {missing}")
        if extra:
            raise ValueError(f"load_state_dict: unexpected key(s) {extra}")
        for key, (layer, name) in expected.items():
            old = np.asarray(getattr(layer, name))
            new = np.asarray(state[key])
            if new.shape != old.shape:
                raise ValueError(
                    f"load_state_dict: key {key!r} has shape {new.shape}, "
                    f"the model expects {old.shape}")
        for key, (layer, name) in expected.items():
            old = np.asarray(getattr(layer, name))
            setattr(layer, name, np.array(state[key], dtype=old.dtype, copy=True))
        return self

    def grad_dict(self):
        """Gradients of the last backward pass, keyed like the trainable state_dict entries."""
        out = {}
        for key, layer, name in self.named_parameters():
            if name not in layer.grads:
                raise RuntimeError(f"grad_dict: no gradient for {key!r}; run backward first")
            out[key] = layer.grads[name]
        return out

    def mask_dict(self):
        """The pruning masks, keyed like the state_dict entries they belong to."""
        out = {}
        for key, layer, name in self.named_parameters():
            if name in layer.masks:
                out[key] = layer.masks[name]
        return out

    def to(self, dtype):
        """Convert parameters and statistics to ``dtype`` in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"{type(self).__name__}.to: expected a floating-point dtype, got {dtype}")
        for _, layer, name in list(self.named_parameters()) + list(self.named_buffers()):
            value = getattr(layer, name)
            if value.dtype.kind == "f":
                setattr(layer, name, value.astype(dtype))
        for _, layer in self.named_layers():
            layer.grads = {}
            layer._cache = None
        return self

    def copy(self):
        """A deep copy (parameters, buffers, masks and mode), without forward caches."""
        return copy.deepcopy(self)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


# ---------------------------------------------------------------------------
# Convolutions and dense layers
# ---------------------------------------------------------------------------

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
    backward pass will not need the columns, and writing them out costs more
    than the little arithmetic they feed (measured at batch 64: 5.7 ms
    against 6.6 ms for 8 output channels, 4.0 against 5.5 ms for 4).
    """

    DIRECT_MAX_ROWS = 32
    mixes_channels = True
    out_channel_arrays = {"weight": 0, "bias": 0}
    in_channel_arrays = {"weight": 1}

    def __init__(self, c_in, c_out, kernel, stride=1, pad=0, bias=False, rng=None, dtype=np.float32):
        super().__init__()
        name = "Conv2d"
        c_in = _positive_int(c_in, "c_in", name)
        c_out = _positive_int(c_out, "c_out", name)
        kh, kw = _kernel_size(kernel, name)
        self.stride = _positive_int(stride, "stride", name)
        self.pad = _non_negative_int(pad, "pad", name)
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
        kh, kw = self.kernel
        return (f"{self.c_in}, {self.c_out}, kernel=({kh}, {kw}), stride={self.stride}, "
                f"pad={self.pad}, bias={self.bias is not None}")

    def output_shape(self, shape, where="Conv2d"):
        _check_rank(shape, 4, where, "(N, C, H, W)")
        if shape[1] != self.c_in:
            raise ValueError(f"{where}: Conv2d expects {self.c_in} input channels, got {shape[1]} "
                             f"(input shape {tuple(shape)})")
        HO, WO = _check_spatial(shape, *self.kernel, self.stride, self.pad, where)
        return (shape[0], self.c_out, HO, WO)

    def forward(self, x):
        N, C, H, W = x.shape
        kh, kw = self.kernel
        HO = _conv_output_size(H, kh, self.stride, self.pad)
        WO = _conv_output_size(W, kw, self.stride, self.pad)
        if not self.training and not self.pointwise and C * kh * kw <= self.DIRECT_MAX_ROWS:
            y = np.empty((N, self.c_out, HO, WO), x.dtype)
            kernels.conv_direct(x, np.ascontiguousarray(self.effective("weight")), self.stride, self.pad, y)
            if self.bias is not None:
                y += self.effective("bias")[:, None, None]
            self._cache = (x, None)                 # no columns: an eval-mode backward unfolds x
            return y
        cols = self._columns(x, HO, WO)
        w = self.effective("weight").reshape(self.c_out, -1)
        y = np.matmul(w, cols)                      # (N, C_out, HO*WO): one BLAS call per image
        if self.bias is not None:
            y += self.effective("bias")[:, None]
        self._cache = (x, cols)
        return y.reshape(N, self.c_out, HO, WO)

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
        # y[n] = Wm @ cols[n] + b  =>  dWm = sum_n dy[n] @ cols[n]^T,
        # dcols[n] = Wm^T @ dy[n],  db = sum over n and pixels of dy,
        # and dx = col2im(dcols), the adjoint of the unfolding.
        x, cols = self._cache
        if cols is None:                            # the forward pass went direct: unfold now
            cols = self._columns(x, dy.shape[2], dy.shape[3])
        N = dy.shape[0]
        g = np.ascontiguousarray(dy).reshape(N, self.c_out, -1)
        w = self.effective("weight").reshape(self.c_out, -1)
        # One product per image, then the sum over images: faster than
        # gathering all images into one long product, which needs transposed copies.
        dw = np.matmul(g, cols.transpose(0, 2, 1)).sum(axis=0)
        self.set_grad("weight", dw.reshape(self.weight.shape))
        if self.bias is not None:
            self.set_grad("bias", g.sum(axis=(0, 2)))
        dcols = np.matmul(w.T, g)                   # (N, C_in*KH*KW, HO*WO)
        if self.pointwise:
            return dcols.reshape(x.shape)
        dx = np.empty(x.shape, dy.dtype)
        kernels.col2im(dcols, *self.kernel, self.stride, self.pad, dx)
        return dx


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
        channels = _positive_int(channels, "channels", name)
        kh, kw = _kernel_size(kernel, name)
        self.stride = _positive_int(stride, "stride", name)
        self.pad = _non_negative_int(pad, "pad", name)
        # Flux counts a grouped conv's fans per group: fan_in = KH*KW*1, fan_out = KH*KW*C.
        self.weight = glorot_uniform((channels, 1, kh, kw), kh * kw, channels * kh * kw, rng, dtype)
        self.bias = np.zeros(channels, dtype) if bias else None
        self.param_names = ("weight", "bias") if bias else ("weight",)

    channels = property(lambda self: self.weight.shape[0])
    c_in = channels
    c_out = channels
    kernel = property(lambda self: self.weight.shape[2:])

    def extra_repr(self):
        kh, kw = self.kernel
        return (f"{self.channels}, kernel=({kh}, {kw}), stride={self.stride}, pad={self.pad}, "
                f"bias={self.bias is not None}")

    def output_shape(self, shape, where="DepthwiseConv2d"):
        _check_rank(shape, 4, where, "(N, C, H, W)")
        if shape[1] != self.channels:
            raise ValueError(f"{where}: DepthwiseConv2d expects {self.channels} input channels, "
                             f"got {shape[1]} (input shape {tuple(shape)})")
        HO, WO = _check_spatial(shape, *self.kernel, self.stride, self.pad, where)
        return (shape[0], self.channels, HO, WO)

    def _filters(self):
        kh, kw = self.kernel
        return np.ascontiguousarray(self.effective("weight").reshape(self.channels, kh, kw))

    def forward(self, x):
        N, C, H, W = x.shape
        kh, kw = self.kernel
        out = np.empty((N, C, _conv_output_size(H, kh, self.stride, self.pad),
                        _conv_output_size(W, kw, self.stride, self.pad)), x.dtype)
        kernels.depthwise_forward(x, self._filters(), self.stride, self.pad, out)
        if self.bias is not None:
            out += self.effective("bias")[:, None, None]
        self._cache = x
        return out

    def backward(self, dy):
        # With xp the zero-padded input, y[n,c,i,j] = sum_ab w[c,a,b] xp[n,c,i*s+a,j*s+b], so
        # dxp[n,c,i*s+a,j*s+b] += w[c,a,b] dy[n,c,i,j] and dw[c,a,b] = sum_nij dy[n,c,i,j] xp[n,c,i*s+a,j*s+b];
        # the kernel does both and drops the gradient that falls on the padding.
        x = self._cache
        dx = np.empty_like(x)
        dw = np.empty((self.channels,) + tuple(self.kernel), x.dtype)
        kernels.depthwise_backward(x, self._filters(), np.ascontiguousarray(dy), self.stride, self.pad, dx, dw)
        self.set_grad("weight", dw.reshape(self.weight.shape))
        if self.bias is not None:                   # y += b[c] at every pixel: db = sum of dy
            self.set_grad("bias", dy.sum(axis=(0, 2, 3)))
        return dx


class Dense(Layer):
    """Fully connected layer: y = x @ weight.T + bias.

    ``weight`` (out, in), ``bias`` (out,); input (N, in) -> output (N, out).
    """

    mixes_channels = True
    out_channel_arrays = {"weight": 0, "bias": 0}
    in_channel_arrays = {"weight": 1}

    def __init__(self, n_in, n_out, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        n_in = _positive_int(n_in, "n_in", "Dense")
        n_out = _positive_int(n_out, "n_out", "Dense")
        self.weight = glorot_uniform((n_out, n_in), n_in, n_out, rng, dtype)
        self.bias = np.zeros(n_out, dtype) if bias else None
        self.param_names = ("weight", "bias") if bias else ("weight",)

    n_out = property(lambda self: self.weight.shape[0])
    n_in = property(lambda self: self.weight.shape[1])

    def extra_repr(self):
        return f"{self.n_in}, {self.n_out}, bias={self.bias is not None}"

    def output_shape(self, shape, where="Dense"):
        _check_rank(shape, 2, where, "(N, features)")
        if shape[1] != self.n_in:
            raise ValueError(f"{where}: Dense expects {self.n_in} input features, got {shape[1]} "
                             f"(input shape {tuple(shape)})")
        return (shape[0], self.n_out)

    def forward(self, x):
        self._cache = x
        y = x @ self.effective("weight").T
        if self.bias is not None:
            y += self.effective("bias")
        return y

    def backward(self, dy):
        # y = x W^T + b  =>  dW = dy^T x,  db = sum_n dy,  dx = dy W
        x = self._cache
        self.set_grad("weight", dy.T @ x)
        if self.bias is not None:
            self.set_grad("bias", dy.sum(axis=0))
        return dy @ self.effective("weight")


# ---------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------

class BatchNorm2d(Layer):
    """Per-channel normalisation of (N, C, H, W) activations, as ``torch.nn.BatchNorm2d``.

    Train mode normalises with the batch's mean and (biased) variance over
    (N, H, W) and updates the running estimates PyTorch's way:
    ``running = (1 - momentum) * running + momentum * batch``, with the
    *unbiased* variance M/(M-1) * var for ``running_var`` (M = N*H*W).
    Eval mode uses the running estimates.  ``weight`` is gamma, ``bias`` beta.
    """

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    mixes_channels = False
    out_channel_arrays = {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}

    def __init__(self, channels, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        channels = _positive_int(channels, "channels", "BatchNorm2d")
        if not eps > 0:
            raise ValueError(f"BatchNorm2d: eps must be positive, got {eps!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must lie in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = np.ones(channels, dtype)
        self.bias = np.zeros(channels, dtype)
        self.running_mean = np.zeros(channels, dtype)
        self.running_var = np.ones(channels, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    channels = property(lambda self: self.weight.shape[0])

    def extra_repr(self):
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}"

    def output_shape(self, shape, where="BatchNorm2d"):
        _check_rank(shape, 4, where, "(N, C, H, W)")
        if shape[1] != self.channels:
            raise ValueError(f"{where}: BatchNorm2d expects {self.channels} channels, got {shape[1]} "
                             f"(input shape {tuple(shape)})")
        return tuple(shape)

    def check_input(self, shape, where="BatchNorm2d"):
        shape = self.output_shape(shape, where)
        if self.training and shape[0] * shape[2] * shape[3] < 2:
            raise ValueError(f"{where}: train-mode BatchNorm2d needs more than one value per channel, "
                             f"got input shape {tuple(shape)} (use eval mode or a larger batch)")
        return shape

    def eval_scale_shift(self):
        """The affine map eval mode applies: y = x * scale + shift, per channel (float64)."""
        inv = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        scale = self.effective("weight") * inv
        shift = self.effective("bias") - self.running_mean * scale
        return scale, shift

    def forward(self, x):
        N, C, H, W = x.shape
        x3 = x.reshape(N, C, H * W)
        y = np.empty_like(x)
        if self.training:
            mean = np.empty(C, np.float64)
            var = np.empty(C, np.float64)
            kernels.batchnorm_train_forward(x3, self.effective("weight"), self.effective("bias"),
                                            self.eps, y.reshape(N, C, H * W), mean, var)
            M = N * H * W
            m = self.momentum
            self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(x.dtype)
            self.running_var = ((1 - m) * self.running_var + m * var * (M / (M - 1))).astype(x.dtype)
            self.num_batches_tracked = self.num_batches_tracked + 1
            self._cache = (x3, mean, var)
        else:
            kernels.batchnorm_eval_forward(x3, self.effective("weight"), self.effective("bias"),
                                           self.running_mean, self.running_var, self.eps,
                                           y.reshape(N, C, H * W))
            self._cache = (x3, None, None)
        return y

    def backward(self, dy):
        x3, mean, var = self._cache
        N, C, L = x3.shape
        dy3 = np.ascontiguousarray(dy).reshape(N, C, L)
        if mean is not None:
            dx = np.empty_like(x3)
            dgamma = np.empty(C, np.float64)
            dbeta = np.empty(C, np.float64)
            kernels.batchnorm_train_backward(x3, dy3, self.effective("weight"), mean, var, self.eps,
                                             dx, dgamma, dbeta)
        else:
            # Eval mode is a fixed affine map per channel: y = gamma * xhat + beta
            # with xhat = (x - running_mean) / sqrt(running_var + eps).
            inv = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
            xhat = (x3 - self.running_mean[:, None]) * inv[:, None]
            dgamma = (dy3 * xhat).sum(axis=(0, 2))
            dbeta = dy3.sum(axis=(0, 2))
            dx = dy3 * (self.effective("weight") * inv).astype(x3.dtype)[:, None]
        self.set_grad("weight", dgamma.astype(x3.dtype))
        self.set_grad("bias", dbeta.astype(x3.dtype))
        return dx.reshape(dy.shape)


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

class Activation(Layer):
    """Elementwise ``fn`` with derivative ``derivative`` (both functions of the input).

    Backward: dx = dy * fn'(x).  Use this for your own activation, e.g.
    ``Activation(np.tanh, lambda x: 1 - np.tanh(x) ** 2)``.
    """

    mixes_channels = False     # elementwise: every channel stays apart

    def __init__(self, fn, derivative, name=None):
        super().__init__()
        self.fn = fn
        self.derivative = derivative
        self.name = name or getattr(fn, "__name__", "activation")

    def extra_repr(self):
        return self.name

    def forward(self, x):
        self._cache = x
        return self.fn(x)

    def backward(self, dy):
        return dy * self.derivative(self._cache)


class SlopeHTanh(Activation):
    """slopehtanh as a layer, with a fused Numba kernel in each direction."""

    def __init__(self):
        super().__init__(act.slopehtanh, act.slopehtanh_derivative, "slopehtanh")

    def forward(self, x):
        self._cache = x
        y = np.empty_like(x)
        kernels.slopehtanh_forward(x.reshape(-1), y.reshape(-1))
        return y

    def backward(self, dy):
        x = self._cache
        dx = np.empty_like(x)
        kernels.slopehtanh_backward(x.reshape(-1), np.ascontiguousarray(dy).reshape(-1), dx.reshape(-1))
        return dx


class ReLU(Activation):
    def __init__(self):
        super().__init__(act.relu, act.relu_derivative, "relu")


class HardTanh(Activation):
    def __init__(self):
        super().__init__(act.hardtanh, act.hardtanh_derivative, "hardtanh")


class Identity(Activation):
    def __init__(self):
        super().__init__(act.identity, act.identity_derivative, "identity")


_ACTIVATION_LAYERS = {
    act.slopehtanh: SlopeHTanh, "slopehtanh": SlopeHTanh,
    act.relu: ReLU, "relu": ReLU,
    act.hardtanh: HardTanh, "hardtanh": HardTanh,
    act.identity: Identity, "identity": Identity,
}


def activation_layer(activation):
    """A fresh activation layer for ``slopehtanh``, ``relu``, ``hardtanh`` or ``identity``.

    Accepts the function itself, its name, or an ``Activation`` layer (copied).
    """
    if isinstance(activation, Activation):
        return copy.deepcopy(activation)
    try:
        return _ACTIVATION_LAYERS[activation]()
    except (KeyError, TypeError):
        known = "slopehtanh, relu, hardtanh, identity"
        raise ValueError(f"unknown activation {activation!r}; expected one of {known} "
                         "(or an Activation layer)") from None


# ---------------------------------------------------------------------------
# Pooling and reshaping
# ---------------------------------------------------------------------------

class GlobalMeanPool(Layer):
    """Mean over the whole image: (N, C, H, W) -> (N, C, 1, 1)."""

    mixes_channels = False

    def output_shape(self, shape, where="GlobalMeanPool"):
        _check_rank(shape, 4, where, "(N, C, H, W)")
        return (shape[0], shape[1], 1, 1)

    def forward(self, x):
        self._cache = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dy):
        # Every pixel contributed 1/(H*W) of the mean.
        N, C, H, W = self._cache
        return np.broadcast_to(dy / (H * W), (N, C, H, W)).copy()


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), channel-major as in PyTorch.

    Channel j becomes the block of H*W features j*H*W ... (j+1)*H*W - 1, so
    channels still do not mix; a Dense layer after it reads each channel
    through a block of columns.
    """

    mixes_channels = False

    def output_shape(self, shape, where="Flatten"):
        if len(shape) < 2:
            raise ValueError(f"{where}: expected an input with a batch axis, got shape {tuple(shape)}")
        return (shape[0], int(np.prod(shape[1:])))

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._cache)


# ---------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------

class Chain(Layer):
    """Layers run one after another; nestable, indexable (``m[0][3]``), iterable.

    Backward runs the layers in reverse, each turning dL/d(its output) into
    dL/d(its input): the chain rule, one layer at a time.

    In eval mode, calling a chain (``model(x)``) takes the fused fast path of
    :mod:`tinyprune.fused` (same outputs up to float rounding); set
    ``fast_eval = False`` to run the plain layers.  ``forward`` always runs them.
    """

    fast_eval = True

    def __init__(self, *layers):
        super().__init__()
        self._fused = None          # the fast path's plan, built when first needed
        self._fused_input = None    # the input of the last fast-path call, for backward
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Chain: element [{i}] is a {type(layer).__name__}, not a Layer")
        self.layers = list(layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Chain(*self.layers[i])
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def children(self):
        return self.layers

    def named_layers(self, path=""):
        for i, layer in enumerate(self.layers):
            yield from layer.named_layers(f"{path}[{i}]")

    def named_parameters(self, prefix=""):
        for i, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}{i}.")

    def named_buffers(self, prefix=""):
        for i, layer in enumerate(self.layers):
            yield from layer.named_buffers(f"{prefix}{i}.")

    def prepare_input(self, x, where="model"):
        return super().prepare_input(x, where)

    def __call__(self, x):
        if not self.training and self.fast_eval:
            from .fused import fused_call
            y = fused_call(self, x)         # None if the chain has no fast path
            if y is not None:
                return y
        return self.forward(self.prepare_input(x))

    def train(self, mode=True):
        self._fused = None          # rebuilt from the weights as they are now
        self._fused_input = None
        return super().train(mode)

    def __getstate__(self):
        state = super().__getstate__()
        state["_fused"] = state["_fused_input"] = None    # a copy builds its own
        return state

    def output_shape(self, shape, where="model"):
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape, f"{where}[{i}]")
        return tuple(shape)

    def check_input(self, shape, where="model"):
        for i, layer in enumerate(self.layers):
            shape = layer.check_input(shape, f"{where}[{i}]")
        return tuple(shape)

    def forward(self, x):
        self._fused_input = None
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        # A model is a Chain, so this is where a user's gradient enters: give it the
        # model's dtype (float64 dlogits must not turn a float32 model's backward
        # pass into a slower float64 one) and make it contiguous for the kernels.
        dy = np.ascontiguousarray(dy, dtype=self.dtype)      # dtype None (no parameters): kept
        if self._fused_input is not None:   # the fast path kept nothing: run the plain layers
            self.forward(self._fused_input)
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def __repr__(self, indent=""):
        lines = ["Chain("]
        for i, layer in enumerate(self.layers):
            text = layer.__repr__(indent + "  ") if isinstance(layer, Chain) else repr(layer)
            lines.append(f"{indent}  ({i}): {text}")
        lines.append(f"{indent})")
        return "\n".join(lines)


def parse_path(path):
    """``"[0][3]"``, ``"model[0][3]"`` or ``(0, 3)`` -> ``(0, 3)``."""
    if isinstance(path, (tuple, list)):
        return tuple(int(i) for i in path)
    text = str(path)
    if text.startswith("model"):
        text = text[len("model"):]
    if not text.startswith("[") or not text.endswith("]"):
        raise ValueError(f"layer path {path!r} is not of the form '[0][3]'")
    try:
        return tuple(int(part) for part in text[1:-1].split("]["))
    except ValueError:
        raise ValueError(f"layer path {path!r} is not of the form '[0][3]'") from None


def layer_at(model, path):
    """The layer at ``path`` (``"[0][3]"`` means ``model[0][3]``); ValueError naming the path if none."""
    layer = model
    walked = "model"
    for i in parse_path(path):
        if not isinstance(layer, Chain) or not -len(layer) <= i < len(layer):
            raise ValueError(f"layer path {path!r} names no layer: {walked} has no element [{i}]")
        layer = layer[i]
        walked += f"[{i}]"
    return layer
