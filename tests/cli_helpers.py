"""Helpers shared by the command's tests (test_cli.py, test_cli_hostile.py)."""

import contextlib
import hashlib
import io
import os

import numpy as np

import tinyprune as tp
from tinyprune import checkpoint
from tinyprune.tools.cli import main


def run(argv):
    """``main(argv)`` with stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:          # main returns its code; this only guards the tests
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def tree(folder):
    """``{relative path: content hash, or "folder"}`` of everything under ``folder``."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "folder"
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                found[os.path.relpath(path, folder)] = "link to " + os.readlink(path)
                continue
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = hashlib.sha256(stream.read()).hexdigest()
    return found


def assert_refused(argv, folder, *names):
    """Run ``argv``: exit code 2, exactly one line on stderr naming each of ``names``, nothing
    printed on stdout, and nothing under ``folder`` created, changed or removed.  Returns the line.
    """
    before = tree(folder)
    code, stdout, stderr = run(argv)
    assert code == 2, (argv, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), stderr
    assert lines[0].startswith("tinyprune"), lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert stdout == "", stdout
    assert tree(folder) == before
    return lines[0]


def tiny_chain(seed=0):
    """A small model that is not a MobileNet but fits the pipeline: (N, 3, 96, 96) -> (N, 1)."""
    rng = np.random.default_rng(seed)
    return tp.Chain(tp.Chain(tp.Conv2d(3, 8, 3, stride=4, pad=1, rng=rng), tp.BatchNorm2d(8),
                             tp.activation_layer("slopehtanh"),
                             tp.DepthwiseConv2d(8, 3, stride=2, pad=1, rng=rng), tp.BatchNorm2d(8),
                             tp.activation_layer("slopehtanh"),
                             tp.Conv2d(8, 16, 1, rng=rng), tp.BatchNorm2d(16),
                             tp.activation_layer("slopehtanh")),
                    tp.Chain(tp.GlobalMeanPool(), tp.Flatten(), tp.Dense(16, 1, rng=rng))).eval()


def make_inputs(folder):
    """Checkpoints and files a hostile user would pass, written into ``folder``; returns their paths."""
    paths = {name: folder / name for name in ("ok.npz", "two.npz", "gray.npz", "chain.npz",
                                             "flat.npz", "dense.npz", "text.txt", "broken.npz")}
    checkpoint.save(tp.MobileNet(tp.slopehtanh, 0.25, fcsize=64, nclasses=1, seed=3).eval(), paths["ok.npz"])
    checkpoint.save(tp.MobileNet(tp.slopehtanh, 0.25, fcsize=16, nclasses=2, seed=3).eval(), paths["two.npz"])
    checkpoint.save(tp.MobileNet(tp.slopehtanh, 0.25, fcsize=16, nclasses=1, inchannels=1, seed=3).eval(),
                    paths["gray.npz"])
    checkpoint.save(tiny_chain(), paths["chain.npz"])
    checkpoint.save(tp.Chain(tp.Flatten(), tp.Dense(12, 1, rng=np.random.default_rng(0))).eval(),
                    paths["flat.npz"])
    checkpoint.save(tp.Chain(tp.GlobalMeanPool(), tp.Flatten(),
                             tp.Dense(3, 1, rng=np.random.default_rng(0))).eval(), paths["dense.npz"])
    paths["text.txt"].write_text("not a checkpoint\n")
    paths["broken.npz"].write_bytes(paths["ok.npz"].read_bytes()[:5000])
    (folder / "a-folder").mkdir()
    paths["a-folder"] = folder / "a-folder"
    return paths
