"""The layer library: every layer's forward and backward pass side by side.

A layer is a small object with

* ``forward(x)``: computes the output and keeps what the backward pass needs;
* ``backward(dy)``: given dL/d(output), returns dL/d(input) and stores the
  gradients of its parameters in ``layer.grads`` (overwriting, never adding);
* its parameters as plain NumPy attributes named in ``param_names``
  (``conv.weight``), statistics in ``buffer_names`` (``bn.running_mean``);
* ``masks``: a dict from parameter name to a boolean array (True = kept),
  set by pruning.  A masked entry is used as zero in the forward pass, gets
  zero gradient, and optimisers keep it at exactly zero: selected away, not
  multiplied by 0, so it reads 0 even if NaN or inf is stored there.

Shapes: activations NCHW, conv weights OIHW ``(C_out, C_in, KH, KW)``,
depthwise weights ``(C, 1, KH, KW)``, dense weights ``(out, in)``.  All
layers run in float32 (the default) or float64 (``model.to(np.float64)``).

Calling a layer, ``layer(x)``, checks the input against the whole layer
first (errors name the layer's position, e.g. ``model[0][7]``; train mode
refuses NaN and inf), then runs ``forward``.  ``forward`` and ``backward``
start with cheap checks of their own (dtype and shape: tinyprune/module.py),
so no public method hands a kernel an array it would read out of bounds.

Where things are: ``Layer`` (the contract every layer keeps), ``Dense``,
``BatchNorm2d``, pooling, ``Flatten`` and ``Chain`` are below; the
convolutions are in :mod:`tinyprune.conv`, the activation layers beside
their functions in :mod:`tinyprune.activations` (both reachable from here:
``from tinyprune.layers import Conv2d, SlopeHTanh`` works); what every layer
inherits (modes, state dicts, masks by key, dtype, copies) is in
:mod:`tinyprune.module`; the loops the layers call are in :mod:`tinyprune.kernels`.
"""

import numpy as np

from . import kernels
from .common import check_int, check_number
from .module import Module, NonFiniteError, check_parameter_dtype, layer_at, parse_path  # noqa: F401  (paths: see module.py)

__all__ = [
    "Layer", "Conv2d", "DepthwiseConv2d", "Dense", "BatchNorm2d",
    "Activation", "SlopeHTanh", "ReLU", "HardTanh", "Identity",
    "GlobalMeanPool", "Flatten", "Chain", "activation_layer", "glorot_uniform", "layer_at",
    "parse_path",
]


# ---------------------------------------------------------------------------
# Helpers (also used by tinyprune.conv)
# ---------------------------------------------------------------------------

def glorot_uniform(shape, fan_in, fan_out, rng=None, dtype=np.float32):
    """Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out)), as Flux initialises."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    rng = rng if rng is not None else np.random.default_rng()
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


_LAYOUTS = {2: "(N, features)", 4: "(N, C, H, W)"}


def check_shape(shape, rank, where, size=None, layer="", what=""):
    """A ValueError naming ``where`` unless ``shape`` has ``rank`` axes and,
    if ``size`` is given, ``size`` entries along axis 1 (``what`` says what
    they are: "channels", "input features"; ``layer`` names the layer type).
    """
    if len(shape) != rank:
        raise ValueError(f"{where}: expected a rank-{rank} input {_LAYOUTS[rank]}, got shape {tuple(shape)}")
    if size is not None and shape[1] != size:
        raise ValueError(f"{where}: {layer} expects {size} {what}, got {shape[1]} "
                         f"(input shape {tuple(shape)})")


# ---------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------

class Layer(Module):
    """What every layer computes: forward, backward, and the input shapes it accepts.

    A layer type names its trainable arrays in ``param_names`` (state_dict
    order) and its saved statistics in ``buffer_names``, declares which
    arrays carry a channel (below), and writes ``output_shape``, ``forward``
    and ``backward``.  Modes, state dicts, masks by key, dtype and copies are
    inherited from :class:`tinyprune.module.Module`.
    """

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
        self.training = True  # train or eval mode: see train() and eval()
        self.grads = {}       # parameter name -> its gradient from the last backward
        self.masks = {}       # parameter name -> boolean array, True = kept
        self._cache = None    # what forward keeps for backward
        self._output = None   # (shape, dtype) of forward's output: what dy must be

    def __call__(self, x):
        """Check ``x`` against the whole layer (``prepare_input``), then run ``forward``."""
        return self.forward(self.prepare_input(x))

    def forward(self, x):
        """The output for input ``x``; keeps in ``self._cache`` what backward needs."""
        raise NotImplementedError

    def backward(self, dy):
        """dL/d(input) from ``dy`` = dL/d(output); parameter gradients go to ``set_grad``."""
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

    def masked(self, name, value):
        """``value`` (shaped like parameter ``name``) with the entries its mask prunes set to 0.

        Selects rather than multiplies: a masked entry reads exactly 0 even
        if ``value`` holds NaN or infinity there (NaN x 0 is NaN).
        """
        mask = self.masks.get(name)
        return value if mask is None else np.where(mask, value, value.dtype.type(0))

    def effective(self, name):
        """Parameter ``name`` as the forward pass uses it: masked entries read as zero."""
        return self.masked(name, getattr(self, name))

    def set_grad(self, name, grad):
        """Store the gradient of parameter ``name``; masked entries get zero."""
        self.grads[name] = self.masked(name, grad)


# ---------------------------------------------------------------------------
# Convolutions (tinyprune/conv.py builds them on Layer and the helpers above)
# ---------------------------------------------------------------------------

from .conv import Conv2d, DepthwiseConv2d  # noqa: E402  (conv.py needs Layer defined first)

# The activation layers live in tinyprune.activations, which imports Layer from
# here (and is imported first, by the package); they are handed out here by name.
_ACTIVATION_LAYERS = ("Activation", "SlopeHTanh", "ReLU", "HardTanh", "Identity", "activation_layer")


def __getattr__(name):
    if name in _ACTIVATION_LAYERS:
        from . import activations
        return getattr(activations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------
# Dense layers
# ---------------------------------------------------------------------------

class Dense(Layer):
    """Fully connected layer: y = x @ weight.T + bias.

    ``weight`` (out, in), ``bias`` (out,); input (N, in) -> output (N, out).
    """

    mixes_channels = True
    out_channel_arrays = {"weight": 0, "bias": 0}
    in_channel_arrays = {"weight": 1}

    def __init__(self, n_in, n_out, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        n_in = check_int(n_in, "n_in", "Dense")
        n_out = check_int(n_out, "n_out", "Dense")
        dtype = check_parameter_dtype(dtype, "dtype", "Dense")
        self.weight = glorot_uniform((n_out, n_in), n_in, n_out, rng, dtype)
        self.bias = np.zeros(n_out, dtype) if bias else None
        self.param_names = ("weight", "bias") if bias else ("weight",)

    n_out = property(lambda self: self.weight.shape[0])
    n_in = property(lambda self: self.weight.shape[1])

    def extra_repr(self):
        return f"{self.n_in}, {self.n_out}, bias={self.bias is not None}"

    def output_shape(self, shape, where="Dense"):
        check_shape(shape, 2, where, self.n_in, "Dense", "input features")
        return (shape[0], self.n_out)

    def forward(self, x):
        x = self.forward_input(x)
        y = x @ self.effective("weight").T
        if self.bias is not None:
            y += self.effective("bias")
        return self.keep_for_backward(x, y)

    def backward(self, dy):
        """Exercise layers.1: the gradients of y = x W^T + b.

        dy (N, out) is dL/dy; forward kept x (N, in) in ``self._cache``; W is
        (out, in), b (out,) or None.  Each entry reaches the loss through every
        output it is summed into, and the chain rule adds those paths:

            dL/dW[o, i] = sum over n of dy[n, o] * x[n, i]    (out, in), like W
            dL/db[o]    = sum over n of dy[n, o]              (out,), only with a bias
            dL/dx[n, i] = sum over o of dy[n, o] * W[o, i]    (N, in), like x

        Store dL/dW, dL/db with ``self.set_grad`` (it zeroes what pruning
        masked); for dL/dx take W as forward did, ``self.effective("weight")``.
        """
        dy = self.backward_input(dy)
        x = self._cache
        ### BEGIN SOLUTION
        self.set_grad("weight", dy.T @ x)                  # dW = dy^T x
        if self.bias is not None:
            self.set_grad("bias", dy.sum(axis=0))
        return dy @ self.effective("weight")
        ### END SOLUTION


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

    A train-mode batch that would make a running estimate NaN or inf (a NaN
    in it, or a variance overflowing the dtype) is refused before any moves:
    it would spoil every later eval output.  The check reads C numbers.
    """

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    mixes_channels = False
    out_channel_arrays = {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}

    def __init__(self, channels, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        channels = check_int(channels, "channels", "BatchNorm2d")
        self.eps = check_number(eps, "eps", "BatchNorm2d", low=0.0, low_open=True)
        self.momentum = check_number(momentum, "momentum", "BatchNorm2d", 0.0, 1.0)
        dtype = check_parameter_dtype(dtype, "dtype", "BatchNorm2d")
        self.weight = np.ones(channels, dtype)
        self.bias = np.zeros(channels, dtype)
        self.running_mean = np.zeros(channels, dtype)
        self.running_var = np.ones(channels, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    channels = property(lambda self: self.weight.shape[0])

    def extra_repr(self):
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}"

    def output_shape(self, shape, where="BatchNorm2d"):
        check_shape(shape, 4, where, self.channels, "BatchNorm2d", "channels")
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
        x = self.forward_input(x)
        N, C, H, W = x.shape
        x3 = x.reshape(N, C, H * W)
        y = np.empty_like(x)
        if not self.training:
            kernels.batchnorm_eval_forward(x3, self.effective("weight"), self.effective("bias"),
                                           self.running_mean, self.running_var, self.eps,
                                           y.reshape(N, C, H * W))
            return self.keep_for_backward((x3, None, None), y)
        mean = np.empty(C, np.float64)
        var = np.empty(C, np.float64)
        kernels.batchnorm_train_forward(x3, self.effective("weight"), self.effective("bias"),
                                        self.eps, y.reshape(N, C, H * W), mean, var)
        M = N * H * W
        m = self.momentum
        with np.errstate(over="ignore", invalid="ignore"):     # an overflow is refused just below
            running_mean = ((1 - m) * self.running_mean + m * mean).astype(x.dtype)
            running_var = ((1 - m) * self.running_var + m * var * (M / (M - 1))).astype(x.dtype)
        if not (np.isfinite(running_mean).all() and np.isfinite(running_var).all()):
            stored = np.isfinite(self.running_mean).all() and np.isfinite(self.running_var).all()
            cause = "NaN or infinity in its input, or values too large" if stored else \
                "its running statistics already hold NaN or infinity"
            raise NonFiniteError(f"BatchNorm2d({C}): the batch's statistics are not finite in {x.dtype} "
                             f"({cause}); the running statistics were left as they were")
        self.running_mean, self.running_var = running_mean, running_var
        self.num_batches_tracked = self.num_batches_tracked + 1
        return self.keep_for_backward((x3, mean, var), y)

    def backward(self, dy):
        """Exercise layers.3: BatchNorm's gradients in train mode (the eval-mode branch is given).

        Train-mode forward computed per channel, over its M = N*H*W values
        (x3, dy3: (N, C, L), L = H*W), and kept x3, ``mean`` and ``var``:
        mu = mean(x), var = mean((x - mu)^2), xhat = (x - mu) / sqrt(var + eps),
        y = gamma * xhat + beta.  Compute dL/dbeta, dL/dgamma ((C,)) and dL/dx.
        As mu and var are made from x, each x reaches the loss through its own
        xhat and through mu and var (every output of its channel): follow the
        chain rule along the three paths, dL/dvar, dL/dmu, then dL/dx, and
        simplify (Ioffe and Szegedy, "Batch Normalization", 2015, section 3).

        Write the loops in ``kernels._batchnorm_train_backward``, and call it here as
        ``kernels.batchnorm_train_backward`` to fill the ``dx``, ``dgamma``, ``dbeta``
        allocated for you.  Eval mode: dx = gamma * dy / sqrt(running_var + eps).
        """
        dy = self.backward_input(dy)
        x3, mean, var = self._cache
        N, C, L = x3.shape
        dy3 = np.ascontiguousarray(dy).reshape(N, C, L)
        gamma = self.effective("weight")            # as forward used it: pruned entries read 0
        if mean is not None:
            dx = np.empty_like(x3)
            dgamma = np.empty(C, np.float64)
            dbeta = np.empty(C, np.float64)
            ### BEGIN SOLUTION
            # inv = 1/sqrt(var + eps), dxhat = gamma * dy, and per channel:
            #   dL/dvar = sum(dxhat * (x - mu)) * (-inv^3 / 2) = -gamma * inv^2 * dgamma / 2
            #   dL/dmu  = -gamma * inv * dbeta        (its path through var adds sum(x - mu) = 0)
            #   dx = dxhat * inv + dL/dvar * 2 (x - mu) / M + dL/dmu / M
            #      = gamma * inv / M * (M dy - dbeta - xhat dgamma)      (two sums, then this line)
            kernels.batchnorm_train_backward(x3, dy3, gamma, mean, var, self.eps, dx, dgamma, dbeta)
            ### END SOLUTION
        else:
            inv = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
            xhat = (x3 - self.running_mean[:, None]) * inv[:, None]
            dgamma = (dy3 * xhat).sum(axis=(0, 2))
            dbeta = dy3.sum(axis=(0, 2))
            dx = dy3 * (gamma * inv).astype(x3.dtype)[:, None]
        self.set_grad("weight", dgamma.astype(x3.dtype))
        self.set_grad("bias", dbeta.astype(x3.dtype))
        return dx.reshape(dy.shape)


# ---------------------------------------------------------------------------
# Pooling and reshaping
# ---------------------------------------------------------------------------

class GlobalMeanPool(Layer):
    """Mean over the whole image: (N, C, H, W) -> (N, C, 1, 1)."""

    mixes_channels = False

    def output_shape(self, shape, where="GlobalMeanPool"):
        check_shape(shape, 4, where)
        return (shape[0], shape[1], 1, 1)

    def forward(self, x):
        x = self.forward_input(x)
        return self.keep_for_backward(x.shape, x.mean(axis=(2, 3), keepdims=True))

    def backward(self, dy):
        # Every pixel contributed 1/(H*W) of the mean.
        dy = self.backward_input(dy)
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
        x = self.forward_input(x)
        return self.keep_for_backward(x.shape, x.reshape(x.shape[0], -1))

    def backward(self, dy):
        return self.backward_input(dy).reshape(self._cache)


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

    def _where(self):
        return "model"

    def output_shape(self, shape, where="model"):
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape, f"{where}[{i}]")
        return tuple(shape)

    def check_input(self, shape, where="model"):
        for i, layer in enumerate(self.layers):
            shape = layer.check_input(shape, f"{where}[{i}]")
        return tuple(shape)

    def __call__(self, x):
        if not self.training and self.fast_eval:
            from .fused import fused_call
            y = fused_call(self, x)         # None if the chain has no fast path
            if y is not None:
                return y
        return self.forward(x)            # a chain's forward checks all that a call checks

    def train(self, mode=True):
        self._fused = None                # rebuilt from the weights as they are now
        self._fused_input = None
        return super().train(mode)

    def __getstate__(self):
        state = super().__getstate__()
        state["_fused"] = state["_fused_input"] = None    # a copy builds its own
        return state

    def forward(self, x):
        # The whole chain is checked before any layer runs (naming the layer that
        # refuses, model[0][7]; in train mode refusing NaN and infinity), so a
        # refusal deep inside moves no statistic.
        return self._run(self.prepare_input(x))

    def _run(self, x):
        """Run the layers on ``x``, which the whole chain has accepted: nested chains skip their check."""
        self._cache = None                  # until every layer has run
        self._fused_input = None
        for layer in self.layers:
            x = layer._run(x) if isinstance(layer, Chain) else layer.forward(x)
        return self.keep_for_backward(True, x)

    def backward(self, dy):
        # A model is a Chain, so this is where a user's gradient enters: check it
        # against the last output and give it that output's dtype (float64 dlogits
        # must not turn a float32 model's backward pass into a slower float64 one).
        if self._fused_input is not None:   # the fast path kept nothing: run the plain layers
            self._run(self._fused_input)
        dy = self.backward_input(dy)
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

