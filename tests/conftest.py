"""What the test files share.

Markers.  Each test file carries its chapter's marker (``pytest -m prune``),
and each test of an exercise carries the exercise's own (``pytest -m
ex_prune_1``; the table is ``tinyprune/tools/exercises.py``).  A test marked
``integration`` runs the whole pipeline (the tutorials, the command), so it
needs every chapter: it gets every chapter's and every exercise's marker
here, before pytest selects by marker.  So ``pytest -m "not prune"`` in a
copy whose prune exercises are cut leaves it out, and in a copy with every
exercise cut each failing test still belongs to an exercise.  ``tinyprune
grade`` leaves integration tests out of the score: an exercise is judged by
its own tests.
"""

import pytest

from tinyprune.tools.exercises import CHAPTERS, EXERCISES, marker


@pytest.hookimpl(tryfirst=True)          # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("integration") is not None:
            for name in CHAPTERS + tuple(marker(exercise.id) for exercise in EXERCISES):
                item.add_marker(name)
