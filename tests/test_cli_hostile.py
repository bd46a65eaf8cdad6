"""Chapter 10: the ``tinyprune`` command against a hostile user (issue 12).

Every refused command line must give exit code 2, exactly one line on
stderr naming the argument or file at fault, nothing on stdout, and leave
every file as it was.  The long steps (the main job's run, the benchmark's
measurements, pretraining, reading an evaluation set) are replaced by stubs
that record they were reached, so the tests show the checks come first and
run in seconds.  The last test throws random command lines at the command.
"""

import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import assert_refused, make_inputs, run, tree
from tinyprune import checkpoint
from tinyprune.data import ArrayDataset
from tinyprune.pipeline import check_tutorial_model
from tinyprune.tools import bench, cli, main_job, pretrain

pytestmark = [pytest.mark.tutorials, pytest.mark.integration]   # runs the whole pipeline: see conftest.py


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def here(tmp_path, monkeypatch, inputs):
    """A fresh working folder holding copies of the inputs; the long steps are stubs."""
    for name, path in inputs.items():
        if path.is_file():
            shutil.copy(path, tmp_path / name)
    (tmp_path / "a-folder").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYPRUNE_OUT", raising=False)
    return tmp_path


class Reached:
    """Stubs for the long steps: each records its arguments, checking what the checks promised."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(main_job, "run_main_job", self.main_job)
        monkeypatch.setattr(bench, "run_benchmark", self.benchmark)
        monkeypatch.setattr(pretrain, "train_checkpoint", self.pretrain)
        monkeypatch.setattr(pretrain, "check", self.check)
        monkeypatch.setattr(cli, "evaluation_data", self.evaluation_data)

    def main_job(self, job):
        assert job.out.is_dir() and os.access(job.out, os.W_OK)       # created and writable
        check_tutorial_model(job.model, "stub")                        # loads and fits
        assert not any((job.out / name).is_dir() for name in main_job._output_names(job.histogram_layer))
        self.calls.append(("main", job.args))
        return 0

    def benchmark(self, quick, threads, blas_threads):
        self.calls.append(("bench", quick, threads, blas_threads))
        return FAKE_FIGURES

    def pretrain(self, epochs, out, **options):
        assert Path(out).parent.is_dir() and not Path(out).is_dir()
        self.calls.append(("pretrain", epochs, out))

    def check(self, path, progress=True):
        check_tutorial_model(checkpoint.load(path), "stub")
        self.calls.append(("check", path))
        return True

    def evaluation_data(self, args):
        self.calls.append(("evaluate", args.model))
        rng = np.random.default_rng(0)
        return ArrayDataset(rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8), [0, 1, 0, 1]), "stub"


FAKE_FIGURES = {
    "quick": True, "threads": {"numba": 1, "blas": 1}, "numba_threading_layer": "stub",
    "machine": {"cpu_count": 1, "loadavg_before": 0.0, "loadavg_after": 0.0},
    "train_step": {"batch": 32, "seconds": 1.0, "images_per_s": 32.0, "optimizer": "Adam(lr=1e-3)"},
    "inference": {"batch64_s": 1.0, "batch64_images_per_s": 64.0, "batch1_ms": 1.0},
    "resized": {"batch64_s": 0.5, "batch64_images_per_s": 128.0, "batch1_ms": 0.5, "full_batch64_s": 1.0,
                "dense_mults_full": 2, "dense_mults_resized": 1, "mult_ratio": 0.5,
                "time_ratio_batch64": 0.5, "saving_efficiency": 1.0,
                "channel_labels": ["conv1"], "channels_full": [8], "channels": [4]},
    "sparse": [{"sparsity": 0.5, "dense_s": 1.0, "csr_s": 1.0, "csr_speedup": 1.0}],
    "startup": {"warm_s": 1.0, "cold_s": None}, "peak_memory": {"bytes": 2 ** 20},
    "engines": {"threads": 1, "numba_threading_layer": "stub", "rounds": 1, "loadavg_before": 0.0,
                "loadavg_after": 0.0, "seconds": {"tutorial": {"fused": {"64": 1.0, "1": 0.1}}},
                "ratios": {}, "resized": {"dense_mults_full": 2, "dense_mults_resized": 1, "mult_saving": 0.5}},
}


@pytest.fixture
def reached(monkeypatch):
    return Reached(monkeypatch)


# ---------------------------------------------------------------------------
# Item 7: a command after options
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["--quick", "--epochs", "0", "--out", "X", "bench"], ["'bench'", "--quick --epochs 0 --out X"]),
    (["--rule", "sparse", "count", "ok.npz"], ["'count'", "--rule sparse"]),
    (["--out", "X", "prune", "ok.npz", "--resize", "--out", "y.npz"], ["'prune'", "--out X"]),
    (["--seed", "3", "evaluate", "ok.npz"], ["'evaluate'", "--seed 3"]),
    (["--no-progress", "pretrain", "--check"], ["'pretrain'", "--no-progress"]),
    (["--epochs=1", "bench"], ["'bench'", "--epochs=1"]),
    (["--model", "ok.npz", "count", "ok.npz"], ["'count'", "--model ok.npz"]),
    (["--ep", "0", "bench"], ["'bench'", "--ep 0"]),                   # an abbreviated option
    (["--seed", "-1", "bench"], ["'bench'"]),                          # a negative value is still a value
])
def test_a_command_after_options_is_refused_before_anything_runs(here, reached, argv, named):
    line = assert_refused(argv, here, *named)
    assert "must come first" in line
    assert reached.calls == []


def test_an_option_value_that_spells_a_command_is_a_value(here, reached):
    code, _, stderr = run(["--out", "bench", "--quick"])
    assert code == 0, stderr
    assert reached.calls[0][0] == "main" and reached.calls[0][1].out == "bench"


def test_a_word_after_the_command_is_refused_by_the_command(here, reached):
    assert_refused(["count", "ok.npz", "bench"], here, "unrecognized arguments: bench")
    assert_refused(["frob"], here, "'frob'", "choose from")


# ---------------------------------------------------------------------------
# Item 9: an output that is the input
# ---------------------------------------------------------------------------

def test_prune_refuses_to_overwrite_its_input_however_it_is_named(here):
    os.symlink("ok.npz", here / "link.npz")
    os.link(here / "ok.npz", here / "hard.npz")
    (here / "sub").mkdir()
    for out in ("ok.npz", str(here / "ok.npz"), "sub/../ok.npz", "link.npz", "hard.npz"):
        line = assert_refused(["prune", "ok.npz", "--channel-level", "0.5", "--resize", "--out", out],
                              here, f"--out '{out}'", "same file as MODEL.npz 'ok.npz'")
        assert "never overwritten" in line


def test_prune_refuses_an_input_reached_through_a_link_to_the_output(here):
    os.symlink("ok.npz", here / "link.npz")
    assert_refused(["prune", "link.npz", "--resize", "--out", "ok.npz"], here, "same file")


def test_the_main_job_refuses_a_model_it_would_overwrite(here, reached):
    (here / "run").mkdir()
    shutil.copy(here / "ok.npz", here / "run" / "finetuned.npz")
    assert_refused(["--model", "run/finetuned.npz", "--out", "run"], here,
                   "--out 'run/finetuned.npz'", "same file as --model")
    assert reached.calls == []


# ---------------------------------------------------------------------------
# Item 14: models that do not fit, and outputs that cannot be written, before the work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, named", [
    ("two.npz", ["--model 'two.npz'", "(2, 2)", "one logit"]),
    ("gray.npz", ["--model 'gray.npz'", "(N, 3, 96, 96)", "model[0][0]"]),
    ("flat.npz", ["--model 'flat.npz'", "(N, 3, 96, 96)"]),
    ("dense.npz", ["'dense.npz' has no convolution"]),
    ("text.txt", ["text.txt", "not a readable tinyprune checkpoint"]),
    ("broken.npz", ["broken.npz"]),
    ("a-folder", ["--model 'a-folder' is a folder"]),
    ("missing.npz", ["--model 'missing.npz' does not exist"]),
])
def test_the_main_job_refuses_a_model_that_does_not_fit_before_any_work(here, reached, model, named):
    assert_refused(["--quick", "--model", model, "--out", "out"], here, *named)
    assert reached.calls == []


def test_the_main_job_runs_any_chain_that_fits_and_draws_its_figures(here):
    code, stdout, stderr = run(["--quick", "--epochs", "0", "--no-progress", "--model", "chain.npz",
                                "--out", "out"])
    assert code == 0, stderr
    assert sorted(os.listdir(here / "out")) == [
        "channels.png", "finetuned.npz", "macs.png", "sparsity-level.png", "sparsity-propagated.png",
        "stages.json", "summary.txt", "weights-pw1.png"]     # no pw7 in conv1 dw1 pw1 fc1: the middle layer
    assert "wrote 8 files" in stdout


@pytest.mark.parametrize("blocked", ["finetuned.npz", "macs.png", "stages.json", "weights-pw7.png"])
def test_the_main_job_refuses_an_output_file_that_is_a_folder(here, reached, blocked):
    (here / "out" / blocked).mkdir(parents=True)
    assert_refused(["--quick", "--model", "ok.npz", "--out", "out"], here, f"out/{blocked}", "is a folder")
    assert reached.calls == []


def test_the_main_job_refuses_a_negative_seed_at_once(here, reached):
    assert_refused(["--quick", "--seed", "-1"], here, "argument --seed", "'-1'")
    assert reached.calls == []


def test_the_main_job_refuses_an_output_folder_under_a_file(here, reached):
    assert_refused(["--quick", "--model", "ok.npz", "--out", "ok.npz/out"], here,
                   "--out 'ok.npz/out'", "'ok.npz' is a file")


def test_bench_checks_its_json_file_before_measuring(here, reached):
    assert_refused(["bench", "--json", "a-folder"], here, "--json 'a-folder' is a folder")
    assert_refused(["bench", "--json", "ok.npz/x.json"], here, "'ok.npz' is a file")
    assert reached.calls == []


def test_bench_creates_a_missing_folder_for_its_json_file(here, reached):
    code, stdout, stderr = run(["bench", "--json", "missing_dir/x.json"])
    assert (code, stderr) == (0, "")
    assert json.loads((here / "missing_dir" / "x.json").read_text())["resized"]["channels"] == [4]
    assert "conv1" in stdout                              # the channel table is labelled


@pytest.mark.parametrize("argv, named", [
    (["pretrain", "--out", "a-folder"], ["--out 'a-folder' is a folder"]),
    (["pretrain", "--out", "ok.npz/x.npz"], ["'ok.npz' is a file"]),
    (["pretrain", "--check", "--out", "two.npz"], ["--out 'two.npz'", "one logit"]),
    (["pretrain", "--check", "--out", "missing.npz"], ["--out 'missing.npz' does not exist"]),
    (["pretrain", "--lr", "-1e-3"], ["argument --lr", "'-1e-3'"]),
    (["pretrain", "--epochs", "0"], ["argument --epochs"]),
    (["bench", "--threads", "-2"], ["argument --threads", "'-2'"]),
])
def test_the_tools_refuse_bad_arguments_before_any_work(here, reached, argv, named):
    assert_refused(argv, here, *named)
    assert reached.calls == []


# ---------------------------------------------------------------------------
# Item 20 and the argument checks of count, prune and evaluate
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["count", "a-folder"], ["MODEL.npz 'a-folder' is a folder"]),
    (["count", "missing.npz"], ["'missing.npz' does not exist"]),
    (["count", "text.txt"], ["text.txt", "not a readable tinyprune checkpoint"]),
    (["count", "ok.npz", "--input-shape", "-1,3,96,96"], ["--input-shape", "must be positive", "N = -1"]),
    (["count", "ok.npz", "--input-shape", "1,3,96,-96"], ["--input-shape", "must be positive", "W = -96"]),
    (["count", "ok.npz", "--input-shape", "1,3,0,96"], ["--input-shape", "H = 0"]),
    (["count", "ok.npz", "--input-shape", "1,3,96"], ["--input-shape", "four whole numbers"]),
    (["count", "ok.npz", "--input-shape", "1,3,96.7,96"], ["--input-shape", "'1,3,96.7,96'"]),
    (["count", "ok.npz", "--input-shape", "1,1,96,96"], ["--input-shape 1,1,96,96", "model[0][0]"]),
    (["count", "ok.npz", "--rule", "fast"], ["argument --rule", "'fast'"]),
    (["count"], ["MODEL.npz"]),
    (["prune", "ok.npz", "--resize", "--out", "/proc/x.npz"], ["--out '/proc/x.npz'", "'/proc'"]),
    (["prune", "ok.npz", "--resize", "--out", "a-folder"], ["--out 'a-folder' is a folder"]),
    (["prune", "ok.npz", "--resize", "--out", "text.txt/x.npz"], ["'text.txt' is a file"]),
    (["prune", "ok.npz", "--out", "x.npz"], ["nothing to do"]),
    (["prune", "missing.npz", "--resize", "--out", "x.npz"], ["'missing.npz' does not exist"]),
    (["prune", "ok.npz", "--level", "1", "--out", "x.npz"], ["argument --level", "'1'"]),
    (["prune", "ok.npz", "--channel-level", "-0.5", "--out", "x.npz"], ["argument --channel-level", "'-0.5'"]),
    (["prune", "ok.npz", "--level", "nan", "--out", "x.npz"], ["argument --level", "'nan'"]),
    (["evaluate", "two.npz"], ["MODEL.npz 'two.npz'", "one logit"]),
    (["evaluate", "gray.npz"], ["MODEL.npz 'gray.npz'", "(N, 3, 96, 96)"]),
    (["evaluate", "ok.npz", "--vww", "missing"], ["--vww 'missing' does not exist"]),
    (["evaluate", "ok.npz", "--vww", "ok.npz"], ["--vww 'ok.npz' is a file"]),
    (["evaluate", "ok.npz", "--vww", "a-folder"], ["--vww 'a-folder'", "val.txt"]),
    (["evaluate", "ok.npz", "--vww", "a-folder", "--subset", "train"], ["train.txt"]),
    (["evaluate", "ok.npz", "--batch-size", "0"], ["argument --batch-size", "'0'"]),
    (["evaluate", "ok.npz", "--subset", "test"], ["argument --subset", "'test'"]),
    (["--epochs", "-1"], ["argument --epochs", "'-1'"]),
    (["--level", "1.5"], ["argument --level", "'1.5'"]),
    (["--rule", "all"], ["argument --rule", "'all'"]),
    (["--frob"], ["unrecognized arguments: --frob"]),
    (["--model"], ["argument --model", "expected one argument"]),
])
def test_bad_arguments_are_refused_in_one_line_naming_them(here, reached, argv, named):
    assert_refused(argv, here, *named)
    assert reached.calls == []


def test_a_vww_folder_without_its_image_folder_is_refused_before_reading(here, reached):
    (here / "vww").mkdir()
    (here / "vww" / "val.txt").write_text("a.png 1\n")
    assert_refused(["evaluate", "ok.npz", "--vww", "vww"], here, "--vww 'vww'", "image folder")
    assert reached.calls == []


# ---------------------------------------------------------------------------
# Failures inside the library: one line too, with the traceback on request
# ---------------------------------------------------------------------------

def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def test_a_library_error_from_bad_input_is_one_line(here, monkeypatch):
    monkeypatch.setattr(main_job, "tutorial_stages", _raise(ValueError("model[0][7]: bad input")))
    code, _, stderr = run(["--quick", "--model", "ok.npz", "--out", "out"])
    assert code == 2 and stderr == "tinyprune: error: model[0][7]: bad input\n"


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(here, monkeypatch):
    monkeypatch.setattr(main_job, "tutorial_stages", _raise(KeyError("stage")))
    code, _, stderr = run(["--quick", "--model", "ok.npz", "--out", "out"])
    assert code == 2 and len(stderr.splitlines()) == 1
    assert stderr.startswith("tinyprune: internal error: KeyError: 'stage'")
    assert "TINYPRUNE_DEBUG=1" in stderr


def test_tinyprune_debug_shows_the_traceback(here, monkeypatch):
    monkeypatch.setattr(main_job, "tutorial_stages", _raise(KeyError("stage")))
    monkeypatch.setenv("TINYPRUNE_DEBUG", "1")
    with pytest.raises(KeyError):
        run(["--quick", "--model", "ok.npz", "--out", "out"])


def test_the_help_documents_tinyprune_debug():
    code, stdout, _ = run(["--help"])
    assert code == 0 and "TINYPRUNE_DEBUG=1" in stdout


def test_a_multi_line_message_is_printed_on_one_line(here, monkeypatch):
    monkeypatch.setattr(main_job, "tutorial_stages", _raise(OSError("first\nsecond")))
    code, _, stderr = run(["--quick", "--model", "ok.npz", "--out", "out"])
    assert (code, stderr) == (2, "tinyprune: error: first second\n")


# ---------------------------------------------------------------------------
# Random command lines
# ---------------------------------------------------------------------------

FRACTIONS = ["0", "0.2", "0.5", "0.9", "1", "-0.1", "nan", "half"]
COUNTS = ["0", "1", "2", "-1", "1.5", "x"]
NUMBERS = ["2e-3", "1", "0", "-1e-3", "inf"]
SHAPES = ["1,3,96,96", "2,3,32,32", "-1,3,96,96", "1,3,0,96", "1,1,96,96", "1,3,96", "a,b,c,d"]
INPUTS = ["ok.npz", "two.npz", "gray.npz", "chain.npz", "flat.npz", "dense.npz", "text.txt", "broken.npz",
          "a-folder", "missing.npz", "a-folder/", ".", ""]
OUTPUTS = ["out", "out/x.npz", "res.json", "missing_dir/x.json", "ok.npz", "chain.npz", "ok.npz/x.npz",
           "a-folder", "/proc/x.npz", ""]
FLAG = None
# Each command's options and the values tried for them: mostly sensible, some wrong.
OPTIONS = {
    None: {"--out": OUTPUTS, "--epochs": COUNTS, "--level": FRACTIONS, "--channel-level": FRACTIONS,
           "--rule": ["reference", "sparse", "all"], "--quick": FLAG, "--seed": COUNTS, "--model": INPUTS,
           "--no-progress": FLAG},
    "count": {"--rule": ["reference", "dense", "all", "fast"], "--input-shape": SHAPES},
    "prune": {"--level": FRACTIONS, "--channel-level": FRACTIONS, "--propagate": FLAG, "--resize": FLAG,
              "--out": OUTPUTS, "--input-shape": SHAPES},
    "evaluate": {"--vww": INPUTS, "--subset": ["val", "train", "test"], "--quick": FLAG,
                 "--batch-size": COUNTS},
    "bench": {"--threads": COUNTS, "--blas-threads": COUNTS, "--quick": FLAG, "--json": OUTPUTS},
    "pretrain": {"--epochs": COUNTS, "--lr": NUMBERS, "--decay-epochs": COUNTS, "--decay-factor": NUMBERS,
                 "--seed": COUNTS, "--bn-gamma": NUMBERS, "--out": OUTPUTS + INPUTS, "--check": FLAG,
                 "--no-progress": FLAG},
}
JUNK = st.one_of(st.sampled_from(["--help", "-h", "--", "-", "--ep", "--out=", "--seed=-1", "count", "bench",
                                  "prune", "pretrain", "evaluate"] + INPUTS + OUTPUTS + SHAPES),
                 st.integers(-5, 40).map(str), st.floats(-2, 2).map(repr),
                 st.text(string.ascii_letters + string.digits + "-,./=", max_size=8))


@st.composite
def command_lines(draw):
    """A command, its file, options with values, and now and then a stray word somewhere."""
    command = draw(st.sampled_from(list(OPTIONS)))
    words = [] if command is None else [command]
    if command in ("count", "prune", "evaluate") and draw(st.integers(0, 9)):
        words.append(draw(st.sampled_from(INPUTS)))
    options = OPTIONS[command]
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=5)):
        values = options[option]
        words += [option] if values is FLAG else [option, draw(st.sampled_from(values))]
    for _ in range(draw(st.integers(0, 2)) // 2):      # a stray word in one line of four
        words.insert(draw(st.integers(0, len(words))), draw(JUNK))
    return words


INPUT_FILES = ("ok.npz", "two.npz", "gray.npz", "chain.npz", "flat.npz", "dense.npz", "text.txt",
               "broken.npz")


def _complete(path):
    """True if ``path`` is a whole checkpoint or a whole JSON file (the two kinds the stubbed command writes)."""
    if path.name.endswith(".tmp"):
        return False                                   # a temporary left behind
    try:
        checkpoint.load(path)
        return True
    except ValueError:
        pass
    try:
        json.loads(path.read_text())
        return True
    except (ValueError, UnicodeDecodeError):
        return False


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_random_command_lines_exit_0_or_fail_in_one_line_and_write_only_whole_files(
        inputs, reached, monkeypatch, argv):
    monkeypatch.delenv("TINYPRUNE_OUT", raising=False)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in INPUT_FILES:
            shutil.copy(inputs[name], work / name)
        (work / "a-folder").mkdir()
        before = tree(work)
        os.chdir(work)
        try:
            code, _, stderr = run(argv)
        finally:
            os.chdir(cwd)
        assert "Traceback" not in stderr
        after = tree(work)
        if code != 0:
            assert code == 2 and len(stderr.splitlines()) == 1, (argv, stderr)
            assert all(after.get(name) == value for name, value in before.items()), argv
            assert all(value == "folder" for name, value in after.items() if name not in before), argv
        for name, value in after.items():
            if value != "folder" and before.get(name) != value:
                assert _complete(work / name), (argv, name)
