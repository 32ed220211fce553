"""A synthetic run measured on its true mask: intervals in the store, reconciled counts,
pooled windows equal to measuring the concatenated particles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from crystalseg.measure import EXCLUDED_REASONS, MeasureSettings, measure_run
from crystalseg.measure.distributions import size_distribution
from crystalseg.measure.intervals import INTERVAL_NAMES
from crystalseg.measure.windows import WINDOW_GROUP, assign_windows
from crystalseg.store import read_table
from crystalseg.synth import SynthConfig, synthesize_run

FRAMES = 7
SETTINGS = MeasureSettings(window="3", min_count=5)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("windows") / "crowded.zarr"
    cfg = SynthConfig(frames=FRAMES, height=192, width=192, seed=11, scenario="crowded")
    synthesize_run(path, cfg, frames_per_chunk=3)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]), fpc=3)
    measure_run(path, settings=SETTINGS, scheduler="synchronous")
    return path


def test_open_zarr_shows_intervals_with_units_and_long_names(measured: Path) -> None:
    psd = xr.open_zarr(measured, group="psd")
    for name in INTERVAL_NAMES:
        for bound in ("lower", "upper"):
            var = psd[f"{name}_{bound}"]
            assert var.attrs["units"] == "um" and "95 %" in var.attrs["long_name"]
            assert var.attrs["method"]
    assert psd["count_kept_upper"].attrs["units"] == "1"
    assert psd["number_density_lower"].attrs["units"] == "mm-2"
    assert psd["below_min_count"].dtype == bool
    assert psd.attrs["bootstrap_seed"] and psd.attrs["min_count"] == SETTINGS.min_count
    ds = psd.load()
    enough = ~ds["below_min_count"].values
    assert enough.any()
    for name in INTERVAL_NAMES:
        lower = ds[f"{name}_lower"].values[enough]
        upper = ds[f"{name}_upper"].values[enough]
        value = ds[name].values[enough]
        ok = np.isfinite(lower) & np.isfinite(upper)
        assert np.all(lower[ok] <= value[ok] + 1e-9) and np.all(value[ok] <= upper[ok] + 1e-9)
    few = ds["count_kept"].values < SETTINGS.min_count
    assert np.array_equal(few, ds["below_min_count"].values)
    assert np.isnan(ds["d50_number"].values[few]).all()


def test_counted_and_excluded_add_up_to_detected_in_every_frame(measured: Path) -> None:
    psd = xr.open_zarr(measured, group="psd").load()
    particles = read_table(measured, "particles")
    excluded = sum(psd[f"count_excluded_{r}"] for r in EXCLUDED_REASONS[1:])
    np.testing.assert_array_equal(psd["count_kept"] + excluded, psd["count_detected"])
    for t in range(FRAMES):
        rows = particles[particles["frame"] == t]
        assert len(rows) == int(psd["count_detected"][t])
        for reason in EXCLUDED_REASONS[1:]:
            n = int((rows["excluded_reason"] == reason).sum())
            assert n == int(psd[f"count_excluded_{reason}"][t])
    # Objects under the minimum area are in the table, not dropped.
    assert (particles["excluded_reason"] == "too_small").any()


def test_window_equals_measuring_the_concatenated_particles(measured: Path) -> None:
    windows = xr.open_zarr(measured, group=WINDOW_GROUP).load()
    psd = xr.open_zarr(measured, group="psd").load()
    particles = read_table(measured, "particles")
    kept = particles[particles["kept"]]
    assert windows.sizes["time"] == 3 and windows["frames"].values.tolist() == [3, 3, 1]
    assert windows["frame_start"].values.tolist() == [0, 3, 6]
    checked = 0
    for w in range(3):
        lo, hi = int(windows["frame_start"][w]), int(windows["frame_stop"][w])
        rows = kept[(kept["frame"] >= lo) & (kept["frame"] < hi)]
        expected = size_distribution(rows["ecd"], weights=rows["weight"], bins=SETTINGS.bin_edges())
        assert int(windows["count_kept"][w]) == expected["count"]
        np.testing.assert_allclose(windows["q0"][w], expected["q0"])
        below = expected["count"] < SETTINGS.min_count
        assert bool(windows["below_min_count"][w]) == below
        for name in ("d10_number", "d50_number", "d90_volume", "d_4_3", "d_3_2"):
            value = float(windows[name][w])
            assert np.isnan(value) if below else value == pytest.approx(expected[name])
        assert float(windows["count_per_frame"][w]) == pytest.approx(
            float(psd["count_kept"][lo:hi].mean())
        )
        assert int(windows["count_detected"][w]) == int(psd["count_detected"][lo:hi].sum())
        if not below:
            assert windows["d50_number_lower"][w] <= windows["d50_number"][w]
            checked += 1
    assert checked >= 2
    assert windows["d50_number_upper"].attrs["units"] == "um"
    assert windows.attrs["window"] == "3"


def test_assign_windows_by_time_and_frames() -> None:
    t = np.array([0.0, 10.0, 20.0, 59.0, 60.0, 200.0])
    assert assign_windows(t, "60s").tolist() == [0, 0, 0, 0, 1, 2]
    assert assign_windows(t, "4").tolist() == [0, 0, 0, 0, 1, 1]
