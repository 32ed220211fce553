"""One self-contained HTML report of a measured run, to open in a browser or attach to a lab report.

The report reads what the stages wrote and recomputes no measurement: the run's
metadata and calibration (:func:`crystalseg.store.describe_run`), the settings of
every stage (the store's provenance), the figures of :mod:`crystalseg.viz.plots`
and :mod:`crystalseg.viz.overlay` embedded as base64 PNG, a table of D10/D50/D90
and counts at the start, middle and end of the run (from group ``psd``), and
warnings about things that make the numbers less trustworthy (frames without
particles, many particles cut by the frame edge, frames out of focus, no pixel
size, unfinished stages).

Everything (CSS, images) is inside the one file: no scripts, no fonts, no links
to anything outside it, so it opens offline and survives being e-mailed.
Every piece of text that comes from the store goes through :func:`html.escape`.

Each section has a fixed ``id`` (:data:`SECTION_IDS`) so that readers, tests and
scripts can find it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crystalseg.dims import TIME
from crystalseg.errors import ConfigError, CrystalsegError
from crystalseg.store import (
    check_output_outside_run,
    crystalseg_version,
    describe_run,
    file_written_whole,
    make_folder,
)
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.summary import counted, format_duration

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Basis = Literal["number", "volume"]
ColorBy = Literal["status", "size"]

#: ``id`` of every section of the report, in page order.
SECTION_IDS: tuple[str, ...] = (
    "run",
    "warnings",
    "summary",
    "kinetics",
    "plots",
    "overlays",
    "settings",
)

_TITLES = {
    "run": "Run and calibration",
    "warnings": "Warnings",
    "summary": "Summary",
    "kinetics": "Kinetics",
    "plots": "Size distribution over time",
    "overlays": "Segmentation overlays",
    "settings": "Settings of each stage",
}

#: Columns of the particle table the report reads (warnings and the shape figure).
REPORT_COLUMNS: tuple[str, ...] = (
    "frame",
    "feret_diameter_max",
    "feret_diameter_min",
    "kept",
    "sharpness",
    "excluded_reason",
)

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


def _values(psd: xr.Dataset, name: str) -> np.ndarray | None:
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
    detected = _values(psd, "count_detected")
    kept = _values(psd, "count_kept")
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
    below = _values(psd, "below_min_count")
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
    edge = _values(psd, "count_edge")
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
    outside = _values(psd, "fraction_outside_number")
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


# --------------------------------------------------------------------------- summary table

#: (psd variable, row label) of the summary table; sizes first, counts last.
SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("d10_number", "D10, number"),
    ("d50_number", "D50, number"),
    ("d90_number", "D90, number"),
    ("d10_volume", "D10, volume"),
    ("d50_volume", "D50, volume"),
    ("d90_volume", "D90, volume"),
    ("d_4_3", "D[4,3]"),
    ("d_3_2", "D[3,2]"),
    ("span_volume", "span, volume"),
    ("aspect_ratio_mean", "mean aspect ratio"),
    ("count_kept", "n, particles counted"),
    ("count_detected", "particles found"),
)


def summary_frames(psd: xr.Dataset) -> dict[str, int]:
    """Frames of the start, middle and end columns of the summary table.

    Start and end are the first and last frames with D-values (at least the
    minimum count of particles; a nucleating run begins empty), else with counted
    particles, the middle the frame halfway between them; with no counted
    particles at all, the first, middle and last frames.
    """
    n = int(psd.sizes.get(TIME, 0))
    kept = _values(psd, "count_kept")
    present = np.flatnonzero(kept > 0) if kept is not None else np.arange(n)
    below = _values(psd, "below_min_count")
    if below is not None and kept is not None and len(present):
        enough = np.flatnonzero((kept > 0) & ~below.astype(bool))
        if len(enough):
            present = enough
    if len(present) == 0:
        present = np.arange(n)
    if n == 0:
        return {}
    first, last = int(present[0]), int(present[-1])
    return {"start": first, "middle": (first + last) // 2, "end": last}


def summary_table(psd: xr.Dataset) -> pd.DataFrame:
    """D10/D50/D90 (number and volume basis), counts and shape at start, middle and end.

    Parameters
    ----------
    psd : Dataset, dims (time, size_bin)
        Group ``psd`` of a measured run.

    Returns
    -------
    DataFrame
        One row per quantity of :data:`SUMMARY_ROWS` present in ``psd`` (index:
        the variable name), columns ``quantity``, ``units``, ``start``,
        ``middle``, ``end``; ``attrs["frames"]`` and ``attrs["times_s"]`` hold
        the frame and time of each column, ``attrs["intervals"]`` the 95 %
        interval ``{variable: {column: (lower, upper)}}`` of the quantities that
        have one (none for runs measured without intervals).
    """
    import pandas as pd

    frames = summary_frames(psd)
    rows = []
    bounds: dict[str, dict[str, tuple[float, float]]] = {n: {} for n, _ in SUMMARY_ROWS}
    for name, label in SUMMARY_ROWS:
        if name not in psd:
            continue
        values = np.asarray(psd[name].values)
        row: dict[str, Any] = {
            "variable": name,
            "quantity": label,
            "units": str(psd[name].attrs.get("units", "")),
        }
        for column, frame in frames.items():
            row[column] = values[frame].item()
            if f"{name}_lower" in psd and f"{name}_upper" in psd:
                bounds[name][column] = (
                    float(psd[f"{name}_lower"].values[frame]),
                    float(psd[f"{name}_upper"].values[frame]),
                )
        rows.append(row)
    table = pd.DataFrame(rows, columns=["variable", "quantity", "units", *frames]).set_index(
        "variable"
    )
    times = np.asarray(psd[TIME].values) if TIME in psd.coords else np.arange(len(frames))
    table.attrs["frames"] = dict(frames)
    table.attrs["intervals"] = {k: v for k, v in bounds.items() if v}
    table.attrs["times_s"] = {k: float(times[f]) for k, f in frames.items()}
    return table


# --------------------------------------------------------------------------- HTML pieces


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _unit(units: str) -> str:
    return "µm" if units == "um" else units


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):d}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return "–"
        return f"{float(value):.{digits}g}"
    return str(value)


def _when(stamp: Any) -> str:
    """An ISO timestamp as ``2026-01-31 14:05:09 UTC`` (as given when it does not parse)."""
    if not stamp:
        return "?"
    try:
        moment = _dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    if moment.utcoffset() == _dt.timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S %z").strip()


def _table(rows: Sequence[tuple[str, str]], *, css: str = "kv") -> str:
    """A two-column table of (already escaped) header and value cells."""
    body = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='{css}'><tbody>{body}</tbody></table>"


def figure_to_base64(fig: Figure, *, dpi: int = 100) -> str:
    """PNG bytes of a matplotlib figure, base64-encoded; closes the figure."""
    return _png_base64(fig, dpi=dpi, tight=True)


def _png_base64(fig: Figure, *, dpi: float, tight: bool) -> str:
    """PNG of ``fig`` at ``dpi``, cropped to its content when ``tight``, base64; closes it.

    A figure laid out in pixels (the per-frame overlays) is saved untrimmed at its own
    dpi, so its frame lands on whole pixels, 1:1.
    """
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        engine = fig.get_layout_engine()
        if engine is not None:  # settle a constrained layout (fixed-aspect axes need passes)
            for _ in range(2):
                engine.execute(fig)
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str, caption: str, fig_id: str, *, native: bool = False) -> str:
    """A ``<figure>``; ``native`` ones are never scaled down (they scroll sideways instead)."""
    css = " class='native'" if native else ""
    return (
        f"<figure id='{_e(fig_id)}'{css}><img alt='{_e(alt)}' "
        f"src='data:image/png;base64,{data}'><figcaption>{_e(caption)}</figcaption></figure>"
    )


def _section(section_id: str, body: str) -> str:
    return f"<section id='{section_id}'><h2>{_e(_TITLES[section_id])}</h2>{body}</section>"


def _run_section(info: Mapping[str, Any], psd: xr.Dataset) -> str:
    source = info.get("source") or {}
    if isinstance(source, Mapping):
        if source.get("description"):
            source_text = str(source["description"])
        elif source.get("synthetic"):
            source_text = (
                f"synthetic run (scenario {source.get('scenario')}, seed {source.get('seed')})"
            )
        else:
            source_text = json.dumps(source, sort_keys=True)[:500] or "unknown"
    else:
        source_text = str(source)
    rows: list[tuple[str, str]] = [
        ("Store", f"<code>{_e(info['path'])}</code>"),
        ("Source", _e(source_text)),
        ("Frames", _e(info["frames"])),
    ]
    if info["frames"] > 1 and info.get("time_end_s") is not None:
        span = float(info["time_end_s"]) - float(info["time_start_s"])
        rows.append(
            (
                "Duration",
                _e(
                    f"{format_duration(span)} "
                    f"({info['time_start_s']:g} to {info['time_end_s']:g} s), "
                    f"one frame every {info['median_interval_s']:g} s (median); "
                    f"time from {info.get('time_source', 'unknown')}"
                ),
            )
        )
    else:
        rows.append(("Duration", "one frame"))
    rows.append(
        ("Image size", _e(f"{info['height_px']} × {info['width_px']} px (y × x), {info['dtype']}"))
    )
    pixel = info.get("pixel_size_um")
    if pixel is None:
        rows.append(
            (
                "Pixel size",
                "<strong class='bad'>unknown</strong>: sizes are in px "
                "(re-import with <code>--pixel-size</code>)",
            )
        )
    else:
        fy, fx = info["field_um"]
        rows.append(("Pixel size", _e(f"{pixel:g} µm (field {fy:.0f} × {fx:.0f} µm)")))
    units = _unit(str(psd.attrs.get("size_units", "px")))
    size_column = psd.attrs.get("size_column", "ecd")
    rows.append(("Size measure", _e(f"{psd.attrs.get('size_basis', size_column)}; in {units}")))
    if psd.attrs.get("edge_treatment_description"):
        rows.append(("Edge particles", _e(psd.attrs["edge_treatment_description"])))
    rows.append(("crystalseg", _e(info.get("crystalseg_version") or crystalseg_version())))
    return _section("run", _table(rows))


def _warnings_section(warnings_: Sequence[ReportWarning]) -> str:
    if not warnings_:
        return _section("warnings", "<p class='ok'>No warnings: the checks found nothing odd.</p>")
    items = "".join(
        f"<li class='warning' data-code='{_e(w.code)}'>{_e(w.message)}</li>" for w in warnings_
    )
    return _section("warnings", f"<ul class='warnings'>{items}</ul>")


def _summary_section(psd: xr.Dataset, particles: pd.DataFrame | None = None) -> str:
    table = summary_table(psd)
    frames, times = table.attrs["frames"], table.attrs["times_s"]
    if not frames:
        return _section("summary", "<p>The run has no frames.</p>")
    head = "".join(
        f"<th scope='col'>{_e(c)}<br><small>frame {frames[c]}, t = {_e(format_duration(times[c]))}"
        "</small></th>"
        for c in frames
    )
    body = []
    intervals = table.attrs.get("intervals", {})
    for variable, row in table.iterrows():
        units = _unit(row["units"])
        unit_text = "" if units in ("1", "") else f" ({units})"
        cells = "".join(
            f"<td class='num'>{_e(_number(row[c]))}"
            f"{_interval_text(intervals.get(variable, {}).get(c))}</td>"
            for c in frames
        )
        body.append(f"<tr><th scope='row'>{_e(row['quantity'] + unit_text)}</th>{cells}</tr>")
    kept = _values(psd, "count_kept")
    note = ""
    if kept is not None and not (kept > 0).any():
        note = "<p class='bad'>No particle was counted in any frame.</p>"
    else:
        note = (
            "<p class='note'>Start and end are the first and last frames with D-values "
            f"(at least {_e(psd.attrs.get('min_count', 1))} counted particles; else with any); "
            "the middle is halfway between them. Below each value: its 95 % interval, "
            "the range that covers the value of the crystal population in view in 95 % of "
            "frames. It is sampling noise only: segmentation bias (outlines drawn too wide "
            "or too narrow, crystals missed) is not in it.</p>"
        )
    table_html = (
        f"<table class='summary'><thead><tr><th scope='col'>quantity</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return _section("summary", table_html + note + _counts_html(psd, particles, frames))


def _interval_text(bounds: tuple[float, float] | None) -> str:
    """The interval under a value in the summary table ("" when there is none)."""
    if bounds is None or not any(math.isfinite(b) for b in bounds):
        return ""
    lower, upper = bounds
    if not math.isfinite(lower):  # too few particles to bound it from below
        text = f"at most {_number(upper)}"
    elif not math.isfinite(upper):
        text = f"at least {_number(lower)}"
    else:
        text = f"{_number(lower)} to {_number(upper)}"
    return f"<br><small>95 %: {_e(text)}</small>"


#: Frames listed one by one in the report's per-frame count table (more are sampled).
COUNT_TABLE_FRAMES = 400


def _counts_html(psd: xr.Dataset, particles: pd.DataFrame | None, frames: Mapping[str, int]) -> str:
    """Counted and excluded particles by reason: the summary's frames, the whole run, and
    (folded) every frame; counted plus excluded is found in every row."""
    from crystalseg.measure.results import frame_counts

    if "count_detected" not in psd or "count_kept" not in psd:
        return ""
    counts = frame_counts(psd, particles)
    columns = list(counts.columns)
    labels = {"counted": "counted", "found": "found"}
    head = "".join(
        f"<th scope='col'>{_e(labels.get(c, 'excluded: ' + c.replace('_', ' ')))}</th>"
        for c in columns
    )

    def row(label: str, values: Any) -> str:
        cells = "".join(f"<td class='num'>{int(values[c]):d}</td>" for c in columns)
        return f"<tr><th scope='row'>{_e(label)}</th>{cells}</tr>"

    picked = [row(f"{k} (frame {f})", counts.loc[f]) for k, f in frames.items()]
    picked.append(row("whole run", counts.sum()))
    shown = counts
    sampled = ""
    if len(counts) > COUNT_TABLE_FRAMES:
        keep = np.unique(np.linspace(0, len(counts) - 1, COUNT_TABLE_FRAMES).round().astype(int))
        shown = counts.iloc[keep]
        sampled = f" ({len(keep)} of {len(counts)} frames, evenly spaced)"
    per_frame = "".join(row(f"frame {f}", r) for f, r in shown.iterrows())
    table = (
        "<table class='summary counts'><thead><tr><th scope='col'>particles</th>"
        f"{head}</tr></thead>"
    )
    return (
        "<h3>Particles counted and excluded</h3>"
        f"{table}<tbody>{''.join(picked)}</tbody></table>"
        "<p class='note'>Every object the segmentation found is in the particle table: "
        "counted in the distributions or excluded with its reason.</p>"
        f"<details><summary>Every frame{_e(sampled)}</summary>{table}"
        f"<tbody>{per_frame}</tbody></table></details>"
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out.extend(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, value)]


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, float):
        return _number(value, 4)
    if value is None:
        return "none"
    return str(value)


def _stage_highlights(
    name: str, info: Mapping[str, Any], mask_attrs: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The few settings of a stage that a reader wants first."""
    settings = info.get("settings") or {}
    rows: list[tuple[str, str]] = []
    if name == "segment":
        model = info.get("model") or {}
        path = str(model.get("path") or mask_attrs.get("model_path") or "")
        bundled = path.replace("\\", "/").endswith("crystalseg/models/default")
        rows.append(("model", "bundled default model" if bundled else path or "unknown"))
        sha = model.get("sha256") or settings.get("model_sha256")
        if sha:
            rows.append(("model sha256", str(sha)))
        if mask_attrs.get("model_encoder"):
            rows.append(("encoder", str(mask_attrs["model_encoder"])))
        if mask_attrs.get("codes"):
            rows.append(("classes", _value_text(mask_attrs["codes"])))
        engine = info.get("engine") or {}
        if engine:
            where = engine.get("device_name") or engine.get("device", "?")
            text = f"{engine.get('backend', '?')} on {where}, {engine.get('precision', '?')}"
            rows.append(("engine", text))
    elif name == "measure":
        measure = settings.get("measure", settings)
        for key in ("size_column", "edge", "split", "min_area_px", "min_sharpness", "bins"):
            if key in measure:
                rows.append((key, _value_text(measure[key])))
        if info.get("particles") is not None:
            rows.append(("particle rows", str(info["particles"])))
    elif name == "synth":
        drawn = settings.get("drawn") or {}
        config = settings.get("config") or {}
        for key in ("frames", "height", "width", "seed", "scenario", "interval_s"):
            if key in config:
                rows.append((key, _value_text(config[key])))
        for key in ("pixel_size_um", "n_crystals", "growth_rate_um_s"):
            if key in drawn:
                rows.append((key, _value_text(drawn[key])))
    elif name == "import":
        for key, value in settings.items():
            if not isinstance(value, Mapping):
                rows.append((key, _value_text(value)))
    return rows


def _sop_block(sop: Mapping[str, Any] | None) -> str:
    """The SOP file this report was made from: file, sha256 and every value it set."""
    if not sop:
        return ""
    rows = [
        ("file", _e(str(sop.get("file", "?")))),
        ("sha256", f"<code>{_e(str(sop.get('sha256', '?')))}</code>"),
        ("overridden by flags", _e(", ".join(sop.get("overridden") or ()) or "none")),
        *(
            (f"<code>{_e(k)}</code>", _e(_value_text(v)))
            for k, v in _flatten(sop.get("content") or {})
        ),
    ]
    return (
        "<div class='stage'><h3 id='stage-report-sop'>report: standard operating "
        f"procedure</h3>{_table(rows)}</div>"
    )


def _settings_section(
    stages: Mapping[str, Mapping[str, Any]],
    mask_attrs: Mapping[str, Any],
    sop: Mapping[str, Any] | None = None,
) -> str:
    if not stages:
        return _section("settings", "<p>No stage has recorded its settings.</p>" + _sop_block(sop))
    parts = [_sop_block(sop)]
    for name, info in stages.items():
        status = str(info.get("status", "?"))
        finished = _when(info["finished"]) if info.get("finished") else "not finished"
        when = f"{_when(info.get('started'))} to {finished}"
        head = (
            f"<h3 id='stage-{_e(name)}'>{_e(name)} "
            f"<small class='{'ok' if status == 'finished' else 'bad'}'>{_e(status)}</small></h3>"
            f"<p class='note'>{_e(when)}; crystalseg {_e(info.get('crystalseg_version', '?'))}"
            "</p>"
        )
        highlights = _stage_highlights(name, info, mask_attrs if name == "segment" else {})
        table = _table([(_e(k), _e(v)) for k, v in highlights]) if highlights else ""
        everything = [
            (k, v)
            for k, v in _flatten({k: v for k, v in info.items() if k not in ("status",)})
            if k not in ("started", "finished", "crystalseg_version")
        ]
        details = (
            "<details><summary>all recorded settings</summary>"
            + _table([(f"<code>{_e(k)}</code>", _e(_value_text(v))) for k, v in everything])
            + "</details>"
        )
        parts.append(f"<div class='stage'>{head}{table}{details}</div>")
    return _section("settings", "".join(parts))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#1b1b1b;background:#fff;line-height:1.45}
header{background:#16324f;color:#fff;padding:1.2em 2em}
header h1{margin:0;font-size:1.5em}header p{margin:.3em 0 0;opacity:.85}
nav{padding:.6em 2em;background:#eef2f6;border-bottom:1px solid #d5dde5}
nav a{margin-right:1.2em;color:#16324f;text-decoration:none;font-weight:600}
main{padding:0 2em 2em;max-width:1200px}
section{border-bottom:1px solid #e3e7eb;padding:1em 0}
h2{color:#16324f;font-size:1.25em}h3{font-size:1.05em;margin:.8em 0 .2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #d5dde5;padding:.25em .6em;text-align:left;vertical-align:top}
table.kv th{background:#f5f7f9;font-weight:600;white-space:nowrap}
table.summary th{background:#f5f7f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
ul.warnings{padding-left:1.2em}li.warning{margin:.3em 0;padding:.3em .6em;
background:#fff4e5;border-left:4px solid #e69f00;list-style:none}
.ok{color:#1a7f37}.bad{color:#b3261e}.note{color:#555;font-size:.9em}
div.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
figure{margin:.5em 0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e3e7eb}
figure.native{overflow-x:auto}figure.native img{max-width:none}
figcaption{font-size:.9em;color:#444}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#16324f}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
@media print{nav{display:none}header{background:none;color:#000}
section{page-break-inside:avoid}details{display:none}}
"""


# --------------------------------------------------------------------------- figures


def _plot_figures(
    run: RunPath,
    psd: xr.Dataset,
    particles: pd.DataFrame | None,
    settings: ReportSettings,
    problems: list[ReportWarning],
) -> str:
    from crystalseg.viz import plots

    basis = settings.basis
    jobs: list[tuple[str, str, Any]] = [
        (
            "fig-psd-heatmap-number",
            "PSD over time, number basis (colour: density per log size)",
            lambda: plots.plot_psd_heatmap(psd, basis="number"),
        ),
        (
            "fig-psd-heatmap-volume",
            "PSD over time, volume basis (colour: density per log size)",
            lambda: plots.plot_psd_heatmap(psd, basis="volume"),
        ),
        (
            "fig-statistics",
            f"D10, D50, D90 ({basis} basis) and particle count over time",
            lambda: plots.plot_statistics(psd, basis=basis),
        ),
        (
            "fig-psd-curves",
            f"PSD curves at selected times ({basis} basis)",
            lambda: plots.plot_psd_curves(psd, basis=basis),
        ),
    ]
    jobs.append(
        (
            "fig-cumulative",
            "Volume density q3 and cumulative Q3 of the last frame with counted particles "
            "(ISO 9276-1), D10/D50/D90 with their 95 % intervals",
            lambda: plots.plot_cumulative(psd),
        )
    )
    windows = _open_windows(run)
    if windows is not None:
        jobs.append(
            (
                "fig-window-statistics",
                f"D10, D50, D90 ({basis} basis) of pooled windows of "
                f"{windows.attrs.get('window')} (frames resampled whole for the intervals) "
                "and the particles pooled per window",
                lambda: plots.plot_statistics(windows, basis=basis),
            )
        )
    jobs.append(
        (
            "fig-shape",
            "Length (max Feret) against width (min Feret) of the particles of the last frame",
            lambda: plots.plot_shape(particles, psd, frame=-1),
        )
    )
    return f"<div class='figures'>{''.join(_figure_jobs(jobs, settings, problems))}</div>"


def _open_windows(run: RunPath) -> xr.Dataset | None:
    """Group ``psd_window`` of the run in memory, or None when it has none."""
    import xarray as xr

    if not (run / "psd_window" / "zarr.json").exists():
        return None
    with xr.open_zarr(str(run), group="psd_window", consolidated=False) as ds:
        return ds.load()


def _overlay_figures(
    run: RunPath, psd: xr.Dataset, settings: ReportSettings, problems: list[ReportWarning]
) -> str:
    from crystalseg.viz import overlay

    n = int(psd.sizes.get(TIME, 0))
    frames = settings.overlay_frames if settings.overlay_frames is not None else (-1,)
    jobs: list[tuple[str, str, Any]] = []
    if settings.montage_n and n > 1:
        jobs.append(
            (
                "fig-montage",
                f"{min(settings.montage_n, n)} frames sampled over the run with the particle "
                "outlines",
                lambda: overlay.montage(run, n=settings.montage_n, color_by=settings.color_by),
            )
        )
    for frame in frames:
        index = frame % n if n else frame
        jobs.append(
            (
                f"fig-overlay-{index}",
                f"Frame {index} with the particle outlines (colour: "
                f"{'counted or excluded' if settings.color_by == 'status' else 'size'})",
                lambda frame=frame: overlay.overlay_frame(run, frame, color_by=settings.color_by),
            )
        )
    # Single frames at their own resolution (frame pixels 1:1), the montage at settings.dpi.
    native = {fig_id for fig_id, _, _ in jobs if fig_id.startswith("fig-overlay-")}
    return "".join(_figure_jobs(jobs, settings, problems, native=native))


def _figure_jobs(
    jobs: Sequence[tuple[str, str, Any]],
    settings: ReportSettings,
    problems: list[ReportWarning],
    *,
    native: frozenset[str] | set[str] = frozenset(),
) -> Iterable[str]:
    """``<figure>`` of each job; those named in ``native`` keep their own dpi and size."""
    for fig_id, caption, make in jobs:
        try:
            fig = make()
        except CrystalsegError as exc:
            log.warning("figure %s left out of the report: %s", fig_id, exc)
            problems.append(ReportWarning("figure_failed", f"Figure '{caption}' left out: {exc}"))
            continue
        if fig_id in native:
            data = _png_base64(fig, dpi=fig.dpi, tight=False)
        else:
            data = _png_base64(fig, dpi=settings.dpi, tight=True)
        yield _img(data, caption, caption, fig_id, native=fig_id in native)


# --------------------------------------------------------------------------- the report


def render_report(
    run: RunLike, *, settings: ReportSettings | None = None
) -> tuple[str, list[ReportWarning]]:
    """The HTML text of the report of a measured run, and its warnings.

    Parameters
    ----------
    run : path of a measured run store
    settings : ReportSettings, optional

    Returns
    -------
    html : str
        A complete, self-contained HTML document.
    warnings : list of ReportWarning
        What the warnings section lists.

    Raises
    ------
    StageStateError
        The run has no finished measurement.
    InputNotFoundError, RunFormatError
        No run store at ``run``.
    """
    import zarr

    from crystalseg.store import stage_info
    from crystalseg.viz.plots import open_results

    settings = ReportSettings() if settings is None else settings
    if not isinstance(settings, ReportSettings):
        raise ConfigError(f"settings must be a ReportSettings, got {type(settings).__name__}")
    path = run_path(run)
    info = describe_run(path)
    stages = stage_info(path)
    psd, particles = open_results(path, columns=REPORT_COLUMNS)
    # per-frame variables in memory; the (time, length, width) histogram stays lazy
    lazy = psd.get("length_width")
    psd = psd.drop_vars("length_width", errors="ignore").load()
    if lazy is not None:
        psd["length_width"] = lazy
    n_frames = int(psd.sizes.get(TIME, 0))
    outside = [f for f in settings.overlay_frames or () if not -n_frames <= f < n_frames]
    if outside:
        raise ConfigError(
            f"overlay frame {outside[0]} is outside the run's {n_frames} frames; give "
            f"0..{n_frames - 1} (or -{n_frames}..-1 from the end)"
        )
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    mask_attrs = dict(group["mask"].attrs.asdict()) if "mask" in group else {}

    problems = find_warnings(psd, particles, stages=stages, settings=settings)
    plots_html = _plot_figures(path, psd, particles, settings, problems)
    overlays_html = _overlay_figures(path, psd, settings, problems)
    if not overlays_html:
        overlays_html = "<p>No overlays.</p>"

    from crystalseg.viz.kinetics import kinetics_section

    kinetics_html = kinetics_section(
        path,
        lambda fig: _img(
            figure_to_base64(fig),
            "kinetics",
            "Growth rate against size, births over time with the nucleation onset, the "
            "population growth rate over time, chord counts in FBRM size classes",
            "fig-kinetics",
        ),
    ) or (
        "<p>No kinetics yet: <code>crystalseg kinetics RUN</code> tracks the crystals "
        "across frames and adds growth and nucleation rates here.</p>"
    )
    name = path.name or str(path)
    generated = _when(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    sections = [
        _run_section(info, psd),
        _warnings_section(problems),
        _summary_section(psd, particles),
        _section("kinetics", kinetics_html),
        _section("plots", plots_html),
        _section(
            "overlays",
            "<p class='note'>Particle outlines drawn on the raw frames: check that the "
            "segmentation follows the crystals.</p>" + overlays_html,
        ),
        _settings_section(stages, mask_attrs, settings.sop),
    ]
    nav = "".join(f"<a href='#{sid}'>{_e(_TITLES[sid])}</a>" for sid in SECTION_IDS)
    n_warn = len(problems)
    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='generator' content='crystalseg {_e(crystalseg_version())}'>"
        f"<title>{_e(name)}: crystalseg report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(name)}</h1><p>crystalseg run report, generated {_e(generated)}; "
        f"{n_warn} warning{'s' if n_warn != 1 else ''}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(sections)}</main></body></html>\n"
    )
    return document, problems


def write_report(
    run: RunLike,
    output: RunLike | None = None,
    *,
    settings: ReportSettings | None = None,
) -> tuple[RunPath, list[ReportWarning]]:
    """Write the self-contained HTML report of a measured run.

    Parameters
    ----------
    run : path of a measured run store
    output : path of the HTML file (default ``<run stem>_report.html`` beside the run);
        an existing file is replaced.
    settings : ReportSettings, optional

    Returns
    -------
    path : Path of the written report
    warnings : list of ReportWarning listed in it
    """
    run = run_path(run)
    out = run_path(output) if output is not None else run.with_name(f"{run.stem}_report.html")
    check_output_outside_run(out)
    if out.is_dir():
        raise ConfigError(
            f"report output '{out}' is a folder; expected an HTML file name, e.g. "
            f"'{out / (run.stem + '_report.html')}'"
        )
    make_folder(out.parent)  # a file in the way fails before the work
    text, problems = render_report(run, settings=settings)
    with file_written_whole(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("report of %s written to %s (%s)", run, out, counted(len(problems), "warning"))
    return out, problems


__all__ = [
    "SECTION_IDS",
    "SUMMARY_ROWS",
    "ReportSettings",
    "ReportWarning",
    "figure_to_base64",
    "find_warnings",
    "frame_ranges",
    "render_report",
    "summary_frames",
    "summary_table",
    "write_report",
]
