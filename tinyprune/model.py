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


def MobileNet(activation="slopehtanh", width_mult=1.0, fcsize=1024, nclasses=1000, inchannels=3,
              seed=None, rng=None, dtype=np.float32):
    """Build MobileNet v1 with every channel count scaled by ``width_mult`` (truncated).

    ``MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)`` is the tutorial's
    model: 224,048 conv and dense weights, (N, 3, 96, 96) -> (N, 1) logits
    (``TUTORIAL_INPUT`` is the batch of one image the tutorial uses).
    ``seed`` or ``rng`` (a ``numpy.random.Generator``) makes the Glorot
    initialisation reproducible.  New models start in train mode.
    """
    check_number(width_mult, "width_mult", "MobileNet", low=0, low_open=True)
    check_int(fcsize, "fcsize", "MobileNet")
    check_int(nclasses, "nclasses", "MobileNet")
    check_int(inchannels, "inchannels", "MobileNet")
    activation_layer(activation)  # fail early on an unknown activation
    rng = rng if rng is not None else np.random.default_rng(seed)

    layers = []
    c_in = inchannels
    for depthwise, channels, stride, repeats in MOBILENET_CONFIG:
        c_out = int(channels * width_mult)
        if c_out < 1:
            raise ValueError(f"MobileNet: width_mult {width_mult} leaves a layer with {channels} "
                             "channels at width 1 with none")
        for _ in range(repeats):
            if depthwise:
                layers += [DepthwiseConv2d(c_in, 3, stride=stride, pad=1, rng=rng, dtype=dtype),
                           BatchNorm2d(c_in, dtype=dtype),
                           activation_layer(activation),
                           Conv2d(c_in, c_out, 1, rng=rng, dtype=dtype),
                           BatchNorm2d(c_out, dtype=dtype),
                           activation_layer(activation)]
            else:
                layers += [Conv2d(c_in, c_out, 3, stride=stride, pad=1, rng=rng, dtype=dtype),
                           BatchNorm2d(c_out, dtype=dtype),
                           activation_layer(activation)]
            c_in = c_out
    backbone = Chain(*layers)
    head = Chain(GlobalMeanPool(),
                 Flatten(),
                 Dense(c_in, fcsize, rng=rng, dtype=dtype),
                 activation_layer(activation),
                 Dense(fcsize, nclasses, rng=rng, dtype=dtype))
    return Chain(backbone, head)
