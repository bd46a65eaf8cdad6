# %% [markdown]
# # The pruning methods of the field, compared at equal cost
#
# The course prunes once, by magnitude, and ranks channels by their L1
# norm. The libraries of the field (Torch-Pruning, torch.ao.pruning, TF Model
# Optimization, NNI, the MIT 6.5940 pruning lab) answer three more questions:
#
# * **when** to prune: all at once, or gradually while training
#   (`tinyprune.gradual.GradualPrune`, Zhu & Gupta 2017);
# * **which channels** matter: the L1 norm, the L2 norm, the BatchNorm scale
#   after the channel, a first-order Taylor estimate of the loss, or chance
#   (`tinyprune.criteria`);
# * **which pattern** of zeros a real kernel can use: whole channels (a
#   smaller dense model), scattered weights (only a zero-skipping kernel), or
#   2 of every 4 (`NMPrune(2, 4)`, NVIDIA's sparse tensor cores).
#
# We compare them on the shipped trained MobileNet, at one budget: **half the
# multiplies** of the unpruned model. Every method is pruned to that budget,
# finetuned for the same number of steps on the same batches, and measured on
# the same validation images.
#
# Run it as a script (`python tutorials/methods.py`, a few minutes on two
# cores) or as a notebook. `TINYPRUNE_QUICK=1` runs everything on tiny data
# in seconds; the quick numbers only show that the code runs. The last cell
# gathers every number in a dict, `results`, which the tests check.

# %%
import math
import os

import numpy as np

from tinyprune import (ChannelPrune, GlobalLevelPrune, LevelPrune, compute_dot_prods, evaluate,
                       pretrained, prune, trainer)
from tinyprune.common import format_table, output_dir
from tinyprune.criteria import batchnorm_scores, magnitude_scores, random_scores, taylor_scores
from tinyprune.data import SyntheticVWW, to_float
from tinyprune.gradual import GradualPrune
from tinyprune.pipeline import TUTORIAL_INPUT, bake_and_propagate, prune_and_resize
from tinyprune import plots
from tinyprune.plots import COLOURS, save_figure
from tinyprune.prune import NMPrune, l2
from tinyprune.resize import resize, sort_channels

QUICK = os.environ.get("TINYPRUNE_QUICK") == "1"
TRAIN_IMAGES = 64 if QUICK else 2048    # the finetuning budget: one pass, batches of 32 (64 steps)
VAL_IMAGES = 32 if QUICK else 1000
BATCH = 32
BISECTION_STEPS = 4 if QUICK else 12    # 12 halvings of [0, 1]: a level to within 0.0003
TAYLOR_BATCHES = 1 if QUICK else 4
OUT = output_dir("methods")
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. The model, the data and the budget
#
# The trained model, a slice of the synthetic training set for finetuning,
# and validation images that every accuracy below is measured on. (With
# 1,000 images an accuracy has a standard error of about one point: smaller
# differences are noise.)

# %%
trained = pretrained()
train_set = SyntheticVWW("train", size=TRAIN_IMAGES)
val_set = SyntheticVWW("val", size=VAL_IMAGES)
data = (train_set, val_set)
_, baseline_accuracy = evaluate(trained, val_set)
dense_mults = compute_dot_prods(trained, TUTORIAL_INPUT)[0]
BUDGET = dense_mults // 2
print(f"unpruned: {dense_mults:,} multiplies per image, accuracy {baseline_accuracy:.1%}; "
      f"budget {BUDGET:,}")

# %% [markdown]
# ## 2. What does a method cost?
#
# That depends on the kernel that runs it, so each method is counted by the
# kernel that can use its zeros:
#
# * **channel pruning** ends in `resize`: a smaller, ordinary MobileNet, which
#   any dense kernel runs at its full count (all three counting rules agree);
# * **scattered zeros** (`LevelPrune`, `GlobalLevelPrune`) save work only on
#   a zero-skipping kernel: the `"sparse"` rule, every zero skipped at every
#   pixel. That is optimistic: `tutorials/pruning.py` measures such a kernel
#   slower than the dense one below 90% zeros. Under the course's
#   `"reference"` rule a scattered zero saves one multiply in all, so half
#   the weights save about 1.5% of the multiplies;
# * **2:4** is what a sparse tensor core executes: half the multiplies of
#   each layer it prunes, which is again the `"sparse"` count.

# %%
def channel_cost(model):
    """Multiplies per image of a resized model: a dense model, every rule the same."""
    return compute_dot_prods(model, TUTORIAL_INPUT, "reference")[0]


def sparse_cost(model):
    """Multiplies per image on a kernel that skips every zero weight (the "sparse" rule)."""
    return compute_dot_prods(model, TUTORIAL_INPUT, "sparse")[0]


half = prune(LevelPrune(0.5), trained)
print(f"LevelPrune(0.5): {sparse_cost(half):,} multiplies on a zero-skipping kernel, "
      f"{compute_dot_prods(half, TUTORIAL_INPUT, 'reference')[0]:,} under the reference rule")

# %% [markdown]
# ## 3. Each method's level for the budget
#
# More pruning never costs more, so the level that just meets the budget can
# be found by bisection: halve the interval of levels, keep the half where the
# budget is crossed, twelve times.

# %%
def level_for_budget(cost_at, budget=BUDGET, steps=BISECTION_STEPS):
    """The smallest level (to within 2**-steps) whose model costs at most ``budget``."""
    low, high = 0.0, 1.0                  # level 1 prunes everything: within any budget
    for _ in range(steps):
        middle = (low + high) / 2
        if cost_at(middle) <= budget:
            high = middle
        else:
            low = middle
    return high


def channel_pruned(make, level):
    """``make(level)`` applied, the zeros propagated, the dead channels cut out."""
    return prune_and_resize(trained, make(level)).resized


# The criteria that need more than the weights are computed once, from the trained model.
criteria = {"L1 (course)": magnitude_scores(trained), "L2": magnitude_scores(trained, l2),
            "BatchNorm |gamma|": batchnorm_scores(trained),
            "Taylor": taylor_scores(trained, train_set, batches=TAYLOR_BATCHES, batch_size=BATCH),
            "random": random_scores(trained, seed=0)}
one_shot = {f"channels, {name}": (lambda p, s=scores: ChannelPrune(p, scores=s))
            for name, scores in criteria.items()}
levels = {name: level_for_budget(lambda p, m=make: channel_cost(channel_pruned(m, p)))
          for name, make in one_shot.items()}
for name, make in (("weights, uniform", LevelPrune), ("weights, global", GlobalLevelPrune)):
    one_shot[name] = make
    levels[name] = level_for_budget(lambda p, m=make: sparse_cost(prune(m(p), trained)))
one_shot["2:4"] = lambda p: NMPrune(2, 4)
levels["2:4"] = None                      # the pattern fixes the level
for name, level in levels.items():
    print(f"{name:<28} level {'fixed' if level is None else f'{level:.4f}'}")

# %% [markdown]
# ## 4. Finetuning, one-shot and gradual
#
# Every model gets the same finetuning: one pass over the training slice,
# batches of 32 in the same order, Adam at 1e-3 (`trainer`'s defaults). A
# channel-pruned model is finetuned after `resize`, as the smaller model it
# is; a model with scattered zeros keeps its masks, so they stay zero.
#
# Gradual pruning spends the same steps differently: it starts from the
# unpruned model and raises the level along Zhu and Gupta's cubic curve during
# the first two thirds of the steps, to the same final level as the one-shot
# method, then trains on for the last third. `GradualPrune.attach` gives the
# trainer a callback that prunes in place after each optimiser step.

# %%
STEPS = math.ceil(TRAIN_IMAGES / BATCH)
PRUNINGS = min(8, max(1, 2 * STEPS // 3))           # n, the pruning steps after the first
INTERVAL = max(1, (2 * STEPS // 3) // PRUNINGS)     # Δt, in training steps


def finetune(model, callback=None):
    """A copy of ``model`` after the common finetuning, and its validation accuracy."""
    tuned = model.copy()
    trainer(tuned, 1, data=data, batch_size=BATCH, seed=0, progress=False, callback=callback)
    return tuned, tuned.history.val_accuracy[-1]


def gradual(make, level):
    """Train the unpruned model while ``GradualPrune`` raises the level to ``level``."""
    model = trained.copy()
    schedule = GradualPrune(make, final=level, start=0, interval=INTERVAL, n=PRUNINGS)
    callback = schedule.attach(model)
    trainer(model, 1, data=data, batch_size=BATCH, seed=0, progress=False, callback=callback)
    assert callback.finished, "the schedule did not reach its final level"
    return model, model.history.val_accuracy[-1]


rows = {}        # method -> its level, multiplies and accuracies


def record(name, model, level, finetuned_accuracy, pruned_accuracy=None):
    """One row of the comparison; ``model`` is the pruned (for channels: resized) model."""
    structured = name.startswith("channels")
    rows[name] = {"level": level, "mults": channel_cost(model) if structured else sparse_cost(model),
                  "rule": "any" if structured else "sparse", "reference_mults": channel_cost(model),
                  "pruned_accuracy": pruned_accuracy, "finetuned_accuracy": finetuned_accuracy}
    before = "" if pruned_accuracy is None else f"{pruned_accuracy:.1%} after pruning, "
    print(f"{name:<27} {rows[name]['mults']:>10,} multiplies, {before}{finetuned_accuracy:.1%} after training")


for name, make in one_shot.items():
    model = (channel_pruned(make, levels[name]) if name.startswith("channels")
             else prune(make(levels[name]), trained))
    record(name, model, levels[name], finetune(model)[1], evaluate(model, val_set)[1])

for name, make, same_level_as in (("channels, L1, gradual", ChannelPrune, "channels, L1 (course)"),
                                  ("weights, uniform, gradual", LevelPrune, "weights, uniform")):
    model, accuracy = gradual(make, levels[same_level_as])
    record(name, resize(bake_and_propagate(model)) if name.startswith("channels") else model,
           levels[same_level_as], accuracy)

_, control_accuracy = finetune(trained)      # what the same finetuning does to the unpruned model
print(f"unpruned, finetuned alike: {control_accuracy:.1%}")
ORDER = ["channels, L1 (course)", "channels, L1, gradual", "channels, L2", "channels, BatchNorm |gamma|",
         "channels, Taylor", "channels, random", "weights, uniform", "weights, uniform, gradual",
         "weights, global", "2:4"]
rows = {name: rows[name] for name in ORDER}  # each gradual method beside its one-shot twin

# %% [markdown]
# ## 5. The comparison
#
# One row per method: the level it needed, what it costs (and under which
# rule), and the validation accuracy right after pruning and after the common
# finetuning. Gradual pruning has no "after pruning": it prunes while it trains.

# %%
def percent(value):
    return "-" if value is None else f"{value:.1%}"


table = format_table(
    ("method", "level", "multiplies", "rule", "of dense", "reference rule", "pruned", "finetuned"),
    [(name, "2:4" if row["level"] is None else f"{row['level']:.3f}", f"{row['mults']:,}", row["rule"],
      f"{row['mults'] / dense_mults:.1%}", f"{row['reference_mults']:,}", percent(row["pruned_accuracy"]),
      percent(row["finetuned_accuracy"])) for name, row in rows.items()],
    total=("unpruned", "0", f"{dense_mults:,}", "any", "100.0%", f"{dense_mults:,}",
           percent(baseline_accuracy), percent(control_accuracy)))
print(table)


def plot_methods(rows, baseline, control, budget, save):
    """Accuracy after pruning and after finetuning, and multiplies, one bar pair per method."""
    names = list(rows)
    y = np.arange(len(names))
    fig = plots.Figure(figsize=(12, 1.8 + 0.45 * len(names)), layout="constrained")   # shows itself in Jupyter
    accuracy_ax, cost_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    pruned = [np.nan if r["pruned_accuracy"] is None else 100 * r["pruned_accuracy"] for r in rows.values()]
    accuracy_ax.barh(y - 0.2, pruned, height=0.4, color=COLOURS[1], label="right after pruning")
    accuracy_ax.barh(y + 0.2, [100 * r["finetuned_accuracy"] for r in rows.values()], height=0.4,
                     color=COLOURS[0], label="after the common finetuning")
    accuracy_ax.axvline(100 * baseline, color="grey", linestyle="--", label="unpruned")
    accuracy_ax.axvline(100 * control, color="black", linestyle=":", label="unpruned, finetuned alike")
    accuracy_ax.set_xlim(40, 100)
    accuracy_ax.set_xlabel("validation accuracy (%)")
    accuracy_ax.set_yticks(y)
    accuracy_ax.set_yticklabels(names)
    accuracy_ax.invert_yaxis()
    accuracy_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    for rule, colour, label in (("any", COLOURS[2], "a smaller dense model"),
                                ("sparse", COLOURS[4], "on a zero-skipping kernel")):
        chosen = [i for i, r in enumerate(rows.values()) if r["rule"] == rule]
        cost_ax.barh(y[chosen], [list(rows.values())[i]["mults"] / 1e6 for i in chosen], color=colour,
                     label=label)
    cost_ax.axvline(budget / 1e6, color="black", linestyle="--", label="budget: half the multiplies")
    cost_ax.set_xlabel("multiplies per image (millions)")
    cost_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, fontsize=8)
    for ax in (accuracy_ax, cost_ax):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Pruning methods at half the multiplies, after the same finetuning")
    save_figure(fig, save)
    return fig


figure_path = OUT / "methods-comparison.png"
figure = plot_methods(rows, baseline_accuracy, control_accuracy, BUDGET, figure_path)
print(f"wrote {figure_path}")
figure

# %% [markdown]
# Read the table with four things in mind. The unstructured rows are costed
# on an ideal zero-skipping kernel; on a dense kernel they save nothing, and
# under the course's rule almost nothing. 2:4 cannot choose its level: it
# lands where the layers it may prune put it (the 1x1 convs and dense
# layers), above the budget. Channel levels move in steps (a layer of 8
# channels prunes 1, 2, ...), so a method may land a little under the budget,
# which favours it slightly. And the control row says how much of "after
# finetuning" is the finetuning itself. The README shows the full run's table:
# there the channel methods a dense kernel can use stay a few points below the
# unpruned model, random channels clearly lowest, and the unstructured
# methods keep the accuracy, on a kernel that does not pay at this sparsity.
#
# ## 6. Sorting channels before resizing
#
# The MIT lab sorts every layer's channels by importance before it cuts the
# last ones. tinyprune's `resize` cuts whichever channels are dead, wherever
# they are, so it needs no sorting; but a sorted model keeps its channels in
# importance order after the cut, which makes the layers easier to read (and
# a later, deeper cut a slice). `sort_channels` permutes every array of a
# segment together, so the function does not change.

# %%
pruned_l1 = bake_and_propagate(prune(ChannelPrune(levels["channels, L1 (course)"]), trained))
ordered = resize(sort_channels(pruned_l1, magnitude_scores(pruned_l1)))
x = to_float(val_set.images[:8])
sorted_difference = float(np.abs(ordered.eval()(x) - pruned_l1.eval()(x)).max())
first_scores = magnitude_scores(ordered)["[0][6]"]
print("L1 norms of the first pointwise conv's kept channels:", np.round(first_scores, 2))
print(f"largest logit difference after sorting and resizing: {sorted_difference:.2e}")

# %% [markdown]
# ## The numbers in one place

# %%
results = {
    "dense_mults": dense_mults,
    "budget": BUDGET,
    "baseline_accuracy": baseline_accuracy,
    "control_accuracy": control_accuracy,          # the unpruned model after the same finetuning
    "methods": rows,                               # name -> level, mults, rule, reference_mults, accuracies
    "finetune_steps": STEPS,
    "validation_images": len(val_set),
    "sorted_logit_difference": sorted_difference,
    "sorted_scores": first_scores,
    "figure": figure_path,
}
