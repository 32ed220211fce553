"""``segment``: the class mask of every frame, by the inference engine."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import click

from crystalseg.cli.base import Command, echo_run_error, stage_bars
from crystalseg.cli.options import (
    model_option,
    precision_option,
    resize_option,
    runs_argument,
    scheduler_option,
    tta_option,
)
from crystalseg.cli.sop import config_option, record_requests


@click.command(cls=Command)
@runs_argument
@model_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="CPU runtime; auto measures once and picks the faster.",
)
@click.option("--batch-size", type=int, default=None, help="Frames per batch (default: by memory).")
@click.option(
    "--tile-size",
    type=click.IntRange(min=64),
    default=None,
    help="Tile larger frames (px, a multiple of 32, default 1024).",
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (GPU).")
@precision_option
@tta_option
@resize_option
@click.option(
    "--save-probability/--no-save-probability",
    default=None,
    help="Also store the crystal probability (measure's confidence filter needs it) "
    "[default: with a new mask; a mask made without it is kept as it is].",
)
@click.option("--overwrite", is_flag=True, help="Replace a mask made by another model.")
@scheduler_option
@config_option
@click.pass_context
def segment(
    ctx: click.Context,
    runs: tuple[Path, ...],
    model: Path | None,
    device: str,
    backend: str,
    batch_size: int | None,
    tile_size: int | None,
    compile_: bool,
    precision: str,
    tta: bool,
    resize: float | Literal["auto"],
    save_probability: bool | None,
    overwrite: bool,
    scheduler: str | None,
) -> None:
    """Segment every frame of RUN with a U-Net and store the class mask in it.

    Runs on the GPU when there is one, else on all CPU cores (ONNX Runtime when it
    is faster). An interrupted run resumes where it stopped. Several runs (or a folder
    of *.zarr runs) are segmented one after the other with the model loaded once; a
    run that fails is reported and the others go on (exit status 1 if any failed).

    \b
    Example:
      crystalseg segment run.zarr --model model/
      crystalseg segment run.zarr --config sop.toml
      crystalseg segment runs/*.zarr
    """
    from crystalseg.pipeline import RunOutcome, segment_runs
    from crystalseg.segment import EngineSettings
    from crystalseg.segment.engine import DEFAULT_TILE_SIZE
    from crystalseg.summary import format_queue, resize_note

    many = len(runs) > 1
    engine = EngineSettings(
        device=device,
        backend=backend,  # type: ignore[arg-type]
        batch_size=batch_size,
        tile_size=tile_size or DEFAULT_TILE_SIZE,
        precision=precision,  # type: ignore[arg-type]
        compile=compile_,
        tta=tta,
        resize=resize,
    )
    bars = ExitStack()

    def progress(run: Any, done: int, total: int) -> None:
        if run not in shown:
            bars.close()  # the bar of the run before
            shown.add(run)
            updates[run] = bars.enter_context(stage_bars(quiet, run.name if many else ""))
        updates[run]("segment", done, total)

    def report(outcome: RunOutcome) -> None:
        bars.close()
        if outcome.error is not None:
            if many:
                echo_run_error(outcome.path, outcome.error)
            return
        run: Any = outcome.path  # a Path, or a UPath for a URL
        record_requests(ctx, run, ("segment",))
        classes = outcome.summary["classes"]
        frames = outcome.summary["frames"]
        click.echo(f"mask of {frames} frames written to {outcome.path} (classes: {classes})")
        if outcome.summary["resize"] != 1.0:
            click.echo(resize_note(outcome.summary["resize"]))

    quiet = ctx.obj["quiet"]
    shown: set[Any] = set()
    updates: dict[Any, Any] = {}
    with bars:
        outcomes = segment_runs(
            runs,
            model=model,
            engine=engine,
            overwrite=overwrite,
            save_probability=save_probability,
            client=scheduler,
            progress=progress,
            each=report,
        )
    if not many:
        if outcomes[0].error is not None:
            raise outcomes[0].error
        return
    click.echo(format_queue([outcome.as_dict() for outcome in outcomes]))
    if not all(outcome.ok for outcome in outcomes):
        ctx.exit(1)
