"""notebooks/walkthrough.ipynb runs top to bottom (offline, on CPU)."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_walkthrough_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    notebook = nbformat.read(REPO / "notebooks" / "walkthrough.ipynb", as_version=4)
    # The kernel is a fresh process: one CPU device, as on a laptop.
    flags = os.environ.get("XLA_FLAGS", "").split()  # conftest's, less the device count.
    monkeypatch.setenv(
        "XLA_FLAGS", " ".join(f for f in flags if "host_platform_device_count" not in f)
    )
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    outputs = [
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    ]
    printed = "".join(outputs)
    assert "Offline" in printed and "falling back" in printed  # No network in the tests.
    assert "true label:" in printed
    shot_lines = [line for line in printed.splitlines() if "-shot:" in line]
    assert len(shot_lines) == 3
    images = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, "the rollout figure was not drawn"
