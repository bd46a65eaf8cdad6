"""The tutorial's pipeline, written once: prune, propagate, resize, count, finetune.

The course tutorial takes one MobileNet through five stages:

    baseline      the model as it is
    LevelPrune    the smallest weights of every layer zeroed (unstructured),
                  for comparison: a dense kernel gains nothing from it
    ChannelPrune  the weakest output channels of every convolution zeroed
                  (structured)
    propagated    ``keepprune`` (the masks become plain zeros), then
                  ``prune_propagate`` (the zeros spread to the layers that
                  feed and read the dead channels)
    resized       ``resize``: the dead channels cut out; an ordinary, smaller
                  MobileNet

It counts every stage under the three rules of :mod:`tinyprune.count`,
measures its accuracy, and finetunes the resized model to win back what
pruning cost.  The ``tinyprune`` command, the benchmark and
``tinyprune pretrain --check`` call the functions below, so the order of the
steps lives in one place.  The tutorials (``tutorials/pruning.py``) spell the
steps out one by one instead, since they teach them::

    from tinyprune.pipeline import tutorial_model, tutorial_stages
    stages = tutorial_stages(tutorial_model(), level=0.2, channel_level=0.2)
    stages["resized"].counts["reference"].mults      # multiplies per image
"""

from collections import namedtuple

from .activations import slopehtanh
from .count import RULES, dot_prod_table
from .layers import Conv2d, Dense, DepthwiseConv2d
from .model import TUTORIAL_INPUT, MobileNet
from .propagate import prune_propagate
from .prune import ChannelPrune, LevelPrune, keepprune, prune
from .resize import resize
from .train import trainer

__all__ = ["TUTORIAL_INPUT", "Stage", "ChannelStages", "tutorial_model", "check_tutorial_model",
           "count_rules", "bake_and_propagate", "prune_and_resize", "tutorial_stages", "finetune",
           "layer_labels_by_path"]


Stage = namedtuple("Stage", "label model counts")
Stage.__doc__ = """One stage of the tutorial.

``label`` is how the tutorial names it (``"ChannelPrune(0.2)"``), ``model``
the model after it, ``counts`` its dot products under every rule:
``{rule: DotProdTable}``, each table with one row per layer and the totals in
``.mults`` and ``.adds``.
"""

ChannelStages = namedtuple("ChannelStages", "pruned propagated resized")
ChannelStages.__doc__ = "The three models structured pruning goes through (see :func:`prune_and_resize`)."


def tutorial_model(seed=0):
    """The tutorial's model: ``MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)``, freshly drawn.

    Width 0.25 (a quarter of MobileNet v1's channels), a dense layer of 64
    features, and one logit: "is there a person in the picture?".
    """
    return MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed)


def check_tutorial_model(model, where):
    """ValueError naming ``where`` unless ``model`` takes the tutorial's images and gives one logit.

    The pipeline feeds batches of 96 x 96 RGB images, (N, 3, 96, 96), and
    trains and scores one logit per image, (N, 1): "is there a person?".
    Checked on shapes alone (``output_shape``), so it costs nothing.
    """
    images = (2,) + TUTORIAL_INPUT[1:]
    try:
        out = tuple(model.output_shape(images))
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{where}: the model does not take the tutorial's images, "
                         f"shape (N, 3, 96, 96): {error}") from None
    if out not in ((2,), (2, 1)):
        raise ValueError(f"{where}: for a batch of 2 images the model gives shape {out}; the tutorial "
                         "scores one logit per image, shape (N, 1), as MobileNet(..., nclasses=1)")
    return model


def count_rules(model, input_shape=TUTORIAL_INPUT):
    """``{rule: DotProdTable}``: the dot products of ``model`` under the three counting rules."""
    return {rule: dot_prod_table(model, input_shape, rule) for rule in RULES}


def bake_and_propagate(model):
    """``keepprune``, then ``prune_propagate``: a copy whose zeros are plain values and spread.

    ``keepprune`` comes first because from here on the zeros must be values
    in the arrays, not masks: propagation reads them there, and ``resize``
    cuts out what reads only zeros.
    """
    return prune_propagate(keepprune(model))


def prune_and_resize(model, strategy):
    """Structured pruning end to end: prune, keepprune, prune_propagate, resize.

    ``strategy`` is anything ``prune`` accepts (``ChannelPrune(0.2)``, a
    per-layer list or dict).  Returns the three models along the way as a
    :class:`ChannelStages` ``(pruned, propagated, resized)``; ``model`` is not
    changed.  All three compute the same function (up to float rounding);
    only ``resized`` is smaller.
    """
    pruned = prune(strategy, model)
    propagated = bake_and_propagate(pruned)
    return ChannelStages(pruned, propagated, resize(propagated))


def tutorial_stages(model, level=0.2, channel_level=0.2, input_shape=TUTORIAL_INPUT):
    """The tutorial's five stages of ``model``, each counted under the three rules.

    Returns ``{"baseline", "level", "channel", "propagated", "resized"}`` ->
    :class:`Stage`, in that order.  ``level`` is the ``LevelPrune`` fraction,
    ``channel_level`` the ``ChannelPrune`` fraction; both prune ``model``
    itself, as alternatives.  Counts are for one forward pass on a batch of
    ``input_shape`` (NCHW).  ``model`` is not changed.
    """
    channel = prune_and_resize(model, ChannelPrune(channel_level))
    stages = [("baseline", "baseline", model),
              ("level", f"LevelPrune({level})", prune(LevelPrune(level), model)),
              ("channel", f"ChannelPrune({channel_level})", channel.pruned),
              ("propagated", "propagated", channel.propagated),
              ("resized", "resized", channel.resized)]
    return {key: Stage(label, m, count_rules(m, input_shape)) for key, label, m in stages}


def finetune(model, epochs, data, seed=0, progress=True):
    """Train a copy of ``model`` for ``epochs`` epochs; returns ``(copy, loss of every batch)``.

    ``data`` is ``(train, val)`` as for ``trainer``, which does the work with
    its defaults (Adam at lr 1e-3, batches of 32, augmented images).  The
    copy's ``history`` holds these epochs only, whatever ``model`` went
    through before; the per-batch losses let even a one-epoch run draw a
    curve.
    """
    tuned = model.copy()
    if hasattr(tuned, "history"):
        del tuned.history
    batch_losses = []
    trainer(tuned, epochs, data=data, seed=seed, progress=progress,
            callback=lambda epoch, batch, loss: batch_losses.append(float(loss)))
    return tuned, batch_losses


# ---------------------------------------------------------------------------
# Naming layers and folders (until count.py and common.py have these)
# ---------------------------------------------------------------------------

def layer_labels_by_path(model):
    """``{path: label}`` of the conv and dense layers: ``{"[0][0]": "conv1", "[0][3]": "dw1", ...}``.

    The labels the figures use (``plots.layer_labels``): one counter per
    kind, ``conv`` (a full convolution), ``dw`` (depthwise), ``pw``
    (pointwise, 1 x 1) and ``fc`` (dense), in forward order.  Written here
    without matplotlib so that ``tinyprune count`` need not load it.
    """
    seen, labels = {}, {}
    for path, layer in model.named_layers():
        if isinstance(layer, DepthwiseConv2d):
            kind = "dw"
        elif isinstance(layer, Dense):
            kind = "fc"
        elif isinstance(layer, Conv2d):
            kind = "pw" if layer.kernel == (1, 1) else "conv"
        else:
            continue
        seen[kind] = seen.get(kind, 0) + 1
        labels[path] = f"{kind}{seen[kind]}"
    return labels
