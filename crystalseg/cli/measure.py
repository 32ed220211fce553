"""``measure``: particles and PSD over time (segmenting first when there is no mask)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import click

from crystalseg.cli.base import Command, echo_json, echo_run_error, stage_bars
from crystalseg.cli.options import (
    check_bins,
    json_option,
    measure_filter_options,
    measure_settings,
    model_option,
    precision_option,
    resize_option,
    runs_argument,
    scheduler_option,
    tta_option,
)
from crystalseg.cli.sop import config_option, record_requests, sop_request


@click.command(cls=Command)
@runs_argument
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
@json_option
@config_option
@click.pass_context
def measure(
    ctx: click.Context,
    runs: tuple[Path, ...],
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
    as_json: bool,
    **filters: Any,
) -> None:
    """Measure every particle in every frame of RUN; PSD over time into the store.

    Segments the run first if it has no mask (bundled model unless --model). Writes
    group 'particles' (one row per particle per frame) and group 'psd' (time x size
    bin: number- and volume-weighted PSD, D10/D50/D90, moment means, counts, shape,
    each with its 95 % interval); with --window also group 'psd_window'.

    Several runs (or a folder of *.zarr runs) are measured one after the other with
    the model loaded once; a run that fails is reported and the others go on, then a
    table of all runs (exit status 1 if any failed).

    \b
    Example:
      crystalseg measure run.zarr --export csv
      crystalseg measure run.zarr --window 60s --min-area 20um2
      crystalseg measure run.zarr --config sop.toml --json
      crystalseg measure runs/*.zarr
      crystalseg measure run.zarr --kinetics
    """
    from crystalseg.export import ExportSettings, export_run
    from crystalseg.kinetics import KineticsSettings, kinetics_run
    from crystalseg.kinetics.run import format_kinetics, read_kinetics
    from crystalseg.measure import MeasureSettings
    from crystalseg.measure.run import MeasureOptions, needs_segmentation
    from crystalseg.pipeline import RunOutcome, measure_runs
    from crystalseg.segment import EngineSettings
    from crystalseg.store import read_run_attrs
    from crystalseg.summary import format_measurement, format_queue

    many = len(runs) > 1
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
    engine = None
    if tta or resize != "auto" or precision != "auto":
        engine = EngineSettings(tta=tta, resize=resize, precision=precision)  # type: ignore[arg-type]
    min_areas: dict[Any, Any] = {}
    segments: dict[Any, bool] = {}
    bars = ExitStack()

    def options(run: Any) -> MeasureOptions:
        calibrated = filters["min_area"].unit == "um2"
        settings, min_areas[run] = measure_settings(
            dict(filters),  # taken apart: each run needs its own copy
            pixel_size_um=read_run_attrs(run).get("pixel_size_um") if calibrated else None,
            bins=bins or MeasureSettings.bins,
            min_count=MeasureSettings.min_count if min_count is None else min_count,
            window=window,
        )
        segments[run] = needs_segmentation(run)
        if asked and not segments[run]:
            click.echo(
                f"note: {run} already has a mask, which is measured as it is; "
                f"{', '.join(asked)} {'applies' if len(asked) == 1 else 'apply'} only to "
                "segmenting (to redo the mask: crystalseg segment RUN ... --overwrite)",
                err=True,
            )
        bars.close()  # the bars of the run before
        update = bars.enter_context(stage_bars(ctx.obj["quiet"], run.name if many else ""))
        return MeasureOptions(settings, overwrite=overwrite, progress=update)

    def finish(run: Any) -> dict[str, Any]:
        bars.close()
        if segments[run] and sop_request(ctx) is not None:
            record_requests(ctx, run, ("segment",))
        record_requests(ctx, run, ("measure",), min_area=min_areas[run])
        exported = None
        if export_format:
            fmt = ExportSettings(what=("particles",), format=export_format)  # type: ignore[arg-type]
            exported = export_run(run, run.parent, settings=fmt).files[0]
        done: dict[str, Any] = {"exported": exported, "min_area": min_areas[run]}
        if with_kinetics:
            kinetics_run(run, settings=KineticsSettings(), overwrite=overwrite)
            done["kinetics"] = read_kinetics(run)
        return done

    def report(outcome: RunOutcome) -> None:
        if not many:
            return
        if outcome.error is not None:
            echo_run_error(outcome.path, outcome.error)
        elif not as_json:
            click.echo(format_measurement(dict(outcome.summary), outcome.summary["exported"]))
            if "kinetics" in outcome.summary:
                click.echo(format_kinetics(outcome.summary["kinetics"], outcome.path))

    with bars:
        outcomes = measure_runs(
            runs,
            model=model,
            engine=engine,
            options=options,
            client=scheduler,
            stream="auto" if stream is None else stream,
            finish=finish,
            each=report,
        )
    if not many:  # one run: its document, or its error as the one Error: line
        (outcome,) = outcomes
        if outcome.error is not None:
            raise outcome.error
        summary = dict(outcome.summary)
        if as_json:
            echo_json(summary)
        else:
            click.echo(format_measurement(summary, summary["exported"]))
            if "kinetics" in summary:
                click.echo(format_kinetics(summary["kinetics"], outcome.path))
        return
    documents = [outcome.as_dict() for outcome in outcomes]
    if as_json:
        echo_json(documents)
    else:
        click.echo(format_queue(documents))
    if not all(outcome.ok for outcome in outcomes):
        ctx.exit(1)
