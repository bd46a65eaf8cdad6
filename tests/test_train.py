"""Chapter 8: the loss, the optimisers, the schedule, the trainer and evaluation.

Two exercises are tested here: binary cross-entropy and its gradient
(``bce_with_logits``, ``-m ex_train_1``) and one Adam step (``Adam.update``,
``-m ex_train_2``), both on plain arrays and on a Dense layer whose gradient
is set by hand, so they need no other chapter.  The trainer's tests run
whole training steps, through every chapter's code (``TRAINING``): in a
course copy where any of it is still an exercise they are skipped
(``waits_for``), not failed.
"""

import copy
import io
import math
import os
import signal
import sys
import warnings

import numpy as np
import pytest

from tinyprune import MobileNet, slopehtanh
from tinyprune.data import to_float
from tinyprune.layers import BatchNorm2d, Chain, Conv2d, Dense, Flatten, GlobalMeanPool, ReLU
from tinyprune.optim import SGD, Adam, DivergenceError, StepLR
from tinyprune.train import accuracy, bce_with_logits, evaluate, trainer

from helpers import TRAINING, assert_same_snapshot, snapshot, waits_for

pytestmark = pytest.mark.train



# ---------------------------------------------------------------------------
# Fixtures: a tiny learnable set and a small MobileNet (32 x 32 input)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_set():
    """16 images (3, 32, 32) uint8; label 1 images are brighter, so the task is learnable."""
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 8)
    images = (rng.integers(0, 156, (16, 3, 32, 32)) + 100 * labels[:, None, None, None]).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def small_mobilenet():
    """Copy before use: tests train it."""
    return MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0)


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


# ---------------------------------------------------------------------------
# Loss and accuracy
# ---------------------------------------------------------------------------

@pytest.mark.ex_train_1
def test_bce_equals_the_textbook_formula():
    z = np.array([-2.0, 0.0, 3.0, 0.5])
    y = np.array([0, 1, 1, 0])
    want = np.mean([-math.log(1 - _sigmoid(-2.0)), -math.log(_sigmoid(0.0)),
                    -math.log(_sigmoid(3.0)), -math.log(1 - _sigmoid(0.5))])
    want_dz = [(_sigmoid(-2.0) - 0) / 4, (0.5 - 1) / 4, (_sigmoid(3.0) - 1) / 4, (_sigmoid(0.5) - 0) / 4]
    loss, dz = bce_with_logits(z, y)
    assert loss == pytest.approx(want, rel=1e-12), \
        f"bce_with_logits(z={z.tolist()}, y={y.tolist()}): loss {loss!r}, expected the mean of -y log p - " \
        f"(1 - y) log(1 - p) with p = sigmoid(z), {want!r}"
    assert dz == pytest.approx(want_dz, rel=1e-12), \
        f"bce_with_logits(z={z.tolist()}, y={y.tolist()}): dlogits {dz.tolist()}, expected (sigmoid(z) - y) / N " \
        f"= {want_dz} (N = 4 images)"


@pytest.mark.ex_train_1
def test_bce_of_a_batch_is_the_mean_of_its_images_and_its_gradient_a_share_of_theirs():
    # The loss of N images is the mean of their losses; so each image's gradient is 1/N of its own.
    z, y = np.array([[1.5], [-0.5], [4.0]]), np.array([1, 1, 0])
    loss, dz = bce_with_logits(z, y)
    alone = [bce_with_logits(z[i], y[i:i + 1]) for i in range(3)]
    want_loss, want_dz = np.mean([l for l, _ in alone]), np.array([[g[0] / 3] for _, g in alone])
    assert loss == pytest.approx(want_loss, rel=1e-12), \
        f"bce_with_logits(z={z.ravel().tolist()}, y={y.tolist()}) gave loss {loss!r}; the mean of the three " \
        f"images' own losses is {want_loss!r}"
    assert dz == pytest.approx(want_dz, rel=1e-12), \
        f"bce_with_logits(z={z.ravel().tolist()}, y={y.tolist()}) gave dlogits {dz.ravel().tolist()}; each " \
        f"image's own gradient divided by N = 3 is {want_dz.ravel().tolist()}"


@pytest.mark.ex_train_1
@pytest.mark.parametrize("z", [-3.0, -0.25, 0.0, 2.0])
@pytest.mark.parametrize("y", [0.25, 0.5, 0.9])
def test_bce_with_soft_labels_is_the_cross_entropy_of_two_probabilities(z, y):
    loss, dz = bce_with_logits(np.array([z]), np.array([y]))
    p = _sigmoid(z)
    want = -y * math.log(p) - (1 - y) * math.log(1 - p)
    assert loss == pytest.approx(want, rel=1e-12), \
        f"bce_with_logits(z=[{z}], y=[{y}]): loss {loss!r}, expected {want!r}"
    assert dz[0] == pytest.approx(p - y, rel=1e-12), \
        f"bce_with_logits(z=[{z}], y=[{y}]): dlogits {dz[0]!r}, expected sigmoid(z) - y = {p - y!r}"


@pytest.mark.ex_train_1
def test_bce_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(7, 1))
    y = rng.integers(0, 2, size=7)
    _, dz = bce_with_logits(z, y)
    eps = 1e-6
    numeric = np.empty_like(z)
    for i in range(z.shape[0]):
        up, down = z.copy(), z.copy()
        up[i, 0] += eps
        down[i, 0] -= eps
        numeric[i, 0] = (bce_with_logits(up, y)[0] - bce_with_logits(down, y)[0]) / (2 * eps)
    assert np.abs(dz - numeric).max() < 1e-9, \
        f"bce_with_logits(z={z.ravel().round(3).tolist()}, y={y.tolist()}): dlogits {dz.ravel().tolist()}, " \
        f"the loss's central differences {numeric.ravel().tolist()}"


@pytest.mark.parametrize("z", [200.0, -200.0, 1000.0, -1000.0])
@pytest.mark.parametrize("y", [0, 1])
@pytest.mark.ex_train_1
def test_bce_is_finite_and_exact_for_huge_logits(z, y):
    with np.errstate(all="ignore"):                  # an unstable formula's warnings: the asserts say what is wrong
        loss, dz = bce_with_logits(np.array([[z]]), np.array([y]))
    # Right: loss 0 (to 1e-80), gradient 0.  Wrong by |z|: loss |z|, gradient +-1.
    right = (z > 0) == (y == 1)
    want_loss, want_dz = (0.0, 0.0) if right else (abs(z), 1.0 if z > 0 else -1.0)
    where = f"bce_with_logits(z=[[{z}]], y=[{y}])"
    assert np.isfinite(loss) and np.isfinite(dz).all(), \
        f"{where}: loss {loss!r}, dlogits {dz.ravel().tolist()}; both must be finite (log of a sigmoid that " \
        f"rounded to 0 or 1? exp of a large positive number?)"
    assert loss == pytest.approx(want_loss, abs=1e-80), f"{where}: loss {loss!r}, expected {want_loss}"
    assert dz[0, 0] == pytest.approx(want_dz, abs=1e-80), f"{where}: dlogits {dz[0, 0]!r}, expected {want_dz}"


@pytest.mark.ex_train_1
def test_bce_keeps_the_shape_and_dtype_of_the_logits():
    z = np.zeros((5, 1), np.float32)
    loss, dz = bce_with_logits(z, np.ones(5))
    assert loss == pytest.approx(math.log(2))
    assert dz.shape == (5, 1) and dz.dtype == np.float32


def test_bce_rejects_mismatched_shapes_naming_both():
    with pytest.raises(ValueError, match=r"bce_with_logits.*logits \(4, 2\).*labels \(4,\)"):
        bce_with_logits(np.zeros((4, 2)), np.zeros(4))


def test_accuracy_counts_positive_logits_as_class_one():
    # predictions 0, 1, 1, 0 (a logit of exactly 0 is class 0) vs labels 0, 1, 0, 0
    assert accuracy(np.array([[-1.0], [2.0], [0.5], [0.0]]), np.array([0, 1, 0, 0])) == 0.75


@pytest.mark.ex_train_1
def test_labels_shaped_like_the_logits_give_the_same_loss_gradient_and_accuracy():
    # PyTorch's BCEWithLogitsLoss wants labels shaped like the logits, (N, 1).
    z = np.array([[-2.0], [0.5], [3.0]])
    flat, column = np.array([0, 1, 0]), np.array([[0], [1], [0]])
    loss, dz = bce_with_logits(z, flat)
    loss_col, dz_col = bce_with_logits(z, column)
    assert loss_col == loss and np.array_equal(dz_col, dz) and dz_col.shape == (3, 1)
    assert accuracy(z, column) == accuracy(z, flat) == 2 / 3


def test_labels_of_shape_n_1_need_logits_of_shape_n_1():
    with pytest.raises(ValueError, match=r"bce_with_logits: .*labels of shape \(N,\) or the logits' shape, "
                                         r"got logits \(3,\) and labels \(3, 1\)"):
        bce_with_logits(np.zeros(3), np.zeros((3, 1)))


@pytest.mark.parametrize("function", [bce_with_logits, accuracy])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_refused_not_counted(function, bad):
    # Before: accuracy([nan] * 4, [0] * 4) was 1.0, since nan > 0 is False.
    logits = np.array([[0.5], [bad], [-1.0], [0.0]])
    with pytest.raises(ValueError, match=rf"{function.__name__}: logits must be finite, got {bad} "
                                         r"at index \(1, 0\)"):
        function(logits, np.zeros(4))


@pytest.mark.parametrize("function", [bce_with_logits, accuracy])
@pytest.mark.parametrize("label", [5, -1, 1.5, np.nan, np.inf])
def test_labels_outside_0_1_are_refused(function, label):
    labels = np.array([0.0, 1.0, label])
    with pytest.raises(ValueError, match=rf"{function.__name__}: labels must lie in \[0, 1\] "
                                         rf"\(binary cross-entropy\), got {float(label)} at index 2"):
        function(np.zeros(3), labels)


@pytest.mark.parametrize("function", [bce_with_logits, accuracy])
def test_an_empty_batch_is_refused_rather_than_averaged_to_nan(function):
    with pytest.raises(ValueError, match=rf"{function.__name__}: expected logits of shape \(N,\) or \(N, 1\), "
                                         r"N >= 1.*got logits \(0,\) and labels \(0,\)"):
        function(np.zeros(0), np.zeros(0))


@pytest.mark.parametrize("logits,labels,what", [
    ("abc", np.zeros(3), r"logits must be an array of real numbers, got str of dtype <U3"),
    (None, np.zeros(3), r"logits must be an array of real numbers, got NoneType of dtype object"),
    (np.zeros(3), ["a", "b", "c"], r"labels must be an array of real numbers, got list of dtype <U1"),
    (np.zeros(2), [[0], [1, 1]], r"labels must be an array of real numbers, got list$"),
    (np.zeros(2, complex), np.zeros(2), r"logits must be an array of real numbers, got ndarray of dtype complex128"),
])
def test_logits_and_labels_that_are_not_numbers_raise_type_error(logits, labels, what):
    with pytest.raises(TypeError, match=r"bce_with_logits: " + what):
        bce_with_logits(logits, labels)


# ---------------------------------------------------------------------------
# Optimisers, by hand
# ---------------------------------------------------------------------------

def _dense_with(weight, grad):
    """A Dense(2, 1) in float64 without bias, weight and gradient set by hand."""
    layer = Dense(2, 1, bias=False, dtype=np.float64)
    layer.weight = np.array([weight], dtype=np.float64)
    layer.grads["weight"] = np.array([grad], dtype=np.float64)
    return layer


@pytest.mark.ex_train_2
def test_adam_two_steps_match_the_hand_computation():
    layer = _dense_with([1.0, 1.0], [0.5, -2.0])
    opt = Adam(layer, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    # Step 1: m = 0.1 g, v = 0.001 g^2; bias correction gives m_hat = g, v_hat = g^2,
    # so w -= 0.1 * g / (|g| + 1e-8): [1 - 0.1 * 0.5/0.50000001, 1 + 0.1 * 2/2.00000001].
    opt.step()
    assert layer.weight[0] == pytest.approx([0.900000002, 1.0999999995], abs=1e-15), \
        f"Adam(lr=0.1) from w = [1, 1] with g = [0.5, -2]: after step 1 w = {layer.weight[0].tolist()}, " \
        "expected [0.900000002, 1.0999999995]"
    # Step 2 with g = [1, 1]:
    #   m = 0.9 m + 0.1 g        = [0.145, -0.08]
    #   v = 0.999 v + 0.001 g^2  = [0.00124975, 0.004996]
    #   m_hat = m / (1 - 0.9^2)  = [0.763157894..., -0.421052631...]
    #   v_hat = v / (1 - 0.999^2) = [0.625187593..., 2.499249624...]
    #   w -= 0.1 * m_hat / (sqrt(v_hat) + 1e-8)
    layer.grads["weight"] = np.array([[1.0, 1.0]])
    opt.step()
    where = "Adam(lr=0.1, betas=(0.9, 0.999)), step 2 with g = [1, 1] after g = [0.5, -2]"
    assert opt.m["weight"][0] == pytest.approx([0.145, -0.08], rel=1e-12), \
        f"{where}: m = {opt.m['weight'][0].tolist()}, expected [0.145, -0.08]"
    assert opt.v["weight"][0] == pytest.approx([0.00124975, 0.004996], rel=1e-12), \
        f"{where}: v = {opt.v['weight'][0].tolist()}, expected [0.00124975, 0.004996]"
    assert layer.weight[0] == pytest.approx([0.8034818006385094, 1.1266337032975684], rel=1e-12), \
        f"{where}: w = {layer.weight[0].tolist()}, expected [0.8034818006385094, 1.1266337032975684]"


@pytest.mark.ex_train_2
def test_adam_keeps_running_means_with_beta1_for_the_gradient_and_beta2_for_its_square():
    layer = _dense_with([0.0, 0.0], [2.0, -4.0])
    opt = Adam(layer, lr=0.01, betas=(0.5, 0.75))
    opt.step()
    # From m = v = 0: m = (1 - 0.5) g = [1, -2], v = (1 - 0.75) g^2 = [1, 4].
    m, v = opt.m["weight"][0].tolist(), opt.v["weight"][0].tolist()
    assert (m, v) == ([1.0, -2.0], [1.0, 4.0]), \
        f"Adam(betas=(0.5, 0.75)), one step with g = [2, -4]: m = {m}, v = {v}; expected m = (1 - beta1) g = " \
        f"[1, -2] and v = (1 - beta2) g**2 = [1, 4]"


@pytest.mark.ex_train_2
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.5), (0.0, 0.99)])
def test_adams_first_step_moves_every_weight_by_lr_whatever_the_betas(betas):
    # Bias correction makes m_hat = g and v_hat = g**2 on step 1, so each weight moves by
    # lr * g / (|g| + eps): lr against the gradient's sign (to 1e-7 for |g| >= 0.1).
    for g in ([0.1, -3.0], [-250.0, 0.5]):
        layer = _dense_with([0.0, 0.0], g)
        Adam(layer, lr=0.01, betas=betas).step()
        moved, want = layer.weight[0].tolist(), (-0.01 * np.sign(g)).tolist()
        assert moved == pytest.approx(want, rel=1e-6), \
            f"Adam(lr=0.01, betas={betas}), first step from w = 0 with g = {g}: w = {moved}; expected " \
            f"-lr * sign(g) = {want} (is m or v divided by 1 - beta**t?)"


@pytest.mark.ex_train_2
def test_adam_adds_eps_after_the_square_root():
    # g = 1e-6: sqrt(v_hat) = 1e-6, so the step is lr * 1e-6 / (1e-6 + 1e-8) = lr / 1.01.
    # With eps under the square root it would be lr * 1e-6 / sqrt(1e-12 + 1e-8), about lr / 100.
    layer = _dense_with([0.0, 0.0], [1e-6, -1e-6])
    Adam(layer, lr=0.1, eps=1e-8).step()
    want = [-0.1 / 1.01, 0.1 / 1.01]
    assert layer.weight[0].tolist() == pytest.approx(want, rel=1e-9), \
        f"Adam(lr=0.1, eps=1e-8), first step from w = 0 with g = [1e-6, -1e-6]: w = {layer.weight[0].tolist()}, " \
        f"expected -0.1 * g / (sqrt(g**2) + 1e-8) = {want}"


@pytest.mark.ex_train_2
def test_adam_keeps_float32_parameters_and_state_in_float32():
    layer = Dense(2, 1, bias=False)                      # float32
    layer.grads["weight"] = np.array([[0.5, -0.25]], np.float32)
    opt = Adam(layer, lr=np.float64(0.1), betas=(np.float64(0.9), np.float64(0.999)))
    opt.step()
    dtypes = (layer.weight.dtype, opt.m["weight"].dtype, opt.v["weight"].dtype)
    assert dtypes == (np.float32,) * 3, f"Adam on a float32 weight: weight, m and v are {dtypes}, expected float32"


def test_sgd_two_steps_match_the_hand_computation():
    layer = _dense_with([1.0, -2.0], [0.5, 0.5])
    opt = SGD(layer, lr=0.1, momentum=0.9, weight_decay=0.01)
    # Step 1: d = g + 0.01 w = [0.51, 0.48]; the buffer starts as d; w -= 0.1 d.
    opt.step()
    assert layer.weight[0] == pytest.approx([0.949, -2.048], rel=1e-12)
    # Step 2, same g: d = [0.5 + 0.00949, 0.5 - 0.02048] = [0.50949, 0.47952],
    # b = 0.9 [0.51, 0.48] + d = [0.96849, 0.91152], w -= 0.1 b.
    opt.step()
    assert opt.buffers["weight"][0] == pytest.approx([0.96849, 0.91152], rel=1e-12)
    assert layer.weight[0] == pytest.approx([0.852151, -2.139152], rel=1e-12)


def test_sgd_without_momentum_is_plain_gradient_descent():
    layer = _dense_with([1.0, -2.0], [0.5, -0.25])
    SGD(layer, lr=0.2, momentum=0).step()
    assert layer.weight[0] == pytest.approx([0.9, -1.95], rel=1e-12)


def test_optimizer_refuses_to_step_without_gradients():
    with pytest.raises(RuntimeError, match="no gradient for 'weight'"):
        Adam(Dense(2, 1, bias=False)).step()


def test_optimizer_notices_a_resized_parameter():
    layer = _dense_with([1.0, 1.0], [0.5, 0.5])
    opt = SGD(layer, lr=0.1)
    layer.weight = layer.weight[:, :1].copy()
    with pytest.raises(ValueError, match=r"'weight' changed shape from \(1, 2\) to \(1, 1\)"):
        opt.step()


def test_optimizer_refuses_a_gradient_of_the_wrong_shape_before_moving_anything():
    layer = _dense_with([1.0, 1.0], [0.5, 0.5])
    layer.grads["weight"] = np.ones((2, 1))
    with pytest.raises(ValueError, match=r"SGD.step: the gradient of 'weight' has shape \(2, 1\), "
                                         r"the parameter \(1, 2\)"):
        SGD(layer, lr=0.1).step()
    assert layer.weight.tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize("make,error,message", [
    (lambda m: Adam(m, lr=0), ValueError, r"Adam: lr must be a finite number in \(0, inf\], got 0.0"),
    (lambda m: SGD(m, lr=float("nan")), ValueError, r"SGD: lr must be a finite number in \(0, inf\], got nan"),
    (lambda m: Adam(m, lr="0.1"), TypeError, r"Adam: lr must be a number, got '0.1'"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\] must be a finite number in \[0, 1\), got 1.0"),
    (lambda m: Adam(m, eps=-1e-8), ValueError, r"Adam: eps must be a finite number in \(0, inf\], got -1e-08"),
    # 0 / (sqrt(0) + 0) is NaN: a weight whose gradient is exactly 0 (a dead ReLU's) would become NaN.
    (lambda m: Adam(m, eps=0), ValueError, r"Adam: eps must be a finite number in \(0, inf\], got 0.0"),
    (lambda m: SGD(m, 0.1, momentum=1), ValueError, r"SGD: momentum must be a finite number in \[0, 1\), got 1.0"),
    (lambda m: SGD(m, 0.1, weight_decay=-0.1), ValueError, r"SGD: weight_decay must be a finite number in "
                                                            r"\[0, inf\], got -0.1"),
    (lambda m: StepLR(SGD(m, 0.1), [4, 0]), ValueError, r"StepLR: milestones\[1\] must be an integer >= 1, got 0"),
    (lambda m: StepLR(SGD(m, 0.1), [4], gamma=0), ValueError, r"StepLR: gamma must be a finite number in "
                                                               r"\(0, inf\], got 0.0"),
    (lambda m: SGD(m, 0.1, weight_decay=float("inf")), ValueError, r"SGD: weight_decay must be a finite number "
                                                                   r"in \[0, inf\], got inf"),
    (lambda m: Adam(m, betas=0.9), TypeError, r"Adam: betas must be a pair \(beta1, beta2\) such as \(0.9, 0.999\), "
                                              r"got 0.9"),
    (lambda m: Adam(None), TypeError, r"Adam: expected a model \(a Layer or Chain\), got NoneType"),
    (lambda m: StepLR(SGD(m, 0.1), 8), TypeError, r"StepLR: milestones must be a sequence of epoch numbers such "
                                                  r"as \(8,\), got 8"),
    (lambda m: StepLR(SGD(m, 0.1), "8"), TypeError, r"StepLR: milestones must be a sequence .*, got '8'"),
    (lambda m: StepLR("SGD", [8]), TypeError, r"StepLR: optimizer must be an optimiser such as Adam\(model\), "
                                              r"got str"),
    # 0.1 * 1e300 ** 2 overflows, and 0.1 * 1e-300 ** 2 is 0: the rate must stay finite and positive.
    (lambda m: StepLR(SGD(m, 0.1), [1, 2], gamma=1e300), ValueError, r"StepLR: gamma 1e\+300 at 2 milestone\(s\) "
                                                                     r"takes the learning rate from 0.1 to inf"),
    (lambda m: StepLR(SGD(m, 0.1), [1, 2], gamma=1e-300), ValueError, r"StepLR: .* to 0.0; it must stay finite "
                                                                      r"and positive"),
], ids=["lr 0", "lr nan", "lr string", "beta2 1", "eps negative", "eps 0", "momentum 1", "weight_decay negative",
        "milestone 0", "gamma 0", "weight_decay inf", "betas not a pair", "no model", "milestones an int",
        "milestones a string", "StepLR without an optimiser", "gamma overflows the lr", "gamma underflows the lr"])
def test_bad_optimiser_arguments_raise_naming_the_class_and_argument(make, error, message):
    with pytest.raises(error, match=message):
        make(Dense(2, 1))


@pytest.mark.ex_train_2
def test_numpy_numbers_are_accepted_as_numbers():
    # Adam(m, lr=np.int64(1)) was once refused as "not a positive number".
    by_numpy, by_python = _dense_with([1.0, -1.0], [0.5, 0.25]), _dense_with([1.0, -1.0], [0.5, 0.25])
    Adam(by_numpy, lr=np.int64(1), betas=(np.float32(0.5), 0.9)).step()
    Adam(by_python, lr=1.0, betas=(0.5, 0.9)).step()
    assert np.array_equal(by_numpy.weight, by_python.weight)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
@pytest.mark.parametrize("make_optimizer,second_gradient,result", [
    (lambda m: SGD(m, lr=1e38, momentum=0.9), [10.0, 10.0], "-inf"),        # lr * gradient overflows
    (lambda m: SGD(m, lr=0.1, momentum=0.9), [np.inf, 1.0], "-inf"),       # an overflowed backward pass
    pytest.param(lambda m: Adam(m, lr=0.1), [np.inf, 1.0], "nan", marks=pytest.mark.ex_train_2),  # inf / inf
    pytest.param(lambda m: Adam(m, lr=0.1), [np.nan, 1.0], "nan", marks=pytest.mark.ex_train_2),
], ids=["SGD lr 1e38", "SGD inf gradient", "Adam inf gradient", "Adam nan gradient"])
def test_a_step_that_would_make_a_weight_non_finite_changes_nothing(make_optimizer, second_gradient, result):
    layer = Dense(2, 1, bias=False)                     # float32: largest finite value 3.4e38
    layer.weight[:] = [[1.0, -1.0]]
    layer.grads["weight"] = np.array([[0.5, -0.5]], np.float32)
    opt = make_optimizer(layer)
    opt.step()                                          # a finite first step, so there is state to keep
    state = ("m", "v", "t") if isinstance(opt, Adam) else ("buffers",)
    before = layer.weight.copy(), copy.deepcopy({name: getattr(opt, name) for name in state})
    layer.grads["weight"] = np.array([second_gradient], np.float32)
    with pytest.raises(DivergenceError, match=rf"{type(opt).__name__}.step at lr .*: the update would make the "
                                              rf"parameter 'weight' non-finite \({result} at index \(0, 0\)\); "
                                              r"nothing was changed"):
        opt.step()
    assert np.array_equal(layer.weight, before[0])
    for name in state:
        assert repr(getattr(opt, name)) == repr(before[1][name]), name


@pytest.mark.parametrize("make_optimizer", [pytest.param(lambda m: Adam(m, lr=0.1), marks=pytest.mark.ex_train_2),
                                            lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.1)],
                         ids=["Adam", "SGD with weight decay"])
@pytest.mark.parametrize("stored", [np.nan, np.inf])
def test_a_masked_entry_is_exactly_zero_after_a_step_whatever_was_stored_there(make_optimizer, stored):
    # NaN x 0 and inf x 0 are NaN: a mask must select, not multiply.
    masked, plain = _dense_with([1.0, stored], [0.5, -2.0]), _dense_with([1.0, 3.0], [0.5, -2.0])
    masked.masks["weight"] = np.array([[True, False]])
    opt_masked, opt_plain = make_optimizer(masked), make_optimizer(plain)
    for _ in range(3):
        opt_masked.step()
        opt_plain.step()
    assert masked.weight[0, 1] == 0.0 and not np.signbit(masked.weight[0, 1])
    assert masked.weight[0, 0] == plain.weight[0, 0]    # the kept weight moves as if alone


@pytest.mark.parametrize("make_optimizer", [pytest.param(lambda m: Adam(m, lr=0.05), marks=pytest.mark.ex_train_2),
                                            lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.1)],
                         ids=["Adam", "SGD"])
@waits_for("layers", "kernels", "train.1")
def test_masked_weights_stay_exactly_zero(make_optimizer):
    rng = np.random.default_rng(0)
    model = Chain(Conv2d(3, 4, 3, pad=1, rng=rng, dtype=np.float64), BatchNorm2d(4, dtype=np.float64),
                  ReLU(), GlobalMeanPool(), Flatten(), Dense(4, 1, rng=rng, dtype=np.float64))
    conv, dense = model[0], model[5]
    conv.masks["weight"] = rng.random(conv.weight.shape) > 0.5
    dense.masks["weight"] = np.array([[True, False, True, False]])
    # The raw weights under the masks are still non-zero: the optimiser must zero them.
    assert (conv.weight[~conv.masks["weight"]] != 0).all()
    opt = make_optimizer(model)
    x = rng.random((6, 3, 5, 5))
    y = np.array([0, 1, 0, 1, 1, 0])
    for _ in range(25):
        _, dz = bce_with_logits(model(x), y)
        model.backward(dz)
        opt.step()
    assert (conv.weight[~conv.masks["weight"]] == 0.0).all()
    assert (dense.weight[0, [1, 3]] == 0.0).all()
    assert (conv.weight[conv.masks["weight"]] != 0).all()   # the kept ones did train


@waits_for(*TRAINING)
def test_loss_falls_on_a_tiny_set(tiny_set, small_mobilenet):
    images, labels = tiny_set
    model = small_mobilenet.copy()
    opt = Adam(model, lr=1e-3)
    x, y = to_float(images), labels
    losses = []
    for _ in range(30):
        loss, dz = bce_with_logits(model(x), y)
        model.backward(dz)
        opt.step()
        losses.append(loss)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------

def test_step_schedule_multiplies_the_lr_at_each_milestone():
    opt = SGD(Dense(2, 1), lr=1.0)
    schedule = StepLR(opt, milestones=[2, 4], gamma=0.1)
    seen = []
    for _ in range(6):
        seen.append(opt.lr)
        schedule.step()
    assert seen == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


# ---------------------------------------------------------------------------
# Trainer and evaluate
# ---------------------------------------------------------------------------

@waits_for(*TRAINING)
def test_trainer_records_one_history_entry_per_epoch(tiny_set, small_mobilenet):
    model = small_mobilenet.copy()
    out = trainer(model, 2, data=(tiny_set, tiny_set), batch_size=8, augment=False, progress=False,
                  milestones=(1,), gamma=0.5)
    history = out.history
    assert out is model and len(history) == 2
    for field in history.fields:
        assert len(getattr(history, field)) == 2
    assert history.lr == pytest.approx([1e-3, 5e-4])
    assert all(0 <= a <= 1 for a in history.train_accuracy + history.val_accuracy)
    assert all(s > 0 for s in history.seconds)
    assert history.images_per_second[0] == pytest.approx(16 / history.seconds[0])
    assert not history.interrupted
    # The recorded validation figures are what evaluate gives now.
    assert evaluate(model, tiny_set) == pytest.approx((history.val_loss[-1], history.val_accuracy[-1]))


@waits_for(*TRAINING)
def test_trainer_draws_a_progress_bar_on_stderr(tiny_set, small_mobilenet, capsys):
    trainer(small_mobilenet.copy(), 1, data=(tiny_set, tiny_set), batch_size=8, augment=False)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "2/2" in err and "img/s" in err and "val loss" in err


def test_training_and_validation_images_of_different_sizes_get_a_warning(tiny_set, small_mobilenet):
    images, labels = tiny_set                                   # 32 x 32
    with pytest.warns(UserWarning, match=r"trainer: the training images are 32x32 but the validation images are "
                                         r"16x16: the model would be validated on pictures of another size"):
        with waits_for(*TRAINING):      # inside: pytest.warns reads any other error as a missing warning
            trainer(small_mobilenet.copy(), 1, data=(tiny_set, (images[:, :, :16, :16], labels)), batch_size=8,
                    augment=False, progress=False)


def test_augmentation_that_changes_the_size_gets_a_warning_naming_augment(small_mobilenet):
    # The augmentation's window is 96 x 96: a 128 x 128 picture is cropped for training, not for validation.
    images = np.random.default_rng(0).integers(0, 256, (8, 3, 128, 128), dtype=np.uint8)
    labels = np.arange(8) % 2
    with pytest.warns(UserWarning, match=r"augment=True turns the 128x128 training images into 96x96 but the "
                                         r"validation images are 128x128.*; pass augment=False, or 96x96 images"):
        with waits_for(*TRAINING):      # inside: pytest.warns reads any other error as a missing warning
            trainer(small_mobilenet.copy(), 1, data=((images, labels), (images, labels)), progress=False)


@waits_for(*TRAINING)
def test_training_on_96_by_96_images_with_augmentation_gives_no_warning(small_mobilenet):
    images = np.random.default_rng(0).integers(0, 256, (8, 3, 96, 96), dtype=np.uint8)
    labels = np.arange(8) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer(small_mobilenet.copy(), 1, data=((images, labels), (images, labels)), progress=False)


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as sys.stderr does in an interactive shell."""

    def isatty(self):
        return True


@waits_for(*TRAINING)
def test_progress_into_a_log_file_is_one_plain_line_per_epoch(tiny_set, small_mobilenet, tmp_path, monkeypatch):
    log = tmp_path / "train.log"
    with open(log, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        trainer(small_mobilenet.copy(), 3, data=(tiny_set, tiny_set), batch_size=4, augment=False)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3 and text.endswith("\n")
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"epoch {epoch}/3 [") and " 4/4 loss " in line and " | val loss " in line, line


@waits_for(*TRAINING)
def test_progress_into_a_string_buffer_has_no_carriage_return(tiny_set, small_mobilenet, monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    trainer(small_mobilenet.copy(), 2, data=(tiny_set, tiny_set), batch_size=4, augment=False)
    text = buffer.getvalue()
    assert "\r" not in text and len(text.splitlines()) == 2


class _NotebookStream(io.StringIO):
    """Stands for ipykernel's output stream: a Jupyter notebook redraws on \\r, yet isatty() is False."""

    __module__ = "ipykernel.iostream"

    def isatty(self):
        return False


@pytest.mark.parametrize("stream", [_Terminal, _NotebookStream], ids=["terminal", "notebook"])
@waits_for(*TRAINING)
def test_progress_on_a_terminal_or_in_a_notebook_is_redrawn_in_place(tiny_set, small_mobilenet, monkeypatch,
                                                                      stream):
    terminal = stream()
    monkeypatch.setattr(sys, "stderr", terminal)
    trainer(small_mobilenet.copy(), 2, data=(tiny_set, tiny_set), batch_size=4, augment=False)
    text = terminal.getvalue()
    assert text.count("\n") == 2                       # one line per epoch on screen
    assert text.count("\r") >= 2                       # each redrawn at least once, at its last batch
    assert text.split("\n")[0].split("\r")[-1].startswith("epoch 1/2 [########################] 4/4 loss ")


@waits_for(*TRAINING)
def test_ctrl_c_stops_after_the_current_batch(tiny_set, small_mobilenet):
    model = small_mobilenet.copy()
    before = model.state_dict()
    handler_before = signal.getsignal(signal.SIGINT)
    calls = []

    def press_ctrl_c(epoch, batch, loss):
        calls.append((epoch, batch))
        if (epoch, batch) == (1, 0):
            os.kill(os.getpid(), signal.SIGINT)

    trainer(model, 5, data=(tiny_set, tiny_set), batch_size=4, augment=False, progress=False,
            callback=press_ctrl_c)
    # Epoch 0 ran its 4 batches, epoch 1 stopped after its first; no epoch 2.
    assert calls == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    history = model.history
    assert history.interrupted and len(history) == 2
    assert not math.isnan(history.val_accuracy[0]) and math.isnan(history.val_accuracy[1])
    assert not np.array_equal(model.state_dict()["0.0.weight"], before["0.0.weight"])
    assert signal.getsignal(signal.SIGINT) is handler_before


@waits_for("kernels", "train")
def test_evaluate_restores_the_previous_mode(tiny_set, small_mobilenet):
    model = small_mobilenet.copy()
    model.train()
    evaluate(model, tiny_set)
    assert model.training and all(layer.training for _, layer in model.named_layers())
    model.eval()
    evaluate(model, tiny_set)
    assert not model.training


@waits_for("kernels", "train")
def test_evaluate_is_eval_mode_loss_and_accuracy(tiny_set, small_mobilenet):
    images, labels = tiny_set
    model = small_mobilenet.copy().eval()
    logits = model(to_float(images))
    loss, acc = evaluate(model.train(), tiny_set, batch_size=5)   # 5 does not divide 16
    assert loss == pytest.approx(bce_with_logits(logits, labels)[0], rel=1e-5)
    assert acc == accuracy(logits, labels)


@waits_for(*TRAINING)
def test_trainer_rejects_bad_tuple_data_naming_the_argument(tiny_set, small_mobilenet):
    images, labels = tiny_set
    model = small_mobilenet.copy()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"data\[0\] \(the training set\).*16 images but 15 labels"):
        trainer(model, 1, data=((images, labels[:15]), tiny_set), progress=False)
    with pytest.raises(ValueError, match=r"data\[1\] \(the validation set\).*rank 4"):
        trainer(model, 1, data=(tiny_set, (images[0], labels)), progress=False)
    with pytest.raises(ValueError, match=r"data\[0\].*model\[0\]\[0\].*3 input channels, got 1"):
        trainer(model, 1, data=((images[:, :1], labels), tiny_set), augment=False, progress=False)
    with pytest.raises(TypeError, match=r"data must be a pair \(train, val\)"):
        trainer(model, 1, data=tiny_set[0], progress=False)
    with pytest.raises(ValueError, match=r"evaluate: data.*labels must be 0 or 1"):
        evaluate(model, (images, labels + 1))
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(epochs=-1), ValueError, r"trainer: epochs must be an integer >= 0, got -1"),
    (dict(epochs=1.5), TypeError, r"trainer: epochs must be an integer >= 0, got 1.5"),
    (dict(batch_size=0), ValueError, r"trainer: batch_size must be an integer >= 1, got 0"),
    # Checked before training, not after the first epoch when validation starts:
    (dict(val_batch_size=0), ValueError, r"trainer: val_batch_size must be an integer >= 1, got 0"),
    (dict(optimizer=Adam(Dense(2, 1))), ValueError, r"trainer: the optimizer is bound to a different model"),
])
@waits_for(*TRAINING)
def test_trainer_rejects_bad_numbers_naming_the_argument_before_training(tiny_set, small_mobilenet, kwargs,
                                                                         error, message):
    model = small_mobilenet.copy()
    before = model.state_dict()
    args = dict(epochs=1, data=(tiny_set, tiny_set), augment=False, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        trainer(model, **args)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not hasattr(model, "history")


def _untouched(model):
    """What a refused call must leave as it was: parameters, statistics, masks, modes, no history."""
    modes = [layer.training for _, layer in model.named_layers()] + [model.training]
    return snapshot(model), modes, getattr(model, "history", None)


def _assert_untouched(model, before):
    assert_same_snapshot(_untouched(model)[0], before[0])
    assert _untouched(model)[1:] == before[1:]


def _returns_a_string(model, lr):
    return "not an optimiser"


@pytest.mark.parametrize("arguments,error,message", [
    (lambda images, labels: dict(seed="a"), TypeError, r"trainer: seed must be an integer >= 0, got 'a'"),
    (lambda images, labels: dict(seed=-1), ValueError, r"trainer: seed must be an integer >= 0, got -1"),
    (lambda images, labels: dict(optimizer="adam"), TypeError, r"trainer: optimizer must be None \(Adam\), an "
                                                               r"optimiser class such as Adam or SGD.*got 'adam'"),
    (lambda images, labels: dict(optimizer=_returns_a_string), TypeError, r"trainer: optimizer\(model, lr=lr\) "
                                                                          r"must return an optimiser.*got str"),
    (lambda images, labels: dict(lr=float("nan")), ValueError, r"trainer: Adam: lr must be a finite number"),
    (lambda images, labels: dict(lr=-1, optimizer=SGD), ValueError, r"trainer: SGD: lr must be a finite number"),
    (lambda images, labels: dict(milestones=3), TypeError, r"trainer: StepLR: milestones must be a sequence"),
    (lambda images, labels: dict(milestones=(0,)), ValueError, r"trainer: StepLR: milestones\[0\] must be an "
                                                               r"integer >= 1, got 0"),
    (lambda images, labels: dict(gamma="0.1"), TypeError, r"trainer: StepLR: gamma must be a number, got '0.1'"),
    (lambda images, labels: dict(augment="no"), TypeError, r"trainer: augment must be True or False, got 'no'"),
    (lambda images, labels: dict(progress=None), TypeError, r"trainer: progress must be True or False, got None"),
    (lambda images, labels: dict(callback=5), TypeError, r"trainer: callback must be None or a function "
                                                         r"callback\(epoch, batch, loss\), got 5"),
    (lambda images, labels: dict(data=(images, labels)), TypeError, r"trainer: data\[0\] \(the training set\): "
                                                                    r".*got ndarray"),
    (lambda images, labels: dict(data={"train": (images, labels)}), TypeError, r"trainer: data must be a pair "
                                                                               r"\(train, val\), got dict"),
    (lambda images, labels: dict(data=((images[:0], labels[:0]), (images, labels))), ValueError,
     r"trainer: data\[0\] \(the training set\) holds no images"),
    (lambda images, labels: dict(data=((images, labels), (images[:0], labels[:0]))), ValueError,
     r"trainer: data\[1\] \(the validation set\) holds no images"),
    # 9 images in batches of 8 leave a last batch of one, whose 1 x 1 maps BatchNorm cannot normalise:
    # refused before the first batch, not after eight images of training.
    (lambda images, labels: dict(data=((images[:9], labels[:9]), (images, labels)), batch_size=8), ValueError,
     r"trainer: data\[0\] \(the training set\): 9 images in batches of 8 give a batch of 1 that cannot be "
     r"trained on: model\[0\]\[70\]: train-mode BatchNorm2d needs more than one value per channel"),
], ids=["seed a", "seed -1", "optimizer 'adam'", "optimizer returns a str", "lr nan", "lr -1 for SGD",
        "milestones an int", "milestone 0", "gamma a string", "augment a string", "progress None",
        "callback not callable", "data one pair", "data a dict", "empty training set", "empty validation set",
        "a last batch of one"])
@waits_for(*TRAINING)
def test_trainer_refuses_bad_arguments_naming_them_before_touching_the_model(tiny_set, small_mobilenet, arguments,
                                                                              error, message):
    model = small_mobilenet.copy().eval()                # trainer would switch it to train mode
    before = _untouched(model)
    args = dict(epochs=1, data=(tiny_set, tiny_set), augment=False, progress=False)
    args.update(arguments(*tiny_set))
    with pytest.raises(error, match=message):
        trainer(model, **args)
    _assert_untouched(model, before)


@pytest.mark.parametrize("function", [trainer, evaluate])
def test_trainer_and_evaluate_refuse_a_model_that_is_not_one(tiny_set, function):
    with pytest.raises(TypeError, match=rf"{function.__name__}: expected a model \(a Layer or Chain\), got NoneType"):
        function(None, 1) if function is trainer else function(None, tiny_set)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
@pytest.mark.parametrize("lr,what", [
    # A MobileNet's BatchNorms see the runaway first: every conv feeds one.
    (1e6, r"BatchNorm2d\(\d+\): the batch's statistics are not finite in float32"),
    (1e10, r"BatchNorm2d\(\d+\): the batch's statistics are not finite in float32"),
    (1e37, r"SGD.step at lr 1e\+37: the update would make the parameter '0.0.weight' non-finite"),
], ids=["nan logit", "infinite statistic", "infinite weight"])
@waits_for(*TRAINING)
def test_a_diverging_run_stops_naming_the_batch_and_keeps_the_last_finite_weights(tiny_set, lr, what):
    # Before: SGD at lr 1e6 trained on with NaN losses and reported a validation accuracy of 0.5.
    # Flux's start (gamma = 1) is the model these three ways to diverge were found on: its chaotic
    # first-layer gradient overflows '0.0.weight' at lr 1e37 in the very first step.
    model = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0, init="flux")
    after_each_batch = [snapshot(model)]
    with pytest.raises(DivergenceError, match=r"trainer: epoch 1/3, batch [1-4]/4: " + what + r".*; the model is "
                                              r"left as it was before this batch \(is the learning rate"):
        trainer(model, 3, optimizer=SGD, lr=lr, data=(tiny_set, tiny_set), batch_size=4, augment=False,
                progress=False, callback=lambda epoch, batch, loss: after_each_batch.append(snapshot(model)))
    assert_same_snapshot(snapshot(model), after_each_batch[-1])
    assert all(np.isfinite(value).all() for value in model.state_dict().values())


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
@waits_for(*TRAINING)
def test_a_model_without_batchnorm_stops_at_its_first_non_finite_logit(tiny_set):
    images, labels = tiny_set
    model = Chain(Flatten(), Dense(int(np.prod(images.shape[1:])), 1))
    with pytest.raises(DivergenceError, match=r"trainer: epoch \d+/50, batch \d+/4: a logit is not finite"):
        trainer(model, 50, optimizer=SGD, lr=1e37, data=(tiny_set, tiny_set), batch_size=4, augment=False,
                progress=False)
    assert all(np.isfinite(value).all() for value in model.state_dict().values())


@waits_for(*TRAINING)
def test_non_finite_validation_logits_stop_the_run_naming_the_epoch(tiny_set, small_mobilenet):
    model = small_mobilenet.copy()

    def spoil_after_the_last_batch(epoch, batch, loss):
        if batch == 1:
            model[1][4].bias[:] = np.nan                # the last Dense: every logit becomes NaN

    with pytest.raises(DivergenceError, match=r"trainer: epoch 1/2, validation: evaluate: among the logits of "
                                              r"data images 0..15, one is not finite"):
        trainer(model, 2, data=(tiny_set, tiny_set), batch_size=8, augment=False, progress=False,
                callback=spoil_after_the_last_batch)
    assert len(model.history) == 0                      # no validation figures were made up


@waits_for("kernels", "train")
def test_evaluate_refuses_nan_logits_rather_than_count_them_as_class_0(tiny_set, small_mobilenet):
    images, labels = tiny_set
    model = small_mobilenet.copy().eval()
    model[1][4].bias[:] = np.nan                        # the last Dense: every logit is NaN
    with pytest.raises(DivergenceError, match=r"evaluate: among the logits of data images 0..15, one is not finite "
                                              r"\(nan at index \(0, 0\)\)"):
        evaluate(model, (images, np.zeros_like(labels)))
    assert not model.training


def test_evaluate_rejects_a_bad_batch_size_and_an_empty_set_naming_them(tiny_set, small_mobilenet):
    images, labels = tiny_set
    with pytest.raises(ValueError, match=r"evaluate: batch_size must be an integer >= 1, got 0"):
        evaluate(small_mobilenet, tiny_set, batch_size=0)
    with pytest.raises(ValueError, match=r"evaluate: data holds no images"):
        evaluate(small_mobilenet, (images[:0], labels[:0]))


@waits_for(*TRAINING)
def test_trainer_rejects_a_model_with_more_than_one_output(tiny_set):
    model = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=2, seed=0)
    with pytest.raises(ValueError, match=r"one logit per image.*\(2, 2\)"):
        trainer(model, 1, data=(tiny_set, tiny_set), augment=False, progress=False)


# ---------------------------------------------------------------------------
# A fresh MobileNet learns with the defaults (init="calm")
# ---------------------------------------------------------------------------

def stripes(n=64, side=32, seed=0):
    """``n`` noisy images (3, side, side), float in [0, 1]: label 0 striped across, label 1 striped down."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    stripe = (np.arange(side) % 4 < 2) * 0.4
    images = rng.uniform(0, 0.5, (n, 3, side, side))
    images[labels == 0] += stripe[None, :, None]
    images[labels == 1] += stripe[None, None, :]
    return images.astype(np.float32), labels


def training_losses(init):
    """The loss of each of 16 Adam steps (8 epochs of 2 batches) of a fresh small MobileNet on ``stripes``."""
    model = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0, **init)
    images, labels = stripes()
    losses = []
    trainer(model, 8, data=((images, labels), (images[:8], labels[:8])), augment=False, progress=False,
            callback=lambda epoch, batch, loss: losses.append(loss))
    return losses


@waits_for(*TRAINING)
def test_a_fresh_mobilenet_learns_with_the_default_init():
    losses = training_losses({})
    assert len(losses) == 16 and losses[0] > 0.5           # it starts near chance, log 2 = 0.69
    assert np.mean(losses[-4:]) < 0.1                      # measured 0.020 (0.013 to 0.039 for seeds 0-7)


@waits_for(*TRAINING)
def test_flux_init_learns_the_same_set_far_more_slowly():
    # Flux's gamma = 1 starts the network chaotic (see MobileNet's docstring): after the same
    # 16 steps its loss is measured at 0.50 (0.25 to 0.54 for seeds 0-7), the default's at 0.020.
    assert np.mean(training_losses({"init": "flux"})[-4:]) > 0.2


# ---------------------------------------------------------------------------
# The recipe that trains the shipped checkpoint (tinyprune pretrain)
# ---------------------------------------------------------------------------

@waits_for(*TRAINING)
def test_pretrain_recipe_decays_the_lr_saves_every_epoch_and_records_the_command(tmp_path, monkeypatch):
    from tinyprune.tools import pretrain
    from tinyprune.checkpoint import load
    from tinyprune.data import SyntheticVWW

    class Small(SyntheticVWW):              # the recipe's data sets, shrunk to seconds
        def __init__(self, subset):
            super().__init__(subset, size=32 if subset == "train" else 16)
    monkeypatch.setattr(pretrain, "SyntheticVWW", Small)
    out = tmp_path / "ckpt.npz"
    model = pretrain.train_checkpoint(3, str(out), lr=2e-3, decay_epochs=1, decay_factor=2,
                                      progress=False, bn_gamma=0.5)
    assert model.history.lr == [2e-3, 2e-3, 1e-3]
    saved = load(out)
    meta = saved.metadata
    assert meta["epochs_trained"] == 3 and meta["history"]["lr"] == [2e-3, 2e-3, 1e-3]
    assert "--epochs 3 --lr 0.002 --decay-epochs 1 --decay-factor 2 " in meta["command"]
    _, acc = evaluate(saved, Small("val"))
    assert acc == meta["val_accuracy"]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(saved.state_dict()[key], value)


def test_calm_start_sets_every_batchnorm_gamma():
    # Started from Flux's gamma = 1: the default init already starts at 0.5, which calm_start(0.5) would keep.
    from tinyprune.tools.pretrain import calm_start
    model = calm_start(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=1, init="flux"), 0.5)
    gammas = [layer.weight for _, layer in model.named_layers() if isinstance(layer, BatchNorm2d)]
    assert len(gammas) == 27 and all(np.all(g == 0.5) for g in gammas)


@waits_for("kernels", "train.1")                # the forward pass unfolds with im2col; the loss is train.1
def test_evaluate_lets_go_of_what_each_forward_kept_for_a_backward(tiny_set, small_mobilenet):
    model = small_mobilenet.copy().train()
    model.fast_eval = False                    # the plain layers, which keep their inputs
    evaluate(model, tiny_set)
    assert all(layer._cache is None for _, layer in model.named_layers())
    assert model.training                      # and the mode is as it was
