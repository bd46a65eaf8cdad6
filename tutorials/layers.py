# %% [markdown]
# # How a layer learns: deriving and checking backward passes
#
# Training needs, for every layer, two functions:
#
# * `forward(x)`: the layer's output `y` from its input `x`;
# * `backward(dy)`: given `dy = dL/dy`, how the loss `L` changes with the
#   output, return `dx = dL/dx` and store `dL/dw` for every parameter `w`.
#
# Both come from the chain rule. If `y` depends on `x`, then
# `dL/dx[i] = sum over j of dL/dy[j] * dy[j]/dx[i]`: each input entry
# collects the blame of every output it helped compute. Backward passes are
# this sum written out cleverly, without ever building the full table of
# `dy[j]/dx[i]`.
#
# A backward pass is easy to get almost right. `tinyprune.gradcheck` checks
# one against the definition of a derivative: nudge one entry by `+eps` and
# `-eps`, watch the loss move, divide by `2 eps`. It does this for every
# entry of the input and of each parameter, in float64, and reports the
# worst relative disagreement per tensor. A correct backward gives about
# 1e-8 or less; a bug gives something near 1.
#
# This tutorial derives the backward pass of each layer MobileNet uses (all
# but BatchNorm's last step, which is left to you), checks tinyprune's
# version, and ends with a layer you write yourself. Run it as a script
# (`python tutorials/layers.py`) or as a notebook. Shapes: NCHW for images,
# OIHW `(C_out, C_in, KH, KW)` for convolution weights. The last cell
# gathers the numbers in a dict, `results`, which the tests check.
#
# In a student copy of the course the backward passes are exercises
# layers.1 to layers.5 (and im2col, col2im kernels.1 and kernels.2): the
# tutorial then stops at the first one not written yet, naming it. Write
# it, run the tutorial again, and `gradcheck` tells you whether it is right.

# %%

import numpy as np

from tinyprune.common import output_dir
from tinyprune import (BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Layer, MobileNet, SlopeHTanh,
                       bce_with_logits, gradcheck, slopehtanh)
from tinyprune import plots

OUT = output_dir("layers")   # this tutorial's figure
rng = np.random.default_rng(0)
reports = {}    # name -> what gradcheck found, kept for the last cell


def check(name, layer, x):
    """Run gradcheck and print one line per layer: the worst relative error of all tensors."""
    report = gradcheck(layer, x)
    reports[name] = report
    print(f"{name:<32} worst relative error {report.worst:.1e}   "
          + "  ".join(f"{key}: {err:.0e}" for key, err in report.items()))
    return report


# %% [markdown]
# ## Dense: the pattern for everything else
#
# `y = x W^T + b`, with `x` of shape (N, in), `W` (out, in), `y` (N, out).
# Each `y[n, o] = sum_i x[n, i] W[o, i] + b[o]`, so
#
# * `dL/dW[o, i] = sum_n dy[n, o] x[n, i]`, that is `dW = dy^T x`;
# * `dL/db[o] = sum_n dy[n, o]`;
# * `dL/dx[n, i] = sum_o dy[n, o] W[o, i]`, that is `dx = dy W`.
#
# Check the shapes: `dy^T x` is (out, N) (N, in) = (out, in), the shape of
# `W`. A gradient always has the shape of the thing it is the gradient of.

# %%
check("Dense(5, 3)", Dense(5, 3, rng=rng), rng.standard_normal((4, 5)))

# %% [markdown]
# ## Convolution: a dense layer in disguise
#
# A convolution slides a (C_in, KH, KW) filter over the image. Unfold every
# receptive field into a column (`im2col`): for one image that is a matrix
# `cols` of shape (C_in*KH*KW, HO*WO), and the convolution becomes one
# matrix product `y = Wm @ cols`, with `Wm` the weight reshaped to
# (C_out, C_in*KH*KW). Dense again, so
#
# * `dWm = sum over images of dy @ cols^T`;
# * `dcols = Wm^T @ dy`;
# * `dx = col2im(dcols)`: fold the columns back onto the image. Where
#   receptive fields overlap, a pixel appears in several columns, and folding
#   *adds* its gradients: the chain rule's sum over every output the pixel
#   helped compute.
#
# Here are the columns of a 1-channel 3x3 image under a 2x2 kernel, stride 1,
# no padding: four receptive fields, four columns.

# %%
from tinyprune.kernels import _im2col   # the plain-Python kernel, readable line by line

image = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
cols = np.empty((1, 4, 4))
_im2col(image, 2, 2, 1, 0, cols)
print("image:\n", image[0, 0])
print("columns (one receptive field per column):\n", cols[0])

# %%
check("Conv2d(2, 3, 3, stride 2)", Conv2d(2, 3, 3, stride=2, pad=1, rng=rng),
      rng.standard_normal((1, 2, 5, 5)))
check("Conv2d(4, 3, 1) pointwise", Conv2d(4, 3, 1, rng=rng), rng.standard_normal((2, 4, 3, 3)))

# %% [markdown]
# ## Depthwise convolution
#
# Each channel has its own (KH, KW) filter and sees only its own channel:
#
#     y[n, c, i, j] = sum over a, b of w[c, a, b] * x[n, c, i*s + a - p, j*s + b - p]
#
# (s the stride, p the padding; pixels outside the image count as zero).
# Differentiating one term at a time:
#
# * `dw[c, a, b] = sum over n, i, j of dy[n, c, i, j] * x[n, c, i*s + a - p, j*s + b - p]`;
# * `dx[n, c, i*s + a - p, j*s + b - p] += w[c, a, b] * dy[n, c, i, j]`,
#   for every output (i, j) and filter tap (a, b): each output hands its
#   gradient back to the pixels it read, weighted by the tap that read them.
#
# tinyprune's kernel `depthwise_backward` runs exactly these two sums, one
# channel per thread (writing it is exercise layers.5 of the course).

# %%
check("DepthwiseConv2d(3, 3, stride 2)", DepthwiseConv2d(3, 3, stride=2, pad=1, rng=rng),
      rng.standard_normal((1, 3, 5, 5)))

# %% [markdown]
# ## Batch normalisation (training mode)
#
# Per channel, over the M = N*H*W values of the batch:
#
#     mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps),
#     y = gamma * xhat + beta.
#
# The parameters are easy: `dbeta = sum(dy)`, `dgamma = sum(dy * xhat)`.
# The input is harder, because every `x` also moves `mu` and `var`, and
# through them every output of its channel: the chain rule has three paths
# to follow (through `xhat` directly, through `var`, through `mu`), and
# adding them up and simplifying is exercise layers.3 of the course
# (`BatchNorm2d.backward` says what to compute; Ioffe and Szegedy's paper,
# section 3, walks the same steps).
#
# Whatever formula comes out can be checked without deriving anything, and
# more sharply than with finite differences: the *complex step*. Write the
# forward pass with operations that also work on complex numbers and nudge
# one input by an imaginary amount `i*h`. Then `L(x + ih) = L(x) + ih L'(x)
# - h^2 L''(x)/2 + ...`, whose imaginary part divided by `h` is `L'(x)` up to
# `h^2`. Nothing is subtracted from a nearly equal number, so `h` can be
# 1e-20 and the derivative is exact to rounding. Here it is against
# tinyprune's layer, then the layer against finite differences as above.

# %%
def batchnorm_train_forward(x, gamma, beta, eps):
    """Train-mode BatchNorm of x (N, C, H, W) by its definition, with operations that accept complex numbers.

    (Not np.var: on complex numbers it takes absolute values, which have no complex derivative.)
    """
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


bn = BatchNorm2d(3).to(np.float64)
bn.weight[:] = [0.5, 1.0, 2.0]
x = rng.standard_normal((4, 3, 2, 2))
dy = rng.standard_normal((4, 3, 2, 2))
bn.forward(x)
dx_layer = bn.backward(dy)

gamma, beta = bn.weight.reshape(1, 3, 1, 1), bn.bias.reshape(1, 3, 1, 1)
h = 1e-20
dx_complex_step = np.empty_like(x)
for index in np.ndindex(x.shape):                # one nudge per input entry: 48 forward passes
    nudged = x.astype(complex)
    nudged[index] += 1j * h
    dx_complex_step[index] = np.sum(batchnorm_train_forward(nudged, gamma, beta, bn.eps) * dy).imag / h
formula_difference = float(np.abs(dx_complex_step - dx_layer).max())
print("layer vs complex step, largest difference:", formula_difference)

# %%
check("BatchNorm2d(3), train mode", BatchNorm2d(3), rng.standard_normal((2, 3, 2, 2)))
check("BatchNorm2d(3), eval mode", BatchNorm2d(3).eval(), rng.standard_normal((2, 3, 2, 2)))

# %% [markdown]
# ## slopehtanh
#
# The activation of the course's MobileNet: the identity on [-1, 1], and
# beyond it a line of slope -1/4 (it bends back towards zero). So
# `dx = dy` where `|x| <= 1` and `dx = -dy / 4` elsewhere.
#
# At the kinks x = +-1 the derivative jumps, and a finite difference that
# straddles a kink measures neither side. So we check on inputs kept away
# from +-1 (real networks rarely land exactly on a kink; `gradcheck`'s
# docstring says what to do when they do).

# %%
print("slopehtanh at -3, -1, 0.5, 1, 3:", slopehtanh(np.array([-3.0, -1.0, 0.5, 1.0, 3.0])))
x = rng.uniform(-3, 3, (1, 3, 4, 4))
x[np.abs(np.abs(x) - 1) < 0.01] = 0.5           # keep 0.01 away from the kinks
check("SlopeHTanh", SlopeHTanh(), x)

# %% [markdown]
# ## Why a fresh MobileNet starts its BatchNorm gammas at 0.5
#
# That bend of slopehtanh explains a finding worth knowing before you train
# a network of your own. Flux, the course's library, starts every
# BatchNorm with gamma = 1, so in train mode its outputs have mean 0 and
# standard deviation 1, and about a third of them lie beyond +-1, where
# slopehtanh's slope is -1/4: the backward pass flips and quarters their
# gradient, a different pattern for every unit and image, 27 layers in a
# row. The untrained network comes out *chaotic*: its loss reacts wildly to
# the first layers' weights, and a step that helps one batch scrambles the
# next. Started that way, the tutorial's MobileNet does not learn: on the
# synthetic set it stays at chance for ten epochs, and on a small real
# image task it ended at 65-78% where the same network with its gammas
# started at 0.5 reached 97-99%, in tinyprune and in PyTorch alike. With
# gamma = 0.5 the outputs have standard deviation 0.5, only 5% of them go
# beyond +-1 (a normal value rarely strays past two standard deviations),
# and the network starts nearly linear, which is where training is easy.
#
# That is why tinyprune's `MobileNet` starts every BatchNorm's gamma at 0.5.
# Flux's exact initialisation is still there by name (see `MobileNet`'s
# docstring), e.g. to compare with the course's Julia code: no count
# depends on it.
#
# Let us measure both starts with the backward passes of this tutorial.
# The same fresh model, gammas set to 1 and to 0.5, one batch of 16 random
# images forward and backward; for every conv and dense layer we compare the
# size of its weight gradient with the size of its weights, `|dW| / |W|`
# (Frobenius norms). The weights are the same in both runs, so the ratio
# differs only through the gradient.

# %%
def fresh_start(gamma, images, targets):
    """A fresh MobileNet with every BatchNorm gamma set to ``gamma``, one batch forward and back.

    Returns (share of the activations' inputs beyond +-1, ``|dW| / |W|`` of each conv/dense layer).
    """
    m = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)    # train mode: batch statistics
    beyond = []
    h = images
    for _, layer in m.named_layers():       # the forward pass, one leaf at a time, to look inside
        if isinstance(layer, BatchNorm2d):
            layer.weight[:] = gamma
        if isinstance(layer, SlopeHTanh):
            beyond.append(np.mean(np.abs(h) > 1))
        h = layer.forward(h)
    _, dy = bce_with_logits(h, targets)
    for _, layer in reversed(list(m.named_layers())):   # and backward, leaf by leaf: fills the grads
        dy = layer.backward(dy)
    ratios = [np.linalg.norm(layer.grads["weight"]) / np.linalg.norm(layer.weight)
              for _, layer in plots.dot_layers(m)]
    return float(np.mean(beyond)), ratios


draw = np.random.default_rng(1)             # its own generator: the checks above and below keep theirs
images = draw.random((16, 3, 96, 96), dtype=np.float32)
targets = (draw.random(16) < 0.5).astype(np.float32)
starts = {gamma: fresh_start(gamma, images, targets) for gamma in (1.0, 0.5)}
for gamma, (beyond, ratios) in starts.items():
    print(f"gamma {gamma}: {beyond:.1%} of the activations' inputs beyond +-1; |dW| / |W| of the "
          f"first conv {ratios[0]:.3g}, median over the layers {np.median(ratios):.3g}")

# %%
labels = plots.layer_labels(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1))
figure = plots.Figure(figsize=(11, 4), layout="constrained")
ax = figure.add_subplot()
for gamma, (_, ratios) in starts.items():
    ax.semilogy(ratios, marker="o", label=f"BatchNorm gamma = {gamma}")
ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
ax.set_xticks(np.arange(len(labels)))
ax.set_xticklabels(labels, rotation=90, fontsize=8)
ax.set_xlabel("layer, in forward order")
ax.set_ylabel("|dW| / |W| (log scale)")
ax.set_title("A fresh MobileNet, one batch: weight gradient over weight, per layer")
ax.grid(alpha=0.3)
ax.legend()
OUT.mkdir(parents=True, exist_ok=True)
print(f"wrote {plots.save_figure(figure, OUT / 'fresh-gradients.png')}")
figure

# %% [markdown]
# With gamma = 1 the gradient of the first layers is tens to a hundred
# times the size of their weights, and it shrinks layer by layer towards the
# output: the signature of a chaotic network. With gamma = 0.5 every layer's
# ratio stays below about 1.
#
# %% [markdown]
# ## Your turn: a layer of your own
#
# A `Scale` layer multiplies each channel by a learned factor:
# `y[n, c, i, j] = s[c] * x[n, c, i, j]`, with `s` of shape (C,).
#
# Derive before reading on:
#
# * `dx[n, c, i, j] = s[c] * dy[n, c, i, j]`;
# * `ds[c] = sum over n, i, j of dy[n, c, i, j] * x[n, c, i, j]`: the factor
#   `s[c]` touches every value of channel c, so its gradient sums over all
#   of them.
#
# A tinyprune layer subclasses `Layer`, names its parameters in
# `param_names`, keeps what backward needs in `self._cache`, stores parameter
# gradients with `self.set_grad(name, grad)` (which also respects pruning
# masks) and returns `dx`. That is all `gradcheck`, the optimisers and
# `Chain` need.

# %%
class Scale(Layer):
    """y = x * scale[c] per channel; x and y (N, C, H, W), scale (C,)."""

    param_names = ("scale",)

    def __init__(self, channels, rng=None):
        super().__init__()
        self.scale = (rng or np.random.default_rng()).standard_normal(channels).astype(np.float32)

    def forward(self, x):
        self._cache = x
        return x * self.effective("scale")[None, :, None, None]

    def backward(self, dy):
        x = self._cache
        self.set_grad("scale", (dy * x).sum(axis=(0, 2, 3)))     # sum over everything but C
        return dy * self.effective("scale")[None, :, None, None]


report = check("Scale(3), yours", Scale(3, rng), rng.standard_normal((2, 3, 4, 4)))

# %% [markdown]
# And what a mistake looks like. Forget the sum over the batch (take only
# the first image's contribution) and `gradcheck` points at the tensor that
# is wrong, the scale, while the input's gradient still checks out:

# %%
class ScaleWithABug(Scale):
    def backward(self, dy):
        x = self._cache
        self.set_grad("scale", (dy[0] * x[0]).sum(axis=(1, 2)))   # bug: image 0 only
        return dy * self.effective("scale")[None, :, None, None]


buggy = check("ScaleWithABug(3)", ScaleWithABug(3, rng), rng.standard_normal((2, 3, 4, 4)))

# %% [markdown]
# Exercises:
#
# 1. Give `Scale` a per-channel shift too (`y = s[c] x + t[c]`), derive
#    `dt`, and check it.
# 2. Write a `Square` layer (`y = x^2`, no parameters). Where does
#    `gradcheck` have trouble, if anywhere, and why not at zero?
# 3. Put your layer in a `Chain` after a `Conv2d` and check the whole chain:
#    `Chain` runs the backward passes in reverse order, and the check passes
#    only if every link is right.

# %% [markdown]
# ## The numbers in one place
#
# What the checks found, in one dict (the test suite reads it): the worst
# relative error of every layer checked, and how far BatchNorm's layer is
# from the complex-step derivative of its forward formula.

# %%
results = {
    "worst_error": {name: report.worst for name, report in reports.items()},
    "formula_difference": formula_difference,
    "fresh_start": {gamma: {"beyond": beyond, "first_ratio": ratios[0], "median_ratio": float(np.median(ratios))}
                    for gamma, (beyond, ratios) in starts.items()},   # by BatchNorm gamma
    "figure": OUT / "fresh-gradients.png",
}
