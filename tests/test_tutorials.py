"""Chapter 10: every tutorial runs start to finish and measures what it promises.

Each tutorial runs once, as a script, with ``TINYPRUNE_QUICK=1`` (tiny data,
few steps) in a scratch folder.  Its last cell gathers its numbers in a dict,
``results``; the tests check those numbers: exact where the pipeline is exact
(counts), ranges where they depend on the machine (times, accuracies after
training).  Only the course lines are checked as printed text, since
printing them in the course's format is the tutorial's promise.
"""

import contextlib
import io
import os
import runpy

import pytest

pytestmark = [pytest.mark.tutorials, pytest.mark.integration]   # runs the whole pipeline: see conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_RESIZED_MULTS = 3_680_115      # the course text's "Resized MobileNet Mults"
QUICK_VAL_IMAGES = 32               # the validation images of every tutorial under TINYPRUNE_QUICK=1


def run_tutorial(name, folder):
    """Run ``tutorials/NAME`` as a script in ``folder``; returns (its ``results``, what it printed)."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("TINYPRUNE_QUICK", "1")
        patch.setenv("TINYPRUNE_OUT", str(folder))
        patch.chdir(folder)
        namespace = runpy.run_path(os.path.join(ROOT, "tutorials", name), run_name="__main__")
    return namespace["results"], printed.getvalue()


@pytest.fixture(scope="module")
def pruning(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pruning")
    results, printed = run_tutorial("pruning.py", folder)
    return results, printed, folder


@pytest.fixture(scope="module")
def sensitivity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sensitivity")
    return run_tutorial("sensitivity.py", folder)[0], folder


def is_whole_share(accuracy, images):
    """True when ``accuracy`` is k / images for a whole k: it was measured on ``images`` images."""
    return abs(accuracy * images - round(accuracy * images)) < 1e-9


# ---------------------------------------------------------------------------
# tutorials/pruning.py
# ---------------------------------------------------------------------------

def test_pruning_tutorial_prints_the_course_numbers_first(pruning):
    _, printed, _ = pruning
    assert printed.splitlines()[:3] == ["MobileNet Mults 7505600 Adds 7273983",
                                        "MobileNet Mults 7460806 Adds 7273983",
                                        "MobileNet Mults 6105200 Adds 5915181"]


def test_pruning_tutorial_counts_the_course_stages(pruning):
    counts = pruning[0]["counts"]
    assert list(counts) == ["baseline", "LevelPrune(0.2)", "ChannelPrune(0.2)", "propagated", "resized"]
    assert counts["baseline"]["reference"] == (7505600, 7273983)
    assert counts["LevelPrune(0.2)"]["reference"] == (7460806, 7273983)
    assert counts["ChannelPrune(0.2)"]["reference"] == (6105200, 5915181)
    propagated, resized = counts["propagated"]["reference"][0], counts["resized"]["reference"][0]
    assert propagated < 6105200
    assert resized <= SEED_RESIZED_MULTS * 1.06


def test_pruning_tutorial_compares_the_three_counting_rules(pruning):
    counts = pruning[0]["counts"]
    level = counts["LevelPrune(0.2)"]
    assert level["reference"][0] == 7460806 and level["dense"][0] == 7505600
    assert level["sparse"][0] < 0.81 * 7505600                # sparse: every zero skipped at every pixel
    resized = counts["resized"]
    assert resized["reference"] == resized["sparse"] == resized["dense"]   # nothing left to disagree on
    assert counts["propagated"]["sparse"] == resized["sparse"]  # resizing only removes zeros


def test_pruning_tutorial_times_four_models_and_checks_resize(pruning):
    results = pruning[0]
    assert list(results["ms_per_image"]) == ["unpruned", "LevelPrune(0.2)", "propagated", "resized"]
    assert all(ms > 0 for ms in results["ms_per_image"].values())
    assert results["largest_logit_difference"] < 1e-4
    assert results["weights"]["propagated"] == 224_048       # resize shrinks the arrays, not the propagation
    assert results["weights"]["resized"] < results["weights"]["propagated"]


def test_pruning_tutorial_reports_accuracy_before_after_and_finetuned(pruning):
    results = pruning[0]
    assert results["validation_images"] == QUICK_VAL_IMAGES
    accuracy = results["accuracy"]
    assert list(accuracy) == ["before", "pruned", "finetuned"]
    for value in accuracy.values():
        assert 0 <= value <= 1 and is_whole_share(value, QUICK_VAL_IMAGES)
    assert accuracy["before"] >= 0.85                        # the shipped checkpoint, unpruned
    assert results["pruned_mults"] == 4_118_534              # its resized copy; the command prints it too


def test_pruning_tutorial_measures_the_zero_skipping_kernel(pruning):
    rows = pruning[0]["sparse_kernel"]
    assert [row["sparsity"] for row in rows] == [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
    for row in rows:
        assert row["dense_s"] > 0 and row["csr_s"] > 0
        assert row["csr_speedup"] == row["dense_s"] / row["csr_s"]


def test_pruning_tutorial_draws_its_seven_figures_into_its_own_folder(pruning):
    figures, folder = pruning[0]["figures"], pruning[2]
    assert len(figures) == 7
    assert [p.name for p in folder.iterdir()] == ["pruning"]       # $TINYPRUNE_OUT/pruning, nothing else
    assert sorted(p.name for p in (folder / "pruning").glob("*.png")) == sorted(p.name for p in figures)
    for path in figures:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# tutorials/layers.py
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layers")
    return run_tutorial("layers.py", folder)[0], folder


def test_layers_tutorial_checks_every_gradient_and_catches_the_bug(layers):
    results = layers[0]
    errors = dict(results["worst_error"])
    assert len(errors) == 9
    buggy = errors.pop("ScaleWithABug(3)")
    assert all(e < 1e-6 for e in errors.values()), errors
    assert buggy > 1e-2
    assert results["formula_difference"] < 1e-12


def test_layers_tutorial_shows_why_batchnorm_gammas_start_at_a_half(layers):
    results, folder = layers
    flux, half = results["fresh_start"][1.0], results["fresh_start"][0.5]
    # Unit-variance BatchNorm outputs: about a third beyond +-1 (P(|z| > 1) = 31.7%);
    # at standard deviation 0.5 only P(|z| > 2) = 4.6%.
    assert 0.25 < flux["beyond"] < 0.4 and half["beyond"] < 0.08
    assert flux["first_ratio"] > 10 and half["first_ratio"] < 1      # the first conv's |dW| / |W|
    assert flux["median_ratio"] > 10 * half["median_ratio"]
    assert results["figure"] == folder / "layers" / "fresh-gradients.png"
    assert [p.name for p in folder.iterdir()] == ["layers"]
    assert [p.name for p in (folder / "layers").iterdir()] == ["fresh-gradients.png"]


# ---------------------------------------------------------------------------
# tutorials/sensitivity.py
# ---------------------------------------------------------------------------

def test_sensitivity_tutorial_scans_four_layers_at_two_levels(sensitivity):
    sensitivity, folder = sensitivity
    assert sensitivity["levels"] == [0.5, 0.9]
    assert sensitivity["validation_images"] == QUICK_VAL_IMAGES
    for strategy in ("LevelPrune", "ChannelPrune"):
        scan = sensitivity["scans"][strategy]
        assert list(scan) == ["conv1", "dw1", "dw13", "pw13"]
        assert all(len(row) == 2 and all(0 <= a <= 1 for a in row) for row in scan.values())
    assert sensitivity["figure"].stat().st_size > 10_000
    assert sensitivity["figure"] == folder / "sensitivity" / "scan.png"
    assert [p.name for p in folder.iterdir()] == ["sensitivity"]


def test_sensitivity_tutorial_counts_the_models_it_evaluates(sensitivity):
    # The unpruned model, 4 layers x 2 levels x 2 strategies in the scan, then the planned and the
    # uniform model, each before and after recalibrating.
    assert sensitivity[0]["evaluations"] == 1 + 4 * 2 * 2 + 2 + 2


def test_sensitivity_tutorial_computes_the_majority_share_it_explains(sensitivity):
    sensitivity = sensitivity[0]
    assert sensitivity["majority"] == 0.5             # the 32 quick validation images: 16 of each class
    for share in sensitivity["says_person"].values():
        assert 0 <= share <= 1 and is_whole_share(share, QUICK_VAL_IMAGES)


def test_sensitivity_plan_takes_levels_the_scan_allows(sensitivity):
    sensitivity = sensitivity[0]
    baseline, scan = sensitivity["baseline"], sensitivity["scans"]["ChannelPrune"]
    for name, level in sensitivity["plan"].items():
        allowed = [p for p, a in zip(sensitivity["levels"], scan[name]) if a >= baseline - 0.01]
        assert level == max(allowed, default=0.0)


def test_sensitivity_tutorial_compares_with_uniform_pruning(sensitivity):
    sensitivity = sensitivity[0]
    mults = sensitivity["mults"]
    assert mults["unpruned"] == 7505600
    assert mults["planned"] <= mults["unpruned"] and mults["uniform"] <= mults["unpruned"]
    assert 0 <= sensitivity["uniform_level"] <= 0.95
    for name in ("planned", "uniform"):
        assert 0 <= sensitivity["accuracy"][name] <= 1
        assert 0 <= sensitivity["recalibrated"][name] <= 1
        assert is_whole_share(sensitivity["recalibrated"][name], QUICK_VAL_IMAGES)
    assert sensitivity["calibration_images"] == 64


def test_a_test_of_the_whole_pipeline_carries_every_chapter_and_exercise_marker(request):
    from tinyprune.tools.exercises import CHAPTERS, EXERCISES, marker
    names = {mark.name for mark in request.node.iter_markers()}
    assert set(CHAPTERS) <= names
    assert {marker(exercise.id) for exercise in EXERCISES} <= names
