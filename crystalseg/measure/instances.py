"""From a class mask to one label per particle: components, splitting of touching crystals.

A segmentation model says, for every pixel, which class it belongs to; the
measurement needs one id per crystal. :func:`label_instances` does that for one
frame in one of two ways:

* **watershed** (masks with crystal classes only): connected components of the
  foreground, each split along the necks of its distance transform. Every local
  maximum of the (optionally smoothed) distance transform seeds a region of a
  watershed; then adjacent regions are merged, highest saddle first, unless the
  valley between them is both deep (the lower peak stands at least
  ``min_depth_px`` above the saddle) and narrow (the saddle is below
  ``neck_ratio`` times the lower peak: the neck is thinner than that fraction
  of the thinner crystal's width). The first test ignores the pixel noise of
  digital outlines; the second, being scale free, keeps a needle or plate whole
  along its flat distance ridge while separating round blobs that touch at a
  waist. Crystals that lie side by side along their length, or cross, leave no
  neck and stay merged: that is what a boundary class is for.
* **boundary** (masks whose codes include a class named "boundary", "edge",
  "border" or "contour", e.g. background, crystal, boundary, or a contact class
  "contact" or "touching" that marks only where crystals touch): the interior
  classes, cut apart by the predicted boundary, give one marker per crystal
  (8-connected components of at least :data:`MIN_MARKER_PX` pixels); the
  markers are grown back, breadth first, over interior and boundary pixels.
  Foreground pieces that hold no marker (crystals so thin that they are all
  boundary) become particles of their own, and so does every thin component
  (about five pixels wide, or six if it is at least four times as long as
  wide and its interior a line at most two pixels wide), whatever interior it
  holds: the one-pixel interior line a model draws inside a needle breaks up
  along it, which would cut the needle into pieces.
  Where a thin crystal narrows to two pixels or less it has no interior, which
  would cut it in two; so two regions that meet only across such a thin
  contact (every pixel on both sides of the contact touches the background)
  are joined again.
* **hybrid** (masks with a boundary class): as **boundary**, but each marker is
  first split at the necks of its own distance transform, exactly as the
  watershed splits a crystal mask. Where the model draws only part of the
  boundary between two touching crystals, their interiors stay joined by a
  narrow bridge, which the neck test cuts. On held-out synthetic runs this
  raised the instance F1 of crowded scenes, plates and mixed habits, at the
  cost of splitting some needles whose predicted interior narrows; it is what
  ``split="auto"`` does for masks with a boundary class.

* **distance** (any mask; an option, not the default): a marker-controlled
  watershed of ``(1 - w) * d_fg + w * d_in``, the distance to the background of the
  foreground blended with the distance to the background or the boundary class of
  the interior (:class:`DistanceSplit`: ``rim_weight`` w, the depth and neck tests of
  the watershed split on that map). Thin components are one particle each, cut
  only at the necks of their own distance transform, as in the hybrid split. On
  selection data (dsb2018 train images, synthetic seeds 601-602) its defaults tied
  the hybrid split in mean instance F1 (0.662 both, zero-shot); on dsb2018 images
  after fine-tuning it was ahead (F1 0.607 / 0.587 on train, 0.591 / 0.578 on
  test) but its D50 errors on synthetic scenes were larger and it costs about
  1.4 times the CPU time, so "auto" stays hybrid (``benchmarks/instances.py``,
  docs/validation.md). Crossing needles under about 8 px wide merge.

With a rim class the outline can also be **trimmed** (``trim_boundary``, on by
default): the default model draws the crystal rim about two pixels wide, one inside
the crystal and one outside, where the truth is the one-pixel ring inside (on
held-out synthetic runs 1.7 times the true rim, 39 % of it outside the crystal), so
every particle came out a quarter to half a pixel too large all round, and
every size with it. Boundary pixels exactly two pixels (3×3 steps) from their
particle's interior are dropped; boundary that reaches further out is a thin
part of the crystal (a bridge, a tail) and stays, with the pixels that join it
to the rest. A particle is left as drawn if trimming would take more than
:data:`TRIM_MAX_FRACTION` of it: a thin crystal is nearly all rim, and its
interior too sparse to say where its outline lies. On a one-pixel rim, as in
true masks, nothing is dropped but the points of sharp corners.

A crystal lying behind another shows as two pieces, one each side of the crystal in
front. With ``join_occluded`` (on by default) such pieces are **joined** into one
particle (not connected, so its area is what is visible, as in the ground truth of
synthetic runs, and its Feret length spans the gap): two particles are joined when
the larger is elongated (aspect ratio of its moments at least
:data:`JOIN_MIN_ELONGATION`), the smaller lies on its axis (within half its width)
and is no more than half as wide again, both point the same way (within
:data:`JOIN_MAX_ANGLE_DEG`, where the smaller is elongated too), and the straight
gap between them is covered by other particles, none of them a collinear crystal
(it crosses at :data:`JOIN_MIN_CROSSING_DEG` or more) and no more than a pixel of
background. Two collinear crystals end to end with nothing between stay apart. On
the true masks of held-out synthetic runs (seeds 9-16) this took the mean count
error of needle scenes from +18 % to +1 % (occluded needles were counted once per
piece) and of crowded scenes from +15 % to +8 %.

Either way, particles smaller than ``min_area_px`` are dropped and the labels
are renumbered 1..n in raster order of their first pixel.

:func:`instance_scores` compares labels with ground truth (matched F1 at an IoU
threshold, over-split and merge rates, count error) for evaluating the splitting
on synthetic runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima
from skimage.segmentation import watershed

from crystalseg.classes import BOUNDARY_CODES, boundary_class, boundary_kind
from crystalseg.errors import ConfigError, MaskValueError
from crystalseg.measure.features import FrameGeometry

log = logging.getLogger(__name__)

SplitMethod = Literal["auto", "watershed", "boundary", "hybrid", "distance", "none"]
SPLIT_METHODS: tuple[str, ...] = get_args(SplitMethod)

#: Defaults of the watershed split, tuned on synthetic runs (seeds 0-4 of every
#: scenario, true class masks); see ``benchmarks/bench_measure.py --accuracy``.
DEFAULT_MIN_DEPTH_PX = 1.0
DEFAULT_NECK_RATIO = 0.7
DEFAULT_SMOOTH_PX = 1.0
#: Defaults of the distance split (:class:`DistanceSplit`), chosen on selection data
#: (see ``benchmarks/instances.py`` and docs/validation.md).
DEFAULT_RIM_WEIGHT = 1.0
DEFAULT_DISTANCE_DEPTH_PX = 1.0
DEFAULT_DISTANCE_NECK_RATIO = 1.0
DEFAULT_DISTANCE_SMOOTH_PX = 1.0
#: Boundary split: interior components smaller than this seed no particle.
MIN_MARKER_PX = 3

#: Foreground components no deeper than this (distance to the background, px: about
#: five pixels wide) are one marker each in the boundary split: their interior is
#: too thin to mark anything.
THIN_DEPTH_PX = 2.5
#: ... and so are elongated components (aspect ratio of their moments at least
#: :data:`THIN_MIN_ELONGATION`) up to this deep (about six pixels wide): a needle
#: drawn with a rim two pixels wide on each side of a broken one-pixel interior line.
#: Chosen on held-out synthetic runs (seeds 1-32: instance F1 of needle scenes
#: +0.008 to +0.014, of no scenario lower; 2.5 for all components cost needle D50).
THIN_ELONGATED_DEPTH_PX = 3.5
THIN_MIN_ELONGATION = 4.0


def _disc(radius: float) -> np.ndarray:
    r = int(radius)
    return np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= radius


_THIN_DISC = _disc(THIN_DEPTH_PX)
_THIN_ELONGATED_DISC = _disc(THIN_ELONGATED_DEPTH_PX)

#: Trimming of the boundary band: a particle loses its band pixels more than one
#: pixel from its interior only if they are at most this fraction of its pixels.
#: Chosen on held-out synthetic runs (seeds 1-16: 0.25-0.5 alike; 1.0, no guard,
#: loses small and thin crystals).
TRIM_MAX_FRACTION = 0.3

#: Joining of occluded pieces (``join_occluded``): the larger piece's least aspect ratio,
#: the largest angle between two elongated pieces, the least angle at which a crystal
#: in the gap crosses them, and the longest gap (px) looked at.
JOIN_MIN_ELONGATION = 2.0
JOIN_MAX_ANGLE_DEG = 15.0
JOIN_MIN_CROSSING_DEG = 20.0
JOIN_MAX_GAP_PX = 80.0

_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DistanceSplit:
    """Settings of the distance split (``split="distance"``, see the module docstring).

    Parameters
    ----------
    rim_weight : float
        Weight (0..1) of the distance to the boundary class in the flooded map; 0
        ignores the boundary class, 1 cuts wherever it is drawn.
    min_depth_px : float
        Least depth (px of the map) of the valley that keeps two crystals apart
        (the h of h-maxima markers).
    neck_ratio : float
        Two regions stay apart only when the map at their saddle is below this
        fraction of the lower peak (0 < neck_ratio <= 1; 1 = depth test alone).
    smooth_px : float
        Sigma of a Gaussian smoothing of the map before its maxima are found.
    """

    rim_weight: float = DEFAULT_RIM_WEIGHT
    min_depth_px: float = DEFAULT_DISTANCE_DEPTH_PX
    neck_ratio: float = DEFAULT_DISTANCE_NECK_RATIO
    smooth_px: float = DEFAULT_DISTANCE_SMOOTH_PX

    def __post_init__(self) -> None:
        if not (0 <= self.rim_weight <= 1):
            raise ConfigError(f"rim_weight must lie in [0, 1], got {self.rim_weight!r}.")
        _check_split_settings("distance", 1, self.min_depth_px, self.neck_ratio, self.smooth_px)


def crystal_classes(
    codes: Sequence[str], *, classes: Sequence[str | int] | None = None
) -> tuple[int, ...]:
    """Indices of the classes that count as crystals.

    Parameters
    ----------
    codes : sequence of str
        Class names of the mask; index 0 is the background.
    classes : sequence of str or int, optional
        Names (or indices) of the classes to measure; default every class but
        the background and the boundary class.

    Returns
    -------
    tuple of int
        Sorted class indices, at least one.

    Raises
    ------
    ConfigError
        If a requested class is unknown, is the background or the boundary, or
        no crystal class is left.
    """
    codes = [str(c) for c in codes]
    if len(codes) < 2:
        raise ConfigError(f"codes {codes} must name a background and at least one crystal class.")
    boundary = boundary_class(codes)
    allowed = [i for i in range(1, len(codes)) if i != boundary]
    if classes is None:
        chosen = allowed
    else:
        chosen = []
        for c in classes:
            index = codes.index(c) if isinstance(c, str) and c in codes else c
            if not isinstance(index, int | np.integer) or index not in allowed:
                names = [codes[i] for i in allowed]
                raise ConfigError(
                    f"class {c!r} cannot be measured; choose among the crystal classes {names} "
                    f"of the mask (codes {codes})."
                )
            chosen.append(int(index))
    if not chosen:
        raise ConfigError(f"codes {codes} hold no crystal class to measure.")
    return tuple(sorted(set(chosen)))


def label_instances(
    mask: np.ndarray,
    *,
    codes: Sequence[str] = ("background", "crystal"),
    classes: Sequence[str | int] | None = None,
    split: SplitMethod = "auto",
    min_area_px: int = 1,
    min_depth_px: float = DEFAULT_MIN_DEPTH_PX,
    neck_ratio: float = DEFAULT_NECK_RATIO,
    smooth_px: float = DEFAULT_SMOOTH_PX,
    trim_boundary: bool = True,
    join_occluded: bool = True,
    keep_small: bool = False,
    distance: DistanceSplit | None = None,
) -> np.ndarray:
    """Instance labels of one frame's class mask: one id per crystal.

    Parameters
    ----------
    mask : ndarray, shape (y, x), integer dtype
        Class index per pixel (0 background), as ``mask`` of a run store.
    codes : sequence of str
        Class names of the mask, background first (the mask's ``codes`` attribute).
    classes : sequence of str or int, optional
        Crystal classes to label (:func:`crystal_classes`); default all of them.
    split : {"auto", "watershed", "boundary", "hybrid", "distance", "none"}
        How touching crystals are separated (see the module docstring):
        "distance" floods the distance to the background and the boundary class
        (:class:`DistanceSplit`);
        "boundary" cuts along the boundary class; "hybrid" also splits each
        boundary-class marker at the necks of its distance transform (as the
        watershed does); "auto" is "hybrid" when ``codes`` has a boundary class,
        else the watershed;
        "none" keeps connected components (8-connected) as they are.
    min_area_px : int
        Particles with fewer pixels are dropped (≥ 1).
    min_depth_px : float
        Watershed split only: least depth, in pixels of the distance transform,
        of the valley between two crystals (≥ 0).
    neck_ratio : float
        Watershed split only: two regions stay apart only when the distance
        transform at their saddle is below this fraction of the lower peak
        (0 < neck_ratio ≤ 1; smaller splits less).
    smooth_px : float
        Watershed split only: sigma of a Gaussian smoothing of the distance
        transform before the maxima are found (0 = off).
    trim_boundary : bool
        Boundary and hybrid split only: drop boundary pixels more than one pixel
        from their particle's interior (see the module docstring), so that a
        rim drawn two pixels wide does not make every particle too large. Only for a
        rim class: a contact class (see :mod:`crystalseg.classes`) has no band to trim.
    join_occluded : bool
        Join the pieces of an elongated crystal that another crystal crosses in
        front of it into one particle (see the module docstring).
    keep_small : bool
        Keep the particles under ``min_area_px`` (they still take no part in the
        split), so that a caller can account for them instead of losing them
        (the measurement lists them as excluded, ``too_small``).
    distance : DistanceSplit, optional
        Settings of the distance split (default ``DistanceSplit()``).

    Returns
    -------
    ndarray of int32, shape (y, x)
        0 background, 1..n one id per particle, numbered in raster order.

    Raises
    ------
    MaskValueError
        If ``mask`` is not a 2-D integer array.
    ConfigError
        If a setting is out of range, or ``split="boundary"`` without a
        boundary class.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
        raise MaskValueError(
            f"mask must be one frame (y, x) of integer class indices, got shape {mask.shape} "
            f"and dtype {mask.dtype}; pass a frame of the run's 'mask' array."
        )
    _check_split_settings(split, min_area_px, min_depth_px, neck_ratio, smooth_px)
    selected = crystal_classes(codes, classes=classes)
    boundary = boundary_class(codes)
    method = split
    if method == "auto":
        method = "hybrid" if boundary is not None else "watershed"
    if method in ("boundary", "hybrid") and boundary is None:
        raise ConfigError(
            f"split={method!r} needs a boundary class, but the mask's codes are {list(codes)}; "
            "use split='watershed' or a model trained with a 'boundary' class."
        )

    crystal = _isin(mask, selected)
    if method in ("boundary", "hybrid"):
        assert boundary is not None
        others = [i for i in crystal_classes(codes) if i not in selected]
        necks = (
            {
                "min_depth_px": min_depth_px,
                "neck_ratio": neck_ratio,
                "smooth_px": smooth_px,
                "min_area_px": MIN_MARKER_PX,
            }
            if method == "hybrid"
            else None
        )
        on_boundary = mask == boundary
        labels = _split_boundary(crystal, on_boundary, _isin(mask, others), necks)
        if trim_boundary and boundary_kind(codes) == "rim":
            labels = _trim_band(labels, crystal, on_boundary)
    elif method == "distance":
        others = [i for i in crystal_classes(codes) if i not in selected]
        on_boundary = mask == boundary if boundary is not None else np.zeros_like(crystal)
        labels = _split_distance(
            crystal,
            on_boundary,
            _isin(mask, others),
            distance or DistanceSplit(),
            int(min_area_px),
        )
        if trim_boundary and boundary is not None and boundary_kind(codes) == "rim":
            labels = _trim_band(labels, crystal, on_boundary)
    elif method == "watershed":
        labels = _split_watershed(
            crystal,
            min_depth_px=min_depth_px,
            neck_ratio=neck_ratio,
            smooth_px=smooth_px,
            min_area_px=int(min_area_px),
        )
    else:
        labels, _ = ndi.label(crystal, structure=_STRUCTURE_8)
    if join_occluded:
        labels = _join_occluded(labels)
    return filter_and_renumber(labels, 1 if keep_small else min_area_px)


def _check_split_settings(
    split: str, min_area_px: int, min_depth_px: float, neck_ratio: float, smooth_px: float
) -> None:
    if split not in SPLIT_METHODS:
        raise ConfigError(f"split {split!r} is unknown; use one of {', '.join(SPLIT_METHODS)}.")
    if isinstance(min_area_px, bool) or int(min_area_px) != min_area_px or min_area_px < 1:
        raise ConfigError(f"min_area_px must be an integer >= 1, got {min_area_px!r}.")
    if not (math.isfinite(min_depth_px) and min_depth_px >= 0):
        raise ConfigError(f"min_depth_px must be >= 0, got {min_depth_px!r}.")
    if not (0 < neck_ratio <= 1):
        raise ConfigError(f"neck_ratio must lie in (0, 1], got {neck_ratio!r}.")
    if not (math.isfinite(smooth_px) and smooth_px >= 0):
        raise ConfigError(f"smooth_px must be >= 0 (0 = no smoothing), got {smooth_px!r}.")


def _isin(mask: np.ndarray, values: Sequence[int]) -> np.ndarray:
    if len(values) == 1:
        return mask == values[0]
    return np.isin(mask, values)


# --------------------------------------------------------------------------- watershed


def _contacts(
    labels: np.ndarray, n: int
) -> Iterator[tuple[np.ndarray, tuple[slice, slice], tuple[slice, slice], np.ndarray]]:
    """Pixel pairs where two different labels touch (8-connectivity), one offset at a time.

    Yields ``(keys, at_a, at_b, touch)``: ``labels[at_a]`` and ``labels[at_b]`` are the
    image shifted against itself by one of the four forward neighbour offsets,
    ``touch`` marks the pairs of two different non-zero labels, and ``keys`` codes each
    such pair as ``min * (n + 1) + max`` (n: the largest label).
    """
    h, w = labels.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ya, yb = slice(0, h - dy), slice(dy, h)
        xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(1, w), slice(0, w - 1))
        a, b = labels[ya, xa], labels[yb, xb]
        touch = (a != b) & (a > 0) & (b > 0)
        if not touch.any():
            continue
        ra, rb = a[touch].astype(np.int64), b[touch].astype(np.int64)
        yield np.minimum(ra, rb) * (n + 1) + np.maximum(ra, rb), (ya, xa), (yb, xb), touch


def _split_watershed(
    crystal: np.ndarray,
    *,
    min_depth_px: float,
    neck_ratio: float,
    smooth_px: float,
    min_area_px: int,
    height: np.ndarray | None = None,
) -> np.ndarray:
    """Distance-transform watershed from all maxima, then merging across shallow or wide necks.

    ``height`` replaces the distance transform of ``crystal`` as the map that is
    flooded (same shape as ``crystal``; the distance split passes its blend).
    """
    if not crystal.any():
        return np.zeros(crystal.shape, dtype=np.int32)
    # Work on the bounding box of the foreground (plus a margin for the smoothing).
    rows = np.flatnonzero(crystal.any(axis=1))
    cols = np.flatnonzero(crystal.any(axis=0))
    pad = math.ceil(3 * smooth_px) + 1
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, crystal.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, crystal.shape[1])
    fg = crystal[y0:y1, x0:x1]

    if height is None:
        dist = ndi.distance_transform_edt(fg).astype(np.float32)
    else:
        dist = np.asarray(height[y0:y1, x0:x1], dtype=np.float32)
    if smooth_px > 0:
        dist = ndi.gaussian_filter(dist, smooth_px, mode="nearest")
        dist[~fg] = 0.0
    peaks = local_maxima(dist, connectivity=2, allow_borders=True) & fg
    markers, n = ndi.label(peaks, structure=_STRUCTURE_8)
    regions = watershed(-dist, markers, mask=fg, connectivity=2)
    if n > 1:
        lut = _merge_regions(regions, dist, n, min_depth_px, neck_ratio, min_area_px)
        regions = lut[regions]
    out = np.zeros(crystal.shape, dtype=np.int32)
    out[y0:y1, x0:x1] = regions
    return out


def _merge_regions(
    regions: np.ndarray,
    dist: np.ndarray,
    n: int,
    min_depth_px: float,
    neck_ratio: float,
    min_area_px: int,
) -> np.ndarray:
    """Lookup table region -> merged id, merging across insignificant saddles.

    Saddles are visited from the highest down (as in the persistence of the
    maxima): at each, the two current groups merge unless the lower one's peak
    stands at least ``min_depth_px`` above the saddle and the saddle is below
    ``neck_ratio`` times that peak, and both groups have ``min_area_px`` pixels
    (a fragment too small to be measured joins its neighbour rather than being
    dropped later).
    """
    peak = np.zeros(n + 1, dtype=np.float64)
    flat_r = regions.ravel()
    np.maximum.at(peak, flat_r, dist.ravel().astype(np.float64))
    size = np.bincount(flat_r, minlength=n + 1).tolist()

    keys, saddles = [], []
    for key, at_a, at_b, touch in _contacts(regions, n):
        keys.append(key)
        saddles.append(np.minimum(dist[at_a][touch], dist[at_b][touch]))
    lut = np.arange(n + 1, dtype=np.int32)
    if not keys:
        return lut
    key = np.concatenate(keys)
    sad = np.concatenate(saddles).astype(np.float64)
    order = np.lexsort((sad, key))
    key, sad = key[order], sad[order]
    last = np.r_[key[1:] != key[:-1], True]  # highest saddle of every pair
    key, sad = key[last], sad[last]
    pa, pb = key // (n + 1), key % (n + 1)

    parent = list(range(n + 1))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    top = peak.tolist()
    for k in np.argsort(-sad, kind="stable").tolist():
        ra, rb = find(int(pa[k])), find(int(pb[k]))
        if ra == rb:
            continue
        low = min(top[ra], top[rb])
        s = float(sad[k])
        big = size[ra] >= min_area_px and size[rb] >= min_area_px
        if big and low - s >= min_depth_px and s < neck_ratio * low:
            continue  # a real neck between two measurable crystals: keep them apart
        if top[ra] < top[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
    roots = np.array([find(i) for i in range(n + 1)], dtype=np.int32)
    return roots


# --------------------------------------------------------------------------- boundary class


def _split_boundary(
    interior: np.ndarray,
    boundary: np.ndarray,
    other_crystals: np.ndarray,
    necks: dict[str, float] | None = None,
) -> np.ndarray:
    """Markers from the interior cut apart by the boundary class, grown back over both.

    With ``necks`` (the watershed settings), each marker is also split where its
    distance transform narrows, as :func:`_split_watershed` splits a crystal mask.
    """
    fg = interior | boundary
    # Pixels next to crystals of classes not measured (their boundary rings lie there).
    near_other = (
        ndi.binary_dilation(other_crystals, structure=_STRUCTURE_8)
        if other_crystals.any()
        else None
    )
    markers, n = ndi.label(interior, structure=_STRUCTURE_8)
    if n:
        # Specks of interior (a few pixels where a thin crystal widens) seed no
        # particle of their own; the surrounding crystal's marker grows over them.
        size = np.bincount(markers.ravel())
        small = size < MIN_MARKER_PX
        small[0] = False
        if small.any():
            markers = np.where(small[markers], 0, markers)
            markers, n = ndi.label(markers > 0, structure=_STRUCTURE_8)
    markers, n = _whole_thin_components(markers, n, fg, near_other)
    if n and necks is not None:
        markers = _split_watershed(markers > 0, **necks)  # type: ignore[arg-type]
        n = int(markers.max())
    if n == 0:
        grown = np.zeros(interior.shape, dtype=np.int32)
    else:
        # Flooding a flat image grows the markers breadth first, so each boundary
        # pixel joins the marker nearest to it along the foreground.
        flat = np.zeros(interior.shape, dtype=np.uint8)
        grown = watershed(flat, markers, mask=fg, connectivity=2).astype(np.int32)
    rest = fg & (grown == 0)
    if rest.any():
        pieces, m = ndi.label(rest, structure=_STRUCTURE_8)
        if near_other is not None:
            # Boundary rings of crystals of classes not measured are no particles.
            drop = np.unique(pieces[near_other & (pieces > 0)])
            keep = np.ones(m + 1, dtype=bool)
            keep[drop] = False
            keep[0] = False
            pieces = np.where(keep[pieces], pieces, 0)
        grown = np.where(pieces > 0, pieces + n, grown).astype(np.int32)
    return _merge_thin_contacts(grown, fg)


def _split_distance(
    interior: np.ndarray,
    boundary: np.ndarray,
    other_crystals: np.ndarray,
    distance: DistanceSplit,
    min_area_px: int,
) -> np.ndarray:
    """Marker-controlled watershed of a blend of two distance transforms.

    The map flooded is ``(1 - rim_weight) * d_fg + rim_weight * d_in``: ``d_fg`` the
    distance to the background of the foreground (interior and boundary), ``d_in``
    the distance to the background or the boundary class of the interior. Its
    maxima seed regions that are merged across saddles not at least
    ``min_depth_px`` deep or not narrower than ``neck_ratio`` times the lower peak
    (:func:`_merge_regions`). Thin components (needles drawn nearly all boundary)
    are one particle each, as in the boundary split.
    """
    fg = interior | boundary
    if not fg.any():
        return np.zeros(fg.shape, dtype=np.int32)
    w = distance.rim_weight
    height = ndi.distance_transform_edt(fg).astype(np.float32)
    if boundary.any() and w > 0:
        d_in = ndi.distance_transform_edt(interior).astype(np.float32)
        height = (1 - w) * height + w * d_in
    labels = _split_watershed(
        fg,
        min_depth_px=distance.min_depth_px,
        neck_ratio=distance.neck_ratio,
        smooth_px=distance.smooth_px,
        min_area_px=min_area_px,
        height=height,
    )
    near_other = (
        ndi.binary_dilation(other_crystals, structure=_STRUCTURE_8)
        if other_crystals.any()
        else None
    )
    markers, _ = ndi.label(interior, structure=_STRUCTURE_8)
    on_thin, _ = _thin_components(markers, fg, near_other)
    if on_thin is not None:
        # As in the hybrid split: a thin component is cut only at the necks of its own
        # distance transform (where a needle crosses another), never along its length.
        thin = _split_watershed(
            on_thin,
            min_depth_px=DEFAULT_MIN_DEPTH_PX,
            neck_ratio=DEFAULT_NECK_RATIO,
            smooth_px=DEFAULT_SMOOTH_PX,
            min_area_px=MIN_MARKER_PX,
        )
        labels[on_thin] = int(labels.max()) + thin[on_thin]
    return _merge_thin_contacts(labels, fg)


def _whole_thin_components(
    markers: np.ndarray, n: int, fg: np.ndarray, near_other: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """Make each thin foreground component one marker of its own, whatever its interior.

    A crystal at most :data:`THIN_DEPTH_PX` deep (about five pixels wide) is nearly
    all boundary ring, and the few interior pixels the model draws inside it come
    and go along its length: as markers they would cut one needle into many. The
    same holds for an elongated component (moment aspect ratio at least
    :data:`THIN_MIN_ELONGATION`) up to :data:`THIN_ELONGATED_DEPTH_PX` deep whose
    interior is nowhere more than two pixels wide: a needle whose rim is drawn two
    pixels wide. Touching crystals side by side make a component deeper than that,
    crossing ones one that is not elongated, and two needles end to end, each with
    an interior of its own, one with a wider interior.
    Components that reach into ``near_other`` (next to crystals of classes not
    measured) are those crystals' rings, not crystals, and are left alone.
    Returns the markers, renumbered 1..n, and n.
    """
    on_thin, pieces = _thin_components(markers, fg, near_other)
    if on_thin is None:
        return markers, n
    out, n = ndi.label((markers > 0) & ~on_thin, structure=_STRUCTURE_8)
    thin_ids, thin_pieces = np.unique(pieces[on_thin], return_inverse=True)
    out[on_thin] = n + 1 + thin_pieces
    return out.astype(np.int32), n + len(thin_ids)


def _thin_components(
    markers: np.ndarray, fg: np.ndarray, near_other: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """Pixels of the thin foreground components (see :func:`_whole_thin_components`),
    or None if there are none, and the 8-connected components of ``fg``."""
    pieces, m = ndi.label(fg, structure=_STRUCTURE_8)
    if m == 0:
        return None, pieces
    # Deeper than THIN_DEPTH_PX somewhere = something survives erosion by that disc
    # (as a distance transform would say, but several times faster).
    core = ndi.binary_erosion(fg, structure=_THIN_DISC, border_value=1)
    thin = np.ones(m + 1, dtype=bool)
    thin[0] = False
    thin[pieces[core]] = False
    # Up to THIN_ELONGATED_DEPTH_PX deep: thin too if elongated and its interior is a
    # line at most two pixels wide (two needles end to end, each drawn with its own
    # wider interior, stay two).
    wider = ndi.binary_erosion(fg, structure=_THIN_ELONGATED_DISC, border_value=1)
    fairly_thin = ~thin
    fairly_thin[0] = False
    fairly_thin[pieces[wider]] = False
    fairly_thin[pieces[ndi.binary_erosion(markers > 0, structure=_STRUCTURE_8)]] = False
    if fairly_thin.any():
        _, _, _, _, half_len, half_wid = _axes(pieces, m)
        thin |= fairly_thin & (half_len >= THIN_MIN_ELONGATION * half_wid)
    if near_other is not None:
        thin[pieces[near_other]] = False
    if not thin.any():
        return None, pieces
    return thin[pieces], pieces


def _merge_thin_contacts(labels: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Merge regions that meet only where the foreground is at most 2 px wide.

    A crystal too thin somewhere to have an interior there (all boundary) breaks
    its interior, and so its marker, in two; where the two halves meet, every
    pixel on either side of the contact touches the background. Two crystals
    that touch each other meet across a contact wider than that.
    """
    n = int(labels.max())
    if n < 2:
        return labels
    pad = np.pad(fg, 1, constant_values=True)
    rim = fg & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    keys, wide = [], []
    for key, at_a, at_b, touch in _contacts(labels, n):
        keys.append(key)
        wide.append(~(rim[at_a][touch] & rim[at_b][touch]))
    if not keys:
        return labels
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    n_wide = np.bincount(inverse, weights=np.concatenate(wide), minlength=len(key))
    thin = key[n_wide == 0]
    if not len(thin):
        return labels
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(thin)), (thin // (n + 1), thin % (n + 1))), shape=(n + 1, n + 1)
    )
    _, component = connected_components(graph, directed=False)
    # Renumber so that 0 stays background.
    lut = (component + 1).astype(np.int32)
    lut[0] = 0
    return lut[labels]


def _trim_band(labels: np.ndarray, interior: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Drop the outer layer of a boundary band drawn two pixels wide, particle by particle.

    Boundary pixels more than one pixel (3×3) from any interior are dropped, except
    those three pixels or more from it (thin parts of the crystal) and their
    neighbours. A particle is trimmed only if it has an interior and its boundary
    pixels more than one pixel from the interior are at most
    :data:`TRIM_MAX_FRACTION` of it (thin crystals are kept as drawn).
    """
    near = ndi.binary_dilation(interior, structure=_STRUCTURE_8)
    far = boundary & ~near & (labels > 0)
    if not far.any():
        return labels
    n = int(labels.max())
    area = np.bincount(labels.ravel(), minlength=n + 1)
    trim = np.bincount(labels[interior], minlength=n + 1) > 0
    trim &= np.bincount(labels[far], minlength=n + 1) <= TRIM_MAX_FRACTION * area
    trim[0] = False
    # The outer layer of a band two pixels wide lies exactly two pixels from the
    # interior; band that reaches further is a thin part of the crystal (a bridge, a
    # tail, a point) and stays, with the pixels that join it to the rest.
    deep = far & ~ndi.binary_dilation(near, structure=_STRUCTURE_8)
    if deep.any():
        far &= ~ndi.binary_dilation(deep, structure=_STRUCTURE_8)
    return np.where(far & trim[labels], 0, labels).astype(np.int32)


# --------------------------------------------------------------------------- occlusion


def _axes(labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Per label 0..n: area, centroid (y, x), axis angle (rad, x towards y), and the
    half length and half width of the rectangle with the same second moments.

    From the moments that :func:`~crystalseg.measure.features.measure_frame` uses, each
    variance widened by 1/12 px², the spread of a pixel's own area, so that a line one
    pixel wide has a width.
    """
    geo = FrameGeometry(labels)
    m = geo.moment_features()
    area, cy, cx, angle, half_len, half_wid = (np.zeros(n + 1) for _ in range(6))
    ids = geo.ids
    area[ids], cy[ids], cx[ids] = m["area"], m["centroid_y"], m["centroid_x"]
    angle[ids] = np.pi / 2 - m["orientation"]  # skimage's is from the row axis
    half_len[ids] = np.sqrt(3 * ((m["axis_major_length"] / 4) ** 2 + 1 / 12))
    half_wid[ids] = np.sqrt(3 * ((m["axis_minor_length"] / 4) ** 2 + 1 / 12))
    return area, cy, cx, angle, half_len, half_wid


def _angle_between(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Angle between undirected axes (rad, 0..pi/2)."""
    d = np.mod(np.asarray(a) - np.asarray(b), np.pi)
    return np.minimum(d, np.pi - d)


def _join_occluded(labels: np.ndarray) -> np.ndarray:
    """Give the pieces of one occluded elongated crystal one label (see module docstring).

    Labels keep their ids (a joined piece takes the smaller id); nothing is renumbered.
    """
    n = int(labels.max())
    if n < 3:
        return labels
    area, cy, cx, angle, half_len, half_wid = _axes(labels, n)
    ids = np.arange(n + 1)
    present = area >= 2
    present[0] = False
    elongated = present & (half_len >= JOIN_MIN_ELONGATION * np.maximum(half_wid, 1e-9))
    max_angle = math.radians(JOIN_MAX_ANGLE_DEG)
    parent = ids.copy()

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    anchors = np.flatnonzero(elongated)
    for block in np.array_split(anchors, max(1, math.ceil(len(anchors) * n / 2**20))):
        a = block[:, None]  # anchors (rows) against every label (columns)
        ux, uy = np.cos(angle[a]), np.sin(angle[a])
        vx, vy = cx[None, :] - cx[a], cy[None, :] - cy[a]
        gap = np.abs(vx * ux + vy * uy) - half_len[a] - half_len[None, :]
        cand = (
            present[None, :]
            & (ids[None, :] != a)
            & (area[None, :] <= area[a])  # the larger piece is the anchor
            & (np.abs(vy * ux - vx * uy) <= np.maximum(1.0, half_wid[a]))
            & (gap > 0)
            & (gap <= JOIN_MAX_GAP_PX)
            & (half_wid[None, :] <= 1.5 * half_wid[a] + 0.5)
        )
        same_way = (_angle_between(angle[None, :], angle[a]) <= max_angle) & (
            half_wid[a] <= 1.5 * half_wid[None, :] + 0.5
        )
        cand &= ~elongated[None, :] | same_way
        for i, b in np.argwhere(cand).tolist():
            ra, rb = find(int(block[i])), find(b)
            if ra != rb and _gap_is_occluded(labels, int(block[i]), b, cy, cx, angle, elongated):
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n + 1)])
    if (roots == ids).all():
        return labels
    return roots[labels].astype(np.int32)


def _gap_is_occluded(
    labels: np.ndarray,
    a: int,
    b: int,
    cy: np.ndarray,
    cx: np.ndarray,
    angle: np.ndarray,
    elongated: np.ndarray,
) -> bool:
    """Whether the straight line between the centroids of ``a`` and ``b`` crosses, between
    the two, only other particles (at least one, none collinear with ``a``) and at most
    one pixel of background."""
    length = math.hypot(cx[b] - cx[a], cy[b] - cy[a])
    steps = max(math.ceil(length / 0.5), 2)
    f = np.linspace(0.0, 1.0, steps + 1)
    ys = np.clip(np.rint(cy[a] + f * (cy[b] - cy[a])).astype(int), 0, labels.shape[0] - 1)
    xs = np.clip(np.rint(cx[a] + f * (cx[b] - cx[a])).astype(int), 0, labels.shape[1] - 1)
    on = labels[ys, xs]
    in_a, in_b = np.flatnonzero(on == a), np.flatnonzero(on == b)
    if not in_a.size or not in_b.size or in_a.max() > in_b.min():
        return False
    between = on[in_a.max() + 1 : in_b.min()]
    if between.size == 0 or np.count_nonzero(between == 0) > 2:  # 2 samples = 1 px
        return False
    others = np.unique(between[between > 0])
    if not others.size:
        return False
    crossing = _angle_between(angle[others], angle[a]) >= math.radians(JOIN_MIN_CROSSING_DEG)
    return bool((~elongated[others] | crossing).all())


# --------------------------------------------------------------------------- finishing


def filter_and_renumber(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """Drop labels under ``min_area_px`` pixels and renumber the rest 1..n in raster order.

    The last step of :func:`label_instances`; ``crystalseg evaluate`` passes the
    annotation through it too, so true and measured particles meet the same filter.

    Parameters
    ----------
    labels : ndarray, shape (y, x), non-negative integer dtype
        Instance labels, 0 background.
    min_area_px : int
        Smallest area in pixels that a label keeps.

    Returns
    -------
    ndarray, shape (y, x), int32
    """
    flat = labels.ravel()
    if flat.size == 0 or not flat.any():
        return np.zeros(labels.shape, dtype=np.int32)
    area = np.bincount(flat)
    ids, first = np.unique(flat, return_index=True)
    keep = (ids > 0) & (area[ids] >= min_area_px)
    ids, first = ids[keep], first[keep]
    lut = np.zeros(len(area), dtype=np.int32)
    lut[ids[np.argsort(first, kind="stable")]] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


# --------------------------------------------------------------------------- evaluation


def truth_pieces(true_labels: np.ndarray, min_area_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The visible pieces of true instances, and the ids of those a measurement could count.

    An occluded crystal can show as several pieces: each 8-connected piece of one true
    label is its own instance here. Returns the piece labels and the ids (> 0) of the
    pieces of at least ``min_area_px``, for ``instance_scores(..., truth_ids=ids)``.
    """
    from skimage.measure import label as label_components

    pieces = label_components(np.asarray(true_labels), background=0, connectivity=2)
    ids = np.flatnonzero(np.bincount(pieces.ravel()) >= min_area_px)
    return pieces, ids[ids > 0]


def instance_scores(
    labels: np.ndarray,
    truth: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    truth_ids: np.ndarray | None = None,
) -> dict[str, float | int]:
    """How well instance labels match ground-truth instances of the same frame.

    Parameters
    ----------
    labels, truth : ndarray, shape (y, x), integer dtype
        Predicted and true instance ids (0 background).
    iou_threshold : float
        A prediction matches a truth instance when their IoU exceeds this
        (≥ 0.5 makes the matching unique).
    truth_ids : ndarray, optional
        Only these true instances are scored (e.g. those above a detection
        limit); predictions are scored when most of their pixels lie on one of
        them, or on background.

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``matched``, ``precision``, ``recall``, ``f1``;
        ``over_split`` (true instances of which two or more predictions each
        take at least half their own pixels) and ``merged`` (true instances
        that put at least half their pixels into a prediction shared with
        another such instance), and their rates per true instance;
        ``count_error`` = (n_pred − n_true) / n_true.
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    if labels.shape != truth.shape:
        raise MaskValueError(f"labels {labels.shape} and truth {truth.shape} differ in shape.")
    p_flat = labels.ravel().astype(np.int64)
    t_flat = truth.ravel().astype(np.int64)
    n_p = int(p_flat.max(initial=0)) + 1
    n_t = int(t_flat.max(initial=0)) + 1
    p_area = np.bincount(p_flat, minlength=n_p)
    t_area = np.bincount(t_flat, minlength=n_t)
    both = (p_flat > 0) | (t_flat > 0)
    pair, inter = np.unique(p_flat[both] * n_t + t_flat[both], return_counts=True)
    pp, tt = pair // n_t, pair % n_t

    t_valid = t_area > 0
    t_valid[0] = False
    if truth_ids is not None:
        chosen = np.zeros(n_t, dtype=bool)
        ids = np.asarray(truth_ids, dtype=np.int64)
        chosen[ids[(ids > 0) & (ids < n_t)]] = True
        t_valid &= chosen
    # Each prediction's main truth (the one holding most of its pixels).
    p_main = np.zeros(n_p, dtype=np.int64)
    p_main_px = np.zeros(n_p, dtype=np.int64)
    order = np.lexsort((inter, pp))
    last = np.ones(pp.size, dtype=bool)  # the last (largest) pair of each prediction
    last[:-1] = pp[order][1:] != pp[order][:-1]
    sel = order[last]
    p_main[pp[sel]] = tt[sel]
    p_main_px[pp[sel]] = inter[sel]
    p_valid = p_area > 0
    p_valid[0] = False
    if truth_ids is not None:
        p_valid &= t_valid[p_main] | (p_main == 0)

    real = (pp > 0) & (tt > 0)
    iou = inter[real] / (p_area[pp[real]] + t_area[tt[real]] - inter[real])
    hit = (iou > iou_threshold) & t_valid[tt[real]] & p_valid[pp[real]]
    matched = int(hit.sum())
    n_true, n_pred = int(t_valid.sum()), int(p_valid.sum())

    # Over-split: ≥ 2 predictions that each lie mostly (≥ 50 %) inside one true instance.
    mostly = p_valid & (p_main > 0) & (2 * p_main_px >= p_area)
    children = np.bincount(p_main[mostly], minlength=n_t)
    over_split = int((t_valid & (children >= 2)).sum())
    # Merged: ≥ 2 true instances that each put ≥ 50 % of their pixels into one prediction.
    t_part = real & (2 * inter >= t_area[tt]) & t_valid[tt]
    shared = np.bincount(pp[t_part], minlength=n_p)
    merged = int((shared[pp[t_part]] >= 2).sum())

    precision = matched / n_pred if n_pred else math.nan
    recall = matched / n_true if n_true else math.nan
    f1 = 2 * matched / (n_pred + n_true) if n_pred + n_true else math.nan
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "matched": matched,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "over_split": over_split,
        "merged": merged,
        "over_split_rate": over_split / n_true if n_true else math.nan,
        "merged_rate": merged / n_true if n_true else math.nan,
        "count_error": (n_pred - n_true) / n_true if n_true else math.nan,
    }


def matched_areas(
    true_labels: np.ndarray, labels: np.ndarray, truth_ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """True instances and the labels that match them, with both areas (px).

    Each true instance (or each of ``truth_ids``) is paired with the label that
    overlaps it most; the pair is kept when their IoU is at least 0.5.

    Parameters
    ----------
    true_labels, labels : ndarray, shape (y, x), integer dtype
        True and measured instance ids (0 background).
    truth_ids : ndarray, optional
        Only these true instances (e.g. those not cut by the frame edge).

    Returns
    -------
    dict of 1-D arrays, one entry per matched true instance in id order:
    ``truth`` and ``label`` (ids), ``true_area`` and ``area`` (px), ``perimeter``
    (of the true instance, skimage's)
    """
    from skimage.measure import regionprops_table

    t = np.asarray(true_labels).ravel().astype(np.int64)
    p = np.asarray(labels).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise MaskValueError(
            f"labels {np.shape(labels)} and truth {np.shape(true_labels)} differ in shape."
        )
    out: dict[str, np.ndarray] = {
        k: np.zeros(0, np.float64 if k == "perimeter" else np.int64)
        for k in ("truth", "label", "true_area", "area", "perimeter")
    }
    both = (t > 0) & (p > 0)
    if not both.any():
        return out
    pairs, overlap = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    best = np.lexsort((-overlap, pairs[0]))  # per crystal, the largest overlap first
    first = np.r_[True, np.diff(pairs[0, best]) != 0]
    crystal, particle, inter = pairs[0, best][first], pairs[1, best][first], overlap[best][first]
    area_t, area_p = np.bincount(t), np.bincount(p)
    keep = inter / (area_t[crystal] + area_p[particle] - inter) >= 0.5
    if truth_ids is not None:
        keep &= np.isin(crystal, np.asarray(truth_ids))
    crystal, particle = crystal[keep], particle[keep]
    if not len(crystal):
        return out
    props = regionprops_table(
        np.asarray(true_labels).astype(np.int32), properties=("label", "perimeter")
    )
    perimeter = np.zeros(len(area_t))
    perimeter[props["label"]] = props["perimeter"]
    return {
        "truth": crystal,
        "label": particle,
        "true_area": area_t[crystal],
        "area": area_p[particle],
        "perimeter": perimeter[crystal],
    }


def outline_offsets(
    true_labels: np.ndarray, labels: np.ndarray, truth_ids: np.ndarray | None = None
) -> np.ndarray:
    """How far measured outlines lie outside the true ones, one value (px) per crystal.

    For each true instance (or each of ``truth_ids``) matched by a label
    (:func:`matched_areas`): (label area - true area) / true perimeter. Positive means
    particles drawn too large, which biases every size upwards: +1 is a particle
    grown by one pixel all round.

    Returns
    -------
    ndarray of float64, one entry per matched true instance (in id order)
    """
    return offsets_of_matches(matched_areas(true_labels, labels, truth_ids))


def offsets_of_matches(matched: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`outline_offsets` of a :func:`matched_areas` result (for callers that use
    the matches for more than the offsets), one value (px) per matched crystal with a
    perimeter."""
    ok = matched["perimeter"] > 0
    area, true_area = matched["area"][ok], matched["true_area"][ok]
    return ((area - true_area) / matched["perimeter"][ok]).astype(np.float64)


__all__ = [
    "BOUNDARY_CODES",
    "JOIN_MAX_ANGLE_DEG",
    "JOIN_MAX_GAP_PX",
    "JOIN_MIN_CROSSING_DEG",
    "JOIN_MIN_ELONGATION",
    "SPLIT_METHODS",
    "TRIM_MAX_FRACTION",
    "DistanceSplit",
    "SplitMethod",
    "boundary_class",
    "crystal_classes",
    "instance_scores",
    "label_instances",
    "matched_areas",
    "offsets_of_matches",
    "outline_offsets",
]
