"""MobileNet v1, as the tutorial builds it (Metalhead's ``MobileNetv1``).

The network is two chains::

    model[0]  backbone: a full 3x3 conv, then 13 depthwise-separable groups
    model[1]  head:     GlobalMeanPool -> Flatten -> Dense -> act -> Dense

A depthwise-separable group is six layers: a 3x3 depthwise conv (padding 1,
the group's stride) -> BatchNorm -> act -> a 1x1 "pointwise" conv ->
BatchNorm -> act.  The depthwise conv filters each channel on its own; the
pointwise conv mixes channels.  Splitting a full 3x3 conv this way costs
about 1/9 + 1/C_out of its multiplies, which is why MobileNet is cheap.
"""

import numpy as np

from .common import check_int, check_number
from .layers import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, activation_layer)

__all__ = ["MobileNet", "MOBILENET_CONFIG", "TUTORIAL_INPUT"]

TUTORIAL_INPUT = (1, 3, 96, 96)   # the tutorial's input: a batch of one 96 x 96 RGB image, NCHW

# (depthwise separable?, output channels at width 1, stride, repeats)
MOBILENET_CONFIG = (
    (False, 32, 2, 1),
    (True, 64, 1, 1),
    (True, 128, 2, 1),
    (True, 128, 1, 1),
    (True, 256, 2, 1),
    (True, 256, 1, 1),
    (True, 512, 2, 1),
    (True, 512, 1, 5),
    (True, 1024, 2, 1),
    (True, 1024, 1, 1),
)


# The BatchNorm gammas a new MobileNet starts with, by ``init``: "flux" is
# Flux's (and PyTorch's) gamma = 1; "calm" halves it so that the network
# trains from scratch (MobileNet's docstring says why).
BATCHNORM_GAMMA = {"calm": 0.5, "flux": 1.0}

MAX_WEIGHTS = 2 ** 28   # conv and dense weights; the tutorial's model has 224,048, width 1 has 4.2 million


def MobileNet(activation="slopehtanh", width_mult=1.0, fcsize=1024, nclasses=1000, inchannels=3,
              seed=None, rng=None, dtype=np.float32, init="calm"):
    """Build MobileNet v1 with every channel count scaled by ``width_mult`` (truncated).

    ``MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)`` is the tutorial's
    model: 224,048 conv and dense weights, (N, 3, 96, 96) -> (N, 1) logits
    (``TUTORIAL_INPUT`` is the batch of one image the tutorial uses).
    ``seed`` (an integer >= 0) or ``rng`` (a ``numpy.random.Generator``)
    makes the Glorot initialisation reproducible.  ``dtype`` is float32 or
    float64.  New models start in train mode.

    ``init`` chooses the starting BatchNorm gammas; every random draw is the
    same for both, so a seed gives the same conv and dense weights:

    * ``"calm"`` (the default): gamma = 0.5.  The network trains from scratch.
    * ``"flux"``: gamma = 1, Flux's exact initialisation.  Each BatchNorm
      then hands the activation unit-variance inputs; for slopehtanh a
      third of them lie beyond +-1, where its slope flips to -1/4, and 27
      such folds in a row make the untrained network chaotic: Adam finds
      little to follow, and training stays near chance for epochs.
      Halving gamma keeps most units in slopehtanh's linear middle.  (The
      README and ``tutorials/layers.py`` tell the longer story.)

    No count depends on ``init``: pruning and counting read the conv and
    dense weights only.

    Every argument is checked before anything is allocated; a configuration
    of more than ``MAX_WEIGHTS`` weights (a width_mult of 100 instead of
    1.00, say) is refused rather than left to exhaust the memory.
    """
    check_number(width_mult, "width_mult", "MobileNet", low=0, low_open=True)
    check_int(fcsize, "fcsize", "MobileNet")
    check_int(nclasses, "nclasses", "MobileNet")
    check_int(inchannels, "inchannels", "MobileNet")
    _check_dtype(dtype)
    gamma = _check_init(init)
    groups = _groups(width_mult, inchannels)
    _check_size(groups, fcsize, nclasses)
    try:
        activation_layer(activation)  # fail early on an unknown activation
        rng = _generator(seed, rng)
    except (TypeError, ValueError) as error:
        raise type(error)(f"MobileNet: {error}") from None

    backbone = _backbone(groups, activation, gamma, rng, dtype)
    c_in = groups[-1][2]
    head = Chain(GlobalMeanPool(),
                 Flatten(),
                 Dense(c_in, fcsize, rng=rng, dtype=dtype),
                 activation_layer(activation),
                 Dense(fcsize, nclasses, rng=rng, dtype=dtype))
    return Chain(backbone, head)


def _backbone(groups, activation, gamma, rng, dtype):
    """The backbone Chain: the groups' convs drawn from ``rng`` in order, every BatchNorm gamma at ``gamma``."""
    def batchnorm(channels):
        layer = BatchNorm2d(channels, dtype=dtype)
        layer.weight[:] = gamma
        return layer

    layers = []
    for depthwise, c_in, c_out, stride in groups:
        if depthwise:
            layers += [DepthwiseConv2d(c_in, 3, stride=stride, pad=1, rng=rng, dtype=dtype),
                       batchnorm(c_in),
                       activation_layer(activation),
                       Conv2d(c_in, c_out, 1, rng=rng, dtype=dtype),
                       batchnorm(c_out),
                       activation_layer(activation)]
        else:
            layers += [Conv2d(c_in, c_out, 3, stride=stride, pad=1, rng=rng, dtype=dtype),
                       batchnorm(c_out),
                       activation_layer(activation)]
    return Chain(*layers)


def _groups(width_mult, inchannels):
    """``(depthwise?, c_in, c_out, stride)`` for every group of the backbone, in order."""
    groups = []
    c_in = inchannels
    for depthwise, channels, stride, repeats in MOBILENET_CONFIG:
        if channels * width_mult > MAX_WEIGHTS:    # before int(): a huge float may not convert
            raise ValueError(f"MobileNet: width_mult {width_mult} gives a layer of {channels * width_mult:.3g} "
                             f"channels; the model would have more than MAX_WEIGHTS = {MAX_WEIGHTS:,} weights")
        c_out = int(channels * width_mult)
        if c_out < 1:
            raise ValueError(f"MobileNet: width_mult {width_mult} leaves a layer with {channels} "
                             "channels at width 1 with none")
        for _ in range(repeats):
            groups.append((depthwise, c_in, c_out, stride))
            c_in = c_out
    return groups


def _check_size(groups, fcsize, nclasses):
    """Refuse a configuration with more than MAX_WEIGHTS conv and dense weights, before allocating it."""
    weights = sum(9 * c_in + c_in * c_out if depthwise else 9 * c_in * c_out
                  for depthwise, c_in, c_out, _ in groups)
    weights += groups[-1][2] * fcsize + fcsize * nclasses
    if weights > MAX_WEIGHTS:
        raise ValueError(f"MobileNet: this configuration has {weights:,} conv and dense weights, more than "
                         f"MAX_WEIGHTS = {MAX_WEIGHTS:,}; check width_mult, fcsize, nclasses and inchannels")


def _check_init(init):
    """The starting BatchNorm gamma that ``init`` names, or an error listing the names."""
    names = " or ".join(map(repr, BATCHNORM_GAMMA))
    if not isinstance(init, str):
        raise TypeError(f"MobileNet: init must be the string {names}, got {init!r}")
    if init not in BATCHNORM_GAMMA:
        raise ValueError(f"MobileNet: init must be {names}, got {init!r}")
    return BATCHNORM_GAMMA[init]


def _check_dtype(dtype):
    try:
        kind = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"MobileNet: dtype must be float32 or float64, got {dtype!r}") from None
    if kind not in (np.float32, np.float64):
        raise ValueError(f"MobileNet: dtype must be float32 or float64, got {kind}")


def _generator(seed, rng):
    """The random generator for the initial weights: ``rng`` itself, or a new one from ``seed``."""
    if rng is None:
        try:
            return np.random.default_rng(seed)
        except (TypeError, ValueError) as error:       # NumPy's words do not say which argument
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"seed must be None or an integer >= 0, got {seed!r}") from None
    if not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng
