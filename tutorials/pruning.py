# %% [markdown]
# # Pruning a MobileNet, one step at a time
#
# This is the course's pruning tutorial, redone in tinyprune. Run it as a
# script (`python tutorials/pruning.py`) or open it as a notebook (Jupytext,
# VS Code and PyCharm read the `# %%` cells). Every number the course text
# prints is printed here in the same format, so you can hold the two side by
# side and compare line by line.
#
# The plan:
#
# 1. build MobileNet v1 at width 0.25 and count what one image costs;
# 2. prune it two ways: single weights (`LevelPrune`) and whole channels
#    (`ChannelPrune`);
# 3. spread the channel pruning to the neighbouring layers
#    (`prune_propagate`) and cut the dead channels out (`resize`);
# 4. beyond the course text: compare three ways of counting, time the
#    models on a real (dense) kernel, and measure the accuracy each step
#    costs and how much one epoch of finetuning wins back.
#
# Set the environment variable `TINYPRUNE_QUICK=1` to run everything on tiny
# data in seconds (that is what the test suite does); the numbers of steps
# 1 to 3 do not depend on it. The last cell gathers every number in a dict,
# `results`, which the tests check.

# %%
import os
import time

import numpy as np

from tinyprune.common import output_dir
from tinyprune import plots
from tinyprune.tools.bench import time_sparse_pointwise
from tinyprune import (ChannelPrune, LevelPrune, MobileNet, compute_dot_prods, evaluate, keepprune,
                       pretrained, prune, prune_propagate, resize, slopehtanh, sparsity, trainer)
from tinyprune.data import SyntheticVWW
from tinyprune.pipeline import TUTORIAL_INPUT, prune_and_resize

QUICK = os.environ.get("TINYPRUNE_QUICK") == "1"
TRAIN_IMAGES = 64 if QUICK else None    # None = the full synthetic sets: 8,000 train,
VAL_IMAGES = 32 if QUICK else None      # 2,000 validation images
TIMING_BATCH = 4 if QUICK else 64
OUT = output_dir("pruning")   # this tutorial's figures
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. The model and what it costs
#
# MobileNet v1 replaces most full 3x3 convolutions by a *depthwise* 3x3
# convolution (each channel filtered on its own) followed by a *pointwise*
# 1x1 convolution (channels mixed, no spatial extent). At width 0.25 every
# channel count is a quarter of the original. The head ends in a single
# logit: "is there a person in the picture?".
#
# `compute_dot_prods` walks the layers and adds up the multiplies and adds of
# every convolution and dense layer for one input batch. tinyprune is NCHW,
# so the course's `(96, 96, 3, 1)` (Julia's width, height, channels, batch)
# is `(1, 3, 96, 96)` here, `TUTORIAL_INPUT`.

# %%
m = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)
mults, adds, output_size = compute_dot_prods(m, TUTORIAL_INPUT)  # one RGB image of 96 x 96
print("MobileNet Mults", mults, "Adds", adds)

# %% [markdown]
# A dot product of K terms needs K multiplies and K - 1 adds, which is why
# the adds come out a little lower than the multiplies.
#
# ## 2a. Unstructured pruning: `LevelPrune`
#
# `LevelPrune(0.2)` zeroes, in every convolution and dense layer, the 20% of
# weights with the smallest magnitude. `prune` returns a pruned *copy*: the
# original `m` is untouched, and the copy remembers which weights it pruned
# in a mask, so that training later cannot bring them back.

# %%
m_lv_pruned = prune(LevelPrune(0.2), m)
mults, adds, output_size = compute_dot_prods(m_lv_pruned, TUTORIAL_INPUT)
print("MobileNet Mults", mults, "Adds", adds)

# %% [markdown]
# 44,794 weights are now zero, yet only 44,794 multiplies are saved (0.6%)
# and not a single add. That is how the course's counting rule treats a
# scattered zero in a convolution: it saves one multiply in total, although
# the weight is used at every pixel. Section 4 shows the other ways to count.
#
# ## 2b. Structured pruning: `ChannelPrune`
#
# `ChannelPrune(0.2)` ranks the output channels of every convolution
# (depthwise ones included) by the L1 norm of their weights and zeroes the
# weakest 20%, whole channels at a time. It also masks the following
# BatchNorm's scale and shift on those channels, so a pruned channel really
# outputs zero. Dense layers are left alone. Note that we prune the original
# `m` again, not the level-pruned copy: the two are alternatives.

# %%
m_ch_pruned = prune(ChannelPrune(0.2), m)
mults, adds, output_size = compute_dot_prods(m_ch_pruned, TUTORIAL_INPUT)
print("MobileNet Mults", mults, "Adds", adds)

# %% [markdown]
# Fewer weights are zero than with `LevelPrune` (whole channels, and not in
# the dense layers), but every one of them is skipped at every pixel, so the
# saving is thirty times larger: 18.7% of the multiplies.
#
# Where are the zeros? `plots.plot_sparsity` draws, for every layer, the
# share of zero weights, split by where they lie: in whole zero output
# channels (red), in whole zero input channels (orange, see 3a), or
# scattered (blue). First the level-pruned model:

# %%
figure = plots.plot_sparsity(m_lv_pruned, title="LevelPrune(0.2): scattered zeros",
                             save=OUT / "sparsity-level.png")
print(f"wrote {OUT / 'sparsity-level.png'}")
figure

# %% [markdown]
# Every layer loses its smallest 20%, scattered. Only fc2 looks different:
# it has a single output, so each of its 64 weights is a whole input
# column, and a zero there means that feature of fc1 is read by nobody.
# Now the channel-pruned model:

# %%
figure = plots.plot_sparsity(m_ch_pruned, title="ChannelPrune(0.2): whole channels",
                             save=OUT / "sparsity-channel.png")
print(f"wrote {OUT / 'sparsity-channel.png'}")
figure

# %% [markdown]
# ## 3a. Propagating the pruning
#
# A channel that is always zero does more damage than its own weights: the
# next layer still multiplies it by its input slice for that channel, and a
# depthwise filter fed only zeros produces nothing useful either. Going the
# other way, a channel that no later layer reads need not be computed.
# `prune_propagate` sweeps forward and backward through the network, zeroing
# all such weights, until nothing changes. The model still computes the
# same function (up to float rounding).
#
# "The same function" takes one idea, *constant folding*, and it is where
# tinyprune differs from the course's code. Follow a pointwise channel j
# that `ChannelPrune` removed: its BatchNorm is masked, so it leaves as an
# exact zero, the activation keeps it zero, and depthwise filter j turns
# zeros into zeros. But the BatchNorm after that filter does not. In eval
# mode it computes
# `gamma * (0 - running_mean) / sqrt(running_var + eps) + beta`,
# a *constant*, the same at every pixel of every image, and a trained model
# has no reason to make it zero. The next pointwise conv multiplies that
# constant c by its input slice `W[:, j]`, which adds `c * sum(W[i, j])`
# to every pixel of output i. Zeroing the slice, as the course's code does,
# takes that term away and changes the model's answers. tinyprune zeroes
# the slice and *folds* the term into the next BatchNorm instead: it lowers
# that BatchNorm's running mean by the same amount, so in eval mode the
# output is unchanged; in train mode BatchNorm subtracts the batch mean,
# which loses the term as well. Now nothing reads channel j any more, and
# filter j, its BatchNorm and the slice can all go.
#
# `keepprune` first turns the masks into plain zeros: from here on the
# zeros are just values in the arrays.

# %%
m_pruned = keepprune(m_ch_pruned)
m_prop = prune_propagate(m_pruned)
mults, adds, output_size = compute_dot_prods(m_prop, TUTORIAL_INPUT)
print("Propagated MobileNet Mults", mults, "Adds", adds)

# %% [markdown]
# This number (and the next) depends on the random weights: it depends on how
# much the channels pruned in a pointwise layer overlap with those pruned in
# the depthwise layer after it. The course text shows 5,002,864 for its
# draw; expect about 5.0 million here.
#
# Where are the zeros now? Propagation added whole *input* channels
# (orange): the slices `W[:, j]` of the layers that read a dead channel.

# %%
figure = plots.plot_sparsity(m_prop, title="ChannelPrune(0.2), propagated",
                             save=OUT / "sparsity-propagated.png")
print(f"wrote {OUT / 'sparsity-propagated.png'}")
figure

# %% [markdown]
# ## 3b. Resizing
#
# The propagated model is still the same size, full of zero slices.
# `resize` removes every channel that nothing reads, from the layer that
# makes it, the BatchNorm and depthwise filter it passes through, and the
# layer that would read it. What is left is an ordinary, smaller MobileNet.

# %%
m_resized = resize(m_prop)
mults, adds, output_size = compute_dot_prods(m_resized, TUTORIAL_INPUT)
print("Resized MobileNet Mults", mults, "Adds", adds)

# %% [markdown]
# The course text shows 3,680,115 (its resize skips the first and last
# groups of layers; tinyprune's resizes every group, so it usually lands a
# little lower, about 3.65 million).
#
# Let us check that the resized model really computes what the pruned one
# does, on a few random images (in eval mode, so BatchNorm uses its
# stored statistics):

# %%
x = np.random.default_rng(0).random((4, 3, 96, 96), dtype=np.float32)
y_pruned = m_ch_pruned.eval()(x)
y_resized = m_resized.eval()(x)
logit_difference = float(np.abs(y_pruned - y_resized).max())
print("largest difference in the logits:", logit_difference)
print(f"conv and dense weights: {sparsity(m_prop).weights:,} before resize, "
      f"{sparsity(m_resized).weights:,} after")

# %% [markdown]
# How many channels did each layer keep? (A depthwise layer keeps as many as
# the pointwise layer before it: it filters each channel on its own.)

# %%
figure = plots.plot_channels(m_prop, m_resized, save=OUT / "channels.png")
print(f"wrote {OUT / 'channels.png'}")
figure

# %% [markdown]
# ## 4a. Three ways to count
#
# What does a zero weight save? That depends on the machine running the model,
# so `compute_dot_prods` takes a `rule`:
#
# * `"reference"`: the course's rule, which reproduces its numbers. A whole
#   zero output channel saves its multiplies and adds at every pixel; a
#   scattered zero saves one multiply, once.
# * `"sparse"`: an ideal machine that skips every zero weight wherever it is
#   used: a scattered zero in a convolution saves one multiply (and one
#   add) *per output pixel*.
# * `"dense"`: an ordinary dense kernel, which multiplies zeros like any other
#   number. Only smaller arrays save anything.

# %%
stages = [("baseline", m), ("LevelPrune(0.2)", m_lv_pruned), ("ChannelPrune(0.2)", m_ch_pruned),
          ("propagated", m_prop), ("resized", m_resized)]
rules = ("reference", "sparse", "dense")
counts = {name: {rule: compute_dot_prods(model, TUTORIAL_INPUT, rule)[:2] for rule in rules}
          for name, model in stages}             # {stage: {rule: (mults, adds)}}
print(f"{'multiplies per image':<20}" + "".join(f"{rule:>13}" for rule in rules))
for name, by_rule in counts.items():
    print(f"{name:<20}" + "".join(f"{by_rule[rule][0]:>13,}" for rule in rules))

# %% [markdown]
# The same story per layer, under the course's rule: grouped bars for every
# stage, and the totals with the share saved.

# %%
figure = plots.plot_macs(stages, TUTORIAL_INPUT, rule="reference", save=OUT / "macs.png")
print(f"wrote {OUT / 'macs.png'}")
figure

# %% [markdown]
# Read the columns top to bottom. Under `"sparse"` level pruning saves 20% of
# the multiplies (each zero skipped at every pixel), and propagation already
# reaches the resized count, because resizing only removes zeros. Under
# `"dense"` nothing changes until the arrays shrink: only `resize` pays off
# on a dense kernel. The reference rule sits in between and is the one to
# use when comparing with the course text.
#
# ## 4b. What a dense kernel actually does
#
# Counting is a model of time; let us measure it. tinyprune's layers are
# dense kernels (matrix products and Numba loops), so by the `"dense"` rule
# only the resized model should be faster. We time a forward pass over a
# batch of images in eval mode, taking the best of a few runs (the first run
# is left out: it loads the compiled kernels).
#
# We time a copy of each model. Every layer keeps what its forward pass saw,
# for a backward pass that may follow: for this model about 2.7 MB per
# image, so 64 images leave some 170 MB in each model timed. The copy takes
# them with it when it goes.

# %%
def forward_ms(model, batch, repeats):
    """Best wall time of ``model(batch)`` over ``repeats`` runs, in milliseconds per image."""
    model = model.copy().eval()         # a copy: its forward caches are freed on return
    model(batch)                        # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(batch)


batch = np.random.default_rng(1).random((TIMING_BATCH, 3, 96, 96), dtype=np.float32)
repeats = 1 if QUICK else 5
baseline_ms = forward_ms(m, batch, repeats)
timings = {}                                     # milliseconds per image, by model
for name, model in [("unpruned", m), ("LevelPrune(0.2)", m_lv_pruned),
                    ("propagated", m_prop), ("resized", m_resized)]:
    ms = baseline_ms if model is m else forward_ms(model, batch, repeats)
    timings[name] = ms
    dense = compute_dot_prods(model, TUTORIAL_INPUT, "dense")[0]
    print(f"{name:<16} {ms:6.2f} ms per image ({ms / baseline_ms:4.0%} of unpruned), "
          f"dense-rule multiplies {dense / 1e6:.2f} M")

# %% [markdown]
# Zeros inside an array cost as much as any other weight: the level-pruned
# and propagated models take as long as the unpruned one, within timing
# noise. The resized model does fewer multiplies and is faster, though
# usually by less than its multiply count suggests, since memory traffic and
# the per-layer overhead do not shrink with it. (On a busy machine the
# timings jump around: rerun the cell.)
#
# ## 4c. Could a kernel skip the scattered zeros?
#
# The `"sparse"` rule assumes a machine that skips every zero weight. Such
# kernels exist: store only the non-zero weights of a pointwise conv, row by
# row, with their column numbers (the CSR format), and loop over those
# (`tinyprune.sparse.csr_pointwise`). But each surviving weight now costs
# an index lookup and an irregular memory access, while the dense matrix
# product streams through memory with vector instructions. Below, every
# pointwise conv of the model is pruned to a given share of zeros and run
# both ways; the speed-up is dense time over sparse time.

# %%
SPARSITY_LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
# One thread each: tinyprune runs NumPy's BLAS on one thread (tinyprune/threads.py),
# so the CSR kernel gets one too, core for core.
rows = time_sparse_pointwise(m, SPARSITY_LEVELS, batch=TIMING_BATCH, repeats=repeats, csr_threads=1)
for row in rows:
    print(f"{row['sparsity']:4.0%} zeros: dense {1000 * row['dense_s']:7.3f} ms, "
          f"CSR {1000 * row['csr_s']:7.3f} ms, speed-up {row['csr_speedup']:5.2f}x")
figure = plots.plot_sparse_speedup([r["sparsity"] for r in rows], [1000 * r["dense_s"] for r in rows],
                                   [1000 * r["csr_s"] for r in rows],
                                   title=f"MobileNet's 13 pointwise convs on a batch of {TIMING_BATCH}: "
                                         "dense vs zero-skipping (CSR)",
                                   save=OUT / "sparse-speedup.png")
print(f"wrote {OUT / 'sparse-speedup.png'}")
figure

# %% [markdown]
# Read the speed-up column: below 1, the sparse kernel is slower than simply
# multiplying the zeros. It climbs above 1 only once most of the weights are
# gone, far beyond the 20% of `LevelPrune(0.2)`. (`python -m tinyprune bench`
# measures the same at a fixed batch size and thread count; tiny batches, as
# in the quick mode, make the timings noisy.) That is why structured pruning,
# which `resize` turns into smaller dense arrays, is the kind that pays on
# ordinary hardware.
#
# ## 5. Accuracy: before pruning, after pruning, after finetuning
#
# A randomly initialised model has nothing to lose, so for accuracy we
# switch to the trained model shipped with tinyprune: the same architecture,
# trained on a synthetic stand-in for Visual Wake Words (drawn stick figures
# versus the same parts jumbled; the real data set cannot be downloaded
# here). We run the same pipeline on it, this time in one call:
# `tinyprune.pipeline.prune_and_resize` does prune, keepprune,
# prune_propagate and resize in the order of sections 2b to 3b (the
# `tinyprune` command calls it too), and returns the three models along the
# way; we keep the last.

# %%
train_set = SyntheticVWW("train", size=TRAIN_IMAGES)
val_set = SyntheticVWW("val", size=VAL_IMAGES)
trained = pretrained()
_, acc_before = evaluate(trained, val_set)

trained_pruned = prune_and_resize(trained, ChannelPrune(0.2)).resized
mults, adds, output_size = compute_dot_prods(trained_pruned, TUTORIAL_INPUT)
loss_pruned, acc_pruned = evaluate(trained_pruned, val_set)
print(f"accuracy before pruning: {acc_before:.1%}")
print(f"accuracy after ChannelPrune(0.2), propagate, resize: {acc_pruned:.1%} "
      f"({mults:,} multiplies per image)")

# %% [markdown]
# Why does pruning a fifth of the channels take the accuracy from about 91%
# to about 57%, close to the 50% of guessing on this balanced set, when
# propagation and resizing change nothing? The pruning itself does it, and
# mostly through BatchNorm. In eval mode every BatchNorm normalises its
# input with the running mean and variance it estimated in training, on
# the *unpruned* network. Remove a fifth of the channels that feed a
# pointwise conv, and each of its outputs has a different mean and spread;
# the BatchNorm after it still subtracts the old mean and divides by the
# old spread, so its outputs are off-centre and mis-scaled, and the next
# layer makes it worse, 27 layers deep. Two cures: re-estimate the running
# statistics on some training images, with no training at all (the
# sensitivity tutorial shows how; here it brings the accuracy back to
# about 80%), or finetune, which re-estimates them and adapts the weights
# too.
#
# Finetuning: `trainer(model, epochs)` trains with Adam at a learning rate of
# 1e-3 on batches of 32 augmented images, and evaluates on the validation
# set after every epoch. It trains in place and returns the model; its
# per-epoch figures are kept in `model.history`. A one-epoch history is a
# single point, so we also collect the loss of every batch through the
# trainer's `callback` and draw that curve, and start the validation curve
# at epoch 0 with the pruned model's loss and accuracy (`start=`).

# %%
batch_losses = []                  # trainer calls back after every batch: keep its loss
finetuned = trainer(trained_pruned.copy(), 1, data=(train_set, val_set),
                    callback=lambda epoch, batch, loss: batch_losses.append(loss))
acc_after = finetuned.history.val_accuracy[-1]
print(f"accuracy after one epoch of finetuning: {acc_after:.1%}")
figure = plots.plot_history(finetuned.history, batch_losses, title="Finetuning the pruned model",
                            start=(loss_pruned, acc_pruned), save=OUT / "finetune.png")
print(f"wrote {OUT / 'finetune.png'}")
figure

# %% [markdown]
# One epoch usually wins back most of what pruning cost. Look at the first
# training batches, too: their loss is far below the validation loss at
# epoch 0, before a single step. Training runs BatchNorm in train mode,
# where it normalises with the batch's own statistics, and those fit the
# pruned network: the BatchNorm story above, seen in the curve. (With
# `TINYPRUNE_QUICK=1` it trains on 64 images only, so do not read much into
# the quick numbers.)
#
# ## The numbers in one place
#
# Everything this tutorial measured, gathered in one dict: the test suite
# checks these numbers, and you can compare them between runs or machines.

# %%
results = {
    "counts": counts,                          # {stage: {rule: (mults, adds)}}
    "largest_logit_difference": logit_difference,
    "weights": {"propagated": sparsity(m_prop).weights, "resized": sparsity(m_resized).weights},
    "ms_per_image": timings,                   # the dense forward pass of each model
    "sparse_kernel": rows,                     # per sparsity: dense_s, csr_s, csr_speedup
    "pruned_mults": mults,                     # the trained model after prune_and_resize
    "accuracy": {"before": acc_before, "pruned": acc_pruned, "finetuned": acc_after},
    "validation_images": len(val_set),
    "figures": [OUT / name for name in ("sparsity-level.png", "sparsity-channel.png",
                                        "sparsity-propagated.png", "channels.png",
                                        "macs.png", "sparse-speedup.png",
                                        "finetune.png")],
}

# %% [markdown]
#
# ## Where to go from here
#
# * `tutorials/sensitivity.py` measures how much each layer can be pruned on
#   its own, and builds a per-layer pruning plan from that.
# * `tutorials/layers.py` shows how every layer's backward pass is derived and
#   checked, and has you write one.
# * `python -m tinyprune --help`: the whole pipeline above as one command,
#   with figures.
