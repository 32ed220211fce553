"""Chord length distributions against closed forms for discs and rectangles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crystalseg.errors import ConfigError
from crystalseg.kinetics.cld import (
    CLD_CLASSES_UM,
    ChordSettings,
    _runs,
    chord_lengths,
    frame_cld,
)


def _disc(diameter: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return ((xx - c) ** 2 + (yy - c) ** 2 <= (diameter / 2) ** 2).astype(np.int32)


def _rectangle(a: float, b: float, phi: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2
    u = (xx - c) * math.cos(phi) + (yy - c) * math.sin(phi)
    v = -(xx - c) * math.sin(phi) + (yy - c) * math.cos(phi)
    return ((np.abs(u) <= a / 2) & (np.abs(v) <= b / 2)).astype(np.int32)


def disc_cdf(length: np.ndarray, diameter: float) -> np.ndarray:
    """P(chord <= l) under IUR lines: the integral of l / (D sqrt(D² - l²))."""
    x = np.clip(np.asarray(length, dtype=float) / diameter, 0, 1)
    return 1 - np.sqrt(1 - x**2)


def rectangle_cdf(length: np.ndarray, a: float, b: float, theta: np.ndarray) -> np.ndarray:
    """P(chord <= l) under IUR lines through an a x b rectangle.

    For lines at angle θ to side a the chord against the line's offset is a
    trapezoid: it ramps from 0 to L_max = min(a/|cos θ|, b/|sin θ|) over an offset
    min(a|sin θ|, b|cos θ|) at each end, and is L_max in between; lines at θ hit the
    rectangle in proportion to its width across them, W = a|sin θ| + b|cos θ|.
    Averaged over the directions ``theta`` (radians from side a) that were scanned.
    """
    c, s = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    width = a * s + b * c
    lmax = np.minimum(a / c, b / s)
    ramp = np.minimum(a * s, b * c)
    ell = np.asarray(length, dtype=float)[:, None]
    per_direction = np.where(ell >= lmax, 1.0, 2 * ramp * (ell / lmax) / width)
    return (per_direction * width).sum(1) / width.sum()


def _check_bins(lengths: np.ndarray, edges: np.ndarray, cdf: np.ndarray) -> None:
    """Each bin within 2 % of the closed form (plus half a percentage point, for the
    near-empty bins at short chords that grazing lines reach)."""
    observed = np.histogram(lengths, bins=edges)[0] / len(lengths)
    expected = np.diff(cdf)
    np.testing.assert_array_less(np.abs(observed - expected), 0.02 * expected + 0.005)


@pytest.mark.parametrize("diameter", [120.0, 201.0])
def test_disc_matches_the_chord_density_of_a_disc(diameter: float) -> None:
    size = int(diameter) + 12
    lengths, owner = chord_lengths(
        _disc(diameter, size),
        directions=16,
        line_spacing_px=0.5,
        rng=np.random.default_rng(0),
    )
    assert set(np.unique(owner)) == {1}
    # a pixel-centre disc of diameter D spans about D + 1 px of pixel area
    effective = diameter + 0.5
    edges = np.geomspace(0.05, 1.0, 12) * effective
    edges[-1] = effective + 2
    edges = np.concatenate([[0.0], edges])
    cdf = disc_cdf(edges, effective)
    cdf[-1] = 1.0
    _check_bins(lengths, edges, cdf)
    # number of chords: directions * D / spacing
    assert len(lengths) == pytest.approx(16 * effective / 0.5, rel=0.01)


@pytest.mark.parametrize("phi", [0.0, 0.3, 1.2, math.pi / 4])
def test_rectangle_at_any_orientation_matches_its_closed_form(phi: float) -> None:
    a, b = 150.0, 60.0
    angles = 0.1 + np.arange(90) * math.pi / 90
    lengths, _ = chord_lengths(
        _rectangle(a, b, phi, 200),
        angles=angles,
        line_spacing_px=1.0,
        rng=np.random.default_rng(1),
    )
    # edges kept away from the atoms of the distribution at b and a
    edges = np.array([0.0, 8, 16, 30, 45, 55, 66, 80, 100, 125, 145, 170])
    cdf = rectangle_cdf(edges, a, b, angles - phi)
    cdf[-1] = 1.0
    _check_bins(lengths, edges, cdf)
    # Cauchy: the mean chord of a convex body is pi * area / perimeter
    assert lengths.mean() == pytest.approx(math.pi * a * b / (2 * (a + b)), rel=0.01)


def test_runs_close_short_gaps_but_not_across_lines_or_labels() -> None:
    rows = np.array(
        [
            [-1, 0, 1, 1, 0, 1, 0, 0, 0, 1, -1],  # gap of 1 closed, gap of 3 kept
            [-1, 1, 1, 0, 2, 2, 0, 1, 0, 0, -1],  # different labels never merge
        ]
    )
    lengths, labels = _runs(rows, bridge=2)
    assert lengths.tolist() == [4, 1, 2, 2, 1]
    assert labels.tolist() == [1, 1, 1, 2, 1]
    lengths, labels = _runs(rows, bridge=0)
    assert lengths.tolist() == [2, 1, 1, 2, 2, 1]


def test_frame_cld_weights_classes_and_units() -> None:
    labels = np.zeros((300, 300), dtype=np.int32)
    labels[_disc(100, 300) > 0] = 1
    labels[10:30, 10:30] = 2  # a particle with weight 0 is left out
    settings = ChordSettings(directions=8, line_spacing_px=1.0)
    cld = frame_cld(
        labels,
        weights=np.array([0.0, 2.0, 0.0]),
        settings=settings,
        pixel_size_um=2.0,
        rng=np.random.default_rng(3),
    )
    # only the disc: ~ directions * D / spacing chords, each weighted 2
    assert cld.n_chords == pytest.approx(8 * 100.5, rel=0.02)
    assert cld.count.sum() + cld.outside == pytest.approx(2 * cld.n_chords)
    # disc of 200 um: chords in 50-150 um hold P(0.25 D < l < 0.75 D), 150-300 the rest above
    expected = np.diff(disc_cdf(np.array([0.0, 10, 50, 150, 201]), 201.0))
    fractions = cld.class_count[:4] / cld.class_count.sum()
    np.testing.assert_allclose(fractions, expected, atol=0.01)
    assert cld.class_count[4] == 0
    assert len(cld.class_count) == len(CLD_CLASSES_UM)
    # square weighting moves the median towards the long chords
    assert cld.median_square > cld.median_number > 100
    assert cld.scan_length == pytest.approx(8 * 300 * 300 / 1.0 * 2.0)
    uncalibrated = frame_cld(
        labels,
        weights=np.array([0.0, 1.0, 0.0]),
        settings=settings,
        pixel_size_um=None,
        rng=np.random.default_rng(3),
    )
    assert np.isnan(uncalibrated.class_count).all()
    assert uncalibrated.median_number == pytest.approx(cld.median_number / 2)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"step_px 2\.0 is coarser than a pixel"):
        ChordSettings(step_px=2.0)
    with pytest.raises(ConfigError, match="directions must be a whole number"):
        ChordSettings(directions=0)
    with pytest.raises(ConfigError, match="0 < min_um < max_um"):
        ChordSettings(min_um=10, max_um=5)
    edges = ChordSettings(bins=3, min_um=1, max_um=1000).edges()
    np.testing.assert_allclose(edges, [1, 10, 100, 1000])
