"""Pruning a model: mapping strategies over its layers, and masks that keep weights zero.

The strategies themselves (``LevelPrune``, ``ChannelPrune``, ...) live in
:mod:`tinyprune.strategies`; they are imported here too, so
``from tinyprune.prune import LevelPrune`` works.

``prune(strategy, model)`` returns a pruned *copy* of the model: it walks the
layers, calls the strategy on every weight array it may prune, and stores the
result in ``layer.masks["weight"]``.  ``prune_in_place(strategy, model)`` does
the same to the model itself (to prune while training: see
:mod:`tinyprune.gradual`).  The layers honour the mask everywhere:
the forward pass reads masked entries as zero, the backward pass gives them
zero gradient, and the optimisers put them back to zero after every step.
So a pruned weight stays pruned through finetuning, until ``keepprune``
bakes the zeros into plain arrays and drops the masks.

A strategy that prunes whole output channels (``structure = "channels"``)
gets the channel's other parameters masked too: the layer's bias and the
following BatchNorm's gamma and beta, so that a pruned channel is exactly
zero after its BatchNorm.  Which arrays those are, each layer type declares
(``out_channel_arrays``).

Repeated pruning composes: a mask only ever loses entries (new mask = old
mask & the strategy's mask), and levels count from the array's full size.
"""

import warnings
from collections import namedtuple

import numpy as np

from .activations import identity
from .common import check_int, format_html_table, format_table
from .layers import Chain, Dense, layer_at, parse_path
from .strategies import WEIGHTED_LAYERS, PruningStrategy, check_weights
# re-exported, so that ``from tinyprune.prune import LevelPrune`` keeps working
from .strategies import (ChannelPrune, GlobalLevelPrune, LevelPrune, NMPrune, ThresholdPrune,  # noqa: F401
                         l1, l2)
from .module import check_model

__all__ = [
    "PruningStrategy", "LevelPrune", "ThresholdPrune", "ChannelPrune", "GlobalLevelPrune",
    "NMPrune", "l1", "l2", "prune", "prune_in_place", "keepprune", "sparsity", "SparsityTable",
    "SparsityRow", "iterativeprune",
]


def _check_model(model, where):
    """A TypeError naming the function unless ``model`` is a Layer (a Chain is one)."""
    check_model(model, where)


# ---------------------------------------------------------------------------
# prune: which strategy prunes which layer
# ---------------------------------------------------------------------------

def _is_none(strategy):
    """True for the entries that mean "leave this layer alone"."""
    return strategy is None or strategy is identity


def _check_strategy(strategy, path):
    """An error naming ``model<path>`` ("" = the whole model) unless ``strategy`` can stand there."""
    where = f"model{path}: " if path else ""
    if not isinstance(strategy, PruningStrategy):
        raise TypeError(f"prune: {where}expected a pruning strategy (LevelPrune, ChannelPrune, ...), "
                        f"None, a list or a dict of them, got {strategy!r}")
    if strategy.structure not in ("entries", "channels"):
        raise ValueError(f"prune: {where}{strategy!r} has structure {strategy.structure!r}, "
                         "expected 'entries' or 'channels'")
    if strategy.whole_model and path:
        raise ValueError(f"prune: {where}{strategy!r} ranks all weights of the model together; "
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


def _assign(strategy, layer, path):
    """``[(path, leaf, strategy)]`` for what is given for ``layer``.

    That is a strategy, None (or ``identity``) to leave ``layer`` alone, or,
    for a Chain, a list with one such entry per element, nesting included.
    """
    if _is_none(strategy):
        return []
    if not isinstance(strategy, (list, tuple)):
        _check_strategy(strategy, path)
        return [(p, leaf, strategy) for p, leaf in _targets(strategy, layer, path)]
    where = f"model{path}"
    if not isinstance(layer, Chain):
        raise ValueError(f"prune: a list of strategies was given for {where}, a "
                         f"{type(layer).__name__}; lists are for Chains (use a strategy or None)")
    if len(strategy) != len(layer):
        raise ValueError(f"prune: {where} is a Chain of {len(layer)} layers but the list of "
                         f"strategies has {len(strategy)} entries; use None for a layer to leave alone")
    return [found for i, (entry, child) in enumerate(zip(strategy, layer))
            for found in _assign(entry, child, f"{path}[{i}]")]


def _find(model, path):
    """The layer at ``path`` (any spelling: "model[0][-1]") and its path as ``named_layers`` writes it."""
    try:
        layer = layer_at(model, path)
    except ValueError as error:
        raise ValueError(f"prune: {error}") from None
    chain, canonical = model, ""
    for i in parse_path(path):
        canonical += f"[{i % len(chain)}]"
        chain = chain[i]
    return layer, canonical


def _assignments(strategy, model):
    """Which strategy prunes which leaf: ``[(path, layer, strategy)]``, each leaf at most once.

    Also checks that every weight to be ranked is finite, so that a model
    gone bad (NaN after a diverged training) is named before anything changes.
    """
    if not isinstance(strategy, dict):
        found = _assign(strategy, model, "")
    else:
        found = []
        for path, entry in strategy.items():
            layer, path = _find(model, path)
            if not _is_none(entry):
                _check_strategy(entry, path)       # a dict names layers: no lists here
            found += _assign(entry, layer, path)
    seen = set()
    for path, layer, _ in found:
        if id(layer) in seen:
            raise ValueError(f"prune: model{path} is given two strategies; name each layer once "
                             "(a path or list entry for a Chain covers every layer inside it)")
        seen.add(id(layer))
    for path, layer, _ in found:
        check_weights(layer.weight, layer.masks.get("weight"), f"prune: model{path}")
    return found


def _add_mask(layer, name, keep):
    """Combine ``keep`` into ``layer.masks[name]`` (old & new) and zero the stored entries."""
    old = layer.masks.get(name)
    keep = keep if old is None else old & keep
    layer.masks[name] = keep
    value = getattr(layer, name)
    value[~keep] = 0


def _strategy_mask(strategy, layer, path):
    """The strategy's keep-mask for ``layer.weight``, checked to be one (a user's strategy may err)."""
    w = layer.weight
    keep = np.asarray(strategy.mask_for(layer, path))
    if keep.shape != w.shape or keep.dtype != bool:
        raise ValueError(f"{strategy!r} returned a {keep.dtype} array of shape {keep.shape}; "
                         f"expected a boolean keep-mask of the weight's shape {w.shape}")
    return keep


def _channel_parameters(layer):
    """``[(name, axis)]``: the trained arrays ``layer`` declares to carry its output channels."""
    return [(name, axis) for name, axis in layer.out_channel_arrays.items() if name in layer.param_names]


def _prune_channels(strategy, layer, following, keep):
    """Mask the channels a channel strategy pruned in the other parameters that carry them.

    ``keep`` is the strategy's mask of ``layer.weight``; it must keep or
    prune each output channel whole (a mask that keeps part of one is
    refused).  The masking is ``_mask_channel_parameters``'s.
    """
    rows = np.moveaxis(keep, layer.out_channel_arrays["weight"], 0)
    rows = rows.reshape(rows.shape[0], -1)
    kept = rows.all(axis=1)
    split = np.flatnonzero(kept != rows.any(axis=1))
    if split.size:
        raise ValueError(f"{strategy!r} prunes whole channels (structure 'channels'), but its mask "
                         f"keeps only part of output channel(s) {split[:5].tolist()}")
    _mask_channel_parameters(strategy, layer, following, kept)


def _mask_channel_parameters(strategy, layer, following, kept):
    """Mask a pruned channel in the other parameters that make it: ``layer``'s bias, the next BatchNorm.

    ``kept``: (C,) bool, False for the output channels of ``layer`` that
    ``strategy`` pruned (their weights get masked by ``prune`` itself);
    ``following``: the leaf after ``layer`` in the model, or None.  Zeroing
    a channel's weights is not enough to silence it: the forward pass
    still adds ``layer``'s bias j, and a BatchNorm after it outputs
    ``beta_j`` in train mode (the zero channel equals its batch mean) and
    ``beta_j - gamma_j * mean_j / sqrt(var_j + eps)`` in eval mode.  So mask
    channel j, too, in

    * ``layer``'s own trained arrays that carry its output channels, other
      than the weight (a conv's bias; absent when the conv has none);
    * the trained arrays of ``following``, if it keeps channels apart
      (``mixes_channels is False``) and ``strategy`` does not prune it for
      itself (``strategy.can_prune(following)`` is False: ChannelPrune ranks
      a depthwise conv on its own): a BatchNorm's gamma and beta (its
      running statistics are not trained, and stay).

    Each layer declares its output-channel arrays as ``{name: axis}``
    (``layer.out_channel_arrays``; ``_channel_parameters(layer)`` lists the
    trained ones).  Mask only an array whose channel axis has ``len(kept)``
    entries, with a keep-mask of the array's own shape (``kept`` spread
    along the other axes), through ``_add_mask(owner, name, mask)``, which
    combines it with an older mask and zeroes the stored entries.
    """
    ### BEGIN SOLUTION
    arrays = [(layer, name, axis) for name, axis in _channel_parameters(layer) if name != "weight"]
    if following is not None and following.mixes_channels is False and not strategy.can_prune(following):
        arrays += [(following, name, axis) for name, axis in _channel_parameters(following)]
    for owner, name, axis in arrays:
        value = getattr(owner, name)
        if value.shape[axis] == len(kept):          # the same channels
            along = [1] * value.ndim
            along[axis] = -1
            _add_mask(owner, name, np.broadcast_to(kept.reshape(along), value.shape).copy())
    ### END SOLUTION


def _prune_whole_model(strategy, layers):
    """Rank the weights of all ``layers`` as one flat array; split the mask back per layer."""
    flat = np.concatenate([layer.weight.ravel() for layer in layers])
    keep = np.concatenate([layer.masks.get("weight", np.ones(layer.weight.shape, dtype=bool)).ravel()
                           for layer in layers])
    ends = np.cumsum([layer.weight.size for layer in layers])
    for layer, mask in zip(layers, np.split(strategy(flat, keep), ends[:-1])):
        _add_mask(layer, "weight", mask.reshape(layer.weight.shape))


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
    stored weight is set to zero where masked.  A channel strategy
    (``structure = "channels"``: ChannelPrune, or your own) masks its channels
    in the layer's bias and the next BatchNorm's ``weight``/``bias`` too.  A
    ``whole_model`` strategy (GlobalLevelPrune) ranks all weights together.

    Errors (ValueError or TypeError, naming the layer path or argument): a
    list whose length differs from its chain, a path naming no layer, a
    strategy named for a layer it cannot prune (LevelPrune on a BatchNorm), a
    model with nothing the strategy can prune, a layer named twice, weights
    that are NaN or infinite.
    """
    _check_model(model, "prune")
    pruned = model.copy()
    assignments = _assignments(strategy, pruned)   # checks everything before any change
    if isinstance(strategy, PruningStrategy) and strategy.whole_model:
        _prune_whole_model(strategy, [layer for _, layer, _ in assignments])
        return pruned
    leaves = [layer for _, layer in pruned.named_layers()]
    following = {id(a): b for a, b in zip(leaves, leaves[1:])}   # the next leaf, across chains
    for path, layer, s in assignments:
        try:
            keep = _strategy_mask(s, layer, path)
            if s.structure == "channels":
                _prune_channels(s, layer, following.get(id(layer)), keep)
            _add_mask(layer, "weight", keep)
        except ValueError as error:
            raise ValueError(f"prune: model{path}: {error}") from error
    return pruned


def prune_in_place(strategy, model):
    """Prune ``model`` itself, as ``prune`` would prune a copy; returns ``model``.

    For pruning while training (:class:`tinyprune.gradual.GradualPrune`): an
    optimiser bound to ``model`` keeps its parameters, and reads the new
    masks at its next step, so the pruned weights stay at zero from then on.

    The work is ``prune``'s, done on a copy; then every array that carries a
    mask in the copy is copied, values and mask, into ``model``'s own array.
    Those are all the arrays ``prune`` changes (it changes an array only by
    masking it), so the two give the same model, and a refused call leaves
    ``model`` untouched.
    """
    pruned = prune(strategy, model)
    for (_, layer), (_, done) in zip(model.named_layers(), pruned.named_layers()):
        for name in done.masks:
            getattr(layer, name)[...] = getattr(done, name)
        layer.masks = dict(done.masks)
    return model


def keepprune(model):
    """A copy of ``model`` with its masks baked in: masked entries are plain zeros, no masks left.

    Training the result may regrow the zeroed weights, since nothing keeps
    them at zero any more.  ``model`` itself is not changed.

    How: copy the model (``model.copy()``, a deep copy, masks included).
    Every leaf layer of the copy (``named_layers()``) holds its masks in
    ``layer.masks``, a dict from an array's name (``"weight"``, ``"bias"``)
    to a boolean array of that array's shape, True = kept.  Set the copy's
    array to 0 wherever its mask is False -- a mask may hide a non-zero
    stored value (the forward pass reads ``layer.effective(name)``, the
    array times its mask), and the baked array must hold what the forward
    pass used -- then leave the layer with no masks (an empty dict).
    """
    _check_model(model, "keepprune")
    ### BEGIN SOLUTION
    baked = model.copy()
    for _, layer in baked.named_layers():
        for name, keep in layer.masks.items():
            getattr(layer, name)[~keep] = 0
        layer.masks = {}
    return baked
    ### END SOLUTION


# ---------------------------------------------------------------------------
# Measuring sparsity
# ---------------------------------------------------------------------------

SparsityRow = namedtuple("SparsityRow", "path type weights zeros fraction channels zero_channels")
SparsityRow.__doc__ = """One conv or dense layer: weights and zero weights, their ratio,
and for convolutions the output channels and the all-zero ones (None for Dense)."""


class SparsityTable(list):
    """Rows of :class:`SparsityRow`, one per conv/dense layer; ``str()`` and ``repr()`` give a table.

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

    def _cells(self):
        """``format_table``'s arguments: header, rows and total, as strings."""
        def channels(c, z):
            return "-" if c is None else f"{z}/{c}"
        header = ("layer", "type", "weights", "zeros", "sparsity", "zero channels")
        body = [(r.path, r.type, f"{r.weights:,}", f"{r.zeros:,}", f"{r.fraction:.1%}",
                 channels(r.channels, r.zero_channels)) for r in self]
        total = ("total", "", f"{self.weights:,}", f"{self.zeros:,}", f"{self.fraction:.1%}",
                 channels(self.channels, self.zero_channels))
        if not body:                 # no layers: the total right under the header, one rule
            return dict(header=header, rows=[total], left=2)
        return dict(header=header, rows=body, left=2, total=total)

    def __str__(self):
        return format_table(**self._cells())

    def __repr__(self):              # at a prompt, the table itself
        return str(self)

    def _repr_html_(self):           # in Jupyter, the same table in HTML
        return format_html_table(**self._cells())


def sparsity(model):
    """Weight sparsity of every Conv2d, DepthwiseConv2d and Dense layer, and in total.

    Zeros are counted in the weights as the forward pass uses them (masked
    entries count as zero, and so do plain zeros, e.g. after ``keepprune``).
    For convolutions a zero channel is an output channel ``w[c]`` whose
    weights are all zero.  Biases and BatchNorm are not counted.  Returns a
    :class:`SparsityTable`.
    """
    _check_model(model, "sparsity")
    rows = []
    for path, layer in model.named_layers():
        if not isinstance(layer, WEIGHTED_LAYERS):
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
    ``[LevelPrune(0.2), LevelPrune(0.5)]`` end at half the weights.  Every
    stage is checked against ``model`` before the first finetuning, so a
    mistake in stage 3 does not wait for two stages of training.
    """
    maxtries = check_int(maxtries, "maxtries", "iterativeprune")
    if not callable(finetune):
        raise TypeError(f"iterativeprune: finetune must be a function of the model, got {finetune!r}")
    _check_model(model, "iterativeprune")
    if isinstance(stages, (PruningStrategy, dict, str, bytes)) or not hasattr(stages, "__iter__"):
        raise TypeError(f"iterativeprune: stages must be a list of stages (strategies, or lists or "
                        f"dicts of them), e.g. [LevelPrune(0.2), LevelPrune(0.5)], got {stages!r}")
    stages = list(stages)
    for number, stage in enumerate(stages, start=1):
        try:
            _assignments(stage, model)
        except (TypeError, ValueError) as error:
            raise type(error)(f"iterativeprune: stage {number} of {len(stages)}: {error}") from None
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
