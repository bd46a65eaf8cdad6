"""Chapter 10: the tutorial's pipeline (``tinyprune.pipeline``) and the ``tinyprune`` command.

The main job runs once (``--quick``, module fixture) and several tests read
what it printed and wrote.  Bad input must fail fast with one clear line on
stderr, exit code 2, and nothing written.
"""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tinyprune as tp
from cli_helpers import run, tiny_chain
from tinyprune import checkpoint
from tinyprune.pipeline import TUTORIAL_INPUT, prune_and_resize, tutorial_model, tutorial_stages
from tinyprune.tools import bench, main_job, pretrain
from tinyprune.tools.cli import build_parser, main

pytestmark = [pytest.mark.tutorials, pytest.mark.integration]   # runs the whole pipeline: see conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = {"macs.png", "sparsity-level.png", "sparsity-propagated.png", "channels.png",
           "weights-pw7.png", "history.png"}


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "fresh.npz"
    checkpoint.save(tp.MobileNet(tp.slopehtanh, 0.25, fcsize=64, nclasses=1, seed=3).eval(), path)
    return path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "results"
    code, stdout, stderr = run(["--quick", "--out", str(out), "--no-progress"])
    assert code == 0, stderr
    return out, stdout


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------

def test_tutorial_stages_are_the_course_stages_with_their_counts():
    model = tutorial_model(seed=3)
    stages = tutorial_stages(model, level=0.2, channel_level=0.2)
    assert list(stages) == ["baseline", "level", "channel", "propagated", "resized"]
    assert [s.label for s in stages.values()] == ["baseline", "LevelPrune(0.2)", "ChannelPrune(0.2)",
                                                  "propagated", "resized"]
    assert stages["baseline"].model is model
    totals = {key: {rule: (t.mults, t.adds) for rule, t in s.counts.items()} for key, s in stages.items()}
    assert totals["baseline"] == {rule: (7505600, 7273983) for rule in ("reference", "sparse", "dense")}
    assert totals["level"]["reference"] == (7460806, 7273983)
    assert totals["channel"]["reference"] == (6105200, 5915181)
    assert totals["propagated"]["sparse"] == totals["resized"]["reference"]   # resize removes only zeros
    assert len(set(totals["resized"].values())) == 1          # no zeros left for the rules to disagree on
    for stage in stages.values():
        assert (stage.counts["reference"].mults, stage.counts["reference"].adds) == \
            tp.compute_dot_prods(stage.model, TUTORIAL_INPUT)[:2]


def test_prune_and_resize_returns_three_models_computing_the_same_function():
    model = tutorial_model(seed=1).eval()
    pruned, propagated, resized = prune_and_resize(model, tp.ChannelPrune(0.3))
    assert model[0][0].masks == {}                            # the model itself is left alone
    assert pruned[0][0].masks and not propagated[0][0].masks  # keepprune baked the masks in
    assert resized[0][0].c_out < model[0][0].c_out
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert np.allclose(resized(x), pruned(x), atol=1e-5)
    assert np.allclose(propagated(x), pruned(x), atol=1e-5)


# ---------------------------------------------------------------------------
# Help and argument types
# ---------------------------------------------------------------------------

def test_help_documents_every_option_and_command():
    code, stdout, _ = run(["--help"])
    assert code == 0
    for word in ("--out", "--epochs", "--level", "--channel-level", "--rule", "--quick", "--seed",
                 "count MODEL.npz", "prune MODEL.npz", "bench", "reference", "sparse", "dense"):
        assert word in stdout, word


def test_epochs_accept_zero_and_refuse_negative_numbers(capsys):
    assert build_parser().parse_args(["--epochs", "0"]).epochs == 0          # 0 skips finetuning
    for option, value in (("--epochs", "-1"), ("--seed", "-2"), ("--epochs", "1.5")):
        with pytest.raises(SystemExit):
            build_parser().parse_args([option, value])
        assert f"argument {option}: expected a whole number >= 0, got '{value}'" in capsys.readouterr().err


def test_bench_and_pretrain_refuse_bad_numbers_before_any_work(capsys):
    for tool, argv, message in ((bench, ["--threads", "0"], "argument --threads: expected a whole number >= 1"),
                                (pretrain, ["--epochs", "0"], "argument --epochs: expected a whole number >= 1"),
                                (pretrain, ["--lr", "0"], "argument --lr: expected a number > 0, got '0'")):
        with pytest.raises(SystemExit) as stop:
            tool.main(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_python_dash_m_tinyprune_is_the_command():
    done = subprocess.run([sys.executable, "-m", "tinyprune", "prune", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tinyprune prune")
    assert "--resize" in done.stdout and "--propagate" in done.stdout


# ---------------------------------------------------------------------------
# The main job
# ---------------------------------------------------------------------------

def test_quick_run_prints_the_course_lines_first(quick_run):
    _, stdout = quick_run
    lines = stdout.splitlines()
    assert lines[:3] == ["MobileNet Mults 7505600 Adds 7273983",
                         "MobileNet Mults 7460806 Adds 7273983",
                         "MobileNet Mults 6105200 Adds 5915181"]
    propagated = re.fullmatch(r"Propagated MobileNet Mults (\d+) Adds (\d+)", lines[3])
    resized = re.fullmatch(r"Resized MobileNet Mults (\d+) Adds (\d+)", lines[4])
    assert propagated and resized
    assert int(propagated[1]) < 6105200
    assert int(resized[1]) <= int(propagated[1])


def test_quick_run_prints_every_stage_under_the_three_rules(quick_run):
    _, stdout = quick_run
    rows = {line.split("  ")[0]: line for line in stdout.splitlines()
            if line.startswith(("baseline ", "LevelPrune(0.2) ", "resized ", "finetuned (1 epoch) "))}
    assert len(rows) == 4
    assert rows["baseline"].split()[1:7] == ["7,505,600", "7,273,983"] * 3
    level = rows["LevelPrune(0.2)"].split()[1:7]
    assert level[0] == "7,460,806" and level[4] == "7,505,600"        # reference, dense
    assert re.search(r"\d+\.\d%$", rows["finetuned (1 epoch)"])           # an accuracy
    assert "accuracy on 32 validation images" in stdout


def test_quick_run_writes_figures_summary_and_checkpoint(quick_run):
    out, stdout = quick_run
    assert set(os.listdir(out)) == FIGURES | {"finetuned.npz", "summary.txt", "stages.json"}
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 600
    assert (out / "summary.txt").read_text() in stdout
    finetuned = checkpoint.load(out / "finetuned.npz")
    mults, adds, _ = tp.compute_dot_prods(finetuned, TUTORIAL_INPUT)
    printed = re.search(r"Resized MobileNet Mults (\d+) Adds (\d+)", stdout)
    assert (mults, adds) == (int(printed[1]), int(printed[2]))       # finetuning keeps the shapes
    assert finetuned.metadata["command"] == f"tinyprune --quick --out {out} --no-progress"
    stages = finetuned.metadata["stages"]
    assert [s["stage"] for s in stages][:2] == ["baseline", "LevelPrune(0.2)"]
    assert stages[0]["counts"]["reference"] == [7505600, 7273983]


def test_zero_epochs_skip_finetuning_and_its_figure(tmp_path, fresh_checkpoint):
    out = tmp_path / "results"
    code, stdout, stderr = run(["--quick", "--epochs", "0", "--model", str(fresh_checkpoint),
                                "--out", str(out), "--no-progress"])
    assert code == 0, stderr
    assert "finetuning" not in stdout
    assert set(os.listdir(out)) == (FIGURES - {"history.png"}) | {"finetuned.npz", "summary.txt",
                                                                   "stages.json"}
    stages = json.loads((out / "stages.json").read_text())
    assert "history" not in stages and stages["epochs"] == 0
    resized, finetuned = stages["stages"][4], stages["stages"][5]
    assert finetuned["stage"] == "finetuned (0 epochs)"
    assert (finetuned["counts"], finetuned["val_accuracy"]) == (resized["counts"], resized["val_accuracy"])


# ---------------------------------------------------------------------------
# count and prune
# ---------------------------------------------------------------------------

def test_count_prints_the_table_of_a_checkpoint(fresh_checkpoint):
    code, stdout, _ = run(["count", str(fresh_checkpoint)])
    assert code == 0
    total = [line for line in stdout.splitlines() if line.startswith("total")]
    assert total[0].split()[1:] == ["7,505,600", "7,273,983"]
    assert "[0][0]" in stdout and "[1][4]" in stdout


def test_count_with_every_rule_prints_three_tables(fresh_checkpoint):
    code, stdout, _ = run(["count", str(fresh_checkpoint), "--rule", "all", "--input-shape", "2,3,32,32"])
    assert code == 0
    assert [line for line in stdout.splitlines() if line.startswith("dot products")] == [
        "dot products, rule 'reference'", "dot products, rule 'sparse'", "dot products, rule 'dense'"]
    expected = tp.compute_dot_prods(checkpoint.load(fresh_checkpoint), (2, 3, 32, 32))[0]
    assert f"{expected:,}" in stdout


def test_prune_subcommand_saves_the_resized_model(fresh_checkpoint, tmp_path):
    small = tmp_path / "small.npz"
    code, stdout, stderr = run(["prune", str(fresh_checkpoint), "--channel-level", "0.2", "--resize",
                                "--out", str(small)])
    assert code == 0, stderr
    assert re.search(r"ChannelPrune\(0.2\) +Mults 6105200 Adds 5915181", stdout)
    resized_line = re.search(r"resize +Mults (\d+) Adds (\d+)", stdout)
    model = checkpoint.load(small)
    assert tp.compute_dot_prods(model, TUTORIAL_INPUT)[:2] == (int(resized_line[1]), int(resized_line[2]))
    assert model[0][0].c_out < 8                       # conv1 lost channels: it really is smaller
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    pruned = tp.prune(tp.ChannelPrune(0.2), checkpoint.load(fresh_checkpoint))
    assert np.allclose(model(x), pruned(x), atol=1e-5)


def test_prune_without_a_step_is_refused(fresh_checkpoint, tmp_path):
    code, _, stderr = run(["prune", str(fresh_checkpoint), "--out", str(tmp_path / "x.npz")])
    assert code == 2 and "nothing to do" in stderr
    assert os.listdir(tmp_path) == []


def test_bench_hands_the_rest_of_the_line_to_the_benchmark(monkeypatch):
    seen = []
    fake = type(sys)("tinyprune.tools.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "tinyprune.tools.bench", fake)
    monkeypatch.setattr(tp, "bench", fake, raising=False)
    assert main(["bench", "--quick", "--help"]) == 0
    assert seen == [["--quick", "--help"]]


# ---------------------------------------------------------------------------
# Failing cleanly
# ---------------------------------------------------------------------------

def test_a_level_outside_0_1_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "results"
    code, _, stderr = run(["--level", "1.5", "--out", str(out)])
    assert code == 2
    assert "argument --level: expected a fraction in [0, 1)" in stderr and "'1.5'" in stderr
    code, _, stderr = run(["--channel-level", "half", "--out", str(out)])
    assert code == 2 and "argument --channel-level" in stderr
    assert os.listdir(tmp_path) == []


def test_an_unwritable_output_folder_fails_with_a_clear_message(tmp_path, fresh_checkpoint):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, stdout, stderr = run(["--quick", "--model", str(fresh_checkpoint), "--out", str(blocker / "out")])
    assert code == 2
    assert stderr.startswith("tinyprune: error: cannot write to the output folder")
    assert str(blocker / "out") in stderr
    assert stdout == "" and os.listdir(tmp_path) == ["a-file"]


def test_a_missing_pretrained_checkpoint_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPRUNE_DATA", str(tmp_path / "empty"))
    code, stdout, stderr = run(["--quick", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "the pretrained checkpoint" in stderr and "is missing" in stderr
    assert "tinyprune pretrain" in stderr
    assert stdout == "" and os.listdir(tmp_path) == []


def test_a_missing_or_broken_model_file_fails_with_a_clear_message(tmp_path):
    code, _, stderr = run(["count", str(tmp_path / "nope.npz")])
    assert code == 2 and f"{tmp_path / 'nope.npz'}' does not exist" in stderr
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    code, _, stderr = run(["count", str(broken)])
    assert code == 2 and "not a readable tinyprune checkpoint" in stderr and str(broken) in stderr


# ---------------------------------------------------------------------------
# What the command says is true (issue 13)
# ---------------------------------------------------------------------------

def test_help_claims_only_the_three_course_lines_that_hold(quick_run):
    _, stdout = quick_run
    code, help_text, _ = run(["--help"])
    assert code == 0 and "first five" not in help_text
    assert "the first three printed lines are the course" in " ".join(help_text.split())
    for line in stdout.splitlines()[:3]:                        # the three the help prints are the run's
        assert "  " + line in help_text


def test_pretrain_defaults_are_the_recipe_recorded_in_the_shipped_checkpoint():
    command = checkpoint.read_metadata(checkpoint.pretrained_path())["command"].split()
    recorded = vars(pretrain.build_parser().parse_args(command[command.index("--epochs"):]))
    defaults = vars(pretrain.build_parser().parse_args([]))
    del recorded["out"], defaults["out"]
    assert recorded == defaults
    code, help_text, _ = run(["pretrain", "--help"])
    assert code == 0
    for words in ("(default 26)", "(default 2e-3)", "(default 0)", "(default 0.5;"):
        assert words in help_text


@pytest.mark.parametrize("drop, words", [(0.016, "1.60 points below the checkpoint"),
                                         (-0.004, "0.40 points above the checkpoint"),
                                         (0.0, "level with the checkpoint"),
                                         (-0.00001, "level with the checkpoint")])
def test_pretrain_check_says_below_or_above_without_a_sign(drop, words):
    assert pretrain.points_versus_checkpoint(drop) == words


def test_the_main_job_writes_into_its_own_subfolder_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYPRUNE_OUT", raising=False)
    assert build_parser().parse_args([]).out == os.path.join("tinyprune-out", "main")
    monkeypatch.setenv("TINYPRUNE_OUT", str(tmp_path))
    assert build_parser().parse_args([]).out == str(tmp_path / "main")


def test_count_names_each_layer_by_path_and_by_the_figures_label(fresh_checkpoint):
    code, stdout, _ = run(["count", str(fresh_checkpoint)])
    assert code == 0
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith("[")}
    assert rows["[0][0]"][1] == "conv1" and rows["[0][3]"][1] == "dw1"
    assert rows["[0][42]"][1:3] == ["pw7", "Conv2d"]              # the figures' pw7
    assert rows["[1][2]"][1] == "fc1" and rows["[1][4]"][1] == "fc2"
    assert rows["[0][1]"][1] == "BatchNorm2d"                    # no label: it does no dot products


def test_bench_labels_the_channels_of_every_conv():
    model = tutorial_model()
    channels = bench._conv_channels(model, prune_and_resize(model, tp.ChannelPrune(0.5)).resized)
    assert channels["channel_labels"] == ["conv1"] + [f"pw{k}" for k in range(1, 14)]
    assert channels["channels_full"][:3] == [8, 16, 32]
    assert all(kept < full for kept, full in zip(channels["channels"][:-1], channels["channels_full"]))


def test_evaluate_scores_a_checkpoint_on_the_validation_set(fresh_checkpoint):
    code, stdout, stderr = run(["evaluate", str(fresh_checkpoint), "--quick"])
    assert code == 0, stderr
    loss, accuracy = tp.evaluate(checkpoint.load(fresh_checkpoint), tp.SyntheticVWW("val", size=32))
    assert "SyntheticVWW 'val' (32 images)" in stdout
    assert f"accuracy {100 * accuracy:.2f}% ({round(32 * accuracy)} of 32 correct)" in stdout
    assert f"loss     {loss:.4f}" in stdout


def test_evaluate_reads_a_visual_wake_words_folder(fresh_checkpoint, tmp_path):
    (tmp_path / "val").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "val" / f"{k}.png")
    (tmp_path / "val.txt").write_text("0.png 1\n1.png 0\n2.png 1\n")
    code, stdout, stderr = run(["evaluate", str(fresh_checkpoint), "--vww", str(tmp_path)])
    assert code == 0, stderr
    loss, accuracy = tp.evaluate(checkpoint.load(fresh_checkpoint), tp.VisualWakeWords(tmp_path, "val"))
    assert f"Visual Wake Words 'val' in {tmp_path} (3 images)" in stdout
    assert f"accuracy {100 * accuracy:.2f}%" in stdout and f"loss     {loss:.4f}" in stdout


def test_progress_in_a_log_is_one_line_per_epoch(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())                 # not a terminal
    rng = np.random.default_rng(0)
    data = tp.ArrayDataset(rng.integers(0, 256, (8, 3, 96, 96), dtype=np.uint8), [0, 1] * 4)
    args = build_parser().parse_args(["--epochs", "2"])
    main_job._finetune(args, tiny_chain(), data, data)
    log = sys.stderr.getvalue()
    assert "\r" not in log
    assert [line.split()[:2] for line in log.splitlines()] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert all("val loss" in line for line in log.splitlines())
