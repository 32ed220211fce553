"""``measure``: particles and PSD over time (segmenting first when there is no mask)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from crystalseg.cli.base import (
    Command,
    stage_bars,
)
from crystalseg.cli.options import (
    check_bins,
    measure_filter_options,
    measure_settings,
    model_option,
    precision_option,
    resize_option,
    run_argument,
    scheduler_option,
    tta_option,
)


@click.command(cls=Command)
@run_argument
@model_option
@measure_filter_options
@click.option(
    "--bins",
    nargs=3,
    type=(float, float, int),
    default=None,
    metavar="MIN MAX N",
    callback=lambda ctx, param, value: check_bins(value),
    help="Log size bins (um, or px without a pixel size). Default 1 1000 60.",
)
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["parquet", "csv"]),
    default=None,
    help="Also write the particle table next to RUN.",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=1),
    default=None,
    help="Least counted particles for a frame's D-values; fewer give NaN and a flag [default: 20].",
)
@click.option(
    "--window",
    default=None,
    metavar="LENGTH",
    help="Also pool consecutive frames into windows ('60s', '2min' or a frame count such "
    "as '5'): window PSDs and intervals in group psd_window.",
)
@click.option("--overwrite", is_flag=True, help="Replace results made with other settings.")
@click.option(
    "--kinetics",
    "with_kinetics",
    is_flag=True,
    help="Then track the crystals: growth and nucleation rates and the CLD, as "
    "'crystalseg kinetics RUN' with its defaults.",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Measure chunks while the next are segmented (default: only when inference is on a "
    "GPU; on the CPU both stages want the same cores).",
)
@precision_option
@tta_option
@resize_option
@scheduler_option
@click.pass_context
def measure(
    ctx: click.Context,
    run: Path,
    model: Path | None,
    bins: tuple[float, float, int] | None,
    export_format: str | None,
    min_count: int | None,
    window: str | None,
    overwrite: bool,
    with_kinetics: bool,
    stream: bool | None,
    precision: str,
    tta: bool,
    resize: float | Literal["auto"],
    scheduler: str | None,
    **filters: Any,
) -> None:
    """Measure every particle in every frame of RUN; PSD over time into the store.

    Segments the run first if it has no mask (bundled model unless --model). Writes
    group 'particles' (one row per particle per frame) and group 'psd' (time x size
    bin: number- and volume-weighted PSD, D10/D50/D90, moment means, counts, shape,
    each with its 95 % interval); with --window also group 'psd_window'.

    \b
    Example:
      crystalseg measure run.zarr --export csv
      crystalseg measure run.zarr --window 60s
      crystalseg measure run.zarr --kinetics
    """
    from crystalseg.export import ExportSettings, export_run
    from crystalseg.kinetics import KineticsSettings
    from crystalseg.measure import MeasureSettings
    from crystalseg.measure.results import summarize_measurement
    from crystalseg.measure.run import MeasureOptions, needs_segmentation
    from crystalseg.pipeline import segment_and_measure
    from crystalseg.summary import format_measurement

    settings = measure_settings(
        filters,
        bins=bins or MeasureSettings.bins,
        min_count=MeasureSettings.min_count if min_count is None else min_count,
        window=window,
    )
    engine: Any = model
    asked = [
        name
        for name, on in (
            ("--model", model),
            ("--precision", precision != "auto"),
            ("--tta", tta),
            ("--resize", resize != "auto"),
        )
        if on
    ]
    if asked and not needs_segmentation(run):
        click.echo(
            f"note: {run} already has a mask, which is measured as it is; {', '.join(asked)} "
            f"{'applies' if len(asked) == 1 else 'apply'} only to segmenting (to redo the "
            "mask: crystalseg segment RUN ... --overwrite)",
            err=True,
        )
    elif tta or resize != "auto" or precision != "auto":  # the run is segmented here
        from crystalseg.segment import EngineSettings, load_segmenter

        engine_settings = EngineSettings(
            tta=tta,
            resize=resize,
            precision=precision,  # type: ignore[arg-type]
        )
        engine = load_segmenter(model, None, engine_settings)
    with stage_bars(ctx.obj["quiet"]) as update:
        segment_and_measure(
            run,
            model=engine,
            options=MeasureOptions(settings, overwrite=overwrite, progress=update),
            client=scheduler,
            stream="auto" if stream is None else stream,
            kinetics=KineticsSettings() if with_kinetics else None,
        )
    exported = None
    if export_format:
        fmt = ExportSettings(what=("particles",), format=export_format)  # type: ignore[arg-type]
        exported = export_run(run, run.parent, settings=fmt).files[0]
    click.echo(format_measurement(summarize_measurement(run), exported))
    if with_kinetics:
        from crystalseg.kinetics.run import format_kinetics, read_kinetics

        click.echo(format_kinetics(read_kinetics(run), run))
