"""``segment``: the class mask of every frame, by the inference engine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from crystalseg.cli.base import (
    Command,
    stage_bars,
)
from crystalseg.cli.options import (
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
@click.pass_context
def segment(
    ctx: click.Context,
    run: Path,
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
    is faster). An interrupted run resumes where it stopped.

    \b
    Example:
      crystalseg segment run.zarr --model model/
    """
    from crystalseg.segment import segment_run
    from crystalseg.segment.engine import DEFAULT_TILE_SIZE

    with stage_bars(ctx.obj["quiet"]) as update:
        mask = segment_run(
            run,
            model,
            device=device,
            backend=backend,  # type: ignore[arg-type]
            batch_size=batch_size,
            compile=compile_,
            precision=precision,  # type: ignore[arg-type]
            tta=tta,
            resize=resize,
            save_probability=save_probability,
            overwrite=overwrite,
            client=scheduler,
            progress=lambda done, total: update("segment", done, total),
            tile_size=tile_size or DEFAULT_TILE_SIZE,
        )
    from crystalseg.store import stage_info
    from crystalseg.summary import resize_note

    classes = mask.attrs.get("flag_meanings", "")
    click.echo(f"mask of {mask.shape[0]} frames written to {run} (classes: {classes})")
    factor = float(stage_info(run)["segment"]["settings"].get("resize", 1.0))
    if factor != 1.0:
        click.echo(resize_note(factor))
