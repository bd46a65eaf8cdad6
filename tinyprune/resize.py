"""Resizing: cutting unread channels out of the architecture.

``prune_propagate`` leaves a model with the same shapes and many zeros.
``resize`` makes it smaller: a channel that its consumer does not read at all
(the consumer's input slice for it is entirely zero) is removed from every
layer of its segment (see :mod:`tinyprune.propagate`):

* the producer's output row j (and bias j): weight (C, ...) -> (C', ...);
* depthwise filter j: weight (C, 1, KH, KW) -> (C', 1, KH, KW) (and bias j);
* every BatchNorm's gamma j, beta j, running mean j and running variance j
  (sliced, never re-initialised, so the learned statistics stay);
* the consumer's input slice: conv weight (O, C, KH, KW) -> (O, C', KH, KW),
  dense weight (O, C*block) -> (O, C'*block).

This is exact: the channels of a segment never mix between producer and
consumer, so a channel nobody reads can go from the whole segment without
changing any other value, in train or in eval mode.  In MobileNet that
covers every group: the first full conv with its depthwise and pointwise
neighbours, each pointwise -> depthwise -> pointwise group, and the last
pointwise conv with the dense layer after pool + flatten.  The model's input
channels and output channels are never removed.

Masks are sliced along with their arrays.  ``channel_counts`` and
``resize(model, return_record=True)`` give the per-layer channel counts
before and after, ready to plot.
"""

from collections import namedtuple

import numpy as np

from .layers import BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Layer
from .propagate import segments

__all__ = ["resize", "channel_counts", "ChannelCount", "ResizedLayer"]

ChannelCount = namedtuple("ChannelCount", "path type c_in c_out")
ChannelCount.__doc__ = """Channels of one layer: ``path`` ("[0][3]"), ``type`` ("Conv2d"),
``c_in`` and ``c_out`` (for Dense: n_in and n_out; BatchNorm2d and
DepthwiseConv2d have c_in == c_out)."""

ResizedLayer = namedtuple("ResizedLayer", "path type c_in_before c_out_before c_in_after c_out_after")
ResizedLayer.__doc__ = """One layer's channel counts before and after ``resize``."""


def channel_counts(model):
    """Per-layer channel counts: a list of :class:`ChannelCount`, in ``named_layers`` order.

    One row for every Conv2d, DepthwiseConv2d, Dense and BatchNorm2d (the
    layers whose size is a channel count); activations, pooling and flatten
    have no size of their own and are left out.  For a plot::

        rows = channel_counts(model)
        plt.bar([r.path for r in rows], [r.c_out for r in rows])
    """
    rows = []
    for path, layer in model.named_layers():
        if isinstance(layer, Conv2d):
            rows.append(ChannelCount(path, "Conv2d", layer.c_in, layer.c_out))
        elif isinstance(layer, Dense):
            rows.append(ChannelCount(path, "Dense", layer.n_in, layer.n_out))
        elif isinstance(layer, (DepthwiseConv2d, BatchNorm2d)):
            rows.append(ChannelCount(path, type(layer).__name__, layer.channels, layer.channels))
    return rows


def _take(layer, name, index):
    """Replace ``layer.<name>`` (and its mask) by the entries at ``index``, as a fresh array."""
    value = getattr(layer, name, None)
    if value is None:
        return
    setattr(layer, name, np.ascontiguousarray(value[index]))
    if name in layer.masks:
        layer.masks[name] = np.ascontiguousarray(layer.masks[name][index])
    layer.grads = {}       # old gradients have the old shapes
    layer._cache = None


def resize(model, return_record=False):
    """A smaller copy of ``model`` with every unread channel removed; ``model`` is unchanged.

    A channel is removed when its consumer's input slice is entirely zero
    (run ``prune_propagate`` first so that pruned channels get there).  The
    result computes exactly what ``model`` computes, in train and in eval
    mode; parameters, running statistics and masks of the surviving channels
    are kept as they were.  If no channel of a segment is read, its first
    channel is kept so that every layer keeps at least one.

    With ``return_record=True`` returns ``(resized, rows)``, ``rows`` a list of
    :class:`ResizedLayer` (path, type, c_in/c_out before, c_in/c_out after) for
    every conv, depthwise, dense and BatchNorm layer.

    Raises ValueError naming the layer (``model[0][7]``) for a layer whose
    channels it cannot follow (an unknown layer type) or channel counts that
    do not fit together.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"resize: expected a model (a Layer or Chain), got {type(model).__name__}")
    resized = model.copy()
    before = channel_counts(resized)

    # Decide everything on the unchanged copy first: a layer is the consumer
    # of one segment (cut along axis 1) and the producer of the next (axis 0),
    # and each cut must be computed from the original shapes.
    cuts = []
    for seg in segments(resized):
        unread = seg.unread()
        if not unread.any():
            continue
        keep = np.flatnonzero(~unread)
        if keep.size == 0:
            keep = np.array([0])
        cuts.append((seg, keep, seg.consumer_index(keep)))

    for seg, keep, consumer_index in cuts:
        _take(seg.producer, "weight", keep)
        _take(seg.producer, "bias", keep)
        for _, layer in seg.inner:
            if isinstance(layer, DepthwiseConv2d):
                _take(layer, "weight", keep)
                _take(layer, "bias", keep)
            elif isinstance(layer, BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    _take(layer, name, keep)
        _take(seg.consumer, "weight", consumer_index)

    if not return_record:
        return resized
    after = channel_counts(resized)
    rows = [ResizedLayer(b.path, b.type, b.c_in, b.c_out, a.c_in, a.c_out)
            for b, a in zip(before, after)]
    return resized, rows
