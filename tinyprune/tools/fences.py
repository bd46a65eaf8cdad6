"""Solution fences: finding them in the source, cutting them out, and proving nothing of them is left.

The rules, in the order ``tinyprune assignment`` applies them:

Fences.  A fence is a pair of comment lines, each alone on its line, the
second indented like the first (``### BEGIN SOLUTION``, ``### END SOLUTION``);
the BEGIN line may name its exercise after the words (``layers.2``).  Comments are found with ``tokenize``, so the same words inside a
string (a docstring showing a fence) are not a fence.  A comment that starts
with ``#`` signs and BEGIN/END SOLUTION in any other spelling is an error,
never silently left uncut.  Which exercise a fence belongs to is said in
``tinyprune.tools.exercises``.

Cutting.  In the student copy the lines from BEGIN to END, both included,
become one line at the fence's indentation::

    raise NotImplementedError("Exercise layers.2: the dense layer's backward pass")

The function's signature, docstring and any lines outside the fence stay.
Every cut file must still parse; the tool checks it.

Kernel twins.  A kernel is a plain function ``_name`` and, at the top level
of the same module, the line that compiles it, ``name =
numba.njit(...)(_name)`` (any callable whose name ends in ``jit``).  When a
fence in ``_name`` is cut, that line becomes ``name = _name``: the layers
then call the student's plain-Python function, slowly but correctly, and
nothing compiled keeps the answer.  A fenced function compiled by a
decorator (``@numba.njit``) is refused: the copy could not run it uncompiled.

Trivial lines.  A line of a cut region is trivial, and is not looked for in
the copy, when it computes nothing, that is when its code (the line without
its comment)

* has fewer than ``MIN_CODE`` = 5 characters once every space is removed
  (``y=-x``), or is only brackets and punctuation (``)``, ``]:``);
* is a bare keyword (``pass``, ``break``, ``continue``, ``return``,
  ``raise``, ``else:``, ``try:``, ``finally:``) or returns a single name
  (``return x``, ``return self.weight``);
* is the header of a block, a line starting with ``for``, ``while``, ``if``,
  ``elif``, ``with``, ``except``, ``def`` or ``class`` and ending with ``:``
  (``for a in range(KH):``, ``if self.bias is not None:``): the block's
  lines are searched, its header would only repeat the loops every kernel has;
* or names things without computing: an assignment to names (or
  attributes) of a right side made of names, attributes, subscripts and
  constants, with no operator and no call (``x = self._cache``,
  ``N, C, H, W = x.shape``, ``w_ab = w[c, a, b]``); a store into an
  array (``mask[order[:k]] = False``) is a result, and is searched.

Every line with an operator, a call, an augmented assignment or a return of
an expression is searched, however short (``dx = dy @ w``).  So keep the
scaffolding a student is given (allocations, set-up shared with the
forward pass) outside the fence, and fence the answer.

Survivors.  Every other line of a cut region is looked for, spaces removed,
as a substring of every line of every text file of the copy (comments,
docstrings, tests, tutorials; a notebook's cells one by one).  One match
anywhere and the copy is not written: the teacher gets the line, its
exercise, and where it survives.
"""

import ast
import importlib.util
import io
import json
import re
import tokenize
from collections import namedtuple
from pathlib import Path

__all__ = ["CourseError", "SolutionLeak", "Fence", "Table", "load_table", "find_fences", "in_folders",
           "cut_text", "solution_lines", "is_trivial", "find_survivors"]

MIN_CODE = 5
TRIVIAL_KEYWORDS = {"pass", "break", "continue", "return", "raise", "else:", "try:", "finally:"}
ID_PATTERN = re.compile(r"([a-z]+)\.([1-9][0-9]*)")
HEADER = re.compile(r"(for|while|if|elif|with|except|def|class)\b")
FENCE_LIKE = re.compile(r"#+\s*(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE)
BEGIN_TEXT, END_TEXT = "### BEGIN SOLUTION", "### END SOLUTION"    # nbgrader's fence lines
BEGIN = re.compile(re.escape(BEGIN_TEXT) + r"(?: (\S+))?")
END = re.compile(re.escape(END_TEXT))


class CourseError(Exception):
    """A problem with the arguments, the exercise table or the fences: reported, nothing written."""


class SolutionLeak(CourseError):
    """Lines of cut solutions survive in the copy (the message lists them)."""


# A fenced region: lines ``begin`` to ``end`` (1-based, both fence comments
# included) of ``path``; ``function`` is the qualified name it stands in
# (None at module level).
Fence = namedtuple("Fence", "path begin end indent exercise function")
Table = namedtuple("Table", "exercises chapters fenced_folders path")


# ---------------------------------------------------------------------------
# The exercise table
# ---------------------------------------------------------------------------

def load_table(path):
    """The exercise table of the Python file ``path`` (``EXERCISES``, ``CHAPTERS``, ``FENCED_FOLDERS``).

    The file is run as a module of its own, so a tree's table is read from
    that tree, not from the installed tinyprune.  The table is checked
    (``check_table``) before it is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"no exercise table at {str(path)!r}; give its file with --table")
    spec = importlib.util.spec_from_file_location("_tinyprune_exercise_table", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise CourseError(f"the exercise table {str(path)!r} does not load: "
                          f"{type(error).__name__}: {error}") from None
    missing = [name for name in ("EXERCISES", "CHAPTERS", "FENCED_FOLDERS") if not hasattr(module, name)]
    if missing:
        raise CourseError(f"the exercise table {str(path)!r} does not define {', '.join(missing)}")
    table = Table(tuple(module.EXERCISES), tuple(module.CHAPTERS), tuple(module.FENCED_FOLDERS), path)
    check_table(table)
    return table


def check_table(table):
    """Raise CourseError naming the first malformed entry of ``table``."""
    ids = [exercise.id for exercise in table.exercises]
    for exercise in table.exercises:
        where = f"the exercise table {str(table.path)!r}, exercise {exercise.id!r}"
        match = ID_PATTERN.fullmatch(str(exercise.id))
        if not match or match.group(1) not in table.chapters:
            raise CourseError(f"{where}: an id is <chapter>.<n> with a chapter of "
                              f"{', '.join(table.chapters)} and n >= 1")
        if ids.count(exercise.id) > 1:
            raise CourseError(f"{where}: the id is used {ids.count(exercise.id)} times")
        if not exercise.title or "\n" in exercise.title:
            raise CourseError(f"{where}: the title must be one non-empty line, got {exercise.title!r}")
        if isinstance(exercise.places, str) or not exercise.places:
            raise CourseError(f"{where}: places must be a tuple of 'file.py:function' strings, "
                              f"got {exercise.places!r}")
        for place in exercise.places:
            if not re.fullmatch(r"[^:]+\.py:[A-Za-z_][\w.]*", str(place)):
                raise CourseError(f"{where}: a place is 'file.py:function' or 'file.py:Class.method', "
                                  f"got {place!r}")
        for other in exercise.depends:
            if other == exercise.id or (other not in ids and other not in table.chapters):
                raise CourseError(f"{where}: depends on {other!r}, which is neither another exercise "
                                  "nor a chapter")


def split_place(place):
    """``"tinyprune/conv.py:Conv2d.backward"`` -> ``("tinyprune/conv.py", "Conv2d.backward")``."""
    path, function = place.split(":")
    return path, function


# ---------------------------------------------------------------------------
# Reading one source file
# ---------------------------------------------------------------------------

Source = namedtuple("Source", "path text lines tree comments functions")


def read_source(root, path):
    """Parse ``root/path``: its lines (ends kept), AST, comments and functions.

    ``comments``: line -> (column, text) of every comment; ``functions``: a
    list of (qualified name, def node), classes and nested functions joined
    by dots (``Conv2d.backward``).  Raises CourseError naming the file and
    line if it is not valid Python.
    """
    data = (Path(root) / path).read_bytes()
    try:
        text = data.decode("utf-8")            # not read_text: keep the line ends byte for byte
        tree = ast.parse(text, filename=path)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except UnicodeDecodeError as error:
        raise CourseError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except SyntaxError as error:
        raise CourseError(f"{path}:{error.lineno}: not valid Python: {error.msg}") from None
    comments = {tok.start[0]: (tok.start[1], tok.string) for tok in tokens if tok.type == tokenize.COMMENT}
    functions = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    functions.append((name, child))
                visit(child, name + ".")
    visit(tree, "")
    return Source(path, text, text.splitlines(keepends=True), tree, comments, functions)


def _alone(source, line):
    """The comment on ``line`` if nothing but spaces stand before it, else None."""
    if line not in source.comments:
        return None
    column, text = source.comments[line]
    return text.strip() if not source.lines[line - 1][:column].strip() else None


def _is_code(source, line):
    """True when ``line`` holds more than spaces and a comment."""
    text = source.lines[line - 1]
    if line in source.comments:
        text = text[:source.comments[line][0]]
    return bool(text.strip())


# ---------------------------------------------------------------------------
# Finding fences
# ---------------------------------------------------------------------------

def raw_fences(source):
    """The fences of one file as (begin, end, indent, named id or None); CourseError if malformed."""
    found, open_at = [], None
    for line in sorted(source.comments):
        text = _alone(source, line)
        if text is None or not FENCE_LIKE.match(text):
            continue
        where = f"{source.path}:{line}"
        begin, end = BEGIN.fullmatch(text), END.fullmatch(text)
        if not begin and not end:
            raise CourseError(f"{where}: {text!r} is not a fence; write '{BEGIN_TEXT}' "
                              f"(optionally followed by an exercise id) or '{END_TEXT}'")
        indent = source.lines[line - 1][:source.comments[line][0]]
        if begin:
            if open_at:
                raise CourseError(f"{where}: a second BEGIN SOLUTION before the END of the one "
                                  f"on line {open_at[0]}")
            open_at = (line, indent, begin.group(1))
            continue
        if not open_at:
            raise CourseError(f"{where}: END SOLUTION without a BEGIN SOLUTION before it")
        if indent != open_at[1]:
            raise CourseError(f"{where}: END SOLUTION is indented {len(indent)} columns, its BEGIN "
                              f"on line {open_at[0]} {len(open_at[1])}; indent both like the code")
        if not any(_is_code(source, k) for k in range(open_at[0] + 1, line)):
            raise CourseError(f"{source.path}:{open_at[0]}: the fence holds no code")
        found.append((open_at[0], line, open_at[1], open_at[2]))
        open_at = None
    if open_at:
        raise CourseError(f"{source.path}:{open_at[0]}: BEGIN SOLUTION is never closed by END SOLUTION")
    return found


def enclosing_functions(source, begin, end):
    """Qualified names of the functions around lines ``begin``..``end``, innermost first."""
    first_code = next(k for k in range(begin + 1, end) if _is_code(source, k))
    around = [(name, node) for name, node in source.functions
              if node.lineno < begin and node.end_lineno >= first_code]
    around.sort(key=lambda item: item[1].lineno, reverse=True)
    return [name for name, _ in around]


def find_fences(root, paths, table):
    """Every fence in the ``FENCED_FOLDERS`` files among ``paths``, each resolved to its exercise.

    Returns ``(fences, sources, problems)``: the fences in file and line
    order, the parsed files by path, and a list of one-line problems where
    the table and the fences disagree (an empty list when they agree).  A
    malformed fence raises CourseError at once.
    """
    ids = {exercise.id for exercise in table.exercises}
    owners = {}                                   # (path, function) -> exercise ids listing it
    for exercise in table.exercises:
        for place in exercise.places:
            owners.setdefault(split_place(place), []).append(exercise.id)
    listed = {path for path, _ in owners}
    sources, fences, problems = {}, [], []
    for path in paths:
        if not path.endswith(".py") or not in_folders(path, table.fenced_folders):
            continue
        if path not in listed and b"SOLUTION" not in (Path(root) / path).read_bytes().upper():
            continue                              # no fence can stand in it: spare the parsing
        source = sources[path] = read_source(root, path)
        for begin, end, indent, named in raw_fences(source):
            chain = enclosing_functions(source, begin, end)
            fence, problem = _resolve(path, begin, chain, named, ids, owners)
            if problem:
                problems.append(problem)
            else:
                fences.append(Fence(path, begin, end, indent, *fence))
    problems += _uncovered_places(table, sources, fences)
    return fences, sources, problems


def in_folders(path, folders):
    """True when the relative path ``path`` lies in one of ``folders``."""
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _resolve(path, begin, chain, named, ids, owners):
    """((exercise, function), None) for a fence, or (None, the problem)."""
    where = f"{path}:{begin}"
    if named is not None:
        if named not in ids:
            return None, f"{where}: the fence names exercise {named!r}, which is not in the table"
        listed = [name for name in chain if named in owners.get((path, name), ())]
        return (named, listed[0] if listed else (chain[0] if chain else None)), None
    if not chain:
        return None, (f"{where}: the fence stands in no function; name its exercise on the "
                      "BEGIN line (followed by the exercise id)")
    for name in chain:
        owned = owners.get((path, name), [])
        if len(owned) == 1:
            return (owned[0], name), None
        if len(owned) > 1:
            return None, (f"{where}: {name} is a place of {' and '.join(owned)}; name the fence's "
                          "exercise on its BEGIN line")
    return None, (f"{where}: the fence in {chain[0]} belongs to no exercise; add "
                  f"'{path}:{chain[0]}' to an exercise's places, or name the exercise on the BEGIN line")


def _uncovered_places(table, sources, fences):
    """One problem per place of the table that holds no fence of its exercise."""
    fenced = {(f.exercise, f.path, f.function) for f in fences}
    problems = []
    for exercise in table.exercises:
        for place in exercise.places:
            path, function = split_place(place)
            if (exercise.id, path, function) in fenced:
                continue
            what = f"exercise {exercise.id} lists {place}, but"
            if not in_folders(path, table.fenced_folders):
                problems.append(f"{what} {path} is outside the fenced folders "
                                f"({', '.join(table.fenced_folders)})")
            elif path not in sources:
                problems.append(f"{what} the tree has no file {path}")
            elif function not in {name for name, _ in sources[path].functions}:
                problems.append(f"{what} {path} defines no function {function}")
            else:
                problems.append(f"{what} no fence of {exercise.id} stands in it")
    return problems


# ---------------------------------------------------------------------------
# Cutting
# ---------------------------------------------------------------------------

def stub_line(indent, exercise, newline):
    """The line that replaces a cut region."""
    message = f"Exercise {exercise.id}: {exercise.title}".replace("\\", "\\\\").replace('"', '\\"')
    return f'{indent}raise NotImplementedError("{message}"){newline}'


def cut_text(source, fences, exercises):
    """The text of ``source`` with ``fences`` (all in this file) cut, and their kernels' twins uncompiled.

    ``exercises``: id -> Exercise, for the stubs' messages.  Raises
    CourseError if a cut function is compiled by a decorator, or if the
    result is not valid Python.
    """
    edits = []                                    # (first line, last line, replacement lines)
    for fence in fences:
        ending = _line_end(source.lines[fence.begin - 1])
        edits.append((fence.begin, fence.end, [stub_line(fence.indent, exercises[fence.exercise], ending)]))
    for fence in fences:
        for twin in _twins(source, fence):
            if not any(first <= twin.lineno <= last for first, last, _ in edits):
                name, plain = twin.targets[0].id, fence.function
                line = (f"{name} = {plain}   # uncompiled: runs your plain function "
                        f"(exercise {fence.exercise}){_line_end(source.lines[twin.end_lineno - 1])}")
                edits.append((twin.lineno, twin.end_lineno, [line]))
    lines = list(source.lines)
    for first, last, new in sorted(edits, reverse=True):
        lines[first - 1:last] = new
    text = "".join(lines)
    try:
        ast.parse(text, filename=source.path)
    except SyntaxError as error:
        raise CourseError(f"{source.path}: cutting its fences leaves invalid Python at line "
                          f"{error.lineno} of the copy ({error.msg}); a fence must enclose whole "
                          "statements") from None
    return text


def _line_end(line):
    """The line's ending as written (``"\\n"``, ``"\\r\\n"`` or none on a last line)."""
    return line[len(line.rstrip("\r\n")):]


def _jit_name(node):
    """True when ``node`` names a compiler: ``numba.njit``, ``njit``, ``numba.jit``, ``njit(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name.endswith("jit")


def _twins(source, fence):
    """The top-level ``name = <jit>(...)(fence.function)`` statements compiling the fenced function."""
    top = {node.name: node for node in source.tree.body if isinstance(node, ast.FunctionDef)}
    plain = fence.function
    if plain not in top:
        return []
    if any(_jit_name(decorator) for decorator in top[plain].decorator_list):
        raise CourseError(f"{source.path}:{top[plain].lineno}: {plain} holds a fence but is compiled by "
                          f"a decorator; compile it on a line of its own, "
                          f"'{plain.lstrip('_')} = numba.njit(...)({plain})', so the course copy can "
                          "run it uncompiled")
    return [node for node in source.tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
            and _jit_name(node.value.func)
            and [getattr(arg, "id", None) for arg in node.value.args] == [plain]]


# ---------------------------------------------------------------------------
# Nothing of a solution may survive
# ---------------------------------------------------------------------------

def is_trivial(line):
    """True when a line of code (comment removed) computes nothing; the rule is in the module docstring."""
    code = "".join(line.split())
    return (len(code) < MIN_CODE or code in TRIVIAL_KEYWORDS
            or re.fullmatch(r"[()\[\]{}:,;]*", code) is not None
            or re.fullmatch(r"return[A-Za-z_][\w.]*", code) is not None
            or (HEADER.match(line.strip()) is not None and code.endswith(":"))
            or _names_only(line.strip()))


def _names_only(line):
    """True for ``names = value`` with no operator and no call in value: ``N, C, H, W = x.shape``.

    A store into an array (``mask[order[:k]] = False``) writes a result, so it is not names only.
    """
    try:
        statement = ast.parse(line).body
    except SyntaxError:
        return False
    if len(statement) != 1 or not isinstance(statement[0], ast.Assign):
        return False
    names = (ast.Name, ast.Attribute, ast.Tuple, ast.Store, ast.Load)
    plain = names + (ast.Subscript, ast.Constant, ast.Slice)
    return (all(isinstance(node, names) for target in statement[0].targets for node in ast.walk(target))
            and all(isinstance(node, plain) for node in ast.walk(statement[0].value)))


def solution_lines(source, fences):
    """The non-trivial lines of ``fences`` (cut from ``source``): (fence, line number, code, line)."""
    found = []
    for fence in fences:
        for line in range(fence.begin + 1, fence.end):
            text = source.lines[line - 1]
            if line in source.comments:
                text = text[:source.comments[line][0]]
            if not is_trivial(text):
                found.append((fence, line, "".join(text.split()), source.lines[line - 1].strip()))
    return found


def _text_lines(path):
    """(label, line) pairs of a text file, a notebook's cells one by one; [] for a binary file."""
    if not path.is_file():
        return []                                 # a dangling link
    data = path.read_bytes()
    if b"\0" in data:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    if path.suffix == ".ipynb":
        try:
            cells = json.loads(text)["cells"]
        except (ValueError, KeyError, TypeError):
            cells = None
        if cells is not None:
            return [(f"cell {k + 1}", line) for k, cell in enumerate(cells)
                    for line in "".join(cell.get("source", "")).splitlines()]
    return [(f"{k + 1}", line) for k, line in enumerate(text.splitlines())]


def find_survivors(root, paths, lines):
    """Where the solution ``lines`` still appear in the files ``paths`` under ``root``.

    Returns one-line reports: the exercise, the line and where it was cut
    from, and the file and line (or notebook cell) where it survives.
    """
    reports = []
    for path in paths:
        labelled = _text_lines(Path(root) / path)
        squeezed = ["".join(line.split()) for _, line in labelled]
        blob = "\n".join(squeezed)
        for fence, line, code, original in lines:
            if code not in blob:
                continue
            for (label, _), text in zip(labelled, squeezed):
                if code in text:
                    sep = ", " if label.startswith("cell") else ":"
                    reports.append(f"{fence.exercise}: {original!r} (cut from {fence.path}:{line}) "
                                   f"survives in {path}{sep}{label}")
    return reports
