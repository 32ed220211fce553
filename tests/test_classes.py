"""Class codes: boundary class lookup and class masks derived from instance labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crystalseg.classes import boundary_class, boundary_kind, class_mask_from_labels
from crystalseg.errors import ConfigError

CODES3 = ("background", "crystal", "boundary")


def test_touching_squares_are_cut_apart_by_two_boundary_pixels() -> None:
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # touching along a vertical line
    mask = class_mask_from_labels(labels, CODES3)
    assert mask[5, 9] == 2 and mask[5, 10] == 2  # both sides of the contact
    assert mask[5, 8] == 1 and mask[5, 11] == 1
    assert (mask[labels == 0] == 0).all()
    # a one-pixel ring around each 8x8 square: 28 boundary pixels each
    assert np.count_nonzero(mask == 2) == 2 * 28
    interior = mask == 1
    from scipy import ndimage as ndi

    assert ndi.label(interior)[1] == 2  # the interiors are separate components


def test_contact_class_marks_only_where_crystals_touch() -> None:
    labels = np.zeros((12, 28), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # touches 1 along a vertical line
    labels[3:6, 20:26] = 3  # alone
    codes = ("background", "crystal", "contact")
    mask = class_mask_from_labels(labels, codes)
    contact = np.zeros(labels.shape, bool)
    contact[2:10, 9:11] = True  # both sides of the line, nothing else
    np.testing.assert_array_equal(mask == 2, contact)
    np.testing.assert_array_equal(mask > 0, labels > 0)  # the outline stays crystal
    assert boundary_class(codes) == 2 and boundary_kind(codes) == "contact"
    assert boundary_kind(("background", "Touching", "crystal")) == "contact"
    assert boundary_kind(CODES3) == "rim" and boundary_kind(("background", "crystal")) is None
    with pytest.raises(ConfigError, match="boundary classes"):
        boundary_class(("background", "contact", "edge"))


def test_two_class_mask_is_just_foreground() -> None:
    labels = np.array([[0, 3, 3], [0, 5, 0]])
    np.testing.assert_array_equal(
        class_mask_from_labels(labels, ("background", "crystal")), [[0, 1, 1], [0, 1, 0]]
    )


def test_codes_must_hold_one_crystal_class() -> None:
    with pytest.raises(ConfigError, match="exactly one crystal class"):
        class_mask_from_labels(np.zeros((2, 2), int), ("background", "needle", "plate"))
    with pytest.raises(ConfigError, match="boundary classes"):
        boundary_class(("background", "edge", "border"))


@pytest.mark.parametrize("third", ["boundary", "contact"])
def test_training_on_a_synthetic_run_derives_the_boundary_class(tmp_path: Path, third: str) -> None:
    import xarray as xr

    from crystalseg.synth import SynthConfig, synthesize_run
    from crystalseg.train import pairs

    run = synthesize_run(
        tmp_path / "s.zarr", SynthConfig(frames=2, height=96, width=96, scenario="crowded")
    )
    codes = ("background", "crystal", third)
    data = pairs([run], codes=codes, valid_fraction=0.5, crop_size=64)
    _, mask = data.load(data.items[0])
    labels = xr.open_zarr(run, group="truth")["labels"][0].values
    np.testing.assert_array_equal(mask, class_mask_from_labels(labels, codes))
    assert set(np.unique(mask)) == {0, 1, 2}
