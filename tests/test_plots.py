"""Chapter 9: the figures draw exactly the numbers the library computes.

Each test reads back what was drawn (bar heights, histogram counts, image
cells, tick labels, titles) and compares it with the numbers computed
independently, so a plot that looks fine but shows the wrong data fails.
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tinyprune as tp
from tinyprune import figures, plots
from tinyprune.pipeline import TUTORIAL_INPUT
from tinyprune.prune import sparsity

from helpers import channel_pruned, level_pruned, waits_for

pytestmark = pytest.mark.plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Output channels of MobileNet(width 0.25, fcsize 64, nclasses 1), conv/dense layers in order.
MOBILENET_CHANNELS = ([8]                                    # conv1
                      + [8, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64, 128]   # dw1 pw1 ... dw6 pw6
                      + [128, 128] * 5                        # dw7 pw7 ... dw11 pw11
                      + [128, 256, 256, 256]                  # dw12 pw12 dw13 pw13
                      + [64, 1])                              # fc1 fc2


@pytest.fixture(scope="module")
def model():
    return tp.MobileNet(tp.slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)


@pytest.fixture(scope="module")
def level(model):
    return level_pruned(model, 0.2)              # prune(LevelPrune(0.2), model), made without it


@pytest.fixture(scope="module")
def channel(model):
    return channel_pruned(model, 0.5)            # prune(ChannelPrune(0.5), model), made without it


def bar_heights(ax):
    return [p.get_height() for p in ax.patches]


def test_importing_tinyprune_does_not_import_matplotlib():
    code = "import sys, tinyprune; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_layer_labels_name_mobilenets_29_dot_product_layers(model):
    expected = ["conv1"] + [f"{kind}{i}" for i in range(1, 14) for kind in ("dw", "pw")] + ["fc1", "fc2"]
    assert plots.layer_labels(model) == expected


def test_sparsity_bars_split_channel_zeros_from_scattered_zeros(channel):
    both = level_pruned(channel, 0.2)        # half the channels, then more scattered zeros
    fig = plots.plot_sparsity(both)
    ax = fig.axes[0]
    heights = bar_heights(ax)
    table = sparsity(both)
    n = len(table)
    structured, dead_in, scattered = heights[:n], heights[n:2 * n], heights[2 * n:]
    for row, s, i, u in zip(table, structured, dead_in, scattered):
        expected_s = 100 * row.zero_channels / row.channels if row.channels else 0.0
        assert s == pytest.approx(expected_s)
        assert s + i + u == pytest.approx(100 * row.fraction)     # the bar's top is the layer's sparsity
    # ChannelPrune(0.5) zeroes 4 of conv1's 8 channels: exactly half its weights.
    assert structured[0] == pytest.approx(50.0)
    # No input channel is all zero, except in fc2: with one output, each of its columns is one weight.
    assert dead_in[:-1] == [0.0] * (n - 1) and dead_in[-1] == pytest.approx(100 * table[-1].fraction)
    assert [t.get_text() for t in ax.get_xticklabels()] == plots.layer_labels(both)
    assert f"{100 * table.fraction:.1f}% of 224,048" in ax.get_title()


def hand_pruned_model():
    """conv (4, 3, 3, 3), depthwise (4, 1, 3, 3), dense (2, 4), with zeros placed by hand."""
    model = tp.Chain(tp.Conv2d(3, 4, 3, pad=1, rng=np.random.default_rng(0)),
                     tp.DepthwiseConv2d(4, 3, pad=1, rng=np.random.default_rng(1)),
                     tp.GlobalMeanPool(), tp.Flatten(), tp.Dense(4, 2, rng=np.random.default_rng(2)))
    conv, depthwise, dense = model[0], model[1], model[4]
    conv.weight[0] = 0              # output channel 0: 27 weights
    conv.weight[:, 2] = 0           # input channel 2: 36 weights, 9 of them in output channel 0
    conv.weight[1, 0, 0, 0] = 0     # two scattered zeros
    conv.weight[3, 1, 2, 2] = 0
    depthwise.weight[1] = 0         # channel 1: 9 weights
    depthwise.weight[2, 0, 1, 1] = 0   # one scattered zero
    dense.weight[:, 1] = 0          # input feature 1: a column of 2 weights
    dense.weight[0, 3] = 0          # one scattered zero
    return model


def test_zero_kinds_counts_dead_outputs_then_dead_inputs_then_the_rest():
    conv, depthwise, _, _, dense = hand_pruned_model()
    assert plots.zero_kinds(conv) == (27, 36 - 9, 2)     # 56 zeros in all
    assert plots.zero_kinds(depthwise) == (9, 0, 1)       # no input slices of its own
    assert plots.zero_kinds(dense) == (0, 2, 1)


def test_sparsity_bars_show_dead_outputs_dead_inputs_and_scattered_zeros_apart():
    ax = plots.plot_sparsity(hand_pruned_model()).axes[0]
    heights = np.array(bar_heights(ax)).reshape(3, 3)    # (part, layer): conv, depthwise, dense
    assert np.allclose(heights[0], [100 * 27 / 108, 100 * 9 / 36, 0])
    assert np.allclose(heights[1], [100 * 27 / 108, 0, 100 * 2 / 8])
    assert np.allclose(heights[2], [100 * 2 / 108, 100 * 1 / 36, 100 * 1 / 8])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "in all-zero output channels", "in all-zero input channels", "scattered"]
    assert "Weight sparsity: 45.4% of 152" in ax.get_title()   # (56 + 10 + 3) / (108 + 36 + 8)


def test_sparsity_from_a_table_draws_what_the_model_draws(channel):
    from_model = plots.plot_sparsity(channel).axes[0]
    from_table = plots.plot_sparsity(sparsity(channel), labels=plots.layer_labels(channel)).axes[0]
    model_parts = np.array(bar_heights(from_model)).reshape(3, -1)
    table_parts = np.array(bar_heights(from_table)).reshape(2, -1)
    # A table knows only the dead output channels: the model's other two parts are its second.
    assert np.array_equal(table_parts[0], model_parts[0])
    assert np.allclose(table_parts[1], model_parts[1] + model_parts[2])
    assert [t.get_text() for t in from_table.get_xticklabels()] == plots.layer_labels(channel)
    assert from_table.get_title() == from_model.get_title()
    assert from_table.get_legend().get_texts()[1].get_text().startswith("elsewhere")
    by_path = plots.plot_sparsity(sparsity(channel)).axes[0]
    assert [t.get_text() for t in by_path.get_xticklabels()] == [row.path for row in sparsity(channel)]


def test_sparsity_of_level_pruning_is_all_scattered(level):
    ax = plots.plot_sparsity(level).axes[0]
    heights = bar_heights(ax)
    assert heights[:29] == [0.0] * 29
    assert "20.0% of 224,048" in ax.get_title()          # 44,794 zeros in 224,048 weights


@waits_for("count")          # the figure draws what the counting rules count
def test_macs_bars_are_the_per_layer_counts_and_totals_match_the_seed(model, level, channel):
    seed_channel = channel_pruned(model, 0.2)
    stages = [("baseline", model), ("level", level), ("channel", seed_channel)]
    fig = plots.plot_macs(stages, TUTORIAL_INPUT)
    left, right = fig.axes
    drawn = bar_heights(left)
    for k, (_, m) in enumerate(stages):
        table = tp.dot_prod_table(m, TUTORIAL_INPUT)
        per_layer = [row[3] for row in table if row[1] in ("Conv2d", "DepthwiseConv2d", "Dense")]
        assert drawn[29 * k: 29 * (k + 1)] == per_layer
    assert bar_heights(right) == [7505600, 7460806, 6105200]
    notes = [t.get_text() for t in right.texts]
    assert notes == ["7.51M", "7.46M\n-0.6%", "6.11M\n-18.7%"]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["baseline", "level", "channel"]
    assert "'reference'" in left.get_title()


@waits_for("count")          # the figure draws what the counting rules count
def test_macs_from_counted_tables_draw_what_the_models_draw(model, level):
    tables = [("baseline", tp.dot_prod_table(model, TUTORIAL_INPUT)),
              ("level", tp.dot_prod_table(level, TUTORIAL_INPUT))]
    from_models = plots.plot_macs([("baseline", model), ("level", level)], TUTORIAL_INPUT)
    from_tables = plots.plot_macs(tables, labels=plots.layer_labels(model))
    for drawn, expected in zip(from_tables.axes, from_models.axes):
        assert bar_heights(drawn) == bar_heights(expected)
        assert [t.get_text() for t in drawn.get_xticklabels()] == \
            [t.get_text() for t in expected.get_xticklabels()]
        assert drawn.get_ylabel() == expected.get_ylabel()
    assert from_tables.axes[0].get_ylabel() == "multiplies per image"     # the batch N read from the table
    unlabelled = plots.plot_macs(tables).axes[0]               # no model to name the layers: their paths
    assert [t.get_text() for t in unlabelled.get_xticklabels()][:3] == ["[0][0]", "[0][3]", "[0][6]"]


@waits_for("count")          # the figure draws what the counting rules count
def test_macs_refuse_a_table_counted_under_another_rule(model):
    with pytest.raises(ValueError, match="counts under the rule 'sparse', expected 'reference'"):
        plots.plot_macs([("baseline", tp.dot_prod_table(model, TUTORIAL_INPUT, "sparse"))])
    with pytest.raises(ValueError, match="got 2 labels for 29 conv/dense layers"):
        plots.plot_macs([("baseline", model)], labels=["a", "b"])


@waits_for("count")          # the figure draws what the counting rules count
def test_macs_under_the_dense_rule_ignore_zeros(model, level):
    right = plots.plot_macs({"baseline": model, "level": level}, TUTORIAL_INPUT, rule="dense").axes[1]
    assert bar_heights(right) == [7505600, 7505600]


@waits_for("count")          # the figure draws what the counting rules count
def test_macs_refuse_models_with_different_layer_sequences(model):
    other = tp.Chain(tp.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="model 'tiny' has 1 conv/dense layers"):
        plots.plot_macs([("baseline", model), ("tiny", other)], TUTORIAL_INPUT)


def test_weight_histogram_draws_the_nonzero_weights_and_counts_the_zeros(model, level):
    fig = plots.plot_weight_histogram(model, "pw5", after=level, bins=20)
    ax = fig.axes[0]
    before_w = tp.layer_at(model, "[0][30]").weight.ravel()
    after_w = tp.layer_at(level, "[0][30]").effective("weight").ravel()
    steps = [a for a in ax.patches]
    assert len(steps) == 2
    (before_counts, edges, _), (after_counts, edges2, _) = (s.get_data() for s in steps)
    assert np.array_equal(edges, edges2)                    # one set of bins for both
    assert np.array_equal(before_counts, np.histogram(before_w, edges)[0])
    assert np.array_equal(after_counts, np.histogram(after_w[after_w != 0], edges)[0])
    assert before_counts.sum() == 4096 and after_counts.sum() == 4096 - 819   # 20% of 64x64
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["before: 4,096 weights, none zero",
                      "after: 4,096 weights, 819 zero (20.0%, not drawn)"]
    assert ax.get_title().startswith("Weights of model[0][30] (pw5, Conv2d 64x64x1x1)")


def test_weight_histogram_accepts_a_path_and_rejects_a_batchnorm(model):
    fig = plots.plot_weight_histogram([("fresh", model)], "[1][2]")
    assert "(fc1, Dense 64x256)" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match=r"model\[0\]\[1\] is a BatchNorm2d"):
        plots.plot_weight_histogram(model, "[0][1]")
    with pytest.raises(ValueError, match="no layer labelled 'pw99'"):
        plots.plot_weight_histogram(model, "pw99")


def test_channel_bars_are_the_output_channels_of_each_layer(model):
    narrow = tp.MobileNet(tp.slopehtanh, 0.125, fcsize=32, nclasses=1, seed=0)   # same layers, half the channels
    ax = plots.plot_channels(model, narrow).axes[0]
    heights = bar_heights(ax)
    assert heights[:29] == MOBILENET_CHANNELS
    assert heights[29:] == [max(1, c // 2) for c in MOBILENET_CHANNELS]
    before, after = sum(MOBILENET_CHANNELS), sum(max(1, c // 2) for c in MOBILENET_CHANNELS)
    assert ax.get_title() == (f"Channels per layer: {before:,} -> {after:,} "
                              f"({100 * after / before:.1f}% kept)")


def test_sensitivity_cells_are_the_accuracies_in_percent():
    levels = [0.1, 0.5, 0.9]
    scans = {"LevelPrune": {"conv1": [0.9, 0.8, 0.6], "dw1": [0.9, 0.85, 0.7]},
             "ChannelPrune": {"conv1": [0.88, 0.7, 0.5], "dw1": [0.9, 0.6, 0.55]}}
    fig = plots.plot_sensitivity(levels, scans, baseline=0.9)
    heat_axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heat_axes] == ["LevelPrune", "ChannelPrune"]
    for ax, scan in zip(heat_axes, scans.values()):
        assert np.allclose(ax.images[0].get_array(), 100 * np.array(list(scan.values())))
        assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "dw1"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "50", "90"]
    assert "unpruned 90.0%" in fig._suptitle.get_text()
    floor = plots.plot_sensitivity(levels, scans, baseline=0.9, majority=0.536)._suptitle.get_text()
    assert floor.endswith("unpruned 90.0%, one answer for every image 53.6%")
    assert heat_axes[0].images[0].get_clim() == pytest.approx((50, 90))     # chance .. baseline
    near_chance = plots.plot_sensitivity(levels, {"LevelPrune": {"conv1": [0.45, 0.5, 0.47]}}, baseline=0.48)
    assert near_chance.axes[0].images[0].get_clim() == pytest.approx((45, 50))
    with pytest.raises(ValueError, match="LevelPrune / conv1 has 2 accuracies, expected one per level"):
        plots.plot_sensitivity(levels, {"LevelPrune": {"conv1": [0.9, 0.8]}})


def test_history_curves_are_the_recorded_values():
    history = {"loss": [0.7, 0.5], "val_loss": [0.6, 0.45],
               "train_accuracy": [0.55, 0.7], "val_accuracy": [0.6, 0.75]}
    loss_ax, acc_ax = plots.plot_history(history, batch_losses=[0.8, 0.6, 0.55, 0.45]).axes
    batches, train_loss, val_loss = loss_ax.lines
    assert list(batches.get_xdata()) == [0.25, 0.75, 1.25, 1.75]    # 2 batches per epoch, at their middles
    assert list(train_loss.get_ydata()) == [0.7, 0.5] and list(train_loss.get_xdata()) == [0.5, 1.5]
    assert list(val_loss.get_ydata()) == [0.6, 0.45] and list(val_loss.get_xdata()) == [1.0, 2.0]
    assert np.allclose([line.get_ydata() for line in acc_ax.lines], [[55, 70], [60, 75]])
    assert "nats" in loss_ax.get_ylabel() and "%" in acc_ax.get_ylabel()
    per_epoch = [dict(zip(history, values)) for values in zip(*history.values())]
    again = plots.plot_history(per_epoch).axes[0]
    assert [list(line.get_ydata()) for line in again.lines] == [[0.7, 0.5], [0.6, 0.45]]
    with pytest.raises(ValueError, match="plot_history"):
        plots.plot_history([{"lr": 0.001}])


def test_history_reads_what_trainer_records():
    from tinyprune.train import History
    history = History()
    for loss, acc in ((0.69, 0.5), (0.4, 0.85)):
        history.append(loss=loss, train_accuracy=acc, val_loss=loss + 0.01, val_accuracy=acc - 0.01,
                       lr=1e-3, seconds=1.0, images_per_second=100.0)
    loss_ax, acc_ax = plots.plot_history(history).axes
    assert np.allclose([line.get_ydata() for line in loss_ax.lines], [[0.69, 0.4], [0.7, 0.41]])
    assert np.allclose(acc_ax.lines[1].get_ydata(), [49, 84])        # validation accuracy, in %


def test_history_starts_at_the_figures_before_training():
    history = {"loss": [0.3], "val_loss": [0.27], "train_accuracy": [0.88], "val_accuracy": [0.89]}
    loss_ax, acc_ax = plots.plot_history(history, start=(0.9, 0.574)).axes
    train, val = acc_ax.lines
    assert list(val.get_xdata()) == [0.0, 1.0] and np.allclose(val.get_ydata(), [57.4, 89])
    assert list(train.get_xdata()) == [0.5]                  # training has no epoch 0
    assert list(loss_ax.lines[1].get_xdata()) == [0.0, 1.0]
    assert np.allclose(loss_ax.lines[1].get_ydata(), [0.9, 0.27])
    assert "epoch 0: before training" in acc_ax.get_legend().get_texts()[1].get_text()
    only_accuracy = plots.plot_history(history, start=0.574).axes
    assert list(only_accuracy[1].lines[1].get_xdata()) == [0.0, 1.0]
    assert list(only_accuracy[0].lines[1].get_xdata()) == [1.0]    # no loss given: none drawn at 0
    with pytest.raises(ValueError, match=r"start accuracy \(a fraction\) must be a finite number in \[0, 1\]"):
        plots.plot_history(history, start=57.4)
    with pytest.raises(ValueError, match="start must be \\(loss, accuracy\\)"):
        plots.plot_history(history, start=(0.9, 0.5, 1))


def test_a_figure_shows_itself_in_jupyter_as_a_png_of_its_size(level):
    fig = plots.plot_sparsity(level)
    png = fig._repr_png_()               # what IPython calls to display the figure
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (1100, 450)                     # 11 x 4.5 inches at 100 dots per inch
    assert repr(fig).startswith("<Figure size 1100x450")     # a plain prompt still prints text


def test_sparse_speedup_is_dense_time_over_sparse_time():
    _, ratio = plots.plot_sparse_speedup([0.5, 0.9], [10.0, 10.0], [20.0, 4.0]).axes
    assert list(ratio.lines[0].get_ydata()) == [0.5, 2.5]


def test_save_writes_a_png_of_the_figures_size_and_leaves_no_temporary_file(tmp_path, level):
    path = tmp_path / "sparsity.png"
    fig = plots.plot_sparsity(level, save=path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(fig.get_figwidth() * 120), round(fig.get_figheight() * 120))
    assert os.listdir(tmp_path) == ["sparsity.png"]


def test_save_into_a_missing_folder_fails_and_writes_nothing(tmp_path, level):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plots.plot_sparsity(level, save=tmp_path / "missing" / "sparsity.png")
    assert os.listdir(tmp_path) == []


def test_history_accuracy_axis_spans_ten_points_for_a_short_run():
    fig = plots.plot_history({"loss": [0.26], "val_loss": [0.27], "train_accuracy": [0.897],
                              "val_accuracy": [0.895]})
    low, high = fig.axes[1].get_ylim()
    assert high - low == pytest.approx(10) and low <= 89.5 and high >= 89.7


def test_save_grid_writes_a_png_of_the_grid_size_and_nothing_else(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 96, 96), dtype=np.uint8)
    path = plots.save_grid(images, tmp_path / "grid.png", nrow=5, labels=[0, 1] * 5)
    assert path == tmp_path / "grid.png"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
    assert width > height                                  # 5 columns by 2 rows
    assert (width, height) == (round(1.25 * 5 * 100), round(1.45 * 2 * 100))   # inches x 100 dpi


def test_save_grid_draws_grey_images_and_leaves_spare_cells_empty(tmp_path):
    grey = np.linspace(0, 1, 3 * 16 * 16, dtype=np.float32).reshape(3, 1, 16, 16)
    path = plots.save_grid(grey, tmp_path / "sub" / "grey.png", nrow=4)     # the folder is created
    with Image.open(path) as picture:
        assert picture.size == (500, 145)                  # one row of 4 cells, the last one empty


def test_label_titles_name_the_classes():
    assert figures._label_title(1) == "person"
    assert figures._label_title(np.int64(0)) == "no person"
    assert figures._label_title(0.73) == "0.73"


def test_every_figure_is_importable_from_plots():
    for name in ("save_figure", "dot_layers", "layer_labels", "plot_sparsity", "plot_macs",
                 "plot_weight_histogram", "plot_channels", "plot_sensitivity", "plot_history",
                 "plot_sparse_speedup", "save_grid"):
        assert name in plots.__all__ and callable(getattr(plots, name))
    assert plots.plot_history is figures.plot_history       # one function, reachable by either module


def test_save_grid_is_still_reachable_from_the_top_level_package():
    assert tp.save_grid is plots.save_grid
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        tp.not_a_name
