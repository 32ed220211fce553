"""Run store: create, write, resume, open lazily, tables, version checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from crystalseg import store
from crystalseg.errors import InputNotFoundError, RunFormatError, StageStateError


def _write(path: Path, data: np.ndarray, *, fpc: int = 4, pixel: float | None = 0.5) -> None:
    writer = store.create_run(
        path,
        shape=data.shape,
        dtype=data.dtype,
        time_s=np.arange(data.shape[0]) * 2.5,
        pixel_size_um=pixel,
        source={"format": "test"},
        settings={"k": 1},
        frames_per_chunk=fpc,
    )
    for start, stop in writer.progress.pending_chunks():
        writer.write_frames(start, data[start:stop])
        writer.mark_done(start, stop)
    writer.finish()


def test_round_trip_through_plain_xarray(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 65535, (9, 17, 23), dtype=np.uint16)
    _write(tmp_path / "r.zarr", data)
    ds = xr.open_zarr(tmp_path / "r.zarr")  # no crystalseg code, no warning expected
    assert ds["image"].dims == ("time", "y", "x")
    assert ds["image"].dtype == np.uint16
    np.testing.assert_array_equal(ds["image"].values, data)
    np.testing.assert_array_equal(ds["time"].values, np.arange(9) * 2.5)
    assert ds["time"].attrs["units"] == "s"
    assert ds.attrs["pixel_size_um"] == 0.5
    assert ds.attrs[store.FORMAT_KEY] == store.FORMAT_VERSION


def test_open_run_is_lazy_and_chunked_along_time(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8)
    _write(tmp_path / "r.zarr", data, fpc=3)
    ds = store.open_run(tmp_path / "r.zarr")
    assert ds["image"].chunks == ((3, 3, 3, 1), (8,), (8,))
    # chunked (dask) read equals eager read, also for a slice across chunk borders
    np.testing.assert_array_equal(ds["image"][2:8].compute().values, data[2:8])
    np.testing.assert_array_equal(ds["image"].mean("time").values, data.mean(0))


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 12),
    fpc=st.integers(1, 6),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_any_chunking_round_trips(tmp_path_factory, n: int, fpc: int, shape) -> None:
    path = tmp_path_factory.mktemp("h") / "r.zarr"
    data = np.random.default_rng(n * 31 + fpc).integers(0, 255, (n, *shape), dtype=np.uint8)
    _write(path, data, fpc=fpc)
    np.testing.assert_array_equal(store.open_run(path)["image"].values, data)


def test_default_chunk_is_a_few_megabytes() -> None:
    assert store.default_frames_per_chunk((1024, 1024), 1) == 4
    assert store.default_frames_per_chunk((2048, 2048), 2) == 1
    assert store.default_frames_per_chunk((64, 64), 1) == store.MAX_FRAMES_PER_CHUNK


def test_interrupted_stage_is_incomplete_then_resumes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "r.zarr"
    data = rng.integers(0, 255, (10, 6, 6), dtype=np.uint8)
    kwargs = dict(
        shape=data.shape,
        dtype=data.dtype,
        time_s=np.arange(10.0),
        pixel_size_um=None,
        source={"format": "test"},
        settings={"k": 1},
        frames_per_chunk=4,
    )
    writer = store.create_run(path, **kwargs)
    writer.write_frames(0, data[0:4])
    writer.mark_done(0, 4)  # ... and the process dies here
    with pytest.raises(RunFormatError, match="stopped after 4 of 10 frames"):
        store.open_run(path)
    info = store.stage_info(path)["import"]
    assert info["status"] == "running" and info["frames_done"] == 4
    with pytest.raises(StageStateError, match="cannot finish"):
        writer.finish()

    resumed = store.create_run(path, **kwargs)  # same settings: resume, keep frames 0-3
    assert resumed.progress.pending_chunks() == [(4, 8), (8, 10)]
    for start, stop in resumed.progress.pending_chunks():
        resumed.write_frames(start, data[start:stop])
        resumed.mark_done(start, stop)
    resumed.finish()
    np.testing.assert_array_equal(store.open_run(path)["image"].values, data)
    assert store.stage_info(path)["import"]["status"] == "finished"


def test_existing_complete_store_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    data = np.ones((2, 4, 4), np.uint8)
    _write(path, data)
    with pytest.raises(StageStateError, match=r"already exists.*--overwrite"):
        _write(path, data)
    writer = store.create_run(
        path,
        shape=(1, 2, 2),
        dtype="uint8",
        time_s=np.zeros(1),
        pixel_size_um=None,
        source={},
        overwrite=True,
    )
    # the complete store is replaced only once the new one is complete
    assert store.describe_run(path)["frames"] == 2
    writer.write_frames(0, np.full((1, 2, 2), 7, np.uint8))
    writer.mark_done(0, 1)
    writer.finish()
    assert store.describe_run(path)["frames"] == 1
    assert store.open_run(path)["image"].values.max() == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # nothing left beside


def test_refuses_to_overwrite_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(StageStateError, match="not a run store"):
        store.create_run(
            folder,
            shape=(1, 2, 2),
            dtype="uint8",
            time_s=np.zeros(1),
            pixel_size_um=None,
            source={},
            overwrite=True,
        )
    assert (folder / "notes.txt").read_text() == "keep me"


def test_missing_and_foreign_and_newer_stores(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        store.open_run(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(RunFormatError, match="not a crystalseg run store"):
        store.open_run(tmp_path / "plain.zarr")
    (tmp_path / "run.tif").write_bytes(b"II*\x00")  # a recording where a store belongs
    with pytest.raises(
        RunFormatError, match=r"is a file.*crystalseg import .*run\.tif .*run\.zarr"
    ):
        store.open_run(tmp_path / "run.tif")
    path = tmp_path / "new.zarr"
    _write(path, np.zeros((1, 2, 2), np.uint8))
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"][store.FORMAT_KEY] = store.FORMAT_VERSION + 1
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(RunFormatError, match=r"newer crystalseg.*pip install -U"):
        store.open_run(path)


def test_table_round_trip_keeps_types_and_order(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _write(path, np.zeros((2, 4, 4), np.uint8))
    table = pd.DataFrame(
        {
            "frame": np.array([0, 0, 1], dtype=np.int32),
            "area": [1.5, 2.0, 3.25],
            "habit": ["needle", "plate", "prism"],
            "edge": [True, False, True],
        }
    )
    store.write_table(path, "truth/crystals", table, attrs={"note": "x"})
    back = store.read_table(path, "truth/crystals")
    assert list(back.columns) == list(table.columns)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back["frame"].dtype == np.int32 and back["edge"].dtype == bool
    ds = xr.open_zarr(path, group="truth/crystals")
    assert ds["area"].dims == ("particle",)
    empty = table.iloc[:0]
    store.write_table(path, "truth/empty", empty)
    assert len(store.read_table(path, "truth/empty")) == 0


def test_describe_run(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _write(path, np.zeros((5, 10, 20), np.uint8), pixel=2.0)
    info = store.describe_run(path)
    assert (info["frames"], info["height_px"], info["width_px"]) == (5, 10, 20)
    assert info["time_end_s"] == 10.0 and info["median_interval_s"] == 2.5
    assert info["field_um"] == (20.0, 40.0)
    assert info["stages"]["import"]["status"] == "finished"


def test_pixel_size_from_a_resolution_is_stored_as_meant(tmp_path: Path) -> None:
    """An ImageJ resolution of 1.5384615384615385 px/um is 0.6499999999999999 um per
    pixel in floating point; the store keeps 0.65."""
    pixel = 1.0 / 1.5384615384615385
    assert pixel != 0.65
    _write(tmp_path / "r.zarr", np.zeros((2, 4, 4), np.uint8), pixel=pixel)
    assert store.read_run_attrs(tmp_path / "r.zarr")["pixel_size_um"] == 0.65
