"""crystalseg demo: the files it promises, its folder safety, and the CLI output."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import xarray as xr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.demo import DEMO_MARKER, _check_directory, run_demo
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.viz.report import SECTION_IDS

TINY = {"frames": 4, "size": (96, 96), "scenario": "clear", "seed": 1}


def _check_outputs(result, frames: int) -> None:  # type: ignore[no-untyped-def]
    directory = result.directory
    assert (directory / DEMO_MARKER).is_file()
    for path in result.files():
        assert path.exists(), path
        assert directory in path.parents
    assert [p.name for p in result.figures] == [
        "psd_heatmap.png",
        "statistics.png",
        "psd_curves.png",
        "cumulative.png",
        "shape.png",
    ]
    assert result.overlays[-1].name == "montage.png"
    for png in (*result.figures, *result.overlays):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = result.report.read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f"<section id='{sid}'>" in html
    with xr.open_zarr(result.run, group="psd") as psd:
        assert psd.sizes["time"] == frames
    header = result.particles_csv.read_text(encoding="utf-8-sig").splitlines()[0]
    assert header.startswith("frame,time_s,label,area_um2,ecd_um,")
    assert result.seconds > 0


def test_demo_on_a_tiny_run_writes_what_it_promises(tmp_path: Path) -> None:
    steps: dict[str, tuple[int, int]] = {}
    result = run_demo(
        tmp_path / "demo",
        **TINY,  # type: ignore[arg-type]
        scheduler="synchronous",
        progress=lambda step, done, total: steps.__setitem__(step, (done, total)),
    )
    _check_outputs(result, TINY["frames"])  # type: ignore[arg-type]
    assert steps["synth"] == (4, 4) and steps["segment"] == (4, 4) and steps["measure"] == (4, 4)


def test_demo_refuses_a_foreign_folder_without_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(StageStateError, match=r"not a crystalseg demo folder.*--overwrite"):
        run_demo(folder, **TINY)  # type: ignore[arg-type]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StageStateError, match="is a file"):
        run_demo(tmp_path / "file", **TINY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"frames": 1}, {"size": (32, 512)}, {"size": (64,)}, {"scenario": "soup"}]
)
def test_demo_rejects_bad_settings_before_writing(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        run_demo(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def test_cli_demo_overwrites_only_its_files_and_prints_where(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    args = [
        "-q",
        "demo",
        str(folder),
        "--n-frames",
        "3",
        "--size",
        "96",
        "96",
        "--scenario",
        "clear",
    ]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: ") and "--overwrite" in refused.output
    assert len(refused.output.strip().splitlines()) == 1

    result = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (folder / "notes.txt").read_text() == "keep me"
    lines = result.output.splitlines()
    assert lines[0].startswith("demo finished in ") and lines[0].endswith(f"{folder}/")
    assert f"report       {folder / 'report.html'}" in result.output
    assert f"run store    {folder / 'run.zarr'}" in result.output
    # now marked as a demo folder, it is replaced on the next run without --overwrite
    assert (folder / DEMO_MARKER).is_file()
    _check_directory(folder, overwrite=False)


@pytest.mark.slow
def test_full_size_demo(tmp_path: Path) -> None:
    start = time.perf_counter()
    result = run_demo(tmp_path / "crystalseg-demo")
    _check_outputs(result, 40)
    with xr.open_zarr(result.run, group="psd") as psd:
        assert int(psd["count_kept"].max()) >= 5
    print(f"full demo: {time.perf_counter() - start:.0f} s")
