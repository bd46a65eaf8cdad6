"""Activation functions as plain NumPy functions, with their derivatives, and the layers that apply them.

The functions are the definitions a reader checks against the math; every
one maps an array to an array of the same shape and dtype.  The layers
(``Activation``, ``SlopeHTanh``, ``ReLU``, ``HardTanh``, ``Identity``,
below; ``slopehtanh`` through a fused Numba kernel with the same values)
follow the contract of :class:`tinyprune.layers.Layer` and are also
reachable from there (``from tinyprune.layers import SlopeHTanh`` works).
"""

import copy

import numpy as np

from . import kernels
from .layers import Layer

__all__ = ["slopehtanh", "relu", "hardtanh", "identity", "softshrink"]


def hardtanh(x):
    """Clamp to [-1, 1]."""
    return np.clip(x, -1, 1)


def softshrink(x, lam=0.5):
    """Shrink towards zero by ``lam``; zero on [-lam, lam]."""
    return np.where(x > lam, x - lam, np.where(x < -lam, x + lam, 0)).astype(x.dtype, copy=False)


def slopehtanh(x):
    """``hardtanh(x) - softshrink(x, 1) / 4``: the identity on [-1, 1], slope -1/4 outside.

    Unlike hardtanh its slope never vanishes, so a unit pushed past +-1 still
    gets a gradient (with the sign flipped).
    """
    x = np.asarray(x)
    return (hardtanh(x) - softshrink(x, 1) / 4).astype(x.dtype, copy=False)


def relu(x):
    """max(x, 0)."""
    return np.maximum(x, 0)


def identity(x):
    """x itself."""
    return x


# The derivatives, as functions of the input.  At the kinks (0 for relu,
# +-1 for the others) we take the value from the inside of the interval.

def slopehtanh_derivative(x):
    """Exercise layers.2 (the NumPy version): slopehtanh'(x), entry by entry, in x's shape and dtype.

    Differentiate the three pieces of ``slopehtanh`` (its docstring); at the
    kinks x = -1 and x = 1 give the slope from inside [-1, 1].  One
    ``np.where`` does it; ``SlopeHTanh.backward`` (below) says where else
    this exercise is written.
    """
    ### BEGIN SOLUTION
    return np.where(np.abs(x) <= 1, 1.0, -0.25).astype(x.dtype, copy=False)
    ### END SOLUTION


def hardtanh_derivative(x):
    return (np.abs(x) <= 1).astype(x.dtype)


def relu_derivative(x):
    return (x > 0).astype(x.dtype)


def identity_derivative(x):
    return np.ones_like(x)


# ---------------------------------------------------------------------------
# The activation layers
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
        x = self.forward_input(x)
        return self.keep_for_backward(x, self.fn(x))

    def backward(self, dy):
        dy = self.backward_input(dy)
        return dy * self.derivative(self._cache)


class SlopeHTanh(Activation):
    """slopehtanh as a layer, with a fused Numba kernel in each direction."""

    def __init__(self):
        super().__init__(slopehtanh, slopehtanh_derivative, "slopehtanh")

    def forward(self, x):
        x = self.forward_input(x)
        y = np.empty_like(x)
        kernels.slopehtanh_forward(x.reshape(-1), y.reshape(-1))
        return self.keep_for_backward(x, y)

    def backward(self, dy):
        """Exercise layers.2: dL/dx for slopehtanh, entry by entry (x, dy, dx: the input's shape).

        f(x) = x on [-1, 1], 1 - (x - 1)/4 above, -1 - (x + 1)/4 below; each output
        depends on its own input only, so dx = dy * f'(x), taking at the kinks x = +-1
        the slope from inside [-1, 1].  Written three times: the loop of
        ``kernels._slopehtanh_backward``; its call here (``kernels.slopehtanh_backward``
        on flat views of x, dy and the ``dx`` allocated for you); ``slopehtanh_derivative`` above.
        """
        dy = self.backward_input(dy)
        x = self._cache
        dx = np.empty_like(x)
        ### BEGIN SOLUTION
        kernels.slopehtanh_backward(x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
        ### END SOLUTION
        return dx


class ReLU(Activation):
    def __init__(self):
        super().__init__(relu, relu_derivative, "relu")


class HardTanh(Activation):
    def __init__(self):
        super().__init__(hardtanh, hardtanh_derivative, "hardtanh")


class Identity(Activation):
    def __init__(self):
        super().__init__(identity, identity_derivative, "identity")


_ACTIVATION_LAYERS = {
    slopehtanh: SlopeHTanh, "slopehtanh": SlopeHTanh,
    relu: ReLU, "relu": ReLU,
    hardtanh: HardTanh, "hardtanh": HardTanh,
    identity: Identity, "identity": Identity,
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
