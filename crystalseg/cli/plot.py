"""``plot`` (PSD figures of one or several runs) and ``overlay`` (outlines on frames)."""

from __future__ import annotations

from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
    comma_list,
)
from crystalseg.cli.options import (
    FrameList,
    color_by_option,
    montage_option,
    run_argument,
    run_location,
)


@click.command(cls=Command)
@click.argument("runs", nargs=-1, required=True, type=run_location)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=run_location,
    default=None,
    help="Folder of the figures (default: RUN_plots beside RUN; compare_plots beside "
    "the first of several).",
)
@click.option(
    "--format", "formats", default="png", show_default=True, help="Comma-separated: png,svg,pdf."
)
@click.option(
    "--basis",
    type=click.Choice(["number", "volume"]),
    default="number",
    show_default=True,
    help="Weighting of the size distribution and D-values.",
)
@click.option(
    "--times",
    default=None,
    help="Seconds of the PSD curves, e.g. 0,600,3600 (default: start, middle, end).",
)
@click.option(
    "--fbrm",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="A probe's CSV export (time + counts per chord bin): its counts per size class "
    "beside the run's CLD (runs with kinetics).",
)
@click.option(
    "--fbrm-offset",
    "fbrm_offset_s",
    type=float,
    default=0.0,
    show_default=True,
    help="Run time of the probe's first row, seconds (negative: the probe started first).",
)
def plot(
    runs: tuple[Path, ...],
    out_dir: Path | None,
    formats: str,
    basis: str,
    times: str | None,
    fbrm: Path | None,
    fbrm_offset_s: float,
) -> None:
    """Draw the PSD over time, D10/D50/D90 and count, PSD curves and crystal shape of RUN.

    Several runs also get one figure comparing their D50 and count over time. A run
    with kinetics also gets its kinetics figures (tracks on the last frame, growth
    against size, births and growth over time, CLD over time; with --fbrm the
    probe's counts beside the CLD).

    \b
    Example:
      crystalseg plot run.zarr --format png,pdf --times 0,600,3600
      crystalseg plot run1.zarr run2.zarr -o compare/
      crystalseg plot run.zarr --fbrm probe_export.csv --fbrm-offset -120
    """
    from crystalseg.errors import ConfigError
    from crystalseg.kinetics.fbrm import read_fbrm_csv
    from crystalseg.viz.kinetics import has_kinetics, write_kinetics_figures
    from crystalseg.viz.plots import default_plot_dir, plot_run, plot_runs

    fmts = comma_list(formats.lower())
    at = None
    if times is not None:
        try:
            at = [float(t) for t in comma_list(times)]
        except ValueError:
            raise ConfigError(
                f"--times {times!r} is not a list of seconds; write e.g. --times 0,600,3600"
            ) from None
    out = out_dir or default_plot_dir(runs)
    if fbrm is not None and not (len(runs) == 1 and has_kinetics(runs[0])):
        raise ConfigError(
            "--fbrm draws the probe beside one run's CLD, which 'crystalseg kinetics RUN' "
            "makes; give one run that has kinetics"
        )
    probe = None if fbrm is None else read_fbrm_csv(fbrm)  # read before drawing anything
    if len(runs) == 1:
        written = plot_run(runs[0], out, formats=fmts, basis=basis, times=at)  # type: ignore[arg-type]
        written += write_kinetics_figures(
            runs[0],
            out,
            formats=tuple(fmts),
            fbrm=probe,
            fbrm_offset_s=fbrm_offset_s,
        )
    else:
        written = plot_runs(runs, out, formats=fmts, basis=basis, times=at)  # type: ignore[arg-type]
    click.echo(f"{len(written)} figure files ({', '.join(fmts)}) written to {out}")


@click.command(cls=Command)
@run_argument
@click.option(
    "--frames",
    type=FrameList(),
    default=None,
    help="Frames to draw, e.g. 0,50,-1 or 0-9 (negative: from the end) [default: first, "
    "middle, last].",
)
@color_by_option
@montage_option(9)
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=run_location,
    default=None,
    help="Folder of the PNGs (default: RUN_overlays beside RUN).",
)
def overlay(
    run: Path,
    frames: tuple[int, ...] | None,
    color_by: str,
    montage_n: int,
    output_dir: Path | None,
) -> None:
    """Draw the measured particles' outlines on frames of RUN, to check the segmentation.

    Writes frame_NNNNN.png per frame and montage.png. Outlines are the particles as
    measured: blue counted, vermillion excluded (edge, focus, too small), or by size.

    \b
    Example:
      crystalseg overlay run.zarr --frames 0,50,-1 --color-by size
    """
    from crystalseg.viz.overlay import write_overlays

    out = output_dir or run.with_name(f"{run.stem}_overlays")
    paths = write_overlays(
        run,
        out,
        frames=frames,
        color_by=color_by,  # type: ignore[arg-type]
        montage_n=montage_n,
    )
    click.echo(f"{len(paths)} overlay images written to {out}:")
    for path in paths:
        click.echo(f"  {path}")
