"""Figures for the pruning pipeline, drawn with matplotlib and saved as PNG.

Every function builds a ``matplotlib.figure.Figure`` directly (never through
``pyplot``), so it works on a machine without a display and never opens a
window.  Each returns the figure; pass ``save="name.png"`` (or call
:func:`save_figure`) to write it.  ``import tinyprune`` does not import this
module, so matplotlib is only loaded by those who draw::

    from tinyprune import plots
    plots.plot_sparsity(model, save="sparsity.png")

The figures draw tables: dot-product counts (:func:`tinyprune.dot_prod_table`),
sparsity (:func:`tinyprune.sparsity`), a training history, a sensitivity
scan.  Where a table is computed from a model, the function also accepts
the model and computes the table itself; a program that has the tables
already (the ``tinyprune`` command) hands them over, so nothing is counted
twice.  :func:`save_grid` draws a grid of data set images.

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

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .common import atomic_write
from .count import DotProdTable, dot_prod_table
from .data import to_float
from .layers import Conv2d, Dense, DepthwiseConv2d, layer_at, parse_path
from .pipeline import TUTORIAL_INPUT
from .prune import SparsityTable, sparsity

__all__ = [
    "save_figure", "dot_layers", "layer_labels",
    "plot_sparsity", "plot_macs", "plot_weight_histogram", "plot_channels",
    "plot_sensitivity", "plot_history", "plot_sparse_speedup", "save_grid",
]

DOT_LAYERS = (Conv2d, DepthwiseConv2d, Dense)
DOT_TYPES = tuple(kind.__name__ for kind in DOT_LAYERS)     # as a DotProdTable names them
# One colour per stage or model, in order; the colour-blind-safe "tab10" start.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


# ---------------------------------------------------------------------------
# Saving and naming
# ---------------------------------------------------------------------------

def save_figure(fig, path, dpi=120):
    """Write ``fig`` as a PNG at ``path`` with ``common.atomic_write``; returns the path.

    A reader of ``path`` therefore sees either the old file or the whole new
    one, never half a picture.  The folder must exist: a figure is the end
    of a run, and a mistyped folder should fail, not appear.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_figure: folder {str(path.parent)!r} does not exist")
    return atomic_write(path, lambda stream: fig.savefig(stream, format="png", dpi=dpi))


def _finish(fig, save):
    if save is not None:
        save_figure(fig, save)
    return fig


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

def plot_sparsity(model, title=None, save=None, labels=None):
    """Per-layer share of zero weights (%), split into whole-channel and scattered zeros.

    ``model``: a model, or its table ``tinyprune.sparsity(model)``.
    ``labels``: the names under the bars; by default the model's short labels
    (:func:`layer_labels`), or the layer paths when a table is given.

    Each bar is one conv or dense layer's weight array.  Its lower part is the
    percentage of that layer's weights lying in output channels that are all
    zero (what ``ChannelPrune`` and propagation make); the upper part is the
    remaining zeros, scattered (what ``LevelPrune`` makes).  The bar's height
    is the layer's whole sparsity.  The title gives the total over all conv
    and dense weights.  The numbers are those of :func:`tinyprune.sparsity`
    (masked weights count as zero, as in the forward pass); a dense layer's
    zeros are all drawn as scattered.
    """
    table = model if isinstance(model, SparsityTable) else sparsity(model)
    if not table:
        raise ValueError("plot_sparsity: the model has no conv or dense layer")
    weights = np.array([r.weights for r in table], dtype=float)
    zeros = np.array([r.zeros for r in table], dtype=float)
    # A zero channel holds weights / channels weights.  Dense layers report no
    # channels: ChannelPrune leaves them alone, so all their zeros are scattered.
    in_channels = np.array([r.zero_channels * r.weights // r.channels if r.channels else 0
                            for r in table], dtype=float)
    channel_pct = 100 * in_channels / weights
    scattered_pct = 100 * (zeros - in_channels) / weights

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(table))
    ax.bar(x, channel_pct, color=COLOURS[3], label="in all-zero output channels (structured)")
    ax.bar(x, scattered_pct, bottom=channel_pct, color=COLOURS[0], label="scattered (unstructured)")
    _label_layer_axis(ax, _axis_labels(labels, model, [row.path for row in table], "plot_sparsity"))
    ax.set_ylabel("zero weights (% of the layer's weights)")
    ax.set_ylim(0, 118)                      # room above 100% for the legend
    ax.set_yticks(np.arange(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left")
    total = 100 * zeros.sum() / weights.sum()
    ax.set_title(title or f"Weight sparsity: {total:.1f}% of {int(weights.sum()):,} "
                          "conv and dense weights are zero")
    return _finish(fig, save)


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
    return _finish(fig, save)


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
    return _finish(fig, save)


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
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Sensitivity scan
# ---------------------------------------------------------------------------

def plot_sensitivity(levels, scans, baseline=None, title=None, save=None):
    """Accuracy after pruning one layer alone, per layer and pruning level, as heat maps.

    ``levels``: the pruning levels scanned, fractions in (0, 1), e.g.
    ``[0.1, 0.2, ..., 0.9]``.  ``scans``: ``{strategy name: {layer label:
    [accuracy at each level]}}`` with accuracies as fractions in [0, 1];
    one panel per strategy, one row per layer, one column per level.  Cells
    show the accuracy in %; ``baseline`` (the unpruned accuracy, a fraction)
    goes in the title.  The colour scale runs from 50% (chance level for two
    balanced classes) or the lowest value if lower, to the baseline or the
    highest value if higher.

    A heat map rather than one curve per layer: with 27 conv layers the
    curves would be a tangle, while rows stay readable.
    """
    levels = list(levels)
    if not scans:
        raise ValueError("plot_sensitivity: scans is empty; expected {strategy: {layer: accuracies}}")
    for strategy, scan in scans.items():
        for name, accuracies in scan.items():
            if len(accuracies) != len(levels):
                raise ValueError(f"plot_sensitivity: {strategy} / {name} has {len(accuracies)} "
                                 f"accuracies, expected one per level ({len(levels)})")
    rows = max(len(scan) for scan in scans.values())
    grids = {strategy: 100 * np.array([list(a) for a in scan.values()], dtype=float)   # (layers, levels), %
             for strategy, scan in scans.items()}
    low = min(50.0, min(g.min() for g in grids.values()))
    high = max([g.max() for g in grids.values()] + [100 * baseline if baseline is not None else low])
    high = max(high, low + 1.0)             # a colour scale needs some width
    fig = Figure(figsize=(4 + 3.5 * len(scans), 2.2 + 0.28 * rows), layout="constrained")
    axes = fig.subplots(1, len(scans), squeeze=False)[0]
    image = None
    for ax, (strategy, scan) in zip(axes, scans.items()):
        grid = grids[strategy]
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                # Dark cells get white text, light cells black.
                colour = "white" if grid[i, j] < low + 0.6 * (high - low) else "black"
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(np.arange(len(levels)))
        ax.set_xticklabels([f"{100 * p:.0f}" for p in levels])
        ax.set_yticks(np.arange(len(scan)))
        ax.set_yticklabels(list(scan.keys()), fontsize=8)
        ax.set_xlabel("pruning level of that layer (%)")
        ax.set_title(strategy)
    axes[0].set_ylabel("layer pruned (all others intact)")
    fig.colorbar(image, ax=list(axes), label="validation accuracy (%)")
    base = f", unpruned {100 * baseline:.1f}%" if baseline is not None else ""
    fig.suptitle(title or f"Sensitivity: accuracy with one layer pruned{base}")
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------

HISTORY_FIELDS = ("loss", "val_loss", "train_accuracy", "val_accuracy")


def _history_series(history):
    """``{field: [value per epoch]}`` from a History, a dict of lists or a list of per-epoch dicts."""
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    if isinstance(history, dict):
        return {k: [float(v) for v in history[k]] for k in HISTORY_FIELDS if k in history}
    epochs = list(history)
    return {k: [float(e[k]) for e in epochs] for k in HISTORY_FIELDS if epochs and k in epochs[0]}


def plot_history(history, batch_losses=None, title=None, save=None):
    """Loss and accuracy per epoch, training and validation.

    ``history``: what ``trainer`` records in ``model.history`` (a
    ``History``), or a dict of per-epoch lists, or a list of per-epoch dicts,
    with the fields ``loss`` and ``val_loss`` (binary cross-entropy, nats per
    image) and ``train_accuracy`` and ``val_accuracy`` (fractions in [0, 1]).
    Training figures are means over an epoch's batches, so they are drawn at
    the epoch's middle; validation runs after the epoch, drawn at its end.

    ``batch_losses``: optionally the loss of every training batch, in order,
    e.g. gathered with ``trainer(..., callback=...)``; drawn as a thin line so
    even a one-epoch run shows a curve.
    """
    series = _history_series(history)
    if not any(series.values()):
        raise ValueError(f"plot_history: expected per-epoch {', '.join(HISTORY_FIELDS)}; "
                         f"got {sorted(history) if isinstance(history, dict) else history!r}")
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    if batch_losses is not None and len(batch_losses):
        epochs = max(len(series.get("loss", [])), 1)
        steps = (np.arange(len(batch_losses)) + 0.5) * epochs / len(batch_losses)
        loss_ax.plot(steps, batch_losses, color=COLOURS[0], alpha=0.35, linewidth=1,
                     label="train, per batch")
    for ax, (train_key, val_key), scale in ((loss_ax, ("loss", "val_loss"), 1),
                                             (acc_ax, ("train_accuracy", "val_accuracy"), 100)):
        for k, (key, name, offset) in enumerate(((train_key, "train, epoch mean", 0.5),
                                                 (val_key, "validation", 1.0))):
            values = series.get(key)
            if values:
                epochs = np.arange(len(values)) + offset
                ax.plot(epochs, scale * np.asarray(values), marker="o", color=COLOURS[k], label=name)
        ax.set_xlabel("epoch")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_ylabel("binary cross-entropy (nats per image)")
    loss_ax.set_title("Loss")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_title("Accuracy")
    low, high = acc_ax.get_ylim()
    if high - low < 10:                  # a short run: keep a 0.2-point wobble from filling the panel
        low = min(max(0.0, (low + high) / 2 - 5), 90.0)
        acc_ax.set_ylim(low, low + 10)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Sparse kernel speed-up
# ---------------------------------------------------------------------------

def plot_sparse_speedup(sparsities, dense_ms, sparse_ms, title=None, save=None):
    """Time of a dense and a zero-skipping kernel against weight sparsity, and their ratio.

    ``sparsities``: fractions of zero weights; ``dense_ms``, ``sparse_ms``:
    the measured times in milliseconds at each.  Left: both times; right:
    speed-up = dense / sparse, with the break-even line at 1.
    """
    s = 100 * np.asarray(sparsities, dtype=float)
    dense_ms = np.asarray(dense_ms, dtype=float)
    sparse_ms = np.asarray(sparse_ms, dtype=float)
    if not len(s) == len(dense_ms) == len(sparse_ms):
        raise ValueError(f"plot_sparse_speedup: got {len(s)} sparsities, {len(dense_ms)} dense and "
                         f"{len(sparse_ms)} sparse times; expected one of each per sparsity")
    fig = Figure(figsize=(10, 4), layout="constrained")
    times, ratio = fig.subplots(1, 2)
    times.plot(s, dense_ms, marker="o", color=COLOURS[0], label="dense kernel")
    times.plot(s, sparse_ms, marker="o", color=COLOURS[1], label="zero-skipping kernel")
    times.set_xlabel("zero weights (%)")
    times.set_ylabel("time (ms)")
    times.set_title("Time per call")
    times.grid(alpha=0.3)
    times.legend()
    ratio.plot(s, dense_ms / sparse_ms, marker="o", color=COLOURS[2])
    ratio.axhline(1.0, color="grey", linestyle="--", label="break-even")
    ratio.set_xlabel("zero weights (%)")
    ratio.set_ylabel("speed-up (dense time / sparse time)")
    ratio.set_title("Speed-up of skipping zeros")
    ratio.grid(alpha=0.3)
    ratio.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Data set images
# ---------------------------------------------------------------------------

def save_grid(images, path, nrow=8, labels=None):
    """Write a PNG of images in a grid, ``nrow`` images per row; returns the path as a Path.

    images: (N, C, H, W), uint8 or float in [0, 1]; C is 3 (RGB) or 1 (grey).
    labels: optional (N,); 0/1 are titled "no person" / "person", other
    values (scores, names) printed as they are.  Each image gets 1.25 x 1.45
    inches at 100 dots per inch, room for a title.  Missing folders are
    created, and the file is written with ``common.atomic_write``, so a
    reader never sees half a picture.
    """
    pictures = to_float(images)
    count = len(pictures)
    rows = max(1, -(-count // nrow))
    figure = Figure(figsize=(1.25 * nrow, 1.45 * rows), dpi=100)
    axes = figure.subplots(rows, nrow, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= count:
            continue
        picture = pictures[k].transpose(1, 2, 0)  # CHW -> HWC for imshow
        if picture.shape[2] == 1:
            ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(picture, 0, 1), interpolation="nearest")
        if labels is not None:
            ax.set_title(_label_title(labels[k]), fontsize=8)
    figure.tight_layout(pad=0.3)
    return atomic_write(path, lambda stream: figure.savefig(stream, format="png"))


def _label_title(label):
    """"person" / "no person" for 1 / 0; anything else (a score, a name) as is."""
    if isinstance(label, (int, np.integer, float, np.floating)) and label in (0, 1):
        return "person" if label == 1 else "no person"
    return str(label)
