"""``tinyprune assignment``: cut a student copy of the repository out of the fenced source.

    tinyprune assignment --out DIR [--exercises ID ...] [--chapters NAME ...] [--solutions]
    tinyprune assignment --list
    tinyprune assignment --markers

The copy is the repository's tree of tracked files (``git ls-files`` in a
git checkout; elsewhere every file but caches, virtual environments and
build output), with each selected exercise's fenced regions replaced by
``raise NotImplementedError("Exercise <id>: <title>")`` and the kernels it
fenced left uncompiled (the rules are in ``tinyprune.tools.fences``).
``--solutions`` cuts nothing: the teacher's copy, fences and all, on which
every test passes (it is itself a source to cut from).  The copy also gets
``assignment.json``, the ids handed out, which ``tinyprune grade`` scores,
and, when jupytext is installed (``pip install -e ".[course]"``), each
tutorial in the ``# %%`` format also as a notebook.

Before the copy is written, every text file of it is searched for every
non-trivial line of every cut region; if one survives, nothing is written
and the lines are listed.  The copy is built in a temporary folder beside
DIR and renamed into place, so DIR holds either nothing or the whole copy.
"""

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..common import atomic_write, format_table
from .exercises import marker
from .fences import (CourseError, SolutionLeak, cut_text, find_fences, find_survivors, in_folders,
                     load_table, solution_lines)

__all__ = ["main", "tree_files", "select", "make_copy", "marker_lines", "check_markers"]

TABLE = "tinyprune/tools/exercises.py"         # the table's place in a tree, unless --table says
SKIPPED_FOLDERS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints",
                   ".venv", "venv", "build", "dist", "tinyprune-out"}
SKIPPED_PATHS = {"data/cache"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".nbi", ".nbc")
ASSIGNMENT_FILE = "assignment.json"


# ---------------------------------------------------------------------------
# Which files make the tree
# ---------------------------------------------------------------------------

def tree_files(root):
    """The files of the tree at ``root`` as sorted relative POSIX paths.

    A git checkout (``root/.git`` exists) gives its tracked files, as they
    are in the work tree (deleted ones skipped); anything else is walked,
    skipping ``SKIPPED_FOLDERS``, ``data/cache``, ``*.egg-info``, virtual
    environments (a folder holding ``pyvenv.cfg``) and compiled files.
    """
    root = Path(root)
    if (root / ".git").exists():
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True)
        if listed.returncode != 0:
            raise CourseError(f"git ls-files failed in {str(root)!r}: "
                              f"{listed.stderr.decode(errors='replace').strip()}")
        paths = [p for p in listed.stdout.decode("utf-8").split("\0") if p]
        return sorted(p for p in paths if (root / p).is_file() or (root / p).is_symlink())
    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder).relative_to(root)
        subfolders[:] = sorted(
            name for name in subfolders
            if name not in SKIPPED_FOLDERS and not name.endswith(".egg-info")
            and (here / name).as_posix() not in SKIPPED_PATHS
            and not (Path(folder) / name / "pyvenv.cfg").exists())
        found += [(here / name).as_posix() for name in files if not name.endswith(SKIPPED_SUFFIXES)]
    return sorted(found)


def default_source():
    """The repository tinyprune runs from, or CourseError for an installed (non-editable) copy."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").is_file():
        raise CourseError(f"tinyprune runs from an installed copy ({root}), not a repository; "
                          "give the repository with --source")
    return root


# ---------------------------------------------------------------------------
# Choosing exercises
# ---------------------------------------------------------------------------

def select(table, ids=None, chapters=None):
    """The exercises named by ``ids`` or in ``chapters`` (all when both are empty), in table order."""
    known = {exercise.id for exercise in table.exercises}
    for name in ids or ():
        if name not in known:
            raise CourseError(f"--exercises: no exercise {name!r}; the table has {', '.join(sorted(known))}")
    for name in chapters or ():
        if name not in table.chapters:
            raise CourseError(f"--chapters: no chapter {name!r}; the chapters are "
                              f"{', '.join(table.chapters)}")
    if not ids and not chapters:
        return list(table.exercises)
    return [exercise for exercise in table.exercises
            if exercise.id in (ids or ()) or exercise.id.split(".")[0] in (chapters or ())]


# ---------------------------------------------------------------------------
# Writing the copy
# ---------------------------------------------------------------------------

def check_out(out, source):
    """Refuse an output folder that is not empty, or is (or is inside) the source tree."""
    out, source = Path(out).resolve(), Path(source).resolve()
    if out == source or source in out.parents:
        raise CourseError(f"--out {str(out)!r} is inside the source tree {str(source)!r}; "
                          "write the copy somewhere else")
    if out.exists() and not out.is_dir():
        raise CourseError(f"--out {str(out)!r} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise CourseError(f"--out {str(out)!r} is not empty; give a new or empty folder")
    return out


def make_copy(source, out, table, chosen, solutions=False):
    """Write the copy of ``source`` into ``out``; returns a summary dict (see ``main``).

    ``chosen``: the exercises to cut (ignored with ``solutions``).  Raises
    CourseError when the table and the fences disagree, SolutionLeak when a
    cut line survives; ``out`` is then left as it was.
    """
    source, out = Path(source).resolve(), check_out(out, source)
    paths = tree_files(source)
    fences, sources, problems = find_fences(source, paths, table)
    if problems:
        raise CourseError(f"the fences and the exercise table disagree ({len(problems)} problems):\n  "
                          + "\n  ".join(problems))
    cut_ids = set() if solutions else {exercise.id for exercise in chosen}
    cut = [fence for fence in fences if fence.exercise in cut_ids]
    by_id = {exercise.id: exercise for exercise in table.exercises}
    texts = {path: cut_text(sources[path], [f for f in cut if f.path == path], by_id)
             for path in sorted({fence.path for fence in cut})}
    build = out.parent / f".{out.name}.{os.getpid()}.tmp"   # beside DIR, so the rename is atomic
    shutil.rmtree(build, ignore_errors=True)                # left by a killed run of this process id
    try:
        build.mkdir(parents=True)                           # usual permissions, unlike mkdtemp's 0700
    except OSError as error:
        raise CourseError(f"cannot write beside --out {str(out)!r}: {error.strerror or error}") from None
    try:
        _write_files(source, build, paths, texts)
        notebooks = _write_notebooks(build, paths, table.fenced_folders)
        record = {"exercises": [exercise.id for exercise in chosen], "solutions": solutions}
        atomic_write(build / ASSIGNMENT_FILE, lambda f: f.write(json.dumps(record, indent=2) + "\n"),
                     binary=False)
        lines = [item for path in texts
                 for item in solution_lines(sources[path], [f for f in cut if f.path == path])]
        survivors = find_survivors(build, sorted(set(paths + notebooks)), lines)
        if survivors:
            raise SolutionLeak(f"lines of cut solutions survive in the copy ({len(survivors)}); nothing "
                               f"was written to {str(out)!r}:\n  " + "\n  ".join(survivors))
        os.replace(build, out)                   # onto a missing or empty folder: atomic
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return {"files": len(paths), "cut": sorted(cut_ids, key=[e.id for e in table.exercises].index),
            "regions": len(cut), "notebooks": notebooks}


def _write_files(source, build, paths, texts):
    """Copy ``paths`` from ``source`` into ``build``, writing ``texts`` (cut files) instead of theirs."""
    for path in paths:
        target = build / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in texts:
            target.write_bytes(texts[path].encode("utf-8"))
            shutil.copymode(source / path, target)
        else:
            shutil.copy2(source / path, target, follow_symlinks=False)


def _write_notebooks(build, paths, folders):
    """Write ``name.ipynb`` beside every ``# %%`` script in ``folders`` of the copy; returns their paths.

    Needs jupytext (the ``course`` extra); without it, prints a note and
    writes none.
    """
    scripts = [path for path in paths if path.endswith(".py") and in_folders(path, folders)
               and (build / path).read_bytes().lstrip().startswith(b"# %%")]
    if not scripts:
        return []
    try:
        import jupytext
    except ImportError:
        print(f"note: jupytext is not installed: the tutorials ({', '.join(scripts)}) go into the copy "
              "as scripts only; pip install -e \".[course]\" to get notebooks too")
        return []
    written = []
    for path in scripts:
        notebook = jupytext.reads((build / path).read_text(encoding="utf-8"), fmt="py:percent")
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        written.append(path[:-3] + ".ipynb")
        jupytext.write(notebook, str(build / written[-1]))
    return written


# ---------------------------------------------------------------------------
# The table and the markers
# ---------------------------------------------------------------------------

def list_table(table, fences):
    """The exercise table as text: id, title, where, depends on, and how many fences each has."""
    counts = {exercise.id: 0 for exercise in table.exercises}
    for fence in fences:
        counts[fence.exercise] += 1
    rows = [[e.id, e.title, ", ".join(e.places), ", ".join(e.depends) or "-", counts[e.id]]
            for e in table.exercises]
    return format_table(["id", "title", "where", "depends on", "fences"], rows, left=4)


def marker_lines(table):
    """The ``markers =`` lines of setup.cfg's ``[tool:pytest]`` for every exercise, indented to paste."""
    return [f"    {marker(e.id)}: exercise {e.id}, {e.title}" for e in table.exercises]


def check_markers(table, setup_cfg):
    """Problems (one line each) between the table and the ``ex_`` markers registered in ``setup_cfg``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(setup_cfg, encoding="utf-8")
    text = parser.get("tool:pytest", "markers", fallback="")
    registered = {line.split(":")[0].strip() for line in text.splitlines() if line.strip()}
    registered = {name for name in registered if name.startswith("ex_")}
    wanted = {marker(e.id) for e in table.exercises}
    return ([f"{setup_cfg}: marker {name} is missing (tinyprune assignment --markers prints it)"
             for name in sorted(wanted - registered)]
            + [f"{setup_cfg}: marker {name} belongs to no exercise of the table"
               for name in sorted(registered - wanted)])


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="tinyprune assignment",
        description="Write a student copy of the repository with the fenced solutions cut out.",
        epilog="examples:\n"
               "  tinyprune assignment --list\n"
               "  tinyprune assignment --out ../hw-prune --chapters prune\n"
               "  tinyprune assignment --out ../hw-all             # every exercise\n"
               "  tinyprune assignment --out ../teacher --solutions  # nothing cut: all tests pass",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR", help="a new or empty folder for the copy")
    parser.add_argument("--exercises", nargs="+", metavar="ID", default=[],
                        help="cut these exercises (e.g. layers.2 prune.1)")
    parser.add_argument("--chapters", nargs="+", metavar="NAME", default=[],
                        help="cut every exercise of these chapters (e.g. prune count)")
    parser.add_argument("--solutions", action="store_true",
                        help="cut nothing: the teacher's copy, on which every test passes")
    parser.add_argument("--list", action="store_true", help="print the exercise table and stop")
    parser.add_argument("--markers", action="store_true",
                        help="print the exercise markers for setup.cfg's [tool:pytest] and stop")
    parser.add_argument("--source", metavar="DIR", default=None,
                        help="the repository to copy (default: the one tinyprune runs from)")
    parser.add_argument("--table", metavar="FILE", default=None,
                        help=f"the exercise table (default: {TABLE} of the source)")
    return parser


def main(argv=None):
    """Run ``tinyprune assignment`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0: done; 1: a cut line survives in the copy (the lines are listed) or
    --list found fence problems; 2: a usage problem, reported in one line.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        source = Path(args.source) if args.source else default_source()
        if not source.is_dir():
            raise CourseError(f"--source {str(source)!r} is not a folder")
        table = load_table(args.table or source / TABLE)
        if args.markers:
            print("\n".join(marker_lines(table)))
            return 0
        if args.list:
            return _print_list(source, table)
        if not args.out:
            raise CourseError("give --out DIR (or --list, or --markers)")
        chosen = select(table, args.exercises, args.chapters)
        summary = make_copy(source, args.out, table, chosen, args.solutions)
    except SolutionLeak as error:
        print(f"tinyprune: error: {error}", file=sys.stderr)
        return 1
    except CourseError as error:
        print(f"tinyprune: error: {error}", file=sys.stderr)
        return 2
    _print_summary(args, summary)
    return 0


def _print_list(source, table):
    fences, _, problems = find_fences(source, tree_files(source), table)
    print(list_table(table, fences))
    print(f"{len(table.exercises)} exercises; run one's tests with: pytest -m ex_<chapter>_<n>")
    if problems:
        print(f"\n{len(problems)} problems between the fences and the table:\n  " + "\n  ".join(problems))
        return 1
    return 0


def _print_summary(args, summary):
    if args.solutions:
        print(f"wrote the solutions copy ({summary['files']} files, nothing cut) to {args.out}")
    else:
        print(f"wrote a student copy ({summary['files']} files) to {args.out}: "
              f"{len(summary['cut'])} exercises cut in {summary['regions']} regions: "
              + " ".join(summary["cut"]))
    if summary["notebooks"]:
        print(f"notebooks: {', '.join(summary['notebooks'])}")
    print(f"score it with: tinyprune grade {args.out}")


if __name__ == "__main__":
    sys.exit(main())
