"""Pruning: strategies that choose which weights to zero, and masks that keep them zero.

A *strategy* is a small value.  Called on a weight array it returns a boolean
*keep-mask* of the same shape (True = the weight stays)::

    LevelPrune(0.2)(w)        # keep the ceil(0.8 * w.size) largest |w|
    ThresholdPrune(0.01)(w)   # keep |w| >= 0.01
    ChannelPrune(0.2)(w)      # keep the ceil(0.8 * C_out) output channels of largest L1 norm

``prune(strategy, model)`` returns a pruned *copy* of the model: it walks the
layers, calls the strategy on every weight array it may prune, and stores the
result in ``layer.masks["weight"]``.  The layers honour the mask everywhere:
the forward pass reads masked entries as zero, the backward pass gives them
zero gradient, and the optimisers put them back to zero after every step.
So a pruned weight stays pruned through finetuning, until ``keepprune``
bakes the zeros into plain arrays and drops the masks.

What each strategy may prune:

* ``LevelPrune``, ``GlobalLevelPrune``, ``ThresholdPrune``: the weights of
  ``Conv2d``, ``DepthwiseConv2d`` and ``Dense`` layers, entry by entry
  (never biases, never BatchNorm);
* ``ChannelPrune``: the weights of ``Conv2d`` and ``DepthwiseConv2d``, whole
  output channels at a time, plus the following BatchNorm's gamma and beta.

Repeated pruning composes: a mask only ever loses entries (new mask = old
mask & the strategy's mask), and levels count from the array's full size,
with already-masked entries ranked as the smallest.  So pruning 0.2 and then
0.5 leaves half of the weights, not 0.8 * 0.5 of them.

Shapes: conv weights OIHW ``(C_out, C_in, KH, KW)``, depthwise ``(C, 1, KH, KW)``,
dense ``(out, in)``.  An "output channel" is one slice ``w[c]``.
"""

import math
import numbers
import warnings
from collections import namedtuple

import numpy as np

from .activations import identity
from .layers import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Layer, layer_at,
                     parse_path)

__all__ = [
    "PruningStrategy", "LevelPrune", "ThresholdPrune", "ChannelPrune", "GlobalLevelPrune",
    "l1", "l2", "prune", "keepprune", "sparsity", "SparsityTable", "SparsityRow",
    "iterativeprune",
]


# ---------------------------------------------------------------------------
# Checking arguments
# ---------------------------------------------------------------------------

def _check_level(p, who):
    """``p`` as a float in [0, 1], or a ValueError/TypeError naming ``who``."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"{who}: the level must be a number in [0, 1], got {p!r}")
    if not 0 <= p <= 1:  # also false for nan
        raise ValueError(f"{who}: the level must lie in [0, 1] (the fraction of weights "
                         f"to prune), got {p!r}")
    return float(p)


def _n_pruned(p, n):
    """How many of ``n`` entries a level-``p`` pruning zeroes: n - ceil((1 - p) n).

    Rounding keeps entries rather than prunes them: 20% of 7 weights prunes 1
    (keeps ceil(5.6) = 6).  The float product is the original's formula, so the
    counts (and the tutorial's 44,794 pruned weights) match it exactly.
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

    ``can_prune(layer)`` says which layers' weights the strategy applies to,
    and ``targets`` says the same in words for error messages.  Write your own
    strategy by subclassing and defining ``__call__`` (and those two if it
    prunes other layers).
    """

    targets = "Conv2d, DepthwiseConv2d and Dense weights"

    def can_prune(self, layer):
        return isinstance(layer, (Conv2d, DepthwiseConv2d, Dense))

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
        self.p = _check_level(p, type(self).__name__)

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
    list or dict, since its ranking needs every layer at once.  Repeated
    pruning composes as for ``LevelPrune``.
    """


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
    ``prune`` also masks, on the same channels, the conv's own bias (if any)
    and the gamma and beta of the following layer if it is a BatchNorm2d over
    the same channels, so that a pruned channel outputs exactly zero after
    its BatchNorm, whatever the BatchNorm's running statistics.

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

    targets = "Conv2d and DepthwiseConv2d weights (whole output channels)"

    def __init__(self, p, magnitude=l1):
        self.p = _check_level(p, "ChannelPrune")
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


# ---------------------------------------------------------------------------
# prune: mapping strategies over a model
# ---------------------------------------------------------------------------

def _is_none(strategy):
    """True for the entries that mean "leave this layer alone"."""
    return strategy is None or strategy is identity


def _check_strategy(strategy, where):
    if not isinstance(strategy, PruningStrategy):
        raise TypeError(f"prune: {where}: expected a pruning strategy (LevelPrune, ChannelPrune, ...), "
                        f"None, a list or a dict, got {strategy!r}")
    if isinstance(strategy, GlobalLevelPrune):
        raise ValueError(f"prune: {where}: GlobalLevelPrune ranks all weights of the model together; "
                         "give it to prune on its own, not per layer")


def _targets(strategy, layer, path):
    """``[(path, layer)]`` for every leaf under ``layer`` that ``strategy`` prunes.

    A leaf named on its own must be prunable; a chain must hold at least one
    prunable leaf.  Either way the error names the layer.
    """
    if not isinstance(layer, Chain):
        if not strategy.can_prune(layer):
            raise ValueError(f"prune: model{path} is a {type(layer).__name__}; {strategy!r} prunes "
                             f"{strategy.targets} only")
        return [(path, layer)]
    found = [(path + sub, leaf) for sub, leaf in layer.named_layers() if strategy.can_prune(leaf)]
    if not found:
        where = f"model{path}" if path else "the model"
        raise ValueError(f"prune: {where} has no layer {strategy!r} can prune; it prunes "
                         f"{strategy.targets}")
    return found


def _assign_list(strategies, chain, path):
    """``[(path, layer, strategy)]`` for a list that mirrors ``chain``, nesting included."""
    where = f"model{path}"
    if not isinstance(chain, Chain):
        raise ValueError(f"prune: a list of strategies was given for {where}, a "
                         f"{type(chain).__name__}; lists are for Chains (use a strategy or None)")
    if len(strategies) != len(chain):
        raise ValueError(f"prune: {where} is a Chain of {len(chain)} layers but the list of "
                         f"strategies has {len(strategies)} entries; use None for a layer to leave alone")
    out = []
    for i, (strategy, layer) in enumerate(zip(strategies, chain)):
        sub = f"{path}[{i}]"
        if _is_none(strategy):
            continue
        if isinstance(strategy, (list, tuple)):
            out += _assign_list(strategy, layer, sub)
            continue
        _check_strategy(strategy, f"model{sub}")
        out += [(p, leaf, strategy) for p, leaf in _targets(strategy, layer, sub)]
    return out


def _assign_dict(strategies, model):
    """``[(path, layer, strategy)]`` for a dict from layer paths to strategies."""
    out = []
    for path, strategy in strategies.items():
        try:
            layer = layer_at(model, path)
        except ValueError as error:
            raise ValueError(f"prune: {error}") from None
        # Write the path the way named_layers does ("[1][2]", no negative indices).
        chain, canonical = model, ""
        for i in parse_path(path):
            canonical += f"[{i % len(chain)}]"
            chain = chain[i]
        if _is_none(strategy):
            continue
        _check_strategy(strategy, f"model{canonical}")
        out += [(p, leaf, strategy) for p, leaf in _targets(strategy, layer, canonical)]
    return out


def _assignments(strategy, model):
    """Which strategy prunes which leaf: a list of ``(path, layer, strategy)``."""
    if isinstance(strategy, dict):
        out = _assign_dict(strategy, model)
    elif isinstance(strategy, (list, tuple)):
        out = _assign_list(strategy, model, "")
    elif _is_none(strategy):
        out = []
    else:
        if not isinstance(strategy, PruningStrategy):
            raise TypeError(f"prune: expected a pruning strategy (LevelPrune, ChannelPrune, ...), "
                            f"a list or a dict of them, got {strategy!r}")
        out = [(p, leaf, strategy) for p, leaf in _targets(strategy, model, "")]
    seen = set()
    for path, layer, _ in out:
        if id(layer) in seen:
            raise ValueError(f"prune: model{path} is given two strategies; name each layer once "
                             "(a path or list entry for a Chain covers every layer inside it)")
        seen.add(id(layer))
    return out


def _add_mask(layer, name, keep):
    """Combine ``keep`` into ``layer.masks[name]`` (old & new) and zero the stored entries."""
    old = layer.masks.get(name)
    keep = keep if old is None else old & keep
    layer.masks[name] = keep
    getattr(layer, name)[~keep] = 0


def _strategy_mask(strategy, layer):
    """The strategy's keep-mask for ``layer.weight``, checked to be one (a user's strategy may err)."""
    w = layer.weight
    keep = np.asarray(strategy(w, layer.masks.get("weight")))
    if keep.shape != w.shape or keep.dtype != bool:
        raise ValueError(f"{strategy!r} returned a {keep.dtype} array of shape {keep.shape}; "
                         f"expected a boolean keep-mask of the weight's shape {w.shape}")
    return keep


def _channel_prune(strategy, layer, following):
    """Mask whole output channels of a conv, its bias, and the next BatchNorm's gamma and beta."""
    keep = _strategy_mask(strategy, layer)
    kept = keep.reshape(keep.shape[0], -1).all(axis=1)   # (C_out,): ChannelPrune masks whole rows
    _add_mask(layer, "weight", keep)
    if getattr(layer, "bias", None) is not None:
        _add_mask(layer, "bias", kept.copy())
    if isinstance(following, BatchNorm2d) and following.channels == len(kept):
        _add_mask(following, "weight", kept.copy())
        _add_mask(following, "bias", kept.copy())


def _global_level_prune(strategy, layers):
    """Rank the weights of all ``layers`` as one flat array; split the mask back per layer."""
    flat = np.concatenate([layer.weight.ravel() for layer in layers])
    keep = np.concatenate([layer.masks.get("weight", np.ones(layer.weight.shape, dtype=bool)).ravel()
                           for layer in layers])
    mask = strategy(flat, keep)
    start = 0
    for layer in layers:
        size = layer.weight.size
        _add_mask(layer, "weight", mask[start:start + size].reshape(layer.weight.shape))
        start += size


def prune(strategy, model):
    """A pruned copy of ``model``; ``model`` itself is never changed.

    ``strategy`` is one of

    * a strategy: applied to every layer of the model it can prune
      (``prune(LevelPrune(0.2), m)``);
    * a list mirroring a Chain, one entry per element: a strategy, ``None``
      (or ``identity``) to leave the element alone, or, for an element that is
      itself a Chain, a nested list for its elements.  A strategy given for a
      Chain element applies to every layer inside it it can prune.  For
      MobileNet ``[LevelPrune(0.5), None]`` prunes the backbone only and
      ``[None, [None, None, LevelPrune(0.5), None, None]]`` the first dense layer;
    * a dict from layer paths to strategies, ``{"[0][3]": ChannelPrune(0.5)}``
      (a path naming a Chain means every prunable layer inside it);
    * ``None``: nothing is pruned, the result is a plain copy.

    Every pruned weight gets ``layer.masks["weight"]`` (boolean, True = kept,
    the weight's shape), combined with any mask it had (old & new), and the
    stored weight is set to zero where masked; ChannelPrune masks the
    conv's bias and the next BatchNorm's ``weight``/``bias`` the same way.

    Errors (ValueError or TypeError, naming the layer path or argument): a
    list whose length differs from its chain, a path naming no layer, a
    strategy named for a layer it cannot prune (LevelPrune on a BatchNorm), a
    model with nothing the strategy can prune, a layer named twice.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"prune: expected a model (a Layer or Chain), got {type(model).__name__}")
    pruned = model.copy()
    assignments = _assignments(strategy, pruned)   # checks everything before any change
    if isinstance(strategy, GlobalLevelPrune):
        _global_level_prune(strategy, [layer for _, layer, _ in assignments])
        return pruned
    leaves = [layer for _, layer in pruned.named_layers()]
    following = {id(a): b for a, b in zip(leaves, leaves[1:])}   # the next leaf, across chains
    for path, layer, s in assignments:
        try:
            if isinstance(s, ChannelPrune):
                _channel_prune(s, layer, following.get(id(layer)))
            else:
                _add_mask(layer, "weight", _strategy_mask(s, layer))
        except ValueError as error:
            raise ValueError(f"prune: model{path}: {error}") from error
    return pruned


def keepprune(model):
    """A copy of ``model`` with its masks baked in: masked entries are plain zeros, no masks left.

    Training the result may regrow the zeroed weights, since nothing keeps
    them at zero any more.  ``model`` itself is not changed.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"keepprune: expected a model (a Layer or Chain), got {type(model).__name__}")
    baked = model.copy()
    for _, layer in baked.named_layers():
        for name, keep in layer.masks.items():
            getattr(layer, name)[~keep] = 0
        layer.masks = {}
    return baked


# ---------------------------------------------------------------------------
# Measuring sparsity
# ---------------------------------------------------------------------------

SparsityRow = namedtuple("SparsityRow", "path type weights zeros fraction channels zero_channels")
SparsityRow.__doc__ = """One conv or dense layer: weights and zero weights, their ratio,
and for convolutions the output channels and the all-zero ones (None for Dense)."""


class SparsityTable(list):
    """Rows of :class:`SparsityRow`, one per conv/dense layer; ``str()`` gives a table.

    Totals: ``.weights``, ``.zeros``, ``.fraction`` (zeros / weights), and
    ``.channels``, ``.zero_channels`` summed over the convolutions.  For a
    plot, ``[r.fraction for r in table]`` against ``[r.path for r in table]``.
    """

    weights = property(lambda self: sum(r.weights for r in self))
    zeros = property(lambda self: sum(r.zeros for r in self))
    channels = property(lambda self: sum(r.channels for r in self if r.channels is not None))
    zero_channels = property(lambda self: sum(r.zero_channels for r in self if r.channels is not None))

    @property
    def fraction(self):
        return self.zeros / self.weights if self.weights else 0.0

    def __str__(self):
        def channels(c, z):
            return "-" if c is None else f"{z}/{c}"
        header = ("layer", "type", "weights", "zeros", "sparsity", "zero channels")
        body = [(r.path, r.type, f"{r.weights:,}", f"{r.zeros:,}", f"{r.fraction:.1%}",
                 channels(r.channels, r.zero_channels)) for r in self]
        body.append(("total", "", f"{self.weights:,}", f"{self.zeros:,}", f"{self.fraction:.1%}",
                     channels(self.channels, self.zero_channels)))
        rows = [header] + body
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for k, row in enumerate(rows):
            if k == 1 or k == len(rows) - 1:
                lines.append("  ".join("-" * w for w in widths))
            cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def sparsity(model):
    """Weight sparsity of every Conv2d, DepthwiseConv2d and Dense layer, and in total.

    Zeros are counted in the weights as the forward pass uses them (masked
    entries count as zero, and so do plain zeros, e.g. after ``keepprune``).
    For convolutions a zero channel is an output channel ``w[c]`` whose
    weights are all zero.  Biases and BatchNorm are not counted.  Returns a
    :class:`SparsityTable`.
    """
    rows = []
    for path, layer in model.named_layers():
        if not isinstance(layer, (Conv2d, DepthwiseConv2d, Dense)):
            continue
        w = layer.effective("weight")
        zeros = w.size - int(np.count_nonzero(w))
        channels = zero_channels = None
        if not isinstance(layer, Dense):
            channels = w.shape[0]
            zero_channels = int(np.count_nonzero(~w.reshape(channels, -1).any(axis=1)))
        rows.append(SparsityRow(path, type(layer).__name__, w.size, zeros, zeros / w.size,
                                channels, zero_channels))
    return SparsityTable(rows)


# ---------------------------------------------------------------------------
# Iterative pruning
# ---------------------------------------------------------------------------

def iterativeprune(finetune, stages, model, maxtries=5):
    """Prune in stages, finetuning after each, and stop when finetuning cannot recover.

    For each stage (anything ``prune`` accepts: a strategy, a list, a dict),
    in order:

    1. ``candidate = prune(stage, previous)``, a new model pruned once from the
       last model that passed (``model`` itself for the first stage);
    2. call ``finetune(candidate)`` until it returns True.  ``finetune``
       trains ``candidate`` *in place* (masks keep the pruned weights at zero)
       and returns True when the model is good enough (say, validation
       accuracy above a target), False otherwise.  A retry calls it again on
       the same candidate, so training continues from where the last attempt
       stopped; the candidate is never pruned again within a stage.
    3. If ``finetune`` has returned False ``maxtries`` times, warn (a
       ``UserWarning``) and return the last model that passed: the previous
       stage's, or a copy of ``model`` if the first stage failed.

    ``model`` is never changed.  Returns the model after the last stage that
    passed.  Note levels count from the full size (see ``prune``), so stages
    ``[LevelPrune(0.2), LevelPrune(0.5)]`` end at half the weights.
    """
    if isinstance(maxtries, (bool, np.bool_)) or not isinstance(maxtries, numbers.Integral) or maxtries < 1:
        raise ValueError(f"iterativeprune: maxtries must be a positive integer, got {maxtries!r}")
    if not callable(finetune):
        raise TypeError(f"iterativeprune: finetune must be a function of the model, got {finetune!r}")
    if isinstance(stages, (PruningStrategy, dict)) or not hasattr(stages, "__iter__"):
        raise TypeError(f"iterativeprune: stages must be a list of stages, e.g. [LevelPrune(0.2), "
                        f"LevelPrune(0.5)], got {stages!r}")
    passed = model.copy()
    for number, stage in enumerate(stages, start=1):
        candidate = prune(stage, passed)
        for _ in range(maxtries):
            ok = finetune(candidate)
            if not isinstance(ok, (bool, np.bool_)):
                raise TypeError(f"iterativeprune: finetune must return True or False, got {ok!r}")
            if ok:
                break
        else:
            warnings.warn(f"iterativeprune: finetuning failed {maxtries} times after stage {number} "
                          f"({stage!r}); returning the model after stage {number - 1}", stacklevel=2)
            return passed
        passed = candidate
    return passed
