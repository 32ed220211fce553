"""``report``: a self-contained HTML report of a measured run."""

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
def report(
    run: Path,
    output: Path | None,
    basis: str,
    overlay_frames: tuple[int, ...],
    montage_n: int,
    color_by: str,
) -> None:
    """Write a self-contained HTML report of a measured RUN.

    Run metadata and calibration, warnings, a D10/D50/D90 summary, the PSD figures,
    segmentation overlays and the settings of every stage, in one file that opens
    offline in any browser.

    \b
    Example:
      crystalseg report run.zarr -o run_report.html --frames 0,50,-1
    """
    from crystalseg.viz.report import ReportSettings, write_report

    settings = ReportSettings(
        basis=basis,  # type: ignore[arg-type]
        overlay_frames=overlay_frames,
        montage_n=montage_n,
        color_by=color_by,  # type: ignore[arg-type]
    )
    path, problems = write_report(run, output, settings=settings)
    from crystalseg.summary import counted

    click.echo(f"report written to {path} ({counted(len(problems), 'warning')})")
    for problem in problems:
        click.echo(f"  warning: {problem.message}")
