"""Chord length distribution (CLD): what a focused-beam probe (FBRM) would see.

A focused-beam reflectance probe sweeps a laser spot along a line through the
suspension and records, for every particle the spot crosses, the length of the
crossing: a *chord*. Its chord length distribution mixes size and shape, and is
what most crystallization labs track on line. :func:`chord_lengths` draws the
same chords through the particles of a labelled frame, so a run can be set beside
a probe's trend on one time axis.

How the chords are drawn
------------------------
Each frame is scanned along ``directions`` directions, evenly spaced over 180°
with a random starting angle per frame; along each direction the frame is
covered by parallel lines ``line_spacing_px`` apart, with a random offset. Each
line is sampled every ``step_px`` pixels (nearest pixel), and every run of
samples inside one particle is one chord (a non-convex particle can give several
chords per line, as it does to a probe). This is an isotropic uniform random
(IUR) line field: a particle is hit by a number of lines proportional to its
width across the line, so large particles give more chords, exactly as on a
probe's window. The expected number of chords of a particle is
``directions * mean caliper width / line_spacing_px`` (a disc of diameter D px:
``directions * D / line_spacing_px``). Chord lengths are quantised to
``step_px``; the expected sampled length equals the true length.

Weighting: a chord is counted with the weight of its particle in the particle
table (the Miles-Lantuéjoul edge correction, 0 for particles cut by the frame
edge, out of focus or otherwise excluded), so chords of particles cut by the
frame are left out and the bias against large particles that this causes is
undone. The *number-weighted* CLD counts chords; the *square-weighted* CLD
weighs each chord by its length squared (FBRM's square weighting, which brings
out the coarse end).

Analytic checks (``tests/kinetics/test_cld.py``): the chord length density of a
disc of diameter D under IUR lines is l / (D sqrt(D² - l²)); that of a rectangle
follows, per direction, from a trapezoid of chord length against line offset,
integrated over directions with weight the rectangle's width across them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from crystalseg.errors import ConfigError

#: FBRM's customary size classes in micrometres (lower edge inclusive, upper exclusive).
CLD_CLASSES_UM: tuple[tuple[float, float], ...] = (
    (0.0, 10.0),
    (10.0, 50.0),
    (50.0, 150.0),
    (150.0, 300.0),
    (300.0, 1000.0),
)
#: Names of :data:`CLD_CLASSES_UM` as a probe's software labels them.
CLD_CLASS_NAMES: tuple[str, ...] = ("<10", "10-50", "50-150", "150-300", "300-1000")

# Lines are sampled in blocks of this many samples (memory bound: ~10 bytes each).
_BLOCK_SAMPLES = 2_000_000


@dataclass(frozen=True)
class ChordSettings:
    """How chords are drawn and binned (see the module text).

    Attributes
    ----------
    directions : scan directions per frame, evenly spaced over 180° from a random start.
        With the default spacing a particle of mean caliper width w px gets about
        3 w chords per frame (6 x w / 2): 60 for a crystal of 20 px. The cost is
        about 6 H W samples per frame (0.1-0.5 s for 512 x 512 px on our 2-core
        machine, depending on its load)
    line_spacing_px : distance between parallel scan lines, pixels
    step_px : sampling step along a line, pixels (the quantum of a chord length)
    bridge_px : gaps of background up to this long between two runs of the same
        particle on one line are closed, so the line makes one chord. A line that
        grazes a pixelated outline steps in and out of its staircase and would
        split one chord into several short ones: on a disc of 200 px, without
        closing, 18 % of all chords were such fragments; closing gaps up to 4 px
        leaves 0.4 % (in the bin below a tenth of the diameter). Concavities of
        agglomerates wider than this still split a chord, as on a probe.
    bins : number of logarithmic chord bins
    min_um, max_um : range of the bins (micrometres; pixels for an uncalibrated run),
        FBRM's usual 1-1000 µm by default
    seed : seed of the random start angles and offsets (per frame, mixed with the
        frame index, so a frame gets the same chords whichever order it is done in)
    """

    directions: int = 6
    line_spacing_px: float = 2.0
    step_px: float = 0.5
    bridge_px: float = 4.0
    bins: int = 90
    min_um: float = 1.0
    max_um: float = 1000.0
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.directions) != self.directions or self.directions < 1:
            raise ConfigError(f"directions must be a whole number >= 1, got {self.directions!r}")
        if not (self.bridge_px >= 0):
            raise ConfigError(f"bridge_px must be >= 0, got {self.bridge_px!r}")
        for name in ("line_spacing_px", "step_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.step_px > 1:
            raise ConfigError(
                f"step_px {self.step_px} is coarser than a pixel; use at most 1 (default 0.25)"
            )
        if int(self.bins) != self.bins or self.bins < 1:
            raise ConfigError(f"bins must be a whole number >= 1, got {self.bins!r}")
        if not (0 < self.min_um < self.max_um and math.isfinite(self.max_um)):
            raise ConfigError(
                f"chord bins need 0 < min_um < max_um, got {self.min_um!r}..{self.max_um!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as recorded with the results."""
        return asdict(self)

    def edges(self) -> np.ndarray:
        """Bin edges (bins + 1,), logarithmically spaced from ``min_um`` to ``max_um``."""
        return np.geomspace(self.min_um, self.max_um, self.bins + 1)


def chord_lengths(
    labels: np.ndarray,
    *,
    directions: int = 8,
    line_spacing_px: float = 2.0,
    step_px: float = 0.25,
    rng: np.random.Generator | None = None,
    angles: np.ndarray | None = None,
    bridge_px: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Chords of isotropic uniform random lines through every particle of a frame.

    Parameters
    ----------
    labels : ndarray, shape (y, x), integer dtype
        Instance labels; 0 is background.
    directions : int
        Scan directions, evenly spaced over 180° from a random start.
    line_spacing_px : float
        Distance between parallel scan lines, pixels.
    step_px : float
        Sampling step along each line, pixels.
    rng : numpy Generator, optional
        Source of the start angle and the line offsets (default: a fresh one).
    angles : ndarray, optional
        Scan directions in radians, instead of ``directions`` drawn evenly.
    bridge_px : float
        Gaps of background up to this long between two runs of one particle on one
        line are closed (see :class:`ChordSettings`).

    Returns
    -------
    lengths_px : ndarray of float64, shape (n,)
        Chord lengths in pixels (multiples of ``step_px``).
    label : ndarray of int64, shape (n,)
        The particle each chord crosses.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be one frame (y, x), got shape {labels.shape}")
    rng = np.random.default_rng() if rng is None else rng
    if angles is None:
        angles = rng.uniform(0, math.pi / directions) + np.arange(directions) * (
            math.pi / directions
        )
    height, width = labels.shape
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    lengths: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    padded = np.pad(labels.astype(np.int64, copy=False), 1)
    bridge = round(bridge_px / step_px)
    for theta in np.asarray(angles, dtype=float):
        c, s = math.cos(theta), math.sin(theta)
        # lines cover the frame's extent across them; samples its extent along them
        half_across = 0.5 * (abs(s) * width + abs(c) * height) + 1.0
        half_along = 0.5 * (abs(c) * width + abs(s) * height) + 1.0
        steps = np.arange(-half_along, half_along + step_px, step_px, dtype=np.float32)
        offsets = (
            -half_across
            + rng.uniform(0, line_spacing_px)
            + np.arange(0, 2 * half_across, line_spacing_px)
        ).astype(np.float32)
        lines_per_block = max(1, _BLOCK_SAMPLES // len(steps))
        for lo in range(0, len(offsets), lines_per_block):
            block = offsets[lo : lo + lines_per_block, None]
            x = (centre[0] - s * block) + c * steps
            y = (centre[1] + c * block) + s * steps
            sampled = np.full((len(block), len(steps) + 2), -1, dtype=np.int64)
            sampled[:, 1:-1] = _sample_labels(padded, x, y)
            run_len, run_label = _runs(sampled, bridge=bridge)
            lengths.append(run_len * step_px)
            owners.append(run_label)
    if not lengths:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(lengths).astype(np.float64), np.concatenate(owners)


def _sample_labels(padded: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The label of the pixel nearest to each point (x, y); 0 outside the frame.

    ``padded`` is the label image with a border of one background pixel, so that
    every point outside the frame reads the border (clipping is cheaper than masking).
    (A bilinear 0.5-contour of each particle was tried: 4x slower, and a line that
    grazes a pixelated outline still steps in and out of it; closing short gaps,
    ``bridge_px``, is what removes those fragments.)
    """
    height, width = padded.shape
    col = np.clip(np.floor(x + 1.5), 0, width - 1).astype(np.intp)
    row = np.clip(np.floor(y + 1.5), 0, height - 1).astype(np.intp)
    return padded.ravel().take(row * width + col)


def _runs(rows: np.ndarray, *, bridge: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (samples) and labels of the runs of equal non-zero values in each row.

    Every row starts and ends with -1, so no run (nor a closed gap) crosses from one
    row to the next.
    Gaps of background of at most ``bridge`` samples between two runs of the same
    label are closed first: a line that grazes a pixelated outline steps in and out
    of its staircase, which would split one chord into many short ones.
    """
    flat = rows.ravel()
    bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if len(bounds) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts, stops = bounds[:-1], bounds[1:]
    values = flat[starts]
    if bridge > 0 and len(values) >= 3:
        gap = (
            (values[1:-1] == 0)
            & (stops[1:-1] - starts[1:-1] <= bridge)
            & (values[:-2] == values[2:])
            & (values[:-2] > 0)
        )
        if gap.any():
            # a run and the gaps after it merge into the run before: relabel by segment
            merged = np.zeros(len(values), dtype=bool)
            merged[1:-1] = gap
            merged[2:] |= gap  # the run after a closed gap joins the one before it
            first = np.flatnonzero(~merged)
            starts = starts[first]
            stops = np.maximum.reduceat(stops, first)
            values = values[first]
    keep = values > 0
    return (stops - starts)[keep], values[keep]


@dataclass(frozen=True)
class FrameCLD:
    """The chord length distribution of one frame (:func:`frame_cld`).

    Attributes
    ----------
    count : ndarray (bins,)
        Weighted number of chords per bin.
    square : ndarray (bins,)
        Weighted sum of squared chord lengths per bin (size units²).
    class_count : ndarray (len(CLD_CLASSES_UM),)
        Weighted number of chords in FBRM's size classes.
    n_chords : int
        Chords drawn through counted particles (unweighted).
    outside : float
        Weighted chords outside the bins (shorter than ``min_um`` or longer than ``max_um``).
    scan_length : float
        Total length of scan line over the frame, in size units (chords per length of
        scan line compare frames and runs of other fields of view).
    median_number, median_square : float
        Median chord of the number- and square-weighted distributions (NaN without chords).
    """

    count: np.ndarray
    square: np.ndarray
    class_count: np.ndarray
    n_chords: int
    outside: float
    scan_length: float
    median_number: float
    median_square: float


def frame_cld(
    labels: np.ndarray,
    *,
    weights: np.ndarray,
    settings: ChordSettings,
    pixel_size_um: float | None,
    rng: np.random.Generator,
) -> FrameCLD:
    """Binned chord length distribution of one labelled frame.

    Parameters
    ----------
    labels : ndarray, shape (y, x), integer dtype
        Instance labels of the frame; 0 is background.
    weights : ndarray of float, shape (labels.max() + 1,)
        Weight of each label's chords (index 0 unused); 0 leaves a particle out.
    settings : ChordSettings
    pixel_size_um : float or None
        Micrometres per pixel; None keeps lengths (and the bins) in pixels.
    rng : numpy Generator
        Source of the scan directions and line offsets.

    Returns
    -------
    FrameCLD
    """
    lengths_px, owner = chord_lengths(
        labels,
        directions=settings.directions,
        line_spacing_px=settings.line_spacing_px,
        step_px=settings.step_px,
        rng=rng,
        bridge_px=settings.bridge_px,
    )
    scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (len(owner) and owner.max() >= len(weights)):
        raise ValueError(
            f"weights must give one weight per label (length >= {int(labels.max()) + 1}), "
            f"got shape {weights.shape}"
        )
    w = weights[owner] if len(owner) else np.zeros(0)
    counted = w > 0
    length, w = lengths_px[counted] * scale, w[counted]
    edges = settings.edges()
    count, _ = np.histogram(length, bins=edges, weights=w)
    square, _ = np.histogram(length, bins=edges, weights=w * length**2)
    if pixel_size_um is None:  # FBRM's classes are in micrometres: no place for them
        class_count = np.full(len(CLD_CLASSES_UM), np.nan)
    else:
        class_count = np.array(
            [w[(length >= lo) & (length < hi)].sum() for lo, hi in CLD_CLASSES_UM]
        )
    height, width = labels.shape
    # lines `spacing` apart cover the frame: their length inside it is area / spacing
    scan = settings.directions * height * width / settings.line_spacing_px * scale
    return FrameCLD(
        count=count,
        square=square,
        class_count=class_count,
        n_chords=len(length),
        outside=float(w.sum() - count.sum()),
        scan_length=float(scan),
        median_number=_weighted_median(length, w),
        median_square=_weighted_median(length, w * length**2),
    )


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    if not len(values) or total <= 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * total)])
