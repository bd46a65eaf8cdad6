"""Chapter 6: counting the multiplies and adds of a forward pass.

The tutorial's numbers (7,505,600 multiplies and 7,273,983 adds; 7,460,806
after LevelPrune(0.2), 6,105,200 after ChannelPrune(0.2)), a closed form for
other widths and resolutions, and small cases worked out by hand for each of
the three rules, each rule also on its own (``count.reference_counts``,
``count.sparse_counts``, ``count.dense_counts``: exercises count.1, count.2
and count.3).  The pruned models are made here, without the prune chapter,
so these tests run in a course copy where pruning is an exercise.

Run this chapter alone with ``python -m pytest -m count``, one rule's tests
with ``-m ex_count_1`` (reference), ``ex_count_2`` (sparse), ``ex_count_3`` (dense).
"""

import math
import re
from xml.etree import ElementTree

import numpy as np
import pytest

from tinyprune import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool,
                       HardTanh, Identity, MobileNet, ReLU, SlopeHTanh, TUTORIAL_INPUT, compute_dot_prods,
                       dot_prod_table, slopehtanh)
from tinyprune import count
from tinyprune.count import format_html_table

from mobilenet_table import CONFIG

pytestmark = pytest.mark.count

# Each rule is an exercise; a test of one rule carries its marker.
EXERCISE = {"reference": pytest.mark.ex_count_1, "sparse": pytest.mark.ex_count_2, "dense": pytest.mark.ex_count_3}
RULES = [pytest.param(rule, marks=EXERCISE[rule], id=rule) for rule in EXERCISE]
ALL_RULES = tuple(EXERCISE)
EVERY_RULE = [pytest.mark.ex_count_1, pytest.mark.ex_count_2, pytest.mark.ex_count_3]


def closed_form(width, side, fcsize=64, nclasses=1, batch=1):
    """(mults, adds) of an unpruned MobileNet, from the configuration table alone.

    A conv with P output pixels, K terms per dot product and C output
    channels does P*K*C multiplies and P*(K-1)*C adds; a dense layer is
    P = 1, K = in, C = out.  Every 3x3 conv has padding 1, so a side s
    becomes (s - 1) // stride + 1.
    """
    mults = adds = 0

    def conv(P, K, C):
        nonlocal mults, adds
        mults += P * K * C
        adds += P * (K - 1) * C

    c_in = 3
    for depthwise, channels, stride, repeats in CONFIG:
        c_out = int(channels * width)
        for _ in range(repeats):
            side = (side - 1) // stride + 1
            P = side * side
            if depthwise:
                conv(P, 3 * 3, c_in)          # depthwise 3x3: one input channel per output
                conv(P, c_in, c_out)          # pointwise 1x1
            else:
                conv(P, 3 * 3 * c_in, c_out)  # full 3x3
            c_in = c_out
    conv(1, c_in, fcsize)
    conv(1, fcsize, nclasses)
    return batch * mults, batch * adds


@pytest.fixture(scope="module")
def tutorial():
    return MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)


# ---------------------------------------------------------------------------
# The tutorial's numbers and the closed form
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_tutorial_model_counts_7505600_mults_and_7273983_adds(tutorial, rule):
    mults, adds, out_shape = compute_dot_prods(tutorial, TUTORIAL_INPUT, rule=rule)
    assert (mults, adds) == (7_505_600, 7_273_983), \
        f"the tutorial's unpruned MobileNet under the {rule!r} rule: counted {mults:,} multiplies and {adds:,} " \
        "adds, the course's numbers are 7,505,600 and 7,273,983 (no zero weights: every rule agrees)"
    assert out_shape == (1, 1)


def test_closed_form_reproduces_the_tutorial_numbers():
    assert closed_form(0.25, 96) == (7_505_600, 7_273_983)


@pytest.mark.ex_count_1
def test_default_rule_is_reference(tutorial):
    assert compute_dot_prods(tutorial, TUTORIAL_INPUT)[:2] == (7_505_600, 7_273_983)
    assert dot_prod_table(tutorial, TUTORIAL_INPUT).rule == "reference"


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
@pytest.mark.ex_count_1
@pytest.mark.ex_count_2
@pytest.mark.ex_count_3
def test_counts_follow_the_closed_form_for_widths_and_resolutions(width):
    # Eval mode: at 32x32 the last maps are 1x1, which a train-mode BatchNorm
    # cannot normalise with batch 1 (the next test is about that).
    model = MobileNet(slopehtanh, width, fcsize=64, nclasses=1, seed=0).eval()
    for side in (32, 64, 96, 128, 224):
        expected = closed_form(width, side)
        for rule in ALL_RULES:
            mults, adds, _ = compute_dot_prods(model, (1, 3, side, side), rule=rule)
            assert (mults, adds) == expected, \
                f"MobileNet width {width} on {side} x {side}, {rule!r} rule: counted ({mults:,}, {adds:,}), the " \
                f"closed form P*K*C, P*(K-1)*C summed over the layers gives ({expected[0]:,}, {expected[1]:,})"


@pytest.mark.ex_count_1
@pytest.mark.ex_count_2
@pytest.mark.ex_count_3
def test_counts_do_not_depend_on_train_or_eval_mode():
    # Counting is about the architecture and the weights, not about batch
    # statistics: a model as built (train mode) counts at any resolution the
    # same as in eval mode, even where the last maps are 1x1 (32x32 input).
    model = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)
    for rule in ALL_RULES:
        assert compute_dot_prods(model, (1, 3, 32, 32), rule=rule)[:2] == closed_form(0.25, 32), rule
    assert model.training


@pytest.mark.ex_count_3
def test_closed_form_for_another_head():
    model = MobileNet(slopehtanh, 0.5, fcsize=10, nclasses=3, seed=0)
    mults, adds, out_shape = compute_dot_prods(model, (1, 3, 64, 64), rule="dense")
    assert (mults, adds) == closed_form(0.5, 64, fcsize=10, nclasses=3)
    assert out_shape == (1, 3)


@pytest.mark.parametrize("rule", RULES)
def test_batch_size_multiplies_the_counts(tutorial, rule):
    mults, adds, out_shape = compute_dot_prods(tutorial, (3, 3, 96, 96), rule=rule)
    assert (mults, adds) == (3 * 7_505_600, 3 * 7_273_983), \
        f"3 images under the {rule!r} rule: counted ({mults:,}, {adds:,}), expected 3 x (7,505,600, 7,273,983)"
    assert out_shape == (3, 1)


# ---------------------------------------------------------------------------
# The course's pruned models
# ---------------------------------------------------------------------------

WEIGHTED = (Conv2d, DepthwiseConv2d, Dense)


def level_pruned(model, level):
    """A copy of ``model`` with the zeros ``prune(LevelPrune(level), model)`` leaves, made without it.

    In each conv and dense weight of n entries the n - ceil((1 - level) n)
    of smallest magnitude (ties by position) become 0.0.  No masks: zeros
    count as masked entries do (``test_masked_weights_count_as_zero``).
    """
    result = model.copy()
    for _, layer in result.named_layers():
        if isinstance(layer, WEIGHTED):
            w = layer.weight
            n_zeros = w.size - math.ceil((1 - level) * w.size)
            smallest = np.argsort(np.abs(w), axis=None, kind="stable")[:n_zeros]
            w[np.unravel_index(smallest, w.shape)] = 0
    return result


def channel_pruned(model, level):
    """A copy of ``model`` with the zero weights ``prune(ChannelPrune(level), model)`` leaves, made without it.

    In each Conv2d and DepthwiseConv2d of C output channels the
    C - ceil((1 - level) C) of smallest L1 norm (ties by index) become all
    zero; the dense layers keep every weight.  (Biases and BatchNorms,
    which ChannelPrune also zeroes, count nothing.)
    """
    result = model.copy()
    for _, layer in result.named_layers():
        if isinstance(layer, (Conv2d, DepthwiseConv2d)):
            w = layer.weight
            n_dead = len(w) - math.ceil((1 - level) * len(w))
            w[np.argsort(np.abs(w).reshape(len(w), -1).sum(axis=1), kind="stable")[:n_dead]] = 0
    return result


# The course's counts of MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1) on one 96 x 96
# image, the same for every seed: (mults, adds) by rule.  LevelPrune(0.2) scatters its zeros,
# which the reference rule barely notices; ChannelPrune(0.2) kills whole channels.
PRUNED_COUNTS = {
    "LevelPrune(0.2)": (level_pruned, {"reference": (7_460_806, 7_273_983), "sparse": (6_009_230, 5_777_613),
                                       "dense": (7_505_600, 7_273_983)}),
    "ChannelPrune(0.2)": (channel_pruned, {"reference": (6_105_200, 5_915_181), "sparse": (6_105_200, 5_915_181),
                                           "dense": (7_505_600, 7_273_983)}),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("pruning", PRUNED_COUNTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_course_numbers_of_the_pruned_tutorial_model(seed, pruning, rule):
    make, counts = PRUNED_COUNTS[pruning]
    level = float(pruning[pruning.index("(") + 1:-1])
    model = make(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed), level)
    got = compute_dot_prods(model, TUTORIAL_INPUT, rule=rule)[:2]
    assert got == counts[rule], (f"{pruning} of MobileNet(seed={seed}) under the {rule!r} rule: counted "
                                 f"{got[0]:,} multiplies and {got[1]:,} adds, the course's numbers are "
                                 f"{counts[rule][0]:,} and {counts[rule][1]:,}")


# ---------------------------------------------------------------------------
# Each rule on its own: (mults, adds) of one weight matrix (C, K) over P patches
# ---------------------------------------------------------------------------

def assert_rule_counts(rule, w, patches, want):
    """``count.<rule>_counts(w, patches)`` gives ``want``, or a message naming the input."""
    function = getattr(count, f"{rule}_counts")
    w = np.array(w, dtype=np.float32)
    got = function(w, patches)
    C, K = w.shape
    assert tuple(got) == want, (f"{function.__name__}(w, patches={patches}) with w = {w.tolist()} "
                                f"(C = {C} channels of K = {K} weights): got (mults, adds) = {tuple(got)}, "
                                f"expected {want}")


# Weight matrices, one output channel per row, and their (mults, adds) on P = 4 patches by rule.
#   no zeros:       C = 2, K = 3.  Every rule: 4*3*2 = 24 mults, 4*2*2 = 16 adds.
#   one scattered:  row 0 has one zero (U = 1).  Reference: 24 - 1 = 23 mults, 16 adds (a scattered
#                   zero saves one multiply in all, no add).  Sparse: 4*(2+3) = 20, 4*(1+2) = 12.
#   one dead row:   row 1 all zero (Z = 1).  Reference: 24 - 4*3 = 12 mults, 4*2*1 = 8 adds.
#                   Sparse: 4*3 = 12, 4*2 = 8 (a dead row costs nothing, not -1 add).
#   both:           the docstring's case, U = 1, Z = 1.  Reference: 24 - 1 - 12 = 11, 8.
#                   Sparse: 4*2 = 8, 4*1 = 4.
#   depthwise:      C = 3, K = 9: row 0 has 2 zeros, row 2 is dead.  Reference: 4*9*3 - 2 - 4*9 = 70,
#                   4*8*2 = 64.  Sparse: 4*(7+9) = 64, 4*(6+8) = 56.  Dense: 108, 96.
#   one weight:     C = 1, K = 1: one multiply per patch and no add.
BY_HAND = {
    "no zeros": ([[1, 2, 3], [4, 5, 6]], {"reference": (24, 16), "sparse": (24, 16), "dense": (24, 16)}),
    "one scattered": ([[1, 0, 2], [3, 4, 5]], {"reference": (23, 16), "sparse": (20, 12), "dense": (24, 16)}),
    "one dead row": ([[1, 2, 3], [0, 0, 0]], {"reference": (12, 8), "sparse": (12, 8), "dense": (24, 16)}),
    "both": ([[1, 0, 2], [0, 0, 0]], {"reference": (11, 8), "sparse": (8, 4), "dense": (24, 16)}),
    "depthwise": ([[0, 1, 2, 3, 0, 4, 5, 6, 7], [1] * 9, [0] * 9],
                  {"reference": (70, 64), "sparse": (64, 56), "dense": (108, 96)}),
    "one weight": ([[-0.5]], {"reference": (4, 0), "sparse": (4, 0), "dense": (4, 0)}),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", BY_HAND)
def test_each_rule_on_one_weight_matrix_by_hand(case, rule):
    w, counts = BY_HAND[case]
    assert_rule_counts(rule, w, 4, counts[rule])


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_on_one_patch_is_a_dense_layers_count(rule):
    # A dense layer is the case P = 1: weight (out = 3, in = 4) with 1 + 4 + 2 zeros, row 1 dead.
    w = [[1, 2, 0, 3], [0, 0, 0, 0], [0, 4, 5, 0]]
    want = {"reference": (12 - 7, 3 * 2), "sparse": (3 + 2, 2 + 1), "dense": (12, 9)}[rule]
    assert_rule_counts(rule, w, 1, want)


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_grows_with_the_patches_as_its_formula_says(rule):
    # Reference: P*K*C - U - Z*P*K grows by K*(C - Z) per patch, and U does not; sparse and dense are P * (one patch).
    w = [[1, 0, 2], [0, 0, 0], [3, 4, 5]]
    one, many = ({"reference": (9 - 1 - 3, 4), "sparse": (5, 3), "dense": (9, 6)}[rule],
                 {"reference": (7 * 9 - 1 - 7 * 3, 7 * 2 * 2), "sparse": (35, 21), "dense": (63, 42)}[rule])
    assert_rule_counts(rule, w, 1, one)
    assert_rule_counts(rule, w, 7, many)


# ---------------------------------------------------------------------------
# Small cases worked out by hand, one per layer type and rule
# ---------------------------------------------------------------------------

def conv_with_zeros():
    """Conv2d(2, 3, 3, pad=1): K = 2*3*3 = 18 terms, C = 3 outputs; on 4x4, P = 16.

    Output channel 1 is all zero (Z = 1); channel 0 has 2 scattered zeros,
    channel 2 has 1 (U = 3).  Non-zero weights per channel: 16, 0, 17.
    """
    conv = Conv2d(2, 3, 3, pad=1, rng=np.random.default_rng(0))
    conv.weight[1] = 0
    conv.weight[0, 0, 0, 0] = 0
    conv.weight[0, 1, 2, 1] = 0
    conv.weight[2, 1, 1, 1] = 0
    return conv


# P = 16, K = 18, C = 3, Z = 1, U = 3:
#   reference  mults 16*18*3 - 3 - 1*16*18 = 573,    adds 16*17*(3-1) = 544
#   sparse     mults 16*(16+0+17) = 528,             adds 16*(15+0+16) = 496
#   dense      mults 16*18*3 = 864,                  adds 16*17*3 = 816
CONV_COUNTS = {"reference": (573, 544), "sparse": (528, 496), "dense": (864, 816)}


@pytest.mark.parametrize("rule", RULES)
def test_masked_weights_count_as_zero(rule):
    zeroed = conv_with_zeros()
    masked = Conv2d(2, 3, 3, pad=1, rng=np.random.default_rng(0))
    masked.masks["weight"] = zeroed.weight != 0
    weights = masked.weight.copy()
    counts = compute_dot_prods(Chain(masked), (1, 2, 4, 4), rule=rule)[:2]
    assert counts == CONV_COUNTS[rule], \
        f"Conv2d(2, 3, 3) on 4 x 4 with the zeros of conv_with_zeros as a mask, {rule!r} rule: counted {counts}, " \
        f"expected {CONV_COUNTS[rule]} as with the zeros stored"
    np.testing.assert_array_equal(masked.weight, weights)     # counting changes nothing


def depthwise_with_zeros():
    """DepthwiseConv2d(3, 3, stride=2, pad=1): K = 9, C = 3; on 5x5 the output is 3x3, P = 9.

    Channel 2 is all zero (Z = 1); channel 0 has 2 scattered zeros (U = 2).
    Non-zero weights per channel: 7, 9, 0.
    """
    dw = DepthwiseConv2d(3, 3, stride=2, pad=1, rng=np.random.default_rng(1))
    dw.weight[2] = 0
    dw.weight[0, 0, 0, 0] = 0
    dw.weight[0, 0, 2, 2] = 0
    return dw


# P = 9, K = 9, C = 3, Z = 1, U = 2:
#   reference  mults 9*9*3 - 2 - 1*9*9 = 160,   adds 9*8*(3-1) = 144
#   sparse     mults 9*(7+9+0) = 144,           adds 9*(6+8+0) = 126
#   dense      mults 9*9*3 = 243,               adds 9*8*3 = 216
DEPTHWISE_COUNTS = {"reference": (160, 144), "sparse": (144, 126), "dense": (243, 216)}


def dense_head_with_zeros():
    """Pool -> flatten -> Dense(4, 3): weight (3, 4), K = 4 inputs, C = 3 outputs.

    Row 1 is all zero; row 0 has 1 zero, row 2 has 2: 7 zeros in all, 1 dead row.
    Non-zero weights per row: 3, 0, 2.
    """
    dense = Dense(4, 3, rng=np.random.default_rng(2))
    dense.weight[1] = 0
    dense.weight[0, 2] = 0
    dense.weight[2, 0] = 0
    dense.weight[2, 3] = 0
    return Chain(GlobalMeanPool(), Flatten(), dense)


# in = 4, out = 3, 7 zero weights, 1 all-zero row:
#   reference  mults 4*3 - 7 = 5,    adds (4-1)*(3-1) = 6
#   sparse     mults 3+0+2 = 5,      adds 2+0+1 = 3
#   dense      mults 4*3 = 12,       adds 3*3 = 9
DENSE_COUNTS = {"reference": (5, 6), "sparse": (5, 3), "dense": (12, 9)}


# Each case: the model, the input shape, the output shape, the counts worked out above.
HAND_CASES = {
    "conv": (lambda: Chain(conv_with_zeros()), (1, 2, 4, 4), (1, 3, 4, 4), CONV_COUNTS),
    "depthwise": (lambda: Chain(depthwise_with_zeros()), (1, 3, 5, 5), (1, 3, 3, 3), DEPTHWISE_COUNTS),
    "dense": (dense_head_with_zeros, (1, 4, 5, 5), (1, 3), DENSE_COUNTS),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", HAND_CASES)
def test_counts_by_hand(case, rule):
    build, input_shape, output_shape, counts = HAND_CASES[case]
    mults, adds, out_shape = compute_dot_prods(build(), input_shape, rule=rule)
    assert (mults, adds) == counts[rule], \
        f"the {case} case of HAND_CASES on input {input_shape}, {rule!r} rule: counted ({mults}, {adds}), " \
        f"worked out by hand (the comment above the case): {counts[rule]}"
    assert out_shape == output_shape


@pytest.mark.parametrize("rule", RULES)
def test_hand_counts_scale_with_the_batch(rule):
    assert compute_dot_prods(Chain(conv_with_zeros()), (2, 2, 4, 4), rule=rule)[:2] == \
        tuple(2 * n for n in CONV_COUNTS[rule])
    assert compute_dot_prods(dense_head_with_zeros(), (3, 4, 5, 5), rule=rule)[:2] == \
        tuple(3 * n for n in DENSE_COUNTS[rule])


@pytest.mark.ex_count_3
def test_biases_are_not_counted():
    with_bias = Conv2d(2, 3, 3, pad=1, bias=True, rng=np.random.default_rng(0))
    with_bias.bias[:] = 1.0
    assert compute_dot_prods(Chain(with_bias), (1, 2, 4, 4), rule="dense")[:2] == (16 * 18 * 3, 16 * 17 * 3)


@pytest.mark.ex_count_1
def test_a_scattered_zero_saves_one_multiply_in_total_under_the_reference_rule():
    # The original's asymmetry: one zero in a conv saves 1 multiply (not one
    # per patch) and no add; a whole zero channel saves P*K multiplies and
    # P*(K-1) adds.  Conv2d(2, 3, 3, pad=1) on 4x4: P = 16, K = 18.
    conv = Conv2d(2, 3, 3, pad=1, rng=np.random.default_rng(3))
    full = compute_dot_prods(Chain(conv), (1, 2, 4, 4))[:2]
    conv.weight[0, 0, 1, 1] = 0
    one_zero = compute_dot_prods(Chain(conv), (1, 2, 4, 4))[:2]
    conv.weight[2] = 0
    dead_channel = compute_dot_prods(Chain(conv), (1, 2, 4, 4))[:2]
    assert full == (864, 816)
    assert one_zero == (863, 816)
    assert dead_channel == (863 - 16 * 18, 816 - 16 * 17)


@pytest.mark.parametrize("rule", RULES)
def test_layers_without_dot_products_count_zero(rule):
    model = Chain(BatchNorm2d(3), ReLU(), SlopeHTanh(), HardTanh(), Identity(), GlobalMeanPool(), Flatten())
    table = dot_prod_table(model, (2, 3, 8, 8), rule=rule)
    assert [(row[3], row[4]) for row in table] == [(0, 0)] * 7
    assert compute_dot_prods(model, (2, 3, 8, 8), rule=rule) == (0, 0, (2, 3))


@pytest.mark.ex_count_3
def test_mobilenet_table_counts_only_conv_and_dense_rows(tutorial):
    table = dot_prod_table(tutorial, TUTORIAL_INPUT, rule="dense")
    assert len(table) == 86
    for path, kind, shape, mults, adds in table:
        if kind in ("Conv2d", "DepthwiseConv2d", "Dense"):
            assert mults > 0 and adds > 0, path
        else:
            assert (mults, adds) == (0, 0), path


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

@pytest.mark.ex_count_1
def test_table_rows_name_path_type_shape_and_counts(tutorial):
    table = dot_prod_table(tutorial, TUTORIAL_INPUT)
    # The first conv: P = 48*48, K = 3*3*3, C = 8.
    assert table[0] == ("[0][0]", "Conv2d", (1, 8, 48, 48), 48 * 48 * 27 * 8, 48 * 48 * 26 * 8)
    assert table[1][:3] == ("[0][1]", "BatchNorm2d", (1, 8, 48, 48))
    assert table[-1] == ("[1][4]", "Dense", (1, 1), 64, 63)


@pytest.mark.parametrize("rule", RULES)
def test_table_totals_equal_compute_dot_prods(tutorial, rule):
    table = dot_prod_table(tutorial, (2, 3, 64, 64), rule=rule)
    mults, adds, _ = compute_dot_prods(tutorial, (2, 3, 64, 64), rule=rule)
    assert (table.mults, table.adds) == (mults, adds)
    assert table.mults == sum(row[3] for row in table)


@pytest.mark.ex_count_1
def test_table_prints_aligned_columns_with_totals(tutorial):
    text = str(dot_prod_table(tutorial, TUTORIAL_INPUT))
    lines = text.splitlines()
    assert "reference" in lines[0]
    body = lines[1:]
    assert len(body) == 1 + 1 + 86 + 1 + 1      # header, rule, rows, rule, total
    # Numbers are right-aligned: every line ends in the same column.
    assert len({len(line) for line in body}) == 1
    header = body[0]
    assert header.split() == ["layer", "type", "output", "shape", "mults", "adds"]
    total = body[-1]
    assert total.split() == ["total", "7,505,600", "7,273,983"]
    # The mults column ends at the same place in every row.
    mults_end = header.index("mults") + len("mults")
    for line in body[2:-2] + [total]:
        assert line[:mults_end].rstrip()[-1].isdigit(), line
        assert line[mults_end] == " ", line
    row = next(line for line in body if line.startswith("[0][0]"))
    assert "Conv2d" in row and "(1, 8, 48, 48)" in row and "497,664" in row


@pytest.mark.ex_count_1
def test_table_shows_as_its_text_at_a_prompt_and_stays_a_list_of_tuples(tutorial):
    table = dot_prod_table(tutorial, TUTORIAL_INPUT)
    assert repr(table) == str(table)
    assert repr(table).splitlines()[-1].split() == ["total", "7,505,600", "7,273,983"]
    assert isinstance(table, list) and len(table) == 86
    assert table[-1] == ("[1][4]", "Dense", (1, 1), 64, 63)


@pytest.mark.ex_count_1
def test_table_shows_as_an_html_table_in_jupyter_with_the_same_columns_and_total(tutorial):
    table = dot_prod_table(tutorial, TUTORIAL_INPUT)
    root = ElementTree.fromstring(table._repr_html_())     # well-formed: every cell escaped and closed
    assert root.tag == "table"
    assert root.find("caption").text == "dot products, rule 'reference'"
    assert [th.text for th in root.find("thead/tr")] == ["layer", "type", "output shape", "mults", "adds"]
    rows = [[td.text or "" for td in tr] for tr in root.find("tbody")]
    assert len(rows) == 86
    assert rows[0] == ["[0][0]", "Conv2d", "(1, 8, 48, 48)", "497,664", "479,232"]
    assert [th.text or "" for th in root.find("tfoot/tr")] == ["total", "", "", "7,505,600", "7,273,983"]
    # Names to the left, numbers to the right, as in the text table.
    assert [td.get("style") for td in root.find("tbody/tr")] == ["text-align:left"] * 3 + ["text-align:right"] * 2


def test_html_table_escapes_its_cells():
    html = format_html_table(("a<b", "n"), [("x & y", 1)], total=("<total>", 1), title="t > 0")
    assert "a&lt;b" in html and "x &amp; y" in html and "&lt;total&gt;" in html and "t &gt; 0" in html
    assert ElementTree.fromstring(html).find("tbody/tr/td").text == "x & y"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def test_unknown_rule_raises_naming_the_function_the_rule_and_the_choices(tutorial):
    message = r"unknown counting rule 'fast'; expected one of reference, sparse, dense"
    with pytest.raises(ValueError, match=r"compute_dot_prods: " + message):
        compute_dot_prods(tutorial, TUTORIAL_INPUT, rule="fast")
    with pytest.raises(ValueError, match=r"dot_prod_table: " + message):
        dot_prod_table(tutorial, TUTORIAL_INPUT, rule="fast")


def test_input_shape_that_does_not_fit_names_the_layer(tutorial):
    with pytest.raises(ValueError, match=r"model\[0\]\[0\]: Conv2d expects 3 input channels, got 1"):
        compute_dot_prods(tutorial, (1, 1, 96, 96))
    with pytest.raises(ValueError, match=r"compute_dot_prods: input_shape must be \(N, C, H, W\), "
                                         r"got \(3, 96, 96\)"):
        compute_dot_prods(tutorial, (3, 96, 96))


@pytest.mark.parametrize("input_shape,error,message", [
    ((1, 3, 0, 96), ValueError, r"input_shape\[2\] must be an integer >= 1, got 0"),
    ((1, 3, 96.5, 96), TypeError, r"input_shape\[2\] must be an integer >= 1, got 96.5"),
    ((-1, 3, 96, 96), ValueError, r"input_shape\[0\] must be an integer >= 1, got -1"),   # was: negative counts
    ((1, 3, 96.7, 96), TypeError, r"input_shape\[2\] must be an integer >= 1, got 96.7"),  # was: read as 96
    ((1, True, 96, 96), TypeError, r"input_shape\[1\] must be an integer >= 1, got True"),
    ([1, 3, "96", 96], TypeError, r"input_shape\[2\] must be an integer >= 1, got '96'"),
])
def test_input_shape_entries_must_be_positive_integers(tutorial, input_shape, error, message):
    with pytest.raises(error, match=r"dot_prod_table: " + message):
        dot_prod_table(tutorial, input_shape)


@pytest.mark.ex_count_2
def test_counting_does_not_change_the_model(tutorial):
    before = tutorial.state_dict()
    compute_dot_prods(tutorial, TUTORIAL_INPUT, rule="sparse")
    after = tutorial.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert all(layer.training for _, layer in tutorial.named_layers())


@pytest.mark.parametrize("function", [compute_dot_prods, dot_prod_table])
@pytest.mark.parametrize("input_shape", ["1,3,96,96", 96, None, {1: 3}])
def test_input_shape_must_be_a_tuple_of_ints_naming_the_function(tutorial, function, input_shape):
    # A string was read as nine one-character entries ("invalid literal for int()").
    with pytest.raises(TypeError, match=rf"{function.__name__}: input_shape must be a tuple of four positive ints "
                                        rf"\(N, C, H, W\) such as \(1, 3, 96, 96\), got {re.escape(repr(input_shape))}"):
        function(tutorial, input_shape)


@pytest.mark.ex_count_1
def test_input_shape_may_be_a_list_or_a_numpy_array(tutorial):
    counts = compute_dot_prods(tutorial, TUTORIAL_INPUT)
    assert compute_dot_prods(tutorial, list(TUTORIAL_INPUT)) == counts
    assert compute_dot_prods(tutorial, np.array(TUTORIAL_INPUT)) == counts


@pytest.mark.parametrize("function", [compute_dot_prods, dot_prod_table])
def test_a_model_that_is_not_one_is_refused_naming_the_function(function):
    with pytest.raises(TypeError, match=rf"{function.__name__}: expected a model \(a Layer or Chain\), got NoneType"):
        function(None, TUTORIAL_INPUT)


@pytest.mark.parametrize("rule", [None, 1, ["dense"]])
def test_a_rule_that_is_not_a_string_is_refused_naming_the_choices(tutorial, rule):
    with pytest.raises(TypeError, match=r"compute_dot_prods: the counting rule must be one of reference, sparse, "
                                        rf"dense \(a string\), got {re.escape(repr(rule))}"):
        compute_dot_prods(tutorial, TUTORIAL_INPUT, rule=rule)


def test_a_layer_that_does_not_fit_is_named_with_the_function(tutorial):
    with pytest.raises(ValueError, match=r"^dot_prod_table: model\[0\]\[0\]: Conv2d expects 3 input channels"):
        dot_prod_table(tutorial, (1, 1, 96, 96))
