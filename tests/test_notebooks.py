"""Every chapter notebook runs top to bottom (its cells assert the chapter's key facts).

Run: pytest tests/test_notebooks.py, or one chapter's notebook with pytest -m ch1 -k notebook.
The notebooks are stored with their outputs; this executes a fresh copy and leaves the files alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("chapters/ch*/ch*.ipynb"))
CELL_TIMEOUT_S = 120


def _param(path: Path):
    chapter = int(re.match(r"ch(\d+)", path.parent.name).group(1))
    return pytest.param(path, marks=getattr(pytest.mark, f"ch{chapter}"), id=path.parent.name)


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell
