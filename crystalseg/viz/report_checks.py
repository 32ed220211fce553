"""What makes a run's numbers less trustworthy: the report's settings and its checks.

:class:`ReportSettings` says what the report shows and when it warns;
:func:`find_warnings` reads the results of a measured run (group ``psd``, the
particle table, the stage records) and lists :class:`ReportWarning` s: frames
without particles, many particles cut by the frame edge, frames out of focus,
no pixel size, particles outside the size bins, unfinished stages. Both the HTML
and the PDF report print them (:mod:`crystalseg.viz.report`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crystalseg.dims import TIME
from crystalseg.errors import ConfigError
from crystalseg.summary import counted

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

log = logging.getLogger(__name__)

Basis = Literal["number", "volume"]
ColorBy = Literal["status", "size"]

#: Fewest particles in a frame for its median sharpness to say anything about focus.
FOCUS_MIN_PARTICLES = 5


@dataclass(frozen=True)
class ReportSettings:
    """What the report shows and when it warns.

    Parameters
    ----------
    basis : {"number", "volume"}
        Basis of the statistics and curve figures (the heatmap is drawn on both).
    overlay_frames : tuple of int, optional
        Frames drawn full size with the particle outlines (negative counts from
        the end). None draws the last frame.
    montage_n : int
        Frames sampled evenly over the run for the overlay montage; 0 leaves it out.
    color_by : {"status", "size"}
        Outline colour of the overlays: counted or excluded (and why), or size.
    edge_fraction_warning : float
        Warn when more than this fraction (0..1) of the particles found touch the
        frame edge: with edge particles excluded, large crystals are under-counted.
        The same fraction bounds the particles excluded as out of focus or for low
        model confidence.
    focus_drop_warning : float
        Warn about frames whose median particle sharpness is below this fraction
        (0..1) of the run's median; only frames with at least
        :data:`FOCUS_MIN_PARTICLES` particles are judged.
    outside_bins_warning : float
        Warn when more than this fraction (0..1) of a frame's particles (number
        basis) fall outside the size bins.
    min_count_warning : float
        Warn when more than this fraction (0..1) of the frames with counted
        particles hold fewer than the measurement's minimum count (no D-values
        there), naming the ``--window`` that pools enough of them.
    dpi : int
        Resolution of the embedded plots and montage. Single-frame overlays keep
        their own, which shows the frame at (at least) its native resolution.
    sop : mapping, optional
        The standard operating procedure file the report was made from (``file``,
        ``sha256``, ``content``, as ``crystalseg report --config`` records it); shown
        with the settings.
    """

    basis: Basis = "number"
    overlay_frames: tuple[int, ...] | None = None
    montage_n: int = 6
    color_by: ColorBy = "status"
    edge_fraction_warning: float = 0.25
    focus_drop_warning: float = 0.5
    outside_bins_warning: float = 0.01
    min_count_warning: float = 0.2
    dpi: int = 100
    sop: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.basis not in ("number", "volume"):
            raise ConfigError(f"basis must be 'number' or 'volume', got {self.basis!r}")
        if self.color_by not in ("status", "size"):
            raise ConfigError(f"color_by must be 'status' or 'size', got {self.color_by!r}")
        if self.overlay_frames is not None:
            frames = tuple(self.overlay_frames)
            if not all(isinstance(f, int | np.integer) and not isinstance(f, bool) for f in frames):
                raise ConfigError(
                    f"overlay_frames must be frame indices such as (0, 50, -1), "
                    f"got {self.overlay_frames!r}"
                )
            object.__setattr__(self, "overlay_frames", tuple(int(f) for f in frames))
        n = self.montage_n
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ConfigError(f"montage_n must be an integer >= 0 (0: no montage), got {n!r}")
        for name in (
            "edge_fraction_warning",
            "focus_drop_warning",
            "outside_bins_warning",
            "min_count_warning",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ConfigError(f"{name} must be a fraction in 0..1, got {value!r}")
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or not 30 <= self.dpi <= 600:
            raise ConfigError(f"dpi must be an integer in 30..600, got {self.dpi!r}")
        if self.sop is not None and not isinstance(self.sop, Mapping):
            raise ConfigError(
                f"sop must be a mapping (file, sha256, content), got {type(self.sop).__name__}"
            )


@dataclass(frozen=True)
class ReportWarning:
    """One thing about a run that makes its numbers less trustworthy.

    Attributes
    ----------
    code : str
        Stable name of the check: ``"no_pixel_size"``, ``"empty_frames"``,
        ``"edge_fraction"``, ``"low_focus"``, ``"out_of_focus_excluded"``,
        ``"low_confidence_excluded"``, ``"below_min_count"``,
        ``"outside_bins"``, ``"unfinished_stage"``, ``"figure_failed"``.
    message : str
        One sentence for the reader, with what to do about it.
    frames : tuple of int
        Frames concerned (empty when the warning is about the whole run).
    """

    code: str
    message: str
    frames: tuple[int, ...] = ()


# --------------------------------------------------------------------------- checks


def frame_ranges(frames: Iterable[int]) -> str:
    """Compact text of frame indices: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    values = sorted({int(f) for f in frames})
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts)


def psd_values(psd: xr.Dataset, name: str) -> np.ndarray | None:
    return np.asarray(psd[name].values) if name in psd else None


def find_warnings(
    psd: xr.Dataset,
    particles: pd.DataFrame | None,
    *,
    stages: Mapping[str, Mapping[str, Any]] | None = None,
    settings: ReportSettings | None = None,
) -> list[ReportWarning]:
    """The warnings of a measured run, from its results alone.

    Parameters
    ----------
    psd : Dataset, dims (time, size_bin)
        Group ``psd`` of the run: ``count_detected``, ``count_kept``,
        ``count_edge``, ``fraction_outside_number`` and the attrs
        ``pixel_size_um`` and ``edge_treatment`` are used when present.
    particles : DataFrame or None
        The particle table (columns ``frame``, ``sharpness``, ``excluded_reason``);
        None skips the focus checks.
    stages : mapping, optional
        :func:`crystalseg.store.stage_info` of the run; unfinished stages are reported.
    settings : ReportSettings, optional
        The thresholds (default :class:`ReportSettings`()).

    Returns
    -------
    list of ReportWarning, in order of importance.
    """
    settings = ReportSettings() if settings is None else settings
    out: list[ReportWarning] = []
    for name, info in (stages or {}).items():
        if name.endswith(".next"):  # an interrupted replacement: the results shown are whole
            continue
        if info.get("status") != "finished":
            done, total = info.get("frames_done"), info.get("frames_total")
            extent = f" ({done} of {total} frames)" if done is not None else ""
            out.append(
                ReportWarning(
                    "unfinished_stage",
                    f"Stage '{name}' did not finish{extent}; its results may be partial. "
                    f"Run 'crystalseg {name}' again to complete it.",
                )
            )
    if psd.attrs.get("pixel_size_um") is None:
        out.append(
            ReportWarning(
                "no_pixel_size",
                "The run has no pixel size, so every size is in pixels (px), not micrometres. "
                "Re-import the recording with --pixel-size UM to report micrometres.",
            )
        )
    detected = psd_values(psd, "count_detected")
    kept = psd_values(psd, "count_kept")
    n_frames = int(psd.sizes.get(TIME, 0))
    if detected is not None:
        empty = np.flatnonzero(detected == 0)
        if len(empty):
            out.append(
                ReportWarning(
                    "empty_frames",
                    f"{len(empty)} of {n_frames} frames have no particles at all (frames "
                    f"{frame_ranges(empty)}). Before nucleation that is expected; otherwise "
                    "check the overlays: the model may miss faint or out-of-focus crystals.",
                    tuple(int(f) for f in empty),
                )
            )
        if kept is not None:
            uncounted = np.flatnonzero((detected > 0) & (kept == 0))
            if len(uncounted):
                out.append(
                    ReportWarning(
                        "empty_frames",
                        f"{len(uncounted)} frames have particles but none counted in the "
                        f"distributions (frames {frame_ranges(uncounted)}): all were excluded "
                        "(edge, focus or size).",
                        tuple(int(f) for f in uncounted),
                    )
                )
    below = psd_values(psd, "below_min_count")
    if below is not None and kept is not None:
        with_particles = kept > 0
        low = np.flatnonzero(below.astype(bool) & with_particles)
        share = len(low) / max(int(with_particles.sum()), 1)
        if len(low) and share > settings.min_count_warning:
            from crystalseg.measure.results import suggest_window

            min_count = psd.attrs.get("min_count", "the minimum")
            window = suggest_window(psd)
            advice = (
                f" Pool consecutive frames with 'crystalseg measure RUN --window {window} "
                "--overwrite' (window D-values and intervals in group psd_window)."
                if window
                else ""
            )
            out.append(
                ReportWarning(
                    "below_min_count",
                    f"{share:.0%} of the frames with counted particles ({len(low)} of "
                    f"{int(with_particles.sum())}) hold fewer than {min_count}: they have no "
                    "D-values, and a D-value from so few particles would be mostly noise." + advice,
                    tuple(int(f) for f in low),
                )
            )
    edge = psd_values(psd, "count_edge")
    if detected is not None and edge is not None and detected.sum() > 0:
        fraction = float(edge.sum() / detected.sum())
        if fraction > settings.edge_fraction_warning:
            treatment = psd.attrs.get("edge_treatment", "exclude")
            effect = {
                "exclude": "they are excluded, so large crystals are under-counted and "
                "the sizes biased low",
                "miles-lantuejoul": "they are excluded and the rest weighted up; with this "
                "many the correction is large and noisy",
                "keep": "they are kept as measured, so their sizes are biased low",
            }.get(str(treatment), f"edge treatment: {treatment}")
            out.append(
                ReportWarning(
                    "edge_fraction",
                    f"{fraction:.0%} of the particles found touch the frame edge ({effect}). "
                    "A lower magnification or a larger field keeps more crystals whole.",
                )
            )
    outside = psd_values(psd, "fraction_outside_number")
    if outside is not None:
        over = np.flatnonzero(np.nan_to_num(outside) > settings.outside_bins_warning)
        if len(over):
            worst = float(np.nanmax(outside))
            out.append(
                ReportWarning(
                    "outside_bins",
                    f"In {len(over)} frames up to {worst:.0%} of the particles fall outside "
                    "the size bins and are missing from the PSD; widen them with "
                    "'crystalseg measure --bins MIN MAX N --overwrite'.",
                    tuple(int(f) for f in over),
                )
            )
    if particles is not None and len(particles):
        out.extend(_focus_warnings(particles, settings))
    return out


#: (excluded_reason, warning code, the sentence after "NN% ") for exclusions that,
#: above ``ReportSettings.edge_fraction_warning`` of the particles, deserve a warning.
_EXCLUSION_WARNINGS: tuple[tuple[str, str, str], ...] = (
    (
        "out_of_focus",
        "out_of_focus_excluded",
        "of the particles were excluded as out of focus (--min-sharpness); the counts "
        "are low. Lower the threshold or refocus.",
    ),
    (
        "low_confidence",
        "low_confidence_excluded",
        "of the detections were excluded because the model was unsure of them "
        "(--min-confidence): the recording may look unlike what the model was trained "
        "on. Check the overlays, and fine-tune the model on a few annotated frames "
        "(crystalseg train).",
    ),
)


def _focus_warnings(particles: pd.DataFrame, settings: ReportSettings) -> list[ReportWarning]:
    out = []
    if "sharpness" in particles and "frame" in particles:
        sharp = particles[["frame", "sharpness"]].dropna()
        stats = sharp.groupby("frame")["sharpness"].agg(["median", "size"])
        judged = stats[stats["size"] >= FOCUS_MIN_PARTICLES]
        if len(judged) >= 3:
            typical = float(judged["median"].median())
            low = judged.index[judged["median"] < settings.focus_drop_warning * typical]
            if len(low) and typical > 0:
                out.append(
                    ReportWarning(
                        "low_focus",
                        f"{counted(len(low), 'frame')} look"
                        f"{'s' if len(low) == 1 else ''} out of focus: their median particle "
                        "sharpness "
                        f"is below {settings.focus_drop_warning:.0%} of the run's "
                        f"(frames {frame_ranges(low)}). Sizes there are less reliable; "
                        "check the overlays or exclude blurred particles with "
                        "'crystalseg measure --min-sharpness'.",
                        tuple(int(f) for f in low),
                    )
                )
    if "excluded_reason" in particles:
        for reason, code, message in _EXCLUSION_WARNINGS:
            fraction = int((particles["excluded_reason"] == reason).sum()) / len(particles)
            if fraction > settings.edge_fraction_warning:
                out.append(ReportWarning(code, f"{fraction:.0%} {message}"))
    return out


__all__ = [
    "FOCUS_MIN_PARTICLES",
    "Basis",
    "ColorBy",
    "ReportSettings",
    "ReportWarning",
    "find_warnings",
    "frame_ranges",
    "psd_values",
]
