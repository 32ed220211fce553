"""Per-particle features: analytical shapes, agreement with scikit-image, invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

from crystalseg.errors import ConfigError, FrameMismatchError, MaskValueError
from crystalseg.measure.features import (
    FEATURE_COLUMNS,
    FEATURE_UNITS,
    REGIONPROPS_EQUIVALENTS,
    feature_units,
    measure_frame,
    miles_lantuejoul_weights,
)

SKIMAGE_PROPS = list(REGIONPROPS_EQUIVALENTS)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)


def _rotated_rectangle(length: float, width: float, angle: float, shape=(120, 120)) -> np.ndarray:
    """Pixels whose centre lies in a length × width rectangle whose long side makes
    ``angle`` with the row axis."""
    yy, xx = _grid(shape)
    cy, cx = shape[0] / 2 + 0.3, shape[1] / 2 - 0.2
    u = (yy - cy) * math.cos(angle) + (xx - cx) * math.sin(angle)
    v = -(yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
    return ((np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)).astype(np.int32)


def _ellipse(a: float, b: float, angle: float, shape=(160, 160)) -> np.ndarray:
    """Filled ellipse, semi-axes a ≥ b, major axis along (row, col) = (cos θ, sin θ)."""
    yy, xx = _grid(shape)
    cy, cx = shape[0] / 2 + 0.25, shape[1] / 2 - 0.4
    u = (yy - cy) * math.cos(angle) + (xx - cx) * math.sin(angle)
    v = -(yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.int32)


def _disc(radius: float, shape=(100, 100)) -> np.ndarray:
    yy, xx = _grid(shape)
    return ((yy - 50.2) ** 2 + (xx - 49.7) ** 2 <= radius**2).astype(np.int32)


def _axis_angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Difference of two axis orientations modulo π (an axis at π/2 is the one at -π/2)."""
    d = (np.asarray(a) - np.asarray(b)) % np.pi
    return np.minimum(d, np.pi - d)


# --------------------------------------------------------------------------- analytical


@pytest.mark.parametrize("radius", [4.0, 9.5, 25.0])
def test_disc_gives_its_diameter(radius: float) -> None:
    row = measure_frame(_disc(radius)).iloc[0]
    assert abs(row["ecd"] - 2 * radius) < 1.0
    assert abs(row["area"] - math.pi * radius**2) < 2 * math.pi * radius * 0.5
    assert abs(row["feret_diameter_max"] - 2 * radius) < 1.5
    assert abs(row["feret_diameter_min"] - 2 * radius) < 1.5
    assert row["aspect_ratio"] < 1 + 1 / radius  # digitisation
    assert abs(row["axis_major_length"] - 2 * radius) < 1.0
    # scikit-image's hull (of the pixel edge midpoints) takes in a thin rim of
    # pixels outside the digital disc: solidity about 1 - 0.5 / radius.
    assert 1 - 0.6 / radius < row["solidity"] <= 1.0
    assert 0.9 < row["circularity"] < 1.25  # small digital discs read above 1


@pytest.mark.parametrize("angle_deg", [0, 10, 30, 45, 60, 90, 137])
@pytest.mark.parametrize(("length", "width"), [(40.0, 10.0), (30.0, 6.0)])
def test_rotated_rectangle_feret(length: float, width: float, angle_deg: float) -> None:
    labels = _rotated_rectangle(length, width, math.radians(angle_deg))
    row = measure_frame(labels).iloc[0]
    assert abs(row["feret_diameter_max"] - math.hypot(length, width)) < 1.5
    assert abs(row["feret_diameter_min"] - width) < 1.5
    assert abs(row["area"] - length * width) < 0.1 * length * width
    assert row["aspect_ratio"] == pytest.approx(
        row["feret_diameter_max"] / row["feret_diameter_min"]
    )


def test_axis_aligned_rectangle_is_exact() -> None:
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:12, 3:28] = 7  # 7 rows × 25 columns
    row = measure_frame(labels).iloc[0]
    assert row["label"] == 7
    assert row["area"] == 175
    assert row["feret_diameter_min"] == pytest.approx(7.0)
    # Farthest edge midpoints: (5, 2.5)-(11, 27.5) → hypot(6, 25).
    assert row["feret_diameter_max"] == pytest.approx(math.hypot(6.0, 25.0))
    assert row["area_convex"] == 175
    assert row["solidity"] == 1.0
    assert row["perimeter"] == pytest.approx(2 * (6 + 24))
    assert row["perimeter_convex"] == pytest.approx(2 * (6 + 24))
    assert row["convexity"] == pytest.approx(1.0)
    assert _axis_angle_diff(row["orientation"], math.pi / 2) < 1e-12  # along the columns
    # Uniform bar: variance (n² - 1) / 12 along each axis.
    assert row["axis_major_length"] == pytest.approx(4 * math.sqrt((25**2 - 1) / 12))
    assert row["axis_minor_length"] == pytest.approx(4 * math.sqrt((7**2 - 1) / 12))
    assert (row["centroid_y"], row["centroid_x"]) == (8.0, 15.0)
    assert (row["bbox_min_y"], row["bbox_min_x"], row["bbox_max_y"], row["bbox_max_x"]) == (
        5,
        3,
        12,
        28,
    )


@pytest.mark.parametrize("angle_deg", [0, 25, 45, 80, 90, 120, 170])
def test_ellipse_axes_and_orientation(angle_deg: float) -> None:
    a, b = 30.0, 12.0
    theta = math.radians(angle_deg)
    row = measure_frame(_ellipse(a, b, theta)).iloc[0]
    # A filled ellipse has variance a²/4 along its major axis: 4·sqrt(a²/4) = 2a.
    assert row["axis_major_length"] == pytest.approx(2 * a, abs=1.0)
    assert row["axis_minor_length"] == pytest.approx(2 * b, abs=1.0)
    assert _axis_angle_diff(row["orientation"], theta) < 0.01
    assert -math.pi / 2 <= row["orientation"] <= math.pi / 2
    assert row["feret_diameter_max"] == pytest.approx(2 * a, abs=1.5)
    assert row["feret_diameter_min"] == pytest.approx(2 * b, abs=1.5)


def test_l_shape_convex_hull_by_hand() -> None:
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[1:11, 1:4] = 1  # vertical bar 10 × 3
    labels[8:11, 4:11] = 1  # foot 3 × 7
    row = measure_frame(labels).iloc[0]
    assert row["area"] == 51
    # Hull of the pixel centres: (1,1) (1,3) (8,10) (10,10) (10,1); perimeter by hand.
    hull_perimeter = 2 + math.hypot(7, 7) + 2 + 9 + 9
    assert row["perimeter_convex"] == pytest.approx(hull_perimeter)
    assert row["solidity"] < 0.8
    assert row["convexity"] < 1.0


# --------------------------------------------------------------------------- scikit-image


def _random_labels(seed: int, shape: tuple[int, int], n_labels: int, block: int) -> np.ndarray:
    """Blobs of random labels (nearest-upsampled noise, some speckle, some background)."""
    rng = np.random.default_rng(seed)
    coarse_shape = (-(-shape[0] // block), -(-shape[1] // block))
    coarse = rng.integers(0, n_labels + 1, coarse_shape)
    labels = np.kron(coarse, np.ones((block, block), dtype=np.int64))[: shape[0], : shape[1]]
    speckle = rng.random(shape) < 0.08
    labels[speckle] = rng.integers(0, n_labels + 1, int(speckle.sum()))
    return labels


def _compare_with_skimage(labels: np.ndarray, image: np.ndarray) -> None:
    ours = measure_frame(labels, image)
    ref = pd.DataFrame(regionprops_table(labels, image, properties=SKIMAGE_PROPS))
    assert list(ours["label"]) == list(ref["label"])
    np.testing.assert_array_equal(ours["area"], ref["area"])
    np.testing.assert_array_equal(ours["area_convex"], ref["area_convex"])
    for i, name in enumerate(("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")):
        np.testing.assert_array_equal(ours[name], ref[f"bbox-{i}"])
    close = {"rtol": 1e-9, "atol": 1e-9}
    np.testing.assert_allclose(ours["centroid_y"], ref["centroid-0"], **close)
    np.testing.assert_allclose(ours["centroid_x"], ref["centroid-1"], **close)
    np.testing.assert_allclose(ours["perimeter"], ref["perimeter"], **close)
    np.testing.assert_allclose(ours["solidity"], ref["solidity"], **close)
    np.testing.assert_allclose(ours["ecd"], ref["equivalent_diameter_area"], **close)
    np.testing.assert_allclose(ours["intensity_mean"], ref["intensity_mean"], **close)
    # Axis lengths are 4·sqrt(eigenvalue): a 1e-16 eigenvalue (rounding in eigvalsh)
    # becomes 4e-8, so the absolute tolerance is 1e-6 px.
    np.testing.assert_allclose(ours["axis_major_length"], ref["axis_major_length"], 1e-9, 1e-6)
    np.testing.assert_allclose(ours["axis_minor_length"], ref["axis_minor_length"], 1e-9, 1e-6)
    # Orientation: same axis (modulo π) wherever the ellipse is not a circle.
    distinct = ref["axis_major_length"] - ref["axis_minor_length"] > 1e-6
    diff = _axis_angle_diff(ours["orientation"][distinct], ref["orientation"][distinct])
    assert diff.max(initial=0.0) < 1e-9
    # skimage measures the maximum Feret diameter on the contour of its convex hull
    # image, a superset of the particle: never shorter than ours, at most 1 px longer.
    gap = ref["feret_diameter_max"].to_numpy() - ours["feret_diameter_max"].to_numpy()
    assert gap.min() >= -1e-9
    assert gap.max() <= 1.0 + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    n_labels=st.integers(1, 12),
    block=st.integers(1, 8),
)
def test_agrees_with_regionprops_on_random_labels(
    seed: int, height: int, width: int, n_labels: int, block: int
) -> None:
    labels = _random_labels(seed, (height, width), n_labels, block)
    image = np.random.default_rng(seed + 1).integers(0, 4096, labels.shape).astype(np.uint16)
    if labels.max() == 0:
        assert measure_frame(labels).empty
        return
    _compare_with_skimage(labels, image)


def test_agrees_with_regionprops_on_drawn_particles() -> None:
    """Ellipses and polygons of many sizes, overlapping (so some touch or split)."""
    from skimage.draw import ellipse, polygon

    rng = np.random.default_rng(7)
    shape = (300, 300)
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(1, 120):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a = rng.uniform(1.5, 30)
        b = a / rng.uniform(1, 5)
        if i % 2:
            rr, cc = ellipse(cy, cx, a, b, shape=shape, rotation=rng.uniform(-np.pi, np.pi))
        else:
            k = rng.integers(3, 9)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.4, 1.0, k) * a
            rr, cc = polygon(cy + rad * np.sin(ang), cx + b / a * rad * np.cos(ang), shape=shape)
        labels[rr, cc] = i
    image = rng.normal(100, 20, shape)
    _compare_with_skimage(labels, image)


# --------------------------------------------------------------------------- invariants


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    pixel_size=st.floats(0.01, 100.0),
)
def test_scaling_with_pixel_size(seed: int, pixel_size: float) -> None:
    labels = _random_labels(seed, (30, 30), 6, 5)
    if labels.max() == 0:
        return
    px = measure_frame(labels)
    um = measure_frame(labels, pixel_size_um=pixel_size)
    units = feature_units(pixel_size)
    for name in FEATURE_COLUMNS:
        a, b = px[name].to_numpy(), um[name].to_numpy()
        if units[name] == "um":
            factor = pixel_size
        elif units[name] == "um2":
            factor = pixel_size**2
        else:
            factor = 1.0
        if a.dtype == bool:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(b, a * factor, rtol=1e-12, err_msg=name)
    assert um.attrs["units"]["area"] == "um2"
    assert px.attrs["units"]["area"] == "px2"
    assert px.attrs["units"]["feret_diameter_max"] == "px"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_relabelling_leaves_features_unchanged(seed: int) -> None:
    labels = _random_labels(seed, (32, 28), 9, 4)
    present = np.unique(labels[labels > 0])
    if present.size == 0:
        return
    rng = np.random.default_rng(seed)
    new_ids = rng.choice(10**12, size=present.size, replace=False) + 1
    mapping = np.zeros(labels.max() + 1, dtype=np.int64)
    mapping[present] = new_ids
    relabelled = mapping[labels]
    a = measure_frame(labels).drop(columns="label")
    b = measure_frame(relabelled).drop(columns="label")
    # Rows correspond through the mapping; compare the multisets of rows.
    key = ["area", "centroid_y", "centroid_x"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert sorted(measure_frame(relabelled)["label"]) == sorted(new_ids)


def test_empty_frame_gives_empty_table_with_all_columns() -> None:
    table = measure_frame(np.zeros((20, 30), dtype=np.uint16), np.ones((20, 30)))
    assert list(table.columns) == list(FEATURE_COLUMNS)
    assert len(table) == 0
    assert table["touches_edge"].dtype == bool
    assert table.attrs["units"] == feature_units(None)
    assert list(measure_frame(np.zeros((0, 0), dtype=np.int32)).columns) == list(FEATURE_COLUMNS)


def test_single_pixel_particle() -> None:
    labels = np.zeros((5, 5), dtype=np.uint8)
    labels[2, 3] = 4
    row = measure_frame(labels).iloc[0]
    assert row["label"] == 4
    assert row["area"] == 1
    assert row["feret_diameter_max"] == pytest.approx(1.0)  # edge midpoint to edge midpoint
    assert row["feret_diameter_min"] == pytest.approx(math.sqrt(0.5))  # the diamond at 45°
    assert row["perimeter"] == 0.0
    assert math.isnan(row["circularity"]) and math.isnan(row["convexity"])
    assert row["area_convex"] == 1 and row["solidity"] == 1.0
    assert row["axis_major_length"] == 0.0
    assert not row["touches_edge"]
    assert math.isnan(row["intensity_mean"]) and math.isnan(row["sharpness"])


def test_touches_edge() -> None:
    labels = np.zeros((10, 12), dtype=np.int32)
    labels[0, 5] = 1  # top row
    labels[4:6, 11] = 2  # right column
    labels[9, 0:3] = 3  # bottom-left corner
    labels[3:6, 3:6] = 4  # inside
    labels[1:9, 1] = 5  # one pixel from the left edge
    labels[5:8, 0] = 6  # left column
    table = measure_frame(labels).set_index("label")
    assert table["touches_edge"].to_dict() == {
        1: True,
        2: True,
        3: True,
        4: False,
        5: False,
        6: True,
    }


def test_disconnected_label_and_views() -> None:
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[2:5, 2:5] = 3
    labels[12:15, 10:18] = 3
    ours = measure_frame(labels.T)  # a non-contiguous view
    ref = regionprops_table(labels.T.copy(), properties=["area", "area_convex", "perimeter"])
    assert ours["area"].iloc[0] == ref["area"][0] == 33
    assert ours["area_convex"].iloc[0] == ref["area_convex"][0]
    assert ours["perimeter"].iloc[0] == pytest.approx(ref["perimeter"][0])


def test_sharpness_drops_with_blur() -> None:
    labels = _disc(15.0)
    image = np.where(labels > 0, 200.0, 40.0)
    scores = []
    for sigma in (0.0, 0.7, 1.5, 3.0, 6.0):
        blurred = ndi.gaussian_filter(image, sigma) if sigma else image
        scores.append(measure_frame(labels, blurred.astype(np.uint8))["sharpness"].iloc[0])
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    # A sharp step: central differences give contrast/2 across the edge.
    contrast = (200 - 40) / 255
    assert 0.2 * contrast**2 < scores[0] < 0.6 * contrast**2


def test_sharpness_compares_across_bit_depths() -> None:
    labels = _disc(10.0)
    image = ndi.gaussian_filter(np.where(labels > 0, 0.8, 0.2), 1.0)
    s8 = measure_frame(labels, np.round(image * 255).astype(np.uint8))["sharpness"].iloc[0]
    s16 = measure_frame(labels, np.round(image * 65535).astype(np.uint16))["sharpness"].iloc[0]
    assert s8 == pytest.approx(s16, rel=0.02)


def test_intensity_mean_by_hand() -> None:
    labels = np.array([[1, 1, 0], [2, 2, 2]], dtype=np.int32)
    image = np.array([[1.0, 3.0, 100.0], [4.0, 5.0, 9.0]])
    table = measure_frame(labels, image)
    np.testing.assert_allclose(table["intensity_mean"], [2.0, 6.0])


def test_confidence_is_the_mean_probability_over_the_particle() -> None:
    labels = np.array([[1, 1, 0], [2, 2, 2]], dtype=np.int32)
    prob = np.array([[0.2, 0.6, 1.0], [0.9, 0.9, 0.6]])
    np.testing.assert_allclose(measure_frame(labels, probability=prob)["confidence"], [0.4, 0.8])
    stored = np.round(prob * 255).astype(np.uint8)  # as segment stores it
    np.testing.assert_allclose(
        measure_frame(labels, probability=stored)["confidence"], [0.4, 0.8], atol=1 / 255
    )
    assert measure_frame(labels)["confidence"].isna().all()
    with pytest.raises(FrameMismatchError, match="probability"):
        measure_frame(labels, probability=prob[:, :2])


# --------------------------------------------------------------------------- edge weights


def test_miles_lantuejoul_weights_by_hand() -> None:
    w = miles_lantuejoul_weights(
        np.array([0, 10, 50, 100, 120]), np.array([0, 20, 100, 5, 5]), (100, 200)
    )
    assert w[0] == 1.0
    assert w[1] == pytest.approx(100 * 200 / (90 * 180))
    assert w[2] == pytest.approx(100 * 200 / (50 * 100))
    assert np.isinf(w[3]) and np.isinf(w[4])  # as tall as the frame, or taller
    assert miles_lantuejoul_weights(3, 4, (10, 10)) == pytest.approx([100 / 42])


def test_miles_lantuejoul_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        miles_lantuejoul_weights([1], [1], (0, 10))
    with pytest.raises(ConfigError):
        miles_lantuejoul_weights([-1], [1], (10, 10))


# --------------------------------------------------------------------------- errors


def test_rejects_bad_input() -> None:
    with pytest.raises(MaskValueError, match="integer"):
        measure_frame(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(MaskValueError, match="integer"):
        measure_frame(np.zeros((4, 4), dtype=bool))
    with pytest.raises(MaskValueError, match="dimensions"):
        measure_frame(np.zeros((2, 4, 4), dtype=np.int32))
    with pytest.raises(MaskValueError, match="negative"):
        measure_frame(np.full((4, 4), -1, dtype=np.int32))
    with pytest.raises(FrameMismatchError, match="shape"):
        measure_frame(np.zeros((4, 4), dtype=np.int32), np.zeros((4, 5)))
    with pytest.raises(ConfigError, match="pixel_size_um"):
        measure_frame(np.zeros((4, 4), dtype=np.int32), pixel_size_um=-1.0)


def test_units_cover_every_column() -> None:
    assert set(FEATURE_UNITS) == set(FEATURE_COLUMNS)
    assert set(feature_units(None).values()) <= {"px", "px2", "1", "rad", "1/px2", "intensity"}


def test_large_particle_matches_regionprops() -> None:
    """A particle of ~7·10⁴ pixels takes the float64 moment path; still skimage's values."""
    labels = np.zeros((400, 330), dtype=np.int32)
    yy, xx = _grid(labels.shape)
    labels[((yy - 200) / 190) ** 2 + ((xx - 160) / 120) ** 2 <= 1] = 1
    labels[370:390, 10:25] = 2
    rng = np.random.default_rng(3)
    _compare_with_skimage(labels, rng.normal(size=labels.shape))
