"""Helpers shared by the prune, propagate and resize chapters' tests.

Two kinds of helper let each chapter's tests run in a course copy where
other chapters are exercises (``tinyprune assignment``), whose functions
then raise ``NotImplementedError("Exercise <id>: ...")``:

* reference computations of the models those chapters start from, written
  here without the library's code for them: ``channel_pruned`` (what
  ``ChannelPrune`` and ``keepprune`` make of a fresh model) and
  ``dead_channel_mobilenet`` (the zeros ``prune_propagate`` leaves after
  it).  ``test_prune.py`` and ``test_propagate.py`` check them against the
  library;
* ``waits_for``, around a call into another exercise's code that a test
  only passes through: while that exercise is a stub, the test is skipped
  rather than failed, so it is graded with the exercises it checks.

And ``plant``, ``planted`` and ``assert_caught``, with which ``test_mistakes_*.py``
check that each exercise's tests catch its classic mistakes.
"""

import contextlib
import inspect
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinyprune import BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Layer, MobileNet, slopehtanh


def give_statistics(model, rng, x, statistics=True):
    """Random gamma and beta, then running statistics of one train-mode batch ``x``.

    Momentum 1 for that batch makes the running statistics the batch's own,
    so eval mode is as well scaled as train mode and every running mean is
    non-zero: a zero channel then leaves a BatchNorm as a non-zero constant.
    ``statistics=False`` stops after gamma and beta (no forward pass: a
    train-mode 3x3 convolution unfolds with im2col, the kernels chapter's).
    """
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            C = layer.channels
            layer.weight[:] = rng.uniform(0.5, 1.5, C)
            layer.bias[:] = rng.normal(0.0, 0.5, C)
            layer.momentum = 1.0
    if statistics:
        model.train()(x)
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.momentum = 0.1
    return model


def run(model, x, training):
    """The model's output in the given mode, on a copy (train mode updates running statistics)."""
    return model.copy().train(training)(x)


def relative_error(a, b):
    """max |a - b| over max |b|: the error relative to the size of the output."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def snapshot(model):
    """Copies of every parameter, buffer and mask."""
    masks = {key: mask.copy() for key, mask in model.mask_dict().items()}
    return model.state_dict(), masks


def assert_same_snapshot(a, b):
    (state_a, masks_a), (state_b, masks_b) = a, b
    assert state_a.keys() == state_b.keys() and masks_a.keys() == masks_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    for key in masks_a:
        np.testing.assert_array_equal(masks_a[key], masks_b[key], err_msg=key)


def trained_looking_mobilenet(seed, statistics=True):
    """The tutorial's MobileNet in float64, with random gamma, beta and running statistics.

    ``seed`` draws both the weights and the statistics; ``statistics=False``
    leaves the running statistics at 0 and 1 (``give_statistics``).
    """
    rng = np.random.default_rng(seed)
    model = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed).to(np.float64)
    return give_statistics(model, rng, rng.uniform(0, 1, (4, 3, 32, 32)), statistics)


def assert_returns_a_new_model_and_leaves_its_argument_alone(function, model):
    before = snapshot(model)
    result = function(model)
    assert result is not model
    assert_same_snapshot(before, snapshot(model))


def assert_same_function(model, reference, x, tolerance):
    """``model`` computes what ``reference`` computes on ``x``, in eval and in train mode."""
    for training in (False, True):
        assert relative_error(run(model, x, training), run(reference, x, training)) < tolerance, \
            "train mode" if training else "eval mode"


def assert_float32_costs_no_more_than_rounding(transform, model, x):
    """``transform`` run in float32 adds no more error than float32 itself makes.

    ``model`` and ``x`` are float64.  A random network amplifies rounding,
    so its own float32 output is the bar: the transformed float32 model
    must stay within three times that error of the exact float64 output.
    """
    model32 = model.copy().to(np.float32)
    transformed32 = transform(model32)
    x32 = x.astype(np.float32)
    for training in (False, True):
        exact = run(model, x, training)
        own = relative_error(run(model32, x32, training), exact)
        assert relative_error(run(transformed32, x32, training), exact) < 3 * own + 1e-6


class ChannelScale(Layer):
    """A user's per-channel layer, y[:, j] = scale[j] * x[:, j]: it only declares its channels."""

    param_names = ("scale",)
    mixes_channels = False
    out_channel_arrays = {"scale": 0}

    def __init__(self, channels):
        super().__init__()
        self.scale = np.linspace(0.5, 1.5, channels)

    def forward(self, x):
        return x * self.effective("scale")[:, None, None]


# ---------------------------------------------------------------------------
# Another exercise's code on the way
# ---------------------------------------------------------------------------

# The chapters whose exercises a training step runs: the layers' backward
# passes, the convolution's unfolding, the loss and Adam, the augmentation.
TRAINING = ("layers", "kernels", "train", "data")


def assert_twins_agree(module, name, args):
    """``module.name`` (compiled) and ``module._name`` (its plain reading) do the same to ``args``.

    Each runs on its own copies of the array arguments: return values must
    be equal, arrays written to equal to 1e-14, and the call must have done
    something (returned a value or changed an array).
    """
    compiled_args = [np.copy(a) if isinstance(a, np.ndarray) else a for a in args]
    plain_args = [np.copy(a) if isinstance(a, np.ndarray) else a for a in args]
    compiled = getattr(module, name)(*compiled_args)
    by_hand = getattr(module, "_" + name)(*plain_args)
    if compiled is not None:
        np.testing.assert_array_equal(compiled, by_hand)
    for a, b in zip(compiled_args, plain_args):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    assert any(isinstance(a, np.ndarray) and not np.array_equal(a, before)
               for a, before in zip(compiled_args, args)) or compiled is not None


@contextlib.contextmanager
def waits_for(*names):
    """Skip the test while the code it runs is a stub of the exercises or chapters ``names``.

    ``with waits_for("count"): mults = compute_dot_prods(...)`` in a test of
    the prune chapter: in a copy where counting is an exercise still to do,
    the stub raises ``NotImplementedError("Exercise count.1: ...")`` and the
    test is skipped, saying what it waits for; a stub of any other exercise
    (the one the test checks) still fails it.  ``names`` are exercise ids
    (``"prune.4"``) or chapters (``"count"``).
    """
    try:
        yield
    except NotImplementedError as error:
        message = str(error)
        if any(message.startswith(f"Exercise {name}.") or message.startswith(f"Exercise {name}:")
               for name in names):
            pytest.skip(f"waits for {message}")
        raise


# ---------------------------------------------------------------------------
# Channel-pruned models, made without the prune chapter's code
# ---------------------------------------------------------------------------

CONVOLUTIONS = (Conv2d, DepthwiseConv2d)


def weakest_channels(w, level):
    """The ``C - ceil((1 - level) C)`` output channels of ``w`` (C, ...) of smallest L1 norm, ties by index.

    The channels ``ChannelPrune(level)`` prunes in a weight that carries no mask yet.
    """
    C = w.shape[0]
    norms = np.abs(w).reshape(C, -1).sum(axis=1)
    return np.sort(np.argsort(norms, kind="stable")[:C - math.ceil((1 - level) * C)])


def mask_channels(model, chosen, masks=True):
    """A copy of ``model`` with the output channels ``chosen[path]`` of each named conv pruned.

    Pruned as ``prune`` prunes them with a channel strategy: the conv's
    weight rows, its bias (if it has one), and the gamma and beta of a
    BatchNorm2d right after it are zero at those channels.  With ``masks``
    each of those arrays also gets a keep-mask, False at the channels (every
    named conv and its BatchNorm get one, even for no channel); without,
    the zeros are plain, as ``keepprune`` leaves them.
    """
    result = model.copy()
    leaves = list(result.named_layers())
    following = {path: leaves[i + 1][1] for i, (path, _) in enumerate(leaves[:-1])}
    layers = dict(leaves)
    for path, channels in chosen.items():
        arrays = [(layers[path], "weight"), (layers[path], "bias")]
        if isinstance(following.get(path), BatchNorm2d):
            arrays += [(following[path], "weight"), (following[path], "bias")]
        for layer, name in arrays:
            value = getattr(layer, name, None)
            if value is None:
                continue
            value[channels] = 0
            if masks:
                keep = np.ones(value.shape, dtype=bool)
                keep[channels] = False
                layer.masks[name] = keep
    return result


def channel_pruned(model, level, masks=True):
    """What ``prune(ChannelPrune(level), model)`` makes of a model without masks; ``masks=False``: then keepprune.

    Every Conv2d and DepthwiseConv2d loses its ``weakest_channels``, and
    each channel's bias and following BatchNorm go with it
    (``mask_channels``).  The library's own pruning is checked against this
    in ``test_prune.py``.
    """
    chosen = {path: weakest_channels(layer.weight, level) for path, layer in model.named_layers()
              if isinstance(layer, CONVOLUTIONS)}
    return mask_channels(model, chosen, masks)


def level_pruned(model, level):
    """What ``prune(LevelPrune(level), model)`` makes of a model without masks, built without it.

    In every Conv2d, DepthwiseConv2d and Dense weight the ``n - ceil((1 -
    level) n)`` entries of smallest magnitude (ties by position) are zeroed
    and masked.  The plots and counting tests use it, so they run where
    LevelPrune is an exercise still to do; ``test_prune.py`` checks
    LevelPrune itself.
    """
    result = model.copy()
    for _, layer in result.named_layers():
        if isinstance(layer, CONVOLUTIONS + (Dense,)):
            w = layer.weight
            order = np.argsort(np.abs(w).ravel(), kind="stable")
            keep = np.ones(w.size, dtype=bool)
            keep[order[:w.size - math.ceil((1 - level) * w.size)]] = False
            layer.masks["weight"] = keep.reshape(w.shape)
            w[~layer.masks["weight"]] = 0
    return result


def mobilenet_groups():
    """MobileNet's 14 channel groups: ``(producer, depthwise or None, consumer)`` paths.

    Group 0 is made by the full conv [0][0], group g >= 1 by the pointwise
    conv [0][6g]; each but the last is filtered by the depthwise conv
    [0][6g+3] and read by the next pointwise conv [0][6g+6]; the last,
    made by [0][78], is read by the dense layer [1][2] after pooling.  A
    BatchNorm follows every conv, at the conv's path + 1.
    """
    groups = [(f"[0][{6 * g}]", f"[0][{6 * g + 3}]", f"[0][{6 * g + 6}]") for g in range(13)]
    return groups + [("[0][78]", None, "[1][2]")]


def kill_channels(model, group, channels, masks=False):
    """Zero ``channels`` along one group of ``model`` (in place): what propagation leaves of dead channels.

    ``group`` is ``(producer, depthwise or None, consumer)`` paths; the
    producer and the depthwise conv are each followed by a BatchNorm2d.
    Every trained array that makes the channels -- the producer's rows and
    bias, the depthwise filters, both BatchNorms' gamma and beta (not their
    running statistics) -- and the consumer's input slices (axis 1 of a
    conv or dense weight; after pooling a dense layer reads one column per
    channel) are set to zero; with ``masks`` also masked, in a keep-mask
    made for the array if it has none.
    """
    layers = dict(model.named_layers())
    producer, depthwise, consumer = group
    makers = [producer, _next_path(producer)]
    if depthwise is not None:
        makers += [depthwise, _next_path(depthwise)]
    zeroed = [(layers[path], name, (channels,)) for path in makers for name in ("weight", "bias")]
    zeroed.append((layers[consumer], "weight", (slice(None), channels)))
    for layer, name, index in zeroed:
        value = getattr(layer, name, None)
        if value is None:
            continue
        value[index] = 0
        if masks:
            keep = layer.masks.setdefault(name, np.ones(value.shape, dtype=bool))
            keep[index] = False


def _next_path(path):
    """``"[0][6]"`` -> ``"[0][7]"``: the path of the layer after ``path`` in the same chain."""
    head, last = path.rsplit("[", 1)
    return f"{head}[{int(last[:-1]) + 1}]"


def dead_channel_mobilenet(model, level, masks=False):
    """A copy of MobileNet ``model`` with the zeros that ChannelPrune(level) and prune_propagate leave.

    In each group (``mobilenet_groups``) the channels ChannelPrune would
    prune in the producer or in the depthwise conv after it -- their union
    -- are zeroed everywhere from the producer to the consumer's input
    slices (``kill_channels``).  What propagation also does, folding the
    constants of dead channels into the next BatchNorm's running mean, is
    left out: the model simply computes without those channels, which is
    all resize needs.  ``test_propagate.py`` checks the zeros against
    ``prune_propagate``.
    """
    layers = dict(model.named_layers())          # ranked before anything is zeroed, as ChannelPrune ranks
    dead = []
    for producer, depthwise, _ in mobilenet_groups():
        channels = set(weakest_channels(layers[producer].weight, level).tolist())
        if depthwise is not None:
            channels |= set(weakest_channels(layers[depthwise].weight, level).tolist())
        dead.append(np.array(sorted(channels), dtype=int))
    result = model.copy()
    for group, channels in zip(mobilenet_groups(), dead):
        kill_channels(result, group, channels, masks)
    return result


# ---------------------------------------------------------------------------
# Planted mistakes
# ---------------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent


def plant(monkeypatch, function, *edits):
    """Make ``function`` run its own source with ``edits``, (old, new) pairs of text: a planted mistake.

    The edited source is compiled in the function's module and its code
    swapped into the function object itself (undone by ``monkeypatch``), so
    every caller runs the mistake, whichever name it imported the function
    by.  Each ``old`` must occur in the source, or the mistake no longer
    fits the code and the test says so.  Where the function is an exercise
    stub (a course copy) there is no answer to plant a mistake in: skipped.
    """
    source = textwrap.dedent(inspect.getsource(function))
    if 'raise NotImplementedError("Exercise ' in source:
        pytest.skip(f"{function.__qualname__} is an exercise stub in this copy")
    for old, new in edits:
        assert old in source, f"the planted mistake expects {old!r} in {function.__qualname__}: update it"
        source = source.replace(old, new)
    namespace = {}
    exec(compile(source, f"<{function.__qualname__}, with a planted mistake>", "exec"),
         function.__globals__, namespace)
    monkeypatch.setattr(function, "__code__", namespace[function.__name__].__code__)


class _Outcomes:
    """A pytest plugin that notes which tests of a run failed, passed, were skipped or could not be collected."""

    def __init__(self):
        self.failed, self.passed, self.skipped, self.broken = [], [], [], []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.skipped:
            self.skipped.append(report.nodeid)
        elif report.passed and report.when == "call":
            self.passed.append(report.nodeid)

    def pytest_collectreport(self, report):
        if report.failed:
            self.broken.append(report.nodeid)


def planted(mistakes):
    """Rows ``(exercise, function, edits, what it does wrong)`` as pytest parameters named after them."""
    return [pytest.param(*row, id=f"{row[0]} {row[3].split(',')[0]}") for row in mistakes]


def assert_caught(exercise, files, mistake):
    """Run the tests in ``files`` that carry ``exercise``'s marker, in this process: one must fail.

    In this process, so that they run the mistake ``plant`` put in; through
    ``pytest.main`` rather than pytest's ``pytester``, whose inline runs
    unload the modules imported during the run, Numba's lazily loaded
    registries among them (loading those twice is an error).  The run
    stops at the first failure (``-x``), so a caught mistake costs little
    time.  If none fails but some were skipped (they wait for other
    exercises, stubs in this copy), the test is skipped: it cannot tell.
    """
    marker = "ex_" + exercise.replace(".", "_")
    outcomes = _Outcomes()
    pytest.main([*(str(TESTS / name) for name in files), "-m", marker, "-x", "-q", "-p", "no:cacheprovider",
                 "-W", "ignore::pytest.PytestUnknownMarkWarning"], plugins=[outcomes])
    assert not outcomes.broken, f"{exercise}: the tests could not be collected: {outcomes.broken}"
    if outcomes.failed:
        return
    if outcomes.skipped:
        pytest.skip(f"{len(outcomes.skipped)} tests of {exercise} wait for exercises that are stubs here")
    assert outcomes.passed, f"no test of {exercise} ran in {', '.join(files)} (marker {marker})"
    pytest.fail(f"{exercise}: {mistake}, and all {len(outcomes.passed)} of the exercise's tests pass",
                pytrace=False)


# ---------------------------------------------------------------------------
# The eval-mode fast path (test_fused*.py): its two layouts of a tile, and
# the plain layers' output to hold it against.
# ---------------------------------------------------------------------------

def twins(module, name):
    """A compiled function of ``module`` and the plain Python function it was compiled from."""
    return [getattr(module, name), getattr(module, "_" + name)]


def plain(model, x):
    """``model``'s eval-mode output through its plain layers."""
    model = model.copy().eval()
    model.fast_eval = False
    return model(x)


def planes(x):
    """(N, C, H, W) -> the planes layout (C, N, H, W)."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


def pixels(x):
    """(N, C, H, W) -> the pixels layout (N, H, W, C)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
