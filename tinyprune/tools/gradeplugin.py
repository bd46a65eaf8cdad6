"""The pytest plugin ``tinyprune grade`` loads into the tests' process: it records every test's outcome.

It imports nothing from tinyprune: ``grade`` copies this file under a
private module name into a scratch folder and loads it with ``-p``, so it
works whatever tinyprune (the student's, a broken one, none) the tests
import.  At the end of the session it writes, to the file named by the
environment variable ``TINYPRUNE_GRADE_RESULTS``, a JSON object:

    {"tests": {nodeid: {"outcome": "passed" | "failed" | "error" | "skipped",
                        "markers": [the test's ex_* markers],
                        "message": the first failure's one-line message}},
     "collection_errors": [{"nodeid": ..., "message": ...}]}

A failure while setting a test up or tearing it down is an "error"; a
failure of the test itself is "failed".
"""

import json
import os

_tests = {}
_collection_errors = []


def _message(report):
    """The one-line message of a failure: pytest's crash line (``AssertionError: assert [] == [(4, 18)]``)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return crash.message.strip().splitlines()[0]
    lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"


def pytest_runtest_logreport(report):
    entry = _tests.setdefault(report.nodeid, {
        "outcome": "passed", "message": "",
        "markers": sorted(name for name in report.keywords if name.startswith("ex_"))})
    if report.failed and entry["outcome"] not in ("failed", "error"):
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry["message"] = _message(report)
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def pytest_collectreport(report):
    if report.failed:
        _collection_errors.append({"nodeid": report.nodeid, "message": _message(report)})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("TINYPRUNE_GRADE_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as stream:
            json.dump({"tests": _tests, "collection_errors": _collection_errors}, stream, indent=1)
