"""Propagating pruning: zeroing whatever pruning has already made useless.

After channel pruning a network carries work that no longer matters.  A
pointwise conv still multiplies an input channel that its producer stopped
making; a depthwise filter still runs on a channel that nobody reads any
more.  ``prune_propagate`` finds that work and zeroes it, so that counting
(``compute_dot_prods``) sees it and ``resize`` can cut it out -- and it does
so without changing what the model computes, in train mode or in eval mode.

Segments
--------
Only two kinds of layer mix channels: ``Conv2d`` and ``Dense``.  Every other
layer in the library acts on each channel by itself: ``BatchNorm2d``, the
activations, ``DepthwiseConv2d`` (channel c of the output sees only channel c
of the input), ``GlobalMeanPool`` and ``Flatten``.  So the flat list of leaf
layers cuts into *segments*::

    producer (Conv2d/Dense) -> per-channel layers ... -> consumer (Conv2d/Dense)

In a MobileNet group the segment of channel j is: row j of a pointwise conv
-> BN -> act -> depthwise filter j -> BN -> act -> input slice ``W[:, j]`` of
the next pointwise conv.  Channel j of a segment is one stream of values from
the producer's row j to the consumer's input slice j, and streams of one
segment never meet.  After ``GlobalMeanPool`` and ``Flatten`` channel j is one
column of the dense weight; after ``Flatten`` alone it is a block of H*W
columns (``Flatten`` is channel-major), which we find as ``n_in / C``.

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
eval values):

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
* ``DepthwiseConv2d``: an all-zero filter gives zero; without padding a
  constant x gives ``x * sum(filter)``; with padding a non-zero constant
  becomes live, since the border pixels also see the zero padding; a bias
  (a folded model's, see ``fold_batchnorm``) is added to whatever constant
  comes out;
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

from .layers import (Activation, BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, Layer)

__all__ = ["prune_propagate", "Segment", "segments", "channel_constants"]

# Layers that mix channels: each one ends a segment (as its consumer) and
# starts the next one (as its producer).
MIXING_LAYERS = (Conv2d, Dense)
# Layers that act on every channel by itself, so they live inside a segment.
PER_CHANNEL_LAYERS = (BatchNorm2d, Activation, DepthwiseConv2d, GlobalMeanPool, Flatten)


# ---------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------

class Segment:
    """The channels from one producer to one consumer, and the layers they cross.

    ``producer``  Conv2d (weight (C, C_in, KH, KW)) or Dense (weight (C, n_in))
                  whose C output rows start the channels
    ``inner``     ``[(path, layer)]``: the per-channel layers in between
    ``consumer``  Conv2d (weight (O, C, KH, KW)) or Dense (weight (O, C*block))
                  that reads them
    ``after_consumer``  the leaf layer right after the consumer, or None

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
        return self.producer.weight.shape[0]

    @property
    def block(self):
        """Consumer input entries per channel: KH*KW for a conv, 1 or H*W for a dense layer."""
        if isinstance(self.consumer, Conv2d):
            return self.consumer.kernel[0] * self.consumer.kernel[1]
        return self.consumer.n_in // self.channels

    def consumer_index(self, channels):
        """Index into the consumer's weight selecting every entry that reads ``channels``.

        ``channels`` is one channel number or an array of them.  For a conv
        that is the input slice ``W[:, j]``; for a dense layer the columns
        ``j*block ... (j+1)*block - 1`` of each channel j.
        """
        if isinstance(self.consumer, Conv2d):
            return (slice(None), channels)
        b = self.block
        columns = (np.atleast_1d(channels)[:, None] * b + np.arange(b)).ravel()
        return (slice(None), columns)

    def reading_weights(self):
        """The consumer's weights as the forward pass uses them, as (O, C, block) float64.

        Entry [i, j, :] holds every weight with which output i reads channel j.
        """
        w = self.consumer.effective("weight").astype(np.float64)
        return w.reshape(w.shape[0], self.channels, self.block)

    def unread(self):
        """(C,) bool: True for channels whose consumer input slice is entirely zero."""
        return ~self.reading_weights().any(axis=(0, 2))

    def __repr__(self):
        return (f"Segment(model{self.producer_path} -> {len(self.inner)} per-channel layers "
                f"-> model{self.consumer_path}, {self.channels} channels)")


def _check_segment(seg):
    """ValueError naming the layer if the segment's channel counts do not agree."""
    C = seg.channels
    for path, layer in seg.inner:
        if isinstance(layer, (BatchNorm2d, DepthwiseConv2d)) and layer.channels != C:
            raise ValueError(
                f"model{path}: {type(layer).__name__} has {layer.channels} channels, but "
                f"model{seg.producer_path} before it makes {C}")
    consumer = seg.consumer
    where = f"model{seg.consumer_path}"
    if isinstance(consumer, Conv2d) and consumer.c_in != C:
        raise ValueError(f"{where}: Conv2d reads {consumer.c_in} input channels, but "
                         f"model{seg.producer_path} makes {C}")
    if isinstance(consumer, Dense):
        flattened = isinstance(seg.producer, Dense) or any(
            isinstance(layer, Flatten) for _, layer in seg.inner)
        if not flattened:
            raise ValueError(f"{where}: Dense reads the (N, C, H, W) output of "
                             f"model{seg.producer_path} with no Flatten in between")
        if consumer.n_in % C != 0:
            raise ValueError(f"{where}: Dense reads {consumer.n_in} features, which is not a "
                             f"whole number of pixels for each of the {C} channels of "
                             f"model{seg.producer_path}")


def segments(model):
    """Cut ``model``'s leaf layers into :class:`Segment` s, producer to consumer.

    Only segments with both a producer and a consumer are returned: the
    layers before the first Conv2d/Dense see the raw input, and those after
    the last one make the model's output; neither is ever changed.
    A layer that is neither a channel mixer (Conv2d, Dense) nor a known
    per-channel layer raises a ValueError naming its path: we cannot tell
    whether its channels stay apart.
    """
    leaves = list(model.named_layers())
    found = []
    current = None    # the open segment, None before the first producer
    for i, (path, layer) in enumerate(leaves):
        if isinstance(layer, MIXING_LAYERS):
            if current is not None:
                current.consumer_path, current.consumer = path, layer
                current.after_consumer = leaves[i + 1][1] if i + 1 < len(leaves) else None
                _check_segment(current)
                found.append(current)
            current = Segment(path, layer)
        elif isinstance(layer, PER_CHANNEL_LAYERS):
            if current is not None:
                current.inner.append((path, layer))
        else:
            raise ValueError(
                f"model{path}: cannot follow channels through a {type(layer).__name__}; "
                "known are Conv2d and Dense (which mix channels) and BatchNorm2d, activations, "
                "DepthwiseConv2d, GlobalMeanPool and Flatten (which keep each channel apart)")
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


def _effective64(layer, name):
    """Parameter ``name`` as the forward pass uses it, in float64 (zeros if absent)."""
    if getattr(layer, name, None) is None:
        return np.zeros(layer.weight.shape[0])
    return layer.effective(name).astype(np.float64)


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
    rows = seg.producer.effective("weight").reshape(C, -1)
    constant = ~rows.any(axis=1)                    # a zero row outputs just its bias
    bias = _effective64(seg.producer, "bias")
    c_train = np.where(constant, bias, 0.0)
    c_eval = c_train.copy()

    for _, layer in seg.inner:
        if isinstance(layer, BatchNorm2d):
            gamma = _effective64(layer, "weight")
            beta = _effective64(layer, "bias")
            inv_std = 1.0 / np.sqrt(layer.running_var.astype(np.float64) + layer.eps)
            # Train mode: a constant equals its batch mean, so it normalises to 0.
            # gamma = 0 gives beta whatever comes in, in both modes.
            c_eval = gamma * (c_eval - layer.running_mean.astype(np.float64)) * inv_std + beta
            c_train = beta.copy()
            constant = constant | (gamma == 0)
        elif isinstance(layer, Activation):
            c_train = np.asarray(layer.fn(c_train), dtype=np.float64)
            c_eval = np.asarray(layer.fn(c_eval), dtype=np.float64)
        elif isinstance(layer, DepthwiseConv2d):
            filters = layer.effective("weight").reshape(C, -1).astype(np.float64)
            if layer.pad == 0:
                # Every output pixel is sum_k w[j, k] * x = x * sum(w[j]).
                c_train = c_train * filters.sum(axis=1)
                c_eval = c_eval * filters.sum(axis=1)
            else:
                # Borders see the zero padding: only a zero constant stays constant.
                constant = constant & (c_train == 0) & (c_eval == 0)
            silent = ~filters.any(axis=1)
            constant = constant | silent
            c_train = np.where(silent, 0.0, c_train)
            c_eval = np.where(silent, 0.0, c_eval)
            bias = _effective64(layer, "bias")          # zeros if the layer has none
            c_train, c_eval = c_train + bias, c_eval + bias
        # GlobalMeanPool and Flatten leave every value as it is.
        c_train = np.where(constant, c_train, 0.0)   # keep the placeholders of live channels at 0
        c_eval = np.where(constant, c_eval, 0.0)
    return constant, c_train, c_eval


def _forward(seg):
    """Zero the consumer's slices of zero channels and fold constant ones; True if changed.

    A fold of channel j with constant (t, e) and per-output weight sums
    ``s[i] = sum(W[i, j])``: the consumer's output loses ``o = c * s`` when
    its slice is zeroed, which we give back either to the BatchNorm right
    after it (``running_mean -= s * e``; train mode's batch mean follows by
    itself) or, if t == e, to its bias (``bias += s * t``).
    """
    constant, c_train, c_eval = channel_constants(seg)
    reading = seg.reading_weights()                 # (O, C, block)
    read = reading.any(axis=(0, 2))
    consumer = seg.consumer
    O = reading.shape[0]
    padded = isinstance(consumer, Conv2d) and consumer.pad > 0
    bn = seg.after_consumer if isinstance(consumer, Conv2d) else None
    bn = bn if isinstance(bn, BatchNorm2d) and bn.channels == O else None
    has_bias = consumer.bias is not None
    bias_kept = consumer.masks.get("bias", np.ones(O, bool)) if has_bias else None

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
        changed |= _zero(consumer, "weight", seg.consumer_index(j))
    if running_mean_shift.any():
        bn.running_mean = (bn.running_mean - running_mean_shift).astype(bn.running_mean.dtype)
    if bias_shift.any():
        consumer.bias = (consumer.bias + bias_shift).astype(consumer.bias.dtype)
    return changed


# ---------------------------------------------------------------------------
# The backward sweep: channels nobody reads
# ---------------------------------------------------------------------------

def _backward(seg):
    """Zero everything that makes a channel the consumer no longer reads; True if changed."""
    changed = False
    for j in np.flatnonzero(seg.unread()):
        changed |= _zero(seg.producer, "weight", j)
        changed |= _zero(seg.producer, "bias", j)
        for _, layer in seg.inner:
            if isinstance(layer, DepthwiseConv2d):
                changed |= _zero(layer, "weight", j)
                changed |= _zero(layer, "bias", j)
            elif isinstance(layer, BatchNorm2d):
                changed |= _zero(layer, "weight", j)
                changed |= _zero(layer, "bias", j)
    return changed


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
    if not isinstance(model, Layer):
        raise TypeError(f"prune_propagate: expected a model (a Layer or Chain), "
                        f"got {type(model).__name__}")
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
