"""Classic mistakes in the count, data and train exercises, planted one at a time: each must be caught.

Every test below puts one small wrong version of an exercise in place of the
real one, runs that exercise's tests in this process (``pytest -m
ex_<chapter>_<n>`` on its test file, stopping at the first failure) and
asserts that at least one of them fails.

Each mistake is built from the real code: it calls the real function and
bends its input or its result the way the mistake would (a turn the wrong
way is the real map of the negated angle; Adam without bias correction is
the real step's m and v, used raw).  So this file holds no near-solution,
and in a course copy, where the real function is a stub, the wrapped stub
fails the exercise's tests anyway.

A mistake replaces the function wherever it is bound: in its module, in
every module that imported it by name (``from tinyprune.train import
bce_with_logits``), and in the test modules about to run.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyprune import count, train
from tinyprune.data import augment
from tinyprune.optim import Adam

from helpers import assert_caught


# The real functions, taken before any test plants a mistake in their place.
REFERENCE, SPARSE, DENSE = count.reference_counts, count.sparse_counts, count.dense_counts
AFFINE_MAP = augment._augment_matrices
BCE = train.bce_with_logits
ADAM_UPDATE = Adam.update


# ---------------------------------------------------------------------------
# Running an exercise's tests with a mistake in place
# ---------------------------------------------------------------------------

def plant(monkeypatch, owner, name, mistake, files):
    """Put ``mistake`` in place of ``owner.name``: a class's method, or a function wherever it is bound.

    The test modules of ``files`` are imported first, so that a module that
    imported the function by name is among those patched; ``monkeypatch``
    puts everything back after the test.
    """
    if isinstance(owner, type):
        monkeypatch.setattr(owner, name, mistake)
        return
    for file in files:
        importlib.import_module(Path(file).stem)       # the tests folder is on sys.path, as for helpers
    real = getattr(owner, name)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(("tinyprune", "test_")) and getattr(module, name, None) is real:
            monkeypatch.setattr(module, name, mistake)


# ---------------------------------------------------------------------------
# count.1, count.2, count.3: the counting rules
# ---------------------------------------------------------------------------

def _dead(w):
    """(C,) True for the output channels (rows of w) whose weights are all zero."""
    return ~(w != 0).any(axis=1)


def _scattered(w):
    """U: the zero weights outside all-zero rows."""
    return int(np.count_nonzero(w[~_dead(w)] == 0))


def reference_adds_saved_per_scattered_zero(w, patches):
    mults, adds = REFERENCE(w, patches)
    return mults, adds - patches * _scattered(w)


def reference_mults_saved_in_every_patch(w, patches):
    mults, adds = REFERENCE(w, patches)
    return mults - (patches - 1) * _scattered(w), adds


def reference_dead_channels_saved_once(w, patches):
    mults, adds = REFERENCE(w, patches)
    return mults + (patches - 1) * w.shape[1] * int(_dead(w).sum()), adds


def sparse_counting_the_zeros(w, patches):
    mults, adds = SPARSE(w, patches)
    return patches * w.size - mults, adds


def sparse_without_the_minus_one(w, patches):
    mults, adds = SPARSE(w, patches)
    return mults, adds + patches * int((~_dead(w)).sum())


def sparse_minus_one_for_dead_channels_too(w, patches):
    mults, adds = SPARSE(w, patches)
    return mults, adds - patches * int(_dead(w).sum())


def dense_skipping_dead_channels(w, patches):
    return DENSE(w[~_dead(w)], patches)


def dense_k_adds_per_dot_product(w, patches):
    mults, adds = DENSE(w, patches)
    return mults, adds + patches * w.shape[0]


COUNT_MISTAKES = [
    ("count.1", "reference_counts", reference_adds_saved_per_scattered_zero,
     "saves an add per patch for each scattered zero"),
    ("count.1", "reference_counts", reference_mults_saved_in_every_patch,
     "saves a multiply in every patch for each scattered zero (not one in total)"),
    ("count.1", "reference_counts", reference_dead_channels_saved_once,
     "saves a dead channel's multiplies once, like scattered zeros, not in every patch"),
    ("count.2", "sparse_counts", sparse_counting_the_zeros, "counts the zero weights instead of the non-zero ones"),
    ("count.2", "sparse_counts", sparse_without_the_minus_one, "forgets that n products need n - 1 adds"),
    ("count.2", "sparse_counts", sparse_minus_one_for_dead_channels_too,
     "charges an all-zero channel -1 adds instead of nothing"),
    ("count.3", "dense_counts", dense_skipping_dead_channels, "skips all-zero channels"),
    ("count.3", "dense_counts", dense_k_adds_per_dot_product, "counts K adds per dot product instead of K - 1"),
]


@pytest.mark.count
@pytest.mark.parametrize("exercise, name, mistake, what", COUNT_MISTAKES,
                         ids=[f"{row[0]} {row[2].__name__}" for row in COUNT_MISTAKES])
def test_the_counting_rules_tests_catch_the_planted_mistake(monkeypatch, exercise, name, mistake, what):
    plant(monkeypatch, count, name, mistake, ["test_count.py"])
    assert_caught(exercise, ["test_count.py"], f"a {name} that {what}")


# ---------------------------------------------------------------------------
# data.1: the augmentation's affine map
# ---------------------------------------------------------------------------

def map_turning_clockwise(in_shape, out_shape, angles, shifts, zooms, flips):
    return AFFINE_MAP(in_shape, out_shape, -np.asarray(angles), shifts, zooms, flips)


def map_with_the_zoom_inverted(in_shape, out_shape, angles, shifts, zooms, flips):
    return AFFINE_MAP(in_shape, out_shape, angles, shifts, 1 / np.asarray(zooms, dtype=float), flips)


def map_shifting_the_wrong_way(in_shape, out_shape, angles, shifts, zooms, flips):
    return AFFINE_MAP(in_shape, out_shape, angles, -np.asarray(shifts, dtype=float), zooms, flips)


def map_shifting_in_source_pixels(in_shape, out_shape, angles, shifts, zooms, flips):
    matrices = AFFINE_MAP(in_shape, out_shape, angles, np.zeros_like(shifts, dtype=float), zooms, flips)
    matrices[:, :, 2] -= shifts                       # after the zoom and the turn: in the source's pixels
    return matrices


def map_mirroring_after_the_turn(in_shape, out_shape, angles, shifts, zooms, flips):
    # F R(a) = R(-a) F: mirroring after the turn is mirroring before a turn the other way.
    return AFFINE_MAP(in_shape, out_shape, np.where(flips, -np.asarray(angles), angles), shifts, zooms, flips)


def map_centred_at_half_the_size(in_shape, out_shape, angles, shifts, zooms, flips):
    # Centre H/2 instead of (H - 1)/2: the real map of a picture one pixel larger.
    return AFFINE_MAP(tuple(np.add(in_shape, 1)), tuple(np.add(out_shape, 1)), angles, shifts, zooms, flips)


DATA_MISTAKES = [
    (map_turning_clockwise, "turns the picture clockwise for a positive angle"),
    (map_with_the_zoom_inverted, "shrinks for a zoom above 1"),
    (map_shifting_the_wrong_way, "shifts up and left for a positive shift"),
    (map_shifting_in_source_pixels, "applies the shift in the source's pixels, before zoom and turn"),
    (map_mirroring_after_the_turn, "mirrors after turning instead of before"),
    (map_centred_at_half_the_size, "puts the centre of H pixels at H/2 instead of (H - 1)/2"),
]


@pytest.mark.data
@pytest.mark.parametrize("mistake, what", DATA_MISTAKES, ids=[row[0].__name__ for row in DATA_MISTAKES])
def test_the_affine_maps_tests_catch_the_planted_mistake(monkeypatch, mistake, what):
    plant(monkeypatch, augment, "_augment_matrices", mistake, ["test_data.py"])
    assert_caught("data.1", ["test_data.py"], f"an _augment_matrices that {what}")


# ---------------------------------------------------------------------------
# train.1: binary cross-entropy; train.2: one Adam step
# ---------------------------------------------------------------------------

def bce_through_log_sigmoid(logits, labels):
    _, dlogits = BCE(logits, labels)                # the checks, and the right gradient
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(z.shape)
    with np.errstate(all="ignore"):
        p = 1 / (1 + np.exp(-z))
        return float(np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))), dlogits


def bce_gradient_of_the_sum(logits, labels):
    loss, dlogits = BCE(logits, labels)
    return loss, dlogits * len(dlogits)


def bce_gradient_with_the_wrong_sign(logits, labels):
    loss, dlogits = BCE(logits, labels)
    return loss, -dlogits


def adam_without_bias_correction(self, key, p, g):
    _, state = ADAM_UPDATE(self, key, p, g)
    return (p - self.lr * state["m"] / (np.sqrt(state["v"]) + self.eps)).astype(p.dtype), state


def adam_with_the_betas_swapped(self, key, p, g):
    betas, self.betas = self.betas, self.betas[::-1]
    try:
        return ADAM_UPDATE(self, key, p, g)
    finally:
        self.betas = betas


def adam_with_eps_inside_the_root(self, key, p, g):
    _, state = ADAM_UPDATE(self, key, p, g)
    t, (beta1, beta2) = self.t + 1, self.betas
    m_hat, v_hat = state["m"] / (1 - beta1 ** t), state["v"] / (1 - beta2 ** t)
    return (p - self.lr * m_hat / np.sqrt(v_hat + self.eps)).astype(p.dtype), state


def adam_counting_steps_from_zero(self, key, p, g):
    self.t -= 1
    try:
        with np.errstate(all="ignore"):
            return ADAM_UPDATE(self, key, p, g)
    finally:
        self.t += 1


TRAIN_MISTAKES = [
    ("train.1", train, "bce_with_logits", bce_through_log_sigmoid,
     "takes the log of the sigmoid, which is -inf once the sigmoid rounds to 0 or 1"),
    ("train.1", train, "bce_with_logits", bce_gradient_of_the_sum, "forgets the mean's 1/N in the gradient"),
    ("train.1", train, "bce_with_logits", bce_gradient_with_the_wrong_sign, "gives y - sigmoid(z), the wrong sign"),
    ("train.2", Adam, "update", adam_without_bias_correction, "forgets the bias correction"),
    ("train.2", Adam, "update", adam_with_the_betas_swapped, "averages g with beta2 and g**2 with beta1"),
    ("train.2", Adam, "update", adam_with_eps_inside_the_root, "adds eps under the square root"),
    ("train.2", Adam, "update", adam_counting_steps_from_zero, "numbers the first step 0"),
]


@pytest.mark.train
@pytest.mark.parametrize("exercise, owner, name, mistake, what", TRAIN_MISTAKES,
                         ids=[f"{row[0]} {row[3].__name__}" for row in TRAIN_MISTAKES])
def test_the_loss_and_adam_tests_catch_the_planted_mistake(monkeypatch, exercise, owner, name, mistake, what):
    plant(monkeypatch, owner, name, mistake, ["test_train.py"])
    assert_caught(exercise, ["test_train.py"], f"a {name} that {what}")
