"""Figures for the pruning pipeline, drawn with matplotlib and saved as PNG.

Every function builds a :class:`tinyprune.figures.Figure` directly (never
through ``pyplot``), so it works on a machine without a display and never
opens a window, yet a notebook shows it like any figure.  Each returns the
figure; pass ``save="name.png"`` (or call :func:`save_figure`) to write it.
``import tinyprune`` does not import this module, so matplotlib is only
loaded by those who draw::

    from tinyprune import plots
    plots.plot_sparsity(model, save="sparsity.png")

This module draws models layer by layer: where the zeros are
(:func:`plot_sparsity`), the multiplies per stage (:func:`plot_macs`), one
layer's weights (:func:`plot_weight_histogram`), the channels left after
resizing (:func:`plot_channels`).  The figures of measured numbers -- a
training history, a sensitivity scan, a kernel's speed-up, a grid of data
set images -- live in :mod:`tinyprune.figures` with what every figure is
built on, and are imported here, so ``from tinyprune.plots import X`` works
for every figure.

Where a figure draws a table that the library computes (dot-product counts:
:func:`tinyprune.dot_prod_table`; sparsity: :func:`tinyprune.sparsity`),
the function accepts the model and computes the table itself, or the table
already computed: a program that has the tables (the ``tinyprune`` command)
hands them over, so nothing is counted twice.

Layers are named on the axes by short labels, one counter per kind, in the
order the forward pass meets them (:func:`layer_labels`):

    conv  a full convolution        (MobileNet's first 3x3 conv: conv1)
    dw    a depthwise convolution   (dw1 ... dw13)
    pw    a pointwise 1x1 convolution (pw1 ... pw13)
    fc    a dense layer             (fc1, fc2)

Only these layers do dot products, so only they appear; BatchNorm,
activations and pooling have no weights to prune and cost no multiplies under
any counting rule.  Models are compared layer by layer *by position* among
these layers, which works because pruning, propagating and resizing never
add or remove a layer, only channels.
"""

import numpy as np
from matplotlib.ticker import FuncFormatter

from .count import DotProdTable, dot_prod_table
from .figures import (COLOURS, Figure, finish, plot_history, plot_sensitivity, plot_sparse_speedup,
                      save_figure, save_grid)
from .layers import Conv2d, Dense, DepthwiseConv2d, layer_at, parse_path
from .model import TUTORIAL_INPUT
from .module import check_model
from .prune import SparsityTable, sparsity

__all__ = [
    "Figure", "save_figure", "dot_layers", "layer_labels", "zero_kinds",
    "plot_sparsity", "plot_macs", "plot_weight_histogram", "plot_channels",
    "plot_sensitivity", "plot_history", "plot_sparse_speedup", "save_grid",
]

DOT_LAYERS = (Conv2d, DepthwiseConv2d, Dense)
DOT_TYPES = tuple(kind.__name__ for kind in DOT_LAYERS)     # as a DotProdTable names them


# ---------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------

def _kind(layer):
    if isinstance(layer, DepthwiseConv2d):
        return "dw"
    if isinstance(layer, Dense):
        return "fc"
    return "pw" if layer.kernel == (1, 1) else "conv"


def dot_layers(model):
    """``[(path, layer)]`` of the conv and dense layers, in forward order."""
    return [(path, layer) for path, layer in model.named_layers() if isinstance(layer, DOT_LAYERS)]


def layer_labels(model):
    """Short axis labels of the conv and dense layers: ``["conv1", "dw1", "pw1", ..., "fc2"]``."""
    seen = {}
    labels = []
    for _, layer in dot_layers(model):
        kind = _kind(layer)
        seen[kind] = seen.get(kind, 0) + 1
        labels.append(f"{kind}{seen[kind]}")
    return labels


def _named_models(models, what):
    """A model, a dict {name: model} or a list of (name, model) -> list of (name, model).

    "Model" here may also be a model's table (a ``DotProdTable``).
    """
    if isinstance(models, dict):
        pairs = list(models.items())
    elif isinstance(models, (list, tuple)) and not isinstance(models, DotProdTable):
        pairs = list(models)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise TypeError(f"{what}: element {i} is {type(pair).__name__}, "
                                "expected a (name, model) pair")
    else:
        pairs = [("model", models)]
    if not pairs:
        raise ValueError(f"{what}: expected at least one model, got none")
    return [(str(name), model) for name, model in pairs]


def _same_layer_sequence(sequences, what):
    """Check every model has the conv/dense layers of the first one, same kinds in the same order.

    ``sequences``: ``[(name, [kind of each conv/dense layer])]``, one per model.
    """
    first, kinds = sequences[0]
    for name, other in sequences[1:]:
        if other != kinds:
            raise ValueError(
                f"{what}: model {name!r} has {len(other)} conv/dense layers ({' '.join(other[:6])} ...), "
                f"model {first!r} has {len(kinds)} ({' '.join(kinds[:6])} ...); "
                "layers are compared by position, so the sequences must match")


def _axis_labels(labels, model, paths, what):
    """``labels`` if given, else the short labels of ``model``, else (a table was given) ``paths``."""
    if labels is None:
        labels = paths if isinstance(model, (DotProdTable, SparsityTable)) else layer_labels(model)
    labels = [str(label) for label in labels]
    if len(labels) != len(paths):
        raise ValueError(f"{what}: got {len(labels)} labels for {len(paths)} conv/dense layers")
    return labels


def _label_layer_axis(ax, labels):
    """Put the layer labels under the bars, vertical so 29 of them do not overlap."""
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel("layer (conv: full conv, dw: depthwise, pw: pointwise 1x1, fc: dense)")


def _millions(value, _position=None):
    """Tick text for a count: 7505600 -> '7.5M', 48000 -> '48k'."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


# ---------------------------------------------------------------------------
# Sparsity
# ---------------------------------------------------------------------------

def _in_zero_slices(zero, axis):
    """True where an entry of ``zero`` (a boolean weight array) lies in an all-True slice along ``axis``."""
    others = tuple(a for a in range(zero.ndim) if a != axis)
    return np.broadcast_to(zero.all(axis=others, keepdims=True), zero.shape)


def zero_kinds(layer):
    """Where a conv or dense layer's zero weights lie: ``(dead_out, dead_in, scattered)``, in weights.

    dead_out   zeros in an output channel whose weights are all zero: row
               ``w[o]`` (what ``ChannelPrune`` makes, and propagation where
               nothing reads a channel);
    dead_in    the other zeros that lie in an all-zero input slice: ``w[:, j]``
               of a ``Conv2d``, column ``j`` of a ``Dense`` (what propagation
               makes where the channel feeding that slice died; a 1-output
               dense layer's columns are single weights, so all its zeros
               land here);
    scattered  the rest (what ``LevelPrune`` makes).

    The three add up to the layer's zeros.  A depthwise conv has no input
    slices of its own (its channel j in is its channel j out), so its dead
    input channels show as dead output channels.  The arrays and axes come
    from the layer's declaration (``out_channel_arrays``,
    ``in_channel_arrays``); masked weights count as zero, as in the forward pass.
    """
    zero = layer.effective("weight") == 0
    dead_out = _in_zero_slices(zero, layer.out_channel_arrays["weight"])
    in_axis = layer.in_channel_arrays.get("weight")
    dead_in = _in_zero_slices(zero, in_axis) & ~dead_out if in_axis is not None else np.zeros_like(zero)
    out, into = int(dead_out.sum()), int(dead_in.sum())
    return out, into, int(zero.sum()) - out - into


def plot_sparsity(model, title=None, save=None, labels=None):
    """Per-layer share of zero weights (%), split by where the zeros lie.

    ``model``: a model, or its table ``tinyprune.sparsity(model)``.
    ``labels``: the names under the bars; by default the model's short labels
    (:func:`layer_labels`), or the layer paths when a table is given.

    Each bar is one conv or dense layer's weight array, stacked from three
    parts (:func:`zero_kinds`): the zeros in all-zero output channels
    (``ChannelPrune``, and propagation where nothing reads a channel), the
    other zeros in all-zero input channels (propagation, where the channel
    feeding them died), and the scattered rest (``LevelPrune``).  The bar's
    height is the layer's whole sparsity; the title gives the total over all
    conv and dense weights.  The numbers agree with :func:`tinyprune.sparsity`
    (masked weights count as zero, as in the forward pass).

    A table records only the zero output channels of each layer, so from a
    table the bars have two parts: those, and all other zeros together.
    """
    from_table = isinstance(model, SparsityTable)
    table = model if from_table else sparsity(check_model(model, "plot_sparsity"))
    if not table:
        raise ValueError("plot_sparsity: the model has no conv or dense layer")
    weights = np.array([r.weights for r in table], dtype=float)
    zeros = np.array([r.zeros for r in table], dtype=float)
    if from_table:      # a zero channel holds weights / channels weights; a table gives no Dense channels
        dead_out = [r.zero_channels * r.weights // r.channels if r.channels else 0 for r in table]
        parts = [(dead_out, COLOURS[3], "in all-zero output channels"),
                 (zeros - dead_out, COLOURS[0], "elsewhere (pass the model to tell dead input "
                                                "channels from scattered zeros)")]
    else:
        kinds = np.array([zero_kinds(layer) for _, layer in dot_layers(model)], dtype=float)
        parts = [(kinds[:, 0], COLOURS[3], "in all-zero output channels"),
                 (kinds[:, 1], COLOURS[1], "in all-zero input channels"),
                 (kinds[:, 2], COLOURS[0], "scattered")]

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    for counts, colour, label in parts:
        share = 100 * np.asarray(counts, dtype=float) / weights
        ax.bar(x, share, bottom=bottom, color=colour, label=label)
        bottom = bottom + share
    _label_layer_axis(ax, _axis_labels(labels, model, [row.path for row in table], "plot_sparsity"))
    ax.set_ylabel("zero weights (% of the layer's weights)")
    ax.set_ylim(0, 125)                      # room above 100% for the legend
    ax.set_yticks(np.arange(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=len(parts))
    total = 100 * zeros.sum() / weights.sum()
    ax.set_title(title or f"Weight sparsity: {total:.1f}% of {int(weights.sum()):,} "
                          "conv and dense weights are zero")
    return finish(fig, save)


# ---------------------------------------------------------------------------
# Multiplies per stage
# ---------------------------------------------------------------------------

def _dot_rows(item, input_shape, rule, name):
    """The conv/dense rows of ``item``'s DotProdTable under ``rule`` (``item``: a model or its table)."""
    if not isinstance(item, DotProdTable):
        item = dot_prod_table(item, input_shape, rule)
    elif item.rule != rule:
        raise ValueError(f"plot_macs: the table of {name!r} counts under the rule {item.rule!r}, "
                         f"expected {rule!r}")
    return [row for row in item if row[1] in DOT_TYPES]


def plot_macs(stages, input_shape=TUTORIAL_INPUT, rule="reference", title=None, save=None, labels=None):
    """Multiplies per layer for each stage (grouped bars), and the totals with the % saved.

    ``stages``: ``{name: model}`` or ``[(name, model), ...]`` in pipeline order,
    e.g. baseline, level, channel, propagated, resized.  Counts are those of
    :func:`tinyprune.dot_prod_table` under ``rule`` for one forward pass on
    a batch of ``input_shape`` (NCHW).  Instead of a model a stage may be
    given as its ``DotProdTable`` under ``rule``, counted already (then
    ``input_shape`` is not used).  ``labels``: the names under the bars; by
    default the first model's short labels, or the layer paths when a table
    comes first.  Left panel: one group of bars per layer, one bar per
    stage.  Right panel: each stage's total, labelled with the percentage of
    the first stage's multiplies it saves.
    """
    pairs = _named_models(stages, "plot_macs")
    rows = [_dot_rows(item, input_shape, rule, name) for name, item in pairs]
    _same_layer_sequence([(name, [row[1] for row in r]) for (name, _), r in zip(pairs, rows)], "plot_macs")
    labels = _axis_labels(labels, pairs[0][1], [row[0] for row in rows[0]], "plot_macs")
    per_stage = [[row[3] for row in r] for r in rows]
    totals = [sum(m) for m in per_stage]
    batch = int(rows[0][0][2][0]) if rows[0] else 1           # N of the counted batch (NCHW)
    unit = "per image" if batch == 1 else f"for a batch of {batch}"

    fig = Figure(figsize=(14, 5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(4, 1))
    width = 0.8 / len(pairs)
    x = np.arange(len(labels))
    for k, ((name, _), mults) in enumerate(zip(pairs, per_stage)):
        left.bar(x - 0.4 + (k + 0.5) * width, mults, width, color=COLOURS[k % len(COLOURS)], label=name)
    _label_layer_axis(left, labels)
    left.set_ylabel(f"multiplies {unit}")
    left.yaxis.set_major_formatter(FuncFormatter(_millions))
    left.grid(axis="y", alpha=0.3)
    left.set_ylim(0, 1.2 * max(max(m) for m in per_stage))   # headroom: the legend sits above the bars
    left.legend(loc="upper center", ncol=len(pairs), fontsize=8)
    left.set_title(f"Multiplies per layer (counting rule {rule!r})")

    bars = right.bar(np.arange(len(pairs)), totals,
                     color=[COLOURS[k % len(COLOURS)] for k in range(len(pairs))])
    for k, (bar, total) in enumerate(zip(bars, totals)):
        saved = 100 * (1 - total / totals[0]) if totals[0] else 0.0
        text = f"{total / 1e6:.2f}M" if k == 0 else f"{total / 1e6:.2f}M\n-{saved:.1f}%"
        right.annotate(text, (bar.get_x() + bar.get_width() / 2, total), ha="center", va="bottom",
                       fontsize=8, xytext=(0, 2), textcoords="offset points")
    right.set_xticks(np.arange(len(pairs)))
    right.set_xticklabels([name for name, _ in pairs], rotation=45, ha="right")
    right.set_ylim(0, 1.18 * max(totals))
    right.yaxis.set_major_formatter(FuncFormatter(_millions))
    right.set_ylabel(f"total multiplies {unit}")
    right.set_title(f"Total, saved vs {pairs[0][0]!r}")
    if title:
        fig.suptitle(title)
    return finish(fig, save)


# ---------------------------------------------------------------------------
# Weights of one layer
# ---------------------------------------------------------------------------

def _find_layer(model, layer):
    """``(layer, path)`` for a path ("[0][9]", (0, 9)) or a short label ("pw2")."""
    if isinstance(layer, str) and not layer.startswith(("[", "model")):
        labels = layer_labels(model)
        if layer not in labels:
            raise ValueError(f"plot_weight_histogram: no layer labelled {layer!r}; "
                             f"labels are {', '.join(labels)}")
        path, found = dot_layers(model)[labels.index(layer)]
        return found, path
    path = "".join(f"[{i}]" for i in parse_path(layer))
    found = layer_at(model, path)
    if not isinstance(found, DOT_LAYERS):
        raise ValueError(f"plot_weight_histogram: model{path} is a {type(found).__name__}; "
                         "expected a conv or dense layer")
    return found, path


def plot_weight_histogram(model, layer, after=None, bins=50, title=None, save=None):
    """Histogram of one layer's non-zero weights in each model (counts per bin).

    ``model``: a model, or ``[(name, model), ...]`` / ``{name: model}`` to
    overlay several; ``after`` adds a second model named "after" (the first
    is then "before").  ``layer``: a path (``"[0][9]"``) or a label from
    :func:`layer_labels` (``"pw2"``).  All models share the bin edges.

    Zero weights are left out of the bars and counted in the legend instead:
    after pruning they are a spike at 0 that would flatten everything else,
    and the interesting picture is the gap magnitude pruning cuts around 0.
    """
    if after is not None:
        pairs = [("before", model), ("after", after)]
    else:
        pairs = _named_models(model, "plot_weight_histogram")
    found = [_find_layer(m, layer) for _, m in pairs]
    weights = [lyr.effective("weight").ravel().astype(np.float64) for lyr, _ in found]
    everything = np.concatenate(weights)
    edges = np.histogram_bin_edges(everything[everything != 0] if everything.any() else everything, bins)

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for k, ((name, _), w) in enumerate(zip(pairs, weights)):
        counts, _ = np.histogram(w[w != 0], edges)
        zeros = w.size - np.count_nonzero(w)
        note = f"{zeros:,} zero ({100 * zeros / w.size:.1f}%, not drawn)" if zeros else "none zero"
        ax.stairs(counts, edges, color=COLOURS[k % len(COLOURS)], linewidth=1.5,
                  fill=(k == 0), alpha=0.35 if k == 0 else 1.0,
                  label=f"{name}: {w.size:,} weights, {note}")
    lyr, path = found[0]
    ax.set_xlabel("weight value")
    ax.set_ylabel("number of weights per bin")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    label = layer_labels(pairs[0][1])[[p for p, _ in dot_layers(pairs[0][1])].index(path)]
    ax.set_title(title or f"Weights of model{path} ({label}, {type(lyr).__name__} "
                          f"{'x'.join(str(s) for s in lyr.weight.shape)})")
    return finish(fig, save)


# ---------------------------------------------------------------------------
# Channels after resize
# ---------------------------------------------------------------------------

def plot_channels(before, after, names=("before resize", "after resize"), title=None, save=None):
    """Output channels of every conv and dense layer in two models, as grouped bars.

    Typically ``before`` is the propagated model and ``after`` its resized
    copy: the bars show how many channels (output features, for a dense
    layer) each layer keeps once the all-zero ones are cut out.  A depthwise
    conv's output channels are its input channels.  The title gives the
    totals.
    """
    pairs = [(names[0], before), (names[1], after)]
    _same_layer_sequence([(name, [_kind(layer) for _, layer in dot_layers(m)]) for name, m in pairs],
                         "plot_channels")
    counts = [[layer.weight.shape[0] for _, layer in dot_layers(m)] for _, m in pairs]
    labels = layer_labels(before)

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    for k, ((name, _), c) in enumerate(zip(pairs, counts)):
        ax.bar(x - 0.2 + 0.4 * k, c, 0.4, color=COLOURS[2 * k], label=f"{name} ({sum(c):,} in all)")
    _label_layer_axis(ax, labels)
    ax.set_ylabel("output channels (features for fc)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left")
    kept = 100 * sum(counts[1]) / sum(counts[0])
    ax.set_title(title or f"Channels per layer: {sum(counts[0]):,} -> {sum(counts[1]):,} "
                          f"({kept:.1f}% kept)")
    return finish(fig, save)
