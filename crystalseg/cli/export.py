"""``export``: the results of a measured run as CSV, Excel or Parquet."""

from __future__ import annotations

from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
    comma_list,
)
from crystalseg.cli.options import (
    run_argument,
)


@click.command("export", cls=Command)
@run_argument
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of the files (default: beside RUN), named RUN_<table>.csv, RUN.xlsx or "
    "RUN_<table>.parquet; with --format xlsx also a workbook file name (results.xlsx).",
)
@click.option(
    "--what",
    default=None,
    metavar="LIST",
    help="Tables, comma-separated: statistics (one row per frame), psd (per frame and size "
    "bin), particles, tracks [default: every table RUN holds].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "xlsx", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--sep",
    default=",",
    show_default=True,
    help="CSV column separator: ',', ';' or 'tab' (';' with --decimal ',' for German or "
    "French Excel).",
)
@click.option(
    "--decimal",
    type=click.Choice([".", ","]),
    default=".",
    show_default=True,
    help="CSV decimal mark.",
)
@click.option(
    "--bom/--no-bom",
    default=True,
    show_default=True,
    help="Start CSV files with a UTF-8 byte-order mark (Excel needs it to read UTF-8).",
)
@click.option(
    "--digits",
    type=int,
    default=6,
    show_default=True,
    help="Significant digits of decimals in CSV and xlsx (Parquet keeps all).",
)
def export_cmd(
    run: Path,
    out_dir: Path | None,
    what: str | None,
    fmt: str,
    sep: str,
    decimal: str,
    bom: bool,
    digits: int,
) -> None:
    """Write the results of a measured RUN as CSV, Excel or Parquet, units in every header.

    Tables: statistics (one row per frame: counts, D10/D50/D90, D[4,3], span, shape,
    number density), psd (one row per frame and size bin), particles, tracks. CSV and
    xlsx come with the run's metadata (calibration, model, settings, exclusions).

    \b
    Example:
      crystalseg export run.zarr --format xlsx
      crystalseg export run.zarr --what statistics,psd --sep ';' --decimal ','
    """
    from crystalseg.export import ExportSettings, export_run

    settings = ExportSettings(
        what=comma_list(what) if what is not None else None,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        sep="\t" if sep in ("tab", "\\t") else sep,  # type: ignore[arg-type]
        decimal=decimal,  # type: ignore[arg-type]
        bom=bom,
        digits=digits,
    )
    result = export_run(run, out_dir if out_dir is not None else run.parent, settings=settings)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    rows = ", ".join(f"{name} {n:,} rows" for name, n in result.rows.items())
    click.echo(f"exported {rows} of {run}:")
    for path in result.files:
        click.echo(f"  {path}")
