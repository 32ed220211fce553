"""``synth`` (a synthetic run with exact ground truth) and ``demo`` (the tour)."""

from __future__ import annotations

from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
    comma_list,
    echo_info,
    progress_bar,
    stage_bars,
)
from crystalseg.cli.options import (
    run_argument,
    size_option,
)


@click.command(cls=Command)
@run_argument
@click.option("--frames", default=40, show_default=True, help="Number of frames.")
@size_option
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same run).")
@click.option("--scenario", default="mixed", show_default=True, help="Scene type, see below.")
@click.option(
    "--interval", "interval_s", default=10.0, show_default=True, help="Seconds between frames."
)
@click.option(
    "--pixel-size",
    "pixel_size_um",
    type=float,
    help="Micrometres per pixel (default: drawn per run).",
)
@click.option("--dtype", type=click.Choice(["uint8", "uint16"]), default="uint8", show_default=True)
@click.option(
    "--pairs",
    "pairs_dir",
    type=click.Path(path_type=Path),
    help="Also write training pairs (0.png, 0_mask.png, ...) here.",
)
@click.option(
    "--pairs-codes",
    default="background,crystal",
    show_default=True,
    help="Classes of the pair masks; add ',boundary' for a one-pixel crystal rim class or "
    "',contact' for a class only where crystals touch.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run store.")
@click.pass_context
def synth(
    ctx: click.Context,
    run: Path,
    frames: int,
    size: tuple[int, int],
    seed: int,
    scenario: str,
    interval_s: float,
    pixel_size_um: float | None,
    dtype: str,
    pairs_dir: Path | None,
    pairs_codes: str,
    overwrite: bool,
) -> None:
    """Write a synthetic crystallization run with exact ground truth to RUN.

    Nucleation, growth at a known rate, drift, touching crystals, edge-cut crystals,
    uneven light, blur, noise and bubbles; the truth (instance labels, class mask and a
    per-crystal table) is stored in group 'truth'. Scenarios: clear, crowded, bubbles,
    needles, plates, mixed.

    \b
    Example:
      crystalseg synth run.zarr --frames 60 --size 512 512 --seed 1 --scenario crowded
    """
    from crystalseg.synth import SynthConfig, synthesize_run

    config = SynthConfig(
        frames=frames,
        height=size[0],
        width=size[1],
        seed=seed,
        scenario=scenario,  # type: ignore[arg-type]
        interval_s=interval_s,
        pixel_size_um=pixel_size_um,
        dtype=dtype,  # type: ignore[arg-type]
    )
    with progress_bar(frames, "synth", ctx.obj["quiet"]) as update:
        shown = [0]

        def frames_done(done: int) -> None:  # synthesize_run reports a running total
            update(done - shown[0])
            shown[0] = done

        synthesize_run(
            run,
            config,
            pairs_dir=pairs_dir,
            pairs_codes=comma_list(pairs_codes),
            overwrite=overwrite,
            progress=frames_done,
        )
    echo_info(run)


@click.command(cls=Command)
@click.argument(
    "directory", type=click.Path(path_type=Path), default=Path("crystalseg-demo"), required=False
)
@click.option("--frames", default=40, show_default=True, help="Frames of the synthetic run.")
@size_option
@click.option("--seed", default=0, show_default=True, help="Random seed of the synthetic run.")
@click.option(
    "--scenario",
    default="nucleation",
    show_default=True,
    help="Synthetic scene type: nucleation (then growth, tens to hundreds of crystals a "
    "frame), clear, crowded, bubbles, needles, plates, mixed.",
)
@click.option("--overwrite", is_flag=True, help="Replace the demo's files in a non-demo folder.")
@click.pass_context
def demo(
    ctx: click.Context,
    directory: Path,
    frames: int,
    size: tuple[int, int],
    seed: int,
    scenario: str,
    overwrite: bool,
) -> None:
    """The tour: synthesise a run, measure it with the bundled model, plot and report.

    Writes into DIRECTORY (default ./crystalseg-demo): the run store, figures,
    overlays, a particle CSV and report.html. Takes a minute or two on a laptop.

    \b
    Example:
      crystalseg demo
    """
    from crystalseg.demo import format_demo, run_demo

    with stage_bars(ctx.obj["quiet"]) as update:
        result = run_demo(
            directory,
            frames=frames,
            size=size,
            seed=seed,
            scenario=scenario,  # type: ignore[arg-type]
            overwrite=overwrite,
            progress=update,
        )
    click.echo(format_demo(result))
