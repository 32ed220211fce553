"""Several runs in one command (``crystalseg measure A.zarr B.zarr ...``): one model
load for the queue, each run's results those of measuring it alone, a damaged run
reported and skipped, the exit status and the table saying so."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.models.checkpoint import default_checkpoint_path
from crystalseg.synth import SynthConfig, synthesize_run


class _LoadCounter(logging.Handler):
    """Counts the engine's ``segmenter: ...`` record, logged once per model built."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loads = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("segmenter:"):
            self.loads += 1


def _make_runs(folder: Path) -> list[Path]:
    folder.mkdir()
    runs = []
    for seed, name in ((11, "a"), (12, "b"), (13, "c")):
        path = folder / f"{name}.zarr"
        synthesize_run(path, SynthConfig(frames=3, height=64, width=64, seed=seed))
        runs.append(path)
    return runs


def _results(run: Path) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    psd = xr.open_zarr(run, group="psd").load()
    group = zarr.open_group(str(run / "particles"), mode="r")
    return psd, {name: np.asarray(array[:]) for name, array in group.arrays()}


def test_a_queue_loads_the_model_once_and_skips_a_damaged_run(tmp_path: Path) -> None:
    a, b, c = _make_runs(tmp_path / "runs")
    alone = [tmp_path / "alone_a.zarr", tmp_path / "alone_c.zarr"]
    for run, copy in zip((a, c), alone, strict=True):
        shutil.copytree(run, copy)
    # b is damaged: a chunk of its frames no codec decodes
    (b / "image" / "c" / "0" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd" * 9)
    # a read-only copy of the bundled model under a new path: its first load here is
    # not a hit of the in-process cache, while its ONNX export is the bundled one's
    model = tmp_path / "model"
    shutil.copytree(default_checkpoint_path(), model)
    model.chmod(0o555)

    counter = _LoadCounter()
    engine_log = logging.getLogger("crystalseg.segment.engine")
    engine_log.addHandler(counter)
    try:
        result = CliRunner().invoke(
            cli, ["measure", str(a), str(b), str(c), "--model", str(model), "--json"]
        )
    finally:
        engine_log.removeHandler(counter)
    assert counter.loads == 1, result.output
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(b) in errors[0] and "damaged" in errors[0], result.stderr
    documents = json.loads(result.stdout)
    assert [d["path"] for d in documents] == [str(a), str(b), str(c)]
    assert [d["status"] for d in documents] == ["measured", "failed", "measured"]
    assert documents[1]["error"] in errors[0] and documents[0]["error"] is None
    assert documents[0]["frames"] == 3 and documents[0]["particles"] > 0

    # each good run equals the same run measured alone
    for run, copy in zip((a, c), alone, strict=True):
        result = CliRunner().invoke(cli, ["-q", "measure", str(copy), "--model", str(model)])
        assert result.exit_code == 0, result.output
        (queued_psd, queued_table), (alone_psd, alone_table) = _results(run), _results(copy)
        xr.testing.assert_identical(
            queued_psd.drop_attrs(deep=False), alone_psd.drop_attrs(deep=False)
        )
        assert queued_table.keys() == alone_table.keys()
        for name in queued_table:
            np.testing.assert_array_equal(queued_table[name], alone_table[name], err_msg=name)
        np.testing.assert_array_equal(xr.open_zarr(run)["mask"], xr.open_zarr(copy)["mask"])

    # a folder of runs stands for its *.zarr runs; the table lists all three
    result = CliRunner().invoke(cli, ["-q", "measure", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    model.chmod(0o755)
    table = result.stdout.splitlines()[-5:]
    assert table[0].split() == ["run", "status", "frames", "particles", "D50", "end", "seconds"]
    for line, run, status in zip(
        table[1:4], (a, b, c), ("measured", "failed", "measured"), strict=True
    ):
        assert line.split()[:2] == [str(run), status], table
    assert table[4] == "2 of 3 runs done, 1 failed"


def test_one_run_keeps_its_document_and_its_error_line(tmp_path: Path) -> None:
    """A single run prints one JSON document (not a list); its failure is the one
    ``Error:`` line of any command."""
    a, b, _ = _make_runs(tmp_path / "runs")
    (b / "image" / "c" / "0" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd" * 9)
    result = CliRunner().invoke(cli, ["-q", "measure", str(a), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict) and document["path"] == str(a)
    assert "status" not in document
    result = CliRunner().invoke(cli, ["-q", "measure", str(b)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "damaged" in lines[0], lines


def test_segment_queue_goes_on_past_a_run_that_is_not_a_store(tmp_path: Path) -> None:
    a, _, c = _make_runs(tmp_path / "runs")
    missing = tmp_path / "missing.zarr"
    result = CliRunner().invoke(cli, ["-q", "segment", str(a), str(missing), str(c)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr
    assert "mask of 3 frames written to" in result.stdout
    for run in (a, c):
        assert xr.open_zarr(run)["mask"].shape == (3, 64, 64)
    assert result.stdout.splitlines()[-1] == "2 of 3 runs done, 1 failed"


@pytest.mark.parametrize("folder_is_a_run", [True, False])
def test_a_folder_stands_for_its_runs_only_when_it_is_not_one(
    tmp_path: Path, folder_is_a_run: bool
) -> None:
    from crystalseg.cli.options import expand_run_folders

    folder = tmp_path / "runs"
    for name in ("b.zarr", "a.zarr"):
        (folder / name).mkdir(parents=True)
    (folder / "notes").mkdir()
    if folder_is_a_run:
        (folder / "zarr.json").write_text("{}")
    got = expand_run_folders(None, None, (folder,))  # type: ignore[arg-type]
    assert got == ((folder,) if folder_is_a_run else (folder / "a.zarr", folder / "b.zarr"))
