"""Commands that make or describe a run store: ``import``, ``calibrate``, ``info``, ``upgrade``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
    echo_info,
    progress_bar,
    run_info,
)
from crystalseg.cli.options import (
    run_argument,
)


@click.command("import", cls=Command)
@click.argument("source", type=click.Path(path_type=Path))
@run_argument
@click.option(
    "--pixel-size", "pixel_size_um", type=float, help="Micrometres per pixel (overrides metadata)."
)
@click.option(
    "--interval", "interval_s", type=float, help="Seconds between frames (overrides timestamps)."
)
@click.option("--channel", type=int, help="Channel to take from a multi-channel recording.")
@click.option(
    "--series",
    type=click.IntRange(min=0),
    help="Image series of a TIFF to import (e.g. one stage position of an OME-TIFF).",
)
@click.option(
    "--frames-per-chunk",
    type=click.IntRange(min=1),
    help="Frames per store chunk (default: ~4 MiB a chunk).",
)
@click.option(
    "--planar-rgb",
    type=click.Choice(["auto", "frames", "rgb"]),
    default="auto",
    show_default=True,
    help="A TIFF of 3 or 4 pages stored as planar RGB(A): its planes as frames, or one colour "
    "image turned grey. auto: frames when tifffile wrote it (its imwrite stores any 3- or "
    "4-frame stack so), else colour; a warning says which.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run store.")
@click.pass_context
def import_cmd(
    ctx: click.Context,
    source: Path,
    run: Path,
    pixel_size_um: float | None,
    interval_s: float | None,
    channel: int | None,
    series: int | None,
    frames_per_chunk: int | None,
    planar_rgb: str,
    overwrite: bool,
) -> None:
    """Import SOURCE (TIFF/OME-TIFF stack, image folder or glob, zarr, OME-Zarr, .npy,
    or a video: AVI, MP4, MOV, MKV) into RUN.

    \b
    Example:
      crystalseg import frames/ run.zarr --pixel-size 1.6 --interval 5
    """
    from crystalseg.importing import import_run, refuse_source_inside
    from crystalseg.io import open_source
    from crystalseg.store import check_calibration

    check_calibration(pixel_size_um=pixel_size_um, what="--pixel-size: ")
    check_calibration(interval_s=interval_s, what="--interval: ")
    refuse_source_inside(source, run)
    with open_source(source, channel=channel, series=series, planar_rgb=planar_rgb) as src:  # type: ignore[arg-type]
        total = src.shape[0]
    with progress_bar(total, "import", ctx.obj["quiet"]) as update:
        import_run(
            source,
            run,
            pixel_size_um=pixel_size_um,
            interval_s=interval_s,
            channel=channel,
            series=series,
            frames_per_chunk=frames_per_chunk,
            overwrite=overwrite,
            progress=update,
            planar_rgb=planar_rgb,  # type: ignore[arg-type]
        )
    echo_info(run)


@click.command(cls=Command)
@run_argument
@click.option("--pixel-size", "pixel_size_um", type=float, help="Micrometres per pixel.")
@click.option("--interval", "interval_s", type=float, help="Seconds between frames.")
def calibrate(run: Path, pixel_size_um: float | None, interval_s: float | None) -> None:
    """Set the pixel size and/or frame interval of RUN after import.

    The frames, mask and probability stay; a measurement made before is out of date
    and the next 'crystalseg measure RUN' measures again (no segmenting).

    \b
    Example:
      crystalseg calibrate run.zarr --pixel-size 0.65 --interval 30
    """
    from crystalseg.store import check_calibration, set_calibration

    check_calibration(pixel_size_um=pixel_size_um, what="--pixel-size: ")
    check_calibration(interval_s=interval_s, what="--interval: ")
    set_calibration(run, pixel_size_um=pixel_size_um, interval_s=interval_s)
    echo_info(run)  # a measurement made before shows OUT OF DATE with the command


@click.command(cls=Command)
@run_argument
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(run: Path, as_json: bool) -> None:
    """Print frames, frame size, dtype, time span, calibration and the stages run on RUN."""
    if as_json:
        click.echo(json.dumps(run_info(run), indent=2))
    else:
        echo_info(run)


@click.command(cls=Command)
@run_argument
def upgrade(run: Path) -> None:
    """Add what this release writes to a RUN made by an earlier one, in place.

    OME-Zarr image and label metadata (napari and Fiji open it calibrated), the
    frames' x/y in micrometres, the probability read as uint8. No data is rewritten.

    \b
    Example:
      crystalseg upgrade run.zarr
    """
    from crystalseg.store.upgrade import upgrade_run

    changes = upgrade_run(run)
    click.echo(f"{run}: " + ("; ".join(changes) if changes else "already up to date"))
