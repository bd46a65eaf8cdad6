"""The shared plumbing: argument checks, atomic writes, tables, folders."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyprune.common import (atomic_write, check_bool, check_int, check_level, check_number, data_dir,
                              format_table, output_dir)

pytestmark = pytest.mark.layers


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_check_int_accepts_python_and_numpy_integers(value):
    assert check_int(value, "n", "f") == int(value)
    assert type(check_int(value, "n", "f")) is int


@pytest.mark.parametrize("value", [True, 2.0, "3", None, np.float32(1)])
def test_check_int_refuses_what_is_not_an_integer_naming_function_and_argument(value):
    with pytest.raises(TypeError, match=r"^f: n must be an integer >= 1, got"):
        check_int(value, "n", "f")


def test_check_int_refuses_values_below_the_minimum():
    assert check_int(0, "pad", "Conv2d", minimum=0) == 0
    with pytest.raises(ValueError, match=r"Conv2d: pad must be an integer >= 0, got -1"):
        check_int(-1, "pad", "Conv2d", minimum=0)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.int64(1)])
def test_check_number_accepts_real_numbers_as_floats(value):
    assert check_number(value, "lr", "Adam", low=0, low_open=True) == float(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_number_refuses_nan_and_infinity_even_without_bounds(value):
    with pytest.raises(ValueError, match=r"SGD: weight_decay must be a finite number"):
        check_number(value, "weight_decay", "SGD")


def test_check_number_writes_open_and_closed_bounds_in_its_message():
    with pytest.raises(ValueError, match=r"in \(0, inf\], got 0.0"):
        check_number(0, "lr", "Adam", low=0, low_open=True)
    with pytest.raises(ValueError, match=r"in \[0, 1\), got 1.0"):
        check_number(1, "momentum", "SGD", low=0, high=1, high_open=True)
    with pytest.raises(TypeError, match=r"Adam: lr must be a number, got '0.1'"):
        check_number("0.1", "lr", "Adam")


def test_check_level_takes_the_closed_unit_interval():
    assert check_level(0, "LevelPrune") == 0.0 and check_level(1, "LevelPrune") == 1.0
    with pytest.raises(ValueError, match=r"LevelPrune: the level .* in \[0.0, 1.0\], got 1.5"):
        check_level(1.5, "LevelPrune")


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------

def test_atomic_write_writes_the_whole_file_with_the_usual_permissions(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["a.bin"]          # no temporary left


def test_atomic_write_in_text_mode(tmp_path):
    path = atomic_write(tmp_path / "a.txt", lambda f: f.write("héllo\n"), binary=False)
    assert path.read_text() == "héllo\n"


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def half(f):
        f.write(b"new, but")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_atomic_write_refuses_names_of_folders(name):
    with pytest.raises(IsADirectoryError, match="names a folder"):
        atomic_write(name, lambda f: None)


def test_atomic_write_refuses_an_existing_folder_and_a_path_under_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}.*is a folder"):
        atomic_write(tmp_path, lambda f: None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{blocker}' is a file, not a folder"):
        atomic_write(blocker / "a.npz", lambda f: None)
    assert blocker.read_text() == "x"


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)                       # that process has exited
    stale = tmp_path / f".a.npz.{dead_pid}.xyz.tmp"
    stale.write_bytes(b"half")
    alive = tmp_path / f".a.npz.{os.getppid()}.xyz.tmp"   # a live writer's: left alone
    alive.write_bytes(b"in progress")
    other = tmp_path / f".b.npz.{dead_pid}.xyz.tmp"       # another file's: left alone
    other.write_bytes(b"x")
    atomic_write(tmp_path / "a.npz", lambda f: f.write(b"whole"))
    assert sorted(os.listdir(tmp_path)) == sorted(["a.npz", alive.name, other.name])


# ---------------------------------------------------------------------------
# Tables and folders
# ---------------------------------------------------------------------------

def test_format_table_aligns_names_left_numbers_right_with_rules():
    text = format_table(("layer", "mults"), [("[0]", "1,000"), ("[10]", "7")], total=("total", "1,007"),
                        title="counts")
    assert text.split("\n") == [
        "counts",
        "layer  mults",
        "-----  -----",
        "[0]    1,000",
        "[10]       7",
        "-----  -----",
        "total  1,007",
    ]


def test_data_dir_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPRUNE_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("TINYPRUNE_DATA")
    assert data_dir().name == "data" and (data_dir().parent / "setup.cfg").is_file()


@pytest.mark.parametrize("value", [0, 1, "yes", None])
def test_check_bool_takes_only_true_and_false(value):
    assert check_bool(np.bool_(True), "shuffle", "DataLoader") is True
    with pytest.raises(TypeError, match=r"^DataLoader: shuffle must be True or False, got"):
        check_bool(value, "shuffle", "DataLoader")


def test_atomic_write_refuses_to_replace_a_device_or_a_pipe(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write(pipe, lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write("/dev/null", lambda f: f.write(b"x"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_dir_gives_each_program_its_own_subfolder(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYPRUNE_OUT", raising=False)
    assert output_dir("main") == Path("tinyprune-out") / "main"
    monkeypatch.setenv("TINYPRUNE_OUT", str(tmp_path))
    assert output_dir("pruning") == tmp_path / "pruning"
    assert not (tmp_path / "pruning").exists()                    # named, not created


def test_every_function_that_takes_a_model_refuses_what_is_not_one_by_its_name():
    import tinyprune as tp
    from tinyprune import plots
    calls = {"plot_sparsity": lambda: plots.plot_sparsity(None), "channel_counts": lambda: tp.channel_counts(None),
             "resize": lambda: tp.resize(3), "prune_propagate": lambda: tp.prune_propagate("x"),
             "fold_batchnorm": lambda: tp.fold_batchnorm(None), "sparsity": lambda: tp.sparsity([]),
             "compute_dot_prods": lambda: tp.compute_dot_prods(None, (1, 3, 96, 96))}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name}: expected a model \(a Layer or Chain\), got"):
            call()
