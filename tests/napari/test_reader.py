"""The napari reader and the training-pair writer, without napari (plain layer data)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr

from crystalseg.errors import ConfigError, StageStateError
from crystalseg.napari.correct import save_training_pair
from crystalseg.napari.reader import RUN_KEY, get_reader, read_run
from crystalseg.store import read_run_attrs, read_table
from crystalseg.train.data import discover_pairs


def test_reader_claims_run_stores_only(measured_run: Path, tmp_path: Path) -> None:
    assert get_reader(str(measured_run)) is read_run
    assert get_reader([str(measured_run)]) is read_run
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "plain")) is None
    assert get_reader(str(tmp_path / "missing.zarr")) is None


def test_layers_are_calibrated_and_match_the_store(measured_run: Path) -> None:
    layers = {kind: (data, kwargs) for data, kwargs, kind in read_run(measured_run)}
    assert set(layers) == {"image", "labels", "points"}
    ds = xr.open_zarr(measured_run)
    pixel = read_run_attrs(measured_run)["pixel_size_um"]
    for _, kwargs in layers.values():
        assert kwargs["scale"] == (1.0, pixel, pixel)
        assert kwargs["metadata"][RUN_KEY] == str(measured_run)
    np.testing.assert_array_equal(np.asarray(layers["image"][0]), ds["image"].values)
    np.testing.assert_array_equal(np.asarray(layers["labels"][0]), ds["mask"].values)
    assert layers["image"][1]["units"] == ("pixel", "um", "um")

    points, kwargs = layers["points"]
    table = read_table(measured_run, "particles")
    assert len(points) == len(table) > 0
    np.testing.assert_array_equal(points[:, 0], table["frame"])
    np.testing.assert_array_equal(points[:, 1:], table[["centroid_y", "centroid_x"]])
    assert list(kwargs["features"].columns) == list(table.columns)
    assert "time_s" in kwargs["features"]  # the particles carry their time
    np.testing.assert_allclose(kwargs["size"], np.clip(table["ecd"] / pixel, 2, None))
    assert kwargs["border_color"] == "ecd"


def test_each_point_sits_on_its_particle(measured_run: Path) -> None:
    """The centroid of every point lies on a crystal pixel of the mask (convex-ish
    synthetic crystals), in the frame it belongs to."""
    layers = {kind: (data, kwargs) for data, kwargs, kind in read_run(measured_run)}
    mask = np.asarray(layers["labels"][0])
    points = layers["points"][0]
    rows = np.round(points).astype(int)
    on = mask[rows[:, 0], rows[:, 1], rows[:, 2]] > 0
    assert on.mean() > 0.9


def test_training_pair_round_trips(measured_run: Path, tmp_path: Path) -> None:
    ds = xr.open_zarr(measured_run)
    corrected = ds["mask"][2].values.copy()
    corrected[:10, :10] = 1  # a hand correction
    image_path, mask_path = save_training_pair(measured_run, 2, corrected, tmp_path / "train")
    assert (image_path.name, mask_path.name) == ("run_00002.png", "run_00002_mask.png")
    np.testing.assert_array_equal(iio.imread(image_path), ds["image"][2].values)
    np.testing.assert_array_equal(iio.imread(mask_path), corrected)
    (pair,) = discover_pairs(tmp_path / "train")  # what 'crystalseg train' reads
    assert (pair.image, pair.mask) == (image_path, mask_path)
    with pytest.raises(StageStateError, match="exists; pass overwrite=True"):
        save_training_pair(measured_run, 2, corrected, tmp_path / "train")
    with pytest.raises(ConfigError, match=r"expected class indices 0\.\.1"):
        save_training_pair(measured_run, 1, corrected * 3, tmp_path / "train")
    with pytest.raises(ConfigError, match="outside the run's 4 frames"):
        save_training_pair(measured_run, 4, corrected, tmp_path / "train")
