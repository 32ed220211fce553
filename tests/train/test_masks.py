"""Mask values become class indices by an explicit rule; stray values are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from crystalseg.errors import ConfigError, MaskValueError, UnsupportedInputError
from crystalseg.train.masks import MaskRule, parse_mask_values, read_mask, to_class_indices

CODES = ["background", "crystal"]


def test_auto_maps_0_255_to_two_classes() -> None:
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = to_class_indices(mask, CODES, name="0_mask.bmp")
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    assert out.dtype == np.uint8


def test_auto_keeps_class_indices() -> None:
    mask = np.array([[0, 1, 2, 2]], dtype=np.uint8)
    out = to_class_indices(mask, ["background", "crystal", "edge"])
    np.testing.assert_array_equal(out, mask)


def test_auto_only_255_is_all_crystal() -> None:
    out = to_class_indices(np.full((2, 2), 255, np.uint8), CODES)
    assert out.sum() == 4


def test_three_values_with_two_codes_is_an_error_naming_file_values_and_fix() -> None:
    mask = np.array([[0, 128, 255]], dtype=np.uint8)
    with pytest.raises(MaskValueError) as err:
        to_class_indices(mask, CODES, name="0_mask.bmp")
    msg = str(err.value)
    assert "'0_mask.bmp'" in msg
    assert "{0, 128, 255}" in msg
    assert "['background', 'crystal']" in msg
    assert "--mask-values" in msg
    assert "\n" not in msg


def test_255_with_three_codes_is_an_error() -> None:
    """Fewer values than classes: the hint maps the values found to the first classes,
    not to a value that cannot occur (256 in an 8-bit mask)."""
    with pytest.raises(MaskValueError, match=r"0\.\.2") as err:
        to_class_indices(np.array([[0, 255]]), ["background", "crystal", "edge"])
    assert "--mask-values 0=background,255=crystal " in str(err.value)
    assert "256" not in str(err.value)


def test_explicit_values_in_code_order() -> None:
    mask = np.array([[10, 20, 30]], dtype=np.uint8)
    out = to_class_indices(mask, ["a", "b", "c"], (30, 10, 20))
    np.testing.assert_array_equal(out, [[1, 2, 0]])


def test_mapping_lets_values_share_a_class() -> None:
    mask = np.array([[0, 128, 255]], dtype=np.uint8)
    out = to_class_indices(mask, CODES, {0: "background", 128: "crystal", 255: 1})
    np.testing.assert_array_equal(out, [[0, 1, 1]])


def test_explicit_rule_rejects_unlisted_value() -> None:
    with pytest.raises(MaskValueError, match=r"\{7\}"):
        to_class_indices(np.array([[0, 255, 7]]), CODES, (0, 255), name="m.png")


@pytest.mark.parametrize(
    "values",
    [(0,), (0, 0), (0, 255, 3)],
)
def test_bad_explicit_values_are_config_errors(values: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        MaskRule.from_user(CODES, values)


def test_mapping_with_unknown_code_is_config_error() -> None:
    with pytest.raises(ConfigError, match="'edge'"):
        MaskRule.from_user(CODES, {0: "background", 255: "edge"})


def test_parse_mask_values() -> None:
    assert parse_mask_values("0,255") == (0, 255)
    assert parse_mask_values("0=background, 255=crystal") == {0: "background", 255: "crystal"}
    assert parse_mask_values("0=0,128=1") == {0: 0, 128: 1}
    for bad in ("", "a,b", "0,1=crystal"):
        with pytest.raises(ConfigError):
            parse_mask_values(bad)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 5),
    data=st.data(),
)
def test_explicit_values_round_trip(n: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n, unique=True))
    classes = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=40)))
    stored = np.asarray(values, dtype=np.uint8)[classes]
    out = to_class_indices(stored, [f"c{i}" for i in range(n)], values)
    np.testing.assert_array_equal(out, classes)


def test_read_palette_png_gives_indices(tmp_path) -> None:
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), idx)


def test_read_grey_saved_as_rgb(tmp_path) -> None:
    grey = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), grey)


def test_colour_mask_is_refused(tmp_path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    with pytest.raises(UnsupportedInputError, match="colour"):
        read_mask(tmp_path / "m.png")


def test_jpeg_mask_is_refused(tmp_path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(UnsupportedInputError, match="lossless"):
        read_mask(tmp_path / "m.jpg")


def test_uint16_tiff_mask(tmp_path) -> None:
    import tifffile

    m = np.array([[0, 1], [1, 0]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", m)
    np.testing.assert_array_equal(to_class_indices(read_mask(tmp_path / "m.tif"), CODES), m)
