"""The run store as an OME-Zarr 0.5 image with its mask as label image, read by the
``ome-zarr`` reader and validated by ``ome-zarr-models``, while xarray reads it as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg import store
from crystalseg.cli import cli
from crystalseg.dims import PROBABILITY
from crystalseg.store.ome import LABELS_GROUP, X_UM, Y_UM, write_ome_metadata

ome_reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr is in the test extra")
from ome_zarr.io import parse_url  # noqa: E402

INTERVAL_S = 2.5


def _write(path: Path, data: np.ndarray, *, pixel: float | None) -> None:
    writer = store.create_run(
        path,
        shape=data.shape,
        dtype=data.dtype,
        time_s=np.arange(data.shape[0]) * INTERVAL_S,
        pixel_size_um=pixel,
        source={"format": "test"},
        frames_per_chunk=2,
    )
    writer.write_frames(0, data)
    writer.mark_done(0, data.shape[0])
    writer.finish()


@pytest.fixture
def frames(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 255, (5, 24, 32), dtype=np.uint8)


def _read_ome(path: Path) -> tuple[object, object | None]:
    """The image node and the label node that the ome-zarr reader finds in ``path``."""
    nodes = list(ome_reader.Reader(parse_url(str(path)))())
    is_label = [any(isinstance(s, ome_reader.Label) for s in n.specs) for n in nodes]
    images = [n for n, lab in zip(nodes, is_label, strict=True) if n.data and not lab]
    labels = [n for n, lab in zip(nodes, is_label, strict=True) if n.data and lab]
    assert len(images) == 1, [str(n) for n in nodes]
    return images[0], (labels[0] if labels else None)


def test_ome_zarr_reads_the_image_calibrated(tmp_path: Path, frames, store_mask) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=0.65)
    image, label = _read_ome(path)
    axes = image.metadata["axes"]
    assert [(a["name"], a["type"], a.get("unit")) for a in axes] == [
        ("time", "time", "second"),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    (transforms,) = image.metadata["coordinateTransformations"]
    assert transforms == [{"type": "scale", "scale": [INTERVAL_S, 0.65, 0.65]}]
    np.testing.assert_array_equal(np.asarray(image.data[0]), frames)
    assert label is None  # not segmented yet

    mask = (frames > 128).astype(np.uint8)
    store_mask(path, mask)  # a stage finishing writes the label image
    image, label = _read_ome(path)
    assert label is not None
    np.testing.assert_array_equal(np.asarray(label.data[0]), mask)
    assert label.metadata["coordinateTransformations"] == [transforms]
    group = zarr.open_group(str(path), mode="r")
    props = group[f"{LABELS_GROUP}/mask"].attrs["ome"]["image-label"]["properties"]
    assert {p["label-value"]: p["class"] for p in props} == {0: "background", 1: "crystal"}


def test_metadata_is_valid_ome_zarr_0_5(tmp_path: Path, frames, store_mask) -> None:
    models = pytest.importorskip("ome_zarr_models.v05", reason="comes with ome-zarr")
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=None)
    store_mask(path, (frames > 100).astype(np.uint8))
    group = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(group)  # checks axes, paths, dimension_names, ndim
    assert image.attributes.ome.multiscales[0].datasets[0].path == "image"
    ImageLabel.from_zarr(group[f"{LABELS_GROUP}/mask"])
    assert models.__name__.endswith("v05")


def test_without_pixel_size_y_x_have_no_unit_until_calibrated(tmp_path: Path, frames) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=None)
    image, _ = _read_ome(path)
    assert [a.get("unit") for a in image.metadata["axes"]] == ["second", None, None]
    assert image.metadata["coordinateTransformations"][0][0]["scale"] == [INTERVAL_S, 1.0, 1.0]
    assert Y_UM not in xr.open_zarr(path).coords

    store.set_calibration(path, pixel_size_um=2.0, interval_s=30.0)
    image, _ = _read_ome(path)
    assert [a.get("unit") for a in image.metadata["axes"]] == ["second", *["micrometer"] * 2]
    assert image.metadata["coordinateTransformations"][0][0]["scale"] == [30.0, 2.0, 2.0]
    ds = xr.open_zarr(path)
    np.testing.assert_array_equal(ds[X_UM].values, np.arange(32) * 2.0)
    np.testing.assert_array_equal(ds[Y_UM].values, np.arange(24) * 2.0)
    assert ds[X_UM].attrs["units"] == "um"


def test_xarray_reads_the_store_as_before(tmp_path: Path, frames, store_mask) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=0.5)
    mask = (frames > 128).astype(np.uint8)
    store_mask(path, mask)
    ds = xr.open_zarr(path)  # plain xarray, no crystalseg code
    assert set(ds.data_vars) == {"image", "mask"}  # no OME group shows up as a variable
    assert ds["image"].dims == ds["mask"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(ds["image"].values, frames)
    np.testing.assert_array_equal(ds["mask"].values, mask)
    np.testing.assert_array_equal(ds["time"].values, np.arange(5) * INTERVAL_S)
    np.testing.assert_array_equal(ds["image"][X_UM].values, np.arange(32) * 0.5)
    assert ds.attrs["ome"]["version"] == "0.5"


def test_a_new_mask_is_copied_into_the_label_image(tmp_path: Path, frames, store_mask) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=0.5)
    store_mask(path, (frames > 128).astype(np.uint8))
    changed = (frames > 30).astype(np.uint8)
    store_mask(path, changed)
    _, label = _read_ome(path)
    np.testing.assert_array_equal(np.asarray(label.data[0]), changed)  # type: ignore[union-attr]


def _make_old(path: Path) -> None:
    """Strip what this release adds, and give the probability the CF scaling of 0.1."""
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["ome"]
    for name in (LABELS_GROUP, X_UM, Y_UM):
        del group[name]
    del group["image"].attrs["coordinates"]
    store.create_array(
        path,
        PROBABILITY,
        dims=("time", "y", "x"),
        shape=group["image"].shape,
        dtype="uint8",
        chunks=group["image"].chunks,
        attrs={"units": "1", "scale_factor": 1 / 255, "add_offset": 0.0},
    )[:] = 255
    store.consolidate(path)


def test_upgrade_command_adds_the_metadata_and_loses_nothing(
    tmp_path: Path, frames, store_mask, digest
) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=0.5)
    store_mask(path, (frames > 128).astype(np.uint8))
    _make_old(path)
    assert xr.open_zarr(path)[PROBABILITY].dtype == np.float64  # what issue 26 found
    data = {k: v for k, v in digest(path).items() if "/c/" in k}  # every chunk of data
    location = parse_url(str(path))
    assert location is None or not [n for n in ome_reader.Reader(location)() if n.data]

    result = CliRunner().invoke(cli, ["upgrade", str(path)])
    assert result.exit_code == 0, result.output
    assert "OME-Zarr 0.5 image metadata" in result.output
    assert "probability: read as uint8" in result.output
    after = digest(path)
    assert all(after[k] == v for k, v in data.items())  # no chunk rewritten or lost
    ds = xr.open_zarr(path)
    assert ds[PROBABILITY].dtype == np.uint8 and int(ds[PROBABILITY].max()) == 255
    _, label = _read_ome(path)
    np.testing.assert_array_equal(np.asarray(label.data[0]), ds["mask"].values)  # type: ignore[union-attr]

    again = CliRunner().invoke(cli, ["upgrade", str(path)])
    assert again.exit_code == 0 and "already up to date" in again.output


def test_upgrade_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["upgrade", str(tmp_path / "missing.zarr")])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_metadata_is_rewritten_the_same(tmp_path: Path, frames) -> None:
    path = tmp_path / "r.zarr"
    _write(path, frames, pixel=0.5)
    first = dict(zarr.open_group(str(path), mode="r").attrs["ome"])
    assert write_ome_metadata(path) == first
