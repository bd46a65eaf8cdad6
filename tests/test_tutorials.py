"""Chapter 10: every tutorial runs start to finish as a plain script and prints what it promises.

Each tutorial runs once, in a subprocess, with ``TINYPRUNE_QUICK=1`` (tiny
data, few steps) in a scratch folder; the tests read its printed lines.
"""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tutorials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_RESIZED_MULTS = 3_680_115      # the course text's "Resized MobileNet Mults"


def run_tutorial(name, folder):
    env = dict(os.environ, TINYPRUNE_QUICK="1", TINYPRUNE_OUT=str(folder),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tutorials", name)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def pruning_output(tmp_path_factory):
    return run_tutorial("pruning.py", tmp_path_factory.mktemp("pruning"))


def parse(pattern, text):
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{text}"
    return [int(g.replace(",", "")) if g.replace(",", "").isdigit() else float(g) for g in found.groups()]


def test_pruning_tutorial_prints_the_course_numbers_first(pruning_output):
    assert pruning_output.splitlines()[:3] == ["MobileNet Mults 7505600 Adds 7273983",
                                               "MobileNet Mults 7460806 Adds 7273983",
                                               "MobileNet Mults 6105200 Adds 5915181"]
    propagated, _ = parse(r"^Propagated MobileNet Mults (\d+) Adds (\d+)$", pruning_output)
    resized, _ = parse(r"^Resized MobileNet Mults (\d+) Adds (\d+)$", pruning_output)
    assert propagated < 6105200
    assert resized <= SEED_RESIZED_MULTS * 1.06


def test_pruning_tutorial_compares_the_three_counting_rules(pruning_output):
    level = parse(r"^LevelPrune\(0\.2\) +([\d,]+) +([\d,]+) +([\d,]+)$", pruning_output)
    assert level[0] == 7460806 and level[2] == 7505600      # reference, dense
    assert level[1] < 0.81 * 7505600                        # sparse: every zero skipped at every pixel
    resized = parse(r"^resized +([\d,]+) +([\d,]+) +([\d,]+)$", pruning_output)
    assert resized[0] == resized[1] == resized[2]           # nothing left for the rules to disagree on


def test_pruning_tutorial_times_four_models_and_checks_resize(pruning_output):
    times = re.findall(r"^(unpruned|LevelPrune\(0\.2\)|propagated|resized) +([\d.]+) ms per image",
                       pruning_output, re.MULTILINE)
    assert [name for name, _ in times] == ["unpruned", "LevelPrune(0.2)", "propagated", "resized"]
    assert all(float(ms) > 0 for _, ms in times)
    [difference] = parse(r"largest difference in the logits: (\S+)$", pruning_output)
    assert difference < 1e-4


def test_pruning_tutorial_reports_accuracy_before_after_and_finetuned(pruning_output):
    for label in ("before pruning", "after ChannelPrune\\(0.2\\), propagate, resize",
                  "after one epoch of finetuning"):
        [acc] = parse(rf"^accuracy {label}: ([\d.]+)%", pruning_output)
        assert 0 <= acc <= 100


def test_pruning_tutorial_measures_the_zero_skipping_kernel_and_draws_its_figures(pruning_output):
    rows = re.findall(r"^ *(\d+)% zeros: dense +([\d.]+) ms, CSR +([\d.]+) ms, speed-up +([\d.]+)x$",
                      pruning_output, re.MULTILINE)
    assert [int(r[0]) for r in rows] == [0, 50, 80, 90, 95, 99]
    for _, dense, csr, speedup in rows:         # printed to 0.001 ms and 0.01x: allow that rounding
        dense, csr, speedup = float(dense), float(csr), float(speedup)
        assert dense > 0 and csr > 0.0005
        assert (dense - 0.0005) / (csr + 0.0005) - 0.005 <= speedup <= (dense + 0.0005) / (csr - 0.0005) + 0.005
    written = re.findall(r"(\S+\.png)", "\n".join(l for l in pruning_output.splitlines()
                                                   if l.startswith("wrote ")))
    assert len(written) == 6
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_layers_tutorial_checks_every_gradient_and_catches_the_bug(tmp_path):
    output = run_tutorial("layers.py", tmp_path)
    errors = dict(re.findall(r"^(.+?) +worst relative error (\S+)", output, re.MULTILINE))
    assert len(errors) == 9
    buggy = float(errors.pop("ScaleWithABug(3)"))
    assert all(float(e) < 1e-6 for e in errors.values()), errors
    assert buggy > 1e-2
    [difference] = parse(r"formula vs layer, largest difference: (\S+)$", output)
    assert difference < 1e-12


def test_sensitivity_tutorial_scans_plots_and_compares_with_uniform_pruning(tmp_path):
    output = run_tutorial("sensitivity.py", tmp_path)
    assert "4 convolutions to scan, 2 levels, 32 validation images" in output
    assert len(re.findall(r"^model\[\d\]\[\d+\] +\w+ +accuracy", output, re.MULTILINE)) == 4
    assert (tmp_path / "sensitivity.png").stat().st_size > 10_000
    unpruned = parse(r"^unpruned: ([\d.]+)% at ([\d,]+) multiplies", output)
    planned = parse(r"^planned: +([\d.]+)% at ([\d,]+) multiplies", output)
    uniform = parse(r"^uniform: +([\d.]+)% at ([\d,]+) multiplies", output)
    assert unpruned[1] == 7505600
    assert planned[1] <= unpruned[1] and uniform[1] <= unpruned[1]
    for name in ("planned", "uniform"):
        [acc, images] = parse(rf"^{name}: +([\d.]+)% after recalibrating BatchNorm on ([\d,]+) training images",
                              output)
        assert 0 <= acc <= 100 and images == 64
