"""Plumbing shared by the whole package: argument checks, safe file writes, tables, folders.

Nothing here is about pruning; it is kept in one place so that every module
checks its arguments the same way, writes files the same way and prints
tables the same way.

* ``check_int``, ``check_number``, ``check_bool``, ``check_level``: argument checks whose
  errors name the function and the argument and say what was expected;
* ``atomic_write``: write a file through a temporary name and a rename, so a
  reader sees the old file or the whole new one, never half of one;
* ``format_table``: an aligned text table with rules under the header and
  above a total row, and ``format_html_table``, the same table for Jupyter;
* ``data_dir``: where data sets, caches and the shipped checkpoint live;
* ``output_dir``: the folder each program writes its figures and files into.
"""

import html
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["check_int", "check_number", "check_level", "check_bool", "atomic_write", "format_table",
           "format_html_table", "data_dir", "output_dir"]


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def check_int(value, name, where, minimum=1):
    """``value`` as a Python int >= ``minimum``, or a TypeError/ValueError naming it.

    Accepts Python and NumPy integers; refuses booleans, floats (even 3.0)
    and strings, so that a typo never turns into a silent conversion.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(value, name, where, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite Python float within the given bounds, or an error naming it.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; None
    means unbounded on that side.  NaN and infinity are always refused.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{where}: {name} must be a finite number in {span}, got {value!r}")
    return value


def check_bool(value, name, where):
    """``value`` as a Python bool; only True and False (NumPy's too) are accepted, not 0 or 1."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_level(p, where):
    """A pruning level: the fraction of weights (or channels) to prune, in [0, 1]."""
    return check_number(p, "the level (the fraction to prune)", where, 0.0, 1.0)


# ---------------------------------------------------------------------------
# Writing files safely
# ---------------------------------------------------------------------------

def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path):
    """Delete temporary files of earlier writes to ``path`` whose writer has died.

    Our temporary names are ``.NAME.PID.RANDOM.tmp``; a writer killed before
    its rename (kill -9, a power cut) leaves one behind.  A file whose PID is
    still running belongs to a write in progress and is left alone.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except OSError:
            pass                           # alive, but another user's: not ours to judge


def atomic_write(path, write, binary=True):
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``.

    A reader of ``path`` sees either the old file or the whole new one (a
    rename within one folder is atomic), and a crash leaves no half-written
    file under the final name.  The file gets the usual permissions
    (0666 less the umask), missing parent folders are created, and
    temporaries left by earlier writers that died are removed.  Returns
    ``path`` as a Path.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise IsADirectoryError(f"cannot write to {str(path)!r}: it names a folder, not a file")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write to {str(path)!r}: it is a folder")
    if path.exists() and not path.is_file():
        raise OSError(f"cannot write to {str(path)!r}: it is not a regular file "
                      "(a device, a pipe or a socket), which a rename would replace")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"cannot write to {str(path)!r}: {str(parent)!r} is a file, "
                                     "not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes the file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def format_table(header, rows, left=1, total=None, title=None):
    """An aligned text table: ``header`` and ``rows`` are sequences of cells (any values).

    The first ``left`` columns are left-aligned (names), the rest
    right-aligned (numbers).  A rule goes under the header and, when
    ``total`` (one more row) is given, above it.  ``title`` is an optional
    first line.  Trailing spaces are stripped.
    """
    body = [[str(cell) for cell in row] for row in rows]
    head = [str(cell) for cell in header]
    last = [str(cell) for cell in total] if total is not None else None
    every = [head] + body + ([last] if last else [])
    widths = [max(len(row[i]) for row in every) for i in range(len(head))]
    rule = "  ".join("-" * w for w in widths)

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [title] if title else []
    lines += [line(head), rule] + [line(row) for row in body]
    if last:
        lines += [rule, line(last)]
    return "\n".join(lines)


def format_html_table(header, rows, left=1, total=None, title=None):
    """``format_table``'s table as HTML, for Jupyter's ``_repr_html_``: same arguments, same cells.

    The first ``left`` columns are left-aligned, the rest right-aligned; the
    ``total`` row goes in the table's foot, the ``title`` in its caption.
    Every cell is escaped, so a layer path such as ``[0][7]`` shows as typed.
    """
    def line(cells, tag):
        aligned = [(html.escape(str(cell), quote=False), "left" if i < left else "right")
                   for i, cell in enumerate(cells)]
        return "<tr>" + "".join(f'<{tag} style="text-align:{side}">{text}</{tag}>' for text, side in aligned) + "</tr>"

    parts = ["<table>"]
    if title:
        parts.append(f"<caption>{html.escape(str(title), quote=False)}</caption>")
    parts.append("<thead>" + line(header, "th") + "</thead>")
    parts += ["<tbody>"] + [line(row, "td") for row in rows] + ["</tbody>"]
    if total is not None:
        parts.append("<tfoot>" + line(total, "th") + "</tfoot>")
    parts.append("</table>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------

def data_dir():
    """The root data folder (generated caches go in its ``cache/`` subfolder).

    Chosen in this order:

    1. the environment variable ``TINYPRUNE_DATA``, if set;
    2. ``<repo>/data`` when tinyprune runs from a source checkout (the folder
       above the package holds ``setup.cfg``);
    3. ``~/.cache/tinyprune`` otherwise (an installed package must not write
       into site-packages).

    The folder is not created by this call.
    """
    from_env = os.environ.get("TINYPRUNE_DATA")
    if from_env:
        return Path(from_env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "setup.cfg").is_file():
        return repo / "data"
    return Path.home() / ".cache" / "tinyprune"


def output_dir(name):
    """The folder a program writes its files into: ``<base>/<name>``, as a Path (not created).

    ``<base>`` is ``$TINYPRUNE_OUT`` if set, else ``./tinyprune-out``; each
    program (the main job: ``"main"``, each tutorial: its name) has its own
    subfolder, so no run overwrites another's figures.
    """
    return Path(os.environ.get("TINYPRUNE_OUT") or "tinyprune-out") / name
