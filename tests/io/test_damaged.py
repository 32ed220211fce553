"""Damaged, cut-short, empty, oversized and ambiguous recordings: refused (or read as said)
while opening, before any run store exists, with a CrystalsegError and never another type."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crystalseg.errors import CrystalsegError, CrystalsegWarning, UnsupportedInputError
from crystalseg.importing import import_run
from crystalseg.io import open_source
from crystalseg.io.base import MAX_FRAME_PIXELS
from crystalseg.store import open_run

# ---------------------------------------------------------------------------- cut short


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p, a: tifffile.imwrite(p, a), id="contiguous"),
        pytest.param(lambda p, a: tifffile.imwrite(p, a, compression="zlib"), id="compressed"),
        pytest.param(lambda p, a: tifffile.imwrite(p, a, imagej=True), id="imagej"),
    ],
)
def test_a_tiff_cut_short_is_refused_before_a_store_is_made(tmp_path: Path, write) -> None:
    """Data-loss case 6: each kind opened as fewer frames (or failed after the store was
    made, leaving an import that no re-run could finish)."""
    frames = np.random.default_rng(0).integers(0, 255, (20, 64, 64), dtype=np.uint8)
    write(tmp_path / "whole.tif", frames)
    cut = _cut(tmp_path / "whole.tif", 0.6)
    with pytest.raises(UnsupportedInputError, match=r"is damaged or cut short .*would drop"):
        open_source(cut)
    with pytest.raises(UnsupportedInputError, match=r"cut_whole.tif' is damaged or cut short"):
        import_run(cut, tmp_path / "r.zarr")
    assert not (tmp_path / "r.zarr").exists()
    with open_source(tmp_path / "whole.tif") as src:  # the whole file still opens
        assert src.shape == (20, 64, 64)


def test_an_npy_of_zero_frames_is_refused_before_a_store_is_made(tmp_path: Path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 64, 64), np.uint8))
    with pytest.raises(UnsupportedInputError, match=r"empty.npy' holds no pixels .*\(0, 64, 64\)"):
        import_run(tmp_path / "empty.npy", tmp_path / "r.zarr", interval_s=1.0)
    assert not (tmp_path / "r.zarr").exists()


def test_a_zarr_of_zero_frames_is_refused(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "src.zarr", shape=(0, 8, 8), dtype="uint8", chunks=(1, 8, 8))
    with pytest.raises(UnsupportedInputError, match=r"holds no pixels"):
        open_source(tmp_path / "src.zarr")


def test_a_60000_square_tiff_header_is_refused_before_allocating(tmp_path: Path) -> None:
    """tifffile writes the header of an empty 3.6 GB image as a sparse file of a few KB."""
    tifffile.imwrite(tmp_path / "huge.tif", shape=(60000, 60000), dtype="uint8")
    assert 60000 * 60000 > MAX_FRAME_PIXELS
    with pytest.raises(UnsupportedInputError, match=r"60000 x 60000 pixels \(3600 megapixels\)"):
        open_source(tmp_path / "huge.tif")


def test_the_largest_frame_allowed_opens(tmp_path: Path) -> None:
    side = 16384  # MAX_FRAME_PIXELS exactly, again as a sparse header
    tifffile.imwrite(tmp_path / "big.tif", shape=(side, side), dtype="uint8")
    with open_source(tmp_path / "big.tif") as src:
        assert src.shape == (1, side, side) and side * side == MAX_FRAME_PIXELS


# ---------------------------------------------------------------------------- planar RGB


@pytest.mark.parametrize("n", [3, 4])
def test_a_stack_of_3_or_4_frames_written_by_tifffile_is_read_as_frames(
    tmp_path: Path, n: int
) -> None:
    """Data-loss case 7: tifffile stores (3|4, y, x) as one planar RGB(A) image; reading it
    as colour made one grey frame of the three or four."""
    frames = np.stack([np.full((16, 24), 10 * (i + 1), np.uint8) for i in range(n)])
    # what tifffile.imwrite(path, frames) writes today (a DeprecationWarning says that a
    # future tifffile will write grey pages by default)
    tifffile.imwrite(tmp_path / "s.tif", frames, photometric="rgb", planarconfig="separate")
    page = tifffile.TiffFile(tmp_path / "s.tif").pages.first
    assert page.photometric == tifffile.PHOTOMETRIC.RGB  # what tifffile chose by shape
    how = rf"planar RGB\(A\) TIFF \(tifffile shape \({n}, 16, 24\), photometric RGB, "
    with pytest.warns(CrystalsegWarning, match=how + rf".*{n} planes read as {n} grey frames"):
        src = open_source(tmp_path / "s.tif")
    with src:
        assert src.shape == (n, 16, 24)
        np.testing.assert_array_equal(src.read(0, n), frames)
        assert f"{n} planes read as {n} grey frames" in src.metadata["planar_rgb"]
    with pytest.warns(CrystalsegWarning, match="read as frames|grey frames"):
        import_run(tmp_path / "s.tif", tmp_path / "r.zarr", interval_s=2.0)
    np.testing.assert_array_equal(open_run(tmp_path / "r.zarr")["image"].values, frames)


def test_planar_rgb_is_read_as_colour_when_asked_or_not_written_by_tifffile(
    tmp_path: Path,
) -> None:
    rgb = np.zeros((3, 8, 8), np.uint8)
    rgb[0], rgb[1], rgb[2] = 200, 100, 0
    grey = round(0.2125 * 200 + 0.7154 * 100)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", planarconfig="separate")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a choice given says nothing
        with open_source(tmp_path / "c.tif", planar_rgb="rgb") as src:
            assert src.shape == (1, 8, 8) and int(src.read(0, 1)[0, 0, 0]) == grey
        with open_source(tmp_path / "c.tif", planar_rgb="frames") as src:
            assert src.shape == (3, 8, 8)
    other = tmp_path / "camera.tif"  # planar RGB from other software: colour, with a note
    tifffile.imwrite(other, rgb, photometric="rgb", planarconfig="separate", software="Camera",
                     description="camera frame", metadata=None)  # fmt: skip
    with pytest.warns(CrystalsegWarning, match=r"read as one RGB image turned grey.*frames"):
        src = open_source(other)
    with src:
        assert src.shape == (1, 8, 8) and int(src.read(0, 1)[0, 0, 0]) == grey


def test_a_five_page_stack_and_a_true_rgb_tiff_are_read_without_a_note(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((5, 8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8))  # contiguous RGB
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_source(tmp_path / "five.tif") as src:
            assert src.shape == (5, 8, 8)
        with open_source(tmp_path / "rgb.tif") as src:
            assert src.shape == (1, 8, 8)


# ---------------------------------------------------------------------------- garbage headers
# Opening a damaged or hostile file gives a CrystalsegError (or opens); never another type.

#: 60 examples a test by default (~2 s in all); FUZZ_EXAMPLES=800 for a longer hunt
_FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _tiff_bytes() -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, np.arange(5 * 16 * 16, dtype=np.uint8).reshape(5, 16, 16))
    return out.getvalue()


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(out, format="PNG")
    return out.getvalue()


def _npy_bytes() -> bytes:
    out = io.BytesIO()
    np.save(out, np.zeros((2, 8, 8), np.uint8))
    return out.getvalue()


_VALID = {"tif": _tiff_bytes(), "png": _png_bytes(), "npy": _npy_bytes()}


def _opens_or_refuses(path: Path) -> None:
    try:
        with open_source(path) as src:
            src.read(0, 1)
    except CrystalsegError:
        pass


@pytest.mark.parametrize("kind", ["tif", "png", "npy"])
@_FUZZ
@given(data=st.data())
def test_garbage_in_a_header_gives_a_crystalseg_error(tmp_path: Path, kind: str, data) -> None:
    raw = bytearray(_VALID[kind])
    head = min(len(raw), 200)  # the header and (TIFF) the first IFD
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, head - 1), st.integers(0, 255)), min_size=1, max_size=8)
    )
    for at, value in edits:
        raw[at] = value
    cut = data.draw(st.integers(8, len(raw)))
    path = tmp_path / f"f.{kind}"
    path.write_bytes(bytes(raw[:cut]))
    _opens_or_refuses(path)


@_FUZZ
@given(tail=st.binary(max_size=300))
def test_random_bytes_after_a_magic_number_give_a_crystalseg_error(
    tmp_path: Path, tail: bytes
) -> None:
    for name, magic in (("a.tif", b"II*\x00"), ("b.tif", b"MM\x00+"), ("c.npy", b"\x93NUMPY"),
                        ("d.png", b"\x89PNG\r\n\x1a\n")):  # fmt: skip
        (tmp_path / name).write_bytes(magic + tail)
        _opens_or_refuses(tmp_path / name)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@_FUZZ
@given(field=st.sampled_from(["shape", "data_type", "chunk_grid", "codecs", "fill_value",
                              "dimension_names", "attributes", "zarr_format", "node_type"]),
       value=_JSON)  # fmt: skip
def test_garbage_in_zarr_metadata_gives_a_crystalseg_error(
    tmp_path: Path, field: str, value: object
) -> None:
    path = tmp_path / "src.zarr"
    if not path.exists():
        zarr.create_array(path, shape=(2, 8, 8), dtype="uint8", chunks=(1, 8, 8))[:] = 7
    meta_path = path / "zarr.json"
    valid = meta_path.read_text() if not (tmp_path / "valid.json").exists() else None
    if valid is not None:
        (tmp_path / "valid.json").write_text(valid)
    meta = json.loads((tmp_path / "valid.json").read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta, allow_nan=True))
    _opens_or_refuses(path)
