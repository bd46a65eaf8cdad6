"""Chapter 10: every tutorial also runs as a notebook, and shows every figure it draws.

The tutorials are scripts in the ``# %%`` cell format.  Here each one is
converted with jupytext and executed cell by cell in a Jupyter kernel
(nbclient and ipykernel, the kernel being this Python's), with
``TINYPRUNE_QUICK=1`` and no ``MPLBACKEND``, as a student's notebook would
run.  Every cell that draws a figure must show it as a PNG, not as the text
``<Figure size 1100x450 with 1 Axes>`` that a figure nobody knows how to
display prints.  These three packages come with the test extra
(``pip install -e .[test]``).
"""

import base64
import os

import pytest

import ipykernel  # noqa: F401  (the kernel the notebooks run in)
import jupytext
import nbclient

pytestmark = [pytest.mark.tutorials, pytest.mark.integration]   # runs the whole pipeline: see conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURE_CELLS = {"pruning.py": 7, "sensitivity.py": 1, "layers.py": 1, "methods.py": 1}   # cells that draw a figure
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def draws_a_figure(cell):
    """A code cell that draws: it calls a ``plots.plot_...`` function or builds a ``plots.Figure``."""
    return cell.cell_type == "code" and ("plots.plot_" in cell.source or "plots.Figure(" in cell.source)


def shown_pngs(cell):
    """The PNG images among a cell's outputs, as bytes."""
    return [base64.b64decode(output["data"]["image/png"]) for output in cell.outputs
            if output.get("output_type") in ("display_data", "execute_result")
            and "image/png" in output.get("data", {})]


@pytest.fixture(scope="module", params=sorted(FIGURE_CELLS))
def executed(request, tmp_path_factory):
    """``(name, notebook)``: a tutorial converted to a notebook and run to the end in a fresh kernel."""
    name = request.param
    folder = tmp_path_factory.mktemp(name.replace(".py", "-notebook"))
    notebook = jupytext.read(os.path.join(ROOT, "tutorials", name))
    with pytest.MonkeyPatch.context() as patch:              # the kernel inherits this environment
        patch.setenv("TINYPRUNE_QUICK", "1")
        patch.setenv("TINYPRUNE_OUT", str(folder))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        patch.delenv("MPLBACKEND", raising=False)
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()
    return name, notebook


def test_every_figure_cell_of_a_tutorial_shows_a_png(executed):
    name, notebook = executed
    figure_cells = [cell for cell in notebook.cells if draws_a_figure(cell)]
    assert len(figure_cells) == FIGURE_CELLS[name]
    for cell in figure_cells:
        pngs = shown_pngs(cell)
        assert len(pngs) == 1, f"{name}: the cell\n{cell.source}\nshowed {len(pngs)} PNGs, expected 1"
        assert pngs[0].startswith(PNG_SIGNATURE)


def test_only_figure_cells_show_pictures(executed):
    name, notebook = executed
    for cell in notebook.cells:
        if cell.cell_type == "code" and not draws_a_figure(cell):
            assert shown_pngs(cell) == [], f"{name}: the cell\n{cell.source}\nshowed a picture"
