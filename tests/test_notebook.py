"""notebooks/psd_over_time.ipynb: stored without outputs, and its code runs top to bottom.

The code cells are executed in order in a fresh interpreter (one namespace, as a
kernel would), with a headless matplotlib backend. The cell tagged ``parameters``
may be followed by injected values (the papermill convention), so the default
suite runs the notebook on a tiny run and the slow test on the notebook's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "psd_over_time.ipynb"

_RUNNER = """
import json, sys
cells = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for i, source in enumerate(cells):
    print(f"--- cell {i}", flush=True)
    exec(compile(source, f"<cell {i}>", "exec"), namespace)
"""


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _run(tmp_path: Path, parameters: str | None) -> subprocess.CompletedProcess[str]:
    sources = []
    for cell in _notebook()["cells"]:
        if cell["cell_type"] != "code":
            continue
        sources.append(_source(cell))
        if parameters and "parameters" in cell.get("metadata", {}).get("tags", []):
            sources.append(parameters)
    cells_file = tmp_path / "cells.json"
    cells_file.write_text(json.dumps(sources), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(cells_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_notebook_is_stored_without_outputs() -> None:
    nb = _notebook()
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert 4 <= len(code) <= 10, "a handful of cells"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None
    ids = [c["id"] for c in nb["cells"]]
    assert len(ids) == len(set(ids))
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    text = "\n".join(_source(c) for c in code)
    for needle in ("synthesize_run", "segment_and_measure", "MeasuredRun(run_path)"):
        assert needle in text
    assert "plot_psd_heatmap" in text and "d50_number" in text


def _check_results(tmp_path: Path, result: subprocess.CompletedProcess[str], frames: int) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    n_code = sum(c["cell_type"] == "code" for c in _notebook()["cells"])
    assert result.stdout.count("--- cell") == n_code + 1  # + the injected parameters
    assert "D50 went from" in result.stdout
    with xr.open_zarr(tmp_path / "psd_over_time.zarr", group="psd") as psd:
        assert psd.sizes["time"] == frames
        assert int(psd["count_kept"].max()) > 0


def test_notebook_runs_on_a_tiny_run(tmp_path: Path) -> None:
    result = _run(tmp_path, "frames = 4\nsize = 256\nscenario = 'clear'\nseed = 2\nmin_count = 3\n")
    _check_results(tmp_path, result, 4)


@pytest.mark.slow
def test_notebook_runs_as_written(tmp_path: Path) -> None:
    result = _run(tmp_path, None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    frames = int(
        next(
            line.split("=")[1].split("#")[0]
            for line in _source(
                next(c for c in _notebook()["cells"] if c.get("id") == "parameters")
            ).splitlines()
            if line.startswith("frames")
        )
    )
    with xr.open_zarr(tmp_path / "psd_over_time.zarr", group="psd") as psd:
        assert psd.sizes["time"] == frames
        assert int(psd["count_kept"].max()) > 0
