"""``report``: a self-contained HTML report of a measured run, and its PDF."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

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
@click.option(
    "--meta",
    multiple=True,
    metavar="KEY=VALUE,...",
    help="Batch-record fields for the report's header, e.g. "
    "'sample=API-7,batch=B-2291,operator=J. Doe,instrument=probe 2' (repeatable; "
    "a comma inside a value is written \\,).",
)
@click.option("--pdf", is_flag=True, help="Also write the report as PDF beside the HTML.")
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
    meta: tuple[str, ...],
    pdf: bool,
    as_json: bool,
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
      crystalseg report run.zarr --config sop.toml --json
    """
    from crystalseg.errors import ConfigError
    from crystalseg.viz.report import (
        ReportSettings,
        parse_meta,
        pdf_path,
        report_sha256,
        write_report,
    )

    # An SOP file's meta and --meta add up (an SOP keeps the instrument, the command
    # line names the sample and batch); a field in both is refused, never replaced.
    given = list(meta)
    if ctx.get_parameter_source("meta") == ParameterSource.COMMANDLINE:
        from_file = (ctx.default_map or {}).get("meta") or ()
        given = [*([from_file] if isinstance(from_file, str) else from_file), *meta]
    try:
        fields = parse_meta(given)
    except ConfigError as exc:  # the messages start with "meta"
        raise ConfigError(f"--{exc}") from None
    settings = ReportSettings(
        basis=basis,  # type: ignore[arg-type]
        overlay_frames=overlay_frames,
        montage_n=montage_n,
        color_by=color_by,  # type: ignore[arg-type]
        sop=sop_request(ctx),
    )
    path, problems = write_report(run, output, settings=settings, meta=fields, pdf=pdf)
    written = [path, pdf_path(path)] if pdf else [path]
    digests = {str(file): report_sha256(file) for file in written}
    if as_json:
        echo_json(
            {
                "report": path,
                "pdf": written[1] if pdf else None,
                "sha256": digests,
                "warnings": [
                    {"code": p.code, "message": p.message, "frames": list(p.frames)}
                    for p in problems
                ],
            }
        )
        return
    from crystalseg.summary import counted

    click.echo(f"report written to {path} ({counted(len(problems), 'warning')})")
    if pdf:
        click.echo(f"PDF written to {written[1]}")
    for file, digest in digests.items():
        click.echo(f"sha256 {digest}  {file}")
    for problem in problems:
        click.echo(f"  warning: {problem.message}")
