"""``evaluate``: a model's measurement scored on annotated frames."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from crystalseg.cli.base import (
    Command,
    comma_list,
    stage_bars,
)
from crystalseg.cli.options import (
    instances_option,
    measure_filter_options,
    measure_settings,
    model_option,
    tta_option,
)


@click.command(cls=Command)
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@click.option(
    "--codes",
    default="background,crystal",
    show_default=True,
    help="Classes of the annotation masks, background first (a 'boundary' class splits "
    "touching crystals).",
)
@click.option(
    "--mask-values",
    default=None,
    help="Stored mask values to classes, e.g. 0,255 or 0=background,255=crystal.",
)
@instances_option
@click.option(
    "--pixel-size",
    "pixel_size_um",
    type=float,
    default=None,
    help="Micrometres per pixel of the images (D50 and outline offset in um).",
)
@measure_filter_options
@click.option("--frame-step", default=1, show_default=True, help="Every n-th frame of run stores.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, mps.")
@tta_option
@click.option(
    "--resize",
    default="auto",
    show_default=True,
    help="Resize frames by this factor before the model (as segment --resize; 'auto' "
    "picks one for all the frames); several, e.g. 1,0.5,0.25, score each and name the best.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the scores: .json (summary and frames) or .csv (one row per frame).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    data: tuple[Path, ...],
    model: Path | None,
    codes: str,
    mask_values: str | None,
    instances: bool,
    pixel_size_um: float | None,
    frame_step: int,
    device: str,
    tta: bool,
    resize: str,
    output: Path | None,
    **filters: Any,
) -> None:
    """Score a model's measurement on annotated DATA: IoU, F1, count, D50, outlines.

    DATA is what train reads: a folder of X.png / X_mask.png pairs, a folder with
    images/ and masks/, or synthetic run stores. Each image is segmented and
    measured as measure would, and compared with its annotation.

    \b
    Example:
      crystalseg evaluate annotated/ --mask-values 0,255 -o scores.csv
    """
    from crystalseg.evaluate import SCORE_SUFFIXES, evaluate_model, save_comparison
    from crystalseg.summary import format_evaluation, format_resize_comparison
    from crystalseg.train.masks import parse_mask_values

    if output is not None and output.suffix.lower() not in SCORE_SUFFIXES:  # before the work
        raise click.BadParameter("use a .json or .csv file", param_hint="--output")
    if output is not None:
        from crystalseg.store import check_output_folder

        if output.is_dir():
            raise click.BadParameter(
                f"'{output}' is a folder; give a file name", param_hint="--output"
            )
        check_output_folder(output.parent)
    factors = _resize_factors(resize)
    settings = measure_settings(filters)
    rule = parse_mask_values(mask_values) if mask_values else None
    results = {}
    with stage_bars(ctx.obj["quiet"]) as update:
        for factor in factors:
            stage = "evaluate" if len(factors) == 1 else f"evaluate at {factor:g}"
            results[factor] = evaluate_model(
                list(data),
                model=model,
                codes=comma_list(codes),
                mask_values=rule,
                instances=instances,
                settings=settings,
                pixel_size_um=pixel_size_um,
                tta=tta,
                resize=factor,
                device=device,
                frame_step=frame_step,
                progress=functools.partial(update, stage),
            )
    if len(factors) == 1:
        result = results[factors[0]]
        if output is not None:
            result.save(output)
        click.echo(format_evaluation(result, output))
        return
    if output is not None:
        save_comparison(results, output)
    click.echo(format_resize_comparison(results, output))


def _resize_factors(text: str) -> list[Any]:
    """``"1,0.5"`` -> ``[1.0, 0.5]``, each in the engine's range, no repeats; or ``["auto"]``."""
    from crystalseg.segment.engine import MAX_RESIZE, MIN_RESIZE

    if text.strip() == "auto":
        return ["auto"]
    try:
        factors = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not a factor, 'auto' or a comma-separated list of factors "
            "(e.g. 1,0.5,0.25)",
            param_hint="--resize",
        ) from None
    bad = [f for f in factors if not MIN_RESIZE <= f <= MAX_RESIZE]
    if bad or len(set(factors)) != len(factors):
        raise click.BadParameter(
            f"factors must be distinct and lie in {MIN_RESIZE}..{MAX_RESIZE}, got '{text}'",
            param_hint="--resize",
        )
    return factors
