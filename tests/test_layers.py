"""Chapter 1: the layer library, one behaviour per test.

Every layer's hand-written backward pass is checked against central finite
differences (``gradcheck``, float64, worst relative error < 1e-6) in train and
eval mode; BatchNorm's statistics against a hand computation in NumPy; the
initialisation against Glorot's bounds; Chain's indexing and order; and bad
input against the error message a student should see.

Run this chapter alone with ``python -m pytest -m layers``, one exercise's
tests with ``python -m pytest -m ex_layers_3`` (the markers are listed by
``tinyprune assignment --markers``).  A test of one exercise carries its
marker; a test of the chapter's machinery that runs every layer on the way
(a chain's gradients, its dtypes) carries none, and in a course copy it
waits (is skipped) until the exercises it passes through are written
(``waits_for`` in tests/helpers.py).
"""

import numba
import numpy as np
import pytest

from tinyprune import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                       GlobalMeanPool, HardTanh, Identity, Layer, ReLU, SlopeHTanh, activation_layer,
                       gradcheck, hardtanh, identity, relu, slopehtanh)
from tinyprune.activations import slopehtanh_derivative

from helpers import waits_for

pytestmark = pytest.mark.layers

GRAD_TOL = 1e-6
MODES = ("train", "eval")


@pytest.fixture(scope="module", autouse=True)
def one_numba_thread():
    """Run this file's kernels on one thread.

    A gradcheck calls forward a few hundred times on arrays of a few hundred
    numbers; waking a second thread for each call then costs more than the
    work itself (100x more on a busy machine).  The compiled code is the same.
    """
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def set_mode(layer, mode):
    return layer.train() if mode == "train" else layer.eval()


def explained(layer, mode, x, report):
    """The message of a failed gradient check: which layer, which input, and gradcheck's errors by tensor."""
    return (f"{layer!r} in {mode} mode on an input of shape {x.shape}: the worst relative error of each "
            f"gradient against finite differences (a right backward pass gives about 1e-8 or less):\n{report}")


def away_from(x, points, margin=0.02):
    """Move every entry of ``x`` that lies within ``margin`` of a kink by 2*margin.

    A finite difference across a kink (relu at 0, hardtanh at +-1) measures
    neither slope, so the activation checks keep their inputs off the kinks.
    """
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < margin
        x[near] += 2 * margin
    return x


def nontrivial_bn(channels, seed):
    """A BatchNorm2d whose gamma, beta and running statistics are all not their defaults."""
    rng = np.random.default_rng(seed)
    bn = BatchNorm2d(channels)
    bn.weight = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    bn.bias = rng.uniform(-0.5, 0.5, channels).astype(np.float32)
    bn.running_mean = rng.uniform(-0.3, 0.3, channels).astype(np.float32)
    bn.running_var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    return bn


# ---------------------------------------------------------------------------
# Gradients: every layer type, train and eval mode
# ---------------------------------------------------------------------------

# (kernel, stride, pad, H, W): stride 1 and 2, padding 0 and 1, odd and even
# sizes, a non-square kernel, and the 1x1 stride-1 unpadded "pointwise" path.
CONV_GEOMETRIES = [
    (3, 1, 0, 5, 5),
    (3, 1, 1, 6, 6),
    (3, 2, 0, 7, 7),
    (3, 2, 1, 6, 5),
    ((2, 3), 2, 1, 5, 6),
    (1, 1, 0, 4, 5),
    (1, 2, 0, 5, 4),
]


@pytest.mark.ex_layers_4
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kernel,stride,pad,H,W", CONV_GEOMETRIES)
def test_conv2d_gradients_match_finite_differences(kernel, stride, pad, H, W, bias, mode):
    conv = set_mode(Conv2d(3, 4, kernel, stride=stride, pad=pad, bias=bias,
                           rng=np.random.default_rng(1)), mode)
    if bias:
        conv.bias = np.random.default_rng(2).standard_normal(4).astype(np.float32)
    x = np.random.default_rng(3).standard_normal((2, 3, H, W))
    report = gradcheck(conv, x)
    assert set(report) == {"input", "weight"} | ({"bias"} if bias else set())
    assert report.worst < GRAD_TOL, explained(conv, mode, x, report)


@pytest.mark.ex_layers_5
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel,stride,pad,H,W", CONV_GEOMETRIES[:5])
def test_depthwise_gradients_match_finite_differences(kernel, stride, pad, H, W, mode):
    dw = set_mode(DepthwiseConv2d(3, kernel, stride=stride, pad=pad, rng=np.random.default_rng(1)), mode)
    x = np.random.default_rng(3).standard_normal((2, 3, H, W))
    report = gradcheck(dw, x)
    assert set(report) == {"input", "weight"}
    assert report.worst < GRAD_TOL, explained(dw, mode, x, report)


@pytest.mark.ex_layers_5
@pytest.mark.parametrize("mode", MODES)
def test_depthwise_with_a_bias_gradients_match_finite_differences(mode):
    # MobileNet's depthwise convolutions have no bias; fold_batchnorm gives them one.
    dw = set_mode(DepthwiseConv2d(3, 3, stride=2, pad=1, bias=True, rng=np.random.default_rng(1)), mode)
    dw.bias = np.array([0.5, -1.0, 2.0], np.float32)
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 5))
    report = gradcheck(dw, x)
    assert set(report) == {"input", "weight", "bias"}
    assert report.worst < GRAD_TOL, explained(dw, mode, x, report)


@pytest.mark.ex_layers_1
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [False, True])
def test_dense_gradients_match_finite_differences(bias, mode):
    dense = set_mode(Dense(5, 3, bias=bias, rng=np.random.default_rng(1)), mode)
    if bias:
        dense.bias = np.array([0.5, -1.0, 2.0], np.float32)
    x = np.random.default_rng(3).standard_normal((4, 5))
    report = gradcheck(dense, x)
    assert set(report) == {"input", "weight"} | ({"bias"} if bias else set())
    assert report.worst < GRAD_TOL, explained(dense, mode, x, report)


@pytest.mark.ex_layers_1
def test_dense_backward_of_a_small_example():
    # x = [[1, 2]], W = [[1, 0], [0, 3], [1, 1]], dy = [[1, 2, 3]]:
    # dW = dy^T x, db = dy summed over the batch, dx = dy W.
    dense = Dense(2, 3).to(np.float64)
    dense.weight = np.array([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    dense(np.array([[1.0, 2.0]]))
    dx = dense.backward(np.array([[1.0, 2.0, 3.0]]))
    got = (dx.tolist(), dense.grads["weight"].tolist(), dense.grads["bias"].tolist())
    want = ([[4.0, 9.0]], [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], [1.0, 2.0, 3.0])
    assert got == want, f"Dense backward on x = [[1, 2]], dy = [[1, 2, 3]]: (dx, dW, db) = {got}, expected {want}"


# Eval-mode BatchNorm's backward is given; train mode's is exercise layers.3.
BN_MODES = [pytest.param("train", marks=pytest.mark.ex_layers_3), "eval"]


@pytest.mark.parametrize("mode", BN_MODES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 3, 3, 5)])
def test_batchnorm_gradients_match_finite_differences(shape, mode):
    bn = set_mode(nontrivial_bn(3, seed=4), mode)
    x = 2.0 + 3.0 * np.random.default_rng(5).standard_normal(shape)
    report = gradcheck(bn, x)
    assert set(report) == {"input", "weight", "bias"}
    assert report.worst < GRAD_TOL, explained(bn, mode, x, report)


@pytest.mark.ex_layers_3
def test_batchnorm_train_mode_passes_back_nothing_along_a_shift_or_a_scale_of_its_batch():
    # Moving a whole channel by a constant leaves y as it is, and so does scaling
    # it (up to eps / var, made negligible here by a variance of about 1e4).  So
    # dx, whatever dy, is orthogonal to the constant direction and to xhat in
    # every channel: a backward pass without the mean terms is not.
    bn = nontrivial_bn(3, seed=6).to(np.float64)
    x = 1.0 + 100.0 * np.random.default_rng(7).standard_normal((4, 3, 2, 3))
    bn(x)
    dx = bn.backward(np.random.default_rng(8).standard_normal(x.shape))
    xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
    for c in range(3):
        d, h = dx[:, c].ravel(), xhat[:, c].ravel()
        along_shift = d.sum() / (np.linalg.norm(d) * np.sqrt(d.size))     # cosines with the two directions
        along_scale = d @ h / (np.linalg.norm(d) * np.linalg.norm(h))
        assert abs(along_shift) < 1e-8 and abs(along_scale) < 1e-8, \
            (f"channel {c}: dx has a component along a shift of the channel ({along_shift:.2g}) or along "
             f"xhat ({along_scale:.2g}); both should be 0: mu and var absorb them")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layer,kinks", [
    pytest.param(SlopeHTanh(), (-1.0, 1.0), marks=pytest.mark.ex_layers_2, id="slopehtanh"),
    pytest.param(ReLU(), (0.0,), id="relu"),
    pytest.param(HardTanh(), (-1.0, 1.0), id="hardtanh"),
    pytest.param(Identity(), (), id="identity"),
])
def test_activation_gradients_match_finite_differences(layer, kinks, mode):
    x = away_from(np.random.default_rng(6).uniform(-2.5, 2.5, (2, 3, 4, 5)), kinks)
    # Both sides of every kink are represented, so both slopes are checked.
    for k in kinks:
        assert (x < k).any() and (x > k).any()
    report = gradcheck(set_mode(layer, mode), x)
    assert set(report) == {"input"}
    assert report.worst < GRAD_TOL, explained(layer, mode, x, report)


# slopehtanh's slope: 1 on [-1, 1], the kinks included (the inside's slope), -1/4 outside.
SLOPEHTANH_AT = {-3.0: -0.25, -1.0001: -0.25, -1.0: 1.0, -0.5: 1.0, 0.0: 1.0, 0.75: 1.0, 1.0: 1.0,
                 1.0001: -0.25, 2.5: -0.25}


@pytest.mark.ex_layers_2
def test_slopehtanh_backward_takes_the_slope_from_inside_at_the_kinks():
    x = np.array(list(SLOPEHTANH_AT), np.float32).reshape(1, 1, 3, 3)
    layer = SlopeHTanh()
    layer(x)
    got = layer.backward(np.full(x.shape, 2.0, np.float32)).reshape(-1).tolist()
    want = [2.0 * slope for slope in SLOPEHTANH_AT.values()]
    assert got == want, f"SlopeHTanh.backward(dy = 2) at x = {list(SLOPEHTANH_AT)}: got {got}, expected {want}"


@pytest.mark.ex_layers_2
def test_slopehtanh_derivative_is_one_inside_the_kinks_and_minus_a_quarter_outside():
    x = np.array(list(SLOPEHTANH_AT))
    got = slopehtanh_derivative(x)
    assert got.dtype == x.dtype
    assert got.tolist() == list(SLOPEHTANH_AT.values()), f"slopehtanh_derivative({x.tolist()}) = {got.tolist()}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layer,shape", [
    (GlobalMeanPool(), (2, 3, 5, 4)),
    (Flatten(), (2, 3, 5, 4)),
], ids=["globalmeanpool", "flatten"])
def test_pool_and_flatten_gradients_match_finite_differences(layer, shape, mode):
    x = np.random.default_rng(7).standard_normal(shape)
    report = gradcheck(set_mode(layer, mode), x)
    assert report.worst < GRAD_TOL, explained(layer, mode, x, report)


def small_nested_chain():
    rng = np.random.default_rng(8)
    return Chain(
        Conv2d(3, 4, 3, stride=2, pad=1, bias=True, rng=rng),
        Chain(nontrivial_bn(4, seed=9), SlopeHTanh()),
        Chain(Chain(DepthwiseConv2d(4, 3, stride=1, pad=1, rng=rng), nontrivial_bn(4, seed=10)),
              ReLU()),
        Chain(GlobalMeanPool(), Flatten(), Dense(4, 2, rng=rng)),
    )


@waits_for("layers", "kernels")
@pytest.mark.parametrize("mode", MODES)
def test_nested_chain_gradients_match_finite_differences(mode):
    chain = set_mode(small_nested_chain(), mode)
    x = np.random.default_rng(11).standard_normal((2, 3, 7, 6))
    report = gradcheck(chain, x)
    # Keys are the dotted state_dict keys of the nested chain.
    assert set(report) == {"input", "0.weight", "0.bias", "1.0.weight", "1.0.bias",
                           "2.0.0.weight", "2.0.1.weight", "2.0.1.bias", "3.2.weight", "3.2.bias"}
    assert report.worst < GRAD_TOL, explained(chain, mode, x, report)


def test_gradcheck_catches_a_wrong_backward():
    # The checks above only mean something if gradcheck can fail: tanh with
    # the derivative of the identity must be caught.
    wrong = Activation(np.tanh, np.ones_like, name="tanh with a wrong derivative")
    x = np.random.default_rng(12).uniform(-2, 2, (2, 3))
    assert gradcheck(wrong, x).worst > 0.1


@pytest.mark.ex_layers_4
def test_masked_conv_gets_zero_gradient_at_masked_entries_and_still_passes_gradcheck():
    conv = Conv2d(2, 3, 3, pad=1, rng=np.random.default_rng(13))
    mask = np.ones(conv.weight.shape, bool)
    mask[1] = False          # a whole output channel
    mask[0, 1, 2, 0] = False  # one scattered weight
    conv.masks["weight"] = mask
    x = np.random.default_rng(14).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = conv(x)
    assert np.all(y[:, 1] == 0)
    conv.backward(np.ones_like(y))
    assert np.all(conv.grads["weight"][~mask] == 0)
    assert np.all(conv.grads["weight"][mask] != 0)
    assert gradcheck(conv, x).worst < GRAD_TOL


@pytest.mark.ex_layers_1
def test_backward_overwrites_gradients_instead_of_adding():
    dense = Dense(3, 2, rng=np.random.default_rng(15))
    x = np.ones((1, 3), np.float32)
    dense(x)
    dense.backward(np.ones((1, 2), np.float32))
    first = dense.grads["weight"].copy()
    dense(x)
    dense.backward(np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(dense.grads["weight"], first)


@waits_for("layers", "kernels")
def test_a_model_casts_the_incoming_gradient_to_its_own_dtype():
    rng = np.random.default_rng(16)
    model = Chain(Conv2d(2, 3, 3, pad=1, rng=rng), BatchNorm2d(3), SlopeHTanh(), DepthwiseConv2d(3, 3, rng=rng),
                  GlobalMeanPool(), Flatten(), Dense(3, 1, rng=rng))
    x = rng.random((4, 2, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((4, 1))                       # float64, as a user's loss might give
    model(x)
    dx = model.backward(dy)
    assert dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grad_dict().values())
    grads = {k: g.copy() for k, g in model.grad_dict().items()}
    model(x)
    model.backward(dy.astype(np.float32))                  # the same numbers as float32
    for key, g in model.grad_dict().items():
        np.testing.assert_array_equal(g, grads[key])


@pytest.mark.ex_layers_4
@pytest.mark.parametrize("c_in,direct", [(3, True), (4, False)])   # 27 rows <= 32 < 36 rows
def test_conv2d_eval_mode_gives_the_train_mode_output_whichever_way_it_computes(c_in, direct):
    # In eval mode a conv with thin columns skips im2col (kernels.conv_direct);
    # the numbers must not depend on that, nor may the gradients of a backward pass.
    conv = Conv2d(c_in, 5, 3, stride=2, pad=1, bias=True, rng=np.random.default_rng(17))
    conv.bias[:] = np.arange(5)
    assert (c_in * 9 <= Conv2d.DIRECT_MAX_ROWS) == direct
    x = np.random.default_rng(18).standard_normal((3, c_in, 11, 10)).astype(np.float32)
    dy = np.random.default_rng(19).standard_normal((3, 5, 6, 5)).astype(np.float32)
    y_train = conv.train()(x)
    dx_train = conv.backward(dy)
    grads_train = {k: g.copy() for k, g in conv.grads.items()}
    y_eval = conv.eval()(x)
    np.testing.assert_allclose(y_eval, y_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv.backward(dy), dx_train, rtol=1e-6, atol=1e-6)
    for key, g in conv.grads.items():
        np.testing.assert_allclose(g, grads_train[key], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Forward values against the definitions
# ---------------------------------------------------------------------------

@pytest.mark.ex_kernels_1           # the forward pass multiplies the weight by im2col's columns
def test_conv2d_forward_is_cross_correlation_with_zero_padding():
    conv = Conv2d(2, 3, 3, stride=2, pad=1, bias=True, rng=np.random.default_rng(16)).to(np.float64)
    conv.bias = np.array([0.1, -0.2, 0.3])
    x = np.random.default_rng(17).standard_normal((2, 2, 5, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    HO, WO = (5 + 2 - 3) // 2 + 1, (6 + 2 - 3) // 2 + 1
    expected = np.zeros((2, 3, HO, WO))
    for i in range(HO):
        for j in range(WO):
            patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]          # (N, C_in, 3, 3)
            expected[:, :, i, j] = np.einsum("nchw,ochw->no", patch, conv.weight) + conv.bias
    np.testing.assert_allclose(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_depthwise_forward_filters_each_channel_on_its_own():
    dw = DepthwiseConv2d(3, 3, stride=1, pad=1, rng=np.random.default_rng(18)).to(np.float64)
    x = np.random.default_rng(19).standard_normal((2, 3, 4, 5))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros_like(x)
    for i in range(4):
        for j in range(5):
            expected[:, :, i, j] = np.einsum("nchw,chw->nc", xp[:, :, i:i + 3, j:j + 3], dw.weight[:, 0])
    np.testing.assert_allclose(dw(x), expected, rtol=1e-12, atol=1e-12)


def test_activation_layers_compute_their_functions():
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], np.float32)
    # slopehtanh: x on [-1, 1], slope -1/4 outside (3 -> 1 - 2/4 = 0.5).
    np.testing.assert_allclose(SlopeHTanh().forward(x.copy()), [-0.5, -1, -0.5, 0, 0.5, 1, 0.5])
    np.testing.assert_allclose(slopehtanh(x), [-0.5, -1, -0.5, 0, 0.5, 1, 0.5])
    np.testing.assert_allclose(ReLU().forward(x), [0, 0, 0, 0, 0.5, 1, 3])
    np.testing.assert_allclose(HardTanh().forward(x), [-1, -1, -0.5, 0, 0.5, 1, 1])
    np.testing.assert_allclose(Identity().forward(x), x)


def test_activation_layer_accepts_function_name_or_layer():
    assert isinstance(activation_layer(slopehtanh), SlopeHTanh)
    assert isinstance(activation_layer("relu"), ReLU)
    assert isinstance(activation_layer(hardtanh), HardTanh)
    assert isinstance(activation_layer(identity), Identity)
    assert isinstance(activation_layer(relu), ReLU)
    original = ReLU()
    copied = activation_layer(original)
    assert isinstance(copied, ReLU) and copied is not original


def test_global_mean_pool_and_flatten_shapes_and_values():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    pooled = GlobalMeanPool().forward(x)
    assert pooled.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(pooled[0, :, 0, 0], [1.5, 5.5, 9.5])
    flat = Flatten().forward(x)
    assert flat.shape == (2, 12)
    np.testing.assert_array_equal(flat[1], np.arange(12, 24))   # channel-major, as in PyTorch


# ---------------------------------------------------------------------------
# BatchNorm: batch statistics in train mode, running ones in eval mode
# ---------------------------------------------------------------------------

EPS = 1e-5
MOMENTUM = 0.1


def test_batchnorm_train_mode_normalises_with_batch_statistics():
    bn = nontrivial_bn(3, seed=20).to(np.float64)
    x = 1.5 + 2.0 * np.random.default_rng(21).standard_normal((4, 3, 3, 5))
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))                       # biased: divides by M = N*H*W
    c = (None, slice(None), None, None)
    expected = bn.weight[c] * (x - mean[c]) / np.sqrt(var[c] + EPS) + bn.bias[c]
    np.testing.assert_allclose(bn(x), expected, rtol=1e-10, atol=1e-12)


def test_batchnorm_updates_running_statistics_the_pytorch_way():
    bn = nontrivial_bn(3, seed=22).to(np.float64)
    mean0, var0 = bn.running_mean.copy(), bn.running_var.copy()
    x = -0.5 + 3.0 * np.random.default_rng(23).standard_normal((2, 3, 4, 3))
    M = 2 * 4 * 3
    bn(x)
    batch_mean = x.mean(axis=(0, 2, 3))
    batch_var_unbiased = x.var(axis=(0, 2, 3)) * M / (M - 1)
    np.testing.assert_allclose(bn.running_mean, (1 - MOMENTUM) * mean0 + MOMENTUM * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, (1 - MOMENTUM) * var0 + MOMENTUM * batch_var_unbiased,
                               rtol=1e-12)
    # The biased variance would give a different answer: the test can tell them apart.
    assert not np.allclose(bn.running_var, (1 - MOMENTUM) * var0 + MOMENTUM * x.var(axis=(0, 2, 3)),
                           rtol=1e-6)


def test_batchnorm_float32_running_statistics_match_float64_hand_computation():
    bn = BatchNorm2d(2)
    x = np.random.default_rng(24).standard_normal((3, 2, 5, 5)).astype(np.float32)
    bn(x)
    M = 3 * 5 * 5
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(bn.running_mean, MOMENTUM * x64.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.running_var, (1 - MOMENTUM) + MOMENTUM * x64.var(axis=(0, 2, 3)) * M / (M - 1),
                               rtol=1e-5)
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32


def test_batchnorm_counts_batches_in_train_mode_only():
    bn = BatchNorm2d(2)
    x = np.random.default_rng(25).standard_normal((2, 2, 3, 3)).astype(np.float32)
    assert int(bn.num_batches_tracked) == 0
    bn(x)
    bn(x)
    assert int(bn.num_batches_tracked) == 2
    bn.eval()
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    bn(x)
    assert int(bn.num_batches_tracked) == 2
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)


def test_batchnorm_eval_mode_uses_running_statistics():
    bn = nontrivial_bn(3, seed=26).to(np.float64).eval()
    x = np.random.default_rng(27).standard_normal((2, 3, 4, 4))
    c = (None, slice(None), None, None)
    expected = bn.weight[c] * (x - bn.running_mean[c]) / np.sqrt(bn.running_var[c] + EPS) + bn.bias[c]
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_train_mode_with_one_value_per_channel_raises():
    model = Chain(Conv2d(3, 4, 1, rng=np.random.default_rng(28)), BatchNorm2d(4))
    x = np.ones((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"model\[1\].*more than one value per channel.*\(1, 4, 1, 1\)"):
        model(x)
    assert int(model[1].num_batches_tracked) == 0      # the failing call changed nothing
    assert model.eval()(x).shape == (1, 4, 1, 1)       # eval mode needs no batch statistics


# ---------------------------------------------------------------------------
# Initialisation: Glorot uniform with Flux's fans, zero biases, BatchNorm identity
# ---------------------------------------------------------------------------

def glorot_limit(fan_in, fan_out):
    return np.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("layer,fan_in,fan_out", [
    (Conv2d(16, 32, 3, rng=np.random.default_rng(30)), 16 * 9, 32 * 9),
    (Conv2d(64, 48, 1, rng=np.random.default_rng(31)), 64, 48),
    (DepthwiseConv2d(512, 3, rng=np.random.default_rng(32)), 9, 512 * 9),
    (Dense(300, 200, rng=np.random.default_rng(33)), 300, 200),
], ids=["conv3x3", "conv1x1", "depthwise", "dense"])
def test_weights_are_glorot_uniform_with_flux_fans(layer, fan_in, fan_out):
    limit = glorot_limit(fan_in, fan_out)
    w = layer.weight.astype(np.float64)
    assert np.abs(w).max() <= limit
    # Uniform on [-l, l]: the extremes are reached, the mean is 0, the
    # standard deviation l/sqrt(3), half the weights lie inside [-l/2, l/2].
    assert np.abs(w).max() > 0.99 * limit
    assert abs(w.mean()) < 0.05 * limit
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
    assert np.mean(np.abs(w) < limit / 2) == pytest.approx(0.5, abs=0.05)


def test_biases_start_at_zero():
    assert np.all(Conv2d(3, 5, 3, bias=True).bias == 0)
    assert np.all(Dense(4, 6).bias == 0)
    assert Conv2d(3, 5, 3).bias is None
    assert Dense(4, 6, bias=False).bias is None


def test_batchnorm_starts_as_the_identity_map():
    bn = BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight, np.ones(5))
    np.testing.assert_array_equal(bn.bias, np.zeros(5))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(5))
    np.testing.assert_array_equal(bn.running_var, np.ones(5))
    assert int(bn.num_batches_tracked) == 0
    assert bn.eps == 1e-5 and bn.momentum == 0.1


def test_same_rng_seed_gives_same_weights_and_another_seed_different_ones():
    a = Conv2d(3, 4, 3, rng=np.random.default_rng(34))
    b = Conv2d(3, 4, 3, rng=np.random.default_rng(34))
    c = Conv2d(3, 4, 3, rng=np.random.default_rng(35))
    np.testing.assert_array_equal(a.weight, b.weight)
    assert np.all(a.weight != c.weight)


def test_layers_default_to_float32_and_convert_in_place():
    conv = Conv2d(2, 3, 3, bias=True)
    assert conv.weight.dtype == np.float32 and conv.bias.dtype == np.float32
    wide = conv.copy().to(np.float64)
    assert wide.weight.dtype == np.float64 and wide.bias.dtype == np.float64
    assert conv.weight.dtype == np.float32                     # the copy is independent
    np.testing.assert_array_equal(wide.weight, conv.weight)
    with pytest.raises(ValueError, match="floating-point dtype, got int32"):
        conv.to(np.int32)


def test_sizes_are_read_off_the_weights():
    conv = Conv2d(4, 6, 3)
    assert (conv.c_in, conv.c_out, conv.kernel) == (4, 6, (3, 3))
    conv.weight = conv.weight[:2, :3]
    assert (conv.c_in, conv.c_out) == (3, 2)
    dense = Dense(5, 7)
    dense.weight = dense.weight[:, :4]
    assert (dense.n_in, dense.n_out) == (4, 7)


# ---------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------

def test_chain_is_nestable_indexable_iterable_and_sized():
    chain = small_nested_chain()
    assert len(chain) == 4
    assert isinstance(chain[2][0][0], DepthwiseConv2d)
    assert isinstance(chain[-1][2], Dense)
    assert [type(layer) for layer in chain[1]] == [BatchNorm2d, SlopeHTanh]
    assert [path for path, _ in chain.named_layers()] == [
        "[0]", "[1][0]", "[1][1]", "[2][0][0]", "[2][0][1]", "[2][1]", "[3][0]", "[3][1]", "[3][2]"]


def test_chain_slice_is_a_chain_of_the_same_layers():
    chain = small_nested_chain()
    head = chain[1:3]
    assert isinstance(head, Chain) and len(head) == 2
    assert head[0] is chain[1] and head[1] is chain[2]


def test_chain_accepts_a_list_and_rejects_non_layers():
    layers = [ReLU(), Identity()]
    assert list(Chain(layers)) == layers
    with pytest.raises(TypeError, match=r"\[1\].*int"):
        Chain(ReLU(), 3)


@waits_for("layers", "kernels")
def test_chain_backward_runs_the_layers_in_reverse():
    chain = small_nested_chain()
    by_hand = chain.copy()
    x = np.random.default_rng(36).standard_normal((2, 3, 6, 6)).astype(np.float32)
    dy = np.random.default_rng(37).standard_normal((2, 2)).astype(np.float32)
    y = chain(x)
    dx = chain.backward(dy)

    leaves = [layer for _, layer in by_hand.named_layers()]
    h = x
    for layer in leaves:
        h = layer.forward(h)
    np.testing.assert_array_equal(h, y)
    g = dy
    for layer in reversed(leaves):
        g = layer.backward(g)
    np.testing.assert_array_equal(g, dx)
    np.testing.assert_array_equal(leaves[0].grads["weight"], chain[0].grads["weight"])


def test_eval_and_train_switch_every_nested_layer():
    chain = small_nested_chain()
    assert all(layer.training for _, layer in chain.named_layers())
    assert chain.eval() is chain
    assert not chain.training and not chain[2][0].training
    assert not any(layer.training for _, layer in chain.named_layers())
    chain.train()
    assert all(layer.training for _, layer in chain.named_layers())


# ---------------------------------------------------------------------------
# Bad arguments and bad input: clear ValueErrors naming what and where
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,error,message", [
    (lambda: Conv2d(0, 3, 3), ValueError, r"Conv2d: c_in must be an integer >= 1, got 0"),
    (lambda: Conv2d(3, -2, 3), ValueError, r"Conv2d: c_out must be an integer >= 1, got -2"),
    (lambda: Conv2d(3, 3, 0), ValueError, r"Conv2d: kernel size must be an integer >= 1, got 0"),
    (lambda: Conv2d(3, 3, (3, 3, 3)), ValueError, r"Conv2d: kernel must be an int or a pair"),
    (lambda: Conv2d(3, 3, 3, stride=0), ValueError, r"Conv2d: stride must be an integer >= 1, got 0"),
    (lambda: Conv2d(3, 3, 3, pad=-1), ValueError, r"Conv2d: pad must be an integer >= 0, got -1"),
    (lambda: Conv2d(2.5, 3, 3), TypeError, r"Conv2d: c_in must be an integer >= 1, got 2.5"),
    (lambda: DepthwiseConv2d(0, 3), ValueError, r"DepthwiseConv2d: channels must be an integer >= 1, got 0"),
    (lambda: DepthwiseConv2d(4, 3, stride=-1), ValueError,
     r"DepthwiseConv2d: stride must be an integer >= 1, got -1"),
    (lambda: Dense(0, 2), ValueError, r"Dense: n_in must be an integer >= 1, got 0"),
    (lambda: Dense(2, 0), ValueError, r"Dense: n_out must be an integer >= 1, got 0"),
    (lambda: BatchNorm2d(0), ValueError, r"BatchNorm2d: channels must be an integer >= 1, got 0"),
    (lambda: BatchNorm2d(3, eps=0), ValueError, r"BatchNorm2d: eps must be a finite number in \(0.0, inf\], got 0"),
    (lambda: BatchNorm2d(3, momentum=1.5), ValueError,
     r"BatchNorm2d: momentum must be a finite number in \[0.0, 1.0\], got 1.5"),
    (lambda: activation_layer("swish"), ValueError,
     r"unknown activation 'swish'; expected one of slopehtanh, relu"),
])
def test_bad_constructor_arguments_raise_naming_the_argument(make, error, message):
    # A wrong value is a ValueError; a value of the wrong type (2.5 channels) a TypeError.
    with pytest.raises(error, match=message):
        make()


def two_convs():
    rng = np.random.default_rng(38)
    return Chain(Conv2d(3, 4, 3, stride=2, rng=rng), BatchNorm2d(4), Conv2d(4, 5, 3, rng=rng))


@pytest.mark.parametrize("shape,dtype,message", [
    ((1, 2, 9, 9), np.float32, r"model\[0\]: Conv2d expects 3 input channels, got 2"),
    ((3, 9, 9), np.float32, r"model\[0\]: expected a rank-4 input \(N, C, H, W\), got shape \(3, 9, 9\)"),
    # 5x5 -> 2x2 after the first conv, too small for the second 3x3 kernel.
    ((1, 3, 5, 5), np.float32, r"model\[2\]: input of 2x2 pixels is too small for a 3x3 kernel "
                               r"with padding 0; it needs at least 3x3"),
    ((1, 3, 9, 9), np.uint8, r"model: expected floating-point input, got uint8"),
    ((1, 3, 9, 9), np.int64, r"model: expected floating-point input, got int64"),
])
def test_bad_input_raises_naming_the_layer_and_leaves_the_model_alone(shape, dtype, message):
    model = two_convs()
    before = model.state_dict()
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, dtype))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


@pytest.mark.parametrize("layer,shape,message", [
    (Conv2d(3, 4, 3), (1, 4, 5, 5), r"Conv2d: Conv2d expects 3 input channels, got 4"),
    (DepthwiseConv2d(3, 3), (1, 2, 5, 5), r"DepthwiseConv2d: DepthwiseConv2d expects 3 input channels, got 2"),
    (DepthwiseConv2d(3, 3, pad=0), (1, 3, 2, 4), r"input of 2x4 pixels is too small for a 3x3 kernel"),
    (Dense(4, 2), (2, 5), r"Dense: Dense expects 4 input features, got 5"),
    (Dense(4, 2), (2, 4, 1, 1), r"Dense: expected a rank-2 input \(N, features\), got shape \(2, 4, 1, 1\)"),
    (BatchNorm2d(3), (2, 4, 2, 2), r"BatchNorm2d: BatchNorm2d expects 3 channels, got 4"),
    (GlobalMeanPool(), (2, 3), r"GlobalMeanPool: expected a rank-4 input"),
    (Flatten(), (5,), r"Flatten: expected an input with a batch axis, got shape \(5,\)"),
])
def test_a_single_layer_called_on_bad_input_names_its_type(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(shape, np.float32))


# ---------------------------------------------------------------------------
# The contract is enough: a layer that writes only forward and backward
# inherits modes, state dicts, masks by key, dtype and copies (tinyprune.module)
# ---------------------------------------------------------------------------

class Shift(Layer):
    """y = x + shift[c]: the smallest layer with a parameter, written to the contract only."""

    param_names = ("shift",)
    mixes_channels = False
    out_channel_arrays = {"shift": 0}

    def __init__(self, channels):
        super().__init__()
        self.shift = np.arange(channels, dtype=np.float32)

    def forward(self, x):
        return x + self.effective("shift")[:, None, None]

    def backward(self, dy):
        self.set_grad("shift", dy.sum(axis=(0, 2, 3)))
        return dy


def test_a_layer_written_to_the_contract_gets_state_dict_masks_dtype_and_copies():
    model = Chain(Shift(3), Chain(ReLU(), Shift(3)))
    assert list(model.state_dict()) == ["0.shift", "1.1.shift"]
    assert [key for key, _, _ in model.named_parameters()] == ["0.shift", "1.1.shift"]
    with pytest.raises(RuntimeError, match=r"grad_dict: no gradient for '0.shift'; run backward first"):
        model.grad_dict()
    model[1][1].masks["shift"] = np.array([True, False, True])
    assert list(model.mask_dict()) == ["1.1.shift"]
    y = model(np.zeros((2, 3, 1, 1), np.float32))
    np.testing.assert_array_equal(y[0, :, 0, 0], [0, 1, 4])     # relu(0 + c), then + shift with [1] masked
    model.backward(np.ones_like(y))
    np.testing.assert_array_equal(model.grad_dict()["1.1.shift"], [2, 0, 2])
    wide = model.copy().to(np.float64)
    assert wide.dtype == np.float64 and model.dtype == np.float32
    assert all(not layer.grads for _, layer in wide.named_layers())   # to() drops the old gradients
    assert not model.eval().training and not model[1][1].training


def test_a_failed_load_state_dict_leaves_every_array_as_it_was():
    model = Chain(Shift(3), Shift(3))
    state = model.state_dict()
    state["0.shift"] = np.full(3, 7.0)
    state["1.shift"] = np.zeros(4)                               # the wrong shape
    with pytest.raises(ValueError, match=r"key '1.shift' has shape \(4,\), the model expects \(3,\)"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model[0].shift, [0, 1, 2])     # the good key was not copied either
