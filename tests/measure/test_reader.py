"""MeasuredRun: the one reader of a measured run agrees with what the measurement wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.measure import MeasuredRun, MeasureSettings, measure_run, size_label
from crystalseg.measure.run import label_mask_frame, read_mask_codes
from crystalseg.store import begin_stage, read_run_attrs, read_table
from crystalseg.synth import SynthConfig, synthesize_run


@pytest.fixture(scope="module")
def run(measured_template: Path) -> MeasuredRun:
    return MeasuredRun(measured_template)


def test_calibration_is_the_stores(run: MeasuredRun, measured_template: Path) -> None:
    calibration = run.calibration
    assert calibration.pixel_size_um == read_run_attrs(measured_template)["pixel_size_um"]
    assert calibration.size_units == "um" and calibration.time_units == "s"
    stored = zarr.open_group(str(measured_template), mode="r")["time"][:]
    np.testing.assert_array_equal(calibration.time_s, stored)
    assert calibration.frame_shape_px == (96, 128)
    assert run.n_frames == 4
    assert run.size_label == "ECD (µm)" == size_label("ecd", "um")
    assert size_label("feret_diameter_max", "px") == "length, max Feret diameter (px)"
    assert run.settings.to_dict() == json.loads(run.psd.attrs["measure_settings"])
    assert run.provenance["status"] == "finished"


def test_particle_counts_per_frame_are_the_psd_counts(run: MeasuredRun) -> None:
    table = read_table(run.path, "particles")
    found = run.particle_counts()
    np.testing.assert_array_equal(found, run.psd["count_detected"].values)
    np.testing.assert_array_equal(found, np.bincount(table["frame"], minlength=run.n_frames))
    kept = table.groupby("frame")["kept"].sum().reindex(range(run.n_frames), fill_value=0)
    np.testing.assert_array_equal(kept.to_numpy(), run.psd["count_kept"].values)
    assert run.n_particles == len(table) == found.sum() > 0
    stats = run.statistics()
    np.testing.assert_array_equal(stats["count_kept"], run.psd["count_kept"].values)
    np.testing.assert_array_equal(stats["time_s"], run.calibration.time_s)


def test_particles_whole_and_by_frame_range_are_the_table(run: MeasuredRun) -> None:
    table = read_table(run.path, "particles")
    whole = run.particles()
    pd.testing.assert_frame_equal(whole[list(table.columns)], table)
    offsets = run.frame_offsets
    part = run.particles(frames=range(1, 3), columns=["frame", "label", "area"])
    expected = table.iloc[offsets[1] : offsets[3]][["frame", "label", "area"]]
    pd.testing.assert_frame_equal(part, expected.reset_index(drop=True))
    last = run.particles(frames=-1)
    assert (last["frame"] == run.n_frames - 1).all() and len(last) == run.particle_counts()[-1]
    blocks = list(run.iter_particles(columns=["frame"], rows=3))
    assert [len(b) for b in blocks[:-1]] == [3] * (len(blocks) - 1)
    np.testing.assert_array_equal(pd.concat(blocks)["frame"], table["frame"])
    with pytest.raises(ConfigError, match=r"no column\(s\) \['nope'\]"):
        run.particles(columns=["nope"])
    with pytest.raises(ConfigError, match=r"frame 4 is out of range.*0\.\.3"):
        run.particles(frames=4)


def test_frame_labels_are_the_labels_the_measurement_counted(run: MeasuredRun) -> None:
    table = read_table(run.path, "particles")
    pixel_area = run.calibration.pixel_size_um**2
    group = zarr.open_group(str(run.path), mode="r")
    codes = read_mask_codes(group["mask"])
    for index in range(run.n_frames):
        frame = run.frame(index)
        rows = table[table["frame"] == index].set_index("label")
        n = frame.n_particles
        assert n == len(rows)
        # Labels 1..n are the measurement's own labelling of the stored mask.
        measured = label_mask_frame(
            np.asarray(group["mask"][index]), settings=run.settings, codes=codes
        )
        np.testing.assert_array_equal(np.where(frame.labels <= n, frame.labels, 0), measured)
        # Each label's pixels times the pixel area are its row's area.
        pixels = np.bincount(frame.labels.ravel(), minlength=n + 1)[1 : n + 1]
        np.testing.assert_allclose(pixels * pixel_area, rows.loc[range(1, n + 1), "area"])
        np.testing.assert_allclose(pixels.sum() * pixel_area, rows["area"].sum())
        # Labels above n are pieces dropped before measuring, each with its reason.
        assert set(frame.reason[n + 1 :]) <= {"too_small", "other_class"}
        assert frame.n_kept == int(run.psd["count_kept"][index])
        np.testing.assert_array_equal(frame.kept[1 : n + 1], rows.loc[range(1, n + 1), "kept"])
        np.testing.assert_array_equal(frame.size[1 : n + 1], rows.loc[range(1, n + 1), "ecd"])
        np.testing.assert_array_equal(frame.image, group["image"][index])
        assert frame.time_s == run.calibration.time_s[index]


def test_exclusions_by_reason_add_up(run: MeasuredRun) -> None:
    exclusions = run.exclusions()
    assert sum(exclusions.values()) == run.n_particles
    counts = run.frame_counts()
    reasons = [c for c in counts.columns if c not in ("counted", "found")]
    np.testing.assert_array_equal(counts["counted"] + counts[reasons].sum(axis=1), counts["found"])
    assert exclusions["counted"] == counts["counted"].sum()
    assert {r: int(counts[r].sum()) for r in reasons} == {
        r: n for r, n in exclusions.items() if r != "counted"
    }
    assert set(reasons) and exclusions["edge"] > 0  # crystals cut by the frame edge


def test_a_run_measured_with_windows_reads_its_windows(
    measured_template: Path, tmp_path: Path
) -> None:
    path = shutil.copytree(measured_template, tmp_path / "w.zarr")
    measure_run(path, settings=MeasureSettings(window="2"), overwrite=True, scheduler="synchronous")
    run = MeasuredRun(path)
    assert run.settings.window == "2"
    windows = run.windows
    assert windows is not None and windows.sizes["time"] == 2
    pooled = run.statistics(windows=True)
    per_frame = run.psd["count_kept"].values
    starts, stops = windows["frame_start"].values, windows["frame_stop"].values
    np.testing.assert_array_equal(starts, [0, 2])
    np.testing.assert_array_equal(
        pooled["count_kept"], [per_frame[a:b].sum() for a, b in zip(starts, stops, strict=True)]
    )
    assert pooled.index.name == "window"
    # The frames themselves read as before.
    assert MeasuredRun(measured_template).particle_counts().tolist() == (
        run.particle_counts().tolist()
    )
    assert MeasuredRun(measured_template).windows is None
    with pytest.raises(StageStateError, match="no pooled windows"):
        MeasuredRun(measured_template).statistics(windows=True)


def test_an_unmeasured_run_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bare.zarr"
    synthesize_run(path, SynthConfig(frames=2, height=32, width=32, seed=0))
    with pytest.raises(
        StageStateError, match=r"has not been measured; run 'crystalseg measure"
    ) as err:
        MeasuredRun(path)
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(cli, ["-q", "export", str(path)])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"Error: {err.value}"]
    stage = begin_stage(path, "measure", settings={}, n_frames=2, frames_per_chunk=1)
    stage.mark_done(0, 1)
    with pytest.raises(StageStateError, match=r"unfinished \(1 of 2 frames\)"):
        MeasuredRun(path)


def test_psd_is_the_group(run: MeasuredRun) -> None:
    with xr.open_zarr(run.path, group="psd") as psd:
        xr.testing.assert_identical(run.psd.load(), psd.load())


def test_a_run_measured_by_the_previous_release_reads() -> None:
    """The store kept from the previous release (tests/data) opens and its labels match."""
    path = Path(__file__).resolve().parents[1] / "data" / "previous_release" / "measured.zarr"
    run = MeasuredRun(path)
    assert run.outdated is None
    np.testing.assert_array_equal(run.particle_counts(), run.psd["count_detected"].values)
    assert sum(run.exclusions().values()) == run.n_particles
    for index in range(run.n_frames):
        assert run.frame(index).n_particles == run.particle_counts()[index]
