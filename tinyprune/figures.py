"""What every tinyprune figure is built on, and the figures of measured numbers.

Built on (and used by :mod:`tinyprune.plots` too):

* :class:`Figure`: a matplotlib figure made without pyplot, so it needs no
  display and never opens a window, which Jupyter still shows as a picture;
* :func:`save_figure`: write one as a PNG, atomically;
* ``COLOURS``: one colour per stage or model, in order.

The figures here draw plain numbers and need no model: a training history
(:func:`plot_history`), a sensitivity scan (:func:`plot_sensitivity`), a
kernel's speed-up (:func:`plot_sparse_speedup`) and a grid of data set
images (:func:`save_grid`).  Import them from :mod:`tinyprune.plots`, which
gives every figure, of numbers or of models, under one name.
"""

import io
from pathlib import Path

import matplotlib.figure
import numpy as np
from matplotlib.ticker import MaxNLocator

from .common import atomic_write, check_number
from .data import to_float

__all__ = ["Figure", "save_figure", "plot_sensitivity", "plot_history", "plot_sparse_speedup",
           "save_grid"]

# One colour per stage or model, in order; the colour-blind-safe "tab10" start.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


# ---------------------------------------------------------------------------
# Showing and saving
# ---------------------------------------------------------------------------

class Figure(matplotlib.figure.Figure):
    """A matplotlib ``Figure`` that Jupyter shows as a PNG.

    tinyprune draws without pyplot, so a figure needs no display and leaves
    no global state behind.  But then no display hook knows it: a notebook
    cell ending in a plain ``Figure`` shows only its text,
    ``<Figure size 1100x450 with 1 Axes>``.  IPython shows an object as the
    PNG its ``_repr_png_`` method returns, so this one method is all it
    takes.  At a plain Python prompt the figure still prints that text.
    """

    def _repr_png_(self):
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")      # at the figure's own 100 dots per inch
        return buffer.getvalue()


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


def finish(fig, save):
    """Save ``fig`` to ``save`` unless it is None; returns the figure (every plot's last line)."""
    if save is not None:
        save_figure(fig, save)
    return fig


# ---------------------------------------------------------------------------
# Sensitivity scan
# ---------------------------------------------------------------------------

def plot_sensitivity(levels, scans, baseline=None, title=None, save=None, majority=None):
    """Accuracy after pruning one layer alone, per layer and pruning level, as heat maps.

    ``levels``: the pruning levels scanned, fractions in (0, 1), e.g.
    ``[0.1, 0.2, ..., 0.9]``.  ``scans``: ``{strategy name: {layer label:
    [accuracy at each level]}}`` with accuracies as fractions in [0, 1];
    one panel per strategy, one row per layer, one column per level.  Cells
    show the accuracy in %; ``baseline`` (the unpruned accuracy, a fraction)
    goes in the title, and so does ``majority``, the share of the larger
    class among the images (a fraction): the accuracy of a model that gives
    every image the same answer, the floor a broken model sinks to.  The
    colour scale runs from 50% (chance level for two balanced classes) or
    the lowest value if lower, to the baseline or the highest value if
    higher.

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
    if majority is not None:
        base += f", one answer for every image {100 * majority:.1f}%"
    fig.suptitle(title or f"Sensitivity: accuracy with one layer pruned{base}")
    return finish(fig, save)


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


def _start_values(start):
    """``start`` (a ``(loss, accuracy)`` pair, an accuracy, or None) as ``{"val_loss": .., "val_accuracy": ..}``."""
    if start is None:
        return {}
    if isinstance(start, (tuple, list)):
        if len(start) != 2:
            raise ValueError(f"plot_history: start must be (loss, accuracy) as evaluate returns it, "
                             f"or the accuracy alone; got {len(start)} values")
        loss, acc = start
    else:
        loss, acc = None, start
    values = {}
    if loss is not None:
        values["val_loss"] = check_number(loss, "start loss", "plot_history", low=0)
    if acc is not None:
        values["val_accuracy"] = check_number(acc, "start accuracy (a fraction)", "plot_history",
                                              low=0, high=1)
    return values


def plot_history(history, batch_losses=None, title=None, save=None, start=None):
    """Loss and accuracy per epoch, training and validation.

    ``history``: what ``trainer`` records in ``model.history`` (a
    ``History``), or a dict of per-epoch lists, or a list of per-epoch dicts,
    with the fields ``loss`` and ``val_loss`` (binary cross-entropy, nats per
    image) and ``train_accuracy`` and ``val_accuracy`` (fractions in [0, 1]).
    Training figures are means over an epoch's batches, so they are drawn at
    the epoch's middle; validation runs after the epoch, drawn at its end.

    ``start``: the validation figures of the model *before* the first
    epoch, ``(loss, accuracy)`` as ``evaluate`` returns them, or the
    accuracy alone.  They are drawn at epoch 0, where the validation curves
    then begin: after pruning, the rise from there is what finetuning wins
    back, visible even after a single epoch.

    ``batch_losses``: optionally the loss of every training batch, in order,
    e.g. gathered with ``trainer(..., callback=...)``; drawn as a thin line so
    even a one-epoch run shows a curve.
    """
    series = _history_series(history)
    if not any(series.values()):
        raise ValueError(f"plot_history: expected per-epoch {', '.join(HISTORY_FIELDS)}; "
                         f"got {sorted(history) if isinstance(history, dict) else history!r}")
    first = _start_values(start)
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    if batch_losses is not None and len(batch_losses):
        epochs = max(len(series.get("loss", [])), 1)
        steps = (np.arange(len(batch_losses)) + 0.5) * epochs / len(batch_losses)
        loss_ax.plot(steps, batch_losses, color=COLOURS[0], alpha=0.35, linewidth=1,
                     label="train, per batch")
    _draw_curves(loss_ax, series, first, ("loss", "val_loss"), 1)
    _draw_curves(acc_ax, series, first, ("train_accuracy", "val_accuracy"), 100)
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
    return finish(fig, save)


def _draw_curves(ax, series, first, keys, scale):
    """One panel of plot_history: the training and validation curves of ``keys``, times ``scale``.

    ``first``: values before the first epoch (``_start_values``), put at epoch 0.
    """
    train_key, val_key = keys
    for k, (key, name, offset) in enumerate(((train_key, "train, epoch mean", 0.5),
                                             (val_key, "validation", 1.0))):
        values = series.get(key)
        if not values:
            continue
        epochs = list(np.arange(len(values)) + offset)
        if key in first:
            epochs, values = [0.0] + epochs, [first[key]] + values
            name += " (epoch 0: before training)"
        ax.plot(epochs, scale * np.asarray(values), marker="o", color=COLOURS[k], label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))    # epochs are whole numbers
    ax.set_xlim(left=-0.1 if first else 0)                    # so a point at 0 is not cut in half
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


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
    return finish(fig, save)


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
