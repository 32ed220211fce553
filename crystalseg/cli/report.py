"""``report``: a self-contained HTML report of a measured run, and its PDF."""

from __future__ import annotations

from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
)
from crystalseg.cli.options import (
    FrameList,
    color_by_option,
    montage_option,
    run_argument,
)


@click.command(cls=Command)
@run_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="HTML file to write (default: RUN_report.html beside RUN; replaced if it exists).",
)
@click.option(
    "--basis",
    type=click.Choice(["number", "volume"]),
    default="number",
    show_default=True,
    help="Basis of the statistics and PSD-curve figures.",
)
@click.option(
    "--frames",
    "overlay_frames",
    type=FrameList(),
    default="-1",
    show_default=True,
    metavar="LIST",
    help="Frames drawn full size with outlines, e.g. 0,50,-1 (negative: from the end).",
)
@montage_option(6)
@color_by_option
@click.option(
    "--meta",
    multiple=True,
    metavar="KEY=VALUE,...",
    help="Batch-record fields for the report's header, e.g. "
    "'sample=API-7,batch=B-2291,operator=J. Doe,instrument=probe 2' (repeatable; "
    "a comma inside a value is written \\,).",
)
@click.option("--pdf", is_flag=True, help="Also write the report as PDF beside the HTML.")
def report(
    run: Path,
    output: Path | None,
    basis: str,
    overlay_frames: tuple[int, ...],
    montage_n: int,
    color_by: str,
    meta: tuple[str, ...],
    pdf: bool,
) -> None:
    """Write a self-contained HTML report of a measured RUN (and its PDF with --pdf).

    Batch-record fields (--meta), run metadata, calibration and model, warnings, a
    D10/D50/D90 summary and D-values over time, the PSD figures, segmentation
    overlays and the settings of every stage, in one file that opens offline in any
    browser. Each file gets a NAME.sha256 beside it; the digests are printed.

    \b
    Example:
      crystalseg report run.zarr -o run_report.html --frames 0,50,-1
      crystalseg report run.zarr --pdf --meta 'sample=API-7,batch=B-2291'
    """
    from crystalseg.errors import ConfigError
    from crystalseg.viz.report import (
        ReportSettings,
        parse_meta,
        pdf_path,
        report_sha256,
        write_report,
    )

    try:
        fields = parse_meta(meta)
    except ConfigError as exc:  # the messages start with "meta"
        raise ConfigError(f"--{exc}") from None
    settings = ReportSettings(
        basis=basis,  # type: ignore[arg-type]
        overlay_frames=overlay_frames,
        montage_n=montage_n,
        color_by=color_by,  # type: ignore[arg-type]
    )
    path, problems = write_report(run, output, settings=settings, meta=fields, pdf=pdf)
    from crystalseg.summary import counted

    click.echo(f"report written to {path} ({counted(len(problems), 'warning')})")
    written = [path, pdf_path(path)] if pdf else [path]
    if pdf:
        click.echo(f"PDF written to {written[1]}")
    for file in written:
        click.echo(f"sha256 {report_sha256(file)}  {file}")
    for problem in problems:
        click.echo(f"  warning: {problem.message}")
