"""Channel criteria: how much does each output channel of a convolution matter?

``ChannelPrune`` zeroes the channels of lowest score; which score is the
question.  The field's answers, side by side::

    magnitude_scores(model)         the L1 norm of the channel's weights (what
                                    ChannelPrune uses by default), or with
                                    magnitude=l2 the L2 norm
    batchnorm_scores(model)         |gamma| of the BatchNorm right after the
                                    conv (network slimming, Liu et al. 2017)
    taylor_scores(model, data)      |sum over the channel of w * dL/dw|: the
                                    first-order change of the loss when the
                                    channel's weights go to zero (Molchanov
                                    et al. 2019)
    random_scores(model, seed)      no information at all: the baseline every
                                    criterion has to beat

Each returns a :class:`ChannelScores`: a dict from layer path (``"[0][3]"``,
as ``model.named_layers()`` writes it) to a (C_out,) float64 array, one
score per output channel, higher = more important, for every Conv2d and
DepthwiseConv2d it can score.  Hand it to ``ChannelPrune(p, scores=...)``
(or to :func:`tinyprune.resize.sort_channels`).  Only the magnitude can be
computed from a weight array alone; the others need the next layer or data,
which is why they are computed here, from the whole model, and passed in.

Scores are read off the model as it is: a copy of it, for Taylor, and only
its weights and BatchNorm scales otherwise; the model is never changed.
"""

import numpy as np

from .common import check_int
from .data import DataLoader, as_dataset
from .layers import BatchNorm2d
from .strategies import CHANNEL_LAYERS, l1
from .train import bce_with_logits
from .module import check_model

__all__ = ["ChannelScores", "magnitude_scores", "batchnorm_scores", "taylor_scores", "random_scores"]


class ChannelScores(dict):
    """``{layer path: (C_out,) float64 scores}``, and the criterion's ``name`` ("taylor").

    A plain dict otherwise; the name only shows in ``repr(ChannelPrune(...))``.
    """

    def __init__(self, name, scores):
        super().__init__(scores)
        self.name = name


def _channel_layers(model, where):
    """``[(path, layer)]`` of the convolutions whose output channels ChannelPrune ranks."""
    check_model(model, where)
    found = [(path, layer) for path, layer in model.named_layers() if isinstance(layer, CHANNEL_LAYERS)]
    if not found:
        raise ValueError(f"{where}: the model has no Conv2d or DepthwiseConv2d to score")
    return found


def _rows(layer):
    """The weight as the forward pass uses it, one row per output channel: (C_out, K) float64."""
    w = layer.effective("weight").astype(np.float64)
    return w.reshape(w.shape[0], -1)


def magnitude_scores(model, magnitude=l1):
    """``magnitude`` of every channel's weights: by default the L1 norm, ``sum_k |w_ck|``.

    ``magnitude`` is a function of a (C_out, K) array, as for
    ``ChannelPrune(p, magnitude=...)`` (:func:`tinyprune.strategies.l1`,
    :func:`~tinyprune.strategies.l2`, or your own).  ``ChannelPrune(p,
    scores=magnitude_scores(model, m))`` prunes what ``ChannelPrune(p, m)``
    prunes; the scores are useful on their own for plots and sorting.
    """
    name = getattr(magnitude, "__name__", "magnitude")
    return ChannelScores(name, {path: np.asarray(magnitude(_rows(layer)), dtype=np.float64)
                                for path, layer in _channel_layers(model, "magnitude_scores")})


def batchnorm_scores(model):
    """``|gamma_c|`` of the BatchNorm2d right after each convolution (network slimming).

    A BatchNorm multiplies its normalised channel c by gamma_c, so a small
    |gamma_c| means the channel reaches the next layer faint whatever its
    weights; Liu et al. (2017) train with an L1 penalty on gamma to make many
    of them small, then prune those.  Convolutions not followed by a
    BatchNorm over the same channels get no entry (``ChannelPrune`` then
    names the layer).  In MobileNet every conv, depthwise ones included, has
    its BatchNorm.
    """
    convs = _channel_layers(model, "batchnorm_scores")
    leaves = [layer for _, layer in model.named_layers()]
    following = {id(layer): after for layer, after in zip(leaves, leaves[1:])}
    scores = {}
    for path, layer in convs:
        bn = following.get(id(layer))
        if isinstance(bn, BatchNorm2d) and bn.channels == layer.weight.shape[0]:
            scores[path] = np.abs(bn.effective("weight").astype(np.float64))
    return ChannelScores("batchnorm", scores)


def taylor_scores(model, data, batches=4, batch_size=32):
    """First-order Taylor importance ``|sum_k w_ck g_ck|``, g from ``batches`` batches of ``data``.

    Setting channel c's weights to zero changes the loss by about
    ``-sum_k w_ck * dL/dw_ck`` (a first-order Taylor expansion around the
    current weights), so the score is the size of that change.  ``g`` is
    the gradient of the mean loss (binary cross-entropy on the logit) over
    the first ``batches`` batches of ``batch_size`` images of ``data``, in
    their stored order and unaugmented: the batches' gradients are
    accumulated, then averaged, *before* the product and the absolute
    value, so the score estimates the change of the loss on those images,
    not the average size of each batch's change.

    ``data``: a data set or an ``(images, labels)`` pair, as for ``trainer``.
    The gradients are taken in eval mode (BatchNorm uses its running
    statistics: the model as it is used), on a copy, so ``model`` and its
    statistics are not changed.  Costs ``batches`` forward and backward passes.
    """
    batches = check_int(batches, "batches", "taylor_scores")
    batch_size = check_int(batch_size, "batch_size", "taylor_scores")
    data = as_dataset(data, "taylor_scores: data")
    if len(data.labels) == 0:
        raise ValueError("taylor_scores: data holds no images; gradients need at least one")
    _channel_layers(model, "taylor_scores")             # a model with convolutions, before copying
    work = model.copy().eval()
    layers = _channel_layers(work, "taylor_scores")
    total = {path: np.zeros(layer.weight.shape) for path, layer in layers}    # float64 sums of dL/dw
    used = 0
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        _, dlogits = bce_with_logits(work(x), y)
        work.backward(dlogits)
        for path, layer in layers:
            total[path] += layer.grads["weight"]
        used += 1
        if used == batches:
            break
    scores = {}
    for path, layer in layers:
        gradient = (total[path] / used).reshape(layer.weight.shape[0], -1)     # (C_out, K)
        scores[path] = np.abs((_rows(layer) * gradient).sum(axis=1))
    return ChannelScores("taylor", scores)


def random_scores(model, seed=0):
    """Uniform random scores in [0, 1), drawn layer by layer in ``named_layers`` order.

    Pruning by them removes channels at random, at the same levels as any
    other criterion: what a criterion gains over this is what it knows.
    The same ``seed`` and architecture give the same scores.
    """
    seed = check_int(seed, "seed", "random_scores", minimum=0)
    rng = np.random.default_rng(seed)
    return ChannelScores("random", {path: rng.random(layer.weight.shape[0])
                                    for path, layer in _channel_layers(model, "random_scores")})
