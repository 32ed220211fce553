"""``report``: a self-contained HTML report of a measured run."""

from __future__ import annotations

from pathlib import Path

import click

from crystalseg.cli.base import Command, echo_json
from crystalseg.cli.options import (
    FrameList,
    color_by_option,
    json_option,
    montage_option,
    run_argument,
    run_location,
)
from crystalseg.cli.sop import config_option, sop_request


@click.command(cls=Command)
@run_argument
@click.option(
    "-o",
    "--output",
    type=run_location,
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
    help="Frames drawn full size with outlines, e.g. 0,50,-1 or 0-4 (negative: from the end).",
)
@montage_option(6)
@color_by_option
@json_option
@config_option
@click.pass_context
def report(
    ctx: click.Context,
    run: Path,
    output: Path | None,
    basis: str,
    overlay_frames: tuple[int, ...],
    montage_n: int,
    color_by: str,
    as_json: bool,
) -> None:
    """Write a self-contained HTML report of a measured RUN.

    Run metadata and calibration, warnings, a D10/D50/D90 summary, the PSD figures,
    segmentation overlays and the settings of every stage, in one file that opens
    offline in any browser.

    \b
    Example:
      crystalseg report run.zarr -o run_report.html --frames 0,50,-1
      crystalseg report run.zarr --config sop.toml --json
    """
    from crystalseg.viz.report import ReportSettings, write_report

    settings = ReportSettings(
        basis=basis,  # type: ignore[arg-type]
        overlay_frames=overlay_frames,
        montage_n=montage_n,
        color_by=color_by,  # type: ignore[arg-type]
        sop=sop_request(ctx),
    )
    path, problems = write_report(run, output, settings=settings)
    if as_json:
        echo_json(
            {
                "report": path,
                "warnings": [
                    {"code": p.code, "message": p.message, "frames": list(p.frames)}
                    for p in problems
                ],
            }
        )
        return
    from crystalseg.summary import counted

    click.echo(f"report written to {path} ({counted(len(problems), 'warning')})")
    for problem in problems:
        click.echo(f"  warning: {problem.message}")
