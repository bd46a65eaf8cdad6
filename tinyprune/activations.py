"""Activation functions as plain NumPy functions, with their derivatives.

These are the definitions a reader checks against the math; the activation
*layers* in :mod:`tinyprune.layers` use them (``slopehtanh`` through a fused
Numba kernel with the same values).  Every function maps an array to an
array of the same shape and dtype.
"""

import numpy as np

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
    ``np.where`` does it; ``SlopeHTanh.backward`` (tinyprune/layers.py)
    says where else this exercise is written.
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
