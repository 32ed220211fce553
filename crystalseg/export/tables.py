"""The tables of an export, with a unit in every header, and the export's metadata.

Tables are read through :class:`crystalseg.measure.MeasuredRun` (the tracks from the
kinetics stage's group); :mod:`crystalseg.export.writers` writes them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import RunFormatError, StageStateError
from crystalseg.export.settings import TABLES, ExportSettings, TableName
from crystalseg.kinetics.run import STAGE as TRACKS_STAGE
from crystalseg.kinetics.run import TRACKS_GROUP
from crystalseg.measure.distributions import SIZE_STATISTICS
from crystalseg.measure.reader import MeasuredRun
from crystalseg.measure.results import PARTICLE_COLUMNS, particle_column_attrs
from crystalseg.store import crystalseg_version, stage_info
from crystalseg.store.location import RunPath

#: CF ``units`` of a stored variable -> the suffix of its header ("" for none).
UNIT_SUFFIXES: dict[str, str] = {
    "um": "um",
    "um2": "um2",
    "px": "px",
    "px2": "px2",
    "mm-2": "per_mm2",
    "um-2": "per_um2",
    "px-2": "per_px2",
    "1/px2": "per_px2",
    "um/s": "um_per_s",
    "px/s": "px_per_s",
    "s": "s",
    "min": "min",
    "h": "h",
    "s-1": "per_s",
    "rad": "rad",
    "deg": "deg",
    "1": "",
    "": "",
    # raw grey values of the image: the name (intensity_mean) says it
    "intensity": "",
}


#: Particle columns left out of the export: name -> the column it duplicates.
#: ``equivalent_diameter_area`` is scikit-image's name of the equivalent circle
#: diameter, which the table also holds as ``ecd`` (the name the PSD's
#: ``size_column`` uses): the export keeps ``ecd`` once, after checking that the
#: two columns are equal, so a spreadsheet has one diameter column, not two.
DUPLICATE_COLUMNS: dict[str, str] = {"equivalent_diameter_area": "ecd"}


#: Order of the per-frame statistics (others follow alphabetically); each variable's
#: interval bounds (``<name>_lower``, ``<name>_upper``) follow it.
_STATISTICS_ORDER: tuple[str, ...] = (
    "count_kept",
    "number",
    "number_density",
    *SIZE_STATISTICS,
    "aspect_ratio_mean",
    "circularity_mean",
    "projected_area_fraction",
    "count_detected",
    "count_edge",
    "count_elongated",
)


_BOUND_SUFFIXES = ("", "_lower", "_upper")


@dataclass(frozen=True)
class Column:
    """One column of an export table: its header (with unit), the name in the store
    it comes from, its CF units and its description."""

    header: str
    source: str
    units: str
    long_name: str


@dataclass(frozen=True)
class Table:
    """A table ready to write: its columns, row count, and its rows in blocks whose
    columns are the headers (values as stored: booleans stay booleans)."""

    name: TableName
    columns: tuple[Column, ...]
    rows: int
    blocks: Callable[[], Iterator[pd.DataFrame]]


def column_header(name: str, units: str | None) -> str:
    """The export header of a stored variable: its name with its unit as a suffix.

    Parameters
    ----------
    name : the variable's name in the store (``ecd``)
    units : its CF ``units`` attribute (``um``); None or "1" for none

    Returns
    -------
    str
        ``ecd_um``, ``number_density_per_mm2``, ``time_s`` (a name that already ends
        in its unit keeps it once), ``count_kept`` (dimensionless).

    Examples
    --------
    >>> column_header("area", "um2"), column_header("area", "px2"), column_header("time_s", "s")
    ('area_um2', 'area_px2', 'time_s')
    """
    text = "" if units is None else str(units).strip()
    suffix = UNIT_SUFFIXES.get(text)
    if suffix is None:  # a unit this table does not know yet: keep it, readable
        suffix = re.sub(r"[^0-9A-Za-z]+", "_", text.replace("/", "_per_")).strip("_")
    if not suffix or name.endswith(f"_{suffix}"):
        return name
    return f"{name}_{suffix}"


def tracks_state(path: RunPath) -> str | None:
    """None when the run holds finished tracks, else why not (for the note)."""
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    info = stage_info(path).get(TRACKS_STAGE)
    if TRACKS_GROUP not in root:
        return "the run has no tracks (its crystals were not linked across frames)"
    if info is not None and info.get("status") != "finished":
        return "the tracking of the run did not finish"
    return None


def _frame_columns(time_s: np.ndarray) -> tuple[dict[str, np.ndarray], list[Column]]:
    values = {
        "frame": np.arange(len(time_s), dtype=np.int64),
        "time_s": time_s,
        "time_min": time_s / 60.0,
    }
    columns = [
        Column("frame", "frame", "1", "frame index"),
        Column("time_s", TIME, "s", "time since the first frame"),
        Column("time_min", TIME, "min", "time since the first frame"),
    ]
    return values, columns


def _statistics_order(name: str) -> tuple[int, str, int]:
    base, bound = name, 0
    for i, suffix in enumerate(_BOUND_SUFFIXES[1:], start=1):
        if name.endswith(suffix) and name.removesuffix(suffix):
            base, bound = name.removesuffix(suffix), i
            break
    rank = _STATISTICS_ORDER.index(base) if base in _STATISTICS_ORDER else len(_STATISTICS_ORDER)
    return rank, base, bound


def statistics_table(run: MeasuredRun) -> Table:
    """One row per frame: frame, time and every per-frame variable of ``psd``."""
    psd, time_s = run.psd, run.calibration.time_s
    values, columns = _frame_columns(time_s)
    names = sorted(
        (str(n) for n, v in psd.data_vars.items() if v.dims == (TIME,)), key=_statistics_order
    )
    for name in names:
        var = psd[name]
        header = column_header(str(name), var.attrs.get("units"))
        values[header] = var.values
        columns.append(Column(header, str(name), _units(var), var.attrs.get("long_name", "")))
    frame = pd.DataFrame(values)
    return Table("statistics", tuple(columns), len(frame), lambda: iter([frame]))


def _units(var: xr.DataArray) -> str:
    return str(var.attrs.get("units", "1"))


def psd_table(run: MeasuredRun) -> Table:
    """The size distributions as a long table: one row per frame and size bin."""
    psd, time_s = run.psd, run.calibration.time_s
    n_time, n_bins = len(time_s), psd.sizes[SIZE_BIN]
    per_frame, columns = _frame_columns(time_s)
    values = {k: np.repeat(v, n_bins) for k, v in per_frame.items()}
    for coord, label, long_name in (
        ("size_bin_lower", "size_bin_lower", "lower edge of the size bin"),
        (SIZE_BIN, "size_bin_centre", "geometric centre of the size bin"),
        ("size_bin_upper", "size_bin_upper", "upper edge of the size bin"),
    ):
        var = psd[coord]
        header = column_header(label, var.attrs.get("units"))
        values[header] = np.tile(np.asarray(var.values, dtype=np.float64), n_time)
        columns.append(Column(header, coord, _units(var), long_name))
    for name, var in psd.data_vars.items():
        if var.dims != (TIME, SIZE_BIN):
            continue
        header = column_header(str(name), var.attrs.get("units"))
        values[header] = np.asarray(var.values).reshape(-1)
        columns.append(Column(header, str(name), _units(var), var.attrs.get("long_name", "")))
    frame = pd.DataFrame(values)
    return Table("psd", tuple(columns), len(frame), lambda: iter([frame]))


#: The particle table's column that the kinetics stage adds (its tracks).
TRACK_ID = "track_id"


def particles_table(run: MeasuredRun) -> Table:
    """One row per particle per frame, streamed block by block; ``ecd`` once, and
    ``track_id`` when the kinetics stage has added it."""
    path = run.path
    attrs = particle_column_attrs(run.calibration.pixel_size_um)
    columns = tuple(
        Column(column_header(name, a["units"]), name, a["units"], a["long_name"])
        for name, a in attrs.items()
        if name not in DUPLICATE_COLUMNS
    )
    read = list(PARTICLE_COLUMNS)
    if TRACK_ID in run.columns:  # added by the kinetics stage
        columns += (Column(TRACK_ID, TRACK_ID, "1", "track of the particle (-1: none)"),)
        read.append(TRACK_ID)
    rename = {c.source: c.header for c in columns}

    def blocks() -> Iterator[pd.DataFrame]:
        for block in run.iter_particles(columns=read):
            for dup, kept in DUPLICATE_COLUMNS.items():
                a, b = block[dup].to_numpy(), block[kept].to_numpy()
                if not np.array_equal(a, b, equal_nan=True):
                    raise RunFormatError(
                        f"columns '{dup}' and '{kept}' of the particle table of '{path}' "
                        "differ, though crystalseg writes them equal; measure the run "
                        "again (overwrite=True)"
                    )
            yield block.drop(columns=list(DUPLICATE_COLUMNS)).rename(columns=rename)

    return Table("particles", columns, run.n_particles, blocks)


def tracks_table(path: RunPath) -> Table:
    """The tracks as stored (one 1-D array per column, CF attributes on each)."""
    group = zarr.open_group(str(path / TRACKS_GROUP), mode="r", use_consolidated=False)
    order = list(group.attrs.asdict().get("columns") or [])  # type: ignore[arg-type]
    arrays = {name: arr for name, arr in group.arrays()}
    names = [n for n in order if n in arrays] + sorted(n for n in arrays if n not in order)
    columns = []
    data = {}
    for name in names:
        arr = arrays[name]
        if len(arr.shape) != 1:
            continue
        attrs = arr.attrs.asdict()
        units = str(attrs.get("units", "1"))
        header = column_header(name, units)
        values = np.asarray(arr[:])
        data[header] = values.astype(object) if values.dtype.kind in "TU" else values
        columns.append(Column(header, name, units, str(attrs.get("long_name", ""))))
    frame = pd.DataFrame(data)
    return Table("tracks", tuple(columns), len(frame), lambda: iter([frame]))


def resolve_tables(
    path: RunPath, what: tuple[TableName, ...] | None
) -> tuple[list[TableName], list[str]]:
    """(tables to write, notes) for the request ``what`` (None: all the run holds)."""
    notes = []
    wanted = list(what) if what is not None else list(TABLES)
    if "tracks" in wanted:
        missing = tracks_state(path)
        if missing is not None:
            if what is not None:
                raise StageStateError(
                    f"cannot export tracks of '{path}': {missing}; track the crystals first "
                    "or leave tracks out of what"
                )
            wanted.remove("tracks")
            notes.append(f"tracks not exported: {missing}")
    return wanted, notes


def _model_name(mask_attrs: dict[str, Any]) -> str | None:
    name = mask_attrs.get("model_name")
    if name:
        return str(name)
    where = mask_attrs.get("model_path")
    if where:
        return Path(str(where)).name
    return None


def _sop_rows(sop: Mapping[str, Any] | None) -> list[tuple[str, str, Any]]:
    """Metadata rows of the SOP file an export was made from: file, sha256, content."""
    if not sop:
        return []
    return [
        ("sop", "file", str(sop.get("file", ""))),
        ("sop", "sha256", str(sop.get("sha256", ""))),
        ("sop", "content", json.dumps(sop.get("content") or {}, default=str)),
        ("sop", "overridden_by_flags", ", ".join(sop.get("overridden") or ())),
    ]


def metadata_rows(
    run: MeasuredRun,
    tables: Sequence[Table],
    settings: ExportSettings,
    notes: Sequence[str],
) -> list[tuple[str, str, Any]]:
    """(section, key, value) rows: what the export came from and how it was made."""
    path, psd = run.path, run.psd
    pixel = run.calibration.pixel_size_um
    mask = run.mask_attrs
    measure = run.provenance
    time_s = run.calibration.time_s
    frame_shape = psd.attrs.get("frame_shape_px")
    rows: list[tuple[str, str, Any]] = [
        ("export", "run", str(path.resolve())),
        ("export", "exported_utc", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
        ("export", "crystalseg_version", crystalseg_version()),
        ("export", "settings", json.dumps(settings.to_dict())),
        *_sop_rows(settings.sop),
        *(("export", f"rows_{t.name}", t.rows) for t in tables),
        *(("export", "note", note) for note in notes),
        ("calibration", "pixel_size_um", pixel if pixel is not None else "none (sizes in px)"),
        ("calibration", "frames", len(time_s)),
        ("calibration", "frame_shape_px", json.dumps(frame_shape)),
        (
            "calibration",
            "median_interval_s",
            float(np.median(np.diff(time_s))) if len(time_s) > 1 else "",
        ),
        ("calibration", "time_end_s", float(time_s[-1]) if len(time_s) else ""),
        ("model", "name", _model_name(mask) or "unknown (mask not made by crystalseg segment)"),
        ("model", "sha256", mask.get("model_sha256") or "unknown"),
        *(
            ("model", key.removeprefix("model_"), value)
            for key, value in mask.items()
            if key.startswith("model_") and key not in ("model_name", "model_sha256")
        ),
        ("model", "classes", json.dumps(mask.get("codes"))),
        ("measurement", "measured_utc", measure.get("finished", "")),
        ("measurement", "size_column", psd.attrs.get("size_column", "")),
        ("measurement", "size_units", psd.attrs.get("size_units", "")),
        ("measurement", "edge_treatment", psd.attrs.get("edge_treatment_description", "")),
        ("measurement", "bins", json.dumps(psd.attrs.get("bins"))),
    ]
    measured = json.loads(psd.attrs.get("measure_settings") or "{}")
    rows += [("measure_settings", k, json.dumps(v)) for k, v in measured.items()]
    rows += [("exclusions", reason, n) for reason, n in sorted(run.exclusions().items())]
    if pixel is None:
        rows.append(("calibration", "note", "the run has no pixel size: sizes are in pixels"))
    for table in tables:
        for column in table.columns:
            text = column.long_name
            rows.append((f"columns_{table.name}", column.header, f"{text} [{column.units}]"))
    dropped = ", ".join(f"{d} (equal to {k})" for d, k in DUPLICATE_COLUMNS.items())
    if any(t.name == "particles" for t in tables):
        rows.append(("columns_particles", "left_out", dropped))
    return [(s, k, "" if v is None else v) for s, k, v in rows]
