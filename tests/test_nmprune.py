"""Chapter 3: N:M semi-structured sparsity (NMPrune), and what the counting rules make of it.

Run this chapter alone with ``python -m pytest -m prune``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyprune import Chain, Conv2d, Dense, MobileNet, compute_dot_prods, slopehtanh
from tinyprune.prune import NMPrune, prune, sparsity

from helpers import assert_same_snapshot, snapshot

pytestmark = pytest.mark.prune


def reference_nm_mask(w, n, m, keep=None):
    """Plain Python: in each group of m along a row, prune the m - n first in (kept?, |w|, position) order."""
    rows = w.reshape(w.shape[0], -1)
    kept_before = np.ones(rows.shape, bool) if keep is None else keep.reshape(rows.shape)
    mask = np.ones(rows.shape, bool)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], m):
            group = range(start, start + m)
            ranked = sorted(group, key=lambda i: (bool(kept_before[r, i]), abs(float(rows[r, i])), i))
            for i in ranked[:m - n]:
                mask[r, i] = False
    return mask.reshape(w.shape)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), m=st.integers(1, 6), rows=st.integers(1, 4), groups=st.integers(1, 4))
def test_every_group_of_m_keeps_its_n_largest_magnitudes_ties_pruned_earlier_first(data, m, rows, groups):
    n = data.draw(st.integers(0, m))
    values = data.draw(st.lists(st.integers(-3, 3), min_size=rows * groups * m, max_size=rows * groups * m))
    w = np.array(values, dtype=np.float32).reshape(rows, groups * m)    # small integers: many ties
    mask = NMPrune(n, m)(w)
    assert np.all((~mask).reshape(-1, m).sum(axis=1) == m - n), "a group without exactly m - n zeros"
    np.testing.assert_array_equal(mask, reference_nm_mask(w, n, m))


def test_ties_by_hand():
    # Groups of 4, keep 2.  [1, -2, 3, 0.5]: |w| ranks 0.5 < 1 < 2 < 3, so 0.5 and 1 go.
    # [4, 4, -4, 1]: 1 goes first, then of the three tied 4s the earliest.
    w = np.array([[1, -2, 3, 0.5, 4, 4, -4, 1]], dtype=np.float32)
    np.testing.assert_array_equal(NMPrune(2, 4)(w), [[False, True, True, False, False, True, True, False]])


def test_groups_run_along_the_input_dimension_of_each_output_channel():
    conv = Conv2d(2, 3, 2, rng=np.random.default_rng(0))      # rows of C_in*KH*KW = 8: two groups each
    mask = NMPrune(2, 4)(conv.weight)
    by_row = mask.reshape(3, 8)                               # OIHW flattened per output channel
    assert np.all(by_row[:, :4].sum(axis=1) == 2) and np.all(by_row[:, 4:].sum(axis=1) == 2)
    np.testing.assert_array_equal(mask, reference_nm_mask(conv.weight, 2, 4))
    dense = Dense(8, 5, rng=np.random.default_rng(1))         # (out, in): groups along in
    np.testing.assert_array_equal(NMPrune(2, 4)(dense.weight), reference_nm_mask(dense.weight, 2, 4))


def test_pruning_again_keeps_the_pattern_and_a_sparser_pattern_builds_on_it():
    w = np.random.default_rng(2).standard_normal((6, 16))
    first = NMPrune(2, 4)(w)
    np.testing.assert_array_equal(NMPrune(2, 4)(w * first, first) & first, first)
    second = NMPrune(1, 4)(w * first, first) & first          # masked entries rank first
    assert np.all((~second).reshape(-1, 4).sum(axis=1) == 3)
    np.testing.assert_array_equal(second, reference_nm_mask(w, 1, 4))


def test_on_mobilenet_only_the_layers_with_rows_of_a_multiple_of_m_are_pruned():
    model = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0)
    pruned = prune(NMPrune(2, 4), model)
    for row in sparsity(pruned):
        row_length = dict(pruned.named_layers())[row.path].weight[0].size
        # the first conv's 3*3*3 = 27 and every depthwise conv's 9 are left; 1x1 convs and dense layers halve
        assert row.fraction == (0.5 if row_length % 4 == 0 else 0.0), row.path
        assert (row_length % 4 == 0) == (row.type != "DepthwiseConv2d" and row.path != "[0][0]")


def test_a_layer_whose_rows_do_not_split_into_groups_is_refused_by_name():
    model = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=0)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\[0\]\[3\] is a DepthwiseConv2d; NMPrune\(2, 4\) prunes .*"
                                         r"whose rows hold a multiple of 4 weights only"):
        prune({"[0][3]": NMPrune(2, 4)}, model)
    assert_same_snapshot(before, snapshot(model))
    with pytest.raises(ValueError, match=r"NMPrune\(2, 4\): rows of 9 weights .* groups of 4"):
        NMPrune(2, 4)(model[0][3].weight)


@pytest.mark.parametrize("make, error, words", [
    (lambda: NMPrune(3, 2), ValueError, "at most m = 2"),
    (lambda: NMPrune(2, 0), ValueError, "m"),
    (lambda: NMPrune(2.0, 4), TypeError, "n"),
    (lambda: NMPrune(-1, 4), ValueError, "n"),
])
def test_bad_n_and_m_are_refused(make, error, words):
    with pytest.raises(error, match=words):
        make()


# ---------------------------------------------------------------------------
# Counting a 2:4 layer: tests of the count chapter's rules (count.1 reference,
# count.2 sparse, count.3 dense), on a layer NMPrune (no exercise) prunes
# ---------------------------------------------------------------------------

@pytest.mark.ex_count_1
@pytest.mark.ex_count_2
@pytest.mark.ex_count_3
def test_counts_of_a_2_4_conv_under_the_three_rules_by_hand():
    # Conv2d(2 -> 3, 2x2 kernel) on a 4x4 image: P = 3*3 = 9 output pixels, rows of K = 2*2*2 = 8
    # weights, C = 3 outputs.  2:4 keeps 4 of every row's 8: 12 scattered zeros, no zero channel.
    #   dense:     mults P*K*C = 9*8*3 = 216,        adds P*(K-1)*C = 9*7*3 = 189
    #   sparse:    mults P*(kept) = 9*12 = 108,      adds P*sum(kept per row - 1) = 9*(3+3+3) = 81
    #   reference: mults P*K*C - (scattered zeros) = 216 - 12 = 204, adds as dense (no zero channel) = 189
    model = prune(NMPrune(2, 4), Chain(Conv2d(2, 3, 2, rng=np.random.default_rng(3))))
    shape = (1, 2, 4, 4)
    assert compute_dot_prods(model, shape, "dense")[:2] == (216, 189)
    assert compute_dot_prods(model, shape, "sparse")[:2] == (108, 81)
    assert compute_dot_prods(model, shape, "reference")[:2] == (204, 189)


def compressed_2_4(w):
    """A 2:4 kernel's storage of a (C, K) matrix: the 2 kept values of each group of 4, and their positions."""
    c, k = w.shape
    groups = w.reshape(c, k // 4, 4)
    positions = np.nonzero(groups)[2].reshape(c, k // 4, 2)     # two non-zeros a group, in order
    return np.take_along_axis(groups, positions, axis=2), positions


@pytest.mark.ex_count_1
@pytest.mark.ex_count_2
def test_a_2_4_kernel_gives_the_same_output_with_the_sparse_rules_multiplies():
    conv = Conv2d(8, 3, 1, rng=np.random.default_rng(4)).to(np.float64)      # a pointwise conv, K = 8
    pruned = prune(NMPrune(2, 4), Chain(conv))
    x = np.random.default_rng(5).standard_normal((1, 8, 3, 3))
    values, positions = compressed_2_4(pruned[0].effective("weight").reshape(3, 8))
    assert positions.max() <= 3 and values.shape == (3, 2, 2)                   # half the values, 2-bit metadata
    pixels = x.reshape(8, 9)                                                    # (K, P)
    y = np.zeros((3, 9))
    multiplies = 0
    for o in range(3):
        for g in range(2):
            for j in range(2):
                y[o] += values[o, g, j] * pixels[4 * g + positions[o, g, j]]    # one multiply per pixel
                multiplies += pixels.shape[1]
    np.testing.assert_allclose(y.reshape(1, 3, 3, 3), pruned.eval()(x), rtol=1e-12)
    assert multiplies == compute_dot_prods(pruned, x.shape, "sparse")[0] == 3 * 8 * 9 // 2
    assert compute_dot_prods(pruned, x.shape, "reference")[0] == 3 * 8 * 9 - 12     # each zero saved once
