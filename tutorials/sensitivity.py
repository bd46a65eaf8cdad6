# %% [markdown]
# # Which layers can we prune? A sensitivity scan
#
# `ChannelPrune(0.2)` prunes every convolution by the same 20%. But layers
# are not equal: an early layer with 8 channels has little to spare, while a
# late pointwise layer with 256 may hardly notice losing half. A
# *sensitivity scan* measures this directly: prune **one** layer alone, at
# several levels, and watch the validation accuracy of the trained model.
#
# We then use the scan to choose a level per layer, and ask the question
# that matters: at the same number of multiplies, does the tailored plan
# beat uniform pruning?
#
# Run as a script (`python tutorials/sensitivity.py`, a few minutes) or as a
# notebook. The scan evaluates one pruned model per convolution, level and
# strategy: 27 x 9 x 2 = 486 of them, printed as the scan starts; the code
# counts every evaluation and prints the total at the end. With
# `TINYPRUNE_QUICK=1` it scans four layers at two levels on 32 images, in
# seconds; the quick numbers only show that the code runs. The last cell
# gathers the numbers in a dict, `results`, which the tests check.

# %%
import os

import numpy as np

from tinyprune.common import output_dir
from tinyprune import (BatchNorm2d, ChannelPrune, Conv2d, Dense, DepthwiseConv2d, LevelPrune,
                       accuracy, compute_dot_prods, parse_path, pretrained, prune)
from tinyprune import plots
from tinyprune.data import SyntheticVWW, to_float
from tinyprune.pipeline import TUTORIAL_INPUT, prune_and_resize

QUICK = os.environ.get("TINYPRUNE_QUICK") == "1"
LEVELS = [0.5, 0.9] if QUICK else [k / 10 for k in range(1, 10)]    # 10%, 20%, ..., 90%
VAL_IMAGES = 32 if QUICK else 500
CALIBRATION_IMAGES = 64 if QUICK else 1000
BISECTION_STEPS = 4 if QUICK else 8     # 8 halvings of [0, 0.95] find p to within 0.004
TOLERANCE = 0.01           # accuracy a layer may lose in the plan (1 point)
BATCH = 100                # images per forward pass when evaluating
OUT = output_dir("sensitivity")   # this tutorial's figures

# %% [markdown]
# ## The model, the data, and a shortcut
#
# The trained MobileNet shipped with tinyprune, and a slice of the synthetic
# validation set. Every accuracy below is measured on these same images, so
# differences between cells are differences between models, not samples.
# (With 500 images an accuracy has a standard error of about 1.5 points:
# smaller differences are noise.)
#
# One more number to keep in mind: the share of the larger class among
# these images. A model that gives every image the same answer scores
# exactly that, so it is the floor a model falls to once it can no longer
# tell the classes apart (50% only if the slice is exactly balanced).

# %%
model = pretrained()                       # eval mode: BatchNorm uses its running statistics
if QUICK:
    val = SyntheticVWW("val", size=VAL_IMAGES)
    images, labels = val.images, val.labels
else:
    val = SyntheticVWW("val")
    images, labels = val.images[:VAL_IMAGES], val.labels[:VAL_IMAGES]
x = to_float(images)                       # (N, 3, 96, 96) float32 in [0, 1]
person_share = float(np.mean(labels))
majority = max(person_share, 1 - person_share)
print(f"{len(x)} validation images, {person_share:.1%} of them with a person: answering "
      f"{'person' if person_share > 0.5 else 'no person'!r} for every image scores {majority:.1%}")

leaves = list(model.named_layers())        # [(path, layer)] in the order the forward pass runs
# The conv and dense layers with their short names (conv1, dw1, pw1, ..., fc2) as in the figures.
with_weights = [(k, path) for k, (path, layer) in enumerate(leaves)
                if isinstance(layer, (Conv2d, DepthwiseConv2d, Dense))]
convs = [(k, path, name) for (k, path), name in zip(with_weights, plots.layer_labels(model))
         if not name.startswith("fc")]    # (leaf index, path, name) of the 27 convolutions
if QUICK:
    convs = convs[:2] + convs[-2:]
print(f"{len(convs)} convolutions x {len(LEVELS)} levels x 2 strategies = "
      f"{len(convs) * len(LEVELS) * 2} pruned models to scan, on {len(x)} validation images")


# %% [markdown]
# Pruning layer k changes nothing before it: the first k layers compute the
# same activations for every level and strategy. So we run the unpruned
# layers once, keep the activations arriving at layer k, and for each
# pruned model run only layers k, k+1, ... on them. That roughly halves the
# work of the scan.
#
# Two things keep the memory small. Every layer's forward pass keeps what
# its backward pass will need in `layer._cache` (you write one in the
# layers tutorial): for this model about 2.7 MB per image, well over a
# gigabyte for 500 images. An evaluation runs no backward pass, so `run`
# lets go of each cache as soon as the layer is done. And it runs `BATCH`
# images at a time, so the activations in flight stay small too.

# %%
evaluations = 0                            # models evaluated so far, counted by answers()


def run(layers, inputs):
    """``inputs`` through ``layers`` (leaf layers, in order), ``BATCH`` images at a time."""
    outputs = []
    for start in range(0, len(inputs), BATCH):
        h = inputs[start:start + BATCH]
        for layer in layers:
            h = layer.forward(h)
            layer._cache = None            # kept for a backward pass, and none follows
        outputs.append(h)
    return np.concatenate(outputs)


def answers(layers, inputs):
    """The logits of ``layers`` on ``inputs``: one evaluation, counted."""
    global evaluations
    evaluations += 1
    return run(layers, inputs)


def accuracy_from(layers, inputs):
    """Accuracy of running ``layers`` (leaf layers, in order) on ``inputs``, against ``labels``."""
    return accuracy(answers(layers, inputs), labels)


baseline = accuracy_from([layer for _, layer in leaves], x)
print(f"unpruned accuracy: {baseline:.1%}")

# %% [markdown]
# ## The scan
#
# For each convolution, prune it alone with `LevelPrune(p)` (single
# weights) and with `ChannelPrune(p)` (whole output channels), for each p.
# `prune` takes a dict from layer paths to strategies, so
# `prune({"[0][3]": ChannelPrune(0.5)}, model)` prunes `model[0][3]` and
# nothing else.

# %%
scans = {"LevelPrune": {}, "ChannelPrune": {}}
h = x                                      # activations arriving at leaf `done`
done = 0
for k, path, name in convs:
    h = run([layer for _, layer in leaves[done:k]], h)    # advance the unpruned prefix to layer k
    done = k
    for strategy in (LevelPrune, ChannelPrune):
        row = []
        for p in LEVELS:
            pruned = prune({path: strategy(p)}, model)
            row.append(accuracy_from([layer for _, layer in list(pruned.named_layers())[k:]], h))
        scans[strategy.__name__][name] = row
    print(f"model{path:<8} {name:<5} accuracy (%) with ChannelPrune at each level: "
          + "  ".join(f"{100 * a:5.1f}" for a in scans["ChannelPrune"][name]))

# %%
OUT.mkdir(parents=True, exist_ok=True)
figure = plots.plot_sensitivity(LEVELS, scans, baseline=baseline, majority=majority, save=OUT / "scan.png")
print(f"wrote {OUT / 'scan.png'}")
figure

# %% [markdown]
# What to look for in the figure. Level pruning of one layer typically costs
# little until well past half its weights, since the smallest weights carry
# little of the signal. Channel pruning is harsher and uneven: look for the
# rows that darken first. Early layers (few channels, and everything
# downstream depends on them) are the usual suspects. Rows that stay bright
# to 90% are where the multiplies can go.
#
# Many dark cells show the same number, the majority share printed at the
# start (and in the title; the cells round it). That is no coincidence: those models give every image the same
# answer, the majority class, and score exactly its share. Cells at one
# minus that share are the same failure the other way round: every image
# gets the minority answer. Neither model tells anything apart any more.
#
# ## A plan from the scan
#
# For each layer, take the highest channel-pruning level whose accuracy
# stays within `TOLERANCE` of the unpruned model (0 if none does). The plan
# is a list shaped like the model, one strategy per layer and `None` for the
# layers to leave alone, which is the form `prune` accepts for per-layer
# strategies.

# %%
def plan_level(accuracies):
    ok = [p for p, a in zip(LEVELS, accuracies) if a >= baseline - TOLERANCE]
    return max(ok, default=0.0)


plan = [[None] * len(model[0]), [None] * len(model[1])]     # mirrors Chain(backbone, head)
plan_levels = {}                                             # layer name -> its level in the plan
for _, path, name in convs:
    p = plan_level(scans["ChannelPrune"][name])
    plan_levels[name] = p
    chain, index = parse_path(path)                          # "[0][3]" -> (0, 3)
    plan[chain][index] = ChannelPrune(p) if p > 0 else None
    print(f"{name:<5} ChannelPrune({p})" if p > 0 else f"{name:<5} left alone")

# %% [markdown]
# Prune with the plan, then propagate and resize as in the pruning tutorial,
# and count. `tinyprune.pipeline.prune_and_resize` runs those steps (prune,
# keepprune, prune_propagate, resize) and returns the three models along the
# way; we keep the last, the small one.

# %%
def pipeline(strategy):
    """Prune, propagate and resize the trained model; returns the small model."""
    return prune_and_resize(model, strategy).resized


def mults(m):
    return compute_dot_prods(m, TUTORIAL_INPUT)[0]


planned = pipeline(plan)
planned_mults = mults(planned)
print(f"planned model: {planned_mults:,} multiplies per image")

# %% [markdown]
# ## Uniform pruning at the same cost
#
# Now find the uniform `ChannelPrune(p)` whose resized model does the same
# number of multiplies. More pruning means fewer multiplies, so bisection on
# p finds it in a few steps. (A plan that prunes nothing has nothing to
# match; then p = 0.)

# %%
low, high = 0.0, 0.95
for _ in range(BISECTION_STEPS):
    middle = (low + high) / 2
    if mults(pipeline(ChannelPrune(middle))) > planned_mults:
        low = middle                       # not pruned enough yet
    else:
        high = middle
uniform_p = high if planned_mults < mults(model) else 0.0
uniform = pipeline(ChannelPrune(uniform_p))
print(f"uniform ChannelPrune({uniform_p:.3f}): {mults(uniform):,} multiplies per image")

# %%
unpruned_mults = mults(model)
print(f"unpruned: {baseline:.1%} at {unpruned_mults:,} multiplies")
says_person = {}                           # share of images each model calls "person"
pruned_acc = {}
for name, m in (("planned", planned), ("uniform", uniform)):
    logits = answers([layer for _, layer in m.named_layers()], x)
    pruned_acc[name] = accuracy(logits, labels)
    says_person[name] = float(np.mean(logits > 0))
    print(f"{name + ':':<9} {pruned_acc[name]:.1%} at {mults(m):,} multiplies; "
          f"it calls {says_person[name]:.0%} of the images 'person' ({person_share:.0%} are)")
planned_acc, uniform_acc = pruned_acc["planned"], pruned_acc["uniform"]

# %% [markdown]
# Pruned this hard, both models may well sit at the majority share or even
# below it, and that is not only lost weights. In eval mode every BatchNorm
# normalises with the running mean and variance it saw in training; with a
# fifth or a half of the channels before it gone, its input no longer has
# those statistics, and the errors compound from layer to layer, until the
# last layer's logit is pushed the same way for most images. Compare the
# share of images each model calls "person" with the share that are: a
# model that leans to the majority class scores about the majority share,
# one that leans to the minority class scores *below* it, and can end below
# 50% -- not because it learned the opposite, but because it gives the
# minority answer to images of both classes alike.
#
# A cheap first aid, with no training at all: run some training images
# through the pruned model in train mode, so that each BatchNorm
# re-estimates its statistics. Setting the momentum to 1/(k+1) at batch k
# makes the running values the plain average over all the batches instead
# of a decaying one.

# %%
def recalibrate(m, images, batch=50):
    """Re-estimate every BatchNorm's running mean and variance on ``images`` (uint8); weights untouched."""
    norms = [layer for _, layer in m.named_layers() if isinstance(layer, BatchNorm2d)]
    momenta = [bn.momentum for bn in norms]
    m.train()
    for k, start in enumerate(range(0, len(images), batch)):
        for bn in norms:
            bn.momentum = 1 / (k + 1)
        m(to_float(images[start:start + batch]))
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    return m.eval()


# A copy of the first images only (uint8), so the rest of the training set can be let go.
calibration = np.array((SyntheticVWW("train", size=CALIBRATION_IMAGES) if QUICK
                        else SyntheticVWW("train")).images[:CALIBRATION_IMAGES])
recalibrated = {}                          # accuracy after recalibrating, by model
for name, m in (("planned", planned), ("uniform", uniform)):
    recalibrate(m, calibration)
    acc = accuracy_from([layer for _, layer in m.named_layers()], x)
    recalibrated[name] = acc
    print(f"{name + ':':<9} {acc:.1%} after recalibrating BatchNorm on {len(calibration):,} training images")

# %% [markdown]
# How to read the outcome. The scan measured each layer *alone*; the plan
# prunes them all at once, and small losses add up, so the planned model
# usually loses more than `TOLERANCE`. Whether it beats uniform pruning
# depends on how uneven the sensitivities are: the plan spends the
# multiplies where the scan says they matter, uniform pruning spreads them
# evenly. Recalibrating BatchNorm undoes part of the damage without any
# training; neither model has been finetuned, and after a few epochs of
# `trainer` the gap usually narrows.
#
# Exercises:
#
# 1. Make the plan with `TOLERANCE = 0.02`, then `0.005`. How do the
#    multiplies and accuracies move?
# 2. Use `LevelPrune` in the plan instead, and count with
#    `rule="sparse"`. Why does `resize` not help there?
# 3. Finetune both the planned and the uniform model for one epoch with
#    `trainer` and compare again.

# %%
scanned = sum(len(row) for scan in scans.values() for row in scan.values())
print(f"{evaluations} models evaluated: the unpruned one, {scanned} in the scan, and the planned "
      f"and uniform ones before and after recalibrating; the bisection built and counted "
      f"{BISECTION_STEPS} more without evaluating them")

# %% [markdown]
# ## The numbers in one place
#
# Everything the scan and the comparison measured, in one dict: the test
# suite checks these numbers, and you can compare them between runs.

# %%
results = {
    "levels": LEVELS,
    "validation_images": len(x),
    "baseline": baseline,                      # unpruned accuracy, a fraction
    "scans": scans,                            # {strategy: {layer: [accuracy at each level]}}
    "plan": plan_levels,                       # {layer: ChannelPrune level, 0 = left alone}
    "uniform_level": uniform_p,
    "mults": {"unpruned": unpruned_mults, "planned": planned_mults, "uniform": mults(uniform)},
    "accuracy": {"planned": planned_acc, "uniform": uniform_acc},
    "recalibrated": recalibrated,
    "calibration_images": len(calibration),
    "majority": majority,                      # the share of the larger class among the images
    "says_person": says_person,                # {model: share of images it calls "person"}
    "evaluations": evaluations,                # models evaluated, counted as they ran
    "figure": OUT / "scan.png",
}
