"""The notebooks: Colab-ready, saved with their outputs, and executing top to bottom without error.

Each notebook runs in a fresh Jupyter kernel (nbclient + ipykernel) from the ``notebooks/`` folder;
nothing is written back. Run alone, the selected notebooks execute concurrently, one kernel per CPU
core (at most 4); under pytest-xdist each test runs its own. Each notebook's test reports its own
result. To refresh the saved outputs after editing a notebook, see CONTRIBUTING.md, "Notebooks".
"""

from __future__ import annotations

import asyncio
import copy
import os
import pathlib
import re
from collections.abc import Callable

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_quickstart.ipynb",
    "02_optimizer_paths.ipynb",
    "03_momentum_theory.ipynb",
    "04_init_and_normalization.ipynb",
    "05_adaptive_methods.ipynb",
    "06_second_order.ipynb",
    "07_sweeps_with_vmap.ipynb",
    "08_which_optimizer.ipynb",
]
REPOSITORY = "github.com/gradtx/gradtx"
COLAB = "https://colab.research.google.com/github/gradtx/gradtx/blob/main/notebooks/"


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def test_the_notebooks_are_there():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_colab_badge_and_install_cell(name):
    notebook = read(name)
    nbformat.validate(notebook)
    first, second = notebook.cells[0], notebook.cells[1]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    badge = re.search(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\((.*?)\)",
                      first.source)
    assert badge, "the first cell needs the Colab badge"
    assert badge.group(1) == COLAB + name
    assert second.cell_type == "code"
    assert '"google.colab" in sys.modules' in second.source
    assert f"git+https://{REPOSITORY}" in second.source and "pip" in second.source


@pytest.mark.parametrize("name", EXPECTED)
def test_saved_with_outputs_in_order(name):
    notebook = read(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "run it top to bottom, then save"
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    assert images(notebook) >= 1, "the plots must be saved in the outputs"


async def _execute_all(names: list[str], workers: int) -> dict[str, tuple[nbformat.NotebookNode, BaseException | None]]:
    slots = asyncio.Semaphore(workers)

    async def execute(name: str) -> tuple[nbformat.NotebookNode, BaseException | None]:
        fresh = copy.deepcopy(read(name))
        for cell in fresh.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        client = NotebookClient(
            fresh, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        async with slots:
            try:
                await client.async_execute()
            except Exception as error:  # CellExecutionError names the cell and carries the traceback
                return fresh, error
        return fresh, None

    results = await asyncio.gather(*(execute(name) for name in names))
    return dict(zip(names, results))


@pytest.fixture(scope="module")
def executed(request: pytest.FixtureRequest) -> Callable[[str], tuple[nbformat.NotebookNode, BaseException | None]]:
    """``executed(name)``: the notebook run in a fresh kernel, and the error it raised (or None).

    Alone, the first call runs every selected notebook concurrently, one kernel per core (at most
    4). Under pytest-xdist (``-n 2``), where the workers already run tests in parallel, each call
    runs just its own notebook.
    """
    results: dict[str, tuple[nbformat.NotebookNode, BaseException | None]] = {}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        selected: list[str] = []
    else:
        selected = [
            item.callspec.params["name"]
            for item in request.session.items
            if item.module is request.module and item.originalname == "test_executes_top_to_bottom"
        ]

    def get(name: str) -> tuple[nbformat.NotebookNode, BaseException | None]:
        if name not in results:
            names = [n for n in selected if n not in results] or [name]
            workers = 1 if len(names) == 1 else max(1, min(4, os.cpu_count() or 1))
            results.update(asyncio.run(_execute_all(names, workers)))
        return results[name]

    return get


@pytest.mark.parametrize("name", EXPECTED)
def test_executes_top_to_bottom(name, executed):
    fresh, error = executed(name)
    if error is not None:
        raise error
    assert images(fresh) == images(read(name))
