"""What a measurement does with a run: the settings recorded next to every result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from crystalseg.errors import ConfigError
from crystalseg.measure.distributions import EdgeTreatment, log_bins
from crystalseg.measure.instances import (
    DEFAULT_MIN_DEPTH_PX,
    DEFAULT_NECK_RATIO,
    DEFAULT_SMOOTH_PX,
    SPLIT_METHODS,
    SplitMethod,
)

#: Particle-table columns that may serve as the size of the distributions.
SIZE_COLUMNS: tuple[str, ...] = (
    "ecd",
    "feret_diameter_max",
    "feret_diameter_min",
    "axis_major_length",
    "axis_minor_length",
)

#: Default least counted particles of a frame for its D-values (``MeasureSettings.min_count``).
#: ``benchmarks/coverage.py`` chose it: the smallest n at which the bootstrap interval of
#: the Sauter mean D[3,2] covers the truth in at least 85 % of frames of a narrow
#: log-normal population (sigma 0.25); the number-based D50 interval covers in 93-97 %
#: from n = 5 on (see ``docs/statistics.md``).
DEFAULT_MIN_COUNT = 20

#: Default least mean foreground probability of a counted particle (see
#: ``MeasureSettings.min_confidence``).
DEFAULT_MIN_CONFIDENCE = 0.8

#: Most size bins a measurement may have. Each frame stores a length x width histogram of
#: bins**2 values beside its PSD, so the count sets memory and disk: 200 bins are 320 KB a
#: frame in float64 (1.6 GB for a 5000-frame run before compression); 10**8 bins asked for
#: 71 PiB. Finer bins hold noise, not resolution: 200 log bins over three decades are each
#: 3.5 % wide, about the ECD precision of a 20-pixel crystal; laser diffraction reports
#: ~100 bins, FBRM 90 channels.
MAX_BINS = 200

_EDGES = ("exclude", "miles-lantuejoul", "keep")
_SPLITS = SPLIT_METHODS


@dataclass(frozen=True)
class MeasureSettings:
    """How particles are found, filtered and binned; recorded in the ``psd`` attributes.

    Parameters
    ----------
    min_area_px : int
        Particles with fewer pixels are dropped before measuring (a detection
        limit; the ground truth of synthetic runs is compared with the same limit).
    split : {"auto", "watershed", "boundary", "hybrid", "distance", "none"}
        How touching crystals are separated
        (:func:`~crystalseg.measure.instances.label_instances`): "boundary" cuts
        along the mask's boundary class, "hybrid" splits the pieces it leaves at
        their necks too, "watershed" cuts necks of the crystal mask alone; "auto"
        is "hybrid" for masks with a boundary class, else "watershed".
    neck_ratio, min_depth_px, smooth_px : float
        Watershed and hybrid split: a neck separates two crystals when the distance
        transform at the saddle is below ``neck_ratio`` times the thinner
        crystal's peak and at least ``min_depth_px`` below it; ``smooth_px`` is
        the sigma of the smoothing of the distance transform.
    trim_boundary : bool
        Boundary and hybrid split: drop boundary-class pixels more than one pixel
        outside a particle's interior (the default model draws the crystal rim
        about two pixels wide, half of it outside the crystal, which made sizes
        2-6 % too large); thin crystals, nearly all rim, are kept as drawn. It
        assumes a model trained on a one-pixel boundary inside the crystal (as
        :func:`~crystalseg.classes.class_mask_from_labels` makes); turn it off
        for models trained on wider boundary annotations. A contact class (only
        where crystals touch) is never trimmed.
    join_occluded : bool
        Join the two pieces of an elongated crystal that another crystal crosses in
        front of it into one particle (its area what is visible, its Feret length
        across the gap), so that an occluded needle is counted once, not once per
        piece (:mod:`crystalseg.measure.instances`).
    edge : {"exclude", "miles-lantuejoul", "keep"}
        Particles cut by the frame edge bias sizes low: exclude them (default),
        exclude them and weight the others by the Miles–Lantuéjoul correction,
        or keep them as measured.
    min_sharpness : float or None
        Exclude particles whose ``sharpness`` (mean squared intensity gradient
        over their outline, intensities scaled to 0..1) is below this; None
        keeps all.
    min_confidence : float or None
        Exclude particles whose ``confidence`` (the segmentation model's mean
        foreground probability over the particle, 0..1) is below this; None keeps
        all. It applies where the run stores the model's ``probability`` (runs
        that ``measure`` segments itself, or ``segment --save-probability``);
        masks made elsewhere have no confidence and are kept whole.
    classes : tuple of str, or None
        Mask classes to measure (names from the mask's codes); None measures
        every class but background and boundary.
    size_column : str
        Particle size used for the distributions, one of :data:`SIZE_COLUMNS`
        (default the equivalent circle diameter).
    bins : (float, float, int)
        Lower edge of the first size bin, upper edge of the last, and the
        number of bins (1 to :data:`MAX_BINS`), spaced logarithmically; in µm for
        calibrated runs, px otherwise. The same bins hold for every frame, and for
        both axes of the length × width histogram.
    elongated_aspect_ratio : float
        Crystals with at least this aspect ratio (max / min Feret diameter)
        enter the length × width histogram.
    min_count : int
        Least counted particles of a frame (or pooled window) for its D-values
        and moment means: with fewer they are NaN and ``below_min_count`` is set,
        rather than a number that looks exact (default
        :data:`DEFAULT_MIN_COUNT`, from a measured coverage study).
    window : str or None
        Also pool consecutive frames into windows (group ``psd_window``): ``"60s"``
        (seconds; also ``"2min"``, ``"1h"``) or ``"5"`` (frames), non-overlapping,
        from the first frame; None (default) makes none
        (:func:`~crystalseg.measure.windows.window_distributions`).
    """

    min_area_px: int = 10
    split: SplitMethod = "auto"
    neck_ratio: float = DEFAULT_NECK_RATIO
    min_depth_px: float = DEFAULT_MIN_DEPTH_PX
    smooth_px: float = DEFAULT_SMOOTH_PX
    trim_boundary: bool = True
    join_occluded: bool = True
    edge: EdgeTreatment = "exclude"
    min_sharpness: float | None = None
    min_confidence: float | None = DEFAULT_MIN_CONFIDENCE
    classes: tuple[str, ...] | None = None
    size_column: str = "ecd"
    bins: tuple[float, float, int] = (1.0, 1000.0, 60)
    elongated_aspect_ratio: float = 2.0
    min_count: int = DEFAULT_MIN_COUNT
    window: str | None = None

    def __post_init__(self) -> None:
        area = self.min_area_px
        if isinstance(area, bool) or not isinstance(area, int | np.integer) or area < 1:
            raise ConfigError(f"min_area_px must be an integer >= 1, got {area!r}.")
        object.__setattr__(self, "min_area_px", int(area))
        if self.split not in _SPLITS:
            raise ConfigError(f"split {self.split!r} is unknown; use one of {', '.join(_SPLITS)}.")
        if not (_number(self.neck_ratio) and 0 < self.neck_ratio <= 1):
            raise ConfigError(f"neck_ratio must lie in (0, 1], got {self.neck_ratio!r}.")
        for name in ("min_depth_px", "smooth_px"):
            value = getattr(self, name)
            if not (_number(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}.")
        for name in ("trim_boundary", "join_occluded"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise ConfigError(f"{name} must be True or False, got {value!r}.")
            object.__setattr__(self, name, bool(value))
        if self.edge not in _EDGES:
            raise ConfigError(
                f"edge treatment {self.edge!r} is unknown; use one of {', '.join(_EDGES)}."
            )
        if self.min_sharpness is not None and not (
            _number(self.min_sharpness) and self.min_sharpness >= 0
        ):
            raise ConfigError(
                f"min_sharpness must be a number >= 0 or None (off), got {self.min_sharpness!r}."
            )
        if self.min_confidence is not None and not (
            _number(self.min_confidence) and 0 <= self.min_confidence <= 1
        ):
            raise ConfigError(
                f"min_confidence must be a probability in [0, 1] or None (off), "
                f"got {self.min_confidence!r}."
            )
        if self.classes is not None:
            classes = (self.classes,) if isinstance(self.classes, str) else tuple(self.classes)
            if not classes or not all(isinstance(c, str) and c for c in classes):
                raise ConfigError(
                    f"classes must be class names of the mask, e.g. ('crystal',), "
                    f"got {self.classes!r}."
                )
            object.__setattr__(self, "classes", classes)
        if self.size_column not in SIZE_COLUMNS:
            raise ConfigError(
                f"size_column {self.size_column!r} is not a size; use one of "
                f"{', '.join(SIZE_COLUMNS)}."
            )
        if len(self.bins) != 3:
            raise ConfigError(f"bins must be (min, max, count), got {self.bins!r}.")
        low, high, count = self.bins
        if isinstance(count, bool) or int(count) != count:
            raise ConfigError(f"the bin count must be an integer, got {count!r}.")
        if not 1 <= int(count) <= MAX_BINS:
            raise ConfigError(
                f"{int(count)} size bins asked for; expected 1 to {MAX_BINS} (each frame stores "
                f"a bins x bins length-width histogram, and bins finer than ~3 % hold noise). "
                "Use e.g. 60 bins for 1 um to 1 mm"
            )
        log_bins(float(low), float(high), int(count))  # validates
        object.__setattr__(self, "bins", (float(low), float(high), int(count)))
        if not (_number(self.elongated_aspect_ratio) and self.elongated_aspect_ratio >= 1):
            raise ConfigError(
                f"elongated_aspect_ratio must be >= 1, got {self.elongated_aspect_ratio!r}."
            )
        count = self.min_count
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
            raise ConfigError(f"min_count must be an integer >= 1, got {count!r}.")
        object.__setattr__(self, "min_count", int(count))
        if self.window is not None:
            object.__setattr__(self, "window", format_window(parse_window(self.window)))

    def bin_edges(self) -> np.ndarray:
        """Size-bin edges, shape (count + 1,), from :attr:`bins`."""
        low, high, count = self.bins
        return log_bins(low, high, count)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists), as recorded in the store."""
        out = asdict(self)
        out["bins"] = list(self.bins)
        out["classes"] = None if self.classes is None else list(self.classes)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MeasureSettings:
        """Settings from :meth:`to_dict` output (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown measurement setting(s) {unknown}; known are {sorted(known)}."
            )
        kw = dict(values)
        if kw.get("bins") is not None:
            kw["bins"] = tuple(kw["bins"])
        if kw.get("classes") is not None:
            kw["classes"] = tuple(kw["classes"])
        return cls(**kw)


WindowUnit = Literal["s", "frames"]
_TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}


def parse_window(text: str | int) -> tuple[float, WindowUnit]:
    """A window length from ``"60s"``, ``"2min"``, ``"1h"`` (time) or ``"5"`` / 5 (frames).

    Returns
    -------
    (length, unit) : (float, {"s", "frames"})
        Seconds, or a whole number of frames.

    Raises
    ------
    ConfigError
        Anything else, or a length that is not positive.
    """
    raw = str(text).strip().lower().replace(" ", "")
    hint = "give a time such as '60s', '2min' or '1h', or a number of frames such as '5'"
    for suffix in sorted(_TIME_UNITS, key=len, reverse=True):
        if raw.endswith(suffix) and raw[: -len(suffix)]:
            try:
                value = float(raw[: -len(suffix)]) * _TIME_UNITS[suffix]
            except ValueError:
                break
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"window {text!r} is not a positive length; {hint}.")
            return value, "s"
    try:
        frames = int(raw)
    except ValueError:
        raise ConfigError(f"window {text!r} is not a time or a frame count; {hint}.") from None
    if frames < 1:
        raise ConfigError(f"window {text!r} holds no frame; {hint}.")
    return float(frames), "frames"


def format_window(window: tuple[float, WindowUnit]) -> str:
    """The canonical text of a parsed window: ``"60s"`` or ``"5"``."""
    value, unit = window
    return f"{value:g}s" if unit == "s" else str(int(value))


def min_area_px_from_um2(area_um2: float, pixel_size_um: float) -> int:
    """The ``min_area_px`` that keeps exactly the particles of at least ``area_um2``.

    A particle of ``n`` pixels covers ``n * pixel_size_um**2`` um2, so it is kept when
    ``n >= area_um2 / pixel_size_um**2``: the pixel count is that quotient rounded up
    (at least 1). A quotient within 1e-9 of a whole number counts as that number, so
    that 20 um2 at 0.5 um/px is 80 px, not 81 by rounding error.

    Raises
    ------
    ConfigError
        An area or pixel size that is not a positive number.
    """
    if not (_number(area_um2) and area_um2 > 0):
        raise ConfigError(f"a least area must be a number > 0 um2, got {area_um2!r}.")
    if not (_number(pixel_size_um) and pixel_size_um > 0):
        raise ConfigError(f"the pixel size must be a number > 0 um, got {pixel_size_um!r}.")
    quotient = float(area_um2) / float(pixel_size_um) ** 2
    nearest = round(quotient)
    if abs(quotient - nearest) <= 1e-9 * max(1.0, quotient):
        return max(1, int(nearest))
    return max(1, math.ceil(quotient))


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "DEFAULT_MIN_COUNT",
    "SIZE_COLUMNS",
    "MeasureSettings",
    "format_window",
    "min_area_px_from_um2",
    "parse_window",
]
