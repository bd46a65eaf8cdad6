"""Propagating pruning: zeroing whatever pruning has already made useless.

After channel pruning a network carries work that no longer matters.  A
pointwise conv still multiplies an input channel that its producer stopped
making; a depthwise filter still runs on a channel that nobody reads any
more.  ``prune_propagate`` finds that work and zeroes it, so that counting
(``compute_dot_prods``) sees it and ``resize`` can cut it out -- and it does
so without changing what the model computes, in train mode or in eval mode.

Segments
--------
Every layer type says whether it mixes channels (``mixes_channels``, see
:class:`tinyprune.layers.Layer`).  In the library only ``Conv2d`` and
``Dense`` do.  Every other layer acts on each channel by itself:
``BatchNorm2d``, the activations, ``DepthwiseConv2d`` (channel c of the output
sees only channel c of the input), ``GlobalMeanPool`` and ``Flatten``.  So the
flat list of leaf layers cuts into *segments*::

    producer (Conv2d/Dense) -> per-channel layers ... -> consumer (Conv2d/Dense)

In a MobileNet group the segment of channel j is: row j of a pointwise conv
-> BN -> act -> depthwise filter j -> BN -> act -> input slice ``W[:, j]`` of
the next pointwise conv.  Channel j of a segment is one stream of values from
the producer's row j to the consumer's input slice j, and streams of one
segment never meet.  After ``GlobalMeanPool`` and ``Flatten`` channel j is one
column of the dense weight; after ``Flatten`` alone it is a block of H*W
columns (``Flatten`` is channel-major), which we find as ``n_in / C``.
Which arrays carry channel j, and along which axis, each layer type declares
too (``out_channel_arrays``, ``in_channel_arrays``): the backward sweep and
``resize`` read those declarations rather than knowing the layer types.

What a channel carries
----------------------
For each channel we follow, layer by layer, whether its value is known
without looking at the input:

* *constant*: the same value at every pixel of every image, for every input.
  A constant is a pair: its value in train mode and its value in eval mode,
  because BatchNorm treats the two modes differently;
* *zero*: a constant that is exactly 0 in both modes;
* *live*: anything else.

The rules, one per layer type (x is the incoming constant, t/e its train and
eval values; the code is in the ``_through_*`` functions below):

* producer row j all zero: the constant ``bias[j]`` (0 without a bias);
* ``BatchNorm2d``: in train mode a constant input equals its batch mean, so
  ``x - mean = 0`` and the output is ``beta``; in eval mode it is the affine
  map ``gamma * (e - running_mean) / sqrt(running_var + eps) + beta``.  Note
  that a *zero* input does not give zero: it gives ``beta`` (train) and
  ``beta - gamma * running_mean / sqrt(running_var + eps)`` (eval), which a
  trained model has no reason to make zero.  And ``gamma = 0`` turns even a
  live channel into the constant ``beta`` (that is how ChannelPrune, which
  masks gamma and beta, makes a pruned channel exactly zero);
* activation f: ``f(t)``, ``f(e)`` (zero stays zero if f(0) = 0);
* ``DepthwiseConv2d``: an all-zero filter gives zero (its bias, if it has one); without padding a
  constant x gives ``x * sum(filter)``; with padding a non-zero constant
  becomes live, since the border pixels also see the zero padding;
* ``GlobalMeanPool``, ``Flatten``: the value is unchanged.

At the consumer
---------------
* a *zero* channel contributes nothing: zero the consumer's input slice.
* a *constant* channel adds ``o[i] = c * (sum of the weights of output i that
  read channel j)`` to every output i of the consumer (if the consumer has no
  padding: a padded conv's borders see part zeros, part c, so no single o
  exists).  Zeroing the slice takes o away, and o can be put back exactly
  (we *fold* it) in two places:

  a. a ``BatchNorm2d`` right after the consumer.  In train mode it subtracts
     the batch mean, which drops by o as well, so nothing changes; in eval
     mode we lower ``running_mean`` by o (computed with the eval constant).
  b. the consumer's bias, if the train and eval constants are equal:
     ``bias += o``.

  Where neither applies (a padded 3x3 consumer, a dense head reading a
  BatchNorm whose two constants differ) the channel stays as it is.  The
  original tutorial's code zeroes such channels anyway, which changes a
  trained model's output; here the function is never changed.

* Backward: a channel whose input slice in the consumer is all zero is read
  by nobody, so everything that makes it -- the producer's row j and bias j,
  depthwise filter j, BatchNorm gamma j and beta j -- can be zeroed.  The
  last segment (the model's outputs) has no consumer and is never zeroed.

Forward and backward sweeps repeat until a sweep changes nothing.  Every
change turns at least one non-zero weight into zero, so this ends.  In a
MobileNet after ``ChannelPrune`` a channel ends up dead if it was pruned in
the producer *or* in the depthwise conv after it: the union of the two.

Masks: a parameter that carries a mask loses the entries we zero, so
finetuning keeps them at zero.  Masks only ever lose entries.

Running statistics after a fold
-------------------------------
A fold moves a constant out of the consumer's output and into the running
mean of the BatchNorm after it.  Train-mode batches go on updating that
running mean, ``running = (1 - momentum) * running + momentum * batch_mean``,
and the folded model's batch mean is lower by ``o_train`` than the unfolded
model's.  Train-mode outputs are unaffected (the batch mean is subtracted
either way).  For the eval statistics:

* if the two constants are equal (o_train = o_eval), every update keeps the
  running mean exactly o lower than the unfolded model's, as it should be;
* if they differ, the running mean moves from ``rm - o_eval`` towards
  ``mean - o_train``, so the two models' eval outputs drift apart a little.
  That is harmless: the constants differ only because the BatchNorm in
  front of the dead channel still holds running statistics from before
  pruning.  Fed nothing but zeros, the unfolded model's running mean and
  variance for that channel decay towards 0, which pulls its eval constant
  towards the train one, and with it both models towards the same
  statistics.  The folded model simply gets there first.
"""

import numpy as np

from .module import check_model
from .layers import Activation, BatchNorm2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool

__all__ = ["prune_propagate", "Segment", "segments", "channel_constants"]


# ---------------------------------------------------------------------------
# Reading the layers' channel declarations
# ---------------------------------------------------------------------------

def held_arrays(layer, declared, parameters_only=False):
    """``[(name, axis)]``: the arrays of ``declared`` ({name: axis}) that ``layer`` holds.

    ``declared`` is ``layer.out_channel_arrays`` or ``layer.in_channel_arrays``.
    A conv without a bias declares "bias" but holds None there, so it is
    left out; ``parameters_only`` also leaves out what is not trained (a
    BatchNorm's running statistics).
    """
    return [(name, axis) for name, axis in declared.items()
            if getattr(layer, name, None) is not None
            and (name in layer.param_names or not parameters_only)]


def channel_count(layer, declared):
    """How many channels the ``declared`` arrays of ``layer`` carry; None if it holds none."""
    for name, axis in held_arrays(layer, declared):
        return getattr(layer, name).shape[axis]
    return None


def channel_index(axis, channels, run=1):
    """Index selecting ``channels`` (one number or an array) along ``axis``.

    Each channel is ``run`` consecutive entries of that axis: one for a
    conv's input channel, H*W columns for a dense layer after a Flatten
    (channel j is then the columns j*run ... (j+1)*run - 1).
    """
    if run > 1:
        channels = (np.atleast_1d(channels)[:, None] * run + np.arange(run)).ravel()
    return (slice(None),) * axis + (channels,)


# ---------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------

class Segment:
    """The channels from one producer to one consumer, and the layers they cross.

    ``producer``  a layer that mixes channels (Conv2d, Dense) whose C output
                  channels start the segment
    ``inner``     ``[(path, layer)]``: the per-channel layers in between
    ``consumer``  the next layer that mixes channels, reading the C channels
                  through its ``in_channel_arrays`` (a conv's ``W[:, j]``,
                  a dense layer's columns)
    ``after_consumer``  the leaf layer right after the consumer, or None

    Which arrays carry channel j, and along which axis, is read from each
    layer's declaration (``out_channel_arrays``, ``in_channel_arrays``).
    Paths are the ``named_layers`` ones ("[0][3]"); messages write them as
    "model[0][3]".
    """

    def __init__(self, producer_path, producer):
        self.producer_path = producer_path
        self.producer = producer
        self.inner = []
        self.consumer_path = None
        self.consumer = None
        self.after_consumer = None

    @property
    def channels(self):
        """C, the number of channels (the producer's output channels)."""
        return channel_count(self.producer, self.producer.out_channel_arrays)

    @property
    def reading_array(self):
        """The name of the consumer's array that reads the channels (its weight)."""
        return next(iter(self.consumer.in_channel_arrays))

    def _reading_axes(self):
        """(output axis, input axis, run) of the reading array.

        ``run`` is how many entries of the input axis one channel takes.
        """
        name = self.reading_array
        axis = self.consumer.in_channel_arrays[name]
        run = getattr(self.consumer, name).shape[axis] // self.channels
        return self.consumer.out_channel_arrays[name], axis, run

    @property
    def block(self):
        """Consumer entries with which one output reads one channel.

        KH*KW for a conv, 1 or H*W for a dense layer.
        """
        out_axis, _, _ = self._reading_axes()
        w = getattr(self.consumer, self.reading_array)
        return w.size // (w.shape[out_axis] * self.channels)

    def consumer_index(self, channels):
        """Index into the consumer's reading array selecting every entry that reads ``channels``.

        ``channels`` is one channel number or an array of them.  For a conv
        that is the input slice ``W[:, j]``; for a dense layer the columns
        ``j*run ... (j+1)*run - 1`` of each channel j (run = H*W after a
        Flatten, 1 after pooling).
        """
        _, axis, run = self._reading_axes()
        return channel_index(axis, channels, run)

    def reading_weights(self):
        """The consumer's weights as the forward pass uses them, as (O, C, block) float64.

        Entry [i, j, :] holds every weight with which output i reads channel j.
        """
        out_axis, in_axis, _ = self._reading_axes()
        w = self.consumer.effective(self.reading_array).astype(np.float64)
        w = np.moveaxis(w, (out_axis, in_axis), (0, 1))
        return w.reshape(w.shape[0], self.channels, -1)

    def unread(self):
        """(C,) bool: True for channels whose consumer input slice is entirely zero."""
        return ~self.reading_weights().any(axis=(0, 2))

    def channel_arrays(self, parameters_only=False):
        """``[(layer, name, axis)]``: every array that makes the channels, producer to consumer.

        The producer's output-channel arrays and those of every per-channel
        layer in between (``parameters_only``: the trained ones, which decide
        the values; running statistics only describe them).
        """
        layers = [self.producer] + [layer for _, layer in self.inner]
        return [(layer, name, axis) for layer in layers
                for name, axis in held_arrays(layer, layer.out_channel_arrays, parameters_only)]

    def __repr__(self):
        return (f"Segment(model{self.producer_path} -> {len(self.inner)} per-channel layers "
                f"-> model{self.consumer_path}, {self.channels} channels)")


def _check_segment(seg):
    """ValueError naming the layer if the segment's channel counts do not agree."""
    C = seg.channels
    for path, layer in seg.inner:
        count = channel_count(layer, layer.out_channel_arrays)
        if count is not None and count != C:
            raise ValueError(
                f"model{path}: {type(layer).__name__} has {count} channels, but "
                f"model{seg.producer_path} before it makes {C}")
    consumer = seg.consumer
    kind = type(consumer).__name__
    where = f"model{seg.consumer_path}"
    if len(consumer.in_channel_arrays) != 1:
        raise ValueError(f"{where}: {kind} declares the input-channel arrays "
                         f"{sorted(consumer.in_channel_arrays)}; propagation follows channels "
                         "into exactly one (its weight)")
    flattened = any(isinstance(layer, Flatten) for _, layer in seg.inner)
    # A shape rule rather than a channel one: a dense layer reads flat
    # features, so a conv's (N, C, H, W) output must pass a Flatten first.
    if isinstance(consumer, Dense) and not isinstance(seg.producer, Dense) and not flattened:
        raise ValueError(f"{where}: Dense reads the (N, C, H, W) output of "
                         f"model{seg.producer_path} with no Flatten in between")
    name = seg.reading_array
    reads = getattr(consumer, name).shape[consumer.in_channel_arrays[name]]
    if reads == C or (flattened and reads % C == 0):    # after a Flatten: a block of columns a channel
        return
    if flattened:
        raise ValueError(f"{where}: {kind} reads {reads} features, which is not a whole number of "
                         f"pixels for each of the {C} channels of model{seg.producer_path}")
    raise ValueError(f"{where}: {kind} reads {reads} input channels, but "
                     f"model{seg.producer_path} makes {C}")


def segments(model):
    """Cut ``model``'s leaf layers into :class:`Segment` s, producer to consumer.

    Each leaf says whether it mixes channels (``mixes_channels``): a layer
    that does ends one segment as its consumer and starts the next as its
    producer; one that keeps each channel apart joins the open segment.
    Only segments with both a producer and a consumer are returned: the
    layers before the first mixing layer see the raw input, and those after
    the last one make the model's output; neither is ever changed.  A layer
    that does not say (``mixes_channels = None``) raises a ValueError naming
    its path: we cannot tell whether its channels stay apart.
    """
    leaves = list(model.named_layers())
    found = []
    current = None    # the open segment, None before the first producer
    for i, (path, layer) in enumerate(leaves):
        if layer.mixes_channels is None:
            raise ValueError(
                f"model{path}: cannot follow channels through a {type(layer).__name__}: it does not "
                "declare mixes_channels (True for a layer whose outputs read every input channel, "
                "like Conv2d and Dense; False for one that keeps each channel apart, like "
                "BatchNorm2d, activations, DepthwiseConv2d, GlobalMeanPool and Flatten)")
        if not layer.mixes_channels:
            if current is not None:
                current.inner.append((path, layer))
            continue
        if current is not None:
            current.consumer_path, current.consumer = path, layer
            current.after_consumer = leaves[i + 1][1] if i + 1 < len(leaves) else None
            _check_segment(current)
            found.append(current)
        current = Segment(path, layer)
    return found


# ---------------------------------------------------------------------------
# Zeroing parameters (and their masks)
# ---------------------------------------------------------------------------

def _zero(layer, name, index):
    """Set ``layer.<name>[index]`` to 0 and drop those entries from its mask.

    Returns True if anything changed (a non-zero value, or a kept mask entry).
    """
    value = getattr(layer, name, None)
    if value is None:      # e.g. a conv without bias
        return False
    changed = bool(np.any(value[index] != 0))
    value[index] = 0
    mask = layer.masks.get(name)
    if mask is not None:
        changed |= bool(np.any(mask[index]))
        mask[index] = False
    return changed


def _effective64(layer, name, channels):
    """Parameter ``name`` as the forward pass uses it, in float64 (``channels`` zeros if absent)."""
    if getattr(layer, name, None) is None:
        return np.zeros(channels)
    return layer.effective(name).astype(np.float64)


# ---------------------------------------------------------------------------
# The value rules: what a per-channel layer makes of a constant channel
# ---------------------------------------------------------------------------
#
# Each rule takes and returns ``(constant, c_train, c_eval)``, arrays of shape
# (C,) (see "What a channel carries" above).  They are semantics, one per
# layer type; which arrays carry the channels is the layers' declaration.

def _through_batchnorm(bn, constant, c_train, c_eval):
    # Train mode: a constant equals its batch mean, so it normalises to 0.
    # gamma = 0 gives beta whatever comes in, in both modes.
    gamma = _effective64(bn, "weight", len(constant))
    beta = _effective64(bn, "bias", len(constant))
    inv_std = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    c_eval = gamma * (c_eval - bn.running_mean.astype(np.float64)) * inv_std + beta
    return constant | (gamma == 0), beta.copy(), c_eval


def _through_activation(act, constant, c_train, c_eval):
    c_train = np.asarray(act.fn(c_train), dtype=np.float64)
    return constant, c_train, np.asarray(act.fn(c_eval), dtype=np.float64)


def _through_depthwise(conv, constant, c_train, c_eval):
    filters = conv.effective("weight").reshape(len(constant), -1).astype(np.float64)
    if conv.pad == 0:
        # Every output pixel is sum_k w[j, k] * x = x * sum(w[j]).
        c_train = c_train * filters.sum(axis=1)
        c_eval = c_eval * filters.sum(axis=1)
    else:
        # Borders see the zero padding: only a zero constant stays constant.
        constant = constant & (c_train == 0) & (c_eval == 0)
    silent = ~filters.any(axis=1)           # an all-zero filter outputs zero (plus its bias)
    bias = _effective64(conv, "bias", len(constant))     # a folded model's depthwise has one
    return (constant | silent, np.where(silent, 0.0, c_train) + bias,
            np.where(silent, 0.0, c_eval) + bias)


def _through(layer, constant, c_train, c_eval):
    """``layer``'s value rule: known for the library's per-channel layers.

    A per-channel layer without a rule makes every channel live, which is
    always safe: a live channel is never zeroed or folded.
    """
    if isinstance(layer, BatchNorm2d):
        return _through_batchnorm(layer, constant, c_train, c_eval)
    if isinstance(layer, Activation):
        return _through_activation(layer, constant, c_train, c_eval)
    if isinstance(layer, DepthwiseConv2d):
        return _through_depthwise(layer, constant, c_train, c_eval)
    if isinstance(layer, (GlobalMeanPool, Flatten)):
        return constant, c_train, c_eval     # every value stays as it is
    return np.zeros_like(constant), c_train, c_eval


# ---------------------------------------------------------------------------
# The forward sweep: which channels are constant, and what to do with them
# ---------------------------------------------------------------------------

def channel_constants(seg):
    """Follow each channel of ``seg`` from its producer to the consumer's input.

    Returns ``(constant, c_train, c_eval)``, each of shape (C,): ``constant[j]``
    is True if channel j reaches the consumer as a known constant, with value
    ``c_train[j]`` in train mode and ``c_eval[j]`` in eval mode (0 for live
    channels, a placeholder).  The rules are in the module docstring.
    """
    C = seg.channels
    w = seg.producer.effective("weight")
    rows = np.moveaxis(w, seg.producer.out_channel_arrays["weight"], 0).reshape(C, -1)
    constant = ~rows.any(axis=1)                    # a zero row outputs just its bias
    bias = _effective64(seg.producer, "bias", C)
    c_train = np.where(constant, bias, 0.0)
    c_eval = c_train.copy()
    for _, layer in seg.inner:
        constant, c_train, c_eval = _through(layer, constant, c_train, c_eval)
        c_train = np.where(constant, c_train, 0.0)   # keep the placeholders of live channels at 0
        c_eval = np.where(constant, c_eval, 0.0)
    return constant, c_train, c_eval


def _forward(seg):
    """The forward sweep on one segment: zero the consumer's slices of zero channels, fold constant ones.

    Given above the fence: ``constant, c_train, c_eval`` (C,), channel j a
    known constant at the consumer (``channel_constants``), ``c_train[j]`` in
    train and ``c_eval[j]`` in eval mode; ``reading`` (O, C, block) float64,
    ``reading[i, j, :]`` the weights with which output i reads channel j
    (``read``: any of them non-zero); ``padded``; ``bn``, the BatchNorm2d on
    the consumer's O outputs right after it, or None; ``has_bias`` and
    ``bias_kept`` (O,), the consumer's bias mask (all True unmasked).

    For every constant, read channel j, in index order: if both constants
    are 0, zero its slice.  Else the channel adds ``o = c * s`` to every
    pixel of the consumer's outputs, ``s[i] = reading[i, j, :].sum()``,
    unless the consumer is padded (its borders read zeros too: leave j).
    Zero the slice only where o can be given back exactly: (a) to ``bn``,
    whose train-mode batch mean drops by o too, by lowering its
    ``running_mean`` by ``s * c_eval[j]``; else (b) to the consumer's bias,
    ``bias += s * c_train[j]``, if it has one, ``c_train[j] == c_eval[j]``
    and every output i with a non-zero share has a kept bias entry; else
    leave j alone (the derivation: the module docstring, "At the consumer").

    Zero a slice with ``_zero`` at ``seg.consumer_index(j)`` of
    ``seg.reading_array``; sum the shifts in float64 and write them once, as
    new arrays of their dtype, if not all zero.  True if a slice changed.
    """
    constant, c_train, c_eval = channel_constants(seg)
    reading = seg.reading_weights()                 # (O, C, block)
    read = reading.any(axis=(0, 2))
    consumer = seg.consumer
    O = reading.shape[0]
    padded = getattr(consumer, "pad", 0) > 0       # its borders read zeros as well as the channel
    bn = seg.after_consumer
    bn = bn if isinstance(bn, BatchNorm2d) and bn.channels == O else None
    has_bias = getattr(consumer, "bias", None) is not None
    bias_kept = consumer.masks.get("bias", np.ones(O, bool)) if has_bias else None

    ### BEGIN SOLUTION
    running_mean_shift = np.zeros(O)     # accumulated in float64, written once
    bias_shift = np.zeros(O)
    changed = False
    for j in np.flatnonzero(constant & read):
        zero = c_train[j] == 0 and c_eval[j] == 0
        if not zero:
            if padded:
                continue                  # no exact fold: leave the channel live
            sums = reading[:, j, :].sum(axis=1)        # (O,)
            if bn is not None:
                running_mean_shift += sums * c_eval[j]
            elif (has_bias and c_train[j] == c_eval[j]
                  and np.all(bias_kept | (sums * c_train[j] == 0))):
                bias_shift += sums * c_train[j]
            else:
                continue                  # nowhere to put it: leave the channel live
        changed |= _zero(consumer, seg.reading_array, seg.consumer_index(j))
    if running_mean_shift.any():
        bn.running_mean = (bn.running_mean - running_mean_shift).astype(bn.running_mean.dtype)
    if bias_shift.any():
        consumer.bias = (consumer.bias + bias_shift).astype(consumer.bias.dtype)
    return changed
    ### END SOLUTION


# ---------------------------------------------------------------------------
# The backward sweep: channels nobody reads
# ---------------------------------------------------------------------------

def _backward(seg):
    """The backward sweep on one segment: zero everything that makes a channel nobody reads.

    Returns True if anything changed.  ``seg.unread()`` (C,) is True for
    channel j when the consumer's whole input slice for j is zero: nothing
    after the segment sees channel j, so whatever makes it can be zeroed
    without changing the model.  That is every *trained* array that carries
    channel j, in every layer of the segment before the consumer: the
    producer (``seg.producer``: its row j and its bias j) and each
    per-channel layer in between (``seg.inner``, a list of (path, layer): a
    depthwise conv's filter j, a BatchNorm's gamma j and beta j -- not its
    running statistics, which are not trained and only describe the
    values).  The model's outputs have no consumer; they are never in a
    segment.

    Each layer declares which of its arrays carry its output channels, and
    along which axis (``layer.out_channel_arrays``, {name: axis}); a conv
    without a bias declares one but holds None.  ``held_arrays`` and
    ``Segment.channel_arrays`` list what a layer holds, ``channel_index``
    indexes channel j along an axis, and ``_zero`` zeroes entries (dropping
    them from the array's mask) and says whether anything changed.
    """
    ### BEGIN SOLUTION
    changed = False
    for j in np.flatnonzero(seg.unread()):
        for layer, name, axis in seg.channel_arrays(parameters_only=True):
            changed |= _zero(layer, name, channel_index(axis, j))
    return changed
    ### END SOLUTION


def prune_propagate(model):
    """A copy of ``model`` with every provably useless weight zeroed; ``model`` is unchanged.

    Repeats a forward sweep (zero the consumer slices of channels that are
    always zero, fold channels that are always the same constant into the
    BatchNorm or bias after their consumer) and a backward sweep (zero the
    producer row, depthwise filter and BatchNorm gamma/beta of every channel
    no consumer reads) until nothing changes.  The result computes the same
    function as ``model`` in train mode and in eval mode, up to float
    rounding; channels whose constant cannot be folded exactly are kept.
    Weights keep their shapes (OIHW, (out, in)); use ``resize`` to remove
    the dead channels.  Masks lose the entries that are zeroed.

    Works on any chain of the library's layers.  Idempotent:
    ``prune_propagate(prune_propagate(m))`` equals ``prune_propagate(m)``.
    Raises ValueError naming the layer (``model[0][7]``) for a layer it
    cannot see through or for channel counts that do not fit together.
    """
    check_model(model, 'prune_propagate')
    propagated = model.copy()
    segs = segments(propagated)       # checks the whole model before any change
    changed = True
    while changed:
        changed = False
        for seg in segs:
            changed |= _forward(seg)
        for seg in reversed(segs):
            changed |= _backward(seg)
    return propagated
