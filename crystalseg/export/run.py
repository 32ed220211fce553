"""Export entry points: a measured run's tables into CSV, Excel or Parquet files."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import ConfigError
from crystalseg.export.settings import ExportFormat, ExportResult, ExportSettings
from crystalseg.export.tables import (
    Table,
    metadata_rows,
    particles_table,
    psd_table,
    resolve_tables,
    statistics_table,
    tracks_table,
)
from crystalseg.export.writers import (
    check_excel_rows,
    write_csv,
    write_metadata_csv,
    write_parquet,
    write_xlsx,
)
from crystalseg.measure.reader import MeasuredRun
from crystalseg.store import check_output_outside_run, make_folder
from crystalseg.store.location import RunLike, RunPath, run_path

log = logging.getLogger(__name__)


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
    measured = MeasuredRun(path)
    pixel = measured.calibration.pixel_size_um
    names, notes = resolve_tables(path, settings.what)
    stale = measured.outdated
    if stale is not None:
        notes.insert(
            0,
            f"the measurement is out of date ({stale}); the export holds the results as "
            "measured: measure the run again to update them",
        )
        log.warning("%s: %s", path, notes[0])
    folder, workbook = _output(run_path(out), settings.format)
    stem = path.name.removesuffix(".zarr") if path.name.endswith(".zarr") else path.stem
    tables: list[Table] = []
    for name in names:
        if name == "statistics":
            tables.append(statistics_table(measured))
        elif name == "psd":
            tables.append(psd_table(measured))
        elif name == "particles":
            tables.append(particles_table(measured))
        else:
            tables.append(tracks_table(path))
    left_out = sorted(
        str(n)
        for n, v in measured.psd.data_vars.items()
        if v.dims not in ((TIME,), (TIME, SIZE_BIN))
    )
    if left_out:
        log.info("psd variables not exported (other dimensions): %s", ", ".join(left_out))
    metadata = metadata_rows(measured, tables, settings, notes)
    if left_out:
        metadata.append(("export", "psd_not_exported", ", ".join(left_out)))
    if settings.format == "xlsx":
        check_excel_rows(tables, path)
    check_output_outside_run(workbook or folder)
    make_folder(folder)
    files: list[RunPath] = []
    if settings.format == "xlsx":
        target = workbook or folder / f"{stem}.xlsx"
        write_xlsx(tables, metadata, target, settings)
        files.append(target)
    elif settings.format == "csv":
        for table in tables:
            target = folder / f"{stem}_{table.name}.csv"
            write_csv(table, target, settings)
            files.append(target)
        target = folder / f"{stem}_metadata.csv"
        write_metadata_csv(metadata, target, settings)
        files.append(target)
    else:
        schema_meta = _parquet_metadata(metadata, path, pixel)
        for table in tables:
            target = folder / f"{stem}_{table.name}.parquet"
            write_parquet(table, target, schema_meta)
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
    measured = MeasuredRun(run)
    pixel = measured.calibration.pixel_size_um
    table = particles_table(measured)
    make_folder(out.parent)
    if fmt == "csv":
        write_csv(table, out, settings)
    else:
        meta = {"pixel_size_um": json.dumps(pixel), "source": str(run)}
        write_parquet(table, out, meta)
    return out


__all__ = ["export_particles", "export_run"]
