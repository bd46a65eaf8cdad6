"""Pruning strategies: small values that choose which weights to zero.

A *strategy* is a small value.  Called on a weight array it returns a boolean
*keep-mask* of the same shape (True = the weight stays)::

    LevelPrune(0.2)(w)        # keep the ceil(0.8 * w.size) largest |w|
    ThresholdPrune(0.01)(w)   # keep |w| >= 0.01
    ChannelPrune(0.2)(w)      # keep the ceil(0.8 * C_out) output channels of largest L1 norm
    NMPrune(2, 4)(w)          # keep the 2 largest |w| of every 4 consecutive inputs

A strategy only decides; ``tinyprune.prune.prune`` applies it to a model,
and its class attributes tell ``prune`` how: ``structure`` (single entries
or whole output channels) and ``whole_model`` (ranks every layer at once).

What each strategy may prune:

* ``LevelPrune``, ``GlobalLevelPrune``, ``ThresholdPrune``: the weights of
  ``Conv2d``, ``DepthwiseConv2d`` and ``Dense`` layers, entry by entry
  (never biases, never BatchNorm);
* ``ChannelPrune``: the weights of ``Conv2d`` and ``DepthwiseConv2d``, whole
  output channels at a time (and, through ``prune``, the following
  BatchNorm's gamma and beta);
* ``NMPrune``: the weights of the layers whose rows (the weights of one
  output) hold a whole number of groups of m, entry by entry within each group.

Repeated pruning composes: levels count from the array's full size, with
already-masked entries ranked as the smallest.  So pruning 0.2 and then
0.5 leaves half of the weights, not 0.8 * 0.5 of them.

Shapes: conv weights OIHW ``(C_out, C_in, KH, KW)``, depthwise ``(C, 1, KH, KW)``,
dense ``(out, in)``.  An "output channel" is one slice ``w[c]``.
"""

import math
import numbers

import numpy as np

from .common import check_int, check_level
from .layers import Conv2d, Dense, DepthwiseConv2d

__all__ = ["PruningStrategy", "LevelPrune", "ThresholdPrune", "ChannelPrune", "GlobalLevelPrune",
           "NMPrune", "l1", "l2"]

# The layers whose weight is a filter or a matrix, which strategies prune and
# ``sparsity`` counts.  (BatchNorm's per-channel scale is also called
# "weight"; it is never pruned for its own sake.)
WEIGHTED_LAYERS = (Conv2d, DepthwiseConv2d, Dense)
# The layers whose output channels ChannelPrune ranks and the channel criteria score.
CHANNEL_LAYERS = (Conv2d, DepthwiseConv2d)


# ---------------------------------------------------------------------------
# Counting and checking what a strategy is given
# ---------------------------------------------------------------------------

def _n_pruned(p, n):
    """How many of ``n`` entries a level-``p`` pruning zeroes: n - ceil((1 - p) n).

    Rounding keeps entries rather than prunes them: 20% of 7 weights prunes 1
    (keeps ceil(5.6) = 6).  The float product is the original's formula, so the
    counts match the tutorial's exactly.
    """
    return n - math.ceil((1 - p) * n)


def check_weights(w, keep, who):
    """``keep`` as a boolean array of ``w``'s shape (all True for None), once both are fit to rank.

    ValueError if the mask has another shape or type, or if a kept weight is
    NaN or infinite: a magnitude ranking of such weights means nothing, and
    the fault is the weights', not the strategy's.  ``prune`` calls this for
    every layer before it changes anything; the strategies call it too, for
    whoever calls them on an array.
    """
    if keep is None:
        keep = np.ones(w.shape, dtype=bool)
    keep = np.asarray(keep)
    if keep.shape != w.shape or keep.dtype != bool:
        raise ValueError(f"{who}: the keep-mask must be a boolean array of the weight's shape "
                         f"{w.shape}, got {keep.dtype} of shape {keep.shape}")
    bad = int(np.count_nonzero(~np.isfinite(w) & keep))
    if bad:
        raise ValueError(f"{who}: the weights are not finite ({bad} NaN or infinite entries among "
                         f"{w.size}); pruning ranks magnitudes, which needs finite weights")
    return keep


# ---------------------------------------------------------------------------
# Magnitude functions for ChannelPrune
# ---------------------------------------------------------------------------

def l1(channels):
    """L1 norm of each row: (C_out, K) channel weights -> (C_out,) scores."""
    return np.abs(channels).sum(axis=1)


def l2(channels):
    """L2 norm of each row: (C_out, K) channel weights -> (C_out,) scores."""
    return np.sqrt((channels.astype(np.float64) ** 2).sum(axis=1))


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

class PruningStrategy:
    """What every strategy is: ``strategy(w, keep=None)`` returns a keep-mask for ``w``.

    ``w`` is one weight array, ``keep`` the mask it already carries (None =
    nothing pruned yet; entries already pruned are zero in ``w``).  The result
    is a fresh boolean array of ``w``'s shape, True where the strategy keeps
    the weight.  ``prune`` combines it with the old mask (old & new), so a
    strategy need not repeat the old mask in its answer.

    Two class attributes tell ``prune`` what kind of strategy it is:

    * ``structure``: ``"entries"`` if the mask keeps or prunes single
      weights, ``"channels"`` if it keeps or prunes whole output channels
      ``w[c]``.  For a channel strategy ``prune`` also masks the pruned
      channels' other parameters -- the layer's bias and the channel
      parameters of the per-channel layer right after it, unless the strategy
      prunes that one itself (a BatchNorm's gamma and beta, not a depthwise
      filter) -- so that a pruned channel outputs exactly zero.
    * ``whole_model``: True if the strategy ranks the weights of all the
      layers it prunes together, called once on them as one flat array of
      entries (``GlobalLevelPrune``); it is then given to ``prune`` on its
      own, never per layer.

    ``can_prune(layer)`` says which layers' weights the strategy applies to,
    and ``targets`` says the same in words for error messages.  Write your own
    strategy by subclassing and defining ``__call__`` (and ``structure``,
    ``can_prune`` and ``targets`` if the defaults do not fit).

    ``prune`` asks for a layer's mask through ``mask_for(layer, path)``,
    which by default is ``self(layer.weight, layer.masks.get("weight"))``.
    A strategy that must know *which* layer it prunes -- ``ChannelPrune``
    given scores computed beforehand for each layer path -- overrides it.
    """

    structure = "entries"
    whole_model = False
    targets = "Conv2d, DepthwiseConv2d and Dense weights"

    def can_prune(self, layer):
        return isinstance(layer, WEIGHTED_LAYERS)

    def mask_for(self, layer, path):
        """The keep-mask for ``layer.weight``; ``path`` ("[0][3]") names the layer in the model."""
        return self(layer.weight, layer.masks.get("weight"))

    def __call__(self, w, keep=None):
        raise NotImplementedError


class LevelPrune(PruningStrategy):
    """Unstructured magnitude pruning of each weight array on its own.

    In every Conv2d, DepthwiseConv2d and Dense weight array (biases and
    BatchNorm are never pruned) zero the ``n - ceil((1 - p) n)`` entries of
    smallest ``|w|``, n = the array's size.  ``p = 0`` prunes nothing,
    ``p = 1`` everything.  Equal magnitudes are broken by position: the entry
    earlier in the flattened (C-order) array goes first.

    Repeated pruning: entries already masked rank below every kept one, so
    the level counts from the full size; ``LevelPrune(0.5)`` after
    ``LevelPrune(0.2)`` leaves exactly ``ceil(n/2)`` weights.

    (The original Julia library sorts by signed value, which prunes the most
    negative weights; the count is the same, we prune by magnitude as the
    tutorial's text says.)
    """

    def __init__(self, p):
        self.p = check_level(p, type(self).__name__)

    def __repr__(self):
        return f"{type(self).__name__}({self.p})"

    def __call__(self, w, keep=None):
        """The keep-mask of ``w`` without its ``n - ceil((1 - p) n)`` smallest magnitudes.

        ``w``: one weight array of any shape (OIHW for a conv, (out, in) for
        a dense layer), n = ``w.size`` entries.  ``keep``: the boolean mask
        it already carries, of ``w``'s shape, True = still kept (None, nothing
        pruned yet, arrives here as all True).  Returns a new boolean array
        of ``w``'s shape with exactly ``_n_pruned(self.p, w.size)`` entries
        False (that helper computes ``n - ceil((1 - p) n)``).

        Which entries: read ``w`` flattened in C order and rank its entries
        by three keys, the first deciding first, and prune the lowest-ranked:

        1. already masked before still kept (``keep`` False first), whatever
           value a masked entry holds, so a level counts from the full size;
        2. then by magnitude ``|w|``, smallest first;
        3. then by position, the lower flat index first.

        Magnitude, not signed value: removing -0.9 changes the layer's
        output as much as removing 0.9 (Han et al., "Learning both Weights
        and Connections for Efficient Neural Networks", 2015, prune the
        weights of smallest absolute value).  ``np.lexsort`` ranks by
        several keys (its *last* key is the first one) and is stable.
        """
        w = np.asarray(w)
        keep = check_weights(w, keep, repr(self))
        ### BEGIN SOLUTION
        magnitude = np.abs(w).ravel()
        # np.lexsort sorts by its *last* key first: masked entries (keep False)
        # come before kept ones, then by magnitude.  It is a stable sort, so
        # equal magnitudes stay in index order.
        order = np.lexsort((magnitude, keep.ravel()))
        kept = np.ones(w.size, dtype=bool)
        kept[order[:_n_pruned(self.p, w.size)]] = False
        return kept.reshape(w.shape)
        ### END SOLUTION


class GlobalLevelPrune(LevelPrune):
    """Magnitude pruning with one threshold across the whole model.

    All Conv2d, DepthwiseConv2d and Dense weights of the model are ranked
    together, as if concatenated into one flat array (the order of
    ``model.named_parameters()``), and the ``N - ceil((1 - p) N)`` of smallest
    ``|w|`` are zeroed, N = all those weights (like PyTorch's
    ``global_unstructured`` with ``L1Unstructured``).  Layers therefore end at
    different sparsities: layers of small weights lose more.

    Called on a single array it is ``LevelPrune`` of that array: "global" over
    one array.  It must be given to ``prune`` on its own, not in a per-layer
    list or dict, since its ranking needs every layer at once
    (``whole_model = True``).  Repeated pruning composes as for ``LevelPrune``.
    """

    whole_model = True


class ThresholdPrune(PruningStrategy):
    """Zero every Conv2d, DepthwiseConv2d and Dense weight with ``|w| < t``.

    How many entries that removes depends on the weights.  Repeated pruning
    only removes more (masked entries stay masked).
    """

    def __init__(self, t):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real):
            raise TypeError(f"ThresholdPrune: the threshold must be a number >= 0, got {t!r}")
        if not t >= 0:  # also false for nan
            raise ValueError(f"ThresholdPrune: the threshold must be >= 0 (a magnitude), got {t!r}")
        self.t = float(t)

    def __repr__(self):
        return f"ThresholdPrune({self.t})"

    def __call__(self, w, keep=None):
        """The keep-mask of ``w`` that keeps exactly its weights of magnitude ``self.t`` or more.

        ``w``: one weight array of any shape; ``keep``: the mask it already
        carries (checked, then not needed: ``prune`` combines the old mask
        with this one, and a masked entry is zero, below any t > 0).
        Returns a new boolean array of ``w``'s shape, True where ``|w|``
        reaches the threshold: a weight exactly at t stays, so
        ``ThresholdPrune(0)`` keeps everything.  Magnitude, not signed
        value: -0.5 is as large a weight as 0.5 (Han et al., 2015).
        """
        w = np.asarray(w)
        check_weights(w, keep, repr(self))
        ### BEGIN SOLUTION
        return np.abs(w) >= self.t
        ### END SOLUTION


class ChannelPrune(PruningStrategy):
    """Structured pruning: zero whole output channels of every convolution.

    In every Conv2d and DepthwiseConv2d (Dense layers are untouched) the C_out
    output channels ``w[c]`` are scored and the ``C - ceil((1 - p) C)``
    lowest-scoring ones are zeroed, all their ``K = C_in * KH * KW`` weights
    at once (along axis 0 of the OIHW weight).  As for every channel strategy
    (``structure = "channels"``), ``prune`` also masks, on the same channels,
    the conv's own bias (if any) and the gamma and beta of the following
    layer if it is a BatchNorm2d over the same channels, so that a pruned
    channel outputs exactly zero after its BatchNorm, whatever the
    BatchNorm's running statistics.

    The scores come from one of two places:

    * ``magnitude``, a function of the weights alone.  It receives one
      (C_out, K) array: row c holds channel c's weights flattened, as the
      forward pass sees them (already-masked entries are zero); it is a copy,
      so the function may change it freely.  It must return C_out finite
      scores, one per channel, higher = more important.  The default is
      :func:`l1`, the sum of ``|w|`` over the row; :func:`l2` is the other.
    * ``scores``, a dict from layer path (``"[0][3]"``, as
      ``model.named_layers()`` writes it) to that layer's (C_out,) scores,
      computed beforehand from the model and perhaps from data: the
      criteria of :mod:`tinyprune.criteria` (BatchNorm scale, first-order
      Taylor, random) need more than the weight, so they are computed first
      and handed over.  Such a strategy prunes only through ``prune``, which
      tells it the layer's path; a layer without an entry is an error.

    Equal scores are broken by position (lower channel index pruned first).
    Repeated pruning: a channel with no kept weight left ranks below every
    other, so levels count from the full C_out; ``ChannelPrune(0.5)`` after
    ``ChannelPrune(0.2)`` leaves ``ceil(C/2)`` channels.
    """

    structure = "channels"
    targets = "Conv2d and DepthwiseConv2d weights (whole output channels)"

    def __init__(self, p, magnitude=l1, scores=None):
        self.p = check_level(p, "ChannelPrune")
        if not callable(magnitude):
            raise TypeError(f"ChannelPrune: magnitude must be a function of a (C_out, K) array, "
                            f"got {magnitude!r}")
        if scores is not None and not isinstance(scores, dict):
            raise TypeError(f"ChannelPrune: scores must be a dict {{layer path: (C_out,) scores}}, "
                            f"e.g. from tinyprune.criteria, got {type(scores).__name__}")
        if scores is not None and magnitude is not l1:
            raise ValueError("ChannelPrune: give magnitude or scores, not both")
        self.magnitude = magnitude
        self.scores = scores

    def __repr__(self):
        if self.scores is not None:
            return f"ChannelPrune({self.p}, scores={getattr(self.scores, 'name', 'given')})"
        name = getattr(self.magnitude, "__name__", repr(self.magnitude))
        return f"ChannelPrune({self.p})" if self.magnitude is l1 else f"ChannelPrune({self.p}, {name})"

    def can_prune(self, layer):
        return isinstance(layer, CHANNEL_LAYERS)

    def mask_for(self, layer, path):
        if self.scores is None:
            return self(layer.weight, layer.masks.get("weight"))
        if path not in self.scores:
            raise ValueError(f"{self!r}: scores has no entry for this layer ({len(self.scores)} "
                             f"entries, e.g. {sorted(self.scores)[:3]})")
        keep = check_weights(layer.weight, layer.masks.get("weight"), repr(self))
        return self._keep_channels(layer.weight, keep, np.asarray(self.scores[path]),
                                   f"scores[{path!r}] holds")

    def __call__(self, w, keep=None):
        """The keep-mask of ``w`` (C_out, ...) without its weakest output channels: the scores.

        ``w``: a conv weight, OIHW (C_out, C_in, KH, KW) or depthwise (C, 1,
        KH, KW); ``keep``: the mask it already carries, True = kept (None
        arrives here as all True).  Here, score the channels: give
        ``self.magnitude`` (``l1`` unless another was asked for) one
        (C_out, K) array, K = C_in * KH * KW, whose row c is channel ``w[c]``
        flattened *as the forward pass uses it*, masked entries 0 -- a copy,
        which the function may change -- and take its (C_out,) answer as
        ``scores``.  ``_keep_channels``, below, ranks them (the rest of this
        exercise).

        The score of a channel is its magnitude as a whole: L1 by default,
        the sum of ``|w|`` over its K weights, since a channel of small
        weights changes the next layer little (Li et al., "Pruning Filters
        for Efficient ConvNets", 2017).  Not the signed sum, in which large
        weights of both signs cancel.
        """
        if self.scores is not None:
            raise TypeError(f"{self!r} takes its scores by layer path: use it through prune()")
        w = np.asarray(w)
        keep = check_weights(w, keep, repr(self))
        ### BEGIN SOLUTION
        channels = np.where(keep, w, 0).reshape(w.shape[0], -1)    # (C_out, K), masked entries 0
        scores = np.asarray(self.magnitude(channels.copy()))
        ### END SOLUTION
        return self._keep_channels(w, keep, scores, "the magnitude function returned")

    def _keep_channels(self, w, keep, scores, source):
        """Prune the lowest-scoring channels: ``scores`` (C_out,) -> a keep-mask of ``w``'s shape.

        ``w`` (C_out, ...) and its mask ``keep`` as in ``__call__``;
        ``scores``: (C_out,) finite numbers, higher = more important (from
        the magnitude function, or given to ``ChannelPrune(p, scores=...)``
        for this layer).  Returns a new boolean array of ``w``'s shape that
        is False on every weight of exactly ``_n_pruned(self.p, C_out)``
        channels (``C_out - ceil((1 - p) C_out)``) and True elsewhere.

        Which channels: rank them by three keys, the first deciding first,
        and prune the lowest-ranked:

        1. dead before alive: a channel none of whose weights is kept any
           more goes first, whatever its score (a score function may rate an
           all-zero channel high), so repeated pruning counts from the full
           C_out;
        2. then by score, lowest first;
        3. then by position, the lower channel index first.
        """
        c_out = w.shape[0]
        if scores.shape != (c_out,):
            raise ValueError(f"{self!r}: {source} shape {scores.shape} for {c_out} channels "
                             f"of {w.size // max(c_out, 1)} weights; expected ({c_out},)")
        if scores.dtype.kind not in "fiu" or not np.all(np.isfinite(scores)):
            raise ValueError(f"{self!r}: {source} {scores!r}; expected finite numbers, one per channel")
        ### BEGIN SOLUTION
        alive = keep.reshape(c_out, -1).any(axis=1)        # channels with a weight left
        order = np.lexsort((scores, alive))                # dead channels first, then by score
        kept = np.ones(c_out, dtype=bool)
        kept[order[:_n_pruned(self.p, c_out)]] = False
        # Spread the (C_out,) decision over each channel's K weights.
        return np.broadcast_to(kept.reshape((-1,) + (1,) * (w.ndim - 1)), w.shape).copy()
        ### END SOLUTION


def _rows(w):
    """``w`` as (outputs, weights of one output): OIHW -> (C_out, C_in*KH*KW), (out, in) as it is."""
    return w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)


class NMPrune(PruningStrategy):
    """N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive weights of a row.

    A row is the weights of one output, along the input dimension: a conv's
    ``C_in * KH * KW`` weights of output channel c (the OIHW weight's ``w[c]``
    flattened, which is the order of the im2col columns it multiplies), a
    dense layer's ``in`` weights of output o.  Each row is cut into groups of
    ``m`` consecutive weights, and in every group the ``m - n`` of smallest
    ``|w|`` are zeroed: exactly ``m - n`` zeros per group on a fresh layer
    (already-masked entries rank first, so pruning again keeps the pattern;
    after another strategy a group may hold more).  Equal magnitudes are
    broken by position, as in ``LevelPrune``: the earlier entry of the group
    is pruned first, so the kept ones are the largest ``|w|`` with ties
    broken stably.

    Rows whose length is not a multiple of ``m`` are left alone: such a
    layer does not fit the hardware format, and padding its rows to fit
    would spend a group on a few real weights.  In MobileNet that skips the
    first conv (27 weights a row) and every 3x3 depthwise conv (9), much as
    NVIDIA's ASP skips layers whose shapes do not fit the tensor cores; the
    pointwise convs and dense layers (rows of 8 ... 256) are pruned.  Named
    explicitly in a dict or list, such a layer is an error; called on such
    an array, too.  (GPU libraries store convs channels-last, so their groups
    are consecutive input channels at one kernel tap; for 1x1 convs and
    dense layers, all that NMPrune prunes in MobileNet, the two orders agree.)

    What a 2:4 kernel executes (NVIDIA's sparse tensor cores): it stores the
    2 kept values of each group plus 2 bits of metadata per value saying
    where in the group it sat, and multiplies only those, so a layer of P
    output pixels, C_out outputs and K inputs costs ``P * C_out * K / 2``
    multiplies, half of the dense product, and ``P * C_out * (K/2 - 1)``
    adds.  That is the ``"sparse"`` counting rule (``compute_dot_prods``),
    which skips every zero weight at every patch.  The ``"reference"`` rule
    counts each scattered zero once (``C_out * K / 2`` multiplies saved in
    all), and the ``"dense"`` rule, an ordinary kernel, saves nothing.
    """

    def __init__(self, n=2, m=4):
        self.m = check_int(m, "m (the group size)", "NMPrune")
        self.n = check_int(n, "n (the weights kept per group)", "NMPrune", minimum=0)
        if self.n > self.m:
            raise ValueError(f"NMPrune: n (the weights kept per group) must be at most m = {self.m}, "
                             f"got {self.n}")
        self.targets = (f"Conv2d, DepthwiseConv2d and Dense weights whose rows hold a multiple of "
                        f"{self.m} weights")

    def __repr__(self):
        return f"NMPrune({self.n}, {self.m})"

    def can_prune(self, layer):
        return isinstance(layer, WEIGHTED_LAYERS) and _rows(layer.weight).shape[1] % self.m == 0

    def __call__(self, w, keep=None):
        w = np.asarray(w)
        keep = check_weights(w, keep, repr(self))
        length = _rows(w).shape[1]
        if length % self.m:
            raise ValueError(f"{self!r}: rows of {length} weights (weight shape {w.shape}) do not "
                             f"split into groups of {self.m}")
        groups = np.abs(w).reshape(-1, self.m)               # (groups, m), one row's groups in order
        # Per group: masked entries first, then by magnitude; lexsort is stable,
        # so equal magnitudes stay in position order and the earlier goes first.
        order = np.lexsort((groups, keep.reshape(-1, self.m)), axis=-1)
        mask = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(mask, order[:, :self.m - self.n], False, axis=1)
        return mask.reshape(w.shape)
