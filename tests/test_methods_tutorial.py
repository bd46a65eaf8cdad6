"""Chapter 10: tutorials/methods.py runs and compares the methods at the budget it promises.

It runs once, as a script, with ``TINYPRUNE_QUICK=1`` (64 training and 32
validation images) in a scratch folder; the tests check its ``results``:
exact where the pipeline is exact (counts, levels the budget fixes), ranges
for accuracies after training.
"""

import pytest

from tinyprune import Conv2d, Dense, DepthwiseConv2d, dot_prod_table, pretrained
from tinyprune.pipeline import TUTORIAL_INPUT

from test_tutorials import QUICK_VAL_IMAGES, is_whole_share, run_tutorial

pytestmark = [pytest.mark.tutorials, pytest.mark.integration]   # runs the whole pipeline: see conftest.py

DENSE_MULTS = 7_505_600                 # the tutorial's MobileNet, unpruned (the course's number)
CHANNEL_METHODS = ["channels, L1 (course)", "channels, L1, gradual", "channels, L2",
                   "channels, BatchNorm |gamma|", "channels, Taylor", "channels, random"]
WEIGHT_METHODS = ["weights, uniform", "weights, uniform, gradual", "weights, global", "2:4"]


@pytest.fixture(scope="module")
def methods(tmp_path_factory):
    folder = tmp_path_factory.mktemp("methods")
    return run_tutorial("methods.py", folder)[0], folder


def test_the_budget_is_half_the_dense_multiplies(methods):
    results = methods[0]
    assert results["dense_mults"] == DENSE_MULTS and results["budget"] == DENSE_MULTS // 2


def test_every_method_is_compared_in_order(methods):
    assert list(methods[0]["methods"]) == CHANNEL_METHODS + WEIGHT_METHODS


def test_one_shot_methods_meet_the_budget_and_channels_cost_the_same_under_every_rule(methods):
    rows = methods[0]["methods"]
    for name in CHANNEL_METHODS:
        assert rows[name]["rule"] == "any" and rows[name]["reference_mults"] == rows[name]["mults"], name
    for name in CHANNEL_METHODS + ["weights, uniform", "weights, global"]:
        if "gradual" not in name:
            assert rows[name]["mults"] <= DENSE_MULTS // 2, name
    # Every layer of the model has an even number of weights, so LevelPrune(0.5) keeps exactly half of
    # each, and half the multiplies on a zero-skipping kernel; no lower level fits the budget.
    uniform = rows["weights, uniform"]
    assert uniform["level"] == 0.5 and uniform["mults"] == DENSE_MULTS // 2
    assert rows["weights, uniform, gradual"]["mults"] == DENSE_MULTS // 2
    assert uniform["reference_mults"] > 0.98 * DENSE_MULTS     # scattered zeros: one multiply each


def test_2_4_costs_half_of_the_layers_whose_rows_split_into_groups_of_4(methods):
    # Worked out from the unpruned counts: 2:4 halves every layer whose rows of C_in*KH*KW (or n_in)
    # weights are a multiple of 4 -- the pointwise convs and dense layers -- and leaves the rest.
    model = pretrained()
    layers = dict(model.named_layers())
    halved = sum(mults for path, _, _, mults, _ in dot_prod_table(model, TUTORIAL_INPUT)
                 if isinstance(layers[path], (Conv2d, DepthwiseConv2d, Dense))
                 and layers[path].weight[0].size % 4 == 0)
    row = methods[0]["methods"]["2:4"]
    assert row["level"] is None and row["rule"] == "sparse"
    assert row["mults"] == DENSE_MULTS - halved // 2


def test_accuracies_are_measured_on_the_validation_images(methods):
    results = methods[0]
    assert results["validation_images"] == QUICK_VAL_IMAGES and results["finetune_steps"] == 2
    for name, row in results["methods"].items():
        measured = [row["finetuned_accuracy"]] + ([] if "gradual" in name else [row["pruned_accuracy"]])
        for accuracy in measured:
            assert 0 <= accuracy <= 1 and is_whole_share(accuracy, QUICK_VAL_IMAGES), name
        if "gradual" in name:
            assert row["pruned_accuracy"] is None, name       # it prunes while it trains
    assert results["baseline_accuracy"] >= 0.85             # the shipped checkpoint, unpruned


def test_sorting_before_resize_keeps_the_function_and_orders_the_channels(methods):
    results = methods[0]
    assert results["sorted_logit_difference"] < 1e-4
    scores = results["sorted_scores"]
    assert len(scores) < 16 and all(a >= b for a, b in zip(scores, scores[1:]))


def test_the_comparison_is_drawn_into_the_methods_folder(methods):
    results, folder = methods
    assert results["figure"] == folder / "methods" / "methods-comparison.png"
    with open(results["figure"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
