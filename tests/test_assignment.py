"""The course kit's cutting tool, ``tinyprune assignment``, on a miniature course.

``tests/kit_fixture`` is a tiny repository (package ``kitpkg``) with three
fenced exercises: ``softsign`` (layers.1), ``Doubler.backward`` (layers.2)
and the plain-Python kernel ``_row_sums`` with its Numba twin (kernels.1,
fenced with its id on the BEGIN line).  Every test copies it to a scratch
folder, so it may edit the copy.  The last tests check the real table.
"""

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyprune.tools.assignment import check_markers, main, tree_files
from tinyprune.tools.exercises import marker
from tinyprune.tools.fences import is_trivial, load_table

pytestmark = pytest.mark.tutorials

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "kit_fixture"
TABLE = "kitpkg/exercises.py"
FIXTURE_FILES = ["README.md", "conftest.py", "kitpkg/__init__.py", "kitpkg/exercises.py", "kitpkg/kernels.py",
                 "kitpkg/ops.py", "setup.cfg", "tests/test_ops.py", "tutorials/intro.py"]

SOFTSIGN = "    ### BEGIN SOLUTION\n    return x / (1.0 + np.abs(x))\n    ### END SOLUTION\n"
SOFTSIGN_STUB = '    raise NotImplementedError("Exercise layers.1: softsign, elementwise")\n'
DOUBLER = "        ### BEGIN SOLUTION\n        grad = dy + dy\n        return grad\n        ### END SOLUTION\n"
DOUBLER_STUB = '        raise NotImplementedError("Exercise layers.2: the doubling layer\'s backward pass")\n'
ROW_SUMS = ("        ### BEGIN SOLUTION kernels.1\n        total = 0.0\n        for j in range(x.shape[1]):\n"
            "            total += x[i, j]\n        out[i] = total\n        ### END SOLUTION\n")
ROW_SUMS_STUB = '        raise NotImplementedError("Exercise kernels.1: the sum of each row, as a kernel")\n'
TWIN = "row_sums = numba.njit(cache=False)(_row_sums)\n"
TWIN_UNCOMPILED = "row_sums = _row_sums   # uncompiled: runs your plain function (exercise kernels.1)\n"


@pytest.fixture
def course(tmp_path):
    """A scratch copy of the miniature course."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "course", ignore=shutil.ignore_patterns("__pycache__")))


def run(capsys, course, *argv):
    """``tinyprune assignment --source COURSE --table ... ARGV``: (exit code, stdout, stderr)."""
    code = main(["--source", str(course), "--table", str(course / TABLE), *map(str, argv)])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def read(folder, path):
    return (Path(folder) / path).read_text(encoding="utf-8")


def edit(folder, path, old, new):
    text = read(folder, path)
    assert old in text
    (Path(folder) / path).write_text(text.replace(old, new), encoding="utf-8")


def files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# --list and --markers
# ---------------------------------------------------------------------------

def test_list_prints_each_exercise_with_its_place_dependencies_and_fences(capsys, course):
    code, out, _ = run(capsys, course, "--list")
    rows = {line.split()[0]: line for line in out.splitlines()[2:5]}
    assert code == 0
    assert list(rows) == ["layers.1", "layers.2", "kernels.1"]
    assert "softsign, elementwise" in rows["layers.1"] and "kitpkg/ops.py:softsign" in rows["layers.1"]
    assert "kitpkg/ops.py:Doubler.backward" in rows["layers.2"] and " layers.1 " in rows["layers.2"]
    assert all(line.split()[-1] == "1" for line in rows.values())         # one fence each


def test_list_reports_a_listed_function_without_a_fence(capsys, course):
    edit(course, "kitpkg/ops.py", DOUBLER, "        return dy + dy\n")
    code, out, _ = run(capsys, course, "--list")
    assert code == 1
    assert ("exercise layers.2 lists kitpkg/ops.py:Doubler.backward, but no fence of layers.2 "
            "stands in it") in out


def test_markers_prints_one_setup_cfg_line_per_exercise(capsys, course):
    code, out, _ = run(capsys, course, "--markers")
    assert code == 0
    assert out.splitlines() == ["    ex_layers_1: exercise layers.1, softsign, elementwise",
                                "    ex_layers_2: exercise layers.2, the doubling layer's backward pass",
                                "    ex_kernels_1: exercise kernels.1, the sum of each row, as a kernel"]


def test_the_fixture_registers_exactly_the_markers_of_its_table(course):
    assert check_markers(load_table(course / TABLE), course / "setup.cfg") == []


def test_a_marker_missing_from_setup_cfg_is_named(course):
    edit(course, "setup.cfg", "    ex_kernels_1: exercise kernels.1, the sum of each row, as a kernel\n", "")
    problems = check_markers(load_table(course / TABLE), course / "setup.cfg")
    assert len(problems) == 1 and "marker ex_kernels_1 is missing" in problems[0]


# ---------------------------------------------------------------------------
# The student copy
# ---------------------------------------------------------------------------

def test_each_cut_region_becomes_a_stub_naming_its_exercise_and_title(capsys, course, tmp_path):
    code, out, _ = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 0
    assert "3 exercises cut in 3 regions: layers.1 layers.2 kernels.1" in out
    assert SOFTSIGN_STUB in read(tmp_path / "hw", "kitpkg/ops.py")
    assert DOUBLER_STUB in read(tmp_path / "hw", "kitpkg/ops.py")
    assert ROW_SUMS_STUB in read(tmp_path / "hw", "kitpkg/kernels.py")


def test_the_cut_changes_nothing_but_the_regions_and_the_twin_line(capsys, course, tmp_path):
    run(capsys, course, "--out", tmp_path / "hw")
    hw = tmp_path / "hw"
    assert files(hw) == sorted(files(course) + ["assignment.json", "tutorials/intro.ipynb"])
    assert read(hw, "kitpkg/ops.py") == read(course, "kitpkg/ops.py").replace(
        SOFTSIGN, SOFTSIGN_STUB).replace(DOUBLER, DOUBLER_STUB)
    assert read(hw, "kitpkg/kernels.py") == read(course, "kitpkg/kernels.py").replace(
        ROW_SUMS, ROW_SUMS_STUB).replace(TWIN, TWIN_UNCOMPILED)
    for path in files(course):
        if path not in ("kitpkg/ops.py", "kitpkg/kernels.py"):
            assert (hw / path).read_bytes() == (course / path).read_bytes(), path


def test_the_copy_records_the_exercises_handed_out(capsys, course, tmp_path):
    run(capsys, course, "--out", tmp_path / "hw", "--exercises", "layers.2", "kernels.1")
    record = json.loads(read(tmp_path / "hw", "assignment.json"))
    assert record == {"exercises": ["layers.2", "kernels.1"], "solutions": False}


def test_a_cut_kernel_runs_the_students_plain_function_uncompiled(capsys, course, tmp_path):
    run(capsys, course, "--out", tmp_path / "hw", "--exercises", "kernels.1")
    spec = importlib.util.spec_from_file_location("student_kernels", tmp_path / "hw/kitpkg/kernels.py")
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    assert kernels.row_sums is kernels._row_sums
    with pytest.raises(NotImplementedError, match="Exercise kernels.1: the sum of each row"):
        kernels.row_sums(np.ones((1, 1)), np.zeros(1))


def test_exercises_option_cuts_only_the_named_exercise(capsys, course, tmp_path):
    run(capsys, course, "--out", tmp_path / "hw", "--exercises", "layers.2")
    ops = read(tmp_path / "hw", "kitpkg/ops.py")
    assert DOUBLER_STUB in ops and SOFTSIGN in ops
    assert read(tmp_path / "hw", "kitpkg/kernels.py") == read(course, "kitpkg/kernels.py")


def test_chapters_option_cuts_every_exercise_of_the_chapter(capsys, course, tmp_path):
    code, out, _ = run(capsys, course, "--out", tmp_path / "hw", "--chapters", "layers")
    assert code == 0 and "2 exercises cut in 2 regions: layers.1 layers.2" in out
    assert read(tmp_path / "hw", "kitpkg/kernels.py") == read(course, "kitpkg/kernels.py")


def test_an_unknown_exercise_is_refused_in_one_line_naming_the_known_ones(capsys, course, tmp_path):
    code, _, err = run(capsys, course, "--out", tmp_path / "hw", "--exercises", "layers.9")
    assert code == 2
    assert err == ("tinyprune: error: --exercises: no exercise 'layers.9'; the table has "
                   "kernels.1, layers.1, layers.2\n")
    assert not (tmp_path / "hw").exists()


def test_the_solutions_copy_is_the_source_byte_for_byte(capsys, course, tmp_path):
    code, _, _ = run(capsys, course, "--out", tmp_path / "key", "--solutions")
    assert code == 0
    assert files(tmp_path / "key") == sorted(files(course) + ["assignment.json", "tutorials/intro.ipynb"])
    for path in files(course):
        assert (tmp_path / "key" / path).read_bytes() == (course / path).read_bytes(), path
    assert json.loads(read(tmp_path / "key", "assignment.json"))["solutions"] is True


# ---------------------------------------------------------------------------
# Where the copy may go
# ---------------------------------------------------------------------------

def test_a_folder_that_is_not_empty_is_refused_and_left_alone(capsys, course, tmp_path):
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 2
    assert err.startswith("tinyprune: error: --out ") and err.endswith("is not empty; give a new or "
                                                                      "empty folder\n")
    assert files(tmp_path / "hw") == ["notes.txt"]


def test_a_file_given_as_the_folder_is_refused(capsys, course, tmp_path):
    (tmp_path / "hw").write_text("mine")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 2 and err.endswith("is a file; give a new or empty folder\n")
    assert (tmp_path / "hw").read_text() == "mine"


def test_an_empty_folder_is_filled(capsys, course, tmp_path):
    (tmp_path / "hw").mkdir()
    code, _, _ = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 0 and (tmp_path / "hw" / "kitpkg" / "ops.py").is_file()


def test_the_source_tree_itself_is_refused(capsys, course):
    code, _, err = run(capsys, course, "--out", course / "hw")
    assert code == 2 and "is inside the source tree" in err and err.count("\n") == 1
    assert not (course / "hw").exists()


# ---------------------------------------------------------------------------
# No line of a solution survives
# ---------------------------------------------------------------------------

def test_a_solution_line_left_in_a_tutorial_stops_the_copy_and_names_it(capsys, course, tmp_path):
    edit(course, "tutorials/intro.py", "# then run this cell.\n",
         "# then run this cell. (Answer: return x / (1.0 + np.abs(x)))\n")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 1
    # Found twice: in the tutorial script and in the notebook made from it.
    assert "lines of cut solutions survive in the copy (2); nothing was written" in err
    assert ("layers.1: 'return x / (1.0 + np.abs(x))' (cut from kitpkg/ops.py:11) survives in "
            "tutorials/intro.py:5") in err
    assert "survives in tutorials/intro.ipynb, cell 1" in err
    assert list(tmp_path.iterdir()) == [course]          # no copy, no temporary folder left


def test_a_solution_line_left_in_a_test_is_found_with_other_spacing(capsys, course, tmp_path):
    edit(course, "tests/test_ops.py", "    x = np.arange(12.0).reshape(3, 4)\n",
         "    x = np.arange(12.0).reshape(3, 4)\n    expected=[total for total in x.sum(1)]  # total+=x[i,j]\n")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 1 and "kernels.1: 'total += x[i, j]' (cut from kitpkg/kernels.py:12)" in err


@pytest.mark.parametrize("line", ["return x", "return self.weight", "pass", ")", "else:", "y = -x",
                                  "for a in range(KH):", "if self.bias is not None:",
                                  "N, C, H, W = x.shape", "x = self._cache", "w_ab = w[c, a, b]"])
def test_lines_that_compute_nothing_are_trivial(line):
    assert is_trivial(line)


@pytest.mark.parametrize("line", ["dx = dy @ w", "total += x[i, j]", "return np.abs(w) >= t",
                                  "grad = dy + dy", "dx = np.empty_like(x)", "mask[order[:k]] = False"])
def test_lines_with_an_operator_or_a_call_are_looked_for(line):
    assert not is_trivial(line)


# ---------------------------------------------------------------------------
# Fences and the table must agree
# ---------------------------------------------------------------------------

def test_a_fence_in_a_function_no_exercise_lists_is_refused(capsys, course, tmp_path):
    edit(course, "kitpkg/ops.py", "class Doubler:", "def extra(x):\n    ### BEGIN SOLUTION\n    return x * 3\n"
         "    ### END SOLUTION\n\n\nclass Doubler:")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 2
    assert "kitpkg/ops.py:16: the fence in extra belongs to no exercise" in err


@pytest.mark.parametrize("fence,message", [
    ("    # BEGIN SOLUTION\n", "kitpkg/ops.py:10: '# BEGIN SOLUTION' is not a fence"),
    ("    ### END SOLUTION\n", "kitpkg/ops.py:10: END SOLUTION without a BEGIN SOLUTION"),
    ("  ### BEGIN SOLUTION\n", "kitpkg/ops.py:12: END SOLUTION is indented 4 columns, its BEGIN on line 10 2"),
])
def test_a_malformed_fence_is_refused_naming_its_line(capsys, course, tmp_path, fence, message):
    edit(course, "kitpkg/ops.py", "    ### BEGIN SOLUTION\n    return x / (1.0", fence + "    return x / (1.0")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 2 and message in err


def test_fence_words_inside_a_docstring_are_not_a_fence(capsys, course, tmp_path):
    edit(course, "kitpkg/ops.py", '    """softsign(x)', '    """Cut between\n    ### BEGIN SOLUTION\n    """\n'
         '    """softsign(x)')
    code, _, _ = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 0 and "    ### BEGIN SOLUTION\n    \"\"\"\n" in read(tmp_path / "hw", "kitpkg/ops.py")


def test_a_fence_that_splits_a_statement_is_refused(capsys, course, tmp_path):
    edit(course, "kitpkg/ops.py", SOFTSIGN, "    return np.maximum(\n        ### BEGIN SOLUTION\n"
         "        x, 0.0\n        ### END SOLUTION\n    )\n")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw", "--exercises", "layers.1")
    assert code == 2 and "kitpkg/ops.py: cutting its fences leaves invalid Python" in err


def test_a_fenced_kernel_compiled_by_a_decorator_is_refused(capsys, course, tmp_path):
    edit(course, "kitpkg/kernels.py", "def _row_sums", "@numba.njit\ndef _row_sums")
    edit(course, "kitpkg/kernels.py", TWIN, "")
    code, _, err = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 2 and "_row_sums holds a fence but is compiled by a decorator" in err


# ---------------------------------------------------------------------------
# Which files the copy holds
# ---------------------------------------------------------------------------

def test_a_walked_tree_leaves_out_caches_environments_and_build_output(course):
    for junk in ("kitpkg/__pycache__/ops.cpython-311.pyc", "data/cache/train.npz", ".venv/pyvenv.cfg",
                 "kitpkg.egg-info/PKG-INFO", ".pytest_cache/README.md", "kitpkg/kernels.row_sums-1.nbi"):
        (course / junk).parent.mkdir(parents=True, exist_ok=True)
        (course / junk).write_text("junk")
    assert tree_files(course) == FIXTURE_FILES


def test_a_git_checkout_gives_its_tracked_files_only(course):
    subprocess.run(["git", "init", "-q", str(course)], check=True)
    subprocess.run(["git", "-C", str(course), "add", "."], check=True)
    (course / "scratch-answers.txt").write_text("not tracked: not handed out")
    assert tree_files(course) == FIXTURE_FILES


def test_without_jupytext_the_tutorials_stay_scripts_and_a_note_says_so(capsys, course, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "jupytext", None)          # import jupytext now fails
    code, out, _ = run(capsys, course, "--out", tmp_path / "hw")
    assert code == 0 and "note: jupytext is not installed: the tutorials (tutorials/intro.py)" in out
    assert not list((tmp_path / "hw").rglob("*.ipynb"))


def test_with_jupytext_each_tutorial_also_becomes_a_notebook(capsys, course, tmp_path):
    run(capsys, course, "--out", tmp_path / "hw")
    notebook = json.loads(read(tmp_path / "hw", "tutorials/intro.ipynb"))
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    assert [cell["cell_type"] for cell in notebook["cells"]] == ["markdown", "code"]
    assert sources[1].endswith("print(softsign(np.array([-3.0, 0.0, 3.0])))")


# ---------------------------------------------------------------------------
# The real table
# ---------------------------------------------------------------------------

def test_the_real_table_is_well_formed_and_names_functions_that_exist():
    table = load_table(ROOT / "tinyprune/tools/exercises.py")
    assert len(table.exercises) >= 1
    for exercise in table.exercises:
        for place in exercise.places:
            path, function = place.split(":")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            names = {f"{outer.name}.{inner.name}" for outer in tree.body if isinstance(outer, ast.ClassDef)
                     for inner in outer.body if isinstance(inner, ast.FunctionDef)}
            names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            assert function in names, place


def test_an_exercise_marker_is_ex_chapter_number():
    assert marker("layers.2") == "ex_layers_2"


def test_setup_cfg_registers_the_marker_of_every_exercise():
    table = load_table(ROOT / "tinyprune/tools/exercises.py")
    assert check_markers(table, ROOT / "setup.cfg") == []
