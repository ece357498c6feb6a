"""The notebooks execute top to bottom, headless, against this checkout's emo.

They run on FER-2013 when ``EMO_TEST_DATA_DIR`` points at it and on a tiny synthetic set otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec running this interpreter, so the notebooks see the same emo as the tests
    whatever other Python kernels the machine has installed."""
    spec = tmp_path / "jupyter" / "kernels" / "emo-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "emo", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return "emo-test"


def test_both_notebooks_are_here():
    assert [p.name for p in NOTEBOOKS] == ["01-data.ipynb", "02-results.ipynb"]


@pytest.mark.slow  # a kernel per notebook: a minute or more each
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_is_stored_without_outputs(path, kernel):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs (nbstripout)"
    nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(path.parent)}}
    ).execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "Traceback" not in text
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 3, "the figures were not drawn"
