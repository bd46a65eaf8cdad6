"""Resizing: cutting unread channels out of the architecture.

``prune_propagate`` leaves a model with the same shapes and many zeros.
``resize`` makes it smaller: a channel that its consumer does not read at all
(the consumer's input slice for it is entirely zero) is removed from every
layer of its segment (see :mod:`tinyprune.propagate`):

* the producer's output row j (and bias j): weight (C, ...) -> (C', ...);
* depthwise filter j: weight (C, 1, KH, KW) -> (C', 1, KH, KW);
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

``sort_channels`` permutes the same arrays instead of cutting them: every
segment's channels in descending importance, the function unchanged.  Run
before ``resize``, it leaves the kept channels of the smaller model in
importance order (as the MIT 6.5940 pruning lab does before it cuts the
last channels of each layer).
"""

from collections import namedtuple

import numpy as np

from .propagate import channel_count, channel_index, segments
from .module import check_model

__all__ = ["resize", "sort_channels", "channel_counts", "ChannelCount", "ResizedLayer"]

ChannelCount = namedtuple("ChannelCount", "path type c_in c_out")
ChannelCount.__doc__ = """Channels of one layer: ``path`` ("[0][3]"), ``type`` ("Conv2d"),
``c_in`` and ``c_out`` (for Dense: n_in and n_out; BatchNorm2d and
DepthwiseConv2d have c_in == c_out)."""

ResizedLayer = namedtuple("ResizedLayer", "path type c_in_before c_out_before c_in_after c_out_after")
ResizedLayer.__doc__ = """One layer's channel counts before and after ``resize``."""


def channel_counts(model):
    """Per-layer channel counts: a list of :class:`ChannelCount`, in ``named_layers`` order.

    One row for every layer that holds arrays carrying its output channels
    (Conv2d, DepthwiseConv2d, Dense, BatchNorm2d: the layers whose size is a
    channel count); activations, pooling and flatten have no size of their
    own and are left out.  A layer that keeps channels apart has as many
    input channels as output channels.  For a plot::

        rows = channel_counts(model)
        plt.bar([r.path for r in rows], [r.c_out for r in rows])
    """
    check_model(model, "channel_counts")
    rows = []
    for path, layer in model.named_layers():
        c_out = channel_count(layer, layer.out_channel_arrays)
        if c_out is None:
            continue
        c_in = channel_count(layer, layer.in_channel_arrays) if layer.mixes_channels else c_out
        rows.append(ChannelCount(path, type(layer).__name__, c_in, c_out))
    return rows


def _slice_segment(seg, channels, consumer_index):
    """Keep only ``channels`` of the segment ``seg``, in that order, in every array that carries them.

    ``seg``: a :class:`tinyprune.propagate.Segment` of C channels, from
    ``seg.producer`` through the per-channel layers ``seg.inner`` (a list
    of (path, layer)) to ``seg.consumer``; ``channels``: (C',) channel
    numbers; ``consumer_index``: the index into the consumer's reading
    array (``seg.reading_array``, its weight) that selects what reads
    ``channels`` -- computed by the caller before any change, because it
    depends on the producer's channel count, which this cut changes.

    Replace, by the entries for ``channels`` along the array's channel axis:

    * every array of the producer and of each layer in ``seg.inner`` that
      carries their output channels (declared as ``{name: axis}`` in
      ``layer.out_channel_arrays``; a conv without a bias holds None there):
      the producer's weight (C, ...) -> (C', ...) and bias, a depthwise
      filter (C, 1, KH, KW) -> (C', 1, KH, KW), a BatchNorm's gamma, beta
      *and running statistics* (eval mode uses them; sliced, never reset);
      ``seg.channel_arrays()`` lists them as (layer, name, axis) and
      ``channel_index(axis, channels)`` is the index along one axis;
    * the consumer's reading array at ``consumer_index``: a conv's input
      slices ``W[:, channels]``, its axis 1 (axis 0 is its outputs, which
      the next segment may cut), a dense layer's columns.

    Each new array is a fresh C-contiguous one (``np.ascontiguousarray``),
    and an array that carries a mask (``layer.masks[name]``) gets its mask
    cut by the same index.  Nothing else changes, so the model still
    computes what it did if the channels left out were read by nobody.
    """
    ### BEGIN SOLUTION
    cuts = [(layer, name, channel_index(axis, channels)) for layer, name, axis in seg.channel_arrays()]
    cuts.append((seg.consumer, seg.reading_array, consumer_index))
    for layer, name, index in cuts:
        setattr(layer, name, np.ascontiguousarray(getattr(layer, name)[index]))
        if name in layer.masks:
            layer.masks[name] = np.ascontiguousarray(layer.masks[name][index])
    ### END SOLUTION


def _select_channels(selections):
    """Keep, for each ``(segment, channels, consumer_index)``, the ``channels`` in that order.

    Every array the segment's channels cross is cut (or permuted) along its
    channel axis, and the consumer's reading array at ``consumer_index``
    (``_slice_segment``).  That index must be computed before any change: a
    cut producer changes the channel count it is computed from.  The layers
    cut forget their gradients and forward caches, which have the old shapes.
    """
    for seg, channels, consumer_index in selections:
        _slice_segment(seg, channels, consumer_index)
        for layer in [layer for layer, _, _ in seg.channel_arrays()] + [seg.consumer]:
            layer.grads = {}
            layer._cache = None


def resize(model, return_record=False):
    """A smaller copy of ``model`` with every unread channel removed; ``model`` is unchanged.

    A channel is removed when its consumer's input slice is entirely zero
    (run ``prune_propagate`` first so that pruned channels get there).  The
    result computes exactly what ``model`` computes, in train and in eval
    mode; parameters, running statistics and masks of the surviving channels
    are kept as they were.  If no channel of a segment is read, its first
    channel is kept so that every layer keeps at least one.  Which arrays
    to cut, and along which axis, every layer declares
    (``out_channel_arrays``, ``in_channel_arrays``).

    With ``return_record=True`` returns ``(resized, rows)``, ``rows`` a list of
    :class:`ResizedLayer` (path, type, c_in/c_out before, c_in/c_out after) for
    every conv, depthwise, dense and BatchNorm layer.

    Raises ValueError naming the layer (``model[0][7]``) for a layer whose
    channels it cannot follow (one that does not declare whether it mixes
    channels) or channel counts that do not fit together.
    """
    check_model(model, 'resize')
    resized = model.copy()
    before = channel_counts(resized)

    # Decide everything on the unchanged copy first: a layer is the consumer
    # of one segment (cut along its input axis) and the producer of the next
    # (its output axis), and each cut must be computed from the original shapes.
    cuts = []
    for seg in segments(resized):
        unread = seg.unread()
        if not unread.any():
            continue
        keep = np.flatnonzero(~unread)
        if keep.size == 0:
            keep = np.array([0])
        cuts.append((seg, keep, seg.consumer_index(keep)))

    _select_channels(cuts)

    if not return_record:
        return resized
    after = channel_counts(resized)
    rows = [ResizedLayer(b.path, b.type, b.c_in, b.c_out, a.c_in, a.c_out)
            for b, a in zip(before, after)]
    return resized, rows


def _importance(seg, scores):
    """(C,) importance of ``seg``'s channels, or None to leave the segment as it is.

    Without ``scores``: the L2 norm of everything the consumer reads from
    each channel (its input slice), the MIT lab's choice, since a channel
    read with small weights changes the next layer little.  With
    ``scores``: the producer's entry; a segment whose producer has none is
    left alone.
    """
    if scores is None:
        return np.sqrt((seg.reading_weights() ** 2).sum(axis=(0, 2)))
    if seg.producer_path not in scores:
        return None
    importance = np.asarray(scores[seg.producer_path], dtype=np.float64)
    if importance.shape != (seg.channels,) or not np.all(np.isfinite(importance)):
        raise ValueError(f"sort_channels: scores for model{seg.producer_path} must be {seg.channels} "
                         f"finite numbers, one per channel; got shape {importance.shape}")
    return importance


def sort_channels(model, scores=None):
    """A copy of ``model`` with every segment's channels in descending importance; same function.

    A segment's channels (see :mod:`tinyprune.propagate`) may run in any
    order, as long as every array that carries them follows: the producer's
    rows and bias, each per-channel layer's arrays (BatchNorm's gamma, beta
    and running statistics, depthwise filters) and the consumer's input
    slices, all permuted alike, masks too.  Which arrays those are the
    layers declare, as for ``resize``.  The model's inputs and outputs are
    never permuted, so the result computes what ``model`` computes, in
    train and in eval mode (up to float rounding in the sums' order).

    ``scores``: None ranks each channel by the L2 norm of its consumer's
    input slice; or a dict from a producer's path to its (C,) scores, such
    as :mod:`tinyprune.criteria` returns (``ChannelScores``): segments whose
    producer has no entry keep their order.  Ties keep their order.
    ``model`` is not changed.
    """
    check_model(model, 'sort_channels')
    if scores is not None and not isinstance(scores, dict):
        raise TypeError(f"sort_channels: scores must be a dict {{layer path: (C,) scores}}, "
                        f"got {type(scores).__name__}")
    unknown = sorted(set(scores or {}) - {path for path, _ in model.named_layers()})
    if unknown:
        raise ValueError(f"sort_channels: scores has entries for paths that name no layer of the "
                         f"model: {unknown[:3]}")
    result = model.copy()
    orders = []
    for seg in segments(result):
        importance = _importance(seg, scores)
        if importance is not None:
            order = np.argsort(-importance, kind="stable")
            orders.append((seg, order, seg.consumer_index(order)))
    _select_channels(orders)
    return result
