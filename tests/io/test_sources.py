"""Frame readers: real files in, exact pixels, calibration and times out."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from crystalseg.errors import (
    ConfigError,
    CrystalsegError,
    FrameMismatchError,
    InputNotFoundError,
    UnsupportedInputError,
)
from crystalseg.io import FolderSource, NpySource, TiffSource, ZarrSource, open_source, to_grey
from crystalseg.io import folder as folder_mod

T, H, W = 5, 12, 16


def stack(dtype=np.uint16, n: int = T, seed: int = 0) -> np.ndarray:
    """A (n, H, W) stack whose frames all differ, covering much of the dtype's range."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    return rng.integers(0, top, size=(n, H, W), endpoint=True, dtype=dtype)


def rgb_expected(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma, rounded half up: the documented rule, computed independently."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((2125 * r + 7154 * g + 721 * b + 5000) // 10000).astype(rgb.dtype)


def read_all(src) -> np.ndarray:
    return src.read(0, src.shape[0])


# ---------------------------------------------------------------------------
# to_grey


def test_to_grey_primaries_and_alpha():
    px = np.array([[255, 0, 0, 7], [0, 255, 0, 7], [0, 0, 255, 7], [10, 20, 30, 0]], np.uint8)
    # 0.2125*255 = 54.19, 0.7154*255 = 182.43, 0.0721*255 = 18.39, 2.125+14.308+2.163 = 18.6
    np.testing.assert_array_equal(to_grey(px), [54, 182, 18, 19])
    np.testing.assert_array_equal(to_grey(px[:, :3]), [54, 182, 18, 19])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_to_grey_keeps_grey_values(dtype):
    v = np.arange(0, np.iinfo(dtype).max + 1, 1 if dtype == np.uint8 else 97, dtype=dtype)
    out = to_grey(np.stack([v, v, v], axis=-1))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, v)


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 3), st.integers(1, 4), st.just(3))))
def test_to_grey_matches_skimage_within_rounding(rgb):
    from skimage.color import rgb2gray

    ref = rgb2gray(rgb.astype(np.float64) / 65535) * 65535
    out = to_grey(rgb)
    assert out.shape == rgb.shape[:-1]
    assert np.all(np.abs(out - ref) <= 0.5 + 1e-6)


def test_to_grey_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        to_grey(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_grey(np.zeros((4, 4, 3), np.float32))


# ---------------------------------------------------------------------------
# TIFF


def test_plain_tiff_stack(tmp_path):
    data = stack()
    tifffile.imwrite(tmp_path / "run.tif", data)
    with open_source(tmp_path / "run.tif") as src:
        assert isinstance(src, TiffSource)
        assert src.shape == (T, H, W) and src.dtype == np.uint16
        np.testing.assert_array_equal(read_all(src), data)
        assert src.pixel_size_um is None
        assert src.time_s is None and src.time_source == "none"
        assert src.metadata["format"] == "tiff"
        assert src.metadata["files"] == [str(tmp_path / "run.tif")]


def test_single_page_tiff_is_one_frame(tmp_path):
    data = stack(np.uint8, n=1)[0]
    tifffile.imwrite(tmp_path / "one.tif", data)
    with open_source(tmp_path / "one.tif") as src:
        assert src.shape == (1, H, W)
        np.testing.assert_array_equal(read_all(src)[0], data)


@pytest.mark.parametrize(
    ("unit", "px_per_unit", "expected_um"),
    [("um", 2.0, 0.5), ("micron", 4.0, 0.25), ("\\u00B5m", 0.5, 2.0), ("nm", 0.01, 0.1)],
)
def test_imagej_tiff_resolution_and_finterval(tmp_path, unit, px_per_unit, expected_um):
    data = stack()
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(px_per_unit, px_per_unit),
        metadata={"axes": "TYX", "unit": unit, "finterval": 2.5},
    )
    with open_source(path) as src:
        assert src.metadata["format"] == "imagej-tiff"
        np.testing.assert_array_equal(read_all(src), data)
        assert src.pixel_size_um == pytest.approx(expected_um, rel=1e-6)
        assert src.time_source == "ImageJ finterval"
        np.testing.assert_array_equal(src.time_s, np.arange(T) * 2.5)


def test_imagej_stack_without_time_reads_z_as_time(tmp_path):
    data = stack(np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", data, imagej=True, metadata={"axes": "ZYX"})
    with open_source(tmp_path / "z.tif") as src:
        assert src.metadata["axes"] == "ZYX" and src.metadata["time_axis"] == "Z"
        np.testing.assert_array_equal(read_all(src), data)
        assert src.pixel_size_um is None and src.time_s is None


def test_imagej_grey_planes_labelled_c_are_time_but_composite_needs_channel(tmp_path):
    data = stack(np.uint8)
    # tifffile labels an unlabelled grey 3-D ImageJ stack as channels
    tifffile.imwrite(tmp_path / "grey.tif", data, imagej=True)
    with open_source(tmp_path / "grey.tif") as src:
        np.testing.assert_array_equal(read_all(src), data)
    tifffile.imwrite(
        tmp_path / "comp.tif", data, imagej=True, metadata={"axes": "CYX", "mode": "composite"}
    )
    with pytest.raises(UnsupportedInputError, match="5 channels"):
        open_source(tmp_path / "comp.tif")
    with open_source(tmp_path / "comp.tif", channel=4) as src:
        np.testing.assert_array_equal(read_all(src), data[4:5])


def test_ome_tiff_physical_size_and_delta_t(tmp_path):
    data = stack()
    delta_t = [0.0, 1.5, 3.25, 4.0, 10.0]
    path = tmp_path / "run.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 0.65,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.65,
            "TimeIncrement": 99.0,
            "Plane": {"DeltaT": delta_t},
        },
    )
    with open_source(path) as src:
        assert src.metadata["format"] == "ome-tiff"
        assert src.description.startswith("OME-TIFF")
        np.testing.assert_array_equal(read_all(src), data)
        assert src.pixel_size_um == pytest.approx(0.65, rel=1e-12)
        assert src.time_source == "OME Plane DeltaT"
        np.testing.assert_array_equal(src.time_s, delta_t)


def test_ome_tiff_channels_units_and_time_increment(tmp_path):
    data = np.arange(3 * 2 * H * W, dtype=np.uint16).reshape(3, 2, H, W)
    path = tmp_path / "tc.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TCYX",
            "PhysicalSizeX": 250,
            "PhysicalSizeXUnit": "nm",
            "Plane": {"DeltaT": [1, 1, 2, 2, 3.5, 3.5], "DeltaTUnit": ["min"] * 6},
        },
    )
    with open_source(path, channel=1) as src:
        np.testing.assert_array_equal(read_all(src), data[:, 1])
        assert src.pixel_size_um == pytest.approx(0.25)
        np.testing.assert_array_equal(src.time_s, [0.0, 60.0, 150.0])
        assert src.metadata["grey"] == "channel 1 of 2"
    with pytest.raises(UnsupportedInputError, match=r"2 channels.*--channel N \(0 to 1\)"):
        open_source(path)
    with pytest.raises(UnsupportedInputError, match="--channel 2 does not exist"):
        open_source(path, channel=2)

    tifffile.imwrite(
        tmp_path / "inc.ome.tif",
        data[:, 0],
        ome=True,
        metadata={"axes": "TYX", "TimeIncrement": 500, "TimeIncrementUnit": "ms"},
    )
    with open_source(tmp_path / "inc.ome.tif") as src:
        assert src.time_source == "OME TimeIncrement"
        np.testing.assert_array_equal(src.time_s, [0.0, 0.5, 1.0])


def test_ome_tiff_singleton_axes_are_squeezed(tmp_path):
    data = stack()[:, None, None]  # T Z C Y X with Z = C = 1
    tifffile.imwrite(tmp_path / "s.ome.tif", data, ome=True, metadata={"axes": "TZCYX"})
    with open_source(tmp_path / "s.ome.tif") as src:
        assert src.shape == (T, H, W)
        np.testing.assert_array_equal(read_all(src), data[:, 0, 0])


def test_rgb_tiff_to_grey_or_channel(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with open_source(tmp_path / "rgb.tif") as src:
        assert src.shape == (T, H, W) and src.dtype == np.uint8
        np.testing.assert_array_equal(read_all(src), rgb_expected(rgb))
    with open_source(tmp_path / "rgb.tif", channel=1) as src:
        np.testing.assert_array_equal(read_all(src), rgb[..., 1])


@pytest.mark.parametrize(
    ("axes", "shape", "words"),
    [
        ("ZCYX", (3, 2, H, W), ["(3, 2, 12, 16)", "ZCYX", "--channel"]),
        ("TZYX", (3, 2, H, W), ["(3, 2, 12, 16)", "TZYX", "T=3, Z=2", "export one"]),
    ],
)
def test_tiff_without_single_time_axis_is_an_error(tmp_path, axes, shape, words):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8), imagej=True, metadata={"axes": axes})
    with pytest.raises(UnsupportedInputError) as info:
        open_source(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg


def test_zc_tiff_with_channel_reads_z_as_time(tmp_path):
    data = np.arange(3 * 2 * H * W, dtype=np.uint16).reshape(3, 2, H, W)
    tifffile.imwrite(tmp_path / "zc.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with open_source(tmp_path / "zc.tif", channel=0) as src:
        np.testing.assert_array_equal(read_all(src), data[:, 0])


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        ((72, 72), "INCH", None),  # software default
        ((300, 300), "INCH", None),
        ((1, 1), "NONE", None),
        ((20000, 20000), "CENTIMETER", 0.5),
        ((50800, 50800), "INCH", 0.5),
    ],
)
def test_plain_tiff_resolution_only_when_plausible(tmp_path, resolution, unit, expected):
    tifffile.imwrite(
        tmp_path / "r.tif", stack(np.uint8), resolution=resolution, resolutionunit=unit
    )
    with open_source(tmp_path / "r.tif") as src:
        if expected is None:
            assert src.pixel_size_um is None
        else:
            assert src.pixel_size_um == pytest.approx(expected)


def test_float_tiff_is_refused_with_its_range(tmp_path):
    data = np.full((T, H, W), 0.5, dtype=np.float32)
    data[0, 0, :2] = -1.5, 2.25
    data[1, 0, 0] = 7.0  # not in the first frame
    tifffile.imwrite(tmp_path / "f.tif", data)
    with pytest.raises(
        UnsupportedInputError, match=r"float32 .*first frame ranges -1.5 to 2.25"
    ) as e:
        open_source(tmp_path / "f.tif")
    assert "16-bit" in str(e.value)


def test_appended_tiff_pages_are_one_frame_each_in_order(tmp_path):
    data = stack()
    path = tmp_path / "appended.tif"
    for frame in data:  # tifffile reads this as 5 series of one page each
        tifffile.imwrite(
            path, frame, append=True, resolution=(20000, 20000), resolutionunit="CENTIMETER"
        )
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == T
    with open_source(path) as src:
        assert src.shape == (T, H, W) and src.dtype == np.uint16
        np.testing.assert_array_equal(read_all(src), data)
        np.testing.assert_array_equal(src.read(3, 5), data[3:5])
        assert src.pixel_size_um == pytest.approx(0.5)  # from the first page
        assert src.time_s is None and src.time_source == "none"
        assert src.metadata["series"] == T and src.metadata["series_in_file"] == T
        assert src.metadata["assembly"] == "one frame per series"
        assert src.metadata["source_shape"] == [T, H, W]
        json.dumps(src.metadata)


def test_appended_rgb_series_are_a_stack_and_ome_single_planes_are_not(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    for frame in rgb:
        tifffile.imwrite(tmp_path / "rgb.tif", frame, append=True, photometric="rgb")
    with open_source(tmp_path / "rgb.tif") as src:
        np.testing.assert_array_equal(read_all(src), rgb_expected(rgb))
    data = stack()
    with tifffile.TiffWriter(tmp_path / "planes.ome.tif", ome=True) as tw:
        for frame in data:  # one OME Image per plane: stage positions, not time points
            tw.write(frame, metadata={"axes": "YX", "PhysicalSizeX": 0.65})
    with pytest.raises(UnsupportedInputError, match=rf"holds {T} image series"):
        open_source(tmp_path / "planes.ome.tif")


def test_pages_without_metadata_keep_file_order_when_storage_differs(tmp_path):
    # plain pages, compression alternating: tifffile groups them as two series by layout
    data = stack()
    path = tmp_path / "mixed.tif"
    for i, frame in enumerate(data):
        tifffile.imwrite(
            path, frame, append=True, metadata=None, compression="zlib" if i % 2 else None
        )
    with tifffile.TiffFile(path) as tif:
        assert [s.shape[0] for s in tif.series] == [3, 2]
    with open_source(path) as src:
        np.testing.assert_array_equal(read_all(src), data)
        assert src.metadata["assembly"] == "one frame per page, in file order"


def test_appended_tiff_reads_only_the_frames_asked_for(tmp_path, monkeypatch):
    data = stack(n=6)
    for frame in data:
        tifffile.imwrite(tmp_path / "a.tif", frame, append=True)
    src = open_source(tmp_path / "a.tif")
    calls: list[int] = []
    real = tifffile.TiffPageSeries.asarray
    monkeypatch.setattr(
        tifffile.TiffPageSeries,
        "asarray",
        lambda s, *a, **k: calls.append(s.keyframe.index) or real(s),
    )
    np.testing.assert_array_equal(src.read(2, 4), data[2:4])
    assert calls == [2, 3]
    src.close()


@pytest.mark.parametrize(
    ("second", "words"),
    [
        (np.zeros((2, H + 1, W), np.uint16), ["(5, 12, 16)", "(2, 13, 16)"]),  # another stack
        (np.zeros((H, W), np.uint8), ["(5, 12, 16)", "(12, 16) YX uint8"]),  # another dtype
    ],
)
def test_tiff_series_that_differ_are_an_error(tmp_path, second, words):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(stack(), photometric="minisblack")
        tw.write(second, photometric="minisblack")
    with pytest.raises(UnsupportedInputError) as info:
        open_source(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for w in ["holds 2 image series", "series 0:", "series 1:", "own TIFF stack", *words]:
        assert w in msg


def test_single_frame_series_of_different_shapes_are_an_error(tmp_path):
    path = tmp_path / "sizes.tif"
    for shape in [(H, W), (H, W), (H, W + 2)]:
        tifffile.imwrite(path, np.zeros(shape, np.uint8), append=True)
    with pytest.raises(
        UnsupportedInputError,
        match=r"holds 3 image series \(series 0-1: \(12, 16\) YX uint8; series 2: \(12, 18\)",
    ):
        open_source(path)


def test_ome_tiff_with_two_images_is_an_error(tmp_path):
    # e.g. two stage positions: importing only the first would drop half the data
    with tifffile.TiffWriter(tmp_path / "pos.ome.tif", ome=True) as tw:
        tw.write(stack(), metadata={"axes": "TYX"})
        tw.write(stack(seed=1), metadata={"axes": "TYX"})
    with pytest.raises(UnsupportedInputError, match=r"OME-TIFF .* holds 2 image series"):
        open_source(tmp_path / "pos.ome.tif")


def test_reduced_resolution_preview_series_is_skipped_and_logged(tmp_path, caplog):
    data = stack()
    path = tmp_path / "thumb.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(data, photometric="minisblack")
        tw.write(data[0, ::4, ::4], subfiletype=1, photometric="minisblack")  # reduced image
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 2
    with caplog.at_level(logging.INFO, logger="crystalseg.io.tiff"), open_source(path) as src:
        np.testing.assert_array_equal(read_all(src), data)
        assert src.metadata["series"] == 1 and src.metadata["skipped_series"] == [1]
    assert "skipping 1 preview series (series 1: (3, 4) YX uint16)" in caplog.text


def test_appended_tiff_imports_every_frame(tmp_path):
    from crystalseg.importing import import_run
    from crystalseg.store import describe_run, open_run

    data = stack()
    for frame in data:
        tifffile.imwrite(tmp_path / "appended.tif", frame, append=True)
    import_run(tmp_path / "appended.tif", tmp_path / "run.zarr", interval_s=1.0)
    assert describe_run(tmp_path / "run.zarr")["frames"] == T
    ds = open_run(tmp_path / "run.zarr")
    np.testing.assert_array_equal(ds["image"].values, data)


# ---------------------------------------------------------------------------
# Folders and globs


def write_frames(folder: Path, frames: np.ndarray, names: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    for name, frame in zip(names, frames, strict=True):
        iio.imwrite(folder / name, frame)


def test_folder_natural_sort_masks_skipped_and_mtimes(tmp_path, caplog):
    data = stack(np.uint8, n=12)
    names = [f"frame{i}.png" for i in range(12)]  # frame2 must come before frame10
    order = np.random.default_rng(1).permutation(12)
    write_frames(tmp_path / "run", data[order], [names[i] for i in order])
    iio.imwrite(tmp_path / "run" / "frame3_mask.png", np.zeros((H, W), np.uint8))
    iio.imwrite(tmp_path / "run" / "frame4_cp_masks.png", np.zeros((H, W), np.uint8))  # Cellpose
    (tmp_path / "run" / "notes.txt").write_text("not a frame")
    (tmp_path / "run" / "._frame1.png").write_bytes(b"macOS resource fork, not an image")
    for i, name in enumerate(names):
        os.utime(tmp_path / "run" / name, (1000.0 + 2.5 * i, 1000.0 + 2.5 * i))
    with (
        caplog.at_level(logging.INFO, logger="crystalseg.io"),
        open_source(tmp_path / "run") as src,
    ):
        assert isinstance(src, FolderSource)
        assert src.shape == (12, H, W) and src.dtype == np.uint8
        np.testing.assert_array_equal(read_all(src), data)
        assert src.time_source == "file modification time"
        np.testing.assert_allclose(src.time_s, np.arange(12) * 2.5, atol=1e-6)
        assert src.metadata["file_count"] == 12
        assert src.metadata["files"] == [str(tmp_path / "run" / n) for n in names]
    assert "frame3_mask.png" in caplog.text and "._frame1.png" in caplog.text
    assert "skipped 2 mask file(s)" in caplog.text


def test_folder_times_unknown_when_mtimes_do_not_increase(tmp_path):
    write_frames(tmp_path, stack(np.uint8, n=3), ["a1.png", "a2.png", "a3.png"])
    for name in ("a1.png", "a2.png", "a3.png"):
        os.utime(tmp_path / name, (5000.0, 5000.0))
    with open_source(tmp_path) as src:
        assert src.time_s is None and src.time_source == "none"


def test_folder_file_list_is_capped(tmp_path):
    write_frames(tmp_path, stack(np.uint8, n=25), [f"f{i:03d}.bmp" for i in range(25)])
    with open_source(tmp_path) as src:
        assert src.metadata["file_count"] == 25
        assert src.metadata["files"] == [str(tmp_path / "f000.bmp"), str(tmp_path / "f024.bmp")]
        json.dumps(src.metadata)


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".bmp", np.uint8), (".tif", np.uint16)],
)
def test_folder_formats_round_trip(tmp_path, suffix, dtype):
    data = stack(dtype, n=3)
    write_frames(tmp_path, data, [f"img_{i}{suffix.upper()}" for i in range(3)])
    with open_source(tmp_path) as src:
        assert src.dtype == dtype
        np.testing.assert_array_equal(read_all(src), data)


def test_folder_jpeg_shape_only(tmp_path):
    write_frames(tmp_path, stack(np.uint8, n=2), ["a.jpg", "b.jpeg"])
    with open_source(tmp_path) as src:
        assert src.shape == (2, H, W) and src.dtype == np.uint8
        assert read_all(src).shape == (2, H, W)


@pytest.mark.parametrize("quality", [20, 40, 75, 95])
def test_jpeg_quality_is_estimated_and_heavy_compression_warned(tmp_path, quality):
    """The quality a JPEG was saved at comes back from its quantization table (within
    1); frames below quality 50 get a warning at opening, the others none."""
    from PIL import Image

    from crystalseg.errors import CrystalsegWarning
    from crystalseg.io.folder import JPEG_WARN_QUALITY, jpeg_quality

    folder = tmp_path / "jpg"
    folder.mkdir()
    for i, frame in enumerate(stack(np.uint8, n=2)):
        Image.fromarray(frame).save(folder / f"f{i}.jpg", quality=quality)
    assert abs(jpeg_quality(folder / "f0.jpg") - quality) <= 1
    if quality < JPEG_WARN_QUALITY:
        with pytest.warns(CrystalsegWarning, match=f"quality about {quality}.*TIFF or PNG"):
            src = open_source(folder)
    else:
        src = open_source(folder)  # warnings are errors in the tests
    with src:
        assert src.metadata["jpeg_quality"] == jpeg_quality(folder / "f0.jpg")
    Image.fromarray(stack(np.uint8, n=1)[0]).save(tmp_path / "p.png")
    assert jpeg_quality(tmp_path / "p.png") is None


def test_modification_times_of_a_copy_are_warned_and_a_fast_camera_is_not(tmp_path):
    """Irregular sub-second modification times (files copied in one burst) get a warning
    naming --interval; a regular fast series (10 frames/s) does not."""
    from crystalseg.errors import CrystalsegWarning

    names = [f"f{i}.png" for i in range(4)]
    write_frames(tmp_path / "copy", stack(np.uint8, n=4), names)
    write_frames(tmp_path / "fast", stack(np.uint8, n=4), names)
    copies, fasts = [0.0, 0.02, 0.4, 0.45], [0.0, 0.1, 0.2, 0.3]
    for i, (copied, fast) in enumerate(zip(copies, fasts, strict=True)):
        os.utime(tmp_path / "copy" / names[i], (1000.0 + copied,) * 2)
        os.utime(tmp_path / "fast" / names[i], (1000.0 + fast,) * 2)
    from crystalseg.importing import import_run

    with open_source(tmp_path / "copy") as src:  # said when the times are used
        assert "look like the time the files were copied" in src.time_doubt
    with pytest.warns(
        CrystalsegWarning, match=r"look like the time the files were copied.*--interval"
    ):
        import_run(tmp_path / "copy", tmp_path / "copy.zarr")
    import_run(tmp_path / "copy", tmp_path / "given.zarr", interval_s=5.0)  # no warning
    with open_source(tmp_path / "fast") as src:  # warnings are errors in the tests
        assert src.time_doubt is None
        np.testing.assert_allclose(src.time_s, [0.0, 0.1, 0.2, 0.3], atol=1e-6)


def test_folder_rgb_palette_and_bilevel(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(2, H, W, 3), dtype=np.uint8)
    write_frames(tmp_path / "rgb", rgb, ["c1.png", "c2.png"])
    with open_source(tmp_path / "rgb") as src:
        np.testing.assert_array_equal(read_all(src), rgb_expected(rgb))
        assert src.metadata["grey"].startswith("RGB to grey")
    with open_source(tmp_path / "rgb", channel=2) as src:
        np.testing.assert_array_equal(read_all(src), rgb[..., 2])

    grey = stack(np.uint8, n=1)[0]
    (tmp_path / "p").mkdir()
    Image.fromarray(grey).convert("P").save(tmp_path / "p" / "p.png")
    with open_source(tmp_path / "p") as src:  # a grey palette keeps its values
        np.testing.assert_array_equal(read_all(src)[0], grey)

    (tmp_path / "b").mkdir()
    Image.fromarray(grey > 127).save(tmp_path / "b" / "b.png")
    with open_source(tmp_path / "b" / "b.png") as src:
        assert src.dtype == np.uint8
        np.testing.assert_array_equal(read_all(src)[0], np.where(grey > 127, 255, 0))


def _png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG, written by hand (PIL cannot write one)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def test_folder_16bit_colour_png_is_refused(tmp_path):
    _png_rgb16(tmp_path / "c.png", np.full((H, W, 3), 40000, np.uint16))
    with pytest.raises(UnsupportedInputError, match="16-bit colour PNG"):
        open_source(tmp_path)


def test_folder_of_imagej_tiffs_takes_calibration_from_first_file(tmp_path):
    for i, frame in enumerate(stack(np.uint16, n=2)):
        tifffile.imwrite(
            tmp_path / f"t{i}.tif", frame, imagej=True, resolution=(5.0, 5.0),
            metadata={"unit": "um"},
        )  # fmt: skip
    with open_source(tmp_path) as src:
        assert src.pixel_size_um == pytest.approx(0.2)


def test_glob_pattern(tmp_path):
    data = stack(np.uint16, n=4)
    write_frames(tmp_path, data, ["s_1.png", "s_2.png", "s_10.png", "other.png"])
    with open_source(str(tmp_path / "s_*.png")) as src:
        assert src.metadata["format"] == "image-glob"
        np.testing.assert_array_equal(read_all(src), data[:3])
    with pytest.raises(InputNotFoundError, match="matches nothing"):
        open_source(str(tmp_path / "nothing_*.png"))


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedInputError, match="holds no PNG, BMP, TIFF or JPEG frames"):
        open_source(tmp_path / "empty")

    write_frames(tmp_path / "masks", stack(np.uint8, n=1), ["0_mask.png"])
    with pytest.raises(UnsupportedInputError, match="only mask"):
        open_source(tmp_path / "masks")

    write_frames(tmp_path / "bad", stack(np.uint8, n=2), ["f1.png", "f3.png"])
    (tmp_path / "bad" / "f2.png").write_bytes(b"this is not a png")
    with pytest.raises(UnsupportedInputError, match=r"f2\.png' is not a PNG, BMP, TIFF or JPEG"):
        open_source(tmp_path / "bad")

    write_frames(tmp_path / "size", stack(np.uint8, n=2), ["f1.png", "f2.png"])
    iio.imwrite(tmp_path / "size" / "f3.png", np.zeros((H, W + 1), np.uint8))
    iio.imwrite(tmp_path / "size" / "f4.png", np.zeros((H + 2, W), np.uint8))
    with pytest.raises(FrameMismatchError) as info:
        open_source(tmp_path / "size")
    msg = str(info.value)
    assert "f3.png" in msg and f"{W + 1}x{H}" in msg and f"{W}x{H}" in msg and "f4" not in msg

    write_frames(tmp_path / "mode", stack(np.uint8, n=1), ["f1.png"])
    iio.imwrite(tmp_path / "mode" / "f2.png", stack(np.uint16, n=1)[0])
    with pytest.raises(FrameMismatchError, match=r"f2\.png.*mode I;16.*mode L"):
        open_source(tmp_path / "mode")

    (tmp_path / "multi").mkdir()
    tifffile.imwrite(tmp_path / "multi" / "a.tif", stack(np.uint8, n=3), photometric="minisblack")
    with pytest.raises(UnsupportedInputError, match="holds 3 frames"):
        FolderSource.from_folder(tmp_path / "multi")


def test_folder_reads_only_the_files_asked_for(tmp_path, monkeypatch):
    write_frames(tmp_path, stack(np.uint8, n=6), [f"f{i}.png" for i in range(6)])
    calls: list[str] = []
    real = folder_mod._decode
    monkeypatch.setattr(folder_mod, "_decode", lambda p, h: calls.append(p.name) or real(p, h))
    src = open_source(tmp_path)
    assert calls == []  # opening reads headers only
    src.read(2, 4)
    assert calls == ["f2.png", "f3.png"]


# ---------------------------------------------------------------------------
# zarr and OME-Zarr


def test_plain_zarr_v3_array(tmp_path):
    data = stack()
    arr = zarr.create_array(
        tmp_path / "a.zarr", shape=data.shape, chunks=(2, H, W), dtype=data.dtype,
        dimension_names=["time", "y", "x"],
    )  # fmt: skip
    arr[:] = data
    with open_source(tmp_path / "a.zarr") as src:
        assert isinstance(src, ZarrSource)
        assert src.metadata["zarr_format"] == 3 and src.metadata["time_axis"] == "T"
        np.testing.assert_array_equal(read_all(src), data)
        assert src.pixel_size_um is None and src.time_s is None


def test_zarr_named_dimensions_in_any_order(tmp_path):
    data = stack()
    arr = zarr.create_array(
        tmp_path / "yxt.zarr", shape=(H, W, T), dtype=data.dtype, dimension_names=["y", "x", "t"]
    )
    arr[:] = np.moveaxis(data, 0, -1)
    with open_source(tmp_path / "yxt.zarr") as src:
        assert src.shape == (T, H, W)
        np.testing.assert_array_equal(read_all(src), data)
        np.testing.assert_array_equal(src.read(1, 4), data[1:4])


def test_zarr_group_with_one_array_and_with_two(tmp_path):
    data = stack(np.uint8)
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("frames", data=data, chunks=(1, H, W))
    group.create_array("t", data=np.arange(T, dtype=float))  # 1-D: not an image
    group.attrs["pixel_size_um"] = 0.8  # a crystalseg run store's calibration
    with open_source(tmp_path / "g.zarr") as src:
        assert src.metadata["array"] == "frames"
        assert src.pixel_size_um == 0.8
        np.testing.assert_array_equal(read_all(src), data)
    group.create_array("other", data=data)
    with pytest.raises(UnsupportedInputError, match=r"2 image arrays \(frames, other\)") as e:
        open_source(tmp_path / "g.zarr")
    assert "g.zarr/frames" in str(e.value)
    with open_source(tmp_path / "g.zarr" / "other") as src:  # the fix the message names
        np.testing.assert_array_equal(read_all(src), data)


def _ome_multiscales(version: str) -> dict:
    def scale(*values: float) -> dict:
        return {"type": "scale", "scale": list(values)}

    return {
        "version": version,
        "axes": [
            {"name": "t", "type": "time", "unit": "minute"},
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"},
        ],
        "datasets": [
            {"path": "0", "coordinateTransformations": [scale(0.5, 1, 325, 325)]},
            {"path": "1", "coordinateTransformations": [scale(0.5, 1, 650, 650)]},
        ],
        "coordinateTransformations": [scale(2.0, 1, 2.0, 2.0)],
    }  # fmt: skip


@pytest.mark.parametrize(("version", "zarr_format"), [("0.4", 2), ("0.5", 3)])
def test_ome_zarr(tmp_path, version, zarr_format):
    data = np.arange(T * 2 * H * W, dtype=np.uint16).reshape(T, 2, H, W)
    path = tmp_path / "img.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.create_array("0", data=data, chunks=(1, 1, H, W))
    group.create_array("1", data=data[:, :, ::2, ::2])
    ms = _ome_multiscales(version)
    if version == "0.4":
        group.attrs["multiscales"] = [ms]
        assert (path / ".zattrs").is_file()
    else:
        del ms["version"]
        group.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    with open_source(path, channel=1) as src:
        assert src.metadata["format"] == "ome-zarr" and src.metadata["ome_version"] == version
        assert src.shape == (T, H, W)
        np.testing.assert_array_equal(read_all(src), data[:, 1])
        assert src.pixel_size_um == pytest.approx(0.65)  # 325 nm x 2
        assert src.time_source == "zarr axis scale"
        np.testing.assert_allclose(src.time_s, np.arange(T) * 60.0)  # 0.5 min x 2
    with pytest.raises(UnsupportedInputError, match="2 channels"):
        open_source(path)


# ---------------------------------------------------------------------------
# NumPy


def test_npy_stack_is_memory_mapped_and_copied_out(tmp_path):
    data = stack(np.uint8)
    np.save(tmp_path / "s.npy", data)
    with open_source(tmp_path / "s.npy") as src:
        assert isinstance(src, NpySource)
        assert isinstance(src._array, np.memmap)
        out = src.read(1, 3)
        assert not isinstance(out, np.memmap) and out.flags.writeable and out.flags.owndata
        np.testing.assert_array_equal(out, data[1:3])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.array([[[0, 300], [65535, 7]]], np.int32), np.array([[[0, 300], [65535, 7]]], "u2")),
        (np.array([[[0, 3], [200, 7]]], np.int16), np.array([[[0, 3], [200, 7]]], np.uint16)),
        (np.array([[[True, False]]]), np.array([[[255, 0]]], np.uint8)),
    ],
)  # fmt: skip
def test_npy_dtypes_that_fit(tmp_path, data, expected):
    np.save(tmp_path / "d.npy", data)
    with open_source(tmp_path / "d.npy") as src:
        assert src.dtype == expected.dtype
        out = read_all(src)
        assert out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)


def test_npy_dtypes_that_do_not_fit(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[[0, 70000]]], np.int32))
    with pytest.raises(UnsupportedInputError, match=r"frame 0 holds int32 values 0 to 70000"):
        open_source(tmp_path / "big.npy")
    late = np.zeros((3, 2, 2), np.int16)
    late[2, 0, 0] = -5  # only the third frame is negative: caught when it is read
    np.save(tmp_path / "late.npy", late)
    with open_source(tmp_path / "late.npy") as src:
        np.testing.assert_array_equal(src.read(0, 2), 0)
        with pytest.raises(UnsupportedInputError, match="frame 2 holds int16 values -5 to 0"):
            src.read(1, 3)
    np.save(tmp_path / "f.npy", np.full((2, 4, 4), 0.5))
    with pytest.raises(UnsupportedInputError, match=r"float64 frames .*0\.5 to 0\.5"):
        open_source(tmp_path / "f.npy")


def test_npy_layouts(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 65536, size=(T, H, W, 3), dtype=np.uint16)
    np.save(tmp_path / "rgb.npy", rgb)
    with open_source(tmp_path / "rgb.npy") as src:
        np.testing.assert_array_equal(read_all(src), rgb_expected(rgb))
    np.save(tmp_path / "one.npy", rgb[0, ..., 0])
    with open_source(tmp_path / "one.npy") as src:
        assert src.shape == (1, H, W)
    np.save(tmp_path / "four.npy", np.zeros((2, 3, H, W), np.uint8))
    with pytest.raises(UnsupportedInputError, match=r"shape \(2, 3, 12, 16\).*no single time axis"):
        open_source(tmp_path / "four.npy")
    with pytest.raises(UnsupportedInputError, match=r"single channel.*--channel 1"):
        open_source(tmp_path / "one.npy", channel=1)


# ---------------------------------------------------------------------------
# Dispatch, errors and streaming, across all readers


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(InputNotFoundError, match=r"nope\.tif' does not exist") as e:
        open_source(tmp_path / "nope.tif")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CrystalsegError)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        UnsupportedInputError, match=r"notes\.txt' is not a format crystalseg reads"
    ):
        open_source(tmp_path / "notes.txt")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(
        UnsupportedInputError, match=r"broken\.tif' (is not a readable TIFF|holds no image series)"
    ):
        open_source(tmp_path / "broken.tif")
    with pytest.raises(ConfigError, match="channel"):
        open_source(tmp_path / "notes.txt", channel="1")  # type: ignore[arg-type]


def _make_all(tmp_path: Path) -> dict[str, tuple[Path | str, np.ndarray]]:
    data = stack(np.uint16, n=6)
    tifffile.imwrite(tmp_path / "s.ome.tif", data, ome=True, metadata={"axes": "TYX"})
    write_frames(tmp_path / "folder", data, [f"f{i}.png" for i in range(6)])
    zarr.create_array(tmp_path / "z.zarr", data=data, chunks=(4, H, W))
    np.save(tmp_path / "s.npy", data)
    return {
        "tiff": (tmp_path / "s.ome.tif", data),
        "folder": (tmp_path / "folder", data),
        "glob": (str(tmp_path / "folder" / "f*.png"), data),
        "zarr": (tmp_path / "z.zarr", data),
        "npy": (tmp_path / "s.npy", data),
    }


def test_subrange_reads_equal_slices_of_the_full_read(tmp_path):
    for kind, (path, data) in _make_all(tmp_path).items():
        with open_source(path) as src:
            full = read_all(src)
            np.testing.assert_array_equal(full, data, err_msg=kind)
            n = src.shape[0]
            for start in range(n + 1):
                for stop in range(start, n + 1):
                    part = src.read(start, stop)
                    assert part.shape == (stop - start, H, W) and part.dtype == src.dtype
                    np.testing.assert_array_equal(part, full[start:stop], err_msg=kind)
            with pytest.raises(ValueError, match="outside"):
                src.read(2, n + 1)
            json.dumps(src.metadata)
            assert src.time_source in {"none", "file modification time"}


class Spy:
    """An array wrapper that records how it is indexed."""

    def __init__(self, inner):
        self.inner, self.shape, self.dtype, self.keys = inner, inner.shape, inner.dtype, []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.inner[key]


def test_array_readers_index_only_the_frames_asked_for(tmp_path):
    for kind, (path, _) in _make_all(tmp_path).items():
        if kind in ("folder", "glob"):
            continue
        src = open_source(path)
        spy = Spy(src._array)
        src._array = spy
        src.read(3, 5)
        assert spy.keys == [(slice(3, 5), slice(None), slice(None))], kind
        src.close()


def test_series_picks_one_stage_position_of_an_ome_tiff(tmp_path):
    """--series N imports position N alone, with its own pixel size and times; a bad
    index names the range; --series on a non-TIFF is refused."""
    from crystalseg.importing import import_run
    from crystalseg.store import open_run

    path = tmp_path / "pos.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for k in range(3):
            tw.write(
                stack(seed=k),
                metadata={"axes": "TYX", "PhysicalSizeX": 0.5 + k, "TimeIncrement": 2.0 + k},
            )
    for k in range(3):
        with open_source(path, series=k) as src:
            np.testing.assert_array_equal(read_all(src), stack(seed=k))
            assert src.pixel_size_um == pytest.approx(0.5 + k)
            np.testing.assert_allclose(src.time_s, np.arange(T) * (2.0 + k))
            assert src.metadata["assembly"] == f"series {k}"
    with pytest.raises(UnsupportedInputError, match=r"has no series 3.*--series 0 to 2"):
        open_source(path, series=3)
    with pytest.raises(UnsupportedInputError, match=r"--series N"):
        open_source(path)  # several positions: which one?
    import_run(path, tmp_path / "p1.zarr", series=1)
    ds = open_run(tmp_path / "p1.zarr")
    np.testing.assert_array_equal(ds["image"].values, stack(seed=1))
    assert ds.attrs["pixel_size_um"] == pytest.approx(1.5)
    np.save(tmp_path / "s.npy", stack())
    with pytest.raises(ConfigError, match="--series"):
        open_source(tmp_path / "s.npy", series=0)
