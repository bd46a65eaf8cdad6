"""``tinyprune grade``: run a copy's tests and score each exercise.

    tinyprune grade [DIR] [--json results.json]

DIR (default: the current folder) is a copy written by ``tinyprune
assignment``, or any tree with an exercise table.  Its tests run with pytest
in a separate process, with DIR first on ``sys.path`` (so they test DIR's
code, whatever tinyprune is installed), no cache written
(``-p no:cacheprovider``), and only the tests of the graded exercises
selected (``-m "(ex_layers_1 or ...) and not integration"``: the tests of
the whole pipeline carry every exercise's marker, and would make one
missing exercise cost every other its point).

The rule: an exercise scores 1 when at least one test carries its marker
(``ex_<chapter>_<n>``) and every such test passes (skipped tests neither
count for nor against it); otherwise 0.  The graded exercises are those in
DIR's ``assignment.json`` (the ones handed out), or the whole table when it
has none.  A test file that cannot even be imported is reported; an
exercise none of whose tests could be collected scores 0.

Without ``--json`` a table is printed: exercise, title, tests passed and
failed, score, and the total ``N of M``.  With it, the same goes in
Gradescope's results format: ``{"score": N, "tests": [{"name", "number",
"score", "max_score", "status", "output"}]}``, one entry per exercise, its
output the first failing test's one-line message.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..common import atomic_write, format_table
from .assignment import ASSIGNMENT_FILE, TABLE
from .exercises import marker
from .fences import CourseError, load_table

__all__ = ["main", "run_tests", "score"]

PLUGIN = "tinyprune_grade_plugin"              # the private name gradeplugin.py is loaded under


def graded_exercises(root, table):
    """The exercises of ``table`` listed in ``root/assignment.json``, or all of them."""
    record = Path(root) / ASSIGNMENT_FILE
    if not record.is_file():
        return list(table.exercises)
    try:
        ids = json.loads(record.read_text(encoding="utf-8"))["exercises"]
    except (ValueError, KeyError, TypeError):
        raise CourseError(f"{str(record)!r} is not an assignment record (a JSON object with a list "
                          "'exercises')") from None
    unknown = sorted(set(ids) - {exercise.id for exercise in table.exercises})
    if unknown:
        raise CourseError(f"{str(record)!r} lists {', '.join(unknown)}, not in the exercise table")
    return [exercise for exercise in table.exercises if exercise.id in ids]


def run_tests(root, markers):
    """Run pytest on ``root``'s tests carrying any of ``markers``; returns (results, pytest's last line).

    ``results`` is what ``gradeplugin`` recorded.  CourseError if pytest
    could not run at all (an internal or usage error).
    """
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="tinyprune-grade-") as scratch:
        shutil.copy(Path(__file__).with_name("gradeplugin.py"), Path(scratch) / f"{PLUGIN}.py")
        results = Path(scratch) / "results.json"
        env = dict(os.environ, TINYPRUNE_GRADE_RESULTS=str(results))
        env["PYTHONPATH"] = os.pathsep.join([scratch, str(root)] + ([env["PYTHONPATH"]]
                                                                    if env.get("PYTHONPATH") else []))
        env.setdefault("MPLBACKEND", "Agg")
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN, "-q",
                   "--continue-on-collection-errors", "--rootdir", str(root),
                   "-m", f"({' or '.join(markers)}) and not integration"]
        run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.strip()]
        if run.returncode not in (0, 1, 5) or not results.is_file():
            tail = "\n  ".join((lines + run.stderr.splitlines())[-15:])
            raise CourseError(f"pytest could not run the tests of {str(root)!r} "
                              f"(exit code {run.returncode}):\n  {tail}")
        return json.loads(results.read_text(encoding="utf-8")), (lines[-1] if lines else "")


def score(exercises, results):
    """One row per exercise: dict(exercise, passed, failed, skipped, score, output)."""
    rows = []
    errors = results["collection_errors"]
    for exercise in exercises:
        tests = [(nodeid, test) for nodeid, test in results["tests"].items()
                 if marker(exercise.id) in test["markers"]]
        failing = [(nodeid, test) for nodeid, test in tests if test["outcome"] in ("failed", "error")]
        passed = sum(test["outcome"] == "passed" for _, test in tests)
        if failing:
            nodeid, test = failing[0]
            output = f"{nodeid}: {test['message']}"
            if len(failing) > 1:
                output += f" (and {len(failing) - 1} more failing)"
        elif not passed:
            output = f"no test marked {marker(exercise.id)} ran"
            if errors:
                output += f"; {errors[0]['nodeid']} could not be collected: {errors[0]['message']}"
        else:
            output = f"all {passed} tests pass"
        rows.append({"exercise": exercise, "passed": passed, "failed": len(failing),
                     "skipped": len(tests) - passed - len(failing),
                     "score": int(passed > 0 and not failing), "output": output})
    return rows


def gradescope(rows, errors):
    """Gradescope's results object for the scored ``rows``."""
    total = sum(row["score"] for row in rows)
    output = f"{total} of {len(rows)} exercises pass"
    if errors:
        output += "; test files that could not be collected: " + ", ".join(e["nodeid"] for e in errors)
    return {"score": total, "output": output, "tests": [
        {"name": f"{row['exercise'].id}: {row['exercise'].title}", "number": row["exercise"].id,
         "score": row["score"], "max_score": 1, "status": "passed" if row["score"] else "failed",
         "output": row["output"]} for row in rows]}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tinyprune grade",
        description="Run the tests of a course copy and score each exercise (1 when all its tests pass).")
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR",
                        help="the copy to grade (default: the current folder)")
    parser.add_argument("--table", metavar="FILE", default=None,
                        help=f"the exercise table (default: DIR/{TABLE})")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the scores in Gradescope's results format (one test per exercise)")
    return parser


def main(argv=None):
    """Run ``tinyprune grade`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0 when the tests ran (whatever the score); 2 when they could not.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.dir)
    try:
        if not root.is_dir():
            raise CourseError(f"{str(root)!r} is not a folder")
        table = load_table(args.table or root / TABLE)
        exercises = graded_exercises(root, table)
        if not exercises:
            raise CourseError(f"{str(root)!r} hands out no exercise: nothing to grade")
        results, last_line = run_tests(root, [marker(e.id) for e in exercises])
    except CourseError as error:
        print(f"tinyprune: error: {error}", file=sys.stderr)
        return 2
    rows = score(exercises, results)
    total = sum(row["score"] for row in rows)
    print(format_table(["exercise", "title", "passed", "failed", "score"],
                       [[r["exercise"].id, r["exercise"].title, r["passed"], r["failed"], r["score"]]
                        for r in rows], left=2, total=["total", "", "", "", f"{total} of {len(rows)}"]))
    for error in results["collection_errors"]:
        print(f"could not collect {error['nodeid']}: {error['message']}")
    print(f"pytest: {last_line}")
    if args.json:
        report = gradescope(rows, results["collection_errors"])
        atomic_write(args.json, lambda f: f.write(json.dumps(report, indent=2) + "\n"), binary=False)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
