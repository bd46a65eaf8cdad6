"""The course kit's grader, ``tinyprune grade``, on copies of the miniature course.

The miniature course (``tests/kit_fixture``) has three exercises and five
tests marked by exercise (a sixth carries only its chapter marker).  The
student copy cuts all three, so every exercise scores 0; the solutions copy
cuts nothing, so every exercise scores 1.  The grader runs pytest in a
subprocess; each copy is graded once for the whole module.  The scoring rule
itself is checked on recorded outcomes, without running pytest.
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from tinyprune.tools import assignment, grade
from tinyprune.tools.fences import load_table

pytestmark = pytest.mark.tutorials

FIXTURE = Path(__file__).resolve().parent / "kit_fixture"
TABLE = "kitpkg/exercises.py"


def copy_of_the_course(folder, *options):
    """Cut the miniature course into ``folder`` with ``options``; returns the folder."""
    source = Path(shutil.copytree(FIXTURE, folder.parent / (folder.name + "-source"),
                                  ignore=shutil.ignore_patterns("__pycache__")))
    assert assignment.main(["--source", str(source), "--table", str(source / TABLE), "--out", str(folder),
                            *options]) == 0
    return folder


def graded(folder, *options):
    """``tinyprune grade FOLDER --table ... OPTIONS``: (exit code, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
            code = grade.main([str(folder), "--table", str(folder / TABLE), *map(str, options)])
    return code, printed.getvalue()


def total_line(printed):
    """The table's last row: ``total ... N of M``."""
    return next(line for line in printed.splitlines() if line.startswith("total"))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """The student copy graded: (exit code, printed table, Gradescope JSON)."""
    folder = copy_of_the_course(tmp_path_factory.mktemp("student") / "hw")
    code, printed = graded(folder, "--json", folder / "results.json")
    return code, printed, json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The solutions copy graded: (exit code, printed table)."""
    return graded(copy_of_the_course(tmp_path_factory.mktemp("teacher") / "key", "--solutions"))


# ---------------------------------------------------------------------------
# The two copies
# ---------------------------------------------------------------------------

def test_the_student_copy_scores_0_of_3(student):
    code, printed, _ = student
    assert code == 0
    assert total_line(printed).split() == ["total", "0", "of", "3"]
    assert "5 failed, 1 deselected" in printed


def test_the_solutions_copy_scores_3_of_3(teacher):
    code, printed = teacher
    assert code == 0
    assert [line.split()[0] for line in printed.splitlines()[2:5]] == ["layers.1", "layers.2", "kernels.1"]
    assert [line.split()[-1] for line in printed.splitlines()[2:5]] == ["1", "1", "1"]
    assert total_line(printed).split() == ["total", "3", "of", "3"]


def test_the_table_counts_each_exercises_passed_and_failed_tests(student):
    rows = student[1].splitlines()[2:5]
    assert [row.split()[-3:] for row in rows] == [["0", "2", "0"], ["0", "1", "0"], ["0", "2", "0"]]


def test_the_json_is_gradescopes_format_one_entry_per_exercise(student):
    results = student[2]
    assert results["score"] == 0
    assert [test["name"] for test in results["tests"]] == [
        "layers.1: softsign, elementwise", "layers.2: the doubling layer's backward pass",
        "kernels.1: the sum of each row, as a kernel"]
    assert all(test["score"] == 0 and test["max_score"] == 1 for test in results["tests"])


def test_the_json_output_is_the_first_failing_tests_message(student):
    first = student[2]["tests"][0]["output"]
    assert first == ("tests/test_ops.py::test_softsign_of_three_is_three_quarters: NotImplementedError: "
                     "Exercise layers.1: softsign, elementwise (and 1 more failing)")


# ---------------------------------------------------------------------------
# The scoring rule, on recorded outcomes
# ---------------------------------------------------------------------------

def outcomes(*tests, errors=()):
    """Recorded results as gradeplugin writes them: tests are (nodeid, outcome, markers)."""
    return {"tests": {nodeid: {"outcome": outcome, "markers": list(markers), "message": f"{nodeid} broke"}
                      for nodeid, outcome, markers in tests},
            "collection_errors": [{"nodeid": nodeid, "message": "ImportError"} for nodeid in errors]}


def one_exercise():
    return [load_table(FIXTURE / TABLE).exercises[0]]           # layers.1, marker ex_layers_1


def test_an_exercise_scores_1_when_all_its_tests_pass():
    row, = grade.score(one_exercise(), outcomes(("t1", "passed", ["ex_layers_1"]),
                                                ("t2", "passed", ["ex_layers_1"]),
                                                ("t3", "failed", ["ex_layers_2"])))
    assert (row["score"], row["passed"], row["failed"]) == (1, 2, 0)


def test_one_failing_test_makes_the_exercise_score_0():
    row, = grade.score(one_exercise(), outcomes(("t1", "passed", ["ex_layers_1"]),
                                                ("t2", "error", ["ex_layers_1"])))
    assert (row["score"], row["output"]) == (0, "t2: t2 broke")


def test_skipped_tests_alone_score_0():
    row, = grade.score(one_exercise(), outcomes(("t1", "skipped", ["ex_layers_1"])))
    assert (row["score"], row["skipped"]) == (0, 1)


def test_an_exercise_without_tests_scores_0_and_names_the_file_that_did_not_import():
    row, = grade.score(one_exercise(), outcomes(errors=["tests/test_ops.py"]))
    assert row["score"] == 0
    assert row["output"] == ("no test marked ex_layers_1 ran; tests/test_ops.py could not be collected: "
                             "ImportError")


def test_only_the_exercises_handed_out_are_graded(tmp_path):
    folder = copy_of_the_course(tmp_path / "hw", "--exercises", "layers.2")
    ids = [exercise.id for exercise in grade.graded_exercises(folder, load_table(folder / TABLE))]
    assert ids == ["layers.2"]


def test_a_missing_folder_is_refused_in_one_line(capsys, tmp_path):
    code = grade.main([str(tmp_path / "nowhere")])
    assert code == 2
    assert capsys.readouterr().err == f"tinyprune: error: '{tmp_path / 'nowhere'}' is not a folder\n"
