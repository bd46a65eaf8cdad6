"""This folder is a miniature course repository, run only in copies by the course kit's tests.

When tinyprune's own suite walks into it, its files are not collected: its
tests import ``kitpkg``, which is importable only with this folder (or a
copy of it) as the root of the run.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    return config.rootpath.resolve() != HERE
