"""The course's exercises, declared once: what ``tinyprune assignment`` cuts and ``tinyprune grade`` scores.

An exercise is a region of the real source between two comment lines,
nbgrader's fences, indented like the code they enclose::

    def backward(self, dy):
        x = self._cache
        ### BEGIN SOLUTION
        ...the answer...
        ### END SOLUTION

Which exercise a fence belongs to:

* a bare BEGIN line belongs to the exercise whose ``places``
  list the function it stands in (``file:Class.method`` or ``file:function``);
* a BEGIN line followed by an id (``prune.3``) names its exercise; that form is needed
  where no function encloses the fence (a tutorial cell) or where two
  exercises share one function.

Every place of an exercise must hold at least one fence, and every fence in
``FENCED_FOLDERS`` must belong to exactly one exercise; ``tinyprune
assignment`` refuses to cut otherwise, so a table and a source that disagree
never hand out an answer.

The first place is the function the student writes.  More places are the
same computation written again elsewhere, typically the plain-Python twin of
a Numba kernel (``tinyprune/kernels.py:_depthwise_backward``); the student
copy cuts them too, and compiles no twin of a cut kernel (see
``tinyprune.tools.fences``).

``depends`` names the chapters or exercises whose code the exercise's tests
run: cutting those as well makes this exercise's tests fail too.  A chapter
is a pytest marker (``pytest -m prune``); each exercise has its own marker,
``ex_<chapter>_<n>`` (``pytest -m ex_layers_2``), which its tests carry and
``tinyprune grade`` scores by.

This module imports nothing from tinyprune, so ``tinyprune assignment
--table`` can load a table like it from any tree (the tests load one from a
miniature course under ``tests/kit_fixture``).
"""

from collections import namedtuple

__all__ = ["Exercise", "CHAPTERS", "FENCED_FOLDERS", "EXERCISES", "marker"]

# The chapters, in the order a reader follows the pipeline; each is a pytest marker.
CHAPTERS = ("layers", "kernels", "prune", "propagate", "resize", "count", "data", "train", "plots",
            "tutorials")

# The folders whose Python files may hold fences; tests are never cut.
FENCED_FOLDERS = ("tinyprune", "tutorials")

Exercise = namedtuple("Exercise", "id title places depends", defaults=((),))
Exercise.__doc__ = """One exercise of the course.

``id``: ``<chapter>.<n>``, e.g. ``"layers.2"``; ``title``: a few words, shown
in the stub's message; ``places``: ``"file:function"`` strings, the function
the student writes first, then its twins; ``depends``: ids or chapter names
whose code the exercise's tests use.
"""


def marker(exercise_id):
    """The pytest marker of an exercise: ``"layers.2"`` -> ``"ex_layers_2"``."""
    return "ex_" + exercise_id.replace(".", "_")


# The lead completes this table once the fences are in the source (at least 15
# exercises, in pipeline order); these are the ones whose functions exist today.
EXERCISES = (
    Exercise("layers.1", "the dense layer's backward pass", ("tinyprune/layers.py:Dense.backward",)),
    Exercise("layers.2", "slopehtanh's backward pass",
             ("tinyprune/activations.py:SlopeHTanh.backward", "tinyprune/kernels.py:_slopehtanh_backward",
              "tinyprune/activations.py:slopehtanh_derivative")),
    Exercise("layers.3", "BatchNorm's backward pass in train mode",
             ("tinyprune/layers.py:BatchNorm2d.backward", "tinyprune/kernels.py:_batchnorm_train_backward")),
    # The convolution's tests run its forward pass (im2col) and its backward pass ends in col2im.
    Exercise("layers.4", "the convolution's backward pass", ("tinyprune/conv.py:Conv2d.backward",),
             depends=("kernels.1", "kernels.2")),
    Exercise("layers.5", "the depthwise convolution's backward pass",
             ("tinyprune/conv.py:DepthwiseConv2d.backward", "tinyprune/kernels.py:_depthwise_backward")),
    Exercise("kernels.1", "unfolding receptive fields into columns (im2col)", ("tinyprune/kernels.py:_im2col",)),
    Exercise("kernels.2", "folding columns back onto the image (col2im)", ("tinyprune/kernels.py:_col2im",)),
    Exercise("prune.1", "LevelPrune: zero the smallest weights by magnitude",
             ("tinyprune/strategies.py:LevelPrune.__call__",)),
    Exercise("prune.2", "ThresholdPrune: zero the weights below a magnitude",
             ("tinyprune/strategies.py:ThresholdPrune.__call__",)),
    Exercise("prune.3", "ChannelPrune: zero the weakest output channels",
             ("tinyprune/strategies.py:ChannelPrune.__call__",
              "tinyprune/strategies.py:ChannelPrune._keep_channels")),
    Exercise("prune.4", "masking a pruned channel's bias and BatchNorm",
             ("tinyprune/prune.py:_mask_channel_parameters",)),
    Exercise("prune.5", "keepprune: bake the masks into the weights", ("tinyprune/prune.py:keepprune",)),
    # The propagate and resize tests check both modes: a train-mode 3x3 convolution unfolds with im2col.
    Exercise("propagate.1", "the forward sweep: zero and fold constant channels",
             ("tinyprune/propagate.py:_forward",), depends=("kernels",)),
    Exercise("propagate.2", "the backward sweep: zero what nobody reads",
             ("tinyprune/propagate.py:_backward",), depends=("kernels",)),
    Exercise("resize.1", "cutting a segment's dead channels out", ("tinyprune/resize.py:_slice_segment",),
             depends=("kernels",)),
    Exercise("count.1", "the reference counting rule", ("tinyprune/count.py:reference_counts",)),
    Exercise("count.2", "the sparse counting rule", ("tinyprune/count.py:sparse_counts",)),
    Exercise("count.3", "the dense counting rule", ("tinyprune/count.py:dense_counts",)),
    Exercise("data.1", "the augmentation's affine map", ("tinyprune/data/augment.py:_augment_matrices",)),
    Exercise("train.1", "binary cross-entropy and its gradient", ("tinyprune/train.py:bce_with_logits",)),
    Exercise("train.2", "one Adam step", ("tinyprune/optim.py:Adam.update",)),
)
