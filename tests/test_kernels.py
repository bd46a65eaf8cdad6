"""Chapter 2: every Numba kernel agrees with its plain-Python reading and with the math.

Each test runs the compiled kernel and the plain function it was compiled
from on the same small input (odd sizes, strides 1, 2 and 3, padding 0, 1
and 2, float32 and float64), and checks both against a reference written
directly from the formula with NumPy.  The plain functions are slow, so the
inputs are tiny.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyprune import kernels
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
        lhs = np.sum(dy.astype(np.float64) * reference_depthwise(v, w, stride, pad))
        np.testing.assert_allclose(np.sum(dx * v), lhs, **TOL[dtype])
        np.testing.assert_allclose(dw, expected_dw, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_im2col_columns_hold_the_receptive_fields(kernel, stride, pad, dtype):
    x = random((2, 3, 7, 6), dtype, 6)
    KH, KW = kernel
    HO, WO = out_size(7, KH, stride, pad), out_size(6, KW, stride, pad)
    xp = padded(x, pad)
    expected = np.empty((2, 3 * KH * KW, HO * WO), dtype)
    for c in range(3):
        for a in range(KH):
            for b in range(KW):
                field = xp[:, c, a:a + stride * (HO - 1) + 1:stride, b:b + stride * (WO - 1) + 1:stride]
                expected[:, (c * KH + a) * KW + b] = field.reshape(2, -1)
    for fn in both("im2col"):
        cols = np.full(expected.shape, np.nan, dtype)
        fn(x, KH, KW, stride, pad, cols)
        np.testing.assert_array_equal(cols, expected)


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,pad", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(kernel, stride, pad, dtype):
    # <im2col(x), cols> = <x, col2im(cols)> for every x and cols
    KH, KW = kernel
    x = random((2, 3, 7, 6), np.float64, 7)
    HO, WO = out_size(7, KH, stride, pad), out_size(6, KW, stride, pad)
    cols = random((2, 3 * KH * KW, HO * WO), dtype, 8)
    unfolded = np.empty(cols.shape)
    kernels.im2col(x, KH, KW, stride, pad, unfolded)
    for fn in both("col2im"):
        dx = np.full(x.shape, np.nan, dtype)
        fn(cols, KH, KW, stride, pad, dx)
        np.testing.assert_allclose(np.sum(dx * x), np.sum(unfolded * cols), **TOL[dtype])


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_train_backward_matches_the_closed_form(dtype):
    x = random((3, 4, 5), dtype, 12) * 2
    dy = random((3, 4, 5), dtype, 13)
    gamma = random((4,), dtype, 14)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    inv = 1 / np.sqrt(var + 1e-5)
    xhat = (x64 - mean[:, None]) * inv[:, None]
    M = 15
    dbeta, dgamma = dy64.sum(axis=(0, 2)), (dy64 * xhat).sum(axis=(0, 2))
    expected = (gamma * inv / M)[:, None] * (M * dy64 - dbeta[:, None] - xhat * dgamma[:, None])
    for fn in both("batchnorm_train_backward"):
        dx = np.full(x.shape, np.nan, dtype)
        dg, db = np.empty(4), np.empty(4)
        fn(x, dy, gamma, mean, var, 1e-5, dx, dg, db)
        np.testing.assert_allclose(db, dbeta, rtol=1e-12, atol=1e-12)   # sums of dy: exact in float64
        np.testing.assert_allclose(dg, dgamma, **TOL[dtype])           # products dy*x round in float32
        np.testing.assert_allclose(dx, expected, **TOL[dtype])


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_slopehtanh_kernels_match_the_numpy_definition(dtype):
    x = np.array([-3.0, -1.5, -1.0, -0.25, 0.0, 0.5, 1.0, 1.0001, 2.0, 7.0], dtype)
    dy = random(x.shape, dtype, 19)
    slope = np.where(np.abs(x) <= 1, 1.0, -0.25)
    for fwd, bwd in zip(both("slopehtanh_forward"), both("slopehtanh_backward")):
        y = np.full(x.shape, np.nan, dtype)
        fwd(x, y)
        np.testing.assert_array_equal(y, slopehtanh(x))
        dx = np.full(x.shape, np.nan, dtype)
        bwd(x, dy, dx)
        np.testing.assert_array_equal(dx, (slope * dy).astype(dtype))


def test_to_csr_lists_the_nonzeros_row_by_row():
    w = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], np.float32)
    indptr, indices, values = kernels.to_csr(w)
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
    for fn in both("csr_pointwise"):
        out = np.full((2, 5, 7), np.nan, dtype)
        fn(*kernels.to_csr(w), x, out)
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
    assert figures["peak_memory"]["bytes"] > 0
    assert [row["sparsity"] for row in figures["sparse"]] == [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
    assert all(row["dense_s"] > 0 and row["csr_s"] > 0 for row in figures["sparse"])
    assert "images/s" in run.stdout
