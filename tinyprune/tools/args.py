"""One set of argument checks for the ``tinyprune`` command and its tools.

The command promises that every failure is one line on stderr and exit
code 2, found before any long work, and that no file is created or changed
by a refused call.  The pieces that keep that promise live here, so that
``tinyprune``, ``tinyprune bench`` and ``tinyprune pretrain`` keep it the
same way:

* ``CommandParser``: argparse with one-line errors, and negative numbers
  accepted as option values (``--input-shape -1,3,96,96`` is then refused
  for its value, not for a "missing" one);
* the argument types (``fraction_below_one``, ``whole_number``,
  ``positive_number``, ``input_shape``);
* the file checks (``existing_file``, ``existing_folder``, ``output_file``,
  ``folder_path``, ``writable_folder``),
  which name the option and the path the user gave;
* ``report_failures``: runs a command and turns any exception into one line.
"""

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from ..common import check_int, check_number

__all__ = ["UsageError", "CommandParser", "fraction_below_one", "whole_number", "positive_number",
           "input_shape", "existing_file", "existing_folder", "output_file", "folder_path",
           "writable_folder",
           "report_failures", "DEBUG_VARIABLE"]

DEBUG_VARIABLE = "TINYPRUNE_DEBUG"   # set to 1: failures raise with their traceback instead


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

# A token argparse would take for an option, though it is a (negative) number: "-1,3,96,96", "-1e-3".
_NUMBER_LIKE = re.compile(r"-[0-9.]")


class CommandParser(argparse.ArgumentParser):
    """argparse's parser with two changes, inherited by its subcommands' parsers.

    * ``error`` prints one line, ``PROG: error: MESSAGE (see PROG --help)``,
      and exits with code 2; argparse's usage block would make it ten.
    * A value that starts with a minus and a digit is kept with its option:
      ``--lr -1e-3`` reaches the type check, which refuses it by name,
      instead of argparse's "expected one argument".
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.valued_options = set()       # option strings that take one value

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        if action.option_strings and action.nargs is None:
            self.valued_options.update(action.option_strings)
        return action

    def option_takes_value(self, token):
        """True if ``token`` (``--out``, or an abbreviation such as ``--ou``) names an option with a value."""
        if token in self.valued_options:
            return True
        if not token.startswith("--") or not self.allow_abbrev:
            return False
        matches = [name for name in self._option_string_actions if name.startswith(token)]
        return len(matches) == 1 and matches[0] in self.valued_options

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.keep_negative_values(args), namespace)

    def keep_negative_values(self, args):
        """``args`` with ``OPTION -VALUE`` joined as ``OPTION=-VALUE`` where VALUE starts with a digit."""
        joined, i = [], 0
        while i < len(args):
            token = args[i]
            if token == "--":                 # everything after it is positional
                return joined + args[i:]
            if (self.option_takes_value(token) and i + 1 < len(args)
                    and _NUMBER_LIKE.match(args[i + 1])):
                joined.append(f"{token}={args[i + 1]}")
                i += 2
                continue
            joined.append(token)
            i += 1
        return joined

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------

def fraction_below_one(text):
    """argparse type: a pruning level, a fraction in [0, 1); 1 would prune everything."""
    try:
        return check_number(float(text), "the level", "tinyprune", 0.0, 1.0, high_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) (0.2 prunes 20%), got {text!r}") from None


def whole_number(minimum):
    """An argparse type that accepts a whole number >= ``minimum``: ``type=whole_number(0)``."""
    def parse(text):
        try:
            return check_int(int(text), "the value", "tinyprune", minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}") from None
    return parse


def positive_number(text):
    """argparse type: a finite number > 0, such as a learning rate or a factor."""
    try:
        return check_number(float(text), "the value", "tinyprune", low=0.0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None


def input_shape(text):
    """argparse type: a batch shape ``N,C,H,W`` of four whole numbers >= 1, such as ``1,3,96,96``."""
    parts = text.split(",")
    if len(parts) != 4 or not all(re.fullmatch(r"\s*[+-]?\d+\s*", part) for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected four whole numbers N,C,H,W such as 1,3,96,96, got {text!r}")
    shape = tuple(int(part) for part in parts)
    for name, size in zip("NCHW", shape):
        if size < 1:
            raise argparse.ArgumentTypeError(
                f"every size must be positive (a whole number >= 1), got {name} = {size} in {text!r}")
    return shape


# ---------------------------------------------------------------------------
# Files and folders
# ---------------------------------------------------------------------------

def _as_path(path, option):
    """``path`` as a Path; UsageError for a name no file can have (a NUL character)."""
    if "\0" in str(path):
        raise UsageError(f"{option} {str(path)!r}: a file name cannot contain a NUL character")
    return Path(path)


def _existing(path, option, kind):
    """``path`` as a Path if it exists and is a ``kind`` ("file" or "folder"); UsageError if not."""
    path = _as_path(path, option)
    found = "folder" if path.is_dir() else "file" if path.is_file() else "special file"
    if not path.exists():
        raise UsageError(f"{option} {str(path)!r} does not exist")
    if found != kind:
        raise UsageError(f"{option} {str(path)!r} is a {found}; expected a {kind}")
    return path


def existing_file(path, option):
    """``path`` as a Path if it is a regular file; UsageError naming ``option`` and what it is if not."""
    return _existing(path, option, "file")


def existing_folder(path, option):
    """``path`` as a Path if it is a folder; UsageError naming ``option`` and what it is if not."""
    return _existing(path, option, "folder")


def _same_file(a, b):
    """True if ``a`` and ``b`` name one file (through symlinks and hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:                        # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def output_file(path, option, inputs=(), example="out.npz"):
    """Check that ``path`` can become an output file, before any work; returns it as a Path.

    Refused: a name that is a folder or sits under a file, and a file that is
    one of ``inputs`` (``[(option, path)]``): writing it would destroy what
    the run reads.  ``example`` is a file name the message suggests.
    Nothing is created; :func:`writable_folder` on the parent does that,
    last.
    """
    path = _as_path(path, option)
    if path.name in ("", ".", "..") or path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a folder; expected a file name such as "
                         f"{str(path / example)!r}")
    folder_path(path.parent, option, given=path)
    for input_option, input_path in inputs:
        if _same_file(path, input_path):
            raise UsageError(f"{option} {str(path)!r} is the same file as {input_option} "
                             f"{str(input_path)!r}; the input is never overwritten: choose another name")
    return path


def folder_path(folder, option, given=None):
    """UsageError unless ``folder`` is a folder or could become one (no file on its path); creates nothing.

    ``given`` is what the user typed (when ``folder`` is its parent), so the
    message names both.
    """
    folder = _as_path(folder, option)
    named = f"{option} {str(given if given is not None else folder)!r}"
    for parent in [folder] + list(folder.parents):
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"cannot write to the output folder: {named}: {str(parent)!r} is a file, "
                             "not a folder")
    return folder


def writable_folder(folder, option, given=None):
    """Create ``folder`` if needed and prove it writable by writing a file; UsageError if not.

    ``os.access`` is not enough: it says yes to root for a read-only mount,
    and no folder exists yet on a first run.  Call it last among the
    checks: it is the one that creates something.
    """
    folder = folder_path(folder, option, given)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".tinyprune-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        named = f"{option} {str(given if given is not None else folder)!r}"
        raise UsageError(f"cannot write to the output folder: {named}: cannot create a file in "
                         f"{str(folder)!r} ({error.strerror or error})") from None
    return folder


# ---------------------------------------------------------------------------
# Failures as one line
# ---------------------------------------------------------------------------

def _one_line(text):
    return " ".join(str(text).split()) or "(no message)"


def failure_line(prog, error):
    """The one line a failed command prints for ``error``.

    Errors of what the user gave (UsageError, and ValueError, TypeError and
    OSError, which tinyprune raises for bad arguments, checkpoints and files)
    are printed as they are.  Anything else is a bug in tinyprune, and the
    line says so and how to see the traceback.
    """
    if isinstance(error, (UsageError, ValueError, TypeError, OSError)):
        return f"{prog}: error: {_one_line(error)}"
    if isinstance(error, MemoryError):
        return f"{prog}: error: out of memory ({_one_line(error)}); try smaller sizes"
    return (f"{prog}: internal error: {type(error).__name__}: {_one_line(error)} (a bug in tinyprune; "
            f"run again with {DEBUG_VARIABLE}=1 to see the traceback)")


def report_failures(prog, job, *args):
    """``job(*args)``, with every way it can fail turned into one line on stderr; returns the exit code.

    0 on success (or ``job``'s own code); 2 for any failure, argparse's
    included; 130 after Ctrl-C.  With the environment variable
    ``TINYPRUNE_DEBUG=1`` exceptions propagate with their traceback.
    """
    try:
        code = job(*args)
    except SystemExit as stop:            # argparse: --help (0) or its one-line error (2)
        if isinstance(stop.code, str):    # sys.exit("message"): a failure with its message
            print(f"{prog}: error: {_one_line(stop.code)}", file=sys.stderr)
            return 2
        code = stop.code
    except BrokenPipeError:
        # The reader went away (``tinyprune count m.npz | head``): stop quietly.  Point
        # stdout at /dev/null so Python's own flush at exit does not complain again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):      # stdout is not a real file (captured in tests)
            pass
        return 1
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:            # noqa: BLE001 -- every failure becomes one line
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(failure_line(prog, error), file=sys.stderr)
        return 2
    if code is None:
        return 0
    return code if isinstance(code, int) else 2
