"""Write a measured run's results in the formats its users work in: CSV, Excel, Parquet.

Four tables leave the run store (whichever it holds):

* ``statistics``: one row per frame: frame, time in s and min, and every per-frame
  variable of group ``psd`` (counts, D10/D50/D90 on both bases, D[1,0], D[3,2],
  D[4,3], span, mean aspect ratio and circularity, number density, and whatever
  variables a newer measurement adds, such as interval bounds), found generically.
* ``psd``: the size distributions as a *long* table, one row per frame and size
  bin (frame, time, bin lower/centre/upper, q0, q3 and every other variable of
  ``psd`` along the size bins). Long rather than wide because its headers then
  carry the units once, a pivot table or a plotting tool takes it as it is, and a
  new per-bin variable is one more column rather than 60.
* ``particles``: one row per particle per frame, streamed block by block.
* ``tracks``: the crystals linked across frames, when the run has been tracked.

Every header carries its unit (``ecd_um``, ``area_um2``, ``number_density_per_mm2``;
``_px``/``_px2`` when the run has no pixel size): the unit comes from the
``units`` attribute of the stored variable, mapped by :data:`UNIT_SUFFIXES`, so
new variables come along without code changes. Dimensionless values carry none.

CSV is written for spreadsheets: a UTF-8 byte-order mark (Excel otherwise reads
the file in the system's code page), ``sep`` and ``decimal`` for locales whose
Excel expects ``;`` and ``,``, booleans as 1/0, decimals to :data:`DEFAULT_DIGITS`
significant digits, and a ``<run>_metadata.csv`` beside the tables. Excel files
hold one sheet per table plus a ``metadata`` sheet. Parquet keeps full precision,
the dtypes, and each column's units and description in its field metadata.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.dims import MASK, SIZE_BIN, TIME
from crystalseg.errors import ConfigError, RunFormatError, StageStateError
from crystalseg.measure.distributions import SIZE_STATISTICS
from crystalseg.measure.results import (
    PARTICLES_GROUP,
    PSD_GROUP,
    STAGE,
    iter_particles,
    particle_column_attrs,
)
from crystalseg.measure.run import measurement_outdated
from crystalseg.store import (
    check_output_outside_run,
    crystalseg_version,
    file_written_whole,
    make_folder,
    read_run_attrs,
    stage_info,
)
from crystalseg.store.location import RunLike, RunPath, run_path

log = logging.getLogger(__name__)

TableName = Literal["statistics", "psd", "particles", "tracks"]
ExportFormat = Literal["csv", "xlsx", "parquet"]
Separator = Literal[",", ";", "\t"]
DecimalMark = Literal[".", ","]

#: Every table an export can hold, in the order they are written.
TABLES: tuple[TableName, ...] = get_args(TableName)
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
TRACKS_GROUP = "tracks"
TRACKS_STAGE = "kinetics"

#: Rows of an Excel sheet, the header included (Excel 2007 and later).
EXCEL_MAX_ROWS = 1_048_576

#: Significant digits of decimal numbers in CSV and Excel. Six keep every value
#: 1000 times finer than what was measured (a particle's size is known to a pixel
#: in hundreds, sizes and times to 1e-3 at best), so no statistic recomputed from
#: the export moves, while the 17 digits of a float64 ("12.345678901234567") are
#: noise that makes the tables hard to read. Parquet keeps full precision.
DEFAULT_DIGITS = 6

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
class ExportSettings:
    """What to export and how the files are written.

    Parameters
    ----------
    what : tuple of {"statistics", "psd", "particles", "tracks"}, optional
        Tables to write; None writes every table the run holds (``tracks`` is
        skipped with a note when the run has none; asked for by name, its absence
        is an error).
    format : {"csv", "xlsx", "parquet"}
        CSV (one file per table and ``<run>_metadata.csv``), Excel (one workbook,
        one sheet per table and a ``metadata`` sheet) or Parquet (one file per
        table, metadata in the schema).
    sep : {",", ";", "\\t"}
        CSV column separator. German, French and other Excel installations whose
        decimal mark is a comma expect ``;``.
    decimal : {".", ","}
        CSV decimal mark.
    bom : bool
        Start CSV files with a UTF-8 byte-order mark. Excel needs it to read a CSV
        as UTF-8 (without it, it uses the system's code page); pandas and R skip it.
    digits : int
        Significant digits of decimal numbers in CSV and xlsx (1-17); see
        :data:`DEFAULT_DIGITS`. Integers and Parquet are written exactly.

    Notes
    -----
    Booleans (``kept``, ``touches_edge``) are written as 1/0 in CSV and xlsx: Excel
    reads TRUE/FALSE in a CSV only in English installations (German Excel expects
    WAHR/FALSCH and keeps TRUE as text), and even as real booleans SUM and AVERAGE
    skip them, whereas 1/0 are numbers in every locale: ``=SUM(kept)`` counts the
    counted particles and ``=AVERAGE`` gives the fraction. Parquet keeps booleans.
    """

    what: tuple[TableName, ...] | None = None
    format: ExportFormat = "csv"
    sep: Separator = ","
    decimal: DecimalMark = "."
    bom: bool = True
    digits: int = DEFAULT_DIGITS

    def __post_init__(self) -> None:
        if self.what is not None:
            what = (self.what,) if isinstance(self.what, str) else tuple(self.what)
            unknown = [w for w in what if w not in TABLES]
            if unknown or not what:
                got = ", ".join(repr(w) for w in unknown) or "nothing"
                raise ConfigError(
                    f"cannot export {got}: expected one or more of {', '.join(TABLES)}; "
                    "e.g. what=('statistics', 'psd')"
                )
            object.__setattr__(self, "what", tuple(dict.fromkeys(what)))
        if self.format not in FORMATS:
            raise ConfigError(
                f"export format {self.format!r} is unknown; use one of {', '.join(FORMATS)}"
            )
        if self.sep not in get_args(Separator):
            raise ConfigError(
                f"CSV separator {self.sep!r} is not supported; use ',', ';' or a tab ('\\t')"
            )
        if self.decimal not in get_args(DecimalMark):
            raise ConfigError(f"decimal mark {self.decimal!r} is not supported; use '.' or ','")
        if self.sep == self.decimal:
            raise ConfigError(
                f"separator and decimal mark are both {self.sep!r}, so a reader cannot tell "
                "the columns apart; use sep=';' with decimal=','"
            )
        if isinstance(self.digits, bool) or not isinstance(self.digits, int):
            raise ConfigError(f"digits must be a whole number, got {self.digits!r}")
        if not 1 <= self.digits <= 17:
            raise ConfigError(
                f"digits={self.digits} is outside 1..17 (a float64 holds 17 significant "
                f"digits); {DEFAULT_DIGITS} is the default"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the metadata of the export."""
        return {
            "what": list(self.what) if self.what is not None else None,
            "format": self.format,
            "sep": self.sep,
            "decimal": self.decimal,
            "bom": self.bom,
            "digits": self.digits,
        }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes
    ----------
    files : tuple of Path
        The files written, tables first.
    rows : dict of str to int
        Table name -> rows written.
    notes : tuple of str
        What was left out and why (e.g. a run without tracks).
    """

    files: tuple[RunPath, ...]
    rows: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Column:
    header: str
    source: str
    units: str
    long_name: str


@dataclass(frozen=True)
class _Table:
    """A table ready to write: its columns, row count, and its rows in blocks whose
    columns are the headers (values as stored: booleans stay booleans)."""

    name: TableName
    columns: tuple[_Column, ...]
    rows: int
    blocks: Callable[[], Iterator[pd.DataFrame]]


# --------------------------------------------------------------------------- headers


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


# --------------------------------------------------------------------------- tables


def _measured(path: RunPath) -> float | None:
    """The pixel size the run was measured with (None: sizes in px), after checking
    that it was measured. The measurement's own, not the run's: a calibration set
    after measuring changes no number in the results until they are measured again."""
    attrs = read_run_attrs(path)
    info = stage_info(path).get(STAGE)
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if info is None or info.get("status") != "finished" or PSD_GROUP not in root:
        raise StageStateError(
            f"run '{path}' has no finished measurement to export; measure it first "
            f"('crystalseg measure {path}')"
        )
    measured = root[PSD_GROUP].attrs.asdict()
    pixel = measured["pixel_size_um"] if "pixel_size_um" in measured else attrs.get("pixel_size_um")
    return None if pixel is None else float(pixel)  # type: ignore[arg-type]


def _tracks_state(path: RunPath) -> str | None:
    """None when the run holds finished tracks, else why not (for the note)."""
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    info = stage_info(path).get(TRACKS_STAGE)
    if TRACKS_GROUP not in root:
        return "the run has no tracks (its crystals were not linked across frames)"
    if info is not None and info.get("status") != "finished":
        return "the tracking of the run did not finish"
    return None


def _frame_columns(time_s: np.ndarray) -> tuple[dict[str, np.ndarray], list[_Column]]:
    values = {
        "frame": np.arange(len(time_s), dtype=np.int64),
        "time_s": time_s,
        "time_min": time_s / 60.0,
    }
    columns = [
        _Column("frame", "frame", "1", "frame index"),
        _Column("time_s", TIME, "s", "time since the first frame"),
        _Column("time_min", TIME, "min", "time since the first frame"),
    ]
    return values, columns


def _psd_time(psd: xr.Dataset) -> np.ndarray:
    time = psd[TIME].values
    if np.issubdtype(time.dtype, np.datetime64):  # absolute times: seconds since the first
        return (time - time[0]) / np.timedelta64(1, "s") if len(time) else time.astype(float)
    return np.asarray(time, dtype=np.float64)


def _statistics_order(name: str) -> tuple[int, str, int]:
    base, bound = name, 0
    for i, suffix in enumerate(_BOUND_SUFFIXES[1:], start=1):
        if name.endswith(suffix) and name.removesuffix(suffix):
            base, bound = name.removesuffix(suffix), i
            break
    rank = _STATISTICS_ORDER.index(base) if base in _STATISTICS_ORDER else len(_STATISTICS_ORDER)
    return rank, base, bound


def _statistics_table(psd: xr.Dataset) -> _Table:
    time_s = _psd_time(psd)
    values, columns = _frame_columns(time_s)
    names = sorted(
        (str(n) for n, v in psd.data_vars.items() if v.dims == (TIME,)), key=_statistics_order
    )
    for name in names:
        var = psd[name]
        header = column_header(str(name), var.attrs.get("units"))
        values[header] = var.values
        columns.append(_Column(header, str(name), _units(var), var.attrs.get("long_name", "")))
    frame = pd.DataFrame(values)
    return _Table("statistics", tuple(columns), len(frame), lambda: iter([frame]))


def _units(var: xr.DataArray) -> str:
    return str(var.attrs.get("units", "1"))


def _psd_table(psd: xr.Dataset) -> _Table:
    time_s = _psd_time(psd)
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
        columns.append(_Column(header, coord, _units(var), long_name))
    for name, var in psd.data_vars.items():
        if var.dims != (TIME, SIZE_BIN):
            continue
        header = column_header(str(name), var.attrs.get("units"))
        values[header] = np.asarray(var.values).reshape(-1)
        columns.append(_Column(header, str(name), _units(var), var.attrs.get("long_name", "")))
    frame = pd.DataFrame(values)
    return _Table("psd", tuple(columns), len(frame), lambda: iter([frame]))


def _particles_table(path: RunPath, pixel_size_um: float | None) -> _Table:
    attrs = particle_column_attrs(pixel_size_um)
    columns = tuple(
        _Column(column_header(name, a["units"]), name, a["units"], a["long_name"])
        for name, a in attrs.items()
        if name not in DUPLICATE_COLUMNS
    )
    rename = {c.source: c.header for c in columns}
    root = zarr.open_group(str(path / PARTICLES_GROUP), mode="r", use_consolidated=False)
    frame_array = root["frame"]
    rows = int(frame_array.shape[0]) if isinstance(frame_array, zarr.Array) else 0

    def blocks() -> Iterator[pd.DataFrame]:
        for block in iter_particles(path):
            for dup, kept in DUPLICATE_COLUMNS.items():
                a, b = block[dup].to_numpy(), block[kept].to_numpy()
                if not np.array_equal(a, b, equal_nan=True):
                    raise RunFormatError(
                        f"columns '{dup}' and '{kept}' of the particle table of '{path}' "
                        "differ, though crystalseg writes them equal; measure the run "
                        "again (overwrite=True)"
                    )
            yield block.drop(columns=list(DUPLICATE_COLUMNS)).rename(columns=rename)

    return _Table("particles", columns, rows, blocks)


def _tracks_table(path: RunPath) -> _Table:
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
        columns.append(_Column(header, name, units, str(attrs.get("long_name", ""))))
    frame = pd.DataFrame(data)
    return _Table("tracks", tuple(columns), len(frame), lambda: iter([frame]))


def _resolve_tables(
    path: RunPath, what: tuple[TableName, ...] | None
) -> tuple[list[TableName], list[str]]:
    """(tables to write, notes) for the request ``what`` (None: all the run holds)."""
    notes = []
    wanted = list(what) if what is not None else list(TABLES)
    if "tracks" in wanted:
        missing = _tracks_state(path)
        if missing is not None:
            if what is not None:
                raise StageStateError(
                    f"cannot export tracks of '{path}': {missing}; track the crystals first "
                    "or leave tracks out of what"
                )
            wanted.remove("tracks")
            notes.append(f"tracks not exported: {missing}")
    return wanted, notes


# --------------------------------------------------------------------------- metadata


def _model_name(mask_attrs: dict[str, Any]) -> str | None:
    name = mask_attrs.get("model_name")
    if name:
        return str(name)
    where = mask_attrs.get("model_path")
    if where:
        return Path(str(where)).name
    return None


def _exclusions(path: RunPath) -> dict[str, int]:
    """Particles by why they are not counted (``counted`` for the kept ones)."""
    root = zarr.open_group(str(path / PARTICLES_GROUP), mode="r", use_consolidated=False)
    node = root["excluded_reason"]
    counts: dict[str, int] = {}
    if not isinstance(node, zarr.Array):
        return counts
    step = 1 << 20
    for lo in range(0, int(node.shape[0]), step):
        reasons = pd.Series(np.asarray(node[lo : lo + step]).astype(object))
        for name, k in reasons.value_counts().items():
            key = str(name) or "counted"
            counts[key] = counts.get(key, 0) + int(k)
    return counts


def _metadata_rows(
    path: RunPath,
    psd: xr.Dataset,
    tables: Sequence[_Table],
    settings: ExportSettings,
    notes: Sequence[str],
    pixel: float | None,
) -> list[tuple[str, str, Any]]:
    """(section, key, value) rows: what the export came from and how it was made."""
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    mask = root[MASK].attrs.asdict() if MASK in root else {}
    stages = stage_info(path)
    measure = stages.get(STAGE, {})
    time_s = _psd_time(psd)
    frame_shape = psd.attrs.get("frame_shape_px")
    rows: list[tuple[str, str, Any]] = [
        ("export", "run", str(path.resolve())),
        ("export", "exported_utc", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
        ("export", "crystalseg_version", crystalseg_version()),
        ("export", "settings", json.dumps(settings.to_dict())),
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
    rows += [("exclusions", reason, n) for reason, n in sorted(_exclusions(path).items())]
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


# --------------------------------------------------------------------------- writers


def _for_spreadsheet(block: pd.DataFrame) -> pd.DataFrame:
    """Booleans as 1/0 (see :class:`ExportSettings`)."""
    bools = [c for c in block.columns if block[c].dtype == bool]
    return block.astype(dict.fromkeys(bools, np.int8)) if bools else block


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (NaN, inf and 0 kept).

    Examples
    --------
    >>> round_significant(np.array([123.4567, 0.000123456, -9.87654e7]), 3).tolist()
    [123.0, 0.000123, -98800000.0]
    """
    x = np.asarray(values, dtype=np.float64)
    out = x.copy()
    finite = np.isfinite(x) & (x != 0)
    exponent = digits - 1 - np.floor(np.log10(np.abs(x[finite])))
    # Scale by exact powers of ten only (10**k, k >= 0), so that the result is the
    # float nearest to the rounded decimal: 0.000123, not 0.00012300000000000001.
    up = 10.0 ** np.maximum(exponent, 0)
    down = 10.0 ** np.maximum(-exponent, 0)
    out[finite] = np.round(x[finite] * up / down) * down / up
    return out


def _write_csv(table: _Table, out: RunPath, settings: ExportSettings) -> None:
    encoding = "utf-8-sig" if settings.bom else "utf-8"
    with file_written_whole(out) as tmp, open(tmp, "w", newline="", encoding=encoding) as fh:
        for i, block in enumerate(table.blocks()):
            _for_spreadsheet(block).to_csv(
                fh,
                sep=settings.sep,
                decimal=settings.decimal,
                float_format=f"%.{settings.digits}g",
                index=False,
                header=i == 0,
                lineterminator="\r\n",
            )


def _write_metadata_csv(
    rows: list[tuple[str, str, Any]], out: RunPath, settings: ExportSettings
) -> None:
    frame = pd.DataFrame(rows, columns=["section", "key", "value"]).astype(str)
    encoding = "utf-8-sig" if settings.bom else "utf-8"
    with file_written_whole(out) as tmp:
        frame.to_csv(tmp, sep=settings.sep, index=False, encoding=encoding, lineterminator="\r\n")


def _write_parquet(table: _Table, out: RunPath, metadata: dict[str, str]) -> None:
    """Stream the table's blocks into one Parquet file; each field's metadata holds
    its ``units`` and ``long_name`` (and ``source``: the name in the store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    described = {c.header: c for c in table.columns}
    with file_written_whole(out) as tmp:
        writer = None
        try:
            for block in table.blocks():
                arrow = pa.Table.from_pandas(block, preserve_index=False)
                if writer is None:
                    fields = []
                    for f in arrow.schema:
                        c = described[f.name]
                        meta = {"units": c.units, "long_name": c.long_name, "source": c.source}
                        fields.append(f.with_metadata(meta))
                    writer = pq.ParquetWriter(str(tmp), pa.schema(fields, metadata=metadata))
                writer.write_table(arrow.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()


def _cell_rows(block: pd.DataFrame, digits: int) -> list[list[Any]]:
    """Rows of plain Python values for the xlsx writer: decimals rounded, NaN as None
    (an empty cell)."""
    columns: list[np.ndarray] = []
    for name in block.columns:
        values = block[name].to_numpy()
        if values.dtype.kind == "f":
            rounded = round_significant(values, digits).astype(object)
            rounded[~np.isfinite(values)] = None
            columns.append(rounded)
        elif values.dtype.kind in "iub":
            columns.append(values.astype(np.int64).astype(object))
        else:
            text = values.astype(object)
            text[pd.isna(text)] = None
            columns.append(text)
    if not columns:
        return []
    return np.column_stack(columns).tolist() if len(block) else []


def _check_excel_rows(tables: Sequence[_Table], path: RunPath) -> None:
    for table in tables:
        if table.rows + 1 > EXCEL_MAX_ROWS:
            others = tuple(t.name for t in tables if t.rows + 1 <= EXCEL_MAX_ROWS)
            raise ConfigError(
                f"the {table.name} table of '{path}' has {table.rows:,} rows, more than the "
                f"{EXCEL_MAX_ROWS - 1:,} an Excel sheet holds below its header; export it as "
                f"CSV or Parquet (format='parquet', what=('{table.name}',)) and the rest "
                f"to Excel without it (what={others!r})"
            )


def _write_xlsx(
    tables: Sequence[_Table],
    metadata: list[tuple[str, str, Any]],
    out: RunPath,
    settings: ExportSettings,
) -> None:
    import xlsxwriter

    with file_written_whole(out) as tmp:
        # constant_memory: rows go to disk as they are written (flat memory for big
        # tables); strings never become formulas or links (a value like "=1+1" or a
        # path stays text).
        book = xlsxwriter.Workbook(
            str(tmp),
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        try:
            bold = book.add_format({"bold": True})
            for table in tables:
                sheet = book.add_worksheet(table.name)
                headers = [c.header for c in table.columns]
                sheet.write_row(0, 0, headers, bold)
                for j, header in enumerate(headers):
                    sheet.set_column(j, j, max(10, len(header) + 2))
                sheet.freeze_panes(1, 0)
                row = 1
                for block in table.blocks():
                    for values in _cell_rows(_for_spreadsheet(block), settings.digits):
                        sheet.write_row(row, 0, values)
                        row += 1
                if headers:
                    sheet.autofilter(0, 0, max(row - 1, 1), len(headers) - 1)
            sheet = book.add_worksheet("metadata")
            sheet.write_row(0, 0, ["section", "key", "value"], bold)
            sheet.set_column(0, 0, 20)
            sheet.set_column(1, 1, 28)
            sheet.set_column(2, 2, 80)
            sheet.freeze_panes(1, 0)
            for i, (section, key, value) in enumerate(metadata, start=1):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    value = str(value)
                sheet.write_row(i, 0, [section, key, value])
        finally:
            book.close()


# --------------------------------------------------------------------------- entry points


def export_run(
    run: RunLike,
    out: RunLike,
    *,
    settings: ExportSettings | None = None,
) -> ExportResult:
    """Write the results of a measured run as CSV, Excel or Parquet files into ``out``.

    Parameters
    ----------
    run : path of the measured run store
    out : folder of the files (created); names start with the run's name:
        ``<run>_statistics.csv``, ``<run>_psd.csv``, ``<run>_particles.csv``,
        ``<run>_tracks.csv`` and ``<run>_metadata.csv``; ``<run>.xlsx``; or
        ``<run>_<table>.parquet``. For xlsx, ``out`` may also name the workbook
        (``results.xlsx``). Files of the same names are replaced, each only once
        it is written whole.
    settings : ExportSettings, optional
        Tables, format, separator, decimal mark, byte-order mark, digits.

    Returns
    -------
    ExportResult
        The files written, rows per table, and notes on what was left out.

    Raises
    ------
    StageStateError
        The run has no finished measurement, or ``tracks`` were asked for and the
        run has none.
    ConfigError
        An xlsx export of a table longer than an Excel sheet (nothing is written), or
        ``out`` is a file (or names one) where a folder is expected.
    """
    settings = settings or ExportSettings()
    path = run_path(run)
    pixel = _measured(path)
    names, notes = _resolve_tables(path, settings.what)
    stale = measurement_outdated(path)
    if stale is not None:
        notes.insert(
            0,
            f"the measurement is out of date ({stale}); the export holds the results as "
            "measured: measure the run again to update them",
        )
        log.warning("%s: %s", path, notes[0])
    folder, workbook = _output(run_path(out), settings.format)
    stem = path.name.removesuffix(".zarr") if path.name.endswith(".zarr") else path.stem
    with xr.open_zarr(str(path), group=PSD_GROUP, consolidated=None) as psd:
        tables: list[_Table] = []
        for name in names:
            if name == "statistics":
                tables.append(_statistics_table(psd))
            elif name == "psd":
                tables.append(_psd_table(psd))
            elif name == "particles":
                tables.append(_particles_table(path, pixel))
            else:
                tables.append(_tracks_table(path))
        left_out = sorted(
            str(n) for n, v in psd.data_vars.items() if v.dims not in ((TIME,), (TIME, SIZE_BIN))
        )
        if left_out:
            log.info("psd variables not exported (other dimensions): %s", ", ".join(left_out))
        metadata = _metadata_rows(path, psd, tables, settings, notes, pixel)
    if left_out:
        metadata.append(("export", "psd_not_exported", ", ".join(left_out)))
    if settings.format == "xlsx":
        _check_excel_rows(tables, path)
    check_output_outside_run(workbook or folder)
    make_folder(folder)
    files: list[RunPath] = []
    if settings.format == "xlsx":
        target = workbook or folder / f"{stem}.xlsx"
        _write_xlsx(tables, metadata, target, settings)
        files.append(target)
    elif settings.format == "csv":
        for table in tables:
            target = folder / f"{stem}_{table.name}.csv"
            _write_csv(table, target, settings)
            files.append(target)
        target = folder / f"{stem}_metadata.csv"
        _write_metadata_csv(metadata, target, settings)
        files.append(target)
    else:
        schema_meta = _parquet_metadata(metadata, path, pixel)
        for table in tables:
            target = folder / f"{stem}_{table.name}.parquet"
            _write_parquet(table, target, schema_meta)
            files.append(target)
    for note in notes:
        log.info("%s", note)
    log.info("exported %s of %s to %s", ", ".join(t.name for t in tables), path, folder)
    return ExportResult(tuple(files), {t.name: t.rows for t in tables}, tuple(notes))


def _output(out: RunPath, fmt: ExportFormat) -> tuple[RunPath, RunPath | None]:
    """(folder, workbook file or None) for ``out``: a folder, or for xlsx a ``.xlsx`` file."""
    if fmt == "xlsx" and out.suffix.lower() == ".xlsx":
        return out.parent, out
    if out.suffix.lower() in (".csv", ".xlsx", ".parquet", ".pq", ".xls", ".txt"):
        raise ConfigError(
            f"'{out}' names a file, but a {fmt} export writes one file per table into a "
            f"folder; give a folder, e.g. '{out.with_suffix('')}'"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' is a file; expected the folder to write the export into")
    return out, None


def _parquet_metadata(
    rows: list[tuple[str, str, Any]], run: RunPath, pixel_size_um: float | None
) -> dict[str, str]:
    """Schema metadata of the Parquet files: the metadata rows as JSON under
    ``crystalseg``, and ``pixel_size_um`` and ``source`` as before."""
    grouped: dict[str, dict[str, Any]] = {}
    for section, key, value in rows:
        if section.startswith("columns_"):
            continue  # in the field metadata
        entry = grouped.setdefault(section, {})
        entry[key] = [*entry[key], value] if key in entry and key == "note" else value
    return {
        "crystalseg": json.dumps(grouped, default=str),
        "pixel_size_um": json.dumps(pixel_size_um),
        "source": str(run),
    }


def export_particles(
    run: RunLike,
    path: RunLike,
    *,
    format: Literal["parquet", "csv"] | None = None,
    settings: ExportSettings | None = None,
) -> RunPath:
    """Write the particle table of a measured run to one Parquet or CSV file, streaming.

    The columns are those of :func:`export_run`'s ``particles`` table (units in the
    headers, ``ecd`` once); CSV is written as :class:`ExportSettings` says.

    Parameters
    ----------
    run : path of the measured run store
    path : output file (replaced once written whole)
    format : {"parquet", "csv"}, optional
        Default from the suffix of ``path`` (``.parquet``/``.pq`` or ``.csv``).
    settings : ExportSettings, optional
        Separator, decimal mark, byte-order mark and digits of a CSV.

    Returns
    -------
    Path of the written file.

    Raises
    ------
    ConfigError
        Unknown format, or none given and the suffix says nothing.
    StageStateError
        The run has no finished measurement.
    """
    out = run_path(path)
    fmt = format
    if fmt is None:
        suffix = out.suffix.lower()
        fmt = "parquet" if suffix in (".parquet", ".pq") else "csv" if suffix == ".csv" else None
        if fmt is None:
            raise ConfigError(
                f"cannot tell the format of '{out}' from its suffix; name it *.parquet or "
                "*.csv, or pass format='parquet' or 'csv'"
            )
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"export format {fmt!r} is unknown; use 'parquet' or 'csv'")
    settings = settings or ExportSettings()
    store = run_path(run)
    pixel = _measured(store)
    table = _particles_table(store, pixel)
    make_folder(out.parent)
    if fmt == "csv":
        _write_csv(table, out, settings)
    else:
        meta = {"pixel_size_um": json.dumps(pixel), "source": str(run)}
        _write_parquet(table, out, meta)
    return out


__all__ = [
    "DEFAULT_DIGITS",
    "DUPLICATE_COLUMNS",
    "EXCEL_MAX_ROWS",
    "TABLES",
    "UNIT_SUFFIXES",
    "ExportResult",
    "ExportSettings",
    "column_header",
    "export_particles",
    "export_run",
    "round_significant",
]
