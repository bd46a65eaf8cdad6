"""Pruning strategies: small values that choose which weights to zero.

A *strategy* is a small value.  Called on a weight array it returns a boolean
*keep-mask* of the same shape (True = the weight stays)::

    LevelPrune(0.2)(w)        # keep the ceil(0.8 * w.size) largest |w|
    ThresholdPrune(0.01)(w)   # keep |w| >= 0.01
    ChannelPrune(0.2)(w)      # keep the ceil(0.8 * C_out) output channels of largest L1 norm

A strategy only decides; ``tinyprune.prune.prune`` applies it to a model,
and its class attributes tell ``prune`` how: ``structure`` (single entries
or whole output channels) and ``whole_model`` (ranks every layer at once).

What each strategy may prune:

* ``LevelPrune``, ``GlobalLevelPrune``, ``ThresholdPrune``: the weights of
  ``Conv2d``, ``DepthwiseConv2d`` and ``Dense`` layers, entry by entry
  (never biases, never BatchNorm);
* ``ChannelPrune``: the weights of ``Conv2d`` and ``DepthwiseConv2d``, whole
  output channels at a time (and, through ``prune``, the following
  BatchNorm's gamma and beta).

Repeated pruning composes: levels count from the array's full size, with
already-masked entries ranked as the smallest.  So pruning 0.2 and then
0.5 leaves half of the weights, not 0.8 * 0.5 of them.

Shapes: conv weights OIHW ``(C_out, C_in, KH, KW)``, depthwise ``(C, 1, KH, KW)``,
dense ``(out, in)``.  An "output channel" is one slice ``w[c]``.
"""

import math
import numbers

import numpy as np

from .common import check_level
from .layers import Conv2d, Dense, DepthwiseConv2d

__all__ = ["PruningStrategy", "LevelPrune", "ThresholdPrune", "ChannelPrune", "GlobalLevelPrune",
           "l1", "l2"]

# The layers whose weight is a filter or a matrix, which strategies prune and
# ``sparsity`` counts.  (BatchNorm's per-channel scale is also called
# "weight"; it is never pruned for its own sake.)
WEIGHTED_LAYERS = (Conv2d, DepthwiseConv2d, Dense)


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


def _check_keep(keep, w, who):
    if keep is None:
        return np.ones(w.shape, dtype=bool)
    keep = np.asarray(keep)
    if keep.shape != w.shape or keep.dtype != bool:
        raise ValueError(f"{who}: the keep-mask must be a boolean array of the weight's shape "
                         f"{w.shape}, got {keep.dtype} of shape {keep.shape}")
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
    """

    structure = "entries"
    whole_model = False
    targets = "Conv2d, DepthwiseConv2d and Dense weights"

    def can_prune(self, layer):
        return isinstance(layer, WEIGHTED_LAYERS)

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
        w = np.asarray(w)
        keep = _check_keep(keep, w, repr(self))
        magnitude = np.abs(w).ravel()
        # np.lexsort sorts by its *last* key first: masked entries (keep False)
        # come before kept ones, then by magnitude.  It is a stable sort, so
        # equal magnitudes stay in index order.
        order = np.lexsort((magnitude, keep.ravel()))
        mask = np.ones(w.size, dtype=bool)
        mask[order[:_n_pruned(self.p, w.size)]] = False
        return mask.reshape(w.shape)


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
        w = np.asarray(w)
        _check_keep(keep, w, repr(self))
        return np.abs(w) >= self.t


class ChannelPrune(PruningStrategy):
    """Structured pruning: zero whole output channels of every convolution.

    In every Conv2d and DepthwiseConv2d (Dense layers are untouched) the C_out
    output channels ``w[c]`` are scored by ``magnitude`` and the
    ``C - ceil((1 - p) C)`` lowest-scoring ones are zeroed, all their
    ``K = C_in * KH * KW`` weights at once (along axis 0 of the OIHW weight).
    As for every channel strategy (``structure = "channels"``), ``prune``
    also masks, on the same channels, the conv's own bias (if any) and the
    gamma and beta of the following layer if it is a BatchNorm2d over the same
    channels, so that a pruned channel outputs exactly zero after its
    BatchNorm, whatever the BatchNorm's running statistics.

    ``magnitude`` receives one (C_out, K) array: row c holds channel c's
    weights flattened, as the forward pass sees them (already-masked entries
    are zero); it is a copy, so the function may change it freely.  It must
    return C_out finite scores, one per channel, higher = more important.
    The default is :func:`l1`, the sum of ``|w|`` over the row.

    Equal scores are broken by position (lower channel index pruned first).
    Repeated pruning: a channel with no kept weight left ranks below every
    other, so levels count from the full C_out; ``ChannelPrune(0.5)`` after
    ``ChannelPrune(0.2)`` leaves ``ceil(C/2)`` channels.
    """

    structure = "channels"
    targets = "Conv2d and DepthwiseConv2d weights (whole output channels)"

    def __init__(self, p, magnitude=l1):
        self.p = check_level(p, "ChannelPrune")
        if not callable(magnitude):
            raise TypeError(f"ChannelPrune: magnitude must be a function of a (C_out, K) array, "
                            f"got {magnitude!r}")
        self.magnitude = magnitude

    def __repr__(self):
        name = getattr(self.magnitude, "__name__", repr(self.magnitude))
        return f"ChannelPrune({self.p})" if self.magnitude is l1 else f"ChannelPrune({self.p}, {name})"

    def can_prune(self, layer):
        return isinstance(layer, (Conv2d, DepthwiseConv2d))

    def __call__(self, w, keep=None):
        w = np.asarray(w)
        keep = _check_keep(keep, w, repr(self))
        c_out = w.shape[0]
        channels = (w * keep).reshape(c_out, -1)            # (C_out, K), masked entries 0
        scores = np.asarray(self.magnitude(channels.copy()))
        if scores.shape != (c_out,):
            raise ValueError(f"{self!r}: the magnitude function returned shape {scores.shape} for "
                             f"{c_out} channels of {channels.shape[1]} weights; expected ({c_out},)")
        if scores.dtype.kind not in "fiu" or not np.all(np.isfinite(scores)):
            raise ValueError(f"{self!r}: the magnitude function must return finite numbers, "
                             f"got {scores!r}")
        alive = keep.reshape(c_out, -1).any(axis=1)        # channels with a weight left
        order = np.lexsort((scores, alive))                # dead channels first, then by score
        kept = np.ones(c_out, dtype=bool)
        kept[order[:_n_pruned(self.p, c_out)]] = False
        # Spread the (C_out,) decision over each channel's K weights.
        return np.broadcast_to(kept.reshape((-1,) + (1,) * (w.ndim - 1)), w.shape).copy()
