"""Chapter 2 (kernels): tinyprune runs NumPy's BLAS on one thread unless told otherwise."""

import os
import subprocess
import sys

import pytest

from tinyprune import blas_threads, set_blas_threads

pytestmark = pytest.mark.kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def threads_after_import(extra_env):
    """blas_threads() in a fresh interpreter that imports NumPy first, then tinyprune."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(extra_env, PYTHONPATH=ROOT)
    code = "import numpy; import tinyprune; print(tinyprune.blas_threads())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_tinyprune_after_numpy_still_gets_one_blas_thread():
    assert threads_after_import({}) == "1"


def test_a_thread_count_you_set_yourself_is_left_alone():
    assert threads_after_import({"OPENBLAS_NUM_THREADS": "2"}) == "2"


def test_set_blas_threads_changes_what_openblas_reports():
    before = blas_threads()
    assert before is not None, "NumPy's BLAS is not OpenBLAS here: tinyprune cannot set its threads"
    try:
        assert set_blas_threads(2) is True
        assert blas_threads() == 2
        assert set_blas_threads(1) is True
        assert blas_threads() == 1
    finally:
        set_blas_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_set_blas_threads_rejects_a_count_that_is_not_a_positive_int(bad):
    with pytest.raises(ValueError, match="set_blas_threads: expected a positive number of threads"):
        set_blas_threads(bad)
