"""The convolutions' matrix products on Numba's threads agree with NumPy's, compiled and plain.

Every kernel of tinyprune/products.py is run twice, compiled and as the plain
function it was compiled from, on shapes that leave rows over after the
blocks of 8 (or 4) and inputs over after the blocks of 4, and compared with
``np.matmul``.  The batch wrappers are checked on both sides of
``FOLD_BELOW`` (per image, and folded into one long image).
"""

import numpy as np
import pytest

from tinyprune import Conv2d, products

pytestmark = pytest.mark.kernels

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
# (N, R, K, P): rows R and inputs K with and without leftovers after the blocks (of 8 rows,
# then 4 rows; of 4 inputs)
SHAPES = [(2, 8, 4, 5), (3, 11, 7, 9), (1, 3, 2, 1), (2, 17, 13, 6), (2, 14, 9, 7), (1, 4, 8, 20)]


def both(name):
    """The compiled kernel and the plain function it was compiled from."""
    return [getattr(products, name), getattr(products, "_" + name)]


def random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, R, K, P", SHAPES)
def test_matmul_images_is_a_at_each_image(N, R, K, P, dtype):
    a, b = random((R, K), dtype, 0), random((N, K, P), dtype, 1)
    for fn in both("matmul_images"):
        out = np.full((N, R, P), np.nan, dtype)
        fn(a, b, out)
        np.testing.assert_allclose(out, np.matmul(a, b), **TOL[dtype], err_msg=fn.__name__)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, R, K, P", SHAPES)
def test_sum_outer_is_the_sum_over_images_of_g_times_x_transposed(N, R, K, P, dtype):
    g, x = random((N, R, P), dtype, 2), random((N, K, P), dtype, 3)
    expected = np.einsum("nrp,nkp->rk", g.astype(np.float64), x.astype(np.float64))
    for fn in both("sum_outer"):
        out = np.full((R, K), np.nan, dtype)
        fn(g, x, out)
        np.testing.assert_allclose(out, expected, **TOL[dtype], err_msg=fn.__name__)


def test_matmul_images_covers_long_rows():
    # 549 pixels: whole vector blocks and a rest (compiled kernel only: the plain one is slow)
    P = 549
    a, b = random((9, 6), np.float64, 4), random((2, 6, P), np.float64, 5)
    out = np.full((2, 9, P), np.nan)
    products.matmul_images(a, b, out)
    np.testing.assert_allclose(out, np.matmul(a, b), **TOL[np.float64])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P", [products.FOLD_BELOW - 1, products.FOLD_BELOW])
def test_the_batch_products_match_numpy_folded_or_not(P, dtype):
    a, b, g = random((10, 6), dtype, 6), random((3, 6, P), dtype, 7), random((3, 10, P), dtype, 8)
    y = products.batched_matmul(a, b)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_allclose(y, np.matmul(a, b), **TOL[dtype])
    dw = products.batched_sum_outer(g, b)
    assert dw.dtype == dtype
    np.testing.assert_allclose(dw, np.matmul(g, b.transpose(0, 2, 1)).sum(axis=0), **TOL[dtype])
    # a transposed (non-contiguous) a, as Conv2d.backward passes w.T
    np.testing.assert_allclose(products.batched_matmul(a.T, g), np.matmul(a.T, g), **TOL[dtype])


@pytest.mark.ex_layers_4                    # Conv2d.backward is the exercise
@pytest.mark.parametrize("kernel, size", [(1, 9), (1, 3), (3, 9)])
def test_a_convolution_gives_the_same_gradients_with_the_plain_products(monkeypatch, kernel, size):
    """Conv2d through the compiled products and through their plain twins, float64."""
    conv = Conv2d(5, 7, kernel, pad=kernel // 2, bias=True, rng=np.random.default_rng(9)).to(np.float64)
    x = random((3, 5, size, size), np.float64, 10)
    results = []
    for plain in (False, True):
        if plain:
            for name in ("matmul_images", "sum_outer"):
                monkeypatch.setattr(products, name, getattr(products, "_" + name))
        y = conv.forward(x)
        dx = conv.backward(random(y.shape, np.float64, 11))
        results.append((y, dx, conv.grads["weight"], conv.grads["bias"]))
    for compiled, plain in zip(*results):
        np.testing.assert_allclose(compiled, plain, rtol=1e-12, atol=1e-12)


def test_a_row_gets_the_same_bits_in_a_block_of_8_or_4_or_alone():
    a, b = random((8, 12), np.float32, 4), random((12, 37), np.float32, 5)
    rows = {}
    for name, kernel in [("eight", lambda y: products.eight_rows(a, b, 0, 0, 37, y)),
                         ("four", lambda y: products.four_rows(a, b, 4, 0, 37, y)),
                         ("one", lambda y: [products.one_row(a, b, r, 0, 0, 37, y) for r in range(4, 8)])]:
        y = np.zeros((8, 37), np.float32)
        kernel(y)
        rows[name] = y[4:]
    np.testing.assert_array_equal(rows["four"], rows["one"])
    np.testing.assert_array_equal(rows["four"], rows["eight"])
