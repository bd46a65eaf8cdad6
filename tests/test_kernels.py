"""Chapter 2: every Numba kernel agrees with its plain-Python reading and with the math.

Each test runs the compiled kernel and the plain function it was compiled
from on the same small input (odd sizes, strides 1, 2 and 3, padding 0, 1
and 2, float32 and float64), and checks both against a reference written
directly from the definition with NumPy.  The plain functions are slow, so
the inputs are tiny.

The references never use another kernel, and never spell out a formula
that is an exercise's answer: gradients are checked as the transpose of
the forward map (depthwise, col2im) or against the complex-step derivative
of the forward definition (BatchNorm), which needs no derivation.  Tests
of a kernel that is (part of) an exercise carry its marker
(``ex_kernels_1``; ``ex_layers_3`` for BatchNorm's backward kernel).
"""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyprune import kernels, sparse
from tinyprune.activations import slopehtanh

pytestmark = pytest.mark.kernels

DTYPES = [np.float32, np.float64]
# float32 results may differ from the float64 reference by rounding only
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
# (kernel size, stride, pad), including odd combinations MobileNet never uses
CONV_CASES = [((3, 3), 1, 1), ((3, 3), 2, 1), ((3, 3), 2, 0), ((2, 3), 1, 2),
              ((3, 2), 3, 1), ((1, 1), 1, 0), ((3, 3), 2, 2)]


def random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def padded(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def reference_depthwise(x, w, stride, pad):
    """y[n,c,i,j] = sum_ab w[c,a,b] xp[n,c,i*s+a,j*s+b], straight from the definition."""
    N, C, H, W = x.shape
    KH, KW = w.shape[1:]
    xp = padded(x.astype(np.float64), pad)
    HO, WO = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    y = np.zeros((N, C, HO, WO))
    for a in range(KH):
        for b in range(KW):
            patch = xp[:, :, a:a + stride * (HO - 1) + 1:stride, b:b + stride * (WO - 1) + 1:stride]
            y += w[None, :, a, b, None, None] * patch
    return y


def reference_conv(x, w, stride, pad):
    """y[n,o,i,j] = sum_cab w[o,c,a,b] xp[n,c,i*s+a,j*s+b], straight from the definition."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    xp = padded(x.astype(np.float64), pad)
    HO, WO = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    y = np.zeros((N, O, HO, WO))
    for a in range(KH):
        for b in range(KW):
            patch = xp[:, :, a:a + stride * (HO - 1) + 1:stride, b:b + stride * (WO - 1) + 1:stride]
            y += np.einsum("oc,ncij->noij", w[:, :, a, b], patch)
    return y


def reference_im2col(x, KH, KW, stride, pad):
    """The columns by the definition: row (c*KH + a)*KW + b, column i*WO + j holds xp[n, c, i*s + a, j*s + b]."""
    N, C, H, W = x.shape
    HO, WO = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    xp = padded(x, pad)
    cols = np.empty((N, C * KH * KW, HO * WO), x.dtype)
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                field = xp[:, c, a:a + stride * (HO - 1) + 1:stride, b:b + stride * (WO - 1) + 1:stride]
                cols[:, (c * KH + a) * KW + b] = field.reshape(N, -1)
    return cols


def complex_step_gradients(forward, arrays, dy, h=1e-30):
    """dL/d(each of ``arrays``) for L = sum(forward(*arrays) * dy), exact to rounding.

    Nudging one entry by an imaginary step i*h gives
    L(t + i h) = L(t) + i h L'(t) - h^2 L''(t)/2 + ..., so Im(L(t + i h)) / h
    is L'(t) up to h^2: no difference of nearby numbers, hence no
    cancellation, and h can be tiny.  ``forward`` must be written with
    operations that are analytic in their arguments (+, *, /, sqrt, mean;
    not abs, nor np.var, which conjugates).
    """
    grads = []
    for k, array in enumerate(arrays):
        grad = np.empty(array.shape)
        for index in np.ndindex(array.shape):
            nudged = [a.astype(np.complex128) for a in arrays]
            nudged[k][index] += 1j * h
            grad[index] = np.sum(forward(*nudged) * dy).imag / h
        grads.append(grad)
    return grads


def batchnorm_definition(x, gamma, beta, eps=1e-5):
    """Train-mode BatchNorm of x (N, C, L) by its definition, in analytic operations only."""
    mu = x.mean(axis=(0, 2), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(0, 2), keepdims=True)
    return gamma[:, None] * (x - mu) / np.sqrt(var + eps) + beta[:, None]


def both(name):
    """The compiled kernel and the plain function it was compiled from."""
    return [getattr(kernels, name), getattr(kernels, "_" + name)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_depthwise_forward_matches_the_definition(kernel, stride, pad, dtype):
    x = random((2, 3, 7, 6), dtype, 0)
    w = random((3,) + kernel, dtype, 1)
    expected = reference_depthwise(x, w, stride, pad)
    for fn in both("depthwise_forward"):
        out = np.full(expected.shape, np.nan, dtype)
        fn(x, w, stride, pad, out)
        np.testing.assert_allclose(out, expected, **TOL[dtype])


@pytest.mark.ex_layers_5
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_depthwise_backward_is_the_transpose_of_forward(kernel, stride, pad, dtype):
    # For a linear map y = A(x, w):  <dy, A(dx_dir, w)> = <A^T dy, dx_dir>, and
    # dL/dw[c,a,b] = sum dy * (the output of a unit filter at tap (a, b)).
    x = random((2, 3, 7, 6), dtype, 2)
    w = random((3,) + kernel, dtype, 3)
    dy = random(reference_depthwise(x, w, stride, pad).shape, dtype, 4)
    v = random(x.shape, np.float64, 5)
    expected_dw = np.zeros(w.shape)
    for c in range(3):
        for a in range(kernel[0]):
            for b in range(kernel[1]):
                unit = np.zeros(w.shape)
                unit[c, a, b] = 1.0
                expected_dw[c, a, b] = np.sum(dy * reference_depthwise(x, unit, stride, pad))
    for fn in both("depthwise_backward"):
        dx = np.full(x.shape, np.nan, dtype)
        dw = np.full(w.shape, np.nan, dtype)
        fn(x, w, dy, stride, pad, dx, dw)
        where = f"{fn.__name__} on x {x.shape}, {kernel} filters, stride {stride}, pad {pad}, {np.dtype(dtype)}"
        lhs = np.sum(dy.astype(np.float64) * reference_depthwise(v, w, stride, pad))
        np.testing.assert_allclose(np.sum(dx * v), lhs, **TOL[dtype], err_msg=f"{where}: <dx, v> should be "
                                   "<dy, forward(v)> for every v (dx is the transpose of forward applied to dy)")
        np.testing.assert_allclose(dw, expected_dw, **TOL[dtype], err_msg=f"{where}: dw")


@pytest.mark.ex_layers_5
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_backward_of_a_batch_is_the_sum_of_its_images(stride):
    # Planes of 45 x 45 padded pixels: the compiled kernel's stacking takes
    # kernels.STACK // 2025 = 2 images at a time, so 5 images go 2, 2, 1.
    x = random((5, 2, 43, 43), np.float64, 20)
    w = random((2, 3, 3), np.float64, 21)
    dy = random(reference_depthwise(x, w, stride, 1).shape, np.float64, 22)
    dx, dw = np.full(x.shape, np.nan), np.full(w.shape, np.nan)
    kernels.depthwise_backward(x, w, dy, stride, 1, dx, dw)
    dw_sum = np.zeros(w.shape)
    for n in range(5):
        dx_n, dw_n = np.full(x[:1].shape, np.nan), np.full(w.shape, np.nan)
        kernels.depthwise_backward(x[n:n + 1], w, dy[n:n + 1], stride, 1, dx_n, dw_n)
        np.testing.assert_allclose(dx[n:n + 1], dx_n, **TOL[np.float64], err_msg=f"dx of image {n}")
        dw_sum += dw_n
    np.testing.assert_allclose(dw, dw_sum, **TOL[np.float64], err_msg="dw")


@pytest.mark.ex_kernels_1
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_im2col_columns_hold_the_receptive_fields(kernel, stride, pad, dtype):
    x = random((2, 3, 7, 6), dtype, 6)
    KH, KW = kernel
    expected = reference_im2col(x, KH, KW, stride, pad)
    for fn in both("im2col"):
        cols = np.full(expected.shape, np.nan, dtype)
        fn(x, KH, KW, stride, pad, cols)
        np.testing.assert_array_equal(cols, expected, err_msg=f"{fn.__name__} of x {x.shape}, kernel {kernel}, "
                                      f"stride {stride}, pad {pad}: columns (N, C*KH*KW, HO*WO)")


@pytest.mark.ex_kernels_1
def test_im2col_of_a_3x3_image_under_a_2x2_kernel_gives_its_four_fields():
    # The example of tutorials/layers.py: fields [0 1; 3 4], [1 2; 4 5], [3 4; 6 7], [4 5; 7 8].
    image = np.arange(9.0).reshape(1, 1, 3, 3)
    want = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]       # row = tap (a, b), column = field
    for fn in both("im2col"):
        cols = np.full((1, 4, 4), np.nan)
        fn(image, 2, 2, 1, 0, cols)
        assert cols[0].tolist() == want, f"{fn.__name__} of {image[0, 0].tolist()}: got {cols[0].tolist()}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_conv_direct_matches_the_definition(kernel, stride, pad, dtype):
    x = random((2, 3, 7, 6), dtype, 16)
    w = random((4, 3) + kernel, dtype, 17)
    expected = reference_conv(x, w, stride, pad)
    for fn in both("conv_direct"):
        out = np.full(expected.shape, np.nan, dtype)
        fn(x, w, stride, pad, out)
        np.testing.assert_allclose(out, expected, **TOL[dtype])


@pytest.mark.ex_kernels_2
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(kernel, stride, pad, dtype):
    # <im2col(x), cols> = <x, col2im(cols)> for every x and cols
    KH, KW = kernel
    x = random((2, 3, 7, 6), np.float64, 7)
    unfolded = reference_im2col(x, KH, KW, stride, pad)
    cols = random(unfolded.shape, dtype, 8)
    for fn in both("col2im"):
        dx = np.full(x.shape, np.nan, dtype)
        fn(cols, KH, KW, stride, pad, dx)
        np.testing.assert_allclose(np.sum(dx * x), np.sum(unfolded * cols), **TOL[dtype],
                                   err_msg=f"{fn.__name__} of cols {cols.shape} (kernel {kernel}, stride {stride}, "
                                   f"pad {pad}): <col2im(cols), x> should equal <cols, im2col(x)> for every x")


@pytest.mark.ex_kernels_2
def test_col2im_adds_up_the_copies_of_a_pixel():
    # A 3x3 image under a 2x2 kernel, stride 1: the centre pixel lies in all four
    # fields, an edge's middle in two, a corner in one; folding columns of ones
    # counts them.
    for fn in both("col2im"):
        dx = np.full((1, 1, 3, 3), np.nan)
        fn(np.ones((1, 4, 4)), 2, 2, 1, 0, dx)
        assert dx[0, 0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]], \
            f"{fn.__name__} of all-ones columns: got {dx[0, 0].tolist()}, each pixel should count its fields"


@pytest.mark.ex_kernels_2
def test_col2im_drops_what_falls_on_the_padding_and_keeps_the_border_pixels():
    # 2x2 image, 3x3 kernel, pad 1: four fields, each reading all four pixels
    # (and five padding zeros); every pixel gets 4 ones back, the padding nothing.
    for fn in both("col2im"):
        dx = np.full((1, 1, 2, 2), np.nan)
        fn(np.ones((1, 9, 4)), 3, 3, 1, 1, dx)
        assert dx[0, 0].tolist() == [[4, 4], [4, 4]], f"{fn.__name__}, 2x2 image, pad 1: got {dx[0, 0].tolist()}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_train_forward_normalises_with_batch_statistics(dtype):
    x = random((3, 4, 5), dtype, 9) * 3 + 1
    gamma, beta = random((4,), dtype, 10), random((4,), dtype, 11)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    expected = gamma[:, None] * (x64 - mu[:, None]) / np.sqrt(var[:, None] + 1e-5) + beta[:, None]
    for fn in both("batchnorm_train_forward"):
        y = np.full(x.shape, np.nan, dtype)
        mean, v = np.empty(4), np.empty(4)
        fn(x, gamma, beta, 1e-5, y, mean, v)
        np.testing.assert_allclose(mean, mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(v, var, rtol=1e-12)
        np.testing.assert_allclose(y, expected, **TOL[dtype])


@pytest.mark.ex_layers_3
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_train_backward_matches_the_complex_step_derivative(dtype):
    x = random((3, 4, 5), dtype, 12) * 2
    dy = random((3, 4, 5), dtype, 13)
    gamma, beta = random((4,), dtype, 14), random((4,), dtype, 15)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    expected, dgamma, dbeta = complex_step_gradients(
        batchnorm_definition, [x64, gamma.astype(np.float64), beta.astype(np.float64)], dy64)
    for fn in both("batchnorm_train_backward"):
        dx = np.full(x.shape, np.nan, dtype)
        dg, db = np.empty(4), np.empty(4)
        fn(x, dy, gamma, mean, var, 1e-5, dx, dg, db)
        where = f"{fn.__name__} on x {x.shape} (N, C, L), {np.dtype(dtype)}"
        np.testing.assert_allclose(db, dbeta, rtol=1e-12, atol=1e-12,   # sums of dy: exact in float64
                                   err_msg=f"{where}: dbeta")
        np.testing.assert_allclose(dg, dgamma, **TOL[dtype], err_msg=f"{where}: dgamma")   # dy*x rounds in float32
        np.testing.assert_allclose(dx, expected, **TOL[dtype], err_msg=f"{where}: dx (mu and var move with x "
                                   "too: dx is not just gamma * dy / sqrt(var + eps))")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval_forward_is_the_affine_map_of_the_running_statistics(dtype):
    x = random((2, 3, 4), dtype, 15)
    gamma, beta, mean = random((3,), dtype, 16), random((3,), dtype, 17), random((3,), dtype, 18)
    var = np.array([0.5, 1.0, 2.0], dtype)
    expected = gamma[:, None] * (x - mean[:, None]) / np.sqrt(var[:, None].astype(np.float64) + 1e-5) + beta[:, None]
    for fn in both("batchnorm_eval_forward"):
        y = np.full(x.shape, np.nan, dtype)
        fn(x, gamma, beta, mean, var, 1e-5, y)
        np.testing.assert_allclose(y, expected, **TOL[dtype])


# Inputs on both sides of both kinks, the kinks themselves, and their slopes
# (1 on [-1, 1], kinks included; -1/4 outside), written out.
SLOPEHTANH_X = [-3.0, -1.5, -1.0, -0.25, 0.0, 0.5, 1.0, 1.0001, 2.0, 7.0]
SLOPEHTANH_SLOPE = [-0.25, -0.25, 1.0, 1.0, 1.0, 1.0, 1.0, -0.25, -0.25, -0.25]


@pytest.mark.parametrize("dtype", DTYPES)
def test_slopehtanh_forward_kernel_matches_the_numpy_definition(dtype):
    x = np.array(SLOPEHTANH_X, dtype)
    for fwd in both("slopehtanh_forward"):
        y = np.full(x.shape, np.nan, dtype)
        fwd(x, y)
        np.testing.assert_array_equal(y, slopehtanh(x))


@pytest.mark.ex_layers_2
@pytest.mark.parametrize("dtype", DTYPES)
def test_slopehtanh_backward_kernel_multiplies_dy_by_the_slope_inside_the_kinks(dtype):
    x = np.array(SLOPEHTANH_X, dtype)
    dy = random(x.shape, dtype, 19)
    for bwd in both("slopehtanh_backward"):
        dx = np.full(x.shape, np.nan, dtype)
        bwd(x, dy, dx)
        np.testing.assert_array_equal(dx / dy, np.array(SLOPEHTANH_SLOPE, dtype),
                                      err_msg=f"{bwd.__name__}: dx / dy at x = {SLOPEHTANH_X}")
        np.testing.assert_array_equal(dx, (np.array(SLOPEHTANH_SLOPE) * dy).astype(dtype))


def test_to_csr_lists_the_nonzeros_row_by_row():
    w = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], np.float32)
    indptr, indices, values = sparse.to_csr(w)
    assert indptr.tolist() == [0, 1, 1, 3]
    assert indices.tolist() == [1, 0, 2]
    assert values.tolist() == [2.0, 1.0, 3.0]
    assert values.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 1.0])
def test_csr_pointwise_equals_the_dense_product(sparsity, dtype):
    rng = np.random.default_rng(20)
    w = random((5, 4), dtype, 21)
    w[rng.random(w.shape) < sparsity] = 0
    x = random((2, 4, 7), dtype, 22)
    expected = np.matmul(w.astype(np.float64), x)
    for fn in (sparse.csr_pointwise, sparse._csr_pointwise):
        out = np.full((2, 5, 7), np.nan, dtype)
        fn(*sparse.to_csr(w), x, out)
        np.testing.assert_allclose(out, expected, **TOL[dtype])


@pytest.mark.integration      # the benchmark runs the whole pipeline
def test_bench_quick_writes_positive_figures_under_the_documented_keys(tmp_path):
    path = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "tinyprune.tools.bench", "--quick", "--json", str(path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    figures = json.loads(path.read_text())
    assert set(figures) >= {"threads", "train_step", "inference", "resized", "startup", "peak_memory", "sparse"}
    assert figures["train_step"]["seconds"] > 0 and figures["train_step"]["images_per_s"] > 0
    assert figures["inference"]["batch64_images_per_s"] > 0 and figures["inference"]["batch1_ms"] > 0
    assert figures["startup"]["warm_s"] > 0
    assert figures["startup"]["cold_s"] is None          # --quick does not compile everything afresh
    assert 0 < figures["resized"]["mult_ratio"] < 1 and figures["resized"]["batch64_images_per_s"] > 0
    resized = figures["resized"]                            # section 3's two times, taken in turns
    assert resized["time_ratio_batch64"] == pytest.approx(resized["batch64_s"] / resized["full_batch64_s"])
    assert figures["peak_memory"]["bytes"] > 0
    assert [row["sparsity"] for row in figures["sparse"]] == [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
    assert all(row["dense_s"] > 0 and row["csr_s"] > 0 for row in figures["sparse"])
    assert "images/s" in run.stdout


def test_paired_medians_times_each_function_in_turns():
    from tinyprune.tools.bench import _paired_medians
    calls = []

    def timed(name, seconds):
        def fn():
            calls.append(name)
            time.sleep(seconds)
        return fn
    short, long = _paired_medians([timed("a", 0.001), timed("b", 0.004)], rounds=4, warm_up=0.0,
                                  seconds_per_sample=0.0)
    # one call each to size the samples, then each round one untimed call and one timed one of
    # each function, the first place rotating
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"] \
        + ["b", "b", "a", "a"]
    assert 0.001 <= short < long and long >= 0.004
