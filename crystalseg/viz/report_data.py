"""What a run's report says, gathered once and rendered twice (HTML and PDF).

:func:`gather_report` reads a measured run and returns a :class:`ReportContent`:
plain text and numbers (every value already formatted as the reader sees it) and
the figures as PNG bytes (:mod:`crystalseg.viz.report_figures`).
:mod:`crystalseg.viz.report_html` and :mod:`crystalseg.viz.report_pdf` only lay
that content out, so the two files of a report hold the same values, printed the
same way.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crystalseg.dims import TIME
from crystalseg.errors import ConfigError
from crystalseg.store import crystalseg_version, describe_run
from crystalseg.store.location import RunLike, run_path
from crystalseg.viz.report_checks import (
    ReportSettings,
    ReportWarning,
    find_warnings,
    psd_values,
)
from crystalseg.viz.report_figures import (
    ReportFigure,
    kinetics_content,
    open_windows,
    overlay_figures,
    plot_figures,
)
from crystalseg.viz.report_meta import (
    ModelIdentity,
    TimeUnit,
    check_meta,
    format_time_in,
    model_identity,
    time_unit_for,
    times_s,
)

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

log = logging.getLogger(__name__)

#: Columns of the particle table the report reads (warnings and the shape figure).
REPORT_COLUMNS: tuple[str, ...] = (
    "frame",
    "feret_diameter_max",
    "feret_diameter_min",
    "kept",
    "sharpness",
    "excluded_reason",
)

# --------------------------------------------------------------------------- numbers as text


def number_text(value: Any, digits: int = 3) -> str:
    """A value as the report prints it: 3 significant digits, ``–`` for none or NaN."""
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


def interval_text(bounds: tuple[float, float] | None) -> str:
    """A 95 % interval as printed under a value: ``12.1 to 15.3`` (``""`` when none)."""
    if bounds is None or not any(math.isfinite(b) for b in bounds):
        return ""
    lower, upper = bounds
    if not math.isfinite(lower):  # too few particles to bound it from below
        return f"at most {number_text(upper)}"
    if not math.isfinite(upper):
        return f"at least {number_text(lower)}"
    return f"{number_text(lower)} to {number_text(upper)}"


def unit_text(units: str) -> str:
    """Units as printed: ``um`` is ``µm``."""
    return str(units).replace("um", "µm")


def when_text(stamp: Any) -> str:
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


def value_text(value: Any) -> str:
    """A recorded setting as text: lists joined by commas, floats to 4 digits."""
    if isinstance(value, list | tuple):
        return ", ".join(value_text(v) for v in value)
    if isinstance(value, float):
        return number_text(value, 4)
    if value is None:
        return "none"
    return str(value)


# --------------------------------------------------------------------------- tables

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

#: Most rows of the D-values-over-time table; longer runs are sampled evenly.
DVALUE_TABLE_ROWS = 25


def summary_frames(psd: xr.Dataset) -> dict[str, int]:
    """Frames of the start, middle and end columns of the summary table.

    Start and end are the first and last frames with D-values (at least the
    minimum count of particles; a nucleating run begins empty), else with counted
    particles, the middle the frame halfway between them; with no counted
    particles at all, the first, middle and last frames.
    """
    n = int(psd.sizes.get(TIME, 0))
    kept = psd_values(psd, "count_kept")
    present = np.flatnonzero(kept > 0) if kept is not None else np.arange(n)
    below = psd_values(psd, "below_min_count")
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


def _bounds(psd: xr.Dataset, name: str, frame: int) -> tuple[float, float] | None:
    if f"{name}_lower" in psd and f"{name}_upper" in psd:
        return (
            float(psd[f"{name}_lower"].values[frame]),
            float(psd[f"{name}_upper"].values[frame]),
        )
    return None


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
            found = _bounds(psd, name, frame)
            if found is not None:
                bounds[name][column] = found
        rows.append(row)
    table = pd.DataFrame(rows, columns=["variable", "quantity", "units", *frames]).set_index(
        "variable"
    )
    times = times_s(psd)
    table.attrs["frames"] = dict(frames)
    table.attrs["intervals"] = {k: v for k, v in bounds.items() if v}
    table.attrs["times_s"] = {k: float(times[f]) for k, f in frames.items()}
    return table


def dvalue_frames(n_frames: int, max_rows: int = DVALUE_TABLE_ROWS) -> list[int]:
    """Frames of the D-values table: all of a short run, else ``max_rows`` spread evenly."""
    if n_frames <= max_rows:
        return list(range(n_frames))
    return [int(f) for f in np.unique(np.linspace(0, n_frames - 1, max_rows).round())]


def dvalue_table(psd: xr.Dataset, *, basis: str, unit: TimeUnit) -> list[list[str]]:
    """D10, D50 and D90 over time, as printed: header row, then one row per frame shown.

    Columns: frame, time (in ``unit``), particles counted, then D10, D50, D90 on
    ``basis`` each as ``value`` and, where the run has intervals, ``lower to upper``
    in a column of its own. Cells are text exactly as both renderers print them.
    Given group ``psd_window`` (pooled windows), one row per window: its frames
    (``first-last``), its middle time and the particles pooled in it.
    """
    sizes = [f"d{q}_{basis}" for q in (10, 50, 90)]
    units = unit_text(psd.attrs.get("size_units", "px"))
    with_bounds = [f"{n}_lower" in psd and f"{n}_upper" in psd for n in sizes]
    windows = "frame_start" in psd.coords and "frame_stop" in psd.coords
    header = ["frames" if windows else "frame", f"t ({unit})", "n counted"]
    for name, bounded in zip(sizes, with_bounds, strict=True):
        header.append(f"{name[:3].upper()} ({units})")
        if bounded:
            header.append(f"{name[:3].upper()} 95 %")
    times = times_s(psd)
    kept = psd_values(psd, "count_kept")
    rows = [header]
    for index in dvalue_frames(int(psd.sizes.get(TIME, 0))):
        label = str(index)
        if windows:
            first = int(psd["frame_start"].values[index])
            last = int(psd["frame_stop"].values[index]) - 1
            label = f"{first}-{last}" if last > first else str(first)
        t = format_time_in(times[index], unit).rsplit(" ", 1)[0]
        row = [label, t, "–" if kept is None else number_text(kept[index].item())]
        for name, bounded in zip(sizes, with_bounds, strict=True):
            value = psd[name].values[index].item() if name in psd else None
            row.append(number_text(value))
            if bounded:
                row.append(interval_text(_bounds(psd, name, index)) or "–")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class StageRecord:
    """What the settings section shows of one stage: every recorded setting, as text."""

    name: str
    status: str
    when: str
    crystalseg_version: str
    highlights: tuple[tuple[str, str], ...]
    everything: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ReportContent:
    """Everything a report shows, as text and PNG bytes; see :func:`gather_report`."""

    title: str
    generated: str
    meta: tuple[tuple[str, str], ...]
    time_unit: TimeUnit
    run_rows: tuple[tuple[str, str], ...]
    model: ModelIdentity | None
    warnings: tuple[ReportWarning, ...]
    summary: pd.DataFrame
    dvalues: tuple[tuple[str, ...], ...]
    window_dvalues: tuple[tuple[str, ...], ...]
    window: str
    basis: str
    min_count: Any
    counts: pd.DataFrame | None
    counted_any: bool
    kinetics_html: str | None
    kinetics_figure: ReportFigure | None
    plots: tuple[ReportFigure, ...]
    overlays: tuple[ReportFigure, ...]
    stages: tuple[StageRecord, ...]
    sop: tuple[tuple[str, str], ...] = ()

    @property
    def summary_heads(self) -> list[tuple[str, str]]:
        """(column, "frame F, t = T") of each summary column, T in the report's unit."""
        frames, times = self.summary.attrs["frames"], self.summary.attrs["times_s"]
        return [
            (c, f"frame {frames[c]}, t = {format_time_in(times[c], self.time_unit)}")
            for c in frames
        ]


def _source_text(source: Any) -> str:
    if not isinstance(source, Mapping):
        return str(source)
    if source.get("description"):
        return str(source["description"])
    if source.get("synthetic"):
        return f"synthetic run (scenario {source.get('scenario')}, seed {source.get('seed')})"
    return json.dumps(source, sort_keys=True)[:500] or "unknown"


def run_rows(
    info: Mapping[str, Any], psd: xr.Dataset, unit: TimeUnit, model: ModelIdentity | None
) -> list[tuple[str, str]]:
    """(label, text) rows of the run, calibration and model section."""
    rows = [
        ("Store", str(info["path"])),
        ("Source", _source_text(info.get("source") or {})),
        ("Frames", str(info["frames"])),
    ]
    if info["frames"] > 1 and info.get("time_end_s") is not None:
        start, end = float(info["time_start_s"]), float(info["time_end_s"])
        rows.append(
            (
                "Duration",
                f"{format_time_in(end - start, unit)} ({format_time_in(start, unit)} to "
                f"{format_time_in(end, unit)}), one frame every "
                f"{format_time_in(info['median_interval_s'], unit)} (median); "
                f"time from {info.get('time_source', 'unknown')}",
            )
        )
    else:
        rows.append(("Duration", "one frame"))
    rows.append(
        ("Image size", f"{info['height_px']} × {info['width_px']} px (y × x), {info['dtype']}")
    )
    pixel = info.get("pixel_size_um")
    if pixel is None:
        rows.append(("Pixel size", "unknown: sizes are in px (re-import with --pixel-size)"))
    else:
        fy, fx = info["field_um"]
        rows.append(("Pixel size", f"{pixel:g} µm (field {fy:.0f} × {fx:.0f} µm)"))
    units = unit_text(str(psd.attrs.get("size_units", "px")))
    size_column = psd.attrs.get("size_column", "ecd")
    rows.append(("Size measure", f"{psd.attrs.get('size_basis', size_column)}; in {units}"))
    if psd.attrs.get("edge_treatment_description"):
        rows.append(("Edge particles", str(psd.attrs["edge_treatment_description"])))
    if model is not None:
        derived = " (derived from the checkpoint: it records no name)" if model.derived else ""
        rows.append(("Model", model.name + derived))
        rows.append(("Model version", model.version))
        rows.append(("Model sha256", model.short_sha256))
    else:
        rows.append(("Model", "none recorded (the mask was not drawn by crystalseg segment)"))
    rows.append(("crystalseg", str(info.get("crystalseg_version") or crystalseg_version())))
    rows.append(("Time unit", f"every time in this report is in {unit}"))
    return rows


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out.extend(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, value)]


def _stage_highlights(
    name: str, info: Mapping[str, Any], model: ModelIdentity | None, mask_attrs: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The few settings of a stage that a reader wants first."""
    settings = info.get("settings") or {}
    rows: list[tuple[str, str]] = []
    if name == "segment":
        if model is not None:
            rows.append(("model", f"{model.name}, version {model.version}"))
        path = str((info.get("model") or {}).get("path") or mask_attrs.get("model_path") or "")
        if path:
            rows.append(("model path", path))
        sha = (info.get("model") or {}).get("sha256") or settings.get("model_sha256")
        if sha:
            rows.append(("model sha256", str(sha)))
        if mask_attrs.get("codes"):
            rows.append(("classes", value_text(mask_attrs["codes"])))
        engine = info.get("engine") or {}
        if engine:
            where = engine.get("device_name") or engine.get("device", "?")
            text = f"{engine.get('backend', '?')} on {where}, {engine.get('precision', '?')}"
            rows.append(("engine", text))
    elif name == "measure":
        measure = settings.get("measure", settings)
        for key in ("size_column", "edge", "split", "min_area_px", "min_sharpness", "bins"):
            if key in measure:
                rows.append((key, value_text(measure[key])))
        if info.get("particles") is not None:
            rows.append(("particle rows", str(info["particles"])))
    elif name == "synth":
        drawn = settings.get("drawn") or {}
        config = settings.get("config") or {}
        for key in ("frames", "height", "width", "seed", "scenario", "interval_s"):
            if key in config:
                rows.append((key, value_text(config[key])))
        for key in ("pixel_size_um", "n_crystals", "growth_rate_um_s"):
            if key in drawn:
                rows.append((key, value_text(drawn[key])))
    elif name == "import":
        for key, value in settings.items():
            if not isinstance(value, Mapping):
                rows.append((key, value_text(value)))
    return rows


def sop_rows(sop: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The SOP file a report was made from, as (key, text) rows: file, sha256, the options
    the command line overrode, every value it set."""
    if not sop:
        return ()
    return (
        ("file", str(sop.get("file", "?"))),
        ("sha256", str(sop.get("sha256", "?"))),
        ("overridden by flags", ", ".join(sop.get("overridden") or ()) or "none"),
        *((k, value_text(v)) for k, v in _flatten(sop.get("content") or {})),
    )


def stage_records(
    stages: Mapping[str, Mapping[str, Any]],
    mask_attrs: Mapping[str, Any],
    model: ModelIdentity | None,
) -> tuple[StageRecord, ...]:
    """Every stage's status, time, highlights and every recorded setting, as text."""
    out = []
    for name, info in stages.items():
        finished = when_text(info["finished"]) if info.get("finished") else "not finished"
        everything = tuple(
            (k, value_text(v))
            for k, v in _flatten({k: v for k, v in info.items() if k != "status"})
            if k not in ("started", "finished", "crystalseg_version")
        )
        highlights = _stage_highlights(
            name,
            info,
            model if name == "segment" else None,
            mask_attrs if name == "segment" else {},
        )
        out.append(
            StageRecord(
                name=str(name),
                status=str(info.get("status", "?")),
                when=f"{when_text(info.get('started'))} to {finished}",
                crystalseg_version=str(info.get("crystalseg_version", "?")),
                highlights=tuple(highlights),
                everything=everything,
            )
        )
    return tuple(out)


def gather_report(
    run: RunLike,
    *,
    settings: ReportSettings | None = None,
    meta: Mapping[str, Any] | None = None,
) -> ReportContent:
    """Read a measured run and draw its figures: the content of its report.

    Parameters
    ----------
    run : path of a measured run store
    settings : ReportSettings, optional
    meta : mapping, optional
        Batch-record fields (:func:`check_meta`), shown in the report's header.

    Raises
    ------
    StageStateError
        The run has no finished measurement.
    InputNotFoundError, RunFormatError
        No run store at ``run``.
    ConfigError
        Bad settings or meta, an overlay frame outside the run.
    """
    import zarr

    from crystalseg.measure.results import frame_counts
    from crystalseg.store import stage_info
    from crystalseg.viz.plots import open_results

    settings = ReportSettings() if settings is None else settings
    if not isinstance(settings, ReportSettings):
        raise ConfigError(f"settings must be a ReportSettings, got {type(settings).__name__}")
    fields = check_meta(meta)  # before any work
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
    model = model_identity(mask_attrs)
    unit = time_unit_for(times_s(psd))

    problems = find_warnings(psd, particles, stages=stages, settings=settings)
    plots = plot_figures(path, psd, particles, settings, problems)
    overlays = overlay_figures(path, psd, settings, problems, unit)
    kinetics_html, kinetics_figure = kinetics_content(path, settings.dpi)
    windows = open_windows(path)
    window_rows: tuple[tuple[str, ...], ...] = ()
    if windows is not None:
        table = dvalue_table(windows, basis=settings.basis, unit=unit)
        window_rows = tuple(tuple(r) for r in table)
    kept = psd_values(psd, "count_kept")
    has_counts = "count_detected" in psd and "count_kept" in psd
    return ReportContent(
        title=path.name or str(path),
        generated=when_text(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        meta=fields,
        time_unit=unit,
        run_rows=tuple(run_rows(info, psd, unit, model)),
        model=model,
        warnings=tuple(problems),
        summary=summary_table(psd),
        dvalues=tuple(tuple(r) for r in dvalue_table(psd, basis=settings.basis, unit=unit)),
        window_dvalues=window_rows,
        window=str(windows.attrs.get("window", "")) if windows is not None else "",
        basis=settings.basis,
        min_count=psd.attrs.get("min_count", 1),
        counts=frame_counts(psd, particles) if has_counts else None,
        counted_any=kept is None or bool((kept > 0).any()),
        kinetics_html=kinetics_html,
        kinetics_figure=kinetics_figure,
        plots=plots,
        overlays=overlays,
        stages=stage_records(stages, mask_attrs, model),
        sop=sop_rows(settings.sop),
    )


__all__ = [
    "DVALUE_TABLE_ROWS",
    "REPORT_COLUMNS",
    "SUMMARY_ROWS",
    "ReportContent",
    "StageRecord",
    "dvalue_frames",
    "dvalue_table",
    "gather_report",
    "interval_text",
    "number_text",
    "run_rows",
    "sop_rows",
    "stage_records",
    "summary_frames",
    "summary_table",
    "unit_text",
    "value_text",
    "when_text",
]
