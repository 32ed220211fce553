"""Hostile but real conditions at the command line (issue 29): a read-only folder, a full
disk, outputs where they do not belong, damaged stores and out-of-range settings each give
one ``Error:`` line naming the file and what to do, a non-zero exit, and lose nothing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.measure import measure_run
from crystalseg.store import open_run
from crystalseg.synth import SynthConfig, synthesize_run


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.output


def one_error_line(code: int, output: str, pattern: str) -> str:
    """Assert exit != 0 and exactly one ``Error:`` line (warnings aside) matching ``pattern``."""
    assert code not in (0, None), output
    assert "Traceback" not in output, output
    lines = [ln for ln in output.strip().splitlines() if ln and not ln.startswith("Warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def digest(path: Path) -> dict[str, str]:
    """sha1 of every file under ``path`` (or of ``path``): what must survive a failure."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p.relative_to(path.parent)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files
    }


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    """A measured 3-frame synthetic run (its truth stored as the mask: no model needed)."""
    path = tmp_path_factory.mktemp("base") / "run.zarr"
    synthesize_run(path, SynthConfig(frames=3, height=64, width=64, seed=2, scenario="clear"))
    labels = xr.open_zarr(path, group="truth")["labels"].values
    store_mask(path, (labels > 0).astype(np.uint8))
    measure_run(path, scheduler="synchronous")
    return path


@pytest.fixture
def run_copy(tmp_path: Path, measured: Path) -> Path:
    shutil.copytree(measured, tmp_path / "run.zarr")
    return tmp_path / "run.zarr"


# ---------------------------------------------------------------------------- read-only


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["calibrate", "{run}", "--pixel-size", "0.5"], id="calibrate"),
        pytest.param(["report", "{run}"], id="report"),
        pytest.param(["plot", "{run}"], id="plot", marks=pytest.mark.slow),
        pytest.param(["overlay", "{run}", "--montage", "0"], id="overlay", marks=pytest.mark.slow),
        pytest.param(["measure", "{run}", "--export", "csv"], id="export", marks=pytest.mark.slow),
        pytest.param(["import", "{src}", "{dir}/new.zarr", "--interval", "1"], id="import"),
    ],
)
def test_a_read_only_folder_gives_one_line_and_changes_nothing(
    tmp_path: Path, measured: Path, read_only_copy: Callable[..., Path], args: list[str]
) -> None:
    tifffile.imwrite(tmp_path / "src.tif", np.zeros((2, 16, 16), np.uint8))
    folder = read_only_copy(measured, tmp_path / "src.tif")
    before = digest(folder)
    given = [a.format(run=folder / "run.zarr", src=folder / "src.tif", dir=folder) for a in args]
    code, out = run(*given)
    one_error_line(code, out, r"'.*': (read-only file system|permission denied)\. (Write|Check)")
    assert digest(folder) == before


# ---------------------------------------------------------------------------- full disk


def test_import_onto_a_full_disk_fails_in_one_line_and_resumes_once_space_is_freed(
    tmp_path: Path, small_disk: Path, fill_disk: Callable[..., Path]
) -> None:
    frames = np.random.default_rng(1).integers(0, 255, (12, 128, 128), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "src.tif", frames)  # 196 KB of noise: zstd cannot shrink it
    filler = fill_disk(small_disk, leave=100_000)
    dest = small_disk / "r.zarr"
    args = ("import", str(tmp_path / "src.tif"), str(dest), "--interval", "5",
            "--frames-per-chunk", "2")  # fmt: skip
    code, out = run(*args)
    one_error_line(code, out, r"no space left on the device\. Free space .*run the same command")
    filler.unlink()  # the user frees space and runs the same command again
    code, out = run(*args)
    assert code == 0, out
    np.testing.assert_array_equal(open_run(dest)["image"].values, frames)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["report", "{run}", "-o", "{disk}/report.html"], id="report"),
        pytest.param(["plot", "{run}", "-o", "{disk}/plots"], id="plot", marks=pytest.mark.slow),
        pytest.param(
            ["overlay", "{run}", "-o", "{disk}/overlays", "--frames", "0"],
            id="overlay",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_outputs_on_a_full_disk_leave_no_half_written_file(
    run_copy: Path, small_disk: Path, fill_disk: Callable[..., Path], args: list[str]
) -> None:
    fill_disk(small_disk)
    before = digest(run_copy)
    code, out = run(*[a.format(run=run_copy, disk=small_disk) for a in args])
    one_error_line(code, out, r"no space left on the device\. Free space")
    left = [p.name for p in small_disk.rglob("*") if p.is_file() and p.name != "filler.bin"]
    assert left == [], left  # no .partial, no truncated PNG
    assert digest(run_copy) == before


# ---------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["report", "{run}", "-o", "{run}"], r"output '.*run.zarr' is the zarr store"),
        (["report", "{run}", "-o", "{run}/r.html"], r"r.html' lies inside the zarr store"),
        (["plot", "{run}", "-o", "{run}/plots"], r"plots' lies inside the zarr store"),
        (["overlay", "{run}", "-o", "{run}/psd/x"], r"x' lies inside the zarr store"),
        (["report", "{run}", "-o", "{tmp}"], r"report output '.*' is a folder; expected an HTML"),
    ],
)
def test_outputs_into_a_store_or_onto_a_folder_are_refused_before_work(
    run_copy: Path, args: list[str], pattern: str
) -> None:
    before = digest(run_copy)
    code, out = run(*[a.format(run=run_copy, tmp=run_copy.parent) for a in args])
    one_error_line(code, out, pattern)
    assert digest(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run.zarr"]  # no .partial


def test_report_onto_a_file_path_in_a_file_gives_one_line(run_copy: Path) -> None:
    (run_copy.parent / "notes.txt").write_text("mine")
    code, out = run("report", str(run_copy), "-o", str(run_copy.parent / "notes.txt" / "r.html"))
    one_error_line(code, out, r"notes.txt': a file of that name exists where a folder is to")
    assert (run_copy.parent / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- damaged stores


def _edit_attrs(run: Path, **attrs: object) -> None:
    meta = json.loads((run / "zarr.json").read_text())
    meta["attributes"].update(attrs)
    (run / "zarr.json").write_text(json.dumps(meta))
    (run / "zarr.json").touch()


@pytest.mark.parametrize(
    ("damage", "commands", "pattern"),
    [
        (
            lambda r: _edit_attrs(r, provenance=[1, 2]),
            ["info", "report", "plot", "measure"],
            r"attribute 'provenance' of type list; expected a mapping",
        ),
        (
            lambda r: _edit_attrs(r, pixel_size_um="0.65 um"),
            ["info", "segment", "measure", "overlay"],
            r"'pixel_size_um' = '0.65 um'; expected micrometres per pixel.*crystalseg calibrate "
            r".* --pixel-size UM",
        ),
        (
            lambda r: _edit_attrs(r, pixel_size_um=1e-300),
            ["info", "measure"],
            r"'pixel_size_um' = 1e-300; expected micrometres per pixel, 0.0001 to 10000",
        ),
        (
            lambda r: _edit_attrs(r, crystalseg_format_version="1"),
            ["info"],
            r"format version '1'; expected a whole number",
        ),
        (
            lambda r: (r / "image" / "c" / "0" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd" * 9),
            ["overlay"],
            r"a chunk of .*run.zarr' cannot be decoded \(.*\); the store is damaged.*Re-import",
        ),
        (
            lambda r: shutil.rmtree(r / "image"),
            ["info", "report"],
            r"has no array 'image'",
        ),
    ],
)
def test_a_damaged_store_gives_one_line_per_command(
    run_copy: Path, damage: Callable[[Path], None], commands: list[str], pattern: str
) -> None:
    damage(run_copy)
    for command in commands:
        code, out = run(command, str(run_copy))
        one_error_line(code, out, pattern)


def test_a_store_of_zero_frames_gives_one_line(run_copy: Path) -> None:
    for name, shape in (("image", [0, 64, 64]), ("time", [0])):
        meta = json.loads((run_copy / name / "zarr.json").read_text())
        meta["shape"] = shape
        (run_copy / name / "zarr.json").write_text(json.dumps(meta))
    for command in ("info", "overlay"):
        code, out = run(command, str(run_copy))
        one_error_line(code, out, r"holds 0 frames .*Re-import the recording")


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["measure", "{run}", "--bins", "1", "1000", "100000000"], r"1 <= N <= 200 bins"),
        (
            ["calibrate", "{run}", "--pixel-size", "1e-300"],
            r"--pixel-size: pixel size 1e-300 um "
            r"is outside the physical range 0.0001 to 10000 um",
        ),
        (["calibrate", "{run}", "--interval", "nan"], r"--interval: frame interval nan s"),
        (["import", "{src}", "{tmp}/n.zarr", "--pixel-size", "1e300"], r"--pixel-size: pixel"),
        (["import", "{src}", "{tmp}/n.zarr", "--interval", "0"], r"--interval: frame interval 0"),
        (["import", "{src}", "{tmp}/n.zarr", "--frames-per-chunk", "0"], r"0 is not in the range"),
        (["import", "{src}", "{tmp}/n.zarr", "--frames-per-chunk", "-2"], r"-2 is not in the"),
    ],
)
def test_out_of_range_settings_are_refused_before_work(
    run_copy: Path, args: list[str], pattern: str
) -> None:
    tmp = run_copy.parent
    tifffile.imwrite(tmp / "src.tif", np.zeros((2, 16, 16), np.uint8))
    before = digest(run_copy)
    code, out = run(*[a.format(run=run_copy, src=tmp / "src.tif", tmp=tmp) for a in args])
    assert code != 0 and "Traceback" not in out, out
    assert re.search(pattern, out), out
    assert digest(run_copy) == before
    assert not (tmp / "n.zarr").exists()


@pytest.mark.filterwarnings("default::crystalseg.errors.CrystalsegWarning")  # the CLI prints it
def test_import_of_a_planar_rgb_stack_says_how_it_was_read_and_lets_the_user_choose(
    tmp_path: Path,
) -> None:
    """Data-loss case 7 at the command line: 3 frames, not one grey frame, by default."""
    frames = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30)])
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, frames, photometric="rgb", planarconfig="separate")  # imwrite's default
    code, out = run("import", str(src), str(tmp_path / "a.zarr"), "--interval", "1")
    assert code == 0, out
    assert re.search(r"Warning: .*planar RGB\(A\) TIFF \(tifffile shape \(3, 16, 16\), "
                     r"photometric RGB, planarconfig SEPARATE.*3 planes read as 3 grey frames.*"
                     r"--planar-rgb rgb", out)  # fmt: skip
    np.testing.assert_array_equal(open_run(tmp_path / "a.zarr")["image"].values, frames)
    code, out = run("import", str(src), str(tmp_path / "b.zarr"), "--planar-rgb", "rgb")
    assert code == 0 and "Warning: TIFF" not in out, out
    grey = open_run(tmp_path / "b.zarr")["image"].values
    assert grey.shape == (1, 16, 16) and int(grey[0, 0, 0]) == round(
        0.2125 * 10 + 0.7154 * 20 + 0.0721 * 30
    )
